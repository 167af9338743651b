// Sparse + codebook matrices (Deep Compression's stored form: pruning, then weight sharing on the
// surviving weights): the nonzeros sit in the sparse engine's layouts, but each one's value is a
// k-bit index (1 <= k <= 8) into a table of at most 2^k nonzero centroids. A zero needs no
// centroid: it is not stored. Two layouts, the same as the float sparse engine's:
//   SELL-16 (rows sorted by length, column blocks)  for y = W x + b         (batch 1)
//   column-blocked CSR (panels of <= 256 columns)   for Y = W X + b, X batch-contiguous (batch >= 2)
//
// Index packing: one little-endian bit stream over the stored entries in their storage order,
// entry e at bits [e k, e k + k) (bit b is bit b % 8 of byte b / 8), two zero bytes of tail so a
// 16-bit read never leaves the buffer. A SELL step is 16 entries, so step t starts on byte 2 k t
// and its indices are decoded in registers exactly as the dense codebook GEMV decodes 16 indices
// (codebook_gemm.hpp: vpermb + variable shift, then vpermps for k <= 4, vpermi2ps for k = 5 and a
// blend tree above): the step costs the float SELL step plus the decode, and the weight bytes per
// stored entry drop from 4 + 1 (value + column) to k / 8 + 1. The batch kernel broadcasts one
// weight per nonzero anyway (it multiplies a 64-wide strip of X), so there the index is read as a
// scalar and the centroid loaded from the table (L1), next to the 4 loads and 4 FMAs of the strip.
// Results equal the float sparse kernels on the decoded weights: same products, same order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/codebook_gemm.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/sparse_blocked.hpp"
#include "slimnet/kernels/sparse_sell.hpp"

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

namespace detail {

/// Index of stored entry e in a k-bit stream (the stream has two bytes of zero tail).
inline unsigned packed_code(const std::uint8_t* packed, std::size_t e, int bits) {
  const std::size_t bit = e * static_cast<std::size_t>(bits);
  const unsigned v = static_cast<unsigned>(packed[bit / 8]) | (static_cast<unsigned>(packed[bit / 8 + 1]) << 8);
  return (v >> (bit % 8)) & ((1u << bits) - 1u);
}

/// The codebook of a sparse matrix's nonzero values: the distinct values sorted, the fewest bits
/// that index them when bits <= 0, and each value's index; non-finite weights are refused (they
/// have no place in a sorted table and a NaN weight is a bug upstream).
template <class Value>
struct nonzero_codebook {
  std::vector<Value> centroids;
  std::map<Value, unsigned> index;
  int bits = 1;

  template <class It>
  nonzero_codebook(const char* fn, It first, It last, int requested_bits) {
    for (It it = first; it != last; ++it) {
      const Value v = *it;
      if (!(v - v == Value(0))) slimnet::detail::raise<config_error>(fn, "a non-finite weight ({}) has no codebook entry", static_cast<double>(v));
      if (v != Value(0)) index.emplace(v, 0u);
    }
    for (auto& [v, id] : index) {
      id = static_cast<unsigned>(centroids.size());
      centroids.push_back(v);
    }
    if (centroids.empty()) centroids.push_back(Value(0));  // an all-zero matrix: a table of one unused entry
    if (requested_bits <= 0) {
      bits = 1;
      while (bits < 8 && (std::size_t{1} << bits) < centroids.size()) ++bits;
    } else {
      bits = requested_bits;
    }
    if (bits < 1 || bits > 8) slimnet::detail::raise<config_error>(fn, "index width must be 1..8 bits, got {}", bits);
    if (centroids.size() > (std::size_t{1} << bits)) {
      slimnet::detail::raise<config_error>(fn, "{} distinct nonzero values do not fit {}-bit indices", centroids.size(), bits);
    }
  }

