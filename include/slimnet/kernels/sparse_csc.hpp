// Compressed sparse column (CSC) matrices and the activation-sparse matrix-vector product of EIE
// (Han et al. 2016, "EIE: Efficient Inference Engine on Compressed Deep Neural Network", ISCA):
// weight sparsity times input sparsity. The reference defines it:
//   y = bias;  for every column j with x[j] != 0:  y[row[p]] = fma(values[p], x[j], y[row[p]])  for p in column j
// Work is nnz x (fraction of nonzero inputs) instead of nnz: MNIST pixels are ~80% exactly zero and
// ReLU outputs about half, so the first layer of LeNet-300-100 touches a fifth of its weights.
//
// Skipping x[j] == 0 drops terms that are exactly zero for finite weights (0 * w = +-0, and adding
// +-0 leaves a nonzero sum unchanged), so the result equals the same product without skipping
// (csc_skip::none) bitwise, up to the sign of an exact-zero output. Against the dense product it
// agrees within float rounding only: the dense kernels sum row by row in another order. (A weight
// of inf or NaN times an input of 0 would give NaN in the dense product and is skipped here.)
//
// Every update is one fused multiply-add in column order in all paths, so the portable, AVX2,
// AVX-512 and reference results are bitwise equal. The paths are chosen per call from active_isa()
// (csc_path()), the SIMD ones compiled with function target attributes in every x86-64 build, so
// the rounding cannot depend on -march: the reference and the portable loop call std::fma (inlined
// as vfmadd with -mfma; otherwise glibc's fma, which runs the FMA instruction on CPUs that have it
// and a correctly rounded emulation on those that do not), the SIMD paths the instruction.
// Storage: 4-byte value + 2-byte row index per nonzero and 4 bytes per column (uint16 rows: <= 65536).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/sparse_csr.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#define SLIMNET_CSC_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_CSC_AVX2 SLIMNET_TARGET("avx2,fma")
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Non-owning view of a CSC matrix. Column j holds entries [col_offsets[j], col_offsets[j+1]).
template <class Value, class Index>
struct csc_ref {
  index_t rows = 0, cols = 0;
  const sparse_offset_t* col_offsets = nullptr;  ///< cols + 1 entries, col_offsets[0] = 0
  const Index* row_indices = nullptr;            ///< < rows, increasing within a column
  const Value* values = nullptr;

  index_t nnz() const { return cols == 0 ? 0 : static_cast<index_t>(col_offsets[cols]); }
};

/// Which inputs the column product skips: zeros (EIE) or none (every column, for comparisons).
enum class csc_skip { zeros, none };

/// A CSC matrix that owns its arrays; Index is the row index type (uint16_t: rows <= 65536).
template <class Value, class Index = std::uint16_t>
class csc_matrix {
  static_assert(std::is_unsigned_v<Index>, "CSC row indices must be an unsigned integer type.");

 public:
  csc_matrix() : col_offsets_(1, 0) {}

  /// The entries of `a` that are not zero (NaN is kept; +0 and -0 are dropped), column by column.
  static csc_matrix from_dense(matrix_ref<const Value> a) {
    const char* fn = "slimnet::kernels::csc_matrix::from_dense";
    if (a.rows > static_cast<index_t>(std::numeric_limits<Index>::max()) + 1) {
      slimnet::detail::raise<shape_error>(fn, "{} rows do not fit {}-byte row indices", a.rows, sizeof(Index));
    }
    csc_matrix m;
    m.rows_ = a.rows;
    m.cols_ = a.cols;
    m.col_offsets_.assign(1, 0);
    m.col_offsets_.reserve(static_cast<std::size_t>(a.cols) + 1);
    for (index_t j = 0; j < a.cols; ++j) {
      for (index_t i = 0; i < a.rows; ++i) {
        const Value v = a(i, j);
        if (v != Value(0) || v != v) {
          m.row_.push_back(static_cast<Index>(i));
          m.val_.push_back(v);
        }
      }
      if (m.val_.size() >= std::numeric_limits<sparse_offset_t>::max()) {
        slimnet::detail::raise<shape_error>(fn, "{} nonzeros do not fit 32-bit offsets", m.val_.size());
      }
      m.col_offsets_.push_back(static_cast<sparse_offset_t>(m.val_.size()));
    }
    return m;
  }

  csc_ref<Value, Index> ref() const { return {rows_, cols_, col_offsets_.data(), row_.data(), val_.data()}; }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t nnz() const { return static_cast<index_t>(val_.size()); }
  std::size_t bytes() const {
    return col_offsets_.size() * sizeof(sparse_offset_t) + row_.size() * sizeof(Index) + val_.size() * sizeof(Value);
  }

 private:
  index_t rows_ = 0, cols_ = 0;
  std::vector<sparse_offset_t> col_offsets_;
  std::vector<Index> row_;
  std::vector<Value> val_;
};

