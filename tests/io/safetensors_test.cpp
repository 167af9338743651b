// safetensors: round trips, model save/load with identical logits, malformed files.
#include <catch2/catch.hpp>

#include <fstream>

#include "slimnet/io.hpp"
#include "slimnet/nn.hpp"
#include "support/temp_dir.hpp"

using namespace slimnet;
namespace fs = std::filesystem;

namespace {
void write_raw(const fs::path& p, const std::string& json, const std::string& buffer) {
  std::ofstream out(p, std::ios::binary);
  const std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << json << buffer;
}
}  // namespace

TEST_CASE("safetensors round trip keeps names, shapes, values and metadata", "[io]") {
  const auto dir = slimnet::testing::temp_dir("st_round_trip");
  io::tensor_file<float> f;
  f.tensors["a.weight"] = tensor<float>({2, 3});
  for (index_t i = 0; i < 6; ++i) f.tensors["a.weight"][i] = 0.1f * static_cast<float>(i) - 0.2f;
  f.tensors["scalar"] = tensor<float>(shape_t{}, 3.5f);
  f.tensors["empty"] = tensor<float>({0, 4});
  f.metadata["format"] = "pt";
  io::write_safetensors(dir / "t.safetensors", f);
  const auto g = io::read_safetensors<float>(dir / "t.safetensors");
  CHECK(g.metadata == f.metadata);
  REQUIRE(g.tensors.size() == 3);
  CHECK(g.tensors.at("a.weight").shape() == shape_t{2, 3});
  CHECK(g.tensors.at("a.weight").flat() == f.tensors["a.weight"].flat());
  CHECK(g.tensors.at("scalar").shape().empty());
  CHECK(g.tensors.at("scalar")[0] == 3.5f);
  CHECK(g.tensors.at("empty").size() == 0);
  // The header length is a multiple of 8 so the buffer is aligned.
  std::ifstream in(dir / "t.safetensors", std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  CHECK(len[0] % 8 == 0);
  io::write_safetensors(dir / "d.safetensors", f, io::dtype::f64);
  CHECK(io::read_safetensors<double>(dir / "d.safetensors").tensors.at("a.weight")[5] == Approx(0.3));
}

TEST_CASE("a saved and reloaded model gives identical logits", "[io]") {
  const auto dir = slimnet::testing::temp_dir("st_model");
  rng gen(8);
  auto model = nn::models::lenet5<float>(gen);
  tensor<float> x({3, 1, 28, 28});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform());
  tensor<float> before, after;
  model.forward(x, before, {});
  io::save_parameters(model, dir / "lenet5.safetensors", {{"arch", "lenet5"}});
  rng other(9);
  auto fresh = nn::models::lenet5<float>(other);
  const auto meta = io::load_parameters(fresh, dir / "lenet5.safetensors");
  CHECK(meta.at("arch") == "lenet5");
  fresh.forward(x, after, {});
  CHECK(before.flat() == after.flat());

  auto small = nn::models::lenet_300_100<float>(other);
  CHECK_THROWS_WITH(io::load_parameters(small, dir / "lenet5.safetensors"), Catch::Contains("fc1.weight"));
}

TEST_CASE("loading checks shapes and leaves the model unchanged on failure", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("st_shapes");
  nn::linear<float> a(4, 3), b(5, 3);
  b.set_name("fc");
  a.set_name("fc");
  io::save_parameters(a, dir / "a.safetensors");
  const tensor<float> w = b.weight().value();
  CHECK_THROWS_WITH(io::load_parameters(b, dir / "a.safetensors"), Catch::Contains("(3, 4)") && Catch::Contains("(3, 5)"));
  CHECK(b.weight().value().flat() == w.flat());
  nn::linear<float> c(4, 3, false);
  c.set_name("fc");
  CHECK_THROWS_WITH(io::load_parameters(c, dir / "a.safetensors"), Catch::Contains("strict"));
  CHECK_NOTHROW(io::load_parameters(c, dir / "a.safetensors", false));
}

TEST_CASE("malformed safetensors files are clear io_errors", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("st_malformed");
  const auto p = dir / "bad.safetensors";
  auto expect = [&](const std::string& json, const std::string& buffer, const std::string& needle) {
    write_raw(p, json, buffer);
    CHECK_THROWS_WITH(io::read_safetensors<float>(p), Catch::Contains("slimnet::io::read_safetensors") && Catch::Contains(needle));
  };
  std::ofstream(p, std::ios::binary) << "abc";
  CHECK_THROWS_WITH(io::read_safetensors<float>(p), Catch::Contains("too short"));
  {
    std::ofstream out(p, std::ios::binary);
    const char len[8] = {char(0xff), char(0xff), 0, 0, 0, 0, 0, 0};
    out.write(len, 8);
    out << "{}";
  }
  CHECK_THROWS_WITH(io::read_safetensors<float>(p), Catch::Contains("header"));
  expect("{not json", "", "invalid JSON");
  expect(R"({"a":{"dtype":"I128","shape":[1],"data_offsets":[0,16]}})", std::string(16, 'x'), "dtype I128");
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd", "needs 8 bytes");
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", "abcd", "outside");
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcdefgh", "trailing");
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
         "abcdef", "overlap");
  expect(R"({"a":{"dtype":"F32","shape":[1]}})", "abcd", "lacks");
  expect(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd", "invalid shape");
  CHECK_THROWS_WITH(io::read_safetensors<float>(dir / "missing"), Catch::Contains("cannot open"));
}

TEST_CASE("a failed save does not destroy the existing file", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("st_keep");
  io::tensor_file<float> f;
  f.tensors["x"] = tensor<float>({2}, 1.0f);
  io::write_safetensors(dir / "m.safetensors", f);
  io::tensor_file<float> bad;
  bad.tensors["__metadata__"] = tensor<float>({1}, 0.0f);
  CHECK_THROWS_AS(io::write_safetensors(dir / "m.safetensors", bad), config_error);
  CHECK(io::read_safetensors<float>(dir / "m.safetensors").tensors.at("x")[1] == 1.0f);
}
