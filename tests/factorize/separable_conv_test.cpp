// factorize::separate_filters / separable_conv2d: a planted rank-1 filter bank separates exactly,
// full rank is exact, truncation error follows the singular values, the layer passes the gradient
// check, bad ranks throw.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "slimnet/factorize/separable_conv.hpp"
#include "slimnet/factorize/sparsesep.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "support/gradient_check.hpp"

using namespace slimnet;

namespace {

template <class Scalar>
tensor<Scalar> separable_test_random(shape_t shape, rng& gen) {
  tensor<Scalar> t(std::move(shape));
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(gen.normal());
  return t;
}

template <class Scalar>
double separable_test_max_diff(const tensor<Scalar>& a, const tensor<Scalar>& b) {
  REQUIRE(a.shape() == b.shape());
  return static_cast<double>((a.flat() - b.flat()).cwiseAbs().maxCoeff());
}

}  // namespace

TEMPLATE_TEST_CASE("a planted rank-1 filter bank separates exactly at rank 1", "[factorize][separable]", float, double) {
  rng gen(31);
  using conv_options = typename nn::conv2d<TestType>::options;
  for (auto opt : {conv_options{1, 0, true}, conv_options{2, 1, true}, conv_options{1, 2, false}}) {
    const index_t N = 4, C = 3, kh = 3, kw = 5;
    nn::conv2d<TestType> conv(C, N, kh, kw, opt);
    conv.reset_parameters(gen);
    // W(n, c, i, j) = a(c, i) b(n, j)
    const auto a = separable_test_random<TestType>({C, kh}, gen);
    const auto b = separable_test_random<TestType>({N, kw}, gen);
    auto& w = conv.weight().value();
    for (index_t n = 0; n < N; ++n)
      for (index_t c = 0; c < C; ++c)
        for (index_t i = 0; i < kh; ++i)
          for (index_t j = 0; j < kw; ++j) w[((n * C + c) * kh + i) * kw + j] = a[c * kh + i] * b[n * kw + j];
    const auto f = factorize::separate_filters(w, 1);
    REQUIRE(f.singular_values.size() == 9);  // min(C kh, N kw) = min(9, 20)
    CHECK(f.singular_values[1] < 1e-5 * f.singular_values[0]);
    auto sep = factorize::separate_conv(conv, 1);
    CHECK(sep->rank() == 1);
    CHECK(sep->weight_count() == C * kh + N * kw);
    CHECK(separable_test_max_diff(sep->dense_weight(), w) < 1e-5);
    for (index_t batch : {1, 3}) {
      const auto x = separable_test_random<TestType>({batch, C, 9, 11}, gen);
      tensor<TestType> ref, y(conv.output_shape(x.shape()), std::numeric_limits<TestType>::quiet_NaN());
      conv.forward(x, ref, nn::forward_context{});
      sep->forward(x, y, nn::forward_context{});
      INFO("stride " << opt.stride << " padding " << opt.padding << " batch " << batch);
      CHECK(separable_test_max_diff(y, ref) < 1e-4);
    }
  }
}

TEMPLATE_TEST_CASE("separation: exact at full rank, Eckart-Young error below it", "[factorize][separable]", float, double) {
  rng gen(33);
  nn::conv2d<TestType> conv(2, 5, 3, 3, {1, 1, true});
  conv.reset_parameters(gen);
  const index_t full = factorize::full_separable_rank(conv.weight().shape());
  REQUIRE(full == 6);
  auto exact = factorize::separate_conv(conv, full);
  const auto x = separable_test_random<TestType>({2, 2, 7, 6}, gen);
  tensor<TestType> ref, y;
  conv.forward(x, ref, nn::forward_context{});
  exact->forward(x, y, nn::forward_context{});
  CHECK(separable_test_max_diff(y, ref) < 1e-4);
  const auto f = factorize::separate_filters(conv.weight().value(), 1);
  double total = 0;
  for (double s : f.singular_values) total += s * s;
  double tail = total;
  for (index_t k = 1; k <= full; ++k) {
    tail -= f.singular_values[static_cast<std::size_t>(k - 1)] * f.singular_values[static_cast<std::size_t>(k - 1)];
    auto sep = factorize::separate_conv(conv, k);
    const auto w = sep->dense_weight();
    const double err = std::sqrt(static_cast<double>((w.flat() - conv.weight().value().flat()).squaredNorm()));
    INFO("rank " << k);
    CHECK(err == Approx(std::sqrt(std::max(tail, 0.0))).margin(1e-4));
  }
}

TEST_CASE("separable_conv2d passes the gradient check", "[factorize][separable][gradient]") {
  rng gen(35);
  for (auto opt : {nn::conv2d<double>::options{1, 0, true}, nn::conv2d<double>::options{2, 1, false}}) {
    nn::conv2d<double> conv(2, 3, 3, 2, opt);
    conv.reset_parameters(gen);
    auto sep = factorize::separate_conv(conv, 2);
    INFO(sep->describe());
    testing::require_gradients(*sep, {2, 2, 5, 6});
  }
}

TEST_CASE("separation rejects bad ranks and shapes with the function and the value", "[factorize][separable][errors]") {
  using Catch::Matchers::Contains;
  nn::conv2d<float> conv(2, 3, 3);
  CHECK_THROWS_WITH(factorize::separate_conv(conv, 0), Contains("slimnet::factorize::separate_filters") && Contains("rank = 0"));
  CHECK_THROWS_WITH(factorize::separate_conv(conv, 7), Contains("rank = 7") && Contains("[1, 6]"));
  CHECK_THROWS_AS(factorize::separate_filters(tensor<float>({3, 4}), 1), shape_error);
  auto sep = factorize::separate_conv(conv, 2);
  CHECK(sep->describe() == "SeparableConv2d(2, 3, kernel_size=(3, 3), rank=2, stride=1, padding=0)");
  tensor<float> x({1, 3, 5, 5}), y;
  CHECK_THROWS_AS(sep->forward(x, y, nn::forward_context{}), shape_error);
  CHECK_THROWS_AS((factorize::separable_conv2d<float>(tensor<float>({2, 2, 3, 1}), tensor<float>({3, 4, 1, 3}), nn::window2d{})),
                  shape_error);
}
