// Vectorised tanh and logistic sigmoid for the gate arithmetic of recurrent layers, 16 floats at a
// time in AVX-512 registers (8 in AVX2's), so that a gate epilogue can run in one pass with its operands in
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
// AVX2 + FMA (tanh8, sigmoid8) evaluates the same polynomials on 8 floats. AVX2 has no vrcp14ps,
// and vrcpps's 12-bit estimate (relative error up to 1.5 2^-12) after one Newton step is only good
// to about 2^-23, an ulp on top of the polynomial's error, so it divides (vdivps, correctly rounded).
//
// The family is chosen per call from active_isa() (vector_math_path()), both SIMD families compiled
// with function target attributes in every x86-64 build; the portable functions (and other
// architectures) call std::tanh.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/intrinsics.hpp"

#if defined(SLIMNET_DISPATCH_X86)
#include <immintrin.h>
#define SLIMNET_VMATH_AVX512 SLIMNET_TARGET("avx512f,avx512bw,avx512vl,avx512dq")
#define SLIMNET_VMATH_AVX2 SLIMNET_TARGET("avx2,fma")
#endif

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::kernels {

/// The family tanh_array and sigmoid_array take under the current active_isa(): avx512 (tanh16),
/// avx2 (tanh8), else portable (std::tanh).
inline isa vector_math_path() { return x86_simd_path(); }

namespace detail {
/// Tag of the vector math's path counters (tanh_array, sigmoid_array, the recurrent gate passes).
struct vector_math_tag;
}  // namespace detail

/// How many tanh_array and sigmoid_array calls each family computed since the program started
/// (calls with n = 0 are not counted).
inline std::uint64_t vector_math_path_calls(isa path) { return detail::path_calls<detail::vector_math_tag>(path); }

#if defined(SLIMNET_DISPATCH_X86)
/// tanh of 16 floats (see the header comment for the approximation and its error).
SLIMNET_VMATH_AVX512 inline __m512 tanh16(__m512 x) {
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
SLIMNET_VMATH_AVX512 inline __m512 sigmoid16(__m512 x) {
  const __m512 half = _mm512_set1_ps(0.5f);
  return _mm512_fmadd_ps(half, tanh16(_mm512_mul_ps(half, x)), half);
}

/// tanh of 8 floats: tanh16's clamp, polynomials and small-|x| rule, with an exact division.
SLIMNET_VMATH_AVX2 inline __m256 tanh8(__m256 x) {
  const __m256 limit = _mm256_set1_ps(7.90531110763549805f);
  // vminps / vmaxps return their second operand when either is NaN: x last keeps NaN.
  const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-7.90531110763549805f), _mm256_min_ps(limit, x));
  const __m256 x2 = _mm256_mul_ps(xc, xc);
  __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.00018790482477e-13f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.60467152213735e-11f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.12229709037114e-08f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.48572235717979e-05f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(6.37261928875436e-04f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(4.89352455891786e-03f));
  p = _mm256_mul_ps(p, xc);
  __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(1.18534705686654e-04f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(2.26843463243900e-03f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(4.89352518554385e-03f));  // q >= 4.9e-3 > 0
  const __m256 y = _mm256_div_ps(p, q);
  // |x| < 4e-4 (and +-0): x itself. NaN compares false and keeps y = NaN.
  const __m256 magnitude = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(magnitude, _mm256_set1_ps(4e-4f), _CMP_LT_OQ));
}

/// The logistic sigmoid of 8 floats, (1 + tanh(x / 2)) / 2.
SLIMNET_VMATH_AVX2 inline __m256 sigmoid8(__m256 x) {
  const __m256 half = _mm256_set1_ps(0.5f);
  return _mm256_fmadd_ps(half, tanh8(_mm256_mul_ps(half, x)), half);
}

/// All ones in lanes [0, n) of 8 (n <= 8).
SLIMNET_VMATH_AVX2 inline __m256i vmath_lanes8(std::size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

namespace detail {

/// y[0:n] = sigmoid16 or tanh16 of x[0:n], 16 at a time, the tail masked.
template <bool Sigmoid>
SLIMNET_VMATH_AVX512 void vector_math_avx512(const float* x, float* y, std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    _mm512_storeu_ps(y + i, Sigmoid ? sigmoid16(v) : tanh16(v));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(y + i, m, Sigmoid ? sigmoid16(v) : tanh16(v));
  }
}

/// y[0:n] = sigmoid8 or tanh8 of x[0:n], 8 at a time, the tail through a lane mask (never touching
/// memory past n).
template <bool Sigmoid>
SLIMNET_VMATH_AVX2 void vector_math_avx2(const float* x, float* y, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(y + i, Sigmoid ? sigmoid8(v) : tanh8(v));
  }
  if (i < n) {
    const __m256i m = vmath_lanes8(n - i);
    const __m256 v = _mm256_maskload_ps(x + i, m);
    _mm256_maskstore_ps(y + i, m, Sigmoid ? sigmoid8(v) : tanh8(v));
  }
}

}  // namespace detail
#endif

namespace detail {

/// y[0:n] = tanh(x[0:n]) or sigmoid on vector_math_path()'s family.
template <bool Sigmoid>
void vector_math_apply(const float* x, float* y, std::size_t n) {
  if (n == 0) return;
  [[maybe_unused]] const isa path = count_path<vector_math_tag>(vector_math_path());
#if defined(SLIMNET_DISPATCH_X86)
  if (path == isa::avx512) return vector_math_avx512<Sigmoid>(x, y, n);
  if (path == isa::avx2) return vector_math_avx2<Sigmoid>(x, y, n);
#endif
  for (std::size_t i = 0; i < n; ++i) y[i] = Sigmoid ? 0.5f + 0.5f * std::tanh(0.5f * x[i]) : std::tanh(x[i]);
}

}  // namespace detail

/// y[i] = tanh(x[i]) for i < n (x == y allowed): tanh16 / tanh8 as vector_math_path() says,
/// std::tanh otherwise.
inline void tanh_array(const float* x, float* y, std::size_t n) { detail::vector_math_apply<false>(x, y, n); }

/// y[i] = 1 / (1 + exp(-x[i])) for i < n (x == y allowed), computed as (1 + tanh(x / 2)) / 2.
inline void sigmoid_array(const float* x, float* y, std::size_t n) { detail::vector_math_apply<true>(x, y, n); }

}  // namespace slimnet::kernels

SLIMNET_INTRINSICS_END
