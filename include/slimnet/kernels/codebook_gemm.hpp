// Codebook (weight-sharing) matrices and their products: W(i, j) = centroids[index(i, j)] with
// k-bit indices (1 <= k <= 8) packed per row, a table of at most 2^k centroids
// (Deep Compression: 5-bit fully connected and 8-bit convolution indices; k-means with 16 clusters: 4 bits).
//   gemv:  y = W x + bias            gemm:  Y = W X + bias (bias[i] along row i)
//
// Packing convention: row i is a little-endian bit stream of cols * k bits starting at byte
// i * row_bytes; index j occupies bits [j k, j k + k) of it (bit b of the stream is bit b % 8 of
// byte b / 8). Unused bits are zero.
//
// The AVX-512 GEMV decodes 16 indices per step without leaving registers: 16 consecutive indices
// start on a byte boundary and span 2k <= 16 bytes; vpermb (VBMI) copies bytes (l k / 8, +1) into
// 32-bit lane l, a variable shift by (l k) % 8 and a mask leave the index. The centroid table lives
// in registers: vpermps for k <= 4 (16 entries), vpermi2ps for k = 5 (32), a tree of vpermi2ps and
// blends on the higher index bits for k = 6..8 (64..256 entries in 4..16 registers) - faster than a
// gather. Batch >= 2 decodes blocks of rows to floats and runs the dense GEMM on them.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/kernels/intrinsics.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
#define SLIMNET_CODEBOOK_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Non-owning view of a codebook matrix.
template <class Value>
struct codebook_ref {
  index_t rows = 0, cols = 0;
  int bits = 0;                           ///< index width k, 1..8
  index_t row_bytes = 0;                  ///< >= ceil(cols * bits / 8)
  const std::uint8_t* packed = nullptr;   ///< rows * row_bytes
  const Value* centroids = nullptr;       ///< n_centroids <= 2^bits entries; indices >= n_centroids are invalid
  index_t n_centroids = 0;

  /// Index of element (i, j).
  unsigned index(index_t i, index_t j) const {
    const std::size_t bit = static_cast<std::size_t>(j) * static_cast<std::size_t>(bits);
    const std::uint8_t* p = packed + i * row_bytes + bit / 8;
    unsigned v = p[0];
    if (bit % 8 + static_cast<std::size_t>(bits) > 8) v |= static_cast<unsigned>(p[1]) << 8;
    return (v >> (bit % 8)) & ((1u << bits) - 1u);
  }
  Value value(index_t i, index_t j) const { return centroids[index(i, j)]; }
};

/// Options of the codebook kernels.
template <class Scalar>
struct codebook_params {
  const Scalar* bias = nullptr;  ///< bias[i] added to row i's outputs (null: none)
  int threads = 1;               ///< 1 by default (repeatable); <= 0: every core. Rows are split.
  kernel_path path = kernel_path::automatic;
};

/// A codebook matrix that owns its packed indices and centroids.
template <class Value>
class codebook_matrix {
 public:
  codebook_matrix() = default;

