// Recurrent layers over batches of sequences: what LSTM and GRU share. Input (N, T, F) with
// per-sequence lengths (forward_context::lengths), output every step (N, T, H) or the last valid
// step (N, H); stacked layers; forward or reversed direction; DeepIoT unit masks; thinning.
//
// Semantics (PyTorch's packed sequences): sequence n runs over its valid steps 0..L_n-1 only
// (L_n-1..0 in the reversed direction). Padded steps neither update the state nor produce output
// (their output is 0) and get no gradient; the "last step" is the state after the last valid step.
//
// Internal layout. Every buffer is feature-major and time-major: column t*N + p holds step t (in
// the direction of processing) of the p-th sequence in order of decreasing length, so at step t
// the sequences still running are the first B_t columns (PyTorch's packing without the packing).
// Per step the recurrent product  gates(G*H, B_t) += W_hh (G*H, H) h_{t-1}(H, B_t)  reads W_hh in
// place (the GEMM packs only the small h panel), and the gate nonlinearities run along contiguous
// batch strips. The input projection of all steps is one GEMM before the time loop; the weight
// gradients are one GEMM each after the backward loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/eigen.hpp"

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/nn/init.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/unit_mask.hpp"

namespace slimnet::nn {

/// What a recurrent layer returns: every step (N, T, H), or the state after each sequence's last
/// valid step (N, H) (for the reversed direction: after step 0, PyTorch's h_n).
enum class sequence_output { all_steps, last_step };

struct recurrent_options {
  index_t num_layers = 1;                               ///< stacked layers, each feeding the next
  sequence_output output = sequence_output::all_steps;  ///< of the last stacked layer
  bool reverse = false;                                 ///< run over each sequence's valid steps from last to first
  bool bias = true;                                     ///< bias_ih and bias_hh (PyTorch keeps both)

  void validate(const char* function) const {
    if (num_layers <= 0) slimnet::detail::raise<config_error>(function, "num_layers = {} must be positive", num_layers);
  }
};

/// The interface the bidirectional wrapper and compression code see of LSTM and GRU.
template <class Scalar>
class recurrent_layer : public layer<Scalar> {
 public:
  virtual index_t input_size() const = 0;
  /// Hidden units of stacked layer `l` (they may differ after thinning).
  virtual index_t hidden_size(index_t l) const = 0;
  index_t output_size() const { return hidden_size(num_layers() - 1); }
  virtual index_t num_layers() const = 0;
  virtual sequence_output output() const = 0;
  virtual bool reversed() const = 0;
  /// A layer of the same shape running in the opposite direction, its parameters (named
  /// "..._reverse" or not, as PyTorch does) freshly initialised from `gen`.
  virtual std::unique_ptr<recurrent_layer> make_reversed(rng& gen) const = 0;
};

namespace detail::rnn {

/// Which columns run at which step: lengths sorted in decreasing order, B_t per step.
struct step_plan {
  index_t batch = 0;                  ///< N
  index_t steps = 0;                  ///< T, the padded length of the input
  index_t run = 0;                    ///< steps actually run: the longest length
  std::vector<std::int32_t> lengths;  ///< L_n in the caller's order
  std::vector<index_t> order;         ///< order[p] = sequence in column p (decreasing length)
  std::vector<index_t> active;        ///< B_t for t < run

  index_t columns() const { return steps * batch; }
  index_t length_of_column(index_t p) const { return lengths[static_cast<std::size_t>(order[static_cast<std::size_t>(p)])]; }

  void build(index_t n, index_t t, const std::vector<std::int32_t>* given, const char* function) {
    batch = n;
    steps = t;
    if (given != nullptr) {
      if (static_cast<index_t>(given->size()) != n) {
        slimnet::detail::raise<shape_error>(function, "{} sequence lengths for a batch of {} sequences", given->size(), n);
      }
      for (std::size_t i = 0; i < given->size(); ++i) {
        if ((*given)[i] < 0 || (*given)[i] > t) {
          slimnet::detail::raise<config_error>(function, "sequence {} has length {}, outside [0, {}]", i, (*given)[i], t);
        }
      }
      lengths = *given;
    } else {
      lengths.assign(static_cast<std::size_t>(n), static_cast<std::int32_t>(t));
    }
    order.resize(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), index_t{0});
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
      return lengths[static_cast<std::size_t>(a)] > lengths[static_cast<std::size_t>(b)];
    });
    run = n == 0 ? 0 : lengths[static_cast<std::size_t>(order[0])];
    active.assign(static_cast<std::size_t>(run), 0);
    for (index_t p = 0; p < n; ++p) {
      for (index_t s = 0; s < length_of_column(p); ++s) ++active[static_cast<std::size_t>(s)];
    }
  }
};

