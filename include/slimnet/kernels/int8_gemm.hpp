// Integer GEMM with int32 accumulation: int8 (A int8 or uint8, B int8) and fixed-point int16,
//   C(i, j) = sum_k A(i, k) B(k, j)                                    (int32, exact)
// or, with a float epilogue (dequantization of a layer):
//   C(i, j) = row_scale[i] * col_scale[j] * sum_k A(i, k) B(k, j) + col_bias[j]
// As a layer y = x W^T: A = quantized activations (batch x in), B = W_q^T, packed once.
// Exactness: int32 sums are exact while |partial sums| < 2^31 (int8: K < 133,000 always suffices;
// int16: K * max|a| * max|b| < 2^31); past that they wrap modulo 2^32 on every path.
//
// The VNNI kernel: vpdpbusd multiplies 64 unsigned bytes of A by 64 signed bytes of B and adds
// groups of 4 products into 16 int32 lanes (64 multiply-adds per instruction, 4x an fp32 FMA).
// B is packed in panels of 64 columns as [k/4][64 columns][4 consecutive k], so one register holds
// 16 columns x 4 k; 4 bytes of each of 6 rows of A are broadcast; the 6 x 64 tile of int32
// accumulators lives in 24 registers (the last rows of C, fewer than 6, get a tile of their own
// height: batch 1 computes one row, not six). vpdpbusd wants A unsigned: a signed A is shifted,
//   sum_k (a + 128) b = sum_k a b + 128 * sum_k b   =>   C = dpbusd(a XOR 0x80, b) - 128 colsum(B),
// with colsum(B) computed when B is packed. int16 uses vpdpwssd (signed x signed, pairs of k,
// 32 multiply-adds per instruction) with the same tile and no correction.
//
// Paths, chosen per call at run time (cpu_features.hpp), all compiled in every x86-64 build with
// function target attributes, whatever the program's -march:
//   avx512    the tile above (AVX-512 F/BW/VL/DQ + AVX512-VNNI: Ice Lake, Zen 4 and later);
//   avx2      int8 on AVX-VNNI where the CPU has it (Alder Lake, Zen 5: VEX vpdpbusd on 256 bits,
//             the same shift and correction, a 6 x 16 tile); otherwise, and for int16, vpmaddwd on
//             16-bit values (int8 bytes widened; exact, unlike vpmaddubsw, which saturates), a
//             6 x 8 tile;
//   neon      aarch64, A copied once per call into rows of B's signed type padded to whole lane
//             groups (a uint8 A shifted, a - 128 = a XOR 0x80, the shift taken back out with
//             + 128 colsum(B), the mirror of the x86 correction since SDOT multiplies signed by
//             signed). int8 on SDOT where the CPU has the dot product (HWCAP_ASIMDDP, ARMv8.2+:
//             Cortex-A55/A76 and later): each instruction adds 4 products of a column's 4 k into
//             one of 4 int32 lanes, so 16 bytes of the packed panel are 4 columns x 4 k as they
//             stand; a 6 x 16 tile (24 accumulators). Otherwise, and for int16, products widened
//             exactly (smull on bytes into 16 bits, |-128 * -128| <= 2^15, accumulated pairwise
//             by sadalp; smlal on int16 pairs) into 2 int32 vectors per 4 columns, added pairwise
//             at the end; a 6 x 8 tile;
//   portable  scalar, 64-bit sums (the only path on other architectures).
// gemm_int_path() says which path a call takes; gemm_int_path_calls() counts the calls that ran
// each one.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/matrix_ref.hpp"
#include "slimnet/kernels/intrinsics.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
#define SLIMNET_INT_AVX512_TARGET SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#define SLIMNET_INT_AVX2_TARGET SLIMNET_TARGET("avx2,fma")
#define SLIMNET_INT_AVX_VNNI_TARGET SLIMNET_TARGET("avx2,fma,avxvnni")
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define SLIMNET_INT_NEON 1
// SDOT: compiled in where the build targets the dot product, and by GCC in every build with a
// function target attribute ("+dotprod" alone is refused by GCC 12's arm_neon.h, whose vdotq_s32
// is declared for arch=armv8.2-a+dotprod). Clang 14 declares vdotq_s32 only when the whole build
// has the feature (-march=armv8.2-a+dotprod or later), so a default Clang build has no SDOT path.
#if defined(__ARM_FEATURE_DOTPROD)
#define SLIMNET_INT_SDOT 1
#define SLIMNET_INT_SDOT_TARGET
#elif defined(__GNUC__) && !defined(__clang__)
#define SLIMNET_INT_SDOT 1
#define SLIMNET_INT_SDOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Options of the integer GEMMs. The scales and bias apply to a float C only.
struct int_gemm_params {
  const float* row_scale = nullptr;  ///< row i of C multiplied by row_scale[i] (null: 1)
  const float* col_scale = nullptr;  ///< column j multiplied by col_scale[j] (null: 1)
  const float* col_bias = nullptr;   ///< col_bias[j] added to column j (null: 0)
  int threads = 1;                   ///< 1 by default (repeatable); <= 0: every core. Column panels are split.
  kernel_path path = kernel_path::automatic;
};

/// B (K x N) packed for the integer kernels: panels of 64 columns, groups of G = 4 (int8) or
/// 2 (int16) consecutive k per 32-bit lane: element (k, j) of panel p at
/// [((k / G) * 64 + j % 64) * G + k % G]. K is padded to a multiple of G, N to a multiple of 64,
/// with zeros. Also keeps colsum(B) for the signed-A correction of int8.
template <class T>
class int_packed_rhs {
  static_assert(std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::int16_t>, "B is int8_t or int16_t.");

 public:
  static constexpr index_t group = 4 / static_cast<index_t>(sizeof(T));  ///< k per 32-bit lane
  static constexpr index_t panel_cols = 64;

