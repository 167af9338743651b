// Fixed-point weights <IL, FL> (Gupta et al. 2015): w = c 2^-FL with c a WL = IL + FL bit two's
// complement integer (IL counts the sign bit). Stored as WL-bit codes (bit_pack.hpp) plus IL, FL.
// The encoder finds the smallest FL that makes every weight an integer multiple of 2^-FL and the
// smallest WL that holds the codes; it declines (nullopt) when WL would exceed max_bits, so the
// decode c 2^-FL is exact (|c| < 2^24 fits a float's mantissa; ldexp by a power of two is exact).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io::encoding {

struct fixed_point_code {
  int integer_bits = 1;   ///< IL (with the sign bit)
  int fraction_bits = 0;  ///< FL
  std::vector<std::uint32_t> codes;  ///< WL-bit two's complement
  int bits() const { return integer_bits + fraction_bits; }
};

inline constexpr int max_fraction_bits = 40;

inline std::optional<fixed_point_code> encode_fixed_point(const float* values, std::size_t n, int max_bits = 16) {
  int fl = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) return std::nullopt;
    while (fl <= max_fraction_bits && std::ldexp(v, fl) != std::nearbyint(std::ldexp(v, fl))) ++fl;
    if (fl > max_fraction_bits) return std::nullopt;
  }
  std::int64_t lo = 0, hi = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double c = std::ldexp(static_cast<double>(values[i]), fl);
    if (std::abs(c) > 1e15) return std::nullopt;
    lo = std::min(lo, static_cast<std::int64_t>(c));
    hi = std::max(hi, static_cast<std::int64_t>(c));
  }
  int wl = 1;  // -2^(wl-1) <= c <= 2^(wl-1) - 1
  while (wl <= max_bits && (lo < -(std::int64_t{1} << (wl - 1)) || hi > (std::int64_t{1} << (wl - 1)) - 1)) ++wl;
  if (wl > max_bits) return std::nullopt;
  fixed_point_code f;
  f.fraction_bits = fl;
  f.integer_bits = wl - fl;
  f.codes.resize(n);
  const std::uint64_t mask = (std::uint64_t{1} << wl) - 1;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::int64_t>(std::ldexp(static_cast<double>(values[i]), fl));
    f.codes[i] = static_cast<std::uint32_t>(static_cast<std::uint64_t>(c) & mask);
  }
  return f;
}

/// out[i] = sign_extend(codes[i]) 2^-FL; io_error naming `what` on an impossible <IL, FL>.
inline void decode_fixed_point(int integer_bits, int fraction_bits, const std::vector<std::uint32_t>& codes, float* out,
                               const std::string& what) {
  const int wl = integer_bits + fraction_bits;
  if (wl < 1 || wl > 24 || fraction_bits < 0 || fraction_bits > max_fraction_bits) {
    slimnet::detail::raise<io_error>("slimnet::io::encoding::decode_fixed_point", "{}: fixed-point format <{}, {}> is not supported",
                                     what, integer_bits, fraction_bits);
  }
  const std::int64_t half = std::int64_t{1} << (wl - 1);
  for (std::size_t i = 0; i < codes.size(); ++i) {
    std::int64_t c = static_cast<std::int64_t>(codes[i]);
    if (c >= half) c -= 2 * half;  // sign extension
    out[i] = static_cast<float>(std::ldexp(static_cast<double>(c), -fraction_bits));
  }
}

}  // namespace slimnet::io::encoding