/// Values (as used by this pass) and gradients of one stacked layer.
template <class Scalar>
struct cell_weights {
  index_t input = 0, hidden = 0;
  const Scalar* w_ih = nullptr;  // (G*H, F)
  const Scalar* w_hh = nullptr;  // (G*H, H)
  const Scalar* b_ih = nullptr;  // (G*H) or null
  const Scalar* b_hh = nullptr;  // (G*H) or null
  Scalar* g_w_ih = nullptr;
  Scalar* g_w_hh = nullptr;
  Scalar* g_b_ih = nullptr;
  Scalar* g_b_hh = nullptr;
};

/// What the forward pass of one stacked layer keeps for the backward pass, plus scratch.
template <class Scalar>
struct layer_cache {
  tensor<Scalar> gates;      // (G*H, T*N): activated gates of the valid columns
  tensor<Scalar> state;      // (H, (T+1)*N): block 0 = h_0 = 0, block t+1 = masked h_t, 0 past the end
  tensor<Scalar> cell;       // LSTM: c_t laid out as state; GRU: W_hn h_{t-1} + b_hn, (H, T*N)
  tensor<Scalar> tanh_cell;  // LSTM: tanh(c_t), (H, T*N)
  tensor<Scalar> mask;       // (H, N) unit mask in column order; empty = no mask
  // Backward scratch.
  tensor<Scalar> d_gates;   // (G*H, T*N): dL/d(gate pre-activations), input path
  tensor<Scalar> d_hidden;  // GRU: (G*H, T*N) dL/d(W_hh h + b_hh); LSTM: unused (same as d_gates)
  tensor<Scalar> d_state;   // (H, N): dL/dh_t flowing back in time
  tensor<Scalar> d_cell;    // LSTM: (H, N): dL/dc_t flowing back in time
  tensor<Scalar> w_hh_t;    // (H, G*H): W_hh transposed, so the backward product reads it in place
  tensor<Scalar> scratch;   // GRU: (G*H, N) recurrent product of one step
};

/// Strided 2-d block with contiguous rows: the unit x batch strips the cells compute on.
template <class Scalar>
using strip =
    Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class Scalar>
using const_strip = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Eigen::Unaligned,
                               Eigen::OuterStride<>>;

template <class Scalar>
strip<Scalar> block(Scalar* p, index_t rows, index_t cols, index_t ld) {
  return strip<Scalar>(p, rows, cols, Eigen::OuterStride<>(ld));
}
template <class Scalar>
const_strip<Scalar> block(const Scalar* p, index_t rows, index_t cols, index_t ld) {
  return const_strip<Scalar>(p, rows, cols, Eigen::OuterStride<>(ld));
}

/// Rows of hidden units the gate arithmetic handles at a time: the 6-9 strips of one chunk stay
/// in L1 while the expressions pass over them.
constexpr index_t unit_chunk = 8;

/// sigma(x) = (1 + tanh(x/2)) / 2: vectorised through Eigen's tanh and exact in the tails.
template <class Expr>
auto sigmoid(const Expr& x) {
  using S = typename Expr::Scalar;
  return S(0.5) * (S(0.5) * x).tanh() + S(0.5);
}

/// One column of a feature-major (H, ld) buffer paired with a row of H values of a row-major array.
template <class Scalar>
struct column_row {
  index_t column;
  Scalar* row;
};

/// Copies rows into columns of a feature-major (H, ld) buffer, or columns into rows. Blocked over
/// 16 units so that both sides move whole cache lines: for one block of units, the columns
/// (listed in increasing order) advance along 16 rows of the buffer at once.
template <class Scalar>
void rows_to_columns(const std::vector<column_row<const Scalar>>& pairs, index_t h, Scalar* buffer, index_t ld) {
  for (index_t j0 = 0; j0 < h; j0 += 16) {
    const index_t j1 = std::min(h, j0 + 16);
    for (const auto& cr : pairs)
      for (index_t j = j0; j < j1; ++j) buffer[j * ld + cr.column] = cr.row[j];
  }
}
template <class Scalar>
void columns_to_rows(const std::vector<column_row<Scalar>>& pairs, index_t h, const Scalar* buffer, index_t ld) {
  for (index_t j0 = 0; j0 < h; j0 += 16) {
    const index_t j1 = std::min(h, j0 + 16);
    for (const auto& cr : pairs)
      for (index_t j = j0; j < j1; ++j) cr.row[j] = buffer[j * ld + cr.column];
  }
}