  int_packed_rhs() = default;
  explicit int_packed_rhs(matrix_ref<const T> b)
      : depth_(b.rows), cols_(b.cols), groups_((b.rows + group - 1) / group), panels_((b.cols + panel_cols - 1) / panel_cols) {
    data_.assign(static_cast<std::size_t>(panels_ * groups_ * panel_cols * group), T(0));
    colsum_.assign(static_cast<std::size_t>(panels_ * panel_cols), 0);
    for (index_t k = 0; k < depth_; ++k) {
      for (index_t j = 0; j < cols_; ++j) {
        const T v = b(k, j);
        data_[static_cast<std::size_t>(((j / panel_cols) * groups_ + k / group) * panel_cols * group + (j % panel_cols) * group + k % group)] = v;
        colsum_[static_cast<std::size_t>(j)] += v;
      }
    }
  }

  index_t depth() const { return depth_; }  ///< K
  index_t cols() const { return cols_; }    ///< N
  index_t groups() const { return groups_; }
  index_t panels() const { return panels_; }
  const T* panel(index_t p) const { return data_.data() + p * groups_ * panel_cols * group; }
  const std::int32_t* colsum() const { return colsum_.data(); }
  /// Element (k, j) of B.
  T at(index_t k, index_t j) const {
    return data_[static_cast<std::size_t>(((j / panel_cols) * groups_ + k / group) * panel_cols * group + (j % panel_cols) * group + k % group)];
  }
  std::size_t bytes() const { return data_.size() * sizeof(T) + colsum_.size() * sizeof(std::int32_t); }

 private:
  index_t depth_ = 0, cols_ = 0, groups_ = 0, panels_ = 0;
  std::vector<T> data_;
  std::vector<std::int32_t> colsum_;
};

using int8_packed_rhs = int_packed_rhs<std::int8_t>;
using int16_packed_rhs = int_packed_rhs<std::int16_t>;

namespace detail {

template <class A, class B, class Out>
void check_int_gemm(const char* fn, const matrix_ref<const A>& a, index_t b_rows, index_t b_cols, const matrix_ref<Out>& c) {
  if (a.cols != b_rows || c.rows != a.rows || c.cols != b_cols) {
    slimnet::detail::raise<shape_error>(fn, "({} x {}) * ({} x {}) does not fit C ({} x {})", a.rows, a.cols, b_rows, b_cols, c.rows,
                                        c.cols);
  }
}

/// The sum (exact in int64, wrapped to int32 as the hardware does) -> output.
template <class Out>
inline Out int_output(std::int64_t sum, index_t i, index_t j, const int_gemm_params& p) {
  const auto wrapped = static_cast<std::int32_t>(static_cast<std::uint32_t>(static_cast<std::uint64_t>(sum)));
  if constexpr (std::is_same_v<Out, std::int32_t>) {
    return wrapped;
  } else {
    const float scale = (p.row_scale ? p.row_scale[i] : 1.0f) * (p.col_scale ? p.col_scale[j] : 1.0f);
    return scale * static_cast<float>(wrapped) + (p.col_bias ? p.col_bias[j] : 0.0f);
  }
}

/// Portable: rows [i0, i1) x panels [p0, p1); 64-bit sums (wrapped on output).
template <class A, class B, class Out>
void int_gemm_portable(const matrix_ref<const A>& a, const int_packed_rhs<B>& b, const matrix_ref<Out>& c, index_t i0, index_t i1,
                       index_t p0, index_t p1, const int_gemm_params& params) {
  constexpr index_t pc = int_packed_rhs<B>::panel_cols, g = int_packed_rhs<B>::group;
  std::int64_t acc[pc];
  for (index_t p = p0; p < p1; ++p) {
    const B* bp = b.panel(p);
    const index_t cols = std::min(pc, b.cols() - p * pc);
    for (index_t i = i0; i < i1; ++i) {
      std::fill(acc, acc + pc, std::int64_t{0});
      for (index_t k = 0; k < a.cols; ++k) {
        const std::int64_t av = a(i, k);
        if (av == 0) continue;
        const B* row = bp + (k / g) * pc * g + k % g;
        for (index_t j = 0; j < pc; ++j) acc[j] += av * row[j * g];
      }
      for (index_t j = 0; j < cols; ++j) c(i, p * pc + j) = int_output<Out>(acc[j], i, p * pc + j, params);
    }
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// Rows of the register tile: 6 rows x 4 registers of 16 int32 = 24 accumulators, 4 of B, 1 broadcast.
constexpr index_t int_mr = 6;

// acc += a . b in place: vpdpbusd (4 u8 x s8 products per lane) or vpdpwssd (2 s16 x s16). GCC 12
// treats the intrinsics' accumulator as a separate input and surrounds the instructions with
// register copies (17 per 20 instructions in this tile, halving its speed) or spills; one
// instruction of asm with the accumulator tied ("+v") in a named local variable avoids both.
template <class B>
#if defined(__GNUC__)
[[gnu::always_inline]]
#endif
SLIMNET_INT_AVX512_TARGET inline void int_dot(__m512i& acc, __m512i a, __m512i b) {
#if defined(__GNUC__)
  if constexpr (std::is_same_v<B, std::int8_t>) {
    asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  } else {
    asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  }
#else
  acc = std::is_same_v<B, std::int8_t> ? _mm512_dpbusd_epi32(acc, a, b) : _mm512_dpwssd_epi32(acc, a, b);
#endif
}

/// One MR x 64 tile of C (MR <= 6) over all `groups` lane groups of K: the accumulators stay in
/// 4 MR registers, each 64-byte load of the panel feeds MR multiply-add instructions. MR is a
/// template parameter so that the last rows of C (and batch 1: MR = 1) compute only the rows they
/// store. Every row of A holds groups * G readable elements (zero past K).
template <int MR, class A, class B, class Out>
SLIMNET_INT_AVX512_TARGET inline void int_tile(const A* a, index_t lda, const B* bp, index_t groups, Out* c, index_t ldc, const __mmask16 mask[4],
                     const __m512i correction[4], index_t row0, index_t col0, const int_gemm_params& params) {
  static_assert(MR >= 1 && MR <= int_mr, "A tile has 1 to 6 rows.");
  constexpr index_t g = int_packed_rhs<B>::group;
  constexpr bool shift = std::is_same_v<A, std::int8_t> && std::is_same_v<B, std::int8_t>;
  __m512i acc[MR][4];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_si512();
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x80808080u));
  for (index_t q = 0; q < groups; ++q) {
    const B* bq = bp + q * 64 * g;
    const __m512i b0 = _mm512_loadu_si512(bq), b1 = _mm512_loadu_si512(bq + 16 * g);
    const __m512i b2 = _mm512_loadu_si512(bq + 32 * g), b3 = _mm512_loadu_si512(bq + 48 * g);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      std::int32_t word;
      std::memcpy(&word, a + r * lda + q * g, 4);
      __m512i av = _mm512_set1_epi32(word);
      if constexpr (shift) av = _mm512_xor_si512(av, flip);  // a signed A: a + 128 as unsigned
      int_dot<B>(acc[r][0], av, b0);
      int_dot<B>(acc[r][1], av, b1);
      int_dot<B>(acc[r][2], av, b2);
      int_dot<B>(acc[r][3], av, b3);
    }
  }
  for (int r = 0; r < MR; ++r) {
    Out* cr = c + r * ldc;
    for (int v = 0; v < 4; ++v) {
      if (!mask[v]) continue;
      const __m512i sum = _mm512_sub_epi32(acc[r][v], correction[v]);
      if constexpr (std::is_same_v<Out, std::int32_t>) {
        _mm512_mask_storeu_epi32(cr + 16 * v, mask[v], sum);
      } else {
        const float rs = params.row_scale ? params.row_scale[row0 + r] : 1.0f;
        __m512 scale = params.col_scale ? _mm512_maskz_loadu_ps(mask[v], params.col_scale + col0 + 16 * v) : _mm512_set1_ps(1.0f);
        scale = _mm512_mul_ps(scale, _mm512_set1_ps(rs));
        const __m512 y = _mm512_cvtepi32_ps(sum);
        _mm512_mask_storeu_ps(cr + 16 * v, mask[v],
                              params.col_bias ? _mm512_fmadd_ps(scale, y, _mm512_maskz_loadu_ps(mask[v], params.col_bias + col0 + 16 * v))
                                              : _mm512_mul_ps(scale, y));
      }
    }
  }
}

