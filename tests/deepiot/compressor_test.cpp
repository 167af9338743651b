// The compressor and the REINFORCE pieces: the φ-gradient of the surrogate against finite
// differences (with soft deletion), seeded unbiased masks, the baseline, τ schedule, stop rule.
#include <catch2/catch.hpp>

#include <cmath>

#include "slimnet/deepiot.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

struct surrogate_fixture {
  std::vector<deepiot::compressor_layer> layers{{"conv1", 2 * 3 * 3, 4, true}, {"fc1", 7, 5, false}, {"fc2", 5, 3, true}};
  std::vector<tensor<double>> w, b;
  std::vector<tensor<double>> z;
  std::vector<double> advantage;
  double tau = 0, gamma = 0.5, eps = 1e-6;

  explicit surrogate_fixture(deepiot::compressor<double>& c, index_t n) {
    rng gen(11);
    for (const auto& l : layers) {
      tensor<double> wl({l.units, l.fan_in}), bl({l.units});
      for (index_t i = 0; i < wl.size(); ++i) wl[i] = gen.normal() * 0.5;
      for (index_t i = 0; i < bl.size(); ++i) bl[i] = gen.normal() * 0.5;
      w.push_back(wl);
      b.push_back(bl);
    }
    // τ in the widest gap of the middle third of p: soft deletion acts on a third or more of the units.
    auto p = c.forward(weights(), biases());
    std::vector<double> all;
    for (auto& v : p) all.insert(all.end(), v.data(), v.data() + v.size());
    std::sort(all.begin(), all.end());
    std::size_t gap = all.size() / 3;
    for (std::size_t i = all.size() / 3; i < 2 * all.size() / 3; ++i) {
      if (all[i + 1] - all[i] > all[gap + 1] - all[gap]) gap = i;
    }
    tau = 0.5 * (all[gap] + all[gap + 1]);
    for (auto& v : p) z.push_back(deepiot::sample_masks(deepiot::soft_delete(v, tau, gamma), n, gen));
    for (index_t i = 0; i < n; ++i) advantage.push_back(gen.normal());
  }
  std::vector<const tensor<double>*> weights() const {
    std::vector<const tensor<double>*> out;
    for (auto& t : w) out.push_back(&t);
    return out;
  }
  std::vector<const tensor<double>*> biases() const {
    std::vector<const tensor<double>*> out;
    for (std::size_t k = 0; k < b.size(); ++k) out.push_back(layers[k].bias ? &b[k] : nullptr);
    return out;
  }
  /// S = mean_i A_i sum_l log μ(z_il) with p̂ = soft_delete(compressor(W)).
  double surrogate(deepiot::compressor<double>& c) const {
    auto p = c.forward(weights(), biases());
    std::vector<double> logp(advantage.size(), 0.0);
    for (std::size_t k = 0; k < p.size(); ++k) deepiot::add_log_likelihood(deepiot::soft_delete(p[k], tau, gamma), z[k], eps, logp);
    double s = 0;
    for (std::size_t i = 0; i < logp.size(); ++i) s += advantage[i] * logp[i];
    return s / static_cast<double>(logp.size());
  }
};

}  // namespace

TEST_CASE("the compressor's gradient of the REINFORCE surrogate matches finite differences", "[deepiot][gradient]") {
  rng gen(3);
  deepiot::compressor_options o;
  o.hidden = 6;
  deepiot::compressor<double> c({{"conv1", 18, 4, true}, {"fc1", 7, 5, false}, {"fc2", 5, 3, true}}, o, gen);
  surrogate_fixture f(c, 9);
  // Analytic: dS/dp = reinforce_gradient(p̂) * dp̂/dp, then backward through the compressor.
  auto p = c.forward(f.weights(), f.biases());
  std::vector<column_vector<double>> dp;
  index_t decayed = 0;
  for (std::size_t k = 0; k < p.size(); ++k) {
    column_vector<double> factor;
    const auto p_hat = deepiot::soft_delete(p[k], f.tau, f.gamma, &factor);
    decayed += (factor.array() < 1.0).count();
    for (index_t j = 0; j < p[k].size(); ++j) REQUIRE(std::abs(p[k][j] - f.tau) > 1e-4);  // FD steps stay on one side
    dp.push_back(deepiot::reinforce_gradient(p_hat, f.z[k], f.advantage, f.eps).cwiseProduct(factor));
  }
  REQUIRE(decayed > 2);  // the soft-deletion factor is exercised
  c.zero_grad();
  c.backward(dp);

  const double h = 1e-6;
  double worst = 0;
  index_t checked = 0;
  std::vector<nn::parameter<double>*> params;
  c.visit_parameters([&](nn::parameter<double>& q) { params.push_back(&q); });
  for (auto* q : params) {
    const tensor<double> analytic = q->grad();
    for (index_t i = 0; i < q->size(); i += std::max<index_t>(1, q->size() / 40)) {
      const double v = q->value()[i];
      q->value()[i] = v + h;
      const double sp = f.surrogate(c);
      q->value()[i] = v - h;
      const double sm = f.surrogate(c);
      q->value()[i] = v;
      const double numeric = (sp - sm) / (2 * h);
      const double err = std::abs(numeric - analytic[i]) / std::max({1e-3, std::abs(numeric), std::abs(analytic[i])});
      INFO(q->name() << "[" << i << "] analytic " << analytic[i] << " numeric " << numeric);
      CHECK(err < 1e-5);
      worst = std::max(worst, err);
      ++checked;
    }
  }
  REQUIRE(checked > 100);
}

