// Sliced ELLPACK with column blocks (SELL-16): the format for sparse matrix-vector products (batch 1).
//
// Rows are cut into slices of 16 (one register of floats, one row per lane) and columns into blocks
// of `block_cols`. Within (slice s, block b) each lane's nonzeros are laid out column-major, one
// SIMD step per "t-th nonzero of each of the 16 rows", padded to the busiest lane:
//   acc[lane] += values[step][lane] * x[b * block_cols + col[step][lane]]     (lanes in the step's mask)
// The point of column blocks is how x is read. A gather of 16 floats costs about 25 cycles on Zen 4;
// with blocks of 16/32/64 columns the block of x sits in 1/2/4 registers and the 16 lookups are one
// permute (vpermps / vpermi2ps, 1-3 cycles), so x is never gathered. The accumulator of a slice
// stays in a register across all blocks, and CSR's per-row horizontal sum disappears. The price
// is padding: a step costs the same with 3 or 16 useful lanes. (Measured and rejected on Zen 4:
// a flat list of steps reloading x per step, 5.8 against 4.5 us at 1%; steps run in groups of 2-3
// to avoid mispredicted loop exits on pairs of 1-4 steps, no gain.)
// Padding lanes hold weight 0 and index 0. When a block of x is all finite they are multiplied
// (0 * x = +-0 changes no sum, and the step needs no lane mask: ~20% fewer cycles); when it holds
// an inf or NaN they are masked, never multiplied (padding cannot turn an inf into NaN).
// A block whose inputs are all +-0 is skipped (its products are +-0; an inf or NaN weight times a
// zero input, NaN in a dense product, is then skipped too, as in the CSC column form).
// Column indices are relative to the block, so blocks of <= 256 columns use one byte per index.
// Float products run on the family sell_path() names, chosen per call from kernels::active_isa()
// and compiled with function target attributes in every x86-64 build, whatever the program's
// -march: avx512 (the permute lookups above), avx2 (each slice as two 8-lane halves; a 16- or
// 32-column block of x held in 2 or 4 registers and read by vpermps + blends, wider blocks by
// gathers relative to the block start: AVX2's permutes span 8 floats, so a 64-column lookup would
// take 8 registers and a tree of blends), portable (scalar C++, and every double product).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/sparse_csr.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#define SLIMNET_SELL_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_SELL_AVX2 SLIMNET_TARGET("avx2,fma")
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Rows per slice: one 512-bit register of floats.
constexpr index_t sell_slice_height = 16;

/// Non-owning view of a SELL-16 matrix with column blocks.
template <class Value, class Index>
struct sell_ref {
  index_t rows = 0, cols = 0, nnz = 0;
  index_t slices = 0;      ///< ceil(rows / 16)
  index_t block_cols = 1;  ///< block b covers columns [b * block_cols, min(cols, (b + 1) * block_cols))
  index_t blocks = 1;      ///< ceil(cols / block_cols), 1 when cols == 0
  bool sorted = false;     ///< rows sorted by length; false: lane l of slice s holds row 16 s + l
  /// slices * blocks + 1: the steps of (slice s, block b) are [step_offsets[s*blocks + b], ... + 1).
  const sparse_offset_t* step_offsets = nullptr;
  const std::uint16_t* step_masks = nullptr;  ///< per step: bit l set when lane l holds a nonzero
  const std::uint32_t* lane_rows = nullptr;   ///< slices * 16: original row of each lane; >= rows for padding lanes
  const Index* col_indices = nullptr;         ///< entry (step t, lane l) at 16 t + l, relative to the block; padding: 0
  const Value* values = nullptr;              ///< padding: 0
};

/// The family float SELL-16 products take under the current active_isa(): avx512, avx2, else
/// portable (also every double product, and calls with kernel_path::portable).
inline isa sell_path() { return x86_simd_path(); }

