// XNOR/popcount GEMM over bit-packed +-1 matrices (conventions in bitpack.hpp):
//   C = A B^T,   C(i, j) = a_i . b_j = K - 2 * popcount(a_i XOR b_j)
// with A (M x K) and B (N x K) both packed along K, the reduction axis. As a layer: A = the
// binarized activations (batch or im2row positions x K), B = the binarized weights (out x K),
// packed once. Optional float epilogue: C(i, j) = col_scale[j] * dot + col_bias[j] (XNOR-Net's
// per-channel scale, a folded batch norm).
//
// Why this shape of kernel: B is repacked into panels of 32 columns, word-interleaved (word w of
// the 32 columns is contiguous: 4 registers of 8 uint64 lanes), and a word of each of 6 rows of A
// is broadcast. The 6 x 32 tile of popcount accumulators stays in 24 registers; per word and
// (row, 8 columns): xor, vpopcntq, add on 512 bits. Every lane accumulates one output, so no
// horizontal sum is needed (a dot product of two packed rows would need one per output, which at
// K = 1024 costs as much as the 16 words of work). This is the fp32 GEMM's register tile with
// FMA replaced by xor + popcount + add: the ceiling is 512 multiply-adds per 3 ops, about 20x fp32.
//
// Paths, chosen per call at run time (cpu_features.hpp), all compiled in every x86-64 build with
// function target attributes, whatever the program's -march:
//   avx512    the tile above (AVX-512 F/BW/VL/DQ + VPOPCNTDQ: Ice Lake, Zen 4 and later);
//   avx2      no vector popcount: the nibble table (Mula, Kurz, Lemire 2018, "Faster population
//             counts using AVX2 instructions", Computer Journal 61(1)): popcount of a byte =
//             T[lo 4 bits] + T[hi 4 bits] with T in a register and VPSHUFB doing 32 look-ups at
//             once, then VPSADBW against zero sums the byte counts of each 64-bit lane every 31
//             words. Both operands are split into their nibbles before the products (A by blocks
//             of rows, B by panel), since (a ^ b) & m = (a & m) ^ (b & m): per word and 4 outputs,
//             2 xors, 2 look-ups and 2 adds, 6 ops per 256 bits against 8 with the shift and masks
//             in the loop, and against 3 per 512 on AVX-512. A 4 x 8 tile (8 byte accumulators).
//             Harley-Seal carry-save adders over 8-word blocks (the paper's fastest for long
//             arrays) were tried as well: they keep 4 vectors per output (ones, twos, fours, a byte
//             count), so only 1-4 outputs fit in the 16 registers, and need 3 more look-ups per
//             output at the end; they measured slower than this split on 7 of the 8 shapes of
//             benchmarks/binary_vs_dense on an AVX2 EPYC (Zen 3);
//   neon      aarch64: a 4 x 4 tile, vcnt (byte popcounts) on 128 bits, byte counts summed every
//             31 words as on AVX2, widened pairwise (uaddlp / uadalp);
//   portable  scalar popcount, 4 columns at a time (the only path on other architectures).
// An avx512 choice on a CPU without VPOPCNTDQ (Skylake-X, Cascade Lake) runs the avx2 path.
// gemm_xnor_path() says which path a call takes; gemm_xnor_path_calls() counts the calls that ran
// each one (tests assert on it, so "fast vs portable" never compares the portable path with itself).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/bitpack.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/matrix_ref.hpp"
#include "slimnet/kernels/intrinsics.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Options of the XNOR GEMM.
struct xnor_params {
  const float* col_scale = nullptr;  ///< float output only: column j is multiplied by col_scale[j] (null: 1)
  const float* col_bias = nullptr;   ///< float output only: col_bias[j] is added to column j (null: 0)
  int threads = 1;                   ///< 1 by default (repeatable); <= 0: every core. Columns are split.
  kernel_path path = kernel_path::automatic;
};

/// B (N x K, packed along K) repacked for gemm_xnor: panels of 32 columns, panel p holding word w
/// of columns 32p .. 32p+31 at [w * 32 + column]; columns past N are zero words. Pack a layer's
/// weights once and reuse them for every batch.
class xnor_packed_rhs {
 public:
  static constexpr index_t panel_cols = 32;

