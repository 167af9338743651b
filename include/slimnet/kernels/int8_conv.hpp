// Direct int8 convolution (stride 1, zero padding) with bias, ReLU and max-pooling fused: what an
// int8 Conv2d runs instead of float im2row + per-position quantization + a GEMM with K = 25.
//
// Per image n the input is quantized once with one step t_n (per-image dynamic max|x| / 127, or a
// fixed step), codes p = round(x / t_n) in [-127, 127]; with int8 filter codes q and per-output
// scales s_o,
//   y[n, o, i, j] = t_n s_o (sum_{c, ki, kj} p[n, c, i + ki - ph, j + kj - pw] q[o, c, ki, kj]) + b_o
// then ReLU / max-pool. Max-pooling is taken on the int32 sums: t_n s_o > 0 and
// a -> t s a + b is non-decreasing in float too, so pooling first gives the same floats.
//
// No im2col. vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes per int32 lane, so the input
// is stored as 32-bit words of 4 codes along one "group" axis, at every position of the padded
// plane (row stride Wp = W + 2 pw):
//   by channel (in_c >= 4):  word(cg, i) = codes of channels 4cg..4cg+3 at plane position i
//   by column  (in_c small): word(c, i)  = codes of channel c at positions i..i+3 (4 taps of a row)
// A filter group g (4 weights packed in one word, broadcast) then meets the 16 words at positions
// p .. p+15 + off(g) of a contiguous 64-byte load, where the output position is p = oh Wp + ow
// ("full-width" positions: ow in [Wp - kw + 1, Wp) are computed and dropped, which is what makes
// the addresses linear in p). by channel: off = cg S + ki Wp + kj; by column: off = c S + ki Wp + 4 kjg
// (taps kj >= kw carry weight 0). Each register tile holds R output channels x V vectors of 16
// positions (R V <= 24 int32 accumulators); per group it loads V vectors and broadcasts R words.
// Signed codes: vpdpbusd wants the activation unsigned, so codes are stored as p + 128 (padding:
// 128, the zero point) and 128 sum q[o, .] is subtracted: sum (p + 128) q = sum p q + 128 sum q.
// Sums are exact in int32 while 255 * 127 * 4 * groups < 2^31 (groups < 16,000: checked).
//
// A NaN or Inf anywhere in an image gives that image a NaN step: all its outputs are NaN (the
// float layer's would be NaN or Inf at the positions that read it; no NaN-to-int cast happens).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/int8_gemm.hpp"
#include "slimnet/kernels/intrinsics.hpp"
#include "slimnet/kernels/sparse_conv.hpp"

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// Filters (out_c x in_c kh kw int8 codes in [-127, 127], row-major as nn::conv2d's weight) packed
/// for int8_conv2d: words of 4 codes along the group axis, in blocks of R output channels:
/// word (block b, group g, r) at [(b groups + g) R + r], zero for padded channels / taps.
class int8_conv_filters {
 public:
  int8_conv_filters() = default;
  int8_conv_filters(const std::int8_t* codes, index_t out_c, index_t in_c, index_t kh, index_t kw)
      : out_(out_c), in_(in_c), kh_(kh), kw_(kw) {
    const char* fn = "slimnet::kernels::int8_conv_filters";
    if (out_c <= 0 || in_c <= 0 || kh <= 0 || kw <= 0) {
      slimnet::detail::raise<shape_error>(fn, "filters {} x {} x {} x {} must have positive sizes", out_c, in_c, kh, kw);
    }
    const index_t by_channel = (in_c + 3) / 4 * kh * kw, by_column = in_c * kh * ((kw + 3) / 4);
    by_channel_ = by_channel <= by_column;
    groups_ = std::min(by_channel, by_column);
    if (groups_ >= 16000) {
      slimnet::detail::raise<shape_error>(fn, "{} groups of 4 taps: int32 sums could overflow (at most 15,999)", groups_);
    }
    // R in 1..6 with the fewest padded channels, the larger on ties (fewer broadcasts per load).
    block_ = 6;
    for (index_t r = 6; r >= 1; --r)
      if ((out_c + r - 1) / r * r < (out_c + block_ - 1) / block_ * block_) block_ = r;
    blocks_ = (out_c + block_ - 1) / block_;
    words_.assign(static_cast<std::size_t>(blocks_ * groups_ * block_), 0u);
    rowsum_.assign(static_cast<std::size_t>(out_c), 0);
    for (index_t o = 0; o < out_c; ++o) {
      for (index_t c = 0; c < in_c; ++c)
        for (index_t ki = 0; ki < kh; ++ki)
          for (index_t kj = 0; kj < kw; ++kj) {
            const std::int8_t v = codes[((o * in_c + c) * kh + ki) * kw + kj];
            rowsum_[static_cast<std::size_t>(o)] += v;
            index_t g = 0, lane = 0;
            locate(c, ki, kj, g, lane);
            std::uint32_t& w = words_[static_cast<std::size_t>(((o / block_) * groups_ + g) * block_ + o % block_)];
            w |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(v)) << (8 * lane);
          }
    }
  }

  index_t out_channels() const { return out_; }
  index_t in_channels() const { return in_; }
  index_t kernel_h() const { return kh_; }
  index_t kernel_w() const { return kw_; }
  bool by_channel() const { return by_channel_; }  ///< group axis: 4 channels (true) or 4 taps of a row
  index_t groups() const { return groups_; }
  index_t block() const { return block_; }  ///< R, output channels per register tile
  index_t blocks() const { return blocks_; }
  const std::uint32_t* block_words(index_t b) const { return words_.data() + b * groups_ * block_; }
  const std::int32_t* rowsum() const { return rowsum_.data(); }  ///< sum of each filter's codes
  std::size_t bytes() const { return words_.size() * sizeof(std::uint32_t) + rowsum_.size() * sizeof(std::int32_t); }

  /// Code of weight (o, c, ki, kj).
  std::int8_t at(index_t o, index_t c, index_t ki, index_t kj) const {
    index_t g = 0, lane = 0;
    locate(c, ki, kj, g, lane);
    const std::uint32_t w = words_[static_cast<std::size_t>(((o / block_) * groups_ + g) * block_ + o % block_)];
    return static_cast<std::int8_t>(static_cast<std::uint8_t>(w >> (8 * lane)));
  }

  /// Word offset of group g from the output position in the interleaved input (plane stride S, row stride Wp).
  index_t offset(index_t g, index_t plane_stride, index_t wp) const {
    if (by_channel_) {
      const index_t kj = g % kw_, ki = (g / kw_) % kh_, cg = g / (kw_ * kh_);
      return cg * plane_stride + ki * wp + kj;
    }
    const index_t kwg = (kw_ + 3) / 4;
    const index_t kjg = g % kwg, ki = (g / kwg) % kh_, c = g / (kwg * kh_);
    return c * plane_stride + ki * wp + 4 * kjg;
  }

 private:
  void locate(index_t c, index_t ki, index_t kj, index_t& g, index_t& lane) const {
    if (by_channel_) {
      g = ((c / 4) * kh_ + ki) * kw_ + kj;
      lane = c % 4;
    } else {
      g = (c * kh_ + ki) * ((kw_ + 3) / 4) + kj / 4;
      lane = kj % 4;
    }
  }

  index_t out_ = 0, in_ = 0, kh_ = 0, kw_ = 0, groups_ = 0, block_ = 1, blocks_ = 0;
  bool by_channel_ = true;
  std::vector<std::uint32_t> words_;
  std::vector<std::int32_t> rowsum_;
};

