// Compressed recurrent layers for inference: an LSTM or GRU stack (nn::lstm / nn::gru) whose weight
// matrices live in engines (sparse or dense, chosen per matrix when converted, convert.hpp), and a
// bidirectional pair of them. They compute what the float layer computes with its effective
// weights, its unit masks and its per-sequence lengths; backward throws.
//
// Per stacked layer, with G gates (LSTM 4: i, f, g, o; GRU 3: r, z, n; the cell math of
// nn/lstm.hpp and nn/gru.hpp, not restated here):
//   input product, S steps at once:    A = W_ih X + b_a        X (F, S*N) -> A (G*H, S*N)
//   recurrent product, per step:       B_t = W_hh h_{t-1} + b_b                 (G*H, N)
//   one pass of gate arithmetic over [A_t; B_t] writes c_t and h_t (times the unit mask).
// LSTM: b_a = b_ih + b_hh and b_b = 0 (both add to every gate); GRU: b_a = b_ih and b_b = b_hh,
// since n = tanh(A_n + r * (W_hn h + b_hn)) needs b_hn inside the product with r.
// A sparse W_ih runs as one column-blocked CSR product over the T*N columns; a sparse W_hh as a
// SELL-16 (or 16-bit CSR) SpMV per step at batch 1 and a column-blocked CSR product over the N
// columns of h_{t-1} at larger batches.
//
// Layouts. Every layer's input sequence is (F, T*N), column t*N + p is step t of the p-th sequence
// in order of decreasing length (nn::detail::rnn::step_plan), stored in blocks of S steps (each
// block a contiguous (F, S*N) matrix): the input product runs block by block, so the block of A
// its steps read is still in L2 (at batch 64 and 512 gate rows, A of all 28 steps is 3.7 MB and
// reading it back from memory cost more than the products). Batch 1 ("rows"): A is turned to
// (S, G*H) after the product, step t's gates a contiguous vector, and the gate pass walks units.
// Batch N > 1 ("cols"): A stays (G*H, S*N), B_t and h are (., N), and the gate pass walks the first B_t columns (the sequences still running) in strips of 8 units.
// Sequences that have ended keep their state; their columns of B_t are computed and ignored.
// Buffers are kept between calls: no allocation per call once the shapes repeat.
//
// Gate pass. For float with AVX-512 it is one fused loop (detail::lstm_cells / gru_cells) over 16
// (unit, sequence) cells at a time: the gate pre-activations of A and B_t added, the sigmoids and
// tanhs (kernels/vector_math.hpp, <= 3e-7 from std::tanh), the cell and state updates, the unit
// mask and the copy into the layer's output sequence, all in registers, each operand read once.
// The Eigen expressions it replaces made one pass per gate over the strips (and wrote the
// activated gates back into A): 1.74 of 2.76 ms of a direction at batch 64 of the pruned Bi-LSTM.
// Otherwise (double, or no AVX-512) the Eigen expressions run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/vector_math.hpp"
#include "slimnet/nn/compressed/engine.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/recurrent.hpp"

