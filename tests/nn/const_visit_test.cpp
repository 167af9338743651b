// The const parameter visit (saving, reports, counting) sees exactly what the mutable visit
// (training, loading) sees: the same parameter objects in the same order, for every model builder
// and every container.
#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/models_deepsense.hpp"

using namespace slimnet;

namespace const_visit_test {

template <class Scalar>
std::vector<const nn::parameter<Scalar>*> by_mutable_visit(nn::layer<Scalar>& model) {
  std::vector<const nn::parameter<Scalar>*> seen;
  model.visit_parameters([&](nn::parameter<Scalar>& p) { seen.push_back(&p); });
  return seen;
}

template <class Scalar>
std::vector<const nn::parameter<Scalar>*> by_const_visit(const nn::layer<Scalar>& model) {
  std::vector<const nn::parameter<Scalar>*> seen;
  model.visit_parameters([&](const nn::parameter<Scalar>& p) { seen.push_back(&p); });
  return seen;
}

/// Both visits give the same objects in the same order; `expected` names them in that order.
template <class Scalar>
void check_same_visits(nn::layer<Scalar>& model, const std::vector<std::string>& expected = {}) {
  const auto mut = by_mutable_visit(model);
  const auto con = by_const_visit(std::as_const(model));
  REQUIRE_FALSE(mut.empty());
  CHECK(con == mut);
  std::vector<std::string> names;
  index_t values = 0;
  for (const auto* p : con) {
    names.push_back(p->name());
    values += p->size();
  }
  if (!expected.empty()) CHECK(names == expected);
  CHECK(std::as_const(model).parameter_count(true) == values);
  // The clone's const visit walks the clone's own parameters, in the same order and with the same names.
  const auto copy = model.clone();
  const auto cloned = by_const_visit(*copy);
  REQUIRE(cloned.size() == con.size());
  for (std::size_t i = 0; i < con.size(); ++i) {
    CHECK(cloned[i] != con[i]);
    CHECK(cloned[i]->name() == con[i]->name());
  }
}

/// A layer written against the mutable visit only: the const visit reaches its parameters through
/// nn::layer's default.
struct mutable_only_layer : nn::cloneable<mutable_only_layer, double> {
  nn::parameter<double> a{"a", {3}}, b{"b", {2, 2}};
  std::string kind() const override { return "MutableOnly"; }
  shape_t output_shape(const shape_t& in) const override { return in; }
  void forward(const tensor<double>& x, tensor<double>& y, const nn::forward_context&) override { y = x; }
  void backward(const tensor<double>&, const tensor<double>&, const tensor<double>&, tensor<double>*) override {}
  void visit_parameters(const parameter_visitor& v) override {
    v(a);
    v(b);
  }
};

}  // namespace const_visit_test

TEMPLATE_TEST_CASE("const and mutable visit_parameters see the same parameters in the same order", "[nn]", float, double) {
  using const_visit_test::check_same_visits;
  rng gen(11);
  SECTION("LeNet-300-100") {
    auto m = nn::models::lenet_300_100<TestType>(gen);
    check_same_visits(m, {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"});
  }
  SECTION("LeNet-5") {
    auto m = nn::models::lenet5<TestType>(gen);
    check_same_visits(m, {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight",
                          "fc2.bias"});
  }
  SECTION("VGG-small (batch norms with running statistics)") {
    auto m = nn::models::vgg_small<TestType>(gen);
    check_same_visits(m);
  }
  SECTION("DeepSense (sensor_stack, time_distributed, stacked GRU)") {
    auto m = nn::models::deepsense<TestType>(gen);
    check_same_visits(m);
  }
  SECTION("bidirectional LSTM and GRU, stacked, with and without biases, batch norm without affine") {
    nn::sequential<TestType> m;
    nn::recurrent_options two;
    two.num_layers = 2;
    m.add("bilstm", nn::bidirectional<TestType>(nn::lstm<TestType>(3, 4, two)));
    nn::recurrent_options no_bias;
    no_bias.bias = false;
    m.add("bigru", nn::bidirectional<TestType>(nn::gru<TestType>(8, 2, no_bias)));
    typename nn::batch_norm<TestType>::options plain;
    plain.affine = false;
    m.add("bn", nn::batch_norm<TestType>(4, 1, plain));
    nn::sequential<TestType> inner;
    inner.add("fc", nn::linear<TestType>(4, 2));
    m.add("head", std::move(inner));
    check_same_visits(m);
    // Nested names as the mutable visit gives them, in its order.
    std::vector<std::string> names;
    std::as_const(m).visit_parameters([&](const nn::parameter<TestType>& p) { names.push_back(p.name()); });
    REQUIRE(names.size() >= 4);
    CHECK(names.front().rfind("bilstm.", 0) == 0);
    CHECK(names[names.size() - 4] == "bn.running_mean");
    CHECK(names[names.size() - 3] == "bn.running_var");
    CHECK(names[names.size() - 2] == "head.fc.weight");
    CHECK(names.back() == "head.fc.bias");
  }
}

TEST_CASE("a layer that overrides only the mutable visit is seen whole by the const visit", "[nn]") {
  const_visit_test::mutable_only_layer l;
  const_visit_test::check_same_visits(static_cast<nn::layer<double>&>(l));
  const nn::layer<double>& c = l;
  CHECK(c.parameter_count() == 7);
}

TEST_CASE("a lambda taking a const parameter compiles on mutable and const models alike", "[nn]") {
  rng gen(2);
  auto m = nn::models::lenet_300_100<double>(gen);
  index_t from_mutable = 0, from_const = 0;
  m.visit_parameters([&](const nn::parameter<double>& p) { from_mutable += p.size(); });
  std::as_const(m).visit_parameters([&](const nn::parameter<double>& p) { from_const += p.size(); });
  CHECK(from_mutable == 266610);
  CHECK(from_const == 266610);
}