/// Buffers of int8_conv2d, reused across calls (no allocation once the input size is seen).
struct int8_conv_workspace {
  index_t h = -1, w = -1, pad_h = -1, pad_w = -1, channels = -1, kernel_h = -1, kernel_w = -1, groups = -1, block = -1;
  bool by_channel = false;
  index_t wp = 0, positions = 0, plane_stride = 0;  // Wp, full-width positions rounded up to 16, S
  std::vector<std::uint8_t> codes;   // planes of (p + 128), stride S + 4 bytes; padding 128
  std::vector<std::uint32_t> words;  // interleaved words, planes of S
  std::vector<index_t> offsets;      // offset(g)
  std::vector<std::int32_t> sums;    // R x positions int32 of one block
};

namespace detail {

/// Shape of an int8 convolution's output, checked.
inline void int8_conv_check(const char* fn, const int8_conv_filters& f, const conv_input& in, const conv_epilogue& ep) {
  check_sparse_conv(fn, f.out_channels(), f.in_channels(), f.kernel_h(), f.kernel_w(), in, ep);
}

/// (Re)lays out the workspace for this input size and filter geometry.
inline void int8_conv_prepare(const int8_conv_filters& f, const conv_input& in, int8_conv_workspace& ws) {
  if (ws.h == in.height && ws.w == in.width && ws.pad_h == in.pad_h && ws.pad_w == in.pad_w && ws.channels == in.channels &&
      ws.kernel_h == f.kernel_h() && ws.kernel_w == f.kernel_w() && ws.groups == f.groups() && ws.block == f.block() &&
      ws.by_channel == f.by_channel())
    return;
  const index_t hp = in.height + 2 * in.pad_h, wp = in.width + 2 * in.pad_w, oh = hp - f.kernel_h() + 1;
  ws.wp = wp;
  ws.positions = (oh * wp + 15) / 16 * 16;
  // Reads reach position (positions - 1) + (kh - 1) Wp + kw - 1 (+3 by column): S covers them.
  ws.plane_stride = ws.positions + (f.kernel_h() - 1) * wp + f.kernel_w() + 4;
  const index_t planes = f.by_channel() ? (in.channels + 3) / 4 * 4 : in.channels;
  ws.codes.assign(static_cast<std::size_t>(planes * (ws.plane_stride + 4)), std::uint8_t{128});
  ws.words.assign(static_cast<std::size_t>((f.by_channel() ? planes / 4 : planes) * ws.plane_stride), 0u);
  ws.offsets.resize(static_cast<std::size_t>(f.groups()));
  for (index_t g = 0; g < f.groups(); ++g) ws.offsets[static_cast<std::size_t>(g)] = f.offset(g, ws.plane_stride, wp);
  ws.sums.assign(static_cast<std::size_t>(f.block() * ws.positions), 0);
  ws.h = in.height;
  ws.w = in.width;
  ws.pad_h = in.pad_h;
  ws.pad_w = in.pad_w;
  ws.channels = in.channels;
  ws.kernel_h = f.kernel_h();
  ws.kernel_w = f.kernel_w();
  ws.groups = f.groups();
  ws.block = f.block();
  ws.by_channel = f.by_channel();
}

/// The image's step: the fixed one, or max|x| / 127 (1 for an all-zero image); NaN when the image
/// holds NaN or Inf. Shared by every path so that they quantize identically.
#if defined(SLIMNET_DISPATCH_X86)
#define SLIMNET_INT8CONV_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_INT8CONV_VNNI SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
namespace avx512 {

/// max |x[0, i)| and whether all are finite, for i = size - size % 16 (returned).
SLIMNET_INT8CONV_AVX512 inline index_t image_abs_max(const float* x, index_t size, float& m, bool& finite) {
  index_t i = 0;
  // max is exact, so this is the scalar loop's result; fpclass 0x99: QNaN, SNaN, +Inf, -Inf.
  __m512 vm = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (; i + 16 <= size; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);
    vm = _mm512_max_ps(vm, _mm512_abs_ps(v));
  }
  finite = bad == 0;
  m = _mm512_reduce_max_ps(vm);
  return i;
}

/// int8_codes' first n - n % 16 codes (returned).
SLIMNET_INT8CONV_AVX512 inline index_t codes16(const float* x, index_t n, float inv, std::int8_t* q) {
  index_t i = 0;
  const __m512 vi = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vi), lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
  }
  return i;
}

}  // namespace avx512
#endif