namespace slimnet::nn::compressed {

namespace detail {

#if defined(SLIMNET_DISPATCH_X86)
#define SLIMNET_RNN_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_RNN_AVX2 SLIMNET_TARGET("avx2,fma")

/// Where the gate pass reads and writes: element (r, c) of gate q of a buffer is at
/// p + q * gate_stride + r * row_stride + c. Batch 1: one row of H units; batch N: H rows of the
/// first B_t sequences.
struct gate_grid {
  index_t rows, cols;
  const float* a;  ///< A_t: input-product gates (bias b_a included)
  index_t a_row, a_gate;
  const float* b;  ///< B_t: recurrent-product gates (bias b_b included)
  index_t b_row, b_gate;
  float* h;  ///< state h, updated in place (row stride s_row; c and the mask share it)
  float* c;  ///< LSTM cell state, updated in place; unused for a GRU
  const float* mask;  ///< unit mask or null
  index_t s_row;
  float* out;  ///< the layer's output sequence at this step, or null
  index_t out_row;
};

SLIMNET_RNN_AVX512 inline __mmask16 lanes_below(index_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

/// A_q + B_q of gate q at column j: the pre-activation of 16 units.
SLIMNET_RNN_AVX512 inline __m512 gate_sum16(__mmask16 k, const float* a, const float* b, const gate_grid& g, index_t q,
                                            index_t j) {
  return _mm512_add_ps(_mm512_maskz_loadu_ps(k, a + q * g.a_gate + j), _mm512_maskz_loadu_ps(k, b + q * g.b_gate + j));
}

/// LSTM (gates i, f, g, o of nn/lstm.hpp): c = sigma(f) c + sigma(i) tanh(g), h = sigma(o) tanh(c) m.
SLIMNET_RNN_AVX512 inline void lstm_cells(const gate_grid& g) {
  using kernels::sigmoid16;
  using kernels::tanh16;
  for (index_t r = 0; r < g.rows; ++r) {
    const float* a = g.a + r * g.a_row;
    const float* b = g.b + r * g.b_row;
    float* h = g.h + r * g.s_row;
    float* c = g.c + r * g.s_row;
    const float* m = g.mask ? g.mask + r * g.s_row : nullptr;
    float* o = g.out ? g.out + r * g.out_row : nullptr;
    for (index_t j = 0; j < g.cols; j += 16) {
      const __mmask16 k = lanes_below(g.cols - j);
      const __m512 gi = sigmoid16(gate_sum16(k, a, b, g, 0, j)), gf = sigmoid16(gate_sum16(k, a, b, g, 1, j)),
                   gg = tanh16(gate_sum16(k, a, b, g, 2, j)), go = sigmoid16(gate_sum16(k, a, b, g, 3, j));
      const __m512 cn = _mm512_fmadd_ps(gf, _mm512_maskz_loadu_ps(k, c + j), _mm512_mul_ps(gi, gg));
      __m512 hn = _mm512_mul_ps(go, tanh16(cn));
      if (m) hn = _mm512_mul_ps(hn, _mm512_maskz_loadu_ps(k, m + j));
      _mm512_mask_storeu_ps(c + j, k, cn);
      _mm512_mask_storeu_ps(h + j, k, hn);
      if (o) _mm512_mask_storeu_ps(o + j, k, hn);
    }
  }
}

/// GRU (gates r, z, n of nn/gru.hpp; B's n gate holds W_hn h + b_hn):
/// n = tanh(A_n + sigma(r) B_n), h = ((1 - sigma(z)) n + sigma(z) h) m.
SLIMNET_RNN_AVX512 inline void gru_cells(const gate_grid& g) {
  using kernels::sigmoid16;
  using kernels::tanh16;
  for (index_t r = 0; r < g.rows; ++r) {
    const float* a = g.a + r * g.a_row;
    const float* b = g.b + r * g.b_row;
    float* h = g.h + r * g.s_row;
    const float* m = g.mask ? g.mask + r * g.s_row : nullptr;
    float* o = g.out ? g.out + r * g.out_row : nullptr;
    for (index_t j = 0; j < g.cols; j += 16) {
      const __mmask16 k = lanes_below(g.cols - j);
      const __m512 gr = sigmoid16(_mm512_add_ps(_mm512_maskz_loadu_ps(k, a + j), _mm512_maskz_loadu_ps(k, b + j)));
      const __m512 gz = sigmoid16(_mm512_add_ps(_mm512_maskz_loadu_ps(k, a + g.a_gate + j), _mm512_maskz_loadu_ps(k, b + g.b_gate + j)));
      const __m512 gn = tanh16(_mm512_fmadd_ps(gr, _mm512_maskz_loadu_ps(k, b + 2 * g.b_gate + j), _mm512_maskz_loadu_ps(k, a + 2 * g.a_gate + j)));
      const __m512 hp = _mm512_maskz_loadu_ps(k, h + j);
      // (1 - z) n + z h = n + z (h - n)
      __m512 hn = _mm512_fmadd_ps(gz, _mm512_sub_ps(hp, gn), gn);
      if (m) hn = _mm512_mul_ps(hn, _mm512_maskz_loadu_ps(k, m + j));
      _mm512_mask_storeu_ps(h + j, k, hn);
      if (o) _mm512_mask_storeu_ps(o + j, k, hn);
    }
  }
}

namespace avx2 {

/// The AVX-512 gate passes on 8 units at a time (the last ones through a lane mask, never touching
/// memory past the row), with kernels::tanh8 / sigmoid8: the same formulas, products and sums in
/// the same order per unit.
SLIMNET_RNN_AVX2 inline __m256i lanes_below(index_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<index_t>(n, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// A_q + B_q of gate q at column j: the pre-activation of 8 units.
SLIMNET_RNN_AVX2 inline __m256 gate_sum8(__m256i k, const float* a, const float* b, const gate_grid& g, index_t q, index_t j) {
  return _mm256_add_ps(_mm256_maskload_ps(a + q * g.a_gate + j, k), _mm256_maskload_ps(b + q * g.b_gate + j, k));
}

SLIMNET_RNN_AVX2 inline void lstm_cells(const gate_grid& g) {
  using kernels::sigmoid8;
  using kernels::tanh8;
  for (index_t r = 0; r < g.rows; ++r) {
    const float* a = g.a + r * g.a_row;
    const float* b = g.b + r * g.b_row;
    float* h = g.h + r * g.s_row;
    float* c = g.c + r * g.s_row;
    const float* m = g.mask ? g.mask + r * g.s_row : nullptr;
    float* o = g.out ? g.out + r * g.out_row : nullptr;
    for (index_t j = 0; j < g.cols; j += 8) {
      const __m256i k = lanes_below(g.cols - j);
      const __m256 gi = sigmoid8(gate_sum8(k, a, b, g, 0, j)), gf = sigmoid8(gate_sum8(k, a, b, g, 1, j)),
                   gg = tanh8(gate_sum8(k, a, b, g, 2, j)), go = sigmoid8(gate_sum8(k, a, b, g, 3, j));
      const __m256 cn = _mm256_fmadd_ps(gf, _mm256_maskload_ps(c + j, k), _mm256_mul_ps(gi, gg));
      __m256 hn = _mm256_mul_ps(go, tanh8(cn));
      if (m) hn = _mm256_mul_ps(hn, _mm256_maskload_ps(m + j, k));
      _mm256_maskstore_ps(c + j, k, cn);
      _mm256_maskstore_ps(h + j, k, hn);
      if (o) _mm256_maskstore_ps(o + j, k, hn);
    }
  }
}

SLIMNET_RNN_AVX2 inline void gru_cells(const gate_grid& g) {
  using kernels::sigmoid8;
  using kernels::tanh8;
  for (index_t r = 0; r < g.rows; ++r) {
    const float* a = g.a + r * g.a_row;
    const float* b = g.b + r * g.b_row;
    float* h = g.h + r * g.s_row;
    const float* m = g.mask ? g.mask + r * g.s_row : nullptr;
    float* o = g.out ? g.out + r * g.out_row : nullptr;
    for (index_t j = 0; j < g.cols; j += 8) {
      const __m256i k = lanes_below(g.cols - j);
      const __m256 gr = sigmoid8(gate_sum8(k, a, b, g, 0, j)), gz = sigmoid8(gate_sum8(k, a, b, g, 1, j));
      const __m256 gn =
          tanh8(_mm256_fmadd_ps(gr, _mm256_maskload_ps(b + 2 * g.b_gate + j, k), _mm256_maskload_ps(a + 2 * g.a_gate + j, k)));
      const __m256 hp = _mm256_maskload_ps(h + j, k);
      // (1 - z) n + z h = n + z (h - n)
      __m256 hn = _mm256_fmadd_ps(gz, _mm256_sub_ps(hp, gn), gn);
      if (m) hn = _mm256_mul_ps(hn, _mm256_maskload_ps(m + j, k));
      _mm256_maskstore_ps(h + j, k, hn);
      if (o) _mm256_maskstore_ps(o + j, k, hn);
    }
  }
}

}  // namespace avx2
#endif

}  // namespace detail

/// What the bidirectional pair sees of a compressed LSTM or GRU.
template <class Scalar>
class compressed_recurrent_layer : public layer<Scalar> {
 public:
  virtual index_t input_size() const = 0;
  virtual index_t hidden_size(index_t l) const = 0;
  virtual index_t num_layers() const = 0;
  index_t output_size() const { return hidden_size(num_layers() - 1); }
  virtual sequence_output output() const = 0;
  virtual bool reversed() const = 0;
  /// Bytes of all weight matrices in their formats (biases excluded).
  virtual std::size_t bytes() const = 0;
  /// The forward pass writing row r of the output (r = sequence for last_step, sequence * T + step
  /// for all_steps) at y + r * row_stride, output_size() values, and nothing else: the bidirectional
  /// pair runs both directions into the two halves of one output. `lengths` may be null.
  virtual void run(const tensor<Scalar>& x, const std::vector<std::int32_t>* lengths, Scalar* y, index_t row_stride) = 0;
};

/// An LSTM (Cell = nn::lstm_cell) or GRU (nn::gru_cell) stack with compressed weight matrices.
template <class Scalar, class Cell>
class compressed_recurrent : public compressed_recurrent_layer<Scalar> {
  static_assert(std::is_same_v<Cell, lstm_cell> || std::is_same_v<Cell, gru_cell>,
                "compressed_recurrent runs the cells of nn/lstm.hpp and nn/gru.hpp only.");

 public:
  static constexpr index_t gates = Cell::gates;
  static constexpr bool is_lstm = std::is_same_v<Cell, lstm_cell>;

  /// One stacked layer: `input` holds W_ih (G*H x F) with bias b_a, `recurrent` holds W_hh
  /// (G*H x H) with bias b_b (see the header comment for which biases go where).
  struct stacked {
    std::unique_ptr<engine<Scalar>> input, recurrent;
  };

  compressed_recurrent(std::vector<stacked> layers, sequence_output output, bool reverse)
      : layers_(std::move(layers)), output_(output), reverse_(reverse) {
    const char* fn = name("");
    if (layers_.empty()) slimnet::detail::raise<config_error>(fn, "no stacked layers");
    for (std::size_t k = 0; k < layers_.size(); ++k) {
      const auto& s = layers_[k];
      if (!s.input || !s.recurrent) slimnet::detail::raise<config_error>(fn, "layer {} has a null engine", k);
      const index_t h = s.recurrent->in_features();
      if (h <= 0 || s.recurrent->out_features() != gates * h || s.input->out_features() != gates * h) {
        slimnet::detail::raise<shape_error>(fn, "layer {}: W_ih of {} rows and W_hh of {} x {} do not fit {} gates of {} units", k,
                                            s.input->out_features(), s.recurrent->out_features(), h, gates, h);
      }
      if (k > 0 && s.input->in_features() != hidden_size(static_cast<index_t>(k) - 1)) {
        slimnet::detail::raise<shape_error>(fn, "layer {} reads {} inputs but layer {} has {} units", k, s.input->in_features(), k - 1,
                                            hidden_size(static_cast<index_t>(k) - 1));
      }
    }
    masks_.resize(layers_.size());
  }
  compressed_recurrent(const compressed_recurrent& other)
      : compressed_recurrent_layer<Scalar>(other),
        output_(other.output_),
        reverse_(other.reverse_),
        steps_per_block_(other.steps_per_block_),
        masks_(other.masks_) {
    for (const auto& s : other.layers_) layers_.push_back({s.input->clone(), s.recurrent->clone()});
  }
  compressed_recurrent(compressed_recurrent&&) noexcept = default;

  std::string kind() const override { return is_lstm ? "CompressedLSTM" : "CompressedGRU"; }
  std::string describe() const override {
    std::string s = fmt::format("{}({}, {}", kind(), input_size(), hidden_size(0));
    for (index_t k = 1; k < num_layers(); ++k) s += fmt::format("/{}", hidden_size(k));
    if (num_layers() > 1) s += fmt::format(", num_layers={}", num_layers());
    if (output_ == sequence_output::last_step) s += ", output=last_step";
    if (reverse_) s += ", reverse";
    for (index_t k = 0; k < num_layers(); ++k) {
      const auto& l = layers_[static_cast<std::size_t>(k)];
      s += fmt::format("; l{} ih: {}, hh: {}", k, l.input->format(), l.recurrent->format());
    }
    return s + fmt::format(", {} bytes)", bytes());
  }

  index_t input_size() const override { return layers_.front().input->in_features(); }
  index_t hidden_size(index_t l) const override { return layers_.at(static_cast<std::size_t>(l)).recurrent->in_features(); }
  index_t num_layers() const override { return static_cast<index_t>(layers_.size()); }
  sequence_output output() const override { return output_; }
  bool reversed() const override { return reverse_; }
  std::size_t bytes() const override {
    std::size_t b = 0;
    for (const auto& l : layers_) b += l.input->bytes() + l.recurrent->bytes();
    return b;
  }
  const engine<Scalar>& input_weights(index_t l) const { return *layers_.at(static_cast<std::size_t>(l)).input; }
  const engine<Scalar>& recurrent_weights(index_t l) const { return *layers_.at(static_cast<std::size_t>(l)).recurrent; }

  /// The float layer's unit mask of stacked layer `l`: (H_l) for every sequence or (N, H_l), one
  /// row per sequence of every following batch; the masked units output exactly m * value.
  void set_unit_mask(index_t l, tensor<Scalar> mask) {
    const char* fn = name("set_unit_mask");
    if (l < 0 || l >= num_layers()) slimnet::detail::raise<config_error>(fn, "layer {} is outside [0, {})", l, num_layers());
    const index_t h = hidden_size(l);
    if (!((mask.rank() == 1 && mask.dim(0) == h) || (mask.rank() == 2 && mask.dim(1) == h))) {
      slimnet::detail::raise<shape_error>(fn, "mask of shape {} does not fit layer {} with {} hidden units: expected ({}) or (N, {})",
                                          shape_string(mask.shape()), l, h, h, h);
    }
    masks_[static_cast<std::size_t>(l)] = std::move(mask);
  }
  const tensor<Scalar>* unit_mask(index_t l) const {
    const auto& m = masks_.at(static_cast<std::size_t>(l));
    return m ? &*m : nullptr;
  }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 3 || in[2] != input_size()) {
      slimnet::detail::raise<shape_error>(name("forward"), "input of shape {} does not fit {}: expected (N, T, {})", shape_string(in),
                                          kind(), input_size());
    }
    if (output_ == sequence_output::last_step) return {in[0], this->output_size()};
    return {in[0], in[1], this->output_size()};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    run(x, ctx.lengths, y.data(), this->output_size());
  }

  /// Steps whose input product is computed at once: 0 (default) picks as many as keep A's block
  /// within 128 K values (512 KB of floats, resident in L2 while its steps run); tests set it low.
  void set_steps_per_block(index_t s) { steps_per_block_ = std::max<index_t>(0, s); }

  void run(const tensor<Scalar>& x, const std::vector<std::int32_t>* lengths, Scalar* y, index_t row_stride) override {
    using nn::detail::rnn::block;
    const char* fn = name("forward");
    output_shape(x.shape());
    const index_t n = x.dim(0), t_len = x.dim(1), f = x.dim(2), h_out = this->output_size();
    plan_.build(n, t_len, lengths, fn);
    // Rows the caller sees are zero unless written below (padded steps, empty sequences).
    const index_t out_rows = output_ == sequence_output::last_step ? n : n * t_len;
    for (index_t r = 0; r < out_rows; ++r) std::fill_n(y + r * row_stride, h_out, Scalar(0));
    const index_t run_steps = plan_.run, cols = run_steps * n;
    if (cols == 0) return;
    const bool rows_mode = n == 1;
    // Step blocks: steps [k S, min(T, (k+1) S)) of a (R, T*N) sequence buffer are one contiguous
    // (R, w_k) matrix at offset R k S N, w_k = its steps times N; column (t - k S) N + p of it is
    // step t of the p-th sequence. A block's input product runs at once, and its output stays in
    // cache while the block's steps read it.
    index_t widest = 0;
    for (index_t l = 0; l < num_layers(); ++l) widest = std::max(widest, gates * hidden_size(l));
    const index_t per_block =
        steps_per_block_ > 0 ? steps_per_block_ : std::max<index_t>(1, index_t{128 * 1024} / std::max<index_t>(1, widest * n));
    const index_t blocks = (run_steps + per_block - 1) / per_block;
    auto block_width = [&](index_t k) { return (std::min(run_steps, (k + 1) * per_block) - k * per_block) * n; };
    // Layer 0's input (F, T*N) in step blocks, 0 past each sequence's end; copied 16 features at a
    // time so both sides move whole cache lines.
    seq_[0].resize(static_cast<std::size_t>(f * cols));
    if (plan_.active.back() < n) std::fill(seq_[0].begin(), seq_[0].end(), Scalar(0));
    for (index_t k = 0; k < blocks; ++k) {
      in_pairs_.clear();
      for (index_t s = k * per_block; s < std::min(run_steps, (k + 1) * per_block); ++s) {
        for (index_t p = 0; p < plan_.active[static_cast<std::size_t>(s)]; ++p) {
          const index_t seq = plan_.order[static_cast<std::size_t>(p)];
          in_pairs_.push_back({(s - k * per_block) * n + p, x.data() + (seq * t_len + source_step(s, plan_.length_of_column(p))) * f});
        }
      }
      nn::detail::rnn::rows_to_columns(in_pairs_, f, seq_[0].data() + f * k * per_block * n, block_width(k));
    }
    const Scalar* in = seq_[0].data();
    index_t in_rows = f;
    for (index_t l = 0; l < num_layers(); ++l) {
      auto& w = layers_[static_cast<std::size_t>(l)];
      const index_t h = hidden_size(l), g = gates * h;
      const bool top = l + 1 == num_layers();
      const bool write_sequence = !top || output_ == sequence_output::all_steps;
      Scalar* out = nullptr;
      if (write_sequence) {
        auto& o = seq_[static_cast<std::size_t>((l + 1) % 2)];
        o.resize(static_cast<std::size_t>(h * cols));
        out = o.data();
      }
      state_.assign(static_cast<std::size_t>(h * n), Scalar(0));
      if (is_lstm) cell_.assign(static_cast<std::size_t>(h * n), Scalar(0));
      b_.resize(static_cast<std::size_t>(g * n));
      a_.resize(static_cast<std::size_t>(g * std::min(per_block, run_steps) * n));
      const Scalar* mask = prepare_mask(l, fn);
      const index_t us_n = rows_mode ? 1 : n;
      const index_t chunk = rows_mode ? h : nn::detail::rnn::unit_chunk;
      for (index_t k = 0; k < blocks; ++k) {
        const index_t t0 = k * per_block, wk = block_width(k);
        // A = W_ih X + b_a for the block's steps; at batch 1 turned to (steps, G*H), a step's
        // gates contiguous.
        if (rows_mode) {
          a_cols_.resize(static_cast<std::size_t>(g * wk));
          w.input->apply_cols(in + in_rows * t0 * n, wk, a_cols_.data());
          detail::transpose(a_cols_.data(), g, wk, a_.data());
        } else {
          w.input->apply_cols(in + in_rows * t0 * n, wk, a_.data());
        }
        Scalar* out_k = out ? out + h * t0 * n : nullptr;
        // Unit strides: rows mode walks units contiguously; cols mode steps over a row of the block.
        const index_t us_a = rows_mode ? 1 : wk;
        for (index_t t = t0; t < t0 + wk / n; ++t) {
          const index_t b = plan_.active[static_cast<std::size_t>(t)];
          w.recurrent->apply_cols(state_.data(), n, b_.data());
          Scalar* A = a_.data() + (rows_mode ? (t - t0) * g : (t - t0) * n);
          Scalar* O = out_k && !rows_mode ? out_k + (t - t0) * n : nullptr;
          bool fused = false;
#if defined(SLIMNET_DISPATCH_X86)
          // The fused gate pass on vector_math_path()'s family (counted in vector_math_path_calls).
          if constexpr (std::is_same_v<Scalar, float>) {
            const kernels::isa simd = kernels::vector_math_path();
            const detail::gate_grid grid{rows_mode ? 1 : h,  rows_mode ? h : b, A, us_a, h * us_a, b_.data(), us_n, h * us_n,
                                         state_.data(),      is_lstm ? cell_.data() : nullptr,   mask, us_n, O, us_a};
            if (simd == kernels::isa::avx512 || simd == kernels::isa::avx2) {
              const bool wide = simd == kernels::isa::avx512;
              if constexpr (is_lstm) {
                wide ? detail::lstm_cells(grid) : detail::avx2::lstm_cells(grid);
              } else {
                wide ? detail::gru_cells(grid) : detail::avx2::gru_cells(grid);
              }
              kernels::detail::count_path<kernels::detail::vector_math_tag>(simd);
              fused = true;
            }
          }
#endif
          for (index_t j = 0; !fused && j < h; j += chunk) {
            const index_t u = std::min(chunk, h - j);
            // (u units x b sequences) of a buffer whose unit stride is `us`, starting at unit j of gate q.
            auto at = [&](Scalar* base, index_t q, index_t us) {
              Scalar* p = base + (q * h + j) * us;
              return rows_mode ? block(p, 1, u, u) : block(p, u, b, us);
            };
            auto hv = at(state_.data(), 0, us_n);
            if constexpr (is_lstm) {
              auto gi = at(A, 0, us_a), gf = at(A, 1, us_a), gg = at(A, 2, us_a), go = at(A, 3, us_a);
              gi = nn::detail::rnn::sigmoid(gi + at(b_.data(), 0, us_n));
              gf = nn::detail::rnn::sigmoid(gf + at(b_.data(), 1, us_n));
              gg = (gg + at(b_.data(), 2, us_n)).tanh();
              go = nn::detail::rnn::sigmoid(go + at(b_.data(), 3, us_n));
              auto c = at(cell_.data(), 0, us_n);
              c = gf * c + gi * gg;
              if (mask) {
                hv = go * c.tanh() * at(const_cast<Scalar*>(mask), 0, us_n);
              } else {
                hv = go * c.tanh();
              }
            } else {
              auto gr = at(A, 0, us_a), gz = at(A, 1, us_a), gn = at(A, 2, us_a);
              gr = nn::detail::rnn::sigmoid(gr + at(b_.data(), 0, us_n));
              gz = nn::detail::rnn::sigmoid(gz + at(b_.data(), 1, us_n));
              gn = (gn + gr * at(b_.data(), 2, us_n)).tanh();
              if (mask) {
                hv = ((Scalar(1) - gz) * gn + gz * hv) * at(const_cast<Scalar*>(mask), 0, us_n);
              } else {
                hv = (Scalar(1) - gz) * gn + gz * hv;
              }
            }
            if (O) at(O, 0, us_a) = hv;
          }
          if (out_k && rows_mode) {  // column t - t0 of the block's (H, steps) sequence
            for (index_t j = 0; j < h; ++j) out_k[j * wk + (t - t0)] = state_[static_cast<std::size_t>(j)];
          }
        }
      }
      if (!top) {
        in = out;
        in_rows = h;
        continue;
      }
      // The caller's rows, in its order and time direction.
      if (output_ == sequence_output::last_step) {
        for (index_t p = 0; p < n; ++p) {
          const index_t seq = plan_.order[static_cast<std::size_t>(p)];
          if (plan_.length_of_column(p) == 0) continue;
          for (index_t j = 0; j < h; ++j) y[seq * row_stride + j] = state_[static_cast<std::size_t>(j * n + p)];
        }
      } else {
        for (index_t k = 0; k < blocks; ++k) {
          pairs_.clear();
          for (index_t s = k * per_block; s < std::min(run_steps, (k + 1) * per_block); ++s) {
            for (index_t p = 0; p < plan_.active[static_cast<std::size_t>(s)]; ++p) {
              const index_t seq = plan_.order[static_cast<std::size_t>(p)];
              pairs_.push_back({(s - k * per_block) * n + p, y + (seq * t_len + source_step(s, plan_.length_of_column(p))) * row_stride});
            }
          }
          nn::detail::rnn::columns_to_rows(pairs_, h, static_cast<const Scalar*>(out + h * k * per_block * n), block_width(k));
        }
      }
    }
  }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&, tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>(name("backward"), "{} is an inference-only layer: train the float layer and convert it again",
                                         kind());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<compressed_recurrent>(*this); }

