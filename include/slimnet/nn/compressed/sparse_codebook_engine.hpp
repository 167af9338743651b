// The sparse + codebook engine (Deep Compression's stored form): a pruned, weight-shared layer's
// nonzeros in the sparse engine's layouts - SELL-16 with rows sorted by length when it runs one
// sample at a time, column-blocked CSR for batches - each value a k-bit index into the table of the
// layer's distinct nonzero values (kernels/sparse_codebook.hpp). It does the sparse engine's work
// plus a register (batch 1) or L1 (batch) lookup, in k / 8 + 1 instead of 4 + 1 bytes per stored
// entry. The centroids are the layer's own values, so outputs equal the masked float layer within
// float rounding: |error| <= (nnz_i + 1) eps sum_j |w_ij x_j|.
#pragma once

#include <chrono>
#include <cmath>
#include <variant>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/sparse_choice.hpp"
#include "slimnet/kernels/sparse_codebook.hpp"
#include "slimnet/nn/compressed/codebook_engine.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class sparse_codebook_engine : public engine<Scalar> {
 public:
  using sell_type = kernels::sell_codebook_matrix<Scalar>;
  using blocked_type = kernels::blocked_codebook_matrix<Scalar>;

  /// From the (masked, weight-shared) weights: at most 2^bits distinct nonzero values (bits <= 0:
  /// the fewest bits that hold them); SELL-16 when batch_hint <= 1, column-blocked CSR otherwise.
  sparse_codebook_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias, index_t batch_hint, int bits = 0)
      : rows_(w.rows()), cols_(w.cols()), bias_(std::move(bias)) {
    detail::check_bias("slimnet::nn::compressed::sparse_codebook_engine", bias_, rows_);
    const auto wv = kernels::row_major<const Scalar>(w.data(), w.rows(), w.cols());
    if (batch_hint <= 1) {
      format_ = sell_type::from_dense(wv, bits);
    } else {
      // Panels of <= 256 columns: one byte per column index (blocked_csr_block_cols otherwise).
      const index_t nnz = (w.array() != Scalar(0)).count();
      format_ = blocked_type::from_dense(wv, bits, std::min<index_t>(256, kernels::blocked_csr_block_cols(rows_, cols_, nnz)));
    }
  }

  std::string format() const override {
    return std::visit(
        [&](const auto& f) {
          const bool sell = std::is_same_v<std::decay_t<decltype(f)>, sell_type>;
          return fmt::format("{} with {}-bit codebook indices ({} centroids), {:.1f}% nonzeros, {:.2f} bytes per nonzero",
                             sell ? fmt::format("SELL-16 with {}-column blocks", f.block_cols())
                                  : fmt::format("column-blocked CSR with {}-column panels", f.block_cols()),
                             f.bits(), f.centroids().size(), 100 * density(),
                             f.nnz() ? static_cast<double>(f.bytes()) / static_cast<double>(f.nnz()) : 0.0);
        },
        format_);
  }
  std::string kind_prefix() const override { return "SparseCodebook"; }
  index_t out_features() const override { return rows_; }
  index_t in_features() const override { return cols_; }
  std::size_t bytes() const override {
    return std::visit([](const auto& f) { return f.bytes(); }, format_);
  }
  index_t nnz() const {
    return std::visit([](const auto& f) { return f.nnz(); }, format_);
  }
  int bits() const {
    return std::visit([](const auto& f) { return f.bits(); }, format_);
  }
  double density() const { return rows_ * cols_ == 0 ? 0.0 : static_cast<double>(nnz()) / (static_cast<double>(rows_) * cols_); }
  layout preferred() const override { return std::holds_alternative<sell_type>(format_) ? layout::rows : layout::cols; }

  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    if (const auto* s = std::get_if<sell_type>(&format_)) {
      const auto r = s->ref();
      for (index_t i = 0; i < n; ++i) kernels::spmv_sell_codebook(r, x + i * cols_, y + i * rows_, bias_data());
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
      kernels::spmm_blocked_codebook(b->ref(), kernels::row_major(x, cols_, n), kernels::row_major(z, rows_, n), bias_data());
      return;
    }
    if (n == 1) {
      kernels::spmv_sell_codebook(std::get<sell_type>(format_).ref(), x, z, bias_data());
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
    if (const auto* s = std::get_if<sell_type>(&format_)) {
      const auto r = s->ref();
      for (index_t sl = 0; sl < r.slices; ++sl)
        for (index_t b = 0; b < r.blocks; ++b)
          for (auto t = r.step_offsets[sl * r.blocks + b]; t < r.step_offsets[sl * r.blocks + b + 1]; ++t)
            for (index_t l = 0; l < 16; ++l) {
              const std::size_t e = static_cast<std::size_t>(t) * 16 + static_cast<std::size_t>(l);
              if ((r.step_masks[t] >> l) & 1u) w(r.lane_rows[sl * 16 + l], b * r.block_cols + r.col_indices[e]) = r.value(e);
            }
    } else {
      const auto r = std::get<blocked_type>(format_).ref();
      for (index_t b = 0; b < r.blocks(); ++b) {
        const kernels::sparse_offset_t* off = r.row_offsets + b * (r.rows + 1);
        for (index_t i = 0; i < rows_; ++i)
          for (auto q = off[i]; q < off[i + 1]; ++q) w(i, b * r.block_cols + r.col_indices[q]) = r.value(q);
      }
    }
    return w;
  }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<sparse_codebook_engine>(*this); }

 private:
  const Scalar* bias_data() const { return bias_ ? bias_->data() : nullptr; }

  index_t rows_, cols_;
  std::optional<column_vector<Scalar>> bias_;
  std::variant<sell_type, blocked_type> format_;
  std::vector<Scalar> xt_, zt_;  // transposes (scratch)
};

