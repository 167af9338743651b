// The pieces of DeepIoT's compressor-critic training (brief items 13-19): soft deletion,
// Bernoulli masks, the REINFORCE surrogate with an EMA baseline, the threshold schedule and the
// stop rule. Free functions over Eigen vectors; trainer.hpp puts them together.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/state.hpp"

namespace slimnet::deepiot {

namespace detail {
template <class Scalar>
void check_probabilities(const char* fn, const column_vector<Scalar>& p) {
  for (index_t j = 0; j < p.size(); ++j) {
    const double v = static_cast<double>(p[j]);
    if (!(v >= 0.0 && v <= 1.0)) slimnet::detail::raise<config_error>(fn, "probability {} of unit {} is outside [0, 1]", v, j);
  }
}
inline void check_gamma(const char* fn, double gamma) {
  if (!(gamma > 0.0 && gamma <= 1.0)) slimnet::detail::raise<config_error>(fn, "gamma = {} is outside (0, 1]", gamma);
}
inline void check_tau(const char* fn, double tau) {
  if (!(tau >= 0.0 && tau <= 1.0)) slimnet::detail::raise<config_error>(fn, "tau = {} is outside [0, 1]", tau);
}
}  // namespace detail

/// Soft deletion (Eq. 10): p̂_j = γ p_j if p_j < τ, else p_j. `derivative` (if given) receives
/// dp̂_j/dp_j (γ or 1): the REINFORCE gradient passes through the factor.
template <class Scalar>
column_vector<Scalar> soft_delete(const column_vector<Scalar>& p, double tau, double gamma,
                                  column_vector<Scalar>* derivative = nullptr) {
  constexpr const char* fn = "slimnet::deepiot::soft_delete";
  detail::check_probabilities(fn, p);
  detail::check_tau(fn, tau);
  detail::check_gamma(fn, gamma);
  column_vector<Scalar> out(p.size());
  if (derivative) derivative->resize(p.size());
  for (index_t j = 0; j < p.size(); ++j) {
    const bool low = static_cast<double>(p[j]) < tau;
    out[j] = low ? static_cast<Scalar>(gamma) * p[j] : p[j];
    if (derivative) (*derivative)[j] = low ? static_cast<Scalar>(gamma) : Scalar(1);
  }
  return out;
}

/// z (n x units) with z_ij ~ Bernoulli(p_j) independently: 1 = keep.
template <class Scalar>
tensor<Scalar> sample_masks(const column_vector<Scalar>& p, index_t n, rng& gen) {
  constexpr const char* fn = "slimnet::deepiot::sample_masks";
  detail::check_probabilities(fn, p);
  if (n < 0) slimnet::detail::raise<config_error>(fn, "n = {} is negative", n);
  tensor<Scalar> z({n, p.size()});
  for (index_t i = 0; i < n; ++i) {
    for (index_t j = 0; j < p.size(); ++j) z.data()[i * p.size() + j] = gen.uniform() < static_cast<double>(p[j]) ? Scalar(1) : Scalar(0);
  }
  return z;
}

/// log μ(z_i) = Σ_j log(p̂_j z_ij + (1-p̂_j)(1-z_ij)) for every row i, added into `out` (size n).
/// p̂ is clamped to [eps, 1-eps]: the authors' code has no epsilon and gives -inf (brief 46).
template <class Scalar>
void add_log_likelihood(const column_vector<Scalar>& p_hat, const tensor<Scalar>& z, double eps, std::vector<double>& out) {
  constexpr const char* fn = "slimnet::deepiot::add_log_likelihood";
  if (z.rank() != 2 || z.dim(1) != p_hat.size() || static_cast<index_t>(out.size()) != z.dim(0)) {
    slimnet::detail::raise<shape_error>(fn, "mask of shape {} for {} probabilities and {} rows", shape_string(z.shape()),
                                        p_hat.size(), out.size());
  }
  for (index_t i = 0; i < z.dim(0); ++i) {
    double s = 0;
    for (index_t j = 0; j < p_hat.size(); ++j) {
      const double p = std::clamp(static_cast<double>(p_hat[j]), eps, 1.0 - eps);
      s += z.data()[i * p_hat.size() + j] != Scalar(0) ? std::log(p) : std::log1p(-p);
    }
    out[static_cast<std::size_t>(i)] += s;
  }
}

/// dS/dp̂_j of the surrogate S = mean_i A_i log μ(z_i):  mean_i A_i (z_ij / p̂_j - (1-z_ij) / (1-p̂_j)),
/// with the clamp of add_log_likelihood (zero gradient where the clamp is active).
template <class Scalar>
column_vector<Scalar> reinforce_gradient(const column_vector<Scalar>& p_hat, const tensor<Scalar>& z,
                                         const std::vector<double>& advantage, double eps) {
  constexpr const char* fn = "slimnet::deepiot::reinforce_gradient";
  const index_t n = z.rank() == 2 ? z.dim(0) : -1;
  if (n < 1 || z.dim(1) != p_hat.size() || static_cast<index_t>(advantage.size()) != n) {
    slimnet::detail::raise<shape_error>(fn, "mask of shape {} for {} probabilities and {} advantages", shape_string(z.shape()),
                                        p_hat.size(), advantage.size());
  }
  column_vector<Scalar> g(p_hat.size());
  for (index_t j = 0; j < p_hat.size(); ++j) {
    const double raw = static_cast<double>(p_hat[j]);
    if (raw < eps || raw > 1.0 - eps) {
      g[j] = Scalar(0);
      continue;
    }
    double keep = 0, drop = 0;
    for (index_t i = 0; i < n; ++i) {
      (z.data()[i * p_hat.size() + j] != Scalar(0) ? keep : drop) += advantage[static_cast<std::size_t>(i)];
    }
    g[j] = static_cast<Scalar>((keep / raw - drop / (1.0 - raw)) / static_cast<double>(n));
  }
  return g;
}

/// The REINFORCE baseline of the authors' code: EMAs (decay 0.9) of the batch mean and of the
/// batch standard deviation of the per-example loss; A_i = (L_i - c) / max(1, s).
/// TF1's ExponentialMovingAverage of a tensor starts at 0 and is zero-debiased, as here.
class loss_baseline {
 public:
  explicit loss_baseline(double decay = 0.9) : decay_(decay) {
    if (!(decay >= 0.0 && decay < 1.0)) {
      slimnet::detail::raise<config_error>("slimnet::deepiot::loss_baseline", "decay = {} is outside [0, 1)", decay);
    }
  }

