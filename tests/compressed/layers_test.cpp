// Compressed inference layers against the float layers they come from: sparse (pruned through a
// mask transform), XNOR (binarized weights, sign inputs; exact), int8 (exact grids and dynamic
// quantization within the stated bound), codebook (weight-shared), Linear and Conv2d, whole models.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <memory>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/prune/transform.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::poisoned_forward;
using slimnet::testing::random_tensor;

namespace {

/// Attaches a random mask keeping `density` of the weights (a pruned layer: W_eff = W * T).
template <class Scalar>
void prune_randomly(nn::parameter<Scalar>& w, double density, rng& gen) {
  tensor<Scalar> mask(w.shape());
  for (index_t i = 0; i < mask.size(); ++i) mask[i] = gen.uniform() < density ? Scalar(1) : Scalar(0);
  w.add_transform(std::make_shared<prune::mask_transform<Scalar>>(mask));
}

/// |a - b| <= tol * (1 + |b|) elementwise.
template <class Scalar>
void check_close(const tensor<Scalar>& a, const tensor<Scalar>& b, double tol, const char* what) {
  REQUIRE(a.shape() == b.shape());
  double worst = 0;
  for (index_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / (1 + std::abs(double(b[i]))));
  INFO(what << ": worst relative difference " << worst);
  CHECK(worst <= tol);
}

template <class Scalar>
double float_tolerance() {
  return std::is_same_v<Scalar, float> ? 2e-5 : 1e-12;
}

template <class Scalar>
tensor<Scalar> sign_of(const tensor<Scalar>& x) {
  tensor<Scalar> s(x.shape());
  for (index_t i = 0; i < x.size(); ++i) s[i] = x[i] < Scalar(0) ? Scalar(-1) : Scalar(1);
  return s;
}

}  // namespace

TEMPLATE_TEST_CASE("sparse Linear equals the masked float Linear", "[compressed][sparse]", float, double) {
  rng gen(1);
  for (double density : {0.0, 0.01, 0.1, 0.5, 1.0}) {
    nn::linear<TestType> fc(300, 97);
    fc.reset_parameters(gen);
    prune_randomly(fc.weight(), density, gen);
    for (index_t hint : {1, 64}) {
      nc::sparse_options o;
      o.batch = hint;
      o.force_sparse = true;
      kernels::sparse_choice choice;
      auto sparse = nc::to_sparse(fc, o, &choice);
      CHECK(sparse.kind() == "SparseLinear");
      CHECK(choice.density == Approx(density).margin(0.03));
      for (index_t batch : {1, 3, 37}) {
        const auto x = random_tensor<TestType>({batch, 300}, gen);
        tensor<TestType> y_float, y_sparse;
        fc.forward(x, y_float, {});
        sparse.forward(x, y_sparse, {});
        INFO("density " << density << " hint " << hint << " batch " << batch);
        check_close(y_sparse, y_float, float_tolerance<TestType>() * 10, "sparse linear");
      }
    }
  }
}

TEST_CASE("the dense-or-sparse choice keeps dense layers dense, and both give the float output", "[compressed][sparse]") {
  rng gen(2);
  nn::linear<float> fc(1000, 1000);
  fc.reset_parameters(gen);
  prune_randomly(fc.weight(), 0.8, gen);
  kernels::sparse_choice choice;
  auto l = nc::to_sparse(fc, {}, &choice);
  CHECK_FALSE(choice.sparse);
  CHECK(l.kind() == "DenseLinear");
  nn::linear<float> thin(1000, 1000);
  thin.reset_parameters(gen);
  prune_randomly(thin.weight(), 0.02, gen);
  auto s = nc::to_sparse(thin, {}, &choice);
  CHECK(choice.sparse);
  CHECK(s.kind() == "SparseLinear");
  CHECK(s.weights().bytes() < 1000 * 1000 * 4 / 10);  // ~2% of the weights at 5 bytes each plus offsets
  nc::sparse_options measured;
  measured.measure = true;
  auto m = nc::to_sparse(thin, measured, &choice);
  CHECK(choice.measured);
  const auto x = random_tensor<float>({2, 1000}, gen);
  tensor<float> a, b, c;
  fc.forward(x, a, {});
  l.forward(x, b, {});
  check_close(b, a, 1e-4, "dense fallback");
  thin.forward(x, a, {});
  m.forward(x, c, {});
  check_close(c, a, 1e-4, "measured choice");
}

