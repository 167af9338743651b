// Sparse kernels (CSR, column-blocked CSR, SELL) against their references and a dense double
// product, over shapes {1x1, primes, 1000x1000, empty rows} and densities {0, 0.01, 0.1, 0.5, 1}.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/sparse.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using slimnet::testing::poison;

namespace {

/// A random sparse problem: W (rows x cols) with Bernoulli(density) nonzeros, X (cols x batch)
/// batch-contiguous, a bias; `empty_every` > 0 empties every empty_every-th row.
template <class Scalar>
struct sparse_problem {
  index_t rows, cols, batch;
  std::vector<Scalar> w, x, bias;
  sparse_problem(index_t m, index_t k, index_t n, double density, std::uint64_t seed, index_t empty_every = 0)
      : rows(m), cols(k), batch(n), w(static_cast<std::size_t>(m * k), Scalar(0)), x(static_cast<std::size_t>(k * n)),
        bias(static_cast<std::size_t>(m)) {
    rng gen(seed);
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < k; ++j)
        if (gen.uniform() < density && !(empty_every > 0 && i % empty_every == 0))
          w[static_cast<std::size_t>(i * k + j)] = static_cast<Scalar>(gen.uniform(-1, 1));
    for (auto& v : x) v = static_cast<Scalar>(gen.uniform(-1, 1));
    for (auto& v : bias) v = static_cast<Scalar>(gen.uniform(-1, 1));
  }
  kernels::matrix_ref<const Scalar> weights() const { return kernels::row_major<const Scalar>(w.data(), rows, cols); }
  kernels::matrix_ref<const Scalar> input() const { return kernels::row_major<const Scalar>(x.data(), cols, batch); }

  /// Checks y (rows x batch, y(i, j) = y[i * ldy + j * ys]) against W X + bias in double, within
  /// the rigorous bound for any summation order: (terms + 2) * eps * sum |terms|.
  void check(const Scalar* y, index_t ldy, index_t ys, bool with_bias, const char* what) const {
    if (expected.empty()) compute_expected();
    const double eps = std::numeric_limits<Scalar>::epsilon();
    index_t bad = 0;
    double worst = 0;
    for (index_t i = 0; i < rows; ++i) {
      const double b = with_bias ? double(bias[static_cast<std::size_t>(i)]) : 0.0;
      for (index_t j = 0; j < batch; ++j) {
        const std::size_t e = static_cast<std::size_t>(i * batch + j);
        const double err = std::abs(double(y[i * ldy + j * ys]) - (expected[e] + b));
        worst = std::max(worst, err);
        if (!(err <= double(terms[static_cast<std::size_t>(i)] + 3) * eps * (magnitude[e] + std::abs(b)))) ++bad;
      }
    }
    INFO(what << ": " << rows << " x " << cols << " x " << batch << ", worst error " << worst);
    CHECK(bad == 0);
  }

 private:
  void compute_expected() const {
    expected.assign(static_cast<std::size_t>(rows * batch), 0.0);
    magnitude.assign(expected.size(), 0.0);
    terms.assign(static_cast<std::size_t>(rows), 0);
    for (index_t i = 0; i < rows; ++i) {
      for (index_t c = 0; c < cols; ++c) {
        const double wv = w[static_cast<std::size_t>(i * cols + c)];
        if (wv == 0) continue;
        ++terms[static_cast<std::size_t>(i)];
        for (index_t j = 0; j < batch; ++j) {
          const double t = wv * double(x[static_cast<std::size_t>(c * batch + j)]);
          expected[static_cast<std::size_t>(i * batch + j)] += t;
          magnitude[static_cast<std::size_t>(i * batch + j)] += std::abs(t);
        }
      }
    }
  }
  mutable std::vector<double> expected, magnitude;
  mutable std::vector<index_t> terms;
};

