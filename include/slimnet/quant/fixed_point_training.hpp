// Training in limited precision (Gupta et al. 2015): weights, activations and gradients held in
// fixed point <IL, FL>, each selectable, through the pieces training already has:
//   weights     fixed_point_transform, a parameter transform (nn/parameter.hpp);
//   activations activation_quantizer, a unit transform (nn/unit_transform.hpp) applied by a
//               quantize_activation layer after every Linear / Conv2d, which can also round the
//               back-propagated error dL/dx;
//   gradients   gradient_quantizer, a fit() callback that rounds dL/dW before the optimizer step.
// limited_precision() builds the quantized copy of a Sequential model in one call.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/parameter.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/nn/unit_transform.hpp"
#include "slimnet/quant/fixed_point.hpp"
#include "slimnet/quant/support.hpp"
#include "slimnet/train/fit.hpp"

namespace slimnet::quant {

struct fixed_point_weight_options {
  fixed_point_format format{4, 12};
  rounding mode = rounding::stochastic;
  /// false (Gupta et al.): the parameter itself is stored in fixed point. The optimizer updates it
  /// and after_step rounds the result back onto the grid with `mode`, so under round-to-nearest an
  /// update smaller than epsilon/2 is lost, while stochastic rounding keeps it in expectation.
  /// true: a real-valued copy receives the updates (clipped to the format's range) and the forward
  /// pass uses its rounding, with the straight-through gradient, as BinaryConnect does with signs.
  bool keep_real_copy = false;
  std::uint64_t seed =
      1;  ///< generator of the rounding in after_step (which gets none from the pass)

  void validate() const { format.validate("slimnet::quant::fixed_point_weight_options"); }
};

/// W_eff = Round(W) with the straight-through gradient dL/dW = dL/dW_eff.
/// Without a real copy W stays on the grid (attach_fixed_point / initialize round it once,
/// after_step rounds W - lr * update), so forward is the identity; a W changed by hand between
/// steps must be re-initialised. With a real copy, forward rounds W (stochastically in training
/// when `mode` is stochastic, to nearest in evaluation) and after_step clips W to [lowest,
/// highest].
/// On a pruned parameter (set_support, done by attach_fixed_point) pruned entries are exactly 0 in
/// W_eff, in W after each step and in the gradient, whatever the rounding (nn/parameter.hpp).
template <class Scalar>
class fixed_point_transform : public nn::parameter_transform<Scalar> {
 public:
  explicit fixed_point_transform(fixed_point_weight_options opt) : opt_(opt), gen_(opt.seed) {
    opt.validate();
  }

  std::string name() const override {
    return fmt::format("fixed_point{}({}{})", opt_.format.describe(), to_string(opt_.mode),
                       opt_.keep_real_copy ? ", real copy" : "");
  }
  const fixed_point_weight_options& options() const { return opt_; }
  /// A copied model gets its own generator state (its stochastic rounding draws independently).
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<fixed_point_transform>(*this);
  }

  void forward(const tensor<Scalar>& w, tensor<Scalar>& w_eff, bool training, rng& gen) override {
    w_eff.flat() = w.flat();
    if (!opt_.keep_real_copy) {  // W is on the grid already (initialize, after_step)
      detail::zero_pruned(w_eff, support_);
      return;
    }
    if (training && opt_.mode == rounding::stochastic) {
      quantize_in_place(w_eff, opt_.format, rounding::stochastic, &gen);
    } else {
      quantize_in_place(w_eff, opt_.format, rounding::nearest);
    }
    detail::zero_pruned(w_eff, support_);
  }

  void backward(const tensor<Scalar>&, tensor<Scalar>& grad) override {
    detail::zero_pruned(grad, support_);
  }

  void after_step(tensor<Scalar>& w, const nn::step_context&) override {
    if (opt_.keep_real_copy) {
      const auto lo = static_cast<Scalar>(opt_.format.lowest()),
                 hi = static_cast<Scalar>(opt_.format.highest());
      w.flat() = w.flat().cwiseMax(lo).cwiseMin(hi);
    } else {
      quantize_in_place(w, opt_.format, opt_.mode, &gen_);
    }
    detail::zero_pruned(w, support_);
  }

