// The run-time dispatched fp32 GEMM: every family this CPU can run, forced with set_isa, against
// gemm_reference over odd shapes (1..67 in M, N and K), every storage order of A, B and C, with C
// poisoned, and the path that actually ran (on aarch64: neon and portable).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/gemm.hpp"

using namespace slimnet;
using kernels::isa;

namespace {

struct gemm_dispatch_isa_guard {
  ~gemm_dispatch_isa_guard() { kernels::reset_isa(); }
};

/// The families this CPU runs, portable first.
std::vector<isa> gemm_dispatch_families() {
  std::vector<isa> out;
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon})
    if (kernels::isa_supported(i)) out.push_back(i);
  return out;
}

/// The family that computes an m x n float product under `active`: the kernels take every shape
/// except 2-3 rows or columns of C (Eigen's), and only x86-64 and aarch64 have them.
isa gemm_dispatch_expected(isa active, index_t m, index_t n) {
  const bool eigen_shape = std::min(m, n) >= 2 && std::min(m, n) <= 3;
#if defined(SLIMNET_GEMM_AVX512)
  if ((active == isa::avx512 || active == isa::avx2) && !eigen_shape) return active;
#endif
#if defined(SLIMNET_GEMM_NEON)
  if (active == isa::neon && !eigen_shape) return active;
#endif
  (void)eigen_shape;
  (void)active, (void)m, (void)n;
  return isa::portable;
}

/// A rows x cols matrix in storage of its own, around it a margin of `fill` values that must survive.
struct gemm_dispatch_matrix {
  std::vector<float> storage;
  kernels::matrix_ref<float> ref;
};

// layout 0: row-major, contiguous; 1: column-major, contiguous; 2: row-major with the row stride
// rounded up to 64 floats (+ 64 when already a multiple): padding between rows, and a stride that
// makes the kernels pack A rather than read it in place.
gemm_dispatch_matrix gemm_dispatch_make(index_t rows, index_t cols, int layout, float fill) {
  gemm_dispatch_matrix m;
  const index_t padded = (cols / 64 + 1) * 64;
  switch (layout) {
    case 0: m.storage.assign(static_cast<std::size_t>(rows * cols + 8), fill); m.ref = {m.storage.data(), rows, cols, cols, 1}; break;
    case 1: m.storage.assign(static_cast<std::size_t>(rows * cols + 8), fill); m.ref = {m.storage.data(), rows, cols, 1, rows}; break;
    default: m.storage.assign(static_cast<std::size_t>(rows * padded + 8), fill); m.ref = {m.storage.data(), rows, cols, padded, 1}; break;
  }
  return m;
}

void gemm_dispatch_fill(const kernels::matrix_ref<float>& v, rng& gen) {
  for (index_t i = 0; i < v.rows; ++i)
    for (index_t j = 0; j < v.cols; ++j) v(i, j) = static_cast<float>(gen.uniform(-1, 1));
}

/// Runs one product under the active family and checks values, the untouched margin, and the path.
void gemm_dispatch_check(index_t m, index_t k, index_t n, int la, int lb, int lc, float alpha, float beta, rng& gen) {
  constexpr float margin = 777.0f;
  auto a = gemm_dispatch_make(m, k, la, margin), b = gemm_dispatch_make(k, n, lb, margin);
  auto c = gemm_dispatch_make(m, n, lc, margin);
  gemm_dispatch_fill(a.ref, gen);
  gemm_dispatch_fill(b.ref, gen);
  std::vector<float> ref(static_cast<std::size_t>(m * n));
  if (beta == 0.0f) {
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) c.ref(i, j) = std::numeric_limits<float>::quiet_NaN();  // must be ignored
  } else {
    gemm_dispatch_fill(c.ref, gen);
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) ref[static_cast<std::size_t>(i * n + j)] = c.ref(i, j);
  }
  kernels::gemm_reference<float>(a.ref, b.ref, kernels::row_major(ref.data(), m, n), alpha, beta);
  const isa expected = gemm_dispatch_expected(kernels::active_isa(), m, n);
  const std::uint64_t before = kernels::gemm_path_calls(expected);
  kernels::gemm<float>(a.ref, b.ref, c.ref, alpha, beta);
  INFO("isa " << kernels::isa_name(kernels::active_isa()) << " M " << m << " K " << k << " N " << n << " layouts " << la << lb << lc
              << " alpha " << alpha << " beta " << beta);
  CHECK(kernels::gemm_path_calls(expected) == before + 1);
  // |error| of a float sum of k products of values in [-1, 1], against one accumulated in double
  const double tol = 1e-6 * (k + 2);
  double worst = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      const double d = std::abs(static_cast<double>(c.ref(i, j)) - ref[static_cast<std::size_t>(i * n + j)]);
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    }
  CHECK(worst <= tol);
  std::vector<bool> inside(c.storage.size(), false);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) inside[static_cast<std::size_t>(&c.ref(i, j) - c.storage.data())] = true;
  bool margin_untouched = true;
  for (std::size_t s = 0; s < c.storage.size(); ++s) margin_untouched &= inside[s] || c.storage[s] == margin;
  CHECK(margin_untouched);
}

