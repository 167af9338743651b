// Direct sparse convolution (no im2col) with the bias, ReLU and max-pooling that follow it fused.
// The reference defines what the fast kernel computes, for stride 1 and zero padding (pad_h, pad_w):
//   z[n, o, i, j] = bias[o] + sum_{(c, ki, kj) nonzero in filter o} w[o, c, ki, kj] * xp[n, c, i + ki, j + kj]
//   y = maxpool_{k, s}(relu?(z))      (relu and max commute, so the pooled max is clamped instead)
// with xp the input padded by zeros. NCHW in and out, like nn::conv2d followed by nn::relu and
// nn::max_pool2d (floor mode, no padding).
//
// How the fast kernel runs: the input is copied once into a padded, batch-innermost buffer
// xp(c, h, w, n). For a tap (c, ki, kj) the products it contributes to output row i are
//   z(o, i, j, n) += w * xp(c, i + ki, j + kj, n),   j < OW, n < N
// and (j, n) runs over OW * N contiguous floats on both sides: each nonzero streams one contiguous
// strip, at a constant offset off = ((c Hp + ki) Wp + kj) N from the output's position (Hp, Wp:
// padded sizes). That is an SpMM whose "column index" is an offset, so the strip kernel of the
// sparse products applies: 64 outputs in four zmm registers, one broadcast and four FMAs per
// nonzero, two accumulator sets alternating to hide the FMA latency. Small rows (batch 1, LeNet's
// 8-wide conv2) waste most of a vector, so the plane is then computed "wide": output positions
// (i, j) for j < Wp laid out with the input's row length, z_flat = (i Wp + j) N reads
// xp_flat = z_flat + off, the whole plane one strip; the Wp - OW extra columns per row are
// computed and never read. The wide strip ends exactly at the end of xp (OH + kh - 1 = Hp,
// OW + kw - 1 = Wp), so no read goes past the buffer. The layout is chosen per call by the number
// of vectors each needs. Each output channel's plane is computed into a small buffer, then pooled
// (and clamped) straight into y, so the unpooled output never leaves the cache.
//
// One image (batch 1) with no pooling or a pool whose kernel p equals its stride takes another
// layout (sparse_conv2d_single): the input as p row phases x (kw + p - 1) column shifts,
// X(r, c, s, u, j) = xp(c, p u + r, p j + s), rows of exactly PW floats, so the conv outputs of pool
// phase (a, b) form one contiguous PH x PW strip per tap and the pooled plane is the max of the p^2
// phase accumulators, clamped and stored from registers. Measured on LeNet-5 (DNS, Zen 5, batch 1):
// conv1 + pool 4.0 -> 2.1 us, conv2 + pool 4.7 -> 3.3 us (the per-filter plane / pooling passes gone).
//
// Costs: nnz(o) x OH x ceil(OW N / 16) vector FMAs per filter, against im2col's K x P copies plus a
// dense product for the im2col path; memory: values (4 bytes), 16-bit taps and the offsets of the
// current input size (4 bytes) per nonzero.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/matrix_ref.hpp"
#include "slimnet/kernels/sparse_csr.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#define SLIMNET_CONV_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_CONV_AVX2 SLIMNET_TARGET("avx2,fma")
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// The fused epilogue: ReLU and a max-pool of pool_kernel x pool_kernel windows at pool_stride, no
/// padding, floor mode (pool_kernel 0: none).
struct conv_epilogue {
  bool relu = false;
  index_t pool_kernel = 0;
  index_t pool_stride = 0;

  bool pooled() const { return pool_kernel > 0; }
  index_t out(index_t size) const { return pooled() ? (size - pool_kernel) / pool_stride + 1 : size; }
};

/// Geometry of a stride-1 convolution's input.
struct conv_input {
  index_t batch = 0, channels = 0, height = 0, width = 0;
  index_t pad_h = 0, pad_w = 0;
};

/// Non-owning view of pruned filters: filter o holds entries [row_offsets[o], row_offsets[o + 1]),
/// each a tap t = (c kh + ki) kw + kj and its weight.
template <class Value>
struct sparse_filters_ref {
  index_t out_channels = 0, in_channels = 0, kernel_h = 0, kernel_w = 0;
  const sparse_offset_t* row_offsets = nullptr;
  const std::uint16_t* taps = nullptr;
  const Value* values = nullptr;

  index_t taps_per_filter() const { return in_channels * kernel_h * kernel_w; }
  index_t nnz() const { return out_channels == 0 ? 0 : static_cast<index_t>(row_offsets[out_channels]); }
};

/// Pruned filters (out_c x in_c kh kw, row-major as nn::conv2d's weight) in CSR over the taps, with
/// 16-bit tap indices: in_c kh kw must not exceed 65536.
template <class Value>
class sparse_filters {
 public:
  sparse_filters() : row_offsets_(1, 0) {}

  /// The nonzero weights of w (NaN kept, +-0 dropped); throws config_error when a filter has more
  /// than 65536 taps or the shape does not match in_channels x kernel_h x kernel_w.
  static sparse_filters from_dense(matrix_ref<const Value> w, index_t in_channels, index_t kernel_h, index_t kernel_w) {
    constexpr const char* fn = "slimnet::kernels::sparse_filters::from_dense";
    if (in_channels <= 0 || kernel_h <= 0 || kernel_w <= 0 || w.cols != in_channels * kernel_h * kernel_w) {
      slimnet::detail::raise<shape_error>(fn, "{} x {} weights do not fit {} channels of {}x{} kernels", w.rows, w.cols, in_channels,
                                          kernel_h, kernel_w);
    }
    if (w.cols > 65536) slimnet::detail::raise<config_error>(fn, "{} taps per filter do not fit 16-bit tap indices", w.cols);
    sparse_filters f;
    f.out_ = w.rows;
    f.in_ = in_channels;
    f.kh_ = kernel_h;
    f.kw_ = kernel_w;
    for (index_t o = 0; o < w.rows; ++o) {
      for (index_t t = 0; t < w.cols; ++t) {
        const Value v = w(o, t);
        if (v != Value(0) || v != v) {
          f.taps_.push_back(static_cast<std::uint16_t>(t));
          f.values_.push_back(v);
        }
      }
      if (f.values_.size() >= std::numeric_limits<sparse_offset_t>::max()) {
        slimnet::detail::raise<shape_error>(fn, "more than {} nonzeros", std::numeric_limits<sparse_offset_t>::max() - 1);
      }
      f.row_offsets_.push_back(static_cast<sparse_offset_t>(f.values_.size()));
    }
    return f;
  }

