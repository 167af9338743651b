// Compressed sparse row (CSR) matrices with narrow column indices, and their products with a
// vector (SpMV, batch 1) and with a batch of vectors (SpMM). The references define both:
//   spmv:  y[i]    = bias[i] + sum_{p in row i} values[p] * x[col[p]]
//   spmm:  Y(i, j) = bias[i] + sum_{p in row i} values[p] * X(col[p], j)
// SpMM wants the activations batch-contiguous: X is (cols x batch) with the batch along a row, so
// each nonzero is broadcast and multiplied into a contiguous strip of X (no gathers). That is
// the layout of an im2col matrix, and the transpose of a Linear layer's (batch x features) input.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/matrix_ref.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
#define SLIMNET_CSR_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_CSR_AVX2 SLIMNET_TARGET("avx2,fma")
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Options of the sparse kernels.
template <class Scalar>
struct sparse_params {
  const Scalar* bias = nullptr;  ///< bias[i] is added to every output of row i; null: no bias
  int threads = 1;               ///< 1 by default (repeatable); <= 0: every core. Output rows are split.
  kernel_path path = kernel_path::automatic;
};

/// Row offsets of the sparse formats: 32 bits (a matrix holds fewer than 2^32 nonzeros).
using sparse_offset_t = std::uint32_t;

/// Smallest unsigned index type that holds every column index of a matrix with `cols` columns.
/// Its width in bytes: 1 (cols <= 256), 2 (cols <= 65536) or 4.
inline int narrow_index_bytes(index_t cols) { return cols <= 256 ? 1 : cols <= 65536 ? 2 : 4; }

/// Non-owning view of a CSR matrix. Row i holds entries [row_offsets[i], row_offsets[i+1]).
template <class Value, class Index>
struct csr_ref {
  index_t rows = 0, cols = 0;
  const sparse_offset_t* row_offsets = nullptr;  ///< rows + 1 entries, row_offsets[0] = 0
  const Index* col_indices = nullptr;            ///< < cols; increasing within a row when built from dense
  const Value* values = nullptr;

  index_t nnz() const { return rows == 0 ? 0 : static_cast<index_t>(row_offsets[rows]); }
};

/// A CSR matrix that owns its arrays. Index is the column index type (uint8_t, uint16_t, uint32_t):
/// the narrowest that fits is what makes the format pay at 10% density (4 + 2 bytes per nonzero
/// against 4 dense bytes per weight at 1000 columns).
template <class Value, class Index = std::uint32_t>
class csr_matrix {
  static_assert(std::is_unsigned_v<Index>, "CSR column indices must be an unsigned integer type.");

 public:
  using value_type = Value;
  using index_type = Index;

  csr_matrix() : row_offsets_(1, 0) {}

  /// Takes the three arrays; throws shape_error unless they describe a valid rows x cols matrix.
  csr_matrix(index_t rows, index_t cols, std::vector<sparse_offset_t> row_offsets, std::vector<Index> col_indices,
             std::vector<Value> values)
      : rows_(rows), cols_(cols), row_offsets_(std::move(row_offsets)), col_(std::move(col_indices)), val_(std::move(values)) {
    validate("slimnet::kernels::csr_matrix");
  }

  /// The entries of `a` that are not zero (NaN is kept; +0 and -0 are dropped), row by row.
  static csr_matrix from_dense(matrix_ref<const Value> a) {
    check_index_range("slimnet::kernels::csr_matrix::from_dense", a.cols);
    csr_matrix m;
    m.rows_ = a.rows;
    m.cols_ = a.cols;
    m.row_offsets_.assign(1, 0);
    m.row_offsets_.reserve(static_cast<std::size_t>(a.rows) + 1);
    for (index_t i = 0; i < a.rows; ++i) {
      for (index_t j = 0; j < a.cols; ++j) {
        const Value v = a(i, j);
        if (v != Value(0) || v != v) {
          m.col_.push_back(static_cast<Index>(j));
          m.val_.push_back(v);
        }
      }
      if (m.val_.size() >= std::numeric_limits<sparse_offset_t>::max()) {
        slimnet::detail::raise<shape_error>("slimnet::kernels::csr_matrix::from_dense", "more than {} nonzeros",
                                            std::numeric_limits<sparse_offset_t>::max() - 1);
      }
      m.row_offsets_.push_back(static_cast<sparse_offset_t>(m.val_.size()));
    }
    return m;
  }

