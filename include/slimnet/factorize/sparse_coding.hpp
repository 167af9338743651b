// Sparse coding and dictionary learning on Eigen matrices: the factorisation SparseSep uses for
// fully connected layers (factorize/sparsesep.hpp). Signals are the columns of Y (n x m); a
// dictionary D (n x k) holds k unit-norm atoms; codes X (k x m) are sparse, and Y ~ D X.
//
//   omp:               X(:, i) = argmin ||y_i - D x||  s.t. ||x||_0 <= s        (greedy, exact budget)
//   ista:              X(:, i) = argmin 1/2 ||y_i - D x||^2 + lambda ||x||_1     (FISTA, convex)
//   learn_dictionary:  min_{D, X} ||Y - D X||_F  s.t. ||X(:, i)||_0 <= s, ||d_j|| = 1   (K-SVD)
//
// Choices (the SparseSep paper names sparse dictionary learning but not the solver):
//  - OMP is Batch-OMP (Rubinstein, Zibulevsky & Elad 2008): with G = D^T D and a0 = D^T y, each
//    step picks the atom of largest |a_j| / ||d_j||, extends a Cholesky factor of G_II and solves
//    G_II g = a0_I; the residual correlations are a = a0 - G_:I g, so y itself is read once.
//  - The dictionary update is approximate K-SVD (same paper): for atom j with users w,
//    E = Y_w - D X_w + d_j X(j, w); d_j = E g / ||E g||, X(j, w) = d_j^T E with g = X(j, w). Each
//    half step minimises ||E - d g||_F over one block with the other fixed, so it never raises the
//    error. The coding step keeps a column's previous code when OMP's new one is worse, so the
//    Frobenius error never rises from one iteration to the next (errors() records it).
//  - An unused atom is replaced by the worst-represented signal (normalised): its code row is
//    zero, so the error does not change, and the next coding step can use it.
//  - Initialisation: the k leading left singular vectors of Y (the best rank-k subspace, so with
//    s = k the first coding step already gives the truncated SVD), or k random signals (seeded).
//    Atoms beyond rank(Y) are random unit vectors from slimnet::rng.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "slimnet/core/eigen.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::factorize {

/// Column-major dense matrix (Eigen's default), the type of D, Y and X here.
template <class Scalar>
using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

namespace detail {

template <class Scalar>
void check_finite(const char* fn, const char* what, const matrix<Scalar>& m) {
  if (!m.allFinite()) slimnet::detail::raise<config_error>(fn, "{} ({} x {}) holds a NaN or infinity", what, m.rows(), m.cols());
}

/// Batch-OMP of one signal given its correlations a0 = D^T y, the Gram matrix G = D^T D,
/// the atom norms and ||y||^2. Writes the code into `code` (length k, zero outside the support).
template <class Scalar>
void batch_omp_column(const matrix<Scalar>& gram, const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& a0,
                      const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& norms, double y_norm2, index_t max_nonzeros,
                      double tolerance, Eigen::Ref<Eigen::Matrix<Scalar, Eigen::Dynamic, 1>> code) {
  using vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  const index_t k = gram.rows();
  code.setZero();
  std::vector<index_t> support;
  std::vector<char> used(static_cast<std::size_t>(k), 0);
  matrix<Scalar> chol(max_nonzeros, max_nonzeros);  // lower-triangular L with L L^T = G_II
  chol.setZero();
  vec a = a0, gamma;
  const double tol2 = tolerance * tolerance;
  double residual2 = y_norm2;
  while (static_cast<index_t>(support.size()) < max_nonzeros && residual2 > tol2) {
    index_t best = -1;
    double best_score = 0;
    for (index_t j = 0; j < k; ++j) {
      if (used[static_cast<std::size_t>(j)] || norms[j] <= Scalar(0)) continue;
      const double score = std::abs(static_cast<double>(a[j])) / static_cast<double>(norms[j]);
      if (score > best_score) best_score = score, best = j;
    }
    // Nothing left to explain in the span of the unused atoms (up to rounding).
    if (best < 0 || best_score <= 1e-12 * std::sqrt(std::max(y_norm2, 1e-300))) break;
    const index_t p = static_cast<index_t>(support.size());
    // Extend L: [L 0; w^T d] with L w = G_I,best and d = sqrt(G_bb - w^T w).
    double diag2 = static_cast<double>(gram(best, best));
    if (p > 0) {
      vec g(p);
      for (index_t i = 0; i < p; ++i) g[i] = gram(support[static_cast<std::size_t>(i)], best);
      vec w = chol.topLeftCorner(p, p).template triangularView<Eigen::Lower>().solve(g);
      chol.row(p).head(p) = w.transpose();
      diag2 -= static_cast<double>(w.squaredNorm());
    }
    // The new atom lies in the span of the chosen ones: no further progress is possible.
    if (diag2 <= 1e-10 * static_cast<double>(gram(best, best))) break;
    chol(p, p) = static_cast<Scalar>(std::sqrt(diag2));
    support.push_back(best);
    used[static_cast<std::size_t>(best)] = 1;
    const index_t q = p + 1;
    vec a0_support(q);
    for (index_t i = 0; i < q; ++i) a0_support[i] = a0[support[static_cast<std::size_t>(i)]];
    const auto L = chol.topLeftCorner(q, q).template triangularView<Eigen::Lower>();
    gamma = L.transpose().solve(L.solve(a0_support));
    a = a0;
    for (index_t i = 0; i < q; ++i) a -= gram.col(support[static_cast<std::size_t>(i)]) * gamma[i];
    // ||y - D_I g||^2 = ||y||^2 - a0_I^T g for the least-squares g.
    residual2 = y_norm2 - static_cast<double>(a0_support.dot(gamma));
  }
  for (std::size_t i = 0; i < support.size(); ++i) code[support[i]] = gamma[static_cast<index_t>(i)];
}

}  // namespace detail

