// Dense GEMM, C = alpha * A B + beta * C, over strided views (any storage order, transposes are
// free). Single precision on AVX-512 uses slimnet's own blocked kernel (BLIS structure: packed
// A blocks of MR rows, packed B panels of 32 columns, an MR x 32 register tile, MR chosen per
// call to fit the matrix's row count); everything else goes to Eigen. gemm_reference defines
// the result.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#if defined(__AVX512F__)
#include <immintrin.h>
#define SLIMNET_GEMM_AVX512 1
#endif

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::kernels {

/// Non-owning strided matrix view: element (i, j) is data[i * row_stride + j * col_stride].
template <class T>
struct matrix_ref {
  T* data = nullptr;
  index_t rows = 0, cols = 0;
  index_t row_stride = 0, col_stride = 1;

  T& operator()(index_t i, index_t j) const { return data[i * row_stride + j * col_stride]; }
  matrix_ref transposed() const { return {data, cols, rows, col_stride, row_stride}; }
  /// A mutable view converts to a read-only one.
  template <class U = T, class = std::enable_if_t<!std::is_const_v<U>>>
  operator matrix_ref<const U>() const {
    return {data, rows, cols, row_stride, col_stride};
  }
};

/// Row-major view of contiguous storage.
template <class T>
matrix_ref<T> row_major(T* data, index_t rows, index_t cols) {
  return {data, rows, cols, cols, 1};
}
/// View of any Eigen dense object with direct access (Matrix, Map, Ref, Block), either storage order.
template <class Derived>
auto view(Eigen::DenseBase<Derived>& m) {
  using T = std::remove_reference_t<decltype(*m.derived().data())>;
  const bool row_major_storage = Derived::IsRowMajor;
  return matrix_ref<T>{m.derived().data(), m.rows(), m.cols(), row_major_storage ? m.outerStride() : m.innerStride(),
                       row_major_storage ? m.innerStride() : m.outerStride()};
}
template <class Derived>
auto view(const Eigen::DenseBase<Derived>& m) {
  using T = const std::remove_const_t<std::remove_reference_t<decltype(*m.derived().data())>>;
  const bool row_major_storage = Derived::IsRowMajor;
  return matrix_ref<T>{m.derived().data(), m.rows(), m.cols(), row_major_storage ? m.outerStride() : m.innerStride(),
                       row_major_storage ? m.innerStride() : m.outerStride()};
}

namespace detail {
template <class Scalar>
void check_gemm_shapes(const char* fn, const matrix_ref<const Scalar>& a, const matrix_ref<const Scalar>& b,
                       const matrix_ref<Scalar>& c) {
  if (a.cols != b.rows || c.rows != a.rows || c.cols != b.cols) {
    slimnet::detail::raise<shape_error>(fn, "({} x {}) * ({} x {}) does not fit C ({} x {})", a.rows, a.cols, b.rows,
                                        b.cols, c.rows, c.cols);
  }
}
}  // namespace detail

/// The definition: C = alpha * A B + beta * C, accumulated in double; beta = 0 ignores C's contents.
template <class Scalar>
void gemm_reference(matrix_ref<const Scalar> a, matrix_ref<const Scalar> b, matrix_ref<Scalar> c, Scalar alpha = 1,
                    Scalar beta = 0) {
  detail::check_gemm_shapes("slimnet::kernels::gemm_reference", a, b, c);
  for (index_t i = 0; i < c.rows; ++i) {
    for (index_t j = 0; j < c.cols; ++j) {
      double s = 0;
      for (index_t k = 0; k < a.cols; ++k) s += static_cast<double>(a(i, k)) * static_cast<double>(b(k, j));
      const double prior = beta == Scalar(0) ? 0.0 : static_cast<double>(beta) * static_cast<double>(c(i, j));
      c(i, j) = static_cast<Scalar>(static_cast<double>(alpha) * s + prior);
    }
  }
}

namespace detail {

/// Calls f with an Eigen::Map of the view: RowMajor or ColMajor with an outer stride when one of the
/// strides is 1 (Eigen's fast GEMM path), a doubly strided Map otherwise.
template <class T, class F>
void with_eigen_map(const matrix_ref<T>& v, F&& f) {
  using S = std::remove_const_t<T>;
  using row_major_t = std::conditional_t<std::is_const_v<T>, const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                                         Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  using col_major_t = std::conditional_t<std::is_const_v<T>, const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>,
                                         Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>>;
  if (v.col_stride == 1) {
    f(Eigen::Map<row_major_t, 0, Eigen::OuterStride<>>(v.data, v.rows, v.cols, Eigen::OuterStride<>(v.row_stride)));
  } else if (v.row_stride == 1) {
    f(Eigen::Map<col_major_t, 0, Eigen::OuterStride<>>(v.data, v.rows, v.cols, Eigen::OuterStride<>(v.col_stride)));
  } else {
    using stride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;  // RowMajor: (outer, inner) = (row, col) strides
    f(Eigen::Map<row_major_t, 0, stride>(v.data, v.rows, v.cols, stride(v.row_stride, v.col_stride)));
  }
}

/// Eigen's product on the views (any scalar, any strides).
template <class Scalar>
void gemm_eigen(matrix_ref<const Scalar> a, matrix_ref<const Scalar> b, matrix_ref<Scalar> c, Scalar alpha, Scalar beta) {
  with_eigen_map(a, [&](const auto& A) {
    with_eigen_map(b, [&](const auto& B) {
      with_eigen_map(c, [&](auto C) {
        if (beta == Scalar(0)) {
          C.noalias() = alpha * (A * B);
        } else {
          if (beta != Scalar(1)) C *= beta;
          C.noalias() += alpha * (A * B);
        }
      });
    });
  });
}

#if SLIMNET_GEMM_AVX512
namespace avx512 {

constexpr index_t nr = 32;   // columns of the register tile: two 16-float vectors
constexpr index_t kc = 256;  // depth of a packed block
constexpr index_t nc = 2048; // columns of a packed B block

/// Packs rows [i0, i0+mr) x depth [p0, p0+k) of A into ap[k][MR] (rows past the end are zero).
template <int MR>
inline void pack_a(const matrix_ref<const float>& a, index_t i0, index_t rows, index_t p0, index_t k, float* ap) {
  if (a.col_stride == 1) {
    for (index_t r = 0; r < MR; ++r) {
      if (r < rows) {
        const float* src = a.data + (i0 + r) * a.row_stride + p0;
        for (index_t p = 0; p < k; ++p) ap[p * MR + r] = src[p];
      } else {
        for (index_t p = 0; p < k; ++p) ap[p * MR + r] = 0.0f;
      }
    }
  } else {
    for (index_t p = 0; p < k; ++p) {
      const float* src = a.data + (p0 + p) * a.col_stride + i0 * a.row_stride;
      for (index_t r = 0; r < MR; ++r) ap[p * MR + r] = r < rows ? src[r * a.row_stride] : 0.0f;
    }
  }
}

/// In-place transpose of a 16x16 block held as 16 rows.
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows: 2x2 blocks
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 4x4 blocks within each 128-bit lane
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {  // exchange 128-bit lanes between row groups
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

/// Packs depth [p0, p0+k) x columns [j0, j0+cols) of B into bp[k][32] (columns past the end are zero).
inline void pack_b(const matrix_ref<const float>& b, index_t p0, index_t k, index_t j0, index_t cols, float* bp) {
  if (b.col_stride == 1 && cols == nr) {
    for (index_t p = 0; p < k; ++p) {
      const float* src = b.data + (p0 + p) * b.row_stride + j0;
      _mm512_storeu_ps(bp + p * nr, _mm512_loadu_ps(src));
      _mm512_storeu_ps(bp + p * nr + 16, _mm512_loadu_ps(src + 16));
    }
  } else if (b.col_stride == 1) {
    const __mmask16 m0 = static_cast<__mmask16>(cols >= 16 ? 0xffff : (1u << cols) - 1);
    const __mmask16 m1 = static_cast<__mmask16>(cols >= 32 ? 0xffff : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
    for (index_t p = 0; p < k; ++p) {
      const float* src = b.data + (p0 + p) * b.row_stride + j0;
      _mm512_storeu_ps(bp + p * nr, _mm512_maskz_loadu_ps(m0, src));
      _mm512_storeu_ps(bp + p * nr + 16, _mm512_maskz_loadu_ps(m1, src + 16));
    }
  } else if (b.row_stride == 1 && k % 16 == 0) {
    // B is a transposed row-major matrix: column j of B is contiguous. Transpose 16x16 blocks in
    // registers: 16 loads along k from 16 columns become 16 stores of 16 columns at one k.
    for (index_t half = 0; half < 2; ++half) {
      const float* rows[16];
      for (index_t j = 0; j < 16; ++j) {
        const index_t col = std::min(half * 16 + j, cols - 1);  // past the end: any valid column, zeroed below
        rows[j] = b.data + (j0 + col) * b.col_stride + p0;
      }
      const index_t valid = std::clamp<index_t>(cols - half * 16, 0, 16);
      const __mmask16 keep = static_cast<__mmask16>(valid >= 16 ? 0xffff : (1u << valid) - 1);
      for (index_t p = 0; p < k; p += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(rows[j] + p);
        transpose16x16(r);
        for (int q = 0; q < 16; ++q) _mm512_storeu_ps(bp + (p + q) * nr + half * 16, _mm512_maskz_mov_ps(keep, r[q]));
      }
    }
  } else {
    for (index_t j = 0; j < nr; ++j) {
      if (j < cols) {
        const float* src = b.data + (j0 + j) * b.col_stride + p0 * b.row_stride;
        for (index_t p = 0; p < k; ++p) bp[p * nr + j] = src[p * b.row_stride];
      } else {
        for (index_t p = 0; p < k; ++p) bp[p * nr + j] = 0.0f;
      }
    }
  }
}

/// C[0:rows, 0:cols] = alpha * A Bp + beta * C (beta = 0: C not read), an MR x 32 tile in registers.
/// A is either packed (A(r, p) = ap[p * MR + r], lda = 0) or read in place from a row-major
/// matrix (A(r, p) = ap[r * lda + p]); broadcasts are loads either way, and in-place reads save
/// the packing pass when few B panels would reuse a packed A.
template <int MR>
inline void micro_kernel(index_t k, const float* ap, index_t lda, const float* bp, float* c, index_t ldc, index_t rows,
                         index_t cols, float alpha, float beta) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  if (lda == 0) {
    for (index_t p = 0; p < k; ++p) {
      const __m512 b0 = _mm512_loadu_ps(bp);
      const __m512 b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(ap[r]);
        acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
      }
      ap += MR;
      bp += nr;
    }
  } else {
    for (index_t p = 0; p < k; ++p) {
      const __m512 b0 = _mm512_loadu_ps(bp);
      const __m512 b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(ap[r * lda]);
        acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
      }
      ap += 1;
      bp += nr;
    }
  }
  const __mmask16 m0 = static_cast<__mmask16>(cols >= 16 ? 0xffff : (1u << cols) - 1);
  const __mmask16 m1 = static_cast<__mmask16>(cols >= 32 ? 0xffff : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (rows == MR && cols == nr) {  // full tile: unmasked moves (masked stores are slow on Zen 4)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m512 v0 = _mm512_mul_ps(va, acc0[r]), v1 = _mm512_mul_ps(va, acc1[r]);
      if (beta != 0.0f) {
        v0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), v0);
        v1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), v1);
      }
      _mm512_storeu_ps(cr, v0);
      _mm512_storeu_ps(cr + 16, v1);
    }
    return;
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r >= rows) break;
    float* cr = c + r * ldc;
    __m512 v0 = _mm512_mul_ps(va, acc0[r]), v1 = _mm512_mul_ps(va, acc1[r]);
    if (beta != 0.0f) {
      v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), v0);
      v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), v1);
    }
    _mm512_mask_storeu_ps(cr, m0, v0);
    _mm512_mask_storeu_ps(cr + 16, m1, v1);
  }
}

