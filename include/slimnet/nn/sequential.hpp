// Sequential container: layers applied in order, each with a name ("conv1"); parameters are
// named "<layer>.<local>" ("conv1.weight"), nested containers add their own prefix.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {

template <class Scalar>
class sequential : public layer<Scalar> {
 public:
  using layer_ptr = std::unique_ptr<layer<Scalar>>;

  sequential() = default;
  sequential(const sequential& other) : layer<Scalar>(other), local_names_(other.local_names_) {
    clone_scope scope;  // all parameters of the copy share one memo (nn/parameter.hpp)
    for (const auto& l : other.layers_) layers_.push_back(l->clone());
    rename_children();
  }
  sequential& operator=(const sequential&) = delete;
  sequential(sequential&&) noexcept = default;
  sequential& operator=(sequential&&) noexcept = default;

  /// Appends a layer named `name` (unique within this container).
  template <class Layer>
  Layer& add(std::string name, Layer l) {
    return static_cast<Layer&>(add_ptr(std::move(name), std::make_unique<Layer>(std::move(l))));
  }
  /// Appends a layer named by its position ("0", "1", ...), as PyTorch's nn.Sequential does.
  template <class Layer>
  Layer& add(Layer l) {
    return add(std::to_string(layers_.size()), std::move(l));
  }
  layer<Scalar>& add_ptr(std::string name, layer_ptr l) {
    if (!l) slimnet::detail::raise<config_error>("slimnet::nn::sequential::add", "layer '{}' is null", name);
    for (const auto& existing : layers_) {
      if (existing->name() == qualified(name)) {
        slimnet::detail::raise<config_error>("slimnet::nn::sequential::add", "a layer named '{}' already exists", name);
      }
    }
    local_names_.push_back(std::move(name));
    layers_.push_back(std::move(l));
    rename_children();
    return *layers_.back();
  }

  /// Replaces layer i (e.g. by its compressed or thinned version); keeps its name.
  void replace(std::size_t i, layer_ptr l) {
    layers_.at(i) = std::move(l);
    rename_children();
  }

  std::size_t size() const { return layers_.size(); }
  layer<Scalar>& operator[](std::size_t i) { return *layers_.at(i); }
  const layer<Scalar>& operator[](std::size_t i) const { return *layers_.at(i); }
  const std::string& local_name(std::size_t i) const { return local_names_.at(i); }

  /// The layer with this full or local name; throws config_error if there is none.
  layer<Scalar>& find(const std::string& name) {
    layer<Scalar>* found = nullptr;
    visit_layers([&](layer<Scalar>& l) {
      if (!found && l.name() == name) found = &l;
    });
    if (!found) slimnet::detail::raise<config_error>("slimnet::nn::sequential::find", "no layer named '{}'", name);
    return *found;
  }

  std::string kind() const override { return "Sequential"; }
  std::string describe() const override {
    std::string s = "Sequential(";
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      s += fmt::format("\n  ({}): {}", local_names_[i], layers_[i]->describe());
    }
    return s + (layers_.empty() ? ")" : "\n)");
  }

  shape_t output_shape(const shape_t& in) const override {
    shape_t s = in;
    for (const auto& l : layers_) s = l->output_shape(s);
    return s;
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    if (layers_.empty()) {
      y = x;
      return;
    }
    acts_.resize(layers_.size() - 1);
    const tensor<Scalar>* in = &x;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      tensor<Scalar>& out = i + 1 == layers_.size() ? y : acts_[i];
      layers_[i]->forward(*in, out, ctx);
      in = &out;
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (layers_.empty()) {
      if (dx) *dx = dy;
      return;
    }
    grads_.resize(2);
    // Without a caller asking for dL/dx, layers before the first one with trainable parameters
    // (Flatten in LeNet-300-100) need no backward pass, and that layer needs no input gradient.
    const std::size_t stop = dx != nullptr ? 0 : first_trainable_layer();
    const tensor<Scalar>* upstream = &dy;
    for (std::size_t i = layers_.size(); i-- > stop;) {
      const tensor<Scalar>& in = i == 0 ? x : acts_[i - 1];
      const tensor<Scalar>& out = i + 1 == layers_.size() ? y : acts_[i];
      tensor<Scalar>* down = i == stop ? dx : &grads_[i % 2];
      layers_[i]->backward(in, out, *upstream, down);
      upstream = down;
    }
  }

  /// Output of layer i in the last forward pass (i < size()-1; the last one is the caller's y).
  const tensor<Scalar>& activation(std::size_t i) const { return acts_.at(i); }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    for (auto& l : layers_) l->visit_parameters(visit);
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    for (const auto& l : layers_) std::as_const(*l).visit_parameters(visit);
  }
  void visit_layers(const typename layer<Scalar>::layer_visitor& visit) override {
    visit(*this);
    for (auto& l : layers_) l->visit_layers(visit);
  }
  void reset_parameters(rng& gen) override {
    for (auto& l : layers_) l->reset_parameters(gen);
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<sequential>(*this); }

  void set_name(const std::string& name) override {
    layer<Scalar>::set_name(name);
    rename_children();
  }

 protected:
  void visit_own_parameters(const typename layer<Scalar>::parameter_visitor&) override {}

 private:
  std::string qualified(const std::string& local) const {
    return this->name().empty() ? local : this->name() + "." + local;
  }
  void rename_children() {
    for (std::size_t i = 0; i < layers_.size(); ++i) layers_[i]->set_name(qualified(local_names_[i]));
  }

  std::size_t first_trainable_layer() {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      bool trainable = false;
      layers_[i]->visit_parameters([&](parameter<Scalar>& p) { trainable = trainable || p.trainable(); });
      if (trainable) return i;
    }
    return layers_.size() - 1;
  }

  std::vector<layer_ptr> layers_;
  std::vector<std::string> local_names_;
  std::vector<tensor<Scalar>> acts_;   // outputs of layers 0..size-2
  std::vector<tensor<Scalar>> grads_;  // two ping-pong buffers for dL/d(activation)
};

}  // namespace slimnet::nn