template <class Scalar>
float int8_image_step(const Scalar* x, index_t size, double fixed_step) {
  Scalar m = 0;
  bool finite = true;
  index_t i = 0;
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Scalar, float>) {
    if (active_isa() == isa::avx512) i = avx512::image_abs_max(x, size, m, finite);
  }
#endif
  for (; i < size; ++i) {
    const Scalar a = std::abs(x[i]);
    finite = finite && std::isfinite(a);
    m = std::max(m, a);
  }
  if (!finite) return std::numeric_limits<float>::quiet_NaN();
  if (fixed_step > 0) return static_cast<float>(fixed_step);
  return m > 0 ? static_cast<float>(static_cast<double>(m) / 127.0) : 1.0f;
}

/// q[i] = round(x[i] / step) clamped to [-127, 127] (0 for every value when step is NaN), as
/// int8 codes: a quantized Linear's rows. The AVX-512 path gives the same codes.
template <class Scalar>
void int8_codes(const Scalar* x, index_t n, float step, std::int8_t* q, kernel_path path = kernel_path::automatic) {
  const Scalar inv = std::isnan(step) ? Scalar(0) : static_cast<Scalar>(1.0 / static_cast<double>(step));
  index_t i = 0;
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Scalar, float>) {
    if (path != kernel_path::portable && !std::isnan(step) && active_isa() == isa::avx512) i = avx512::codes16(x, n, inv, q);
  }