  /// Puts a parameter stored in fixed point on the grid before training (rounded with `mode`);
  /// a no-op with a real copy (pruned entries are zeroed either way).
  void initialize(tensor<Scalar>& w) {
    if (!opt_.keep_real_copy) quantize_in_place(w, opt_.format, opt_.mode, &gen_);
    detail::zero_pruned(w, support_);
  }

  /// The surviving entries (0/1 shaped like W; nullopt: all), normally the parameter's support().
  void set_support(std::optional<tensor<Scalar>> support) { support_ = std::move(support); }
  const std::optional<tensor<Scalar>>& support_kept() const { return support_; }

  /// State: the generator of after_step's stochastic rounding and the support.
  void save_state(nn::state_writer<Scalar>& out) const override {
    out.put_generator("gen", gen_);
    out.put_optional_tensor("support", support_);
  }
  void load_state(const nn::state_reader<Scalar>& in) override {
    rng gen;
    in.read_generator("gen", gen);
    in.read_optional_tensor("support", support_);
    gen_ = gen;
  }

 private:
  fixed_point_weight_options opt_;
  rng gen_;
  std::optional<tensor<Scalar>> support_;
};

/// Attaches a fixed_point_transform to `p` (keeping p's pruned entries at 0 if it is pruned) and
/// puts its value on the grid; returns the transform.
template <class Scalar>
std::shared_ptr<fixed_point_transform<Scalar>> attach_fixed_point(
    nn::parameter<Scalar>& p, const fixed_point_weight_options& opt) {
  auto t = std::make_shared<fixed_point_transform<Scalar>>(opt);
  t->set_support(p.support());
  t->initialize(p.value());
  p.add_transform(t);
  return t;
}

struct activation_quantization_options {
  /// Format of the layer's output; nullopt leaves activations real (the layer then only acts on
  /// the gradients).
  std::optional<fixed_point_format> activations = fixed_point_format{4, 12};
  rounding activation_mode = rounding::stochastic;  ///< in training; evaluation rounds to nearest
  /// Format of the back-propagated error dL/dx; nullopt leaves it real.
  std::optional<fixed_point_format> gradients;
  rounding gradient_mode = rounding::stochastic;
  /// Pass dL/dy only where x was inside the range: a saturated output does not move with x, so its
  /// true derivative is 0 (off: the plain straight-through estimator).
  bool clip_gradient = true;
  std::uint64_t seed =
      1;  ///< generator for rounding the gradients (backward gets none from the pass)

  void validate() const {
    if (activations) activations->validate("slimnet::quant::activation_quantization_options");
    if (gradients) gradients->validate("slimnet::quant::activation_quantization_options");
  }
};

/// The activation quantizer, a unit transform (nn/unit_transform.hpp) acting element-wise (no
/// per-unit state: units() = 0). Forward y = Round(x) (stochastic rounding in training when
/// `activation_mode` is stochastic, to nearest in evaluation); backward dx = dy * 1{lowest <= x <=
/// highest} (the straight-through estimator, clipped unless disabled: a saturated output does not
/// move with x), then dx = Round_g(dx) when a gradient format is given, with the quantizer's own
/// generator (backward gets none from the pass). A clone owns a copy of that generator.
template <class Scalar>
class activation_quantizer : public nn::unit_transform<Scalar> {
 public:
  explicit activation_quantizer(activation_quantization_options opt = {}) : opt_(std::move(opt)), gen_(opt_.seed) {
    opt_.validate();
  }

  std::string name() const override { return "QuantizeActivation"; }
  std::string describe() const override {
    std::string s = "QuantizeActivation(";
    s += opt_.activations ? fmt::format("{} {}", opt_.activations->describe(), to_string(opt_.activation_mode)) : "real";
    if (opt_.gradients) s += fmt::format(", gradients {} {}", opt_.gradients->describe(), to_string(opt_.gradient_mode));
    return s + ")";
  }
  const activation_quantization_options& options() const { return opt_; }
  index_t units() const override { return 0; }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context& ctx) override {
    y.resize(x.shape());
    y.flat() = x.flat();
    if (!opt_.activations) return;
    if (ctx.training && opt_.activation_mode == rounding::stochastic) {
      quantize_in_place(y, *opt_.activations, rounding::stochastic, &ctx.generator());
    } else {
      quantize_in_place(y, *opt_.activations, rounding::nearest);
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& dy, tensor<Scalar>& dx) override {
    dx.resize(x.shape());
    if (opt_.activations && opt_.clip_gradient) {
      const auto lo = static_cast<Scalar>(opt_.activations->lowest()), hi = static_cast<Scalar>(opt_.activations->highest());
      dx.flat() = (x.flat().array() >= lo && x.flat().array() <= hi).select(dy.flat().array(), Scalar(0)).matrix();
    } else {
      dx.flat() = dy.flat();
    }
    if (opt_.gradients) quantize_in_place(dx, *opt_.gradients, opt_.gradient_mode, &gen_);
  }

  /// A copy with its own generator state (its gradient rounding draws independently).
  std::shared_ptr<nn::unit_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<activation_quantizer>(*this);
  }

 private:
  activation_quantization_options opt_;
  rng gen_;
};