namespace detail {

/// a * b + c rounded once (every path and the reference use this).
template <class Value>
inline Value csc_madd(Value a, Value b, Value c) {
  return std::fma(a, b, c);
}

/// Columns are visited in chunks: first the chunk's nonzero inputs are listed without branches
/// (a branch per column mispredicts on inputs that change every call: measured 6.2 against 3.4 us
/// for LeNet-300-100 fc1 at 25% nonzero inputs at random positions vs MNIST's runs of zeros), then
/// only the listed columns are walked, in column order.
constexpr index_t csc_chunk = 256;

/// The columns j in [j0, j1) with x[j] != 0 (all of them for csc_skip::none), in order; returns
/// how many. `active` holds csc_chunk entries (j1 - j0 <= csc_chunk).
template <class Value>
inline int csc_active_columns(const Value* x, index_t j0, index_t j1, csc_skip skip, std::int32_t* active) {
  int k = 0;
  if (skip == csc_skip::none) {
    for (index_t j = j0; j < j1; ++j) active[k++] = static_cast<std::int32_t>(j);
    return k;
  }
  for (index_t j = j0; j < j1; ++j) {
    active[k] = static_cast<std::int32_t>(j);
    k += x[j] != Value(0);
  }
  return k;
}

template <class Value, class Index>
void spmv_csc_portable(const csc_ref<Value, Index>& a, const Value* x, Value* y, csc_skip skip) {
  std::int32_t active[csc_chunk + 16];
  for (index_t j0 = 0; j0 < a.cols; j0 += csc_chunk) {
    const int k = csc_active_columns(x, j0, std::min(a.cols, j0 + csc_chunk), skip, active);
    for (int t = 0; t < k; ++t) {
      const index_t j = active[t];
      const Value xj = x[j];
      for (sparse_offset_t p = a.col_offsets[j]; p < a.col_offsets[j + 1]; ++p) y[a.row_indices[p]] = csc_madd(a.values[p], xj, y[a.row_indices[p]]);
    }
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// csc_active_columns with a register compress (vpcompressd) 16 columns at a time.
SLIMNET_CSC_AVX512 inline int csc_active_columns(const float* x, index_t j0, index_t j1, csc_skip skip, std::int32_t* active) {
  int k = 0;
  if (skip == csc_skip::none) {
    for (index_t j = j0; j < j1; ++j) active[k++] = static_cast<std::int32_t>(j);
    return k;
  }
  index_t j = j0;
  const __m512i step = _mm512_set1_epi32(16);
  __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<std::int32_t>(j0)),
                                 _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  for (; j + 16 <= j1; j += 16, idx = _mm512_add_epi32(idx, step)) {
    const __mmask16 nz = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + j), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_si512(active + k, _mm512_maskz_compress_epi32(nz, idx));  // register compress, then a plain store
    k += __builtin_popcount(static_cast<unsigned>(nz));
  }
  for (; j < j1; ++j) {
    active[k] = static_cast<std::int32_t>(j);
    k += x[j] != 0.0f;
  }
  return k;
}

/// Nonzero inputs listed with a register compress (vpcompressd) 16 columns at a time. Columns of
/// >= csc_vector_column nonzeros: 16 rows per step, y gathered, updated and scattered (the rows of
/// one column are distinct, so a step's lanes never collide); shorter columns and the tail of a
/// column run scalar: on Zen 4 a gather + scatter pair of 16 costs about as much as 16 scalar
/// updates, and LeNet-300-100 fc1 (24 nonzeros per column) measured 3.29 us with steps from 16
/// against 2.96 us all scalar.
constexpr sparse_offset_t csc_vector_column = 64;

template <class Index>
SLIMNET_CSC_AVX512 void spmv_csc(const csc_ref<float, Index>& a, const float* x, float* y, csc_skip skip) {
  std::int32_t active[csc_chunk + 16];
  for (index_t j0 = 0; j0 < a.cols; j0 += csc_chunk) {
    const int k = csc_active_columns(x, j0, std::min(a.cols, j0 + csc_chunk), skip, active);
    for (int t = 0; t < k; ++t) {
      const index_t j = active[t];
      const float xj = x[j];
      sparse_offset_t p = a.col_offsets[j];
      const sparse_offset_t p1 = a.col_offsets[j + 1];
      if (p1 - p >= csc_vector_column) {
        const __m512 xv = _mm512_set1_ps(xj);
        for (; p + 16 <= p1; p += 16) {
          const __m512i rows = load_index16(a.row_indices + p);
          const __m512 yv = _mm512_i32gather_ps(rows, y, 4);
          _mm512_i32scatter_ps(y, rows, _mm512_fmadd_ps(_mm512_loadu_ps(a.values + p), xv, yv), 4);
        }
      }
      for (; p < p1; ++p) y[a.row_indices[p]] = std::fma(a.values[p], xj, y[a.row_indices[p]]);
    }
  }
}

}  // namespace avx512

