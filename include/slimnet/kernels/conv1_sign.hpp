// The first layer of a BNN as one pass: a direct convolution of a single-channel image (no im2col),
// its max-pool, the bias and the per-channel sign threshold (BatchNorm + sign folded,
// nn/compressed/sign_threshold.hpp), writing the +-1 activations the next XNOR layer reads.
//   z(o, p)   = sum_t w(o, t) x(p + t)      taps t = ki kw + kj in increasing order, each a fused
//                                           multiply-add from 0: the order of the float layer's GEMM
//   v(o, q)   = max_{p in pool window q} z(o, p) + bias(o)
//   y(o, q)   = v != v ? nan_value(o) : (lo(o) <= v <= hi(o) ? in_value(o) : -in_value(o))
// max_p (z_p + b) = max_p z_p + b exactly (rounding is monotone), so pooling before the bias gives
// bitwise what the float network (conv + bias, then max-pool, BatchNorm, sign) gives.
// Windows whose pixels are all 0 (every product +0: z = +0 exactly) are not computed: their output
// is threshold(bias), the same bits; kernel rows over blank pixel rows are skipped likewise.
// (Weights are finite: an inf weight times a 0 pixel would be NaN.)
// Why: with one input channel the im2col matrix has only kh kw = 25 rows, too shallow for the GEMM
// to run at speed (LeNet-5 BNN conv1 at batch 64: over half the network's time in its dense form).
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

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// The layer's constants: weights (out_channels x kh x kw, row-major), bias (or null), the
/// non-overlapping max-pool (pool >= 1: pool x pool windows at stride pool; 1: no pool) and the
/// per-channel threshold arrays (lo, hi, in_value = +-1, nan_value = +-1).
template <class Scalar>
struct conv1_sign_params {
  index_t out_channels = 0, kernel_h = 0, kernel_w = 0, pool = 1;
  const Scalar* weights = nullptr;
  const Scalar* bias = nullptr;
  const Scalar *lo = nullptr, *hi = nullptr, *in_value = nullptr, *nan_value = nullptr;
  kernel_path path = kernel_path::automatic;

  index_t out_h(index_t h) const { return (h - kernel_h + 1) / pool; }
  index_t out_w(index_t w) const { return (w - kernel_w + 1) / pool; }
};

