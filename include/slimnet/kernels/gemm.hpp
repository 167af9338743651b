// Dense GEMM, C = alpha * A B + beta * C, over strided views (any storage order, transposes are
// free). gemm_reference defines the result.
//
// Single precision runs slimnet's own blocked kernels (BLIS structure: packed panels of A and B,
// a register tile of C), chosen per call at run time from kernels::active_isa() (cpu_features.hpp)
// and compiled with function target attributes in every x86-64 build, whatever the program's -march:
//   avx512    an MR x 32 tile (MR from {12, 10, 8}, one shorter tile for the leftover rows) of
//             zmm accumulators, plus a matrix-vector kernel (batch 1) and a streaming kernel for
//             depth <= 4 (outer products);
//   avx2      AVX2 + FMA: the classic Haswell 6 x 16 tile (12 ymm accumulators, 2 loads of B and
//             6 broadcasts of A per depth step: 12 FMAs, 2 per cycle), with the same matrix-vector
//             and shallow kernels on 256 bits;
//   neon      aarch64: an 8 x 12 tile (24 float32x4_t accumulators; per depth step 3 loads of B,
//             2 of packed A and 24 fmla by element, which take A's value from a vector lane, so no
//             broadcasts), in the avx2 family's blocked loops (detail::blocked_gemm), and the
//             same matrix-vector kernel as avx2's on 128 bits; depth <= 4 runs the tile too;
//   portable  Eigen's product (what doubles, other architectures, and the shapes the kernels do
//             not take run: C with no unit stride, 2-3 rows or columns of C).
// gemm_path() says which family float products take now; gemm_path_calls() counts the calls each
// one computed (tests assert on it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "slimnet/core/eigen.hpp"

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/matrix_ref.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
// Both paths exist in every x86-64 build (GCC, Clang); the names say so to tests and benchmarks.
#define SLIMNET_GEMM_AVX512 1
#define SLIMNET_GEMM_AVX2 1
#define SLIMNET_GEMM_AVX512_TARGET SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#define SLIMNET_GEMM_AVX2_TARGET SLIMNET_TARGET("avx2,fma")
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
// NEON (Advanced SIMD) is part of ARMv8-A: no target attribute, every aarch64 build has the path.
#define SLIMNET_GEMM_NEON 1
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

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

/// Splits `total` into equal blocks of at most `limit` (rounded up to a multiple of `align`).
inline index_t balanced_block(index_t total, index_t limit, index_t align) {
  const index_t blocks = (total + limit - 1) / limit;
  const index_t size = (total + blocks - 1) / blocks;
  return std::min(limit, (size + align - 1) / align * align);
}

/// The batch-1 product's operands with unit stride, shared by every family's gemv_row: A's single
/// row (x) and C's (y), copied into per-thread scratch when strided; finish() writes a copied y
/// back into C.
class contiguous_row_operands {
 public:
  contiguous_row_operands(const matrix_ref<const float>& a, const matrix_ref<float>& c) : c_(c), x_(a.data), y_(c.data) {
    thread_local std::vector<float> x_copy, y_copy;
    if (a.col_stride != 1) {
      x_copy.resize(static_cast<std::size_t>(a.cols));
      for (index_t p = 0; p < a.cols; ++p) x_copy[static_cast<std::size_t>(p)] = a(0, p);
      x_ = x_copy.data();
    }
    if (c.col_stride != 1) {
      y_copy.resize(static_cast<std::size_t>(c.cols));
      for (index_t j = 0; j < c.cols; ++j) y_copy[static_cast<std::size_t>(j)] = c(0, j);
      y_ = y_copy.data();
    }
  }
  const float* x() const { return x_; }
  float* y() const { return y_; }
  void finish() const {
    if (c_.col_stride != 1)
      for (index_t j = 0; j < c_.cols; ++j) c_(0, j) = y_[j];
  }

 private:
  matrix_ref<float> c_;
  const float* x_;
  float* y_;
};

/// B (k x n, k <= 4) row-major with unit column stride for the shallow kernels: B itself, or a
/// per-thread row-major copy; ldb receives its row stride.
inline const float* row_major_shallow_b(const matrix_ref<const float>& b, index_t& ldb) {
  ldb = b.row_stride;
  if (b.col_stride == 1) return b.data;
  thread_local std::vector<float> b_copy;
  b_copy.resize(static_cast<std::size_t>(b.rows * b.cols));
  for (index_t p = 0; p < b.rows; ++p)
    for (index_t j = 0; j < b.cols; ++j) b_copy[static_cast<std::size_t>(p * b.cols + j)] = b(p, j);
  ldb = b.cols;
  return b_copy.data();
}

/// Calls f(std::integral_constant<int, K>{}) for depth k in 1..4 (the shallow kernels' unrolled K).
template <class F>
void with_shallow_depth(index_t k, F&& f) {
  switch (k) {
    case 1:
      f(std::integral_constant<int, 1>{});
      break;
    case 2:
      f(std::integral_constant<int, 2>{});
      break;
    case 3:
      f(std::integral_constant<int, 3>{});
      break;
    default:
      f(std::integral_constant<int, 4>{});
      break;
  }
}