 private:
  /// "slimnet::nn::compressed::compressed_lstm::forward" and the like, without allocating.
  static const char* name(const char* method) {
    const std::string_view m(method);
    if constexpr (is_lstm) {
      if (m == "forward") return "slimnet::nn::compressed::compressed_lstm::forward";
      if (m == "backward") return "slimnet::nn::compressed::compressed_lstm::backward";
      if (m == "set_unit_mask") return "slimnet::nn::compressed::compressed_lstm::set_unit_mask";
      return "slimnet::nn::compressed::compressed_lstm";
    } else {
      if (m == "forward") return "slimnet::nn::compressed::compressed_gru::forward";
      if (m == "backward") return "slimnet::nn::compressed::compressed_gru::backward";
      if (m == "set_unit_mask") return "slimnet::nn::compressed::compressed_gru::set_unit_mask";
      return "slimnet::nn::compressed::compressed_gru";
    }
  }
  index_t source_step(index_t s, index_t len) const { return reverse_ ? len - 1 - s : s; }

  /// The unit mask of layer l in the layout of the state (rows mode: (H); cols mode: (H, N) in
  /// column order), or null.
  const Scalar* prepare_mask(index_t l, const char* fn) {
    const auto& m = masks_[static_cast<std::size_t>(l)];
    if (!m) return nullptr;
    const index_t n = plan_.batch, h = hidden_size(l);
    if (m->rank() == 2 && m->dim(0) != n) {
      slimnet::detail::raise<shape_error>(fn, "unit mask of layer {} has {} rows for a batch of {} sequences", l, m->dim(0), n);
    }
    if (n == 1) return m->data();
    mask_.resize(static_cast<std::size_t>(h * n));
    for (index_t p = 0; p < n; ++p) {
      const index_t seq = plan_.order[static_cast<std::size_t>(p)];
      for (index_t j = 0; j < h; ++j) mask_[static_cast<std::size_t>(j * n + p)] = m->rank() == 1 ? (*m)[j] : (*m)[seq * h + j];
    }
    return mask_.data();
  }