TEMPLATE_TEST_CASE("sparse Conv2d equals the masked float Conv2d", "[compressed][sparse]", float, double) {
  rng gen(3);
  for (auto [stride, padding] : std::vector<std::pair<index_t, index_t>>{{1, 0}, {2, 1}}) {
    typename nn::conv2d<TestType>::options opt;
    opt.stride = stride;
    opt.padding = padding;
    nn::conv2d<TestType> conv(3, 10, 3, opt);
    conv.reset_parameters(gen);
    prune_randomly(conv.weight(), 0.2, gen);
    nc::sparse_options o;
    o.force_sparse = true;
    auto sparse = nc::to_sparse(conv, o);
    CHECK(sparse.kind() == "SparseConv2d");
    const auto x = random_tensor<TestType>({2, 3, 11, 9}, gen);
    tensor<TestType> y_float, y_sparse;
    conv.forward(x, y_float, {});
    sparse.forward(x, y_sparse, {});
    check_close(y_sparse, y_float, float_tolerance<TestType>() * 10, "sparse conv2d");
    // A copy is independent and computes the same.
    auto copy = sparse.clone();
    tensor<TestType> y_copy;
    copy->forward(x, y_copy, {});
    CHECK(y_copy.flat() == y_sparse.flat());
  }
}

TEMPLATE_TEST_CASE("XNOR Linear equals the binarized float Linear on sign inputs, exactly", "[compressed][xnor]", float, double) {
  rng gen(4);
  for (TestType alpha : {TestType(1), TestType(0.125)}) {
    for (index_t in : {1, 63, 64, 65, 300}) {
      nn::linear<TestType> fc(in, 37);
      auto& w = fc.weight().value();
      for (index_t i = 0; i < w.size(); ++i) w[i] = gen.uniform() < 0.5 ? -alpha : alpha;
      fc.reset_parameters(gen);  // resets W too: set it again below, keep the random bias
      for (index_t i = 0; i < w.size(); ++i) w[i] = gen.uniform() < 0.5 ? -alpha : alpha;
      auto xnor = nc::to_xnor(fc);
      CHECK(xnor.kind() == "XnorLinear");
      const auto x = random_tensor<TestType>({9, in}, gen);
      tensor<TestType> y_float, y_xnor;
      fc.forward(sign_of(x), y_float, {});
      xnor.forward(x, y_xnor, {});  // the layer binarizes its input itself
      INFO("alpha " << alpha << " in " << in);
      CHECK(y_xnor.flat() == y_float.flat());
    }
  }
  // Weights that are not +-alpha per row are refused unless approximation is asked for.
  nn::linear<TestType> real(20, 4);
  real.reset_parameters(gen);
  CHECK_THROWS_WITH(nc::to_xnor(real), Catch::Contains("not a binarized layer"));
  nc::xnor_options approx;
  approx.require_exact = false;
  // XNOR-Net's approximation: row j becomes alpha_j sign(w_j) with alpha_j = mean |w_j| (a zero
  // weight's sign is +1), so on sign inputs the XNOR layer equals that float layer.
  auto approximated = nc::to_xnor(real, approx);
  nn::linear<TestType> expected_fc(20, 4);
  expected_fc.bias()->value() = real.bias()->value();
  const auto& wr = real.weight().value();
  auto& we = expected_fc.weight().value();
  for (index_t j = 0; j < 4; ++j) {
    double alpha = 0;
    for (index_t k = 0; k < 20; ++k) alpha += std::abs(double(wr[j * 20 + k])) / 20;
    for (index_t k = 0; k < 20; ++k) we[j * 20 + k] = static_cast<TestType>(wr[j * 20 + k] < 0 ? -alpha : alpha);
  }
  const auto x = random_tensor<TestType>({5, 20}, gen);
  tensor<TestType> y_expected, y_approx({5, 4}, std::numeric_limits<TestType>::quiet_NaN());
  expected_fc.forward(sign_of(x), y_expected, {});
  approximated.forward(x, y_approx, {});
  REQUIRE(y_approx.size() == y_expected.size());
  for (index_t i = 0; i < y_expected.size(); ++i) CHECK(y_approx[i] == Approx(y_expected[i]).epsilon(1e-5).margin(1e-5));
}