  xnor_packed_rhs() = default;
  explicit xnor_packed_rhs(const bit_matrix_ref& b)
      : cols_(b.rows), depth_(b.cols), words_(words_for_bits(b.cols)), panels_((b.rows + panel_cols - 1) / panel_cols) {
    data_.assign(static_cast<std::size_t>(panels_ * panel_cols * words_), 0);
    if (words_ == 0) return;  // K = 0: nothing to pack (and no offsets into an empty buffer)
    for (index_t j = 0; j < cols_; ++j) {
      bit_word* dst = data_.data() + (j / panel_cols) * panel_cols * words_ + j % panel_cols;
      const bit_word* src = b.words + j * b.row_words;
      for (index_t w = 0; w < words_; ++w) dst[w * panel_cols] = src[w];
    }
  }

  index_t cols() const { return cols_; }    ///< N: columns of C
  index_t depth() const { return depth_; }  ///< K in bits
  index_t words() const { return words_; }  ///< words per column
  index_t panels() const { return panels_; }
  const bit_word* panel(index_t p) const { return data_.data() + p * panel_cols * words_; }
  std::size_t bytes() const { return data_.size() * sizeof(bit_word); }

 private:
  index_t cols_ = 0, depth_ = 0, words_ = 0, panels_ = 0;
  std::vector<bit_word> data_;
};