template <int MR>
void gemm_blocked(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                  float beta) {
  const index_t m = c.rows, n = c.cols, depth = a.cols;
  thread_local std::vector<float> a_pack, b_pack;
  const index_t m_panels = (m + MR - 1) / MR;
  a_pack.resize(static_cast<std::size_t>(m_panels * MR * kc));
  b_pack.resize(static_cast<std::size_t>(std::min(n, nc) / nr + 1) * nr * kc);
  for (index_t j0 = 0; j0 < n; j0 += nc) {
    const index_t ncols = std::min(nc, n - j0);
    const index_t n_panels = (ncols + nr - 1) / nr;
    for (index_t p0 = 0; p0 < depth; p0 += kc) {
      const index_t k = std::min(kc, depth - p0);
      const float beta_block = p0 == 0 ? beta : 1.0f;  // later depth blocks accumulate into C
      for (index_t jp = 0; jp < n_panels; ++jp) {
        pack_b(b, p0, k, j0 + jp * nr, std::min(nr, ncols - jp * nr), b_pack.data() + jp * nr * k);
      }
      // Full panels of a row-major A are read in place when packing would not pay: few B panels to
      // reuse it, or a row stride that is not a multiple of 256 bytes (MR rows 2^k bytes apart share
      // L1 sets and evict each other). A transposed A, and the last partial panel (whose missing
      // rows must read as zeros), are packed.
      const bool in_place = a.col_stride == 1 && (n_panels <= 2 || a.row_stride % 64 != 0);
      for (index_t ip = 0; ip < m_panels; ++ip) {
        if (!in_place || (ip + 1) * MR > m) {
          pack_a<MR>(a, ip * MR, std::min<index_t>(MR, m - ip * MR), p0, k, a_pack.data() + ip * MR * k);
        }
      }
      for (index_t jp = 0; jp < n_panels; ++jp) {
        const index_t col = j0 + jp * nr;
        for (index_t ip = 0; ip < m_panels; ++ip) {
          const index_t row = ip * MR;
          const bool read_in_place = in_place && row + MR <= m;
          micro_kernel<MR>(k, read_in_place ? a.data + row * a.row_stride + p0 : a_pack.data() + ip * MR * k,
                           read_in_place ? a.row_stride : 0, b_pack.data() + jp * nr * k, c.data + row * c.row_stride + col,
                           c.row_stride, std::min<index_t>(MR, m - row), std::min(nr, n - col), alpha, beta_block);
        }
      }
    }
  }
}

