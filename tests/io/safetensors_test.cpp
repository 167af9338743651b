// safetensors: round trips of every dtype, model save/load with identical logits, malformed files.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "slimnet/io/model_file.hpp"
#include "slimnet/io/safetensors.hpp"
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

TEST_CASE("a const model saves: save_parameters and save_model read it through the const visit", "[io]") {
  const auto dir = slimnet::testing::temp_dir("st_const_model");
  rng gen(21);
  const auto model = nn::models::vgg_small<float>(gen);  // BatchNorm buffers are saved too
  io::save_parameters(model, dir / "params.safetensors", {{"arch", "vgg_small"}});
  io::save_model(model, dir / "model.safetensors");

  // Every parameter and buffer comes back with the saved values, in the model's order.
  rng other(22);
  auto fresh = nn::models::vgg_small<float>(other);
  CHECK(io::load_parameters(fresh, dir / "params.safetensors").at("arch") == "vgg_small");
  std::vector<const nn::parameter<float>*> saved, loaded;
  model.visit_parameters([&](const nn::parameter<float>& p) { saved.push_back(&p); });
  fresh.visit_parameters([&](nn::parameter<float>& p) { loaded.push_back(&p); });
  REQUIRE(saved.size() == loaded.size());
  REQUIRE(saved.size() == 40);  // 6 x (conv weight, bias, bn weight, bias, running mean, var) + 2 x (fc weight, bias)
  for (std::size_t i = 0; i < saved.size(); ++i) {
    INFO(saved[i]->name());
    CHECK(loaded[i]->name() == saved[i]->name());
    CHECK(loaded[i]->value().shape() == saved[i]->value().shape());
    CHECK(loaded[i]->value().flat() == saved[i]->value().flat());
  }

  // The model file reloads to a network that computes what the const model computes.
  tensor<float> x({2, 1, 28, 28}), expected, got;
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform());
  model.clone()->forward(x, expected, {});
  io::load_model<float>(dir / "model.safetensors")->forward(x, got, {});
  REQUIRE(got.shape() == expected.shape());
  for (index_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(expected[i]).margin(1e-5));
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
  c.weight().value().set_zero();
  CHECK_THROWS_WITH(io::load_parameters(c, dir / "a.safetensors"), Catch::Contains("strict") && Catch::Contains("fc.bias"));
  CHECK(c.weight().value().flat() == tensor<float>({3, 4}, 0.0f).flat());
  io::load_parameters(c, dir / "a.safetensors", false);  // the bias is ignored, the weight loaded
  CHECK(c.weight().value().flat() == a.weight().value().flat());
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

namespace {
template <class T>
std::vector<std::uint8_t> le_bytes(const std::vector<T>& values) {
  std::vector<std::uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());  // the test host is little-endian, as the library requires
  return out;
}
}  // namespace

TEST_CASE("raw round trip keeps every dtype's bytes, shapes and metadata", "[io]") {
  const auto dir = slimnet::testing::temp_dir("st_raw");
  io::raw_file f;
  f.metadata = {{"format", "pt"}, {"note", "caf\xc3\xa9"}};
  const io::dtype all[] = {io::dtype::f64, io::dtype::f32, io::dtype::f16, io::dtype::bf16, io::dtype::i64,
                           io::dtype::i32, io::dtype::i16, io::dtype::i8,  io::dtype::u8,   io::dtype::boolean};
  std::size_t k = 0;
  for (const io::dtype t : all) {
    io::raw_tensor r;
    r.type = t;
    r.shape = {2, 3};
    r.bytes.resize(6 * io::dtype_size(t));
    for (std::size_t i = 0; i < r.bytes.size(); ++i) r.bytes[i] = static_cast<std::uint8_t>(t == io::dtype::boolean ? i % 2 : 37 * i + k);
    f.tensors["t." + io::dtype_name(t)] = r;
    ++k;
  }
  f.tensors["empty"] = {io::dtype::i64, {0, 5}, {}};
  f.tensors["scalar"] = {io::dtype::u8, {}, {9}};
  io::write_safetensors_raw(dir / "raw.safetensors", f);
  const io::raw_file g = io::read_safetensors_raw(dir / "raw.safetensors");
  CHECK(g.metadata == f.metadata);
  REQUIRE(g.tensors.size() == f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    INFO(name);
    const auto& u = g.tensors.at(name);
    CHECK(u.type == t.type);
    CHECK(u.shape == t.shape);
    CHECK(u.bytes == t.bytes);
  }
  CHECK(io::dtype_size(io::dtype::bf16) == 2);
  CHECK(io::dtype_name(io::dtype::boolean) == "BOOL");
  CHECK(io::read_safetensors_metadata(dir / "raw.safetensors") == f.metadata);
}

