// Batch normalisation over the channel axis of (N, C) / (N, C, L) input (BatchNorm1d) or
// (N, C, H, W) input (BatchNorm2d), PyTorch semantics: biased batch variance for normalising,
// unbiased for the running estimate, running = (1 - momentum) running + momentum batch.
#pragma once

#include <cmath>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn {

template <class Scalar>
class batch_norm : public cloneable<batch_norm<Scalar>, Scalar> {
 public:
  struct options {
    double eps = 1e-5;
    double momentum = 0.1;
    bool affine = true;
  };

  /// spatial_rank: 0 or 1 for BatchNorm1d, 2 for BatchNorm2d (checked against the input rank).
  batch_norm(index_t features, int spatial_rank, options opt)
      : spatial_rank_(spatial_rank),
        opt_(opt),
        weight_("weight", {features}),
        bias_("bias", {features}),
        running_mean_("running_mean", {features}, false),
        running_var_("running_var", {features}, false) {
    if (features <= 0 || !(opt.eps > 0) || !(opt.momentum >= 0 && opt.momentum <= 1)) {
      slimnet::detail::raise<config_error>("slimnet::nn::batch_norm", "invalid options: features={} eps={} momentum={}", features,
                                  opt.eps, opt.momentum);
    }
    rng gen(0);
    reset_parameters(gen);
  }

  std::string kind() const override { return spatial_rank_ == 2 ? "BatchNorm2d" : "BatchNorm1d"; }
  std::string describe() const override {
    return fmt::format("{}({}, eps={}, momentum={})", kind(), features(), opt_.eps, opt_.momentum);
  }
  index_t features() const { return weight_.size(); }
  /// 2 for BatchNorm2d (N, C, H, W); 0 or 1 for BatchNorm1d.
  int spatial_rank() const { return spatial_rank_; }
  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>& bias() { return bias_; }
  parameter<Scalar>& running_mean() { return running_mean_; }
  parameter<Scalar>& running_var() { return running_var_; }
  const options& opts() const { return opt_; }

