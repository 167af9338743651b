// The run-time dispatched int8 and int16 GEMMs: every path this CPU can run (and on the avx2 path
// both int8 kernels, AVX-VNNI and vpmaddwd; on the neon path both, SDOT and widened products),
// forced with set_isa, against the exact reference over
// odd shapes, full value ranges (-128, 255), poisoned outputs, and the path that actually ran.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/int8_gemm.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using kernels::isa;
using slimnet::testing::poison;

namespace {

struct int_dispatch_guard {
  ~int_dispatch_guard() {
    kernels::reset_isa();
#if defined(SLIMNET_DISPATCH_X86)
    kernels::detail::avx2::allow_avx_vnni() = true;
#endif
#if defined(SLIMNET_INT_NEON)
    kernels::detail::neon::allow_sdot() = true;
#endif
  }
};

/// A run configuration: a family and whether int8 may use its dot-product instruction (avx2:
/// AVX-VNNI, neon: SDOT) where the CPU has it.
struct int_dispatch_mode {
  isa family;
  bool dot;
};

std::vector<int_dispatch_mode> int_dispatch_modes() {
  std::vector<int_dispatch_mode> out;
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon}) {
    if (!kernels::isa_supported(i)) continue;
    out.push_back({i, true});
    if (i == isa::avx2 && kernels::cpu_features().avx_vnni) out.push_back({i, false});
    if (i == isa::neon && kernels::cpu_features().asimddp) out.push_back({i, false});
  }
  return out;
}

void int_dispatch_apply(const int_dispatch_mode& mode) {
  kernels::set_isa(mode.family);
#if defined(SLIMNET_DISPATCH_X86)
  kernels::detail::avx2::allow_avx_vnni() = mode.dot;
#endif
#if defined(SLIMNET_INT_NEON)
  kernels::detail::neon::allow_sdot() = mode.dot;
#endif
}

/// The path an active family leads to on this CPU.
isa int_dispatch_expected(isa active) {
#if defined(SLIMNET_DISPATCH_X86)
  if (active == isa::avx512) return kernels::cpu_features().avx512_vnni ? isa::avx512 : isa::avx2;
  if (active == isa::avx2) return isa::avx2;
#endif
#if defined(SLIMNET_INT_NEON)
  if (active == isa::neon) return isa::neon;
#endif
  (void)active;
  return isa::portable;
}

template <class T>
std::vector<T> int_dispatch_values(index_t n, int lo, int hi, rng& gen) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(lo + static_cast<int>(gen.below(static_cast<std::uint64_t>(hi - lo + 1))));
  return v;
}

struct int_dispatch_shape {
  index_t m, k, n;
};

// rows around the tiles (6 on every path), columns around 8, 16 and the 64-column panel, K around
// the lane groups (2, 4) and 64
const std::vector<int_dispatch_shape> int_dispatch_shapes = {
    {1, 1, 1},   {1, 4, 1},    {2, 3, 5},    {5, 7, 8},    {6, 8, 9},     {7, 13, 15},  {6, 64, 16},  {11, 63, 17},  {12, 65, 33},
    {13, 67, 63}, {17, 66, 64}, {3, 5, 65},   {25, 31, 67}, {67, 67, 67},  {1, 500, 130}, {64, 801, 10}, {9, 1023, 40}, {40, 2, 100}};