namespace detail {

inline int popcount64(std::uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(v);
#else
  v = v - ((v >> 1) & 0x5555555555555555ull);
  v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return static_cast<int>((v * 0x0101010101010101ull) >> 56);
#endif
}

template <class Out>
void check_xnor(const char* fn, const bit_matrix_ref& a, index_t b_rows, index_t b_cols, const matrix_ref<Out>& c) {
  if (a.cols != b_cols || c.rows != a.rows || c.cols != b_rows) {
    slimnet::detail::raise<shape_error>(fn, "bits ({} x {}) * ({} x {})^T do not fit C ({} x {})", a.rows, a.cols, b_rows, b_cols, c.rows,
                                        c.cols);
  }
}

/// dot -> output: the integer itself, or scale * dot + bias.
template <class Out>
inline Out xnor_output(std::int64_t dot, index_t j, const xnor_params& p) {
  if constexpr (std::is_same_v<Out, std::int32_t>) {
    return static_cast<std::int32_t>(dot);
  } else {
    return static_cast<Out>((p.col_scale ? p.col_scale[j] : 1.0f) * static_cast<float>(dot) + (p.col_bias ? p.col_bias[j] : 0.0f));
  }
}

/// Portable: rows [i0, i1) x panels [p0, p1), 4 columns of a panel at a time.
template <class Out>
void gemm_xnor_portable(const bit_matrix_ref& a, const xnor_packed_rhs& b, const matrix_ref<Out>& c, index_t p0, index_t p1,
                        const xnor_params& params) {
  constexpr index_t pc = xnor_packed_rhs::panel_cols;
  const index_t kw = b.words(), k = b.depth();
  for (index_t p = p0; p < p1; ++p) {
    const bit_word* bp = b.panel(p);
    const index_t cols = std::min(pc, b.cols() - p * pc);
    for (index_t i = 0; i < a.rows; ++i) {
      const bit_word* ar = a.words + i * a.row_words;
      for (index_t j = 0; j < cols; j += 4) {
        std::int64_t pop[4] = {0, 0, 0, 0};
        for (index_t w = 0; w < kw; ++w) {
          const bit_word* bw = bp + w * pc + j;
          for (int q = 0; q < 4; ++q) pop[q] += popcount64(ar[w] ^ bw[q]);
        }
        for (index_t q = 0; q < 4 && j + q < cols; ++q) c(i, p * pc + j + q) = xnor_output<Out>(k - 2 * pop[q], p * pc + j + q, params);
      }
    }
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

#define SLIMNET_XNOR_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq")

/// One MR x 32 tile: rows a[0..MR) (row r at a + r * lda; rows past `rows` repeat the last valid
/// row and are not stored), all kw words, columns [0, cols) of the panel.
template <int MR, class Out>
SLIMNET_XNOR_AVX512 inline void xnor_tile(const bit_word* a, index_t lda, index_t rows, const bit_word* bp, index_t kw, index_t k, Out* c, index_t ldc,
                      index_t cols, index_t col0, const xnor_params& params) {
  const bit_word* ar[MR];
  for (int r = 0; r < MR; ++r) ar[r] = a + std::min<index_t>(r, rows - 1) * lda;
  __m512i acc[MR][4];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_si512();
  for (index_t w = 0; w < kw; ++w) {
    const __m512i b0 = _mm512_loadu_si512(bp + w * 32), b1 = _mm512_loadu_si512(bp + w * 32 + 8);
    const __m512i b2 = _mm512_loadu_si512(bp + w * 32 + 16), b3 = _mm512_loadu_si512(bp + w * 32 + 24);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi64(static_cast<long long>(ar[r][w]));
      acc[r][0] = _mm512_add_epi64(acc[r][0], _mm512_popcnt_epi64(_mm512_xor_si512(av, b0)));
      acc[r][1] = _mm512_add_epi64(acc[r][1], _mm512_popcnt_epi64(_mm512_xor_si512(av, b1)));
      acc[r][2] = _mm512_add_epi64(acc[r][2], _mm512_popcnt_epi64(_mm512_xor_si512(av, b2)));
      acc[r][3] = _mm512_add_epi64(acc[r][3], _mm512_popcnt_epi64(_mm512_xor_si512(av, b3)));
    }
  }
  const __m512i kv = _mm512_set1_epi64(k);
  __mmask8 mask[4];
  for (int v = 0; v < 4; ++v) {
    const index_t n = std::clamp<index_t>(cols - 8 * v, 0, 8);
    mask[v] = static_cast<__mmask8>((1u << n) - 1);
  }
  for (int r = 0; r < MR && r < rows; ++r) {
    Out* cr = c + r * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      if (!mask[v]) continue;
      const __m512i dot = _mm512_sub_epi64(kv, _mm512_slli_epi64(acc[r][v], 1));  // K - 2 popcount
      if constexpr (std::is_same_v<Out, std::int32_t>) {
        _mm256_mask_storeu_epi32(cr + 8 * v, mask[v], _mm512_cvtepi64_epi32(dot));
      } else {
        __m256 y = _mm512_cvtepi64_ps(dot);
        if (params.col_scale) y = _mm256_mul_ps(y, _mm256_maskz_loadu_ps(mask[v], params.col_scale + col0 + 8 * v));
        if (params.col_bias) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(mask[v], params.col_bias + col0 + 8 * v));
        _mm256_mask_storeu_ps(cr + 8 * v, mask[v], y);
      }
    }
  }
}

template <class Out>
SLIMNET_XNOR_AVX512 void gemm_xnor(const bit_matrix_ref& a, const xnor_packed_rhs& b, const matrix_ref<Out>& c, index_t p0, index_t p1,
                                   index_t i0, index_t i1, const xnor_params& params) {
  constexpr index_t mr = 6, pc = xnor_packed_rhs::panel_cols;
  for (index_t p = p0; p < p1; ++p) {
    const index_t col0 = p * pc, cols = std::min(pc, b.cols() - col0);
    for (index_t i = i0; i < i1; i += mr) {
      xnor_tile<mr, Out>(a.words + i * a.row_words, a.row_words, std::min(mr, i1 - i), b.panel(p), b.words(), b.depth(),
                         c.data + i * c.row_stride + col0, c.row_stride, cols, col0, params);
    }
  }
}

#undef SLIMNET_XNOR_AVX512
}  // namespace avx512

