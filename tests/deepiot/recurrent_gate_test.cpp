// DeepIoT gates on recurrent units (LSTM, GRU, Bidirectional): the gated model equals the model
// with the unit masks set by hand, the thinned model equals the hard-masked one on sequences of
// different lengths, the compressor reads the packed 4(n_{l-1} + n_l) x n_l matrices, errors.
#include <catch2/catch.hpp>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/structure.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

constexpr index_t rg_steps = 7, rg_features = 5;

template <class Scalar>
void rg_randomize(nn::layer<Scalar>& m, std::uint64_t seed) {
  rng gen(seed);
  m.visit_parameters([&](nn::parameter<Scalar>& p) {
    for (index_t i = 0; i < p.size(); ++i) p.value()[i] = static_cast<Scalar>(0.6 * gen.normal());
  });
}

/// LSTM with 2 stacked layers (last step) -> Linear.
template <class Scalar>
nn::sequential<Scalar> rg_lstm2() {
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<Scalar> m;
  m.add("lstm", nn::lstm<Scalar>(rg_features, 6, o));
  m.add("fc", nn::linear<Scalar>(6, 3));
  rg_randomize(m, 11);
  return m;
}

/// GRU with 2 stacked layers (every step) -> sequence mean -> Linear + ReLU -> Linear: recurrent
/// gates and a unit gate in one model.
template <class Scalar>
nn::sequential<Scalar> rg_gru() {
  nn::recurrent_options o;
  o.num_layers = 2;
  nn::sequential<Scalar> m;
  m.add("gru", nn::gru<Scalar>(rg_features, 7, o));
  m.add("mean", nn::sequence_mean<Scalar>());
  m.add("hid", nn::linear<Scalar>(7, 8));
  m.add("relu", nn::relu<Scalar>());
  m.add("fc", nn::linear<Scalar>(8, 3));
  rg_randomize(m, 12);
  return m;
}

/// Bidirectional 2-layer LSTM (last step) -> Linear: the Bi-LSTM of example 08, small.
template <class Scalar>
nn::sequential<Scalar> rg_bilstm() {
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<Scalar> m;
  m.add("bilstm", nn::bidirectional<Scalar>(nn::lstm<Scalar>(rg_features, 6, o)));
  m.add("fc", nn::linear<Scalar>(12, 3));
  rg_randomize(m, 13);
  return m;
}

template <class Scalar>
tensor<Scalar> rg_sequences(index_t n, std::uint64_t seed) {
  rng gen(seed);
  tensor<Scalar> x({n, rg_steps, rg_features});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.normal());
  return x;
}

template <class Scalar>
tensor<Scalar> rg_as_tensor(const column_vector<Scalar>& v) {
  tensor<Scalar> t({v.size()});
  t.flat() = v;
  return t;
}

/// The LSTM / GRU stack of a direction of `l` (a recurrent layer or a Bidirectional).
template <class Stack, class Scalar>
Stack& rg_stack(nn::layer<Scalar>& l, bool reverse) {
  if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&l)) {
    return reverse ? bi->template backward_as<Stack>() : bi->template forward_as<Stack>();
  }
  return dynamic_cast<Stack&>(l);
}

template <class Scalar>
Scalar rg_max_diff(const tensor<Scalar>& a, const tensor<Scalar>& b) {
  REQUIRE(a.shape() == b.shape());
  return (a.flat() - b.flat()).cwiseAbs().maxCoeff();
}