template <class A, class B, class Out>
SLIMNET_INT_AVX512_TARGET void int_gemm(const matrix_ref<const A>& a, const int_packed_rhs<B>& b, const matrix_ref<Out>& c, index_t p0, index_t p1,
              const int_gemm_params& params) {
  constexpr index_t pc = 64, mr = int_mr, g = int_packed_rhs<B>::group;
  constexpr bool shift = std::is_same_v<A, std::int8_t> && std::is_same_v<B, std::int8_t>;
  // The tile reads whole lane groups: when K is not a multiple of G, rows are copied with zeros
  // up to groups * G (O(M K), against the product's O(M K N)).
  const A* adata = a.data;
  index_t lda = a.row_stride;
  std::vector<A> padded;
  if (a.cols % g != 0) {
    lda = b.groups() * g;
    padded.assign(static_cast<std::size_t>(a.rows * lda), A(0));
    for (index_t i = 0; i < a.rows; ++i) std::copy_n(a.data + i * a.row_stride, a.cols, padded.data() + i * lda);
    adata = padded.data();
  }
  for (index_t p = p0; p < p1; ++p) {
    const index_t col0 = p * pc, cols = std::min(pc, b.cols() - col0);
    __mmask16 mask[4];
    __m512i correction[4];
    for (int v = 0; v < 4; ++v) {
      const index_t n = std::clamp<index_t>(cols - 16 * v, 0, 16);
      mask[v] = static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1);
      // 128 * colsum(B): the signed-A shift taken back out.
      correction[v] = shift ? _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mask[v], b.colsum() + col0 + 16 * v), 7) : _mm512_setzero_si512();
    }
    const B* bp = b.panel(p);
    index_t i = 0;
    for (; i + mr <= a.rows; i += mr)
      int_tile<int_mr, A, B, Out>(adata + i * lda, lda, bp, b.groups(), c.data + i * c.row_stride + col0, c.row_stride, mask, correction, i,
                                  col0, params);
    const A* ai = adata + i * lda;
    Out* ci = c.data + i * c.row_stride + col0;
    switch (a.rows - i) {
      case 5: int_tile<5, A, B, Out>(ai, lda, bp, b.groups(), ci, c.row_stride, mask, correction, i, col0, params); break;
      case 4: int_tile<4, A, B, Out>(ai, lda, bp, b.groups(), ci, c.row_stride, mask, correction, i, col0, params); break;
      case 3: int_tile<3, A, B, Out>(ai, lda, bp, b.groups(), ci, c.row_stride, mask, correction, i, col0, params); break;
      case 2: int_tile<2, A, B, Out>(ai, lda, bp, b.groups(), ci, c.row_stride, mask, correction, i, col0, params); break;
      case 1: int_tile<1, A, B, Out>(ai, lda, bp, b.groups(), ci, c.row_stride, mask, correction, i, col0, params); break;
      default: break;
    }
  }
}

}  // namespace avx512
#endif

