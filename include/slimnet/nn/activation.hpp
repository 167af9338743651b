// Element-wise activations as one layer template over a policy (as MiniDNN does):
// the policy gives f(x) and df expressed through y = f(x), so backward needs no recomputation.
#pragma once

#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {
namespace activation_policy {

struct relu {
  static constexpr const char* name = "ReLU";
  template <class X>
  static auto f(const X& x) { return x.cwiseMax(typename X::Scalar(0)); }
  // d relu / dx = 1{x > 0} = 1{y > 0}
  template <class Y, class DY>
  static auto df(const Y& y, const DY& dy) { return (y.array() > typename Y::Scalar(0)).select(dy.array(), typename Y::Scalar(0)); }
};

struct tanh {
  static constexpr const char* name = "Tanh";
  template <class X>
  static auto f(const X& x) { return x.array().tanh(); }
  // d tanh / dx = 1 - y^2
  template <class Y, class DY>
  static auto df(const Y& y, const DY& dy) { return dy.array() * (typename Y::Scalar(1) - y.array().square()); }
};

struct sigmoid {
  static constexpr const char* name = "Sigmoid";
  template <class X>
  static auto f(const X& x) {
    using S = typename X::Scalar;
    return S(1) / (S(1) + (-x.array()).exp());
  }
  // d sigma / dx = y (1 - y)
  template <class Y, class DY>
  static auto df(const Y& y, const DY& dy) { return dy.array() * y.array() * (typename Y::Scalar(1) - y.array()); }
};

}  // namespace activation_policy

template <class Scalar, class Policy>
class activation : public cloneable<activation<Scalar, Policy>, Scalar> {
 public:
  std::string kind() const override { return Policy::name; }
  shape_t output_shape(const shape_t& in) const override { return in; }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(x.shape());
    y.flat() = Policy::f(x.flat());
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx == nullptr) return;
    dx->resize(x.shape());
    dx->flat() = Policy::df(y.flat(), dy.flat()).matrix();
  }
};

template <class Scalar>
using relu = activation<Scalar, activation_policy::relu>;
template <class Scalar>
using tanh = activation<Scalar, activation_policy::tanh>;
template <class Scalar>
using sigmoid = activation<Scalar, activation_policy::sigmoid>;

}  // namespace slimnet::nn