  shape_t output_shape(const shape_t& in) const override {
    const bool rank_ok = spatial_rank_ == 2 ? in.size() == 4 : (in.size() == 2 || in.size() == 3);
    if (!rank_ok || in[1] != features()) {
      slimnet::detail::raise<shape_error>("slimnet::nn::batch_norm::forward", "input of shape {} does not fit {}",
                                 shape_string(in), describe());
    }
    return in;
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), c = features(), l = x.size() / std::max<index_t>(n * c, 1);
    training_ = ctx.training;
    mean_.resize(c);
    inv_std_.resize(c);
    if (training_) {
      if (n * l < 2) {
        slimnet::detail::raise<shape_error>("slimnet::nn::batch_norm::forward",
                                   "training needs more than one value per channel, got input of shape {}",
                                   shape_string(x.shape()));
      }
      const double count = static_cast<double>(n * l);
      for (index_t ch = 0; ch < c; ++ch) {
        double sum = 0, sq = 0;
        for (index_t i = 0; i < n; ++i) {
          const Scalar* p = x.data() + (i * c + ch) * l;
          for (index_t j = 0; j < l; ++j) sum += p[j];
        }
        const double mean = sum / count;
        for (index_t i = 0; i < n; ++i) {
          const Scalar* p = x.data() + (i * c + ch) * l;
          for (index_t j = 0; j < l; ++j) sq += (p[j] - mean) * (p[j] - mean);
        }
        const double var = sq / count;
        mean_[ch] = static_cast<Scalar>(mean);
        inv_std_[ch] = static_cast<Scalar>(1.0 / std::sqrt(var + opt_.eps));
        const double m = opt_.momentum;
        running_mean_.value()[ch] = static_cast<Scalar>((1 - m) * running_mean_.value()[ch] + m * mean);
        running_var_.value()[ch] =
            static_cast<Scalar>((1 - m) * running_var_.value()[ch] + m * sq / (count - 1.0));
      }
    } else {
      for (index_t ch = 0; ch < c; ++ch) {
        mean_[ch] = running_mean_.value()[ch];
        inv_std_[ch] = static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(running_var_.value()[ch]) + opt_.eps));
      }
    }
    const auto& gamma = weight_.forward_value(ctx);
    const auto& beta = bias_.forward_value(ctx);
    x_hat_.resize(x.shape());
    for (index_t i = 0; i < n; ++i) {
      for (index_t ch = 0; ch < c; ++ch) {
        const index_t off = (i * c + ch) * l;
        const Scalar g = opt_.affine ? gamma[ch] : Scalar(1), b = opt_.affine ? beta[ch] : Scalar(0);
        for (index_t j = 0; j < l; ++j) {
          const Scalar xh = (x.data()[off + j] - mean_[ch]) * inv_std_[ch];
          x_hat_.data()[off + j] = xh;
          y.data()[off + j] = g * xh + b;
        }
      }
    }
  }

  // Training mode, per channel over its M = N*L values:
  //   dgamma = sum dy*xh,  dbeta = sum dy,
  //   dx = gamma * inv_std / M * (M dy - sum dy - xh * sum dy*xh).
  // Evaluation mode: dx = gamma * inv_std * dy.
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const index_t n = x.dim(0), c = features(), l = x.size() / std::max<index_t>(n * c, 1);
    const double count = static_cast<double>(n * l);
    if (dx != nullptr) dx->resize(x.shape());
    const auto& gamma = weight_.used_value();
    for (index_t ch = 0; ch < c; ++ch) {
      double sum_dy = 0, sum_dy_xh = 0;
      for (index_t i = 0; i < n; ++i) {
        const index_t off = (i * c + ch) * l;
        for (index_t j = 0; j < l; ++j) {
          sum_dy += dy.data()[off + j];
          sum_dy_xh += dy.data()[off + j] * x_hat_.data()[off + j];
        }
      }
      if (opt_.affine) {
        weight_.grad()[ch] += static_cast<Scalar>(sum_dy_xh);
        bias_.grad()[ch] += static_cast<Scalar>(sum_dy);
      }
      if (dx == nullptr) continue;
      const double g = opt_.affine ? static_cast<double>(gamma[ch]) : 1.0;
      const double scale = g * inv_std_[ch];
      for (index_t i = 0; i < n; ++i) {
        const index_t off = (i * c + ch) * l;
        for (index_t j = 0; j < l; ++j) {
          const double d = dy.data()[off + j];
          dx->data()[off + j] = static_cast<Scalar>(
              training_ ? scale * (d - sum_dy / count - x_hat_.data()[off + j] * sum_dy_xh / count) : scale * d);
        }
      }
    }
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    if (opt_.affine) {
      visit(weight_);
      visit(bias_);
    }
    visit(running_mean_);
    visit(running_var_);
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    if (opt_.affine) {
      visit(weight_);
      visit(bias_);
    }
    visit(running_mean_);
    visit(running_var_);
  }

  void reset_parameters(rng&) override {
    weight_.value().fill(Scalar(1));
    bias_.value().set_zero();
    running_mean_.value().set_zero();
    running_var_.value().fill(Scalar(1));
  }

 private:
  int spatial_rank_;
  options opt_;
  parameter<Scalar> weight_, bias_, running_mean_, running_var_;
  bool training_ = false;
  column_vector<Scalar> mean_, inv_std_;
  tensor<Scalar> x_hat_;
};

template <class Scalar>
batch_norm<Scalar> batch_norm1d(index_t features, typename batch_norm<Scalar>::options opt = {}) {
  return batch_norm<Scalar>(features, 1, opt);
}
template <class Scalar>
batch_norm<Scalar> batch_norm2d(index_t features, typename batch_norm<Scalar>::options opt = {}) {
  return batch_norm<Scalar>(features, 2, opt);
}

}  // namespace slimnet::nn
