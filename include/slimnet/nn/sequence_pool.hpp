// Time-average pooling over the valid steps of each sequence: (N, T, F) -> (N, F),
//   y_n = (1 / L_n) sum_{t < L_n} x_{n,t}   (y_n = 0 when L_n = 0),
// with L_n from forward_context::lengths (all T without them). DeepSense averages its GRU
// outputs this way before the classifier.
#pragma once

#include <cstdint>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {

template <class Scalar>
class sequence_mean : public cloneable<sequence_mean<Scalar>, Scalar> {
 public:
  std::string kind() const override { return "SequenceMean"; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 3) {
      slimnet::detail::raise<shape_error>("slimnet::nn::sequence_mean::forward", "input of shape {} is not (N, T, F)",
                                          shape_string(in));
    }
    return {in[0], in[2]};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    constexpr const char* fn = "slimnet::nn::sequence_mean::forward";
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), t_len = x.dim(1), f = x.dim(2);
    lengths_.assign(static_cast<std::size_t>(n), static_cast<std::int32_t>(t_len));
    if (ctx.lengths != nullptr) {
      if (static_cast<index_t>(ctx.lengths->size()) != n) {
        slimnet::detail::raise<shape_error>(fn, "{} sequence lengths for a batch of {} sequences", ctx.lengths->size(), n);
      }
      lengths_ = *ctx.lengths;
    }
    y.set_zero();
    for (index_t i = 0; i < n; ++i) {
      const index_t len = lengths_[static_cast<std::size_t>(i)];
      if (len < 0 || len > t_len)
        slimnet::detail::raise<config_error>(fn, "sequence {} has length {}, outside [0, {}]", i, len, t_len);
      if (len == 0) continue;
      auto yi = y.matrix().row(i);
      for (index_t t = 0; t < len; ++t)
        yi += Eigen::Map<const Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>(x.data() + (i * t_len + t) * f, f);
      yi /= static_cast<Scalar>(len);
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx == nullptr) return;
    const index_t n = x.dim(0), t_len = x.dim(1), f = x.dim(2);
    dx->resize(x.shape());
    dx->set_zero();
    for (index_t i = 0; i < n; ++i) {
      const index_t len = lengths_.at(static_cast<std::size_t>(i));
      if (len == 0) continue;
      const auto g = (dy.matrix().row(i) / static_cast<Scalar>(len)).eval();
      for (index_t t = 0; t < len; ++t)
        Eigen::Map<Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>(dx->data() + (i * t_len + t) * f, f) = g;
    }
  }

 private:
  std::vector<std::int32_t> lengths_;  // of the last forward pass
};

}  // namespace slimnet::nn
