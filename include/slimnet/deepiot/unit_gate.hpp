// DeepIoT's unit gate: multiplies each hidden unit (a channel of a conv activation, shared over
// positions) by a mask, as the authors' non-inverted dropout (Yao et al. 2017; brief 1.1, 6-7).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::deepiot {

/// How a gate scales its units.
enum class gate_mode {
  /// Compression (the compressor-critic phase). Training: y[n, j, ...] = x[n, j, ...] * z[n, j] with
  /// an externally sampled 0/1 mask z (batch x units), no 1/p rescaling. Evaluation: y = x * s_j
  /// with s = the keep probabilities p̂ (the authors' eval semantics).
  stochastic,
  /// Fine-tuning and deployment (Eq. 11): y = x * s_j in training and evaluation, with a fixed
  /// per-unit scale s: 0 for pruned units, 1 (or p_j when probabilities are folded) for kept ones.
  hard,
};

/// What the trainer sees of one droppable layer's gate: a unit_gate layer after a Linear / Conv2d,
/// or the unit mask of one stacked layer (one direction) of an LSTM / GRU (recurrent_gate in
/// gated.hpp). The same three calls drive both:
///   set_mask(z)           stochastic training: z (N, units), exactly 0 or 1, one row per example;
///   set_probabilities(p̂)  stochastic mode, evaluation scaled by the keep probabilities p̂;
///   set_hard(s)           hard mode: the fixed factors s (0 = pruned) in training and evaluation.
template <class Scalar>
class gate_control {
 public:
  virtual ~gate_control() = default;
  virtual index_t units() const = 0;
  virtual gate_mode mode() const = 0;
  /// p̂ in stochastic mode, the fixed factors in hard mode.
  virtual const column_vector<Scalar>& scale() const = 0;
  virtual void set_mask(const tensor<Scalar>& z) = 0;
  virtual void set_probabilities(const column_vector<Scalar>& keep) = 0;
  virtual void set_hard(const column_vector<Scalar>& scale) = 0;
};

namespace detail {
/// Throws unless z is (N, units) with every value exactly 0 or 1.
template <class Scalar>
void check_gate_mask(const char* fn, const tensor<Scalar>& z, index_t units) {
  if (z.rank() != 2 || z.dim(1) != units) {
    slimnet::detail::raise<shape_error>(fn, "mask of shape {} does not fit a gate of {} units: expected (N, {})", shape_string(z.shape()),
                                        units, units);
  }
  for (index_t i = 0; i < z.size(); ++i) {
    if (z[i] != Scalar(0) && z[i] != Scalar(1)) {
      slimnet::detail::raise<config_error>(fn, "mask value {} at {} is not 0 or 1", static_cast<double>(z[i]), i);
    }
  }
}
/// Throws unless s has `units` finite values >= 0 (and <= 1 for probabilities).
template <class Scalar>
void check_gate_scale(const char* fn, const column_vector<Scalar>& s, index_t units, bool probability) {
  if (s.size() != units) slimnet::detail::raise<shape_error>(fn, "{} values for a gate of {} units", s.size(), units);
  for (index_t j = 0; j < s.size(); ++j) {
    const double v = static_cast<double>(s[j]);
    if (!(v >= 0.0) || (probability && v > 1.0) || !std::isfinite(v)) {
      slimnet::detail::raise<config_error>(fn, "value {} of unit {} is outside {}", v, j, probability ? "[0, 1]" : "[0, inf)");
    }
  }
}
}  // namespace detail

/// Placed after a hidden layer's activation. Input of rank >= 2, unit axis 1: (N, units) after a
/// Linear, (N, C, H, W) after a Conv2d. No parameters; backward is dx = dy * (the same factor).
///
/// A gate inside a TimeDistributed (`folded_steps`, DeepSense's per-interval convolutions) sees
/// the T steps of each sequence folded into the batch: rows n*T .. n*T + T - 1 of its (N*T, ...)
/// input are the steps of sequence n. DeepIoT draws one mask per example (brief item 3:
/// noise_shape [B, 1, 1, C]), so the (N, units) training mask is repeated over the T steps of
/// its sequence: row i uses mask row floor(i / T), with T = (input rows) / N.
template <class Scalar>
class unit_gate : public nn::cloneable<unit_gate<Scalar>, Scalar>, public gate_control<Scalar> {
 public:
  explicit unit_gate(index_t units, bool folded_steps = false)
      : units_(units), folded_(folded_steps), scale_(column_vector<Scalar>::Ones(units > 0 ? units : 0)) {
    if (units <= 0) slimnet::detail::raise<config_error>("slimnet::deepiot::unit_gate", "units = {} must be positive", units);
  }

