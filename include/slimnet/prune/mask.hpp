// Pruning masks computed on plain containers: Eigen Matrix / Array / Map / Ref / Block,
// Eigen::Tensor / TensorMap of any rank, and slimnet::tensor. Magnitude (exact count), threshold,
// quality parameter (Han et al.), structured rows and global masks. No slimnet layer needed.
//
// Conventions used by every function here:
// - A weight is seen as out_units x rest (slimnet::as_matrix): row i = neuron / filter i.
// - "Index" of an entry means its position i * cols + j in that view, read row by row (PyTorch's
//   flat index for a row-major weight). Ties in a ranking are broken by this index: among equal
//   scores the lower index is pruned first, so a count is always met exactly.
// - A mask has the weight's shape and storage order (mask_t<W>), values exactly 0 or 1;
//   entries are addressed through (i, j), never through a raw flat pointer, so strides
//   (Eigen::Ref with an outer stride) and storage order are respected.
// - With a default (previous) mask, the result is (default AND new): masks only shrink.
#pragma once

#include "slimnet/core/eigen.hpp"
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <unsupported/Eigen/CXX11/Tensor>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/core/view.hpp"

namespace slimnet::prune {

/// Norm that scores a row (neuron / filter) in structured pruning. For single weights both give
/// the same ranking as |w|, so element-wise pruning needs no norm.
enum class norm { l1, l2 };

inline const char* to_string(norm n) { return n == norm::l1 ? "L1" : "L2"; }

/// How much to prune, in one of three readings. "Units" are entries for element-wise pruning and
/// rows for structured pruning; "remaining" units are those not yet pruned by the default mask.
/// - fraction(f): prune round(f * remaining) more units (PyTorch's float `amount`: applied twice,
///   0.5 leaves 25%). A plain floating-point number converts to this.
/// - count(n): prune exactly n more units (PyTorch's int `amount`).
/// - sparsity(s): prune until round(s * total) units are pruned in all (none if already there);
///   the reading schedules use (AGP's s_t, Han's per-layer targets).
/// Rounding is half up: round(x) = floor(x + 0.5) (Python's round, used by PyTorch, rounds half
/// to even; the two differ only when x is exactly half-way).
class amount {
 public:
  enum class kind { fraction, count, sparsity };

  /// A plain floating-point number is a fraction of the remaining units, as in PyTorch.
  template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  amount(T f)
      : kind_(kind::fraction), value_(static_cast<double>(f)) {}  // NOLINT: implicit on purpose
  /// Integers are refused: PyTorch reads them as counts, C++ would silently read 1 as 100%.
  template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
  amount(T) {
    static_assert(
        sizeof(T) == 0,
        "slimnet::prune::amount: pass a floating-point fraction (0.3) or amount::count(n) for an "
        "absolute number of units; an integer would be ambiguous.");
  }

  static amount fraction(double f) { return amount(kind::fraction, f); }
  static amount count(index_t n) { return amount(kind::count, static_cast<double>(n)); }
  static amount sparsity(double s) { return amount(kind::sparsity, s); }

  kind type() const { return kind_; }
  double value() const { return value_; }

  /// Number of further units to prune out of `total`, of which `remaining` are not pruned yet.
  /// Throws config_error (naming `function`) for fractions or sparsities outside [0, 1] and for
  /// counts outside [0, remaining].
  index_t units_to_prune(index_t total, index_t remaining, const char* function) const {
    switch (kind_) {
      case kind::fraction:
        check_unit_interval("fraction", function);
        return std::min(remaining, round_half_up(value_ * static_cast<double>(remaining)));
      case kind::count:
        if (!(value_ >= 0) || value_ > static_cast<double>(remaining)) {
          slimnet::detail::raise<config_error>(function,
                                               "cannot prune {} units: {} of {} remain unpruned",
                                               value_, remaining, total);
        }
        return static_cast<index_t>(value_);
      case kind::sparsity: {
        check_unit_interval("sparsity", function);
        const index_t target = std::min(total, round_half_up(value_ * static_cast<double>(total)));
        return std::max(index_t{0}, target - (total - remaining));
      }
    }
    return 0;
  }

 private:
  amount(kind k, double v) : kind_(k), value_(v) {}
  static index_t round_half_up(double x) { return static_cast<index_t>(std::floor(x + 0.5)); }
  void check_unit_interval(const char* what, const char* function) const {
    if (!(value_ >= 0.0 && value_ <= 1.0)) {
      slimnet::detail::raise<config_error>(function, "{} = {} is outside [0, 1]", what, value_);
    }
  }