/// The shapes: every tile edge of the families (6 and 8..12 rows, 12, 16 and 32 columns) and K around
/// a vector, a single row or column of 45 (NEON's matrix-vector blocks of 32, 4 and 1), plus random
/// triples in [1, 67]^3. 13 x 21 x 56 takes AVX2's 8-column tile on a full last panel (56 = 3 x 16
/// + 8: unmasked stores) and, with A's padded rows, its register-transposing pack of a row-major A
/// (two blocks of 8 depths and a tail of 5; a last panel of one row).
std::vector<std::array<index_t, 3>> gemm_dispatch_shapes(rng& gen) {
  std::vector<std::array<index_t, 3>> shapes = {{1, 1, 1},    {1, 67, 1},   {1, 9, 67},   {67, 9, 1},  {2, 5, 17},   {3, 67, 33},
                                                {17, 2, 3},   {4, 1, 4},    {5, 3, 16},   {6, 4, 16},  {7, 5, 15},   {6, 8, 17},
                                                {12, 16, 32}, {13, 17, 33}, {11, 31, 31}, {24, 7, 48}, {25, 64, 49}, {37, 65, 67},
                                                {67, 67, 67}, {66, 63, 64}, {48, 33, 65}, {10, 67, 8}, {9, 15, 60},  {60, 60, 9},
                                                {1, 13, 45},  {45, 13, 1},  {13, 21, 56}};
  for (int r = 0; r < 40; ++r) {
    auto dim = [&gen] { return static_cast<index_t>(1 + gen.uniform(0, 1) * 66.999); };
    shapes.push_back({dim(), dim(), dim()});
  }
  return shapes;
}

}  // namespace

TEST_CASE("gemm: every path the CPU has equals the reference over odd shapes and layouts", "[kernels][gemm][dispatch]") {
  gemm_dispatch_isa_guard guard;
  rng gen(1611);
  const auto shapes = gemm_dispatch_shapes(gen);
  for (isa family : gemm_dispatch_families()) {
    kernels::set_isa(family);
    for (const auto& [m, k, n] : shapes)
      for (int la = 0; la < 3; ++la)
        for (int lb = 0; lb < 2; ++lb)
          for (int lc = 0; lc < 3; ++lc) {
            const bool accumulate = (la + lb + lc) % 2 == 1;
            gemm_dispatch_check(m, k, n, la, lb, lc, accumulate ? -0.5f : 1.0f, accumulate ? 0.75f : 0.0f, gen);
          }
  }
}

#if defined(SLIMNET_GEMM_AVX512)
TEST_CASE("gemm: small cache blocks exercise every block edge of both x86 families", "[kernels][gemm][dispatch]") {
  gemm_dispatch_isa_guard guard;
  auto& b512 = kernels::detail::avx512::gemm_blocking();
  auto& b256 = kernels::detail::avx2::gemm_blocking();
  const auto saved512 = b512;
  const auto saved256 = b256;
  b512 = {16, 20, 64};
  b256 = {8, 12, 32};
  rng gen(1612);
  for (isa family : {isa::avx2, isa::avx512}) {
    if (!kernels::isa_supported(family)) continue;
    kernels::set_isa(family);
    for (const auto& [m, k, n] : std::vector<std::array<index_t, 3>>{{37, 50, 100}, {25, 33, 65}, {64, 17, 129}, {13, 48, 31}})
      for (int la = 0; la < 3; ++la)
        for (int lb = 0; lb < 2; ++lb)
          for (int lc : {0, 1}) gemm_dispatch_check(m, k, n, la, lb, lc, 1.0f, lb == 1 ? 1.0f : 0.0f, gen);
  }
  b512 = saved512;
  b256 = saved256;
}
#endif

#if defined(SLIMNET_GEMM_NEON)
TEST_CASE("gemm: small cache blocks exercise every block edge of the NEON family", "[kernels][gemm][dispatch]") {
  gemm_dispatch_isa_guard guard;
  auto& blocks = kernels::detail::neon::gemm_blocking();
  const auto saved = blocks;
  blocks = {8, 16, 24};  // kc, mc (2 tiles of 8 rows), nc (2 panels of 12 columns)
  rng gen(1614);
  kernels::set_isa(isa::neon);
  for (const auto& [m, k, n] : std::vector<std::array<index_t, 3>>{{37, 50, 100}, {25, 33, 65}, {64, 17, 129}, {13, 48, 31}})
    for (int la = 0; la < 3; ++la)
      for (int lb = 0; lb < 2; ++lb)
        for (int lc : {0, 1}) gemm_dispatch_check(m, k, n, la, lb, lc, 1.0f, lb == 1 ? 1.0f : 0.0f, gen);
  blocks = saved;
}
#endif