#endif
  (void)path;
  for (; i < n; ++i) {
    const Scalar v = std::nearbyint(x[i] * inv);
    q[i] = std::isnan(v) ? std::int8_t{0} : static_cast<std::int8_t>(std::clamp(v, Scalar(-127), Scalar(127)));
  }
}

/// Codes of one image into the padded planes (+128), then the interleaved words. Portable.
template <class Scalar>
void int8_conv_pack_portable(const int8_conv_filters& f, const Scalar* x, const conv_input& in, float step, int8_conv_workspace& ws) {
  const index_t sb = ws.plane_stride + 4, hw = in.height * in.width;
  const Scalar inv = std::isnan(step) ? Scalar(0) : static_cast<Scalar>(1.0 / static_cast<double>(step));
  for (index_t c = 0; c < in.channels; ++c)
    for (index_t i = 0; i < in.height; ++i) {
      std::uint8_t* dst = ws.codes.data() + c * sb + (i + in.pad_h) * ws.wp + in.pad_w;
      const Scalar* src = x + c * hw + i * in.width;
      for (index_t j = 0; j < in.width; ++j) {
        const Scalar v = std::nearbyint(src[j] * inv);
        const Scalar q = std::isnan(v) ? Scalar(0) : std::clamp(v, Scalar(-127), Scalar(127));
        dst[j] = static_cast<std::uint8_t>(static_cast<int>(q) + 128);
      }
    }
  const index_t s = ws.plane_stride;
  if (f.by_channel()) {
    for (index_t cg = 0; cg < static_cast<index_t>(ws.codes.size()) / (4 * sb); ++cg) {
      const std::uint8_t* p = ws.codes.data() + 4 * cg * sb;
      std::uint32_t* w = ws.words.data() + cg * s;
      for (index_t i = 0; i < s; ++i)
        w[i] = std::uint32_t{p[i]} | std::uint32_t{p[sb + i]} << 8 | std::uint32_t{p[2 * sb + i]} << 16 | std::uint32_t{p[3 * sb + i]} << 24;
    }
  } else {
    for (index_t c = 0; c < in.channels; ++c) {
      const std::uint8_t* p = ws.codes.data() + c * sb;
      std::uint32_t* w = ws.words.data() + c * s;
      for (index_t i = 0; i < s; ++i)
        w[i] = std::uint32_t{p[i]} | std::uint32_t{p[i + 1]} << 8 | std::uint32_t{p[i + 2]} << 16 | std::uint32_t{p[i + 3]} << 24;
    }
  }
}

/// sums (R x positions) of block b: sum over groups of (p + 128) q per lane. Portable.
inline void int8_conv_block_portable(const int8_conv_filters& f, index_t b, const int8_conv_workspace& ws, std::int32_t* sums) {
  const index_t r_n = f.block(), groups = f.groups();
  const std::uint32_t* bw = f.block_words(b);
  for (index_t r = 0; r < r_n; ++r) {
    std::int32_t* out = sums + r * ws.positions;
    std::fill(out, out + ws.positions, 0);
    for (index_t g = 0; g < groups; ++g) {
      const std::uint32_t wq = bw[g * r_n + r];
      if (wq == 0) continue;
      const std::int32_t q0 = static_cast<std::int8_t>(wq), q1 = static_cast<std::int8_t>(wq >> 8);
      const std::int32_t q2 = static_cast<std::int8_t>(wq >> 16), q3 = static_cast<std::int8_t>(wq >> 24);
      const std::uint32_t* a = ws.words.data() + ws.offsets[static_cast<std::size_t>(g)];
      for (index_t p = 0; p < ws.positions; ++p) {
        const std::uint32_t v = a[p];
        out[p] += static_cast<std::int32_t>(v & 0xff) * q0 + static_cast<std::int32_t>((v >> 8) & 0xff) * q1 +
                  static_cast<std::int32_t>((v >> 16) & 0xff) * q2 + static_cast<std::int32_t>(v >> 24) * q3;
      }
    }
  }
}

