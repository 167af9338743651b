// IEEE-754 binary16 (F16) and bfloat16 (BF16) <-> float/double conversions, written out in
// integer arithmetic so they are exact and portable (no _Float16, no F16C intrinsics).
//
// A narrow format with E exponent bits (bias b = 2^(E-1) - 1) and M mantissa bits encodes
//   normal:    (-1)^s * 2^(e-b) * (1 + m/2^M),  1 <= e <= 2^E - 2
//   subnormal: (-1)^s * 2^(1-b) * (m/2^M),      e = 0
//   Inf/NaN:   e = 2^E - 1 (m = 0 / m != 0).
// F16 is (E, M) = (5, 10), BF16 is (8, 7). Widening is exact. Narrowing goes from the double
// value (a float widens to double exactly, so a float input is rounded once, never twice) with
// round-to-nearest, ties-to-even; magnitudes from max + ulp/2 upwards become Inf, as IEEE says.
// NaN stays NaN (its payload's top bits kept, quiet bit set), the sign of zero is kept.
#pragma once

#include <cstdint>
#include <cstring>

namespace slimnet::io {

namespace detail {

inline std::uint64_t double_bits(double v) {
  std::uint64_t x;
  std::memcpy(&x, &v, 8);
  return x;
}

inline float float_from_bits(std::uint32_t x) {
  float v;
  std::memcpy(&v, &x, 4);
  return v;
}

/// Rounds `v` to the narrow format (ExpBits, MantBits), returning its bit pattern.
template <int ExpBits, int MantBits>
std::uint16_t narrow_float(double v) {
  static_assert(ExpBits + MantBits == 15, "A 16-bit format has one sign bit, so exponent and mantissa bits add up to 15.");
  constexpr int bias = (1 << (ExpBits - 1)) - 1;
  constexpr int drop = 52 - MantBits;  // mantissa bits of a double that do not fit
  constexpr std::uint16_t inf = static_cast<std::uint16_t>(((1u << ExpBits) - 1) << MantBits);
  const std::uint64_t x = double_bits(v);
  const auto sign = static_cast<std::uint16_t>((x >> 63) << 15);
  const std::uint64_t ax = x & 0x7fffffffffffffffull;
  if (ax >= 0x7ff0000000000000ull) {
    if (ax == 0x7ff0000000000000ull) return sign | inf;
    const auto payload = static_cast<std::uint16_t>((ax & 0x000fffffffffffffull) >> drop);
    return static_cast<std::uint16_t>(sign | inf | (1u << (MantBits - 1)) | payload);
  }
  // Largest finite value plus half an ulp: 2^b * (2 - 2^-(M+1)). At or above it, rounding
  // (ties to even: the largest finite mantissa is odd) goes to Inf.
  constexpr std::uint64_t overflow =
      (static_cast<std::uint64_t>(1023 + bias) << 52) | (((std::uint64_t{1} << (MantBits + 1)) - 1) << (drop - 1));
  if (ax >= overflow) return sign | inf;
  constexpr std::uint64_t min_normal = static_cast<std::uint64_t>(1023 + 1 - bias) << 52;
  if (ax >= min_normal) {
    // Rebias the exponent in place, then round the mantissa: adding (half - 1) plus the lowest
    // kept bit rounds ties to even; a carry out of the mantissa correctly bumps the exponent.
    std::uint64_t r = ax - (static_cast<std::uint64_t>(1023 - bias) << 52);
    r += (std::uint64_t{1} << (drop - 1)) - 1 + ((r >> drop) & 1);
    return static_cast<std::uint16_t>(sign | (r >> drop));
  }
  // Subnormal result: count units of 2^(1-b-M). At most half a unit (2^(-b-M)) rounds to zero
  // (the tie goes to the even 0).
  constexpr std::uint64_t half_unit = static_cast<std::uint64_t>(1023 - bias - MantBits) << 52;
  if (ax <= half_unit) return sign;
  const int e = static_cast<int>(ax >> 52);
  const std::uint64_t m = (ax & 0x000fffffffffffffull) | (std::uint64_t{1} << 52);  // value = m * 2^(e-1075)
  const int shift = (1075 + 1 - bias - MantBits) - e;                               // in [53-M, 53]
  std::uint64_t q = m >> shift;
  const std::uint64_t rem = m & ((std::uint64_t{1} << shift) - 1);
  const std::uint64_t half = std::uint64_t{1} << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) ++q;  // q == 2^M is the smallest normal: still right
  return static_cast<std::uint16_t>(sign | q);
}

}  // namespace detail

/// binary16 bits -> float (exact).
inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return detail::float_from_bits(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return detail::float_from_bits(sign);
    // Subnormal m * 2^-24: shift the leading 1 up to the implicit position, one exponent per step.
    int e = -14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    return detail::float_from_bits(sign | (static_cast<std::uint32_t>(e + 127) << 23) | ((mant & 0x3ffu) << 13));
  }
  return detail::float_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

/// bfloat16 bits -> float (exact: bfloat16 is the top half of a float).
inline float bf16_to_float(std::uint16_t b) { return detail::float_from_bits(static_cast<std::uint32_t>(b) << 16); }

/// double -> binary16 bits, round to nearest even.
inline std::uint16_t double_to_f16(double v) { return detail::narrow_float<5, 10>(v); }
/// double -> bfloat16 bits, round to nearest even.
inline std::uint16_t double_to_bf16(double v) { return detail::narrow_float<8, 7>(v); }
/// float -> binary16 bits, round to nearest even (one rounding: float -> double is exact).
inline std::uint16_t float_to_f16(float v) { return double_to_f16(static_cast<double>(v)); }
/// float -> bfloat16 bits, round to nearest even.
inline std::uint16_t float_to_bf16(float v) { return double_to_bf16(static_cast<double>(v)); }

}  // namespace slimnet::io