TEST_CASE("gemm_path / gemm_path_calls say which family computed a product", "[kernels][gemm][dispatch]") {
  gemm_dispatch_isa_guard guard;
  rng gen(1613);
  std::vector<float> a(40 * 30), b(30 * 20), c(40 * 20);
  for (auto& v : a) v = static_cast<float>(gen.uniform(-1, 1));
  for (auto& v : b) v = static_cast<float>(gen.uniform(-1, 1));
  auto calls = [] {
    std::array<std::uint64_t, 4> n{};
    for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon}) n[static_cast<std::size_t>(i)] = kernels::gemm_path_calls(i);
    return n;
  };
  for (isa family : gemm_dispatch_families()) {
    INFO(kernels::isa_name(family));
    kernels::set_isa(family);
    const isa path = kernels::gemm_path();
#if defined(SLIMNET_GEMM_AVX512)
    CHECK(path == (family == isa::avx512 || family == isa::avx2 ? family : isa::portable));
#elif defined(SLIMNET_GEMM_NEON)
    CHECK(path == family);
#else
    CHECK(path == isa::portable);
#endif
    // a 40 x 20 product: exactly one call, on the family's kernels, and on no other path
    auto before = calls();
    kernels::gemm<float>(kernels::row_major<const float>(a.data(), 40, 30), kernels::row_major<const float>(b.data(), 30, 20),
                         kernels::row_major(c.data(), 40, 20));
    auto after = calls();
    for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon})
      CHECK(after[static_cast<std::size_t>(i)] - before[static_cast<std::size_t>(i)] == (i == path ? 1u : 0u));
    // 2 rows of C, a double product and a C with no unit stride are Eigen's whatever the family
    before = calls();
    kernels::gemm<float>(kernels::row_major<const float>(a.data(), 2, 30), kernels::row_major<const float>(b.data(), 30, 20),
                         kernels::row_major(c.data(), 2, 20));
    std::vector<double> ad(12, 1.0), bd(12, 1.0), cd(16);
    kernels::gemm<double>(kernels::row_major<const double>(ad.data(), 4, 3), kernels::row_major<const double>(bd.data(), 3, 4),
                          kernels::row_major(cd.data(), 4, 4));
    CHECK(cd[5] == 3.0);
    kernels::gemm<float>(kernels::row_major<const float>(a.data(), 10, 30), kernels::row_major<const float>(b.data(), 30, 5),
                         kernels::matrix_ref<float>{c.data(), 10, 5, 10, 2});
    after = calls();
    CHECK(after[static_cast<std::size_t>(isa::portable)] - before[static_cast<std::size_t>(isa::portable)] == 3u);
    // an empty product and depth 0 compute nothing and count nothing
    before = calls();
    kernels::gemm<float>(kernels::row_major<const float>(a.data(), 0, 30), kernels::row_major<const float>(b.data(), 30, 20),
                         kernels::row_major(c.data(), 0, 20));
    kernels::gemm<float>(kernels::row_major<const float>(a.data(), 4, 0), kernels::row_major<const float>(b.data(), 0, 4),
                         kernels::row_major(c.data(), 4, 4));
    CHECK(calls() == before);
  }
  // On an x86-64 CPU with AVX2 the automatic family is never the portable one, whatever -march
  // the tests were built with: the kernels are compiled in every build.
#if defined(SLIMNET_GEMM_AVX512)
  if (kernels::isa_supported(isa::avx2)) {
    kernels::reset_isa();
    if (kernels::active_isa() != isa::portable) CHECK(kernels::gemm_path() != isa::portable);
  }
#endif
  // On aarch64 (under qemu-user in CI) the automatic family is neon and products run its kernel.
#if defined(SLIMNET_GEMM_NEON)
  kernels::reset_isa();
  if (kernels::active_isa() != isa::portable) {  // unless SLIMNET_ISA=portable
    CHECK(kernels::active_isa() == isa::neon);
    CHECK(kernels::gemm_path() == isa::neon);
    const auto before = calls();
    kernels::gemm<float>(kernels::row_major<const float>(a.data(), 40, 30), kernels::row_major<const float>(b.data(), 30, 20),
                         kernels::row_major(c.data(), 40, 20));
    CHECK(calls()[static_cast<std::size_t>(isa::neon)] == before[static_cast<std::size_t>(isa::neon)] + 1);
  }
#endif
}
