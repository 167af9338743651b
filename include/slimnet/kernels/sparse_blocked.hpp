// Column-blocked CSR: the matrix cut into panels of `block_cols` columns, each a CSR matrix with
// indices relative to its first column. The format SpMM (batch >= 2) wants at 5-50% density.
//
// Why: a 64-wide strip of X is 256 bytes per row of X, so a 1000-column X strip is 256 KB and the
// plain CSR kernel streams one strip row per nonzero from wherever it sits. Panels of 128-256
// columns keep the strip block X(c0:c0+256, :) (64 KB) hot across all rows of the panel; the price
// is a load and store of Y's strip per row and panel, which is why blocking pays only when rows
// hold several nonzeros per panel (blocked_csr_block_cols decides, from measurements).
// Relative indices also narrow the index to one byte: 5 bytes per nonzero instead of 6 or 8.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "slimnet/kernels/sparse_csr.hpp"

namespace slimnet::kernels {

/// Non-owning view of a column-blocked CSR matrix.
template <class Value, class Index>
struct blocked_csr_ref {
  index_t rows = 0, cols = 0;
  index_t block_cols = 1;  ///< panel b covers columns [b * block_cols, min(cols, (b + 1) * block_cols))
  /// blocks() x (rows + 1): row i of panel b holds entries [row_offsets[b*(rows+1) + i], ... + i + 1)
  /// of the shared arrays below (offsets are absolute, so only panel 0 starts at 0).
  const sparse_offset_t* row_offsets = nullptr;
  const sparse_offset_t* row_prefix = nullptr;  ///< rows + 1: nonzeros of rows [0, i) in all panels
  const Index* col_indices = nullptr;           ///< relative to the panel's first column
  const Value* values = nullptr;

  /// Number of panels (1 for a matrix without columns, so that its rows are still written).
  index_t blocks() const { return cols == 0 ? 1 : (cols + block_cols - 1) / block_cols; }
  index_t nnz() const { return rows == 0 ? 0 : static_cast<index_t>(row_prefix[rows]); }
  /// Panel b as a CSR view of rows x (its width) whose row_offsets do not start at 0.
  csr_ref<Value, Index> panel(index_t b) const {
    const index_t c0 = b * block_cols;
    return {rows, std::min(block_cols, cols - c0), row_offsets + b * (rows + 1), col_indices, values};
  }
};

/// Panel width for SpMM with 64-wide strips, from benchmarks/sparse_vs_dense --tune (1000 x 1000,
/// batch 64, Zen 4): one panel (plain CSR) while rows hold fewer than 5 nonzeros per 256 columns
/// (below ~2% density reloading Y's strip per panel costs more than L1 saves: 23 vs 29 us at 1%);
/// 256-column panels (64 KB of X strip, from L2 but reused) up to 20% density (171 us at 10%
/// against 218 us for plain CSR and 211 us for 64-column panels); 128 columns above (806 vs 982 us
/// at 50%), where more nonzeros per row and panel amortise the extra panels.
inline index_t blocked_csr_block_cols(index_t rows, index_t cols, index_t nnz) {
  if (cols <= 256 || rows == 0) return std::max<index_t>(cols, 1);
  const double density = static_cast<double>(nnz) / (static_cast<double>(rows) * static_cast<double>(cols));
  if (density * 256 < 5) return cols;
  return density > 0.2 ? 128 : 256;
}

/// A column-blocked CSR matrix that owns its arrays. Index uint8_t fits panels of <= 256 columns.
template <class Value, class Index = std::uint8_t>
class blocked_csr_matrix {
  static_assert(std::is_unsigned_v<Index>, "Column indices must be an unsigned integer type.");

 public:
  blocked_csr_matrix() : row_offsets_(1, 0), row_prefix_(1, 0) {}

