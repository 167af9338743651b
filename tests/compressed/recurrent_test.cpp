// Compressed LSTM / GRU / Bidirectional against the float layers they come from (same effective
// weights: masks on W_ih and W_hh), over stacked layers, both output modes, both directions, batch
// 1 and 5, odd sequence lengths (padded batches too), densities 100% / 30% / 3%, unit masks, the
// dense and the sparse engines; compress() on a nested model; typed errors; the fused gate pass
// on every instruction-set family the CPU runs, across vector widths (tails of 5 lanes) with
// saturated gates.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/vector_math.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/prune/transform.hpp"
#include "support/isa_families.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using kernels::isa;
using slimnet::testing::random_tensor;

namespace {

/// Keeps `density` of w's entries through a mask transform (the float layer multiplies by W * T).
template <class Scalar>
void rnn_test_prune(nn::parameter<Scalar>& w, double density, rng& gen) {
  tensor<Scalar> mask(w.shape());
  for (index_t i = 0; i < mask.size(); ++i) mask[i] = gen.uniform() < density ? Scalar(1) : Scalar(0);
  w.add_transform(std::make_shared<prune::mask_transform<Scalar>>(mask));
}

template <class Scalar, class Cell>
void rnn_test_prune_all(nn::recurrent<Scalar, Cell>& r, double density, rng& gen) {
  for (index_t l = 0; l < r.num_layers(); ++l) {
    rnn_test_prune(r.weight_ih(l), density, gen);
    rnn_test_prune(r.weight_hh(l), density, gen);
  }
}

/// Forward with the output poisoned by NaN first and the given lengths (null: all steps).
template <class Scalar>
tensor<Scalar> rnn_test_forward(nn::layer<Scalar>& l, const tensor<Scalar>& x, const std::vector<std::int32_t>* lengths) {
  tensor<Scalar> y(l.output_shape(x.shape()));
  for (index_t i = 0; i < y.size(); ++i) y[i] = std::numeric_limits<Scalar>::quiet_NaN();
  nn::forward_context ctx;
  ctx.lengths = lengths;
  l.forward(x, y, ctx);
  return y;
}

/// |a - b| <= tol (|b| + 0.05) elementwise (relative, absolute near 0), no NaN anywhere. Float: the
/// float layers' Eigen tanh / sigmoid (vectorised approximations of a few ulp, which differ between
/// AVX2 and AVX-512 builds) against the compressed gate pass's own, amplified over 6 steps of gates
/// saturated by weights scaled 6x: worst 1.04e-5 on an AVX2-only CPU (AMD EPYC), under 1e-5 on
/// AVX-512 (Zen 5); 3e-5 leaves room for other CPUs.
template <class Scalar>
void rnn_test_close(const tensor<Scalar>& a, const tensor<Scalar>& b, const std::string& what) {
  REQUIRE(a.shape() == b.shape());
  const double tol = std::is_same_v<Scalar, float> ? 3e-5 : 1e-12;
  double worst = 0;
  bool nan = false;
  for (index_t i = 0; i < a.size(); ++i) {
    nan = nan || std::isnan(double(a[i])) || std::isnan(double(b[i]));
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / (std::abs(double(b[i])) + 0.05));
  }
  INFO(what << ": worst relative difference " << worst);
  CHECK_FALSE(nan);
  CHECK(worst <= tol);
}

/// The lengths a batch of n sequences of t steps is tested with: all t, and (n > 1) a mix with an
/// empty one.
std::vector<std::vector<std::int32_t>> rnn_test_lengths(index_t n, index_t t) {
  std::vector<std::vector<std::int32_t>> out{std::vector<std::int32_t>(static_cast<std::size_t>(n), static_cast<std::int32_t>(t))};
  if (n > 1) {
    std::vector<std::int32_t> mixed;
    for (index_t p = 0; p < n; ++p) mixed.push_back(static_cast<std::int32_t>((p * 5 + 3) % (t + 1)));
    mixed[1] = 0;
    out.push_back(mixed);
  }
  return out;
}

