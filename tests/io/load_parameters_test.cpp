// load_parameters against files written the way PyTorch writes them: BatchNorm's I64
// num_batches_tracked, DataParallel's "module." prefix, every mismatch reported at once,
// non-finite weights refused, and the model unchanged whenever a load fails.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "slimnet/io/safetensors.hpp"
#include "slimnet/nn.hpp"
#include "support/temp_dir.hpp"

using namespace slimnet;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

template <class T>
io::raw_tensor raw(io::dtype type, shape_t shape, const std::vector<T>& values) {
  io::raw_tensor r;
  r.type = type;
  r.shape = std::move(shape);
  r.bytes.resize(values.size() * sizeof(T));
  std::memcpy(r.bytes.data(), values.data(), r.bytes.size());
  return r;
}

/// fc = Linear(4, 3), bn = BatchNorm1d(3), as nn.Sequential(OrderedDict(fc=..., bn=...)) names them.
template <class Scalar>
nn::sequential<Scalar> small_model() {
  nn::sequential<Scalar> m;
  m.add("fc", nn::linear<Scalar>(4, 3));
  m.add("bn", nn::batch_norm<Scalar>(3, 1, {}));
  return m;
}

/// The state_dict torch.save / safetensors.torch.save_file write for small_model: F32 weights
/// plus BatchNorm's I64 scalar num_batches_tracked, every key prefixed with `prefix`.
io::raw_file pytorch_file(const std::string& prefix) {
  io::raw_file f;
  std::vector<float> w(12);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.25f * static_cast<float>(i) - 1.0f;
  f.tensors[prefix + "fc.weight"] = raw(io::dtype::f32, {3, 4}, w);
  f.tensors[prefix + "fc.bias"] = raw(io::dtype::f32, {3}, std::vector<float>{0.5f, -0.5f, 2.0f});
  f.tensors[prefix + "bn.weight"] = raw(io::dtype::f32, {3}, std::vector<float>{1.5f, 0.75f, 1.0f});
  f.tensors[prefix + "bn.bias"] = raw(io::dtype::f32, {3}, std::vector<float>{0.1f, 0.2f, 0.3f});
  f.tensors[prefix + "bn.running_mean"] = raw(io::dtype::f32, {3}, std::vector<float>{-1.0f, 0.0f, 1.0f});
  f.tensors[prefix + "bn.running_var"] = raw(io::dtype::f32, {3}, std::vector<float>{4.0f, 0.25f, 9.0f});
  f.tensors[prefix + "bn.num_batches_tracked"] = raw(io::dtype::i64, {}, std::vector<std::int64_t>{1874});
  f.metadata["format"] = "pt";
  return f;
}

template <class Scalar>
std::map<std::string, std::vector<Scalar>> snapshot(nn::layer<Scalar>& m) {
  std::map<std::string, std::vector<Scalar>> out;
  m.visit_parameters([&](nn::parameter<Scalar>& p) { out[p.name()].assign(p.value().data(), p.value().data() + p.size()); });
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("a PyTorch BatchNorm state_dict with I64 num_batches_tracked loads non-strict", "[io]", float, double) {
  using S = TestType;
  const auto dir = slimnet::testing::temp_dir("lp_pytorch_bn");
  io::write_safetensors_raw(dir / "bn.safetensors", pytorch_file(""));
  auto model = small_model<S>();
  const auto before = snapshot(model);
  // Strict: the one extra tensor is named with its dtype, and nothing changes.
  CHECK_THROWS_WITH(io::load_parameters(model, dir / "bn.safetensors"),
                    Contains("unexpected 1 tensor(s) (strict load): bn.num_batches_tracked (I64)"));
  CHECK(snapshot(model) == before);
  const auto meta = io::load_parameters(model, dir / "bn.safetensors", false);
  CHECK(meta.at("format") == "pt");
  const auto after = snapshot(model);
  CHECK(after.at("fc.weight")[0] == S(-1.0));
  CHECK(after.at("fc.weight")[11] == S(1.75));
  CHECK(after.at("fc.bias") == std::vector<S>{S(0.5), S(-0.5), S(2.0)});
  CHECK(after.at("bn.weight") == std::vector<S>{S(1.5), S(0.75), S(1.0)});
  CHECK(after.at("bn.running_var") == std::vector<S>{S(4.0), S(0.25), S(9.0)});
  // The loaded statistics are used in evaluation: y = (x - mean) / sqrt(var + eps) * gamma + beta.
  tensor<S> x({1, 4}, S(0));
  tensor<S> y;
  model.forward(x, y, {});
  REQUIRE(y.size() == 3);
  CHECK(static_cast<double>(y[0]) == Approx((0.5 + 1.0) / std::sqrt(4.0 + 1e-5) * 1.5 + 0.1).epsilon(1e-5));
  CHECK(static_cast<double>(y[2]) == Approx((2.0 - 1.0) / std::sqrt(9.0 + 1e-5) * 1.0 + 0.3).epsilon(1e-5));
}

TEST_CASE("key_prefix strips DataParallel's module. from the file's keys", "[io]") {
  const auto dir = slimnet::testing::temp_dir("lp_prefix");
  io::write_safetensors_raw(dir / "dp.safetensors", pytorch_file("module."));
  auto model = small_model<float>();
  const auto before = snapshot(model);
  // Without the option every key is unexpected and every parameter missing, all listed at once.
  try {
    io::load_parameters(model, dir / "dp.safetensors");
    FAIL("no exception");
  } catch (const io_error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Contains("slimnet::io::load_parameters"));
    CHECK_THAT(what, Contains("missing 6 tensor(s): fc.weight, fc.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var"));
    CHECK_THAT(what, Contains("unexpected 7 tensor(s) (strict load): module.bn.bias (F32)"));
    CHECK_THAT(what, Contains("module.bn.num_batches_tracked (I64)"));
    CHECK_THAT(what, Contains("module.fc.weight (F32)"));
  }
  CHECK(snapshot(model) == before);
  io::load_options opt;
  opt.key_prefix = "module.";
  opt.strict = false;
  io::load_parameters(model, dir / "dp.safetensors", opt);
  CHECK(snapshot(model).at("fc.bias") == std::vector<float>{0.5f, -0.5f, 2.0f});
  // Strict with the prefix: only num_batches_tracked is left over, under its key as written.
  opt.strict = true;
  CHECK_THROWS_WITH(io::load_parameters(model, dir / "dp.safetensors", opt),
                    Contains("unexpected 1 tensor(s) (strict load): module.bn.num_batches_tracked (I64)") &&
                        !Contains("missing"));
  // Two keys that become the same name are ambiguous.
  auto both = pytorch_file("module.");
  both.tensors["fc.bias"] = both.tensors["module.fc.bias"];
  io::write_safetensors_raw(dir / "both.safetensors", both);
  CHECK_THROWS_WITH(io::load_parameters(model, dir / "both.safetensors", opt),
                    Contains("'fc.bias' and 'module.fc.bias' both become 'fc.bias'"));
}

