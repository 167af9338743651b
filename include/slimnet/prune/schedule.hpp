// Pruning schedules as train::fit callbacks: one-shot, iterative (prune -> retrain -> prune ...,
// Han et al. 2015) and automated gradual pruning (AGP, Zhu & Gupta 2017). Each drives a
// magnitude_pruner, which knows the parameters and their final sparsities (layer-wise or global).
//
//   auto pruner = prune::magnitude_pruner<float>::layerwise({{&fc1_w, 0.92}, {&fc2_w, 0.91}});
//   prune::agp<float> schedule(pruner, {/*initial*/ 0.0, /*begin_step*/ 0, /*frequency*/ 125,
//   /*steps*/ 20}); train::fit(model, opt, loss, data, options, {&schedule});
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/prune/functional.hpp"
#include "slimnet/prune/transform.hpp"
#include "slimnet/train/fit.hpp"

namespace slimnet::prune {

/// A parameter and the sparsity it should reach at the end of a schedule.
template <class Scalar>
struct layer_target {
  nn::parameter<Scalar>* parameter = nullptr;
  double sparsity = 0;
};

/// Prunes a fixed set of parameters by magnitude to a sparsity level: layer-wise (each parameter
/// ranked alone, to its own target) or global (one ranking over all of them, one target).
/// Levels use amount::sparsity, so counts are exact and masks only shrink.
template <class Scalar>
class magnitude_pruner {
 public:
  /// Each parameter pruned alone towards its own final sparsity.
  static magnitude_pruner layerwise(std::vector<layer_target<Scalar>> targets) {
    magnitude_pruner p;
    p.targets_ = std::move(targets);
    p.validate("slimnet::prune::magnitude_pruner::layerwise");
    return p;
  }
  /// All parameters ranked together towards one final sparsity.
  static magnitude_pruner global(std::vector<nn::parameter<Scalar>*> params, double sparsity) {
    magnitude_pruner p;
    p.global_ = true;
    for (auto* param : params) p.targets_.push_back({param, sparsity});
    p.validate("slimnet::prune::magnitude_pruner::global");
    return p;
  }
  /// Same final sparsity for every parameter, each ranked alone.
  static magnitude_pruner uniform(std::vector<nn::parameter<Scalar>*> params, double sparsity) {
    std::vector<layer_target<Scalar>> t;
    for (auto* param : params) t.push_back({param, sparsity});
    return layerwise(std::move(t));
  }

  /// Prunes each target to sparsity level(final sparsity) (global: level(the one target)).
  void prune(const std::function<double(double final_sparsity)>& level) {
    if (global_) {
      std::vector<nn::parameter<Scalar>*> params;
      for (const auto& t : targets_) params.push_back(t.parameter);
      global_unstructured(params, amount::sparsity(level(targets_.front().sparsity)));
      return;
    }
    for (const auto& t : targets_) {
      restrict_mask(*t.parameter,
                    magnitude_mask(t.parameter->value(), amount::sparsity(level(t.sparsity)),
                                   mask_of(*t.parameter)),
                    "slimnet::prune::magnitude_pruner::prune");
    }
  }
  /// Prunes every target to its final sparsity.
  void prune_to_final() {
    prune([](double s) { return s; });
  }

  const std::vector<layer_target<Scalar>>& targets() const { return targets_; }
  bool is_global() const { return global_; }

 private:
  magnitude_pruner() = default;
  void validate(const char* fn) const {
    if (targets_.empty()) slimnet::detail::raise<config_error>(fn, "no parameters to prune");
    for (std::size_t i = 0; i < targets_.size(); ++i) {
      const auto& t = targets_[i];
      if (t.parameter == nullptr)
        slimnet::detail::raise<config_error>(fn, "target {} has a null parameter", i);
      if (!(t.sparsity >= 0 && t.sparsity <= 1)) {
        slimnet::detail::raise<config_error>(fn, "sparsity = {} for '{}' is outside [0, 1]",
                                             t.sparsity, t.parameter->name());
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (targets_[j].parameter == t.parameter) {
          slimnet::detail::raise<config_error>(fn, "parameter '{}' is listed twice",
                                               t.parameter->name());
        }
      }
    }
  }

  std::vector<layer_target<Scalar>> targets_;
  bool global_ = false;
};

/// Prunes to the final sparsities once, at the start of epoch `epoch` (from 0); fit() then
/// retrains with the masks held.
template <class Scalar>
class one_shot : public train::callback<Scalar> {
 public:
  explicit one_shot(magnitude_pruner<Scalar> pruner, int epoch = 0)
      : pruner_(std::move(pruner)), epoch_(epoch) {
    if (epoch < 0)
      slimnet::detail::raise<config_error>("slimnet::prune::one_shot", "epoch = {} must be >= 0",
                                           epoch);
  }
  void on_epoch_begin(train::train_state<Scalar>& s) override {
    if (s.epoch == epoch_) pruner_.prune_to_final();
  }