  std::string kind() const override { return "UnitGate"; }
  std::string describe() const override {
    return fmt::format("UnitGate({}, mode={}{})", units_, mode_ == gate_mode::hard ? "hard" : "stochastic",
                       folded_ ? ", per sequence over folded steps" : "");
  }
  index_t units() const override { return units_; }
  /// True when the input batch is (N*T) folded steps and a mask row covers T consecutive rows.
  bool folded_steps() const { return folded_; }
  gate_mode mode() const override { return mode_; }

  /// The per-example training mask (stochastic mode): shape (N, units), values exactly 0 or 1.
  void set_mask(const tensor<Scalar>& z) override {
    detail::check_gate_mask("slimnet::deepiot::unit_gate::set_mask", z, units_);
    mask_ = z;
  }
  const tensor<Scalar>& mask() const { return mask_; }

  /// Stochastic mode; `keep` (the decayed keep probabilities p̂, in [0, 1]) scales evaluation.
  void set_probabilities(const column_vector<Scalar>& keep) override {
    check_scale("slimnet::deepiot::unit_gate::set_probabilities", keep, true);
    scale_ = keep;
    mode_ = gate_mode::stochastic;
  }

  /// Hard mode with a fixed per-unit scale (>= 0; 0 = pruned): used in training and evaluation.
  void set_hard(const column_vector<Scalar>& scale) override {
    check_scale("slimnet::deepiot::unit_gate::set_hard", scale, false);
    scale_ = scale;
    mode_ = gate_mode::hard;
    mask_ = tensor<Scalar>();
  }

  /// Evaluation factors in stochastic mode, the fixed factors in hard mode.
  const column_vector<Scalar>& scale() const override { return scale_; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() < 2 || in[1] != units_) {
      slimnet::detail::raise<shape_error>("slimnet::deepiot::unit_gate::forward",
                                          "input of shape {} does not fit {}: expected (N, {}, ...)", shape_string(in),
                                          describe(), units_);
    }
    return in;
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), inner = n == 0 ? 0 : x.size() / (n * units_);
    per_example_ = ctx.training && mode_ == gate_mode::stochastic;
    steps_ = 1;
    if (per_example_ && folded_) {
      // (N*T, ...) rows for an (N, units) mask: T = rows / N steps per sequence (T may be 0).
      const index_t rows = mask_.rank() == 2 ? mask_.dim(0) : 0;
      if (mask_.rank() != 2 || (rows == 0 ? n != 0 : n % rows != 0)) {
        slimnet::detail::raise<shape_error>("slimnet::deepiot::unit_gate::forward",
                                            "training in stochastic mode over folded steps needs an (N, {}) mask whose N divides the "
                                            "{} input rows (N sequences of T steps), got {}",
                                            units_, n, shape_string(mask_.shape()));
      }
      steps_ = rows == 0 ? 1 : n / rows;
    } else if (per_example_ && (mask_.rank() != 2 || mask_.dim(0) != n)) {
      slimnet::detail::raise<shape_error>("slimnet::deepiot::unit_gate::forward",
                                          "training in stochastic mode needs a mask of shape ({}, {}), got {}", n, units_,
                                          shape_string(mask_.shape()));
    }
    apply(x.data(), y.data(), n, inner);
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>&, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    if (dx == nullptr) return;
    dx->resize(x.shape());
    const index_t n = x.dim(0), inner = n == 0 ? 0 : x.size() / (n * units_);
    apply(dy.data(), dx->data(), n, inner);
  }

 private:
  void apply(const Scalar* in, Scalar* out, index_t n, index_t inner) const {
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < units_; ++j) {
        const Scalar f = per_example_ ? mask_.data()[(i / steps_) * units_ + j] : scale_[j];
        const index_t off = (i * units_ + j) * inner;
        for (index_t k = 0; k < inner; ++k) out[off + k] = in[off + k] * f;
      }
    }
  }

  void check_scale(const char* fn, const column_vector<Scalar>& s, bool probability) const {
    detail::check_gate_scale(fn, s, units_, probability);
  }

  index_t units_;
  bool folded_ = false;   // input rows are the folded steps of mask_.dim(0) sequences
  index_t steps_ = 1;     // mask row i / steps_ gates input row i (training, stochastic)
  gate_mode mode_ = gate_mode::stochastic;
  column_vector<Scalar> scale_;  // p̂ (stochastic, eval) or the fixed factor (hard)
  tensor<Scalar> mask_;   // (N, units) in stochastic training
  bool per_example_ = false;
};

}  // namespace slimnet::deepiot