  /// The bit stream of the codes of values[0..n) (entries that are zero get index 0: padding).
  std::vector<std::uint8_t> pack(const Value* values, std::size_t n) const {
    std::vector<std::uint8_t> packed((n * static_cast<std::size_t>(bits) + 7) / 8 + 2, 0);
    for (std::size_t e = 0; e < n; ++e) {
      const unsigned code = values[e] == Value(0) ? 0u : index.at(values[e]);
      const std::size_t bit = e * static_cast<std::size_t>(bits);
      const unsigned shifted = code << (bit % 8);
      packed[bit / 8] = static_cast<std::uint8_t>(packed[bit / 8] | (shifted & 0xffu));
      packed[bit / 8 + 1] = static_cast<std::uint8_t>(packed[bit / 8 + 1] | (shifted >> 8));
    }
    return packed;
  }
};

}  // namespace detail

// --- SELL-16 with codebook values (batch 1) ------------------------------------------------------

/// Non-owning view: sell_ref's arrays with `codes` (k-bit stream, 16 per step) in place of values.
template <class Value>
struct sell_codebook_ref {
  index_t rows = 0, cols = 0, nnz = 0, slices = 0, block_cols = 1, blocks = 1;
  bool sorted = false;
  const sparse_offset_t* step_offsets = nullptr;
  const std::uint16_t* step_masks = nullptr;
  const std::uint32_t* lane_rows = nullptr;
  const std::uint8_t* col_indices = nullptr;
  int bits = 1;
  const std::uint8_t* codes = nullptr;
  const Value* centroids = nullptr;
  index_t n_centroids = 0;

  Value value(std::size_t entry) const { return centroids[detail::packed_code(codes, entry, bits)]; }
};

template <class Value>
class sell_codebook_matrix {
 public:
  /// From a matrix whose nonzeros take at most 2^bits distinct values (bits <= 0: the fewest bits
  /// that hold them): SELL-16 with rows sorted by length (sell_matrix::from_csr), values replaced by
  /// their indices. block_cols <= 0 picks sell_block_cols.
  static sell_codebook_matrix from_dense(matrix_ref<const Value> w, int bits = 0, index_t block_cols = 0) {
    const char* fn = "slimnet::kernels::sell_codebook_matrix::from_dense";
    std::vector<Value> all;
    all.reserve(static_cast<std::size_t>(w.rows * w.cols));
    for (index_t i = 0; i < w.rows; ++i)
      for (index_t j = 0; j < w.cols; ++j) all.push_back(w(i, j));
    const detail::nonzero_codebook<Value> book(fn, all.begin(), all.end(), bits);
    const auto s = sell_matrix<Value, std::uint8_t>::from_csr(csr_matrix<Value, std::uint32_t>::from_dense(w), block_cols, /*sort_rows=*/true);
    const auto r = s.ref();
    sell_codebook_matrix m;
    m.rows_ = r.rows, m.cols_ = r.cols, m.nnz_ = r.nnz, m.slices_ = r.slices, m.block_cols_ = r.block_cols, m.blocks_ = r.blocks;
    m.sorted_ = r.sorted;
    const std::size_t steps = r.step_offsets[r.slices * r.blocks];
    m.step_offsets_.assign(r.step_offsets, r.step_offsets + r.slices * r.blocks + 1);
    m.step_masks_.assign(r.step_masks, r.step_masks + steps);
    m.lane_rows_.assign(r.lane_rows, r.lane_rows + r.slices * 16);
    m.col_.assign(r.col_indices, r.col_indices + steps * 16);
    m.bits_ = book.bits;
    m.codes_ = book.pack(r.values, steps * 16);
    m.centroids_ = book.centroids;
    return m;
  }

  sell_codebook_ref<Value> ref() const {
    return {rows_,          cols_,      nnz_,      slices_,          block_cols_, blocks_, sorted_, step_offsets_.data(), step_masks_.data(),
            lane_rows_.data(), col_.data(), bits_, codes_.data(), centroids_.data(), static_cast<index_t>(centroids_.size())};
  }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t nnz() const { return nnz_; }
  int bits() const { return bits_; }
  index_t block_cols() const { return block_cols_; }
  const std::vector<Value>& centroids() const { return centroids_; }
  /// Everything the format holds: offsets, masks, lane rows, 1-byte columns, the k-bit stream, the table.
  std::size_t bytes() const {
    return step_offsets_.size() * sizeof(sparse_offset_t) + step_masks_.size() * sizeof(std::uint16_t) +
           lane_rows_.size() * sizeof(std::uint32_t) + col_.size() + codes_.size() + centroids_.size() * sizeof(Value);
  }

