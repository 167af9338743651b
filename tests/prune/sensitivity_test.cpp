// Sensitivity analysis: one layer pruned at a time, exact levels, the model restored bitwise,
// and the table / CSV output.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/report.hpp"
#include "slimnet/train.hpp"
#include "support/datasets.hpp"

using namespace slimnet;
using slimnet::testing::blobs;
using Catch::Matchers::Contains;

TEMPLATE_TEST_CASE("sensitivity analysis prunes one layer at a time and restores it exactly",
                   "[prune][sensitivity]", float, double) {
  const auto data = blobs<TestType>(150, 1);
  rng gen(2);
  nn::sequential<TestType> m;
  m.add("fc1", nn::linear<TestType>(2, 16));
  m.add("relu", nn::relu<TestType>());
  m.add("fc2", nn::linear<TestType>(16, 3));
  m.reset_parameters(gen);
  train::sgd<TestType> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit_options fo;
  fo.epochs = 5;
  fo.batch_size = 15;
  fo.progress = false;
  train::fit(m, opt, train::cross_entropy<TestType>(), data, fo);
  // fc2 carries a mask already: its pruned entries count towards each level.
  auto params = prune::prunable_parameters(m);
  prune::l1_unstructured(*params[1], 0.25);
  std::vector<tensor<TestType>> before;
  m.visit_parameters([&](nn::parameter<TestType>& p) { before.push_back(p.value()); });
  const auto base = train::evaluate(m, data, train::cross_entropy<TestType>());

  prune::sensitivity_options o;
  o.sparsities = {0.0, 0.25, 0.5, 1.0};
  const auto r = prune::sensitivity_analysis(m, params, data, train::cross_entropy<TestType>(), o);
  REQUIRE(r.parameters == std::vector<std::string>{"fc1.weight", "fc2.weight"});
  REQUIRE(r.accuracy.size() == 2);
  REQUIRE(r.accuracy[0].size() == 4);
  CHECK(r.accuracy[0][0] == base.accuracy);
  CHECK(r.accuracy[1][0] == base.accuracy);
  CHECK(r.accuracy[1][1] == base.accuracy);  // fc2 is already 25% pruned
  CHECK(r.loss[0][0] == Approx(base.loss));
  // All of a layer gone: every logit is the same function of the bias, accuracy falls to one class
  // or so.
  CHECK(r.accuracy[0][3] < 0.7);
  CHECK(r.accuracy[1][3] < 0.7);
  std::size_t i = 0;
  m.visit_parameters([&](nn::parameter<TestType>& p) {
    CHECK(p.value().flat() == before[i].flat());  // bitwise
    ++i;
  });
  CHECK(prune::count_nonzero(params[1]->value()) == 36);

  const std::string table = report::format(r, 0.5);
  CHECK_THAT(table, Contains("sparsity") && Contains("25%") && Contains("fc1.weight") &&
                        Contains("fc2.weight"));
  CHECK_THAT(table, Contains("highest sparsity within 0.5 pp"));
  const std::string csv = report::to_csv(r);
  CHECK_THAT(csv, Contains("parameter,sparsity,accuracy,loss\nfc1.weight,0.0000,"));
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 8);

  o.structured = true;
  o.sparsities = {0.5};
  const auto rows =
      prune::sensitivity_analysis(m, {params[0]}, data, train::cross_entropy<TestType>(), o);
  CHECK(rows.structured);
  CHECK_THAT(report::format(rows), Contains("rows pruned"));

  o.sparsities = {0.5, 1.5};
  CHECK_THROWS_WITH(
      prune::sensitivity_analysis(m, params, data, train::cross_entropy<TestType>(), o),
      Contains("slimnet::prune::sensitivity_analysis") && Contains("sparsity = 1.5"));
}
