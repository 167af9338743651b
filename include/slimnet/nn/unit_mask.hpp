// The unit mask: a unit transform (nn/unit_transform.hpp) that multiplies each unit of a layer's
// output by a factor, one per example (or sequence) and unit, shared over positions and time steps.
// DeepIoT's gates (Yao et al. 2017, Section 3.1: the authors' non-inverted dropout on hidden units)
// and the unit masks of the recurrent layers (nn/recurrent.hpp) are unit masks.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/unit_transform.hpp"

namespace slimnet::nn {

/// Which factors a unit mask applies.
enum class mask_mode {
  /// Training: y[n, j, ...] = x[n, j, ...] z[n, j] with the per-example 0/1 samples z (N, units)
  /// set by set_mask, no 1/p rescaling. Evaluation: y = x s_j with s the keep probabilities p̂
  /// (set_probabilities; ones until set): DeepIoT's compression phase.
  stochastic,
  /// Fixed factors in training and evaluation: s (units), or one row per example (N, units)
  /// (set_factors). DeepIoT's fine-tuning and deployment (Eq. 11: 0 for pruned units, 1 or p_j
  /// for kept ones), and a recurrent layer's fixed unit mask.
  hard,
};

/// y[n, j, ...] = x[n, j, ...] f[n, j] on input (N, units, ...) (rank >= 2), dx = dy f (the mask
/// carries no gradient: its factors are set by the method that owns it, not trained). The factors
/// f follow mask_mode. With `folded_steps` the N input rows are the T steps of each of N / T
/// sequences folded into the batch (a TimeDistributed, DeepSense's per-interval convolutions):
/// row i uses factor row floor(i / T), T = (input rows) / (factor rows), so one mask row covers a
/// whole sequence (the authors' noise_shape [B, 1, 1, C]).
/// A recurrent layer applies the mask inside its recurrence through prepare() / factor(): the same
/// factors on the input of the next stacked layer and on its own recurrent path at every step.
/// Clones are independent: a copy owns its own factors and samples.
template <class Scalar>
class unit_mask : public unit_transform<Scalar> {
 public:
  explicit unit_mask(index_t units, bool folded_steps = false) : units_(units), folded_(folded_steps) {
    if (units <= 0) slimnet::detail::raise<config_error>("slimnet::nn::unit_mask", "units = {} must be positive", units);
    factors_ = tensor<Scalar>({units}, Scalar(1));
  }
  /// A mask in hard mode with fixed factors `f`: (units) for every example alike or (N, units),
  /// one row per example of every following batch.
  static std::shared_ptr<unit_mask> fixed(const tensor<Scalar>& f) {
    if (f.rank() < 1 || f.rank() > 2 || f.dim(f.rank() - 1) <= 0) {
      slimnet::detail::raise<shape_error>("slimnet::nn::unit_mask::fixed", "factors of shape {}: expected (units) or (N, units)",
                                          shape_string(f.shape()));
    }
    auto m = std::make_shared<unit_mask>(f.dim(f.rank() - 1));
    m->set_factors(f);
    return m;
  }

  std::string name() const override { return "UnitMask"; }
  std::string describe() const override {
    return fmt::format("UnitMask({}, mode={}{})", units_, mode_ == mask_mode::hard ? "hard" : "stochastic",
                       folded_ ? ", per sequence over folded steps" : "");
  }
  index_t units() const override { return units_; }
  /// True when the input rows are folded steps and a factor row covers T consecutive rows.
  bool folded_steps() const { return folded_; }
  mask_mode mode() const { return mode_; }

