// k-means on the rows of a matrix (Lloyd's algorithm) with k-means++, linear and Forgy
// initialisation, seeded, with empty clusters re-seeded: the engine behind weight sharing (Han et
// al.) and the k-means / product / residual codebooks of Gong et al. (quant/codebook.hpp).
//
// Lloyd alternates two steps that never increase the inertia sum_i ||x_i - c_a(i)||^2:
//   assignment  a(i) = argmin_j ||x_i - c_j||^2   (a point changes cluster only if strictly
//   closer), update      c_j = mean of its points          (the minimiser of the cluster's squared
//   error).
// Arithmetic is in double. The update is computed as c_j + mean(x_i - c_j), which is exact when a
// cluster's points are all equal (so k = number of distinct values reproduces them exactly).
//
// Points with missing coordinates (rows of a pruned weight matrix clustered by PQ / RQ): an
// optional 0/1 matrix O shaped like the points marks the observed coordinates, and every distance,
// the inertia and the update use those only:
//   ||x_i - c||_O^2 = sum_d O_id (x_id - c_d)^2,   c_jd = sum_{i in j} O_id x_id / sum_{i in j} O_id
// (a coordinate no member observes keeps its value). Both steps still minimise the masked inertia,
// so the sequence stays non-increasing. The nearest centre comes from two products:
// ||x_i - c_j||_O^2 = sum_d O_id x_id^2 - 2 (O_i * x_i) . c_j + O_i . (c_j * c_j).
#pragma once

#include "slimnet/core/eigen.hpp"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::quant {

enum class kmeans_init {
  kmeans_plus_plus,  ///< Arthur & Vassilvitskii: each next centre drawn with probability ~ D(x)^2
  linear,            ///< evenly spaced from the minimum to the maximum (Han et al.'s best choice);
                     ///< for vectors, along the diagonal of the points' bounding box
  forgy,             ///< k distinct points drawn uniformly
};

inline const char* to_string(kmeans_init i) {
  switch (i) {
    case kmeans_init::kmeans_plus_plus:
      return "k-means++";
    case kmeans_init::linear:
      return "linear";
    case kmeans_init::forgy:
      return "forgy";
  }
  return "?";
}

struct kmeans_options {
  kmeans_init init = kmeans_init::kmeans_plus_plus;
  int max_iterations = 100;  ///< Lloyd iterations (assignment + update) at most
  /// Stop once an iteration lowers the inertia by less than tolerance * inertia; 0 runs until no
  /// point changes cluster.
  double tolerance = 0.0;
  std::uint64_t seed = 1;

  void validate(const char* function = "slimnet::quant::kmeans_options") const {
    if (max_iterations < 1 || !(tolerance >= 0.0) || !std::isfinite(tolerance)) {
      slimnet::detail::raise<config_error>(
          function, "invalid options: max_iterations={} tolerance={}", max_iterations, tolerance);
    }
  }
};

template <class Scalar>
struct kmeans_result {
  row_matrix<Scalar> centroids;          ///< clusters x dim
  std::vector<std::int32_t> assignment;  ///< cluster of every point
  /// sum_i ||x_i - c_a(i)||^2 with the centroids as returned (in Scalar precision).
  double inertia = 0;
  /// Inertia (in double) after the first assignment, then after every update and every assignment
  /// step: a non-increasing sequence.
  std::vector<double> inertia_history;
  int iterations = 0;      ///< Lloyd iterations run
  bool converged = false;  ///< stopped because nothing changed (or less than the tolerance)
  index_t empty_clusters =
      0;  ///< clusters without points at the end (only with fewer distinct points than clusters)
};