  /// From one index per element (row-major, rows x cols) and the centroid table.
  template <class Int>
  static codebook_matrix from_indices(index_t rows, index_t cols, int bits, const std::vector<Int>& indices, std::vector<Value> centroids) {
    const char* fn = "slimnet::kernels::codebook_matrix::from_indices";
    if (bits < 1 || bits > 8) slimnet::detail::raise<config_error>(fn, "index width must be 1..8 bits, got {}", bits);
    if (rows < 0 || cols < 0 || indices.size() != static_cast<std::size_t>(rows * cols)) {
      slimnet::detail::raise<shape_error>(fn, "{} indices for a {} x {} matrix", indices.size(), rows, cols);
    }
    if (centroids.empty() || centroids.size() > (std::size_t{1} << bits)) {
      slimnet::detail::raise<config_error>(fn, "{} centroids for {}-bit indices (1..{} allowed)", centroids.size(), bits, 1 << bits);
    }
    codebook_matrix m;
    m.rows_ = rows;
    m.cols_ = cols;
    m.bits_ = bits;
    m.row_bytes_ = (cols * bits + 7) / 8;
    m.packed_.assign(static_cast<std::size_t>(rows * m.row_bytes_), 0);
    m.centroids_ = std::move(centroids);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t j = 0; j < cols; ++j) {
        const auto v = indices[static_cast<std::size_t>(i * cols + j)];
        if (v < 0 || static_cast<std::size_t>(v) >= m.centroids_.size()) {
          slimnet::detail::raise<config_error>(fn, "index {} at ({}, {}) is outside the {} centroids", static_cast<long long>(v), i, j,
                                               m.centroids_.size());
        }
        const std::size_t bit = static_cast<std::size_t>(j) * static_cast<std::size_t>(bits);
        std::uint8_t* p = m.packed_.data() + i * m.row_bytes_ + bit / 8;
        const unsigned shifted = static_cast<unsigned>(v) << (bit % 8);
        p[0] = static_cast<std::uint8_t>(p[0] | (shifted & 0xffu));
        if (shifted >> 8) p[1] = static_cast<std::uint8_t>(p[1] | (shifted >> 8));
      }
    }
    return m;
  }

  /// From a matrix that holds at most 2^bits distinct values (a weight-shared layer after
  /// quantization): the centroids are those values, sorted. Throws config_error when there are more.
  static codebook_matrix from_dense(matrix_ref<const Value> w, int bits) {
    std::map<Value, int> distinct;
    for (index_t i = 0; i < w.rows; ++i)
      for (index_t j = 0; j < w.cols; ++j) distinct.emplace(w(i, j), 0);
    if (distinct.size() > (std::size_t{1} << std::clamp(bits, 0, 30))) {
      slimnet::detail::raise<config_error>("slimnet::kernels::codebook_matrix::from_dense", "{} distinct values do not fit {}-bit indices",
                                           distinct.size(), bits);
    }
    std::vector<Value> centroids;
    for (auto& [v, id] : distinct) {
      id = static_cast<int>(centroids.size());
      centroids.push_back(v);
    }
    if (centroids.empty()) centroids.push_back(Value(0));
    std::vector<int> idx(static_cast<std::size_t>(w.rows * w.cols));
    for (index_t i = 0; i < w.rows; ++i)
      for (index_t j = 0; j < w.cols; ++j) idx[static_cast<std::size_t>(i * w.cols + j)] = distinct[w(i, j)];
    return from_indices(w.rows, w.cols, bits, idx, std::move(centroids));
  }

  codebook_ref<Value> ref() const {
    return {rows_, cols_, bits_, row_bytes_, packed_.data(), centroids_.data(), static_cast<index_t>(centroids_.size())};
  }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  int bits() const { return bits_; }
  const std::vector<Value>& centroids() const { return centroids_; }
  /// Bytes of the packed indices and the table: what the format costs.
  std::size_t bytes() const { return packed_.size() + centroids_.size() * sizeof(Value); }

 private:
  index_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
  int bits_ = 1;
  std::vector<std::uint8_t> packed_;
  std::vector<Value> centroids_;
};