#if SLIMNET_GEMM_AVX512
namespace avx512 {

constexpr index_t nr = 32;     // columns of a packed B panel: two 16-float vectors
constexpr int max_mr = 12;     // rows of the tallest register tile (12 x 32 = 24 accumulators)

/// Cache blocking: a kc x nc block of B is packed once into 32-column panels (kept in L2), an
/// mc x kc block of A into MR-row panels; each A panel (MR x kc, in L1) is swept across all B panels
/// of the block, so the tile of C moves along C's rows (sequential, prefetcher friendly) and C is
/// read and written once per kc of depth. Tuned on Zen 4 (32 KiB L1d, 1 MiB L2): kc = 512 halves
/// the passes over C against 256 (3136 x 2304 x 256: 0.85x -> 0.93x OpenBLAS), nc = 1024 keeps the
/// B block (2 MiB at most; 256-512 KiB on the layer shapes) in L2/L3. Tests shrink them to
/// exercise block edges.
struct blocking {
  index_t kc = 512, mc = 384, nc = 1024;
};
inline blocking& gemm_blocking() {
  static blocking b;
  return b;
}

/// Packs rows [i0, i0+rows) x depth [p0, p0+k) of A into ap[p * ps + r] (rows <= ps <= 16).
SLIMNET_GEMM_AVX512_TARGET inline void pack_a(const matrix_ref<const float>& a, index_t i0, index_t rows, index_t p0, index_t k, float* ap, index_t ps) {
  if (a.row_stride == 1) {  // A is a transposed row-major matrix: its rows are contiguous at each p
    // ap has 16 floats of slack past the panel: the full-width stores may run past a short panel.
    const __mmask16 m = static_cast<__mmask16>((1u << rows) - 1);
    const float* src = a.data + p0 * a.col_stride + i0;
    for (index_t p = 0; p < k; ++p) _mm512_storeu_ps(ap + p * ps, _mm512_maskz_loadu_ps(m, src + p * a.col_stride));
  } else if (a.col_stride == 1) {
    for (index_t r = 0; r < rows; ++r) {
      const float* src = a.data + (i0 + r) * a.row_stride + p0;
      for (index_t p = 0; p < k; ++p) ap[p * ps + r] = src[p];
    }
  } else {
    for (index_t p = 0; p < k; ++p) {
      const float* src = a.data + (p0 + p) * a.col_stride + i0 * a.row_stride;
      for (index_t r = 0; r < rows; ++r) ap[p * ps + r] = src[r * a.row_stride];
    }
  }
}

/// In-place transpose of a 16x16 block held as 16 rows.
SLIMNET_GEMM_AVX512_TARGET inline void transpose16x16(__m512 r[16]) {
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

SLIMNET_GEMM_AVX512_TARGET inline __mmask16 first_lanes(index_t n) { return static_cast<__mmask16>(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1); }

/// Packs depth [p0, p0+k) x columns [j0, j0+cols) of B into bp[p * width + j], width 16 or 32
/// (columns past the end are zero).
SLIMNET_GEMM_AVX512_TARGET inline void pack_b(const matrix_ref<const float>& b, index_t p0, index_t k, index_t j0, index_t cols, float* bp, index_t width) {
  if (b.col_stride == 1) {
    for (index_t h = 0; h < width; h += 16) {
      const __mmask16 m = first_lanes(cols - h);
      const float* src = b.data + p0 * b.row_stride + j0 + h;
      if (m == 0xffff) {
        for (index_t p = 0; p < k; ++p) _mm512_storeu_ps(bp + p * width + h, _mm512_loadu_ps(src + p * b.row_stride));
      } else {
        for (index_t p = 0; p < k; ++p) _mm512_storeu_ps(bp + p * width + h, _mm512_maskz_loadu_ps(m, src + p * b.row_stride));
      }
    }
  } else if (b.row_stride == 1) {
    // B is a transposed row-major matrix (a layer's weight W^T): column j of B is contiguous. 16x16
    // blocks are transposed in registers: 16 loads along k from 16 columns become 16 stores at 16 k.
    const index_t k16 = k / 16 * 16;
    for (index_t h = 0; h < width; h += 16) {
      const float* rows[16];
      for (index_t j = 0; j < 16; ++j) {
        const index_t col = std::max<index_t>(0, std::min(h + j, cols - 1));  // past the end: a valid column, zeroed below
        rows[j] = b.data + (j0 + col) * b.col_stride + p0;
      }
      const __mmask16 keep = first_lanes(cols - h);
      for (index_t p = 0; p < k16; p += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(rows[j] + p);
        transpose16x16(r);
        for (int q = 0; q < 16; ++q) _mm512_storeu_ps(bp + (p + q) * width + h, _mm512_maskz_mov_ps(keep, r[q]));
      }
      if (k16 < k) {  // the last k % 16 depths: a masked 16 x (k % 16) block, transposed the same way
        const __mmask16 tail = first_lanes(k - k16);
        __m512 r[16];
        for (int j = 0; j < 16; ++j) r[j] = _mm512_maskz_loadu_ps(tail, rows[j] + k16);
        transpose16x16(r);
        for (index_t q = 0; q < k - k16; ++q) _mm512_storeu_ps(bp + (k16 + q) * width + h, _mm512_maskz_mov_ps(keep, r[q]));
      }
    }
  } else {
    for (index_t p = 0; p < k; ++p) {
      for (index_t j = 0; j < width; ++j) bp[p * width + j] = j < cols ? b(p0 + p, j0 + j) : 0.0f;
    }
  }
}

/// C[0:rows, 0:cols] = alpha * A Bp + beta * C (beta = 0: C not read), an MR x (16 NV) tile in
/// registers (rows <= MR, cols <= 16 NV). B(p, j) = bp[p * ldb + j]: a packed panel (ldb = 16 NV)
/// or, for few rows of tiles, B itself (row-major, full panels only). A is either packed (A(r, p) = ap[p * ps + r], lda = 0) or
/// read in place from a row-major matrix (A(r, p) = ap[r * lda + p]); broadcasts are loads either
/// way, and in-place reads save the packing pass when few B panels would reuse a packed A.
template <int MR, int NV>
SLIMNET_GEMM_AVX512_TARGET inline void micro_kernel(index_t k, const float* ap, index_t lda, index_t ps, const float* bp, index_t ldb, float* c, index_t ldc,
                         index_t rows, index_t cols, float alpha, float beta) {
  constexpr index_t w = 16 * NV;
  // The tile of C is read (or written) after the k loop: fetch it now, behind the arithmetic.
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r < rows) {
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + w - 1), _MM_HINT_T0);
    }
  }
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  if (lda == 0) {
#pragma GCC unroll 2
    for (index_t p = 0; p < k; ++p) {
      const __m512 b0 = _mm512_loadu_ps(bp);
      const __m512 b1 = NV > 1 ? _mm512_loadu_ps(bp + 16) : b0;
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(ap[r]);
        acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
        if (NV > 1) acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
      }
      ap += ps;
      bp += ldb;
    }
  } else {
#pragma GCC unroll 2
    for (index_t p = 0; p < k; ++p) {
      const __m512 b0 = _mm512_loadu_ps(bp);
      const __m512 b1 = NV > 1 ? _mm512_loadu_ps(bp + 16) : b0;
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(ap[r * lda]);
        acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
        if (NV > 1) acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
      }
      ap += 1;
      bp += ldb;
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (rows == MR && cols == w) {  // full tile: unmasked moves (masked stores are slow on Zen 4)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m512 v0 = alpha == 1.0f ? acc0[r] : _mm512_mul_ps(va, acc0[r]);
      if (beta != 0.0f) v0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), v0);
      _mm512_storeu_ps(cr, v0);
      if (NV > 1) {
        __m512 v1 = alpha == 1.0f ? acc1[r] : _mm512_mul_ps(va, acc1[r]);
        if (beta != 0.0f) v1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), v1);
        _mm512_storeu_ps(cr + 16, v1);
      }
    }
    return;
  }
  const __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r >= rows) break;
    float* cr = c + r * ldc;
    __m512 v0 = _mm512_mul_ps(va, acc0[r]);
    if (beta != 0.0f) v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), v0);
    _mm512_mask_storeu_ps(cr, m0, v0);
    if (NV > 1) {
      __m512 v1 = _mm512_mul_ps(va, acc1[r]);
      if (beta != 0.0f) v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), v1);
      _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
  }
}

/// The register tile for `rows` (1..max_mr) rows and a 16- or 32-wide panel.
template <int NV>
SLIMNET_GEMM_AVX512_TARGET inline void run_tile(index_t rows, index_t k, const float* ap, index_t lda, index_t ps, const float* bp, index_t ldb, float* c,
                     index_t ldc, index_t cols, float alpha, float beta) {
  switch (rows) {
#define SLIMNET_GEMM_TILE(R) \
  case R: micro_kernel<R, NV>(k, ap, lda, ps, bp, ldb, c, ldc, rows, cols, alpha, beta); break;
    SLIMNET_GEMM_TILE(1) SLIMNET_GEMM_TILE(2) SLIMNET_GEMM_TILE(3) SLIMNET_GEMM_TILE(4) SLIMNET_GEMM_TILE(5)
    SLIMNET_GEMM_TILE(6) SLIMNET_GEMM_TILE(7) SLIMNET_GEMM_TILE(8) SLIMNET_GEMM_TILE(9) SLIMNET_GEMM_TILE(10)
    SLIMNET_GEMM_TILE(11)
    default: micro_kernel<12, NV>(k, ap, lda, ps, bp, ldb, c, ldc, rows, cols, alpha, beta); break;
#undef SLIMNET_GEMM_TILE
  }
}

/// Register-tile height for m rows: full tiles of MR rows and one shorter tile for the rest, MR from
/// {12, 10, 8} by a cost model (a tile of r rows costs about r + 3 cycles per depth step: 2r FMAs
/// at one 512-bit FMA per cycle, plus loads that short tiles cannot hide).
inline int choose_mr(index_t m) {
  int best = max_mr;
  index_t best_cost = -1;
  for (int mr : {12, 10, 8}) {
    const index_t rest = m % mr, cost = m / mr * (mr + 3) + (rest ? rest + 3 : 0);
    if (best_cost < 0 || cost < best_cost) {
      best = mr;
      best_cost = cost;
    }
  }
  return best;
}

SLIMNET_GEMM_AVX512_TARGET inline void gemm(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                 float beta) {
  const index_t m = c.rows, n = c.cols, depth = a.cols;
  const blocking& bl = gemm_blocking();
  const index_t mr = choose_mr(m);
  const index_t kc = balanced_block(depth, std::max<index_t>(bl.kc, 1), 16);
  const index_t mc = balanced_block(m, std::max(bl.mc / mr, index_t{1}) * mr, mr);
  const index_t nc = balanced_block(n, std::max(bl.nc / nr, index_t{1}) * nr, nr);
  thread_local std::vector<float> a_pack, b_pack;
  const index_t mc_panels = (std::min(mc, m) + mr - 1) / mr;
  a_pack.resize(static_cast<std::size_t>(mc_panels * mr * kc + 16));
  b_pack.resize(static_cast<std::size_t>((std::min(n, nc) + nr - 1) / nr * nr * kc));
  for (index_t j0 = 0; j0 < n; j0 += nc) {
    const index_t ncols = std::min(nc, n - j0);
    const index_t n_panels = (ncols + nr - 1) / nr;
    for (index_t p0 = 0; p0 < depth; p0 += kc) {
      const index_t k = std::min(kc, depth - p0);
      const float beta_block = p0 == 0 ? beta : 1.0f;  // later depth blocks accumulate into C
      // Full panels of a row-major B are read in place when at most two rows of tiles would reuse
      // a packed copy (the weight gradient of a small layer, dW = dY^T X: M = out features).
      const bool b_in_place = b.col_stride == 1 && (m + mr - 1) / mr <= 2;
      for (index_t jp = 0; jp < n_panels; ++jp) {
        const index_t cols = std::min(nr, ncols - jp * nr);
        if (b_in_place && cols == nr) continue;
        pack_b(b, p0, k, j0 + jp * nr, cols, b_pack.data() + jp * nr * k, cols <= 16 ? 16 : nr);
      }
      // Panels of a row-major A are read in place when packing would not pay: few B panels to reuse
      // them, or a row stride that is not a multiple of 256 bytes (MR rows 2^k bytes apart share L1
      // sets and evict each other). A transposed A is packed.
      const bool in_place = a.col_stride == 1 && (n_panels <= 2 || a.row_stride % 64 != 0);
      for (index_t i0 = 0; i0 < m; i0 += mc) {
        const index_t mrows = std::min(mc, m - i0);
        const index_t m_panels = (mrows + mr - 1) / mr;
        if (!in_place) {
          for (index_t ip = 0; ip < m_panels; ++ip) {
            pack_a(a, i0 + ip * mr, std::min(mr, mrows - ip * mr), p0, k, a_pack.data() + ip * mr * k, mr);
          }
        }
        for (index_t ip = 0; ip < m_panels; ++ip) {
          const index_t row = i0 + ip * mr, rows = std::min(mr, m - row);
          for (index_t jp = 0; jp < n_panels; ++jp) {
            const index_t col = j0 + jp * nr, cols = std::min(nr, n - col);
            const bool read_b = b_in_place && cols == nr;
            const float* bp = read_b ? b.data + p0 * b.row_stride + col : b_pack.data() + jp * nr * k;
            const index_t ldb = read_b ? b.row_stride : cols <= 16 ? 16 : nr;
            const float* ap = in_place ? a.data + row * a.row_stride + p0 : a_pack.data() + ip * mr * k;
            float* ct = c.data + row * c.row_stride + col;
            if (cols <= 16) {
              run_tile<1>(rows, k, ap, in_place ? a.row_stride : 0, mr, bp, ldb, ct, c.row_stride, cols, alpha, beta_block);
            } else {
              run_tile<2>(rows, k, ap, in_place ? a.row_stride : 0, mr, bp, ldb, ct, c.row_stride, cols, alpha, beta_block);
            }
          }
        }
      }
    }
  }
}

