// train::recalibrate_batch_norm: the running statistics become exact batch averages of the
// model's current activations, through nested containers, without touching the parameters.
#include <catch2/catch.hpp>

#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/train/batch_norm_statistics.hpp"
#include "support/datasets.hpp"

using namespace slimnet;

namespace {
/// Linear(2, 4) -> BatchNorm1d(4) -> ReLU -> Sequential{Linear(4, 3) -> BatchNorm1d(3)}, with running
/// statistics far from any batch's (mean 5, variance 7) so a missed update shows.
template <class Scalar>
nn::sequential<Scalar> nested_bn_model(std::uint64_t seed) {
  nn::sequential<Scalar> inner;
  inner.add("fc2", nn::linear<Scalar>(4, 3));
  inner.add("bn2", nn::batch_norm1d<Scalar>(3));
  nn::sequential<Scalar> m;
  m.add("fc1", nn::linear<Scalar>(2, 4));
  m.add("bn1", nn::batch_norm1d<Scalar>(4, {1e-5, 0.3, true}));
  m.add("relu", nn::relu<Scalar>());
  m.add("head", std::move(inner));
  rng gen(seed);
  m.reset_parameters(gen);
  m.visit_parameters([](nn::parameter<Scalar>& p) {
    if (p.name().find("running_mean") != std::string::npos) p.value().fill(Scalar(5));
    if (p.name().find("running_var") != std::string::npos) p.value().fill(Scalar(7));
    if (p.name().find("bn1.bias") != std::string::npos) p.value().fill(Scalar(0.25));  // not symmetric around 0
  });
  return m;
}

/// Per-column mean and unbiased variance of (N, C) rows.
template <class Scalar>
std::pair<std::vector<double>, std::vector<double>> column_statistics(const tensor<Scalar>& x) {
  const auto z = x.matrix();
  std::vector<double> mean(static_cast<std::size_t>(z.cols())), var(mean.size());
  for (index_t c = 0; c < z.cols(); ++c) {
    double s = 0, q = 0;
    for (index_t i = 0; i < z.rows(); ++i) s += static_cast<double>(z(i, c));
    const double m = s / static_cast<double>(z.rows());
    for (index_t i = 0; i < z.rows(); ++i) q += (static_cast<double>(z(i, c)) - m) * (static_cast<double>(z(i, c)) - m);
    mean[static_cast<std::size_t>(c)] = m;
    var[static_cast<std::size_t>(c)] = q / static_cast<double>(z.rows() - 1);
  }
  return {mean, var};
}

/// Inputs of bn1 and bn2 for the batch x, the model's layers called one by one (bn1 in training
/// mode, normalising with x's own statistics).
template <class Scalar>
std::pair<tensor<Scalar>, tensor<Scalar>> bn_inputs(const nn::sequential<Scalar>& model, const tensor<Scalar>& x) {
  auto m = model;  // bn1's training pass below changes its running statistics: work on a copy
  rng gen(0);
  const nn::forward_context train_ctx{true, &gen};
  tensor<Scalar> h1, n1, r1, h2;
  m[0].forward(x, h1, train_ctx);
  m[1].forward(h1, n1, train_ctx);
  m[2].forward(n1, r1, train_ctx);
  static_cast<nn::sequential<Scalar>&>(m[3])[0].forward(r1, h2, train_ctx);
  return {h1, h2};
}

template <class Scalar>
std::vector<tensor<Scalar>> trainable_values(nn::layer<Scalar>& m) {
  std::vector<tensor<Scalar>> v;
  m.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (p.trainable()) v.push_back(p.value());
  });
  return v;
}

template <class Scalar>
void check_running(nn::batch_norm<Scalar>& bn, const std::vector<double>& mean, const std::vector<double>& var, double tol) {
  for (index_t c = 0; c < bn.features(); ++c) {
    CHECK(static_cast<double>(bn.running_mean().value()[c]) == Approx(mean[static_cast<std::size_t>(c)]).margin(tol).epsilon(tol));
    CHECK(static_cast<double>(bn.running_var().value()[c]) == Approx(var[static_cast<std::size_t>(c)]).margin(tol).epsilon(tol));
  }
}
}  // namespace

TEMPLATE_TEST_CASE("recalibrate_batch_norm with one batch sets that batch's statistics, also in nested containers",
                   "[train][batch_norm]", float, double) {
  using S = TestType;
  const double tol = std::is_same<S, float>::value ? 1e-5 : 1e-12;
  const auto data = slimnet::testing::blobs<S>(48, 3);
  auto model = nested_bn_model<S>(11);
  const auto before = trainable_values(model);
  const auto [h1, h2] = bn_inputs(model, data.inputs);  // one batch = the whole data set (order does not matter)
  const auto [mean1, var1] = column_statistics(h1);
  const auto [mean2, var2] = column_statistics(h2);

  rng gen(5);
  CHECK(train::recalibrate_batch_norm<S>(model, data, 1, 48, gen) == 2);
  auto& bn1 = static_cast<nn::batch_norm<S>&>(model[1]);
  auto& bn2 = static_cast<nn::batch_norm<S>&>(static_cast<nn::sequential<S>&>(model[3])[1]);
  check_running(bn1, mean1, var1, tol);
  check_running(bn2, mean2, var2, tol);
  const auto after = trainable_values(model);
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) CHECK(after[i].flat() == before[i].flat());
  // A batch larger than the data set is the data set.
  auto again = nested_bn_model<S>(11);
  CHECK(train::recalibrate_batch_norm<S>(again, data, 3, 1000, gen) == 2);
  check_running(static_cast<nn::batch_norm<S>&>(again[1]), mean1, var1, tol);
}

