// factorize::omp / ista recover planted sparse codes; learn_dictionary (K-SVD) never raises its
// error, keeps the nonzero budget, and reconstructs exactly at full rank; bad arguments throw.
#include <catch2/catch.hpp>

#include <cmath>

#include "slimnet/factorize/sparse_coding.hpp"

using namespace slimnet;

namespace {

template <class Scalar>
factorize::matrix<Scalar> coding_test_gaussian(index_t rows, index_t cols, rng& gen) {
  factorize::matrix<Scalar> m(rows, cols);
  for (index_t j = 0; j < cols; ++j)
    for (index_t i = 0; i < rows; ++i) m(i, j) = static_cast<Scalar>(gen.normal());
  return m;
}

template <class Scalar>
factorize::matrix<Scalar> coding_test_unit_columns(index_t rows, index_t cols, rng& gen) {
  factorize::matrix<Scalar> d = coding_test_gaussian<Scalar>(rows, cols, gen);
  for (index_t j = 0; j < cols; ++j) d.col(j).normalize();
  return d;
}

/// k x m codes with exactly `s` nonzeros per column, magnitudes in [1, 2], random signs.
template <class Scalar>
factorize::matrix<Scalar> coding_test_planted_codes(index_t k, index_t m, index_t s, rng& gen) {
  factorize::matrix<Scalar> x = factorize::matrix<Scalar>::Zero(k, m);
  for (index_t i = 0; i < m; ++i) {
    std::vector<index_t> atoms(static_cast<std::size_t>(k));
    for (index_t j = 0; j < k; ++j) atoms[static_cast<std::size_t>(j)] = j;
    slimnet::shuffle(atoms.begin(), atoms.end(), gen);
    for (index_t p = 0; p < s; ++p) {
      const double v = gen.uniform(1.0, 2.0) * (gen.bernoulli(0.5) ? 1 : -1);
      x(atoms[static_cast<std::size_t>(p)], i) = static_cast<Scalar>(v);
    }
  }
  return x;
}

template <class Scalar>
index_t coding_test_max_column_nonzeros(const factorize::matrix<Scalar>& x) {
  index_t most = 0;
  for (index_t i = 0; i < x.cols(); ++i) most = std::max<index_t>(most, (x.col(i).array() != Scalar(0)).count());
  return most;
}

}  // namespace

TEMPLATE_TEST_CASE("omp recovers a planted sparse code exactly", "[factorize][omp]", float, double) {
  rng gen(3);
  const auto D = coding_test_unit_columns<TestType>(40, 60, gen);
  const auto X = coding_test_planted_codes<TestType>(60, 25, 4, gen);
  const factorize::matrix<TestType> Y = D * X;
  const auto codes = factorize::omp<TestType>(D, Y, 4);
  REQUIRE(codes.rows() == 60);
  REQUIRE(codes.cols() == 25);
  const double tol = std::is_same_v<TestType, float> ? 1e-4 : 1e-10;
  for (index_t i = 0; i < X.cols(); ++i) {
    INFO("column " << i);
    CHECK(((codes.col(i).array() != TestType(0)) == (X.col(i).array() != TestType(0))).all());  // the support
    CHECK(static_cast<double>((codes.col(i) - X.col(i)).cwiseAbs().maxCoeff()) < tol);
  }
  // A smaller budget is never exceeded, and the tolerance stops early.
  CHECK(coding_test_max_column_nonzeros<TestType>(factorize::omp<TestType>(D, Y, 2)) <= 2);
  const auto loose = factorize::omp<TestType>(D, Y, 4, 1e6);
  CHECK(coding_test_max_column_nonzeros<TestType>(loose) == 0);
}

TEMPLATE_TEST_CASE("ista (FISTA lasso) finds the planted support and values within lambda's bias", "[factorize][ista]", float, double) {
  rng gen(5);
  const auto D = coding_test_unit_columns<TestType>(60, 20, gen);
  const auto X = coding_test_planted_codes<TestType>(20, 10, 3, gen);
  const factorize::matrix<TestType> Y = D * X;
  factorize::ista_options opt;
  opt.lambda = 1e-3;
  opt.iterations = 3000;
  const auto codes = factorize::ista<TestType>(D, Y, opt);
  for (index_t i = 0; i < X.cols(); ++i) {
    INFO("column " << i);
    for (index_t j = 0; j < X.rows(); ++j) {
      if (X(j, i) != TestType(0)) {
        CHECK(std::abs(static_cast<double>(codes(j, i) - X(j, i))) < 0.02);
      } else {
        CHECK(std::abs(static_cast<double>(codes(j, i))) < 0.02);
      }
    }
  }
  // A large lambda zeroes everything: soft-thresholding, not a least-squares fit.
  opt.lambda = 1e3;
  CHECK(factorize::ista<TestType>(D, Y, opt).cwiseAbs().maxCoeff() == TestType(0));
}

