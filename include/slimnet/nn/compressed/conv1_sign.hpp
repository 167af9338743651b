// A BNN's first convolution (one input channel, stride 1, no padding), its max-pool and the
// BatchNorm + sign that follow, as one inference layer on kernels/conv1_sign.hpp: the +-1
// activations come out directly, bitwise what the float layers give. compress_bnn builds it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/conv1_sign.hpp"
#include "slimnet/nn/compressed/sign_threshold.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class conv1_sign_layer : public layer<Scalar> {
 public:
  /// weights: out_channels x (kernel_h kernel_w); bias: out_channels or empty; pool >= 1 (1: none);
  /// threshold: the folded BatchNorm + sign of the out_channels channels.
  conv1_sign_layer(row_matrix<Scalar> weights, std::vector<Scalar> bias, index_t kernel_h, index_t kernel_w, index_t pool,
                   const sign_threshold<Scalar>& threshold)
      : w_(std::move(weights)), bias_(std::move(bias)), kernel_h_(kernel_h), kernel_w_(kernel_w), pool_(pool) {
    const char* fn = "slimnet::nn::compressed::conv1_sign_layer";
    if (w_.cols() != kernel_h * kernel_w || kernel_h < 1 || kernel_w < 1 || pool < 1) {
      slimnet::detail::raise<shape_error>(fn, "{} weights per filter for a {}x{} kernel pooled {}", w_.cols(), kernel_h, kernel_w, pool);
    }
    if (!bias_.empty() && static_cast<index_t>(bias_.size()) != w_.rows()) {
      slimnet::detail::raise<shape_error>(fn, "{} biases for {} filters", bias_.size(), w_.rows());
    }
    if (threshold.features() != w_.rows()) {
      slimnet::detail::raise<shape_error>(fn, "{} threshold channels for {} filters", threshold.features(), w_.rows());
    }
    for (const auto& k : threshold.channels()) {
      lo_.push_back(k.lo);
      hi_.push_back(k.hi);
      in_value_.push_back(k.inside ? Scalar(1) : Scalar(-1));
      nan_value_.push_back(k.nan_plus ? Scalar(1) : Scalar(-1));
    }
  }
  conv1_sign_layer(const conv1_sign_layer& other)
      : layer<Scalar>(other), w_(other.w_), bias_(other.bias_), kernel_h_(other.kernel_h_), kernel_w_(other.kernel_w_), pool_(other.pool_),
        lo_(other.lo_), hi_(other.hi_), in_value_(other.in_value_), nan_value_(other.nan_value_) {}  // a fresh workspace

  std::string kind() const override { return "Conv1Sign"; }
  std::string describe() const override {
    return fmt::format("Conv1Sign(1, {}, kernel_size=({}, {}), direct, + MaxPool2d({}) + sign threshold, {} bytes)", w_.rows(), kernel_h_,
                       kernel_w_, pool_, w_.size() * static_cast<index_t>(sizeof(Scalar)));
  }
  index_t out_channels() const { return w_.rows(); }
  const row_matrix<Scalar>& weights() const { return w_; }

  shape_t output_shape(const shape_t& in) const override {
    const auto p = params();
    if (in.size() != 4 || in[1] != 1 || in[2] < kernel_h_ || in[3] < kernel_w_ || p.out_h(in[2]) < 1 || p.out_w(in[3]) < 1) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::conv1_sign_layer::forward",
                                          "input of shape {} does not fit {}: expected (N, 1, H, W)", shape_string(in), describe());
    }
    return {in[0], out_channels(), p.out_h(in[2]), p.out_w(in[3])};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    if (x.dim(0) == 0) return;
    kernels::conv1_sign(params(), x.data(), x.dim(0), x.dim(2), x.dim(3), y.data(), ws_);
  }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&, tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::nn::compressed::conv1_sign_layer::backward",
                                         "{} is an inference-only layer: train the float layers and convert them again", describe());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<conv1_sign_layer>(*this); }

 private:
  kernels::conv1_sign_params<Scalar> params() const {
    kernels::conv1_sign_params<Scalar> p;
    p.out_channels = w_.rows();
    p.kernel_h = kernel_h_;
    p.kernel_w = kernel_w_;
    p.pool = pool_;
    p.weights = w_.data();
    p.bias = bias_.empty() ? nullptr : bias_.data();
    p.lo = lo_.data();
    p.hi = hi_.data();
    p.in_value = in_value_.data();
    p.nan_value = nan_value_.data();
    return p;
  }

  row_matrix<Scalar> w_;
  std::vector<Scalar> bias_;
  index_t kernel_h_, kernel_w_, pool_;
  std::vector<Scalar> lo_, hi_, in_value_, nan_value_;
  kernels::conv1_sign_workspace ws_;
};

}  // namespace slimnet::nn::compressed
