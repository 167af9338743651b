// The compressed LSTM / GRU fused gate pass on every family this CPU can run (forced with
// set_isa: avx512 16 units per vector, avx2 8, portable the Eigen expressions), against the float
// layers, at widths with tails on both vector sizes (37 units: 16 + 16 + 5 and 4 x 8 + 5; 21
// sequences), gates saturated and unit masks on, outputs poisoned with NaN; and the path that ran
// (vector_math_path_calls counts the fused gate passes).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/vector_math.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/prune/transform.hpp"
#include "support/isa_families.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using kernels::isa;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::random_tensor;
using rnn_dispatch_isa_guard = slimnet::testing::isa_reset_guard;

namespace {

/// Weights scaled 6x (gates saturate) and half of W_ih, W_hh masked away.
void rnn_dispatch_prepare(nn::recurrent_layer<float>& r, rng& gen) {
  r.visit_parameters([&](nn::parameter<float>& p) {
    for (index_t i = 0; i < p.value().size(); ++i) p.value()[i] *= 6.0f;
    if (p.shape().size() != 2) return;  // biases stay dense
    tensor<float> mask(p.shape());
    for (index_t i = 0; i < mask.size(); ++i) mask[i] = gen.uniform() < 0.5 ? 1.0f : 0.0f;
    p.add_transform(std::make_shared<prune::mask_transform<float>>(mask));
  });
}

tensor<float> rnn_dispatch_forward(nn::layer<float>& l, const tensor<float>& x, const std::vector<std::int32_t>& lengths) {
  tensor<float> y(l.output_shape(x.shape()));
  for (index_t i = 0; i < y.size(); ++i) y[i] = std::numeric_limits<float>::quiet_NaN();
  nn::forward_context ctx;
  ctx.lengths = &lengths;
  l.forward(x, y, ctx);
  return y;
}

}  // namespace

TEST_CASE("compressed LSTM / GRU gate pass: every family the CPU has matches the float layers",
          "[compressed][recurrent][dispatch]") {
  rnn_dispatch_isa_guard guard;
  rng gen(1931);
  nn::recurrent_options o;
  o.num_layers = 2;
  nn::lstm<float> lstm(9, 37, o);
  nn::gru<float> gru(9, 37, o);
  lstm.reset_parameters(gen);
  gru.reset_parameters(gen);
  rnn_dispatch_prepare(lstm, gen);
  rnn_dispatch_prepare(gru, gen);
  tensor<float> units({37});
  for (index_t j = 0; j < 37; ++j) units[j] = j % 5 == 1 ? 0.0f : j % 7 == 3 ? 0.5f : 1.0f;
  lstm.set_unit_mask(1, units);
  gru.set_unit_mask(0, units);
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    const bool simd = family == isa::avx2 || family == isa::avx512;
#if !defined(SLIMNET_DISPATCH_X86)
    CHECK_FALSE(simd);
#endif
    for (index_t batch : {1, 21}) {
      nc::sparse_options so;
      so.batch = batch;
      so.steps = 6;
      auto cl = nc::to_sparse(lstm, so);
      auto cg = nc::to_sparse(gru, so);
      const auto x = random_tensor<float>({batch, 6, 9}, gen, -3, 3);
      std::vector<std::int32_t> lengths;
      for (index_t p = 0; p < batch; ++p) lengths.push_back(static_cast<std::int32_t>(batch == 1 ? 6 : 1 + (p * 7) % 6));
      for (auto pair : {std::pair<nn::layer<float>*, nn::layer<float>*>{&lstm, &cl}, {&gru, &cg}}) {
        INFO("family " << kernels::isa_name(family) << ", batch " << batch << ", " << pair.second->describe());
        const auto want = rnn_dispatch_forward(*pair.first, x, lengths);
        const auto avx2_calls = kernels::vector_math_path_calls(isa::avx2),
                   avx512_calls = kernels::vector_math_path_calls(isa::avx512);
        const auto got = rnn_dispatch_forward(*pair.second, x, lengths);
        // One gate pass per layer and step: 2 layers x 6 steps at least (batch 1: every step).
        const auto ran = [&](isa f) { return kernels::vector_math_path_calls(f) - (f == isa::avx2 ? avx2_calls : avx512_calls); };
        if (family != isa::avx2) CHECK(ran(isa::avx2) == 0u);
        if (family != isa::avx512) CHECK(ran(isa::avx512) == 0u);
        if (simd) CHECK(ran(family) >= 12u);
        // Relative to |want| + 0.05, as the recurrent tests: Eigen's tanh against the gate pass's.
        double worst = 0;
        bool nan = false;
        for (index_t i = 0; i < want.size(); ++i) {
          nan = nan || std::isnan(got[i]) || std::isnan(want[i]);
          worst = std::max(worst, std::abs(double(got[i]) - double(want[i])) / (std::abs(double(want[i])) + 0.05));
        }
        INFO("worst relative difference " << worst);
        CHECK_FALSE(nan);
        CHECK(worst <= 3e-5);
      }
    }
  }
}