#if defined(SLIMNET_DISPATCH_X86)
namespace avx2 {

/// Rows of the AVX2 register tiles (6 rows x 2 registers = 12 accumulators, as fp32's 6 x 16).
constexpr index_t int_mr = 6;

/// Whether int8 products on the avx2 path may use AVX-VNNI (VEX vpdpbusd) where the CPU has it:
/// tests switch it off to run the vpmaddwd kernel on such a CPU too.
inline std::atomic<bool>& allow_avx_vnni() {
  static std::atomic<bool> allowed{true};
  return allowed;
}

/// Lanes [0, n) set (n clamped to 0..8): the mask of vpmaskmovd / vmaskmovps.
SLIMNET_INT_AVX2_TARGET inline __m256i int_lanes(index_t n) {
  const int k = static_cast<int>(std::clamp<index_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Stores 8 int32 sums of row `row`, columns [col0, col0 + cols) (cols <= 8), as int32 or through
/// the float epilogue.
template <class Out>
SLIMNET_INT_AVX2_TARGET inline void int_store8(__m256i sum, Out* cr, index_t cols, index_t row, index_t col0, const int_gemm_params& params) {
  const __m256i m = int_lanes(cols);
  if constexpr (std::is_same_v<Out, std::int32_t>) {
    if (cols >= 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(cr), sum);
    else _mm256_maskstore_epi32(reinterpret_cast<int*>(cr), m, sum);
  } else {
    __m256 scale = params.col_scale ? _mm256_maskload_ps(params.col_scale + col0, m) : _mm256_set1_ps(1.0f);
    scale = _mm256_mul_ps(scale, _mm256_set1_ps(params.row_scale ? params.row_scale[row] : 1.0f));
    const __m256 y = _mm256_cvtepi32_ps(sum);
    const __m256 out = params.col_bias ? _mm256_fmadd_ps(scale, y, _mm256_maskload_ps(params.col_bias + col0, m)) : _mm256_mul_ps(scale, y);
    if (cols >= 8) _mm256_storeu_ps(cr, out);
    else _mm256_maskstore_ps(cr, m, out);
  }
}

/// int8 on AVX-VNNI: one MR x 16 tile (MR <= 6) of a panel, columns [c0, c0 + 16) of it, over all
/// lane groups: per group 2 loads of B (8 columns x 4 k each), MR broadcasts of 4 bytes of A,
/// 2 MR vpdpbusd (32 multiply-adds each). A signed A is shifted to unsigned as on AVX-512.
template <int MR, class A, class Out>
SLIMNET_INT_AVX_VNNI_TARGET inline void vnni_tile(const A* a, index_t lda, const std::int8_t* bp, index_t groups, Out* c, index_t ldc,
                                                  index_t cols, const __m256i correction[2], index_t row0, index_t col0,
                                                  const int_gemm_params& params) {
  constexpr bool shift = std::is_same_v<A, std::int8_t>;
  __m256i acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80808080u));
  for (index_t q = 0; q < groups; ++q) {
    const std::int8_t* bq = bp + q * 64 * 4;
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bq)), b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bq + 32));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      std::int32_t word;
      std::memcpy(&word, a + r * lda + q * 4, 4);
      __m256i av = _mm256_set1_epi32(word);
      if constexpr (shift) av = _mm256_xor_si256(av, flip);
      acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], av, b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    int_store8<Out>(_mm256_sub_epi32(acc[r][0], correction[0]), c + r * ldc, cols, row0 + r, col0, params);
    if (cols > 8) int_store8<Out>(_mm256_sub_epi32(acc[r][1], correction[1]), c + r * ldc + 8, cols - 8, row0 + r, col0 + 8, params);
  }
}

/// vpmaddwd (16-bit pairs -> int32, exact): one MR x 8 tile, columns [c0, c0 + 8) of a panel.
///   int16: per group (2 k) one load of B (8 columns x 2 k), MR broadcasts of A's 2 k, MR vpmaddwd;
///   int8:  B's bytes sign-extended to 16 bits (cols 0-3 and 4-7, each 4 k), A pre-widened to 16
///          bits (aw, 4 k per broadcast), 2 MR vpmaddwd into 2 accumulators per row whose adjacent
///          lanes hold the two halves of a column's sum (added at the end by vphaddd).
/// vpmaddubsw would do 32 products per instruction but saturates u8 x s8 pairs at 16 bits
/// (255 * 127 * 2 > 32767), which a product that must equal the reference cannot afford.
template <int MR, class B, class Out>
SLIMNET_INT_AVX2_TARGET inline void madd_tile(const std::int16_t* a, index_t lda, const B* bp, index_t groups, Out* c, index_t ldc,
                                              index_t cols, index_t row0, index_t col0, const int_gemm_params& params) {
  __m256i acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  if constexpr (std::is_same_v<B, std::int16_t>) {
    for (index_t q = 0; q < groups; ++q) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + q * 64 * 2));
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        std::int32_t word;
        std::memcpy(&word, a + r * lda + q * 2, 4);
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_set1_epi32(word), b0));
      }
    }
    for (int r = 0; r < MR; ++r) int_store8<Out>(acc[r][0], c + r * ldc, cols, row0 + r, col0, params);
  } else {
    for (index_t q = 0; q < groups; ++q) {
      const std::int8_t* bq = bp + q * 64 * 4;
      const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq)));
      const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq + 16)));
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        long long quad;
        std::memcpy(&quad, a + r * lda + q * 4, 8);
        const __m256i av = _mm256_set1_epi64x(quad);
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
      }
    }
    for (int r = 0; r < MR; ++r) {
      // hadd: [c0 c1 c4 c5 | c2 c3 c6 c7] -> columns in order
      const __m256i sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xd8);
      int_store8<Out>(sum, c + r * ldc, cols, row0 + r, col0, params);
    }
  }
}