/// One channel's epilogue: pool the int32 plane (rows of stride Wp), take 128 rowsum back out,
/// scale, add the bias, ReLU (NaN kept). y holds PH x PW. Portable.
template <class Scalar>
void int8_conv_store_portable(const std::int32_t* sums, index_t wp, index_t oh, index_t ow, std::int32_t corr, Scalar scale, Scalar bias,
                              const conv_epilogue& ep, Scalar* y) {
  const index_t ph = ep.out(oh), pw = ep.out(ow), k = ep.pooled() ? ep.pool_kernel : 1, s = ep.pooled() ? ep.pool_stride : 1;
  for (index_t i = 0; i < ph; ++i)
    for (index_t j = 0; j < pw; ++j) {
      std::int32_t m = std::numeric_limits<std::int32_t>::min();
      for (index_t a = 0; a < k; ++a)
        for (index_t c = 0; c < k; ++c) m = std::max(m, sums[(i * s + a) * wp + j * s + c]);
      Scalar v;
      if constexpr (std::is_same_v<Scalar, float>) {
        v = std::fma(static_cast<float>(m - corr), scale, bias);
      } else {
        v = static_cast<Scalar>(m - corr) * scale + bias;
      }
      y[i * pw + j] = ep.relu && v < 0 ? Scalar(0) : v;
    }
}

#if defined(SLIMNET_DISPATCH_X86)
namespace avx512 {

/// Codes of one image (float) into the padded planes and the interleaved words, 16 values at a time.
SLIMNET_INT8CONV_VNNI inline void int8_conv_pack(const int8_conv_filters& f, const float* x, const conv_input& in, float step,
                                                 int8_conv_workspace& ws) {
  const index_t sb = ws.plane_stride + 4, hw = in.height * in.width;
  const __m512 inv = _mm512_set1_ps(std::isnan(step) ? 0.0f : static_cast<float>(1.0 / static_cast<double>(step)));
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512i zp = _mm512_set1_epi32(128);
  for (index_t c = 0; c < in.channels; ++c)
    for (index_t i = 0; i < in.height; ++i) {
      std::uint8_t* dst = ws.codes.data() + c * sb + (i + in.pad_h) * ws.wp + in.pad_w;
      const float* src = x + c * hw + i * in.width;
      for (index_t j = 0; j < in.width; j += 16) {
        const index_t n = std::min<index_t>(16, in.width - j);
        const __mmask16 m = static_cast<__mmask16>(n == 16 ? 0xffff : (1u << n) - 1);
        // Clamped to [-127, 127] first (integer bounds: the same as rounding first), then cvtps
        // rounds to nearest even as std::nearbyint in the default mode. A NaN image has inv = 0.
        const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + j), inv), lo), hi);
        const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
        _mm_mask_storeu_epi8(dst + j, m, _mm512_cvtepi32_epi8(q));
      }
    }
  const index_t s = ws.plane_stride;
  if (f.by_channel()) {
    const index_t groups = static_cast<index_t>(ws.codes.size()) / (4 * sb);
    for (index_t cg = 0; cg < groups; ++cg) {
      const std::uint8_t* p = ws.codes.data() + 4 * cg * sb;
      std::uint32_t* w = ws.words.data() + cg * s;
      for (index_t i = 0; i < s; i += 16) {
        const index_t n = std::min<index_t>(16, s - i);
        const __mmask16 m = static_cast<__mmask16>(n == 16 ? 0xffff : (1u << n) - 1);
        const __m512i c0 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + i));
        const __m512i c1 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + sb + i));
        const __m512i c2 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + 2 * sb + i));
        const __m512i c3 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + 3 * sb + i));
        const __m512i v = _mm512_or_si512(_mm512_or_si512(c0, _mm512_slli_epi32(c1, 8)),
                                          _mm512_or_si512(_mm512_slli_epi32(c2, 16), _mm512_slli_epi32(c3, 24)));
        _mm512_mask_storeu_epi32(w + i, m, v);
      }
    }
  } else {
    for (index_t c = 0; c < in.channels; ++c) {
      const std::uint8_t* p = ws.codes.data() + c * sb;
      std::uint32_t* w = ws.words.data() + c * s;
      for (index_t i = 0; i < s; i += 16) {
        const index_t n = std::min<index_t>(16, s - i);
        const __mmask16 m = static_cast<__mmask16>(n == 16 ? 0xffff : (1u << n) - 1);
        const __m512i c0 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + i));
        const __m512i c1 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + i + 1));
        const __m512i c2 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + i + 2));
        const __m512i c3 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p + i + 3));
        const __m512i v = _mm512_or_si512(_mm512_or_si512(c0, _mm512_slli_epi32(c1, 8)),
                                          _mm512_or_si512(_mm512_slli_epi32(c2, 16), _mm512_slli_epi32(c3, 24)));
        _mm512_mask_storeu_epi32(w + i, m, v);
      }
    }
  }
}