  std::vector<stacked> layers_;
  sequence_output output_;
  bool reverse_;
  index_t steps_per_block_ = 0;
  std::vector<std::optional<tensor<Scalar>>> masks_;
  // Scratch kept between calls.
  nn::detail::rnn::step_plan plan_;
  std::vector<Scalar> seq_[2];              // a layer's input and output sequences (ping-pong)
  std::vector<Scalar> a_, a_cols_, b_, state_, cell_, mask_;
  std::vector<nn::detail::rnn::column_row<Scalar>> pairs_;
  std::vector<nn::detail::rnn::column_row<const Scalar>> in_pairs_;
};

template <class Scalar>
using compressed_lstm = compressed_recurrent<Scalar, lstm_cell>;
template <class Scalar>
using compressed_gru = compressed_recurrent<Scalar, gru_cell>;

/// nn::bidirectional with compressed directions: both run into the two halves of one output,
/// (N, T, H_f + H_b) or (N, H_f + H_b), forward direction first.
template <class Scalar>
class compressed_bidirectional : public layer<Scalar> {
 public:
  using direction_ptr = std::unique_ptr<compressed_recurrent_layer<Scalar>>;

  compressed_bidirectional(direction_ptr forward, direction_ptr backward) : forward_(std::move(forward)), backward_(std::move(backward)) {
    constexpr const char* fn = "slimnet::nn::compressed::compressed_bidirectional";
    if (!forward_ || !backward_) slimnet::detail::raise<config_error>(fn, "a direction is null");
    if (forward_->reversed() || !backward_->reversed()) {
      slimnet::detail::raise<config_error>(fn, "expected a forward and a reversed layer, got {} and {}", forward_->kind(),
                                           backward_->kind());
    }
    if (forward_->output() != backward_->output() || forward_->input_size() != backward_->input_size()) {
      slimnet::detail::raise<config_error>(fn, "directions of {} and {} inputs differ in input size or output mode",
                                           forward_->input_size(), backward_->input_size());
    }
  }
  compressed_bidirectional(const compressed_bidirectional& other)
      : layer<Scalar>(other), forward_(copy_of(*other.forward_)), backward_(copy_of(*other.backward_)) {}
  compressed_bidirectional(compressed_bidirectional&&) noexcept = default;

