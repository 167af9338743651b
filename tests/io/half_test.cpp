// F16 / BF16 conversions against hand-computed bit patterns: exact values, ties to even,
// subnormals, overflow to Inf, NaN, signed zero, and a single rounding from double.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "slimnet/io/half.hpp"

using namespace slimnet;

namespace {
std::uint32_t bits_of(float v) {
  std::uint32_t x;
  std::memcpy(&x, &v, 4);
  return x;
}
}  // namespace

TEST_CASE("double -> F16 rounds to nearest even with subnormals, Inf and NaN", "[io][half]") {
  CHECK(io::double_to_f16(1.0) == 0x3c00);
  CHECK(io::double_to_f16(-2.0) == 0xc000);
  CHECK(io::double_to_f16(0.1) == 0x2e66);  // 0.0999755859375
  CHECK(io::double_to_f16(0.0) == 0x0000);
  CHECK(io::double_to_f16(-0.0) == 0x8000);
  CHECK(io::double_to_f16(65504.0) == 0x7bff);  // largest finite
  CHECK(io::double_to_f16(65519.99) == 0x7bff);  // below max + ulp/2
  CHECK(io::double_to_f16(65520.0) == 0x7c00);   // the tie rounds to even = Inf
  CHECK(io::double_to_f16(-1e10) == 0xfc00);
  CHECK(io::double_to_f16(std::numeric_limits<double>::infinity()) == 0x7c00);
  CHECK(io::double_to_f16(-std::numeric_limits<double>::infinity()) == 0xfc00);
  const std::uint16_t nan = io::double_to_f16(std::numeric_limits<double>::quiet_NaN());
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
  // Ties: 1 + 2^-11 is halfway between 1 (even mantissa) and 1 + 2^-10: goes to 1.
  CHECK(io::double_to_f16(1.0 + std::ldexp(1.0, -11)) == 0x3c00);
  // 1 + 3*2^-11 is halfway between 0x3c01 (odd) and 0x3c02 (even).
  CHECK(io::double_to_f16(1.0 + 3 * std::ldexp(1.0, -11)) == 0x3c02);
  // Just above a tie rounds up; a float-first conversion would round twice and land on 0x3c00.
  CHECK(io::double_to_f16(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)) == 0x3c01);
  CHECK(io::float_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  // Normal/subnormal boundary and subnormals (unit 2^-24).
  CHECK(io::double_to_f16(std::ldexp(1.0, -14)) == 0x0400);
  CHECK(io::double_to_f16(1023 * std::ldexp(1.0, -24)) == 0x03ff);
  CHECK(io::double_to_f16(std::ldexp(1.0, -24)) == 0x0001);
  CHECK(io::double_to_f16(std::ldexp(1.0, -25)) == 0x0000);           // tie with 0: even
  CHECK(io::double_to_f16(1.5 * std::ldexp(1.0, -25)) == 0x0001);     // above the tie
  CHECK(io::double_to_f16(1.5 * std::ldexp(1.0, -24)) == 0x0002);     // tie between 1 and 2 units
  CHECK(io::double_to_f16(2.5 * std::ldexp(1.0, -24)) == 0x0002);     // tie between 2 and 3 units
  CHECK(io::double_to_f16(-std::ldexp(1.0, -30)) == 0x8000);          // underflow keeps the sign
  CHECK(io::double_to_f16(1023.5 * std::ldexp(1.0, -24)) == 0x0400);  // rounds up into the normals
}

TEST_CASE("F16 -> float is exact", "[io][half]") {
  CHECK(io::f16_to_float(0x3c00) == 1.0f);
  CHECK(io::f16_to_float(0x3555) == 0.333251953125f);
  CHECK(io::f16_to_float(0x7bff) == 65504.0f);
  CHECK(io::f16_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(io::f16_to_float(0x03ff) == 1023 * std::ldexp(1.0f, -24));
  CHECK(io::f16_to_float(0x0400) == std::ldexp(1.0f, -14));
  CHECK(bits_of(io::f16_to_float(0x8000)) == 0x80000000u);
  CHECK(io::f16_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(io::f16_to_float(0x7e00)));
  CHECK(std::isnan(io::f16_to_float(0x7c01)));  // a signalling-NaN pattern stays NaN
  // Every finite F16 value survives float -> F16 unchanged.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    const auto bits = static_cast<std::uint16_t>(h);
    REQUIRE(io::float_to_f16(io::f16_to_float(bits)) == bits);
  }
}