TEMPLATE_TEST_CASE("XNOR Conv2d with zero padding equals the float Conv2d on sign inputs, exactly", "[compressed][xnor]", float, double) {
  rng gen(5);
  for (auto [stride, padding] : std::vector<std::pair<index_t, index_t>>{{1, 0}, {1, 1}, {2, 2}}) {
    typename nn::conv2d<TestType>::options opt;
    opt.stride = stride;
    opt.padding = padding;
    nn::conv2d<TestType> conv(5, 7, 3, opt);
    conv.reset_parameters(gen);
    auto& w = conv.weight().value();
    for (index_t i = 0; i < w.size(); ++i) w[i] = gen.uniform() < 0.5 ? TestType(-0.5) : TestType(0.5);
    auto xnor = nc::to_xnor(conv);
    CHECK(xnor.kind() == "XnorConv2d");
    const auto x = random_tensor<TestType>({2, 5, 8, 7}, gen);
    tensor<TestType> y_float, y_xnor;
    conv.forward(sign_of(x), y_float, {});
    xnor.forward(x, y_xnor, {});
    INFO("stride " << stride << " padding " << padding);
    CHECK(y_xnor.flat() == y_float.flat());
  }
}

TEMPLATE_TEST_CASE("int8 Linear: exact on fixed-point grids, within the bound when quantizing", "[compressed][int8]", float, double) {
  rng gen(6);
  nn::linear<TestType> fc(200, 33);
  fc.reset_parameters(gen);
  // Weights on the 8-bit fixed-point grid <3, 5>: codes in [-127, 127] times 2^-5.
  auto& w = fc.weight().value();
  for (index_t i = 0; i < w.size(); ++i) w[i] = static_cast<TestType>(static_cast<int>(gen.below(255)) - 127) / TestType(32);
  nc::int8_options fixed;
  fixed.activation_step = 1.0 / 16;
  fixed.require_exact_weights = true;
  auto q = nc::to_int8(fc, fixed);
  CHECK(q.kind() == "Int8Linear");
  // Activations on the grid 2^-4 within +-127 codes: only float rounding differs.
  tensor<TestType> x({5, 200});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(static_cast<int>(gen.below(255)) - 127) / TestType(16);
  tensor<TestType> y_float, y_q;
  fc.forward(x, y_float, {});
  q.forward(x, y_q, {});
  check_close(y_q, y_float, float_tolerance<TestType>() * 10, "int8 exact");
  // Dynamic activations on real inputs: within sum_k |w_jk| t_n / 2 (+ float rounding).
  auto dyn = nc::to_int8(fc);
  const auto xr = random_tensor<TestType>({5, 200}, gen);
  fc.forward(xr, y_float, {});
  dyn.forward(xr, y_q, {});
  index_t violations = 0;
  for (index_t n = 0; n < 5; ++n) {
    double t = 0;
    for (index_t k = 0; k < 200; ++k) t = std::max(t, std::abs(double(xr[n * 200 + k])));
    t /= 127;
    for (index_t j = 0; j < 33; ++j) {
      double bound = 0;
      for (index_t k = 0; k < 200; ++k) bound += std::abs(double(w[j * 200 + k])) * t / 2;
      violations += std::abs(double(y_q[n * 33 + j]) - double(y_float[n * 33 + j])) > bound * 1.0001 + 1e-4;
    }
  }
  CHECK(violations == 0);
  // Real-valued weights: refused when exact codes are required, rounded otherwise.
  nn::linear<TestType> real(20, 4);
  real.reset_parameters(gen);
  CHECK_THROWS_AS(nc::to_int8(real, fixed), config_error);
  CHECK_FALSE(static_cast<const nc::int8_engine<TestType>&>(nc::to_int8(real).weights()).weights_exact());
}

