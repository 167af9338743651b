// int8 and int16 GEMM (VNNI and portable paths) against their references: signed and unsigned A,
// K not a multiple of the lane group, int32 and dequantized float output, wrap-around.
#include <catch2/catch.hpp>

#include <limits>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/int8_gemm.hpp"

using namespace slimnet;

namespace {

struct mkn {
  index_t m, k, n;
};
// M covers every height of the last register tile (M mod 6 = 0..5) and batch 1; N every column
// mask (N mod 16, partial panels); K every remainder mod 4 and mod 64.
const std::vector<mkn> shapes = {{1, 1, 1},    {1, 4, 1},    {2, 3, 5},     {7, 13, 17},  {6, 64, 64},  {13, 65, 63},
                                 {17, 129, 65}, {31, 500, 50}, {64, 801, 130}, {5, 1023, 7}, {97, 2, 101}, {1, 1000, 1000},
                                 {1, 800, 500},  {64, 500, 10}, {3, 27, 33},   {4, 66, 80},  {10, 131, 17}, {1, 25, 20}};

template <class T>
std::vector<T> random_ints(index_t n, int lo, int hi, rng& gen) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(lo + static_cast<int>(gen.below(static_cast<std::uint64_t>(hi - lo + 1))));
  return v;
}

template <class A, class B, class Pack, class Fast, class Ref>
void check_int_gemm(int a_lo, int a_hi, int b_lo, int b_hi, Fast fast, Ref reference) {
  rng gen(8);
  for (const auto& s : shapes) {
    const auto a = random_ints<A>(s.m * s.k, a_lo, a_hi, gen);
    const auto w = random_ints<B>(s.n * s.k, b_lo, b_hi, gen);  // stored (N x K) as a layer's weights
    const auto av = kernels::row_major<const A>(a.data(), s.m, s.k);
    const auto bv = kernels::row_major<const B>(w.data(), s.n, s.k).transposed();  // B = W^T (K x N)
    std::vector<std::int32_t> ref(static_cast<std::size_t>(s.m * s.n)), got(ref.size());
    reference(av, bv, kernels::row_major(ref.data(), s.m, s.n), kernels::int_gemm_params{});
    const Pack packed(bv);
    INFO("M " << s.m << " K " << s.k << " N " << s.n);
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      for (int threads : {1, 2}) {
        kernels::int_gemm_params p;
        p.path = path;
        p.threads = threads;
        std::fill(got.begin(), got.end(), -1);
        fast(av, packed, kernels::row_major(got.data(), s.m, s.n), p);
        CHECK(got == ref);
      }
      // Dequantized float output.
      std::vector<float> rs(static_cast<std::size_t>(s.m)), cs(static_cast<std::size_t>(s.n)), bias(cs.size()), gotf(ref.size()),
          reff(ref.size());
      for (auto& v : rs) v = static_cast<float>(gen.uniform(0.001, 0.1));
      for (auto& v : cs) v = static_cast<float>(gen.uniform(0.001, 0.1));
      for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
      kernels::int_gemm_params p;
      p.path = path;
      p.row_scale = rs.data();
      p.col_scale = cs.data();
      p.col_bias = bias.data();
      std::fill(gotf.begin(), gotf.end(), std::numeric_limits<float>::quiet_NaN());  // a missed store stays NaN
      fast(av, packed, kernels::row_major(gotf.data(), s.m, s.n), p);
      reference(av, bv, kernels::row_major(reff.data(), s.m, s.n), p);
      for (std::size_t e = 0; e < reff.size(); ++e) CHECK(gotf[e] == Approx(reff[e]).epsilon(1e-5).margin(1e-5));
    }
    // A strided (column-major) A takes the portable path and agrees.
    std::vector<A> at(a.size());
    for (index_t i = 0; i < s.m; ++i)
      for (index_t k = 0; k < s.k; ++k) at[static_cast<std::size_t>(k * s.m + i)] = a[static_cast<std::size_t>(i * s.k + k)];
    fast(kernels::matrix_ref<const A>{at.data(), s.m, s.k, 1, s.m}, packed, kernels::row_major(got.data(), s.m, s.n),
         kernels::int_gemm_params{});
    CHECK(got == ref);
  }
}

}  // namespace

