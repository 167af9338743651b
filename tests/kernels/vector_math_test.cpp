// The vectorised tanh and sigmoid (kernels/vector_math.hpp) against std::tanh and 1 / (1 + e^-x) in
// double: every float of [-10, 10] on a 2^-12 grid plus +-1e-30 .. 1e30 (far past the clamp at
// 7.9), within the header's stated bounds (tanh: 3e-7 absolute and relative; sigmoid: 2e-7
// absolute); NaN, +-inf and -0; every length 0..40 (full vectors and masked tails, in place too),
// outputs poisoned with NaN first. Every family the CPU has (forced with set_isa), and the path
// that ran (vector_math_path_calls).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/vector_math.hpp"
#include "support/isa_families.hpp"
#include "support/poison.hpp"

using slimnet::kernels::isa;
using slimnet::testing::poison;
using vector_math_isa_guard = slimnet::testing::isa_reset_guard;

namespace {

std::vector<float> vector_math_test_inputs() {
  std::vector<float> x;
  for (int k = -10 * 4096; k <= 10 * 4096; ++k) x.push_back(static_cast<float>(k) / 4096.0f);
  for (double v = 1e-30; v < 1e30; v *= 1.07) {
    x.push_back(static_cast<float>(v));
    x.push_back(static_cast<float>(-v));
  }
  return x;
}

}  // namespace

TEST_CASE("vector tanh is within 3e-7 of std::tanh, absolute and relative", "[kernels][vector_math][dispatch]") {
  vector_math_isa_guard guard;
  const std::vector<float> x = vector_math_test_inputs();
  for (isa family : slimnet::testing::isa_families()) {
    slimnet::kernels::set_isa(family);
    INFO("family " << slimnet::kernels::isa_name(family));
    CHECK(slimnet::kernels::vector_math_path() == slimnet::testing::x86_simd_expected(family));
    std::vector<float> y(x.size());
    poison(y);
    const auto calls = slimnet::kernels::vector_math_path_calls(slimnet::testing::x86_simd_expected(family));
    slimnet::kernels::tanh_array(x.data(), y.data(), x.size());
    CHECK(slimnet::kernels::vector_math_path_calls(slimnet::testing::x86_simd_expected(family)) == calls + 1);
    double worst_abs = 0, worst_rel = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double want = std::tanh(static_cast<double>(x[i]));
      REQUIRE_FALSE(std::isnan(y[i]));
      const double err = std::abs(static_cast<double>(y[i]) - want);
      worst_abs = std::max(worst_abs, err);
      if (want != 0) worst_rel = std::max(worst_rel, err / std::abs(want));
      REQUIRE(std::abs(y[i]) <= 1.0f);                                   // never past +-1
      if (x[i] != 0) REQUIRE(std::signbit(y[i]) == std::signbit(x[i]));  // odd
    }
    INFO("worst absolute " << worst_abs << ", relative " << worst_rel);
    CHECK(worst_abs <= 3e-7);
    CHECK(worst_rel <= 3e-7);
    // Away from 0 it is no better than a few ulp, so the comparison above is not vacuous.
    CHECK(worst_abs > 1e-9);
  }
}

TEST_CASE("vector sigmoid is within 2e-7 of 1 / (1 + exp(-x))", "[kernels][vector_math][dispatch]") {
  vector_math_isa_guard guard;
  const std::vector<float> x = vector_math_test_inputs();
  for (isa family : slimnet::testing::isa_families()) {
    slimnet::kernels::set_isa(family);
    INFO("family " << slimnet::kernels::isa_name(family));
    std::vector<float> y(x.size());
    poison(y);
    const auto calls = slimnet::kernels::vector_math_path_calls(slimnet::testing::x86_simd_expected(family));
    slimnet::kernels::sigmoid_array(x.data(), y.data(), x.size());
    CHECK(slimnet::kernels::vector_math_path_calls(slimnet::testing::x86_simd_expected(family)) == calls + 1);
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(x[i])));
      REQUIRE_FALSE(std::isnan(y[i]));
      REQUIRE(y[i] >= 0.0f);
      REQUIRE(y[i] <= 1.0f);
      worst = std::max(worst, std::abs(static_cast<double>(y[i]) - want));
    }
    INFO("worst absolute " << worst);
    CHECK(worst <= 2e-7);
    REQUIRE(x[10 * 4096] == 0.0f);
    CHECK(y[10 * 4096] == 0.5f);
  }
}