TEMPLATE_TEST_CASE("int8 and codebook Conv2d equal the float Conv2d", "[compressed][int8][codebook]", float, double) {
  rng gen(7);
  typename nn::conv2d<TestType>::options opt;
  opt.padding = 1;
  nn::conv2d<TestType> conv(4, 6, 3, opt);
  conv.reset_parameters(gen);
  auto& w = conv.weight().value();
  const TestType centroids[5] = {TestType(-0.25), TestType(-0.125), TestType(0), TestType(0.0625), TestType(0.5)};
  for (index_t i = 0; i < w.size(); ++i) w[i] = centroids[gen.below(5)];
  tensor<TestType> x({2, 4, 6, 5});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(static_cast<int>(gen.below(255)) - 127) / TestType(64);
  tensor<TestType> y_float, y;
  conv.forward(x, y_float, {});
  nc::int8_options fixed;
  fixed.activation_step = 1.0 / 64;
  auto q = nc::to_int8(conv, fixed);
  q.forward(x, y, {});
  check_close(y, y_float, float_tolerance<TestType>() * 10, "int8 conv2d");
  auto cb = nc::to_codebook(conv);
  CHECK(cb.kind() == "CodebookConv2d");
  CHECK(static_cast<const nc::codebook_engine<TestType>&>(cb.weights()).matrix().bits() == 3);
  cb.forward(x, y, {});
  check_close(y, y_float, float_tolerance<TestType>() * 10, "codebook conv2d");
}

TEMPLATE_TEST_CASE("codebook Linear equals the weight-shared float Linear", "[compressed][codebook]", float, double) {
  rng gen(8);
  for (int clusters : {2, 16, 32, 200}) {
    nn::linear<TestType> fc(129, 40);
    fc.reset_parameters(gen);
    std::vector<TestType> table(static_cast<std::size_t>(clusters));
    for (auto& c : table) c = static_cast<TestType>(gen.uniform(-1, 1));
    auto& w = fc.weight().value();
    for (index_t i = 0; i < w.size(); ++i) w[i] = table[gen.below(static_cast<std::uint64_t>(clusters))];
    auto cb = nc::to_codebook(fc);
    for (index_t batch : {1, 2, 17}) {
      const auto x = random_tensor<TestType>({batch, 129}, gen);
      tensor<TestType> y_float, y;
      fc.forward(x, y_float, {});
      cb.forward(x, y, {});
      INFO("clusters " << clusters << " batch " << batch);
      check_close(y, y_float, float_tolerance<TestType>() * 10, "codebook linear");
    }
  }
  nn::linear<TestType> real(20, 4);
  real.reset_parameters(gen);
  nc::codebook_options four;
  four.bits = 4;
  CHECK_THROWS_WITH(nc::to_codebook(real, four), Catch::Contains("distinct values"));
}

TEST_CASE("compress: a pruned LeNet-5 runs sparse and gives the float outputs", "[compressed]") {
  rng gen(9);
  auto model = nn::models::lenet5<float>(gen);
  model.visit_parameters([&](nn::parameter<float>& p) {
    if (p.local_name() == "weight") prune_randomly(p, 0.08, gen);
  });
  const auto x = random_tensor<float>({3, 1, 28, 28}, gen, 0, 1);
  tensor<float> y_float, y_sparse;
  model.forward(x, y_float, {});
  auto sparse = model;
  nc::compress_options o;
  o.sparse.batch = 3;
  const auto report = nc::compress(sparse, nc::format::sparse, o);
  REQUIRE(report.size() == 8);  // four layers, two pools fused into the convolutions, flatten and relu1 into fc1
  for (const auto& line : report)
    CHECK((line.find("Sparse") != std::string::npos || line.find("fused into conv") != std::string::npos || line == "relu1: fused into fc1" ||
           line == "flatten: fused into fc1"));
  CHECK(sparse.size() == 4);
  sparse.forward(x, y_sparse, {});
  check_close(y_sparse, y_float, 1e-4, "sparse LeNet-5");
  tensor<float> dy(y_sparse.shape(), 1.0f);
  CHECK_THROWS_WITH(sparse[0].backward(x, y_sparse, dy, nullptr), Catch::Contains("inference-only"));
  // Kept layers stay float.
  auto partly = model;
  o.keep = {"conv1", "fc2"};
  const auto r2 = nc::compress(partly, nc::format::sparse, o);
  CHECK(r2[0] == "conv1: kept");
  CHECK(partly[0].kind() == "Conv2d");
  CHECK(partly.find("fc1").kind() == "SparseLinear");
}