  /// Folds in one batch of per-example losses (population std over the batch).
  void update(const std::vector<double>& losses) {
    if (losses.empty()) slimnet::detail::raise<config_error>("slimnet::deepiot::loss_baseline::update", "no losses");
    double mean = 0;
    for (double l : losses) mean += l;
    mean /= static_cast<double>(losses.size());
    double var = 0;
    for (double l : losses) var += (l - mean) * (l - mean);
    const double stddev = std::sqrt(var / static_cast<double>(losses.size()));
    mean_ = decay_ * mean_ + (1.0 - decay_) * mean;
    std_ = decay_ * std_ + (1.0 - decay_) * stddev;
    ++steps_;
  }
  double mean() const { return steps_ == 0 ? 0.0 : mean_ / (1.0 - std::pow(decay_, static_cast<double>(steps_))); }
  double stddev() const { return steps_ == 0 ? 0.0 : std_ / (1.0 - std::pow(decay_, static_cast<double>(steps_))); }

  /// Checkpoint state (deepiot::compress): both EMAs and the step count, bit for bit.
  template <class Scalar>
  void save_state(nn::state_writer<Scalar>& out) const {
    out.put_real("mean", mean_);
    out.put_real("std", std_);
    out.put_integer("steps", steps_);
  }
  template <class Scalar>
  void load_state(const nn::state_reader<Scalar>& in) {
    const double mean = in.get_real("mean"), stddev = in.get_real("std");
    steps_ = in.get_integer("steps", 0);
    mean_ = mean;
    std_ = stddev;
  }