  kind kind_ = kind::fraction;
  double value_ = 0;
};

namespace detail {

using slimnet::detail::is_eigen_dense_v;
using slimnet::detail::is_eigen_tensor;
using slimnet::detail::is_slimnet_tensor;

template <class T, class = void>
struct mask_type {
  static_assert(sizeof(T) == 0,
                "slimnet::prune masks are made for Eigen Matrix/Array/Map/Ref/Block, "
                "Eigen::Tensor/TensorMap and "
                "slimnet::tensor.");
};
template <class T>
struct mask_type<T, std::enable_if_t<is_eigen_dense_v<T>>> {
  using type = typename T::PlainObject;
};
template <class S, int R, int O, class I>
struct mask_type<Eigen::Tensor<S, R, O, I>, void> {
  using type = Eigen::Tensor<std::remove_const_t<S>, R, O, I>;
};
template <class S, int R, int O, class I, int MapOptions, template <class> class MakePointer>
struct mask_type<Eigen::TensorMap<Eigen::Tensor<S, R, O, I>, MapOptions, MakePointer>, void> {
  using type = Eigen::Tensor<std::remove_const_t<S>, R, O, I>;
};
template <class S>
struct mask_type<tensor<S>, void> {
  using type = tensor<S>;
};

template <class T>
constexpr bool is_any_tensor_v =
    is_eigen_tensor<std::decay_t<T>>::value || is_slimnet_tensor<std::decay_t<T>>::value;

}  // namespace detail

/// The mask type of a weight of type W: same shape and storage order, owning its storage.
/// Eigen dense -> W::PlainObject; Eigen::Tensor / TensorMap<Tensor<S, R, L>> -> Tensor<S, R, L>;
/// slimnet::tensor<S> -> tensor<S>.
template <class W>
using mask_t = typename detail::mask_type<std::decay_t<W>>::type;

/// The shape of `x`: {rows, cols} for Eigen dense objects, the dimensions for tensors.
template <class W>
shape_t shape_of(const W& x) {
  if constexpr (detail::is_eigen_dense_v<W>) {
    return {x.rows(), x.cols()};
  } else if constexpr (detail::is_eigen_tensor<std::decay_t<W>>::value) {
    shape_t s;
    for (int d = 0; d < static_cast<int>(std::decay_t<W>::NumDimensions); ++d)
      s.push_back(x.dimension(d));
    return s;
  } else {
    return x.shape();
  }
}

/// A mask of all ones shaped like `w` (nothing pruned).
template <class W>
mask_t<W> ones_like(const W& w) {
  using M = mask_t<W>;
  if constexpr (detail::is_eigen_dense_v<W>) {
    return M::Ones(w.rows(), w.cols());
  } else if constexpr (detail::is_eigen_tensor<std::decay_t<W>>::value) {
    M m(w.dimensions());
    m.setConstant(typename M::Scalar(1));
    return m;
  } else {
    return M(w.shape(), typename M::scalar_type(1));
  }
}

namespace detail {

/// Calls f(index, value) for every entry of the out_units x rest view, index = i * cols + j.
template <class W, class F>
void for_each_entry(const W& w, F&& f) {
  const auto& v = as_matrix(w);
  const index_t rows = v.rows(), cols = v.cols();
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) f(i * cols + j, v(i, j));
  }
}

template <class W>
index_t rows_of(const W& w) {
  return as_matrix(w).rows();
}
template <class W>
index_t cols_of(const W& w) {
  return as_matrix(w).cols();
}

/// Throws shape_error unless `m` has w's out_units x rest shape (and, when both are tensors,
/// exactly w's dimensions).
template <class W, class M>
void check_same_shape(const W& w, const M& m, const char* function, const char* what) {
  bool same = rows_of(w) == rows_of(m) && cols_of(w) == cols_of(m);
  if constexpr (is_any_tensor_v<W> && is_any_tensor_v<M>) same = same && shape_of(w) == shape_of(m);
  if (!same) {
    slimnet::detail::raise<shape_error>(function, "{} has shape {} but the weight has shape {}",
                                        what, shape_string(shape_of(m)), shape_string(shape_of(w)));
  }
}

