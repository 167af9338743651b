// The one training step: every training loop in slimnet (fit, DeepIoT's critic) takes its steps
// here, so weight transforms, finiteness checks and the after-step hooks behave the same in all.
//
// Per step:  zero grads -> forward -> loss (must be finite) -> backward -> transform_gradient
//            (dL/dW_eff -> dL/dW through the weight transforms, nn/parameter.hpp) -> [gradients
//            finite] -> after_backward hook -> optimizer step -> parameter after_step hooks with
//            the step's context -> [values finite].
//
//   train::training_step<float> step(model, opt, loss, {.function = "my_loop"});
//   while (batches.next(b)) step.run(b, gen, [&] { return fmt::format("at batch {}", k); });
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "slimnet/core/error.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/unit_transform.hpp"
#include "slimnet/train/loss.hpp"
#include "slimnet/train/optimizer.hpp"

namespace slimnet::train {

namespace detail {

/// Throws slimnet::error from `fn` naming the first parameter whose gradient (`gradients`) or value
/// holds a NaN or Inf, and where training was (`where()`, called only then): a fault is found at the
/// step that made it, not epochs later as a NaN loss.
template <class Scalar, class Where>
void check_parameters_finite(nn::layer<Scalar>& model, bool gradients, const char* fn, const Where& where) {
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    const auto& t = gradients ? p.grad() : p.value();
    if (t.flat().allFinite()) return;
    index_t at = 0;
    while (at < t.size() && std::isfinite(static_cast<double>(t[at]))) ++at;
    slimnet::detail::raise<error>(fn, "{} of {} became {} (element {}) {}", gradients ? "the gradient" : "the value", p.name(),
                                  static_cast<double>(t[at]), at, where());
  });
}

}  // namespace detail

/// One optimizer step of `model` on a batch, with its buffers kept between steps (no allocation
/// per step once shapes settle). Not copyable: it refers to the model, optimizer and loss.
template <class Scalar>
class training_step {
 public:
  struct options {
    /// Stop with an error naming the parameter as soon as a gradient or a weight is NaN or Inf
    /// (one pass over the parameters after backward and one after the step: O(parameters), small
    /// against a batch's O(parameters x batch) forward and backward).
    bool check_finite = true;
    /// The function errors are raised from (the caller's name, e.g. "slimnet::train::fit").
    std::string function = "slimnet::train::training_step";
  };

  training_step(nn::layer<Scalar>& model, optimizer<Scalar>& opt, const loss_function<Scalar>& loss, options o = {})
      : model_(model), opt_(opt), loss_(loss), o_(std::move(o)) {}
  training_step(const training_step&) = delete;
  training_step& operator=(const training_step&) = delete;

  /// Takes one step on `b` (training mode, `gen` for dropout and stochastic transforms) and
  /// returns the batch's loss. `where()` says where training is for error messages ("at epoch 2
  /// step 17"); `after_backward` (optional) runs when the gradients for W are ready, before the
  /// optimizer steps. Throws slimnet::error if the loss, a gradient or a weight is not finite.
  template <class Where>
  double run(const data::batch<Scalar>& b, rng& gen, const Where& where, const std::function<void()>& after_backward = {}) {
    const char* fn = o_.function.c_str();
    optimizer<Scalar>::zero_grad(model_);
    nn::forward_context ctx{true, &gen};
    ctx.lengths = b.lengths.empty() ? nullptr : &b.lengths;
    model_.forward(b.inputs, out_, ctx);
    const double batch_loss = loss_.compute(out_, b, grad_);
    if (!std::isfinite(batch_loss)) slimnet::detail::raise<error>(fn, "loss became {} {}", batch_loss, where());
    model_.backward(b.inputs, out_, grad_, nullptr);
    model_.visit_parameters([](nn::parameter<Scalar>& p) { p.transform_gradient(); });
    if (o_.check_finite) detail::check_parameters_finite(model_, true, fn, where);
    if (after_backward) after_backward();
    opt_.step(model_);
    const nn::step_context step{++steps_};
    model_.visit_parameters([&](nn::parameter<Scalar>& p) { p.after_step(step); });
    nn::unit_transforms_after_step(model_, step);  // the output transforms' hook, same context
    if (o_.check_finite) detail::check_parameters_finite(model_, false, fn, where);
    return batch_loss;
  }

  /// The model's output of the last step (logits, for accuracy).
  const tensor<Scalar>& output() const { return out_; }
  /// Steps taken so far (the step context's count).
  std::int64_t steps() const { return steps_; }
  /// Continues the count from `steps` (a run resumed from a checkpoint, train/checkpoint.hpp).
  void set_steps(std::int64_t steps) { steps_ = steps; }

 private:
  nn::layer<Scalar>& model_;
  optimizer<Scalar>& opt_;
  const loss_function<Scalar>& loss_;
  options o_;
  tensor<Scalar> out_, grad_;
  std::int64_t steps_ = 0;
};

}  // namespace slimnet::train