/// Column-block width for SpMV on a rows x cols matrix with nnz nonzeros, from benchmarks/
/// sparse_vs_dense --tune (1000 x 1000, Zen 4, AVX-512): 64 columns (four registers of x, two
/// vpermi2ps and a blend per step) from 0.5% to 40% density (4.3 us at 1% against 6.2 for 32 and
/// 8.9 for 16; 15.3 against 16.8 at 10%), 32 above (50.0 against 57.8 us at 50%), where steps are
/// full anyway and the cheaper lookup wins. (One gathered block of all columns, block_cols >= cols,
/// is faster only below ~0.5%.) On AVX2 16 columns would be faster (register permutes instead of
/// gathers: 56.0 against 84.2 us at 10% on an AMD EPYC) but pads more steps: LeNet-300-100-shaped
/// layers then exceed issue 15's 12 bytes per nonzero, so the width stays memory-first.
inline index_t sell_block_cols(index_t rows, index_t cols, index_t nnz) {
  if (rows == 0 || cols == 0) return 64;
  const double density = static_cast<double>(nnz) / (static_cast<double>(rows) * static_cast<double>(cols));
  return density > 0.45 ? 32 : 64;
}

template <class Value, class Index = std::uint8_t>
class sell_matrix {
  static_assert(std::is_unsigned_v<Index>, "Column indices must be an unsigned integer type.");

 public:
  sell_matrix() : step_offsets_(1, 0) {}

  /// From a CSR matrix with any index type. block_cols: 16, 32 or 64 read x through permutes;
  /// any other width works (x is gathered); <= 0 picks sell_block_cols. sort_rows: slices hold
  /// rows of similar length (less padding when row lengths vary) and outputs are scattered.
  template <class CsrIndex>
  static sell_matrix from_csr(const csr_matrix<Value, CsrIndex>& a, index_t block_cols = 0, bool sort_rows = false) {
    const char* fn = "slimnet::kernels::sell_matrix::from_csr";
    const index_t rows = a.rows(), cols = a.cols(), h = sell_slice_height;
    if (block_cols <= 0) block_cols = sell_block_cols(rows, cols, a.nnz());
    block_cols = std::max<index_t>(1, std::min(block_cols, std::max<index_t>(cols, 1)));
    csr_matrix<Value, Index>::check_index_range(fn, block_cols);
    const auto& off = a.row_offsets();
    const auto& col = a.col_indices();
    const auto& val = a.values();
    sell_matrix m;
    m.rows_ = rows;
    m.cols_ = cols;
    m.nnz_ = a.nnz();
    m.block_cols_ = block_cols;
    m.sorted_ = sort_rows;
    m.blocks_ = cols == 0 ? 1 : (cols + block_cols - 1) / block_cols;
    const index_t slices = (rows + h - 1) / h;
    m.slices_ = slices;
    std::vector<std::uint32_t> order(static_cast<std::size_t>(rows));
    std::iota(order.begin(), order.end(), 0u);
    auto len = [&](std::uint32_t r) { return off[r + 1] - off[r]; };
    if (sort_rows) std::stable_sort(order.begin(), order.end(), [&](std::uint32_t p, std::uint32_t q) { return len(p) > len(q); });
    m.lane_rows_.assign(static_cast<std::size_t>(slices * h), static_cast<std::uint32_t>(rows));
    std::copy(order.begin(), order.end(), m.lane_rows_.begin());
    m.step_offsets_.assign(1, 0);
    // cursor[l]: next CSR entry of lane l's row (entries are visited block by block, in column order).
    std::vector<sparse_offset_t> cursor(static_cast<std::size_t>(h)), count(static_cast<std::size_t>(h));
    for (index_t s = 0; s < slices; ++s) {
      for (index_t l = 0; l < h; ++l) {
        const auto r = m.lane_rows_[static_cast<std::size_t>(s * h + l)];
        cursor[static_cast<std::size_t>(l)] = r < rows ? off[r] : 0;
      }
      for (index_t b = 0; b < m.blocks_; ++b) {
        const index_t c1 = std::min(cols, (b + 1) * block_cols);
        sparse_offset_t steps = 0;
        for (index_t l = 0; l < h; ++l) {
          const auto r = m.lane_rows_[static_cast<std::size_t>(s * h + l)];
          sparse_offset_t n = 0;
          if (r < rows) {
            for (sparse_offset_t p = cursor[static_cast<std::size_t>(l)]; p < off[r + 1] && static_cast<index_t>(col[p]) < c1; ++p) ++n;
          }
          count[static_cast<std::size_t>(l)] = n;
          steps = std::max(steps, n);
        }
        const std::size_t base = m.values_.size();
        m.values_.resize(base + static_cast<std::size_t>(steps) * h, Value(0));
        m.col_.resize(base + static_cast<std::size_t>(steps) * h, Index(0));
        const std::size_t mask_base = m.step_masks_.size();
        m.step_masks_.resize(mask_base + steps, 0);
        for (index_t l = 0; l < h; ++l) {
          auto& cur = cursor[static_cast<std::size_t>(l)];
          for (sparse_offset_t t = 0; t < count[static_cast<std::size_t>(l)]; ++t, ++cur) {
            m.values_[base + t * h + static_cast<std::size_t>(l)] = val[cur];
            m.col_[base + t * h + static_cast<std::size_t>(l)] = static_cast<Index>(static_cast<index_t>(col[cur]) - b * block_cols);
            m.step_masks_[mask_base + t] = static_cast<std::uint16_t>(m.step_masks_[mask_base + t] | (1u << l));
          }
        }
        if (m.step_masks_.size() >= std::numeric_limits<sparse_offset_t>::max() / 16) {
          slimnet::detail::raise<shape_error>(fn, "{} padded entries do not fit 32-bit offsets", m.values_.size());
        }
        m.step_offsets_.push_back(static_cast<sparse_offset_t>(m.step_masks_.size()));
      }
    }
    return m;
  }

