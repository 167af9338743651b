// Bidirectional wrapper: a recurrent layer run forward in time and a twin run over each
// sequence's valid steps reversed; outputs concatenated on the feature axis as PyTorch does:
// (N, T, H_f + H_b) for every step, or (N, H_f + H_b) = [h_n forward, h_n reverse] for the last.
// Both directions carry the wrapper's name, the twin's parameters end in "_reverse", so a
// wrapped single-layer LSTM/GRU has exactly the parameters of PyTorch's bidirectional one.
// Wrapping a multi-layer stack runs two independent stacks (the seed's Bi-LSTM layout), which
// differs from PyTorch's num_layers > 1 (there layer k+1 reads both directions of layer k; build
// that as a sequential of wrapped single layers).
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/recurrent.hpp"

namespace slimnet::nn {

template <class Scalar>
class bidirectional : public layer<Scalar> {
 public:
  using recurrent_ptr = std::unique_ptr<recurrent_layer<Scalar>>;

  /// Wraps `forward` (a forward-running LSTM or GRU, weights kept as they are) and a reversed twin
  /// whose parameters are drawn from a generator seeded with `seed`.
  template <class Layer, class = std::enable_if_t<std::is_base_of_v<recurrent_layer<Scalar>, Layer>>>
  explicit bidirectional(Layer forward, std::uint64_t seed = 1) {
    auto f = std::make_unique<Layer>(std::move(forward));
    rng gen(seed);
    auto b = f->make_reversed(gen);
    init(std::move(f), std::move(b));
  }
  /// Wraps two given directions (the second must be the reversed one, same output mode).
  bidirectional(recurrent_ptr forward, recurrent_ptr backward) { init(std::move(forward), std::move(backward)); }

  bidirectional(const bidirectional& other) : layer<Scalar>(other) {
    init(copy_of(*other.forward_), copy_of(*other.backward_));
    set_name(other.name());
  }
  bidirectional& operator=(const bidirectional&) = delete;
  bidirectional(bidirectional&&) noexcept = default;
  bidirectional& operator=(bidirectional&&) noexcept = default;

  recurrent_layer<Scalar>& forward_layer() { return *forward_; }
  recurrent_layer<Scalar>& backward_layer() { return *backward_; }
  /// The directions as their concrete type, e.g. forward_as<nn::lstm<float>>().
  template <class Layer>
  Layer& forward_as() {
    return cast<Layer>(*forward_);
  }
  template <class Layer>
  Layer& backward_as() {
    return cast<Layer>(*backward_);
  }

  std::string kind() const override { return "Bidirectional"; }
  std::string describe() const override { return fmt::format("Bidirectional({})", forward_->describe()); }

  shape_t output_shape(const shape_t& in) const override {
    shape_t out = forward_->output_shape(in);
    out.back() += backward_->output_size();
    return out;
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    forward_->forward(x, y_forward_, ctx);
    backward_->forward(x, y_backward_, ctx);
    const index_t hf = forward_->output_size(), hb = backward_->output_size(), rows = y.size() / (hf + hb);
    auto Y = y.matrix(rows, hf + hb);
    Y.leftCols(hf) = y_forward_.matrix(rows, hf);
    Y.rightCols(hb) = y_backward_.matrix(rows, hb);
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const index_t hf = forward_->output_size(), hb = backward_->output_size(), rows = dy.size() / (hf + hb);
    require_shape(dy, output_shape(x.shape()), "slimnet::nn::bidirectional::backward", "dy");
    d_forward_.resize(y_forward_.shape());
    d_backward_.resize(y_backward_.shape());
    const auto dY = dy.matrix(rows, hf + hb);
    d_forward_.matrix(rows, hf) = dY.leftCols(hf);
    d_backward_.matrix(rows, hb) = dY.rightCols(hb);
    forward_->backward(x, y_forward_, d_forward_, dx);
    backward_->backward(x, y_backward_, d_backward_, dx ? &dx_backward_ : nullptr);
    if (dx) dx->flat() += dx_backward_.flat();
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    forward_->visit_parameters(visit);
    backward_->visit_parameters(visit);
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    std::as_const(*forward_).visit_parameters(visit);
    std::as_const(*backward_).visit_parameters(visit);
  }
  void visit_layers(const typename layer<Scalar>::layer_visitor& visit) override {
    visit(*this);
    forward_->visit_layers(visit);
    backward_->visit_layers(visit);
  }
  void reset_parameters(rng& gen) override {
    forward_->reset_parameters(gen);
    backward_->reset_parameters(gen);
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    clone_scope scope;  // the copy's parameters share one memo (nn/parameter.hpp)
    return std::make_unique<bidirectional>(*this);
  }

  void set_name(const std::string& name) override {
    layer<Scalar>::set_name(name);
    forward_->set_name(name);
    backward_->set_name(name);
  }

 protected:
  void visit_own_parameters(const typename layer<Scalar>::parameter_visitor&) override {}

 private:
  static recurrent_ptr copy_of(const recurrent_layer<Scalar>& l) {
    return recurrent_ptr(static_cast<recurrent_layer<Scalar>*>(l.clone().release()));
  }
  template <class Layer>
  static Layer& cast(recurrent_layer<Scalar>& l) {
    auto* p = dynamic_cast<Layer*>(&l);
    if (p == nullptr) {
      slimnet::detail::raise<config_error>("slimnet::nn::bidirectional", "the wrapped layer is a {}, not the requested type",
                                           l.describe());
    }
    return *p;
  }
  void init(recurrent_ptr f, recurrent_ptr b) {
    constexpr const char* fn = "slimnet::nn::bidirectional";
    if (!f || !b) slimnet::detail::raise<config_error>(fn, "a direction is null");
    if (f->reversed() || !b->reversed()) {
      slimnet::detail::raise<config_error>(fn, "expected a forward and a reversed layer, got {} and {}", f->describe(),
                                           b->describe());
    }
    if (f->output() != b->output() || f->input_size() != b->input_size()) {
      slimnet::detail::raise<config_error>(fn, "directions {} and {} differ in input size or output mode", f->describe(),
                                           b->describe());
    }
    forward_ = std::move(f);
    backward_ = std::move(b);
    set_name(this->name());
  }

  recurrent_ptr forward_, backward_;
  tensor<Scalar> y_forward_, y_backward_, d_forward_, d_backward_, dx_backward_;
};

}  // namespace slimnet::nn