TEST_CASE("the compressor reads layer weights with the bias as an extra row and no gradient into W", "[deepiot]") {
  rng gen(5);
  deepiot::compressor<double> c({{"fc", 3, 2, true}}, {}, gen);
  tensor<double> w({2, 3}), b({2});
  w.flat() << 1, 2, 3, 4, 5, 6;
  b.flat() << 7, 8;
  auto p1 = c.forward({&w}, {&b});
  REQUIRE(p1.size() == 1);
  REQUIRE(p1[0].size() == 2);
  for (index_t j = 0; j < 2; ++j) REQUIRE((p1[0][j] > 0.0 && p1[0][j] < 1.0));
  // Changing the bias changes p (the bias row is read); the weights stay untouched by backward.
  b.flat() << -7, 30;
  auto p2 = c.forward({&w}, {&b});
  REQUIRE((p2[0] - p1[0]).norm() > 0);
  c.backward({column_vector<double>::Ones(2)});
  REQUIRE(w[0] == 1.0);
  REQUIRE(c.parameter_count() == 4 + 2 * 64 + 64 * 2 + 4 * 64 * 128 + 4 * 64);
  REQUIRE_THROWS_AS(c.forward({&w}, {nullptr}), shape_error);
  tensor<double> wrong({3, 3});
  REQUIRE_THROWS_WITH(c.forward({&wrong}, {&b}), Contains("compressor::forward") && Contains("(3, 3)"));
}

TEST_CASE("Bernoulli masks are seeded and unbiased", "[deepiot]") {
  column_vector<double> p(4);
  p << 0.05, 0.3, 0.5, 0.9;
  rng g1(7), g2(7);
  const auto z1 = deepiot::sample_masks(p, 20000, g1);
  const auto z2 = deepiot::sample_masks(p, 20000, g2);
  REQUIRE(z1.flat() == z2.flat());
  for (index_t j = 0; j < 4; ++j) {
    double mean = 0;
    for (index_t i = 0; i < 20000; ++i) mean += z1[i * 4 + j];
    mean /= 20000;
    const double sd = std::sqrt(p[j] * (1 - p[j]) / 20000);
    CHECK(std::abs(mean - p[j]) < 4.5 * sd);
  }
  for (index_t i = 0; i < z1.size(); ++i) REQUIRE((z1[i] == 0.0 || z1[i] == 1.0));
  rng g3(8);
  REQUIRE(deepiot::sample_masks(p, 20000, g3).flat() != z1.flat());
}

TEST_CASE("soft deletion, log-likelihood and the EMA baseline", "[deepiot]") {
  column_vector<double> p(3);
  p << 0.2, 0.6, 0.4;
  column_vector<double> factor;
  const auto ph = deepiot::soft_delete(p, 0.45, 0.5, &factor);
  REQUIRE(ph[0] == Approx(0.1));
  REQUIRE(ph[1] == 0.6);
  REQUIRE(ph[2] == Approx(0.2));
  REQUIRE(factor[0] == 0.5);
  REQUIRE(factor[1] == 1.0);
  tensor<double> z({1, 3});
  z.flat() << 1, 0, 1;
  std::vector<double> logp(1, 0.0);
  deepiot::add_log_likelihood(ph, z, 1e-6, logp);
  REQUIRE(logp[0] == Approx(std::log(0.1) + std::log(0.4) + std::log(0.2)));
  // p̂ = 1 with z = 0 would be -inf without the clamp.
  column_vector<double> one = column_vector<double>::Ones(1);
  tensor<double> z0({1, 1}, 0.0);
  std::vector<double> l0(1, 0.0);
  deepiot::add_log_likelihood(one, z0, 1e-6, l0);
  REQUIRE(std::isfinite(l0[0]));

  deepiot::loss_baseline b(0.9);
  b.update({1.0, 3.0});  // mean 2, std 1; zero-debiased: exactly the first batch
  REQUIRE(b.mean() == Approx(2.0));
  REQUIRE(b.stddev() == Approx(1.0));
  b.update({4.0, 4.0});  // (0.9*0.1*2 + 0.1*4) / (1 - 0.81)
  REQUIRE(b.mean() == Approx((0.09 * 2 + 0.1 * 4) / 0.19));
  const auto a = b.advantages({5.0});
  REQUIRE(a[0] == Approx(5.0 - b.mean()));  // std < 1: divided by 1
}

