// The direct XNOR convolution (signs packed per pixel, bit-level im2row, fused max-pool / ReLU) and
// whole BNNs converted with compress(model, format::xnor, {.keep = {first, last}}) against the float
// networks they come from: binarized weights +-alpha with alpha a power of two, so the integer dot
// products make every output bitwise equal.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/compressed/binary_model.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/quant/binary.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::poisoned_forward;
using slimnet::testing::random_tensor;

namespace {

/// Weights of every Linear / Conv2d set to +-alpha_j (alpha_j a power of two per output), biases random.
template <class Scalar>
void xnor_model_binarize(nn::layer<Scalar>& l, rng& gen) {
  l.visit_parameters([&](nn::parameter<Scalar>& p) {
    auto& v = p.value();
    const bool weight = p.name().size() >= 6 && p.name().compare(p.name().size() - 6, 6, "weight") == 0;
    if (!weight || p.shape().size() < 2) return;
    const index_t rows = p.shape()[0], cols = v.size() / rows;
    for (index_t j = 0; j < rows; ++j) {
      const Scalar alpha = Scalar(1) / static_cast<Scalar>(index_t{1} << (j % 3));  // 1, 1/2, 1/4
      for (index_t k = 0; k < cols; ++k) v[j * cols + k] = gen.uniform() < 0.5 ? -alpha : alpha;
    }
  });
}

/// x < 0 -> -1, else +1: what the XNOR engine makes of its input.
template <class Scalar>
tensor<Scalar> xnor_model_signs(const tensor<Scalar>& x) {
  tensor<Scalar> s(x.shape());
  for (index_t i = 0; i < x.size(); ++i) s[i] = x[i] < Scalar(0) ? Scalar(-1) : Scalar(1);
  return s;
}

/// Example 07's BNN LeNet-5 style net at small widths, +-alpha weights and random BatchNorm statistics.
template <class Scalar>
nn::sequential<Scalar> xnor_model_bnn(index_t c1, index_t c2, index_t f, rng& gen) {
  nn::sequential<Scalar> m;
  m.add("conv1", nn::conv2d<Scalar>(1, c1, 5));
  m.add("pool1", nn::max_pool2d<Scalar>(2));
  m.add("bn1", nn::batch_norm<Scalar>(c1, 2, {}));
  m.add("act1", quant::sign_activation<Scalar>());
  m.add("conv2", nn::conv2d<Scalar>(c1, c2, 5));
  m.add("pool2", nn::max_pool2d<Scalar>(2));
  m.add("bn2", nn::batch_norm<Scalar>(c2, 2, {}));
  m.add("act2", quant::sign_activation<Scalar>());
  m.add("flatten", nn::flatten<Scalar>());
  m.add("fc1", nn::linear<Scalar>(c2 * 16, f));
  m.add("bn3", nn::batch_norm<Scalar>(f, 1, {}));
  m.add("act3", quant::sign_activation<Scalar>());
  m.add("fc2", nn::linear<Scalar>(f, 10));
  m.add("bn4", nn::batch_norm<Scalar>(10, 1, {}));
  m.reset_parameters(gen);
  xnor_model_binarize(m, gen);
  // BatchNorm: gamma of both signs (a negative gamma flips the sign after it), random shifts.
  m.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (p.name().rfind("bn", 0) != 0) return;
    const bool variance = p.name().find("running_var") != std::string::npos;
    for (index_t i = 0; i < p.size(); ++i) p.value()[i] = static_cast<Scalar>(variance ? gen.uniform(0.25, 2) : gen.uniform(-1, 1));
  });
  return m;
}

}  // namespace

TEMPLATE_TEST_CASE("Direct XNOR convolution equals the float Conv2d on sign inputs, pooled or not, exactly", "[compressed][xnor]", float,
                   double) {
  rng gen(11);
  // Channels across word boundaries (64-bit pixel words: 3, 20, 64, 70) and multiples of 32 (the
  // copying path: 32, 64, 96), kernels square and not.
  struct geometry {
    index_t channels, out, kh, kw, h, w;
  };
  for (const geometry g : {geometry{3, 5, 3, 3, 7, 6}, geometry{20, 50, 5, 5, 12, 12}, geometry{64, 8, 2, 3, 6, 7}, geometry{70, 33, 3, 2, 5, 6},
                            geometry{32, 7, 3, 3, 6, 6}, geometry{96, 5, 2, 2, 4, 5}}) {
    for (index_t batch : {index_t{1}, index_t{3}}) {
      INFO("channels " << g.channels << ", out " << g.out << ", kernel " << g.kh << "x" << g.kw << ", batch " << batch);
      nn::conv2d<TestType> conv(g.channels, g.out, g.kh, g.kw, {});
      conv.reset_parameters(gen);
      xnor_model_binarize(conv, gen);
      const tensor<TestType> x = random_tensor<TestType>({batch, g.channels, g.h, g.w}, gen);
      tensor<TestType> expected;
      conv.forward(xnor_model_signs(x), expected, {});

      auto xnor = nc::to_xnor(conv);
      CHECK(xnor.kind() == "XnorConv2d");
      CHECK(poisoned_forward(xnor, x).flat() == expected.flat());

      // Fused ReLU and 2x2 max-pool (stride 2, and stride 1: overlapping windows).
      for (index_t stride : {index_t{2}, index_t{1}}) {
        if (expected.dim(2) < 2 || expected.dim(3) < 2) continue;
        nn::max_pool2d<TestType> pool(2, stride);
        nn::relu<TestType> relu;
        tensor<TestType> pooled, expected_fused;
        pool.forward(expected, pooled, {});
        relu.forward(pooled, expected_fused, {});
        auto fused = nc::to_xnor(conv);
        fused.fuse({true, 2, stride});
        CHECK(poisoned_forward(fused, x).flat() == expected_fused.flat());
      }
    }
  }
}