  csr_ref<Value, Index> ref() const { return {rows_, cols_, row_offsets_.data(), col_.data(), val_.data()}; }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t nnz() const { return static_cast<index_t>(val_.size()); }
  double density() const { return rows_ * cols_ == 0 ? 0.0 : static_cast<double>(nnz()) / (static_cast<double>(rows_) * cols_); }
  /// Bytes of the three arrays: what the format costs in memory.
  std::size_t bytes() const {
    return row_offsets_.size() * sizeof(sparse_offset_t) + col_.size() * sizeof(Index) + val_.size() * sizeof(Value);
  }
  const std::vector<sparse_offset_t>& row_offsets() const { return row_offsets_; }
  const std::vector<Index>& col_indices() const { return col_; }
  const std::vector<Value>& values() const { return val_; }

  /// Throws config_error when a matrix with `cols` columns needs indices wider than Index.
  static void check_index_range(const char* fn, index_t cols) {
    if (cols > 0 && static_cast<std::uint64_t>(cols - 1) > std::numeric_limits<Index>::max()) {
      slimnet::detail::raise<config_error>(fn, "{} columns do not fit a {}-byte column index", cols, sizeof(Index));
    }
  }

 private:
  void validate(const char* fn) const {
    check_index_range(fn, cols_);
    if (rows_ < 0 || cols_ < 0 || row_offsets_.size() != static_cast<std::size_t>(rows_) + 1 || row_offsets_[0] != 0 ||
        col_.size() != val_.size() || row_offsets_.back() != val_.size()) {
      slimnet::detail::raise<shape_error>(fn, "{} x {} matrix with {} row offsets (last {}), {} indices and {} values", rows_, cols_,
                                          row_offsets_.size(), row_offsets_.empty() ? 0 : row_offsets_.back(), col_.size(), val_.size());
    }
    for (std::size_t i = 0; i + 1 < row_offsets_.size(); ++i) {
      if (row_offsets_[i] > row_offsets_[i + 1]) {
        slimnet::detail::raise<shape_error>(fn, "row offsets decrease at row {}: {} > {}", i, row_offsets_[i], row_offsets_[i + 1]);
      }
    }
    for (std::size_t p = 0; p < col_.size(); ++p) {
      if (static_cast<index_t>(col_[p]) >= cols_) {
        slimnet::detail::raise<shape_error>(fn, "column index {} at entry {} is out of range for {} columns", col_[p], p, cols_);
      }
    }
  }

  index_t rows_ = 0, cols_ = 0;
  std::vector<sparse_offset_t> row_offsets_;
  std::vector<Index> col_;
  std::vector<Value> val_;
};

namespace detail {

template <class Value, class Index>
void check_spmv(const char* fn, const csr_ref<Value, Index>& a, const Value* x, const Value* y) {
  if ((x == nullptr && a.cols > 0) || (y == nullptr && a.rows > 0)) {
    slimnet::detail::raise<shape_error>(fn, "null x or y for a {} x {} matrix", a.rows, a.cols);
  }
}

template <class Value>
void check_spmm(const char* fn, index_t rows, index_t cols, const matrix_ref<const Value>& x, const matrix_ref<Value>& y) {
  if (x.rows != cols || y.rows != rows || x.cols != y.cols) {
    slimnet::detail::raise<shape_error>(fn, "sparse ({} x {}) * ({} x {}) does not fit Y ({} x {})", rows, cols, x.rows, x.cols,
                                        y.rows, y.cols);
  }
}

}  // namespace detail

// --- references ---------------------------------------------------------------------------------

/// The definition of spmv: y = A x + bias, accumulated in double in stored order. x has a.cols
/// entries, y has a.rows.
template <class Value, class Index>
void spmv_csr_reference(const csr_ref<Value, Index>& a, const Value* x, Value* y, const sparse_params<Value>& params = {}) {
  detail::check_spmv("slimnet::kernels::spmv_csr_reference", a, x, y);
  for (index_t i = 0; i < a.rows; ++i) {
    double s = params.bias ? static_cast<double>(params.bias[i]) : 0.0;
    for (sparse_offset_t p = a.row_offsets[i]; p < a.row_offsets[i + 1]; ++p) {
      s += static_cast<double>(a.values[p]) * static_cast<double>(x[a.col_indices[p]]);
    }
    y[i] = static_cast<Value>(s);
  }
}

