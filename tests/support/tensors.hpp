// Test inputs and poisoned forward passes shared by the test suites (one definition, so a module's
// test files can be compiled as one translation unit).
#pragma once

#include <catch2/catch.hpp>
#include <limits>
#include <utility>

#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::testing {

/// A tensor of the given shape, each value uniform in [lo, hi).
template <class Scalar>
tensor<Scalar> random_tensor(shape_t shape, rng& gen, double lo = -1, double hi = 1) {
  tensor<Scalar> t(std::move(shape));
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(gen.uniform(lo, hi));
  return t;
}

/// Forward with the output poisoned by NaN first (right shape, so no reallocation hides an output
/// the layer failed to write).
template <class Scalar>
tensor<Scalar> poisoned_forward(nn::layer<Scalar>& l, const tensor<Scalar>& x) {
  tensor<Scalar> y(l.output_shape(x.shape()));
  for (index_t i = 0; i < y.size(); ++i) y[i] = std::numeric_limits<Scalar>::quiet_NaN();
  l.forward(x, y, {});
  return y;
}

/// Catch2 checks that `actual` has `expected`'s shape and each value within `margin` of it.
template <class Scalar>
void check_close(const tensor<Scalar>& expected, const tensor<Scalar>& actual, double margin) {
  REQUIRE(expected.shape() == actual.shape());
  for (index_t i = 0; i < expected.size(); ++i) CHECK(actual[i] == Approx(expected[i]).margin(margin));
}

}  // namespace slimnet::testing