TEMPLATE_TEST_CASE("typed reading converts every dtype exactly", "[io]", float, double) {
  const auto dir = slimnet::testing::temp_dir("st_typed_dtypes");
  io::raw_file f;
  f.tensors["f64"] = {io::dtype::f64, {3}, le_bytes<double>({0.1, -1e-300, 12345.678})};
  f.tensors["f32"] = {io::dtype::f32, {2}, le_bytes<float>({0.1f, -3.5f})};
  // F16: 1, -2, 65504, the smallest subnormal 2^-24, -0, Inf; BF16: 1, pi's top half, 2^-133, -Inf.
  f.tensors["f16"] = {io::dtype::f16, {6}, le_bytes<std::uint16_t>({0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00})};
  f.tensors["bf16"] = {io::dtype::bf16, {4}, le_bytes<std::uint16_t>({0x3f80, 0x4049, 0x0001, 0xff80})};
  f.tensors["i64"] = {io::dtype::i64, {3}, le_bytes<std::int64_t>({-5, 1ll << 40, 123456789})};
  f.tensors["i32"] = {io::dtype::i32, {2}, le_bytes<std::int32_t>({-2147483647 - 1, 2147483647})};
  f.tensors["i16"] = {io::dtype::i16, {2}, le_bytes<std::int16_t>({-32768, 32767})};
  f.tensors["i8"] = {io::dtype::i8, {3}, le_bytes<std::int8_t>({-128, 0, 127})};
  f.tensors["u8"] = {io::dtype::u8, {2}, {0, 255}};
  f.tensors["bool"] = {io::dtype::boolean, {2, 2}, {1, 0, 0, 1}};
  io::write_safetensors_raw(dir / "all.safetensors", f);
  const auto g = io::read_safetensors<TestType>(dir / "all.safetensors");
  const auto& t = g.tensors;
  using S = TestType;
  CHECK(t.at("f64")[0] == static_cast<S>(0.1));
  CHECK(t.at("f64")[1] == static_cast<S>(-1e-300));
  CHECK(t.at("f64")[2] == static_cast<S>(12345.678));
  CHECK(t.at("f32")[0] == static_cast<S>(0.1f));
  CHECK(t.at("f32")[1] == S(-3.5));
  CHECK(t.at("f16").flat()(0) == S(1));
  CHECK(t.at("f16")[1] == S(-2));
  CHECK(t.at("f16")[2] == S(65504));
  CHECK(t.at("f16")[3] == std::ldexp(S(1), -24));
  CHECK(t.at("f16")[4] == S(0));
  CHECK(std::signbit(t.at("f16")[4]));
  CHECK(t.at("f16")[5] == std::numeric_limits<S>::infinity());
  CHECK(t.at("bf16")[0] == S(1));
  CHECK(t.at("bf16")[1] == S(3.140625));
  CHECK(t.at("bf16")[2] == std::ldexp(S(1), -133));
  CHECK(t.at("bf16")[3] == -std::numeric_limits<S>::infinity());
  CHECK(t.at("i64")[0] == S(-5));
  CHECK(t.at("i64")[1] == std::ldexp(S(1), 40));
  CHECK(t.at("i64")[2] == static_cast<S>(123456789));
  CHECK(t.at("i32")[0] == S(-2147483648.0));
  CHECK(t.at("i32")[1] == static_cast<S>(2147483647.0));
  CHECK(t.at("i16")[0] == S(-32768));
  CHECK(t.at("i16")[1] == S(32767));
  CHECK(t.at("i8")[0] == S(-128));
  CHECK(t.at("i8")[2] == S(127));
  CHECK(t.at("u8")[1] == S(255));
  CHECK(t.at("bool").shape() == shape_t{2, 2});
  CHECK(t.at("bool").flat()(0) == S(1));
  CHECK(t.at("bool")[1] == S(0));
  CHECK(t.at("bool")[3] == S(1));
}

