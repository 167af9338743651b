// factorize::sparse_coded_linear computes y = x (C B)^T + b with C sparse, counts the code nonzeros
// as its parameters, passes the gradient check, and keeps the code support when trained.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "slimnet/factorize/sparse_coded_linear.hpp"
#include "slimnet/factorize/sparsesep.hpp"
#include "slimnet/nn/linear.hpp"
#include "support/gradient_check.hpp"

using namespace slimnet;

namespace {

/// Dictionary in x k (Gaussian) and codes k x out with `s` nonzeros per column at fixed places.
template <class Scalar>
std::pair<factorize::matrix<Scalar>, factorize::matrix<Scalar>> coded_linear_test_factors(index_t in, index_t k, index_t out, index_t s,
                                                                                           rng& gen) {
  factorize::matrix<Scalar> d(in, k), x = factorize::matrix<Scalar>::Zero(k, out);
  for (index_t j = 0; j < k; ++j)
    for (index_t i = 0; i < in; ++i) d(i, j) = static_cast<Scalar>(gen.normal());
  for (index_t o = 0; o < out; ++o)
    for (index_t p = 0; p < s; ++p) x((o * 3 + p * 5) % k, o) = static_cast<Scalar>(gen.normal());
  return {d, x};
}

template <class Scalar>
tensor<Scalar> coded_linear_test_input(index_t n, index_t in, rng& gen) {
  tensor<Scalar> x({n, in});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.normal());
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("sparse_coded_linear equals the dense Linear with W = C B", "[factorize][coded_linear]", float, double) {
  rng gen(21);
  const index_t in = 13, k = 7, out = 9, s = 2;
  auto [d, codes] = coded_linear_test_factors<TestType>(in, k, out, s, gen);
  std::vector<TestType> bias(static_cast<std::size_t>(out));
  for (auto& b : bias) b = static_cast<TestType>(gen.normal());
  factorize::sparse_coded_linear<TestType> layer(d, codes, bias.data());
  CHECK(layer.in_features() == in);
  CHECK(layer.out_features() == out);
  CHECK(layer.basis_size() == k);
  CHECK(layer.code_nonzeros() == out * s);
  CHECK(layer.max_code_nonzeros() == s);
  CHECK(layer.parameter_count() == k * in + out * s + out);  // nonzeros, not out * k
  CHECK(layer.weight_count() == k * in + out * s);
  CHECK(layer.describe() == "SparseCodedLinear(13, 9, basis=7, code_nonzeros=18 (<= 2 per output))");

  nn::linear<TestType> dense(in, out);
  const row_matrix<TestType> w = (d * codes).transpose();
  Eigen::Map<row_matrix<TestType>>(dense.weight().value().data(), out, in) = w;
  for (index_t o = 0; o < out; ++o) dense.bias()->value()[o] = bias[static_cast<std::size_t>(o)];
  CHECK((layer.dense_weight() - w).cwiseAbs().maxCoeff() < TestType(1e-5));

  for (index_t n : {1, 5}) {
    const auto x = coded_linear_test_input<TestType>(n, in, gen);
    tensor<TestType> y({n, out}, std::numeric_limits<TestType>::quiet_NaN()), ref;
    layer.forward(x, y, nn::forward_context{});
    dense.forward(x, ref, nn::forward_context{});
    REQUIRE(y.shape() == ref.shape());
    CHECK(y.flat().allFinite());
    CHECK(static_cast<double>((y.flat() - ref.flat()).cwiseAbs().maxCoeff()) < 1e-4);
  }
}

TEST_CASE("sparse_coded_linear passes the gradient check, with and without bias", "[factorize][coded_linear][gradient]") {
  rng gen(23);
  auto [d, codes] = coded_linear_test_factors<double>(6, 4, 5, 2, gen);
  std::vector<double> bias{0.1, -0.2, 0.3, 0.0, 0.5};
  factorize::sparse_coded_linear<double> with_bias(d, codes, bias.data());
  testing::require_gradients(with_bias, {3, 6});
  factorize::sparse_coded_linear<double> without(d, codes);
  testing::require_gradients(without, {2, 6});
}

TEST_CASE("sparse_coded_linear: gradients stay on the code support; clones are independent", "[factorize][coded_linear]") {
  rng gen(25);
  auto [d, codes] = coded_linear_test_factors<double>(5, 4, 3, 1, gen);
  factorize::sparse_coded_linear<double> layer(d, codes);
  layer.set_name("fc");
  CHECK(layer.codes().name() == "fc.codes");
  CHECK(layer.codes().size() == 3);  // only stored entries are parameters: no gradient can densify C
  auto copy = layer.clone();
  auto& c = dynamic_cast<factorize::sparse_coded_linear<double>&>(*copy);
  c.basis().value().set_zero();
  CHECK(layer.basis().value().flat().cwiseAbs().maxCoeff() > 0);
  // A trained step moves only stored values: the dense weight keeps zeros where C has none.
  const auto x = coded_linear_test_input<double>(4, 5, gen);
  tensor<double> y, dx;
  layer.forward(x, y, nn::forward_context{});
  tensor<double> dy(y.shape(), 1.0);
  layer.backward(x, y, dy, &dx);
  CHECK(layer.codes().grad().flat().cwiseAbs().maxCoeff() > 0);
  for (index_t i = 0; i < layer.codes().size(); ++i) layer.codes().value()[i] -= 0.1 * layer.codes().grad()[i];
  CHECK(layer.code_nonzeros() == 3);
}

TEST_CASE("sparse_coded_linear rejects factors that do not chain and inputs that do not fit", "[factorize][coded_linear][errors]") {
  factorize::matrix<float> d = factorize::matrix<float>::Ones(4, 3), x = factorize::matrix<float>::Ones(2, 5);
  CHECK_THROWS_WITH((factorize::sparse_coded_linear<float>(d, x)),
                    Catch::Matchers::Contains("slimnet::factorize::sparse_coded_linear") && Catch::Matchers::Contains("codes 2 x 5"));
  factorize::sparse_coded_linear<float> ok(d, factorize::matrix<float>::Ones(3, 5));
  tensor<float> in({2, 5}), out;
  CHECK_THROWS_AS(ok.forward(in, out, nn::forward_context{}), shape_error);
}

TEMPLATE_TEST_CASE("sparse_code_linear of a trained Linear: exact at full size, budgeted below", "[factorize][coded_linear]", float, double) {
  rng gen(27);
  nn::linear<TestType> lin(16, 10);
  lin.reset_parameters(gen);
  factorize::sparsesep_options opt;
  auto full = factorize::sparse_code_linear(lin, 10, 10, opt);
  const auto x = coded_linear_test_input<TestType>(6, 16, gen);
  tensor<TestType> y, ref;
  full->forward(x, y, nn::forward_context{});
  lin.forward(x, ref, nn::forward_context{});
  CHECK(static_cast<double>((y.flat() - ref.flat()).cwiseAbs().maxCoeff()) < 1e-4);
  auto small = factorize::sparse_code_linear(lin, 6, 2, opt);
  CHECK(small->basis_size() == 6);
  CHECK(small->max_code_nonzeros() <= 2);
  CHECK(small->weight_count() <= 6 * 16 + 10 * 2);
}