template <class Scalar, class Cell>
void rnn_test_stack_matches(double density, bool force_sparse, index_t layers, nn::sequence_output output, bool reverse, rng& gen) {
  nn::recurrent_options o;
  o.num_layers = layers;
  o.output = output;
  o.reverse = reverse;
  nn::recurrent<Scalar, Cell> r(7, 13, o);
  r.reset_parameters(gen);
  rnn_test_prune_all(r, density, gen);
  nc::sparse_options so;
  so.force_sparse = force_sparse;
  for (index_t batch : {1, 5}) {
    so.batch = batch;
    so.steps = 9;
    std::vector<kernels::sparse_choice> choices;
    auto c = nc::to_sparse(r, so, &choices);
    REQUIRE(choices.size() == static_cast<std::size_t>(2 * layers));
    if (force_sparse) CHECK(c.describe().find("dense") == std::string::npos);
    auto blocked = c;  // input products over blocks of 2 steps (a block boundary inside every sequence)
    blocked.set_steps_per_block(2);
    // The same compressed layer over several shapes in turn: stale buffers would show.
    for (index_t t : {9, 1, 5}) {
      const tensor<Scalar> x = random_tensor<Scalar>({batch, t, 7}, gen);
      for (const auto& lengths : rnn_test_lengths(batch, t)) {
        const auto want = rnn_test_forward<Scalar>(r, x, &lengths);
        const auto got = rnn_test_forward<Scalar>(c, x, &lengths);
        rnn_test_close(got, want, c.describe());
        rnn_test_close(rnn_test_forward<Scalar>(blocked, x, &lengths), want, "blocks of 2 steps");
      }
      rnn_test_close(rnn_test_forward<Scalar>(c, x, nullptr), rnn_test_forward<Scalar>(r, x, nullptr), "no lengths");
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("compressed LSTM equals the masked float LSTM", "[compressed][recurrent]", float, double) {
  rng gen(21);
  for (double density : {1.0, 0.3, 0.03})
    for (bool force : {false, true})
      for (index_t layers : {1, 2})
        for (auto output : {nn::sequence_output::all_steps, nn::sequence_output::last_step})
          for (bool reverse : {false, true}) {
            INFO("density " << density << ", force_sparse " << force << ", layers " << layers << ", last_step "
                            << (output == nn::sequence_output::last_step) << ", reverse " << reverse);
            rnn_test_stack_matches<TestType, nn::lstm_cell>(density, force, layers, output, reverse, gen);
          }
}

TEMPLATE_TEST_CASE("compressed GRU equals the masked float GRU", "[compressed][recurrent]", float, double) {
  rng gen(22);
  for (double density : {1.0, 0.3, 0.03})
    for (bool force : {false, true})
      for (index_t layers : {1, 2})
        for (auto output : {nn::sequence_output::all_steps, nn::sequence_output::last_step})
          for (bool reverse : {false, true}) {
            INFO("density " << density << ", force_sparse " << force << ", layers " << layers << ", last_step "
                            << (output == nn::sequence_output::last_step) << ", reverse " << reverse);
            rnn_test_stack_matches<TestType, nn::gru_cell>(density, force, layers, output, reverse, gen);
          }
}

// The fused gate pass (AVX-512, float) walks 16 cells per vector with a masked tail: 37 units at
// batch 1 (16 + 16 + 5 lanes) and 21 sequences at batch 21 (16 + 5), mixed lengths so the active
// width B_t shrinks below 16 and through the tail, weights scaled so the gates saturate (|pre-
// activation| up to about 30, past the tanh clamp at 7.9), unit masks on; outputs poisoned first.
// The fused gate pass on every family this CPU runs (forced with set_isa: avx512 16 units per
// vector, avx2 8, portable the Eigen expressions; float only, double is always portable), at 37
// units (tails on both vector widths: 16 + 16 + 5, 4 x 8 + 5), 21 sequences, gates saturated,
// unit masks on; the path that ran is asserted through vector_math_path_calls.
TEMPLATE_TEST_CASE("compressed recurrent gate pass matches the float layers on every family, across vector widths and saturation",
                   "[compressed][recurrent][dispatch]", float, double) {
  slimnet::testing::isa_reset_guard guard;
  rng gen(27);
  nn::recurrent_options o;
  o.num_layers = 2;
  nn::lstm<TestType> lstm(9, 37, o);
  nn::gru<TestType> gru(9, 37, o);
  lstm.reset_parameters(gen);
  gru.reset_parameters(gen);
  auto scale = [](nn::recurrent_layer<TestType>& r) {
    r.visit_parameters([](nn::parameter<TestType>& p) {
      for (index_t i = 0; i < p.value().size(); ++i) p.value()[i] *= TestType(6);
    });
  };
  scale(lstm);
  scale(gru);
  rnn_test_prune_all(lstm, 0.5, gen);
  rnn_test_prune_all(gru, 0.5, gen);
  tensor<TestType> shared({37});
  for (index_t j = 0; j < 37; ++j) shared[j] = j % 5 == 1 ? TestType(0) : j % 7 == 3 ? TestType(0.5) : TestType(1);
  lstm.set_unit_mask(0, shared);
  gru.set_unit_mask(1, shared);
  for (index_t batch : {1, 21}) {
    const auto x = random_tensor<TestType>({batch, 6, 9}, gen, -3, 3);  // the same input for every family
    std::vector<std::int32_t> lengths;
    for (index_t p = 0; p < batch; ++p) lengths.push_back(static_cast<std::int32_t>(batch == 1 ? 6 : 1 + (p * 7) % 6));
    for (isa family : slimnet::testing::isa_families()) {
      kernels::set_isa(family);
      // The family the float gate pass takes (AVX2 / AVX-512 where compiled, else portable).
      const isa expected = std::is_same_v<TestType, float> ? slimnet::testing::x86_simd_expected(family) : isa::portable;
      nc::sparse_options so;
      so.batch = batch;
      so.steps = 6;
      auto cl = nc::to_sparse(lstm, so);
      auto cg = nc::to_sparse(gru, so);
      for (auto pair : {std::pair<nn::layer<TestType>*, nn::layer<TestType>*>{&lstm, &cl}, {&gru, &cg}}) {
        INFO("family " << kernels::isa_name(family) << ", batch " << batch << ", " << pair.second->describe());
        const auto want = rnn_test_forward<TestType>(*pair.first, x, &lengths);
        const auto avx2_before = kernels::vector_math_path_calls(isa::avx2),
                   avx512_before = kernels::vector_math_path_calls(isa::avx512);
        const auto got = rnn_test_forward<TestType>(*pair.second, x, &lengths);
        const auto ran = [&](isa f) {
          return kernels::vector_math_path_calls(f) - (f == isa::avx2 ? avx2_before : avx512_before);
        };
        for (isa simd : {isa::avx2, isa::avx512}) {
          // One gate pass per layer and step: 2 layers x 6 steps at least.
          if (simd == expected)
            CHECK(ran(simd) >= 12u);
          else
            CHECK(ran(simd) == 0u);
        }
        rnn_test_close(got, want, pair.second->describe());
        // Saturation reached: the GRU's h (a blend of tanh values) comes within 1e-2 of +-1; the
        // LSTM's h = sigma(o) tanh(c) needs two saturated factors and reaches 0.72-0.85 here.
        double largest = 0;
        for (index_t i = 0; i < want.size(); ++i) largest = std::max(largest, std::abs(double(want[i])));
        CHECK(largest > (pair.first == &gru ? 0.99 : 0.7));
        CHECK(largest <= 1.0);
      }
    }
  }
}

TEMPLATE_TEST_CASE("compressed recurrent layers apply the float layer's unit masks", "[compressed][recurrent]", float, double) {
  rng gen(23);
  nn::recurrent_options o;
  o.num_layers = 2;
  nn::lstm<TestType> lstm(6, 11, o);
  nn::gru<TestType> gru(6, 11, o);
  lstm.reset_parameters(gen);
  gru.reset_parameters(gen);
  rnn_test_prune_all(lstm, 0.3, gen);
  rnn_test_prune_all(gru, 0.3, gen);
  // Layer 0: one mask for all sequences (units 2 and 7 off, one at a keep probability); top
  // layer: one row per sequence (batch 3).
  tensor<TestType> shared({11});
  for (index_t j = 0; j < 11; ++j) shared[j] = j == 2 || j == 7 ? TestType(0) : j == 4 ? TestType(0.25) : TestType(1);
  tensor<TestType> per_sequence({3, 11});
  for (index_t i = 0; i < per_sequence.size(); ++i) per_sequence[i] = gen.uniform() < 0.5 ? TestType(0) : TestType(1);
  for (auto* r : std::initializer_list<nn::recurrent_layer<TestType>*>{&lstm, &gru}) {
    if (auto* l = dynamic_cast<nn::lstm<TestType>*>(r)) {
      l->set_unit_mask(0, shared);
      l->set_unit_mask(1, per_sequence);
    } else {
      auto* g = dynamic_cast<nn::gru<TestType>*>(r);
      g->set_unit_mask(0, shared);
      g->set_unit_mask(1, per_sequence);
    }
  }
  for (bool force : {false, true}) {
    nc::sparse_options so;
    so.force_sparse = force;
    so.batch = 3;
    auto cl = nc::to_sparse(lstm, so);
    auto cg = nc::to_sparse(gru, so);
    REQUIRE(cl.unit_mask(1) != nullptr);
    const auto x = random_tensor<TestType>({3, 8, 6}, gen);
    const std::vector<std::int32_t> lengths{8, 5, 7};
    for (auto pair : {std::pair<nn::layer<TestType>*, nn::layer<TestType>*>{&lstm, &cl}, {&gru, &cg}}) {
      const auto want = rnn_test_forward<TestType>(*pair.first, x, &lengths);
      const auto got = rnn_test_forward<TestType>(*pair.second, x, &lengths);
      rnn_test_close(got, want, pair.second->describe());
      // Masked units of the top layer output exactly 0.
      for (index_t n = 0; n < 3; ++n)
        for (index_t t = 0; t < 8; ++t)
          for (index_t j = 0; j < 11; ++j)
            if (per_sequence[n * 11 + j] == TestType(0)) REQUIRE(got[(n * 8 + t) * 11 + j] == TestType(0));
    }
    // Batch 1 with the rank-1 mask on the top layer too.
    cl.set_unit_mask(1, shared);
    lstm.set_unit_mask(1, shared);
    const auto x1 = random_tensor<TestType>({1, 5, 6}, gen);
    rnn_test_close(rnn_test_forward<TestType>(cl, x1, nullptr), rnn_test_forward<TestType>(lstm, x1, nullptr), "batch 1 masked");
    lstm.set_unit_mask(1, per_sequence);
  }
}

TEMPLATE_TEST_CASE("compressed Bidirectional equals the float Bidirectional", "[compressed][recurrent]", float, double) {
  rng gen(24);
  for (auto output : {nn::sequence_output::all_steps, nn::sequence_output::last_step}) {
    for (double density : {1.0, 0.3, 0.03}) {
      nn::recurrent_options o;
      o.num_layers = 2;
      o.output = output;
      nn::bidirectional<TestType> bl(nn::lstm<TestType>(5, 9, o), 3);
      nn::bidirectional<TestType> bg(nn::gru<TestType>(5, 9, o), 4);
      rnn_test_prune_all(bl.template forward_as<nn::lstm<TestType>>(), density, gen);
      rnn_test_prune_all(bl.template backward_as<nn::lstm<TestType>>(), density, gen);
      rnn_test_prune_all(bg.template forward_as<nn::gru<TestType>>(), density, gen);
      rnn_test_prune_all(bg.template backward_as<nn::gru<TestType>>(), density, gen);
      for (index_t batch : {1, 5}) {
        nc::sparse_options so;
        so.batch = batch;
        auto cl = nc::to_sparse(bl, so);
        auto cg = nc::to_sparse(bg, so);
        for (index_t t : {7, 3}) {
          const auto x = random_tensor<TestType>({batch, t, 5}, gen);
          for (const auto& lengths : rnn_test_lengths(batch, t)) {
            rnn_test_close(rnn_test_forward<TestType>(cl, x, &lengths), rnn_test_forward<TestType>(bl, x, &lengths), cl.describe());
            rnn_test_close(rnn_test_forward<TestType>(cg, x, &lengths), rnn_test_forward<TestType>(bg, x, &lengths), cg.describe());
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("compress converts recurrent layers in nested Sequentials", "[compressed][recurrent]", float, double) {
  rng gen(25);
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<TestType> inner;
  inner.add("bilstm", nn::bidirectional<TestType>(nn::lstm<TestType>(28, 16, o)));
  nn::sequential<TestType> model;
  model.add("gru", nn::gru<TestType>(28, 12, nn::recurrent_options{}));  // all steps, feeds the block
  model.add("block", std::move(inner));
  model.add("fc", nn::linear<TestType>(32, 10));
  model.reset_parameters(gen);
  model.visit_parameters([&](nn::parameter<TestType>& p) {
    if (p.value().rank() == 2) rnn_test_prune(p, 0.07, gen);
  });
  // The block's LSTM reads the GRU's 12 features: rebuild it with the right input size.
  nn::sequential<TestType> block;
  block.add("bilstm", nn::bidirectional<TestType>(nn::lstm<TestType>(12, 16, o)));
  block.reset_parameters(gen);
  block.visit_parameters([&](nn::parameter<TestType>& p) {
    if (p.value().rank() == 2) rnn_test_prune(p, 0.07, gen);
  });
  model.replace(1, std::make_unique<nn::sequential<TestType>>(std::move(block)));
  const auto x = random_tensor<TestType>({4, 28, 28}, gen);
  const auto want = rnn_test_forward<TestType>(model, x, nullptr);
  auto compressed = model;
  nc::compress_options co;
  co.sparse.batch = 4;
  co.input_shape = {4, 28, 28};
  const auto report = nc::compress(compressed, nc::format::sparse, co);
  REQUIRE(report.size() == 3);
  CHECK(report[0].rfind("gru: CompressedGRU(28, 12", 0) == 0);
  CHECK(report[1].rfind("block.bilstm: CompressedBidirectional(", 0) == 0);
  CHECK(report[1].find("l1 ih sparse") != std::string::npos);
  CHECK(report[2].rfind("fc: ", 0) == 0);
  CHECK(compressed[0].kind() == "CompressedGRU");
  rnn_test_close(rnn_test_forward<TestType>(compressed, x, nullptr), want, "compressed model");
  // Other formats leave recurrent layers float, saying so.
  auto as_int8 = model;
  const auto r8 = nc::compress(as_int8, nc::format::int8);
  CHECK(r8[0].find("kept (float") != std::string::npos);
  CHECK(as_int8[0].kind() == "GRU");
}

TEST_CASE("compressed recurrent layers reject bad shapes with typed errors", "[compressed][recurrent]") {
  rng gen(26);
  nn::lstm<float> lstm(6, 8, nn::recurrent_options{});
  auto c = nc::to_sparse(lstm);
  tensor<float> y;
  const auto wrong_features = random_tensor<float>({2, 5, 7}, gen);
  CHECK_THROWS_AS(c.forward(wrong_features, y, {}), shape_error);
  CHECK_THROWS_WITH(c.forward(wrong_features, y, {}), Catch::Contains("slimnet::nn::compressed::compressed_lstm::forward") &&
                           Catch::Contains("(2, 5, 7)"));
  const auto flat = random_tensor<float>({2, 6}, gen);
  CHECK_THROWS_AS(c.forward(flat, y, {}), shape_error);
  CHECK_THROWS_AS(c.set_unit_mask(0, tensor<float>({5})), shape_error);
  CHECK_THROWS_WITH(c.set_unit_mask(0, tensor<float>({5})), Catch::Contains("compressed_lstm::set_unit_mask"));
  c.set_unit_mask(0, tensor<float>({3, 8}));
  const auto x = random_tensor<float>({2, 5, 6}, gen);
  CHECK_THROWS_AS(c.forward(x, y, {}), shape_error);
  CHECK_THROWS_WITH(c.forward(x, y, {}), Catch::Contains("3 rows for a batch of 2"));
  nn::gru<float> gru(6, 8, nn::recurrent_options{});
  auto cg = nc::to_sparse(gru);
  const std::vector<std::int32_t> bad_lengths{5, 6};
  nn::forward_context ctx;
  ctx.lengths = &bad_lengths;
  CHECK_THROWS_AS(cg.forward(x, y, ctx), config_error);
  CHECK_THROWS_AS(cg.backward(x, y, y, nullptr), config_error);
  CHECK_THROWS_WITH(cg.backward(x, y, y, nullptr), Catch::Contains("compressed_gru::backward"));
  // Engines that do not fit the cell.
  auto three_gates = [] {
    std::vector<nc::compressed_lstm<float>::stacked> layers(1);
    layers[0].input = std::make_unique<nc::dense_engine<float>>(row_matrix<float>::Zero(24, 6), std::nullopt);  // 3 gates, not 4
    layers[0].recurrent = std::make_unique<nc::dense_engine<float>>(row_matrix<float>::Zero(24, 8), std::nullopt);
    return nc::compressed_lstm<float>(std::move(layers), nn::sequence_output::all_steps, false);
  };
  CHECK_THROWS_AS(three_gates(), shape_error);
  CHECK_THROWS_WITH(three_gates(), Catch::Contains("slimnet::nn::compressed::compressed_lstm") && Catch::Contains("do not fit 4 gates"));
}
