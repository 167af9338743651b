// Vectorised tanh and logistic sigmoid for the gate arithmetic of recurrent layers, 16 floats at a
// time in AVX-512 registers, so that a gate epilogue can run in one pass with its operands in
// registers (nn/compressed/recurrent.hpp) instead of one Eigen expression pass per gate.
//
// tanh is the odd rational minimax approximation Eigen uses for float (generic_fast_tanh_float,
// Eigen 3.4):  tanh(x) ~ x P(x^2) / Q(x^2),  P of degree 6 and Q of degree 3 in x^2, on x clamped to
// [-7.9053, 7.9053] (beyond it the approximation is 1 to float precision: 1 - tanh(7.9) = 2.7e-7 is
// below half an ulp of 1), and x itself for |x| < 4e-4 (tanh x = x - x^3/3: relative error < 6e-8).
// The division is a 14-bit reciprocal (vrcp14ps) refined by one Newton step, r' = r (2 - q r),
// relative error about 2^-28: below float rounding, and several times cheaper than vdivps.
// Measured against std::tanh (tests/kernels/vector_math_test.cpp, every float in [-10, 10] on a
// 2^-12 grid plus +-1e-30..1e30): |error| <= 3e-7 absolute and <= 3e-7 relative (2.84e-7 and 2.88e-7
// measured; float's ulp at 1 is 1.19e-7).
// NaN gives NaN (the clamp is written so that vminps / vmaxps return the NaN operand), +-inf gives
// +-1, -0 gives -0.
//
// sigmoid(x) = 1 / (1 + e^-x) = (1 + tanh(x / 2)) / 2: <= 2e-7 absolute (1.4e-7 measured),
// 1.2e-7 and 1 in the far tails (relative error large below x = -16, where sigma < 1.2e-7: a gate that
// small multiplies its operand to nothing either way). The float recurrent layers compute the same
// formula (nn::detail::rnn::sigmoid through Eigen's tanh), so compressed and float layers agree to a
// few ulp.
//
// Without AVX-512 (or for double) the portable functions call std::tanh.
#pragma once

#include <cmath>
#include <cstddef>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "slimnet/kernels/intrinsics.hpp"

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

#if defined(__AVX512F__)
/// True when this build has the AVX-512 tanh / sigmoid below.
inline constexpr bool has_vector_tanh = true;

/// tanh of 16 floats (see the header comment for the approximation and its error).
inline __m512 tanh16(__m512 x) {
  const __m512 limit = _mm512_set1_ps(7.90531110763549805f);
  // vminps / vmaxps return their second operand when either is NaN: x last keeps NaN.
  const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-7.90531110763549805f), _mm512_min_ps(limit, x));
  const __m512 x2 = _mm512_mul_ps(xc, xc);
  __m512 p = _mm512_set1_ps(-2.76076847742355e-16f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.00018790482477e-13f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.60467152213735e-11f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(5.12229709037114e-08f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.48572235717979e-05f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(6.37261928875436e-04f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(4.89352455891786e-03f));
  p = _mm512_mul_ps(p, xc);
  __m512 q = _mm512_set1_ps(1.19825839466702e-06f);
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(1.18534705686654e-04f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(2.26843463243900e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(4.89352518554385e-03f));  // q >= 4.9e-3 > 0
  __m512 r = _mm512_rcp14_ps(q);
  r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(1.0f)), r);  // r (1 + (1 - q r))
  const __m512 y = _mm512_mul_ps(p, r);
  // |x| < 4e-4 (and +-0): x itself. NaN compares false and keeps y = NaN.
  const __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(4e-4f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(tiny, y, x);
}

/// The logistic sigmoid of 16 floats, (1 + tanh(x / 2)) / 2.
inline __m512 sigmoid16(__m512 x) {
  const __m512 half = _mm512_set1_ps(0.5f);
  return _mm512_fmadd_ps(half, tanh16(_mm512_mul_ps(half, x)), half);
}
#else
inline constexpr bool has_vector_tanh = false;
#endif

/// y[i] = tanh(x[i]) for i < n (x == y allowed): tanh16 where available, std::tanh otherwise.
inline void tanh_array(const float* x, float* y, std::size_t n) {
  std::size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, tanh16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, m, tanh16(_mm512_maskz_loadu_ps(m, x + i)));
    return;
  }
#endif
  for (; i < n; ++i) y[i] = std::tanh(x[i]);
}

/// y[i] = 1 / (1 + exp(-x[i])) for i < n (x == y allowed), computed as (1 + tanh(x / 2)) / 2.
inline void sigmoid_array(const float* x, float* y, std::size_t n) {
  std::size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, sigmoid16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, m, sigmoid16(_mm512_maskz_loadu_ps(m, x + i)));
    return;
  }
#endif
  for (; i < n; ++i) y[i] = 0.5f + 0.5f * std::tanh(0.5f * x[i]);
}

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
