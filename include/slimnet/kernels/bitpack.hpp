// Bit-packed +-1 matrices for the XNOR/popcount kernels: the bit convention, written once.
//
// Convention (as Larq Compute Engine's bitpacking):
//   * a value v is one bit: 1 when v < 0 (it stands for -1), 0 otherwise (+1; so sign(0) = +1, and
//     -0.0 and NaN pack as +1);
//   * a row of K values is packed along the reduction axis into ceil(K / 64) uint64 words: element k
//     is bit (k % 64) of word k / 64 (little-endian within the word);
//   * padding bits (k >= K in a row's last word) are 0, and rows may be padded with whole zero words
//     up to row_words.
// The dot product of two packed rows a, b of K values +-1:
//   a . b = #agreements - #disagreements = K - 2 * popcount(a XOR b)
// Popcounts run over whole words, padding included. Padding is 0 in both operands, so it never
// disagrees and XOR counts nothing there: the epilogue uses the real K. (Counting agreements
// instead, popcount(XNOR) over K_pad = 64 * words bits would include the K_pad - K padding bits:
// a . b = 2 * (popcount(a XNOR b) - (K_pad - K)) - K. The XOR form needs no correction.)
//
// pack_signs of contiguous float rows is dispatched at run time (cpu_features.hpp): AVX-512 turns 16
// compares into a mask register, AVX2 8 compares into VMOVMSKPS's sign bits; other inputs and the
// portable path pack one value at a time.
#pragma once

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
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

using bit_word = std::uint64_t;
constexpr index_t bits_per_word = 64;

/// Words that hold `bits` bits.
constexpr index_t words_for_bits(index_t bits) { return (bits + bits_per_word - 1) / bits_per_word; }

/// Non-owning view of a bit-packed matrix: rows x cols values +-1, row i at words + i * row_words.
struct bit_matrix_ref {
  const bit_word* words = nullptr;
  index_t rows = 0, cols = 0;  ///< cols counts values (bits), not words
  index_t row_words = 0;       ///< >= words_for_bits(cols); the padding bits and words are zero

  /// The value (+1 or -1) of element (i, k).
  int value(index_t i, index_t k) const { return ((words[i * row_words + k / 64] >> (k % 64)) & 1u) ? -1 : 1; }
};

/// A bit-packed +-1 matrix that owns its words.
class bit_matrix {
 public:
  bit_matrix() = default;
  /// All +1 (every bit 0), rows of words_for_bits(cols) words (or more: row_words).
  bit_matrix(index_t rows, index_t cols, index_t row_words = 0)
      : rows_(rows), cols_(cols), row_words_(std::max(row_words, words_for_bits(cols))),
        words_(static_cast<std::size_t>(rows * row_words_), 0) {
    if (rows < 0 || cols < 0) slimnet::detail::raise<shape_error>("slimnet::kernels::bit_matrix", "negative shape {} x {}", rows, cols);
  }

  bit_matrix_ref ref() const { return {words_.data(), rows_, cols_, row_words_}; }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t row_words() const { return row_words_; }
  bit_word* row(index_t i) { return words_.data() + i * row_words_; }
  const bit_word* row(index_t i) const { return words_.data() + i * row_words_; }
  std::size_t bytes() const { return words_.size() * sizeof(bit_word); }
  int value(index_t i, index_t k) const { return ref().value(i, k); }
  void set(index_t i, index_t k, int value) {
    const bit_word bit = bit_word{1} << (k % 64);
    bit_word& w = row(i)[k / 64];
    w = value < 0 ? (w | bit) : (w & ~bit);
  }

 private:
  index_t rows_ = 0, cols_ = 0, row_words_ = 0;
  std::vector<bit_word> words_;
};