  /// The per-example training samples (stochastic mode): (N, units), values exactly 0 or 1. In
  /// hard mode they are checked and kept but not used.
  void set_mask(const tensor<Scalar>& z) {
    constexpr const char* fn = "slimnet::nn::unit_mask::set_mask";
    if (z.rank() != 2 || z.dim(1) != units_) {
      slimnet::detail::raise<shape_error>(fn, "mask of shape {} does not fit a mask of {} units: expected (N, {})",
                                          shape_string(z.shape()), units_, units_);
    }
    for (index_t i = 0; i < z.size(); ++i) {
      if (z[i] != Scalar(0) && z[i] != Scalar(1)) {
        slimnet::detail::raise<config_error>(fn, "mask value {} at {} is not 0 or 1", static_cast<double>(z[i]), i);
      }
    }
    samples_ = z;
  }
  const tensor<Scalar>& mask() const { return samples_; }

  /// Stochastic mode; `keep` (the keep probabilities p̂, in [0, 1]) scales evaluation.
  void set_probabilities(const column_vector<Scalar>& keep) {
    check_scale("slimnet::nn::unit_mask::set_probabilities", keep, true);
    factors_ = tensor<Scalar>({units_});
    factors_.flat() = keep;
    mode_ = mask_mode::stochastic;
  }
  /// Hard mode with a fixed per-unit scale (>= 0; 0 = pruned), in training and evaluation.
  void set_hard(const column_vector<Scalar>& scale) {
    check_scale("slimnet::nn::unit_mask::set_hard", scale, false);
    factors_ = tensor<Scalar>({units_});
    factors_.flat() = scale;
    mode_ = mask_mode::hard;
    samples_ = tensor<Scalar>();
  }
  /// Hard mode with fixed factors (units) or (N, units), finite values.
  void set_factors(const tensor<Scalar>& f) {
    constexpr const char* fn = "slimnet::nn::unit_mask::set_factors";
    const bool ok = (f.rank() == 1 || f.rank() == 2) && f.dim(f.rank() - 1) == units_;
    if (!ok) {
      slimnet::detail::raise<shape_error>(fn, "factors of shape {} do not fit a mask of {} units: expected ({}) or (N, {})",
                                          shape_string(f.shape()), units_, units_, units_);
    }
    if (!f.flat().allFinite()) slimnet::detail::raise<config_error>(fn, "the factors are not all finite");
    factors_ = f;
    mode_ = mask_mode::hard;
  }

  /// The factors outside stochastic training: p̂ (stochastic) or the hard factors, (units) or (N, units).
  const tensor<Scalar>& factors() const { return factors_; }
  /// The per-unit factors (p̂ or the hard scale); config_error for per-example hard factors.
  column_vector<Scalar> scale() const {
    if (factors_.rank() != 1) {
      slimnet::detail::raise<config_error>("slimnet::nn::unit_mask::scale", "the mask has per-example factors of shape {}",
                                           shape_string(factors_.shape()));
    }
    return factors_.flat();
  }

  /// Chooses the factors of a pass over `rows` input rows (after this, factor(i, j) is the factor
  /// of row i and unit j): the samples in stochastic training, else the factors. Throws
  /// shape_error (from `fn`) when their rows do not fit the batch.
  void prepare(index_t rows, bool training, const char* fn) {
    use_samples_ = training && mode_ == mask_mode::stochastic;
    steps_ = 1;
    const tensor<Scalar>& use = used();
    if (use_samples_ && use.rank() != 2) {
      slimnet::detail::raise<shape_error>(fn, "training in stochastic mode needs a mask of shape ({}, {}), got {}", rows, units_,
                                          shape_string(use.shape()));
    }
    if (use.rank() == 1) return;
    const index_t have = use.dim(0);
    if (folded_) {
      if (have == 0 ? rows != 0 : rows % have != 0) {
        slimnet::detail::raise<shape_error>(fn,
                                            "a mask over folded steps needs an (N, {}) mask whose N divides the {} input rows (N "
                                            "sequences of T steps), got {}",
                                            units_, rows, shape_string(use.shape()));
      }
      steps_ = have == 0 ? 1 : rows / have;
    } else if (have != rows) {
      slimnet::detail::raise<shape_error>(fn, "the mask of shape {} has {} rows for a batch of {} (expected ({}, {}))",
                                          shape_string(use.shape()), have, rows, rows, units_);
    }
  }
  /// Factor of input row i and unit j in the pass prepared last.
  Scalar factor(index_t i, index_t j) const {
    const tensor<Scalar>& use = used();
    return use.rank() == 1 ? use.data()[j] : use.data()[(i / steps_) * units_ + j];
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    constexpr const char* fn = "slimnet::nn::unit_mask::forward";
    check_input(x, fn);
    prepare(x.dim(0), ctx.training, fn);
    y.resize(x.shape());
    apply(x.data(), y.data(), x);
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    dx.resize(x.shape());
    apply(dy.data(), dx.data(), x);
  }

