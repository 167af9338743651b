// Dynamic Network Surgery: thresholds from the moments of nonzero |w| (weights and biases), the
// prune / splice rule, pruned weights still learning and being spliced back, the surgery
// probability schedule and its shared draws, and errors.
#include <catch2/catch.hpp>

#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

template <class Scalar>
prune::dns_transform<Scalar>& dns_of(nn::parameter<Scalar>& p) {
  auto* t = dynamic_cast<prune::dns_transform<Scalar>*>(prune::find_mask(p));
  REQUIRE(t != nullptr);
  return *t;
}
}  // namespace

TEMPLATE_TEST_CASE("DNS thresholds: moments of nonzero |w| over weights and biases", "[prune][dns]",
                   float, double) {
  row_matrix<TestType> w(1, 4);
  w << 0, 1, -2, 3;
  Eigen::Matrix<TestType, Eigen::Dynamic, 1> b(2);
  b << 0, -4;
  prune::dns_options o;
  o.c_rate = 1.0;
  const auto th = prune::dns_compute_thresholds(o, w, b);
  // nonzero |w| = 1, 2, 3, 4: mu = 2.5, E[w^2] = 7.5, sigma = sqrt(7.5 - 6.25)
  CHECK(th.count == 4);
  CHECK(th.mean == Approx(2.5));
  CHECK(th.stddev == Approx(std::sqrt(1.25)));
  CHECK(th.t == Approx(2.5 + std::sqrt(1.25)));
  CHECK(th.a == Approx(0.9 * th.t));
  CHECK(th.b == Approx(1.1 * th.t));
  o.c_rate = -10;  // t = max(mu + c sigma, 0)
  CHECK(prune::dns_compute_thresholds(o, w, b).t == 0.0);
}

TEMPLATE_TEST_CASE("DNS surgery: cut at or under a, splice over b, hold in between", "[prune][dns]",
                   float, double) {
  const double a = 1.0, b = 2.0;
  row_matrix<TestType> w(1, 5);
  w << 0.5, 1.0, 1.5, 2.0, -2.5;
  row_matrix<TestType> ones = row_matrix<TestType>::Ones(1, 5),
                      zeros = row_matrix<TestType>::Zero(1, 5);
  auto c = prune::dns_surgery(w, ones, a, b);
  CHECK(ones == (row_matrix<TestType>(1, 5) << 0, 0, 1, 1, 1).finished());  // |w| <= a is cut
  CHECK(c.pruned == 2);
  CHECK(c.spliced == 0);
  c = prune::dns_surgery(w, zeros, a, b);
  CHECK(zeros ==
        (row_matrix<TestType>(1, 5) << 0, 0, 0, 0, 1).finished());  // only |w| > b is spliced
  CHECK(c.spliced == 1);
  CHECK_THROWS_WITH(prune::dns_surgery(w, ones, 2.0, 1.0),
                    Contains("slimnet::prune::dns_surgery") && Contains("a = 2"));
}

TEMPLATE_TEST_CASE(
    "a pruned weight keeps learning, grows past b and is spliced back; one falling under a is cut",
    "[prune][dns][fit]", float, double) {
  nn::linear<TestType> fc(2, 1, false);
  fc.weight().value().flat() << TestType(0.05), TestType(1.0);
  prune::dns_options o;
  o.c_rate = 0;  // t = mu = 0.525, a = 0.4725, b = 0.5775
  o.gamma = 0;   // surgery at every iteration
  o.iter_stop = 100000;
  auto group = prune::attach_dns(fc.weight(), nullptr, o, "fc");
  CHECK(group->thresholds().a == Approx(0.4725));
  CHECK(group->thresholds().b == Approx(0.5775));
  auto& t = dns_of(fc.weight());
  CHECK(t.mask()[0] == 0);  // 0.05 <= a: cut at iteration 0
  CHECK(t.mask()[1] == 1);
  CHECK(fc.weight().value()[0] == TestType(0.05));  // W itself is not zeroed: it can come back

  // y = 2 x0: w0 must grow back from pruned, w1 must shrink under a.
  data::dataset<TestType> d;
  d.inputs.resize({200, 2});
  d.targets.resize({200, 1});
  rng gen(9);
  for (index_t i = 0; i < 200; ++i) {
    const double x0 = gen.normal(), x1 = gen.normal();
    d.inputs.matrix()(i, 0) = static_cast<TestType>(x0);
    d.inputs.matrix()(i, 1) = static_cast<TestType>(x1);
    (void)x1;
    d.targets[i] = static_cast<TestType>(2 * x0);
  }
  train::sgd<TestType> opt(train::sgd_options{}.with_lr(0.05));
  train::fit_options fo;
  fo.epochs = 10;
  fo.batch_size = 20;
  fo.progress = false;
  train::fit(fc, opt, train::mse<TestType>(), d, fo);
  CHECK(t.mask()[0] == 1);  // spliced
  CHECK(t.mask()[1] == 0);  // cut
  CHECK(group->totals().spliced >= 1);
  CHECK(group->totals().pruned >= 2);
  CHECK(group->iteration() == 100);
  CHECK(std::abs(static_cast<double>(fc.weight().value()[0]) - 2.0) < 0.05);
  // Backward is the identity: the pruned w1 still gets dL/d(W*T).
  tensor<TestType> x({1, 2}, TestType(1)), y, dy({1, 1}, TestType(1));
  fc.weight().zero_grad();
  fc.forward(x, y, {});
  fc.backward(x, y, dy, nullptr);
  fc.weight().transform_gradient();
  CHECK(fc.weight().grad()[1] != 0);
  // Baking keeps W*T.
  prune::remove(fc.weight());
  CHECK(fc.weight().value()[1] == 0);
  CHECK(fc.weight().transforms().empty());
}

