// The batch-1 sparse Linear of issue 15 within its memory bound: sparse weight bytes <= 1.5 x
// nonzeros x 8 bytes (12 bytes per nonzero) for magnitude-pruned layers whose rows have very
// different lengths, kept in the fast SELL-16 form (rows sorted by length) rather than falling back
// to CSR, and equal to the masked float layer (outputs poisoned with NaN before each call).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "support/poison.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;

namespace {

/// A Linear pruned like magnitude pruning leaves it: row i keeps a fraction drawn around `density`
/// (from density / 4 to 2 density, so rows of one slice differ by up to 8x), weights in [-1, 1].
template <class Scalar>
nn::linear<Scalar> uneven_pruned_linear(index_t in, index_t out, double density, rng& gen) {
  nn::linear<Scalar> l(in, out);
  l.reset_parameters(gen);
  auto& w = l.weight().value();
  for (index_t i = 0; i < out; ++i) {
    const double keep = std::min(1.0, density * gen.uniform(0.25, 2.0));
    for (index_t j = 0; j < in; ++j)
      if (!(gen.uniform() < keep)) w[i * in + j] = Scalar(0);
  }
  return l;
}

}  // namespace

TEMPLATE_TEST_CASE("batch-1 sparse Linear: at most 12 bytes per nonzero, SELL-16 kept, equal to the float layer",
                   "[compressed][sparse][memory]", float, double) {
  rng gen(15);
  struct shape {
    index_t in, out;
    double density;
  };
  // LeNet-5 fc1 (magnitude 8%, DNS 0.5%), LeNet-300-100 fc1 / fc2, and odd shapes.
  for (const shape s : {shape{800, 500, 0.08}, shape{800, 500, 0.005}, shape{784, 300, 0.08}, shape{300, 100, 0.09},
                        shape{129, 37, 0.3}, shape{1000, 17, 0.02}, shape{65, 131, 0.5}}) {
    auto l = uneven_pruned_linear<TestType>(s.in, s.out, s.density, gen);
    index_t nnz = 0;
    for (index_t i = 0; i < l.weight().size(); ++i) nnz += l.weight().value()[i] != TestType(0);
    nc::sparse_options o;
    o.batch = 1;
    o.force_sparse = true;
    o.measure_column_order = false;  // the SELL-16 form itself, not the form timed fastest on this CPU
    auto c = nc::to_sparse(l, o);
    const double per_nnz = static_cast<double>(c.weights().bytes()) / static_cast<double>(std::max<index_t>(nnz, 1));
    INFO(s.out << " x " << s.in << " at " << s.density << ": " << c.describe() << ", " << per_nnz << " bytes per nonzero");
    CHECK(per_nnz <= 12.0);
    // Float SELL-16 (4-byte values, 1-byte indices) fits the bound; double's 8-byte values may not,
    // and then the compact CSR (10 bytes per nonzero) is the right choice.
    if (std::is_same_v<TestType, float> && s.out >= 100 && s.density >= 0.05) {
      CHECK(c.weights().format().find("SELL-16") != std::string::npos);
    }
    for (index_t batch : {index_t{1}, index_t{3}}) {
      tensor<TestType> x({batch, s.in});
      for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(gen.uniform(-1, 1));
      tensor<TestType> expected, y(c.output_shape(x.shape()));
      l.forward(x, expected, {});
      for (int call = 0; call < 2; ++call) {  // the second call reuses the engine's scratch
        for (index_t i = 0; i < y.size(); ++i) y[i] = slimnet::testing::poison_value<TestType>();
        c.forward(x, y, {});
        const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-12;
        index_t bad = 0;
        for (index_t i = 0; i < y.size(); ++i)
          if (!(std::abs(double(y[i]) - double(expected[i])) <= tol * (1 + std::abs(double(expected[i]))))) ++bad;
        CHECK(bad == 0);
      }
    }
  }
}