  static sell_matrix from_dense(matrix_ref<const Value> a, index_t block_cols = 0, bool sort_rows = false) {
    return from_csr(csr_matrix<Value, std::uint32_t>::from_dense(a), block_cols, sort_rows);
  }

  sell_ref<Value, Index> ref() const {
    return {rows_,   cols_,   nnz_, slices_, block_cols_, blocks_, sorted_, step_offsets_.data(), step_masks_.data(), lane_rows_.data(),
            col_.data(), values_.data()};
  }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t nnz() const { return nnz_; }
  index_t block_cols() const { return block_cols_; }
  /// Stored entries including padding (16 per step).
  index_t stored() const { return static_cast<index_t>(values_.size()); }
  std::size_t bytes() const {
    return step_offsets_.size() * sizeof(sparse_offset_t) + step_masks_.size() * sizeof(std::uint16_t) +
           lane_rows_.size() * sizeof(std::uint32_t) + col_.size() * sizeof(Index) + values_.size() * sizeof(Value);
  }

 private:
  index_t rows_ = 0, cols_ = 0, nnz_ = 0, slices_ = 0, block_cols_ = 1, blocks_ = 1;
  bool sorted_ = false;
  std::vector<sparse_offset_t> step_offsets_;
  std::vector<std::uint16_t> step_masks_;
  std::vector<std::uint32_t> lane_rows_;
  std::vector<Index> col_;
  std::vector<Value> values_;
};

/// The definition: y = A x + bias walking the format, double accumulation in stored order.
template <class Value, class Index>
void spmv_sell_reference(const sell_ref<Value, Index>& a, const Value* x, Value* y, const sparse_params<Value>& params = {}) {
  const index_t h = sell_slice_height;
  for (index_t s = 0; s < a.slices; ++s) {
    double acc[sell_slice_height] = {};
    for (index_t b = 0; b < a.blocks; ++b) {
      for (sparse_offset_t t = a.step_offsets[s * a.blocks + b]; t < a.step_offsets[s * a.blocks + b + 1]; ++t) {
        for (index_t l = 0; l < h; ++l) {
          if (!((a.step_masks[t] >> l) & 1u)) continue;
          const std::size_t e = static_cast<std::size_t>(t) * h + static_cast<std::size_t>(l);
          acc[l] += static_cast<double>(a.values[e]) * static_cast<double>(x[b * a.block_cols + a.col_indices[e]]);
        }
      }
    }
    for (index_t l = 0; l < h; ++l) {
      const index_t r = a.lane_rows[s * h + l];
      if (r < a.rows) y[r] = static_cast<Value>(acc[l] + (params.bias ? static_cast<double>(params.bias[r]) : 0.0));
    }
  }
}