 private:
  index_t rows_ = 0, cols_ = 0, nnz_ = 0, slices_ = 0, block_cols_ = 1, blocks_ = 1;
  bool sorted_ = false;
  int bits_ = 1;
  std::vector<sparse_offset_t> step_offsets_;
  std::vector<std::uint16_t> step_masks_;
  std::vector<std::uint32_t> lane_rows_;
  std::vector<std::uint8_t> col_, codes_;
  std::vector<Value> centroids_;
};

/// The definition: y = W x + bias walking the format, double accumulation in stored order.
template <class Value>
void spmv_sell_codebook_reference(const sell_codebook_ref<Value>& a, const Value* x, Value* y, const Value* bias = nullptr) {
  for (index_t s = 0; s < a.slices; ++s) {
    double acc[16] = {};
    for (index_t b = 0; b < a.blocks; ++b)
      for (sparse_offset_t t = a.step_offsets[s * a.blocks + b]; t < a.step_offsets[s * a.blocks + b + 1]; ++t)
        for (index_t l = 0; l < 16; ++l) {
          if (!((a.step_masks[t] >> l) & 1u)) continue;
          const std::size_t e = static_cast<std::size_t>(t) * 16 + static_cast<std::size_t>(l);
          acc[l] += static_cast<double>(a.value(e)) * static_cast<double>(x[b * a.block_cols + a.col_indices[e]]);
        }
    for (index_t l = 0; l < 16; ++l) {
      const index_t r = a.lane_rows[s * 16 + l];
      if (r < a.rows) y[r] = static_cast<Value>(acc[l] + (bias ? static_cast<double>(bias[r]) : 0.0));
    }
  }
}

namespace detail {

template <class Value>
void spmv_sell_codebook_portable(const sell_codebook_ref<Value>& a, const Value* x, Value* y, const Value* bias) {
  for (index_t s = 0; s < a.slices; ++s) {
    Value acc[16] = {};
    for (index_t b = 0; b < a.blocks; ++b) {
      const Value* xb = x + b * a.block_cols;
      for (sparse_offset_t t = a.step_offsets[s * a.blocks + b]; t < a.step_offsets[s * a.blocks + b + 1]; ++t) {
        const unsigned m = a.step_masks[t];
        for (index_t l = 0; l < 16; ++l) {
          if (!((m >> l) & 1u)) continue;
          const std::size_t e = static_cast<std::size_t>(t) * 16 + static_cast<std::size_t>(l);
          acc[l] += a.value(e) * xb[a.col_indices[e]];
        }
      }
    }
    for (index_t l = 0; l < 16; ++l) {
      const index_t r = a.lane_rows[s * 16 + l];
      if (r < a.rows) y[r] = acc[l] + (bias ? bias[r] : Value(0));
    }
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// spmv_sell_slices with each step's 16 values decoded from its 2 k bytes of indices in registers.
template <int Width, int Bits>
SLIMNET_CODEBOOK_AVX512 void spmv_sell_codebook_slices(const sell_codebook_ref<float>& a, const float* x, float* y,
                                                       const float* bias) {
  const index_decoder<Bits> dec;
  const centroid_table<Bits> table(a.centroids, a.n_centroids);
  for (index_t s = 0; s < a.slices; ++s) {
    __m512 acc = _mm512_setzero_ps();
    const sparse_offset_t* so = a.step_offsets + s * a.blocks;
    for (index_t b = 0; b < a.blocks; ++b) {
      const sparse_offset_t t0 = so[b], t1 = so[b + 1];
      if (t0 == t1) continue;
      const float* xb = x + b * a.block_cols;
      if constexpr (Width > 0) {
        permute_lookup<Width> lookup;
        if (b + 1 < a.blocks) {
          lookup.load(xb);
        } else {
          lookup.load(xb, a.cols - b * a.block_cols);
        }
        for (sparse_offset_t t = t0; t < t1; ++t) {
          const __m512 xv = lookup.get(load_index16(a.col_indices + static_cast<std::size_t>(t) * 16));
          const __m512 w = table.get(dec.decode(a.codes + static_cast<std::size_t>(t) * 2 * Bits, 2 * Bits));
          acc = _mm512_mask3_fmadd_ps(w, xv, acc, static_cast<__mmask16>(a.step_masks[t]));
        }
      } else {
        for (sparse_offset_t t = t0; t < t1; ++t) {
          const __mmask16 m = static_cast<__mmask16>(a.step_masks[t]);
          const __m512 xv =
              _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, load_index16(a.col_indices + static_cast<std::size_t>(t) * 16), xb, 4);
          const __m512 w = table.get(dec.decode(a.codes + static_cast<std::size_t>(t) * 2 * Bits, 2 * Bits));
          acc = _mm512_mask3_fmadd_ps(w, xv, acc, m);
        }
      }
    }
    sell_store_slice(a, s, acc, y, bias);
  }
}

}  // namespace avx512
#endif
}  // namespace detail