/// Sorts column/row pairs by column.
template <class T>
void sort_by_column(std::vector<column_row<T>>& pairs) {
  std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.column < b.column; });
}

/// Columns [0, c) of a view.
template <class T>
kernels::matrix_ref<T> first_columns(const kernels::matrix_ref<T>& v, index_t c) {
  return {v.data, v.rows, c, v.row_stride, v.col_stride};
}

/// Input projection of all run steps: gates(:, 0:R) = W_ih in(:, 0:R) + b_ih (+ b_hh).
/// `in` is the (F, T*N) input in column order, with any strides.
template <class Scalar>
void project_inputs(const cell_weights<Scalar>& w, index_t gate_rows, kernels::matrix_ref<const Scalar> in, index_t run_columns,
                    index_t ld, Scalar* gates, bool add_b_hh) {
  if (run_columns == 0) return;
  kernels::gemm<Scalar>(kernels::row_major(w.w_ih, gate_rows, w.input), first_columns(in, run_columns),
                        kernels::matrix_ref<Scalar>{gates, gate_rows, run_columns, ld, 1});
  for (index_t r = 0; r < gate_rows; ++r) {
    Scalar b = Scalar(0);
    if (w.b_ih != nullptr) b += w.b_ih[r];
    if (add_b_hh && w.b_hh != nullptr) b += w.b_hh[r];
    if (b != Scalar(0)) block(gates + r * ld, 1, run_columns, ld) += b;
  }
}

/// Weight and input gradients after the backward time loop:
///   dW_ih += dG in^T,  dW_hh += dH h_prev^T,  db_ih += rowsum dG,  db_hh += rowsum dH,
///   d_in = W_ih^T dG  (zero in the columns past the run; skipped when d_in.data is null).
template <class Scalar>
void finish_backward(cell_weights<Scalar>& w, index_t gate_rows, kernels::matrix_ref<const Scalar> in, const Scalar* state,
                     index_t state_ld, const Scalar* d_gates, const Scalar* d_hidden, index_t run_columns, index_t ld,
                     kernels::matrix_ref<Scalar> d_in) {
  if (run_columns > 0) {
    const kernels::matrix_ref<const Scalar> dG{d_gates, gate_rows, run_columns, ld, 1};
    const kernels::matrix_ref<const Scalar> dH{d_hidden, gate_rows, run_columns, ld, 1};
    kernels::gemm<Scalar>(dG, first_columns(in, run_columns).transposed(), kernels::row_major(w.g_w_ih, gate_rows, w.input),
                          Scalar(1), Scalar(1));
    kernels::gemm<Scalar>(dH, kernels::matrix_ref<const Scalar>{state, run_columns, w.hidden, 1, state_ld},
                          kernels::row_major(w.g_w_hh, gate_rows, w.hidden), Scalar(1), Scalar(1));
    if (w.g_b_ih != nullptr) {
      for (index_t r = 0; r < gate_rows; ++r) w.g_b_ih[r] += block(d_gates + r * ld, 1, run_columns, ld).sum();
    }
    if (w.g_b_hh != nullptr) {
      for (index_t r = 0; r < gate_rows; ++r) w.g_b_hh[r] += block(d_hidden + r * ld, 1, run_columns, ld).sum();
    }
  }
  if (d_in.data != nullptr) {
    if (run_columns > 0) {
      kernels::gemm<Scalar>(kernels::row_major(w.w_ih, gate_rows, w.input).transposed(),
                            kernels::matrix_ref<const Scalar>{d_gates, gate_rows, run_columns, ld, 1},
                            first_columns(d_in, run_columns));
    }
    for (index_t r = 0; r < d_in.rows; ++r)
      for (index_t c = run_columns; c < d_in.cols; ++c) d_in(r, c) = Scalar(0);
  }
}

/// Rows `rows` of a (R, C) row-major tensor, as a new tensor (C may be 1 for vectors).
template <class Scalar>
tensor<Scalar> take_rows(const tensor<Scalar>& t, const std::vector<index_t>& rows) {
  const index_t cols = t.rank() == 1 ? 1 : t.dim(1);
  tensor<Scalar> out(t.rank() == 1 ? shape_t{static_cast<index_t>(rows.size())}
                                   : shape_t{static_cast<index_t>(rows.size()), cols});
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(t.data() + rows[i] * cols, cols, out.data() + static_cast<index_t>(i) * cols);
  }
  return out;
}