namespace avx2 {

/// For each 8-bit mask m, the positions of its set bits in order, packed into one byte each (the
/// left-pack permutation: AVX2 has no vpcompressd).
struct csc_pack_table {
  std::uint64_t lanes[256];
  constexpr csc_pack_table() : lanes() {
    for (unsigned m = 0; m < 256; ++m) {
      std::uint64_t v = 0;
      int n = 0;
      for (unsigned l = 0; l < 8; ++l)
        if ((m >> l) & 1u) v |= static_cast<std::uint64_t>(l) << (8 * n++);
      lanes[m] = v;
    }
  }
};
inline constexpr csc_pack_table csc_pack{};

/// csc_active_columns 8 columns at a time: the nonzero lanes' mask (vcmpps + vmovmskps) selects a
/// left-pack permutation of the column numbers (vpermd), stored whole; the count advances by its
/// popcount. No branch per column.
SLIMNET_CSC_AVX2 inline int csc_active_columns(const float* x, index_t j0, index_t j1, csc_skip skip, std::int32_t* active) {
  int k = 0;
  if (skip == csc_skip::none) {
    for (index_t j = j0; j < j1; ++j) active[k++] = static_cast<std::int32_t>(j);
    return k;
  }
  index_t j = j0;
  for (; j + 8 <= j1; j += 8) {
    const unsigned nz =
        static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(csc_pack.lanes[nz])));
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<std::int32_t>(j)), perm);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(active + k), idx);
    k += __builtin_popcount(nz);
  }
  for (; j < j1; ++j) {
    active[k] = static_cast<std::int32_t>(j);
    k += x[j] != 0.0f;
  }
  return k;
}

/// The columns listed 8 at a time, every update a scalar vfmadd (AVX2 has no scatter).
template <class Index>
SLIMNET_CSC_AVX2 void spmv_csc(const csc_ref<float, Index>& a, const float* x, float* y, csc_skip skip) {
  std::int32_t active[csc_chunk + 16];
  for (index_t j0 = 0; j0 < a.cols; j0 += csc_chunk) {
    const int k = csc_active_columns(x, j0, std::min(a.cols, j0 + csc_chunk), skip, active);
    for (int t = 0; t < k; ++t) {
      const index_t j = active[t];
      const float xj = x[j];
      for (sparse_offset_t p = a.col_offsets[j]; p < a.col_offsets[j + 1]; ++p)
        y[a.row_indices[p]] = std::fma(a.values[p], xj, y[a.row_indices[p]]);
    }
  }
}

}  // namespace avx2

#endif

/// Tag of spmv_csc's path counters.
struct csc_tag;
}  // namespace detail

/// The definition: y = bias, then the updates in column order (skipping zero inputs unless
/// skip == none), each rounded once as csc_madd.
template <class Value, class Index>
void spmv_csc_reference(const csc_ref<Value, Index>& a, const Value* x, Value* y, const sparse_params<Value>& params = {},
                        csc_skip skip = csc_skip::zeros) {
  for (index_t i = 0; i < a.rows; ++i) y[i] = params.bias ? params.bias[i] : Value(0);
  for (index_t j = 0; j < a.cols; ++j) {
    if (skip == csc_skip::zeros && x[j] == Value(0)) continue;
    for (sparse_offset_t p = a.col_offsets[j]; p < a.col_offsets[j + 1]; ++p) {
      const index_t i = a.row_indices[p];
      y[i] = detail::csc_madd(a.values[p], x[j], y[i]);
    }
  }
}

/// Nonzero entries of x[0, n): what the activation-sparse product's work is proportional to.
template <class Value>
index_t count_nonzero(const Value* x, index_t n) {
  index_t k = 0;
  for (index_t j = 0; j < n; ++j) k += x[j] != Value(0);
  return k;
}

/// The family float spmv_csc takes under the current active_isa(): avx512 (compressed column
/// lists, gather/scatter steps on long columns), avx2 (left-packed column lists), else portable.
inline isa csc_path() { return x86_simd_path(); }

/// How many spmv_csc calls each family computed since the program started.
inline std::uint64_t csc_path_calls(isa path) { return detail::path_calls<detail::csc_tag>(path); }

/// y = A x + bias (batch 1) over the columns whose input is not zero; one thread (the scattered
/// updates of y would collide across threads). x has a.cols entries, y has a.rows.
template <class Value, class Index>
void spmv_csc(const csc_ref<Value, Index>& a, const Value* x, Value* y, const sparse_params<Value>& params = {},
              csc_skip skip = csc_skip::zeros) {
  if ((x == nullptr && a.cols > 0) || (y == nullptr && a.rows > 0)) {
    slimnet::detail::raise<shape_error>("slimnet::kernels::spmv_csc", "null x or y for a {} x {} matrix", a.rows, a.cols);
  }
  if (params.bias) {
    std::copy_n(params.bias, a.rows, y);
  } else {
    std::fill_n(y, a.rows, Value(0));
  }
  [[maybe_unused]] const isa path = detail::count_path<detail::csc_tag>(
      std::is_same_v<Value, float> && params.path != kernel_path::portable ? csc_path() : isa::portable);
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (path == isa::avx512) return detail::avx512::spmv_csc(a, x, y, skip);
    if (path == isa::avx2) return detail::avx2::spmv_csc(a, x, y, skip);
  }
#endif
  detail::spmv_csc_portable(a, x, y, skip);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
