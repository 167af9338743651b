// The unit (output) transform contract (nn/unit_transform.hpp) and the unit mask: finite-difference
// gradients as a layer and inside a recurrence, clones that share nothing, after_step with the step
// context reaching every transform of a model, thinning and typed errors.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "support/gradient_check.hpp"
#include "support/sequence_lengths.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

using mask_layer = nn::unit_transform_layer<double, nn::unit_mask<double>>;

tensor<double> ut_samples(index_t n, index_t units, std::uint64_t seed) {
  rng gen(seed);
  tensor<double> z({n, units});
  for (index_t i = 0; i < z.size(); ++i) z[i] = gen.bernoulli(0.6) ? 1.0 : 0.0;
  return z;
}

double ut_max_diff(const tensor<double>& a, const tensor<double>& b) {
  REQUIRE(a.shape() == b.shape());
  return (a.flat() - b.flat()).cwiseAbs().maxCoeff();
}

/// An element-wise identity that records the context of its last after_step.
class step_recorder : public nn::unit_transform<double> {
 public:
  std::string name() const override { return "StepRecorder"; }
  index_t units() const override { return 0; }
  void forward(const tensor<double>& x, tensor<double>& y, const nn::forward_context&) override { y = x; }
  void backward(const tensor<double>&, const tensor<double>& dy, tensor<double>& dx) override { dx = dy; }
  void after_step(const nn::step_context& step) override {
    last_step = step.step;
    ++calls;
  }
  std::shared_ptr<nn::unit_transform<double>> clone(nn::clone_memo&) const override {
    return std::make_shared<step_recorder>(*this);
  }
  std::int64_t last_step = -1;
  int calls = 0;
};

}  // namespace

TEST_CASE("a unit mask passes the gradient check as a layer and inside a recurrence", "[nn][unit_transform][gradient]") {
  testing::gradient_check_options o;
  o.training = true;
  SECTION("per-example samples on (N, units)") {
    mask_layer g(5);
    g.transform().set_mask(ut_samples(3, 5, 1));
    testing::require_gradients(g, {3, 5}, o);
  }
  SECTION("per-sequence samples over folded steps (N*T, C, H, W)") {
    mask_layer g(3, true);
    g.transform().set_mask(ut_samples(2, 3, 2));
    testing::require_gradients(g, {2 * 4, 3, 2, 2}, o);
  }
  SECTION("hard per-example factors, used in training and evaluation") {
    tensor<double> f({3, 4});
    f.flat() << 0.0, 0.7, 1.0, 0.25, 1.0, 2.0, 0.0, 0.5, 0.3, 0.3, 0.3, 1.0;
    mask_layer g(nn::unit_mask<double>::fixed(f));
    testing::require_gradients(g, {3, 4}, o);
    o.training = false;
    testing::require_gradients(g, {3, 4}, o);
  }
  SECTION("a stochastic mask on both stacked layers of an LSTM and a GRU, sequences of different lengths") {
    nn::recurrent_options ro;
    ro.num_layers = 2;
    const std::vector<std::int32_t> lengths{4, 6, 1, 3};
    for (int cell = 0; cell < 2; ++cell) {
      std::unique_ptr<nn::layer<double>> r;
      auto attach = [&](auto& stack) {
        for (index_t l = 0; l < 2; ++l) {
          auto m = std::make_shared<nn::unit_mask<double>>(5);
          m->set_mask(ut_samples(4, 5, 10 + static_cast<std::uint64_t>(l)));
          stack.set_unit_mask(l, m);
        }
      };
      if (cell == 0) {
        auto s = std::make_unique<nn::lstm<double>>(3, 5, ro);
        attach(*s);
        r = std::move(s);
      } else {
        auto s = std::make_unique<nn::gru<double>>(3, 5, ro);
        attach(*s);
        r = std::move(s);
      }
      testing::with_lengths<double> l(std::move(r), lengths);
      testing::require_gradients(l, {4, 7, 3}, o);
    }
  }
}

TEST_CASE("a copied model owns clones of its unit transforms: changing the copy leaves the original",
          "[nn][unit_transform][clone]") {
  rng gen(3);
  nn::recurrent_options ro;
  ro.output = nn::sequence_output::last_step;
  nn::sequential<double> m;
  m.add("lstm", nn::lstm<double>(3, 4, ro));
  m.add("fc", nn::linear<double>(4, 6));
  m.add("fc_gate", mask_layer(6));
  m.add("out", nn::linear<double>(6, 2));
  m.reset_parameters(gen);
  auto& lstm = dynamic_cast<nn::lstm<double>&>(m[0]);
  lstm.set_unit_mask(0, std::make_shared<nn::unit_mask<double>>(4));
  column_vector<double> s4(4), s6(6);
  s4 << 1, 0.5, 0, 1;
  s6 << 1, 1, 0, 0.25, 1, 0.5;
  lstm.unit_mask_of(0)->set_hard(s4);
  dynamic_cast<mask_layer&>(m[2]).transform().set_hard(s6);
  const auto x = testing::random_tensor<double>({5, 4, 3}, gen);
  tensor<double> before, after;
  m.forward(x, before, {});

  SECTION("a Sequential copy") {
    nn::sequential<double> copy(m);
    auto& c_lstm = dynamic_cast<nn::lstm<double>&>(copy[0]);
    auto& c_gate = dynamic_cast<mask_layer&>(copy[2]);
    REQUIRE(c_lstm.unit_mask_of(0) != nullptr);
    CHECK(c_lstm.unit_mask_of(0) != lstm.unit_mask_of(0));
    CHECK(&c_gate.transform() != &dynamic_cast<mask_layer&>(m[2]).transform());
    tensor<double> y_copy;
    copy.forward(x, y_copy, {});
    CHECK(ut_max_diff(y_copy, before) == 0.0);  // the same factors
    c_lstm.unit_mask_of(0)->set_hard(column_vector<double>::Zero(4));
    c_gate.transform().set_hard(column_vector<double>::Zero(6));
    c_gate.transform().keep_units({0, 1, 2});
  }
  SECTION("a layer clone") {
    auto c = m[2].clone();
    auto& c_gate = dynamic_cast<mask_layer&>(*c);
    c_gate.transform().set_mask(ut_samples(5, 6, 4));
    c_gate.transform().set_probabilities(column_vector<double>::Constant(6, 0.1));
    auto r = lstm.clone();
    dynamic_cast<nn::lstm<double>&>(*r).unit_mask_of(0)->set_factors(tensor<double>({5, 4}, 0.0));
  }
  m.forward(x, after, {});
  CHECK(ut_max_diff(after, before) == 0.0);
  CHECK(lstm.unit_mask_of(0)->scale() == s4);
  CHECK(dynamic_cast<mask_layer&>(m[2]).transform().scale() == s6);
  CHECK(dynamic_cast<mask_layer&>(m[2]).transform().mode() == nn::mask_mode::hard);
}