namespace detail {

/// Whether x[0, n) is all +-0: a block of columns whose inputs are all zero adds only +-0 to every
/// output (weights are finite), so every path skips its steps. This is activation sparsity at the
/// granularity of a column block: MNIST digits leave whole blocks of pixels blank, and a Linear
/// whose columns are ordered by how often their input is nonzero (sparse_engine's reordered form)
/// gathers the rarely-nonzero ones into the same blocks.
/// Slices the AVX-512 kernel runs block by block (spmv_sell_blocks) when a call covers at most this
/// many; more run slice by slice.
constexpr index_t avx512_sell_block_outer_slices() { return 64; }

template <class Value>
bool sell_block_zero(const Value* x, index_t n) {
  for (index_t j = 0; j < n; ++j)
    if (x[j] != Value(0)) return false;
  return true;
}

template <class Value, class Index>
void spmv_sell_slices_portable(const sell_ref<Value, Index>& a, index_t s0, index_t s1, const Value* x, Value* y, const Value* bias) {
  constexpr index_t h = sell_slice_height;
  for (index_t s = s0; s < s1; ++s) {
    Value acc[h] = {};
    for (index_t b = 0; b < a.blocks; ++b) {
      const Value* xb = x + b * a.block_cols;
      if (detail::sell_block_zero(xb, std::min(a.block_cols, a.cols - b * a.block_cols))) continue;
      for (sparse_offset_t t = a.step_offsets[s * a.blocks + b]; t < a.step_offsets[s * a.blocks + b + 1]; ++t) {
        const Value* v = a.values + static_cast<std::size_t>(t) * h;
        const Index* c = a.col_indices + static_cast<std::size_t>(t) * h;
        const unsigned m = a.step_masks[t];
        for (index_t l = 0; l < h; ++l)
          if ((m >> l) & 1u) acc[l] += v[l] * xb[c[l]];
      }
    }
    for (index_t l = 0; l < h; ++l) {
      const index_t r = a.lane_rows[s * h + l];
      if (r < a.rows) y[r] = acc[l] + (bias ? bias[r] : Value(0));
    }
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// Block widths read through permutes; Lookup::get(iv) returns x[block + iv[lane]].
template <int Width>
struct permute_lookup {
  __m512 r[Width / 16];
  SLIMNET_SELL_AVX512 void load(const float* xb) {
    for (int q = 0; q < Width / 16; ++q) r[q] = _mm512_loadu_ps(xb + 16 * q);
  }
  /// The last block of x: only `valid` floats exist.
  SLIMNET_SELL_AVX512 void load(const float* xb, index_t valid) {
    for (int q = 0; q < Width / 16; ++q) {
      const index_t n = std::clamp<index_t>(valid - 16 * q, 0, 16);
      r[q] = _mm512_maskz_loadu_ps(static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1), xb + 16 * q);
    }
  }
  /// Whether the block of x is all +-0 (NaN and inf are not zero).
  SLIMNET_SELL_AVX512 bool all_zero() const {
    __m512i any = _mm512_castps_si512(r[0]);
    for (int q = 1; q < Width / 16; ++q) any = _mm512_or_si512(any, _mm512_castps_si512(r[q]));
    return _mm512_test_epi32_mask(any, _mm512_set1_epi32(0x7fffffff)) == 0;
  }
  /// Whether every float of the block of x is finite (no inf, no NaN): then a padding lane (weight
  /// 0, index 0) adds 0 * x[block] = +-0 to its accumulator, which leaves the sum unchanged, and the
  /// steps run without their lane masks.
  SLIMNET_SELL_AVX512 bool all_finite() const {
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    for (int q = 0; q < Width / 16; ++q)
      bad = static_cast<__mmask16>(bad | _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(r[q]), exponent), exponent));
    return bad == 0;
  }
  SLIMNET_SELL_AVX512 __m512 get(__m512i iv) const {
    if constexpr (Width == 16) {
      return _mm512_permutexvar_ps(iv, r[0]);
    } else if constexpr (Width == 32) {
      return _mm512_permutex2var_ps(r[0], iv, r[1]);
    } else {
      const __m512 lo = _mm512_permutex2var_ps(r[0], iv, r[1]), hi = _mm512_permutex2var_ps(r[2], iv, r[3]);
      return _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, _mm512_set1_epi32(32)), lo, hi);
    }
  }
};