TEMPLATE_TEST_CASE("typed writing: every dtype round trips, F16/BF16 to hand-computed bits", "[io]", float, double) {
  using S = TestType;
  const auto dir = slimnet::testing::temp_dir("st_typed_write");
  io::tensor_file<S> f;
  f.tensors["w"] = tensor<S>({8});
  // 1, 1 + 2^-11 (F16 tie -> 1), 1 + 3*2^-11 (tie -> 1 + 2^-9), 2^-24 (smallest F16 subnormal),
  // 2^-25 (tie with 0 -> 0), 1e6 (beyond F16 -> Inf), NaN, -0.
  const S w[] = {S(1), S(1) + std::ldexp(S(1), -11), S(1) + 3 * std::ldexp(S(1), -11), std::ldexp(S(1), -24),
                 std::ldexp(S(1), -25), S(1e6), std::numeric_limits<S>::quiet_NaN(), -S(0)};
  for (index_t i = 0; i < 8; ++i) f.tensors["w"][i] = w[i];
  io::write_safetensors(dir / "h.safetensors", f, io::dtype::f16);
  const auto raw = io::read_safetensors_raw(dir / "h.safetensors");
  REQUIRE(raw.tensors.at("w").type == io::dtype::f16);
  std::vector<std::uint16_t> bits(8);
  std::memcpy(bits.data(), raw.tensors.at("w").bytes.data(), 16);
  CHECK(bits[0] == 0x3c00);
  CHECK(bits[1] == 0x3c00);
  CHECK(bits[2] == 0x3c02);
  CHECK(bits[3] == 0x0001);
  CHECK(bits[4] == 0x0000);
  CHECK(bits[5] == 0x7c00);
  CHECK((bits[6] & 0x7c00) == 0x7c00);
  CHECK((bits[6] & 0x03ff) != 0);
  CHECK(bits[7] == 0x8000);

  io::write_safetensors(dir / "b.safetensors", f, io::dtype::bf16);
  std::memcpy(bits.data(), io::read_safetensors_raw(dir / "b.safetensors").tensors.at("w").bytes.data(), 16);
  CHECK(bits[0] == 0x3f80);
  CHECK(bits[1] == 0x3f80);          // 1 + 2^-11 is far below BF16's half ulp (2^-8)
  CHECK(bits[3] == 0x3380);          // 2^-24 is a normal BF16
  CHECK(bits[5] == 0x4974);          // 1e6 = 0x49742400 -> round down
  CHECK((bits[6] & 0x7f80) == 0x7f80);
  CHECK(bits[7] == 0x8000);

  // Integer and BOOL dtypes take exact integers in range, and round trip exactly.
  io::tensor_file<S> ints;
  ints.tensors["i"] = tensor<S>({3});
  ints.tensors["i"][0] = S(-128);
  ints.tensors["i"][1] = S(0);
  ints.tensors["i"][2] = S(127);
  for (const io::dtype t : {io::dtype::i64, io::dtype::i32, io::dtype::i16, io::dtype::i8, io::dtype::f32, io::dtype::f64}) {
    io::write_safetensors(dir / "i.safetensors", ints, t);
    const auto back = io::read_safetensors<S>(dir / "i.safetensors");
    CHECK(io::read_safetensors_raw(dir / "i.safetensors").tensors.at("i").type == t);
    CHECK(back.tensors.at("i").flat() == ints.tensors["i"].flat());
  }
  CHECK_THROWS_WITH(io::write_safetensors(dir / "i.safetensors", ints, io::dtype::u8),
                    Catch::Contains("'i' cannot be stored as U8") && Catch::Contains("-128 at index 0"));
  ints.tensors["i"][0] = S(0.5);
  CHECK_THROWS_WITH(io::write_safetensors(dir / "i.safetensors", ints, io::dtype::i32), Catch::Contains("0.5 at index 0"));
  CHECK_THROWS_WITH(io::write_safetensors(dir / "i.safetensors", ints, io::dtype::boolean), Catch::Contains("not 0 or 1"));
  ints.tensors["i"][0] = S(1);
  ints.tensors["i"][2] = S(1);
  io::write_safetensors(dir / "i.safetensors", ints, io::dtype::boolean);
  CHECK(io::read_safetensors_raw(dir / "i.safetensors").tensors.at("i").bytes == std::vector<std::uint8_t>{1, 0, 1});
}

TEMPLATE_TEST_CASE("a model saved as F16 or BF16 loads the rounded weights", "[io]", float, double) {
  using S = TestType;
  const auto dir = slimnet::testing::temp_dir("st_half_model");
  rng gen(3);
  auto model = nn::models::lenet_300_100<S>(gen);
  for (const io::dtype t : {io::dtype::f16, io::dtype::bf16}) {
    io::save_parameters(model, dir / "m.safetensors", {{"dtype", io::dtype_name(t)}}, t);
    rng other(4);
    auto fresh = nn::models::lenet_300_100<S>(other);
    CHECK(io::load_parameters(fresh, dir / "m.safetensors").at("dtype") == io::dtype_name(t));
    std::vector<nn::parameter<S>*> a, b;
    model.visit_parameters([&](nn::parameter<S>& p) { a.push_back(&p); });
    fresh.visit_parameters([&](nn::parameter<S>& p) { b.push_back(&p); });
    REQUIRE(a.size() == b.size());
    for (std::size_t k = 0; k < a.size(); ++k) {
      for (index_t i = 0; i < a[k]->size(); ++i) {
        const double v = static_cast<double>(a[k]->value()[i]);
        const float expected = t == io::dtype::f16 ? io::f16_to_float(io::double_to_f16(v)) : io::bf16_to_float(io::double_to_bf16(v));
        REQUIRE(b[k]->value()[i] == static_cast<S>(expected));
      }
    }
  }
  // 266,610 weights at 2 bytes each, plus the header.
  CHECK(fs::file_size(dir / "m.safetensors") > 2 * 266610);
  CHECK(fs::file_size(dir / "m.safetensors") < 2 * 266610 + 2048);
  CHECK_THROWS_WITH(io::save_parameters(model, dir / "x.safetensors", {}, io::dtype::i8),
                    Catch::Contains("slimnet::io::save_parameters") && Catch::Contains("not I8"));
}
