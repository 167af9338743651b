// The version-2 layout of model files (packed_layout.hpp): nibble Huffman tables, short descriptor
// keys, the parts each encoding lays out, and the architecture without its defaults, each undone
// exactly by its reader.
#include <catch2/catch.hpp>

#include "slimnet/io/packed_layout.hpp"

using namespace slimnet;

TEST_CASE("Huffman code lengths round trip through 4-bit nibbles, trailing unused symbols cut", "[io][packed_layout]") {
  const std::vector<std::uint8_t> lengths{3, 1, 0, 5, 15, 2, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0};
  const auto packed = io::detail::pack_nibbles(lengths);
  CHECK(packed == std::vector<std::uint8_t>{0x13, 0x50, 0x2f, 0x00, 0x07});
  const auto back = io::detail::unpack_nibbles(packed, 16);
  REQUIRE(back);
  // huffman_encode's tables end in a used symbol: that is the table given back.
  CHECK(*back == std::vector<std::uint8_t>(lengths.begin(), lengths.begin() + 9));
  CHECK(io::detail::unpack_nibbles({0x21, 0x03}, 3) == std::vector<std::uint8_t>{1, 2, 3});
  // More symbols than the alphabet are refused.
  CHECK_FALSE(io::detail::unpack_nibbles({0x21, 0x43}, 3));
  CHECK_FALSE(io::detail::unpack_nibbles({0x11, 0x11, 0x11}, 4));
  CHECK(io::detail::pack_nibbles(std::vector<std::uint8_t>(8, 0)).empty());
  CHECK(io::detail::unpack_nibbles({}, 8)->empty());
  // Every table huffman_encode writes comes back exactly.
  for (std::uint32_t seed = 1; seed < 40; ++seed) {
    std::vector<std::uint32_t> symbols;
    for (std::uint32_t i = 0; i < 5 * seed; ++i) symbols.push_back((i * i * seed + i) % (seed % 16 + 1));
    const auto table = io::encoding::huffman_encode(symbols, 16).lengths;
    CAPTURE(seed);
    CHECK(*io::detail::unpack_nibbles(io::detail::pack_nibbles(table), 16) == table);
  }
}

TEST_CASE("descriptors compact to short keys and expand back", "[io][packed_layout]") {
  const nlohmann::json d = {{"encoding", "sparse_codebook"},
                            {"shape", {500, 800}},
                            {"nonzeros", 2076},
                            {"crc32", 12345},
                            {"indices", {{"bits", 8}, {"count", 2100}, {"huffman", true}, {"huffman_table", "u4"}}},
                            {"codes", {{"bits", 5}, {"count", 2076}, {"huffman", false}}},
                            {"parts", {128, 900, 1216, 128}}};
  const auto c = io::compact_descriptor(d);
  CHECK(c.dump() == R"({"c":12345,"e":"sparse_codebook","i":{"b":8,"h":2,"k":2100},"n":2076,"p":[128,900,1216,128],"q":{"b":5,"h":0,"k":2076},"s":[500,800]})");
  CHECK(io::expand_descriptor(c) == d);
  const nlohmann::json fp = {{"encoding", "fixed_point"}, {"fixed_point", {{"integer_bits", -1}, {"fraction_bits", 9}}}};
  CHECK(io::compact_descriptor(fp)["f"] == nlohmann::json{{"i", -1}, {"f", 9}});
  CHECK(io::expand_descriptor(io::compact_descriptor(fp)) == fp);
  // Malformed input is passed on for the decoder to refuse, never thrown on here.
  CHECK(io::expand_descriptor(nlohmann::json::array()) == nlohmann::json::array());
  const auto odd = io::expand_descriptor({{"i", {{"h", 7}, {"huffman_table", "u4"}}}, {"q", 3}});
  CHECK_FALSE(odd["indices"].contains("huffman"));
  CHECK_FALSE(odd["indices"].contains("huffman_table"));
  CHECK(odd["codes"] == 3);
}

TEST_CASE("each encoding lays out its parts in name order", "[io][packed_layout]") {
  auto suffixes = [](const nlohmann::json& d) {
    std::vector<std::string> s;
    for (const auto& p : io::part_layout(d)) s.push_back(p.suffix + (p.type == io::dtype::f32 ? ":F32" : ":U8"));
    return s;
  };
  const nlohmann::json huff = {{"bits", 4}, {"huffman", true}}, plain = {{"bits", 4}, {"huffman", false}};
  CHECK(suffixes({{"encoding", "sparse"}, {"indices", huff}}) == std::vector<std::string>{"indices:U8", "indices.huffman:U8", "values:F32"});
  CHECK(suffixes({{"encoding", "sparse_codebook"}, {"indices", plain}, {"codes", huff}}) ==
        std::vector<std::string>{"codebook:F32", "codes:U8", "codes.huffman:U8", "indices:U8"});
  CHECK(suffixes({{"encoding", "int8_rows"}, {"codes", plain}}) == std::vector<std::string>{"codes:U8", "scales:F32"});
  CHECK(suffixes({{"encoding", "fixed_point"}, {"codes", plain}}) == std::vector<std::string>{"codes:U8"});
  CHECK(suffixes({{"encoding", "dense_f16"}}).empty());
  CHECK(suffixes({{"encoding", 3}}).empty());
  CHECK(suffixes({{"encoding", "bogus"}}).empty());
}

