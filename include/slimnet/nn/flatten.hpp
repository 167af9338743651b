// Flatten: (N, d1, d2, ...) -> (N, d1*d2*...), a view change only.
#pragma once

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {

template <class Scalar>
class flatten : public cloneable<flatten<Scalar>, Scalar> {
 public:
  std::string kind() const override { return "Flatten"; }
  shape_t output_shape(const shape_t& in) const override {
    if (in.empty()) slimnet::detail::raise<shape_error>("slimnet::nn::flatten::forward", "input has rank 0");
    return {in[0], in[0] == 0 ? 0 : shape_size(in) / in[0]};
  }
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    y.flat() = x.flat();
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx == nullptr) return;
    dx->resize(x.shape());
    dx->flat() = dy.flat();
  }
};

}  // namespace slimnet::nn