/// R output channels x V vectors of 16 positions from position p0: the accumulators stay in
/// registers over all groups; each group loads V vectors and broadcasts R filter words.
template <int R, int V>
SLIMNET_INT8CONV_VNNI inline void int8_conv_tile(const std::uint32_t* words, const index_t* offsets, index_t groups,
                                                 const std::uint32_t* bw, index_t p0, std::int32_t* sums, index_t ld) {
  __m512i acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_si512();
  const std::uint32_t* base = words + p0;
  for (index_t g = 0; g < groups; ++g) {
    const std::uint32_t* a = base + offsets[g];
    __m512i x[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_si512(a + 16 * v);
    const std::uint32_t* wq = bw + g * R;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(wq[r]));
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) int_dot<std::int8_t>(acc[r][v], x[v], b);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_storeu_si512(sums + r * ld + p0 + 16 * v, acc[r][v]);
}

template <int R>
SLIMNET_INT8CONV_VNNI void int8_conv_block_r(const int8_conv_filters& f, index_t b, const int8_conv_workspace& ws,
                                             std::int32_t* sums) {
  const index_t vectors = ws.positions / 16;
  const std::uint32_t* bw = f.block_words(b);
  index_t v = 0;
  for (; v + 4 <= vectors; v += 4) int8_conv_tile<R, 4>(ws.words.data(), ws.offsets.data(), f.groups(), bw, 16 * v, sums, ws.positions);
  switch (vectors - v) {
    case 3: int8_conv_tile<R, 3>(ws.words.data(), ws.offsets.data(), f.groups(), bw, 16 * v, sums, ws.positions); break;
    case 2: int8_conv_tile<R, 2>(ws.words.data(), ws.offsets.data(), f.groups(), bw, 16 * v, sums, ws.positions); break;
    case 1: int8_conv_tile<R, 1>(ws.words.data(), ws.offsets.data(), f.groups(), bw, 16 * v, sums, ws.positions); break;
    default: break;
  }
}

SLIMNET_INT8CONV_VNNI inline void int8_conv_block(const int8_conv_filters& f, index_t b, const int8_conv_workspace& ws,
                                                  std::int32_t* sums) {
  switch (f.block()) {
    case 1: int8_conv_block_r<1>(f, b, ws, sums); break;
    case 2: int8_conv_block_r<2>(f, b, ws, sums); break;
    case 3: int8_conv_block_r<3>(f, b, ws, sums); break;
    case 4: int8_conv_block_r<4>(f, b, ws, sums); break;
    case 5: int8_conv_block_r<5>(f, b, ws, sums); break;
    default: int8_conv_block_r<6>(f, b, ws, sums); break;
  }
}