namespace avx2 {

#define SLIMNET_XNOR_AVX2 SLIMNET_TARGET("avx2")

constexpr bit_word low_nibbles = 0x0f0f0f0f0f0f0f0full;

/// Rows [0, rows) of `a` (row i at a + i * lda, kw words) split into nibbles: row i of `out` (2 kw
/// words) holds the low nibbles of its words (x & 0x0f.., one per byte), then the high ones
/// ((x >> 4) & 0x0f..). XOR commutes with the split, (a ^ b) & m = (a & m) ^ (b & m), so the
/// nibbles of a XOR b come from one xor of split operands: no shift and mask per product.
SLIMNET_XNOR_AVX2 inline void split_nibble_rows(const bit_word* a, index_t lda, index_t rows, index_t kw, bit_word* out) {
  for (index_t i = 0; i < rows; ++i) {
    const bit_word* src = a + i * lda;
    bit_word* lo = out + i * 2 * kw;
    bit_word* hi = lo + kw;
    for (index_t w = 0; w < kw; ++w) {
      lo[w] = src[w] & low_nibbles;
      hi[w] = (src[w] >> 4) & low_nibbles;
    }
  }
}

/// Panel `bp` (word w of its 32 columns at bp + 32 w) split into nibbles: word w at out + 64 w, the
/// low nibbles of the 32 columns, then their high nibbles.
SLIMNET_XNOR_AVX2 inline void split_nibble_panel(const bit_word* bp, index_t kw, bit_word* out) {
  constexpr index_t pc = xnor_packed_rhs::panel_cols;
  for (index_t w = 0; w < kw; ++w) {
    for (index_t j = 0; j < pc; ++j) {
      out[w * 2 * pc + j] = bp[w * pc + j] & low_nibbles;
      out[w * 2 * pc + pc + j] = (bp[w * pc + j] >> 4) & low_nibbles;
    }
  }
}

/// One MR x 8 tile: split rows a[0..MR) (row r at a + r * lda as split_nibble_rows writes it; rows
/// past `rows` repeat the last valid row and are not stored), all kw words, columns [0, cols) of
/// the 8 at bs (a split panel, 32-byte aligned, offset to the first of the 8 columns). Per word and
/// (row, 4 columns): two xors of split words, the two nibble look-ups, two adds: 6 ops per 256
/// bits instead of 8 (no shift, no masks). 4 x 8 keeps the 8 byte accumulators, the table, the 4
/// split B vectors and 2 broadcasts in the 16 ymm registers.
template <int MR, class Out>
SLIMNET_XNOR_AVX2 inline void xnor_tile(const bit_word* a, index_t lda, index_t rows, const bit_word* bs, index_t kw, index_t k,
                                        Out* c, index_t ldc, index_t cols, index_t col0, const xnor_params& params) {
  constexpr index_t pc = xnor_packed_rhs::panel_cols;
  const bit_word* ar[MR];
  for (int r = 0; r < MR; ++r) ar[r] = a + std::min<index_t>(r, rows - 1) * lda;
  // popcount of each nibble value 0..15, once per 128-bit lane (VPSHUFB looks up within a lane)
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = zero;
  // Byte counts add up in bytes for up to 31 words (<= 4 + 4 per word: <= 248 < 256), then VPSADBW
  // sums each lane's 8 bytes into its 64-bit accumulator.
  for (index_t w0 = 0; w0 < kw; w0 += 31) {
    const index_t w1 = std::min<index_t>(kw, w0 + 31);
    __m256i bytes[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) bytes[r][0] = bytes[r][1] = zero;
    for (index_t w = w0; w < w1; ++w) {
      const bit_word* bw = bs + w * 2 * pc;
      const __m256i lo0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bw));
      const __m256i lo1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bw + 4));
      const __m256i hi0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bw + pc));
      const __m256i hi1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bw + pc + 4));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256i alo = _mm256_set1_epi64x(static_cast<long long>(ar[r][w]));
        const __m256i ahi = _mm256_set1_epi64x(static_cast<long long>(ar[r][kw + w]));
        bytes[r][0] = _mm256_add_epi8(bytes[r][0], _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_xor_si256(alo, lo0)),
                                                                   _mm256_shuffle_epi8(table, _mm256_xor_si256(ahi, hi0))));
        bytes[r][1] = _mm256_add_epi8(bytes[r][1], _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_xor_si256(alo, lo1)),
                                                                   _mm256_shuffle_epi8(table, _mm256_xor_si256(ahi, hi1))));
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_add_epi64(acc[r][0], _mm256_sad_epu8(bytes[r][0], zero));
      acc[r][1] = _mm256_add_epi64(acc[r][1], _mm256_sad_epu8(bytes[r][1], zero));
    }
  }
  alignas(32) std::int64_t pop[8];
  for (int r = 0; r < MR && r < rows; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(pop), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(pop + 4), acc[r][1]);
    Out* cr = c + r * ldc;
    for (index_t q = 0; q < cols; ++q) cr[q] = xnor_output<Out>(k - 2 * pop[q], col0 + q, params);
  }
}