TEMPLATE_TEST_CASE("learn_dictionary: error never rises, budget kept, atoms unit norm", "[factorize][ksvd]", float, double) {
  rng gen(7);
  const auto Y = coding_test_gaussian<TestType>(20, 60, gen);
  for (auto init : {factorize::dictionary_init::svd, factorize::dictionary_init::random_signals}) {
    factorize::dictionary_options opt;
    opt.atoms = 10;
    opt.nonzeros = 3;
    opt.iterations = 15;
    opt.init = init;
    opt.seed = 4;
    const auto r = factorize::learn_dictionary<TestType>(Y, opt);
    INFO("init " << static_cast<int>(init));
    REQUIRE(r.errors.size() == 16);
    for (std::size_t i = 1; i < r.errors.size(); ++i) CHECK(r.errors[i] <= r.errors[i - 1] * (1 + 1e-5));
    CHECK(r.errors.back() < 0.97 * r.errors.front());  // the updates do improve on the initial dictionary
    CHECK(coding_test_max_column_nonzeros<TestType>(r.codes) <= 3);
    for (index_t j = 0; j < 10; ++j) CHECK(static_cast<double>(r.dictionary.col(j).norm()) == Approx(1.0).epsilon(1e-4));
    // errors() is what the returned factors give.
    CHECK(static_cast<double>((Y - r.dictionary * r.codes).norm()) == Approx(r.errors.back()).epsilon(1e-3));
    // Deterministic for a seed.
    const auto again = factorize::learn_dictionary<TestType>(Y, opt);
    CHECK(again.dictionary == r.dictionary);
    CHECK(again.codes == r.codes);
  }
}

TEMPLATE_TEST_CASE("learn_dictionary reconstructs exactly at full rank", "[factorize][ksvd]", float, double) {
  rng gen(9);
  const double tol = std::is_same_v<TestType, float> ? 1e-4 : 1e-10;
  // Full-rank signals, k = n atoms, s = k.
  const auto Y = coding_test_gaussian<TestType>(12, 30, gen);
  factorize::dictionary_options opt;
  opt.atoms = 12;
  opt.nonzeros = 12;
  opt.iterations = 3;
  auto r = factorize::learn_dictionary<TestType>(Y, opt);
  CHECK(r.errors.front() < tol * static_cast<double>(Y.norm()));
  CHECK(static_cast<double>((Y - r.dictionary * r.codes).norm()) < tol * static_cast<double>(Y.norm()));
  // Rank-5 signals: 5 atoms and 5 nonzeros suffice.
  const factorize::matrix<TestType> low = coding_test_gaussian<TestType>(20, 5, gen) * coding_test_gaussian<TestType>(5, 40, gen);
  opt.atoms = 5;
  opt.nonzeros = 5;
  r = factorize::learn_dictionary<TestType>(low, opt);
  CHECK(static_cast<double>((low - r.dictionary * r.codes).norm()) < tol * static_cast<double>(low.norm()));
}

TEST_CASE("sparse coding rejects bad arguments with the function and the value", "[factorize][errors]") {
  rng gen(1);
  const auto D = coding_test_unit_columns<double>(8, 10, gen);
  const auto Y = coding_test_gaussian<double>(8, 4, gen);
  using Catch::Matchers::Contains;
  CHECK_THROWS_AS(factorize::omp<double>(D, Y, 0), config_error);
  CHECK_THROWS_WITH(factorize::omp<double>(D, Y, 11), Contains("slimnet::factorize::omp") && Contains("max_nonzeros = 11"));
  CHECK_THROWS_AS(factorize::omp<double>(D, coding_test_gaussian<double>(7, 4, gen), 2), shape_error);
  CHECK_THROWS_AS(factorize::omp<double>(D, Y, 2, -1.0), config_error);
  auto bad = Y;
  bad(1, 1) = std::nan("");
  CHECK_THROWS_WITH(factorize::omp<double>(D, bad, 2), Contains("NaN"));
  factorize::ista_options iopt;
  iopt.lambda = -1;
  CHECK_THROWS_WITH(factorize::ista<double>(D, Y, iopt), Contains("slimnet::factorize::ista") && Contains("lambda = -1"));
  factorize::dictionary_options dopt;
  dopt.atoms = 4;
  dopt.nonzeros = 5;
  CHECK_THROWS_WITH(factorize::learn_dictionary<double>(Y, dopt),
                    Contains("slimnet::factorize::learn_dictionary") && Contains("nonzeros = 5"));
  dopt.nonzeros = 2;
  dopt.iterations = -1;
  CHECK_THROWS_AS(factorize::learn_dictionary<double>(Y, dopt), config_error);
  dopt.iterations = 1;
  CHECK_THROWS_AS(factorize::learn_dictionary<double>(factorize::matrix<double>(0, 3), dopt), shape_error);
  CHECK_THROWS_AS(factorize::learn_dictionary<double>(bad, dopt), config_error);
}