TEST_CASE("recalibrate_batch_norm averages the batches exactly (not by momentum)", "[train][batch_norm]") {
  const auto data = slimnet::testing::blobs<double>(40, 4);
  auto model = nested_bn_model<double>(12);
  // The batches the function will draw: the same generator, batcher and batch size.
  rng gen(9), replay = gen;
  data::batcher<double> batches(data, 10, true, replay, true);
  data::batch<double> b;
  std::vector<double> mean1(4, 0.0), var1(4, 0.0), mean2(3, 0.0), var2(3, 0.0);
  for (int i = 0; i < 6; ++i) {  // 6 batches: one pass of 4, then a reshuffled second pass
    if (!batches.next(b)) {
      batches.reset();
      batches.next(b);
    }
    const auto [h1, h2] = bn_inputs(model, b.inputs);
    const auto [m1, v1] = column_statistics(h1);
    const auto [m2, v2] = column_statistics(h2);
    for (std::size_t c = 0; c < 4; ++c) mean1[c] += m1[c] / 6, var1[c] += v1[c] / 6;
    for (std::size_t c = 0; c < 3; ++c) mean2[c] += m2[c] / 6, var2[c] += v2[c] / 6;
  }
  CHECK(train::recalibrate_batch_norm<double>(model, data, 6, 10, gen) == 2);
  check_running(static_cast<nn::batch_norm<double>&>(model[1]), mean1, var1, 1e-12);
  check_running(static_cast<nn::batch_norm<double>&>(static_cast<nn::sequential<double>&>(model[3])[1]), mean2, var2, 1e-12);
  CHECK(gen.state() == replay.state());  // the same draws
}

TEST_CASE("recalibrate_batch_norm leaves a model without BatchNorm and its generator alone", "[train][batch_norm]") {
  nn::sequential<double> m;
  m.add("fc1", nn::linear<double>(2, 3));
  rng init(1);
  m.reset_parameters(init);
  const auto before = trainable_values(m);
  rng gen(2);
  const auto state = gen.state();
  CHECK(train::recalibrate_batch_norm<double>(m, slimnet::testing::blobs<double>(10, 1), 4, 5, gen) == 0);
  CHECK(gen.state() == state);
  CHECK(trainable_values(m)[0].flat() == before[0].flat());
}

TEST_CASE("recalibrate_batch_norm rejects bad arguments by name and restores the statistics on a failed pass",
          "[train][batch_norm]") {
  using Catch::Matchers::Contains;
  const auto data = slimnet::testing::blobs<double>(20, 2);
  auto model = nested_bn_model<double>(13);
  rng gen(1);
  CHECK_THROWS_MATCHES(train::recalibrate_batch_norm<double>(model, data, 0, 10, gen), config_error,
                       Catch::Matchers::Predicate<config_error>([](const config_error& e) {
                         const std::string w = e.what();
                         return w.find("recalibrate_batch_norm") != std::string::npos && w.find("batches = 0") != std::string::npos;
                       }));
  CHECK_THROWS_MATCHES(train::recalibrate_batch_norm<double>(model, data, 2, 1, gen), config_error,
                       Catch::Matchers::Predicate<config_error>([](const config_error& e) {
                         return std::string(e.what()).find("batch_size = 1") != std::string::npos;
                       }));
  CHECK_THROWS_AS(train::recalibrate_batch_norm<double>(model, slimnet::testing::blobs<double>(1, 2), 2, 10, gen), config_error);
  nn::sequential<double> frozen;
  frozen.add("fc", nn::linear<double>(2, 3));
  frozen.add("bn", nn::batch_norm1d<double>(3, {1e-5, 0.0, true}));
  CHECK_THROWS_MATCHES(train::recalibrate_batch_norm<double>(frozen, data, 2, 10, gen), config_error,
                       Catch::Matchers::Predicate<config_error>([](const config_error& e) {
                         const std::string w = e.what();
                         return w.find("recalibrate_batch_norm") != std::string::npos && w.find("momentum 0") != std::string::npos;
                       }));
  // Inputs of 3 features do not fit Linear(2, 4): the pass throws after bn statistics were zeroed.
  data::dataset<double> wrong;
  wrong.num_classes = 3;
  wrong.inputs = tensor<double>({6, 3}, 1.0);
  wrong.labels = {0, 1, 2, 0, 1, 2};
  CHECK_THROWS_AS(train::recalibrate_batch_norm<double>(model, wrong, 2, 3, gen), shape_error);
  auto& bn1 = static_cast<nn::batch_norm<double>&>(model[1]);
  CHECK(bn1.running_mean().value().flat().isConstant(5.0));
  CHECK(bn1.running_var().value().flat().isConstant(7.0));
}