namespace detail {

template <class Value>
void check_codebook(const char* fn, const codebook_ref<Value>& a, index_t x_rows, index_t x_cols, index_t y_rows, index_t y_cols) {
  if (x_rows != a.cols || y_rows != a.rows || x_cols != y_cols) {
    slimnet::detail::raise<shape_error>(fn, "codebook ({} x {}) * ({} x {}) does not fit Y ({} x {})", a.rows, a.cols, x_rows, x_cols,
                                        y_rows, y_cols);
  }
}

/// Decodes row i into out[0..cols).
template <class Value>
void decode_row_portable(const codebook_ref<Value>& a, index_t i, Value* out) {
  for (index_t j = 0; j < a.cols; ++j) out[j] = a.value(i, j);
}

template <class Value>
void gemv_codebook_rows_portable(const codebook_ref<Value>& a, index_t r0, index_t r1, const Value* x, Value* y, const Value* bias) {
  for (index_t i = r0; i < r1; ++i) {
    Value s = bias ? bias[i] : Value(0);
    for (index_t j = 0; j < a.cols; ++j) s += a.value(i, j) * x[j];
    y[i] = s;
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// Decodes the 16 indices starting at index j0 (a multiple of 16) of a row.
template <int Bits>
struct index_decoder {
  __m512i ctrl, shift;
  SLIMNET_CODEBOOK_AVX512 index_decoder() {
    alignas(64) std::uint8_t c[64];
    alignas(64) std::uint32_t s[16];
    for (int l = 0; l < 16; ++l) {
      const int bit = l * Bits;
      c[4 * l] = static_cast<std::uint8_t>(bit / 8);
      c[4 * l + 1] = static_cast<std::uint8_t>(bit / 8 + 1);
      c[4 * l + 2] = c[4 * l + 3] = 63;  // a zero byte (bytes past 2 Bits are never loaded)
      s[l] = static_cast<std::uint32_t>(bit % 8);
    }
    ctrl = _mm512_load_si512(c);
    shift = _mm512_load_si512(s);
  }
  /// `avail` bytes of the row remain at p (loads never read past them). Lane l holds index l in
  /// its low Bits bits and, for Bits >= 4, garbage above: vpermps / vpermi2ps read only the low 4 /
  /// 5 bits and the blend tree tests bits 5 .. Bits-1, so only Bits < 4 needs a mask (one op less
  /// per 16 weights for 4- to 8-bit indices).
  SLIMNET_CODEBOOK_AVX512 __m512i decode(const std::uint8_t* p, index_t avail) const {
    const index_t n = std::min<index_t>(avail, 2 * Bits);
    const __m128i bytes = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1), p);
    const __m512i spread = _mm512_permutexvar_epi8(ctrl, _mm512_zextsi128_si512(bytes));
    const __m512i index = _mm512_srlv_epi32(spread, shift);
    if constexpr (Bits < 4) return _mm512_and_si512(index, _mm512_set1_epi32((1 << Bits) - 1));
    return index;
  }
};

/// The centroid table in registers: 2^Bits floats (missing centroids read as 0).
template <int Bits>
struct centroid_table {
  static constexpr int regs = Bits <= 4 ? 1 : (1 << Bits) / 16;
  __m512 t[regs];
  SLIMNET_CODEBOOK_AVX512 explicit centroid_table(const float* c, index_t n) {
    for (int r = 0; r < regs; ++r) {
      const index_t valid = std::clamp<index_t>(n - 16 * r, 0, 16);
      t[r] = _mm512_maskz_loadu_ps(static_cast<__mmask16>(valid >= 16 ? 0xffff : (1u << valid) - 1), c + 16 * r);
    }
  }
  SLIMNET_CODEBOOK_AVX512 __m512 get(__m512i idx) const {
    if constexpr (Bits <= 4) {
      return _mm512_permutexvar_ps(idx, t[0]);
    } else {
      // 32-entry lookups on index bits 0..4, then a blend tree on bits 5, 6, 7.
      constexpr int pairs = regs / 2;
      __m512 r[pairs];
      for (int p = 0; p < pairs; ++p) r[p] = _mm512_permutex2var_ps(t[2 * p], idx, t[2 * p + 1]);
      int n = pairs;
      for (int b = 5; n > 1; ++b) {
        const __mmask16 high = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(1 << b));
        for (int p = 0; p < n / 2; ++p) r[p] = _mm512_mask_blend_ps(high, r[2 * p], r[2 * p + 1]);
        n /= 2;
      }
      return r[0];
    }
  }
};