/// Rows [i0, i1) x panels [p0, p1). Rows go in blocks whose split copy stays within 128 KB (a
/// quarter of a Zen 3 core's 512 KB L2; 256 KB blocks took 1.1-1.25x as long at K = 4608, M = 784
/// on the AVX2 EPYC, the same at the other benchmark shapes); per block and panel, the panel is
/// split once (32-byte aligned) and every 4-row tile runs over the panel's 4 groups of 8 columns
/// while its rows sit in L1.
template <class Out>
SLIMNET_XNOR_AVX2 void gemm_xnor(const bit_matrix_ref& a, const xnor_packed_rhs& b, const matrix_ref<Out>& c, index_t p0, index_t p1,
                                 index_t i0, index_t i1, const xnor_params& params) {
  constexpr index_t mr = 4, nr = 8, pc = xnor_packed_rhs::panel_cols;
  const index_t kw = b.words();
  const index_t block_rows = std::max<index_t>(mr, 16384 / std::max<index_t>(2 * kw, 1) / mr * mr);
  std::vector<bit_word> a_split(static_cast<std::size_t>(std::min(block_rows, i1 - i0) * 2 * kw));
  std::vector<bit_word> b_split(static_cast<std::size_t>(2 * pc * kw + 4));  // + 4: room to align to 32 bytes
  bit_word* bs = b_split.data() + ((32 - reinterpret_cast<std::uintptr_t>(b_split.data()) % 32) % 32) / sizeof(bit_word);
  for (index_t ib = i0; ib < i1; ib += block_rows) {
    const index_t ie = std::min(i1, ib + block_rows);
    split_nibble_rows(a.words + ib * a.row_words, a.row_words, ie - ib, kw, a_split.data());
    for (index_t p = p0; p < p1; ++p) {
      split_nibble_panel(b.panel(p), kw, bs);
      const index_t pcols = std::min(pc, b.cols() - p * pc);
      for (index_t i = ib; i < ie; i += mr) {
        const index_t rows = std::min(mr, ie - i);
        for (index_t g = 0; g < pcols; g += nr) {
          const index_t col0 = p * pc + g;
          const bit_word* ai = a_split.data() + (i - ib) * 2 * kw;
          Out* ci = c.data + i * c.row_stride + col0;
          // 1 or 2 rows left (batch 1 and 2 above all): a smaller tile instead of repeating rows
          if (rows == 1) {
            xnor_tile<1, Out>(ai, 2 * kw, rows, bs + g, kw, b.depth(), ci, c.row_stride, std::min(nr, pcols - g), col0, params);
          } else if (rows == 2) {
            xnor_tile<2, Out>(ai, 2 * kw, rows, bs + g, kw, b.depth(), ci, c.row_stride, std::min(nr, pcols - g), col0, params);
          } else {
            xnor_tile<mr, Out>(ai, 2 * kw, rows, bs + g, kw, b.depth(), ci, c.row_stride, std::min(nr, pcols - g), col0, params);
          }
        }
      }
    }
  }
}

#undef SLIMNET_XNOR_AVX2
}  // namespace avx2
#endif