  sparse_filters_ref<Value> ref() const { return {out_, in_, kh_, kw_, row_offsets_.data(), taps_.data(), values_.data()}; }
  index_t out_channels() const { return out_; }
  index_t in_channels() const { return in_; }
  index_t kernel_h() const { return kh_; }
  index_t kernel_w() const { return kw_; }
  index_t nnz() const { return static_cast<index_t>(values_.size()); }
  /// Bytes of the three arrays (the per-input-size offsets live in the workspace).
  std::size_t bytes() const {
    return row_offsets_.size() * sizeof(sparse_offset_t) + taps_.size() * sizeof(std::uint16_t) + values_.size() * sizeof(Value);
  }

 private:
  index_t out_ = 0, in_ = 0, kh_ = 1, kw_ = 1;
  std::vector<sparse_offset_t> row_offsets_;
  std::vector<std::uint16_t> taps_;
  std::vector<Value> values_;
};

/// Scratch of the direct kernel, kept by the caller between calls (no allocation once sized).
template <class Value>
struct sparse_conv_workspace {
  std::vector<Value> input;           ///< padded batch-innermost input xp(c, h, w, n)
  std::vector<Value> plane;           ///< one output channel before pooling
  std::vector<Value> pooled;          ///< one pooled channel, batch innermost (batch > 1)
  std::vector<std::int32_t> offsets;  ///< per nonzero: its strip offset(s) for the cached geometry
  std::vector<Value> shifted;         ///< batch 1: the input as phase / shift planes X(r, c, s, u, j)
  std::vector<unsigned char> used;    ///< batch 1: channels some filter reads (the others are not copied)
  index_t key_batch = -1, key_hp = -1, key_wp = -1, key_phase = -1;
  const void* key_filters = nullptr;

  /// Bytes held (offsets included: they scale with the nonzeros).
  std::size_t bytes() const {
    return (input.capacity() + plane.capacity() + pooled.capacity() + shifted.capacity()) * sizeof(Value) +
           offsets.capacity() * sizeof(std::int32_t) + used.capacity();
  }
};

namespace detail {

/// T in a non-deduced context (bias may be passed as nullptr).
template <class T>
struct same {
  using type = T;
};

inline void check_sparse_conv(const char* fn, index_t out_channels, index_t in_channels, index_t kernel_h, index_t kernel_w,
                              const conv_input& in, const conv_epilogue& ep) {
  if (in.batch < 0 || in.channels != in_channels || in.pad_h < 0 || in.pad_w < 0 || in.height + 2 * in.pad_h < kernel_h ||
      in.width + 2 * in.pad_w < kernel_w) {
    slimnet::detail::raise<shape_error>(fn, "input (N={}, C={}, H={}, W={}) with padding ({}, {}) does not fit {} filters of {}x{}x{}",
                                        in.batch, in.channels, in.height, in.width, in.pad_h, in.pad_w, out_channels, in_channels,
                                        kernel_h, kernel_w);
  }
  const index_t oh = in.height + 2 * in.pad_h - kernel_h + 1, ow = in.width + 2 * in.pad_w - kernel_w + 1;
  if (ep.pooled() && (ep.pool_stride <= 0 || ep.pool_kernel > oh || ep.pool_kernel > ow)) {
    slimnet::detail::raise<shape_error>(fn, "max-pool {} at stride {} does not fit a {}x{} output", ep.pool_kernel, ep.pool_stride, oh,
                                        ow);
  }
}

/// y[0:len] = init + sum_{p < nnz} val[p] * x[off[p] + 0:len], portable.
template <class Value>
void taps_row_portable(const Value* val, const std::int32_t* off, index_t nnz, const Value* x, Value* y, index_t len, Value init) {
  constexpr index_t strip = 64;
  Value acc[strip];
  for (index_t j0 = 0; j0 < len; j0 += strip) {
    const index_t width = std::min(strip, len - j0);
    for (index_t t = 0; t < width; ++t) acc[t] = init;
    for (index_t p = 0; p < nnz; ++p) {
      const Value v = val[p];
      const Value* xr = x + off[p] + j0;
      for (index_t t = 0; t < width; ++t) acc[t] += v * xr[t];
    }
    for (index_t t = 0; t < width; ++t) y[j0 + t] = acc[t];
  }
}

/// Geometry of the batch-1 layout: p pooling phases per axis (the pool kernel when it equals its
/// stride, 1 without pooling), shifts = kw + p - 1 column shifts, rows = ceil(Hp / p) rows per
/// phase, and the ph x pw output of one phase (the pooled plane when p > 1). Each (r, c, s) block
/// of rows x pw floats is followed by 16 floats of slack, so the fill may store whole vectors.
struct phased_geometry {
  index_t p = 1, shifts = 1, rows = 0, ph = 0, pw = 0;
  index_t block() const { return rows * pw + 16; }
  index_t size(index_t channels) const { return p * channels * shifts * block(); }
  /// Offset in X of (r, c, s, u, 0).
  index_t at(index_t channels, index_t r, index_t c, index_t s, index_t u) const { return ((r * channels + c) * shifts + s) * block() + u * pw; }
};

/// X(r, c, s, u, j) = xp(c, p u + r, p j + s) for the used channels, xp the padded input (c, Hp, Wp).
template <class Value>
void fill_phased_portable(const Value* xp, index_t channels, index_t hp, index_t wp, const phased_geometry& g, const unsigned char* used,
                          Value* x_out) {
  for (index_t c = 0; c < channels; ++c) {
    if (!used[c]) continue;
    for (index_t h = 0; h < hp; ++h) {
      const Value* row = xp + (c * hp + h) * wp;
      for (index_t s = 0; s < g.shifts; ++s) {
        Value* dst = x_out + g.at(channels, h % g.p, c, s, h / g.p);
        for (index_t j = 0; j < g.pw; ++j) dst[j] = row[g.p * j + s];
      }
    }
  }
}

/// y[0:len] = relu?(max over the subs phases a of (init + sum_{q < nnz} val[q] * x[off[q subs + a] + 0:len])),
/// portable. The max propagates NaN (as nn::max_pool2d); the ReLU maps NaN to 0 (as the reference).
template <class Value>
void phased_plane_portable(const Value* val, const std::int32_t* off, index_t nnz, index_t subs, const Value* x, Value* y, index_t len,
                           Value init, bool relu) {
  constexpr index_t strip = 64;
  Value acc[strip], best[strip];
  for (index_t j0 = 0; j0 < len; j0 += strip) {
    const index_t width = std::min(strip, len - j0);
    for (index_t a = 0; a < subs; ++a) {
      for (index_t t = 0; t < width; ++t) acc[t] = init;
      for (index_t q = 0; q < nnz; ++q) {
        const Value v = val[q];
        const Value* xr = x + off[q * subs + a] + j0;
        for (index_t t = 0; t < width; ++t) acc[t] += v * xr[t];
      }
      for (index_t t = 0; t < width; ++t)
        if (a == 0 || (best[t] == best[t] && !(acc[t] <= best[t]))) best[t] = acc[t];
    }
    for (index_t t = 0; t < width; ++t) y[j0 + t] = relu && !(best[t] >= Value(0)) ? Value(0) : best[t];
  }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// One strip of width <= 16 NV (the last vector masked): two accumulator sets take alternate nonzeros.
template <int NV>
SLIMNET_CONV_AVX512 inline void taps_strip(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                           index_t width, float init) {
  const unsigned tail = static_cast<unsigned>(width - (NV - 1) * 16);
  const __mmask16 last = static_cast<__mmask16>(tail >= 16 ? 0xffff : (1u << tail) - 1);
  __m512 acc[NV], acc2[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    acc[v] = _mm512_set1_ps(init);
    acc2[v] = _mm512_setzero_ps();
  }
  index_t p = 0;
  for (; p + 2 <= nnz; p += 2) {
    const __m512 w0 = _mm512_set1_ps(val[p]), w1 = _mm512_set1_ps(val[p + 1]);
    const float* x0 = x + off[p];
    const float* x1 = x + off[p + 1];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) {
      acc[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * v), acc[v]);
      acc2[v] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x1 + 16 * v), acc2[v]);
    }
    acc[NV - 1] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(last, x0 + 16 * (NV - 1)), acc[NV - 1]);
    acc2[NV - 1] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(last, x1 + 16 * (NV - 1)), acc2[NV - 1]);
  }
  if (p < nnz) {
    const __m512 w0 = _mm512_set1_ps(val[p]);
    const float* x0 = x + off[p];
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x0 + 16 * v), acc[v]);
    acc[NV - 1] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(last, x0 + 16 * (NV - 1)), acc[NV - 1]);
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(y + 16 * v, _mm512_add_ps(acc[v], acc2[v]));
  _mm512_mask_storeu_ps(y + 16 * (NV - 1), last, _mm512_add_ps(acc[NV - 1], acc2[NV - 1]));
}

