// The direct first pass of a BNN (kernels/conv1_sign.hpp, nn/compressed/conv1_sign.hpp): one-channel
// convolution, max-pool, bias and folded BatchNorm + sign in one pass, against the float layers it
// replaces (nn::conv2d, nn::max_pool2d, nn::batch_norm, quant::sign_activation) bitwise, both kernel
// paths, odd shapes; and compress_bnn using it with the whole BNN still bitwise the float one.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/compressed/binary_model.hpp"
#include "slimnet/nn/compressed/conv1_sign.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/quant/binary.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::poisoned_forward;

namespace {

/// Pixels as MNIST has them: k / 255, about 70% exactly 0.
template <class Scalar>
tensor<Scalar> conv1_sign_pixels(const shape_t& shape, rng& gen) {
  tensor<Scalar> x(shape);
  for (index_t i = 0; i < x.size(); ++i) x[i] = gen.uniform() < 0.7 ? Scalar(0) : static_cast<Scalar>(std::floor(gen.uniform(1, 256))) / Scalar(255);
  return x;
}

/// BatchNorm with gamma of both signs and exactly 0, random statistics.
template <class Scalar>
void conv1_sign_randomize_bn(nn::batch_norm<Scalar>& bn, rng& gen) {
  for (index_t ch = 0; ch < bn.features(); ++ch) {
    bn.weight().value()[ch] = ch % 9 == 4 ? Scalar(0) : static_cast<Scalar>(gen.uniform(-2, 2));
    bn.bias().value()[ch] = static_cast<Scalar>(gen.uniform(-1, 1));
    bn.running_mean().value()[ch] = static_cast<Scalar>(gen.uniform(-1, 1));
    bn.running_var().value()[ch] = static_cast<Scalar>(gen.uniform(0.1, 3));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("conv1_sign equals conv2d + max-pool + BatchNorm + sign bitwise", "[compressed][conv1_sign]", float, double) {
  rng gen(31);
  struct geometry {
    index_t out, kh, kw, pool, h, w;
  };
  for (const geometry g : {geometry{32, 5, 5, 2, 28, 28}, geometry{20, 5, 5, 2, 28, 28}, geometry{1, 3, 3, 1, 7, 9}, geometry{50, 3, 2, 2, 13, 17},
                           geometry{64, 5, 5, 1, 12, 12}, geometry{17, 1, 1, 3, 10, 11}}) {
    nn::conv2d<TestType> conv(1, g.out, g.kh, g.kw, {});
    conv.reset_parameters(gen);
    nn::batch_norm<TestType> bn(g.out, 2, {});
    conv1_sign_randomize_bn(bn, gen);
    quant::sign_activation<TestType> sign;
    const auto threshold = nc::sign_threshold<TestType>::from(bn, sign);
    const row_matrix<TestType> w = conv.weight().value().matrix();
    std::vector<TestType> bias(conv.bias()->value().data(), conv.bias()->value().data() + g.out);
    nc::conv1_sign_layer<TestType> direct(w, bias, g.kh, g.kw, g.pool, threshold);
    CHECK(direct.kind() == "Conv1Sign");
    for (index_t batch : {index_t{1}, index_t{3}}) {
      const tensor<TestType> x = conv1_sign_pixels<TestType>({batch, 1, g.h, g.w}, gen);
      tensor<TestType> z, pooled, normed, expected;
      conv.forward(x, z, {});
      if (g.pool > 1) {
        nn::max_pool2d<TestType> pool(g.pool);
        pool.forward(z, pooled, {});
      } else {
        pooled = z;
      }
      bn.forward(pooled, normed, {});
      sign.forward(normed, expected, {});
      INFO(g.out << " filters " << g.kh << "x" << g.kw << " pool " << g.pool << " on " << g.h << "x" << g.w << ", batch " << batch);
      CHECK(poisoned_forward(direct, x).flat() == expected.flat());
      // The portable path (the reference) directly through the kernel.
      kernels::conv1_sign_params<TestType> p;
      p.out_channels = g.out;
      p.kernel_h = g.kh;
      p.kernel_w = g.kw;
      p.pool = g.pool;
      p.weights = w.data();
      p.bias = bias.data();
      std::vector<TestType> lo, hi, in_value, nan_value;
      for (const auto& k : threshold.channels()) {
        lo.push_back(k.lo);
        hi.push_back(k.hi);
        in_value.push_back(k.inside ? TestType(1) : TestType(-1));
        nan_value.push_back(k.nan_plus ? TestType(1) : TestType(-1));
      }
      p.lo = lo.data();
      p.hi = hi.data();
      p.in_value = in_value.data();
      p.nan_value = nan_value.data();
      p.path = kernels::kernel_path::portable;
      std::vector<TestType> y(static_cast<std::size_t>(expected.size()), std::numeric_limits<TestType>::quiet_NaN());
      kernels::conv1_sign_workspace ws;
      kernels::conv1_sign(p, x.data(), batch, g.h, g.w, y.data(), ws);
      CHECK(std::equal(y.begin(), y.end(), expected.data()));
    }
  }
  nc::conv1_sign_layer<TestType> small(row_matrix<TestType>::Ones(2, 9), {}, 3, 3, 2,
                                       nc::sign_threshold<TestType>(std::vector<typename nc::sign_threshold<TestType>::channel>(2), 2));
  tensor<TestType> y;
  CHECK_THROWS_AS(small.forward(tensor<TestType>({1, 1, 3, 3}), y, {}), shape_error);  // 1x1 output, pool 2
  CHECK_THROWS_AS(small.forward(tensor<TestType>({1, 2, 8, 8}), y, {}), shape_error);  // two channels
  CHECK_THROWS_AS(small.backward(y, y, y, nullptr), config_error);
}

TEST_CASE("compress_bnn: the first convolution, its pool and threshold become one direct pass; the BNN stays bitwise", "[compressed][conv1_sign]") {
  rng gen(32);
  nn::sequential<float> m;
  m.add("conv1", nn::conv2d<float>(1, 32, 5));
  m.add("pool1", nn::max_pool2d<float>(2));
  m.add("bn1", nn::batch_norm<float>(32, 2, {}));
  m.add("act1", quant::sign_activation<float>());
  m.add("conv2", nn::conv2d<float>(32, 16, 5));
  m.add("pool2", nn::max_pool2d<float>(2));
  m.add("bn2", nn::batch_norm<float>(16, 2, {}));
  m.add("act2", quant::sign_activation<float>());
  m.add("flatten", nn::flatten<float>());
  m.add("fc1", nn::linear<float>(16 * 16, 10));
  m.reset_parameters(gen);
  // Binarized weights +-1 (the middle layer must be for XNOR; the first one too, as trained).
  m.visit_parameters([&](nn::parameter<float>& p) {
    if (p.name().find("conv") == 0 && p.name().find(".weight") != std::string::npos)
      for (index_t i = 0; i < p.size(); ++i) p.value()[i] = p.value()[i] < 0 ? -1.0f : 1.0f;
  });
  for (const char* bn : {"bn1", "bn2"}) conv1_sign_randomize_bn(dynamic_cast<nn::batch_norm<float>&>(m.find(bn)), gen);
  nn::sequential<float> fast = m;
  const auto lines = nc::compress_bnn(fast);
  INFO(fmt::format("{}", fmt::join(lines, "\n")));
  CHECK(fast.find("conv1").kind() == "Conv1Sign");
  CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& l) { return l.find("conv1 + bn1: Conv1Sign") == 0; }) == 1);
  CHECK(fast.size() == m.size() - 5);  // pool1, pool2 (fused), act1, act2 (folded), bn1 (into conv1)
  for (index_t batch : {index_t{1}, index_t{6}}) {
    const tensor<float> x = conv1_sign_pixels<float>({batch, 1, 28, 28}, gen);
    CHECK(poisoned_forward(fast, x).flat() == poisoned_forward(m, x).flat());
  }
  nn::sequential<float> dense_first = m;
  nc::bnn_options o;
  o.direct_first = false;
  nc::compress_bnn(dense_first, o);
  CHECK(dense_first.find("conv1").kind() == "DenseConv2d");
}