/// y = W x + bias (batch 1), one thread: the decode of each step's indices stays in registers.
template <class Value>
void spmv_sell_codebook(const sell_codebook_ref<Value>& a, const Value* x, Value* y, const Value* bias = nullptr,
                        kernel_path path = kernel_path::automatic) {
  if ((x == nullptr && a.cols > 0) || (y == nullptr && a.rows > 0)) {
    slimnet::detail::raise<shape_error>("slimnet::kernels::spmv_sell_codebook", "null x or y for a {} x {} matrix", a.rows, a.cols);
  }
  [[maybe_unused]] const isa simd = detail::count_path<detail::codebook_tag>(
      std::is_same_v<Value, float> && path != kernel_path::portable && a.rows < (index_t{1} << 31) ? codebook_path()
                                                                                                   : isa::portable);
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (simd == isa::avx512) {
      detail::avx512::with_bits(a.bits, [&](auto bits) {
        constexpr int k = decltype(bits)::value;
        switch (a.block_cols) {
          case 16: detail::avx512::spmv_sell_codebook_slices<16, k>(a, x, y, bias); break;
          case 32: detail::avx512::spmv_sell_codebook_slices<32, k>(a, x, y, bias); break;
          case 64: detail::avx512::spmv_sell_codebook_slices<64, k>(a, x, y, bias); break;
          default: detail::avx512::spmv_sell_codebook_slices<0, k>(a, x, y, bias); break;
        }
      });
      return;
    }
  }
#endif
  (void)path;
  detail::spmv_sell_codebook_portable(a, x, y, bias);
}

// --- column-blocked CSR with codebook values (batch >= 2) ----------------------------------------

/// Non-owning view: blocked_csr_ref's arrays with a k-bit stream of indices in place of values.
template <class Value>
struct blocked_codebook_ref {
  index_t rows = 0, cols = 0, block_cols = 1;
  const sparse_offset_t* row_offsets = nullptr;  ///< blocks() x (rows + 1), absolute (see blocked_csr_ref)
  const sparse_offset_t* row_prefix = nullptr;   ///< rows + 1
  const std::uint8_t* col_indices = nullptr;     ///< relative to the panel's first column
  int bits = 1;
  const std::uint8_t* codes = nullptr;
  const Value* centroids = nullptr;
  index_t n_centroids = 0;

  index_t blocks() const { return cols == 0 ? 1 : (cols + block_cols - 1) / block_cols; }
  index_t nnz() const { return rows == 0 ? 0 : static_cast<index_t>(row_prefix[rows]); }
  Value value(std::size_t entry) const { return centroids[detail::packed_code(codes, entry, bits)]; }
};