/// Hardens every gate with random probabilities (τ = 0.5), thins, and compares on sequences of
/// lengths 7, 1, 4, 6, 0, 3; checks the thinned hidden sizes and masks.
template <class Scalar, class Stack>
void rg_check_thin(deepiot::gated_model<Scalar>& g, bool fold, std::uint64_t seed) {
  const double tol = std::is_same_v<Scalar, float> ? 2e-5 : 1e-12;
  rng gen(seed);
  std::vector<column_vector<Scalar>> p;
  for (const auto& l : g.layers) {
    column_vector<Scalar> v(l.units);
    for (index_t j = 0; j < v.size(); ++j) v[j] = static_cast<Scalar>(gen.uniform());
    v[0] = Scalar(0.9);  // a kept and a pruned unit in every layer
    v[1] = Scalar(0.1);
    p.push_back(v);
  }
  const auto keep = deepiot::harden(g, p, 0.5, fold);
  auto thinned = deepiot::thin(g);
  INFO(thinned.describe());
  const std::vector<std::int32_t> lengths{7, 1, 4, 6, 0, 3};
  auto x = rg_sequences<Scalar>(static_cast<index_t>(lengths.size()), seed + 1);
  tensor<Scalar> y_gated, y_thin;
  nn::forward_context ctx{false, &gen, &lengths};
  g.net.forward(x, y_gated, ctx);
  y_thin.resize(y_gated.shape());
  y_thin.flat().setConstant(std::numeric_limits<Scalar>::quiet_NaN());
  thinned.forward(x, y_thin, ctx);
  REQUIRE(y_thin.flat().allFinite());
  REQUIRE(rg_max_diff(y_thin, y_gated) <= tol * std::max<Scalar>(1, y_gated.flat().cwiseAbs().maxCoeff()));
  // The hard mask does something: the ungated model differs.
  tensor<Scalar> y_plain;
  auto plain = deepiot::detail::without_gates(g.net);
  for (std::size_t i = 0; i < plain.size(); ++i) {
    if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&plain[i])) {
      bi->template forward_as<Stack>().clear_unit_masks();
      bi->template backward_as<Stack>().clear_unit_masks();
    } else if (auto* r = dynamic_cast<Stack*>(&plain[i])) {
      r->clear_unit_masks();
    }
  }
  plain.forward(x, y_plain, ctx);
  REQUIRE(rg_max_diff(y_plain, y_gated) > Scalar(1e-3));
  REQUIRE(deepiot::weight_count(thinned) < deepiot::weight_count(g.net));
  for (std::size_t k = 0; k < g.layers.size(); ++k) {
    const auto& d = g.layers[k];
    if (!d.recurrent) continue;
    const auto& kk = keep.at(d.name);
    const auto kept = static_cast<index_t>(std::count(kk.begin(), kk.end(), true));
    std::size_t pos = 0;
    while (thinned.local_name(pos) != g.net.local_name(d.layer)) ++pos;
    auto& stack = rg_stack<Stack>(thinned[pos], d.reverse);
    CHECK(stack.hidden_size(d.stacked) == kept);
    // Folded probabilities stay as the thinned layer's unit mask; 0/1 masks are cleared.
    if (fold) {
      REQUIRE(stack.unit_mask(d.stacked) != nullptr);
      CHECK(stack.unit_mask(d.stacked)->size() == kept);
    } else {
      CHECK(stack.unit_mask(d.stacked) == nullptr);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("recurrent gates equal the unit masks set by hand", "[deepiot][recurrent]", float, double) {
  auto m = rg_lstm2<TestType>();
  auto g = deepiot::attach_gates(m);
  REQUIRE(g.layers.size() == 2);
  REQUIRE(g.net.size() == m.size());  // no gate layers: the masks are the LSTM's own
  const std::vector<std::int32_t> lengths{7, 3, 5, 1};
  const auto x = rg_sequences<TestType>(4, 3);
  rng gen(4);
  auto ref = m;
  auto& ref_lstm = dynamic_cast<nn::lstm<TestType>&>(ref[0]);
  auto check_same = [&](bool training) {
    nn::forward_context ctx{training, &gen, &lengths};
    tensor<TestType> y_gated, y_ref;
    g.net.forward(x, y_gated, ctx);
    ref.forward(x, y_ref, ctx);
    REQUIRE(rg_max_diff(y_gated, y_ref) == TestType(0));
    tensor<TestType> y_plain;
    m.forward(x, y_plain, ctx);
    REQUIRE(rg_max_diff(y_gated, y_plain) > TestType(1e-3));
  };
  SECTION("hard factors") {
    for (std::size_t k = 0; k < 2; ++k) {
      column_vector<TestType> s(6);
      s << 1, 0, TestType(0.5), 1, 0, TestType(2);
      if (k == 1) s.reverseInPlace();
      g.gate(k).set_hard(s);
      CHECK(g.gate(k).mode() == nn::mask_mode::hard);
      ref_lstm.set_unit_mask(static_cast<index_t>(k), rg_as_tensor(s));
    }
    check_same(false);
    check_same(true);  // hard factors in training too
    // A training mask does not replace the hard factors.
    tensor<TestType> z({4, 6});
    z.set_zero();
    g.gate(0).set_mask(z);
    check_same(true);
  }
  SECTION("stochastic: per-sequence 0/1 masks in training, p̂ in evaluation") {
    tensor<TestType> z0({4, 6}), z1({4, 6});
    for (index_t i = 0; i < z0.size(); ++i) z0[i] = gen.uniform() < 0.5 ? TestType(0) : TestType(1), z1[i] = gen.uniform() < 0.6 ? TestType(1) : TestType(0);
    g.gate(0).set_mask(z0);
    g.gate(1).set_mask(z1);
    ref_lstm.set_unit_mask(0, z0);
    ref_lstm.set_unit_mask(1, z1);
    check_same(true);
    column_vector<TestType> p0 = column_vector<TestType>::LinSpaced(6, TestType(0.1), TestType(0.9)),
                            p1 = column_vector<TestType>::Constant(6, TestType(0.3));
    g.gate(0).set_probabilities(p0);
    g.gate(1).set_probabilities(p1);
    CHECK(g.gate(1).mode() == nn::mask_mode::stochastic);
    CHECK(g.gate(0).scale() == p0);
    ref_lstm.set_unit_mask(0, rg_as_tensor(p0));
    ref_lstm.set_unit_mask(1, rg_as_tensor(p1));
    check_same(false);
  }
}

TEMPLATE_TEST_CASE("thin() of a gated recurrent model equals the hard-masked model on sequences of different lengths",
                   "[deepiot][recurrent][thin]", float, double) {
  for (bool fold : {false, true}) {
    DYNAMIC_SECTION("fold " << fold) {
      SECTION("LSTM, 2 stacked layers") {
        auto g = deepiot::attach_gates(rg_lstm2<TestType>());
        REQUIRE(g.layers.size() == 2);
        rg_check_thin<TestType, nn::lstm<TestType>>(g, fold, 21);
      }
      SECTION("GRU, 2 stacked layers -> sequence mean -> Linear") {
        auto g = deepiot::attach_gates(rg_gru<TestType>());
        REQUIRE(g.layers.size() == 3);
        REQUIRE(g.layers[1].name == "gru.l1");
        REQUIRE(g.layers[1].recurrent);
        REQUIRE(!g.layers[2].recurrent);
        rg_check_thin<TestType, nn::gru<TestType>>(g, fold, 22);
      }
      SECTION("Bidirectional LSTM, 2 stacked layers per direction") {
        auto g = deepiot::attach_gates(rg_bilstm<TestType>());
        REQUIRE(g.layers.size() == 4);
        rg_check_thin<TestType, nn::lstm<TestType>>(g, fold, 23);
      }
    }
  }
}

TEMPLATE_TEST_CASE("the compressor reads each recurrent stacked layer's packed weights", "[deepiot][recurrent][compressor]", float,
                   double) {
  SECTION("Bi-LSTM: one droppable layer per stacked layer and direction") {
    auto g = deepiot::attach_gates(rg_bilstm<TestType>());
    const auto cl = g.compressor_layers();
    REQUIRE(cl.size() == 4);
    const std::vector<std::string> names{"bilstm.l0", "bilstm.l1", "bilstm.l0_reverse", "bilstm.l1_reverse"};
    for (std::size_t k = 0; k < 4; ++k) {
      CHECK(cl[k].name == names[k]);
      CHECK(cl[k].units == 6);
      CHECK(!cl[k].bias);
      CHECK(cl[k].fan_in == 4 * ((k % 2 == 0 ? rg_features : 6) + 6 + 2));  // 4 (n_{l-1} + n_l) + 2 bias rows per gate
    }
    // Unit j of layer bilstm.l1_reverse: for each gate block, W_ih row, W_hh row, b_ih, b_hh.
    auto [w, b] = g.live_weights();
    REQUIRE(w.size() == 4);
    CHECK(b[3] == nullptr);
    auto& rev = dynamic_cast<nn::bidirectional<TestType>&>(g.net[0]).template backward_as<nn::lstm<TestType>>();
    const index_t h = 6, f = 6, per = f + h + 2;
    REQUIRE(w[3]->shape() == shape_t{6, 4 * per});
    for (index_t j = 0; j < h; ++j) {
      for (index_t gb = 0; gb < 4; ++gb) {
        const TestType* row = w[3]->data() + j * 4 * per + gb * per;
        for (index_t c = 0; c < f; ++c) REQUIRE(row[c] == rev.weight_ih(1).value().data()[(gb * h + j) * f + c]);
        for (index_t c = 0; c < h; ++c) REQUIRE(row[f + c] == rev.weight_hh(1).value().data()[(gb * h + j) * h + c]);
        REQUIRE(row[f + h] == rev.bias_ih(1)->value()[gb * h + j]);
        REQUIRE(row[f + h + 1] == rev.bias_hh(1)->value()[gb * h + j]);
      }
    }
    // The packed matrix is live: a changed weight shows at the next call.
    rev.weight_hh(1).value()[0] = TestType(42);
    auto [w2, b2] = g.live_weights();
    CHECK(w2[3]->data()[f] == TestType(42));
    rng gen(5);
    deepiot::compressor<TestType> comp(cl, {}, gen);
    const auto p = comp.forward(w2, b2);
    REQUIRE(p.size() == 4);
    for (const auto& v : p) {
      REQUIRE(v.size() == 6);
      CHECK((v.array() > 0).all());
      CHECK((v.array() < 1).all());
    }
  }
  SECTION("Linear -> GRU without biases: a unit gate and a recurrent gate, in order") {
    nn::sequential<TestType> m;
    m.add("in", nn::linear<TestType>(rg_features, 8));
    m.add("relu", nn::relu<TestType>());
    nn::recurrent_options o;
    o.bias = false;
    o.output = nn::sequence_output::last_step;
    m.add("gru", nn::gru<TestType>(8, 7, o));
    m.add("fc", nn::linear<TestType>(7, 3));
    auto g = deepiot::attach_gates(m);
    REQUIRE(g.layers.size() == 2);
    CHECK(g.layers[0].name == "in");
    CHECK(g.layers[0].fan_in == rg_features);
    CHECK(g.layers[1].name == "gru.l0");
    CHECK(g.layers[1].fan_in == 3 * (8 + 7));  // the authors' GRU: gates z, r and the candidate
    CHECK(g.net.size() == m.size() + 1);       // one unit_gate layer, after the ReLU
    CHECK(dynamic_cast<deepiot::unit_gate<TestType>*>(&g.net[2]) != nullptr);
    CHECK(g.gate(0).units() == 8);
    CHECK(g.gate(1).units() == 7);
    auto [w, b] = g.live_weights();
    CHECK(w[0] == &g.weight(0).value());
    CHECK(w[1]->shape() == shape_t{7, 45});
  }
}

TEST_CASE("recurrent gates: typed errors", "[deepiot][recurrent][errors]") {
  auto g = deepiot::attach_gates(rg_bilstm<double>());
  SECTION("masks and factors") {
    REQUIRE_THROWS_AS(g.gate(0).set_mask(tensor<double>({4, 5})), shape_error);
    tensor<double> z({2, 6});
    z.flat().setConstant(0.5);
    REQUIRE_THROWS_AS(g.gate(0).set_mask(z), config_error);
    REQUIRE_THROWS_WITH(g.gate(1).set_hard(column_vector<double>::Constant(6, -1.0)), Contains("unit_mask::set_hard"));
    REQUIRE_THROWS_AS(g.gate(1).set_probabilities(column_vector<double>::Constant(6, 1.5)), config_error);
    REQUIRE_THROWS_AS(g.gate(1).set_probabilities(column_vector<double>::Constant(5, 0.5)), shape_error);
    REQUIRE_THROWS_AS(g.weight(0), config_error);
  }
  SECTION("thinning a stochastic recurrent gate") {
    REQUIRE_THROWS_WITH(deepiot::thin(g), Contains("stochastic mode"));
  }
  SECTION("the recurrent output layer and unknown names") {
    nn::recurrent_options o;
    o.output = nn::sequence_output::last_step;
    nn::sequential<double> m;
    m.add("in", nn::linear<double>(rg_features, 4));
    m.add("lstm", nn::lstm<double>(4, 3, o));
    REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"lstm"}), Contains("output layer"));
    REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"lstm2"}), Contains("'lstm2'"));
    auto g2 = deepiot::attach_gates(m);  // the Linear only
    REQUIRE(g2.layers.size() == 1);
    CHECK(!g2.layers[0].recurrent);
  }
}