  compressed_recurrent_layer<Scalar>& forward_layer() { return *forward_; }
  compressed_recurrent_layer<Scalar>& backward_layer() { return *backward_; }
  std::size_t bytes() const { return forward_->bytes() + backward_->bytes(); }

  std::string kind() const override { return "CompressedBidirectional"; }
  std::string describe() const override {
    return fmt::format("CompressedBidirectional(forward {}; backward {})", forward_->describe(), backward_->describe());
  }
  shape_t output_shape(const shape_t& in) const override {
    shape_t out = forward_->output_shape(in);
    out.back() += backward_->output_size();
    return out;
  }
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const index_t hf = forward_->output_size(), width = hf + backward_->output_size();
    forward_->run(x, ctx.lengths, y.data(), width);
    backward_->run(x, ctx.lengths, y.data() + hf, width);
  }
  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&, tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::nn::compressed::compressed_bidirectional::backward",
                                         "an inference-only layer: train the float layer and convert it again");
  }
  void visit_layers(const typename layer<Scalar>::layer_visitor& visit) override {
    visit(*this);
    forward_->visit_layers(visit);
    backward_->visit_layers(visit);
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<compressed_bidirectional>(*this); }
  void set_name(const std::string& name) override {
    layer<Scalar>::set_name(name);
    forward_->set_name(name);
    backward_->set_name(name);
  }

 private:
  static direction_ptr copy_of(const compressed_recurrent_layer<Scalar>& l) {
    return direction_ptr(static_cast<compressed_recurrent_layer<Scalar>*>(l.clone().release()));
  }
  direction_ptr forward_, backward_;
};

}  // namespace slimnet::nn::compressed