SLIMNET_CONV_AVX512 inline void taps_row(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                         index_t len, float init) {
  index_t j0 = 0;
  for (; j0 + 64 <= len; j0 += 64) taps_strip<4>(val, off, nnz, x + j0, y + j0, 64, init);
  const index_t rest = len - j0;
  switch ((rest + 15) / 16) {
    case 0: break;
    case 1: taps_strip<1>(val, off, nnz, x + j0, y + j0, rest, init); break;
    case 2: taps_strip<2>(val, off, nnz, x + j0, y + j0, rest, init); break;
    case 3: taps_strip<3>(val, off, nnz, x + j0, y + j0, rest, init); break;
    default: taps_strip<4>(val, off, nnz, x + j0, y + j0, rest, init); break;
  }
}

/// out[0:n] = max(a[2t], a[2t+1]) of the pairs of a[0:2n] (2x2 pooling along a row, batch 1).
SLIMNET_CONV_AVX512 inline void pair_max(const float* a, float* out, index_t n) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (index_t t = 0; t < n; t += 16) {
    const index_t k = std::min<index_t>(16, n - t);  // outputs in this step, from 2k inputs
    const index_t lo = std::min<index_t>(16, 2 * k), hi = 2 * k - lo;
    const __m512 a0 = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << lo) - 1), a + 2 * t);
    const __m512 a1 = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << hi) - 1), a + 2 * t + 16);
    const __m512 m = _mm512_max_ps(_mm512_permutex2var_ps(a0, even, a1), _mm512_permutex2var_ps(a0, odd, a1));
    _mm512_mask_storeu_ps(out + t, static_cast<__mmask16>((1u << k) - 1), m);
  }
}

/// One chunk of V vectors (width floats, the last vector masked) of the batch-1 phased plane: SUBS
/// phases of V accumulators each (two sets alternating nonzeros when SUBS V < 8, to hide the FMA
/// latency), then the max over the phases, the ReLU and one store: the pooled output straight from
/// registers.
template <int SUBS, int V>
SLIMNET_CONV_AVX512 inline void phased_chunk(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                             index_t width, float init, bool relu) {
  constexpr int sets = SUBS * V >= 8 ? 1 : 2;
  const unsigned tail = static_cast<unsigned>(width - (V - 1) * 16);
  const __mmask16 last = static_cast<__mmask16>(tail >= 16 ? 0xffff : (1u << tail) - 1);
  __m512 acc[sets][SUBS][V];
#pragma GCC unroll 16
  for (int a = 0; a < SUBS; ++a)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      acc[0][a][v] = _mm512_set1_ps(init);
      if constexpr (sets == 2) acc[1][a][v] = _mm512_setzero_ps();
    }
  index_t q = 0;
  for (; q + sets <= nnz; q += sets) {
#pragma GCC unroll 2
    for (int st = 0; st < sets; ++st) {
      const __m512 w = _mm512_set1_ps(val[q + st]);
      const std::int32_t* o = off + (q + st) * SUBS;
#pragma GCC unroll 16
      for (int a = 0; a < SUBS; ++a) {
        const float* xs = x + o[a];
#pragma GCC unroll 4
        for (int v = 0; v < V - 1; ++v) acc[st][a][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xs + 16 * v), acc[st][a][v]);
        acc[st][a][V - 1] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(last, xs + 16 * (V - 1)), acc[st][a][V - 1]);
      }
    }
  }
  if (q < nnz) {  // sets == 2 and an odd count
    const __m512 w = _mm512_set1_ps(val[q]);
#pragma GCC unroll 16
    for (int a = 0; a < SUBS; ++a) {
      const float* xs = x + off[q * SUBS + a];
#pragma GCC unroll 4
      for (int v = 0; v < V - 1; ++v) acc[0][a][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xs + 16 * v), acc[0][a][v]);
      acc[0][a][V - 1] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(last, xs + 16 * (V - 1)), acc[0][a][V - 1]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    __m512 best = acc[0][0][v];
    if constexpr (sets == 2) best = _mm512_add_ps(best, acc[1][0][v]);
#pragma GCC unroll 16
    for (int a = 1; a < SUBS; ++a) {
      __m512 z = acc[0][a][v];
      if constexpr (sets == 2) z = _mm512_add_ps(z, acc[1][a][v]);
      // max(best, z) returns z when either is NaN; a NaN already held is put back.
      best = _mm512_mask_mov_ps(_mm512_max_ps(best, z), _mm512_cmp_ps_mask(best, best, _CMP_UNORD_Q), best);
    }
    if (relu) best = _mm512_max_ps(best, _mm512_setzero_ps());  // NaN -> 0
    if (v < V - 1) {
      _mm512_storeu_ps(y + 16 * v, best);
    } else {
      _mm512_mask_storeu_ps(y + 16 * v, last, best);
    }
  }
}