/// The definition of spmm: Y = A X + bias (bias[i] added along row i), accumulated in double.
/// X is (a.cols x n), Y is (a.rows x n), any strides.
template <class Value, class Index>
void spmm_csr_reference(const csr_ref<Value, Index>& a, matrix_ref<const Value> x, matrix_ref<Value> y,
                        const sparse_params<Value>& params = {}) {
  detail::check_spmm("slimnet::kernels::spmm_csr_reference", a.rows, a.cols, x, y);
  for (index_t i = 0; i < a.rows; ++i) {
    for (index_t j = 0; j < y.cols; ++j) {
      double s = params.bias ? static_cast<double>(params.bias[i]) : 0.0;
      for (sparse_offset_t p = a.row_offsets[i]; p < a.row_offsets[i + 1]; ++p) {
        s += static_cast<double>(a.values[p]) * static_cast<double>(x(a.col_indices[p], j));
      }
      y(i, j) = static_cast<Value>(s);
    }
  }
}

// --- strip kernels ------------------------------------------------------------------------------

namespace detail {

/// The threads' row ranges, balanced by nonzeros; one thread gets [0, rows) without allocating
/// (an empty vector holds no memory), so single-thread products allocate nothing per call.
struct row_split {
  std::vector<index_t> bounds;
  index_t rows = 0;
  template <class Prefix>
  row_split(const Prefix* prefix, index_t n, int threads) : rows(n) {
    if (threads > 1) bounds = balanced_split(prefix, n, threads);
  }
  index_t begin(int t) const { return bounds.empty() ? 0 : bounds[static_cast<std::size_t>(t)]; }
  index_t end(int t) const { return bounds.empty() ? rows : bounds[static_cast<std::size_t>(t) + 1]; }
};

/// Width of the batch strip the SpMM kernels hold in registers: 64 floats = 4 zmm registers.
constexpr index_t spmm_strip = 64;

/// Rows [r0, r1) of one strip: Y(i, 0:width) = (first ? bias[i] : Y(i, 0:width)) + A_i X(:, 0:width),
/// where A's column indices address rows of X (x points at the strip's first column).
/// `first` false accumulates into Y (later column blocks of a blocked matrix) and skips empty rows.
/// Contiguous: X and Y have col_stride 1; otherwise the strides are read from the views.
template <bool Contiguous, class Value, class Index>
void spmm_strip_portable(const csr_ref<Value, Index>& a, index_t r0, index_t r1, const Value* x, index_t ldx, index_t xs,
                         Value* y, index_t ldy, index_t ys, index_t width, bool first, const Value* bias) {
  Value acc[spmm_strip];
  const index_t sx = Contiguous ? 1 : xs, sy = Contiguous ? 1 : ys;
  for (index_t i = r0; i < r1; ++i) {
    const sparse_offset_t b = a.row_offsets[i], e = a.row_offsets[i + 1];
    Value* yr = y + i * ldy;
    if (!first && b == e) continue;
    const Value init = bias ? bias[i] : Value(0);
    for (index_t t = 0; t < width; ++t) acc[t] = first ? init : yr[t * sy];
    for (sparse_offset_t p = b; p < e; ++p) {
      const Value v = a.values[p];
      const Value* xr = x + static_cast<index_t>(a.col_indices[p]) * ldx;
      for (index_t t = 0; t < width; ++t) acc[t] += v * xr[t * sx];
    }
    for (index_t t = 0; t < width; ++t) yr[t * sy] = acc[t];
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// Loads 16 column indices of any width as 32-bit lanes (compiled for AVX-512 in every x86-64
/// build: SELL-16's kernels are chosen at run time, see sparse_sell.hpp).
template <class Index>
SLIMNET_TARGET("avx512f,avx512bw")
inline __m512i load_index16(const Index* p) {
  if constexpr (sizeof(Index) == 1) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else if constexpr (sizeof(Index) == 2) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else {
    return _mm512_loadu_si512(p);
  }
}

}  // namespace avx512
#endif

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {
/// The first n (< 16) indices, the other lanes zero; never reads past p + n.
template <class Index>
SLIMNET_CSR_AVX512 inline __m512i load_index_partial(const Index* p, unsigned n) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
  if constexpr (sizeof(Index) == 1) {
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p));
  } else if constexpr (sizeof(Index) == 2) {
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  } else {
    return _mm512_maskz_loadu_epi32(m, p);
  }
}