template <class Scalar, class Index>
void check_csr_variants(const sparse_problem<Scalar>& p) {
  const auto a = kernels::csr_matrix<Scalar, Index>::from_dense(p.weights());
  std::vector<Scalar> y(static_cast<std::size_t>(p.rows * p.batch), Scalar(-7));
  for (bool with_bias : {false, true}) {
    kernels::sparse_params<Scalar> params;
    params.bias = with_bias ? p.bias.data() : nullptr;
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      params.path = path;
      if (p.batch == 1) {
        poison(y);
        kernels::spmv_csr(a.ref(), p.x.data(), y.data(), params);
        p.check(y.data(), 1, 1, with_bias, "spmv_csr");
        poison(y);
        kernels::spmv_csr_reference(a.ref(), p.x.data(), y.data(), params);
        p.check(y.data(), 1, 1, with_bias, "spmv_csr_reference");
      }
      poison(y);
      kernels::spmm_csr(a.ref(), p.input(), kernels::row_major(y.data(), p.rows, p.batch), params);
      p.check(y.data(), p.batch, 1, with_bias, "spmm_csr");
    }
    poison(y);
    kernels::spmm_csr_reference(a.ref(), p.input(), kernels::row_major(y.data(), p.rows, p.batch), params);
    p.check(y.data(), p.batch, 1, with_bias, "spmm_csr_reference");
  }
}

/// Every format and variant; `light` (for the large matrices) keeps one index width and the
/// default and one other block width per format.
template <class Scalar>
void check_all_formats(const sparse_problem<Scalar>& p, bool light = false) {
  if (!light) check_csr_variants<Scalar, std::uint32_t>(p);
  check_csr_variants<Scalar, std::uint16_t>(p);
  if (p.cols <= 256) check_csr_variants<Scalar, std::uint8_t>(p);

  std::vector<Scalar> y(static_cast<std::size_t>(p.rows * p.batch), Scalar(-7));
  kernels::sparse_params<Scalar> params;
  params.bias = p.bias.data();
  // Column-blocked CSR: default panel width, narrow panels, one panel.
  for (index_t block : {index_t{0}, index_t{1}, index_t{7}, index_t{64}, index_t{256}}) {
    if (light && block != 0 && block != 64) continue;
    const auto b = kernels::blocked_csr_matrix<Scalar, std::uint8_t>::from_dense(p.weights(), block);
    CHECK(b.nnz() == kernels::csr_matrix<Scalar>::from_dense(p.weights()).nnz());
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      params.path = path;
      poison(y);
      kernels::spmm_blocked_csr(b.ref(), p.input(), kernels::row_major(y.data(), p.rows, p.batch), params);
      p.check(y.data(), p.batch, 1, true, "spmm_blocked_csr");
    }
    poison(y);
    kernels::spmm_blocked_csr_reference(b.ref(), p.input(), kernels::row_major(y.data(), p.rows, p.batch), params);
    p.check(y.data(), p.batch, 1, true, "spmm_blocked_csr_reference");
  }
  if (p.batch != 1) return;
  // SELL: permute widths 16/32/64, a gather width (5), the default, sorted and in order.
  const auto csr = kernels::csr_matrix<Scalar, std::uint16_t>::from_dense(p.weights());
  for (index_t block : {index_t{0}, index_t{5}, index_t{16}, index_t{32}, index_t{64}}) {
    for (bool sorted : {false, true}) {
      if (light && (block == 5 || block == 16 || sorted != (block == 64))) continue;
      const auto s = kernels::sell_matrix<Scalar, std::uint8_t>::from_csr(csr, block, sorted);
      CHECK(s.nnz() == csr.nnz());
      CHECK(s.stored() >= s.nnz());
      for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
        params.path = path;
        poison(y);
        kernels::spmv_sell(s.ref(), p.x.data(), y.data(), params);
        p.check(y.data(), 1, 1, true, "spmv_sell");
      }
      poison(y);
      kernels::spmv_sell_reference(s.ref(), p.x.data(), y.data(), params);
      p.check(y.data(), 1, 1, true, "spmv_sell_reference");
    }
  }
  // One block of all columns: x gathered with 16-bit indices.
  const auto g = kernels::sell_matrix<Scalar, std::uint16_t>::from_csr(csr, p.cols, true);
  params.path = kernels::kernel_path::automatic;
  poison(y);
  kernels::spmv_sell(g.ref(), p.x.data(), y.data(), params);
  p.check(y.data(), 1, 1, true, "spmv_sell (gather)");
}

}  // namespace