/// |w| of every entry by index; NaN weights cannot be ranked and are an error.
template <class W>
std::vector<double> magnitudes(const W& w, const char* function) {
  std::vector<double> s(static_cast<std::size_t>(rows_of(w) * cols_of(w)));
  const index_t cols = cols_of(w);
  for_each_entry(w, [&](index_t k, auto value) {
    const double a = std::abs(static_cast<double>(value));
    if (std::isnan(a))
      slimnet::detail::raise<error>(function, "weight ({}, {}) is NaN", k / cols, k % cols);
    s[static_cast<std::size_t>(k)] = a;
  });
  return s;
}

/// alive[k] = 1 where the mask keeps entry k. Checks the shape and that values are 0 or 1.
template <class W, class M>
std::vector<std::uint8_t> alive_from_mask(const W& w, const M& mask, const char* function,
                                          const char* what) {
  check_same_shape(w, mask, function, what);
  std::vector<std::uint8_t> alive(static_cast<std::size_t>(rows_of(mask) * cols_of(mask)));
  const index_t cols = cols_of(mask);
  for_each_entry(mask, [&](index_t k, auto value) {
    const double v = static_cast<double>(value);
    if (v != 0.0 && v != 1.0) {
      slimnet::detail::raise<config_error>(function,
                                           "{} holds {} at ({}, {}); masks hold only 0 and 1", what,
                                           v, k / cols, k % cols);
    }
    alive[static_cast<std::size_t>(k)] = v == 1.0;
  });
  return alive;
}

template <class W>
std::vector<std::uint8_t> all_alive(const W& w) {
  return std::vector<std::uint8_t>(static_cast<std::size_t>(rows_of(w) * cols_of(w)),
                                   std::uint8_t{1});
}

inline index_t count_alive(const std::vector<std::uint8_t>& alive) {
  return static_cast<index_t>(std::count(alive.begin(), alive.end(), std::uint8_t{1}));
}

/// Marks dead the k alive entries with the smallest scores. Order: score, then index (lower index
/// first), a strict total order, so exactly k entries go whatever the ties.
inline void prune_smallest(const std::vector<double>& scores, std::vector<std::uint8_t>& alive,
                           index_t k) {
  if (k <= 0) return;
  std::vector<index_t> candidates;
  candidates.reserve(alive.size());
  for (std::size_t i = 0; i < alive.size(); ++i) {
    if (alive[i]) candidates.push_back(static_cast<index_t>(i));
  }
  const auto less = [&](index_t a, index_t b) {
    const double sa = scores[static_cast<std::size_t>(a)], sb = scores[static_cast<std::size_t>(b)];
    return sa < sb || (sa == sb && a < b);
  };
  const auto n = static_cast<index_t>(candidates.size());
  k = std::min(k, n);
  if (k < n) std::nth_element(candidates.begin(), candidates.begin() + k, candidates.end(), less);
  for (index_t t = 0; t < k; ++t)
    alive[static_cast<std::size_t>(candidates[static_cast<std::size_t>(t)])] = 0;
}

/// A mask of w's type and shape with entry k = alive[k].
template <class W>
mask_t<W> make_mask(const W& w, const std::vector<std::uint8_t>& alive) {
  mask_t<W> m = ones_like(w);
  auto&& v = as_matrix(m);
  using S = typename std::decay_t<decltype(v)>::Scalar;
  const index_t rows = v.rows(), cols = v.cols();
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j)
      v(i, j) = alive[static_cast<std::size_t>(i * cols + j)] ? S(1) : S(0);
  }
  return m;
}

template <class W>
mask_t<W> magnitude_mask(const W& w, const amount& how_much, std::vector<std::uint8_t> alive,
                         const char* function) {
  const auto scores = magnitudes(w, function);
  const index_t k =
      how_much.units_to_prune(static_cast<index_t>(alive.size()), count_alive(alive), function);
  prune_smallest(scores, alive, k);
  return make_mask(w, alive);
}

/// Population standard deviation of the entries of w * alive (pruned entries count as 0).
template <class W>
double masked_std(const W& w, const std::vector<std::uint8_t>& alive) {
  double sum = 0, sum_sq = 0;
  for_each_entry(w, [&](index_t k, auto value) {
    const double v = alive[static_cast<std::size_t>(k)] ? static_cast<double>(value) : 0.0;
    sum += v;
    sum_sq += v * v;
  });
  const auto n = static_cast<double>(alive.size());
  if (n == 0) return 0;
  const double mean = sum / n;
  return std::sqrt(std::max(0.0, sum_sq / n - mean * mean));
}