template <class Value>
class blocked_codebook_matrix {
 public:
  /// From a matrix whose nonzeros take at most 2^bits distinct values: blocked_csr_matrix's panels
  /// (block_cols <= 0: blocked_csr_block_cols, at most 256 so a column index is one byte).
  static blocked_codebook_matrix from_dense(matrix_ref<const Value> w, int bits = 0, index_t block_cols = 0) {
    const char* fn = "slimnet::kernels::blocked_codebook_matrix::from_dense";
    std::vector<Value> all;
    all.reserve(static_cast<std::size_t>(w.rows * w.cols));
    for (index_t i = 0; i < w.rows; ++i)
      for (index_t j = 0; j < w.cols; ++j) all.push_back(w(i, j));
    const detail::nonzero_codebook<Value> book(fn, all.begin(), all.end(), bits);
    const auto b = blocked_csr_matrix<Value, std::uint8_t>::from_dense(w, block_cols);
    const auto r = b.ref();
    blocked_codebook_matrix m;
    m.rows_ = r.rows, m.cols_ = r.cols, m.block_cols_ = r.block_cols;
    m.row_offsets_.assign(r.row_offsets, r.row_offsets + r.blocks() * (r.rows + 1));
    m.row_prefix_.assign(r.row_prefix, r.row_prefix + r.rows + 1);
    const std::size_t nnz = static_cast<std::size_t>(b.nnz());
    m.col_.assign(r.col_indices, r.col_indices + nnz);
    m.bits_ = book.bits;
    m.codes_ = book.pack(r.values, nnz);
    m.centroids_ = book.centroids;
    return m;
  }

  blocked_codebook_ref<Value> ref() const {
    return {rows_, cols_, block_cols_, row_offsets_.data(), row_prefix_.data(), col_.data(), bits_, codes_.data(), centroids_.data(),
            static_cast<index_t>(centroids_.size())};
  }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t nnz() const { return static_cast<index_t>(col_.size()); }
  int bits() const { return bits_; }
  index_t block_cols() const { return block_cols_; }
  const std::vector<Value>& centroids() const { return centroids_; }
  std::size_t bytes() const {
    return (row_offsets_.size() + row_prefix_.size()) * sizeof(sparse_offset_t) + col_.size() + codes_.size() +
           centroids_.size() * sizeof(Value);
  }

 private:
  index_t rows_ = 0, cols_ = 0, block_cols_ = 1;
  int bits_ = 1;
  std::vector<sparse_offset_t> row_offsets_, row_prefix_;
  std::vector<std::uint8_t> col_, codes_;
  std::vector<Value> centroids_;
};

/// The definition: Y = W X + bias, double accumulation per output in stored order.
template <class Value>
void spmm_blocked_codebook_reference(const blocked_codebook_ref<Value>& a, matrix_ref<const Value> x, matrix_ref<Value> y,
                                     const Value* bias = nullptr) {
  detail::check_spmm("slimnet::kernels::spmm_blocked_codebook_reference", a.rows, a.cols, x, y);
  for (index_t i = 0; i < a.rows; ++i)
    for (index_t j = 0; j < y.cols; ++j) {
      double s = bias ? static_cast<double>(bias[i]) : 0.0;
      for (index_t b = 0; b < a.blocks(); ++b) {
        const sparse_offset_t* off = a.row_offsets + b * (a.rows + 1);
        for (sparse_offset_t q = off[i]; q < off[i + 1]; ++q)
          s += static_cast<double>(a.value(q)) * static_cast<double>(x(b * a.block_cols + a.col_indices[q], j));
      }
      y(i, j) = static_cast<Value>(s);
    }
}