TEST_CASE("missing, unexpected and mismatched tensors are listed together; the model is unchanged", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("lp_all_errors");
  auto f = pytorch_file("");
  f.tensors.erase("fc.bias");
  f.tensors.erase("bn.running_var");
  f.tensors["extra.weight"] = raw(io::dtype::f16, {2}, std::vector<std::uint16_t>{0x3c00, 0x3c00});
  f.tensors["bn.weight"] = raw(io::dtype::f32, {4}, std::vector<float>{1, 2, 3, 4});
  f.tensors["fc.weight"] = raw(io::dtype::bf16, {4, 3}, std::vector<std::uint16_t>(12, 0x3f80));
  io::write_safetensors_raw(dir / "bad.safetensors", f);
  auto model = small_model<double>();
  const auto before = snapshot(model);
  try {
    io::load_parameters(model, dir / "bad.safetensors");
    FAIL("no exception");
  } catch (const io_error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Contains("missing 2 tensor(s): fc.bias, bn.running_var"));
    CHECK_THAT(what, Contains("unexpected 2 tensor(s) (strict load): bn.num_batches_tracked (I64), extra.weight (F16)"));
    CHECK_THAT(what, Contains("2 shape mismatch(es): 'fc.weight' is BF16 (4, 3) in the file, (3, 4) in the model, "
                              "'bn.weight' is F32 (4) in the file, (3) in the model"));
  }
  CHECK(snapshot(model) == before);
  // Non-strict still reports what is missing and mismatched, not what is extra.
  CHECK_THROWS_WITH(io::load_parameters(model, dir / "bad.safetensors", false),
                    Contains("missing 2") && Contains("2 shape mismatch") && !Contains("unexpected"));
  CHECK(snapshot(model) == before);
  // Shape mismatches alone are a shape_error, as before.
  auto g = pytorch_file("");
  g.tensors["bn.bias"] = raw(io::dtype::f32, {1}, std::vector<float>{0});
  io::write_safetensors_raw(dir / "shape.safetensors", g);
  CHECK_THROWS_AS(io::load_parameters(model, dir / "shape.safetensors", false), shape_error);
  CHECK(snapshot(model) == before);
}

TEMPLATE_TEST_CASE("non-finite weights are refused unless allowed", "[io][errors]", float, double) {
  using S = TestType;
  const auto dir = slimnet::testing::temp_dir("lp_non_finite");
  auto f = pytorch_file("");
  auto w = std::vector<float>(12, 0.5f);
  w[7] = std::numeric_limits<float>::quiet_NaN();
  f.tensors["fc.weight"] = raw(io::dtype::f32, {3, 4}, w);
  f.tensors["bn.bias"] = raw(io::dtype::f16, {3}, std::vector<std::uint16_t>{0x0000, 0xfc00, 0x7c00});
  io::write_safetensors_raw(dir / "nan.safetensors", f);
  auto model = small_model<S>();
  const auto before = snapshot(model);
  CHECK_THROWS_WITH(io::load_parameters(model, dir / "nan.safetensors", false),
                    Contains("2 tensor(s) with non-finite values") && Contains("'fc.weight' holds nan at index 7") &&
                        Contains("'bn.bias' holds -inf at index 1"));
  CHECK(snapshot(model) == before);
  io::load_options opt;
  opt.strict = false;
  opt.allow_non_finite = true;
  io::load_parameters(model, dir / "nan.safetensors", opt);
  const auto after = snapshot(model);
  CHECK(std::isnan(after.at("fc.weight")[7]));
  CHECK(after.at("fc.weight")[6] == S(0.5));
  CHECK(after.at("bn.bias")[2] == std::numeric_limits<S>::infinity());
  // An F64 value beyond float's range becomes Inf only in a float model: named as an overflow.
  auto big = pytorch_file("");
  big.tensors["bn.weight"] = raw(io::dtype::f64, {3}, std::vector<double>{1.0, 1e300, 1.0});
  io::write_safetensors_raw(dir / "big.safetensors", big);
  auto m2 = small_model<S>();
  if (std::is_same<S, float>::value) {
    CHECK_THROWS_WITH(io::load_parameters(m2, dir / "big.safetensors", false),
                      Contains("'bn.weight' holds inf at index 1 (after conversion: the value overflows"));
  } else {
    io::load_parameters(m2, dir / "big.safetensors", false);
    CHECK(snapshot(m2).at("bn.weight")[1] == S(1e300));
  }
}
