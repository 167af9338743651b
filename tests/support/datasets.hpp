// Small generated data sets shared by the test suites (one definition, so a module's test files can
// be compiled as one translation unit).
#pragma once

#include <cstdint>

#include "slimnet/core/random.hpp"
#include "slimnet/data/dataset.hpp"

namespace slimnet::testing {

/// Three Gaussian blobs in 2-d (centres (3, 0), (-3, 3), (-3, -3), sigma 0.7), class i % 3:
/// separable with a margin, so a small net reaches ~100% and pruning damage shows in the accuracy.
template <class Scalar>
data::dataset<Scalar> blobs(index_t n, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<Scalar> d;
  d.num_classes = 3;
  d.inputs.resize({n, 2});
  const double centers[3][2] = {{3, 0}, {-3, 3}, {-3, -3}};
  for (index_t i = 0; i < n; ++i) {
    const auto c = static_cast<int>(i % 3);
    d.labels.push_back(c);
    d.inputs.matrix()(i, 0) = static_cast<Scalar>(centers[c][0] + 0.7 * gen.normal());
    d.inputs.matrix()(i, 1) = static_cast<Scalar>(centers[c][1] + 0.7 * gen.normal());
  }
  return d;
}

}  // namespace slimnet::testing