namespace detail {

/// One strip of width <= spmm_strip, rows [0, rows) of panel b (off: its row offsets); x and y
/// point at the strip's first column, any strides.
template <class Value>
void spmm_codebook_strip_portable(const blocked_codebook_ref<Value>& a, const sparse_offset_t* off, const Value* x, index_t ldx,
                                  index_t xs, Value* y, index_t ldy, index_t ys, index_t width, bool first, const Value* bias) {
  Value acc[spmm_strip];
  for (index_t i = 0; i < a.rows; ++i) {
    const sparse_offset_t b = off[i], e = off[i + 1];
    Value* yr = y + i * ldy;
    if (!first && b == e) continue;
    const Value init = bias ? bias[i] : Value(0);
    for (index_t t = 0; t < width; ++t) acc[t] = first ? init : yr[t * ys];
    for (sparse_offset_t p = b; p < e; ++p) {
      const Value v = a.value(p);
      const Value* xr = x + static_cast<index_t>(a.col_indices[p]) * ldx;
      for (index_t t = 0; t < width; ++t) acc[t] += v * xr[t * xs];
    }
    for (index_t t = 0; t < width; ++t) yr[t * ys] = acc[t];
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// The weight of nonzero p of spmm_codebook_strip: decoded[p - base] (Bits > 0), else read as a
/// scalar index from the bit stream.
template <int Bits>
SLIMNET_CODEBOOK_AVX512 inline __m512 codebook_weight(const float* decoded, sparse_offset_t base, const std::uint8_t* codes,
                                                      unsigned k, unsigned mask, const float* table, sparse_offset_t p) {
  if constexpr (Bits > 0) return _mm512_set1_ps(decoded[p - base]);
  const std::size_t bit = static_cast<std::size_t>(p) * k;
  std::uint16_t v;
  std::memcpy(&v, codes + bit / 8, 2);
  return _mm512_set1_ps(table[(static_cast<unsigned>(v) >> (bit % 8)) & mask]);
}

/// spmm_strip (sparse_csr.hpp) with the weight of nonzero p read as centroids[index p]. Bits > 0
/// (VBMI): each row's indices are decoded 16 at a time in registers (the groups of 16 entries
/// holding the row start on byte boundaries) into a float buffer in L1, from which the strip loop
/// broadcasts as the float kernel does; about 4 instructions per 16 weights. (Reading each index
/// as a scalar - a 16-bit load, shift, mask and table load per nonzero - measured 229 against
/// 157 us for the float kernel on LeNet-5's fc1 at 7.5%, batch 64.) Bits = 0: that scalar read.
template <int NV, int Bits>
SLIMNET_CODEBOOK_AVX512 void spmm_codebook_strip(const blocked_codebook_ref<float>& a, const sparse_offset_t* off, const float* x,
                                                 index_t ldx, float* y, index_t ldy, index_t width, bool first,
                                                 const float* bias) {
  const unsigned tail = static_cast<unsigned>(width - (NV - 1) * 16);
  const __mmask16 last = static_cast<__mmask16>(tail >= 16 ? 0xffff : (1u << tail) - 1);
  const std::uint8_t* idx = a.col_indices;
  const std::uint8_t* codes = a.codes;
  const float* table = a.centroids;
  const unsigned k = static_cast<unsigned>(a.bits), mask = (1u << k) - 1u;
  constexpr int decode_bits = Bits > 0 ? Bits : 1;
  const index_decoder<decode_bits> dec;
  const centroid_table<decode_bits> regs(a.centroids, Bits > 0 ? a.n_centroids : 0);
  const std::size_t stream_bytes = (static_cast<std::size_t>(a.nnz()) * k + 7) / 8 + 2;
  alignas(64) float decoded[Bits > 0 ? 2048 + 32 : 1];
  sparse_offset_t base = 0;  // entry of decoded[0]
#define SLIMNET_CODEBOOK_WEIGHT(p) codebook_weight<Bits>(decoded, base, codes, k, mask, table, p)
  for (index_t i = 0; i < a.rows; ++i) {
    const sparse_offset_t b = off[i], e = off[i + 1];
    float* yr = y + i * ldy;
    if (!first && b == e) continue;
    if constexpr (Bits > 0) {
      // Panels are at most 2048 columns wide when Bits > 0 (spmm_blocked_codebook checks).
      base = b & ~sparse_offset_t{15};
      for (sparse_offset_t g = base; g < e; g += 16) {
        const std::size_t byte = static_cast<std::size_t>(g / 16) * 2 * Bits;
        _mm512_store_ps(decoded + (g - base), regs.get(dec.decode(codes + byte, static_cast<index_t>(stream_bytes - byte))));
      }
    }
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
      const __m512 w0 = SLIMNET_CODEBOOK_WEIGHT(p), w1 = SLIMNET_CODEBOOK_WEIGHT(p + 1);
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
      const __m512 w0 = SLIMNET_CODEBOOK_WEIGHT(p);
      const float* x0 = x + static_cast<index_t>(idx[p]) * ldx;
#pragma GCC unroll 4
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * v), acc[v]);
      acc[NV - 1] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(last, x0 + 16 * (NV - 1)), acc[NV - 1]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(yr + 16 * v, _mm512_add_ps(acc[v], acc2[v]));
    _mm512_mask_storeu_ps(yr + 16 * (NV - 1), last, _mm512_add_ps(acc[NV - 1], acc2[NV - 1]));
  }
#undef SLIMNET_CODEBOOK_WEIGHT
}

}  // namespace avx512
#endif
}  // namespace detail