TEST_CASE("vector tanh and sigmoid: NaN stays NaN, infinities saturate, -0 keeps its sign", "[kernels][vector_math][dispatch]") {
  vector_math_isa_guard guard;
  for (isa family : slimnet::testing::isa_families()) {
    slimnet::kernels::set_isa(family);
    INFO("family " << slimnet::kernels::isa_name(family));
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    // 16 lanes plus a tail of 3 (two 8-lane vectors and a tail of 3 on AVX2): the specials sit in both the full vectors and the
    // masked tail.
    std::vector<float> x{nan,   inf,  -inf,  -0.0f, 0.0f, 1e-3f, -2.0f, 100.0f, 3.0f, 0.25f,
                         -7.0f, 8.0f, -9.0f, 0.5f,  1.0f, -1.0f, nan,   -inf,   -0.0f};
    std::vector<float> t(x.size()), s(x.size());
    poison(t);
    poison(s);
    slimnet::kernels::tanh_array(x.data(), t.data(), x.size());
    slimnet::kernels::sigmoid_array(x.data(), s.data(), x.size());
    for (std::size_t base : {std::size_t{0}, std::size_t{16}}) {
      CHECK(std::isnan(t[base]));
      CHECK(std::isnan(s[base]));
    }
    CHECK(t[1] == Approx(1.0f).margin(3e-7));
    CHECK(t[2] == Approx(-1.0f).margin(3e-7));
    CHECK(t[17] == Approx(-1.0f).margin(3e-7));
    CHECK(s[1] == Approx(1.0f).margin(2e-7));
    CHECK(s[2] == Approx(0.0f).margin(2e-7));
    CHECK(t[3] == 0.0f);
    CHECK(std::signbit(t[3]));
    CHECK(std::signbit(t[18]));
    CHECK(t[4] == 0.0f);
    CHECK_FALSE(std::signbit(t[4]));
    CHECK(s[3] == 0.5f);
    CHECK(t[7] == Approx(1.0f).margin(3e-7));
  }
}

TEST_CASE("vector tanh and sigmoid write exactly n values, in place too", "[kernels][vector_math][dispatch]") {
  vector_math_isa_guard guard;
  for (isa family : slimnet::testing::isa_families()) {
    slimnet::kernels::set_isa(family);
    for (std::size_t n = 0; n <= 40; ++n) {
      INFO("family " << slimnet::kernels::isa_name(family) << ", n = " << n);
      std::vector<float> x(n + 3), y(n + 3), s(n + 3);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.37f * static_cast<float>(i) - 5.0f;
      poison(y);
      poison(s);
      slimnet::kernels::tanh_array(x.data(), y.data(), n);
      slimnet::kernels::sigmoid_array(x.data(), s.data(), n);
      for (std::size_t i = 0; i < n; ++i) {
        REQUIRE(y[i] == Approx(std::tanh(x[i])).margin(3e-7));
        REQUIRE(s[i] == Approx(1.0 / (1.0 + std::exp(-static_cast<double>(x[i])))).margin(2e-7));
      }
      for (std::size_t i = n; i < y.size(); ++i) {
        REQUIRE(std::isnan(y[i]));  // past n: untouched
        REQUIRE(std::isnan(s[i]));
      }
      std::vector<float> z = x;
      slimnet::kernels::tanh_array(z.data(), z.data(), n);
      for (std::size_t i = 0; i < n; ++i) REQUIRE(z[i] == y[i]);
    }
  }
}
