// The run-time dispatched XNOR/popcount GEMM and sign packing: every path this CPU can run, forced
// with set_isa, against the reference over odd shapes, and the path that actually ran.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/binary_gemm.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using kernels::isa;
using slimnet::testing::poison;

namespace {

struct binary_dispatch_isa_guard {
  ~binary_dispatch_isa_guard() { kernels::reset_isa(); }
};

std::vector<float> binary_dispatch_values(index_t n, rng& gen) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(gen.uniform(-1, 1));
  return v;
}

/// The families this CPU runs, portable first.
std::vector<isa> binary_dispatch_families() {
  std::vector<isa> out;
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon})
    if (kernels::isa_supported(i)) out.push_back(i);
  return out;
}

/// The XNOR path an active family leads to on this CPU.
isa binary_dispatch_expected_path(isa active) {
#if defined(SLIMNET_DISPATCH_X86)
  if (active == isa::avx512) return kernels::cpu_features().avx512_vpopcntdq ? isa::avx512 : isa::avx2;
  if (active == isa::avx2) return isa::avx2;
#elif defined(__aarch64__)
  if (active == isa::neon) return isa::neon;
#endif
  (void)active;
  return isa::portable;
}

}  // namespace

TEST_CASE("gemm_xnor: every path the CPU has equals the reference over odd shapes", "[kernels][binary][dispatch]") {
  binary_dispatch_isa_guard guard;
  rng gen(1601);
  struct mkn {
    index_t m, k, n;
  };
  // rows around the tiles (4 on avx2, 6 on avx512), columns around 8 and the 32-column panel,
  // K around a word, K = 0 (every dot 0), and 30 rows of 600 words: more than one of the avx2
  // path's row blocks (its split rows stay within 16384 words: 12 rows at this K), the last one
  // partial, and with 3 threads a thread's rows ending inside a 4-row tile
  const std::vector<mkn> shapes = {{1, 1, 1},      {1, 64, 1},   {3, 63, 7},     {4, 64, 8},    {5, 65, 9},
                                   {7, 127, 31},   {6, 128, 32}, {13, 129, 33},  {25, 191, 40}, {37, 800, 67},
                                   {64, 1025, 10}, {101, 3, 97}, {2, 2304, 257}, {9, 0, 5},     {30, 38400, 9}};
  for (isa family : binary_dispatch_families()) {
    kernels::set_isa(family);
    const isa expected = binary_dispatch_expected_path(family);
    for (const auto& s : shapes) {
      INFO("isa " << kernels::isa_name(family) << " M " << s.m << " K " << s.k << " N " << s.n);
      const auto a = binary_dispatch_values(s.m * s.k, gen), b = binary_dispatch_values(s.n * s.k, gen);
      const auto abits = kernels::pack_signs(kernels::row_major<const float>(a.data(), s.m, s.k));
      const auto bbits = kernels::pack_signs(kernels::row_major<const float>(b.data(), s.n, s.k));
      const kernels::xnor_packed_rhs packed(bbits.ref());
      const auto scale = binary_dispatch_values(s.n, gen), bias = binary_dispatch_values(s.n, gen);
      kernels::xnor_params affine;
      affine.col_scale = scale.data();
      affine.col_bias = bias.data();

      std::vector<std::int32_t> ref(static_cast<std::size_t>(s.m * s.n)), got(ref.size());
      std::vector<float> ref_f(ref.size()), got_f(ref.size());
      poison(ref);
      poison(ref_f);
      kernels::gemm_xnor_reference(abits.ref(), bbits.ref(), kernels::row_major(ref.data(), s.m, s.n));
      kernels::gemm_xnor_reference(abits.ref(), bbits.ref(), kernels::row_major(ref_f.data(), s.m, s.n), affine);
      for (int threads : {1, 3}) {
        INFO("threads " << threads);
        kernels::xnor_params p;
        p.threads = threads;
        affine.threads = threads;
        REQUIRE(kernels::gemm_xnor_path(p) == expected);
        poison(got);
        const std::uint64_t before = kernels::gemm_xnor_path_calls(expected);
        kernels::gemm_xnor(abits.ref(), packed, kernels::row_major(got.data(), s.m, s.n), p);
        CHECK(kernels::gemm_xnor_path_calls(expected) == before + 1);  // this path ran, once per call
        CHECK(got == ref);
        poison(got_f);
        kernels::gemm_xnor(abits.ref(), packed, kernels::row_major(got_f.data(), s.m, s.n), affine);
        CHECK(kernels::gemm_xnor_path_calls(expected) == before + 2);
        for (std::size_t q = 0; q < ref_f.size(); ++q) {
          // both compute scale * float(dot) + bias in float: equal up to contraction into an FMA
          if (!(std::abs(got_f[q] - ref_f[q]) <= 1e-5f * (1.0f + std::abs(ref_f[q])))) {
            FAIL_CHECK("float output " << q << ": " << got_f[q] << " vs " << ref_f[q]);
            break;
          }
        }
      }
    }
  }
}

