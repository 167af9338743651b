// DyNS-Ext: DNS on exactly the recurrent matrices and Linear weights of a model (any nesting),
// training through train::fit with the masks held, finish baking W * T and removing the dead
// hidden units without changing the outputs (zero biases: exact), the report, and errors.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/train.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace dyns_ext_testing {

template <class Scalar>
std::set<std::string> pruned_names(nn::layer<Scalar>& m) {
  std::set<std::string> out;
  m.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (prune::is_pruned(p)) out.insert(p.name());
  });
  return out;
}

/// Forward on (N, T, F) with per-sequence lengths, the output poisoned with NaN first.
template <class Scalar>
tensor<Scalar> forward_lengths(nn::layer<Scalar>& m, const tensor<Scalar>& x, const std::vector<std::int32_t>& lengths) {
  tensor<Scalar> y(m.output_shape(x.shape()));
  for (index_t i = 0; i < y.size(); ++i) y[i] = std::numeric_limits<Scalar>::quiet_NaN();
  nn::forward_context ctx;
  ctx.lengths = &lengths;
  m.forward(x, y, ctx);
  return y;
}

/// Bi-LSTM (2 stacked layers of 6 per direction, last step) -> Linear(12, 3), nested in a block.
template <class Scalar>
nn::sequential<Scalar> nested_bilstm(rng& gen) {
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<Scalar> block;
  block.add("bilstm", nn::bidirectional<Scalar>(nn::lstm<Scalar>(4, 6, o), 5));
  nn::sequential<Scalar> m;
  m.add("block", std::move(block));
  m.add("fc", nn::linear<Scalar>(12, 3));
  m.reset_parameters(gen);
  return m;
}

template <class Scalar>
data::dataset<Scalar> random_sequences(index_t n, index_t steps, index_t features, rng& gen) {
  data::dataset<Scalar> d;
  d.num_classes = 3;
  d.inputs = testing::random_tensor<Scalar>({n, steps, features}, gen);
  for (index_t i = 0; i < n; ++i) d.labels.push_back(static_cast<std::int32_t>(i % 3));
  return d;
}

}  // namespace dyns_ext_testing