/// Y = W X + bias with X (a.cols x n) and Y (a.rows x n), one thread; fast when both are
/// batch-contiguous (col_stride 1): per 64-wide strip, panel by panel, as spmm_blocked_csr.
template <class Value>
void spmm_blocked_codebook(const blocked_codebook_ref<Value>& a, matrix_ref<const Value> x, matrix_ref<Value> y, const Value* bias = nullptr,
                           kernel_path path = kernel_path::automatic) {
  detail::check_spmm("slimnet::kernels::spmm_blocked_codebook", a.rows, a.cols, x, y);
  if (y.rows == 0 || y.cols == 0) return;
  // The AVX-512 strips need VBMI (codebook_path()) for their decoder, and batch-contiguous operands.
  [[maybe_unused]] const isa simd = detail::count_path<detail::codebook_tag>(
      std::is_same_v<Value, float> && path != kernel_path::portable && x.col_stride == 1 && y.col_stride == 1 ? codebook_path()
                                                                                                              : isa::portable);
  for (index_t j0 = 0; j0 < y.cols; j0 += detail::spmm_strip) {
    const index_t width = std::min(detail::spmm_strip, y.cols - j0);
    for (index_t b = 0; b < a.blocks(); ++b) {
      const sparse_offset_t* off = a.row_offsets + b * (a.rows + 1);
      const Value* xs = x.data + b * a.block_cols * x.row_stride + j0 * x.col_stride;
      Value* ys = y.data + j0 * y.col_stride;
      const bool first = b == 0;
#if defined(SLIMNET_DISPATCH_X86)
      if constexpr (std::is_same_v<Value, float>) {
        if (simd == isa::avx512) {
          auto strip = [&](auto bits) {
            constexpr int k = decltype(bits)::value;
            switch ((width + 15) / 16) {
              case 1:
                detail::avx512::spmm_codebook_strip<1, k>(a, off, xs, x.row_stride, ys, y.row_stride, width, first, bias);
                break;
              case 2:
                detail::avx512::spmm_codebook_strip<2, k>(a, off, xs, x.row_stride, ys, y.row_stride, width, first, bias);
                break;
              case 3:
                detail::avx512::spmm_codebook_strip<3, k>(a, off, xs, x.row_stride, ys, y.row_stride, width, first, bias);
                break;
              default:
                detail::avx512::spmm_codebook_strip<4, k>(a, off, xs, x.row_stride, ys, y.row_stride, width, first, bias);
                break;
            }
          };
          if (a.block_cols <= 2048) {
            detail::avx512::with_bits(a.bits, strip);
            continue;
          }
          strip(std::integral_constant<int, 0>{});
          continue;
        }
      }
#endif
      detail::spmm_codebook_strip_portable(a, off, xs, x.row_stride, x.col_stride, ys, y.row_stride, y.col_stride, width, first, bias);
    }
  }
  (void)path;
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
