// The run-time dispatched CSR products (spmv_csr, spmv_csr_products, spmm_csr, spmm_blocked_csr):
// every family this CPU can run, forced with set_isa, against a double product over odd shapes
// (strip widths around the 8- and 16-float vectors and the 64-float strip), outputs poisoned with
// NaN, and the path that actually ran (csr_path_calls).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/sparse.hpp"
#include "support/isa_families.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using kernels::isa;
using slimnet::testing::poison;
using csr_dispatch_isa_guard = slimnet::testing::isa_reset_guard;

namespace {

/// W (rows x cols, Bernoulli(density) nonzeros), X (cols x batch, batch-contiguous), a bias, and
/// W X + bias in double with the sum of |terms| per output for the error bound.
struct csr_dispatch_problem {
  index_t rows, cols, batch;
  std::vector<float> w, x, bias;
  std::vector<double> expected, magnitude;
  std::vector<index_t> terms;
  csr_dispatch_problem(index_t m, index_t k, index_t n, double density, std::uint64_t seed)
      : rows(m),
        cols(k),
        batch(n),
        w(static_cast<std::size_t>(m * k), 0.0f),
        x(static_cast<std::size_t>(k * n)),
        bias(static_cast<std::size_t>(m)),
        expected(static_cast<std::size_t>(m * n)),
        magnitude(expected.size()),
        terms(static_cast<std::size_t>(m)) {
    rng gen(seed);
    for (auto& v : w)
      if (gen.uniform() < density) v = static_cast<float>(gen.uniform(-1, 1));
    for (auto& v : x) v = static_cast<float>(gen.uniform(-1, 1));
    for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        double s = bias[static_cast<std::size_t>(i)], mag = std::abs(s);
        index_t t = 0;
        for (index_t c = 0; c < k; ++c) {
          const double wv = w[static_cast<std::size_t>(i * k + c)];
          if (wv == 0) continue;
          const double p = wv * x[static_cast<std::size_t>(c * n + j)];
          s += p, mag += std::abs(p), ++t;
        }
        expected[static_cast<std::size_t>(i * n + j)] = s;
        magnitude[static_cast<std::size_t>(i * n + j)] = mag;
        terms[static_cast<std::size_t>(i)] = t;
      }
  }

  /// Outputs y(i, j) = y[i * ldy + j] for the first `n` columns, within the bound for any
  /// summation order: (terms + 3) eps sum |terms|. NaN (a poisoned output never written) fails.
  void check(const std::vector<float>& y, index_t ldy, index_t n, const char* what) const {
    index_t bad = 0;
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < n; ++j) {
        const std::size_t e = static_cast<std::size_t>(i * batch + j);
        const double err = std::abs(double(y[static_cast<std::size_t>(i * ldy + j)]) - expected[e]);
        if (!(err <= double(terms[static_cast<std::size_t>(i)] + 3) * std::numeric_limits<float>::epsilon() * magnitude[e]))
          ++bad;
      }
    INFO(what << ": " << rows << " x " << cols << " x " << n);
    CHECK(bad == 0);
  }
};

template <class Index>
void csr_dispatch_check_all(const csr_dispatch_problem& p, isa family) {
  const auto w = kernels::row_major<const float>(p.w.data(), p.rows, p.cols);
  const auto a = kernels::csr_matrix<float, Index>::from_dense(w);
  kernels::sparse_params<float> params;
  params.bias = p.bias.data();
  const isa path = slimnet::testing::x86_simd_expected(family);
  std::vector<float> y(static_cast<std::size_t>(p.rows * p.batch)), x0(static_cast<std::size_t>(p.cols)),
      y0(static_cast<std::size_t>(p.rows)), scratch;
  for (index_t c = 0; c < p.cols; ++c) x0[static_cast<std::size_t>(c)] = p.x[static_cast<std::size_t>(c * p.batch)];

  auto calls = kernels::csr_path_calls(path);
  poison(y);
  kernels::spmm_csr(a.ref(), kernels::row_major<const float>(p.x.data(), p.cols, p.batch),
                    kernels::row_major(y.data(), p.rows, p.batch), params);
  p.check(y, p.batch, p.batch, "spmm_csr");
  CHECK(kernels::csr_path_calls(path) == calls + 1);

  calls = kernels::csr_path_calls(path);
  poison(y0);
  kernels::spmv_csr(a.ref(), x0.data(), y0.data(), params);
  p.check(y0, 1, 1, "spmv_csr");
  poison(y0);
  kernels::spmv_csr_compact(a.ref(), x0.data(), y0.data(), scratch, params);
  p.check(y0, 1, 1, "spmv_csr_compact");
  poison(y0);
  scratch.resize(static_cast<std::size_t>(a.nnz()));
  kernels::spmv_csr_products(a.ref(), x0.data(), y0.data(), scratch.data(), params);
  p.check(y0, 1, 1, "spmv_csr_products");
  CHECK(kernels::csr_path_calls(path) == calls + 3);

  for (index_t block : {index_t{7}, index_t{64}}) {
    const auto b = kernels::blocked_csr_matrix<float, std::uint8_t>::from_dense(w, block);
    calls = kernels::csr_path_calls(path);
    poison(y);
    kernels::spmm_blocked_csr(b.ref(), kernels::row_major<const float>(p.x.data(), p.cols, p.batch),
                              kernels::row_major(y.data(), p.rows, p.batch), params);
    p.check(y, p.batch, p.batch, "spmm_blocked_csr");
    CHECK(kernels::csr_path_calls(path) == calls + 1);
  }
}

}  // namespace