/// The float strip kernel: NV zmm accumulators per row (NV * 16 >= width), the last one masked.
/// Per nonzero: one broadcast, NV loads of X's row, NV FMAs; the accumulators stay in registers
/// for the whole row. Two accumulator sets take alternate nonzeros: with one set, NV = 4 chains of
/// 4-cycle FMAs allow one nonzero per 4 cycles at best and measured 7-8; two sets hide the latency.
template <int NV, class Index>
SLIMNET_CSR_AVX512 void spmm_strip(const csr_ref<float, Index>& a, index_t r0, index_t r1, const float* x, index_t ldx, float* y,
                                   index_t ldy, index_t width, bool first, const float* bias) {
  const unsigned tail = static_cast<unsigned>(width - (NV - 1) * 16);
  const __mmask16 last = static_cast<__mmask16>(tail >= 16 ? 0xffff : (1u << tail) - 1);
  const sparse_offset_t* off = a.row_offsets;
  const Index* idx = a.col_indices;
  const float* val = a.values;
  for (index_t i = r0; i < r1; ++i) {
    const sparse_offset_t b = off[i], e = off[i + 1];
    float* yr = y + i * ldy;
    if (!first && b == e) continue;
    __m512 acc[NV], acc2[NV];
    if (first) {
      const __m512 init = bias ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[v] = init;
    } else {
#pragma GCC unroll 4
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_loadu_ps(yr + 16 * v);
      acc[NV - 1] = _mm512_maskz_loadu_ps(last, yr + 16 * (NV - 1));
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc2[v] = _mm512_setzero_ps();
    sparse_offset_t p = b;
    for (; p + 2 <= e; p += 2) {
      const __m512 w0 = _mm512_set1_ps(val[p]), w1 = _mm512_set1_ps(val[p + 1]);
      const float* x0 = x + static_cast<index_t>(idx[p]) * ldx;
      const float* x1 = x + static_cast<index_t>(idx[p + 1]) * ldx;
#pragma GCC unroll 4
      for (int v = 0; v < NV - 1; ++v) {
        acc[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * v), acc[v]);
        acc2[v] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 16 * v), acc2[v]);
      }
      acc[NV - 1] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(last, x0 + 16 * (NV - 1)), acc[NV - 1]);
      acc2[NV - 1] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(last, x1 + 16 * (NV - 1)), acc2[NV - 1]);
    }
    if (p < e) {
      const __m512 w0 = _mm512_set1_ps(val[p]);
      const float* x0 = x + static_cast<index_t>(idx[p]) * ldx;
#pragma GCC unroll 4
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * v), acc[v]);
      acc[NV - 1] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(last, x0 + 16 * (NV - 1)), acc[NV - 1]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(yr + 16 * v, _mm512_add_ps(acc[v], acc2[v]));
    _mm512_mask_storeu_ps(yr + 16 * (NV - 1), last, _mm512_add_ps(acc[NV - 1], acc2[NV - 1]));
  }
}

template <class Index>
SLIMNET_CSR_AVX512 void spmm_strip_dispatch(const csr_ref<float, Index>& a, index_t r0, index_t r1, const float* x, index_t ldx,
                                            float* y, index_t ldy, index_t width, bool first, const float* bias) {
  switch ((width + 15) / 16) {
    case 1: spmm_strip<1>(a, r0, r1, x, ldx, y, ldy, width, first, bias); break;
    case 2: spmm_strip<2>(a, r0, r1, x, ldx, y, ldy, width, first, bias); break;
    case 3: spmm_strip<3>(a, r0, r1, x, ldx, y, ldy, width, first, bias); break;
    default: spmm_strip<4>(a, r0, r1, x, ldx, y, ldy, width, first, bias); break;
  }
}

