// The unit gate: finite-difference gradients with a per-example mask, exact evaluation scaling,
// hard mode, and errors for bad masks and probabilities.
#include <catch2/catch.hpp>

#include "slimnet/deepiot.hpp"
#include "support/gradient_check.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {
tensor<double> random_mask(index_t n, index_t units, std::uint64_t seed) {
  rng gen(seed);
  tensor<double> z({n, units});
  for (index_t i = 0; i < z.size(); ++i) z[i] = gen.bernoulli(0.6) ? 1.0 : 0.0;
  return z;
}
}  // namespace

TEST_CASE("unit_gate passes the gradient check with a per-example mask", "[deepiot][gradient]") {
  testing::gradient_check_options o;
  o.training = true;
  SECTION("fully connected (N, units)") {
    deepiot::unit_gate<double> g(5);
    g.transform().set_mask(random_mask(3, 5, 1));
    testing::require_gradients(g, {3, 5}, o);
  }
  SECTION("conv channels (N, C, H, W), one mask value per example and channel") {
    deepiot::unit_gate<double> g(3);
    g.transform().set_mask(random_mask(2, 3, 2));
    testing::require_gradients(g, {2, 3, 4, 5}, o);
  }
  SECTION("hard mode") {
    deepiot::unit_gate<double> g(4);
    column_vector<double> s(4);
    s << 0.0, 0.7, 1.0, 0.25;
    g.transform().set_hard(s);
    testing::require_gradients(g, {3, 4}, o);
  }
}

TEMPLATE_TEST_CASE("unit_gate masks per example in training and scales by p in evaluation", "[deepiot]", float, double) {
  deepiot::unit_gate<TestType> g(3);
  tensor<TestType> x({2, 3, 2, 2});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(i + 1);
  tensor<TestType> z({2, 3});
  z.flat() << 1, 0, 1, 0, 1, 1;
  g.transform().set_mask(z);
  column_vector<TestType> p(3);
  p << TestType(0.25), TestType(0.5), TestType(0.125);
  g.transform().set_probabilities(p);
  tensor<TestType> y;
  rng gen(1);
  g.forward(x, y, {true, &gen});
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c)
      for (index_t k = 0; k < 4; ++k) {
        const index_t at = (n * 3 + c) * 4 + k;
        REQUIRE(y[at] == x[at] * z[n * 3 + c]);  // not inverted: no 1/p
      }
  g.forward(x, y, {false, &gen});
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c)
      for (index_t k = 0; k < 4; ++k) {
        const index_t at = (n * 3 + c) * 4 + k;
        REQUIRE(y[at] == x[at] * p[c]);  // exact: one multiplication
      }
  // Hard mode ignores the mask in training too.
  column_vector<TestType> hard(3);
  hard << 1, 0, 1;
  g.transform().set_hard(hard);
  g.forward(x, y, {true, &gen});
  for (index_t i = 0; i < x.size(); ++i) REQUIRE(y[i] == x[i] * hard[(i / 4) % 3]);
}

TEST_CASE("unit_gate rejects bad masks, probabilities and inputs", "[deepiot][errors]") {
  REQUIRE_THROWS_AS(deepiot::unit_gate<float>(0), config_error);
  deepiot::unit_gate<float> g(3);
  REQUIRE_THROWS_WITH(g.transform().set_mask(tensor<float>({2, 4})), Contains("unit_mask::set_mask") && Contains("(2, 4)"));
  tensor<float> z({2, 3}, 0.5f);
  REQUIRE_THROWS_WITH(g.transform().set_mask(z), Contains("0.5") && Contains("not 0 or 1"));
  column_vector<float> p(3);
  p << 0.5f, 1.5f, 0.2f;
  REQUIRE_THROWS_WITH(g.transform().set_probabilities(p), Contains("set_probabilities") && Contains("1.5"));
  p << 0.5f, -0.1f, 0.2f;
  REQUIRE_THROWS_AS(g.transform().set_hard(p), config_error);
  REQUIRE_THROWS_AS(g.transform().set_probabilities(column_vector<float>::Ones(2)), shape_error);
  tensor<float> x({4, 3}, 1.0f), y;
  rng gen(1);
  g.transform().set_mask(tensor<float>({2, 3}, 1.0f));
  REQUIRE_THROWS_WITH(g.forward(x, y, {true, &gen}), Contains("(4, 3)"));  // mask batch 2 != 4
  REQUIRE_THROWS_AS(g.forward(tensor<float>({4, 5}), y, {false, &gen}), shape_error);
}