TEST_CASE("after_step reaches every unit transform of a model with the step context", "[nn][unit_transform]") {
  nn::sequential<double> inner;
  inner.add("fc", nn::linear<double>(4, 4));
  inner.add("rec", nn::unit_transform_layer<double>(std::make_shared<step_recorder>()));
  nn::sequential<double> m;
  m.add("bi", nn::bidirectional<double>(nn::gru<double>(3, 4, nn::recurrent_options{2, nn::sequence_output::last_step})));
  m.add("block", std::move(inner));
  auto& bi = dynamic_cast<nn::bidirectional<double>&>(m[0]);
  bi.forward_as<nn::gru<double>>().set_unit_mask(1, tensor<double>({4}, 1.0));
  bi.backward_as<nn::gru<double>>().set_unit_mask(0, tensor<double>({4}, 1.0));
  int seen = 0;
  m.visit_layers([&](nn::layer<double>& l) { l.visit_unit_transforms([&](nn::unit_transform<double>&) { ++seen; }); });
  CHECK(seen == 3);  // two recurrent masks and the recorder
  nn::unit_transforms_after_step(m, nn::step_context{7});
  nn::unit_transforms_after_step(m, nn::step_context{8});
  auto& rec = dynamic_cast<nn::unit_transform_layer<double>&>(dynamic_cast<nn::sequential<double>&>(m[1])[1]);
  CHECK(rec.kind() == "StepRecorder");
  CHECK(static_cast<step_recorder&>(rec.transform()).last_step == 8);
  CHECK(static_cast<step_recorder&>(rec.transform()).calls == 2);
}

TEST_CASE("unit masks shrink with their layer and check what they are given", "[nn][unit_transform][errors]") {
  SECTION("keep_units keeps the factors and samples of the kept units") {
    nn::unit_mask<double> m(4);
    tensor<double> z({2, 4});
    z.flat() << 1, 0, 1, 1, 0, 1, 1, 0;
    m.set_mask(z);
    column_vector<double> p(4);
    p << 0.1, 0.2, 0.3, 0.4;
    m.set_probabilities(p);
    m.keep_units({1, 3});
    CHECK(m.units() == 2);
    CHECK(m.scale() == (column_vector<double>(2) << 0.2, 0.4).finished());
    CHECK(m.mask().shape() == shape_t{2, 2});
    CHECK(m.mask().flat() == (column_vector<double>(4) << 0, 1, 1, 0).finished());
    CHECK_THROWS_AS(m.keep_units({1, 1}), config_error);
    CHECK_THROWS_AS(m.keep_units({}), config_error);
  }
  SECTION("typed errors") {
    CHECK_THROWS_AS(nn::unit_mask<double>(0), config_error);
    CHECK_THROWS_AS(mask_layer(std::shared_ptr<nn::unit_mask<double>>()), config_error);
    mask_layer g(3);
    tensor<double> y;
    CHECK_THROWS_WITH(g.forward(tensor<double>({2, 4}), y, {}), Contains("unit_transform_layer") && Contains("(2, 4)"));
    CHECK_THROWS_WITH(g.forward(tensor<double>({2, 3}), y, {true, nullptr}), Contains("stochastic mode needs a mask"));
    nn::unit_mask<double> m(3);
    CHECK_THROWS_AS(m.set_factors(tensor<double>({2, 4})), shape_error);
    tensor<double> inf({3}, 1.0);
    inf[1] = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(m.set_factors(inf), Contains("set_factors") && Contains("finite"));
    m.set_factors(tensor<double>({2, 3}, 1.0));
    CHECK_THROWS_WITH(m.scale(), Contains("unit_mask::scale") && Contains("(2, 3)"));
    nn::lstm<double> lstm(3, 4);
    CHECK_THROWS_WITH(lstm.set_unit_mask(0, std::make_shared<nn::unit_mask<double>>(5)),
                      Contains("set_unit_mask") && Contains("4 hidden"));
    CHECK_THROWS_AS(lstm.set_unit_mask(0, std::make_shared<nn::unit_mask<double>>(4, true)), shape_error);
  }
}