/// C = alpha * A B + beta * C for depth K (1..4), B(p, j) = bp[p * ldb + j], row by row of C.
template <int K>
SLIMNET_GEMM_AVX512_TARGET inline void shallow_rows(const matrix_ref<const float>& a, const float* bp, index_t ldb, const matrix_ref<float>& c, float alpha,
                         float beta) {
  const index_t m = c.rows, n = c.cols, n16 = n / 16 * 16;
  const __m512 vb = _mm512_set1_ps(beta);
  const __mmask16 tail = first_lanes(n - n16);
  for (index_t i = 0; i < m; ++i) {
    __m512 av[K];
#pragma GCC unroll 4
    for (int p = 0; p < K; ++p) av[p] = _mm512_set1_ps(alpha * a(i, p));
    float* cr = c.data + i * c.row_stride;
    // Full vectors unmasked (masked stores are slow on Zen 4), the tail masked. No lambdas here:
    // a lambda's body does not inherit the enclosing function's target attribute.
    for (index_t j = 0; j < n16; j += 16) {
      __m512 v = beta == 0.0f ? _mm512_setzero_ps() : beta == 1.0f ? _mm512_loadu_ps(cr + j) : _mm512_mul_ps(vb, _mm512_loadu_ps(cr + j));
#pragma GCC unroll 4
      for (int p = 0; p < K; ++p) v = _mm512_fmadd_ps(av[p], _mm512_loadu_ps(bp + p * ldb + j), v);
      _mm512_storeu_ps(cr + j, v);
    }
    if (tail) {
      const __m512 old = _mm512_maskz_loadu_ps(tail, cr + n16);
      __m512 v = beta == 0.0f ? _mm512_setzero_ps() : beta == 1.0f ? old : _mm512_mul_ps(vb, old);
#pragma GCC unroll 4
      for (int p = 0; p < K; ++p) v = _mm512_fmadd_ps(av[p], _mm512_maskz_loadu_ps(tail, bp + p * ldb + n16), v);
      _mm512_mask_storeu_ps(cr + n16, tail, v);
    }
  }
}

/// Depth <= 4 (outer products such as a weight gradient at batch 1): one streaming pass over the
/// rows of C (row-major), no packing; the work is C's memory traffic.
SLIMNET_GEMM_AVX512_TARGET inline void gemm_shallow(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                         float beta) {
  index_t ldb = 0;
  const float* bp = detail::row_major_shallow_b(b, ldb);
  detail::with_shallow_depth(a.cols, [&](auto depth) { shallow_rows<decltype(depth)::value>(a, bp, ldb, c, alpha, beta); });
}

/// Matrix-vector product with a single row of C (batch 1): c (1 x n) = alpha * a (1 x k) B + beta * c.
/// B row-major: rows of B scaled and summed, 128 columns of C in registers at a time; B a transposed
/// row-major matrix (a layer's W^T): dot products of x with W's rows, four at a time. False (for
/// Eigen) when neither of B's strides is 1.
SLIMNET_GEMM_AVX512_TARGET inline bool gemv_row(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                     float beta) {
  if (b.col_stride != 1 && b.row_stride != 1) return false;
  const index_t k = a.cols, n = c.cols;
  const detail::contiguous_row_operands rows(a, c);
  const float* x = rows.x();
  float* y = rows.y();
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (b.col_stride == 1) {
    for (index_t j0 = 0; j0 < n; j0 += 128) {
      __m512 acc[8];
      __mmask16 mask[8];
      for (int v = 0; v < 8; ++v) {
        acc[v] = _mm512_setzero_ps();
        mask[v] = first_lanes(n - j0 - 16 * v);
      }
      const index_t vecs = std::min<index_t>(8, (n - j0 + 15) / 16);
      if (vecs == 8 && mask[7] == 0xffff) {
        for (index_t p = 0; p < k; ++p) {
          const __m512 xp = _mm512_set1_ps(x[p]);
          const float* row = b.data + p * b.row_stride + j0;
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = _mm512_fmadd_ps(xp, _mm512_loadu_ps(row + 16 * v), acc[v]);
        }
      } else {
        for (index_t p = 0; p < k; ++p) {
          const __m512 xp = _mm512_set1_ps(x[p]);
          const float* row = b.data + p * b.row_stride + j0;
          for (index_t v = 0; v < vecs; ++v) acc[v] = _mm512_fmadd_ps(xp, _mm512_maskz_loadu_ps(mask[v], row + 16 * v), acc[v]);
        }
      }
      for (index_t v = 0; v < vecs; ++v) {
        float* yv = y + j0 + 16 * v;
        __m512 r = _mm512_mul_ps(va, acc[v]);
        if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[v], yv), r);
        _mm512_mask_storeu_ps(yv, mask[v], r);
      }
    }
  } else {
    const index_t k16 = k / 16 * 16;
    const __mmask16 tail = first_lanes(k - k16);
    auto finish = [&](index_t j, float dot) { y[j] = alpha * dot + (beta == 0.0f ? 0.0f : beta * y[j]); };
    index_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* w0 = b.data + j * b.col_stride;
      const float* w1 = w0 + b.col_stride;
      const float* w2 = w1 + b.col_stride;
      const float* w3 = w2 + b.col_stride;
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (index_t p = 0; p < k16; p += 16) {
        const __m512 xv = _mm512_loadu_ps(x + p);
        s0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w0 + p), s0);
        s1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w1 + p), s1);
        s2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w2 + p), s2);
        s3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w3 + p), s3);
      }
      if (tail) {
        const __m512 xv = _mm512_maskz_loadu_ps(tail, x + k16);
        s0 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, w0 + k16), s0);
        s1 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, w1 + k16), s1);
        s2 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, w2 + k16), s2);
        s3 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, w3 + k16), s3);
      }
      finish(j, _mm512_reduce_add_ps(s0));
      finish(j + 1, _mm512_reduce_add_ps(s1));
      finish(j + 2, _mm512_reduce_add_ps(s2));
      finish(j + 3, _mm512_reduce_add_ps(s3));
    }
    for (; j < n; ++j) {
      const float* w0 = b.data + j * b.col_stride;
      __m512 s0 = _mm512_setzero_ps();
      for (index_t p = 0; p < k16; p += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + p), _mm512_loadu_ps(w0 + p), s0);
      if (tail) s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, x + k16), _mm512_maskz_loadu_ps(tail, w0 + k16), s0);
      finish(j, _mm512_reduce_add_ps(s0));
    }
  }
  rows.finish();
  return true;
}

}  // namespace avx512
#endif

