// Pruning schedules as fit callbacks: AGP's cubic values and pruning steps, iterative levels,
// one-shot, layer-wise and global pruners, and option errors.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

template <class Scalar>
data::dataset<Scalar> noise_set(index_t n, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<Scalar> d;
  d.num_classes = 2;
  d.inputs.resize({n, 6});
  for (index_t i = 0; i < d.inputs.size(); ++i) d.inputs[i] = static_cast<Scalar>(gen.normal());
  for (index_t i = 0; i < n; ++i) d.labels.push_back(d.inputs.matrix()(i, 0) > 0 ? 1 : 0);
  return d;
}

template <class Scalar>
nn::sequential<Scalar> net(std::uint64_t seed) {
  rng gen(seed);
  nn::sequential<Scalar> m;
  m.add("fc1", nn::linear<Scalar>(6, 20));
  m.add("relu", nn::relu<Scalar>());
  m.add("fc2", nn::linear<Scalar>(20, 2));
  m.reset_parameters(gen);
  return m;
}

index_t expected_zeros(double s, index_t n) {
  return static_cast<index_t>(std::floor(s * static_cast<double>(n) + 0.5));
}

/// Records the zeros of each watched parameter after every step and at each epoch's start.
template <class Scalar>
struct sparsity_log : train::callback<Scalar> {
  std::vector<nn::parameter<Scalar>*> params;
  std::vector<std::vector<index_t>> after_step_zeros;  // [step-1][param]
  std::vector<std::vector<index_t>> epoch_zeros;       // [epoch][param], after the pruners ran
  std::vector<index_t> zeros() const {
    std::vector<index_t> z;
    for (auto* p : params)
      z.push_back(p->size() - prune::count_nonzero(prune::masked_weight(*p)));
    return z;
  }
  void on_epoch_begin(train::train_state<Scalar>&) override { epoch_zeros.push_back(zeros()); }
  void after_step(train::train_state<Scalar>&) override { after_step_zeros.push_back(zeros()); }
};

template <class Scalar>
train::fit_options quiet_options(int epochs) {
  train::fit_options o;
  o.epochs = epochs;
  o.batch_size = 10;
  o.progress = false;
  return o;
}

}  // namespace

TEST_CASE("AGP follows s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3", "[prune][schedule]") {
  prune::agp_options o{0.0, 10, 5, 4};
  CHECK(o.sparsity(0, 0.9) == 0.0);
  CHECK(o.sparsity(10, 0.9) == 0.0);
  CHECK(o.sparsity(15, 0.9) == Approx(0.9 - 0.9 * 0.421875));  // (1 - 1/4)^3
  CHECK(o.sparsity(20, 0.9) == Approx(0.9 - 0.9 * 0.125));
  CHECK(o.sparsity(25, 0.9) == Approx(0.9 - 0.9 * 0.015625));
  CHECK(o.sparsity(30, 0.9) == 0.9);
  CHECK(o.sparsity(1000, 0.9) == 0.9);
  prune::agp_options from_half{0.5, 0, 1, 2};
  CHECK(from_half.sparsity(1, 0.9) == Approx(0.9 - 0.4 * 0.125));
  std::vector<index_t> steps;
  for (index_t t = 0; t < 40; ++t) {
    if (o.is_pruning_step(t)) steps.push_back(t);
  }
  CHECK(steps == std::vector<index_t>{10, 15, 20, 25, 30});
  CHECK(o.end_step() == 30);
  CHECK_THROWS_WITH((prune::agp_options{0.0, 0, 0, 4}.validate()),
                    Contains("slimnet::prune::agp") && Contains("frequency=0"));
  CHECK_THROWS_AS((prune::agp_options{1.5, 0, 1, 4}.validate()), config_error);
}