/// sum += the products of steps [t0, t1) of `a` (x read through `lookup`). Masked: padding lanes
/// are never multiplied (x may hold inf or NaN). Unmasked (every x of the block finite): padding
/// lanes add 0 * x = +-0, the same sums up to the sign of an exact-zero output, and each step saves
/// loading its mask and the merge: measured on LeNet-300-100 fc1 (Zen 5, reordered columns, MNIST
/// digits) 1.35 against 1.68 us (1.93 against 2.15 in a more loaded run).
/// Unmasked, pairs of steps go to two accumulators (a slice's ~9 steps per block would otherwise
/// wait on one chain of FMA latencies): 1.75 against 1.93 us in the same run.
template <bool Masked, class Lookup, class Index>
SLIMNET_SELL_AVX512 inline __m512 sell_steps(const sell_ref<float, Index>& a, const Lookup& lookup, sparse_offset_t t0,
                                             sparse_offset_t t1, __m512 sum) {
  // Pointers, not 32-bit step numbers: the compiler then does not recompute 64-bit offsets per step.
  const Index* c = a.col_indices + static_cast<std::size_t>(t0) * 16;
  const float* v = a.values + static_cast<std::size_t>(t0) * 16;
  const Index* const c_end = a.col_indices + static_cast<std::size_t>(t1) * 16;
  if constexpr (Masked) {
    for (const std::uint16_t* m = a.step_masks + t0; c != c_end; c += 16, v += 16, ++m)
      sum = _mm512_mask3_fmadd_ps(_mm512_loadu_ps(v), lookup.get(load_index16(c)), sum, static_cast<__mmask16>(*m));
    return sum;
  } else {
    __m512 odd = _mm512_setzero_ps();
    for (; c_end - c >= 32; c += 32, v += 32) {
      sum = _mm512_fmadd_ps(_mm512_loadu_ps(v), lookup.get(load_index16(c)), sum);
      odd = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16), lookup.get(load_index16(c + 16)), odd);
    }
    if (c != c_end) sum = _mm512_fmadd_ps(_mm512_loadu_ps(v), lookup.get(load_index16(c)), sum);
    return _mm512_add_ps(sum, odd);
  }
}

/// Stores the accumulator of slice s (+ bias) into its rows of y. `a` is any SELL-16 view with
/// lane_rows, rows and sorted (sell_ref, and sell_codebook_ref of sparse_codebook.hpp).
template <class SellRef>
SLIMNET_SELL_AVX512 inline void sell_store_slice(const SellRef& a, index_t s, __m512 acc, float* y, const float* bias) {
  const __m512i lane_rows = _mm512_loadu_si512(a.lane_rows + s * 16);
  const __mmask16 valid = _mm512_cmplt_epu32_mask(lane_rows, _mm512_set1_epi32(static_cast<int>(a.rows)));
  if (!a.sorted) {  // lane l holds row 16 s + l: a contiguous store
    const index_t r0 = s * 16;
    if (bias) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(valid, bias + r0));
    _mm512_mask_storeu_ps(y + r0, valid, acc);
  } else {
    if (bias) acc = _mm512_add_ps(acc, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, lane_rows, bias, 4));
    _mm512_mask_i32scatter_ps(y, valid, lane_rows, acc, 4);
  }
}

/// Slices s0..s1 (at most sell_block_outer_slices of them) block by block: each block of x is loaded
/// into registers and tested for all zeros once for all the slices, instead of once per slice; the
/// slices' accumulators wait in `acc` (L1) between blocks. Each lane sums the same products in the
/// same order as spmv_sell_slices (bit-identical results). Measured on a 300 x 784 matrix at 6%
/// (Zen 5, 13 blocks): 2.06-2.14 against 2.24-2.37 us.
constexpr index_t sell_block_outer_slices = avx512_sell_block_outer_slices();
template <int Width, class Index>
SLIMNET_SELL_AVX512 void spmv_sell_blocks(const sell_ref<float, Index>& a, index_t s0, index_t s1, const float* x, float* y,
                                          const float* bias) {
  __m512 acc[sell_block_outer_slices];
  for (index_t s = s0; s < s1; ++s) acc[s - s0] = _mm512_setzero_ps();
  for (index_t b = 0; b < a.blocks; ++b) {
    permute_lookup<Width> lookup;
    const float* xb = x + b * a.block_cols;
    if (b + 1 < a.blocks) {
      lookup.load(xb);
    } else {
      lookup.load(xb, a.cols - b * a.block_cols);
    }
    if (lookup.all_zero()) continue;  // zero inputs: the block's products are all +-0
    const bool finite = lookup.all_finite();
    for (index_t s = s0; s < s1; ++s) {
      const sparse_offset_t t0 = a.step_offsets[s * a.blocks + b], t1 = a.step_offsets[s * a.blocks + b + 1];
      if (t0 == t1) continue;
      acc[s - s0] = finite ? sell_steps<false>(a, lookup, t0, t1, acc[s - s0]) : sell_steps<true>(a, lookup, t0, t1, acc[s - s0]);
    }
  }
  for (index_t s = s0; s < s1; ++s) sell_store_slice(a, s, acc[s - s0], y, bias);
}