#if SLIMNET_GEMM_AVX2
namespace avx2 {

constexpr index_t mr = 6;   // rows of the register tile
constexpr index_t nr = 16;  // columns of the register tile and of a packed B panel: two 8-float vectors

/// Cache blocking, BLIS's loop order for Haswell: a kc x nc block of B is packed into 16-column
/// panels, an mc x kc block of A into 6-row panels (kept in L2: 144 x 256 floats = 144 KiB); each
/// B panel (kc x 16 = 16 KiB, in L1) is swept down all A panels of the block, and the 6 x 16 tile
/// of C is read and written once per kc of depth. Tests shrink them to exercise block edges.
struct blocking {
  index_t kc = 256, mc = 144, nc = 2048;
};
inline blocking& gemm_blocking() {
  static blocking b;
  return b;
}

/// Lanes [0, n) set (n clamped to 0..8): the mask of vmaskmovps.
SLIMNET_GEMM_AVX2_TARGET inline __m256i first_lanes(index_t n) {
  const int k = static_cast<int>(std::clamp<index_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Sum of the 8 lanes.
SLIMNET_GEMM_AVX2_TARGET inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/// In-place transpose of an 8x8 block held as 8 rows (unpack pairs, 4x4 within lanes, swap lanes).
SLIMNET_GEMM_AVX2_TARGET inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

/// Packs rows [i0, i0+rows) x depth [p0, p0+k) of A into ap[p * mr + r] (rows <= mr).
SLIMNET_GEMM_AVX2_TARGET inline void pack_a(const matrix_ref<const float>& a, index_t i0, index_t rows, index_t p0, index_t k, float* ap) {
  if (a.col_stride == 1) {
    // A row-major (the forward X W^T, a convolution's im2row): 8 depths of the 6 rows at a time
    // are transposed in registers (two zero rows make the 8x8), and each depth's 8 floats are
    // stored at ap + p * mr, running 2 floats into the next depth's slots (rewritten by its store)
    // or past the panel (ap has slack). With one scalar copy per float instead, 1024 x 576 x 64
    // (VGG conv1_2 at 32 x 32, X W^T) took 1131 us against 993 us (an AVX2-only EPYC under load).
    const index_t k8 = k / 8 * 8;
    const float* src[mr];
    for (index_t r = 0; r < mr; ++r)
      src[r] = a.data + (i0 + std::min(r, rows - 1)) * a.row_stride + p0;  // short panel: row rows-1 again, unused
    for (index_t p = 0; p < k8; p += 8) {
      __m256 t[8];
#pragma GCC unroll 6
      for (int r = 0; r < static_cast<int>(mr); ++r) t[r] = _mm256_loadu_ps(src[r] + p);
      t[6] = t[7] = _mm256_setzero_ps();
      transpose8x8(t);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(ap + (p + q) * mr, t[q]);
    }
    for (index_t p = k8; p < k; ++p)
      for (index_t r = 0; r < rows; ++r) ap[p * mr + r] = src[r][p];
  } else if (a.row_stride == 1) {
    // A is a transposed row-major matrix (dW = dY^T X): its `rows` floats at each depth are
    // contiguous. One masked load and one 8-float store per depth; the store runs 2 floats into
    // the next depth's slots (rewritten by the next store) and past the panel's end (ap has slack).
    // A full panel takes a 4-float and a 2-float move instead: vmaskmovps was a third of the
    // time of 20 x 36864 x 25 (LeNet-5 conv1's dW at batch 64). The stride is read once: stores
    // through ap may alias `a` for the compiler.
    const index_t ld = a.col_stride;
    const float* src = a.data + p0 * ld + i0;
    if (rows == mr) {
      for (index_t p = 0; p < k; ++p) {
        _mm_storeu_ps(ap + p * mr, _mm_loadu_ps(src + p * ld));
        _mm_store_sd(reinterpret_cast<double*>(ap + p * mr + 4), _mm_load_sd(reinterpret_cast<const double*>(src + p * ld + 4)));
      }
    } else {
      const __m256i m = first_lanes(rows);
      for (index_t p = 0; p < k; ++p) _mm256_storeu_ps(ap + p * mr, _mm256_maskload_ps(src + p * ld, m));
    }
  } else {
    for (index_t p = 0; p < k; ++p) {
      const float* src = a.data + (p0 + p) * a.col_stride + i0 * a.row_stride;
      for (index_t r = 0; r < rows; ++r) ap[p * mr + r] = src[r * a.row_stride];
    }
  }
}

/// Packs depth [p0, p0+k) x columns [j0, j0+cols) of B into bp[p * nr + j] (columns past the end
/// are zero, so the tile computes them harmlessly and does not store them).
SLIMNET_GEMM_AVX2_TARGET inline void pack_b(const matrix_ref<const float>& b, index_t p0, index_t k, index_t j0, index_t cols, float* bp) {
  if (b.col_stride == 1) {
    const float* src = b.data + p0 * b.row_stride + j0;
    if (cols == nr) {
      for (index_t p = 0; p < k; ++p) {
        _mm256_storeu_ps(bp + p * nr, _mm256_loadu_ps(src + p * b.row_stride));
        _mm256_storeu_ps(bp + p * nr + 8, _mm256_loadu_ps(src + p * b.row_stride + 8));
      }
    } else {
      const __m256i m0 = first_lanes(cols), m1 = first_lanes(cols - 8);
      for (index_t p = 0; p < k; ++p) {
        _mm256_storeu_ps(bp + p * nr, _mm256_maskload_ps(src + p * b.row_stride, m0));
        _mm256_storeu_ps(bp + p * nr + 8, _mm256_maskload_ps(src + p * b.row_stride + 8, m1));
      }
    }
  } else if (b.row_stride == 1) {
    // B is a transposed row-major matrix (a layer's W^T): column j is contiguous along the depth.
    // 8x8 blocks are transposed in registers: 8 loads from 8 columns become 8 stores at 8 depths.
    const index_t k8 = k / 8 * 8;
    for (index_t h = 0; h < nr; h += 8) {
      const float* col[8];
      for (index_t j = 0; j < 8; ++j) {
        const index_t cj = std::max<index_t>(0, std::min(h + j, cols - 1));  // past the end: a valid column, zeroed below
        col[j] = b.data + (j0 + cj) * b.col_stride + p0;
      }
      const __m256 keep = _mm256_castsi256_ps(first_lanes(cols - h));
      for (index_t p = 0; p < k8; p += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(col[j] + p);
        transpose8x8(r);
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(bp + (p + q) * nr + h, _mm256_and_ps(keep, r[q]));
      }
      for (index_t p = k8; p < k; ++p)
        for (index_t j = 0; j < 8; ++j) bp[p * nr + h + j] = h + j < cols ? col[j][p] : 0.0f;
    }
  } else {
    for (index_t p = 0; p < k; ++p)
      for (index_t j = 0; j < nr; ++j) bp[p * nr + j] = j < cols ? b(p0 + p, j0 + j) : 0.0f;
  }
}

/// pack_b of all panels of a row-major B's block, columns [j0, j0+cols), in groups of G panels
/// packed row by row: each depth reads G * 64 contiguous bytes of B (one panel at a time would
/// read 64 bytes per row of B, a new page each for a wide B) and writes G streams.
template <index_t G>
SLIMNET_GEMM_AVX2_TARGET inline void pack_b_rows(const matrix_ref<const float>& b, index_t p0, index_t k, index_t j0, index_t cols,
                                                 float* bp) {
  const index_t full = cols / nr, rest = cols - full * nr;
  const __m256i m0 = first_lanes(rest), m1 = first_lanes(rest - 8);
  for (index_t g = 0; g < full; g += G) {
    const index_t panels = std::min(G, full - g);
    for (index_t p = 0; p < k; ++p) {
      const float* src = b.data + (p0 + p) * b.row_stride + j0 + g * nr;
      float* dst = bp + g * nr * k + p * nr;
      for (index_t q = 0; q < panels; ++q) {
        _mm256_storeu_ps(dst + q * nr * k, _mm256_loadu_ps(src + q * nr));
        _mm256_storeu_ps(dst + q * nr * k + 8, _mm256_loadu_ps(src + q * nr + 8));
      }
    }
  }
  if (rest) {
    for (index_t p = 0; p < k; ++p) {
      const float* src = b.data + (p0 + p) * b.row_stride + j0 + full * nr;
      float* dst = bp + full * nr * k + p * nr;
      _mm256_storeu_ps(dst, _mm256_maskload_ps(src, m0));
      _mm256_storeu_ps(dst + 8, _mm256_maskload_ps(src + 8, m1));
    }
  }
}

/// One depth step of an MR x 8 NV tile: acc{0,1}[r] += A(r, p) * B(p, 0..8 NV), A(r, p) = ap[r * rs].
template <int MR, int NV>
[[gnu::always_inline]] SLIMNET_GEMM_AVX2_TARGET inline void fma_step(__m256 (&acc0)[MR], __m256 (&acc1)[MR], const float* ap,
                                                                     index_t rs, const float* bp) {
  const __m256 b0 = _mm256_loadu_ps(bp), b1 = NV > 1 ? _mm256_loadu_ps(bp + 8) : b0;
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    const __m256 av = _mm256_broadcast_ss(ap + r * rs);
    acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
    if (NV > 1) acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
  }
}

/// The depth loop of an MR x 8 NV tile: A(r, p) = ap[r * rs + p * ps], B(p, j) = bp[p * ldb + j].
/// An FMA's result is ready 4 cycles after it issues (Haswell to Zen 4) and two issue per cycle,
/// so a tile needs 8 independent accumulators to keep both pipes busy; tiles with fewer (MR NV < 8:
/// the last rows and columns of C) sum even and odd depths into two sets, added at the end.
template <int MR, int NV>
[[gnu::always_inline]] SLIMNET_GEMM_AVX2_TARGET inline void fma_depth(__m256 (&acc0)[MR], __m256 (&acc1)[MR], index_t k,
                                                                      const float* ap, index_t rs, index_t ps, const float* bp,
                                                                      index_t ldb) {
  index_t p = 0;
  if constexpr (MR * NV < 8) {
    __m256 odd0[MR], odd1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) odd0[r] = odd1[r] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (; p + 2 <= k; p += 2) {
      fma_step<MR, NV>(acc0, acc1, ap, rs, bp);
      fma_step<MR, NV>(odd0, odd1, ap + ps, rs, bp + ldb);
      ap += 2 * ps;
      bp += 2 * ldb;
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      acc0[r] = _mm256_add_ps(acc0[r], odd0[r]);
      acc1[r] = _mm256_add_ps(acc1[r], odd1[r]);
    }
  }
#pragma GCC unroll 4
  for (; p < k; ++p) {
    fma_step<MR, NV>(acc0, acc1, ap, rs, bp);
    ap += ps;
    bp += ldb;
  }
}

/// C[0:MR, 0:cols] = alpha * A Bp + beta * C (beta = 0: C not read), a 6 x 16 (or shorter) tile in
/// 12 ymm registers, or a 6 x 8 one in 6 (NV = 1, cols <= 8: the last panel of N = 20, 50, 100,
/// which would otherwise spend half its FMAs on the zero columns of the panel). B(p, j) =
/// bp[p * ldb + j] (a packed panel, ldb = 16, or a row-major B in place); A packed (A(r, p) =
/// ap[p * mr + r], lda = 0) or read in place from a row-major matrix (A(r, p) = ap[r * lda + p]).
/// Per depth step: NV loads of B, MR broadcasts of A, NV MR FMAs.
template <int MR, int NV>
SLIMNET_GEMM_AVX2_TARGET inline void micro_kernel(index_t k, const float* ap, index_t lda, const float* bp, index_t ldb, float* c,
                                                  index_t ldc, index_t cols, float alpha, float beta) {
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {  // the tile of C is read (or written) after the k loop: fetch it now
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8 * NV - 1), _MM_HINT_T0);
  }
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  // the constant strides of a packed A become immediate offsets once fma_depth is inlined
  if (lda == 0) {
    fma_depth<MR, NV>(acc0, acc1, k, ap, 1, mr, bp, ldb);
  } else {
    fma_depth<MR, NV>(acc0, acc1, k, ap, lda, 1, bp, ldb);
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (cols == 8 * NV) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      __m256 v0 = alpha == 1.0f ? acc0[r] : _mm256_mul_ps(va, acc0[r]);
      if (beta != 0.0f) v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), v0);
      _mm256_storeu_ps(cr, v0);
      if (NV > 1) {
        __m256 v1 = alpha == 1.0f ? acc1[r] : _mm256_mul_ps(va, acc1[r]);
        if (beta != 0.0f) v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), v1);
        _mm256_storeu_ps(cr + 8, v1);
      }
    }
    return;
  }
  // A short panel (the last columns of C): masked moves, never touching C past `cols`.
  const __m256i m0 = first_lanes(cols), m1 = first_lanes(cols - 8);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    __m256 v0 = _mm256_mul_ps(va, acc0[r]);
    if (beta != 0.0f) v0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr, m0), v0);
    _mm256_maskstore_ps(cr, m0, v0);
    if (NV > 1 && cols > 8) {
      __m256 v1 = _mm256_mul_ps(va, acc1[r]);
      if (beta != 0.0f) v1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr + 8, m1), v1);
      _mm256_maskstore_ps(cr + 8, m1, v1);
    }
  }
}