/// Orthogonal matching pursuit: the code of each column of `signals` with at most `max_nonzeros`
/// atoms of `dictionary`, stopping early once the residual norm is <= `tolerance`.
/// Requires: dictionary n x k and signals n x m with n, k >= 1; 1 <= max_nonzeros <= k; finite.
/// Ensures: codes k x m, column i with at most max_nonzeros nonzeros, its entries the least-squares
/// coefficients on its support (so a signal in the span of <= max_nonzeros atoms is recovered
/// exactly, up to rounding, when OMP finds that support).
/// Throws: shape_error (empty or mismatched matrices), config_error (budget, non-finite input).
template <class Scalar>
matrix<Scalar> omp(const matrix<Scalar>& dictionary, const matrix<Scalar>& signals, index_t max_nonzeros, double tolerance = 0) {
  constexpr const char* fn = "slimnet::factorize::omp";
  if (dictionary.rows() == 0 || dictionary.cols() == 0 || dictionary.rows() != signals.rows()) {
    slimnet::detail::raise<shape_error>(fn, "dictionary {} x {} and signals {} x {} do not fit (n x k and n x m, n, k >= 1)",
                                        dictionary.rows(), dictionary.cols(), signals.rows(), signals.cols());
  }
  if (max_nonzeros < 1 || max_nonzeros > dictionary.cols()) {
    slimnet::detail::raise<config_error>(fn, "max_nonzeros = {} must be in [1, {}] (the number of atoms)", max_nonzeros,
                                         dictionary.cols());
  }
  if (!(tolerance >= 0)) slimnet::detail::raise<config_error>(fn, "tolerance = {} must be >= 0", tolerance);
  detail::check_finite(fn, "dictionary", dictionary);
  detail::check_finite(fn, "signals", signals);
  const matrix<Scalar> gram = dictionary.transpose() * dictionary;
  const matrix<Scalar> corr = dictionary.transpose() * signals;
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> norms = dictionary.colwise().norm().transpose();
  matrix<Scalar> codes(dictionary.cols(), signals.cols());
  for (index_t i = 0; i < signals.cols(); ++i) {
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> a0 = corr.col(i);
    detail::batch_omp_column<Scalar>(gram, a0, norms, static_cast<double>(signals.col(i).squaredNorm()), max_nonzeros,
                                     tolerance, codes.col(i));
  }
  return codes;
}

struct ista_options {
  double lambda = 0.01;     ///< weight of the l1 penalty
  index_t iterations = 500;  ///< FISTA iterations at most
  double tolerance = 1e-10;  ///< stop when max |X_t - X_{t-1}| <= tolerance
  void validate(const char* fn) const {
    if (!(lambda >= 0) || !std::isfinite(lambda)) slimnet::detail::raise<config_error>(fn, "lambda = {} must be finite and >= 0", lambda);
    if (iterations < 1) slimnet::detail::raise<config_error>(fn, "iterations = {} must be >= 1", iterations);
    if (!(tolerance >= 0)) slimnet::detail::raise<config_error>(fn, "tolerance = {} must be >= 0", tolerance);
  }
};