#if defined(__aarch64__)
namespace neon {

/// One MR x 4 tile: rows a[0..MR) (row r at a + r * lda; rows past `rows` repeat the last valid
/// row and are not stored), all kw words, columns [0, cols) of the 4 at bp (a panel's word w of
/// them at bp + 32 w). Per word and (row, 2 columns): eor, vcnt (16 byte popcounts), add; the
/// byte counts (<= 8 per word) add up in bytes for up to 31 words, then widen pairwise into one
/// 64-bit sum per column (uaddlp twice, uadalp). NEON is part of ARMv8-A: no target attribute.
template <int MR, class Out>
inline void xnor_tile(const bit_word* a, index_t lda, index_t rows, const bit_word* bp, index_t kw, index_t k, Out* c, index_t ldc,
                      index_t cols, index_t col0, const xnor_params& params) {
  const bit_word* ar[MR];
  for (int r = 0; r < MR; ++r) ar[r] = a + std::min<index_t>(r, rows - 1) * lda;
  uint64x2_t acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = vdupq_n_u64(0);
  for (index_t w0 = 0; w0 < kw; w0 += 31) {
    const index_t w1 = std::min<index_t>(kw, w0 + 31);
    uint8x16_t bytes[MR][2];
    for (int r = 0; r < MR; ++r) bytes[r][0] = bytes[r][1] = vdupq_n_u8(0);
    for (index_t w = w0; w < w1; ++w) {
      const uint64x2_t b0 = vld1q_u64(bp + w * 32), b1 = vld1q_u64(bp + w * 32 + 2);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const uint64x2_t av = vdupq_n_u64(ar[r][w]);
        bytes[r][0] = vaddq_u8(bytes[r][0], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(av, b0))));
        bytes[r][1] = vaddq_u8(bytes[r][1], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(av, b1))));
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < 2; ++v) acc[r][v] = vpadalq_u32(acc[r][v], vpaddlq_u16(vpaddlq_u8(bytes[r][v])));
  }
  std::uint64_t pop[4];
  for (int r = 0; r < MR && r < rows; ++r) {
    vst1q_u64(pop, acc[r][0]);
    vst1q_u64(pop + 2, acc[r][1]);
    Out* cr = c + r * ldc;
    for (index_t q = 0; q < cols; ++q) cr[q] = xnor_output<Out>(k - 2 * static_cast<std::int64_t>(pop[q]), col0 + q, params);
  }
}

template <class Out>
void gemm_xnor(const bit_matrix_ref& a, const xnor_packed_rhs& b, const matrix_ref<Out>& c, index_t p0, index_t p1, index_t i0, index_t i1,
               const xnor_params& params) {
  constexpr index_t mr = 4, nr = 4, pc = xnor_packed_rhs::panel_cols;
  for (index_t p = p0; p < p1; ++p) {
    const index_t pcols = std::min(pc, b.cols() - p * pc);
    for (index_t g = 0; g < pcols; g += nr) {
      const index_t col0 = p * pc + g, cols = std::min(nr, pcols - g);
      for (index_t i = i0; i < i1; i += mr) {
        xnor_tile<mr, Out>(a.words + i * a.row_words, a.row_words, std::min(mr, i1 - i), b.panel(p) + g, b.words(), b.depth(),
                           c.data + i * c.row_stride + col0, c.row_stride, cols, col0, params);
      }
    }
  }
}

}  // namespace neon
#endif

/// Tag of gemm_xnor's path counters (detail::count_path).
struct xnor_tag;

}  // namespace detail

/// The path gemm_xnor takes with `params` under the current active_isa(): avx512 (with VPOPCNTDQ),
/// avx2 (an avx2 choice, or avx512 without VPOPCNTDQ), neon (on aarch64), else portable; always portable when
/// params.path is kernel_path::portable.
inline isa gemm_xnor_path(const xnor_params& params = {}) {
  if (params.path == kernel_path::portable) return isa::portable;
#if defined(SLIMNET_DISPATCH_X86)
  const isa active = active_isa();
  if (active == isa::avx512 && cpu_features().avx512_vpopcntdq) return isa::avx512;
  if (active == isa::avx512 || active == isa::avx2) return isa::avx2;
#elif defined(__aarch64__)
  if (active_isa() == isa::neon) return isa::neon;
#endif
  return isa::portable;
}

/// How many gemm_xnor calls (one per call, whatever its threads) ran `path` since the program started.
inline std::uint64_t gemm_xnor_path_calls(isa path) { return detail::path_calls<detail::xnor_tag>(path); }

