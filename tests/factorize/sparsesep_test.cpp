// factorize::sparsesep_apply / sparsesep_search on a small LeNet-like Sequential: nothing dropped
// means the same outputs; budgets are met; weights are counted as the tables count them.
#include <catch2/catch.hpp>

#include <cmath>

#include "slimnet/factorize.hpp"
#include "slimnet/nn.hpp"

using namespace slimnet;

namespace {

template <class Scalar>
nn::sequential<Scalar> sparsesep_test_net(rng& gen) {
  nn::sequential<Scalar> m;
  m.add("conv1", nn::conv2d<Scalar>(1, 4, 3));
  m.add("relu1", nn::relu<Scalar>());
  m.add("conv2", nn::conv2d<Scalar>(4, 6, 3, {2, 1, true}));
  m.add("flatten", nn::flatten<Scalar>());
  m.add("fc1", nn::linear<Scalar>(6 * 4 * 4, 12));
  m.add("relu2", nn::relu<Scalar>());
  m.add("fc2", nn::linear<Scalar>(12, 5));
  m.reset_parameters(gen);
  return m;
}

template <class Scalar>
tensor<Scalar> sparsesep_test_images(index_t n, rng& gen) {
  tensor<Scalar> x({n, 1, 9, 9});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.normal());
  return x;
}

template <class Scalar>
double sparsesep_test_diff(nn::sequential<Scalar>& a, nn::sequential<Scalar>& b, const tensor<Scalar>& x) {
  const auto ya = a(x), yb = b(x);
  REQUIRE(ya.shape() == yb.shape());
  return static_cast<double>((ya.flat() - yb.flat()).cwiseAbs().maxCoeff());
}

}  // namespace

TEMPLATE_TEST_CASE("sparsesep_apply at full size with dense codes changes nothing", "[factorize][sparsesep]", float, double) {
  rng gen(41);
  auto net = sparsesep_test_net<TestType>(gen);
  nn::sequential<TestType> factored(net);
  factorize::sparsesep_options opt;
  opt.code_density = 1;
  const auto rows = factorize::sparsesep_apply(factored, {{"conv1", 3}, {"conv2", 12}, {"fc1", 12}, {"fc2", 5}}, opt);
  REQUIRE(rows.size() == 4);
  CHECK(factored[0].kind() == "SeparableConv2d");
  CHECK(factored[4].kind() == "SparseCodedLinear");
  CHECK(factored[0].name() == "conv1");
  for (const auto& r : rows) {
    INFO(r.name);
    CHECK(r.relative_error < 1e-5);
  }
  CHECK(rows[0].original_weights == 36);
  CHECK(rows[0].kept_weights == 3 * 1 * 3 + 4 * 3 * 3);  // K C kh + N K kw: more than 36 at full rank
  const auto x = sparsesep_test_images<TestType>(3, gen);
  CHECK(sparsesep_test_diff(net, factored, x) < 1e-4);
}

TEST_CASE("sparsesep_apply keeps the budgets it is given and counts nonzeros", "[factorize][sparsesep]") {
  rng gen(43);
  auto net = sparsesep_test_net<double>(gen);
  factorize::sparsesep_options opt;
  opt.code_density = 0.25;
  const auto rows = factorize::sparsesep_apply(net, {{"conv2", 3}, {"fc1", 8}}, opt);
  auto& fc1 = dynamic_cast<factorize::sparse_coded_linear<double>&>(net.find("fc1"));
  CHECK(fc1.basis_size() == 8);
  CHECK(fc1.max_code_nonzeros() <= 2);
  CHECK(rows[1].nonzeros_per_code == 2);
  CHECK(rows[1].kept_weights == fc1.weight_count());
  CHECK(rows[1].kept_weights <= 96 * 8 + 12 * 2);
  CHECK(fc1.parameter_count() == fc1.weight_count() + 12);
  CHECK(rows[0].kept_weights == 3 * (4 * 3 + 6 * 3));
  CHECK(rows[0].relative_error > 0);
  CHECK(rows[0].relative_error < 1);
  const auto y = net(sparsesep_test_images<double>(2, gen));
  CHECK(y.flat().allFinite());
}

TEST_CASE("sparsesep_search meets the accuracy budget and never grows a layer", "[factorize][sparsesep]") {
  rng gen(45);
  auto net = sparsesep_test_net<double>(gen);
  nn::sequential<double> reference(net);
  const auto x = sparsesep_test_images<double>(16, gen);
  const auto y_ref = reference(x);
  // A smooth stand-in for accuracy: 1 - relative output error against the dense model.
  std::function<double(nn::sequential<double>&)> fidelity = [&](nn::sequential<double>& m) {
    const auto y = m(x);
    return 1.0 - (y.flat() - y_ref.flat()).norm() / y_ref.flat().norm();
  };
  for (double budget : {0.02, 0.2}) {
    nn::sequential<double> model(net);
    factorize::sparsesep_search_options opt;
    opt.accuracy_budget = budget;
    const auto r = factorize::sparsesep_search(model, fidelity, opt);
    INFO("budget " << budget);
    CHECK(r.dense_accuracy == Approx(1.0));
    CHECK(r.accuracy >= r.dense_accuracy - budget);
    CHECK(r.accuracy == Approx(fidelity(model)));
    REQUIRE(r.layers.size() == 4);
    for (const auto& l : r.layers) {
      INFO(l.name);
      CHECK(l.kept_weights <= l.original_weights);
    }
    CHECK(r.evaluations > 4);
    if (budget == 0.2) CHECK(r.kept_fraction() < 0.9);  // a loose budget does compress
  }
}

TEST_CASE("sparsesep rejects unknown layers, bad sizes and budgets", "[factorize][sparsesep][errors]") {
  using Catch::Matchers::Contains;
  rng gen(47);
  auto net = sparsesep_test_net<float>(gen);
  CHECK_THROWS_WITH(factorize::sparsesep_apply(net, {{"fc9", 2}}), Contains("slimnet::factorize::sparsesep_apply") && Contains("'fc9'"));
  CHECK_THROWS_WITH(factorize::sparsesep_apply(net, {{"fc2", 0}}), Contains("size = 0"));
  CHECK_THROWS_WITH(factorize::sparsesep_apply(net, {{"relu1", 1}}), Contains("not a Linear or Conv2d"));
  factorize::sparsesep_options bad;
  bad.code_density = 1.5;
  CHECK_THROWS_WITH(factorize::sparsesep_apply(net, {{"fc2", 2}}, bad), Contains("code_density = 1.5"));
  factorize::sparsesep_search_options sopt;
  sopt.accuracy_budget = -0.1;
  CHECK_THROWS_WITH(factorize::sparsesep_search<float>(net, [](nn::sequential<float>&) { return 1.0; }, sopt),
                    Contains("slimnet::factorize::sparsesep_search") && Contains("accuracy_budget = -0.1"));
}