TEST_CASE("DyNS-Ext attaches DNS to exactly the recurrent matrices and Linear weights", "[prune][dyns_ext]") {
  rng gen(3);
  SECTION("LSTM stack") {
    nn::recurrent_options o;
    o.num_layers = 3;
    o.output = nn::sequence_output::last_step;
    nn::sequential<float> m;
    m.add("lstm", nn::lstm<float>(4, 5, o));
    m.add("fc", nn::linear<float>(5, 2));
    m.reset_parameters(gen);
    auto run = prune::attach_dyns_ext(m, {});
    CHECK(dyns_ext_testing::pruned_names(m) == std::set<std::string>{"lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1",
                                                                      "lstm.weight_hh_l1", "lstm.weight_ih_l2", "lstm.weight_hh_l2",
                                                                      "fc.weight"});
    CHECK(run.entries().size() == 7);
    CHECK(run.total() == 4 * 5 * (4 + 5) + 2 * 4 * 5 * (5 + 5) + 5 * 2);
    REQUIRE(run.layers().size() == 4);
    CHECK(run.layers()[0].name == "lstm.l0");
    CHECK(run.layers()[2].name == "lstm.l2");
    CHECK(run.layers()[3].name == "fc");
    CHECK(run.layers()[3].units_before == 2);
    // Per kind c-rates, matrix seeds seed + k in visiting order, biases never masked.
    for (std::size_t k = 0; k < run.entries().size(); ++k) {
      const auto& e = run.entries()[k];
      CHECK(e.group->options().c_rate == (e.recurrent ? 3.0 : 1.0));
      CHECK(e.group->options().seed == 1 + k);
      CHECK_FALSE(e.group->options().include_bias);
    }
  }
  SECTION("Bi-LSTM nested in a Sequential; plain DyNS leaves the recurrent matrices dense") {
    auto m = dyns_ext_testing::nested_bilstm<float>(gen);
    prune::dyns_ext_options o;
    o.prune_recurrent = false;
    {
      auto copy = m;
      auto run = prune::attach_dyns_ext(copy, o);
      CHECK(dyns_ext_testing::pruned_names(copy) == std::set<std::string>{"fc.weight"});
      CHECK(run.layers().size() == 5);  // 2 layers x 2 directions + fc
    }
    o.prune_recurrent = true;
    o.prune_linear = false;
    auto run = prune::attach_dyns_ext(m, o);
    std::set<std::string> want;
    for (const char* d : {"", "_reverse"})
      for (const char* k : {"ih_l0", "hh_l0", "ih_l1", "hh_l1"}) want.insert(std::string("block.bilstm.weight_") + k + d);
    CHECK(dyns_ext_testing::pruned_names(m) == want);
    CHECK(run.layers()[1].name == "block.bilstm.l1");
    CHECK(run.layers()[3].name == "block.bilstm.l1_reverse");
  }
  SECTION("GRU") {
    nn::recurrent_options o;
    o.num_layers = 2;
    o.output = nn::sequence_output::last_step;
    nn::sequential<float> m;
    m.add("gru", nn::gru<float>(3, 4, o));
    m.add("relu", nn::relu<float>());
    m.add("fc", nn::linear<float>(4, 2));
    m.reset_parameters(gen);
    auto run = prune::attach_dyns_ext(m, {});
    CHECK(dyns_ext_testing::pruned_names(m) ==
          std::set<std::string>{"gru.weight_ih_l0", "gru.weight_hh_l0", "gru.weight_ih_l1", "gru.weight_hh_l1", "fc.weight"});
    CHECK(run.total() == 3 * 4 * (3 + 4) + 3 * 4 * (4 + 4) + 4 * 2);
  }
  SECTION("Linear only (an MLP)") {
    nn::sequential<float> m;
    m.add("fc1", nn::linear<float>(6, 5));
    m.add("relu", nn::relu<float>());
    m.add("fc2", nn::linear<float>(5, 2));
    m.reset_parameters(gen);
    prune::attach_dyns_ext(m, {});
    CHECK(dyns_ext_testing::pruned_names(m) == std::set<std::string>{"fc1.weight", "fc2.weight"});
  }
}

TEMPLATE_TEST_CASE("DyNS-Ext masks follow each matrix's own DNS thresholds", "[prune][dyns_ext]", float, double) {
  rng gen(5);
  auto m = dyns_ext_testing::nested_bilstm<TestType>(gen);
  prune::dyns_ext_options o;
  o.recurrent_c_rate = 0.5;
  o.linear_c_rate = -0.5;
  auto run = prune::attach_dyns_ext(m, o);
  index_t kept = 0;
  for (const auto& e : run.entries()) {
    const auto th = prune::dns_compute_thresholds(e.group->options(), e.parameter->value());
    CHECK(e.group->thresholds().a == Approx(th.a));
    const auto mask = prune::mask_of(*e.parameter);
    for (index_t i = 0; i < mask.size(); ++i) {
      const double w = std::abs(static_cast<double>(e.parameter->value()[i]));
      CHECK(mask[i] == (w > th.a ? TestType(1) : TestType(0)));  // first surgery: a fresh all-ones mask
      kept += mask[i] != TestType(0) ? 1 : 0;
    }
  }
  CHECK(run.kept() == kept);
  CHECK(kept < run.total());
  CHECK(kept > 0);
}