/// The epilogue of one channel with the 2 x 2, stride-2 pool: row pairs maxed, then even / odd
/// lanes, 16 pooled outputs per step; other pools and none go through the portable store.
SLIMNET_INT8CONV_VNNI inline void int8_conv_store(const std::int32_t* sums, index_t wp, index_t oh, index_t ow, std::int32_t corr,
                                                  float scale, float bias, const conv_epilogue& ep, float* y) {
  if (!(ep.pooled() && ep.pool_kernel == 2 && ep.pool_stride == 2)) {
    int8_conv_store_portable<float>(sums, wp, oh, ow, corr, scale, bias, ep, y);
    return;
  }
  const index_t ph = ep.out(oh), pw = ep.out(ow);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i vcorr = _mm512_set1_epi32(corr);
  const __m512 vs = _mm512_set1_ps(scale), vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
  for (index_t i = 0; i < ph; ++i) {
    const std::int32_t* r0 = sums + 2 * i * wp;
    const std::int32_t* r1 = r0 + wp;
    for (index_t j = 0; j < pw; j += 16) {
      const index_t k = std::min<index_t>(16, pw - j);
      const index_t n0 = std::min<index_t>(16, 2 * k), n1 = 2 * k - n0;
      const __mmask16 m0 = static_cast<__mmask16>(n0 == 16 ? 0xffff : (1u << n0) - 1);
      const __mmask16 m1 = static_cast<__mmask16>((1u << n1) - 1);
      const __m512i a0 = _mm512_max_epi32(_mm512_maskz_loadu_epi32(m0, r0 + 2 * j), _mm512_maskz_loadu_epi32(m0, r1 + 2 * j));
      const __m512i a1 = _mm512_max_epi32(_mm512_maskz_loadu_epi32(m1, r0 + 2 * j + 16), _mm512_maskz_loadu_epi32(m1, r1 + 2 * j + 16));
      const __m512i mx = _mm512_max_epi32(_mm512_permutex2var_epi32(a0, even, a1), _mm512_permutex2var_epi32(a0, odd, a1));
      __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(mx, vcorr)), vs, vb);
      // max_ps returns its second operand when either is NaN: ReLU that keeps NaN.
      if (ep.relu) v = _mm512_max_ps(zero, v);
      _mm512_mask_storeu_ps(y + i * pw + j, static_cast<__mmask16>(k == 16 ? 0xffff : (1u << k) - 1), v);
    }
  }
}

}  // namespace avx512
#endif

/// Tag of int8_conv2d's path counters.
struct int8_conv_tag;

}  // namespace detail

/// The family float int8_conv2d takes under the current active_isa(): avx512 when the CPU also has
/// AVX512-VNNI (vpdpbusd), else portable. Compiled with function target attributes in every x86-64
/// build. (No AVX2 path yet: it would take vpmaddubsw + vpmaddwd, or 256-bit vpdpbusd on AVX-VNNI
/// CPUs, as int8_gemm's AVX2 kernel does.)
inline isa int8_conv_path() {
#if defined(SLIMNET_DISPATCH_X86)
  if (active_isa() == isa::avx512 && cpu_features().avx512_vnni) return isa::avx512;
#endif
  return isa::portable;
}

/// How many int8_conv2d calls each family computed since the program started (empty batches are
/// not counted).
inline std::uint64_t int8_conv_path_calls(isa path) { return detail::path_calls<detail::int8_conv_tag>(path); }

/// y (N, out_c, PH, PW) = the int8 convolution of x (N, in_c, H, W; stride 1, zero padding
/// in.pad_h / pad_w) by the filters, scaled per output by out_scale[o] and the image's step,
/// plus bias (may be null), then the epilogue (ReLU, max-pool). activation_step 0: per-image
/// dynamic step max|x| / 127; > 0: that step. The AVX-512 VNNI path runs for float where
/// int8_conv_path() says so; path = portable forces the scalar one (bitwise the same outputs).
template <class Scalar>
void int8_conv2d(const int8_conv_filters& f, const Scalar* x, const conv_input& in, const float* out_scale, const Scalar* bias,
                 double activation_step, const conv_epilogue& ep, Scalar* y, int8_conv_workspace& ws,
                 kernel_path path = kernel_path::automatic) {
  const char* fn = "slimnet::kernels::int8_conv2d";
  detail::int8_conv_check(fn, f, in, ep);
  if (!(activation_step >= 0) || !std::isfinite(activation_step)) {
    slimnet::detail::raise<config_error>(fn, "activation_step = {} must be >= 0 and finite", activation_step);
  }
  if (in.batch == 0) return;
  detail::int8_conv_prepare(f, in, ws);
  const index_t oh = in.height + 2 * in.pad_h - f.kernel_h() + 1, ow = in.width + 2 * in.pad_w - f.kernel_w() + 1;
  const index_t out_plane = ep.out(oh) * ep.out(ow), in_size = in.channels * in.height * in.width, oc = f.out_channels();
  const isa simd = detail::count_path<detail::int8_conv_tag>(
      std::is_same_v<Scalar, float> && path != kernel_path::portable ? int8_conv_path() : isa::portable);
  [[maybe_unused]] const bool fast = simd == isa::avx512;  // read only where the VNNI path is compiled
  (void)path;
  for (index_t n = 0; n < in.batch; ++n) {
    const Scalar* xn = x + n * in_size;
    const float step = detail::int8_image_step(xn, in_size, activation_step);
    Scalar* yn = y + n * oc * out_plane;
#if defined(SLIMNET_DISPATCH_X86)
    if constexpr (std::is_same_v<Scalar, float>) {
      if (fast) {
        detail::avx512::int8_conv_pack(f, xn, in, step, ws);
        for (index_t b = 0; b < f.blocks(); ++b) {
          detail::avx512::int8_conv_block(f, b, ws, ws.sums.data());
          for (index_t r = 0; r < f.block() && b * f.block() + r < oc; ++r) {
            const index_t o = b * f.block() + r;
            detail::avx512::int8_conv_store(ws.sums.data() + r * ws.positions, ws.wp, oh, ow, 128 * f.rowsum()[o], step * out_scale[o],
                                            bias ? bias[o] : 0.0f, ep, yn + o * out_plane);
          }
        }
        continue;
      }
    }
#endif
    detail::int8_conv_pack_portable(f, xn, in, step, ws);
    for (index_t b = 0; b < f.blocks(); ++b) {
      detail::int8_conv_block_portable(f, b, ws, ws.sums.data());
      for (index_t r = 0; r < f.block() && b * f.block() + r < oc; ++r) {
        const index_t o = b * f.block() + r;
        const Scalar scale = std::is_same_v<Scalar, float> ? static_cast<Scalar>(step * out_scale[o])
                                                           : static_cast<Scalar>(step) * static_cast<Scalar>(out_scale[o]);
        detail::int8_conv_store_portable<Scalar>(ws.sums.data() + r * ws.positions, ws.wp, oh, ow, 128 * f.rowsum()[o], scale,
                                                 bias ? bias[o] : Scalar(0), ep, yn + o * out_plane);
      }
    }
  }
}