/// y_i = bias_i + sum_p v_p x[c_p]: 16 nonzeros of a row per step, x gathered (x is small and
/// cache-resident at batch 1), one horizontal sum per row.
template <class Index>
SLIMNET_CSR_AVX512 void spmv_csr_rows(const csr_ref<float, Index>& a, index_t r0, index_t r1, const float* x, float* y,
                                      const float* bias) {
  for (index_t i = r0; i < r1; ++i) {
    sparse_offset_t p = a.row_offsets[i];
    const sparse_offset_t e = a.row_offsets[i + 1];
    __m512 acc = _mm512_setzero_ps();
    for (; p + 16 <= e; p += 16) {
      const __m512 xv = _mm512_i32gather_ps(load_index16(a.col_indices + p), x, 4);
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.values + p), xv, acc);
    }
    if (p < e) {
      const unsigned n = e - p;
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, load_index_partial(a.col_indices + p, n), x, 4);
      acc = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(m, a.values + p), xv, acc, m);
    }
    y[i] = _mm512_reduce_add_ps(acc) + (bias ? bias[i] : 0.0f);
  }
}

/// products[q] = values[q] x[col[q]] for q < nnz - nnz % 16, 16 per step; returns how many it wrote.
template <class Index>
SLIMNET_CSR_AVX512 index_t csr_products(const csr_ref<float, Index>& a, const float* x, float* products, index_t nnz) {
  index_t q = 0;
  for (; q + 16 <= nnz; q += 16) {
    const __m512 xv = _mm512_i32gather_ps(load_index16(a.col_indices + q), x, 4);
    _mm512_storeu_ps(products + q, _mm512_mul_ps(_mm512_loadu_ps(a.values + q), xv));
  }
  return q;
}

}  // namespace avx512

namespace avx2 {

/// 8 column indices of any width as 32-bit lanes (the SELL-16 AVX2 lookups read theirs with it too).
template <class Index>
SLIMNET_CSR_AVX2 inline __m256i load_csr_index8(const Index* p) {
  if constexpr (sizeof(Index) == 1) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else if constexpr (sizeof(Index) == 2) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
}

/// All ones in lanes [0, n) of 8 (n <= 8): the mask of a strip's last vector.
SLIMNET_CSR_AVX2 inline __m256i first_lanes8(index_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// acc[0:NV] += sum_{p in [b, e)} val[p] * row(p)[0:8 NV], row(p) the strip of X nonzero p reads,
/// its last vector loaded through the lane mask `last` (never touching memory past the strip). Per
/// nonzero one broadcast, NV loads, NV FMAs. With NV <= 4 a second accumulator set takes alternate
/// nonzeros, as in the AVX-512 strip kernel: an FMA's 4-5 cycle latency at 2 per cycle needs 8-10
/// independent chains. Wider strips have NV = 5..8 chains in one set already, and two sets would
/// not fit AVX2's 16 registers. Shared by the CSR strips (row = X's row col[p]) and the direct
/// sparse convolution (row = the input at the tap's offset).
template <int NV, class Row>
SLIMNET_CSR_AVX2 inline void strip_accumulate(const float* val, sparse_offset_t b, sparse_offset_t e, Row row, __m256i last,
                                              __m256* acc) {
  sparse_offset_t p = b;
  if constexpr (NV <= 4) {
    __m256 acc2[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc2[v] = _mm256_setzero_ps();
    for (; p + 2 <= e; p += 2) {
      const __m256 w0 = _mm256_set1_ps(val[p]), w1 = _mm256_set1_ps(val[p + 1]);
      const float* x0 = row(p);
      const float* x1 = row(p + 1);
#pragma GCC unroll 4
      for (int v = 0; v < NV - 1; ++v) {
        acc[v] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8 * v), acc[v]);
        acc2[v] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + 8 * v), acc2[v]);
      }
      acc[NV - 1] = _mm256_fmadd_ps(w0, _mm256_maskload_ps(x0 + 8 * (NV - 1), last), acc[NV - 1]);
      acc2[NV - 1] = _mm256_fmadd_ps(w1, _mm256_maskload_ps(x1 + 8 * (NV - 1), last), acc2[NV - 1]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_add_ps(acc[v], acc2[v]);
  }
  for (; p < e; ++p) {
    const __m256 w0 = _mm256_set1_ps(val[p]);
    const float* x0 = row(p);
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8 * v), acc[v]);
    acc[NV - 1] = _mm256_fmadd_ps(w0, _mm256_maskload_ps(x0 + 8 * (NV - 1), last), acc[NV - 1]);
  }
}