TEMPLATE_TEST_CASE("sparse kernels equal W x + b over shapes and densities", "[kernels][sparse]", float, double) {
  const std::vector<std::pair<index_t, index_t>> shapes = {{1, 1}, {7, 13}, {31, 17}, {17, 257}, {101, 97}, {263, 61}};
  std::uint64_t seed = 1;
  for (const auto& [m, k] : shapes) {
    for (double density : {0.0, 0.01, 0.1, 0.5, 1.0}) {
      for (index_t batch : {1, 2, 16, 17, 64, 67}) {
        INFO("shape " << m << " x " << k << " density " << density << " batch " << batch);
        check_all_formats(sparse_problem<TestType>(m, k, batch, density, seed++));
      }
    }
  }
}

TEMPLATE_TEST_CASE("sparse kernels on 1000 x 1000 and with empty rows", "[kernels][sparse]", float, double) {
  for (double density : {0.0, 0.01, 0.1, 0.5, 1.0}) {
    for (index_t batch : {1, 19}) {
      INFO("1000 x 1000, density " << density << " batch " << batch);
      check_all_formats(sparse_problem<TestType>(1000, 1000, batch, density, 100 + static_cast<std::uint64_t>(density * 100)), true);
    }
  }
  // Every third row empty, and a matrix whose rows are all empty but one.
  check_all_formats(sparse_problem<TestType>(97, 300, 1, 0.3, 5, 3));
  check_all_formats(sparse_problem<TestType>(97, 300, 20, 0.3, 6, 3));
  check_all_formats(sparse_problem<TestType>(50, 40, 1, 0.5, 7, 1));
}

TEST_CASE("sparse kernels: threads split rows and give bitwise the same result", "[kernels][sparse]") {
  sparse_problem<float> p(333, 517, 70, 0.1, 11);
  const auto csr = kernels::csr_matrix<float, std::uint16_t>::from_dense(p.weights());
  const auto blocked = kernels::blocked_csr_matrix<float>::from_dense(p.weights());
  const auto sell = kernels::sell_matrix<float>::from_csr(csr);
  std::vector<float> y1(333 * 70), y2(333 * 70);
  kernels::sparse_params<float> one, many;
  one.bias = many.bias = p.bias.data();
  for (int threads : {2, 3, 0}) {
    many.threads = threads;
    poison(y1);
    kernels::spmm_csr(csr.ref(), p.input(), kernels::row_major(y1.data(), 333, 70), one);
    poison(y2);
    kernels::spmm_csr(csr.ref(), p.input(), kernels::row_major(y2.data(), 333, 70), many);
    CHECK(y1 == y2);
    poison(y1);
    kernels::spmm_blocked_csr(blocked.ref(), p.input(), kernels::row_major(y1.data(), 333, 70), one);
    poison(y2);
    kernels::spmm_blocked_csr(blocked.ref(), p.input(), kernels::row_major(y2.data(), 333, 70), many);
    CHECK(y1 == y2);
    std::vector<float> v1(333), v2(333);
    poison(v1);
    kernels::spmv_sell(sell.ref(), p.x.data(), v1.data(), one);
    poison(v2);
    kernels::spmv_sell(sell.ref(), p.x.data(), v2.data(), many);
    CHECK(v1 == v2);
    poison(v1);
    kernels::spmv_csr(csr.ref(), p.x.data(), v1.data(), one);
    poison(v2);
    kernels::spmv_csr(csr.ref(), p.x.data(), v2.data(), many);
    CHECK(v1 == v2);
  }
}

