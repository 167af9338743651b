// Inverted dropout (PyTorch semantics): in training, zero each element with probability p and
// scale the rest by 1/(1-p); identity in evaluation.
#pragma once

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {

template <class Scalar>
class dropout : public cloneable<dropout<Scalar>, Scalar> {
 public:
  explicit dropout(double p = 0.5) : p_(p) {
    if (!(p >= 0.0 && p < 1.0)) slimnet::detail::raise<config_error>("slimnet::nn::dropout", "p = {} is outside [0, 1)", p);
  }
  std::string kind() const override { return "Dropout"; }
  std::string describe() const override { return fmt::format("Dropout(p={})", p_); }
  double p() const { return p_; }
  shape_t output_shape(const shape_t& in) const override { return in; }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(x.shape());
    active_ = ctx.training && p_ > 0.0;
    if (!active_) {
      y.flat() = x.flat();
      return;
    }
    rng& gen = ctx.generator();
    mask_.resize(x.shape());
    const Scalar keep_scale = static_cast<Scalar>(1.0 / (1.0 - p_));
    for (index_t i = 0; i < x.size(); ++i) mask_[i] = gen.uniform() < p_ ? Scalar(0) : keep_scale;
    y.flat() = x.flat().cwiseProduct(mask_.flat());
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx == nullptr) return;
    dx->resize(x.shape());
    if (active_) {
      dx->flat() = dy.flat().cwiseProduct(mask_.flat());
    } else {
      dx->flat() = dy.flat();
    }
  }

 private:
  double p_;
  bool active_ = false;
  tensor<Scalar> mask_;  // 0 or 1/(1-p) per element
};

}  // namespace slimnet::nn