/// Columns `cols` of a (R, C) row-major tensor.
template <class Scalar>
tensor<Scalar> take_columns(const tensor<Scalar>& t, const std::vector<index_t>& cols) {
  const index_t rows = t.dim(0), width = t.dim(1);
  tensor<Scalar> out({rows, static_cast<index_t>(cols.size())});
  for (index_t r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < cols.size(); ++j)
      out.data()[r * static_cast<index_t>(cols.size()) + static_cast<index_t>(j)] = t.data()[r * width + cols[j]];
  }
  return out;
}

/// Throws unless `keep` is strictly increasing within [0, n).
inline void check_keep(const std::vector<index_t>& keep, index_t n, const char* function, const char* what) {
  for (std::size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] < 0 || keep[i] >= n || (i > 0 && keep[i] <= keep[i - 1])) {
      slimnet::detail::raise<config_error>(function, "{} to keep must be increasing and within [0, {}), got {} at position {}",
                                           what, n, keep[i], i);
    }
  }
}

}  // namespace detail::rnn

/// A stack of recurrent layers of one cell type (lstm_cell, gru_cell), PyTorch's parameter layout
/// and names: per stacked layer k, weight_ih_l{k} (G*H, F_k), weight_hh_l{k} (G*H, H),
/// bias_ih_l{k}, bias_hh_l{k} (G*H), suffixed "_reverse" in the reversed direction.
///
/// Unit masks (set_unit_mask; DeepIoT's gates on recurrent units): stacked layer k may carry an
/// nn::unit_mask, the unit transform of nn/unit_mask.hpp, whose factors multiply its hidden units,
/// one factor per sequence and unit, the same at every step, before they feed both the next layer
/// (the input path) and the layer's own recurrence (the recurrent path); for a GRU the output is
/// the state, so the masked state is carried on. The mask's mode picks the factors as for a mask
/// after a feed-forward layer (per-sequence 0/1 samples in stochastic training, keep probabilities
/// in evaluation, or fixed factors). Masks carry no gradient; a copy of the layer owns clones of
/// its masks.
template <class Scalar, class Cell>
class recurrent : public recurrent_layer<Scalar> {
 public:
  static constexpr index_t gates = Cell::gates;

  recurrent(index_t input_size, index_t hidden_size, recurrent_options opt = {})
      : recurrent(input_size, stacked_sizes(opt, hidden_size), opt) {}

  /// Stacked layers with their own hidden sizes (what thinning produces).
  recurrent(index_t input_size, std::vector<index_t> hidden_sizes, recurrent_options opt) : opt_(opt) {
    const std::string fn = where("");
    opt_.num_layers = static_cast<index_t>(hidden_sizes.size());
    opt_.validate(fn.c_str());
    if (input_size <= 0) slimnet::detail::raise<config_error>(fn.c_str(), "input_size = {} must be positive", input_size);
    weights_.reserve(hidden_sizes.size());
    index_t in = input_size;
    for (std::size_t k = 0; k < hidden_sizes.size(); ++k) {
      const index_t h = hidden_sizes[k];
      if (h <= 0) slimnet::detail::raise<config_error>(fn.c_str(), "hidden size {} of layer {} must be positive", h, k);
      weights_.emplace_back(static_cast<index_t>(k), in, h, opt_.bias, suffix());
      in = h;
    }
    masks_.resize(hidden_sizes.size());
    caches_.resize(hidden_sizes.size());
    rng gen(0);
    reset_parameters(gen);
  }

  std::string kind() const override { return Cell::kind; }
  std::string describe() const override {
    std::string hidden = std::to_string(hidden_size(0));
    for (index_t k = 1; k < num_layers(); ++k) {
      if (hidden_size(k) != hidden_size(0)) {
        hidden = "[" + std::to_string(hidden_size(0));
        for (index_t j = 1; j < num_layers(); ++j) hidden += ", " + std::to_string(hidden_size(j));
        hidden += "]";
        break;
      }
    }
    return fmt::format("{}({}, {}{}{}{}{})", Cell::kind, input_size(), hidden,
                       num_layers() > 1 ? fmt::format(", num_layers={}", num_layers()) : "",
                       opt_.output == sequence_output::last_step ? ", output=last_step" : "", opt_.reverse ? ", reverse" : "",
                       opt_.bias ? "" : ", bias=false");
  }