TEST_CASE("double -> BF16 rounds to nearest even with subnormals, Inf and NaN", "[io][half]") {
  CHECK(io::double_to_bf16(1.0) == 0x3f80);
  CHECK(io::float_to_bf16(3.14159265f) == 0x4049);
  CHECK(io::double_to_bf16(1.0 + std::ldexp(1.0, -8)) == 0x3f80);      // tie, even
  CHECK(io::double_to_bf16(1.0 + 3 * std::ldexp(1.0, -8)) == 0x3f82);  // tie, even
  CHECK(io::double_to_bf16(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)) == 0x3f81);
  CHECK(io::float_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // above max + ulp/2
  CHECK(io::double_to_bf16(static_cast<double>(io::bf16_to_float(0x7f7f))) == 0x7f7f);
  CHECK(io::double_to_bf16(1e300) == 0x7f80);
  CHECK(io::double_to_bf16(-std::numeric_limits<double>::infinity()) == 0xff80);
  CHECK(io::double_to_bf16(std::ldexp(1.0, -126)) == 0x0080);
  CHECK(io::double_to_bf16(std::ldexp(1.0, -133)) == 0x0001);
  CHECK(io::double_to_bf16(1.5 * std::ldexp(1.0, -133)) == 0x0002);
  CHECK(io::double_to_bf16(std::ldexp(1.0, -134)) == 0x0000);
  CHECK(io::float_to_bf16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(io::double_to_bf16(-0.0) == 0x8000);
  const std::uint16_t nan = io::float_to_bf16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x007f) != 0);
  CHECK(io::bf16_to_float(0x3f80) == 1.0f);
  CHECK(io::bf16_to_float(0x0001) == std::ldexp(1.0f, -133));
  CHECK(std::isnan(io::bf16_to_float(0x7fc0)));
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    if ((b & 0x7f80) == 0x7f80) continue;
    const auto bits = static_cast<std::uint16_t>(b);
    REQUIRE(io::float_to_bf16(io::bf16_to_float(bits)) == bits);
  }
}

TEST_CASE("float -> F16 agrees with a reference that rounds through exact arithmetic", "[io][half]") {
  // Reference: the nearest F16 value found by comparing distances to the two neighbouring F16
  // values in double (exact for these magnitudes), ties to the even pattern.
  std::uint32_t state = 12345;
  for (int n = 0; n < 20000; ++n) {
    state = state * 1664525u + 1013904223u;
    const float v = std::ldexp(static_cast<float>(state >> 8) / 16777216.0f, static_cast<int>(state % 40) - 26);
    const std::uint16_t got = io::float_to_f16(v);
    const double d = static_cast<double>(v);
    std::uint16_t lo = 0;
    for (std::uint16_t step = 0x4000; step != 0; step >>= 1) {  // largest pattern with value <= d
      const auto probe = static_cast<std::uint16_t>(lo | step);
      if (probe <= 0x7c00 && static_cast<double>(io::f16_to_float(probe)) <= d) lo = probe;
    }
    std::uint16_t expected = lo;
    if (static_cast<double>(io::f16_to_float(lo)) != d) {  // |v| < 2^13 here: hi is finite
      const auto hi = static_cast<std::uint16_t>(lo + 1);
      const double dl = d - static_cast<double>(io::f16_to_float(lo));
      const double dh = static_cast<double>(io::f16_to_float(hi)) - d;
      expected = (dl < dh || (dl == dh && (lo & 1) == 0)) ? lo : hi;
    }
    INFO("v = " << v);
    REQUIRE(got == expected);
  }
}
