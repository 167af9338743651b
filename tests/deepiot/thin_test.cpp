// Thinning: the thinned dense model computes what the hard-gated model computes (MLP, conv nets
// with and without BatchNorm, folded probabilities), weight counts follow the formula, errors.
#include <catch2/catch.hpp>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/structure.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

template <class Scalar>
void randomize(nn::layer<Scalar>& m, std::uint64_t seed) {
  rng gen(seed);
  m.visit_parameters([&](nn::parameter<Scalar>& p) {
    for (index_t i = 0; i < p.size(); ++i) {
      p.value()[i] = static_cast<Scalar>(p.local_name() == "running_var" ? 0.5 + gen.uniform() : 0.5 * gen.normal());
    }
  });
}

/// Hardens every gate with random probabilities, then compares thin(g) with g in evaluation.
template <class Scalar>
void check_thin_equals_hard(deepiot::gated_model<Scalar>& g, const shape_t& input, bool fold, double tol) {
  rng gen(9);
  std::vector<column_vector<Scalar>> p;
  for (const auto& l : g.layers) {
    column_vector<Scalar> v(l.units);
    for (index_t j = 0; j < v.size(); ++j) v[j] = static_cast<Scalar>(gen.uniform());
    p.push_back(v);
  }
  const auto keep = deepiot::harden(g, p, 0.5, fold);
  auto thinned = deepiot::thin(g);
  tensor<Scalar> x(input), y_gated, y_thin;
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.normal());
  nn::forward_context ctx{false, &gen};
  g.net.forward(x, y_gated, ctx);
  thinned.forward(x, y_thin, ctx);
  REQUIRE(y_thin.shape() == y_gated.shape());
  INFO(thinned.describe());
  REQUIRE((y_thin.flat() - y_gated.flat()).cwiseAbs().maxCoeff() <= tol * std::max<Scalar>(1, y_gated.flat().cwiseAbs().maxCoeff()));
  // Something was actually removed.
  REQUIRE(deepiot::weight_count(thinned) < deepiot::weight_count(g.net));
  for (std::size_t k = 0; k < g.layers.size(); ++k) {
    const auto& kk = keep.at(g.layers[k].name);
    REQUIRE(std::count(kk.begin(), kk.end(), true) >= 1);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("thin() of an MLP equals the hard-gated model", "[deepiot][thin]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
  nn::sequential<TestType> m;
  m.add("fc1", nn::linear<TestType>(6, 9));
  m.add("relu1", nn::relu<TestType>());
  m.add("fc2", nn::linear<TestType>(9, 7));
  m.add("relu2", nn::relu<TestType>());
  m.add("fc3", nn::linear<TestType>(7, 3));
  randomize(m, 1);
  auto g = deepiot::attach_gates(m);
  REQUIRE(g.layers.size() == 2);
  REQUIRE(g.net.local_name(2) == "fc1_gate");
  REQUIRE(g.net.local_name(5) == "fc2_gate");
  SECTION("binary ẑ") { check_thin_equals_hard(g, {5, 6}, false, tol); }
  SECTION("probabilities folded into the next layer") { check_thin_equals_hard(g, {5, 6}, true, tol); }
}

TEMPLATE_TEST_CASE("thin() of a conv net equals the hard-gated model", "[deepiot][thin]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-12;
  for (const bool bn : {false, true}) {
    DYNAMIC_SECTION("batch norm " << bn) {
      nn::sequential<TestType> m;
      m.add("conv1", nn::conv2d<TestType>(2, 5, 3));
      if (bn) m.add("bn1", nn::batch_norm<TestType>(5, 2, {}));
      m.add("relu1", nn::relu<TestType>());
      m.add("pool1", nn::max_pool2d<TestType>(2));
      m.add("conv2", nn::conv2d<TestType>(5, 4, 3, {1, 1, true}));
      if (bn) m.add("bn2", nn::batch_norm<TestType>(4, 2, {}));
      m.add("relu2", nn::relu<TestType>());
      m.add("pool2", nn::avg_pool2d<TestType>(2));
      m.add("flatten", nn::flatten<TestType>());
      m.add("fc1", nn::linear<TestType>(16, 6));
      m.add("relu3", nn::relu<TestType>());
      m.add("fc2", nn::linear<TestType>(6, 3));
      randomize(m, 2);
      auto g = deepiot::attach_gates(m);
      REQUIRE(g.layers.size() == 3);
      REQUIRE(g.layers[0].conv);
      REQUIRE(g.layers[0].fan_in == 18);
      check_thin_equals_hard(g, {3, 2, 10, 10}, true, tol);
    }
  }
}

TEST_CASE("thinned LeNet-5 and LeNet-300-100 weight counts follow the formula", "[deepiot][thin]") {
  rng gen(1);
  auto lenet5 = nn::models::lenet5<float>(gen);
  auto select = [](index_t units, index_t kept) {
    std::vector<bool> v(static_cast<std::size_t>(units), false);
    for (index_t j = 0; j < kept; ++j) v[static_cast<std::size_t>((j * 7) % units)] = true;  // 7 is coprime with all sizes
    return v;
  };
  const index_t k1 = 10, k2 = 20, k3 = 10;  // the paper's Table 2
  auto t = deepiot::thin(lenet5, {{"conv1", select(20, k1)}, {"conv2", select(50, k2)}, {"fc1", select(500, k3)}});
  REQUIRE(deepiot::weight_count(lenet5) == 500 + 25000 + 400000 + 5000);
  REQUIRE(deepiot::weight_count(t) == 25 * k1 + 25 * k1 * k2 + 16 * k2 * k3 + 10 * k3);
  REQUIRE(t.describe().find("Linear(320, 10)") != std::string::npos);
  tensor<float> x({2, 1, 28, 28}, 0.5f), y;
  t.forward(x, y, {});
  REQUIRE(y.shape() == shape_t{2, 10});
  // 8,550 / 430,500 = 1.99%, the paper's check of Table 2.
  REQUIRE(static_cast<double>(deepiot::weight_count(t)) / 430500.0 == Approx(0.0199).margin(5e-5));

  auto lenet300 = nn::models::lenet_300_100<float>(gen);
  auto t3 = deepiot::thin(lenet300, {{"fc1", select(300, 30)}, {"fc2", select(100, 17)}});
  REQUIRE(deepiot::weight_count(t3) == 784 * 30 + 30 * 17 + 17 * 10);
}

TEST_CASE("thin() rejects what it cannot thin", "[deepiot][thin][errors]") {
  rng gen(1);
  auto m = nn::models::lenet_300_100<float>(gen);
  REQUIRE_THROWS_WITH(deepiot::thin(m, {{"fc9", std::vector<bool>(3, true)}}), Contains("thin") && Contains("'fc9'"));
  REQUIRE_THROWS_WITH(deepiot::thin(m, {{"fc1", std::vector<bool>(3, true)}}), Contains("3 entries") && Contains("300 units"));
  REQUIRE_THROWS_WITH(deepiot::thin(m, {{"fc1", std::vector<bool>(300, false)}}), Contains("keep no unit"));
  REQUIRE_THROWS_WITH(deepiot::thin(m, {{"fc3", std::vector<bool>(10, true)}}), Contains("output"));
  REQUIRE_THROWS_WITH(deepiot::thin(m, {{"relu1", std::vector<bool>(300, true)}}), Contains("not a Linear"));
  auto g = deepiot::attach_gates(m);
  REQUIRE_THROWS_WITH(deepiot::thin(g), Contains("stochastic mode"));
  REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"fc3"}), Contains("output layer"));
  REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"relu1"}), Contains("not a Linear"));
  REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"nope"}), Contains("'nope'"));
  // A Tanh after a gate with a non-unit scale cannot take the scale.
  nn::sequential<double> s;
  s.add("fc1", nn::linear<double>(3, 4));
  s.add("relu", nn::relu<double>());
  s.add("fc2", nn::linear<double>(4, 4));
  s.add("tanh", nn::tanh<double>());
  s.add("fc3", nn::linear<double>(4, 2));
  auto gs = deepiot::attach_gates(s, {"fc1"});
  column_vector<double> scale(4);
  scale << 0.5, 0, 1, 1;
  gs.gate(0).set_hard(scale);
  REQUIRE_NOTHROW(deepiot::thin(gs));
  // An LSTM consumes the kept units as input features (the structure module thins it too).
  nn::sequential<double> r;
  r.add("fc1", nn::linear<double>(3, 4));
  r.add("lstm", nn::lstm<double>(4, 2));
  REQUIRE(dynamic_cast<nn::lstm<double>&>(deepiot::thin(r, {{"fc1", {true, false, true, true}}}).find("lstm")).input_size() == 3);
  // A TimeDistributed over (F) steps passes the units to its inner layer as input features; over
  // (C, H, W) steps it would mix them, and is refused.
  nn::sequential<double> u;
  u.add("lstm", nn::lstm<double>(3, 4));
  u.add("td", nn::time_distributed<double>(nn::linear<double>(4, 4), {4}));
  u.add("lstm2", nn::lstm<double>(4, 2));
  auto thin_u = structure::thin(u, {{"lstm.l0", {true, false, true, true}}});
  REQUIRE(dynamic_cast<nn::linear<double>&>(dynamic_cast<nn::time_distributed<double>&>(thin_u.find("td")).inner()).in_features() == 3);
  nn::sequential<double> v;
  v.add("lstm", nn::lstm<double>(3, 4));
  v.add("td", nn::time_distributed<double>(nn::conv2d<double>(1, 2, 1), {1, 2, 2}));
  REQUIRE_THROWS_WITH(structure::thin(v, {{"lstm.l0", {true, false, true, true}}}), Contains("TimeDistributed 'td'"));
}