/// The definition: C(i, j) = sum_k A(i, k) B(j, k) over the +-1 values, bit by bit; a float C gets
/// col_scale[j] * dot + col_bias[j].
template <class Out>
void gemm_xnor_reference(const bit_matrix_ref& a, const bit_matrix_ref& b, matrix_ref<Out> c, const xnor_params& params = {}) {
  static_assert(std::is_same_v<Out, std::int32_t> || std::is_same_v<Out, float>, "XNOR GEMM output is int32_t or float.");
  detail::check_xnor("slimnet::kernels::gemm_xnor_reference", a, b.rows, b.cols, c);
  for (index_t i = 0; i < a.rows; ++i) {
    for (index_t j = 0; j < b.rows; ++j) {
      std::int64_t dot = 0;
      for (index_t k = 0; k < a.cols; ++k) dot += a.value(i, k) * b.value(j, k);
      c(i, j) = detail::xnor_output<Out>(dot, j, params);
    }
  }
}

/// C = A B^T over +-1 bits with B prepacked. C (int32_t or float) must have unit column stride.
template <class Out>
void gemm_xnor(const bit_matrix_ref& a, const xnor_packed_rhs& b, matrix_ref<Out> c, const xnor_params& params = {}) {
  static_assert(std::is_same_v<Out, std::int32_t> || std::is_same_v<Out, float>, "XNOR GEMM output is int32_t or float.");
  const char* fn = "slimnet::kernels::gemm_xnor";
  detail::check_xnor(fn, a, b.cols(), b.depth(), c);
  if (c.col_stride != 1) slimnet::detail::raise<shape_error>(fn, "C must have unit column stride, got {}", c.col_stride);
  if (c.rows == 0 || c.cols == 0) return;
  // Threads split the column panels (each reads all of A) or, with fewer panels than threads, rows.
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), std::max(b.panels(), (a.rows + 5) / 6));
  const bool by_panels = b.panels() >= threads;
  const auto bounds = by_panels ? detail::even_split(b.panels(), threads) : detail::even_split(a.rows, threads, 6);
  const isa path = gemm_xnor_path(params);  // once per call: every thread runs the same path
  detail::count_path<detail::xnor_tag>(path);
  detail::run_threads(threads, [&](int t, int) {
    const index_t lo = bounds[static_cast<std::size_t>(t)], hi = bounds[static_cast<std::size_t>(t) + 1];
    if (lo >= hi) return;
    const index_t p0 = by_panels ? lo : 0, p1 = by_panels ? hi : b.panels();
    const index_t i0 = by_panels ? 0 : lo, i1 = by_panels ? a.rows : hi;
#if defined(SLIMNET_DISPATCH_X86)
    if (path == isa::avx512) {
      detail::avx512::gemm_xnor<Out>(a, b, c, p0, p1, i0, i1, params);
      return;
    }
    if (path == isa::avx2) {
      detail::avx2::gemm_xnor<Out>(a, b, c, p0, p1, i0, i1, params);
      return;
    }
#elif defined(__aarch64__)
    if (path == isa::neon) {
      detail::neon::gemm_xnor<Out>(a, b, c, p0, p1, i0, i1, params);
      return;
    }
#endif
    const bit_matrix_ref rows{a.words + i0 * a.row_words, i1 - i0, a.cols, a.row_words};
    const matrix_ref<Out> c_rows{c.data + i0 * c.row_stride, i1 - i0, c.cols, c.row_stride, c.col_stride};
    detail::gemm_xnor_portable<Out>(rows, b, c_rows, p0, p1, params);
  });
}

/// C = A B^T with B (N x K) packed along K; packs B for the call (a layer packs once instead).
template <class Out>
void gemm_xnor(const bit_matrix_ref& a, const bit_matrix_ref& b, matrix_ref<Out> c, const xnor_params& params = {}) {
  detail::check_xnor("slimnet::kernels::gemm_xnor", a, b.rows, b.cols, c);
  gemm_xnor(a, xnor_packed_rhs(b), c, params);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