namespace detail {

/// Packs n values (n <= 64) into one word: bit k set when v[k * stride] < 0.
template <class Scalar>
inline bit_word pack_word(const Scalar* v, index_t stride, index_t n) {
  bit_word w = 0;
  for (index_t k = 0; k < n; ++k) w |= static_cast<bit_word>(v[k * stride] < Scalar(0)) << k;
  return w;
}

#if defined(SLIMNET_DISPATCH_X86)
/// Words [0, full) of a contiguous float row: 4 compares of 16 floats -> 4 16-bit masks per word.
SLIMNET_TARGET("avx512f") inline void pack_row_avx512(const float* xr, index_t full, bit_word* o) {
  const __m512 zero = _mm512_setzero_ps();
  for (index_t w = 0; w < full; ++w) {
    const bit_word m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(xr + 64 * w), zero, _CMP_LT_OQ);
    const bit_word m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(xr + 64 * w + 16), zero, _CMP_LT_OQ);
    const bit_word m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(xr + 64 * w + 32), zero, _CMP_LT_OQ);
    const bit_word m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(xr + 64 * w + 48), zero, _CMP_LT_OQ);
    o[w] = m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
  }
}

/// The same with AVX2: x < 0 (ordered, so NaN and -0 give 0) sets all bits of a lane, VMOVMSKPS
/// gathers the 8 sign bits.
SLIMNET_TARGET("avx2") inline void pack_row_avx2(const float* xr, index_t full, bit_word* o) {
  const __m256 zero = _mm256_setzero_ps();
  for (index_t w = 0; w < full; ++w) {
    bit_word word = 0;
    for (int q = 0; q < 8; ++q) {
      const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(xr + 64 * w + 8 * q), zero, _CMP_LT_OQ));
      word |= static_cast<bit_word>(static_cast<unsigned>(m)) << (8 * q);
    }
    o[w] = word;
  }
}
#endif

}  // namespace detail

/// Packs the signs of x (rows x cols, any strides) along its rows into `out` (resized when its shape
/// differs): bit (i, k) = x(i, k) < 0.
template <class Scalar>
void pack_signs(matrix_ref<const Scalar> x, bit_matrix& out) {
  if (out.rows() != x.rows || out.cols() != x.cols) out = bit_matrix(x.rows, x.cols);
  const index_t full = x.cols / 64;
  [[maybe_unused]] const isa path = active_isa();
  for (index_t i = 0; i < x.rows; ++i) {
    const Scalar* xr = x.data + i * x.row_stride;
    bit_word* o = out.row(i);
    index_t w = 0;
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Scalar, float>) {
      if (x.col_stride == 1 && path == isa::avx512) {
        detail::pack_row_avx512(xr, full, o);
        w = full;
      } else if (x.col_stride == 1 && path == isa::avx2) {
        detail::pack_row_avx2(xr, full, o);
        w = full;
      }
    }
#endif
    for (; w < full; ++w) o[w] = detail::pack_word(xr + 64 * w * x.col_stride, x.col_stride, 64);
    if (x.cols % 64) o[full] = detail::pack_word(xr + 64 * full * x.col_stride, x.col_stride, x.cols % 64);
    for (index_t r = words_for_bits(x.cols); r < out.row_words(); ++r) o[r] = 0;
  }
}

template <class Scalar>
bit_matrix pack_signs(matrix_ref<const Scalar> x) {
  bit_matrix out(x.rows, x.cols);
  pack_signs(x, out);
  return out;
}

/// The inverse of pack_signs up to the sign of zero: out(i, k) = +1 or -1.
template <class Scalar>
void unpack_signs(const bit_matrix_ref& b, matrix_ref<Scalar> out) {
  if (out.rows != b.rows || out.cols != b.cols) {
    slimnet::detail::raise<shape_error>("slimnet::kernels::unpack_signs", "bits ({} x {}) do not fit output ({} x {})", b.rows, b.cols,
                                        out.rows, out.cols);
  }
  for (index_t i = 0; i < b.rows; ++i)
    for (index_t k = 0; k < b.cols; ++k) out(i, k) = static_cast<Scalar>(b.value(i, k));
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