/// The register tile for `rows` (1..6) rows, 8 NV columns wide. A switch: picking the height by
/// template recursion instead (as NEON's run_tile_rows) made VGG conv1_2 (1024 x 576 x 64) 1.35x
/// slower under GCC 12 -O3 (1240-1341 us against 912-916 us, an AVX2-only EPYC under load).
template <int NV>
SLIMNET_GEMM_AVX2_TARGET inline void run_tile_width(index_t rows, index_t k, const float* ap, index_t lda, const float* bp,
                                                    index_t ldb, float* c, index_t ldc, index_t cols, float alpha, float beta) {
  switch (rows) {
    case 1:
      micro_kernel<1, NV>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
      break;
    case 2:
      micro_kernel<2, NV>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
      break;
    case 3:
      micro_kernel<3, NV>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
      break;
    case 4:
      micro_kernel<4, NV>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
      break;
    case 5:
      micro_kernel<5, NV>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
      break;
    default:
      micro_kernel<6, NV>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
      break;
  }
}

/// The register tile for `rows` (1..6) rows and `cols` (1..16) columns.
SLIMNET_GEMM_AVX2_TARGET inline void run_tile(index_t rows, index_t k, const float* ap, index_t lda, const float* bp, index_t ldb,
                                              float* c, index_t ldc, index_t cols, float alpha, float beta) {
  if (cols <= 8) return run_tile_width<1>(rows, k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
  run_tile_width<2>(rows, k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
}

/// C = alpha * A B + beta * C for depth K (1..4), B(p, j) = bp[p * ldb + j], row by row of C.
template <int K>
SLIMNET_GEMM_AVX2_TARGET inline void shallow_rows(const matrix_ref<const float>& a, const float* bp, index_t ldb, const matrix_ref<float>& c,
                                                  float alpha, float beta) {
  const index_t m = c.rows, n = c.cols, n8 = n / 8 * 8;
  const __m256 vb = _mm256_set1_ps(beta);
  const __m256i tail = first_lanes(n - n8);
  for (index_t i = 0; i < m; ++i) {
    __m256 av[K];
#pragma GCC unroll 4
    for (int p = 0; p < K; ++p) av[p] = _mm256_set1_ps(alpha * a(i, p));
    float* cr = c.data + i * c.row_stride;
#pragma GCC unroll 4
    for (index_t j = 0; j < n8; j += 8) {
      __m256 v = beta == 0.0f ? _mm256_setzero_ps() : beta == 1.0f ? _mm256_loadu_ps(cr + j) : _mm256_mul_ps(vb, _mm256_loadu_ps(cr + j));
#pragma GCC unroll 4
      for (int p = 0; p < K; ++p) v = _mm256_fmadd_ps(av[p], _mm256_loadu_ps(bp + p * ldb + j), v);
      _mm256_storeu_ps(cr + j, v);
    }
    if (n8 < n) {
      const __m256 old = _mm256_maskload_ps(cr + n8, tail);
      __m256 v = beta == 0.0f ? _mm256_setzero_ps() : beta == 1.0f ? old : _mm256_mul_ps(vb, old);
#pragma GCC unroll 4
      for (int p = 0; p < K; ++p) v = _mm256_fmadd_ps(av[p], _mm256_maskload_ps(bp + p * ldb + n8, tail), v);
      _mm256_maskstore_ps(cr + n8, tail, v);
    }
  }
}

/// Depth <= 4 with C row-major: one streaming pass over C's rows, no packing.
SLIMNET_GEMM_AVX2_TARGET inline void gemm_shallow(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c,
                                                  float alpha, float beta) {
  index_t ldb = 0;
  const float* bp = detail::row_major_shallow_b(b, ldb);
  detail::with_shallow_depth(a.cols, [&](auto depth) { shallow_rows<decltype(depth)::value>(a, bp, ldb, c, alpha, beta); });
}

/// c (1 x n) = alpha * a (1 x k) B + beta * c, as the AVX-512 gemv_row: a row-major B is scaled and
/// summed row by row with 64 columns of c in registers, a transposed one (W^T) takes dot products
/// with 4 of W's rows at a time. False (for Eigen) when neither of B's strides is 1.
SLIMNET_GEMM_AVX2_TARGET inline bool gemv_row(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c,
                                              float alpha, float beta) {
  if (b.col_stride != 1 && b.row_stride != 1) return false;
  const index_t k = a.cols, n = c.cols;
  const detail::contiguous_row_operands rows(a, c);
  const float* x = rows.x();
  float* y = rows.y();
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (b.col_stride == 1) {
    for (index_t j0 = 0; j0 < n; j0 += 64) {
      __m256 acc[8];
      for (int v = 0; v < 8; ++v) acc[v] = _mm256_setzero_ps();
      if (j0 + 64 <= n) {
        for (index_t p = 0; p < k; ++p) {
          const __m256 xp = _mm256_set1_ps(x[p]);
          const float* row = b.data + p * b.row_stride + j0;
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(xp, _mm256_loadu_ps(row + 8 * v), acc[v]);
        }
      } else {
        const index_t vecs = (n - j0 + 7) / 8;
        const __m256i last = first_lanes(n - j0 - 8 * (vecs - 1));
        for (index_t p = 0; p < k; ++p) {
          const __m256 xp = _mm256_set1_ps(x[p]);
          const float* row = b.data + p * b.row_stride + j0;
          for (index_t v = 0; v + 1 < vecs; ++v) acc[v] = _mm256_fmadd_ps(xp, _mm256_loadu_ps(row + 8 * v), acc[v]);
          acc[vecs - 1] = _mm256_fmadd_ps(xp, _mm256_maskload_ps(row + 8 * (vecs - 1), last), acc[vecs - 1]);
        }
      }
      const index_t vecs = std::min<index_t>(8, (n - j0 + 7) / 8);
      for (index_t v = 0; v < vecs; ++v) {
        float* yv = y + j0 + 8 * v;
        const __m256i mask = first_lanes(n - j0 - 8 * v);
        __m256 r = _mm256_mul_ps(va, acc[v]);
        if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(yv, mask), r);
        _mm256_maskstore_ps(yv, mask, r);
      }
    }
  } else {
    const index_t k8 = k / 8 * 8;
    const __m256i tail = first_lanes(k - k8);
    index_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* w0 = b.data + j * b.col_stride;
      const float* w1 = w0 + b.col_stride;
      const float* w2 = w1 + b.col_stride;
      const float* w3 = w2 + b.col_stride;
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (index_t p = 0; p < k8; p += 8) {
        const __m256 xv = _mm256_loadu_ps(x + p);
        s0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w0 + p), s0);
        s1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w1 + p), s1);
        s2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w2 + p), s2);
        s3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w3 + p), s3);
      }
      if (k8 < k) {
        const __m256 xv = _mm256_maskload_ps(x + k8, tail);
        s0 = _mm256_fmadd_ps(xv, _mm256_maskload_ps(w0 + k8, tail), s0);
        s1 = _mm256_fmadd_ps(xv, _mm256_maskload_ps(w1 + k8, tail), s1);
        s2 = _mm256_fmadd_ps(xv, _mm256_maskload_ps(w2 + k8, tail), s2);
        s3 = _mm256_fmadd_ps(xv, _mm256_maskload_ps(w3 + k8, tail), s3);
      }
      const float d[4] = {hsum(s0), hsum(s1), hsum(s2), hsum(s3)};
      for (int q = 0; q < 4; ++q) y[j + q] = alpha * d[q] + (beta == 0.0f ? 0.0f : beta * y[j + q]);
    }
    for (; j < n; ++j) {
      const float* w0 = b.data + j * b.col_stride;
      __m256 s0 = _mm256_setzero_ps();
      for (index_t p = 0; p < k8; p += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p), _mm256_loadu_ps(w0 + p), s0);
      if (k8 < k) s0 = _mm256_fmadd_ps(_mm256_maskload_ps(x + k8, tail), _mm256_maskload_ps(w0 + k8, tail), s0);
      y[j] = alpha * hsum(s0) + (beta == 0.0f ? 0.0f : beta * y[j]);
    }
  }
  rows.finish();
  return true;
}

}  // namespace avx2
#endif