TEST_CASE("Direct XNOR convolution: bad geometry is a typed error naming the function", "[compressed][xnor]") {
  rng gen(12);
  nn::conv2d<float> conv(4, 3, 3);
  conv.reset_parameters(gen);
  xnor_model_binarize(conv, gen);
  nc::xnor_engine<float> e(nc::effective_weight(conv.weight()), std::nullopt);
  std::vector<float> x(2 * 4 * 6 * 6, 0.5f), y(2 * 3 * 6 * 6);
  CHECK_THROWS_AS(e.convolve(x.data(), {2, 5, 6, 6, 0, 0}, 3, 3, {}, y.data()), shape_error);
  CHECK_THROWS_WITH(e.convolve(x.data(), {2, 4, 6, 6, 1, 1}, 3, 3, {}, y.data()),
                    Catch::Contains("xnor_engine::convolve") && Catch::Contains("padding"));
  CHECK_THROWS_AS(e.convolve(x.data(), {2, 4, 2, 6, 0, 0}, 3, 3, {}, y.data()), shape_error);
}

TEMPLATE_TEST_CASE("A BNN compressed to XNOR layers (first and last kept float) computes the float BNN bitwise", "[compressed][xnor]", float,
                   double) {
  rng gen(13);
  for (const auto& widths : std::vector<std::vector<index_t>>{{8, 16, 32}, {20, 70, 64}}) {
    INFO("widths " << widths[0] << "-" << widths[1] << "-" << widths[2]);
    nn::sequential<TestType> model = xnor_model_bnn<TestType>(widths[0], widths[1], widths[2], gen);
    nn::sequential<TestType> deployed = model;
    nc::compress_options o;
    o.keep = {"conv1", "fc2"};
    const auto report = nc::compress(deployed, nc::format::xnor, o);
    CHECK(deployed.find("conv1").kind() == "Conv2d");
    CHECK(deployed.find("conv2").kind() == "XnorConv2d");
    CHECK(deployed.find("fc1").kind() == "XnorLinear");
    CHECK(deployed.find("fc2").kind() == "Linear");
    CHECK(std::find(report.begin(), report.end(), "pool2: fused into conv2") != report.end());
    for (index_t batch : {index_t{1}, index_t{5}}) {
      const tensor<TestType> x = random_tensor<TestType>({batch, 1, 28, 28}, gen, -0.5, 2.5);
      const tensor<TestType> expected = poisoned_forward(model, x);
      const tensor<TestType> got = poisoned_forward(deployed, x);
      REQUIRE(got.shape() == expected.shape());
      CHECK(got.flat() == expected.flat());
      // A second call reuses the engines' buffers (and the reordered weights): same outputs.
      CHECK(poisoned_forward(deployed, x).flat() == expected.flat());
    }
    // BatchNorm + sign folded into thresholds, the first layer in its dense compressed form with its
    // max-pool fused (compressed_models --bnn-direct false): still bitwise the float BNN.
    nn::sequential<TestType> fast = model;
    nc::bnn_options dense_first;
    dense_first.direct_first = false;  // the direct first pass has its own test (conv1_sign_test.cpp)
    const auto lines = nc::compress_bnn(fast, dense_first);
    INFO(fmt::format("{}", fmt::join(lines, "\n")));
    CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& l) { return l.find("SignThreshold") != std::string::npos; }) == 3);
    CHECK(std::find(lines.begin(), lines.end(), "pool1: fused into conv1") != lines.end());
    CHECK(fast.find("fc2").kind() == "Linear");
    CHECK(fast.find("conv2").kind() == "XnorConv2d");
    CHECK(fast.find("bn1").kind() == "SignThreshold");
    CHECK(fast.find("conv1").kind() == "DenseConv2d");
    for (index_t batch : {index_t{1}, index_t{4}}) {
      const tensor<TestType> x = random_tensor<TestType>({batch, 1, 28, 28}, gen, -0.5, 2.5);
      CHECK(poisoned_forward(fast, x).flat() == poisoned_forward(model, x).flat());
    }
  }
}

