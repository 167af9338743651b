// Codebook GEMV/GEMM over packed k-bit indices (k = 1..8) against their references and the
// decoded dense product; the packing convention; validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/codebook_gemm.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "support/isa_families.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using slimnet::testing::poison;

namespace {

template <class Scalar>
kernels::codebook_matrix<Scalar> random_codebook(index_t rows, index_t cols, int bits, rng& gen, std::vector<int>& idx) {
  const int n_centroids = std::max(1, (1 << bits) - static_cast<int>(gen.below(2)));  // sometimes one short of full
  std::vector<Scalar> centroids(static_cast<std::size_t>(n_centroids));
  for (auto& c : centroids) c = static_cast<Scalar>(gen.uniform(-1, 1));
  idx.assign(static_cast<std::size_t>(rows * cols), 0);
  for (auto& i : idx) i = static_cast<int>(gen.below(static_cast<std::uint64_t>(n_centroids)));
  return kernels::codebook_matrix<Scalar>::from_indices(rows, cols, bits, idx, centroids);
}

/// |got - expected| within (terms + 2) eps sum |terms| for every output.
template <class Scalar>
void check_product(const kernels::codebook_ref<Scalar>& a, const std::vector<Scalar>& x, index_t n, const std::vector<Scalar>& bias,
                   const Scalar* y, index_t ldy, index_t ys, const char* what) {
  const double eps = std::numeric_limits<Scalar>::epsilon();
  index_t bad = 0;
  for (index_t i = 0; i < a.rows; ++i) {
    for (index_t j = 0; j < n; ++j) {
      double s = bias.empty() ? 0.0 : double(bias[static_cast<std::size_t>(i)]), mag = std::abs(s);
      for (index_t k = 0; k < a.cols; ++k) {
        const double t = double(a.value(i, k)) * double(x[static_cast<std::size_t>(k * n + j)]);
        s += t;
        mag += std::abs(t);
      }
      if (!(std::abs(double(y[i * ldy + j * ys]) - s) <= double(a.cols + 3) * eps * mag)) ++bad;
    }
  }
  INFO(what << " " << a.rows << " x " << a.cols << " bits " << a.bits << " batch " << n);
  CHECK(bad == 0);
}

}  // namespace

TEMPLATE_TEST_CASE("codebook GEMV and GEMM equal the decoded product for 1..8-bit indices", "[kernels][codebook]", float, double) {
  rng gen(31);
  const std::vector<std::pair<index_t, index_t>> shapes = {{1, 1}, {3, 7}, {17, 16}, {13, 33}, {31, 100}, {64, 129}, {97, 257}};
  for (int bits = 1; bits <= 8; ++bits) {
    for (const auto& [m, k] : shapes) {
      std::vector<int> idx;
      const auto a = random_codebook<TestType>(m, k, bits, gen, idx);
      // The packing convention and the accessor agree with the indices given.
      bool same = true;
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < k; ++j) same &= a.ref().index(i, j) == static_cast<unsigned>(idx[static_cast<std::size_t>(i * k + j)]);
      CHECK(same);
      std::vector<TestType> bias(static_cast<std::size_t>(m));
      for (auto& b : bias) b = static_cast<TestType>(gen.uniform(-1, 1));
      for (index_t n : {1, 5, 40}) {
        std::vector<TestType> x(static_cast<std::size_t>(k * n)), y(static_cast<std::size_t>(m * n));
        for (auto& v : x) v = static_cast<TestType>(gen.uniform(-1, 1));
        for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
          kernels::codebook_params<TestType> p;
          p.bias = bias.data();
          p.path = path;
          // The family each call runs (codebook_path(): avx512 with VBMI, else portable), counted.
          const kernels::isa expected = std::is_same_v<TestType, float> && path == kernels::kernel_path::automatic
                                            ? kernels::codebook_path()
                                            : kernels::isa::portable;
          const auto calls = kernels::codebook_path_calls(expected);
          if (n == 1) {
            poison(y);
            kernels::gemv_codebook(a.ref(), x.data(), y.data(), p);
            check_product(a.ref(), x, 1, bias, y.data(), 1, 1, "gemv_codebook");
          }
          p.threads = 2;
          poison(y);
          kernels::gemm_codebook(a.ref(), kernels::row_major<const TestType>(x.data(), k, n), kernels::row_major(y.data(), m, n), p);
          check_product(a.ref(), x, n, bias, y.data(), n, 1, "gemm_codebook");
          CHECK(kernels::codebook_path_calls(expected) == calls + (n == 1 ? 2 : 1));
        }
        kernels::codebook_params<TestType> p;
        p.bias = bias.data();
        poison(y);
        kernels::gemm_codebook_reference(a.ref(), kernels::row_major<const TestType>(x.data(), k, n), kernels::row_major(y.data(), m, n), p);
        check_product(a.ref(), x, n, bias, y.data(), n, 1, "gemm_codebook_reference");
        if (n == 1) {
          poison(y);
          kernels::gemv_codebook_reference(a.ref(), x.data(), y.data(), p);
          check_product(a.ref(), x, 1, bias, y.data(), 1, 1, "gemv_codebook_reference");
        }
      }
    }
  }
}