TEST_CASE("a model packer cuts back exactly what it packed, and refuses lengths that do not tile", "[io][packed_layout]") {
  const float w[12] = {0, 0.5f, 0, 0, -0.25f, 0, 0, 0, 0.5f, 0, 0, 0.75f};
  io::tensor_encode_options o;
  o.encoding = io::tensor_encoding::sparse_codebook;
  o.huffman = io::huffman_mode::always;
  const auto weight = io::encode_tensor("fc.weight", {3, 4}, w, o);
  const float b[3] = {0.5f, 0, 0.5f};
  const auto bias = io::encode_tensor("fc.bias", {3}, b, o);
  io::raw_file f;
  io::model_packer packer;
  nlohmann::json descriptors;
  descriptors["fc.weight"] = io::expand_descriptor(packer.add("fc.weight", weight, f));
  descriptors["fc.bias"] = io::expand_descriptor(packer.add("fc.bias", bias, f));
  packer.finish_packing(f);
  REQUIRE(f.tensors.size() == 1);
  REQUIRE(f.tensors.count("fc") == 1);
  std::map<std::string, std::uint64_t> stored;
  const auto v1 = io::unpack_model_file(f, descriptors, "test", &stored);
  CHECK(v1.tensors.size() == weight.parts.size() + bias.parts.size());
  for (const auto* e : {&weight, &bias})
    for (const auto& [name, t] : e->parts) {
      CAPTURE(name);
      REQUIRE(v1.tensors.count(name) == 1);
      CHECK(v1.tensors.at(name).bytes == t.bytes);
      CHECK(v1.tensors.at(name).type == t.type);
    }
  CHECK(stored.count("fc.weight.codes.huffman") == 1);
  const auto decoded = io::decode_tensor("fc.weight", descriptors["fc.weight"], v1);
  for (int i = 0; i < 12; ++i) CHECK(decoded[i] == w[i]);

  auto bad = descriptors;
  bad["fc.bias"]["parts"].back() = bad["fc.bias"]["parts"].back().get<int>() + 1;  // a U8 part
  CHECK_THROWS_WITH(io::unpack_model_file(f, bad, "test"), Catch::Contains("'fc'") && Catch::Contains("fc.bias, fc.weight"));
  bad = descriptors;
  bad["fc.weight"]["parts"][1] = 1u << 30;
  CHECK_THROWS_WITH(io::unpack_model_file(f, bad, "test"), Catch::Contains("'fc.weight'") && Catch::Contains("does not fit"));
  bad["fc.weight"]["parts"][1] = -1;
  CHECK_THROWS_AS(io::unpack_model_file(f, bad, "test"), io_error);
  io::raw_file missing;
  CHECK_THROWS_WITH(io::unpack_model_file(missing, descriptors, "test"), Catch::Contains("'fc'") && Catch::Contains("missing"));
}

TEST_CASE("architectures leave out their defaults and get them back", "[io][packed_layout]") {
  const nlohmann::json arch = {
      {"kind", "Sequential"},
      {"name", ""},
      {"layers",
       {{{"kind", "Conv2d"}, {"name", "c"}, {"in_channels", 1}, {"out_channels", 4}, {"kernel", {3, 3}}, {"stride", 1}, {"padding", 0}, {"bias", true}},
        {{"kind", "Conv2d"}, {"name", "d"}, {"in_channels", 4}, {"out_channels", 4}, {"kernel", {3, 3}}, {"stride", 2}, {"padding", 1}, {"bias", false}},
        {{"kind", "MaxPool2d"}, {"name", "p"}, {"kernel", 2}, {"stride", 2}, {"padding", 0}},
        {{"kind", "AvgPool2d"}, {"name", "q"}, {"kernel", 3}, {"stride", 1}, {"padding", 0}},
        {{"kind", "Bidirectional"},
         {"name", "bi"},
         {"forward", {{"kind", "LSTM"}, {"bias", true}, {"reverse", false}, {"output", "all_steps"}, {"input_size", 3}}},
         {"backward", {{"kind", "LSTM"}, {"bias", true}, {"reverse", true}, {"output", "all_steps"}, {"input_size", 3}}}},
        {{"kind", "Linear"}, {"name", "fc"}, {"in_features", 4}, {"out_features", 2}, {"bias", true}}}}};
  const auto c = io::compact_architecture(arch);
  CHECK_FALSE(c.contains("name"));
  CHECK_FALSE(c["layers"][0].contains("stride"));
  CHECK_FALSE(c["layers"][0].contains("bias"));
  CHECK(c["layers"][1]["stride"] == 2);
  CHECK(c["layers"][1]["bias"] == false);
  CHECK_FALSE(c["layers"][2].contains("stride"));
  CHECK(c["layers"][3]["stride"] == 1);
  CHECK_FALSE(c["layers"][4]["forward"].contains("reverse"));
  CHECK(c["layers"][4]["backward"]["reverse"] == true);
  CHECK(c.dump().size() < arch.dump().size());
  auto back = io::expand_architecture(c);
  back["name"] = "";
  CHECK(back == arch);
}