  index_t input_size() const override { return weights_.front().weight_ih.value().dim(1); }
  index_t hidden_size(index_t l) const override { return weights_.at(static_cast<std::size_t>(l)).weight_hh.value().dim(1); }
  index_t num_layers() const override { return static_cast<index_t>(weights_.size()); }
  sequence_output output() const override { return opt_.output; }
  bool reversed() const override { return opt_.reverse; }
  const recurrent_options& options() const { return opt_; }

  parameter<Scalar>& weight_ih(index_t l) { return weights_.at(static_cast<std::size_t>(l)).weight_ih; }
  parameter<Scalar>& weight_hh(index_t l) { return weights_.at(static_cast<std::size_t>(l)).weight_hh; }
  parameter<Scalar>* bias_ih(index_t l) {
    auto& b = weights_.at(static_cast<std::size_t>(l)).bias_ih;
    return b ? &*b : nullptr;
  }
  parameter<Scalar>* bias_hh(index_t l) {
    auto& b = weights_.at(static_cast<std::size_t>(l)).bias_hh;
    return b ? &*b : nullptr;
  }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 3 || in[2] != input_size()) {
      slimnet::detail::raise<shape_error>(where("forward").c_str(), "input of shape {} does not fit {}: expected (N, T, {})",
                                          shape_string(in), describe(), input_size());
    }
    if (opt_.output == sequence_output::last_step) return {in[0], output_size_()};
    return {in[0], in[1], output_size_()};
  }

  // --- unit masks (nn/unit_mask.hpp) ---------------------------------------------------------
  /// Attaches unit mask `mask` (H_l units, not over folded steps) to the hidden units of stacked
  /// layer `l`, replacing any; the layer owns it (its copies own clones).
  void set_unit_mask(index_t l, std::shared_ptr<nn::unit_mask<Scalar>> mask) {
    const std::string fn = where("set_unit_mask");
    check_layer_index(l, fn.c_str());
    if (!mask || mask->units() != hidden_size(l) || mask->folded_steps()) {
      slimnet::detail::raise<shape_error>(fn.c_str(), "{} does not fit layer {} with {} hidden units",
                                          mask ? mask->describe() : "a null mask", l, hidden_size(l));
    }
    masks_[static_cast<std::size_t>(l)] = detail::owned_transform<nn::unit_mask<Scalar>>(std::move(mask));
  }
  /// Fixed factors (a unit mask in hard mode): shape (H_l) for every sequence alike, or (N, H_l)
  /// with one row per sequence of every following batch (which must then have N sequences).
  void set_unit_mask(index_t l, const tensor<Scalar>& factors) {
    const std::string fn = where("set_unit_mask");
    check_layer_index(l, fn.c_str());
    const index_t h = hidden_size(l);
    const bool ok = (factors.rank() == 1 && factors.dim(0) == h) || (factors.rank() == 2 && factors.dim(1) == h);
    if (!ok) {
      slimnet::detail::raise<shape_error>(fn.c_str(),
                                          "mask of shape {} does not fit layer {} with {} hidden units: expected ({}) or (N, {})",
                                          shape_string(factors.shape()), l, h, h, h);
    }
    set_unit_mask(l, nn::unit_mask<Scalar>::fixed(factors));
  }
  /// The unit mask of stacked layer `l`, or null.
  nn::unit_mask<Scalar>* unit_mask_of(index_t l) const { return masks_.at(static_cast<std::size_t>(l)).get(); }
  /// The factors of layer `l`'s unit mask outside stochastic training (the fixed factors, or the
  /// keep probabilities of a stochastic mask), or null without a mask.
  const tensor<Scalar>* unit_mask(index_t l) const {
    const auto* m = unit_mask_of(l);
    return m ? &m->factors() : nullptr;
  }
  void clear_unit_mask(index_t l) { masks_.at(static_cast<std::size_t>(l)).reset(); }
  void clear_unit_masks() {
    for (auto& m : masks_) m.reset();
  }

  // --- thinning ------------------------------------------------------------------------------
  /// Physically keeps only hidden units `keep` (increasing) of stacked layer `l`: their gate rows
  /// in weight_ih/weight_hh/biases of layer l, their columns in weight_hh of layer l and in
  /// weight_ih of layer l+1, and their entries of a unit mask. Parameter identities are kept (the
  /// optimizer resets their state because the size changed); attached transforms are not resized,
  /// so bake or clear them first.
  void keep_hidden_units(index_t l, const std::vector<index_t>& keep) {
    const std::string fn = where("keep_hidden_units");
    check_layer_index(l, fn.c_str());
    const index_t h = hidden_size(l);
    detail::rnn::check_keep(keep, h, fn.c_str(), "hidden units");
    if (keep.empty()) slimnet::detail::raise<config_error>(fn.c_str(), "cannot remove all {} hidden units of layer {}", h, l);
    std::vector<index_t> rows;
    for (index_t g = 0; g < gates; ++g) {
      for (index_t j : keep) rows.push_back(g * h + j);
    }
    auto& w = weights_[static_cast<std::size_t>(l)];
    w.weight_ih.assign(detail::rnn::take_rows(w.weight_ih.value(), rows));
    w.weight_hh.assign(detail::rnn::take_columns(detail::rnn::take_rows(w.weight_hh.value(), rows), keep));
    if (w.bias_ih) w.bias_ih->assign(detail::rnn::take_rows(w.bias_ih->value(), rows));
    if (w.bias_hh) w.bias_hh->assign(detail::rnn::take_rows(w.bias_hh->value(), rows));
    if (l + 1 < num_layers()) {
      auto& next = weights_[static_cast<std::size_t>(l + 1)];
      next.weight_ih.assign(detail::rnn::take_columns(next.weight_ih.value(), keep));
    }
    if (auto& m = masks_[static_cast<std::size_t>(l)]) m->keep_units(keep);
  }

  /// Keeps only input features `keep` (increasing): columns of weight_ih of layer 0.
  void keep_input_features(const std::vector<index_t>& keep) {
    const std::string fn = where("keep_input_features");
    detail::rnn::check_keep(keep, input_size(), fn.c_str(), "input features");
    if (keep.empty()) slimnet::detail::raise<config_error>(fn.c_str(), "cannot remove all {} input features", input_size());
    auto& w = weights_.front();
    w.weight_ih.assign(detail::rnn::take_columns(w.weight_ih.value(), keep));
  }

  // --- layer interface ------------------------------------------------------------------------
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    const std::string fn = where("forward");
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), t_len = x.dim(1), f = x.dim(2);
    plan_.build(n, t_len, ctx.lengths, fn.c_str());
    const index_t cols = plan_.columns();
    // Layer 0's input: row t*N + p is step t of the p-th sequence in column order (a row copy of
    // x); padded rows are zero (they meet zero gradients in dW_ih, garbage would make NaN).
    input_.resize({cols, f});
    input_.set_zero();
    for (index_t p = 0; p < n; ++p) {
      const index_t seq = plan_.order[static_cast<std::size_t>(p)], len = plan_.length_of_column(p);
      for (index_t s = 0; s < len; ++s) {
        std::copy_n(x.data() + (seq * t_len + source_step(s, len)) * f, f, input_.data() + (s * n + p) * f);
      }
    }
    kernels::matrix_ref<const Scalar> in{input_.data(), f, cols, 1, f};
    for (index_t l = 0; l < num_layers(); ++l) {
      auto& cache = caches_[static_cast<std::size_t>(l)];
      prepare_mask(l, cache, ctx.training, fn.c_str());
      auto w = weights_for_pass(l, &ctx);
      Cell::forward(plan_, w, in, cache);
      in = {cache.state.data() + n, w.hidden, cols, (t_len + 1) * n, 1};  // h_1..h_T: the next layer's input
    }
    // Output in the caller's order and time direction (zero at padded steps).
    const auto& top = caches_.back();
    const index_t h = output_size_(), sld = (t_len + 1) * n;
    y.set_zero();
    std::vector<detail::rnn::column_row<Scalar>> pairs;
    for (index_t p = 0; p < n; ++p) {
      const index_t seq = plan_.order[static_cast<std::size_t>(p)], len = plan_.length_of_column(p);
      if (opt_.output == sequence_output::last_step) {
        pairs.push_back({len * n + p, y.data() + seq * h});
      } else {
        for (index_t s = 0; s < len; ++s) pairs.push_back({(s + 1) * n + p, y.data() + (seq * t_len + source_step(s, len)) * h});
      }
    }
    detail::rnn::sort_by_column(pairs);
    detail::rnn::columns_to_rows(pairs, h, top.state.data(), sld);
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const std::string fn = where("backward");
    const index_t n = plan_.batch, t_len = plan_.steps, cols = plan_.columns(), h = output_size_();
    if (x.rank() != 3 || x.dim(0) != n || x.dim(1) != t_len) {
      slimnet::detail::raise<shape_error>(fn.c_str(), "input of shape {} is not the one of the last forward pass",
                                          shape_string(x.shape()));
    }
    shape_t expected = opt_.output == sequence_output::last_step ? shape_t{n, h} : shape_t{n, t_len, h};
    require_shape(dy, expected, fn.c_str(), "dy");
    // dL/d(output of the top layer) in column order; the last step's gradient lands on the
    // column of each sequence's last valid step.
    d_out_.resize({h, cols});
    d_out_.set_zero();
    std::vector<detail::rnn::column_row<const Scalar>> pairs;
    for (index_t p = 0; p < n; ++p) {
      const index_t seq = plan_.order[static_cast<std::size_t>(p)], len = plan_.length_of_column(p);
      if (opt_.output == sequence_output::last_step) {
        if (len > 0) pairs.push_back({(len - 1) * n + p, dy.data() + seq * h});
      } else {
        for (index_t s = 0; s < len; ++s) pairs.push_back({s * n + p, dy.data() + (seq * t_len + source_step(s, len)) * h});
      }
    }
    detail::rnn::sort_by_column(pairs);
    detail::rnn::rows_to_columns(pairs, h, d_out_.data(), cols);
    for (index_t l = num_layers(); l-- > 0;) {
      auto& cache = caches_[static_cast<std::size_t>(l)];
      auto w = weights_for_pass(l, nullptr);
      const kernels::matrix_ref<const Scalar> in =
          l == 0 ? kernels::matrix_ref<const Scalar>{input_.data(), w.input, cols, 1, w.input}
                 : kernels::matrix_ref<const Scalar>{caches_[static_cast<std::size_t>(l - 1)].state.data() + n, w.input, cols,
                                                     (t_len + 1) * n, 1};
      kernels::matrix_ref<Scalar> d_in;  // null: not needed
      if (l > 0) {
        d_in_.resize({w.input, cols});  // becomes the lower layer's d_out (H, T*N)
        d_in = {d_in_.data(), w.input, cols, cols, 1};
      } else if (dx != nullptr) {
        d_in_.resize({cols, w.input});  // row per step, as input_
        d_in = {d_in_.data(), w.input, cols, 1, w.input};
      }
      Cell::backward(plan_, w, in, cache, d_out_.data(), d_in);
      if (l > 0) std::swap(d_out_, d_in_);
    }
    if (dx == nullptr) return;
    const index_t f = input_size();
    dx->resize(x.shape());
    dx->set_zero();
    for (index_t p = 0; p < n; ++p) {
      const index_t seq = plan_.order[static_cast<std::size_t>(p)], len = plan_.length_of_column(p);
      for (index_t s = 0; s < len; ++s) {
        std::copy_n(d_in_.data() + (s * n + p) * f, f, dx->data() + (seq * t_len + source_step(s, len)) * f);
      }
    }
  }

  void visit_unit_transforms(const typename layer<Scalar>::unit_transform_visitor& visit) override {
    for (auto& m : masks_)
      if (m) visit(*m);
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    for (auto& w : weights_) {
      visit(w.weight_ih);
      visit(w.weight_hh);
      if (w.bias_ih) visit(*w.bias_ih);
      if (w.bias_hh) visit(*w.bias_hh);
    }
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    for (const auto& w : weights_) {
      visit(w.weight_ih);
      visit(w.weight_hh);
      if (w.bias_ih) visit(*w.bias_ih);
      if (w.bias_hh) visit(*w.bias_hh);
    }
  }

  /// PyTorch's initialisation: every weight and bias U(-1/sqrt(H), 1/sqrt(H)).
  void reset_parameters(rng& gen) override {
    for (auto& w : weights_) {
      const double b = 1.0 / std::sqrt(static_cast<double>(w.weight_hh.value().dim(1)));
      init::uniform(w.weight_ih.value(), -b, b, gen);
      init::uniform(w.weight_hh.value(), -b, b, gen);
      if (w.bias_ih) init::uniform(w.bias_ih->value(), -b, b, gen);
      if (w.bias_hh) init::uniform(w.bias_hh->value(), -b, b, gen);
    }
  }

  std::unique_ptr<layer<Scalar>> clone() const override {
    clone_scope scope;  // the copy's parameters share one memo (nn/parameter.hpp)
    return std::make_unique<recurrent>(*this);
  }

  std::unique_ptr<recurrent_layer<Scalar>> make_reversed(rng& gen) const override {
    recurrent_options o = opt_;
    o.reverse = !o.reverse;
    std::vector<index_t> hidden;
    for (index_t l = 0; l < num_layers(); ++l) hidden.push_back(hidden_size(l));
    auto r = std::make_unique<recurrent>(input_size(), hidden, o);
    r->reset_parameters(gen);
    r->set_name(this->name());
    return r;
  }

 private:
  struct stacked_weights {
    stacked_weights(index_t k, index_t in, index_t h, bool bias, const std::string& suffix)
        : weight_ih(fmt::format("weight_ih_l{}{}", k, suffix), {gates * h, in}),
          weight_hh(fmt::format("weight_hh_l{}{}", k, suffix), {gates * h, h}) {
      if (bias) {
        bias_ih.emplace(fmt::format("bias_ih_l{}{}", k, suffix), shape_t{gates * h});
        bias_hh.emplace(fmt::format("bias_hh_l{}{}", k, suffix), shape_t{gates * h});
      }
    }
    parameter<Scalar> weight_ih, weight_hh;
    std::optional<parameter<Scalar>> bias_ih, bias_hh;
  };

  static std::vector<index_t> stacked_sizes(const recurrent_options& opt, index_t hidden_size) {
    opt.validate(where("").c_str());
    return std::vector<index_t>(static_cast<std::size_t>(opt.num_layers), hidden_size);
  }
  static std::string where(const char* method) {
    return *method ? fmt::format("slimnet::nn::{}::{}", Cell::name, method) : fmt::format("slimnet::nn::{}", Cell::name);
  }
  std::string suffix() const { return opt_.reverse ? "_reverse" : ""; }
  index_t output_size_() const { return hidden_size(num_layers() - 1); }
  /// Step of the caller's sequence processed at step s of the pass.
  index_t source_step(index_t s, index_t len) const { return opt_.reverse ? len - 1 - s : s; }

  void check_layer_index(index_t l, const char* fn) const {
    if (l < 0 || l >= num_layers()) slimnet::detail::raise<config_error>(fn, "layer {} is outside [0, {})", l, num_layers());
  }

  /// The factors of layer l's unit mask for this pass, (H, N) in column order (empty: no mask).
  void prepare_mask(index_t l, detail::rnn::layer_cache<Scalar>& cache, bool training, const char* fn) {
    auto* m = masks_[static_cast<std::size_t>(l)].get();
    if (m == nullptr) {
      cache.mask.resize({0});
      return;
    }
    const index_t n = plan_.batch, h = hidden_size(l);
    m->prepare(n, training, fn);
    cache.mask.resize({h, n});
    for (index_t p = 0; p < n; ++p) {
      const index_t seq = plan_.order[static_cast<std::size_t>(p)];
      for (index_t j = 0; j < h; ++j) cache.mask.data()[j * n + p] = m->factor(seq, j);
    }
  }

  /// Values for this pass (forward: through the weight transforms) and gradient pointers.
  detail::rnn::cell_weights<Scalar> weights_for_pass(index_t l, const forward_context* ctx) {
    auto& w = weights_[static_cast<std::size_t>(l)];
    auto value = [&](parameter<Scalar>& p) -> const Scalar* {
      return ctx ? p.forward_value(*ctx).data() : p.used_value().data();
    };
    detail::rnn::cell_weights<Scalar> c;
    c.input = w.weight_ih.value().dim(1);
    c.hidden = w.weight_hh.value().dim(1);
    c.w_ih = value(w.weight_ih);
    c.w_hh = value(w.weight_hh);
    c.g_w_ih = w.weight_ih.grad().data();
    c.g_w_hh = w.weight_hh.grad().data();
    if (w.bias_ih) {
      c.b_ih = value(*w.bias_ih);
      c.g_b_ih = w.bias_ih->grad().data();
    }
    if (w.bias_hh) {
      c.b_hh = value(*w.bias_hh);
      c.g_b_hh = w.bias_hh->grad().data();
    }
    return c;
  }

  recurrent_options opt_;
  std::vector<stacked_weights> weights_;
  std::vector<detail::owned_transform<nn::unit_mask<Scalar>>> masks_;
  // State of the last forward pass.
  detail::rnn::step_plan plan_;
  tensor<Scalar> input_;  // (T*N, F): layer 0's input, row t*N + p = step t of column p
  std::vector<detail::rnn::layer_cache<Scalar>> caches_;
  tensor<Scalar> d_out_, d_in_;
};

}  // namespace slimnet::nn