/// The float strip kernel on 8-float vectors: NV ymm accumulators per row (8 NV >= width), summed by
/// strip_accumulate.
template <int NV, class Index>
SLIMNET_CSR_AVX2 void spmm_strip(const csr_ref<float, Index>& a, index_t r0, index_t r1, const float* x, index_t ldx, float* y,
                                 index_t ldy, index_t width, bool first, const float* bias) {
  const __m256i last = first_lanes8(width - (NV - 1) * 8);
  const Index* idx = a.col_indices;
  auto row = [x, idx, ldx](sparse_offset_t p) { return x + static_cast<index_t>(idx[p]) * ldx; };
  for (index_t i = r0; i < r1; ++i) {
    const sparse_offset_t b = a.row_offsets[i], e = a.row_offsets[i + 1];
    float* yr = y + i * ldy;
    if (!first && b == e) continue;
    __m256 acc[NV];
    if (first) {
      const __m256 init = bias ? _mm256_set1_ps(bias[i]) : _mm256_setzero_ps();
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = init;
    } else {
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_loadu_ps(yr + 8 * v);
      acc[NV - 1] = _mm256_maskload_ps(yr + 8 * (NV - 1), last);
    }
    strip_accumulate<NV>(a.values, b, e, row, last, acc);
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(yr + 8 * v, acc[v]);
    _mm256_maskstore_ps(yr + 8 * (NV - 1), last, acc[NV - 1]);
  }
}

template <class Index>
SLIMNET_CSR_AVX2 void spmm_strip_dispatch(const csr_ref<float, Index>& a, index_t r0, index_t r1, const float* x, index_t ldx,
                                          float* y, index_t ldy, index_t width, bool first, const float* bias) {
  switch ((width + 7) / 8) {
    case 1:
      spmm_strip<1>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    case 2:
      spmm_strip<2>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    case 3:
      spmm_strip<3>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    case 4:
      spmm_strip<4>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    case 5:
      spmm_strip<5>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    case 6:
      spmm_strip<6>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    case 7:
      spmm_strip<7>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
    default:
      spmm_strip<8>(a, r0, r1, x, ldx, y, ldy, width, first, bias);
      break;
  }
}

/// The sum of the 8 lanes of v.
SLIMNET_CSR_AVX2 inline float reduce_add8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// spmv_csr's rows on AVX2: 8 nonzeros of a row per step with x gathered, the row's last
/// (nnz mod 8) products added in scalar after the horizontal sum. Rows of fewer than 16 nonzeros
/// run scalar: a gather and a horizontal sum cost more than 8-15 scalar products (1000 x 1000 at
/// 1%, 10 per row, AMD EPYC: 10.5 us with gathers against 8.0 portable; 77 against 84 at 10%).
template <class Index>
SLIMNET_CSR_AVX2 void spmv_csr_rows(const csr_ref<float, Index>& a, index_t r0, index_t r1, const float* x, float* y,
                                    const float* bias) {
  for (index_t i = r0; i < r1; ++i) {
    sparse_offset_t p = a.row_offsets[i];
    const sparse_offset_t e = a.row_offsets[i + 1];
    __m256 acc = _mm256_setzero_ps();
    if (e - p >= 16) {
      for (; p + 8 <= e; p += 8) {
        const __m256 xv = _mm256_i32gather_ps(x, load_csr_index8(a.col_indices + p), 4);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.values + p), xv, acc);
      }
    }
    float s = reduce_add8(acc);
    for (; p < e; ++p) s += a.values[p] * x[a.col_indices[p]];
    y[i] = s + (bias ? bias[i] : 0.0f);
  }
}