/// Width 0: gathers relative to the block start (any block width).
template <int Width, class Index>
SLIMNET_SELL_AVX512 void spmv_sell_slices(const sell_ref<float, Index>& a, index_t s0, index_t s1, const float* x, float* y,
                                          const float* bias) {
  if constexpr (Width > 0) {
    if (s1 - s0 <= sell_block_outer_slices) {
      spmv_sell_blocks<Width>(a, s0, s1, x, y, bias);
      return;
    }
  }
  for (index_t s = s0; s < s1; ++s) {
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
          lookup.load(xb, a.cols - b * a.block_cols);  // a partial last block: masked loads
        }
        if (lookup.all_zero()) continue;  // zero inputs: the block's products are all +-0
        acc = lookup.all_finite() ? sell_steps<false>(a, lookup, t0, t1, acc) : sell_steps<true>(a, lookup, t0, t1, acc);
      } else {
        for (sparse_offset_t t = t0; t < t1; ++t) {
          const __mmask16 m = static_cast<__mmask16>(a.step_masks[t]);
          const __m512 xv =
              _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, load_index16(a.col_indices + static_cast<std::size_t>(t) * 16), xb, 4);
          acc = _mm512_mask3_fmadd_ps(_mm512_loadu_ps(a.values + static_cast<std::size_t>(t) * 16), xv, acc, m);
        }
      }
    }
    sell_store_slice(a, s, acc, y, bias);
  }
}

}  // namespace avx512

namespace avx2 {

/// All ones in lane l (< 8) where bit l of m is set.
SLIMNET_SELL_AVX2 inline __m256 lane_mask8(unsigned m) {
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), bits), bits));
}

/// Whether x[0, n) is all +-0, and whether it is all finite (the two tests of the AVX-512
/// permute_lookup, on a block that is not held in registers).
SLIMNET_SELL_AVX2 inline void sell_block_state(const float* x, index_t n, bool& zero, bool& finite) {
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff), exponent = _mm256_set1_epi32(0x7f800000);
  __m256i any = _mm256_setzero_si256(), bad = _mm256_setzero_si256();
  index_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256i v = _mm256_castps_si256(_mm256_loadu_ps(x + j));
    any = _mm256_or_si256(any, _mm256_and_si256(v, magnitude));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(v, exponent), exponent));
  }
  bool tail_zero = true, tail_finite = true;
  for (; j < n; ++j) {
    tail_zero = tail_zero && x[j] == 0.0f;
    tail_finite = tail_finite && std::isfinite(x[j]);
  }
  zero = tail_zero && _mm256_testz_si256(any, any);
  finite = tail_finite && _mm256_testz_si256(bad, bad);
}

/// x[block + index] for 8 lanes, read by a gather (any block width).
struct gather_lookup8 {
  const float* xb = nullptr;
  SLIMNET_SELL_AVX2 void load(const float* block, index_t) { xb = block; }
  SLIMNET_SELL_AVX2 __m256 get(__m256i iv) const { return _mm256_i32gather_ps(xb, iv, 4); }
};

/// x[block + index] for 8 lanes of a 16- or 32-column block held in 2 or 4 registers: vpermps picks
/// within each 8-float register (the index's low 3 bits), blends on bits 3 and 4 choose the
/// register. No memory access per step: on CPUs whose gathers are slow (AMD Zen 2/3) this is what
/// makes narrow blocks pay (see spmv_sell_slices).
template <int Width>
struct permute_lookup8 {
  static_assert(Width == 16 || Width == 32, "permute_lookup8 holds 16 or 32 columns");
  __m256 r[Width / 8];
  /// The block's `valid` (<= Width) floats; lanes past them read as 0 (never selected by a stored index).
  SLIMNET_SELL_AVX2 void load(const float* xb, index_t valid) {
    for (int q = 0; q < Width / 8; ++q) {
      const index_t n = std::clamp<index_t>(valid - 8 * q, 0, 8);
      if (n == 8) {
        r[q] = _mm256_loadu_ps(xb + 8 * q);
      } else {
        const __m256i lanes =
            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        r[q] = _mm256_maskload_ps(xb + 8 * q, lanes);
      }
    }
  }
  SLIMNET_SELL_AVX2 __m256 get(__m256i iv) const {
    const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(iv, 28));  // index bit 3 in the sign bit
    const __m256 low = _mm256_blendv_ps(_mm256_permutevar8x32_ps(r[0], iv), _mm256_permutevar8x32_ps(r[1], iv), bit3);
    if constexpr (Width == 16) {
      return low;
    } else {
      const __m256 high = _mm256_blendv_ps(_mm256_permutevar8x32_ps(r[2], iv), _mm256_permutevar8x32_ps(r[3], iv), bit3);
      return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(iv, 27)));  // bit 4
    }
  }
};