/// The layer that quantizes its input (an activation_quantizer in a Sequential, kind
/// "QuantizeActivation"): `quant::quantize_activation<float> q(options)`.
template <class Scalar>
using quantize_activation = nn::unit_transform_layer<Scalar, activation_quantizer<Scalar>>;

/// A fit() callback rounding every trainable parameter's gradient dL/dW (after the weight
/// transforms, before the optimizer) to `format`.
template <class Scalar>
class gradient_quantizer : public train::callback<Scalar> {
 public:
  gradient_quantizer(fixed_point_format format, rounding mode, std::uint64_t seed = 1)
      : format_(format), mode_(mode), gen_(seed) {
    format.validate("slimnet::quant::gradient_quantizer");
  }
  void after_backward(train::train_state<Scalar>& s) override {
    s.model.visit_parameters([&](nn::parameter<Scalar>& p) {
      if (p.trainable()) quantize_in_place(p.grad(), format_, mode_, &gen_);
    });
  }

 private:
  fixed_point_format format_;
  rounding mode_;
  rng gen_;
};

struct limited_precision_options {
  /// Stored format of every trainable parameter of Linear and Conv2d layers (weights and biases);
  /// nullopt leaves them real.
  std::optional<fixed_point_weight_options> weights;
  /// Inserts a quantize_activation after every Linear and Conv2d; nullopt inserts none.
  std::optional<activation_quantization_options> activations;
};

namespace detail {

template <class Scalar>
bool is_weight_layer(const nn::layer<Scalar>& l) {
  return dynamic_cast<const nn::linear<Scalar>*>(&l) || dynamic_cast<const nn::conv2d<Scalar>*>(&l);
}

template <class Scalar>
void copy_limited_precision(const nn::sequential<Scalar>& from, nn::sequential<Scalar>& to,
                            const limited_precision_options& o, std::uint64_t& seed) {
  for (std::size_t i = 0; i < from.size(); ++i) {
    const auto& src = from[i];
    std::unique_ptr<nn::layer<Scalar>> l;
    if (const auto* nested = dynamic_cast<const nn::sequential<Scalar>*>(&src)) {
      auto inner = std::make_unique<nn::sequential<Scalar>>();
      copy_limited_precision(*nested, *inner, o, seed);
      l = std::move(inner);
    } else {
      l = src.clone();
    }
    const bool weights = is_weight_layer(*l);
    if (weights && o.weights) {
      l->visit_parameters([&](nn::parameter<Scalar>& p) {
        if (!p.trainable()) return;
        auto w = *o.weights;
        w.seed = seed++;  // every parameter rounds with its own stream
        attach_fixed_point(p, w);
      });
    }
    to.add_ptr(from.local_name(i), std::move(l));
    if (weights && o.activations) {
      auto a = *o.activations;
      a.seed = seed++;
      to.add(from.local_name(i) + "_q", quantize_activation<Scalar>(a));
    }
  }
}

}  // namespace detail

/// A copy of `model` in limited precision: fixed-point transforms on the parameters of its Linear
/// and Conv2d layers and a quantize_activation (named "<layer>_q") after each of them, as
/// selected by `o`; nested Sequential containers are handled recursively. Gradients of the weights
/// are rounded by a gradient_quantizer callback passed to fit().
template <class Scalar>
nn::sequential<Scalar> limited_precision(const nn::sequential<Scalar>& model,
                                         const limited_precision_options& o,
                                         std::uint64_t seed = 1) {
  if (o.weights) o.weights->validate();
  if (o.activations) o.activations->validate();
  nn::sequential<Scalar> out;
  detail::copy_limited_precision(model, out, o, seed);
  return out;
}

}  // namespace slimnet::quant
