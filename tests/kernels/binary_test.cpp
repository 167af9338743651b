// Bit packing (the convention and its padding) and the XNOR/popcount GEMM against its reference
// and against the fp32 product of the +-1 matrices.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/binary_gemm.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using slimnet::testing::poison;

namespace {
std::vector<float> random_values(index_t n, rng& gen) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(gen.uniform(-1, 1));
  return v;
}
}  // namespace

TEST_CASE("pack_signs: bit 1 = -1, element k at bit k % 64 of word k / 64, zero padding", "[kernels][binary]") {
  std::vector<float> x(70, 1.0f);
  x[0] = -1.0f;
  x[3] = -0.5f;
  x[64] = -2.0f;
  x[69] = -1.0f;
  x[5] = 0.0f;                                        // sign(0) = +1
  x[6] = -0.0f;                                       // -0 is not < 0: +1
  x[7] = std::numeric_limits<float>::quiet_NaN();     // NaN packs as +1
  const auto b = kernels::pack_signs(kernels::row_major<const float>(x.data(), 1, 70));
  REQUIRE(b.row_words() == 2);
  CHECK(b.row(0)[0] == ((1ull << 0) | (1ull << 3)));
  CHECK(b.row(0)[1] == ((1ull << 0) | (1ull << 5)));  // bits 64 and 69; bits 70..127 are padding (0)
  CHECK(b.value(0, 3) == -1);
  CHECK(b.value(0, 5) == 1);
  std::vector<float> back(70);
  kernels::unpack_signs(b.ref(), kernels::row_major(back.data(), 1, 70));
  for (index_t k = 0; k < 70; ++k) CHECK(back[static_cast<std::size_t>(k)] == (x[static_cast<std::size_t>(k)] < 0 ? -1.0f : 1.0f));
  // Strided input (a transposed view) packs the same bits.
  std::vector<float> col(70);
  for (index_t k = 0; k < 70; ++k) col[static_cast<std::size_t>(k)] = x[static_cast<std::size_t>(k)];
  const auto bt = kernels::pack_signs(kernels::row_major<const float>(col.data(), 70, 1).transposed());
  CHECK(bt.row(0)[0] == b.row(0)[0]);
  CHECK(bt.row(0)[1] == b.row(0)[1]);
  // Double packs like float.
  std::vector<double> xd(x.begin(), x.end());
  const auto bd = kernels::pack_signs(kernels::row_major<const double>(xd.data(), 1, 70));
  CHECK(bd.row(0)[1] == b.row(0)[1]);
}

TEST_CASE("gemm_xnor equals the reference and the fp32 product of the signs", "[kernels][binary]") {
  rng gen(21);
  struct mkn {
    index_t m, k, n;
  };
  const std::vector<mkn> shapes = {{1, 1, 1},   {1, 64, 1},   {2, 63, 3},    {7, 65, 13},   {13, 127, 31}, {6, 128, 32},
                                   {17, 129, 33}, {5, 500, 50}, {37, 800, 67}, {64, 1025, 10}, {101, 3, 97},  {1, 2304, 257}};
  for (const auto& s : shapes) {
    const auto a = random_values(s.m * s.k, gen), b = random_values(s.n * s.k, gen);
    const auto abits = kernels::pack_signs(kernels::row_major<const float>(a.data(), s.m, s.k));
    const auto bbits = kernels::pack_signs(kernels::row_major<const float>(b.data(), s.n, s.k));
    std::vector<std::int32_t> ref(static_cast<std::size_t>(s.m * s.n)), got(ref.size());
    poison(ref);
    kernels::gemm_xnor_reference(abits.ref(), bbits.ref(), kernels::row_major(ref.data(), s.m, s.n));
    // The reference is the fp32 product of the +-1 matrices (exact: |dot| <= K < 2^24).
    bool matches_float = true;
    for (index_t i = 0; i < s.m; ++i) {
      for (index_t j = 0; j < s.n; ++j) {
        double dot = 0;
        for (index_t k = 0; k < s.k; ++k)
          dot += (a[static_cast<std::size_t>(i * s.k + k)] < 0 ? -1.0 : 1.0) * (b[static_cast<std::size_t>(j * s.k + k)] < 0 ? -1.0 : 1.0);
        matches_float &= dot == ref[static_cast<std::size_t>(i * s.n + j)];
      }
    }
    INFO("M " << s.m << " K " << s.k << " N " << s.n);
    CHECK(matches_float);
    const kernels::xnor_packed_rhs packed(bbits.ref());
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      for (int threads : {1, 2, 3}) {
        kernels::xnor_params p;
        p.path = path;
        p.threads = threads;
        poison(got);
        kernels::gemm_xnor(abits.ref(), packed, kernels::row_major(got.data(), s.m, s.n), p);
        CHECK(got == ref);
      }
      // Unpacked B, and a float epilogue with per-column scale and bias.
      kernels::xnor_params p;
      p.path = path;
      poison(got);
      kernels::gemm_xnor(abits.ref(), bbits.ref(), kernels::row_major(got.data(), s.m, s.n), p);
      CHECK(got == ref);
      std::vector<float> scale(static_cast<std::size_t>(s.n)), bias(scale.size()), gotf(ref.size()), reff(ref.size());
      for (auto& v : scale) v = static_cast<float>(gen.uniform(0.1, 2));
      for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
      p.col_scale = scale.data();
      p.col_bias = bias.data();
      poison(gotf);
      poison(reff);
      kernels::gemm_xnor(abits.ref(), packed, kernels::row_major(gotf.data(), s.m, s.n), p);
      kernels::gemm_xnor_reference(abits.ref(), bbits.ref(), kernels::row_major(reff.data(), s.m, s.n), p);
      for (std::size_t e = 0; e < reff.size(); ++e) CHECK(gotf[e] == Approx(reff[e]).epsilon(1e-6).margin(1e-5));
    }
  }
}