#if SLIMNET_GEMM_NEON
namespace neon {

constexpr index_t mr = 8;   // rows of the register tile: two float32x4_t of packed A per depth step
constexpr index_t nr = 12;  // columns of the tile and of a packed B panel: three float32x4_t

/// Cache blocking in the avx2 family's loop order: a B panel (kc x 12 floats, 12 KiB) stays in a
/// 32-64 KiB L1d, an A block (mc x kc, 128 KiB) in L2. Sized for Cortex-A72/A76-class cores, not
/// tuned: no ARM machine is at hand, and qemu says nothing about speed. Tests shrink them.
struct blocking {
  index_t kc = 256, mc = 128, nc = 2040;
};
inline blocking& gemm_blocking() {
  static blocking b;
  return b;
}

/// Packs rows [i0, i0+rows) x depth [p0, p0+k) of A into ap[p * mr + r] (rows <= mr). The slots
/// of rows past `rows` are not written: a short panel's tile never uses their lanes.
inline void pack_a(const matrix_ref<const float>& a, index_t i0, index_t rows, index_t p0, index_t k, float* ap) {
  if (a.col_stride == 1) {
    for (index_t r = 0; r < rows; ++r) {
      const float* src = a.data + (i0 + r) * a.row_stride + p0;
      for (index_t p = 0; p < k; ++p) ap[p * mr + r] = src[p];
    }
  } else {  // A^T (row stride 1) or doubly strided: walk along the depth, A's rows at each p
    for (index_t p = 0; p < k; ++p) {
      const float* src = a.data + (p0 + p) * a.col_stride + i0 * a.row_stride;
      for (index_t r = 0; r < rows; ++r) ap[p * mr + r] = src[r * a.row_stride];
    }
  }
}

/// Packs depth [p0, p0+k) x columns [j0, j0+cols) of B into bp[p * nr + j] (columns past the end
/// are zero: the tile computes them harmlessly and does not store them).
inline void pack_b(const matrix_ref<const float>& b, index_t p0, index_t k, index_t j0, index_t cols, float* bp) {
  if (b.col_stride == 1 && cols == nr) {
    for (index_t p = 0; p < k; ++p) {
      const float* src = b.data + (p0 + p) * b.row_stride + j0;
      vst1q_f32(bp + p * nr, vld1q_f32(src));
      vst1q_f32(bp + p * nr + 4, vld1q_f32(src + 4));
      vst1q_f32(bp + p * nr + 8, vld1q_f32(src + 8));
    }
  } else if (b.row_stride == 1) {  // B = W^T: column j of B is contiguous along the depth
    for (index_t j = 0; j < nr; ++j) {
      const float* src = b.data + (j0 + std::min(j, cols - 1)) * b.col_stride + p0;
      for (index_t p = 0; p < k; ++p) bp[p * nr + j] = j < cols ? src[p] : 0.0f;
    }
  } else {
    for (index_t p = 0; p < k; ++p)
      for (index_t j = 0; j < nr; ++j) bp[p * nr + j] = j < cols ? b(p0 + p, j0 + j) : 0.0f;
  }
}

/// pack_b of all panels of a row-major B's block, columns [j0, j0+cols).
inline void pack_b_rows(const matrix_ref<const float>& b, index_t p0, index_t k, index_t j0, index_t cols, float* bp) {
  for (index_t jp = 0; jp * nr < cols; ++jp) pack_b(b, p0, k, j0 + jp * nr, std::min(nr, cols - jp * nr), bp + jp * nr * k);
}

/// Row R of the tile at one depth step: acc[R][v] += B(p, 4v..4v+3) * A(R, p), A(R, p) being lane
/// R % 4 of the packed A's first or second vector (fmla by element: no broadcast instruction).
template <int R>
inline void fma_row(float32x4_t (&acc)[3], float32x4_t b0, float32x4_t b1, float32x4_t b2, float32x4_t a_lo, float32x4_t a_hi) {
  const float32x4_t av = R < 4 ? a_lo : a_hi;
  acc[0] = vfmaq_laneq_f32(acc[0], b0, av, R % 4);
  acc[1] = vfmaq_laneq_f32(acc[1], b1, av, R % 4);
  acc[2] = vfmaq_laneq_f32(acc[2], b2, av, R % 4);
}

template <int MR, int... R>
inline void fma_rows(float32x4_t (&acc)[MR][3], float32x4_t b0, float32x4_t b1, float32x4_t b2, float32x4_t a_lo,
                     float32x4_t a_hi, std::integer_sequence<int, R...>) {
  (fma_row<R>(acc[R], b0, b1, b2, a_lo, a_hi), ...);
}

/// C[0:MR, 0:cols] = alpha * A Bp + beta * C (beta = 0: C not read), an MR x 12 tile (MR <= 8) in
/// 3 MR float32x4_t accumulators: 24 for a full tile, plus 3 of B and 2 of A, 29 of the 32 vector
/// registers. B(p, j) = bp[p * ldb + j] (a packed panel, ldb = 12, or a row-major B in place); A
/// packed, A(r, p) = ap[p * mr + r] (the family never reads A in place: lda is 0). Per depth step
/// 2 loads of A, 3 of B, 3 MR fmla by element: for MR = 8, GCC 12 -O3 makes the loop of two depth
/// steps 62 instructions, 48 fmla, 7 loads (10 vectors) and 7 for the addresses, count and branch.
/// Kept out of line: each tile height is one function, not all eight inlined into run_tile.
template <int MR>
[[gnu::noinline]] inline void micro_kernel(index_t k, const float* ap, index_t /*lda*/, const float* bp, index_t ldb, float* c,
                                           index_t ldc, index_t cols, float alpha, float beta) {
  float32x4_t acc[MR][3];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = acc[r][2] = vdupq_n_f32(0.0f);
#pragma GCC unroll 2
  for (index_t p = 0; p < k; ++p) {
    const float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4), b2 = vld1q_f32(bp + 8);
    const float32x4_t a_lo = vld1q_f32(ap), a_hi = MR > 4 ? vld1q_f32(ap + 4) : a_lo;
    fma_rows<MR>(acc, b0, b1, b2, a_lo, a_hi, std::make_integer_sequence<int, MR>{});
    ap += mr;
    bp += ldb;
  }
  if (cols == nr) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
#pragma GCC unroll 3
      for (int v = 0; v < 3; ++v) {
        float32x4_t y = alpha == 1.0f ? acc[r][v] : vmulq_n_f32(acc[r][v], alpha);
        if (beta != 0.0f) y = vfmaq_n_f32(y, vld1q_f32(cr + 4 * v), beta);
        vst1q_f32(cr + 4 * v, y);
      }
    }
    return;
  }
  // A short panel (the last columns of C): through a buffer, never touching C past `cols`. Every
  // loop over the accumulators is unrolled, or GCC keeps them in memory, stored at each depth step.
  float t[nr];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) vst1q_f32(t + 4 * v, acc[r][v]);
    for (index_t j = 0; j < cols; ++j) cr[j] = beta == 0.0f ? alpha * t[j] : alpha * t[j] + beta * cr[j];
  }
}

