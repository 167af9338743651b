// gemm against gemm_reference over odd shapes, every operand layout, alpha/beta, and edge cases.
#include <catch2/catch.hpp>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/gemm.hpp"

using namespace slimnet;

namespace {
template <class Scalar>
struct owned {
  std::vector<Scalar> storage;
  kernels::matrix_ref<Scalar> ref;
};
// A rows x cols matrix stored row-major, column-major, or transposed-with-padding (strides > extent).
template <class Scalar>
owned<Scalar> make(index_t rows, index_t cols, int layout, rng& gen) {
  owned<Scalar> m;
  const index_t pad = 3;
  m.storage.resize(static_cast<std::size_t>((rows + pad) * (cols + pad) + 1));
  for (auto& v : m.storage) v = static_cast<Scalar>(gen.uniform(-1, 1));
  switch (layout) {
    case 0: m.ref = {m.storage.data(), rows, cols, cols, 1}; break;                // row-major
    case 1: m.ref = {m.storage.data(), rows, cols, 1, rows}; break;                // column-major
    case 2: m.ref = {m.storage.data(), rows, cols, cols + pad, 1}; break;          // row-major, padded rows
    default: m.ref = {m.storage.data(), rows, cols, 1, rows + pad}; break;         // column-major, padded
  }
  return m;
}
}  // namespace

TEMPLATE_TEST_CASE("gemm equals the reference over odd shapes and layouts", "[kernels][gemm]", float, double) {
  rng gen(17);
  const std::vector<std::array<index_t, 3>> shapes = {{1, 1, 1},   {1, 7, 1},   {7, 1, 13},  {13, 17, 31}, {2, 3, 33},
                                                      {37, 129, 77}, {50, 500, 96}, {20, 25, 300}, {64, 31, 500},
                                                      {11, 300, 5}, {97, 13, 65},  {33, 257, 47}};
  for (const auto& [m, k, n] : shapes) {
    for (int la = 0; la < 4; ++la) {
      for (int lb = 0; lb < 4; ++lb) {
        for (int lc : {0, 1}) {
          auto a = make<TestType>(m, k, la, gen);
          auto b = make<TestType>(k, n, lb, gen);
          auto c = make<TestType>(m, n, lc, gen);
          auto r = c;
          r.ref.data = r.storage.data();
          const TestType alpha = TestType(0.75), beta = (la + lb) % 2 ? TestType(0) : TestType(-0.5);
          kernels::gemm<TestType>(a.ref, b.ref, c.ref, alpha, beta);
          kernels::gemm_reference<TestType>(a.ref, b.ref, r.ref, alpha, beta);
          double worst = 0;
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j) worst = std::max(worst, std::abs(double(c.ref(i, j)) - double(r.ref(i, j))));
          INFO("m=" << m << " k=" << k << " n=" << n << " layouts " << la << lb << lc);
          CHECK(worst <= (std::is_same_v<TestType, float> ? 2e-5 : 1e-12) * std::sqrt(double(k)) * 4);
          // Storage outside the view (padding) is untouched.
          std::vector<bool> inside(c.storage.size(), false);
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j) inside[static_cast<std::size_t>(&c.ref(i, j) - c.storage.data())] = true;
          bool padding_untouched = true;
          for (std::size_t s = 0; s < c.storage.size(); ++s) padding_untouched &= inside[s] || c.storage[s] == r.storage[s];
          CHECK(padding_untouched);
        }
      }
    }
  }
}

TEST_CASE("gemm with beta = 0 ignores NaN in C; empty and zero-depth products", "[kernels][gemm]") {
  std::vector<float> a(6, 1.0f), b(6, 2.0f), c(4, std::numeric_limits<float>::quiet_NaN());
  kernels::gemm<float>(kernels::row_major<const float>(a.data(), 2, 3), kernels::row_major<const float>(b.data(), 3, 2),
                       kernels::row_major(c.data(), 2, 2));
  CHECK(c == std::vector<float>{6, 6, 6, 6});
  std::vector<float> d(4, 5.0f);
  kernels::gemm<float>(kernels::row_major<const float>(a.data(), 2, 0), kernels::row_major<const float>(b.data(), 0, 2),
                       kernels::row_major(d.data(), 2, 2), 1.0f, 2.0f);
  CHECK(d == std::vector<float>{10, 10, 10, 10});
  kernels::gemm<float>(kernels::row_major<const float>(a.data(), 0, 3), kernels::row_major<const float>(b.data(), 3, 2),
                       kernels::row_major(d.data(), 0, 2));
  CHECK_THROWS_WITH(kernels::gemm<float>(kernels::row_major<const float>(a.data(), 2, 3),
                                         kernels::row_major<const float>(b.data(), 2, 3), kernels::row_major(d.data(), 2, 3)),
                    Catch::Contains("slimnet::kernels::gemm") && Catch::Contains("(2 x 3) * (2 x 3)"));
}