/// Which codebook form a weight-shared layer takes and why: the sparse + codebook engine when its
/// density is below the dense-or-sparse break-even, the dense codebook engine (every weight indexed)
/// otherwise. The decision is the sparse engine's (kernels::choose_sparse at this batch), or, with
/// `measure`, both codebook engines timed on the layer's own weights at `batch` columns (best of 5
/// rounds of >= 1 ms): exact for this machine and layer, rerunnable, and two runs may differ near
/// break-even (both forms give the same outputs within float rounding).
template <class Scalar>
kernels::sparse_choice choose_codebook_form(const row_matrix<Scalar>& w, const std::optional<column_vector<Scalar>>& bias,
                                            index_t batch, int bits, bool measure) {
  index_t nnz = 0;
  for (index_t i = 0; i < w.size(); ++i) nnz += w.data()[i] != Scalar(0);
  batch = std::max<index_t>(1, batch);
  kernels::sparse_choice c = kernels::choose_sparse(w.rows(), w.cols(), nnz, batch);
  if (!measure || w.size() == 0 || nnz == 0) return c;
  sparse_codebook_engine<Scalar> sparse(w, bias, batch, bits);
  codebook_engine<Scalar> dense(w, bias, bits);
  std::vector<Scalar> x(static_cast<std::size_t>(w.cols() * batch)), y(static_cast<std::size_t>(w.rows() * batch));
  rng gen(1);
  for (auto& v : x) v = static_cast<Scalar>(gen.uniform(-1, 1));
  auto best_time = [&](engine<Scalar>& e) {
    auto run = [&] {
      if (e.preferred() == layout::rows) {
        e.apply_rows(x.data(), batch, y.data());
      } else {
        e.apply_cols(x.data(), batch, y.data());
      }
    };
    return kernels::best_seconds_per_call(run, 5);
  };
  const double t_sparse = best_time(sparse), t_dense = best_time(dense);
  c.measured = true;
  c.break_even = std::min(1.0, c.density * t_dense / t_sparse);
  c.sparse = t_sparse < t_dense;
  return c;
}

/// The codebook engine of a weight-shared Linear (or a convolution's im2col product): sparse +
/// codebook or dense codebook by choose_codebook_form (force_sparse: sparse regardless).
template <class Scalar>
std::unique_ptr<engine<Scalar>> make_codebook_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias,
                                                     index_t batch, int bits, bool measure, bool force_sparse, int threads,
                                                     kernels::sparse_choice* choice) {
  kernels::sparse_choice c = choose_codebook_form(w, bias, batch, bits, measure);
  if (force_sparse) c.sparse = true;
  if (choice) *choice = c;
  // The sparse + codebook kernels run on one thread; more threads take the dense codebook engine.
  if (c.sparse && threads == 1) return std::make_unique<sparse_codebook_engine<Scalar>>(w, std::move(bias), batch, bits);
  return std::make_unique<codebook_engine<Scalar>>(w, std::move(bias), bits, threads);
}

}  // namespace slimnet::nn::compressed