/// The batch-1 phased plane of len floats in chunks of at most 4 vectors, balanced (9 vectors: 3 x 3).
template <int SUBS>
SLIMNET_CONV_AVX512 inline void phased_plane(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                             index_t len, float init, bool relu) {
  const index_t nv = (len + 15) / 16, chunks = (nv + 3) / 4, per = (nv + chunks - 1) / chunks;
  for (index_t v0 = 0; v0 < nv; v0 += per) {
    const index_t n = std::min(per, nv - v0), width = std::min(16 * n, len - 16 * v0);
    const float* xs = x + 16 * v0;
    float* ys = y + 16 * v0;
    switch (n) {
      case 1: phased_chunk<SUBS, 1>(val, off, nnz, xs, ys, width, init, relu); break;
      case 2: phased_chunk<SUBS, 2>(val, off, nnz, xs, ys, width, init, relu); break;
      case 3: phased_chunk<SUBS, 3>(val, off, nnz, xs, ys, width, init, relu); break;
      default: phased_chunk<SUBS, 4>(val, off, nnz, xs, ys, width, init, relu); break;
    }
  }
}

/// fill_phased_portable for p = 1 (shifted copies, 16 floats per step) and for p = 2 with rows of
/// at most 32 floats and pw <= 16 (each row split into its even and odd columns by two permutes,
/// each shift one more permute and a store); other geometries take the portable fill. Stores are
/// whole vectors (masked stores are slow on Zen): what lands past a row's pw floats falls on the
/// next rows of its block, written later (rows go in increasing order), or on the block's slack.
SLIMNET_CONV_AVX512 inline bool fill_phased(const float* xp, index_t channels, index_t hp, index_t wp, const phased_geometry& g,
                                            const unsigned char* used, float* x_out) {
  if (g.p == 1) {
    for (index_t c = 0; c < channels; ++c) {
      if (!used[c]) continue;
      for (index_t h = 0; h < hp; ++h) {
        const float* row = xp + (c * hp + h) * wp;
        for (index_t s = 0; s < g.shifts; ++s) {
          float* dst = x_out + g.at(channels, 0, c, s, h);
          for (index_t j = 0; j < g.pw; j += 16) {
            const unsigned n = static_cast<unsigned>(std::min<index_t>(16, g.pw - j));
            const __mmask16 m = static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1);
            _mm512_storeu_ps(dst + j, _mm512_maskz_loadu_ps(m, row + s + j));
          }
        }
      }
    }
    return true;
  }
  if (g.p != 2 || wp > 32 || g.pw > 16) return false;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const unsigned lo_n = static_cast<unsigned>(std::min<index_t>(16, wp)), hi_n = static_cast<unsigned>(wp - lo_n);
  const __mmask16 lo_m = static_cast<__mmask16>(lo_n >= 16 ? 0xffff : (1u << lo_n) - 1), hi_m = static_cast<__mmask16>((1u << hi_n) - 1);
  for (index_t c = 0; c < channels; ++c) {
    if (!used[c]) continue;
    for (index_t h = 0; h < hp; ++h) {
      const float* row = xp + (c * hp + h) * wp;
      const __m512 lo = _mm512_maskz_loadu_ps(lo_m, row), hi = _mm512_maskz_loadu_ps(hi_m, row + 16);
      const __m512 parts[2] = {_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi)};
      float* dst = x_out + g.at(channels, h & 1, c, 0, h >> 1);
      const index_t step = g.block();  // from shift s to s + 1
      for (index_t s = 0; s < g.shifts; ++s) {
        // X(., s, ., j) = xp(2 j + s) = parts[s & 1][j + s / 2]
        const __m512 src = parts[s & 1];
        const __m512 v = s < 2 ? src : _mm512_permutexvar_ps(_mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(s >> 1))), src);
        _mm512_storeu_ps(dst + s * step, v);
      }
    }
  }
  return true;
}

}  // namespace avx512