TEMPLATE_TEST_CASE("BatchNorm + sign folded into thresholds gives the float pair's signs bitwise, at the thresholds too", "[compressed][xnor]",
                   float, double) {
  rng gen(14);
  for (int spatial : {1, 2}) {
    const index_t c = 40;
    nn::batch_norm<TestType> bn(c, spatial, {});
    quant::sign_activation<TestType> sign;
    // gamma of both signs and exactly 0 (a constant sign), shifts and statistics at random.
    for (index_t ch = 0; ch < c; ++ch) {
      bn.weight().value()[ch] = ch % 7 == 3 ? TestType(0) : static_cast<TestType>(gen.uniform(-2, 2));
      bn.bias().value()[ch] = static_cast<TestType>(gen.uniform(-1, 1));
      bn.running_mean().value()[ch] = static_cast<TestType>(gen.uniform(-1, 1));
      bn.running_var().value()[ch] = static_cast<TestType>(gen.uniform(0.1, 3));
    }
    const auto folded = nc::sign_threshold<TestType>::from(bn, sign);
    CHECK(folded.kind() == "SignThreshold");
    // Inputs: random, each channel's interval ends and their neighbours one ulp away, zeros, NaN,
    // the infinities and the extreme finite values (where gamma = 0 meets 0 * inf).
    const index_t l = spatial == 2 ? 12 : 1, n = 12;
    tensor<TestType> x(spatial == 2 ? shape_t{n, c, 3, 4} : shape_t{n, c});
    for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(gen.uniform(-3, 3));
    const TestType inf = std::numeric_limits<TestType>::infinity();
    for (index_t ch = 0; ch < c; ++ch) {
      const auto& k = folded.channels()[static_cast<std::size_t>(ch)];
      const TestType special[] = {k.lo, std::nextafter(k.lo, -inf), k.hi, std::nextafter(k.hi, inf), TestType(0), -TestType(0),
                                  std::numeric_limits<TestType>::quiet_NaN(), inf, -inf, std::numeric_limits<TestType>::lowest(),
                                  std::numeric_limits<TestType>::max(), TestType(1e30)};
      for (index_t i = 0; i < n; ++i) x[(i * c + ch) * l] = special[i];
      if (ch % 7 != 3) CHECK((std::isfinite(k.lo) != std::isfinite(k.hi)));  // gamma != 0: one threshold
    }
    tensor<TestType> normed, expected;
    bn.forward(x, normed, {});
    sign.forward(normed, expected, {});
    auto layer = folded;
    CHECK(poisoned_forward(layer, x).flat() == expected.flat());
  }
  // Only a BatchNorm directly followed by a sign activation is folded; backward is refused.
  nn::sequential<TestType> m;
  m.add("bn", nn::batch_norm<TestType>(4, 1, {}));
  m.add("relu", nn::relu<TestType>());
  m.add("bn2", nn::batch_norm<TestType>(4, 1, {}));
  m.add("act", quant::sign_activation<TestType>());
  const auto report = nc::fold_batch_norm_sign(m);
  REQUIRE(report.size() == 1);
  CHECK(m.size() == 3);
  CHECK(m.find("bn").kind() == "BatchNorm1d");
  CHECK(m.find("bn2").kind() == "SignThreshold");
  tensor<TestType> x({2, 4}), y, dx;
  CHECK_THROWS_WITH(m[2].backward(x, x, x, &dx), Catch::Contains("inference-only"));
}

TEST_CASE("compress_bnn on a BNN MLP keeps its first Linear float and runs the middle one on XNOR, bitwise", "[compressed][xnor]") {
  rng gen(15);
  nn::sequential<float> mlp;
  mlp.add("flatten", nn::flatten<float>());
  mlp.add("fc1", nn::linear<float>(49, 64));
  mlp.add("bn1", nn::batch_norm<float>(64, 1, {}));
  mlp.add("act1", quant::sign_activation<float>());
  mlp.add("fc2", nn::linear<float>(64, 70));
  mlp.add("bn2", nn::batch_norm<float>(70, 1, {}));
  mlp.add("act2", quant::sign_activation<float>());
  mlp.add("fc3", nn::linear<float>(70, 10));
  mlp.reset_parameters(gen);
  xnor_model_binarize(mlp, gen);
  nn::sequential<float> deployed = mlp;
  nc::compress_bnn(deployed);
  CHECK(deployed.find("fc1").kind() == "Linear");
  CHECK(deployed.find("fc2").kind() == "XnorLinear");
  CHECK(deployed.find("fc3").kind() == "Linear");
  CHECK(deployed.find("bn2").kind() == "SignThreshold");
  const tensor<float> x = random_tensor<float>({6, 1, 7, 7}, gen);
  CHECK(poisoned_forward(deployed, x).flat() == poisoned_forward(mlp, x).flat());

  nn::sequential<float> single;
  single.add("fc", nn::linear<float>(4, 2));
  CHECK_THROWS_WITH(nc::compress_bnn(single), Catch::Contains("compress_bnn") && Catch::Contains("1 Linear / Conv2d"));
}