TEST_CASE("gemm on a 1000 x 1000 product matches the reference", "[kernels][gemm][slow]") {
  rng gen(3);
  auto a = make<float>(1000, 1000, 0, gen), b = make<float>(1000, 1000, 1, gen), c = make<float>(1000, 1000, 0, gen);
  auto r = c;
  r.ref.data = r.storage.data();
  kernels::gemm<float>(a.ref, b.ref, c.ref);
  kernels::gemm_reference<float>(a.ref, b.ref, r.ref);
  float worst = 0;
  for (std::size_t s = 0; s < c.storage.size(); ++s) worst = std::max(worst, std::abs(c.storage[s] - r.storage[s]));
  CHECK(worst < 2e-4f);
}

namespace {
// gemm against the reference on one shape over every layout pair of A and B, C row- and column-major,
// alpha / beta with and without accumulation.
template <class Scalar>
void check_all_layouts(index_t m, index_t k, index_t n, rng& gen) {
  for (int la = 0; la < 4; ++la) {
    for (int lb = 0; lb < 4; ++lb) {
      for (int lc : {0, 1, 2}) {
        for (const auto& [alpha, beta] : std::vector<std::pair<Scalar, Scalar>>{{1, 0}, {Scalar(0.5), 1}, {-1, Scalar(-0.25)}}) {
          auto a = make<Scalar>(m, k, la, gen);
          auto b = make<Scalar>(k, n, lb, gen);
          auto c = make<Scalar>(m, n, lc, gen);
          auto r = c;
          r.ref.data = r.storage.data();
          kernels::gemm<Scalar>(a.ref, b.ref, c.ref, alpha, beta);
          kernels::gemm_reference<Scalar>(a.ref, b.ref, r.ref, alpha, beta);
          double worst = 0;
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j) worst = std::max(worst, std::abs(double(c.ref(i, j)) - double(r.ref(i, j))));
          INFO("m=" << m << " k=" << k << " n=" << n << " layouts " << la << lb << lc << " alpha " << alpha << " beta " << beta);
          CHECK(worst <= 2e-5 * std::sqrt(double(k)) * 4);
          bool padding_untouched = true;  // storage outside the view
          std::vector<bool> inside(c.storage.size(), false);
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j) inside[static_cast<std::size_t>(&c.ref(i, j) - c.storage.data())] = true;
          for (std::size_t s = 0; s < c.storage.size(); ++s) padding_untouched &= inside[s] || c.storage[s] == r.storage[s];
          CHECK(padding_untouched);
        }
      }
    }
  }
}
}  // namespace

TEST_CASE("gemm: layer-shaped products (vector, narrow, shallow, every tile height)", "[kernels][gemm]") {
  rng gen(29);
  // Matrix-vector (M or N = 1), narrow outputs (N <= 16), depth 1-3 (outer products), each tile
  // height 1..13 with 16- and 32-column panels and their edges, K not a multiple of 16.
  const std::vector<std::array<index_t, 3>> shapes = {
      {1, 500, 10}, {1, 10, 100}, {1, 37, 70}, {70, 37, 1}, {1, 300, 1}, {10, 1, 500}, {500, 1, 33}, {13, 2, 45},
      {40, 3, 17},  {64, 500, 10}, {20, 64, 25}, {10, 64, 100}, {64, 100, 10}, {12, 1, 32}, {3, 20, 5}, {64, 17, 48}};
  for (const auto& [m, k, n] : shapes) check_all_layouts<float>(m, k, n, gen);
  for (index_t m = 1; m <= 13; ++m)
    for (index_t n : {1, 15, 16, 17, 33}) check_all_layouts<float>(m, 21, n, gen);
}

#if defined(SLIMNET_GEMM_AVX512)
TEST_CASE("gemm: small cache blocks exercise every block edge", "[kernels][gemm]") {
  auto& blocking = kernels::detail::avx512::gemm_blocking();
  const auto saved = blocking;
  blocking.kc = 16;
  blocking.mc = 20;
  blocking.nc = 64;
  rng gen(31);
  for (const auto& [m, k, n] : std::vector<std::array<index_t, 3>>{{37, 50, 100}, {25, 33, 65}, {64, 17, 129}, {13, 48, 31}})
    check_all_layouts<float>(m, k, n, gen);
  blocking = saved;
}
#endif