TEST_CASE("codebook 1000 x 1000 at 4 and 5 bits; from_dense; validation", "[kernels][codebook]") {
  rng gen(32);
  for (int bits : {4, 5}) {
    std::vector<int> idx;
    const auto a = random_codebook<float>(1000, 1000, bits, gen, idx);
    std::vector<float> x(1000), y(1000), bias;
    for (auto& v : x) v = static_cast<float>(gen.uniform(-1, 1));
    poison(y);
    kernels::gemv_codebook(a.ref(), x.data(), y.data());
    check_product(a.ref(), x, 1, bias, y.data(), 1, 1, "gemv_codebook");
    CHECK(a.bytes() == static_cast<std::size_t>(1000 * ((1000 * bits + 7) / 8)) + a.centroids().size() * sizeof(float));
  }
  // A weight-shared matrix converts exactly; too many distinct values do not fit.
  std::vector<float> w = {0.5f, -1.0f, 0.5f, 2.0f, 2.0f, -1.0f};
  const auto c = kernels::codebook_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), 2, 3), 2);
  CHECK(c.centroids() == std::vector<float>{-1.0f, 0.5f, 2.0f});
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 3; ++j) CHECK(c.ref().value(i, j) == w[static_cast<std::size_t>(i * 3 + j)]);
  CHECK_THROWS_WITH(kernels::codebook_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), 2, 3), 1),
                    Catch::Contains("3 distinct values") && Catch::Contains("1-bit"));
  CHECK_THROWS_AS(kernels::codebook_matrix<float>::from_indices(1, 2, 9, std::vector<int>{0, 1}, std::vector<float>{1, 2}), config_error);
  CHECK_THROWS_AS(kernels::codebook_matrix<float>::from_indices(1, 2, 2, std::vector<int>{0, 3}, std::vector<float>{1, 2, 3}), config_error);
  std::vector<float> x(3), y(3);
  CHECK_THROWS_WITH(kernels::gemm_codebook(c.ref(), kernels::row_major<const float>(x.data(), 1, 3), kernels::row_major(y.data(), 2, 3)),
                    Catch::Contains("gemm_codebook") && Catch::Contains("(2 x 3) * (1 x 3)"));
}

TEST_CASE("codebook_path: the AVX-512 decoder runs only where the CPU has VBMI and AVX-512 is active",
          "[kernels][codebook][dispatch]") {
  slimnet::testing::isa_reset_guard guard;
  for (kernels::isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    INFO("family " << kernels::isa_name(family));
#if defined(SLIMNET_DISPATCH_X86)
    const bool decoder = family == kernels::isa::avx512 && kernels::cpu_features().avx512_vbmi;
#else
    const bool decoder = false;
#endif
    CHECK(kernels::codebook_path() == (decoder ? kernels::isa::avx512 : kernels::isa::portable));
  }
}