  /// The nonzero entries of `a` (as csr_matrix::from_dense) in panels of `block_cols` columns;
  /// block_cols <= 0 picks blocked_csr_block_cols, capped to what Index can address.
  static blocked_csr_matrix from_dense(matrix_ref<const Value> a, index_t block_cols = 0) {
    const char* fn = "slimnet::kernels::blocked_csr_matrix::from_dense";
    index_t nnz = 0;
    for (index_t i = 0; i < a.rows; ++i)
      for (index_t j = 0; j < a.cols; ++j) nnz += is_stored(a(i, j));
    if (block_cols <= 0) {
      block_cols = std::min<index_t>(blocked_csr_block_cols(a.rows, a.cols, nnz), index_t{std::numeric_limits<Index>::max()} + 1);
    }
    block_cols = std::max<index_t>(1, std::min(block_cols, std::max<index_t>(a.cols, 1)));
    csr_matrix<Value, Index>::check_index_range(fn, block_cols);
    if (nnz >= static_cast<index_t>(std::numeric_limits<sparse_offset_t>::max())) {
      slimnet::detail::raise<shape_error>(fn, "{} nonzeros do not fit 32-bit offsets", nnz);
    }
    blocked_csr_matrix m;
    m.rows_ = a.rows;
    m.cols_ = a.cols;
    m.block_cols_ = block_cols;
    const index_t blocks = a.cols == 0 ? 1 : (a.cols + block_cols - 1) / block_cols;
    m.row_offsets_.clear();
    m.row_offsets_.reserve(static_cast<std::size_t>(blocks * (a.rows + 1)));
    m.col_.reserve(static_cast<std::size_t>(nnz));
    m.val_.reserve(static_cast<std::size_t>(nnz));
    std::vector<sparse_offset_t> per_row(static_cast<std::size_t>(a.rows), 0);
    for (index_t b = 0; b < blocks; ++b) {
      const index_t c0 = b * block_cols, c1 = std::min(a.cols, c0 + block_cols);
      m.row_offsets_.push_back(static_cast<sparse_offset_t>(m.val_.size()));
      for (index_t i = 0; i < a.rows; ++i) {
        for (index_t j = c0; j < c1; ++j) {
          const Value v = a(i, j);
          if (is_stored(v)) {
            m.col_.push_back(static_cast<Index>(j - c0));
            m.val_.push_back(v);
            ++per_row[static_cast<std::size_t>(i)];
          }
        }
        m.row_offsets_.push_back(static_cast<sparse_offset_t>(m.val_.size()));
      }
    }
    m.row_prefix_.assign(1, 0);
    for (index_t i = 0; i < a.rows; ++i) m.row_prefix_.push_back(m.row_prefix_.back() + per_row[static_cast<std::size_t>(i)]);
    return m;
  }

  blocked_csr_ref<Value, Index> ref() const {
    return {rows_, cols_, block_cols_, row_offsets_.data(), row_prefix_.data(), col_.data(), val_.data()};
  }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t block_cols() const { return block_cols_; }
  index_t nnz() const { return static_cast<index_t>(val_.size()); }
  std::size_t bytes() const {
    return (row_offsets_.size() + row_prefix_.size()) * sizeof(sparse_offset_t) + col_.size() * sizeof(Index) +
           val_.size() * sizeof(Value);
  }

 private:
  static bool is_stored(Value v) { return v != Value(0) || v != v; }

  index_t rows_ = 0, cols_ = 0, block_cols_ = 1;
  std::vector<sparse_offset_t> row_offsets_, row_prefix_;
  std::vector<Index> col_;
  std::vector<Value> val_;
};

/// The definition: Y = A X + bias as spmm_csr_reference, walking the panels (double accumulation
/// per panel in stored order, panels in column order).
template <class Value, class Index>
void spmm_blocked_csr_reference(const blocked_csr_ref<Value, Index>& a, matrix_ref<const Value> x, matrix_ref<Value> y,
                                const sparse_params<Value>& params = {}) {
  detail::check_spmm("slimnet::kernels::spmm_blocked_csr_reference", a.rows, a.cols, x, y);
  for (index_t i = 0; i < a.rows; ++i) {
    for (index_t j = 0; j < y.cols; ++j) {
      double s = params.bias ? static_cast<double>(params.bias[i]) : 0.0;
      for (index_t b = 0; b < a.blocks(); ++b) {
        const auto p = a.panel(b);
        for (sparse_offset_t q = p.row_offsets[i]; q < p.row_offsets[i + 1]; ++q) {
          s += static_cast<double>(p.values[q]) * static_cast<double>(x(b * a.block_cols + p.col_indices[q], j));
        }
      }
      y(i, j) = static_cast<Value>(s);
    }
  }
}

/// Y = A X + bias with X (a.cols x n), Y (a.rows x n), fast when both are batch-contiguous. For
/// each 64-wide strip, panel by panel: the panel's block of X stays in L1 while every row of the
/// panel is accumulated into Y's strip (held in registers for the row).
template <class Value, class Index>
void spmm_blocked_csr(const blocked_csr_ref<Value, Index>& a, matrix_ref<const Value> x, matrix_ref<Value> y,
                      const sparse_params<Value>& params = {}) {
  detail::check_spmm("slimnet::kernels::spmm_blocked_csr", a.rows, a.cols, x, y);
  if (y.rows == 0 || y.cols == 0) return;
  const isa path = detail::csr_call_path<Value>(params.path, x.col_stride == 1 && y.col_stride == 1, true);
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), std::max<index_t>(1, a.rows / 16));
  const detail::row_split bounds(a.row_prefix, a.rows, threads);
  detail::run_threads(threads, [&](int t, int) {
    const index_t r0 = bounds.begin(t), r1 = bounds.end(t);
    for (index_t j0 = 0; j0 < y.cols; j0 += detail::spmm_strip) {
      const index_t width = std::min(detail::spmm_strip, y.cols - j0);
      for (index_t b = 0; b < a.blocks(); ++b) {
        detail::spmm_strip_any(a.panel(b), r0, r1, x.data + b * a.block_cols * x.row_stride + j0 * x.col_stride, x.row_stride,
                               x.col_stride, y.data + j0 * y.col_stride, y.row_stride, y.col_stride, width, b == 0, params.bias,
                               path);
      }
    }
  });
}

}  // namespace slimnet::kernels