namespace detail {

inline std::uint64_t sub_seed(std::uint64_t seed, std::uint64_t index) {
  if (index == 0) return seed;  // the first block / stage uses the caller's seed unchanged
  std::uint64_t z = seed + index * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

using dmatrix = row_matrix<double>;

inline double squared_distance(const double* x, const double* c, index_t d) {
  double s = 0;
  for (index_t j = 0; j < d; ++j) {
    const double t = x[j] - c[j];
    s += t * t;
  }
  return s;
}

/// sum_j o[j] (x[j] - c[j])^2; o = null observes every coordinate.
inline double squared_distance(const double* x, const double* c, index_t d, const double* o) {
  if (o == nullptr) return squared_distance(x, c, d);
  double s = 0;
  for (index_t j = 0; j < d; ++j) {
    const double t = x[j] - c[j];
    s += o[j] * t * t;
  }
  return s;
}

/// Nearest centroid of every point (candidates; the caller confirms them with exact distances).
class nearest_centroid {
 public:
  /// `observed`: the 0/1 matrix of observed coordinates of the points (null: all).
  explicit nearest_centroid(const dmatrix& c, const dmatrix* observed = nullptr)
      : c_(c), observed_(observed) {
    if (c.cols() == 1) {
      order_.resize(static_cast<std::size_t>(c.rows()));
      std::iota(order_.begin(), order_.end(), index_t{0});
      std::stable_sort(order_.begin(), order_.end(),
                       [&](index_t a, index_t b) { return c(a, 0) < c(b, 0); });
      mid_.resize(order_.size() > 0 ? order_.size() - 1 : 0);
      for (std::size_t j = 0; j + 1 < order_.size(); ++j)
        mid_[j] = 0.5 * (c(order_[j], 0) + c(order_[j + 1], 0));
    } else if (observed_ != nullptr) {
      squares_ = c.cwiseProduct(c);
    } else {
      norms_ = c.rowwise().squaredNorm();
    }
  }

  // Scalar points: binary search among the midpoints of the sorted centroids, O(log k).
  // Vectors: ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, the cross terms by one GEMM per chunk.
  void operator()(const dmatrix& x, std::vector<std::int32_t>& out) {
    const index_t n = x.rows();
    out.resize(static_cast<std::size_t>(n));
    if (c_.cols() == 1) {  // an unobserved scalar point is as far from every centre: any will do
      for (index_t i = 0; i < n; ++i) {
        const auto pos = std::upper_bound(mid_.begin(), mid_.end(), x(i, 0)) - mid_.begin();
        out[static_cast<std::size_t>(i)] =
            static_cast<std::int32_t>(order_[static_cast<std::size_t>(pos)]);
      }
      return;
    }
    constexpr index_t chunk = 2048;
    for (index_t start = 0; start < n; start += chunk) {
      const index_t len = std::min(chunk, n - start);
      if (observed_ != nullptr) {
        const auto o = observed_->middleRows(start, len);
        dist_.noalias() = x.middleRows(start, len).cwiseProduct(o) * c_.transpose();
        masked_norms_.noalias() = o * squares_.transpose();
      } else {
        dist_.noalias() = x.middleRows(start, len) * c_.transpose();
      }
      for (index_t i = 0; i < len; ++i) {
        index_t best = 0;
        double best_d = std::numeric_limits<double>::infinity();
        for (index_t j = 0; j < c_.rows(); ++j) {
          const double norm = observed_ != nullptr ? masked_norms_(i, j) : norms_[j];
          const double d = norm - 2.0 * dist_(i, j);
          if (d < best_d) {
            best_d = d;
            best = j;
          }
        }
        out[static_cast<std::size_t>(start + i)] = static_cast<std::int32_t>(best);
      }
    }
  }

 private:
  const dmatrix& c_;
  const dmatrix* observed_;
  std::vector<index_t> order_;
  std::vector<double> mid_;
  Eigen::VectorXd norms_;
  dmatrix squares_;
  Eigen::MatrixXd dist_, masked_norms_;
};

inline dmatrix initial_centroids(const dmatrix& x, index_t k, kmeans_init init, rng& gen,
                                 const dmatrix* observed = nullptr) {
  const index_t n = x.rows(), d = x.cols();
  const auto obs = [&](index_t i) { return observed ? observed->row(i).data() : nullptr; };
  dmatrix c(k, d);
  switch (init) {
    case kmeans_init::linear: {
      Eigen::RowVectorXd lo = x.colwise().minCoeff(), hi = x.colwise().maxCoeff();
      if (observed != nullptr) {  // the range of the observed values of each coordinate (0 if none)
        constexpr double inf = std::numeric_limits<double>::infinity();
        lo = (observed->array() > 0).select(x, inf).colwise().minCoeff();
        hi = (observed->array() > 0).select(x, -inf).colwise().maxCoeff();
        lo = (lo.array() == inf).select(0.0, lo);
        hi = (hi.array() == -inf).select(0.0, hi);
      }
      for (index_t j = 0; j < k; ++j) {
        const double t = k == 1 ? 0.5 : static_cast<double>(j) / static_cast<double>(k - 1);
        c.row(j) = lo + t * (hi - lo);
      }
      break;
    }
    case kmeans_init::forgy: {
      std::vector<index_t> idx(static_cast<std::size_t>(n));
      std::iota(idx.begin(), idx.end(), index_t{0});
      for (index_t j = 0; j < k;
           ++j) {  // partial Fisher-Yates: the first k of a random permutation
        const auto r = j + static_cast<index_t>(gen.below(static_cast<std::uint64_t>(n - j)));
        std::swap(idx[static_cast<std::size_t>(j)], idx[static_cast<std::size_t>(r)]);
        c.row(j) = x.row(idx[static_cast<std::size_t>(j)]);
      }
      break;
    }
    case kmeans_init::kmeans_plus_plus: {
      std::vector<double> dist(static_cast<std::size_t>(n));
      auto take = [&](index_t j, index_t i) {
        c.row(j) = x.row(i);
        for (index_t p = 0; p < n; ++p) {
          const double dd = squared_distance(x.row(p).data(), c.row(j).data(), d, obs(p));
          if (j == 0 || dd < dist[static_cast<std::size_t>(p)])
            dist[static_cast<std::size_t>(p)] = dd;
        }
      };
      take(0, static_cast<index_t>(gen.below(static_cast<std::uint64_t>(n))));
      for (index_t j = 1; j < k; ++j) {
        double total = 0;
        for (double v : dist) total += v;
        index_t pick = -1;
        if (total > 0) {
          // First point whose cumulative weight exceeds u: points already on a centre (weight 0)
          // are never drawn while any other point remains.
          const double u = gen.uniform() * total;
          double cumulative = 0;
          for (index_t p = 0; p < n; ++p) {
            cumulative += dist[static_cast<std::size_t>(p)];
            if (dist[static_cast<std::size_t>(p)] > 0)
              pick = p;  // fallback if rounding leaves u >= cumulative
            if (cumulative > u && dist[static_cast<std::size_t>(p)] > 0) {
              pick = p;
              break;
            }
          }
        } else {
          pick = static_cast<index_t>(
              gen.below(static_cast<std::uint64_t>(n)));  // every point is a centre already
        }
        take(j, pick);
      }
      break;
    }
  }
  return c;
}

/// Lloyd's algorithm in double on the rows of x; `observed` (0/1, shaped like x, or null for all)
/// marks the coordinates that count (see the header comment).
inline kmeans_result<double> lloyd(const dmatrix& x, index_t k, const kmeans_options& opt,
                                   const char* fn, const dmatrix* observed = nullptr) {
  opt.validate(fn);
  const index_t n = x.rows(), d = x.cols();
  if (n < 1 || d < 1)
    slimnet::detail::raise<shape_error>(fn, "no points to cluster: {} x {}", n, d);
  if (k < 1 || k > n)
    slimnet::detail::raise<config_error>(
        fn, "clusters = {} must be in [1, {}] (the number of points)", k, n);
  if (k > std::numeric_limits<std::int32_t>::max())
    slimnet::detail::raise<config_error>(fn, "clusters = {} is too many", k);
  if (!x.allFinite())
    slimnet::detail::raise<config_error>(fn, "the points contain NaN or infinite values");
  if (observed != nullptr && (observed->rows() != n || observed->cols() != d ||
                              !(observed->array() == 0.0 || observed->array() == 1.0).all())) {
    slimnet::detail::raise<shape_error>(
        fn, "the observed coordinates must be a 0/1 matrix of {} x {} (the points), got {} x {}", n,
        d, observed->rows(), observed->cols());
  }
  const auto obs = [&](index_t i) { return observed ? observed->row(i).data() : nullptr; };

  rng gen(opt.seed);
  kmeans_result<double> r;
  dmatrix c = initial_centroids(x, k, opt.init, gen, observed);
  std::vector<std::int32_t>& a = r.assignment;
  std::vector<std::int32_t> candidate;
  std::vector<double> dist(static_cast<std::size_t>(n));

  auto inertia = [&](const dmatrix& centres) {
    double s = 0;
    for (index_t i = 0; i < n; ++i) {
      dist[static_cast<std::size_t>(i)] =
          squared_distance(x.row(i).data(), centres.row(a[static_cast<std::size_t>(i)]).data(), d,
                           obs(i));
      s += dist[static_cast<std::size_t>(i)];
    }
    return s;
  };
  // Assignment step. A point moves only to a strictly closer centre (measured exactly, not through
  // the GEMM expansion), so every term of the sum, hence the sum, can only go down.
  auto assign = [&](bool first) {
    nearest_centroid nearest(c, observed);
    nearest(x, candidate);
    index_t changed = 0;
    for (index_t i = 0; i < n; ++i) {
      const auto iu = static_cast<std::size_t>(i);
      if (first) {
        a[iu] = candidate[iu];
        continue;
      }
      if (candidate[iu] == a[iu]) continue;
      const double now = squared_distance(x.row(i).data(), c.row(a[iu]).data(), d, obs(i));
      if (squared_distance(x.row(i).data(), c.row(candidate[iu]).data(), d, obs(i)) < now) {
        a[iu] = candidate[iu];
        ++changed;
      }
    }
    return changed;
  };

  a.assign(static_cast<std::size_t>(n), 0);
  assign(true);
  double current = inertia(c);
  r.inertia_history.push_back(current);
  dmatrix next(k, d), seen;
  std::vector<index_t> count(static_cast<std::size_t>(k));
  for (int it = 1; it <= opt.max_iterations; ++it) {
    // Update step: c_j + mean(x_i - c_j) over the cluster (per coordinate over the members that
    // observe it).
    next.setZero();
    std::fill(count.begin(), count.end(), 0);
    if (observed != nullptr) seen.setZero(k, d);
    for (index_t i = 0; i < n; ++i) {
      const auto j = a[static_cast<std::size_t>(i)];
      if (observed != nullptr) {
        next.row(j) += (x.row(i) - c.row(j)).cwiseProduct(observed->row(i));
        seen.row(j) += observed->row(i);
      } else {
        next.row(j) += x.row(i) - c.row(j);
      }
      ++count[static_cast<std::size_t>(j)];
    }
    for (index_t j = 0; j < k; ++j) {
      const auto cnt = count[static_cast<std::size_t>(j)];
      if (cnt > 0 && observed != nullptr) {
        for (index_t q = 0; q < d; ++q)
          next(j, q) = seen(j, q) > 0 ? c(j, q) + next(j, q) / seen(j, q) : c(j, q);
      } else if (cnt > 0) {
        next.row(j) = c.row(j) + next.row(j) / static_cast<double>(cnt);
      } else {
        next.row(j) = c.row(j);
      }
    }
    double updated = inertia(next);
    if (updated > current) {
      // Only floating-point rounding can make a mean worse than the previous centre: nothing left
      // to gain.
      r.converged = true;
      r.iterations = it;
      break;
    }
    // Empty clusters take the points farthest from their centres (distinct points, farthest first).
    // The inertia is unchanged now (no point is assigned to them yet) and falls at the next
    // assignment, where each such point moves to its own centre. If every point already sits on a
    // centre there is nothing to gain and the cluster stays empty.
    for (index_t j = 0; j < k; ++j) {
      if (count[static_cast<std::size_t>(j)] > 0) continue;
      const auto far = std::max_element(dist.begin(), dist.end()) - dist.begin();
      if (!(dist[static_cast<std::size_t>(far)] > 0)) break;
      next.row(j) = x.row(far);
      dist[static_cast<std::size_t>(far)] = 0;
    }
    c.swap(next);
    current = updated;
    r.inertia_history.push_back(current);

    const index_t changed = assign(false);
    const double assigned = inertia(c);
    r.inertia_history.push_back(assigned);
    r.iterations = it;
    const double gain = current - assigned;
    current = assigned;
    if (changed == 0 || (opt.tolerance > 0 && gain <= opt.tolerance * current)) {
      r.converged = true;
      break;
    }
  }
  r.centroids = c;
  std::fill(count.begin(), count.end(), 0);
  for (auto j : a) ++count[static_cast<std::size_t>(j)];
  r.empty_clusters = static_cast<index_t>(std::count(count.begin(), count.end(), index_t{0}));
  return r;
}

}  // namespace detail

/// k-means of the rows of `points` (n points of dimension d) into `clusters` groups.
/// Throws config_error unless 1 <= clusters <= n, and on NaN or infinite input.
template <class Derived>
kmeans_result<typename Derived::Scalar> kmeans_rows(const Eigen::MatrixBase<Derived>& points,
                                                    index_t clusters,
                                                    const kmeans_options& opt = {}) {
  using Scalar = typename Derived::Scalar;
  const detail::dmatrix x = points.template cast<double>();
  auto r = detail::lloyd(x, clusters, opt, "slimnet::quant::kmeans_rows");
  kmeans_result<Scalar> out;
  out.centroids = r.centroids.template cast<Scalar>();
  out.assignment = std::move(r.assignment);
  out.inertia_history = std::move(r.inertia_history);
  out.iterations = r.iterations;
  out.converged = r.converged;
  out.empty_clusters = r.empty_clusters;
  const detail::dmatrix stored = out.centroids.template cast<double>();
  for (index_t i = 0; i < x.rows(); ++i) {
    out.inertia += detail::squared_distance(
        x.row(i).data(), stored.row(out.assignment[static_cast<std::size_t>(i)]).data(), x.cols());
  }
  return out;
}

}  // namespace slimnet::quant
