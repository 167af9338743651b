// The sparse engine of pruned layers: SELL-16 with rows sorted by length when the layer runs one sample at a time (each input
// row is a contiguous vector: no transposes), column-blocked CSR for batches (the batch-contiguous
// layout SpMM wants: a Linear's input is transposed, a convolution's im2col matrix already has it),
// or, at batch 1 for inputs that are mostly exact zeros (MNIST pixels, ReLU outputs), CSC walking
// only the columns of nonzero inputs (EIE's weight x activation sparsity, kernels/sparse_csc.hpp).
// Results equal the masked dense layer within float rounding: each output is the sum of the same
// products w_ij x_j (zeros skipped) in another order, |error| <= (nnz_i + 1) eps sum_j |w_ij x_j|.
#pragma once

#include <variant>

#include "slimnet/kernels/sparse.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class sparse_engine : public engine<Scalar> {
 public:
  using sell_type = kernels::sell_matrix<Scalar, std::uint8_t>;
  using blocked_type = kernels::blocked_csr_matrix<Scalar, std::uint8_t>;
  using wide_blocked_type = kernels::blocked_csr_matrix<Scalar, std::uint16_t>;  // one panel of > 256 columns
  using csc_type = kernels::csc_matrix<Scalar, std::uint16_t>;                   // the column form (batch 1, rows <= 65536)

  /// From the (masked) weights: SELL-16 when batch_hint == 1, column-blocked CSR otherwise;
  /// column_form (batch_hint 1 only, at most 65536 rows): CSC skipping zero inputs instead of SELL-16.
  /// column_order (batch_hint 1, SELL-16 only): the SELL-16 form over these columns only, in this
  /// order (each input gathered into that order per call); every column holding a nonzero must be
  /// listed, once. kernels::reordered_columns gives the order: the columns that hold nonzeros,
  /// those whose input is most often nonzero first, so that the rarely-nonzero inputs share column
  /// blocks that spmv_sell skips when they are all zero, and empty columns cost nothing.
  sparse_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias, index_t batch_hint, int threads = 1,
                bool column_form = false, std::vector<std::int32_t> column_order = {})
      : rows_(w.rows()), cols_(w.cols()), bias_(std::move(bias)), threads_(threads), order_(std::move(column_order)) {
    const char* fn = "slimnet::nn::compressed::sparse_engine";
    detail::check_bias(fn, bias_, rows_);
    const auto wv = kernels::row_major<const Scalar>(w.data(), w.rows(), w.cols());
    if (!order_.empty()) {
      if (column_form || batch_hint > 1) {
        slimnet::detail::raise<config_error>(fn, "a column order serves the batch-1 SELL-16 form only (batch {}, column form {})", batch_hint,
                                             column_form);
      }
      std::vector<char> listed(static_cast<std::size_t>(cols_), 0);
      for (const auto j : order_) {
        if (j < 0 || j >= cols_ || listed[static_cast<std::size_t>(j)]) {
          slimnet::detail::raise<config_error>(fn, "column order entry {} is out of [0, {}) or listed twice", j, cols_);
        }
        listed[static_cast<std::size_t>(j)] = 1;
      }
      row_matrix<Scalar> kept(rows_, static_cast<index_t>(order_.size()));
      for (std::size_t k = 0; k < order_.size(); ++k) kept.col(static_cast<index_t>(k)) = w.col(order_[k]);
      if ((kept.array() != Scalar(0)).count() != (w.array() != Scalar(0)).count()) {
        slimnet::detail::raise<config_error>(fn, "the column order ({} of {} columns) leaves out columns that hold nonzeros", order_.size(),
                                             cols_);
      }
      const auto kv = kernels::row_major<const Scalar>(kept.data(), kept.rows(), kept.cols());
      format_ = sell_type::from_csr(kernels::csr_matrix<Scalar, std::uint32_t>::from_dense(kv), 0, /*sort_rows=*/true);
      xg_.resize(order_.size() + 1);
      return;
    }
    if (column_form) {
      if (batch_hint > 1 || rows_ > 65536) {
        slimnet::detail::raise<config_error>(fn, "the column form serves batch 1 and at most 65536 rows: batch {}, {} rows", batch_hint,
                                             rows_);
      }
      format_ = csc_type::from_dense(wv);
    } else if (batch_hint <= 1) {
      // Rows sorted by length: a slice's 16 lanes then hold rows of similar length, so its steps
      // are padded far less. Measured on the demo's LeNet-5 fc1 (800 x 500, Zen 5): magnitude
      // (7.5%) 15.2 -> 9.1 bytes per nonzero and 7.6 -> 4.9 us; DNS (0.52%) 62 -> 10.8 bytes per
      // nonzero and 2.2 -> 0.63 us (CSR with 16-bit indices: 13.7 and 1.6 us).
      format_ = sell_type::from_csr(kernels::csr_matrix<Scalar, std::uint32_t>::from_dense(wv), 0, /*sort_rows=*/true);
    } else {
      const index_t nnz = (w.array() != Scalar(0)).count();
      const index_t width = kernels::blocked_csr_block_cols(rows_, cols_, nnz);
      if (width > 256 && cols_ <= 65536) {
        format_ = wide_blocked_type::from_dense(wv, width);
      } else {
        format_ = blocked_type::from_dense(wv);
      }
    }
  }

  std::string format() const override {
    if (std::holds_alternative<csc_type>(format_)) {
      return fmt::format("CSC skipping zero inputs, {:.1f}% nonzeros", 100 * density());
    }
    if (const auto* s = std::get_if<sell_type>(&format_)) {
      if (!order_.empty()) {
        return fmt::format("SELL-16 with {}-column blocks over {} of {} columns reordered, {:.1f}% nonzeros", s->block_cols(), order_.size(),
                           cols_, 100 * density());
      }
      return fmt::format("SELL-16 with {}-column blocks, {:.1f}% nonzeros", s->block_cols(), 100 * density());
    }
    const index_t width = std::visit(
        [](const auto& f) -> index_t {
          if constexpr (std::is_same_v<std::decay_t<decltype(f)>, csc_type>) {
            return 0;
          } else {
            return f.block_cols();
          }
        },
        format_);
    return fmt::format("column-blocked CSR with {}-column panels, {:.1f}% nonzeros", width, 100 * density());
  }
  std::string kind_prefix() const override { return "Sparse"; }
  index_t out_features() const override { return rows_; }
  index_t in_features() const override { return cols_; }
  std::size_t bytes() const override {
    return std::visit([](const auto& f) { return f.bytes(); }, format_) + order_.size() * sizeof(std::int32_t);
  }
  index_t nnz() const {
    return std::visit([](const auto& f) { return f.nnz(); }, format_);
  }
  double density() const { return rows_ * cols_ == 0 ? 0.0 : static_cast<double>(nnz()) / (static_cast<double>(rows_) * cols_); }
  layout preferred() const override {
    return std::holds_alternative<sell_type>(format_) || std::holds_alternative<csc_type>(format_) ? layout::rows : layout::cols;
  }
  bool column_form() const { return std::holds_alternative<csc_type>(format_); }
  /// The columns the reordered SELL-16 form holds, in its order (empty: all, in order).
  const std::vector<std::int32_t>& column_order() const { return order_; }

  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    if (const auto* c = std::get_if<csc_type>(&format_)) {
      for (index_t i = 0; i < n; ++i) kernels::spmv_csc(c->ref(), x + i * cols_, y + i * rows_, params());
      return;
    }
    if (std::holds_alternative<sell_type>(format_)) {
      for (index_t i = 0; i < n; ++i) sell_product(x + i * cols_, y + i * rows_);
      return;
    }
    xt_.resize(static_cast<std::size_t>(cols_ * n));
    zt_.resize(static_cast<std::size_t>(rows_ * n));
    detail::transpose(x, n, cols_, xt_.data());
    apply_cols(xt_.data(), n, zt_.data());
    detail::transpose(zt_.data(), rows_, n, y);
  }

  void apply_cols(const Scalar* x, index_t n, Scalar* z) override {
    if (const auto* b = std::get_if<blocked_type>(&format_)) {
      kernels::spmm_blocked_csr(b->ref(), kernels::row_major(x, cols_, n), kernels::row_major(z, rows_, n), params());
      return;
    }
    if (const auto* b = std::get_if<wide_blocked_type>(&format_)) {
      kernels::spmm_blocked_csr(b->ref(), kernels::row_major(x, cols_, n), kernels::row_major(z, rows_, n), params());
      return;
    }
    if (n == 1) {
      if (const auto* c = std::get_if<csc_type>(&format_)) {
        kernels::spmv_csc(c->ref(), x, z, params());
      } else {
        sell_product(x, z);
      }
      return;
    }
    xt_.resize(static_cast<std::size_t>(cols_ * n));
    zt_.resize(static_cast<std::size_t>(rows_ * n));
    detail::transpose(x, cols_, n, xt_.data());
    apply_rows(xt_.data(), n, zt_.data());
    detail::transpose(zt_.data(), n, rows_, z);
  }

  row_matrix<Scalar> effective_weights() const override {
    row_matrix<Scalar> w = row_matrix<Scalar>::Zero(rows_, cols_);
    if (const auto* c = std::get_if<csc_type>(&format_)) {
      const auto r = c->ref();
      for (index_t j = 0; j < cols_; ++j)
        for (auto p = r.col_offsets[j]; p < r.col_offsets[j + 1]; ++p) w(r.row_indices[p], j) = r.values[p];
    } else if (const auto* s = std::get_if<sell_type>(&format_)) {
      const auto r = s->ref();
      for (index_t sl = 0; sl < r.slices; ++sl)
        for (index_t b = 0; b < r.blocks; ++b)
          for (auto t = r.step_offsets[sl * r.blocks + b]; t < r.step_offsets[sl * r.blocks + b + 1]; ++t)
            for (index_t l = 0; l < 16; ++l)
              if ((r.step_masks[t] >> l) & 1u) {
                const index_t c = b * r.block_cols + r.col_indices[t * 16 + l];
                w(r.lane_rows[sl * 16 + l], order_.empty() ? c : order_[static_cast<std::size_t>(c)]) = r.values[t * 16 + l];
              }
    } else {
      std::visit(
          [&](const auto& f) {
            using f_type = std::decay_t<decltype(f)>;
            if constexpr (!std::is_same_v<f_type, sell_type> && !std::is_same_v<f_type, csc_type>) {
              const auto r = f.ref();
              for (index_t b = 0; b < r.blocks(); ++b) {
                const auto p = r.panel(b);
                for (index_t i = 0; i < rows_; ++i)
                  for (auto q = p.row_offsets[i]; q < p.row_offsets[i + 1]; ++q) w(i, b * r.block_cols + p.col_indices[q]) = p.values[q];
              }
            }
          },
          format_);
    }
    return w;
  }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<sparse_engine>(*this); }

 private:
  /// y = W x + bias with the SELL-16 form (x gathered into the column order first, when there is one).
  void sell_product(const Scalar* x, Scalar* y) {
    const auto& s = std::get<sell_type>(format_);
    if (order_.empty()) {
      kernels::spmv_sell(s.ref(), x, y, params());
      return;
    }
    kernels::gather_columns(x, order_.data(), static_cast<index_t>(order_.size()), xg_.data());
    kernels::spmv_sell(s.ref(), xg_.data(), y, params());
  }

  kernels::sparse_params<Scalar> params() const {
    kernels::sparse_params<Scalar> p;
    p.bias = bias_ ? bias_->data() : nullptr;
    p.threads = threads_;
    return p;
  }

  index_t rows_, cols_;
  std::optional<column_vector<Scalar>> bias_;
  int threads_;
  std::variant<sell_type, blocked_type, wide_blocked_type, csc_type> format_;
  std::vector<Scalar> xt_, zt_;  // transposes (scratch)
  std::vector<std::int32_t> order_;  // the reordered SELL-16 form's columns (empty: all, in order)
  std::vector<Scalar> xg_;          // an input gathered into that order (scratch, sized once)
};

}  // namespace slimnet::nn::compressed