TEMPLATE_TEST_CASE("DyNS-Ext finish bakes W * T after training and removes dead units without changing outputs",
                   "[prune][dyns_ext]", float, double) {
  rng gen(7);
  auto m = dyns_ext_testing::nested_bilstm<TestType>(gen);
  // Zero biases make every removal exact, so outputs must match to rounding.
  m.visit_parameters([](nn::parameter<TestType>& p) {
    if (p.local_name().rfind("bias", 0) == 0) p.value().flat().setZero();
  });
  auto& bi = dynamic_cast<nn::bidirectional<TestType>&>(m.find("block.bilstm"));
  auto& fwd = bi.template forward_as<nn::lstm<TestType>>();
  auto& bwd = bi.template backward_as<nn::lstm<TestType>>();
  // Dead by construction: forward layer 0 unit 1 (no incoming weights in any gate) and reverse
  // top unit 4 (read neither by fc nor by its own layer).
  for (index_t g = 0; g < 4; ++g) {
    fwd.weight_ih(0).value().matrix().row(g * 6 + 1).setZero();
    fwd.weight_hh(0).value().matrix().row(g * 6 + 1).setZero();
  }
  dynamic_cast<nn::linear<TestType>&>(m.find("fc")).weight().value().matrix().col(6 + 4).setZero();
  bwd.weight_hh(1).value().matrix().col(4).setZero();

  prune::dyns_ext_options o;
  o.recurrent_c_rate = 0.3;
  o.linear_c_rate = 0.0;
  o.gamma = 0.0;  // surgery at every step: masks move with the weights
  auto run = prune::attach_dyns_ext(m, o);
  const index_t before_training = run.kept();
  rng data_gen(8);
  auto data = dyns_ext_testing::random_sequences<TestType>(48, 5, 4, data_gen);
  train::adam<TestType> opt(train::adam_options{}.with_lr(0.05));
  train::fit_options fo;
  fo.epochs = 2;
  fo.batch_size = 16;
  fo.progress = false;
  train::fit(m, opt, train::cross_entropy<TestType>(), data, fo);
  // Pruned entries kept learning (W differs from W * T) and surgery changed the masks.
  std::vector<tensor<TestType>> raw, masked;
  bool pruned_weights_moved = false;
  for (const auto& e : run.entries()) {
    raw.push_back(e.parameter->value());
    masked.push_back(prune::masked_weight(*e.parameter));
    for (index_t i = 0; i < raw.back().size(); ++i) pruned_weights_moved |= masked.back()[i] == 0 && raw.back()[i] != 0;
  }
  CHECK(pruned_weights_moved);
  CHECK(run.kept() != before_training);

  SECTION("bake only: every matrix equals its W * T, the masks are gone") {
    const auto r = run.finish(m, {/*remove_dead_units*/ false});
    CHECK(dyns_ext_testing::pruned_names(m).empty());
    index_t kept = 0;
    for (std::size_t k = 0; k < r.matrices.size(); ++k) {
      const auto& e = r.matrices[k];
      nn::parameter<TestType>* p = nullptr;
      m.visit_parameters([&](nn::parameter<TestType>& q) {
        if (q.name() == e.name) p = &q;
      });
      REQUIRE(p != nullptr);
      REQUIRE(p->size() == masked[k].size());
      for (index_t i = 0; i < p->size(); ++i) CHECK(p->value()[i] == masked[k][i]);
      CHECK(e.kept == (masked[k].flat().array() != TestType(0)).count());
      kept += e.kept;
    }
    CHECK(r.weights_kept == kept);
    CHECK(r.units_removed == 0);
    CHECK(r.layers[0].units_after == 6);
  }
  SECTION("bake and thin: dead units removed, the same outputs on sequences of different lengths") {
    // Training may have spliced the zeroed connections back in: cut them again in W (the masks
    // stay), so at least these two units are dead after baking.
    for (index_t g = 0; g < 4; ++g) {
      fwd.weight_ih(0).value().matrix().row(g * 6 + 1).setZero();
      fwd.weight_hh(0).value().matrix().row(g * 6 + 1).setZero();
    }
    dynamic_cast<nn::linear<TestType>&>(m.find("fc")).weight().value().matrix().col(6 + 4).setZero();
    bwd.weight_hh(1).value().matrix().col(4).setZero();
    m.visit_parameters([](nn::parameter<TestType>& p) {  // trained biases: zero again, so removal is exact
      if (p.local_name().rfind("bias", 0) == 0) p.value().flat().setZero();
    });
    auto baked = m;  // a copy with its own masks
    prune::remove_all(baked);
    rng xg(9);
    const auto x = testing::random_tensor<TestType>({6, 7, 4}, xg);
    const std::vector<std::int32_t> lengths{7, 1, 4, 6, 2, 3};
    const auto y0 = dyns_ext_testing::forward_lengths(baked, x, lengths);

    const index_t total = run.total();
    const auto r = run.finish(m);
    CHECK(r.units_removed >= 2);
    auto& t = dynamic_cast<nn::bidirectional<TestType>&>(m.find("block.bilstm"));
    REQUIRE(r.layers.size() == 5);
    CHECK(r.layers[0].name == "block.bilstm.l0");
    CHECK(r.layers[0].units_after == t.forward_layer().hidden_size(0));
    CHECK(r.layers[0].units_after <= 5);
    CHECK(r.layers[3].name == "block.bilstm.l1_reverse");
    CHECK(r.layers[3].units_after == t.backward_layer().hidden_size(1));
    CHECK(r.layers[3].units_after <= 5);
    index_t removed = 0;
    for (const auto& l : r.layers) removed += l.units_before - l.units_after;
    CHECK(removed == r.units_removed);
    index_t nonzeros = 0;
    m.visit_parameters([&](nn::parameter<TestType>& p) {
      if (p.value().rank() == 2) nonzeros += (p.value().flat().array() != TestType(0)).count();
    });
    CHECK(r.weights_kept == nonzeros);
    CHECK(r.weights_before == total);
    CHECK(r.kept_fraction() == Approx(static_cast<double>(nonzeros) / static_cast<double>(r.weights_before)));
    testing::check_close(y0, dyns_ext_testing::forward_lengths(m, x, lengths), 1e-5);
  }
}