/// y[r0..r1) = W x + bias: 16 weights decoded per step, two accumulators per row (alternate steps)
/// to hide the FMA latency, one horizontal sum per row.
template <int Bits>
SLIMNET_CODEBOOK_AVX512 void gemv_codebook_rows(const codebook_ref<float>& a, index_t r0, index_t r1, const float* x, float* y,
                                                const float* bias) {
  const index_decoder<Bits> dec;
  const centroid_table<Bits> table(a.centroids, a.n_centroids);
  const index_t full = a.cols / 16;
  const index_t tail = a.cols - 16 * full;
  const __mmask16 tail_mask = static_cast<__mmask16>((1u << tail) - 1);
  for (index_t i = r0; i < r1; ++i) {
    const std::uint8_t* row = a.packed + i * a.row_bytes;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    index_t q = 0;
    for (; q + 2 <= full; q += 2) {
      const __m512 w0 = table.get(dec.decode(row + q * 2 * Bits, a.row_bytes - q * 2 * Bits));
      const __m512 w1 = table.get(dec.decode(row + (q + 1) * 2 * Bits, a.row_bytes - (q + 1) * 2 * Bits));
      acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + 16 * q), acc0);
      acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16 * q + 16), acc1);
    }
    if (q < full) {
      acc0 = _mm512_fmadd_ps(table.get(dec.decode(row + q * 2 * Bits, a.row_bytes - q * 2 * Bits)), _mm512_loadu_ps(x + 16 * q), acc0);
      ++q;
    }
    if (tail) {
      const __m512 w = _mm512_maskz_mov_ps(tail_mask, table.get(dec.decode(row + q * 2 * Bits, a.row_bytes - q * 2 * Bits)));
      acc1 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(tail_mask, x + 16 * q), acc1);
    }
    y[i] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + (bias ? bias[i] : 0.0f);
  }
}

/// Rows [r0, r1) decoded to floats, row-major with stride ld.
template <int Bits>
SLIMNET_CODEBOOK_AVX512 void decode_rows(const codebook_ref<float>& a, index_t r0, index_t r1, float* out, index_t ld) {
  const index_decoder<Bits> dec;
  const centroid_table<Bits> table(a.centroids, a.n_centroids);
  const index_t full = a.cols / 16, tail = a.cols - 16 * full;
  for (index_t i = r0; i < r1; ++i) {
    const std::uint8_t* row = a.packed + i * a.row_bytes;
    float* o = out + (i - r0) * ld;
    for (index_t q = 0; q < full; ++q) _mm512_storeu_ps(o + 16 * q, table.get(dec.decode(row + q * 2 * Bits, a.row_bytes - q * 2 * Bits)));
    if (tail) {
      _mm512_mask_storeu_ps(o + 16 * full, static_cast<__mmask16>((1u << tail) - 1),
                            table.get(dec.decode(row + full * 2 * Bits, a.row_bytes - full * 2 * Bits)));
    }
  }
}

template <class F>
void with_bits(int bits, F&& f) {
  switch (bits) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

}  // namespace avx512
#endif

/// Tag of the codebook products' path counters (dense and sparse codebook kernels).
struct codebook_tag;

}  // namespace detail

/// The family float codebook products (gemv_codebook, and gemm_codebook's decoding) take under the
/// current active_isa(): avx512 when the CPU also has VBMI (vpermb unpacks the indices), else
/// portable. Compiled with function target attributes in every x86-64 build. (No AVX2 path yet:
/// AVX2 has no byte permute across lanes, so the indices would be unpacked by shifts and the
/// centroids gathered or looked up by blend trees of vpermps.)
inline isa codebook_path() {
#if defined(SLIMNET_DISPATCH_X86)
  if (active_isa() == isa::avx512 && cpu_features().avx512_vbmi) return isa::avx512;
#endif
  return isa::portable;
}

/// How many gemv_codebook / gemm_codebook calls each family computed since the program started.
inline std::uint64_t codebook_path_calls(isa path) { return detail::path_calls<detail::codebook_tag>(path); }

/// The definition: y = W x + bias with W(i, j) = centroids[index(i, j)], double accumulation.
template <class Value>
void gemv_codebook_reference(const codebook_ref<Value>& a, const Value* x, Value* y, const codebook_params<Value>& params = {}) {
  detail::check_codebook("slimnet::kernels::gemv_codebook_reference", a, a.cols, 1, a.rows, 1);
  for (index_t i = 0; i < a.rows; ++i) {
    double s = params.bias ? static_cast<double>(params.bias[i]) : 0.0;
    for (index_t j = 0; j < a.cols; ++j) s += static_cast<double>(a.value(i, j)) * static_cast<double>(x[j]);
    y[i] = static_cast<Value>(s);
  }
}

