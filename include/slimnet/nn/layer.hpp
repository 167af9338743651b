// The layer interface: a small virtual interface at layer granularity (DESIGN.md, principle 3).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/parameter.hpp"

namespace slimnet::nn {

template <class Scalar>
class unit_transform;  // nn/unit_transform.hpp

template <class Scalar>
class layer {
 public:
  using scalar_type = Scalar;
  using parameter_visitor = std::function<void(parameter<Scalar>&)>;
  using const_parameter_visitor = std::function<void(const parameter<Scalar>&)>;
  using layer_visitor = std::function<void(layer<Scalar>&)>;
  using unit_transform_visitor = std::function<void(unit_transform<Scalar>&)>;

  virtual ~layer() = default;

  /// Kind of layer as PyTorch names it ("Linear", "Conv2d", ...).
  virtual std::string kind() const = 0;
  /// One-line description with hyper-parameters, e.g. "Linear(784, 300)".
  virtual std::string describe() const { return kind(); }

  /// Output shape for an input of shape `input` (batch dim first); throws shape_error if the
  /// input does not fit the layer.
  virtual shape_t output_shape(const shape_t& input) const = 0;

  /// y = layer(x). May cache what backward needs (im2col buffers, argmax, masks).
  virtual void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) = 0;

  /// Given x and y of the last forward pass and dL/dy, accumulates dL/dW_eff into the parameters'
  /// grad() and writes dL/dx into *dx unless dx is null (first layer: input gradient not needed).
  /// Throws shape_error unless y == output_shape(x) and dy has y's shape (check_backward_shapes).
  virtual void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                        tensor<Scalar>* dx) = 0;

  /// Inference on one input: y = layer(x) in evaluation mode (no dropout, BatchNorm's running
  /// statistics, deterministic transforms), e.g. `auto logits = model(images);`.
  tensor<Scalar> operator()(const tensor<Scalar>& x) {
    tensor<Scalar> y;
    forward(x, y, forward_context{});
    return y;
  }

  /// Visits every parameter and buffer of the layer (and of its children), always in the same
  /// order: names, files, checkpoints and optimizer state follow it. Does not change the layer.
  virtual void visit_parameters(const parameter_visitor& /*visit*/) {}
  /// The same visit on a const layer (saving, reports): the same parameters in the same order.
  /// Every slimnet layer with parameters overrides both. The default forwards to the mutable visit,
  /// which changes nothing (the contract above), so a layer that overrides only that one is still
  /// seen whole. A lambda taking `const nn::parameter<S>&` picks the mutable overload on a mutable
  /// layer and this one on a const layer; both see the same parameters.
  virtual void visit_parameters(const const_parameter_visitor& visit) const {
    const_cast<layer*>(this)->visit_parameters(parameter_visitor([&](parameter<Scalar>& p) { visit(p); }));
  }
  /// Visits this layer (containers visit their children after themselves).
  virtual void visit_layers(const layer_visitor& visit) { visit(*this); }
  /// Visits the unit (output) transforms this layer itself applies (nn/unit_transform.hpp: a
  /// unit_transform_layer's transform, a recurrent layer's unit masks); children are reached
  /// through visit_layers.
  virtual void visit_unit_transforms(const unit_transform_visitor& /*visit*/) {}

  /// Re-initialises the parameters (PyTorch's default initialisation unless stated otherwise).
  virtual void reset_parameters(rng& /*gen*/) {}

  virtual std::unique_ptr<layer> clone() const = 0;

  /// Dotted name within the model ("conv1"); parameters are named "<name>.<local>".
  const std::string& name() const { return name_; }
  virtual void set_name(const std::string& name) {
    name_ = name;
    visit_own_parameters([&](parameter<Scalar>& p) { p.set_prefix(name); });
  }

  /// Number of parameter values (trainable ones only unless `include_buffers`).
  index_t parameter_count(bool include_buffers = false) const {
    index_t n = 0;
    visit_parameters([&](const parameter<Scalar>& p) {
      if (p.trainable() || include_buffers) n += p.size();
    });
    return n;
  }

 protected:
  /// Every backward starts here: throws shape_error unless y has the shape forward makes from x
  /// and dy has y's shape. backward indexes x, y and dy with the sizes of the forward pass, so a
  /// mismatch (a dy of the wrong batch size, say) would read or write past a buffer. Costs one
  /// output_shape per call. The message names the layer and both shapes.
  void check_backward_shapes(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy) const {
    constexpr const char* fn = "slimnet::nn::layer::backward";
    std::string who = describe();
    if (who.find('\n') != std::string::npos) who = kind();
    if (!name_.empty()) who += " '" + name_ + "'";
    shape_t expected;
    try {
      expected = output_shape(x.shape());
    } catch (const shape_error& e) {
      slimnet::detail::raise<shape_error>(fn, "{}: x of shape {} does not fit the layer ({})", who, shape_string(x.shape()), e.what());
    }
    if (y.shape() != expected) {
      slimnet::detail::raise<shape_error>(fn, "{}: y has shape {}, but forward of x {} gives {}", who, shape_string(y.shape()),
                                          shape_string(x.shape()), shape_string(expected));
    }
    if (dy.shape() != y.shape()) {
      slimnet::detail::raise<shape_error>(fn, "{}: dy has shape {}, expected y's shape {}", who, shape_string(dy.shape()),
                                          shape_string(y.shape()));
    }
  }

  /// Parameters of this layer itself (not of children); containers override.
  virtual void visit_own_parameters(const parameter_visitor& visit) { visit_parameters(visit); }

 private:
  std::string name_;
};

/// Helper for leaf layers: clone() through the copy constructor.
template <class Derived, class Scalar>
class cloneable : public layer<Scalar> {
 public:
  std::unique_ptr<layer<Scalar>> clone() const override {
    clone_scope scope;  // the layer's parameters share one memo (nn/parameter.hpp)
    return std::make_unique<Derived>(static_cast<const Derived&>(*this));
  }
};

}  // namespace slimnet::nn