TEST_CASE("DyNS-Ext errors", "[prune][dyns_ext]") {
  rng gen(11);
  auto m = dyns_ext_testing::nested_bilstm<float>(gen);
  SECTION("bad options") {
    prune::dyns_ext_options o;
    o.recurrent_c_rate = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(prune::attach_dyns_ext(m, o), config_error);
    CHECK_THROWS_WITH(prune::attach_dyns_ext(m, o), Contains("attach_dyns_ext") && Contains("c_rate"));
    o = {};
    o.prune_linear = o.prune_recurrent = false;
    CHECK_THROWS_AS(prune::attach_dyns_ext(m, o), config_error);
    CHECK_THROWS_WITH(prune::attach_dyns_ext(m, o), Contains("nothing to prune"));
    o = {};
    o.gamma = -1;
    CHECK_THROWS_AS(prune::attach_dyns_ext(m, o), config_error);
    CHECK(dyns_ext_testing::pruned_names(m).empty());
  }
  SECTION("no matrix of the requested kind") {
    nn::sequential<float> mlp;
    mlp.add("fc", nn::linear<float>(3, 2));
    mlp.reset_parameters(gen);
    prune::dyns_ext_options o;
    o.prune_linear = false;
    CHECK_THROWS_AS(prune::attach_dyns_ext(mlp, o), config_error);
    CHECK_THROWS_WITH(prune::attach_dyns_ext(mlp, o), Contains("no recurrent weight matrix"));
  }
  SECTION("a matrix already pruned: nothing attached") {
    prune::l1_unstructured(prune::find_parameter(m, "fc.weight"), prune::amount::sparsity(0.5));
    CHECK_THROWS_AS(prune::attach_dyns_ext(m, {}), config_error);
    CHECK_THROWS_WITH(prune::attach_dyns_ext(m, {}), Contains("fc.weight") && Contains("already"));
    CHECK(dyns_ext_testing::pruned_names(m) == std::set<std::string>{"fc.weight"});
  }
  SECTION("finish twice, on another model, or after the mask was removed") {
    auto other = m;
    auto run = prune::attach_dyns_ext(m, {});
    CHECK_THROWS_AS(run.finish(other), shape_error);
    CHECK_THROWS_WITH(run.finish(other), Contains("finish") && Contains("not in this model"));
    prune::remove(prune::find_parameter(m, "fc.weight"));
    CHECK_THROWS_AS(run.finish(m), config_error);
    CHECK_THROWS_WITH(run.finish(m), Contains("fc.weight") && Contains("DNS mask"));
    auto m2 = dyns_ext_testing::nested_bilstm<float>(gen);
    auto run2 = prune::attach_dyns_ext(m2, {});
    run2.finish(m2);
    CHECK_THROWS_AS(run2.finish(m2), config_error);
    CHECK_THROWS_WITH(run2.finish(m2), Contains("already finished"));
    CHECK_THROWS_AS(run2.kept(), config_error);
  }
}