/// The register tile for `rows` (MR..8) rows: micro_kernel<rows>.
template <int MR = 1>
inline void run_tile_rows(index_t rows, index_t k, const float* ap, index_t lda, const float* bp, index_t ldb, float* c,
                          index_t ldc, index_t cols, float alpha, float beta) {
  if constexpr (MR < mr) {
    if (rows > MR) return run_tile_rows<MR + 1>(rows, k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
  }
  micro_kernel<MR>(k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
}

/// The register tile for `rows` (1..8) rows.
inline void run_tile(index_t rows, index_t k, const float* ap, index_t lda, const float* bp, index_t ldb, float* c, index_t ldc,
                     index_t cols, float alpha, float beta) {
  run_tile_rows(rows, k, ap, lda, bp, ldb, c, ldc, cols, alpha, beta);
}

/// c (1 x n) = alpha * a (1 x k) B + beta * c (batch 1), as the avx2 gemv_row: a row-major B is
/// scaled and summed row by row with 32 columns of c in 8 registers; a transposed one (W^T, a
/// layer's weights) takes dot products of x with 4 of W's rows at a time. False (for Eigen) when
/// neither of B's strides is 1.
inline bool gemv_row(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                     float beta) {
  if (b.col_stride != 1 && b.row_stride != 1) return false;
  const index_t k = a.cols, n = c.cols;
  const detail::contiguous_row_operands rows(a, c);
  const float* x = rows.x();
  float* y = rows.y();
  auto finish = [&](index_t j, float dot) { y[j] = alpha * dot + (beta == 0.0f ? 0.0f : beta * y[j]); };
  if (b.col_stride == 1) {
    index_t j0 = 0;
    for (; j0 + 32 <= n; j0 += 32) {
      float32x4_t acc[8];
      for (int v = 0; v < 8; ++v) acc[v] = vdupq_n_f32(0.0f);
      for (index_t p = 0; p < k; ++p) {
        const float* row = b.data + p * b.row_stride + j0;
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) acc[v] = vfmaq_n_f32(acc[v], vld1q_f32(row + 4 * v), x[p]);
      }
      for (int v = 0; v < 8; ++v) {
        float32x4_t r = vmulq_n_f32(acc[v], alpha);
        if (beta != 0.0f) r = vfmaq_n_f32(r, vld1q_f32(y + j0 + 4 * v), beta);
        vst1q_f32(y + j0 + 4 * v, r);
      }
    }
    for (; j0 + 4 <= n; j0 += 4) {
      float32x4_t acc = vdupq_n_f32(0.0f);
      for (index_t p = 0; p < k; ++p) acc = vfmaq_n_f32(acc, vld1q_f32(b.data + p * b.row_stride + j0), x[p]);
      float32x4_t r = vmulq_n_f32(acc, alpha);
      if (beta != 0.0f) r = vfmaq_n_f32(r, vld1q_f32(y + j0), beta);
      vst1q_f32(y + j0, r);
    }
    for (; j0 < n; ++j0) {
      float s = 0.0f;
      for (index_t p = 0; p < k; ++p) s += x[p] * b.data[p * b.row_stride + j0];
      finish(j0, s);
    }
  } else {
    const index_t k4 = k / 4 * 4;
    index_t j = 0;
    for (; j + 4 <= n; j += 4) {
      const float* w[4] = {b.data + j * b.col_stride, b.data + (j + 1) * b.col_stride, b.data + (j + 2) * b.col_stride,
                           b.data + (j + 3) * b.col_stride};
      float32x4_t s[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
      for (index_t p = 0; p < k4; p += 4) {
        const float32x4_t xv = vld1q_f32(x + p);
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) s[q] = vfmaq_f32(s[q], xv, vld1q_f32(w[q] + p));
      }
      for (int q = 0; q < 4; ++q) {
        float dot = vaddvq_f32(s[q]);
        for (index_t p = k4; p < k; ++p) dot += x[p] * w[q][p];
        finish(j + q, dot);
      }
    }
    for (; j < n; ++j) {
      const float* w0 = b.data + j * b.col_stride;
      float32x4_t s0 = vdupq_n_f32(0.0f);
      for (index_t p = 0; p < k4; p += 4) s0 = vfmaq_f32(s0, vld1q_f32(x + p), vld1q_f32(w0 + p));
      float dot = vaddvq_f32(s0);
      for (index_t p = k4; p < k; ++p) dot += x[p] * w0[p];
      finish(j, dot);
    }
  }
  rows.finish();
  return true;
}

}  // namespace neon
#endif

/// The blocked product of the avx2 and neon families: C = alpha * A B + beta * C with C row-major
/// (unit column stride), m, n, depth >= 1, in BLIS's loop order. A kc x nc block of B is packed
/// into nr-column panels, an mc x kc block of A into mr-row panels (kept in L2); each B panel
/// (kc x nr, in L1) is swept down all A panels of the block, and a tile of C is read and written
/// once per kc of depth. Tiles names the family's mr, nr, gemm_blocking(), pack_a, pack_b (one
/// panel), pack_b_rows (every panel of a row-major B's block) and run_tile (an mr x nr tile or a
/// shorter one; A packed, lda = 0, or read in place; B packed, ldb = nr, or read in place).
template <class Tiles>
void blocked_gemm(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                  float beta) {
  constexpr index_t mr = Tiles::mr, nr = Tiles::nr;
  const index_t m = c.rows, n = c.cols, depth = a.cols;
  const auto& bl = Tiles::gemm_blocking();
  const index_t kc = balanced_block(depth, std::max<index_t>(bl.kc, 1), 8);
  const index_t mc = balanced_block(m, std::max(bl.mc / mr, index_t{1}) * mr, mr);
  const index_t nc = balanced_block(n, std::max(bl.nc / nr, index_t{1}) * nr, nr);
  thread_local std::vector<float> a_pack, b_pack;
  // 8 floats of slack: pack_a may store a full vector past a short panel's end
  a_pack.resize(static_cast<std::size_t>((std::min(mc, m) + mr - 1) / mr * mr * kc + 8));
  b_pack.resize(static_cast<std::size_t>((std::min(nc, n) + nr - 1) / nr * nr * kc));
  for (index_t j0 = 0; j0 < n; j0 += nc) {
    const index_t ncols = std::min(nc, n - j0), n_panels = (ncols + nr - 1) / nr;
    for (index_t p0 = 0; p0 < depth; p0 += kc) {
      const index_t k = std::min(kc, depth - p0);
      const float beta_block = p0 == 0 ? beta : 1.0f;  // later depth blocks accumulate into C
      // As on AVX-512: full panels of a row-major B are read in place when at most two rows of
      // tiles would reuse a packed copy; a row-major A is read in place when few B panels would
      // reuse a packed one, or when its row stride is not a multiple of 256 bytes (rows 2^k bytes
      // apart share L1 sets). Measured on x86 (AVX-512 and AVX2); NEON always packs A (see neon_kernels).
      const bool b_in_place = b.col_stride == 1 && (m + mr - 1) / mr <= 2;
      const bool a_in_place = Tiles::read_a_in_place && a.col_stride == 1 && (n_panels <= 2 || a.row_stride % 64 != 0);
      if (b.col_stride == 1 && !b_in_place) {
        Tiles::pack_b_rows(b, p0, k, j0, ncols, b_pack.data());
      } else {
        for (index_t jp = 0; jp < n_panels; ++jp) {
          const index_t cols = std::min(nr, ncols - jp * nr);
          if (b_in_place && cols == nr) continue;
          Tiles::pack_b(b, p0, k, j0 + jp * nr, cols, b_pack.data() + jp * nr * k);
        }
      }
      for (index_t i0 = 0; i0 < m; i0 += mc) {
        const index_t mrows = std::min(mc, m - i0), m_panels = (mrows + mr - 1) / mr;
        if (!a_in_place) {
          for (index_t ip = 0; ip < m_panels; ++ip)
            Tiles::pack_a(a, i0 + ip * mr, std::min(mr, mrows - ip * mr), p0, k, a_pack.data() + ip * mr * k);
        }
        for (index_t jp = 0; jp < n_panels; ++jp) {
          const index_t col = j0 + jp * nr, cols = std::min(nr, n - col);
          const bool read_b = b_in_place && cols == nr;
          const float* bp = read_b ? b.data + p0 * b.row_stride + col : b_pack.data() + jp * nr * k;
          const index_t ldb = read_b ? b.row_stride : nr;
          for (index_t ip = 0; ip < m_panels; ++ip) {
            const index_t row = i0 + ip * mr, rows = std::min(mr, m - row);
            const float* ap = a_in_place ? a.data + row * a.row_stride + p0 : a_pack.data() + ip * mr * k;
            Tiles::run_tile(rows, k, ap, a_in_place ? a.row_stride : 0, bp, ldb, c.data + row * c.row_stride + col, c.row_stride,
                            cols, alpha, beta_block);
          }
        }
      }
    }
  }
}