template <class W>
mask_t<W> threshold_mask(const W& w, double threshold, std::vector<std::uint8_t> alive,
                         const char* function) {
  if (!(threshold >= 0) || !std::isfinite(threshold)) {
    slimnet::detail::raise<config_error>(function, "threshold = {} must be finite and >= 0",
                                         threshold);
  }
  const auto scores = magnitudes(w, function);
  for (std::size_t k = 0; k < alive.size(); ++k) alive[k] = alive[k] && scores[k] > threshold;
  return make_mask(w, alive);
}

inline void check_quality(double q, const char* function) {
  if (!(q >= 0) || !std::isfinite(q)) {
    slimnet::detail::raise<config_error>(function,
                                         "quality parameter q = {} must be finite and >= 0", q);
  }
}

/// Row scores ||w_i * alive_i|| (L1 or L2) and which rows still have a kept entry.
template <class W>
std::pair<std::vector<double>, std::vector<std::uint8_t>> row_scores(
    const W& w, const std::vector<std::uint8_t>& alive, norm n, const char* function) {
  const index_t rows = rows_of(w), cols = cols_of(w);
  std::vector<double> score(static_cast<std::size_t>(rows), 0.0);
  std::vector<std::uint8_t> row_alive(static_cast<std::size_t>(rows), std::uint8_t{0});
  for_each_entry(w, [&](index_t k, auto value) {
    const auto r = static_cast<std::size_t>(k / cols);
    const double v = static_cast<double>(value);
    if (std::isnan(v))
      slimnet::detail::raise<error>(function, "weight ({}, {}) is NaN", k / cols, k % cols);
    if (!alive[static_cast<std::size_t>(k)]) return;
    row_alive[r] = 1;
    score[r] += n == norm::l1 ? std::abs(v) : v * v;
  });
  if (n == norm::l2) {
    for (auto& s : score) s = std::sqrt(s);
  }
  return {std::move(score), std::move(row_alive)};
}

template <class W>
mask_t<W> row_mask(const W& w, const amount& how_much, norm n, std::vector<std::uint8_t> alive,
                   const char* function) {
  auto [score, row_alive] = row_scores(w, alive, n, function);
  const index_t k = how_much.units_to_prune(static_cast<index_t>(row_alive.size()),
                                            count_alive(row_alive), function);
  prune_smallest(score, row_alive, k);
  const index_t cols = cols_of(w);
  for (std::size_t e = 0; e < alive.size(); ++e)
    alive[e] = alive[e] && row_alive[e / static_cast<std::size_t>(cols)];
  return make_mask(w, alive);
}

}  // namespace detail

// --- counting -------------------------------------------------------------------------------

/// Number of nonzero entries.
template <class W>
index_t count_nonzero(const W& w) {
  index_t n = 0;
  detail::for_each_entry(w, [&](index_t, auto v) { n += v != decltype(v)(0); });
  return n;
}

/// Fraction of entries that are exactly zero (0 for an empty weight).
template <class W>
double sparsity(const W& w) {
  const index_t n = detail::rows_of(w) * detail::cols_of(w);
  return n == 0 ? 0.0 : 1.0 - static_cast<double>(count_nonzero(w)) / static_cast<double>(n);
}

/// Population standard deviation of all entries of w (Han et al.'s "std of the layer's weights").
template <class W>
double weight_std(const W& w) {
  return detail::masked_std(w, detail::all_alive(w));
}

// --- element-wise masks -------------------------------------------------------------------

/// Prunes the entries of smallest |w|: exactly how_much.units_to_prune(n, remaining) of them,
/// ties broken by index. Entries already 0 in `default_mask` stay 0 and are not candidates.
/// Requires: default_mask has w's shape and holds only 0 and 1 (shape_error / config_error).
template <class W>
mask_t<W> magnitude_mask(const W& w, amount how_much) {
  return detail::magnitude_mask(w, how_much, detail::all_alive(w),
                                "slimnet::prune::magnitude_mask");
}
template <class W, class M>
mask_t<W> magnitude_mask(const W& w, amount how_much, const M& default_mask) {
  constexpr const char* fn = "slimnet::prune::magnitude_mask";
  return detail::magnitude_mask(w, how_much,
                                detail::alive_from_mask(w, default_mask, fn, "default_mask"), fn);
}

/// Keeps the entries with |w| > threshold (and kept by `default_mask`). threshold >= 0.
template <class W>
mask_t<W> threshold_mask(const W& w, double threshold) {
  return detail::threshold_mask(w, threshold, detail::all_alive(w),
                                "slimnet::prune::threshold_mask");
}
template <class W, class M>
mask_t<W> threshold_mask(const W& w, double threshold, const M& default_mask) {
  constexpr const char* fn = "slimnet::prune::threshold_mask";
  return detail::threshold_mask(w, threshold,
                                detail::alive_from_mask(w, default_mask, fn, "default_mask"), fn);
}