/// Lasso codes by FISTA (Beck & Teboulle 2009): X_{t+1} = soft(Z - (G Z - D^T Y) / L, lambda / L),
/// Z the momentum point, L = ||D||_2^2 (the largest eigenvalue of G = D^T D), all columns at once.
/// Requires/throws as omp (shape_error, config_error); opt.validate().
template <class Scalar>
matrix<Scalar> ista(const matrix<Scalar>& dictionary, const matrix<Scalar>& signals, const ista_options& opt = {}) {
  constexpr const char* fn = "slimnet::factorize::ista";
  if (dictionary.rows() == 0 || dictionary.cols() == 0 || dictionary.rows() != signals.rows()) {
    slimnet::detail::raise<shape_error>(fn, "dictionary {} x {} and signals {} x {} do not fit (n x k and n x m, n, k >= 1)",
                                        dictionary.rows(), dictionary.cols(), signals.rows(), signals.cols());
  }
  opt.validate(fn);
  detail::check_finite(fn, "dictionary", dictionary);
  detail::check_finite(fn, "signals", signals);
  const matrix<Scalar> gram = dictionary.transpose() * dictionary;
  const matrix<Scalar> corr = dictionary.transpose() * signals;
  const double lipschitz = static_cast<double>(Eigen::SelfAdjointEigenSolver<matrix<Scalar>>(gram, Eigen::EigenvaluesOnly).eigenvalues().maxCoeff());
  matrix<Scalar> x = matrix<Scalar>::Zero(dictionary.cols(), signals.cols());
  if (lipschitz <= 0) return x;  // an all-zero dictionary explains nothing
  const Scalar step = static_cast<Scalar>(1.0 / lipschitz), threshold = static_cast<Scalar>(opt.lambda / lipschitz);
  matrix<Scalar> z = x, prev;
  double t = 1;
  for (index_t it = 0; it < opt.iterations; ++it) {
    prev = x;
    x = z - step * (gram * z - corr);
    x = x.unaryExpr([threshold](Scalar v) { return v > threshold ? v - threshold : (v < -threshold ? v + threshold : Scalar(0)); });
    const double t_next = (1 + std::sqrt(1 + 4 * t * t)) / 2;
    z = x + static_cast<Scalar>((t - 1) / t_next) * (x - prev);
    t = t_next;
    if (static_cast<double>((x - prev).cwiseAbs().maxCoeff()) <= opt.tolerance) break;
  }
  return x;
}

enum class dictionary_init { svd, random_signals };

struct dictionary_options {
  index_t atoms = 0;        ///< k, the dictionary size (>= 1)
  index_t nonzeros = 0;     ///< s, nonzeros per code column (1 <= s <= k)
  index_t iterations = 10;  ///< K-SVD iterations (coding + dictionary update), >= 0
  dictionary_init init = dictionary_init::svd;
  std::uint64_t seed = 0;   ///< for random atoms and random-signal initialisation

  void validate(const char* fn) const {
    if (atoms < 1) slimnet::detail::raise<config_error>(fn, "atoms = {} must be >= 1", atoms);
    if (nonzeros < 1 || nonzeros > atoms) {
      slimnet::detail::raise<config_error>(fn, "nonzeros = {} must be in [1, atoms = {}]", nonzeros, atoms);
    }
    if (iterations < 0) slimnet::detail::raise<config_error>(fn, "iterations = {} must be >= 0", iterations);
  }
};

template <class Scalar>
struct dictionary_result {
  matrix<Scalar> dictionary;  ///< n x k, unit-norm columns
  matrix<Scalar> codes;       ///< k x m, at most `nonzeros` nonzeros per column
  /// ||Y - D X||_F after the first coding step and after each iteration (non-increasing).
  std::vector<double> errors;
};