/// A family's kernels under one name, for the shape routing in float_gemm.
#if SLIMNET_GEMM_AVX512
struct avx512_kernels {
  static bool gemv_row(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
    return avx512::gemv_row(a, b, c, alpha, beta);
  }
  static void shallow(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
    avx512::gemm_shallow(a, b, c, alpha, beta);
  }
  static void blocked(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
    avx512::gemm(a, b, c, alpha, beta);
  }
};
#endif
#if SLIMNET_GEMM_AVX2
struct avx2_kernels {
  static bool gemv_row(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
    return avx2::gemv_row(a, b, c, alpha, beta);
  }
  static void shallow(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
    avx2::gemm_shallow(a, b, c, alpha, beta);
  }
  static void blocked(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
    blocked_gemm<avx2_kernels>(a, b, c, alpha, beta);
  }
  // the tiles blocked_gemm runs
  static constexpr index_t mr = avx2::mr, nr = avx2::nr;
  static constexpr bool read_a_in_place = true;
  static constexpr auto& gemm_blocking = avx2::gemm_blocking;
  static constexpr auto& pack_a = avx2::pack_a;
  static constexpr auto& pack_b = avx2::pack_b;
  static constexpr auto& pack_b_rows = avx2::pack_b_rows<8>;
  static constexpr auto& run_tile = avx2::run_tile;
};
#endif
#if SLIMNET_GEMM_NEON
/// The NEON family: the matrix-vector kernel for a single row or column of C, the blocked kernel
/// otherwise, depth <= 4 included (packing 4 x n of B and m x 4 of A costs little next to C's
/// traffic).
struct neon_kernels {
  static constexpr auto& gemv_row = neon::gemv_row;
  static void shallow(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                      float beta) {
    blocked_gemm<neon_kernels>(a, b, c, alpha, beta);
  }
  static void blocked(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha,
                      float beta) {
    blocked_gemm<neon_kernels>(a, b, c, alpha, beta);
  }
  static constexpr index_t mr = neon::mr, nr = neon::nr;
  // A read in place takes 8 scalar loads a depth step, and GCC 12 -O3 then spilled accumulators
  // to the stack inside the depth loop (q registers stored to and loaded from sp at every step).
  static constexpr bool read_a_in_place = false;
  static constexpr auto& gemm_blocking = neon::gemm_blocking;
  static constexpr auto& pack_a = neon::pack_a;
  static constexpr auto& pack_b = neon::pack_b;
  static constexpr auto& pack_b_rows = neon::pack_b_rows;
  static constexpr auto& run_tile = neon::run_tile;
};
#endif

/// Routes a float product (m, n, depth >= 1) to family Kernels: false when no kernel of it takes
/// the shape (Eigen computes it then).
///  - A single row (or column) of C, a batch of 1: the matrix-vector kernel, which streams the
///    matrix once where the blocked kernel would pack all of it for one row; 2-3 rows or columns
///    go to Eigen.
///  - Depth <= 4 (outer products): one streaming pass over C.
///  - Otherwise the blocked kernel. Tiles store along C's rows, so C must be row-major; a
///    column-major C is computed as C^T = B^T A^T.
template <class Kernels>
bool float_gemm(const matrix_ref<const float>& a, const matrix_ref<const float>& b, const matrix_ref<float>& c, float alpha, float beta) {
  if (c.rows == 1 && Kernels::gemv_row(a, b, c, alpha, beta)) return true;
  if (c.cols == 1 && Kernels::gemv_row(b.transposed(), a.transposed(), c.transposed(), alpha, beta)) return true;
  if (std::min(c.rows, c.cols) < 4) return false;
  const bool shallow = a.cols <= 4;
  if (c.col_stride == 1) {
    shallow ? Kernels::shallow(a, b, c, alpha, beta) : Kernels::blocked(a, b, c, alpha, beta);
    return true;
  }
  if (c.row_stride == 1) {
    shallow ? Kernels::shallow(b.transposed(), a.transposed(), c.transposed(), alpha, beta)
            : Kernels::blocked(b.transposed(), a.transposed(), c.transposed(), alpha, beta);
    return true;
  }
  return false;
}

/// Tag of the fp32 GEMM's path counters (detail::count_path).
struct gemm_tag;

}  // namespace detail

/// The family float products take under the current active_isa(): avx512, avx2 (an avx2 choice),
/// neon (on aarch64), else portable (Eigen). Some shapes run on Eigen whatever the family (see
/// gemm); doubles always do.
inline isa gemm_path() {
#if SLIMNET_GEMM_AVX512
  const isa active = active_isa();
  if (active == isa::avx512) return isa::avx512;
  if (active == isa::avx2) return isa::avx2;
#elif SLIMNET_GEMM_NEON
  if (active_isa() == isa::neon) return isa::neon;
#endif
  return isa::portable;
}

/// How many gemm calls (float or double) each family computed since the program started: avx512,
/// avx2 or neon for slimnet's kernels, portable for Eigen. Calls with an empty C or depth 0 compute nothing
/// and are not counted.
inline std::uint64_t gemm_path_calls(isa path) { return detail::path_calls<detail::gemm_tag>(path); }

/// C = alpha * A B + beta * C. With beta = 0, C's previous contents (even NaN) are ignored.
/// C must not overlap A or B. Float products run on the family gemm_path() names, except those
/// with 2 or 3 rows or columns of C, or a C with no unit stride, which Eigen computes.
template <class Scalar>
void gemm(matrix_ref<const Scalar> a, matrix_ref<const Scalar> b, matrix_ref<Scalar> c, Scalar alpha = 1, Scalar beta = 0) {
  detail::check_gemm_shapes("slimnet::kernels::gemm", a, b, c);
  if (c.rows == 0 || c.cols == 0) return;
  if (a.cols == 0) {
    for (index_t i = 0; i < c.rows; ++i)
      for (index_t j = 0; j < c.cols; ++j) c(i, j) = beta == Scalar(0) ? Scalar(0) : beta * c(i, j);
    return;
  }
  auto count = [](isa path) { detail::count_path<detail::gemm_tag>(path); };
#if SLIMNET_GEMM_AVX512
  if constexpr (std::is_same_v<Scalar, float>) {
    const isa path = gemm_path();
    if (path == isa::avx512 && detail::float_gemm<detail::avx512_kernels>(a, b, c, alpha, beta)) return count(isa::avx512);
    if (path == isa::avx2 && detail::float_gemm<detail::avx2_kernels>(a, b, c, alpha, beta)) return count(isa::avx2);
  }
#endif
#if SLIMNET_GEMM_NEON
  if constexpr (std::is_same_v<Scalar, float>) {
    if (gemm_path() == isa::neon && detail::float_gemm<detail::neon_kernels>(a, b, c, alpha, beta)) return count(isa::neon);
  }
#endif
  detail::gemm_eigen(a, b, c, alpha, beta);
  count(isa::portable);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