TEST_CASE("CSR products: every path the CPU has equals a double product over odd shapes", "[kernels][sparse][dispatch]") {
  csr_dispatch_isa_guard guard;
  struct shape {
    index_t m, k, n;
  };
  // batch widths around the AVX2 vector (8), the AVX-512 vector (16) and the 64-float strip; rows
  // of 0, 1, 2 and many nonzeros (odd counts: the two accumulator sets take alternate nonzeros).
  const std::vector<shape> shapes = {{1, 1, 1},    {7, 13, 1},  {5, 9, 3},    {17, 33, 8},  {13, 70, 9},  {9, 31, 17},
                                     {11, 40, 33}, {6, 23, 57}, {19, 50, 64}, {7, 301, 65}, {12, 29, 130}};
  std::uint64_t seed = 1901;
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    INFO("family " << kernels::isa_name(family));
    CHECK(kernels::csr_path() == slimnet::testing::x86_simd_expected(family));
    for (const auto& s : shapes)
      for (double density : {0.07, 0.4, 1.0}) {
        const csr_dispatch_problem p(s.m, s.k, s.n, density, ++seed);
        csr_dispatch_check_all<std::uint32_t>(p, family);
        csr_dispatch_check_all<std::uint16_t>(p, family);
        if (s.k <= 256) csr_dispatch_check_all<std::uint8_t>(p, family);
      }
  }
}

TEST_CASE("CSR products: kernel_path::portable and strided operands run the portable path", "[kernels][sparse][dispatch]") {
  csr_dispatch_isa_guard guard;
  const csr_dispatch_problem p(9, 20, 12, 0.5, 1977);
  const auto a =
      kernels::csr_matrix<float, std::uint16_t>::from_dense(kernels::row_major<const float>(p.w.data(), p.rows, p.cols));
  kernels::sparse_params<float> params;
  params.bias = p.bias.data();
  params.path = kernels::kernel_path::portable;
  std::vector<float> y(static_cast<std::size_t>(p.rows * p.batch));
  auto calls = kernels::csr_path_calls(isa::portable);
  poison(y);
  kernels::spmm_csr(a.ref(), kernels::row_major<const float>(p.x.data(), p.cols, p.batch),
                    kernels::row_major(y.data(), p.rows, p.batch), params);
  p.check(y, p.batch, p.batch, "spmm_csr portable");
  CHECK(kernels::csr_path_calls(isa::portable) == calls + 1);
  // Y written column-major (col_stride = rows): the SIMD strips need batch-contiguous rows.
  params.path = kernels::kernel_path::automatic;
  std::vector<float> yt(y.size());
  poison(yt);
  calls = kernels::csr_path_calls(isa::portable);
  kernels::spmm_csr(a.ref(), kernels::row_major<const float>(p.x.data(), p.cols, p.batch),
                    kernels::matrix_ref<float>{yt.data(), p.rows, p.batch, 1, p.rows}, params);
  CHECK(kernels::csr_path_calls(isa::portable) == calls + 1);
  for (index_t i = 0; i < p.rows; ++i)
    for (index_t j = 0; j < p.batch; ++j)
      y[static_cast<std::size_t>(i * p.batch + j)] = yt[static_cast<std::size_t>(j * p.rows + i)];
  p.check(y, p.batch, p.batch, "spmm_csr strided");
}
