// The output (unit) transform: the counterpart of the weight transform (nn/parameter.hpp) for what
// a layer produces. DeepIoT's gates, the recurrent layers' unit masks and activation quantizers
// act through it.
#pragma once

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/parameter.hpp"

namespace slimnet::nn {

/// A compression method seen from a layer's output: y = f(x) on an activation x of rank >= 2 whose
/// axis 1 is the unit axis (output channel of a Conv2d, output feature of a Linear, hidden unit of
/// a recurrent layer), with the backward rule that turns dL/dy into dL/dx.
/// Examples: a unit mask (y[n, j, ...] = x[n, j, ...] m[n, j]; dx = dy m, DeepIoT's gates and the
/// recurrent unit masks, nn/unit_mask.hpp) and an activation quantizer (y = Round(x); dx = dy on
/// the representable range, the clipped straight-through estimator, quant/fixed_point_training.hpp).
///
/// Contract.
///   - forward(x, y, ctx): y has x's shape. `ctx.training` selects training behaviour (a mask's
///     per-example samples, stochastic rounding), `ctx.generator()` is the pass's generator.
///     Keeps what backward needs (the factors used, not x: backward gets x again).
///   - backward(x, dy, dx): dx = (dL/dx) for the x and pass of the last forward; shape of x.
///     The transform holds no parameters: its state (mask, probabilities, formats) is set by the
///     method that owns it, never by the optimizer.
///   - units(): the size of axis 1 a transform with per-unit state was built for (it throws
///     shape_error on any other), 0 for an element-wise transform that fits any shape.
///     keep_units(keep) shrinks that state when structure/ removes units (thinning), so a
///     transform stays attached to a thinned layer; element-wise transforms ignore it.
///   - after_step(step): called after each optimizer step with the step's context, as the weight
///     transforms' hook (for a schedule that changes the transform as training proceeds).
///   - clone(memo): every transform states how it clones; there is no default. A cloned model must
///     not share a mask, probabilities or a random generator with the original (training the copy
///     would change the original); state shared on purpose goes through `memo` (nn/parameter.hpp).
template <class Scalar>
class unit_transform {
 public:
  virtual ~unit_transform() = default;
  /// The kind of the layer that applies it ("UnitMask", "QuantizeActivation").
  virtual std::string name() const = 0;
  /// One line with its settings, e.g. "QuantizeActivation(<4,12> stochastic)".
  virtual std::string describe() const { return name(); }
  /// Units (axis 1) of the per-unit state, or 0 for an element-wise transform.
  virtual index_t units() const = 0;
  virtual void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) = 0;
  virtual void backward(const tensor<Scalar>& x, const tensor<Scalar>& dy, tensor<Scalar>& dx) = 0;
  /// Keeps only units `keep` (increasing) of the per-unit state; no-op for element-wise ones.
  virtual void keep_units(const std::vector<index_t>& /*keep*/) {}
  virtual void after_step(const step_context& /*step*/) {}
  virtual std::shared_ptr<unit_transform> clone(clone_memo& memo) const = 0;
};

namespace detail {
/// Owns a unit transform of type T; a copy holds the transform's clone (unit_transform::clone,
/// one memo per model copy through clone_scope), never the same object.
template <class T>
class owned_transform {
 public:
  owned_transform() = default;
  explicit owned_transform(std::shared_ptr<T> t) : t_(std::move(t)) {}
  owned_transform(const owned_transform& other) {
    if (!other.t_) return;
    clone_scope scope;
    t_ = std::static_pointer_cast<T>(other.t_->clone(scope.memo()));
  }
  owned_transform& operator=(const owned_transform& other) {
    if (this != &other) *this = owned_transform(other);
    return *this;
  }
  owned_transform(owned_transform&&) noexcept = default;
  owned_transform& operator=(owned_transform&&) noexcept = default;

  T* get() const { return t_.get(); }
  T& operator*() const { return *t_; }
  T* operator->() const { return t_.get(); }
  explicit operator bool() const { return static_cast<bool>(t_); }
  void reset() { t_.reset(); }

 private:
  std::shared_ptr<T> t_;
};
}  // namespace detail

/// The layer that puts a unit transform in a Sequential, after the layer whose output it acts on
/// (and after the per-unit layers that follow it, where a method needs that: DeepIoT's gates sit
/// after the activation, BatchNorm and pooling of their layer). No parameters; kind() and
/// describe() are the transform's. `Transform` is the transform's type, so that the method
/// owning it reaches its state (`transform().set_mask(z)`); a copy of the layer holds a clone.
template <class Scalar, class Transform = unit_transform<Scalar>>
class unit_transform_layer : public layer<Scalar> {
  static_assert(std::is_base_of_v<unit_transform<Scalar>, Transform>,
                "unit_transform_layer<Scalar, Transform> needs a Transform derived from nn::unit_transform<Scalar>.");

 public:
  explicit unit_transform_layer(std::shared_ptr<Transform> t) : t_(std::move(t)) {
    if (!t_) slimnet::detail::raise<config_error>("slimnet::nn::unit_transform_layer", "the transform is null");
  }
  /// Builds the transform in place from its constructor's arguments.
  template <class A0, class... Args,
            class = std::enable_if_t<!std::is_same_v<std::decay_t<A0>, unit_transform_layer> &&
                                     !std::is_convertible_v<A0, std::shared_ptr<Transform>>>>
  explicit unit_transform_layer(A0&& a0, Args&&... args)
      : t_(std::make_shared<Transform>(std::forward<A0>(a0), std::forward<Args>(args)...)) {}

  Transform& transform() { return *t_; }
  const Transform& transform() const { return *t_; }

  std::string kind() const override { return t_->name(); }
  std::string describe() const override { return t_->describe(); }
  shape_t output_shape(const shape_t& in) const override {
    const index_t u = t_->units();
    if (in.size() < 2 || (u > 0 && in[1] != u)) {
      slimnet::detail::raise<shape_error>("slimnet::nn::unit_transform_layer::forward",
                                          "input of shape {} does not fit {}: expected (N, {}, ...)", shape_string(in),
                                          describe(), u > 0 ? std::to_string(u) : std::string("units"));
    }
    return in;
  }
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    output_shape(x.shape());
    t_->forward(x, y, ctx);
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx != nullptr) t_->backward(x, dy, *dx);
  }
  void visit_unit_transforms(const typename layer<Scalar>::unit_transform_visitor& visit) override { visit(*t_); }
  std::unique_ptr<layer<Scalar>> clone() const override {
    clone_scope scope;
    return std::make_unique<unit_transform_layer>(*this);
  }

 private:
  detail::owned_transform<Transform> t_;
};

/// Calls after_step(step) on every unit transform in `model` (its layers' visit_unit_transforms):
/// what parameter::after_step is for the weight transforms, run after each optimizer step.
template <class Scalar>
void unit_transforms_after_step(layer<Scalar>& model, const step_context& step) {
  model.visit_layers([&](layer<Scalar>& l) { l.visit_unit_transforms([&](unit_transform<Scalar>& t) { t.after_step(step); }); });
}

}  // namespace slimnet::nn