TEST_CASE("threshold schedule and stop rule arithmetic", "[deepiot]") {
  deepiot::threshold_schedule s;  // the authors': 0, +0.025 every 500, up to 0.825
  REQUIRE(s(0) == 0.0);
  REQUIRE(s(499) == 0.0);
  REQUIRE(s(500) == Approx(0.025));
  REQUIRE(s(16499) == Approx(0.8));
  REQUIRE(s(16500) == Approx(0.825));
  REQUIRE(s(100000) == Approx(0.825));
  REQUIRE(s.iterations_to_final() == 16500);
  deepiot::threshold_schedule t{0.1, 0.2, 10, 0.6};
  REQUIRE(t(25) == Approx(0.5));
  REQUIRE(t(30) == Approx(0.6));
  REQUIRE(t(1000) == Approx(0.6));

  deepiot::stop_rule r{0.07, 0.93, 200, 1000};
  REQUIRE(!r.due(0));
  REQUIRE(r.due(199));
  REQUIRE(!r.due(200));
  REQUIRE(r.due(399));
  REQUIRE(r.satisfied(0.069, 0.93));
  REQUIRE(!r.satisfied(0.07, 0.99));
  REQUIRE(!r.satisfied(0.01, 0.929));

  column_vector<double> p(4);
  p << 0.1, 0.5, 0.49, 0.8;
  REQUIRE(deepiot::kept_units(p, 0.5) == std::vector<bool>{false, true, false, true});
  REQUIRE(deepiot::kept_units(p, 0.9) == std::vector<bool>{false, false, false, true});  // at least one
}

TEST_CASE("bad probabilities, gamma, tau and options throw", "[deepiot][errors]") {
  column_vector<double> p(2);
  p << 0.5, 1.2;
  REQUIRE_THROWS_WITH(deepiot::soft_delete(p, 0.3, 0.5), Contains("soft_delete") && Contains("1.2"));
  p << 0.5, -0.01;
  rng gen(1);
  REQUIRE_THROWS_WITH(deepiot::sample_masks(p, 3, gen), Contains("sample_masks") && Contains("-0.01"));
  p << 0.5, 0.5;
  REQUIRE_THROWS_WITH(deepiot::soft_delete(p, 0.3, 0.0), Contains("gamma = 0"));
  REQUIRE_THROWS_WITH(deepiot::soft_delete(p, 0.3, 1.5), Contains("gamma = 1.5"));
  REQUIRE_THROWS_WITH(deepiot::soft_delete(p, 1.3, 0.5), Contains("tau = 1.3"));
  REQUIRE_NOTHROW(deepiot::soft_delete(p, 0.3, 1.0));
  tensor<double> z({2, 3});
  std::vector<double> out(2, 0.0);
  REQUIRE_THROWS_AS(deepiot::add_log_likelihood(p, z, 1e-6, out), shape_error);
  REQUIRE_THROWS_AS(deepiot::reinforce_gradient(p, z, {1.0, 2.0}, 1e-6), shape_error);
  REQUIRE_THROWS_AS(deepiot::loss_baseline(1.0), config_error);
  REQUIRE_THROWS_AS((deepiot::threshold_schedule{0.5, 0.1, 0, 0.8}.validate()), config_error);
  REQUIRE_THROWS_AS((deepiot::threshold_schedule{0.5, 0.1, 10, 0.2}.validate()), config_error);
  REQUIRE_THROWS_AS((deepiot::stop_rule{0.0, 0.9, 10, 10}.validate()), config_error);
  deepiot::deepiot_options o;
  o.gamma = 2;
  REQUIRE_THROWS_WITH(o.validate(), Contains("gamma = 2"));
  o = {};
  o.conv_keep = 1.5;
  REQUIRE_THROWS_AS(o.validate(), config_error);
  rng g(1);
  REQUIRE_THROWS_AS(deepiot::compressor<double>({}, {}, g), config_error);
  REQUIRE_THROWS_AS(deepiot::compressor<double>({{"x", 0, 3, true}}, {}, g), config_error);
}