TEST_CASE("spmm accepts strided operands (non batch-contiguous)", "[kernels][sparse]") {
  sparse_problem<float> p(37, 41, 9, 0.2, 12);
  const auto a = kernels::csr_matrix<float, std::uint8_t>::from_dense(p.weights());
  // X stored column-major (col_stride = cols), Y column-major with padding.
  std::vector<float> xt(static_cast<std::size_t>(41 * 9));
  for (index_t c = 0; c < 41; ++c)
    for (index_t j = 0; j < 9; ++j) xt[static_cast<std::size_t>(j * 41 + c)] = p.x[static_cast<std::size_t>(c * 9 + j)];
  std::vector<float> y(static_cast<std::size_t>(40 * 9), 0.0f);
  const kernels::matrix_ref<const float> xv{xt.data(), 41, 9, 1, 41};
  const kernels::matrix_ref<float> yv{y.data(), 37, 9, 1, 40};
  kernels::sparse_params<float> params;
  params.bias = p.bias.data();
  kernels::spmm_csr(a.ref(), xv, yv, params);
  p.check(y.data(), 1, 40, true, "spmm_csr strided");
  const auto b = kernels::blocked_csr_matrix<float>::from_dense(p.weights(), 8);
  kernels::spmm_blocked_csr(b.ref(), xv, yv, params);
  p.check(y.data(), 1, 40, true, "spmm_blocked_csr strided");
}

TEST_CASE("sparse formats never multiply padding: inf in x stays out of rows that do not use it", "[kernels][sparse]") {
  // Row 0 uses column 0 only; rows 1..19 use column 40 only. Padding entries have index 0 (relative),
  // so x[0] = inf would poison every padded lane if padding were multiplied.
  std::vector<float> w(20 * 70, 0.0f);
  w[0] = 1.0f;
  for (index_t i = 1; i < 20; ++i) w[static_cast<std::size_t>(i * 70 + 40)] = 2.0f;
  std::vector<float> x(70, 1.0f), y(20);
  x[0] = std::numeric_limits<float>::infinity();
  x[32] = std::numeric_limits<float>::infinity();
  x[64] = std::numeric_limits<float>::infinity();
  const auto csr = kernels::csr_matrix<float, std::uint8_t>::from_dense(kernels::row_major<const float>(w.data(), 20, 70));
  for (index_t block : {16, 32, 64, 70}) {
    const auto s = kernels::sell_matrix<float>::from_csr(csr, block);
    poison(y);
    kernels::spmv_sell(s.ref(), x.data(), y.data());
    CHECK(std::isinf(y[0]));
    for (index_t i = 1; i < 20; ++i) CHECK(y[static_cast<std::size_t>(i)] == 2.0f);
  }
  poison(y);
  kernels::spmv_csr(csr.ref(), x.data(), y.data());
  for (index_t i = 1; i < 20; ++i) CHECK(y[static_cast<std::size_t>(i)] == 2.0f);
}

TEST_CASE("sparse formats validate their input", "[kernels][sparse]") {
  using csr = kernels::csr_matrix<float, std::uint8_t>;
  CHECK_THROWS_AS(csr(2, 3, {0, 1}, {0}, {1.0f}), shape_error);           // too few offsets
  CHECK_THROWS_AS(csr(1, 3, {0, 1}, {3}, {1.0f}), shape_error);           // column out of range
  CHECK_THROWS_AS(csr(2, 3, {0, 2, 1}, {0, 1}, {1.0f, 2.0f}), shape_error);  // decreasing offsets
  CHECK_NOTHROW(csr(2, 3, {0, 1, 2}, {2, 0}, {1.0f, 2.0f}));
  std::vector<float> wide(300, 1.0f);
  CHECK_THROWS_WITH(csr::from_dense(kernels::row_major<const float>(wide.data(), 1, 300)),
                    Catch::Contains("csr_matrix::from_dense") && Catch::Contains("300 columns"));
  const auto a = kernels::csr_matrix<float>::from_dense(kernels::row_major<const float>(wide.data(), 3, 100));
  std::vector<float> x(100 * 4), y(3 * 4);
  CHECK_THROWS_WITH(kernels::spmm_csr(a.ref(), kernels::row_major<const float>(x.data(), 99, 4), kernels::row_major(y.data(), 3, 4)),
                    Catch::Contains("spmm_csr") && Catch::Contains("(3 x 100) * (99 x 4)"));
  CHECK(kernels::narrow_index_bytes(256) == 1);
  CHECK(kernels::narrow_index_bytes(257) == 2);
  CHECK(kernels::narrow_index_bytes(65537) == 4);
}