namespace avx2 {

/// One strip of width <= 8 NV: the CSR strip kernel's accumulation with the taps' offsets as rows.
template <int NV>
SLIMNET_CONV_AVX2 inline void taps_strip(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                         index_t width, float init) {
  const __m256i last = first_lanes8(width - (NV - 1) * 8);
  __m256 acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_set1_ps(init);
  strip_accumulate<NV>(
      val, 0, static_cast<sparse_offset_t>(nnz), [x, off](sparse_offset_t p) { return x + off[p]; }, last, acc);
#pragma GCC unroll 8
  for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(y + 8 * v, acc[v]);
  _mm256_maskstore_ps(y + 8 * (NV - 1), last, acc[NV - 1]);
}

/// taps_row_portable in strips of 64 floats (8 vectors), the last strip narrower.
SLIMNET_CONV_AVX2 inline void taps_row(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                       index_t len, float init) {
  index_t j0 = 0;
  for (; j0 + 64 <= len; j0 += 64) taps_strip<8>(val, off, nnz, x + j0, y + j0, 64, init);
  switch ((len - j0 + 7) / 8) {
    case 0:
      break;
    case 1:
      taps_strip<1>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    case 2:
      taps_strip<2>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    case 3:
      taps_strip<3>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    case 4:
      taps_strip<4>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    case 5:
      taps_strip<5>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    case 6:
      taps_strip<6>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    case 7:
      taps_strip<7>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
    default:
      taps_strip<8>(val, off, nnz, x + j0, y + j0, len - j0, init);
      break;
  }
}

/// The AVX-512 phased_chunk on 8-float vectors: SUBS phases of V accumulators (SUBS V <= 12 of the
/// 16 ymm registers; two sets alternating nonzeros when SUBS V < 8), the max over the phases (a
/// NaN already held is kept, as nn::max_pool2d), the ReLU (NaN -> 0) and one store from registers.
template <int SUBS, int V>
SLIMNET_CONV_AVX2 inline void phased_chunk(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                           index_t width, float init, bool relu) {
  constexpr int sets = SUBS * V >= 8 ? 1 : 2;
  const __m256i last = first_lanes8(width - (V - 1) * 8);
  __m256 acc[sets][SUBS][V];
#pragma GCC unroll 16
  for (int a = 0; a < SUBS; ++a)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      acc[0][a][v] = _mm256_set1_ps(init);
      if constexpr (sets == 2) acc[1][a][v] = _mm256_setzero_ps();
    }
  index_t q = 0;
  for (; q + sets <= nnz; q += sets) {
#pragma GCC unroll 2
    for (int st = 0; st < sets; ++st) {
      const __m256 w = _mm256_set1_ps(val[q + st]);
      const std::int32_t* o = off + (q + st) * SUBS;
#pragma GCC unroll 16
      for (int a = 0; a < SUBS; ++a) {
        const float* xs = x + o[a];
#pragma GCC unroll 8
        for (int v = 0; v < V - 1; ++v) acc[st][a][v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs + 8 * v), acc[st][a][v]);
        acc[st][a][V - 1] = _mm256_fmadd_ps(w, _mm256_maskload_ps(xs + 8 * (V - 1), last), acc[st][a][V - 1]);
      }
    }
  }
  if (q < nnz) {  // sets == 2 and an odd count
    const __m256 w = _mm256_set1_ps(val[q]);
#pragma GCC unroll 16
    for (int a = 0; a < SUBS; ++a) {
      const float* xs = x + off[q * SUBS + a];
#pragma GCC unroll 8
      for (int v = 0; v < V - 1; ++v) acc[0][a][v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs + 8 * v), acc[0][a][v]);
      acc[0][a][V - 1] = _mm256_fmadd_ps(w, _mm256_maskload_ps(xs + 8 * (V - 1), last), acc[0][a][V - 1]);
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    __m256 best = acc[0][0][v];
    if constexpr (sets == 2) best = _mm256_add_ps(best, acc[1][0][v]);
#pragma GCC unroll 16
    for (int a = 1; a < SUBS; ++a) {
      __m256 z = acc[0][a][v];
      if constexpr (sets == 2) z = _mm256_add_ps(z, acc[1][a][v]);
      // max(best, z) returns z when either is NaN; a NaN already held is put back.
      best = _mm256_blendv_ps(_mm256_max_ps(best, z), best, _mm256_cmp_ps(best, best, _CMP_UNORD_Q));
    }
    if (relu) best = _mm256_max_ps(best, _mm256_setzero_ps());  // NaN -> 0
    if (v < V - 1) {
      _mm256_storeu_ps(y + 8 * v, best);
    } else {
      _mm256_maskstore_ps(y + 8 * v, last, best);
    }
  }
}

/// The batch-1 phased plane of len floats in balanced chunks: at most 3 vectors with 4 phases (12
/// accumulators), 8 with one.
template <int SUBS>
SLIMNET_CONV_AVX2 inline void phased_plane(const float* val, const std::int32_t* off, index_t nnz, const float* x, float* y,
                                           index_t len, float init, bool relu) {
  constexpr index_t most = SUBS == 1 ? 8 : 3;
  const index_t nv = (len + 7) / 8, chunks = (nv + most - 1) / most, per = (nv + chunks - 1) / chunks;
  for (index_t v0 = 0; v0 < nv; v0 += per) {
    const index_t n = std::min(per, nv - v0), width = std::min(8 * n, len - 8 * v0);
    const float* xs = x + 8 * v0;
    float* ys = y + 8 * v0;
    if constexpr (SUBS == 1) {
      switch (n) {
        case 1:
          phased_chunk<1, 1>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 2:
          phased_chunk<1, 2>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 3:
          phased_chunk<1, 3>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 4:
          phased_chunk<1, 4>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 5:
          phased_chunk<1, 5>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 6:
          phased_chunk<1, 6>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 7:
          phased_chunk<1, 7>(val, off, nnz, xs, ys, width, init, relu);
          break;
        default:
          phased_chunk<1, 8>(val, off, nnz, xs, ys, width, init, relu);
          break;
      }
    } else {
      switch (n) {
        case 1:
          phased_chunk<SUBS, 1>(val, off, nnz, xs, ys, width, init, relu);
          break;
        case 2:
          phased_chunk<SUBS, 2>(val, off, nnz, xs, ys, width, init, relu);
          break;
        default:
          phased_chunk<SUBS, 3>(val, off, nnz, xs, ys, width, init, relu);
          break;
      }
    }
  }
}

}  // namespace avx2
#endif

/// Tag of the direct sparse convolution's path counters.
struct sparse_conv_tag;

}  // namespace detail

/// The family float direct sparse convolutions take under the current active_isa(): avx512 (strips of
/// 16-float vectors, the phase planes, the shifted-input fill and the 2x2 pair max), avx2 (strips and
/// phase planes on 8-float vectors; the fill and pooling portable), else portable. Compiled with
/// function target attributes in every x86-64 build, whatever the program's -march.
inline isa sparse_conv_path() { return x86_simd_path(); }

/// How many sparse_conv2d calls each family computed since the program started (calls with an
/// empty batch or no filters compute nothing and are not counted).
inline std::uint64_t sparse_conv_path_calls(isa path) { return detail::path_calls<detail::sparse_conv_tag>(path); }

namespace detail {

template <class Value>
void taps_row(const Value* val, const std::int32_t* off, index_t nnz, const Value* x, Value* y, index_t len, Value init,
              isa path) {
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (path == isa::avx512) {
      avx512::taps_row(val, off, nnz, x, y, len, init);
      return;
    }
    if (path == isa::avx2) {
      avx2::taps_row(val, off, nnz, x, y, len, init);
      return;
    }
  }
#endif
  (void)path;
  taps_row_portable(val, off, nnz, x, y, len, init);
}

template <class Value>
inline Value max_of(Value a, Value b) {
  return b > a ? b : a;
}