TEST_CASE("gemm_xnor: rows with extra zero words, empty products, shape errors", "[kernels][binary]") {
  rng gen(4);
  const auto a = random_values(9 * 100, gen), b = random_values(5 * 100, gen);
  kernels::bit_matrix wide_a(9, 100, 4), wide_b(5, 100, 3);  // row_words beyond the 2 needed
  kernels::pack_signs(kernels::row_major<const float>(a.data(), 9, 100), wide_a);
  kernels::pack_signs(kernels::row_major<const float>(b.data(), 5, 100), wide_b);
  const auto na = kernels::pack_signs(kernels::row_major<const float>(a.data(), 9, 100));
  const auto nb = kernels::pack_signs(kernels::row_major<const float>(b.data(), 5, 100));
  std::vector<std::int32_t> c1(45), c2(45), expected(45);
  poison(c1);
  poison(c2);
  kernels::gemm_xnor(wide_a.ref(), wide_b.ref(), kernels::row_major(c1.data(), 9, 5));
  kernels::gemm_xnor(na.ref(), nb.ref(), kernels::row_major(c2.data(), 9, 5));
  kernels::gemm_xnor_reference(na.ref(), nb.ref(), kernels::row_major(expected.data(), 9, 5));
  CHECK(c1 == expected);
  CHECK(c2 == expected);
  // K = 0: every dot product is 0.
  kernels::bit_matrix e1(3, 0), e2(4, 0);
  std::vector<std::int32_t> z(12, 7);
  kernels::gemm_xnor(e1.ref(), e2.ref(), kernels::row_major(z.data(), 3, 4));
  CHECK(z == std::vector<std::int32_t>(12, 0));
  CHECK_THROWS_WITH(kernels::gemm_xnor(na.ref(), nb.ref(), kernels::row_major(c1.data(), 5, 9)),
                    Catch::Contains("gemm_xnor") && Catch::Contains("(9 x 100) * (5 x 100)^T"));
}

TEST_CASE("gemm_xnor on 1000 x 1000 x 1000 equals the product of the signs (exact in double)", "[kernels][binary]") {
  rng gen(22);
  const index_t n = 1000;
  const auto a = random_values(n * n, gen), b = random_values(n * n, gen);
  Eigen::MatrixXd as(n, n), bs(n, n);
  for (index_t i = 0; i < n; ++i)
    for (index_t k = 0; k < n; ++k) {
      as(i, k) = a[static_cast<std::size_t>(i * n + k)] < 0 ? -1 : 1;
      bs(k, i) = b[static_cast<std::size_t>(i * n + k)] < 0 ? -1 : 1;
    }
  const Eigen::MatrixXd expected = as * bs;
  const auto abits = kernels::pack_signs(kernels::row_major<const float>(a.data(), n, n));
  const kernels::xnor_packed_rhs packed(kernels::pack_signs(kernels::row_major<const float>(b.data(), n, n)).ref());
  std::vector<std::int32_t> got(static_cast<std::size_t>(n * n));
  poison(got);
  kernels::xnor_params p;
  p.threads = 2;
  kernels::gemm_xnor(abits.ref(), packed, kernels::row_major(got.data(), n, n), p);
  index_t wrong = 0;
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) wrong += expected(i, j) != got[static_cast<std::size_t>(i * n + j)];
  CHECK(wrong == 0);
}