/// Slices [s0, s1) block by block, 64 slices at a time (as the AVX-512 spmv_sell_blocks: each block
/// of x is tested once for all of them), each slice's 16 lanes in two 8-lane accumulators; x read
/// through `Lookup` (permutes for 16- and 32-column blocks, gathers otherwise). Steps of a finite
/// block run unmasked (padding lanes read x[block] and add 0 * x = +-0); in a block with an inf or
/// NaN, padding lanes' products are blended away, never added. Each lane sums its products in step
/// order whatever the range [s0, s1), so threads do not change results.
template <class Lookup, class Index>
SLIMNET_SELL_AVX2 void spmv_sell_lookup(const sell_ref<float, Index>& a, index_t s0, index_t s1, const float* x, float* y,
                                        const float* bias) {
  constexpr index_t chunk = 64;
  __m256 acc[chunk][2];
  alignas(32) float lanes[16];
  for (index_t c0 = s0; c0 < s1; c0 += chunk) {
    const index_t c1 = std::min(s1, c0 + chunk);
    for (index_t s = c0; s < c1; ++s) acc[s - c0][0] = acc[s - c0][1] = _mm256_setzero_ps();
    for (index_t b = 0; b < a.blocks; ++b) {
      const float* xb = x + b * a.block_cols;
      const index_t valid = std::min(a.block_cols, a.cols - b * a.block_cols);
      bool zero = false, finite = false;
      sell_block_state(xb, valid, zero, finite);
      if (zero) continue;  // zero inputs: the block's products are all +-0
      Lookup lookup;
      lookup.load(xb, valid);
      for (index_t s = c0; s < c1; ++s) {
        const sparse_offset_t t0 = a.step_offsets[s * a.blocks + b], t1 = a.step_offsets[s * a.blocks + b + 1];
        __m256 lo = acc[s - c0][0], hi = acc[s - c0][1];
        const Index* c = a.col_indices + static_cast<std::size_t>(t0) * 16;
        const float* v = a.values + static_cast<std::size_t>(t0) * 16;
        if (finite) {
          for (sparse_offset_t t = t0; t < t1; ++t, c += 16, v += 16) {
            lo = _mm256_fmadd_ps(_mm256_loadu_ps(v), lookup.get(load_csr_index8(c)), lo);
            hi = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), lookup.get(load_csr_index8(c + 8)), hi);
          }
        } else {
          for (sparse_offset_t t = t0; t < t1; ++t, c += 16, v += 16) {
            const unsigned m = a.step_masks[t];
            const __m256 mlo = lane_mask8(m & 0xffu), mhi = lane_mask8(m >> 8);
            lo = _mm256_blendv_ps(lo, _mm256_fmadd_ps(_mm256_loadu_ps(v), lookup.get(load_csr_index8(c)), lo), mlo);
            hi = _mm256_blendv_ps(hi, _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), lookup.get(load_csr_index8(c + 8)), hi), mhi);
          }
        }
        acc[s - c0][0] = lo;
        acc[s - c0][1] = hi;
      }
    }
    for (index_t s = c0; s < c1; ++s) {
      _mm256_store_ps(lanes, acc[s - c0][0]);
      _mm256_store_ps(lanes + 8, acc[s - c0][1]);
      for (index_t l = 0; l < 16; ++l) {
        const index_t r = a.lane_rows[s * 16 + l];
        if (r < a.rows) y[r] = lanes[l] + (bias ? bias[r] : 0.0f);
      }
    }
  }
}