TEMPLATE_TEST_CASE("AGP callback prunes at t0 + k dt to the exact cubic levels",
                   "[prune][schedule][fit]", float, double) {
  const auto data = noise_set<TestType>(100, 1);  // 10 steps per epoch
  auto model = net<TestType>(2);
  auto params = prune::prunable_parameters(model);
  auto pruner = prune::magnitude_pruner<TestType>::layerwise({{params[0], 0.9}, {params[1], 0.5}});
  prune::agp_options o{0.0, 10, 5, 4};
  prune::agp<TestType> schedule(pruner, o);
  sparsity_log<TestType> log;
  log.params = params;
  train::sgd<TestType> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit(model, opt, train::cross_entropy<TestType>(), data, quiet_options<TestType>(4),
             {&schedule, &log});
  CHECK(schedule.pruned_at() == std::vector<index_t>{10, 15, 20, 25, 30});
  REQUIRE(log.after_step_zeros.size() == 40);
  for (index_t t = 1; t <= 40; ++t) {
    const auto& z = log.after_step_zeros[static_cast<std::size_t>(t - 1)];
    // Between pruning steps the count holds (masks are kept through training).
    const index_t last = t < 10 ? -1 : std::min<index_t>(30, 10 + (t - 10) / 5 * 5);
    const double s0 = last < 0 ? 0.0 : o.sparsity(last, 0.9),
                 s1 = last < 0 ? 0.0 : o.sparsity(last, 0.5);
    CHECK(z[0] == expected_zeros(s0, 120));
    CHECK(z[1] == expected_zeros(s1, 40));
  }
  CHECK(log.after_step_zeros.back() == std::vector<index_t>{108, 20});
}

TEMPLATE_TEST_CASE("iterative pruning: geometric and linear levels, one round per retraining block",
                   "[prune][schedule][fit]", float, double) {
  prune::iterative_options o;
  o.rounds = 3;
  o.epochs_per_round = 2;
  CHECK(o.level(1, 0.875) == Approx(0.5));  // 1 - 0.125^(1/3)
  CHECK(o.level(2, 0.875) == Approx(0.75));
  CHECK(o.level(3, 0.875) == Approx(0.875));
  CHECK(o.total_epochs() == 6);
  o.spacing = prune::spacing::linear;
  CHECK(o.level(1, 0.9) == Approx(0.3));
  o.spacing = prune::spacing::geometric;

  const auto data = noise_set<TestType>(60, 3);
  auto model = net<TestType>(4);
  auto params = prune::prunable_parameters(model);
  prune::iterative<TestType> schedule(prune::magnitude_pruner<TestType>::uniform(params, 0.875), o);
  sparsity_log<TestType> log;
  log.params = params;
  train::sgd<TestType> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit(model, opt, train::cross_entropy<TestType>(), data, quiet_options<TestType>(7),
             {&schedule, &log});
  CHECK(schedule.rounds_done() == 3);
  const std::vector<double> expected = {0.5, 0.5, 0.75, 0.75, 0.875, 0.875, 0.875};
  REQUIRE(log.epoch_zeros.size() == 7);
  for (std::size_t e = 0; e < 7; ++e) {
    CHECK(log.epoch_zeros[e][0] == expected_zeros(expected[e], 120));
    CHECK(log.epoch_zeros[e][1] == expected_zeros(expected[e], 40));
  }
  CHECK_THROWS_WITH((prune::iterative<TestType>(
                        prune::magnitude_pruner<TestType>::uniform(params, 0.5), {0, 1, 0})),
                    Contains("rounds=0"));
}

TEMPLATE_TEST_CASE("one-shot and global pruners", "[prune][schedule][fit]", float, double) {
  const auto data = noise_set<TestType>(60, 5);
  auto model = net<TestType>(6);
  auto params = prune::prunable_parameters(model);
  prune::one_shot<TestType> shot(prune::magnitude_pruner<TestType>::global(params, 0.75), 1);
  sparsity_log<TestType> log;
  log.params = params;
  train::adam<TestType> opt(train::adam_options{}.with_lr(0.01));
  train::fit(model, opt, train::cross_entropy<TestType>(), data, quiet_options<TestType>(3), {&shot, &log});
  CHECK(log.epoch_zeros[0][0] + log.epoch_zeros[0][1] == 0);
  CHECK(log.epoch_zeros[1][0] + log.epoch_zeros[1][1] == 120);  // 75% of 160, ranked together
  CHECK(log.epoch_zeros[2][0] + log.epoch_zeros[2][1] == 120);

  CHECK_THROWS_WITH((prune::magnitude_pruner<TestType>::layerwise({{params[0], 1.2}})),
                    Contains("slimnet::prune::magnitude_pruner::layerwise") &&
                        Contains("sparsity = 1.2") && Contains("fc1.weight"));
  CHECK_THROWS_WITH(
      (prune::magnitude_pruner<TestType>::layerwise({{params[0], 0.2}, {params[0], 0.3}})),
      Contains("listed twice"));
  CHECK_THROWS_WITH(prune::magnitude_pruner<TestType>::global({}, 0.3), Contains("no parameters"));
  CHECK_THROWS_AS(
      (prune::one_shot<TestType>(prune::magnitude_pruner<TestType>::global(params, 0.3), -1)),
      config_error);
}
