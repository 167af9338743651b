// Fully connected layer: y = x W^T + b with W of shape (out, in), PyTorch's layout.
#pragma once

#include <optional>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/nn/init.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {

template <class Scalar>
class linear : public cloneable<linear<Scalar>, Scalar> {
 public:
  linear(index_t in_features, index_t out_features, bool with_bias = true)
      : weight_("weight", {out_features, in_features}) {
    if (in_features <= 0 || out_features <= 0) {
      slimnet::detail::raise<config_error>("slimnet::nn::linear", "features must be positive, got in={} out={}", in_features,
                                  out_features);
    }
    if (with_bias) bias_.emplace("bias", shape_t{out_features});
    rng gen(0);
    reset_parameters(gen);
  }

  std::string kind() const override { return "Linear"; }
  std::string describe() const override {
    return fmt::format("Linear({}, {}{})", in_features(), out_features(), bias_ ? "" : ", bias=false");
  }
  index_t in_features() const { return weight_.value().dim(1); }
  index_t out_features() const { return weight_.value().dim(0); }

  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>* bias() { return bias_ ? &*bias_ : nullptr; }

  shape_t output_shape(const shape_t& input) const override {
    if (input.size() != 2 || input[1] != in_features()) {
      slimnet::detail::raise<shape_error>("slimnet::nn::linear::forward", "input of shape {} does not fit {}: expected (N, {})",
                                 shape_string(input), describe(), in_features());
    }
    return {input[0], out_features()};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const auto& w = weight_.forward_value(ctx);
    const index_t n = x.dim(0), in = in_features(), out = out_features();
    kernels::gemm<Scalar>(kernels::row_major(x.data(), n, in), kernels::row_major(w.data(), out, in).transposed(),
                          kernels::row_major(y.data(), n, out));
    auto Y = y.matrix();
    if (bias_) {
      const auto& b = bias_->forward_value(ctx);
      Y.rowwise() += b.flat().transpose();
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const index_t n = x.dim(0), in = in_features(), out = out_features();
    const auto dY = kernels::row_major(dy.data(), n, out);
    kernels::gemm<Scalar>(dY.transposed(), kernels::row_major(x.data(), n, in), kernels::row_major(weight_.grad().data(), out, in),
                          Scalar(1), Scalar(1));  // dW += dY^T X
    if (bias_) bias_->grad().flat() += dy.matrix().colwise().sum().transpose();
    if (dx != nullptr) {
      dx->resize(x.shape());
      kernels::gemm<Scalar>(dY, kernels::row_major(weight_.used_value().data(), out, in), kernels::row_major(dx->data(), n, in));
    }
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    visit(weight_);
    if (bias_) visit(*bias_);
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    visit(weight_);
    if (bias_) visit(*bias_);
  }

  void reset_parameters(rng& gen) override { init::pytorch_default(weight_.value(), bias_ ? &bias_->value() : nullptr, gen); }

 private:
  parameter<Scalar> weight_;
  std::optional<parameter<Scalar>> bias_;
};

}  // namespace slimnet::nn