/// products[q] = values[q] x[col[q]] for q < nnz - nnz % 8, 8 per step; returns how many it wrote.
template <class Index>
SLIMNET_CSR_AVX2 index_t csr_products(const csr_ref<float, Index>& a, const float* x, float* products, index_t nnz) {
  index_t q = 0;
  for (; q + 8 <= nnz; q += 8) {
    const __m256 xv = _mm256_i32gather_ps(x, load_csr_index8(a.col_indices + q), 4);
    _mm256_storeu_ps(products + q, _mm256_mul_ps(_mm256_loadu_ps(a.values + q), xv));
  }
  return q;
}

}  // namespace avx2
#endif

template <class Value, class Index>
void spmv_csr_rows_portable(const csr_ref<Value, Index>& a, index_t r0, index_t r1, const Value* x, Value* y, const Value* bias) {
  for (index_t i = r0; i < r1; ++i) {
    Value s = bias ? bias[i] : Value(0);
    for (sparse_offset_t p = a.row_offsets[i]; p < a.row_offsets[i + 1]; ++p) s += a.values[p] * x[a.col_indices[p]];
    y[i] = s;
  }
}

/// Tag of the CSR products' path counters.
struct csr_tag;

/// One strip of width <= spmm_strip (xs, ys point at its first column) for rows [r0, r1), on
/// `path` (csr_call_path's choice: a SIMD family only for batch-contiguous operands).
template <class Value, class Index>
void spmm_strip_any(const csr_ref<Value, Index>& a, index_t r0, index_t r1, const Value* xs, index_t ldx, index_t xcs, Value* ys,
                    index_t ldy, index_t ycs, index_t width, bool first, const Value* bias, isa path) {
  const bool contiguous = xcs == 1 && ycs == 1;
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (contiguous && path == isa::avx512) {
      avx512::spmm_strip_dispatch(a, r0, r1, xs, ldx, ys, ldy, width, first, bias);
      return;
    }
    if (contiguous && path == isa::avx2) {
      avx2::spmm_strip_dispatch(a, r0, r1, xs, ldx, ys, ldy, width, first, bias);
      return;
    }
  }
#endif
  (void)path;
  if (contiguous) {
    spmm_strip_portable<true>(a, r0, r1, xs, ldx, 1, ys, ldy, 1, width, first, bias);
  } else {
    spmm_strip_portable<false>(a, r0, r1, xs, ldx, xcs, ys, ldy, ycs, width, first, bias);
  }
}

}  // namespace detail

// --- fast kernels -------------------------------------------------------------------------------

/// The family float CSR products (spmv_csr, spmv_csr_products, and spmm_csr / spmm_blocked_csr on
/// batch-contiguous operands) take under the current active_isa(): avx512, avx2, else portable.
/// Compiled with function target attributes in every x86-64 build, whatever the program's -march.
inline isa csr_path() { return x86_simd_path(); }

/// How many CSR products (spmv_csr, spmv_csr_products, spmm_csr, spmm_blocked_csr calls) each
/// family computed since the program started; calls with an empty output are not counted.
inline std::uint64_t csr_path_calls(isa path) { return detail::path_calls<detail::csr_tag>(path); }

namespace detail {
/// The family a CSR product over Value runs on: csr_path() for float with the automatic path and
/// batch-contiguous operands (the SIMD strips read X's rows as vectors), portable otherwise; counted
/// in csr_path_calls when `counted` (the product computes anything).
template <class Value>
isa csr_call_path(kernel_path requested, bool contiguous, bool counted) {
  const isa path = std::is_same_v<Value, float> && requested != kernel_path::portable && contiguous ? csr_path() : isa::portable;
  return counted ? count_path<csr_tag>(path) : path;
}
}  // namespace detail

/// y = A x + bias (batch 1). Float on AVX-512: 16 nonzeros of a row per step with gathered x (8
/// on AVX2).
/// For batch 1 the sliced ELL format (sparse_sell.hpp) is usually faster: it needs no horizontal sums.
template <class Value, class Index>
void spmv_csr(const csr_ref<Value, Index>& a, const Value* x, Value* y, const sparse_params<Value>& params = {}) {
  detail::check_spmv("slimnet::kernels::spmv_csr", a, x, y);
  const isa path = detail::csr_call_path<Value>(params.path, true, a.rows > 0);
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), std::max<index_t>(1, a.rows / 64));
  const detail::row_split bounds(a.row_offsets, a.rows, threads);
  detail::run_threads(threads, [&](int t, int) {
    const index_t r0 = bounds.begin(t), r1 = bounds.end(t);
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Value, float>) {
      if (path == isa::avx512) {
        detail::avx512::spmv_csr_rows(a, r0, r1, x, y, params.bias);
        return;
      }
      if (path == isa::avx2) {
        detail::avx2::spmv_csr_rows(a, r0, r1, x, y, params.bias);
        return;
      }
    }
#endif
    (void)path;
    detail::spmv_csr_rows_portable(a, r0, r1, x, y, params.bias);
  });
}