/// The definition int8_conv2d must match: the same per-image step and codes, the integer
/// convolution summed directly over (c, ki, kj) from codes (o, c, ki, kj) row-major, then pool on
/// the integer sums, scale, bias and ReLU as above (float: one fma).
template <class Scalar>
void int8_conv2d_reference(const std::int8_t* codes, index_t out_c, index_t kh, index_t kw, const Scalar* x, const conv_input& in,
                           const float* out_scale, const Scalar* bias, double activation_step, const conv_epilogue& ep, Scalar* y) {
  const index_t oh = in.height + 2 * in.pad_h - kh + 1, ow = in.width + 2 * in.pad_w - kw + 1;
  const index_t ph = ep.out(oh), pw = ep.out(ow), in_size = in.channels * in.height * in.width;
  std::vector<std::int32_t> q(static_cast<std::size_t>(in_size)), sums(static_cast<std::size_t>(oh * ow));
  for (index_t n = 0; n < in.batch; ++n) {
    const Scalar* xn = x + n * in_size;
    const float step = detail::int8_image_step(xn, in_size, activation_step);
    const Scalar inv = std::isnan(step) ? Scalar(0) : static_cast<Scalar>(1.0 / static_cast<double>(step));
    for (index_t i = 0; i < in_size; ++i) {
      const Scalar v = std::nearbyint(xn[i] * inv);
      q[static_cast<std::size_t>(i)] = std::isnan(v) ? 0 : static_cast<std::int32_t>(std::clamp(v, Scalar(-127), Scalar(127)));
    }
    for (index_t o = 0; o < out_c; ++o) {
      for (index_t i = 0; i < oh; ++i)
        for (index_t j = 0; j < ow; ++j) {
          std::int32_t s = 0;
          for (index_t c = 0; c < in.channels; ++c)
            for (index_t ki = 0; ki < kh; ++ki)
              for (index_t kj = 0; kj < kw; ++kj) {
                const index_t r = i + ki - in.pad_h, t = j + kj - in.pad_w;
                if (r < 0 || r >= in.height || t < 0 || t >= in.width) continue;
                s += q[static_cast<std::size_t>((c * in.height + r) * in.width + t)] * codes[((o * in.channels + c) * kh + ki) * kw + kj];
              }
          sums[static_cast<std::size_t>(i * ow + j)] = s;
        }
      const Scalar scale = std::is_same_v<Scalar, float> ? static_cast<Scalar>(step * out_scale[o])
                                                         : static_cast<Scalar>(step) * static_cast<Scalar>(out_scale[o]);
      detail::int8_conv_store_portable<Scalar>(sums.data(), ow, oh, ow, 0, scale, bias ? bias[o] : Scalar(0), ep,
                                               y + (n * out_c + o) * ph * pw);
    }
  }
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
