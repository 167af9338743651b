// NaN propagates through max pooling on every code path: max(NaN, x) = NaN, as PyTorch's
// max_pool2d and slimnet's general path compute it. The 2x2 / stride 2 fast paths (scalar for
// double, AVX-512 for float where the build has it) used to return max(NaN, 0, 0, 0) = 0.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;

namespace {

// The reference: max over each window of the unpadded input, NaN if any cell of the window is NaN.
template <class Scalar>
tensor<Scalar> reference_max_pool(const tensor<Scalar>& x, index_t k, index_t stride) {
  const index_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3), oh = (h - k) / stride + 1, ow = (w - k) / stride + 1;
  tensor<Scalar> y({x.dim(0), x.dim(1), oh, ow});
  for (index_t p = 0; p < planes; ++p)
    for (index_t i = 0; i < oh; ++i)
      for (index_t j = 0; j < ow; ++j) {
        double best = -std::numeric_limits<double>::infinity();
        bool nan = false;
        for (index_t a = 0; a < k; ++a)
          for (index_t b = 0; b < k; ++b) {
            const double v = x[(p * h + i * stride + a) * w + j * stride + b];
            nan = nan || std::isnan(v);
            best = std::max(best, v);
          }
        y[(p * oh + i) * ow + j] = nan ? std::numeric_limits<Scalar>::quiet_NaN() : static_cast<Scalar>(best);
      }
  return y;
}

const char* path_name(index_t kernel, index_t stride, bool is_float) {
  if (kernel == 2 && stride == 2) {
#if defined(__AVX512F__)
    return is_float ? "2x2 fast path, AVX-512" : "2x2 fast path, scalar";
#else
    (void)is_float;
    return "2x2 fast path, scalar";
#endif
  }
  return "general path";
}

}  // namespace

TEMPLATE_TEST_CASE("one NaN pixel makes its max-pool window NaN on every path", "[nn][nan]", float, double) {
  using S = TestType;
  // 2 x 3 planes of 10 x 12: 5 x 6 = 30 outputs per plane for 2x2 (one full AVX-512 group of 16
  // and a masked tail of 14). Values are negative so that "0" (the old fast-path answer for a
  // NaN window, from the zero-filled lanes or a finite neighbour) cannot pass for a maximum.
  for (const auto& [kernel, stride] : {std::pair<index_t, index_t>{2, 2}, {2, 1}, {3, 3}}) {
    for (index_t cell = 0; cell < kernel * kernel; ++cell) {
      INFO(path_name(kernel, stride, std::is_same_v<S, float>) << ", NaN at window cell " << cell);
      tensor<S> x({2, 3, 10, 12});
      for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<S>(-1.0 - std::fmod(0.61 * static_cast<double>(i), 5.0));
      // NaN in plane 4, in the window of output (1, 2) at cell `cell`; also one in the last
      // output of plane 5 (the masked AVX-512 tail), first cell.
      const index_t h = 10, w = 12;
      x[(4 * h + 1 * stride + cell / kernel) * w + 2 * stride + cell % kernel] = std::numeric_limits<S>::quiet_NaN();
      const index_t oh = (h - kernel) / stride + 1, ow = (w - kernel) / stride + 1;
      x[(5 * h + (oh - 1) * stride) * w + (ow - 1) * stride] = std::numeric_limits<S>::quiet_NaN();
      nn::max_pool2d<S> pool(kernel, stride);
      tensor<S> y({2, 3, oh, ow}, S(0));  // poisoned with 0, the wrong answer
      pool.forward(x, y, {});
      const tensor<S> ref = reference_max_pool(x, kernel, stride);
      REQUIRE(y.shape() == ref.shape());
      index_t nans = 0;
      for (index_t i = 0; i < y.size(); ++i) {
        if (std::isnan(ref[i])) {
          ++nans;
          CHECK(std::isnan(y[i]));
        } else {
          CHECK(y[i] == ref[i]);
        }
      }
      CHECK(nans >= 2);
      CHECK(std::isnan(y[(4 * oh + 1) * ow + 2]));
      CHECK(std::isnan(y[(6 * oh) * ow - 1]));
      // The gradient of a NaN output flows to a NaN cell of its window, as the general rule says.
      tensor<S> dy(y.shape(), S(1)), dx;
      pool.backward(x, y, dy, &dx);
      CHECK(std::isnan(x[(4 * h + 1 * stride + cell / kernel) * w + 2 * stride + cell % kernel]));
      CHECK(dx[(4 * h + 1 * stride + cell / kernel) * w + 2 * stride + cell % kernel] >= S(1));
    }
  }
}

TEST_CASE("a NaN pixel gives LeNet-5 a NaN output, and evaluate refuses its loss", "[nn][nan][train]") {
  rng gen(3);
  auto net = nn::models::lenet5<float>(gen);
  data::dataset<float> d;
  d.num_classes = 10;
  d.inputs.resize({8, 1, 28, 28});
  for (index_t i = 0; i < d.inputs.size(); ++i) d.inputs[i] = static_cast<float>(std::fmod(0.37 * static_cast<double>(i), 1.0));
  for (int i = 0; i < 8; ++i) d.labels.push_back(i % 10);
  const auto clean = train::evaluate(net, d, train::cross_entropy<float>(), 4);
  CHECK(std::isfinite(clean.loss));
  d.inputs[6 * 784 + 14 * 28 + 14] = std::numeric_limits<float>::quiet_NaN();  // example 6: batch 1
  tensor<float> out;
  net.forward(d.inputs, out, {});
  CHECK(std::isnan(out.matrix()(6, 0)));
  CHECK(std::isfinite(out.matrix()(5, 0)));
  CHECK_THROWS_AS(train::evaluate(net, d, train::cross_entropy<float>(), 4), slimnet::error);
  CHECK_THROWS_WITH(train::evaluate(net, d, train::cross_entropy<float>(), 4),
                    Catch::Contains("slimnet::train::evaluate") && Catch::Contains("loss is nan on batch 1") &&
                        Catch::Contains("examples 4 to 7 of 8"));
}