/// int8 with AVX-VNNI over panels [p0, p1).
template <class A, class Out>
SLIMNET_INT_AVX_VNNI_TARGET void int8_gemm_vnni(const A* adata, index_t lda, index_t m, const int8_packed_rhs& b, const matrix_ref<Out>& c,
                                                index_t p0, index_t p1, const int_gemm_params& params) {
  constexpr bool shift = std::is_same_v<A, std::int8_t>;
  for (index_t p = p0; p < p1; ++p) {
    const std::int8_t* bp = b.panel(p);
    for (index_t i = 0; i < m; i += int_mr) {
      const index_t rows = std::min(int_mr, m - i);
      for (index_t c0 = 0; c0 < 64; c0 += 16) {
        const index_t col0 = p * 64 + c0, cols = std::min<index_t>(16, b.cols() - col0);
        if (cols <= 0) break;
        __m256i correction[2];
        for (int v = 0; v < 2; ++v) {
          const __m256i lanes = int_lanes(cols - 8 * v);
          correction[v] = shift ? _mm256_slli_epi32(_mm256_maskload_epi32(b.colsum() + col0 + 8 * v, lanes), 7) : _mm256_setzero_si256();
        }
        const A* ai = adata + i * lda;
        Out* ci = c.data + i * c.row_stride + col0;
#define SLIMNET_INT_VNNI_CALL(R) vnni_tile<R, A, Out>(ai, lda, bp + c0 * 4, b.groups(), ci, c.row_stride, cols, correction, i, col0, params)
        switch (rows) {
          case 1: SLIMNET_INT_VNNI_CALL(1); break;
          case 2: SLIMNET_INT_VNNI_CALL(2); break;
          case 3: SLIMNET_INT_VNNI_CALL(3); break;
          case 4: SLIMNET_INT_VNNI_CALL(4); break;
          case 5: SLIMNET_INT_VNNI_CALL(5); break;
          default: SLIMNET_INT_VNNI_CALL(6); break;
        }
#undef SLIMNET_INT_VNNI_CALL
      }
    }
  }
}

/// int8 (A widened to 16 bits) or int16 with vpmaddwd over panels [p0, p1); `a16` rows hold
/// groups * G 16-bit values.
template <class B, class Out>
SLIMNET_INT_AVX2_TARGET void int_gemm_madd(const std::int16_t* a16, index_t lda, index_t m, const int_packed_rhs<B>& b, const matrix_ref<Out>& c,
                                           index_t p0, index_t p1, const int_gemm_params& params) {
  constexpr index_t g = int_packed_rhs<B>::group;
  for (index_t p = p0; p < p1; ++p) {
    const B* bp = b.panel(p);
    for (index_t i = 0; i < m; i += int_mr) {
      const index_t rows = std::min(int_mr, m - i);
      for (index_t c0 = 0; c0 < 64; c0 += 8) {
        const index_t col0 = p * 64 + c0, cols = std::min<index_t>(8, b.cols() - col0);
        if (cols <= 0) break;
        const std::int16_t* ai = a16 + i * lda;
        Out* ci = c.data + i * c.row_stride + col0;
#define SLIMNET_INT_MADD_CALL(R) madd_tile<R, B, Out>(ai, lda, bp + c0 * g, b.groups(), ci, c.row_stride, cols, i, col0, params)
        switch (rows) {
          case 1: SLIMNET_INT_MADD_CALL(1); break;
          case 2: SLIMNET_INT_MADD_CALL(2); break;
          case 3: SLIMNET_INT_MADD_CALL(3); break;
          case 4: SLIMNET_INT_MADD_CALL(4); break;
          case 5: SLIMNET_INT_MADD_CALL(5); break;
          default: SLIMNET_INT_MADD_CALL(6); break;
        }
#undef SLIMNET_INT_MADD_CALL
      }
    }
  }
}

}  // namespace avx2
#endif