 private:
  magnitude_pruner<Scalar> pruner_;
  int epoch_;
};

/// How the levels of iterative pruning approach the final sparsity s_f over R rounds.
enum class spacing {
  /// s_r = 1 - (1 - s_f)^(r/R): every round removes the same fraction of the weights still there.
  geometric,
  /// s_r = s_f * r / R.
  linear,
};

struct iterative_options {
  int rounds = 4;            ///< R: pruning rounds
  int epochs_per_round = 2;  ///< retraining epochs after each pruning
  int first_epoch = 0;       ///< epoch (from 0) at whose start round 1 prunes
  prune::spacing spacing = prune::spacing::geometric;

  void validate() const {
    if (rounds <= 0 || epochs_per_round <= 0 || first_epoch < 0) {
      slimnet::detail::raise<config_error>(
          "slimnet::prune::iterative",
          "invalid options: rounds={} epochs_per_round={} first_epoch={}", rounds, epochs_per_round,
          first_epoch);
    }
  }
  /// Sparsity of round r (1..R) for a final sparsity s_f.
  double level(int r, double final_sparsity) const {
    const double x = static_cast<double>(r) / static_cast<double>(rounds);
    return spacing == prune::spacing::linear ? final_sparsity * x
                                             : 1.0 - std::pow(1.0 - final_sparsity, x);
  }
  /// Epochs fit() needs for all rounds: first_epoch + rounds * epochs_per_round.
  int total_epochs() const { return first_epoch + rounds * epochs_per_round; }
};

/// Han et al.'s iterative pruning: at the start of epochs first_epoch + k * epochs_per_round
/// (k = 0..R-1) prune to level(k + 1), then retrain for epochs_per_round epochs.
template <class Scalar>
class iterative : public train::callback<Scalar> {
 public:
  iterative(magnitude_pruner<Scalar> pruner, iterative_options options)
      : pruner_(std::move(pruner)), opt_(options) {
    opt_.validate();
  }
  void on_epoch_begin(train::train_state<Scalar>& s) override {
    const int since = s.epoch - opt_.first_epoch;
    if (since < 0 || since % opt_.epochs_per_round != 0) return;
    const int round = since / opt_.epochs_per_round + 1;
    if (round > opt_.rounds) return;
    pruner_.prune([&](double final_sparsity) { return opt_.level(round, final_sparsity); });
    rounds_done_ = round;
  }
  int rounds_done() const { return rounds_done_; }

 private:
  magnitude_pruner<Scalar> pruner_;
  iterative_options opt_;
  int rounds_done_ = 0;
};

/// Automated gradual pruning (Zhu & Gupta 2017): at steps t = t0 + k dt, k = 0..n,
///   s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,
/// which prunes fast while many redundant weights remain and slowly near the target.
struct agp_options {
  double initial_sparsity = 0;  ///< s_i
  index_t begin_step = 0;       ///< t0: optimizer steps taken before the first pruning
  index_t frequency = 100;      ///< dt: steps between prunings
  index_t pruning_steps = 10;   ///< n: the last pruning, at t0 + n dt, reaches s_f

  void validate() const {
    if (!(initial_sparsity >= 0 && initial_sparsity <= 1) || begin_step < 0 || frequency <= 0 ||
        pruning_steps <= 0) {
      slimnet::detail::raise<config_error>(
          "slimnet::prune::agp",
          "invalid options: initial_sparsity={} begin_step={} frequency={} pruning_steps={}",
          initial_sparsity, begin_step, frequency, pruning_steps);
    }
  }
  index_t end_step() const { return begin_step + pruning_steps * frequency; }
  /// s_t for final sparsity s_f, clamped: s_i before t0, s_f from t0 + n dt on.
  double sparsity(index_t t, double final_sparsity) const {
    if (t <= begin_step) return initial_sparsity;
    if (t >= end_step()) return final_sparsity;
    const double x =
        1.0 - static_cast<double>(t - begin_step) / static_cast<double>(pruning_steps * frequency);
    return final_sparsity + (initial_sparsity - final_sparsity) * x * x * x;
  }
  /// True at the pruning steps t0, t0 + dt, ..., t0 + n dt.
  bool is_pruning_step(index_t t) const {
    return t >= begin_step && t <= end_step() && (t - begin_step) % frequency == 0;
  }
};

/// AGP as a fit callback. t counts the optimizer steps taken in this fit() call; pruning for
/// t = 0 happens before the first step, for t > 0 right after step t (so step t + 1 trains
/// with the new masks).
template <class Scalar>
class agp : public train::callback<Scalar> {
 public:
  agp(magnitude_pruner<Scalar> pruner, agp_options options)
      : pruner_(std::move(pruner)), opt_(options) {
    opt_.validate();
  }

  void on_train_begin(train::train_state<Scalar>&) override { maybe_prune(0); }
  void after_step(train::train_state<Scalar>& s) override { maybe_prune(s.step); }
  /// Steps at which pruning happened so far.
  const std::vector<index_t>& pruned_at() const { return pruned_at_; }

 private:
  void maybe_prune(index_t t) {
    if (!opt_.is_pruning_step(t)) return;
    pruner_.prune([&](double final_sparsity) { return opt_.sparsity(t, final_sparsity); });
    pruned_at_.push_back(t);
  }
  magnitude_pruner<Scalar> pruner_;
  agp_options opt_;
  std::vector<index_t> pruned_at_;
};

}  // namespace slimnet::prune