/// Pools (and clamps) one channel's plane z(i, j, n) = plane[(i rs + j) n_count + n] (oh x ow valid)
/// into y[n * y_stride + pi * pw + pj].
template <class Value>
void store_channel(const Value* plane, index_t oh, index_t ow, index_t rs, index_t batch, const conv_epilogue& ep, Value* y,
                   index_t y_stride, std::vector<Value>& pooled, isa path) {
  const Value lo = ep.relu ? Value(0) : -std::numeric_limits<Value>::infinity();
  if (!ep.pooled()) {
    if (batch == 1) {
      for (index_t i = 0; i < oh; ++i) {
        const Value* src = plane + i * rs;
        Value* dst = y + i * ow;
        for (index_t j = 0; j < ow; ++j) dst[j] = max_of(lo, src[j]);
      }
      return;
    }
    // Batch innermost to NCHW in tiles of 16 positions: each image's row of the tile is one cache
    // line written whole (writing position by position would touch `batch` pages per position).
    for (index_t i = 0; i < oh; ++i)
      for (index_t j0 = 0; j0 < ow; j0 += 16) {
        const index_t j1 = std::min(ow, j0 + 16);
        for (index_t n = 0; n < batch; ++n) {
          Value* dst = y + n * y_stride + i * ow;
          for (index_t j = j0; j < j1; ++j) dst[j] = max_of(lo, plane[(i * rs + j) * batch + n]);
        }
      }
    return;
  }
  const index_t k = ep.pool_kernel, s = ep.pool_stride, ph = ep.out(oh), pw = ep.out(ow);
  if (batch == 1) {
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Value, float>) {
      if (k == 2 && s == 2 && path == isa::avx512) {
        // Row pairs first (ph x 2 pw, contiguous), then adjacent pairs over the whole plane at once:
        // the pooled plane is contiguous in y, so one pass of 16 outputs per step covers all rows.
        pooled.resize(static_cast<std::size_t>(2 * ph * pw));
        for (index_t pi = 0; pi < ph; ++pi) {
          const float* r0 = plane + 2 * pi * rs;
          const float* r1 = r0 + rs;
          float* v = pooled.data() + 2 * pi * pw;
          for (index_t j = 0; j < 2 * pw; ++j) v[j] = std::max(r0[j], r1[j]);
        }
        avx512::pair_max(pooled.data(), y, ph * pw);
        if (ep.relu)
          for (index_t q = 0; q < ph * pw; ++q) y[q] = std::max(0.0f, y[q]);
        return;
      }
    }
#endif
    (void)path;
    for (index_t pi = 0; pi < ph; ++pi)
      for (index_t pj = 0; pj < pw; ++pj) {
        Value m = lo;
        for (index_t a = 0; a < k; ++a)
          for (index_t b = 0; b < k; ++b) m = max_of(m, plane[(pi * s + a) * rs + pj * s + b]);
        y[pi * pw + pj] = m;
      }
    return;
  }
  // Batch innermost: the max of k x k contiguous batch vectors per output, then one transpose.
  pooled.resize(static_cast<std::size_t>(ph * pw * batch));
  for (index_t pi = 0; pi < ph; ++pi)
    for (index_t pj = 0; pj < pw; ++pj) {
      Value* dst = pooled.data() + (pi * pw + pj) * batch;
      for (index_t n = 0; n < batch; ++n) dst[n] = lo;
      for (index_t a = 0; a < k; ++a)
        for (index_t b = 0; b < k; ++b) {
          const Value* src = plane + ((pi * s + a) * rs + pj * s + b) * batch;
          for (index_t n = 0; n < batch; ++n) dst[n] = max_of(dst[n], src[n]);
        }
    }
  const index_t q = ph * pw;
  for (index_t n = 0; n < batch; ++n) {
    Value* dst = y + n * y_stride;
    for (index_t p = 0; p < q; ++p) dst[p] = pooled[static_cast<std::size_t>(p * batch + n)];
  }
}

/// store_channel with the family kernel_path leads to (what nn::compressed's im2col path calls).
template <class Value>
void store_channel(const Value* plane, index_t oh, index_t ow, index_t rs, index_t batch, const conv_epilogue& ep, Value* y,
                   index_t y_stride, std::vector<Value>& pooled, kernel_path path) {
  store_channel(plane, oh, ow, rs, batch, ep, y, y_stride, pooled,
                std::is_same_v<Value, float> && path != kernel_path::portable ? sparse_conv_path() : isa::portable);
}

}  // namespace detail

/// Output shape (N, O, PH, PW) of the fused convolution.
inline shape_t sparse_conv2d_output_shape(index_t out_channels, index_t kernel_h, index_t kernel_w, const conv_input& in,
                                          const conv_epilogue& ep) {
  const index_t oh = in.height + 2 * in.pad_h - kernel_h + 1, ow = in.width + 2 * in.pad_w - kernel_w + 1;
  return {in.batch, out_channels, ep.out(oh), ep.out(ow)};
}

/// The definition: y (N, O, PH, PW) from x (N, C, H, W) as in the header comment, accumulated in
/// double over the stored taps in order; bias may be null.
template <class Value>
void sparse_conv2d_reference(const sparse_filters_ref<Value>& f, const Value* x, const conv_input& in,
                             const typename detail::same<Value>::type* bias, const conv_epilogue& ep, Value* y) {
  detail::check_sparse_conv("slimnet::kernels::sparse_conv2d_reference", f.out_channels, f.in_channels, f.kernel_h, f.kernel_w, in, ep);
  const index_t oh = in.height + 2 * in.pad_h - f.kernel_h + 1, ow = in.width + 2 * in.pad_w - f.kernel_w + 1;
  const index_t taps = f.kernel_h * f.kernel_w;
  std::vector<Value> z(static_cast<std::size_t>(oh * ow));
  const index_t ph = ep.out(oh), pw = ep.out(ow);
  for (index_t n = 0; n < in.batch; ++n) {
    for (index_t o = 0; o < f.out_channels; ++o) {
      for (index_t i = 0; i < oh; ++i)
        for (index_t j = 0; j < ow; ++j) {
          double s = bias ? static_cast<double>(bias[o]) : 0.0;
          for (sparse_offset_t p = f.row_offsets[o]; p < f.row_offsets[o + 1]; ++p) {
            const index_t t = f.taps[p], c = t / taps, ki = t % taps / f.kernel_w, kj = t % f.kernel_w;
            const index_t ih = i + ki - in.pad_h, iw = j + kj - in.pad_w;
            if (ih < 0 || ih >= in.height || iw < 0 || iw >= in.width) continue;
            s += static_cast<double>(f.values[p]) * static_cast<double>(x[((n * in.channels + c) * in.height + ih) * in.width + iw]);
          }
          Value v = static_cast<Value>(s);
          if (ep.relu && !(v >= Value(0))) v = Value(0);
          z[static_cast<std::size_t>(i * ow + j)] = v;
        }
      Value* yo = y + (n * f.out_channels + o) * ph * pw;
      if (!ep.pooled()) {
        std::copy(z.begin(), z.end(), yo);
        continue;
      }
      for (index_t pi = 0; pi < ph; ++pi)
        for (index_t pj = 0; pj < pw; ++pj) {
          Value m = z[static_cast<std::size_t>(pi * ep.pool_stride * ow + pj * ep.pool_stride)];
          for (index_t a = 0; a < ep.pool_kernel; ++a)
            for (index_t b = 0; b < ep.pool_kernel; ++b) m = std::max(m, z[static_cast<std::size_t>((pi * ep.pool_stride + a) * ow + pj * ep.pool_stride + b)]);
          yo[pi * pw + pj] = m;
        }
    }
  }
}