  std::vector<double> advantages(const std::vector<double>& losses) const {
    std::vector<double> a(losses.size());
    const double c = mean(), s = std::max(1.0, stddev());
    for (std::size_t i = 0; i < losses.size(); ++i) a[i] = (losses[i] - c) / s;
    return a;
  }

 private:
  double decay_;
  double mean_ = 0, std_ = 0;
  std::int64_t steps_ = 0;
};

/// τ(t) = min(final, start + step * floor(t / every)): the authors' code uses 0, 0.025, 500, 0.825
/// (34 values, the last reached at iteration 16,500).
struct threshold_schedule {
  double start = 0.0;
  double step = 0.025;
  std::int64_t every = 500;
  double final_value = 0.825;

  void validate() const {
    if (!(start >= 0.0 && start <= 1.0 && final_value >= start && final_value <= 1.0 && step >= 0.0 && every > 0)) {
      slimnet::detail::raise<config_error>("slimnet::deepiot::threshold_schedule",
                                           "invalid schedule: start={} step={} every={} final={}", start, step, every,
                                           final_value);
    }
  }
  double operator()(std::int64_t iteration) const {
    if (iteration < 0) slimnet::detail::raise<config_error>("slimnet::deepiot::threshold_schedule", "iteration {} < 0", iteration);
    const double t = start + step * static_cast<double>(iteration / every);
    return std::min(final_value, t);
  }
  /// First iteration at which τ reaches its final value.
  std::int64_t iterations_to_final() const {
    if (step <= 0.0 || final_value <= start) return 0;
    return static_cast<std::int64_t>(std::ceil((final_value - start) / step - 1e-9)) * every;
  }
};

/// Stop when the remaining-weight fraction is below α and held-out accuracy is at least the floor,
/// checked every `check_every` iterations (the authors: 7%, 0.93, 200), or at the iteration cap.
struct stop_rule {
  double max_fraction = 0.05;  ///< α
  double min_accuracy = 0.0;
  std::int64_t check_every = 200;
  std::int64_t max_iterations = 100000;

  void validate() const {
    if (!(max_fraction > 0.0 && max_fraction <= 1.0 && min_accuracy >= 0.0 && min_accuracy <= 1.0 && check_every > 0 &&
          max_iterations > 0)) {
      slimnet::detail::raise<config_error>("slimnet::deepiot::stop_rule",
                                           "invalid rule: max_fraction={} min_accuracy={} check_every={} max_iterations={}",
                                           max_fraction, min_accuracy, check_every, max_iterations);
    }
  }
  /// Whether the rule is checked after iteration `iteration` (counted from 0).
  bool due(std::int64_t iteration) const { return (iteration + 1) % check_every == 0; }
  bool satisfied(double fraction, double accuracy) const { return fraction < max_fraction && accuracy >= min_accuracy; }
};

/// Kept units: p_j >= τ; a layer where no unit qualifies keeps its most probable one (a layer
/// cannot be removed whole).
template <class Scalar>
std::vector<bool> kept_units(const column_vector<Scalar>& p, double tau) {
  detail::check_probabilities("slimnet::deepiot::kept_units", p);
  std::vector<bool> keep(static_cast<std::size_t>(p.size()));
  bool any = false;
  for (index_t j = 0; j < p.size(); ++j) any |= (keep[static_cast<std::size_t>(j)] = static_cast<double>(p[j]) >= tau);
  if (!any && p.size() > 0) {
    index_t best = 0;
    p.maxCoeff(&best);
    keep[static_cast<std::size_t>(best)] = true;
  }
  return keep;
}

}  // namespace slimnet::deepiot