namespace detail {

/// a * b + c rounded once, as the AVX-512 path's FMAs: the path is chosen at run time
/// (conv1_sign_path()), so the portable loop's rounding must not depend on -march (std::fma: vfmadd
/// with -mfma, else glibc's fma, the FMA instruction where the CPU has it).
template <class Scalar>
inline Scalar conv1_madd(Scalar a, Scalar b, Scalar c) {
  return std::fma(a, b, c);
}

template <class Scalar>
inline Scalar conv1_threshold(const conv1_sign_params<Scalar>& p, index_t o, Scalar v) {
  if (v != v) return p.nan_value[o];
  return v >= p.lo[o] && v <= p.hi[o] ? p.in_value[o] : -p.in_value[o];
}

/// Image n of the batch, portable (also the reference: the definition above, loop by loop).
template <class Scalar>
void conv1_sign_image(const conv1_sign_params<Scalar>& p, const Scalar* x, index_t h, index_t w, Scalar* y) {
  const index_t ph_n = p.out_h(h), pw_n = p.out_w(w), taps = p.kernel_h * p.kernel_w;
  for (index_t o = 0; o < p.out_channels; ++o) {
    const Scalar* wo = p.weights + o * taps;
    for (index_t ph = 0; ph < ph_n; ++ph) {
      for (index_t pw = 0; pw < pw_n; ++pw) {
        Scalar m = -std::numeric_limits<Scalar>::infinity();
        for (index_t a = 0; a < p.pool; ++a) {
          for (index_t b = 0; b < p.pool; ++b) {
            const index_t oh = ph * p.pool + a, ow = pw * p.pool + b;
            Scalar acc = Scalar(0);
            for (index_t ki = 0; ki < p.kernel_h; ++ki)
              for (index_t kj = 0; kj < p.kernel_w; ++kj) acc = conv1_madd(wo[ki * p.kernel_w + kj], x[(oh + ki) * w + ow + kj], acc);
            m = std::max(m, acc);
          }
        }
        const Scalar v = p.bias ? m + p.bias[o] : m;
        y[(o * ph_n + ph) * pw_n + pw] = conv1_threshold(p, o, v);
      }
    }
  }
}

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
#define SLIMNET_CONV1_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
namespace avx512 {

/// Whether pixels [r0, r1) x [c0, c1) hold a nonzero, from the summed-area table `sat`
/// ((h + 1) x (w + 1) counts of nonzero pixels).
inline bool conv1_any_nonzero(const std::int32_t* sat, index_t w, index_t r0, index_t r1, index_t c0, index_t c1) {
  return sat[r1 * (w + 1) + c1] - sat[r0 * (w + 1) + c1] - sat[r1 * (w + 1) + c0] + sat[r0 * (w + 1) + c0] != 0;
}

/// U pooled outputs (pw .. pw + U - 1) of row ph: U P NV accumulators, each tap's NV weight
/// vectors loaded once for all U P positions (U = 2: 16 FMAs per 10 loads at NV = 2).
/// `zero`: the 16 NV outputs of a window whose pixels are all 0 (every product +0, so z = +0
/// exactly and the output is threshold(bias)): copied, not computed. MNIST digits leave about half
/// of the LeNet-5 first layer's pooled windows blank.
template <int NV, int P, int U>
SLIMNET_CONV1_AVX512 inline void conv1_sign_outputs(const conv1_sign_params<float>& p, const float* wt, const float* bias,
                                                    const float* lo, const float* hi, const float* in_value,
                                                    const float* nan_value, const float* x, index_t w, const std::int32_t* sat,
                                                    const float* zero, index_t ph, index_t pw, float* t) {
  constexpr int pool = P == 4 ? 2 : 1;
  const index_t pw_n = p.out_w(w), kh = p.kernel_h, kw = p.kernel_w;
  const index_t r0 = ph * pool, c0 = pw * pool, c1 = c0 + U * pool + kw - 1;
  if (!conv1_any_nonzero(sat, w, r0, r0 + pool + kh - 1, c0, c1)) {
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(t + (ph * pw_n + pw + u) * 16 * NV + 16 * v, _mm512_loadu_ps(zero + 16 * v));
    return;
  }
  __m512 acc[U * P][NV];
#pragma GCC unroll 8
  for (int q = 0; q < U * P; ++q)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[q][v] = _mm512_setzero_ps();
  const float* x0 = x + r0 * w + c0;
  for (index_t ki = 0; ki < kh; ++ki) {
    // Kernel row ki reads pixel rows r0 + ki .. r0 + ki + pool - 1: all 0, and its products add
    // +-0 to the sums, which changes no output bit (at most the sign of a zero sum, which
    // max, bias and threshold do not see).
    if (!conv1_any_nonzero(sat, w, r0 + ki, r0 + ki + pool, c0, c1)) continue;
    for (index_t kj = 0; kj < kw; ++kj) {
      const float* wr = wt + (ki * kw + kj) * 16 * NV;
      __m512 wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wr + 16 * v);
#pragma GCC unroll 8
      for (int q = 0; q < U * P; ++q) {  // position q: output u = q / P, window offset (a, b) = (q % P / pool, q % pool)
        const __m512 xb = _mm512_set1_ps(x0[(ki + (q % P) / pool) * w + kj + (q / P) * pool + q % pool]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[q][v] = _mm512_fmadd_ps(wv[v], xb, acc[q][v]);
      }
    }
  }
  for (int u = 0; u < U; ++u) {
    float* out = t + (ph * pw_n + pw + u) * 16 * NV;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 m = acc[u * P][v];
      for (int q = 1; q < P; ++q) m = _mm512_max_ps(m, acc[u * P + q][v]);  // no NaN from finite inputs and weights
      m = _mm512_add_ps(m, _mm512_loadu_ps(bias + 16 * v));
      const __mmask16 inside = _mm512_cmp_ps_mask(m, _mm512_loadu_ps(lo + 16 * v), _CMP_GE_OQ) &
                               _mm512_cmp_ps_mask(m, _mm512_loadu_ps(hi + 16 * v), _CMP_LE_OQ);
      const __mmask16 nan = _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
      const __m512 iv = _mm512_loadu_ps(in_value + 16 * v);
      __m512 r = _mm512_mask_blend_ps(inside, _mm512_sub_ps(_mm512_setzero_ps(), iv), iv);
      r = _mm512_mask_blend_ps(nan, r, _mm512_loadu_ps(nan_value + 16 * v));
      _mm512_storeu_ps(out + 16 * v, r);
    }
  }
}

/// One image: NV vectors of 16 output channels per position, the P = pool^2 (1 or 4) positions of
/// a window accumulated together (independent FMA chains hide the FMA latency), two pooled outputs
/// at a time where the registers allow (NV <= 2); wt: taps x (16 NV) weights, channel-contiguous
/// (padding channels 0). Writes t (pooled positions x 16 NV) as +-1.
template <int NV, int P>
SLIMNET_CONV1_AVX512 void conv1_sign_image(const conv1_sign_params<float>& p, const float* wt, const float* bias, const float* lo,
                                           const float* hi, const float* in_value, const float* nan_value, const float* x,
                                           index_t h, index_t w, const std::int32_t* sat, const float* zero, float* t) {
  constexpr int pair = NV <= 2 ? 2 : 1;
  const index_t ph_n = p.out_h(h), pw_n = p.out_w(w);
  for (index_t ph = 0; ph < ph_n; ++ph) {
    index_t pw = 0;
    for (; pw + pair <= pw_n; pw += pair)
      conv1_sign_outputs<NV, P, pair>(p, wt, bias, lo, hi, in_value, nan_value, x, w, sat, zero, ph, pw, t);
    for (; pw < pw_n; ++pw) conv1_sign_outputs<NV, P, 1>(p, wt, bias, lo, hi, in_value, nan_value, x, w, sat, zero, ph, pw, t);
  }
}

}  // namespace avx512
#endif