TEST_CASE("compress() trains the gates of a small Bi-LSTM", "[deepiot][recurrent][compress]") {
  // Two classes of sequences: the sign of the mean of feature 0 over the steps.
  rng gen(31);
  data::dataset<float> train_set, test_set;
  for (auto* d : {&train_set, &test_set}) {
    const index_t n = d == &train_set ? 256 : 128;
    d->inputs = tensor<float>({n, rg_steps, rg_features});
    d->num_classes = 3;
    for (index_t i = 0; i < n; ++i) {
      const int label = static_cast<int>(gen.uniform() * 3) % 3;
      d->labels.push_back(label);
      for (index_t t = 0; t < rg_steps; ++t)
        for (index_t f = 0; f < rg_features; ++f)
          d->inputs[(i * rg_steps + t) * rg_features + f] = static_cast<float>(0.3 * gen.normal() + (f == label ? 1.0 : 0.0));
    }
  }
  auto g = deepiot::attach_gates(rg_bilstm<float>());
  deepiot::deepiot_options o;
  o.batch_size = 32;
  o.critic_lr = 3e-3;
  o.tau = {0.0, 0.1, 20, 0.6};
  o.stop = {0.01, 0.99, 20, 120};
  std::vector<deepiot::compress_check> checks;
  auto r = deepiot::compress(g, train_set, test_set, o, [&](const deepiot::compress_check& c) { checks.push_back(c); });
  REQUIRE(checks.size() >= 6);
  REQUIRE(r.probabilities.size() == 4);
  for (const auto& c : checks) {
    REQUIRE(c.kept.size() == 4);
    CHECK(c.fraction > 0);
    CHECK(c.fraction <= 1);
  }
  // The fraction counts the LSTM weights: with every unit kept it would be 1.
  const auto keep = deepiot::selection(g, r.probabilities, r.tau);
  index_t kept_total = 0;
  for (const auto& c : r.last.kept) kept_total += c;
  if (kept_total < 24) CHECK(r.last.fraction < 1);
  deepiot::harden(g, r.probabilities, r.tau, true);
  auto thinned = deepiot::thin(g);
  const train::cross_entropy<float> ce;
  CHECK(train::evaluate(thinned, test_set, ce).accuracy == train::evaluate(g.net, test_set, ce).accuracy);
  (void)keep;
}