namespace detail {

/// One image (batch 1), pooling absent or with its kernel equal to its stride (p phases per axis).
/// Output (pi, pj) of phase (a, b) is the conv output (p pi + a, p pj + b), so
///   z_ab(pi, pj) = bias + sum_taps w * xp(c, p pi + a + ki, p pj + b + kj)
///                = bias + sum_taps w * X(r, c, s, u0 + pi, pj),
///   r = (a + ki) mod p, u0 = (a + ki) div p, s = b + kj,   X(r, c, s, u, j) = xp(c, p u + r, p j + s)
/// and since X's rows have exactly pw columns, the whole ph x pw phase plane is ONE contiguous strip
/// of X at the offset of (r, c, s, u0, 0): no wasted columns (the "wide" plane computes Wp - OW
/// extra per row), and the pooled plane is the max of the p^2 phase planes, taken in registers and
/// stored straight into y (no unpooled plane, no pooling pass). X holds kw + p - 1 column-shifted
/// copies of the input (built per call, channels that no filter reads skipped); the p^2 offsets of
/// each nonzero are computed once per input size.
template <class Value>
void sparse_conv2d_single(const sparse_filters_ref<Value>& f, const Value* x, const conv_input& in, const Value* bias,
                          const conv_epilogue& ep, Value* y, sparse_conv_workspace<Value>& ws, isa path,
                          const phased_geometry& g) {
  (void)path;
  const index_t c_n = in.channels, hp = in.height + 2 * in.pad_h, wp = in.width + 2 * in.pad_w, subs = g.p * g.p;
  const Value* xp = x;
  if (in.pad_h > 0 || in.pad_w > 0) {
    const auto in_size = static_cast<std::size_t>(c_n * hp * wp);
    if (ws.input.size() != in_size) ws.input.resize(in_size);
    std::fill(ws.input.begin(), ws.input.end(), Value(0));
    for (index_t c = 0; c < c_n; ++c)
      for (index_t ih = 0; ih < in.height; ++ih) {
        const Value* src = x + (c * in.height + ih) * in.width;
        std::copy(src, src + in.width, ws.input.data() + (c * hp + ih + in.pad_h) * wp + in.pad_w);
      }
    xp = ws.input.data();
  }
  if (ws.key_batch != 1 || ws.key_hp != hp || ws.key_wp != wp || ws.key_filters != static_cast<const void*>(f.values) ||
      ws.key_phase != g.p || ws.offsets.size() != static_cast<std::size_t>(f.nnz() * subs)) {
    ws.offsets.resize(static_cast<std::size_t>(f.nnz() * subs));
    ws.used.assign(static_cast<std::size_t>(c_n), 0);
    const index_t taps = f.kernel_h * f.kernel_w;
    for (index_t q = 0; q < f.nnz(); ++q) {
      const index_t t = f.taps[q], c = t / taps, ki = t % taps / f.kernel_w, kj = t % f.kernel_w;
      ws.used[static_cast<std::size_t>(c)] = 1;
      for (index_t a = 0; a < g.p; ++a)
        for (index_t b = 0; b < g.p; ++b)
          ws.offsets[static_cast<std::size_t>(q * subs + a * g.p + b)] =
              static_cast<std::int32_t>(g.at(c_n, (a + ki) % g.p, c, b + kj, (a + ki) / g.p));
    }
    ws.key_batch = 1, ws.key_hp = hp, ws.key_wp = wp, ws.key_filters = f.values, ws.key_phase = g.p;
  }
  if (ws.shifted.size() != static_cast<std::size_t>(g.size(c_n))) ws.shifted.resize(static_cast<std::size_t>(g.size(c_n)));
  bool filled = false;
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Value, float>) {
    if (path == isa::avx512) filled = avx512::fill_phased(xp, c_n, hp, wp, g, ws.used.data(), ws.shifted.data());
  }
#endif
  if (!filled) fill_phased_portable(xp, c_n, hp, wp, g, ws.used.data(), ws.shifted.data());
  const index_t len = g.ph * g.pw;
  for (index_t o = 0; o < f.out_channels; ++o) {
    const sparse_offset_t b = f.row_offsets[o], e = f.row_offsets[o + 1];
    const Value init = bias ? bias[o] : Value(0);
    const auto nnz = static_cast<index_t>(e - b);
    const std::int32_t* off = ws.offsets.data() + static_cast<std::size_t>(b) * static_cast<std::size_t>(subs);
    Value* yo = y + o * len;
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Value, float>) {
      if (path == isa::avx512 && (subs == 1 || subs == 4)) {
        if (subs == 1) {
          avx512::phased_plane<1>(f.values + b, off, nnz, ws.shifted.data(), yo, len, init, ep.relu);
        } else {
          avx512::phased_plane<4>(f.values + b, off, nnz, ws.shifted.data(), yo, len, init, ep.relu);
        }
        continue;
      }
      if (path == isa::avx2 && (subs == 1 || subs == 4)) {
        if (subs == 1) {
          avx2::phased_plane<1>(f.values + b, off, nnz, ws.shifted.data(), yo, len, init, ep.relu);
        } else {
          avx2::phased_plane<4>(f.values + b, off, nnz, ws.shifted.data(), yo, len, init, ep.relu);
        }
        continue;
      }
    }
#endif
    phased_plane_portable(f.values + b, off, nnz, subs, ws.shifted.data(), yo, len, init, ep.relu);
  }
}

}  // namespace detail

/// How a batch of several images runs (the result is the same; the speed is not):
///   batch_innermost  one pass over the batch, images interleaved in the vectors (xp(c, h, w, n)):
///                    every nonzero streams OW N contiguous floats, but a filter sweeps the whole
///                    batch's input (C Hp Wp N floats: 737 KB for LeNet-5's conv2 at batch 64, from
///                    L2) for each of its nonzeros, and the input and the pooled output are transposed;
///   image_at_a_time  the batch-1 kernel once per image (the phase planes when the pool kernel equals
///                    its stride): an image's shifted input stays in L1 across all filters, nothing
///                    is transposed, but short planes fill vectors less well.
/// Which wins depends on the layer, its density and the machine: nn::compressed measures both on the
/// layer (compressed_conv2d::choose_batch_layout) rather than assuming one.
enum class conv_batch_layout { batch_innermost, image_at_a_time };