TEST_CASE("gemm_int8 with unsigned A equals the reference", "[kernels][int8]") {
  check_int_gemm<std::uint8_t, std::int8_t, kernels::int8_packed_rhs>(
      0, 255, -128, 127, [](auto a, const auto& b, auto c, const auto& p) { kernels::gemm_int8(a, b, c, p); },
      [](auto a, auto b, auto c, const auto& p) { kernels::gemm_int8_reference(a, b, c, p); });
}

TEST_CASE("gemm_int8 with signed A (shifted by 128, corrected by column sums) equals the reference", "[kernels][int8]") {
  check_int_gemm<std::int8_t, std::int8_t, kernels::int8_packed_rhs>(
      -128, 127, -128, 127, [](auto a, const auto& b, auto c, const auto& p) { kernels::gemm_int8(a, b, c, p); },
      [](auto a, auto b, auto c, const auto& p) { kernels::gemm_int8_reference(a, b, c, p); });
}

TEST_CASE("gemm_int16 (fixed point) equals the reference", "[kernels][int8]") {
  check_int_gemm<std::int16_t, std::int16_t, kernels::int16_packed_rhs>(
      -2000, 2000, -2000, 2000, [](auto a, const auto& b, auto c, const auto& p) { kernels::gemm_int16(a, b, c, p); },
      [](auto a, auto b, auto c, const auto& p) { kernels::gemm_int16_reference(a, b, c, p); });
}

TEST_CASE("integer GEMMs: wrap-around past int32, unpacked B, K = 0, shape errors", "[kernels][int8]") {
  // 600 products of 32767 * 32767 overflow int32: every path wraps modulo 2^32 like the reference.
  std::vector<std::int16_t> a(600, 32767), b(600 * 3, 32767);
  std::vector<std::int32_t> ref(3), got(3);
  const auto av = kernels::row_major<const std::int16_t>(a.data(), 1, 600);
  const auto bv = kernels::row_major<const std::int16_t>(b.data(), 600, 3);
  kernels::gemm_int16_reference(av, bv, kernels::row_major(ref.data(), 1, 3));
  CHECK(ref[0] == static_cast<std::int32_t>(static_cast<std::uint32_t>(600ull * 32767ull * 32767ull)));
  for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
    kernels::int_gemm_params p;
    p.path = path;
    kernels::gemm_int16(av, bv, kernels::row_major(got.data(), 1, 3), p);
    CHECK(got == ref);
  }
  // K = 0.
  std::vector<std::int8_t> e;
  std::vector<std::int32_t> z(6, 9);
  kernels::gemm_int8(kernels::row_major<const std::int8_t>(e.data(), 2, 0), kernels::row_major<const std::int8_t>(e.data(), 0, 3),
                     kernels::row_major(z.data(), 2, 3));
  CHECK(z == std::vector<std::int32_t>(6, 0));
  std::vector<std::int8_t> x(12);
  CHECK_THROWS_WITH(kernels::gemm_int8(kernels::row_major<const std::int8_t>(x.data(), 3, 4),
                                       kernels::row_major<const std::int8_t>(x.data(), 3, 4), kernels::row_major(z.data(), 3, 4)),
                    Catch::Contains("gemm_int8") && Catch::Contains("(3 x 4) * (3 x 4)"));
}

TEST_CASE("gemm_int8 on 1000 x 1000 x 1000 equals the exact product", "[kernels][int8]") {
  rng gen(9);
  const index_t n = 1000;
  const auto a = random_ints<std::int8_t>(n * n, -128, 127, gen);
  const auto w = random_ints<std::int8_t>(n * n, -128, 127, gen);
  Eigen::MatrixXd ad(n, n), bd(n, n);
  for (index_t i = 0; i < n; ++i)
    for (index_t k = 0; k < n; ++k) {
      ad(i, k) = a[static_cast<std::size_t>(i * n + k)];
      bd(k, i) = w[static_cast<std::size_t>(i * n + k)];
    }
  const Eigen::MatrixXd expected = ad * bd;  // |sums| < 2^24: exact in double
  const kernels::int8_packed_rhs packed(kernels::row_major<const std::int8_t>(w.data(), n, n).transposed());
  std::vector<std::int32_t> got(static_cast<std::size_t>(n * n));
  kernels::int_gemm_params p;
  p.threads = 2;
  kernels::gemm_int8(kernels::row_major<const std::int8_t>(a.data(), n, n), packed, kernels::row_major(got.data(), n, n), p);
  index_t wrong = 0;
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) wrong += expected(i, j) != got[static_cast<std::size_t>(i * n + j)];
  CHECK(wrong == 0);
}