/// Tag of conv1_sign's path counters.
struct conv1_sign_tag;
}  // namespace detail

/// The family float conv1_sign takes under the current active_isa(): avx512, else portable
/// (compiled with function target attributes in every x86-64 build; no AVX2 path yet). The AVX-512
/// pass needs 1..64 output channels and a pool of 1 or 2; others run portable whatever this says.
inline isa conv1_sign_path() {
#if defined(SLIMNET_DISPATCH_X86)
  if (active_isa() == isa::avx512) return isa::avx512;
#endif
  return isa::portable;
}

/// How many conv1_sign calls each family computed since the program started.
inline std::uint64_t conv1_sign_path_calls(isa path) { return detail::path_calls<detail::conv1_sign_tag>(path); }

/// Scratch of conv1_sign (the transposed weights, padded constants, one image's outputs).
struct conv1_sign_workspace {
  std::vector<float> wt, bias, lo, hi, in_value, nan_value, t, zero;
  std::vector<std::int32_t> sat;  ///< summed-area table of nonzero pixels of one image
  const void* prepared_for = nullptr;  ///< weights the arrays were built from
};

/// y (N, out_channels, OH / pool, OW / pool) from x (N, 1, H, W): the pass defined above.
/// Throws shape_error when the image is smaller than the kernel or the pooled output is empty.
template <class Scalar>
void conv1_sign(const conv1_sign_params<Scalar>& p, const Scalar* x, index_t batch, index_t h, index_t w, Scalar* y,
                conv1_sign_workspace& ws) {
  const char* fn = "slimnet::kernels::conv1_sign";
  if (p.pool < 1 || p.kernel_h < 1 || p.kernel_w < 1 || h < p.kernel_h || w < p.kernel_w || p.out_h(h) < 1 || p.out_w(w) < 1) {
    slimnet::detail::raise<shape_error>(fn, "a {}x{} image does not fit {}x{} kernels pooled {}x{}", h, w, p.kernel_h, p.kernel_w, p.pool,
                                        p.pool);
  }
  const index_t plane = p.out_h(h) * p.out_w(w);
  const index_t nv = (p.out_channels + 15) / 16;
  [[maybe_unused]] const isa simd = detail::count_path<detail::conv1_sign_tag>(
      std::is_same_v<Scalar, float> && p.path != kernel_path::portable && nv >= 1 && nv <= 4 && (p.pool == 1 || p.pool == 2)
          ? conv1_sign_path()
          : isa::portable);
#if defined(SLIMNET_DISPATCH_X86)
  if constexpr (std::is_same_v<Scalar, float>) {
    if (simd == isa::avx512) {
      const index_t oc = p.out_channels, taps = p.kernel_h * p.kernel_w, width = 16 * nv;
      if (ws.prepared_for != p.weights || ws.wt.size() != static_cast<std::size_t>(taps * width)) {
        ws.wt.assign(static_cast<std::size_t>(taps * width), 0.0f);
        for (index_t o = 0; o < oc; ++o)
          for (index_t t = 0; t < taps; ++t) ws.wt[static_cast<std::size_t>(t * width + o)] = p.weights[o * taps + t];
        ws.prepared_for = p.weights;
      }
      // Constants are re-read every call (cheap): the caller may change the bias or thresholds.
      auto pad = [&](std::vector<float>& dst, const float* src, float fill) {
        dst.assign(static_cast<std::size_t>(width), fill);
        if (src) std::copy_n(src, oc, dst.begin());
      };
      pad(ws.bias, p.bias, 0.0f);
      pad(ws.lo, p.lo, 0.0f);
      pad(ws.hi, p.hi, 0.0f);
      pad(ws.in_value, p.in_value, 1.0f);
      pad(ws.nan_value, p.nan_value, 1.0f);
      ws.t.resize(static_cast<std::size_t>(plane * width));
      ws.zero.resize(static_cast<std::size_t>(width));
      for (index_t o = 0; o < width; ++o) {
        const float v = 0.0f + ws.bias[static_cast<std::size_t>(o)];  // max of +0 sums, plus the bias
        ws.zero[static_cast<std::size_t>(o)] = v != v ? ws.nan_value[static_cast<std::size_t>(o)]
                                               : v >= ws.lo[static_cast<std::size_t>(o)] && v <= ws.hi[static_cast<std::size_t>(o)]
                                                   ? ws.in_value[static_cast<std::size_t>(o)]
                                                   : -ws.in_value[static_cast<std::size_t>(o)];
      }
      ws.sat.assign(static_cast<std::size_t>((h + 1) * (w + 1)), 0);
      for (index_t n = 0; n < batch; ++n) {
        const float* xn = x + n * h * w;
        for (index_t i = 0; i < h; ++i) {
          std::int32_t row = 0;
          for (index_t j = 0; j < w; ++j) {
            row += xn[i * w + j] != 0.0f;
            ws.sat[static_cast<std::size_t>((i + 1) * (w + 1) + j + 1)] = ws.sat[static_cast<std::size_t>(i * (w + 1) + j + 1)] + row;
          }
        }
        auto run = [&](auto nv_tag, auto p_tag) {
          detail::avx512::conv1_sign_image<decltype(nv_tag)::value, decltype(p_tag)::value>(
              p, ws.wt.data(), ws.bias.data(), ws.lo.data(), ws.hi.data(), ws.in_value.data(), ws.nan_value.data(), xn, h, w, ws.sat.data(),
              ws.zero.data(), ws.t.data());
        };
        const bool pooled = p.pool == 2;
        switch (nv) {
          case 1: pooled ? run(std::integral_constant<int, 1>{}, std::integral_constant<int, 4>{}) : run(std::integral_constant<int, 1>{}, std::integral_constant<int, 1>{}); break;
          case 2: pooled ? run(std::integral_constant<int, 2>{}, std::integral_constant<int, 4>{}) : run(std::integral_constant<int, 2>{}, std::integral_constant<int, 1>{}); break;
          case 3: pooled ? run(std::integral_constant<int, 3>{}, std::integral_constant<int, 4>{}) : run(std::integral_constant<int, 3>{}, std::integral_constant<int, 1>{}); break;
          default: pooled ? run(std::integral_constant<int, 4>{}, std::integral_constant<int, 4>{}) : run(std::integral_constant<int, 4>{}, std::integral_constant<int, 1>{}); break;
        }
        // (positions, channels) -> (channels, positions)
        float* yn = y + n * oc * plane;
        for (index_t q = 0; q < plane; ++q)
          for (index_t o = 0; o < oc; ++o) yn[o * plane + q] = ws.t[static_cast<std::size_t>(q * width + o)];
      }
      return;
    }
  }
#endif
  (void)ws;
  for (index_t n = 0; n < batch; ++n) detail::conv1_sign_image(p, x + n * h * w, h, w, y + n * p.out_channels * plane);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