/// One integer type pairing through gemm (packed B) against reference, int32 and float output,
/// 1 and 3 threads, in the current mode.
template <class A, class B, class Gemm, class Ref>
void int_dispatch_check(int a_lo, int a_hi, int b_lo, int b_hi, Gemm gemm, Ref reference, rng& gen) {
  const isa expected = int_dispatch_expected(kernels::active_isa());
  REQUIRE(kernels::gemm_int_path() == expected);
  for (const auto& s : int_dispatch_shapes) {
    INFO("isa " << kernels::isa_name(kernels::active_isa()) << " avx-vnni " << kernels::gemm_int8_avx_vnni() << " sdot "
                << kernels::gemm_int8_sdot() << " M " << s.m << " K " << s.k << " N " << s.n);
    auto a = int_dispatch_values<A>(s.m * s.k, a_lo, a_hi, gen);
    auto w = int_dispatch_values<B>(s.n * s.k, b_lo, b_hi, gen);
    a[0] = static_cast<A>(a_lo);  // the extremes, where a saturating kernel would go wrong
    w[0] = static_cast<B>(b_lo);
    if (a.size() > 1) a[1] = static_cast<A>(a_hi);
    if (w.size() > 1) w[1] = static_cast<B>(b_lo);
    const auto av = kernels::row_major<const A>(a.data(), s.m, s.k);
    const auto bv = kernels::row_major<const B>(w.data(), s.n, s.k).transposed();
    const kernels::int_packed_rhs<B> packed(bv);
    std::vector<float> rs(static_cast<std::size_t>(s.m)), cs(static_cast<std::size_t>(s.n)), bias(cs.size());
    for (auto& v : rs) v = static_cast<float>(gen.uniform(0.001, 0.1));
    for (auto& v : cs) v = static_cast<float>(gen.uniform(0.001, 0.1));
    for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
    std::vector<std::int32_t> ref(static_cast<std::size_t>(s.m * s.n)), got(ref.size());
    std::vector<float> ref_f(ref.size()), got_f(ref.size());
    kernels::int_gemm_params deq;
    deq.row_scale = rs.data();
    deq.col_scale = cs.data();
    deq.col_bias = bias.data();
    poison(ref);
    poison(ref_f);
    reference(av, bv, kernels::row_major(ref.data(), s.m, s.n), kernels::int_gemm_params{});
    reference(av, bv, kernels::row_major(ref_f.data(), s.m, s.n), deq);
    for (int threads : {1, 3}) {
      INFO("threads " << threads);
      kernels::int_gemm_params p;
      p.threads = threads;
      deq.threads = threads;
      const std::uint64_t before = kernels::gemm_int_path_calls(expected), sdot_before = kernels::gemm_int8_sdot_calls();
      poison(got);
      gemm(av, packed, kernels::row_major(got.data(), s.m, s.n), p);
      CHECK(kernels::gemm_int_path_calls(expected) == before + 1);
      CHECK(got == ref);
      poison(got_f);
      gemm(av, packed, kernels::row_major(got_f.data(), s.m, s.n), deq);
      CHECK(kernels::gemm_int_path_calls(expected) == before + 2);
      // int8 on the neon path: both calls ran SDOT exactly when the CPU has it and the mode allows it
      const bool sdot = std::is_same_v<B, std::int8_t> && expected == isa::neon && kernels::gemm_int8_sdot();
      CHECK(kernels::gemm_int8_sdot_calls() - sdot_before == (sdot ? 2u : 0u));
      for (std::size_t q = 0; q < ref_f.size(); ++q) {
        // both compute scale * float(sum) + bias in float: equal up to contraction into an FMA
        if (!(std::abs(got_f[q] - ref_f[q]) <= 1e-5f * (1.0f + std::abs(ref_f[q])))) {
          FAIL_CHECK("float output " << q << ": " << got_f[q] << " vs " << ref_f[q]);
          break;
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("gemm_int8 / gemm_int16: every path the CPU has equals the reference over odd shapes", "[kernels][int8][dispatch]") {
  int_dispatch_guard guard;
  rng gen(1621);
  auto gemm8 = [](auto a, const kernels::int8_packed_rhs& b, auto c, const kernels::int_gemm_params& p) { kernels::gemm_int8(a, b, c, p); };
  auto ref8 = [](auto a, auto b, auto c, const kernels::int_gemm_params& p) { kernels::gemm_int8_reference(a, b, c, p); };
  auto gemm16 = [](auto a, const kernels::int16_packed_rhs& b, auto c, const kernels::int_gemm_params& p) { kernels::gemm_int16(a, b, c, p); };
  auto ref16 = [](auto a, auto b, auto c, const kernels::int_gemm_params& p) { kernels::gemm_int16_reference(a, b, c, p); };
  for (const auto& mode : int_dispatch_modes()) {
    int_dispatch_apply(mode);
    int_dispatch_check<std::uint8_t, std::int8_t>(0, 255, -128, 127, gemm8, ref8, gen);
    int_dispatch_check<std::int8_t, std::int8_t>(-128, 127, -128, 127, gemm8, ref8, gen);
    // int16 in a range whose sums stay exact in int32 up to K = 1023 (1023 * 1400^2 < 2^31)
    int_dispatch_check<std::int16_t, std::int16_t>(-1400, 1400, -1400, 1400, gemm16, ref16, gen);
  }
}

TEST_CASE("gemm_int8: kernel_path::portable and strided operands run the portable path", "[kernels][int8][dispatch]") {
  int_dispatch_guard guard;
  rng gen(1622);
  const index_t m = 9, k = 70, n = 21;
  const auto a = int_dispatch_values<std::uint8_t>(m * k, 0, 255, gen);
  const auto w = int_dispatch_values<std::int8_t>(n * k, -128, 127, gen);
  const auto bv = kernels::row_major<const std::int8_t>(w.data(), n, k).transposed();
  std::vector<std::int32_t> ref(static_cast<std::size_t>(m * n)), got(ref.size()), got_t(ref.size());
  kernels::gemm_int8_reference(kernels::row_major<const std::uint8_t>(a.data(), m, k), bv, kernels::row_major(ref.data(), m, n));
  kernels::int_gemm_params portable;
  portable.path = kernels::kernel_path::portable;
  for (const auto& mode : int_dispatch_modes()) {
    INFO(kernels::isa_name(mode.family));
    int_dispatch_apply(mode);
    CHECK(kernels::gemm_int_path(portable) == isa::portable);
    std::uint64_t before = kernels::gemm_int_path_calls(isa::portable);
    poison(got);
    kernels::gemm_int8(kernels::row_major<const std::uint8_t>(a.data(), m, k), bv, kernels::row_major(got.data(), m, n), portable);
    CHECK(kernels::gemm_int_path_calls(isa::portable) == before + 1);
    CHECK(got == ref);
    // C column-major (no unit column stride): portable whatever the family
    before = kernels::gemm_int_path_calls(isa::portable);
    poison(got_t);
    kernels::gemm_int8(kernels::row_major<const std::uint8_t>(a.data(), m, k), bv, kernels::row_major(got_t.data(), n, m).transposed());
    CHECK(kernels::gemm_int_path_calls(isa::portable) == before + 1);
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) CHECK(got_t[static_cast<std::size_t>(j * m + i)] == ref[static_cast<std::size_t>(i * n + j)]);
  }
#if defined(SLIMNET_DISPATCH_X86)
  if (kernels::isa_supported(isa::avx2)) {
    kernels::reset_isa();
    if (kernels::active_isa() != isa::portable) CHECK(kernels::gemm_int_path() != isa::portable);
  }
#endif
}

#if defined(SLIMNET_INT_NEON)
TEST_CASE("gemm_int8 on aarch64: the automatic path is neon and runs SDOT where the CPU has the dot product",
          "[kernels][int8][dispatch]") {
  int_dispatch_guard guard;
  kernels::reset_isa();
  if (kernels::active_isa() == isa::portable) return;  // SLIMNET_ISA=portable
  CHECK(kernels::gemm_int_path() == isa::neon);
#if defined(SLIMNET_INT_SDOT)
  CHECK(kernels::gemm_int8_sdot() == kernels::cpu_features().asimddp);
#else
  CHECK_FALSE(kernels::gemm_int8_sdot());
#endif
  kernels::detail::neon::allow_sdot() = false;
  CHECK_FALSE(kernels::gemm_int8_sdot());
  // a 7 x 70 by 70 x 21 product, int32 output: one neon call, SDOT only when allowed and present
  rng gen(1623);
  const auto a = int_dispatch_values<std::int8_t>(7 * 70, -128, 127, gen);
  const auto w = int_dispatch_values<std::int8_t>(21 * 70, -128, 127, gen);
  const auto av = kernels::row_major<const std::int8_t>(a.data(), 7, 70);
  const auto bv = kernels::row_major<const std::int8_t>(w.data(), 21, 70).transposed();
  std::vector<std::int32_t> ref(7 * 21), got(ref.size());
  kernels::gemm_int8_reference(av, bv, kernels::row_major(ref.data(), 7, 21));
  for (bool allow : {false, true}) {
    kernels::detail::neon::allow_sdot() = allow;
    const std::uint64_t neon_before = kernels::gemm_int_path_calls(isa::neon), sdot_before = kernels::gemm_int8_sdot_calls();
    poison(got);
    kernels::gemm_int8(av, bv, kernels::row_major(got.data(), 7, 21));
    CHECK(got == ref);
    CHECK(kernels::gemm_int_path_calls(isa::neon) == neon_before + 1);
    CHECK(kernels::gemm_int8_sdot_calls() == sdot_before + (allow && kernels::gemm_int8_sdot() ? 1u : 0u));
  }
}
#endif