/// K-SVD dictionary learning with OMP codes (see the header comment for the exact variant).
/// Requires: signals n x m with n, m >= 1, finite; opt.validate(). Throws shape_error or
/// config_error naming the bad value.
template <class Scalar>
dictionary_result<Scalar> learn_dictionary(const matrix<Scalar>& signals, const dictionary_options& opt) {
  constexpr const char* fn = "slimnet::factorize::learn_dictionary";
  using vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  if (signals.rows() == 0 || signals.cols() == 0) {
    slimnet::detail::raise<shape_error>(fn, "signals are {} x {}: need at least one row and one column", signals.rows(), signals.cols());
  }
  opt.validate(fn);
  detail::check_finite(fn, "signals", signals);
  const index_t n = signals.rows(), m = signals.cols(), k = opt.atoms;
  rng gen(opt.seed);
  auto random_unit = [&]() {
    vec v(n);
    for (index_t i = 0; i < n; ++i) v[i] = static_cast<Scalar>(gen.normal());
    return vec(v / v.norm());
  };

  dictionary_result<Scalar> out;
  matrix<Scalar>& D = out.dictionary;
  D.resize(n, k);
  index_t filled = 0;
  if (opt.init == dictionary_init::svd) {
    Eigen::BDCSVD<matrix<Scalar>> svd(signals, Eigen::ComputeThinU);
    const auto& sv = svd.singularValues();
    const double cutoff = sv.size() > 0 ? 1e-12 * static_cast<double>(sv[0]) : 0;
    for (index_t j = 0; j < std::min<index_t>(k, sv.size()); ++j) {
      if (static_cast<double>(sv[j]) <= cutoff) break;
      D.col(filled++) = svd.matrixU().col(j);
    }
  } else {
    std::vector<index_t> order(static_cast<std::size_t>(m));
    for (index_t i = 0; i < m; ++i) order[static_cast<std::size_t>(i)] = i;
    slimnet::shuffle(order.begin(), order.end(), gen);
    for (index_t i = 0; i < m && filled < k; ++i) {
      const Scalar norm = signals.col(order[static_cast<std::size_t>(i)]).norm();
      if (norm > Scalar(0)) D.col(filled++) = signals.col(order[static_cast<std::size_t>(i)]) / norm;
    }
  }
  for (; filled < k; ++filled) D.col(filled) = random_unit();

  matrix<Scalar>& X = out.codes;
  X = omp<Scalar>(D, signals, opt.nonzeros);
  matrix<Scalar> R = signals - D * X;
  out.errors.push_back(static_cast<double>(R.norm()));
  for (index_t it = 0; it < opt.iterations; ++it) {
    // Coding step: keep a column's previous code unless OMP's new one fits it better.
    const matrix<Scalar> fresh = omp<Scalar>(D, signals, opt.nonzeros);
    for (index_t i = 0; i < m; ++i) {
      const vec r_new = signals.col(i) - D * fresh.col(i);
      if (r_new.squaredNorm() < R.col(i).squaredNorm()) {
        X.col(i) = fresh.col(i);
        R.col(i) = r_new;
      }
    }
    // Dictionary update, atom by atom, on the residual R = Y - D X kept up to date.
    for (index_t j = 0; j < k; ++j) {
      std::vector<index_t> users;
      for (index_t i = 0; i < m; ++i)
        if (X(j, i) != Scalar(0)) users.push_back(i);
      if (users.empty()) {
        index_t worst = 0;
        for (index_t i = 1; i < m; ++i)
          if (R.col(i).squaredNorm() > R.col(worst).squaredNorm()) worst = i;
        const Scalar norm = R.col(worst).norm();
        D.col(j) = norm > Scalar(0) ? vec(R.col(worst) / norm) : random_unit();
        continue;
      }
      const index_t u = static_cast<index_t>(users.size());
      matrix<Scalar> E(n, u);
      vec g(u);
      for (index_t c = 0; c < u; ++c) {
        const index_t i = users[static_cast<std::size_t>(c)];
        g[c] = X(j, i);
        E.col(c) = R.col(i) + D.col(j) * g[c];
      }
      vec d = E * g;
      const Scalar dn = d.norm();
      if (!(dn > Scalar(0))) continue;  // E g = 0: the current atom is already optimal
      d /= dn;
      const vec g_new = E.transpose() * d;
      D.col(j) = d;
      for (index_t c = 0; c < u; ++c) {
        const index_t i = users[static_cast<std::size_t>(c)];
        X(j, i) = g_new[c];
        R.col(i) = E.col(c) - d * g_new[c];
      }
    }
    out.errors.push_back(static_cast<double>(R.norm()));
  }
  return out;
}

}  // namespace slimnet::factorize
