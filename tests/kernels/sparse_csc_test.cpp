// The activation-sparse CSC product (kernels/sparse_csc.hpp) against its reference (bitwise) and a
// dense double product (within rounding), over odd shapes, weight densities and input zero
// fractions from all-zero to no-zero; the zero-skipping result against the one without skipping.
// Every family the CPU has (forced with set_isa), and the path that ran (csc_path_calls).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/sparse_csc.hpp"
#include "support/isa_families.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using kernels::isa;
using slimnet::testing::poison;
using csc_test_isa_guard = slimnet::testing::isa_reset_guard;

namespace {

/// W (rows x cols) with Bernoulli(density) nonzeros, x with Bernoulli(1 - zero_fraction) nonzeros
/// (the zeros are +0 and -0 alternately: both must be skipped), a bias.
template <class Scalar>
struct csc_case_problem {
  index_t rows, cols;
  std::vector<Scalar> w, x, bias;
  csc_case_problem(index_t m, index_t k, double density, double zero_fraction, std::uint64_t seed)
      : rows(m), cols(k), w(static_cast<std::size_t>(m * k), Scalar(0)), x(static_cast<std::size_t>(k)), bias(static_cast<std::size_t>(m)) {
    rng gen(seed);
    for (auto& v : w)
      if (gen.uniform() < density) v = static_cast<Scalar>(gen.uniform(-1, 1));
    bool negative_zero = false;
    for (auto& v : x) {
      if (gen.uniform() < zero_fraction) {
        v = negative_zero ? -Scalar(0) : Scalar(0);
        negative_zero = !negative_zero;
      } else {
        v = static_cast<Scalar>(gen.uniform(-1, 1));
      }
    }
    for (auto& v : bias) v = static_cast<Scalar>(gen.uniform(-1, 1));
  }
  kernels::matrix_ref<const Scalar> weights() const { return kernels::row_major<const Scalar>(w.data(), rows, cols); }

  /// y against W x + bias in double within (terms + 3) eps sum |terms| (any order, FMA or not).
  void check_dense(const std::vector<Scalar>& y, bool with_bias, const char* what) const {
    const double eps = std::numeric_limits<Scalar>::epsilon();
    index_t bad = 0;
    for (index_t i = 0; i < rows; ++i) {
      double sum = with_bias ? double(bias[static_cast<std::size_t>(i)]) : 0.0, mag = std::abs(sum);
      index_t terms = 0;
      for (index_t j = 0; j < cols; ++j) {
        const double t = double(w[static_cast<std::size_t>(i * cols + j)]) * double(x[static_cast<std::size_t>(j)]);
        if (w[static_cast<std::size_t>(i * cols + j)] != Scalar(0)) ++terms;
        sum += t;
        mag += std::abs(t);
      }
      const double err = std::abs(double(y[static_cast<std::size_t>(i)]) - sum);
      if (!(err <= double(terms + 3) * eps * mag)) ++bad;
    }
    INFO(what << ": " << rows << " x " << cols);
    CHECK(bad == 0);
  }
};

template <class Scalar>
void check_csc_case(index_t rows, index_t cols, double density, double zero_fraction, std::uint64_t seed) {
  const csc_case_problem<Scalar> p(rows, cols, density, zero_fraction, seed);
  const auto a = kernels::csc_matrix<Scalar>::from_dense(p.weights());
  index_t nnz = 0;
  for (auto v : p.w) nnz += v != Scalar(0);
  REQUIRE(a.nnz() == nnz);
  CHECK(a.bytes() == (static_cast<std::size_t>(cols) + 1) * 4 + static_cast<std::size_t>(nnz) * (sizeof(Scalar) + 2));
  std::vector<Scalar> ref(static_cast<std::size_t>(rows)), y(ref.size()), all(ref.size());
  for (bool with_bias : {false, true}) {
    kernels::sparse_params<Scalar> params;
    params.bias = with_bias ? p.bias.data() : nullptr;
    poison(ref);
    kernels::spmv_csc_reference(a.ref(), p.x.data(), ref.data(), params);
    p.check_dense(ref, with_bias, "spmv_csc_reference");
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      params.path = path;
      // The family this call runs: csc_path() for float on the automatic path (avx2 or avx512 on x86).
      const isa expected =
          std::is_same_v<Scalar, float> && path == kernels::kernel_path::automatic ? kernels::csc_path() : isa::portable;
#if defined(SLIMNET_DISPATCH_X86)
      if (std::is_same_v<Scalar, float> && path == kernels::kernel_path::automatic) CHECK(expected == kernels::active_isa());
#endif
      const auto calls = kernels::csc_path_calls(expected);
      poison(y);
      kernels::spmv_csc(a.ref(), p.x.data(), y.data(), params);
      CHECK(kernels::csc_path_calls(expected) == calls + 1);
      p.check_dense(y, with_bias, "spmv_csc");
      // Same fused updates in the same (column) order as the reference: bitwise equal.
      INFO((path == kernels::kernel_path::portable ? "portable" : "automatic") << " path, " << rows << " x " << cols << ", density "
                                                                                 << density << ", zero inputs " << zero_fraction);
      CHECK(y == ref);
      // Skipping zero inputs drops exact-zero terms only: equal to the product over every column
      // (== also equates +0 and -0, the one difference skipping can make).
      poison(all);
      kernels::spmv_csc(a.ref(), p.x.data(), all.data(), params, kernels::csc_skip::none);
      CHECK(all == y);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("spmv_csc equals its reference bitwise and W x + b within rounding", "[kernels][sparse][csc]", float, double) {
  csc_test_isa_guard guard;
  const index_t shapes[][2] = {{1, 1}, {1, 7}, {7, 1}, {17, 13}, {31, 97}, {100, 300}, {300, 784}, {129, 65}};
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    INFO("family " << kernels::isa_name(family));
    std::uint64_t seed = 11;
    for (const auto& s : shapes)
      for (double density : {0.0, 0.01, 0.1, 0.5, 1.0})
        for (double zeros : {0.0, 0.5, 0.8, 1.0}) check_csc_case<TestType>(s[0], s[1], density, zeros, seed++);
  }
}

TEST_CASE("spmv_csc: columns of 64 and more nonzeros take the vector path; bad shapes throw", "[kernels][sparse][csc]") {
  csc_test_isa_guard guard;
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    INFO("family " << kernels::isa_name(family));
    // 600 rows at 50%: ~300 nonzeros per column (vector steps of 16 and a scalar tail).
    check_csc_case<float>(600, 9, 0.5, 0.3, 5);
    check_csc_case<float>(65536, 2, 0.01, 0.0, 6);  // the largest row index a uint16 holds
  }
  std::vector<float> w(static_cast<std::size_t>(65537), 1.0f);
  CHECK_THROWS_AS(kernels::csc_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), 65537, 1)), shape_error);
  const auto a = kernels::csc_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), 3, 2));
  std::vector<float> y(3);
  CHECK_THROWS_AS(kernels::spmv_csc(a.ref(), static_cast<const float*>(nullptr), y.data()), shape_error);
  const float x[2] = {0, 0};
  CHECK(kernels::count_nonzero(x, 2) == 0);
}