/// y = A x + bias (batch 1) for matrices with short rows (a few nonzeros each, e.g. a layer pruned
/// to 0.5%), where spmv_csr's horizontal sum per row costs more than the row's products: first the
/// products p_q = values[q] x[col[q]] of all nonzeros, 16 per step (one gather, one multiply, no
/// row boundaries), into `products` (a.nnz() entries, the caller's scratch), then each row's sum
/// y[i] = bias[i] + sum_{q in row i} p_q in stored order. One thread.
template <class Value, class Index>
void spmv_csr_products(const csr_ref<Value, Index>& a, const Value* x, Value* y, Value* products, const sparse_params<Value>& params = {}) {
  detail::check_spmv("slimnet::kernels::spmv_csr_products", a, x, y);
  const index_t nnz = a.nnz();
  const isa path = detail::csr_call_path<Value>(params.path, true, a.rows > 0);
  index_t q = 0;
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (path == isa::avx512) q = detail::avx512::csr_products(a, x, products, nnz);
    if (path == isa::avx2) q = detail::avx2::csr_products(a, x, products, nnz);
  }
#endif
  (void)path;
  for (; q < nnz; ++q) products[q] = a.values[q] * x[a.col_indices[q]];
  for (index_t i = 0; i < a.rows; ++i) {
    Value sum = params.bias ? params.bias[i] : Value(0);
    for (sparse_offset_t p = a.row_offsets[i]; p < a.row_offsets[i + 1]; ++p) sum += products[p];
    y[i] = sum;
  }
}

/// y = A x + bias (batch 1) with the row kernel that suits A's shape: spmv_csr_products for rows of
/// fewer than 16 nonzeros on average (`products` resized to a.nnz() entries, the caller's scratch),
/// spmv_csr otherwise (16 nonzeros of a row per step). One thread.
template <class Value, class Index>
void spmv_csr_compact(const csr_ref<Value, Index>& a, const Value* x, Value* y, std::vector<Value>& products,
                      const sparse_params<Value>& params = {}) {
  if (a.nnz() < 16 * a.rows) {
    products.resize(static_cast<std::size_t>(a.nnz()));
    spmv_csr_products(a, x, y, products.data(), params);
  } else {
    spmv_csr(a, x, y, params);
  }
}

/// Y = A X + bias with X (a.cols x n) and Y (a.rows x n). Fast when X and Y are batch-contiguous
/// (col_stride 1): each nonzero is broadcast over a 64-wide strip of X's row, accumulated in
/// registers for the whole row. Any strides work (a scalar loop then).
template <class Value, class Index>
void spmm_csr(const csr_ref<Value, Index>& a, matrix_ref<const Value> x, matrix_ref<Value> y, const sparse_params<Value>& params = {}) {
  detail::check_spmm("slimnet::kernels::spmm_csr", a.rows, a.cols, x, y);
  if (y.rows == 0 || y.cols == 0) return;
  const isa path = detail::csr_call_path<Value>(params.path, x.col_stride == 1 && y.col_stride == 1, true);
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), std::max<index_t>(1, a.rows / 16));
  const detail::row_split bounds(a.row_offsets, a.rows, threads);
  detail::run_threads(threads, [&](int t, int) {
    const index_t r0 = bounds.begin(t), r1 = bounds.end(t);
    for (index_t j0 = 0; j0 < y.cols; j0 += detail::spmm_strip) {
      detail::spmm_strip_any(a, r0, r1, x.data + j0 * x.col_stride, x.row_stride, x.col_stride, y.data + j0 * y.col_stride,
                             y.row_stride, y.col_stride, std::min(detail::spmm_strip, y.cols - j0), true, params.bias, path);
    }
  });
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