/// Han et al.'s rule: keeps |w| > q * std, std = population std of w * default_mask (pruned
/// entries count as 0). Pruning iteratively with a fixed q and a std recomputed each time moves the
/// threshold; to keep it fixed, take weight_std() of the dense weights once and use threshold_mask
/// (prune::quality_unstructured does that for model parameters).
template <class W>
mask_t<W> quality_mask(const W& w, double q) {
  constexpr const char* fn = "slimnet::prune::quality_mask";
  detail::check_quality(q, fn);
  auto alive = detail::all_alive(w);
  const double t = q * detail::masked_std(w, alive);
  return detail::threshold_mask(w, t, std::move(alive), fn);
}
template <class W, class M>
mask_t<W> quality_mask(const W& w, double q, const M& default_mask) {
  constexpr const char* fn = "slimnet::prune::quality_mask";
  detail::check_quality(q, fn);
  auto alive = detail::alive_from_mask(w, default_mask, fn, "default_mask");
  const double t = q * detail::masked_std(w, alive);
  return detail::threshold_mask(w, t, std::move(alive), fn);
}

// --- structured masks ---------------------------------------------------------------------

/// Prunes whole rows (neurons of a Linear weight, filters of a Conv2d weight) of smallest norm
/// ||row * default_mask||: units are rows, ties broken by row index. Rows already fully pruned are
/// not candidates; the result is default_mask AND the row mask.
template <class W>
mask_t<W> row_mask(const W& w, amount how_much, norm n = norm::l2) {
  return detail::row_mask(w, how_much, n, detail::all_alive(w), "slimnet::prune::row_mask");
}
template <class W, class M>
mask_t<W> row_mask(const W& w, amount how_much, norm n, const M& default_mask) {
  constexpr const char* fn = "slimnet::prune::row_mask";
  return detail::row_mask(w, how_much, n,
                          detail::alive_from_mask(w, default_mask, fn, "default_mask"), fn);
}

// --- global masks ---------------------------------------------------------------------------

/// One magnitude ranking over all entries of all weights (Han et al.'s global variant, PyTorch's
/// global_unstructured): units are the entries of all weights together; ties broken by weight
/// order, then index. Returns one mask per weight, in order.
template <class... W>
std::tuple<mask_t<W>...> global_magnitude_masks(amount how_much, const W&... weights) {
  constexpr const char* fn = "slimnet::prune::global_magnitude_masks";
  std::vector<double> scores;
  std::vector<std::size_t> offsets;
  const auto append = [&](const auto& w) {
    offsets.push_back(scores.size());
    const auto s = detail::magnitudes(w, fn);
    scores.insert(scores.end(), s.begin(), s.end());
  };
  (append(weights), ...);
  offsets.push_back(scores.size());
  std::vector<std::uint8_t> alive(scores.size(), std::uint8_t{1});
  detail::prune_smallest(scores, alive,
                         how_much.units_to_prune(static_cast<index_t>(alive.size()),
                                                 static_cast<index_t>(alive.size()), fn));
  std::size_t i = 0;
  const auto take = [&](const auto& w) {
    std::vector<std::uint8_t> part(alive.begin() + static_cast<std::ptrdiff_t>(offsets[i]),
                                   alive.begin() + static_cast<std::ptrdiff_t>(offsets[i + 1]));
    ++i;
    return detail::make_mask(w, part);
  };
  // Braced initialisation evaluates left to right, so masks come out in the weights' order.
  return std::tuple<mask_t<W>...>{take(weights)...};
}

// --- applying -------------------------------------------------------------------------------

/// w *= mask in place, entry by entry through (i, j) (strides and storage order respected).
/// Requires: mask has w's shape and holds only 0 and 1.
template <class W, class M>
void apply_mask(W&& w, const M& mask) {
  constexpr const char* fn = "slimnet::prune::apply_mask";
  const auto alive = detail::alive_from_mask(w, mask, fn, "mask");
  auto&& v = as_matrix(w);
  using S = typename std::decay_t<decltype(v)>::Scalar;
  const index_t rows = v.rows(), cols = v.cols();
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j) {
      if (!alive[static_cast<std::size_t>(i * cols + j)]) v(i, j) = S(0);
    }
  }
}

}  // namespace slimnet::prune