/// The definition: Y = W X + bias (X: cols x n, Y: rows x n), double accumulation.
template <class Value>
void gemm_codebook_reference(const codebook_ref<Value>& a, matrix_ref<const Value> x, matrix_ref<Value> y,
                             const codebook_params<Value>& params = {}) {
  detail::check_codebook("slimnet::kernels::gemm_codebook_reference", a, x.rows, x.cols, y.rows, y.cols);
  for (index_t i = 0; i < a.rows; ++i) {
    for (index_t j = 0; j < y.cols; ++j) {
      double s = params.bias ? static_cast<double>(params.bias[i]) : 0.0;
      for (index_t k = 0; k < a.cols; ++k) s += static_cast<double>(a.value(i, k)) * static_cast<double>(x(k, j));
      y(i, j) = static_cast<Value>(s);
    }
  }
}

/// y = W x + bias (batch 1): x has a.cols entries, y a.rows.
template <class Value>
void gemv_codebook(const codebook_ref<Value>& a, const Value* x, Value* y, const codebook_params<Value>& params = {}) {
  detail::check_codebook("slimnet::kernels::gemv_codebook", a, a.cols, 1, a.rows, 1);
  [[maybe_unused]] const isa path = detail::count_path<detail::codebook_tag>(
      std::is_same_v<Value, float> && params.path != kernel_path::portable ? codebook_path() : isa::portable);
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), std::max<index_t>(1, a.rows / 16));
  const auto bounds = detail::even_split(a.rows, threads);
  detail::run_threads(threads, [&](int t, int) {
    const index_t r0 = bounds[static_cast<std::size_t>(t)], r1 = bounds[static_cast<std::size_t>(t) + 1];
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Value, float>) {
      if (path == isa::avx512) {
        detail::avx512::with_bits(a.bits, [&](auto bits) { detail::avx512::gemv_codebook_rows<decltype(bits)::value>(a, r0, r1, x, y, params.bias); });
        return;
      }
    }
#endif
    detail::gemv_codebook_rows_portable(a, r0, r1, x, y, params.bias);
  });
}

/// Y = W X + bias with X (a.cols x n) and Y (a.rows x n), any strides: blocks of 64 rows are decoded
/// to floats (64 x cols, in L2) and multiplied by the dense GEMM; the decoding costs O(rows * cols),
/// the product O(rows * cols * n). Threads split the row blocks (each GEMM runs on one thread).
template <class Value>
void gemm_codebook(const codebook_ref<Value>& a, matrix_ref<const Value> x, matrix_ref<Value> y, const codebook_params<Value>& params = {}) {
  detail::check_codebook("slimnet::kernels::gemm_codebook", a, x.rows, x.cols, y.rows, y.cols);
  if (y.rows == 0 || y.cols == 0) return;
  [[maybe_unused]] const isa path = detail::count_path<detail::codebook_tag>(
      std::is_same_v<Value, float> && params.path != kernel_path::portable ? codebook_path() : isa::portable);
  constexpr index_t block = 64;
  const index_t blocks = (a.rows + block - 1) / block;
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), blocks);
  const auto bounds = detail::even_split(blocks, threads);
  detail::run_threads(threads, [&](int t, int) {
    std::vector<Value> w(static_cast<std::size_t>(block * std::max<index_t>(a.cols, 1)));
    for (index_t b = bounds[static_cast<std::size_t>(t)]; b < bounds[static_cast<std::size_t>(t) + 1]; ++b) {
      const index_t r0 = b * block, r1 = std::min(a.rows, r0 + block);
      bool decoded = false;
#if defined(SLIMNET_DISPATCH_X86)
      if constexpr (std::is_same_v<Value, float>) {
        if (path == isa::avx512) {
          detail::avx512::with_bits(a.bits, [&](auto bits) { detail::avx512::decode_rows<decltype(bits)::value>(a, r0, r1, w.data(), a.cols); });
          decoded = true;
        }
      }
#endif
      if (!decoded) {
        for (index_t i = r0; i < r1; ++i) detail::decode_row_portable(a, i, w.data() + (i - r0) * a.cols);
      }
      const matrix_ref<Value> yb{y.data + r0 * y.row_stride, r1 - r0, y.cols, y.row_stride, y.col_stride};
      gemm<Value>(row_major<const Value>(w.data(), r1 - r0, a.cols), x, yb);
      if (params.bias) {
        for (index_t i = r0; i < r1; ++i)
          for (index_t j = 0; j < y.cols; ++j) y(i, j) += params.bias[i];
      }
    }
  });
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