TEST_CASE("surgery probability (1 + gamma iter)^-power, drawn once per layer and iteration",
          "[prune][dns]") {
  CHECK(prune::dns_surgery_probability(0, 0.001, 1) == 1.0);
  CHECK(prune::dns_surgery_probability(1000, 0.001, 1) == Approx(0.5));
  CHECK(prune::dns_surgery_probability(1000, 0.001, 2) == Approx(0.25));
  CHECK(prune::dns_surgery_probability(3000, 0.001, 0.5) == Approx(0.5));

  prune::dns_options o;
  o.gamma = 0.01;
  o.power = 1;
  o.iter_stop = 500;
  o.seed = 7;
  prune::dns_group<float> g("layer", o, prune::dns_thresholds{});
  rng replay(7);
  index_t early = 0, late = 0;
  std::vector<bool> drawn(700, false);
  for (index_t k = 1; k < 700; ++k) {
    const bool expected = k < 500 && prune::dns_surgery_probability(k, 0.01, 1) > replay.uniform();
    drawn[static_cast<std::size_t>(k)] = expected;
    if (k >= 500)
      CHECK_FALSE(g.surgery_at(k));
    else
      CHECK(g.surgery_at(k) == expected);
    if (k <= 100) early += expected;
    if (k >= 400 && k < 500) late += expected;
  }
  // p falls from ~0.99 to 0.5 over the first 100 iterations and is ~0.2 near 450.
  CHECK(early > 60);
  CHECK(late < 35);
  // Asking again for an iteration already drawn returns the same answer and draws nothing: the
  // answers below still follow the replayed stream.
  const auto surgeries_before = g.surgeries();
  for (index_t k : {1, 3, 50, 499}) CHECK(g.surgery_at(k) == drawn[static_cast<std::size_t>(k)]);
  CHECK(g.surgeries() == surgeries_before);
  CHECK(g.surgeries() == 1 + [&] {
    index_t n = 0;
    for (index_t k = 1; k < 500; ++k) n += g.surgery_at(k);
    return n;
  }());
}

TEST_CASE("weight and bias of a layer share the draw whatever the visiting order", "[prune][dns]") {
  nn::linear<double> fc(3, 2);
  fc.weight().value().flat() << 0.01, 1, 1, 1, 1, 1;
  fc.bias()->value().flat() << 0.01, 1;
  prune::dns_options o;
  o.c_rate = 0;
  o.gamma = 1;  // p(k) = 1 / (1 + k)
  o.iter_stop = 1000;
  auto group = prune::attach_dns(static_cast<nn::layer<double>&>(fc), o);
  auto& wt = dns_of(fc.weight());
  auto& bt = dns_of(*fc.bias());
  REQUIRE(wt.mask()[0] == 0);
  REQUIRE(bt.mask()[0] == 0);
  index_t toggles = 0;
  for (index_t k = 1; k <= 30; ++k) {
    // Ask for a flip of entry 0 of both masks: far over b if cut, 0 if kept.
    const double target = wt.mask()[0] == 0 ? 100.0 : 0.0;
    fc.weight().value()[0] = target;
    fc.bias()->value()[0] = target;
    const double w_before = wt.mask()[0], b_before = bt.mask()[0];
    if (k % 2) {
      fc.weight().after_step();
      fc.bias()->after_step();
    } else {
      fc.bias()->after_step();
      fc.weight().after_step();
    }
    const bool w_flipped = wt.mask()[0] != w_before, b_flipped = bt.mask()[0] != b_before;
    CHECK(w_flipped == b_flipped);
    CHECK(w_flipped == group->surgery_at(k));
    toggles += w_flipped;
  }
  CHECK(toggles > 0);
  CHECK(toggles < 30);
}