  /// Keeps units `keep` (increasing) of the factors and samples (thinning).
  void keep_units(const std::vector<index_t>& keep) override {
    for (std::size_t i = 0; i < keep.size(); ++i) {
      if (keep[i] < 0 || keep[i] >= units_ || (i > 0 && keep[i] <= keep[i - 1])) {
        slimnet::detail::raise<config_error>("slimnet::nn::unit_mask::keep_units",
                                             "units to keep must be increasing and within [0, {}), got {} at position {}", units_,
                                             keep[i], i);
      }
    }
    if (keep.empty())
      slimnet::detail::raise<config_error>("slimnet::nn::unit_mask::keep_units", "cannot remove all {} units", units_);
    auto take = [&](const tensor<Scalar>& t) {
      if (t.size() == 0) return t;
      const index_t rows = t.rank() == 1 ? 1 : t.dim(0), k = static_cast<index_t>(keep.size());
      tensor<Scalar> out(t.rank() == 1 ? shape_t{k} : shape_t{rows, k});
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < k; ++j) out.data()[r * k + j] = t.data()[r * units_ + keep[static_cast<std::size_t>(j)]];
      return out;
    };
    factors_ = take(factors_);
    samples_ = take(samples_);
    units_ = static_cast<index_t>(keep.size());
  }

  /// A copy with its own factors and samples (nothing is shared).
  std::shared_ptr<unit_transform<Scalar>> clone(clone_memo&) const override { return std::make_shared<unit_mask>(*this); }

 private:
  const tensor<Scalar>& used() const { return use_samples_ ? samples_ : factors_; }
  void check_input(const tensor<Scalar>& x, const char* fn) const {
    if (x.rank() < 2 || x.dim(1) != units_) {
      slimnet::detail::raise<shape_error>(fn, "input of shape {} does not fit {}: expected (N, {}, ...)", shape_string(x.shape()),
                                          describe(), units_);
    }
  }
  void apply(const Scalar* in, Scalar* out, const tensor<Scalar>& x) const {
    const index_t n = x.dim(0), inner = n == 0 ? 0 : x.size() / (n * units_);
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < units_; ++j) {
        const Scalar f = factor(i, j);
        const index_t off = (i * units_ + j) * inner;
        for (index_t k = 0; k < inner; ++k) out[off + k] = in[off + k] * f;
      }
    }
  }
  void check_scale(const char* fn, const column_vector<Scalar>& s, bool probability) const {
    if (s.size() != units_) slimnet::detail::raise<shape_error>(fn, "{} values for a mask of {} units", s.size(), units_);
    for (index_t j = 0; j < s.size(); ++j) {
      const double v = static_cast<double>(s[j]);
      if (!(v >= 0.0) || (probability && v > 1.0) || !std::isfinite(v)) {
        slimnet::detail::raise<config_error>(fn, "value {} of unit {} is outside {}", v, j, probability ? "[0, 1]" : "[0, inf)");
      }
    }
  }

  index_t units_;
  bool folded_ = false;
  mask_mode mode_ = mask_mode::stochastic;
  tensor<Scalar> factors_;    // p̂ (stochastic, evaluation) or the hard factors: (units) or (N, units)
  tensor<Scalar> samples_;    // (N, units) 0/1 samples for stochastic training
  bool use_samples_ = false;  // the pass prepared last uses samples_ (else factors_)
  index_t steps_ = 1;         // factor row i / steps_ for input row i
};

}  // namespace slimnet::nn