TEST_CASE("gemm_xnor: kernel_path::portable runs the portable path whatever the active family", "[kernels][binary][dispatch]") {
  binary_dispatch_isa_guard guard;
  rng gen(1602);
  const index_t m = 11, k = 200, n = 45;
  const auto a = binary_dispatch_values(m * k, gen), b = binary_dispatch_values(n * k, gen);
  const auto abits = kernels::pack_signs(kernels::row_major<const float>(a.data(), m, k));
  const auto bbits = kernels::pack_signs(kernels::row_major<const float>(b.data(), n, k));
  std::vector<std::int32_t> ref(static_cast<std::size_t>(m * n)), got(ref.size());
  kernels::gemm_xnor_reference(abits.ref(), bbits.ref(), kernels::row_major(ref.data(), m, n));
  kernels::xnor_params portable;
  portable.path = kernels::kernel_path::portable;
  for (isa family : binary_dispatch_families()) {
    INFO(kernels::isa_name(family));
    kernels::set_isa(family);
    CHECK(kernels::gemm_xnor_path(portable) == isa::portable);
    const std::uint64_t before = kernels::gemm_xnor_path_calls(isa::portable);
    poison(got);
    kernels::gemm_xnor(abits.ref(), bbits.ref(), kernels::row_major(got.data(), m, n), portable);
    CHECK(kernels::gemm_xnor_path_calls(isa::portable) == before + 1);
    CHECK(got == ref);
  }
  // On an x86-64 CPU with AVX2 the automatic path is never the portable one: the fast paths are
  // compiled in whatever -march the tests were built with.
#if defined(SLIMNET_DISPATCH_X86)
  if (kernels::isa_supported(isa::avx2)) {
    kernels::reset_isa();
    if (kernels::active_isa() != isa::portable) CHECK(kernels::gemm_xnor_path() != isa::portable);
  }
#endif
}

TEST_CASE("pack_signs: every path the CPU has packs the same bits as one value at a time", "[kernels][binary][dispatch]") {
  binary_dispatch_isa_guard guard;
  rng gen(1603);
  for (const index_t cols : {index_t{1}, index_t{63}, index_t{64}, index_t{65}, index_t{200}, index_t{1024}}) {
    const index_t rows = 5;
    auto x = binary_dispatch_values(rows * cols, gen);
    // the edge values: -0 and NaN pack as +1 (bit 0), the smallest negative as -1
    x[0] = -0.0f;
    if (cols > 2) x[2] = std::nanf("");
    if (cols > 3) x[3] = -1e-38f;
    if (cols > 40) x[40] = 0.0f;
    kernels::bit_matrix expected(rows, cols);
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) expected.set(i, j, x[static_cast<std::size_t>(i * cols + j)] < 0.0f ? -1 : 1);
    for (isa family : binary_dispatch_families()) {
      INFO("isa " << kernels::isa_name(family) << " cols " << cols);
      kernels::set_isa(family);
      kernels::bit_matrix got(rows, cols);
      for (index_t i = 0; i < rows; ++i)
        for (index_t w = 0; w < got.row_words(); ++w) got.row(i)[w] = ~kernels::bit_word{0};  // poisoned words
      kernels::pack_signs(kernels::row_major<const float>(x.data(), rows, cols), got);
      for (index_t i = 0; i < rows; ++i)
        for (index_t w = 0; w < got.row_words(); ++w) CHECK(got.row(i)[w] == expected.row(i)[w]);
    }
  }
}