template <class Index>
SLIMNET_SELL_AVX2 void spmv_sell_slices(const sell_ref<float, Index>& a, index_t s0, index_t s1, const float* x, float* y,
                                        const float* bias) {
  switch (a.block_cols) {
    case 16:
      spmv_sell_lookup<permute_lookup8<16>>(a, s0, s1, x, y, bias);
      break;
    case 32:
      spmv_sell_lookup<permute_lookup8<32>>(a, s0, s1, x, y, bias);
      break;
    default:
      spmv_sell_lookup<gather_lookup8>(a, s0, s1, x, y, bias);
      break;
  }
}

}  // namespace avx2

namespace avx512 {
/// out[k] = x[order[k]] for k < n - n % 16, 16 at a time; returns how many it wrote.
SLIMNET_SELL_AVX512 inline index_t gather_columns16(const float* x, const std::int32_t* order, index_t n, float* out) {
  index_t k = 0;
  for (; k + 16 <= n; k += 16) _mm512_storeu_ps(out + k, _mm512_i32gather_ps(_mm512_loadu_si512(order + k), x, 4));
  return k;
}
}  // namespace avx512
#endif

/// Tag of the SELL-16 products' path counters (detail::count_path).
struct sell_tag;

}  // namespace detail

/// How many spmv_sell calls each family computed since the program started (calls on an empty
/// matrix compute nothing and are not counted).
inline std::uint64_t sell_path_calls(isa path) { return detail::path_calls<detail::sell_tag>(path); }

/// out[k] = x[order[k]] for k < n: an input gathered into the column order of a SELL-16 form built
/// over reordered columns (sparse_engine). The AVX-512 path gathers 16 at a time.
template <class Value>
void gather_columns(const Value* x, const std::int32_t* order, index_t n, Value* out) {
  index_t k = 0;
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (active_isa() == isa::avx512) k = detail::avx512::gather_columns16(x, order, n, out);
  }
#endif
  for (; k < n; ++k) out[k] = x[order[k]];
}

/// y = A x + bias (batch 1); x has a.cols entries, y has a.rows. Threads split the slices.
template <class Value, class Index>
void spmv_sell(const sell_ref<Value, Index>& a, const Value* x, Value* y, const sparse_params<Value>& params = {}) {
  if ((x == nullptr && a.cols > 0) || (y == nullptr && a.rows > 0)) {
    slimnet::detail::raise<shape_error>("slimnet::kernels::spmv_sell", "null x or y for a {} x {} matrix", a.rows, a.cols);
  }
  const isa path = std::is_same_v<Value, float> && params.path != kernel_path::portable && a.rows < (index_t{1} << 31)
                       ? sell_path()
                       : isa::portable;
  if (a.slices > 0) detail::count_path<detail::sell_tag>(path);
  auto slices = [&](index_t s0, index_t s1) {
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Value, float>) {
      if (path == isa::avx512) {
        switch (a.block_cols) {
          case 16: detail::avx512::spmv_sell_slices<16>(a, s0, s1, x, y, params.bias); return;
          case 32: detail::avx512::spmv_sell_slices<32>(a, s0, s1, x, y, params.bias); return;
          case 64: detail::avx512::spmv_sell_slices<64>(a, s0, s1, x, y, params.bias); return;
          default: detail::avx512::spmv_sell_slices<0>(a, s0, s1, x, y, params.bias); return;
        }
      }
      if (path == isa::avx2) {
        detail::avx2::spmv_sell_slices(a, s0, s1, x, y, params.bias);
        return;
      }
    }
#endif
    detail::spmv_sell_slices_portable(a, s0, s1, x, y, params.bias);
  };
  const int threads = std::min<index_t>(detail::resolve_threads(params.threads), std::max<index_t>(1, a.slices / 4));
  if (threads == 1) {  // no allocation on the single-thread path: at 1% density a product takes ~4 us
    slices(0, a.slices);
    return;
  }
  // Work of slice s ~ its steps: step_offsets sampled every `blocks` entries is a prefix over slices.
  std::vector<sparse_offset_t> prefix(static_cast<std::size_t>(a.slices) + 1);
  for (index_t s = 0; s <= a.slices; ++s) prefix[static_cast<std::size_t>(s)] = a.step_offsets[s * a.blocks];
  const auto bounds = detail::balanced_split(prefix.data(), a.slices, threads);
  detail::run_threads(threads, [&](int t, int) { slices(bounds[static_cast<std::size_t>(t)], bounds[static_cast<std::size_t>(t) + 1]); });
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