TEST_CASE("DNS on a small classifier prunes most weights, splices some back and keeps accuracy",
          "[prune][dns][fit]") {
  rng gen(1);
  data::dataset<float> d;
  d.num_classes = 3;
  d.inputs.resize({300, 2});
  const double centers[3][2] = {{3, 0}, {-3, 3}, {-3, -3}};
  for (index_t i = 0; i < 300; ++i) {
    const auto c = static_cast<int>(i % 3);
    d.labels.push_back(c);
    d.inputs.matrix()(i, 0) = static_cast<float>(centers[c][0] + 0.7 * gen.normal());
    d.inputs.matrix()(i, 1) = static_cast<float>(centers[c][1] + 0.7 * gen.normal());
  }
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(2, 64));
  m.add("relu", nn::relu<float>());
  m.add("fc2", nn::linear<float>(64, 3));
  m.reset_parameters(gen);
  prune::dns_options o;
  o.c_rate = 1.5;
  o.gamma = 0.01;
  o.iter_stop = 300;
  auto groups =
      prune::attach_dns(m, std::map<std::string, prune::dns_options>{{"fc1", o}, {"fc2", o}});
  REQUIRE(groups.size() == 2);
  index_t kept_at_start = 0;
  for (auto* p : prune::prunable_parameters(m))
    kept_at_start += prune::count_nonzero(prune::masked_weight(*p));
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9).with_weight_decay(5e-4));
  train::fit_options fo;
  fo.epochs = 20;
  fo.batch_size = 20;
  fo.progress = false;
  train::fit(m, opt, train::cross_entropy<float>(), d, fo);
  CHECK(train::evaluate(m, d, train::cross_entropy<float>()).accuracy > 0.95);
  index_t kept = 0, total = 0;
  for (auto* p : prune::prunable_parameters(m)) {
    kept += prune::count_nonzero(prune::masked_weight(*p));
    total += p->size();
  }
  index_t spliced = 0, pruned = 0;
  for (const auto& g : groups) {
    spliced += g->totals().spliced;
    pruned += g->totals().pruned;
  }
  INFO("kept " << kept_at_start << " -> " << kept << " of " << total << ", spliced " << spliced
               << ", pruned " << pruned);
  CHECK(kept_at_start < total / 5);  // c_rate 1.5 cuts about 84% of uniformly initialised weights
  CHECK(kept < total / 3);
  CHECK(spliced > 0);
  CHECK(groups[0]->name() == "fc1");
  CHECK(groups[0]->iteration() == 300);
}

TEST_CASE("DNS options and attachment errors", "[prune][dns][errors]") {
  prune::dns_options o;
  o.gamma = -1;
  CHECK_THROWS_WITH(o.validate(), Contains("gamma = -1"));
  o = {};
  o.splice_factor = 0.8;
  CHECK_THROWS_WITH(o.validate(), Contains("prune_factor <= splice_factor") && Contains("0.9") &&
                                      Contains("0.8"));
  o = {};
  o.iter_stop = -5;
  CHECK_THROWS_AS(o.validate(), config_error);
  nn::linear<float> fc(3, 2);
  prune::l1_unstructured(fc.weight(), 0.5);
  CHECK_THROWS_WITH(
      prune::attach_dns(fc.weight(), fc.bias(), prune::dns_options{}),
      Contains("slimnet::prune::attach_dns") && Contains("already carries a pruning mask"));
  nn::sequential<float> m;
  m.add("fc", nn::linear<float>(2, 2));
  CHECK_THROWS_WITH(prune::attach_dns(m, std::map<std::string, prune::dns_options>{{"nope", {}}}),
                    Contains("no layer named 'nope'"));
}