#if defined(SLIMNET_INT_NEON)
namespace neon {

/// Rows of the NEON register tiles (6 x 16 with SDOT, 6 x 8 widening: 24 int32x4_t accumulators).
constexpr index_t int_mr = 6;

/// Whether int8 products on the neon path may use SDOT where the CPU has it: tests switch it off
/// to run the widening kernel on such a CPU too.
inline std::atomic<bool>& allow_sdot() {
  static std::atomic<bool> allowed{true};
  return allowed;
}

/// Calls of gemm_int8 that ran the SDOT kernel (each also counted as the neon path).
inline std::atomic<std::uint64_t>& sdot_calls() {
  static std::atomic<std::uint64_t> calls{0};
  return calls;
}

/// Whether an integer product with B of type B on the neon path runs SDOT.
template <class B>
inline bool use_sdot() {
#if defined(SLIMNET_INT_SDOT)
  return std::is_same_v<B, std::int8_t> && cpu_features().asimddp && allow_sdot().load(std::memory_order_relaxed);
#else
  return false;
#endif
}

/// Stores 4 int32 sums (already corrected) of row `row`, columns [col0, col0 + cols), cols <= 4.
template <class Out>
inline void int_store4(int32x4_t sum, Out* cr, index_t cols, index_t row, index_t col0, const int_gemm_params& params) {
  std::int32_t t[4];
  vst1q_s32(t, sum);
  for (index_t j = 0; j < std::min<index_t>(cols, 4); ++j) cr[j] = int_output<Out>(t[j], row, col0 + j, params);
}

/// 4 bytes of A (one lane group) in every 32-bit lane, as int8 or int16 values.
inline int8x16_t dup_group(const std::int8_t* a) {
  std::int32_t word;
  std::memcpy(&word, a, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(word));
}
inline int16x8_t dup_group(const std::int16_t* a) {
  std::int32_t word;
  std::memcpy(&word, a, 4);
  return vreinterpretq_s16_s32(vdupq_n_s32(word));
}
inline int8x16_t load16(const std::int8_t* p) { return vld1q_s8(p); }
inline int16x8_t load16(const std::int16_t* p) { return vld1q_s16(p); }

/// b: 16 bytes of a panel, 4 columns x one lane group; a: a row's group in every lane. acc0 gets
/// the products of columns 0-1, acc1 of columns 2-3, each column in two adjacent int32 lanes
/// (int8: k 0+1 and k 2+3 after sadalp's pairwise sum; int16: k 0 and k 1): vpaddq_s32(acc0, acc1)
/// then holds the 4 columns' sums in order.
inline void widen_madd(int32x4_t& acc0, int32x4_t& acc1, int8x16_t a, int8x16_t b) {
  acc0 = vpadalq_s16(acc0, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  acc1 = vpadalq_s16(acc1, vmull_high_s8(a, b));
}
inline void widen_madd(int32x4_t& acc0, int32x4_t& acc1, int16x8_t a, int16x8_t b) {
  acc0 = vmlal_s16(acc0, vget_low_s16(a), vget_low_s16(b));
  acc1 = vmlal_high_s16(acc1, a, b);
}

/// One MR x 8 tile with widened products: rows of A (signed, groups * G values each) at a + r * lda,
/// columns [0, cols) of the 8 at bp (a panel's group q of them at bp + 64 G q).
template <int MR, class T, class Out>
inline void widen_tile(const T* a, index_t lda, const T* bp, index_t groups, Out* c, index_t ldc, index_t cols,
                       const int32x4_t correction[4], index_t row0, index_t col0, const int_gemm_params& params) {
  constexpr index_t g = int_packed_rhs<T>::group;
  int32x4_t acc[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = vdupq_n_s32(0);
  for (index_t q = 0; q < groups; ++q) {
    const T* bq = bp + q * 64 * g;
    const auto b0 = load16(bq), b1 = load16(bq + 4 * g);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const auto av = dup_group(a + r * lda + q * g);
      widen_madd(acc[r][0], acc[r][1], av, b0);
      widen_madd(acc[r][2], acc[r][3], av, b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    int_store4<Out>(vaddq_s32(vpaddq_s32(acc[r][0], acc[r][1]), correction[0]), c + r * ldc, cols, row0 + r, col0, params);
    if (cols > 4)
      int_store4<Out>(vaddq_s32(vpaddq_s32(acc[r][2], acc[r][3]), correction[1]), c + r * ldc + 4, cols - 4, row0 + r, col0 + 4,
                      params);
  }
}

#if defined(SLIMNET_INT_SDOT)
/// One MR x 16 int8 tile on SDOT: per lane group, 4 loads of the panel (16 columns x 4 k) and MR
/// broadcasts of A's 4 bytes feed 4 MR sdot instructions.
template <int MR, class Out>
SLIMNET_INT_SDOT_TARGET inline void sdot_tile(const std::int8_t* a, index_t lda, const std::int8_t* bp, index_t groups, Out* c,
                                              index_t ldc, index_t cols, const int32x4_t correction[4], index_t row0,
                                              index_t col0, const int_gemm_params& params) {
  int32x4_t acc[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = vdupq_n_s32(0);
  for (index_t q = 0; q < groups; ++q) {
    const std::int8_t* bq = bp + q * 64 * 4;
    const int8x16_t b0 = vld1q_s8(bq), b1 = vld1q_s8(bq + 16), b2 = vld1q_s8(bq + 32), b3 = vld1q_s8(bq + 48);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const int8x16_t av = dup_group(a + r * lda + q * 4);
      acc[r][0] = vdotq_s32(acc[r][0], av, b0);
      acc[r][1] = vdotq_s32(acc[r][1], av, b1);
      acc[r][2] = vdotq_s32(acc[r][2], av, b2);
      acc[r][3] = vdotq_s32(acc[r][3], av, b3);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4 && 4 * v < cols; ++v)
      int_store4<Out>(vaddq_s32(acc[r][v], correction[v]), c + r * ldc + 4 * v, cols - 4 * v, row0 + r, col0 + 4 * v, params);
}
#endif

/// Calls f(std::integral_constant<int, R>{}) for a tile of R = rows (R0..6) rows.
template <int R0 = 1, class F>
void with_tile_rows(index_t rows, F&& f) {
  if constexpr (R0 < int_mr) {
    if (rows > R0) return with_tile_rows<R0 + 1>(rows, f);
  }
  f(std::integral_constant<int, R0>{});
}

/// Panels [p0, p1) of C = A B from `as`, A's m rows as signed values of B's type (groups * G per
/// row, lda apart); `shifted`: A was a uint8 matrix moved to int8 by - 128, added back as
/// 128 colsum(B) per column.
template <class T, class Out>
void int_gemm(const T* as, index_t lda, index_t m, const int_packed_rhs<T>& b, const matrix_ref<Out>& c, index_t p0, index_t p1,
              bool sdot, bool shifted, const int_gemm_params& params) {
  constexpr index_t g = int_packed_rhs<T>::group;
  const index_t width = sdot ? 16 : 8;  // columns of a tile
  for (index_t p = p0; p < p1; ++p) {
    const T* bp = b.panel(p);
    for (index_t c0 = 0; c0 < 64; c0 += width) {
      const index_t col0 = p * 64 + c0, cols = std::min(width, b.cols() - col0);
      if (cols <= 0) break;
      int32x4_t correction[4];  // colsum has 64 entries per panel: whole vectors are readable
      for (index_t v = 0; v < width / 4; ++v)
        correction[v] = shifted ? vshlq_n_s32(vld1q_s32(b.colsum() + col0 + 4 * v), 7) : vdupq_n_s32(0);
      for (index_t i = 0; i < m; i += int_mr) {
        const T* ai = as + i * lda;
        Out* ci = c.data + i * c.row_stride + col0;
        with_tile_rows(std::min(int_mr, m - i), [&](auto rows) {
          constexpr int R = decltype(rows)::value;
#if defined(SLIMNET_INT_SDOT)
          if constexpr (std::is_same_v<T, std::int8_t>) {
            if (sdot)
              return sdot_tile<R, Out>(ai, lda, bp + c0 * g, b.groups(), ci, c.row_stride, cols, correction, i, col0, params);
          }
#endif
          widen_tile<R, T, Out>(ai, lda, bp + c0 * g, b.groups(), ci, c.row_stride, cols, correction, i, col0, params);
        });
      }
    }
  }
}

}  // namespace neon
#endif

/// Tag of the integer GEMMs' path counters (detail::count_path).
struct int_gemm_tag;

/// The path an integer GEMM with B of type B takes under active_isa() (before the stride check).
template <class B>
inline isa int_gemm_path(const int_gemm_params& params) {
  if (params.path == kernel_path::portable) return isa::portable;
#if defined(SLIMNET_DISPATCH_X86)
  const isa active = active_isa();
  if (active == isa::avx512 && cpu_features().avx512_vnni) return isa::avx512;
  if (active == isa::avx512 || active == isa::avx2) return isa::avx2;
#elif defined(SLIMNET_INT_NEON)
  if (active_isa() == isa::neon) return isa::neon;
#endif
  return isa::portable;
}

template <class A, class B, class Out>
void int_gemm_packed(const char* fn, const matrix_ref<const A>& a, const int_packed_rhs<B>& b, const matrix_ref<Out>& c,
                     const int_gemm_params& params) {
  static_assert(std::is_same_v<Out, std::int32_t> || std::is_same_v<Out, float>, "Integer GEMM output is int32_t or float.");
  check_int_gemm<A, B>(fn, a, b.depth(), b.cols(), c);
  if (c.rows == 0 || c.cols == 0) return;
  // The fast paths read rows of A and write rows of C: both need unit column strides.
  const isa path = a.col_stride == 1 && c.col_stride == 1 ? int_gemm_path<B>(params) : isa::portable;
  count_path<int_gemm_tag>(path);
#if defined(SLIMNET_DISPATCH_X86)
  constexpr index_t g = int_packed_rhs<B>::group;
  // The avx2 kernels read whole lane groups of A: rows padded with zeros to groups * G, and for
  // vpmaddwd widened to 16 bits (O(M K) once per call, against the product's O(M K N)).
  const bool vnni8 = std::is_same_v<B, std::int8_t> && cpu_features().avx_vnni && avx2::allow_avx_vnni().load(std::memory_order_relaxed);
  std::vector<A> a_padded;
  std::vector<std::int16_t> a16;
  const index_t lda = b.groups() * g;
  if (path == isa::avx2) {
    if (vnni8) {
      if (a.cols % g != 0) {
        a_padded.assign(static_cast<std::size_t>(a.rows * lda), A(0));
        for (index_t i = 0; i < a.rows; ++i) std::copy_n(a.data + i * a.row_stride, a.cols, a_padded.data() + i * lda);
      }
    } else {
      a16.assign(static_cast<std::size_t>(a.rows * lda), 0);
      for (index_t i = 0; i < a.rows; ++i)
        for (index_t k = 0; k < a.cols; ++k) a16[static_cast<std::size_t>(i * lda + k)] = static_cast<std::int16_t>(a.data[i * a.row_stride + k]);
    }
  }
#endif
#if defined(SLIMNET_INT_NEON)
  // The NEON kernels read whole lane groups of signed values of B's type: A's rows copied, padded
  // with zeros to groups * G, a uint8 A shifted to int8 (O(M K) once per call).
  constexpr bool shifted = std::is_same_v<A, std::uint8_t>;
  const bool sdot = path == isa::neon && neon::use_sdot<B>();
  const index_t lda_signed = b.groups() * int_packed_rhs<B>::group;
  std::vector<B> a_signed;
  if (path == isa::neon) {
    a_signed.assign(static_cast<std::size_t>(a.rows * lda_signed), B(0));
    for (index_t i = 0; i < a.rows; ++i)
      for (index_t k = 0; k < a.cols; ++k) {
        const int v = a.data[i * a.row_stride + k];
        a_signed[static_cast<std::size_t>(i * lda_signed + k)] = static_cast<B>(shifted ? v - 128 : v);
      }
    if (sdot) neon::sdot_calls().fetch_add(1, std::memory_order_relaxed);
  }
#endif
  const int threads = std::min<index_t>(resolve_threads(params.threads), std::max<index_t>(b.panels(), 1));
  const auto bounds = even_split(b.panels(), threads);
  run_threads(threads, [&](int t, int) {
    const index_t p0 = bounds[static_cast<std::size_t>(t)], p1 = bounds[static_cast<std::size_t>(t) + 1];
#if defined(SLIMNET_DISPATCH_X86)
    if (path == isa::avx512) {
      avx512::int_gemm<A, B, Out>(a, b, c, p0, p1, params);
      return;
    }
    if (path == isa::avx2) {
      if constexpr (std::is_same_v<B, std::int8_t>) {
        if (vnni8) {
          const bool padded = !a_padded.empty();
          avx2::int8_gemm_vnni<A, Out>(padded ? a_padded.data() : a.data, padded ? lda : a.row_stride, a.rows, b, c, p0, p1, params);
          return;
        }
      }
      avx2::int_gemm_madd<B, Out>(a16.data(), lda, a.rows, b, c, p0, p1, params);
      return;
    }
#endif
#if defined(SLIMNET_INT_NEON)
    if (path == isa::neon) {
      neon::int_gemm<B, Out>(a_signed.data(), lda_signed, a.rows, b, c, p0, p1, sdot, shifted, params);
      return;
    }
#endif
    int_gemm_portable<A, B, Out>(a, b, c, 0, a.rows, p0, p1, params);
  });
}

template <class A, class B, class Out>
void int_gemm_reference(const char* fn, const matrix_ref<const A>& a, const matrix_ref<const B>& b, const matrix_ref<Out>& c,
                        const int_gemm_params& params) {
  static_assert(std::is_same_v<Out, std::int32_t> || std::is_same_v<Out, float>, "Integer GEMM output is int32_t or float.");
  check_int_gemm<A, B>(fn, a, b.rows, b.cols, c);
  for (index_t i = 0; i < c.rows; ++i) {
    for (index_t j = 0; j < c.cols; ++j) {
      std::int64_t s = 0;
      for (index_t k = 0; k < a.cols; ++k) s += static_cast<std::int64_t>(a(i, k)) * static_cast<std::int64_t>(b(k, j));
      c(i, j) = int_output<Out>(s, i, j, params);
    }
  }
}

}  // namespace detail

/// The path gemm_int8 / gemm_int16 take with `params` under the current active_isa() (A and C with
/// unit column stride; otherwise portable): avx512 (with AVX512-VNNI), avx2 (an avx2 choice, or
/// avx512 without VNNI), neon (on aarch64), else portable; always portable when params.path is
/// kernel_path::portable.
inline isa gemm_int_path(const int_gemm_params& params = {}) { return detail::int_gemm_path<std::int8_t>(params); }

/// Whether int8 products on the avx2 path use AVX-VNNI's vpdpbusd (the CPU has it) rather than
/// vpmaddwd on bytes widened to 16 bits.
inline bool gemm_int8_avx_vnni() {
#if defined(SLIMNET_DISPATCH_X86)
  return cpu_features().avx_vnni && detail::avx2::allow_avx_vnni().load(std::memory_order_relaxed);
#else
  return false;
#endif
}

/// Whether int8 products on the neon path use SDOT (the CPU has the dot product, and the build has
/// the kernel: see SLIMNET_INT_SDOT) rather than widened products.
inline bool gemm_int8_sdot() {
#if defined(SLIMNET_INT_NEON)
  return detail::neon::use_sdot<std::int8_t>();
#else
  return false;
#endif
}

/// How many gemm_int8 calls ran the SDOT kernel (each also counted as the neon path).
inline std::uint64_t gemm_int8_sdot_calls() {
#if defined(SLIMNET_INT_NEON)
  return detail::neon::sdot_calls().load(std::memory_order_relaxed);
#else
  return 0;
#endif
}

/// How many gemm_int8 / gemm_int16 calls (one per call, whatever its threads) ran `path`.
inline std::uint64_t gemm_int_path_calls(isa path) { return detail::path_calls<detail::int_gemm_tag>(path); }

// --- int8 ---------------------------------------------------------------------------------------

/// The definition: C = A B summed exactly (int32 output wraps modulo 2^32), or the float epilogue.
/// A is int8_t or uint8_t.
template <class A, class Out>
void gemm_int8_reference(matrix_ref<const A> a, matrix_ref<const std::int8_t> b, matrix_ref<Out> c, const int_gemm_params& params = {}) {
  static_assert(std::is_same_v<A, std::int8_t> || std::is_same_v<A, std::uint8_t>, "A is int8_t or uint8_t.");
  detail::int_gemm_reference("slimnet::kernels::gemm_int8_reference", a, b, c, params);
}

/// C = A B with B prepacked (a layer's weights). Fast path: A and C with unit column stride.
template <class A, class Out>
void gemm_int8(matrix_ref<const A> a, const int8_packed_rhs& b, matrix_ref<Out> c, const int_gemm_params& params = {}) {
  static_assert(std::is_same_v<A, std::int8_t> || std::is_same_v<A, std::uint8_t>, "A is int8_t or uint8_t.");
  detail::int_gemm_packed("slimnet::kernels::gemm_int8", a, b, c, params);
}

/// C = A B, packing B (K x N, any strides) for the call.
template <class A, class Out>
void gemm_int8(matrix_ref<const A> a, matrix_ref<const std::int8_t> b, matrix_ref<Out> c, const int_gemm_params& params = {}) {
  detail::check_int_gemm<A, std::int8_t>("slimnet::kernels::gemm_int8", a, b.rows, b.cols, c);
  gemm_int8(a, int8_packed_rhs(b), c, params);
}

// --- int16 (fixed point) ------------------------------------------------------------------------

/// The definition for 16-bit fixed point: C = A B summed exactly (int32 output wraps modulo 2^32).
/// With A in <IL_a, FL_a> and B in <IL_b, FL_b>, C holds the product in <., FL_a + FL_b>: pass
/// row_scale / col_scale = 2^-FL to get floats.
template <class Out>
void gemm_int16_reference(matrix_ref<const std::int16_t> a, matrix_ref<const std::int16_t> b, matrix_ref<Out> c,
                          const int_gemm_params& params = {}) {
  detail::int_gemm_reference("slimnet::kernels::gemm_int16_reference", a, b, c, params);
}

template <class Out>
void gemm_int16(matrix_ref<const std::int16_t> a, const int16_packed_rhs& b, matrix_ref<Out> c, const int_gemm_params& params = {}) {
  detail::int_gemm_packed("slimnet::kernels::gemm_int16", a, b, c, params);
}

template <class Out>
void gemm_int16(matrix_ref<const std::int16_t> a, matrix_ref<const std::int16_t> b, matrix_ref<Out> c, const int_gemm_params& params = {}) {
  detail::check_int_gemm<std::int16_t, std::int16_t>("slimnet::kernels::gemm_int16", a, b.rows, b.cols, c);
  gemm_int16(a, int16_packed_rhs(b), c, params);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