namespace detail {

/// sparse_conv2d on one layout: the phase planes for one image when the pool allows, else the
/// batch-innermost pass; SIMD on `path` (sparse_conv_call_path's choice).
template <class Value>
void sparse_conv2d_run(const sparse_filters_ref<Value>& f, const Value* x, const conv_input& in, const Value* bias,
                       const conv_epilogue& ep, Value* y, sparse_conv_workspace<Value>& ws, isa path) {
  const index_t batch = in.batch, c_n = in.channels, h = in.height, w = in.width;
  const index_t hp = h + 2 * in.pad_h, wp = w + 2 * in.pad_w, oh = hp - f.kernel_h + 1, ow = wp - f.kernel_w + 1;
  const index_t ph = ep.out(oh), pw = ep.out(ow);
  if (batch == 1 && (!ep.pooled() || ep.pool_kernel == ep.pool_stride)) {
    const index_t p = ep.pooled() ? ep.pool_kernel : 1;
    const phased_geometry g{p, f.kernel_w + p - 1, (hp + p - 1) / p, ph, pw};
    if (g.size(c_n) < std::numeric_limits<std::int32_t>::max()) {
      sparse_conv2d_single(f, x, in, bias, ep, y, ws, path, g);
      return;
    }
  }
  // 1. xp(c, h, w, n): zero-padded, batch innermost.
  const auto in_size = static_cast<std::size_t>(c_n * hp * wp * batch);
  if (ws.input.size() != in_size) ws.input.assign(in_size, Value(0));
  if (in.pad_h > 0 || in.pad_w > 0) std::fill(ws.input.begin(), ws.input.end(), Value(0));
  for (index_t c = 0; c < c_n; ++c) {
    for (index_t ih = 0; ih < h; ++ih) {
      Value* dst = ws.input.data() + ((c * hp + ih + in.pad_h) * wp + in.pad_w) * batch;
      const Value* src = x + (c * h + ih) * w;
      if (batch == 1) {
        std::copy(src, src + w, dst);
        continue;
      }
      const index_t image = c_n * h * w;
      for (index_t n = 0; n < batch; ++n)
        for (index_t iw = 0; iw < w; ++iw) dst[iw * batch + n] = src[n * image + iw];
    }
  }
  // 2. Offsets of the nonzeros for this geometry.
  if (ws.key_batch != batch || ws.key_hp != hp || ws.key_wp != wp || ws.key_filters != static_cast<const void*>(f.values) ||
      ws.key_phase != 0 || ws.offsets.size() != static_cast<std::size_t>(f.nnz())) {
    ws.offsets.resize(static_cast<std::size_t>(f.nnz()));
    const index_t taps = f.kernel_h * f.kernel_w;
    for (index_t p = 0; p < f.nnz(); ++p) {
      const index_t t = f.taps[p], c = t / taps, ki = t % taps / f.kernel_w, kj = t % f.kernel_w;
      ws.offsets[static_cast<std::size_t>(p)] = static_cast<std::int32_t>(((c * hp + ki) * wp + kj) * batch);
    }
    ws.key_batch = batch, ws.key_hp = hp, ws.key_wp = wp, ws.key_filters = f.values, ws.key_phase = 0;
  }
  // 3. Wide plane (one strip per channel) or row by row, whichever issues fewer vectors.
  const index_t row_vectors = oh * ((ow * batch + 15) / 16), wide_len = ((oh - 1) * wp + ow) * batch;
  const bool wide = (wide_len + 15) / 16 < row_vectors;
  const index_t rs = wide ? wp : ow;
  ws.plane.resize(static_cast<std::size_t>(oh * rs * batch));
  for (index_t o = 0; o < f.out_channels; ++o) {
    const sparse_offset_t b = f.row_offsets[o], e = f.row_offsets[o + 1];
    const Value init = bias ? bias[o] : Value(0);
    const Value* val = f.values + b;
    const std::int32_t* off = ws.offsets.data() + b;
    if (wide) {
      taps_row(val, off, static_cast<index_t>(e - b), ws.input.data(), ws.plane.data(), wide_len, init, path);
    } else {
      for (index_t i = 0; i < oh; ++i) {
        taps_row(val, off, static_cast<index_t>(e - b), ws.input.data() + i * wp * batch, ws.plane.data() + i * ow * batch,
                 ow * batch, init, path);
      }
    }
    store_channel(ws.plane.data(), oh, ow, rs, batch, ep, y + o * ph * pw, f.out_channels * ph * pw, ws.pooled, path);
  }
}

}  // namespace detail

/// The direct kernel: same result as the reference within float rounding (products summed in
/// another order). `ws` keeps its buffers between calls; threads are not used (one image plane per
/// filter is too little work to split). `layout` says how a batch of several images runs.
template <class Value>
void sparse_conv2d(const sparse_filters_ref<Value>& f, const Value* x, const conv_input& in,
                   const typename detail::same<Value>::type* bias, const conv_epilogue& ep, Value* y,
                   sparse_conv_workspace<Value>& ws, kernel_path path = kernel_path::automatic,
                   conv_batch_layout layout = conv_batch_layout::batch_innermost) {
  detail::check_sparse_conv("slimnet::kernels::sparse_conv2d", f.out_channels, f.in_channels, f.kernel_h, f.kernel_w, in, ep);
  if (in.batch == 0 || f.out_channels == 0) return;
  const isa simd = detail::count_path<detail::sparse_conv_tag>(
      std::is_same_v<Value, float> && path != kernel_path::portable ? sparse_conv_path() : isa::portable);
  if (in.batch > 1 && layout == conv_batch_layout::image_at_a_time) {
    conv_input one = in;
    one.batch = 1;
    const index_t in_size = in.channels * in.height * in.width;
    const shape_t out = sparse_conv2d_output_shape(f.out_channels, f.kernel_h, f.kernel_w, one, ep);
    const index_t out_size = out[1] * out[2] * out[3];
    for (index_t n = 0; n < in.batch; ++n)
      detail::sparse_conv2d_run(f, x + n * in_size, one, bias, ep, y + n * out_size, ws, simd);
    return;
  }
  detail::sparse_conv2d_run(f, x, in, bias, ep, y, ws, simd);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