/// Register-tile height with the least padding for m rows (ties go to the taller tile).
inline int choose_mr(index_t m) {
  int best = 12;
  index_t best_waste = -1;
  for (int mr : {12, 10, 8, 6, 4}) {
    const index_t waste = (m + mr - 1) / mr * mr - m;
    if (best_waste < 0 || waste < best_waste) {
      best = mr;
      best_waste = waste;
    }
  }
  return best;
}

inline void gemm(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                 float beta) {
  switch (choose_mr(c.rows)) {
    case 12: gemm_blocked<12>(a, b, c, alpha, beta); break;
    case 10: gemm_blocked<10>(a, b, c, alpha, beta); break;
    case 8: gemm_blocked<8>(a, b, c, alpha, beta); break;
    case 6: gemm_blocked<6>(a, b, c, alpha, beta); break;
    default: gemm_blocked<4>(a, b, c, alpha, beta); break;
  }
}

}  // namespace avx512
#endif

}  // namespace detail

/// C = alpha * A B + beta * C. With beta = 0, C's previous contents (even NaN) are ignored.
/// C must not overlap A or B.
template <class Scalar>
void gemm(matrix_ref<const Scalar> a, matrix_ref<const Scalar> b, matrix_ref<Scalar> c, Scalar alpha = 1, Scalar beta = 0) {
  detail::check_gemm_shapes("slimnet::kernels::gemm", a, b, c);
  if (c.rows == 0 || c.cols == 0) return;
  if (a.cols == 0) {
    for (index_t i = 0; i < c.rows; ++i)
      for (index_t j = 0; j < c.cols; ++j) c(i, j) = beta == Scalar(0) ? Scalar(0) : beta * c(i, j);
    return;
  }
#if SLIMNET_GEMM_AVX512
  if constexpr (std::is_same_v<Scalar, float>) {
    // Matrix-vector shapes (a batch of 1-3) are memory-bound: Eigen's GEMV streams the matrix once,
    // where the blocked kernel would pack all of it for a handful of rows.
    // The tile stores along C's rows: C must be row-major; a column-major C is computed as C^T = B^T A^T.
    const bool matrix_vector = std::min(c.rows, c.cols) < 4;
    if (!matrix_vector && c.col_stride == 1) {
      detail::avx512::gemm(a, b, c, alpha, beta);
      return;
    }
    if (!matrix_vector && c.row_stride == 1) {
      detail::avx512::gemm(b.transposed(), a.transposed(), c.transposed(), alpha, beta);
      return;
    }
  }
#endif
  detail::gemm_eigen(a, b, c, alpha, beta);
}

}  // namespace slimnet::kernels
