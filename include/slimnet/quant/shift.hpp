// Multiplication-free training pieces of BNN (Hubara et al. 2016, Algorithms 3 and 4): shift-based
// batch normalisation and shift-based AdaMax, where every multiplication by a data-dependent
// factor becomes a multiplication by its power-of-two approximation, i.e. a bit shift:
//   AP2(z) = sign(z) * 2^round(log2 |z|).
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/train/optimizer.hpp"

namespace slimnet::quant {

/// AP2(z) = sign(z) 2^round(log2 |z|); 0, infinities and NaN are returned unchanged.
/// For a normal IEEE value |z| = 1.f * 2^E, round(log2 |z|) = E + 1 if 1.f > sqrt(2), else E: the
/// result keeps the sign and exponent bits, clears the fraction and carries 1 into the exponent
/// when the fraction field is at least that of the smallest value above sqrt(2) (0x3504F4 for
/// float, 0x6A09E667F3BCD for double; sqrt(2) itself is irrational, so there are no ties).
/// Subnormals go through frexp.
template <class Scalar>
Scalar ap2(Scalar z) {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "slimnet::quant::ap2 is defined for float and double.");
  using bits_t = std::conditional_t<std::is_same_v<Scalar, float>, std::uint32_t, std::uint64_t>;
  constexpr int fraction_bits = std::numeric_limits<Scalar>::digits - 1;
  constexpr bits_t fraction_mask = (bits_t{1} << fraction_bits) - 1;
  constexpr bits_t exponent_all = (bits_t{1} << (sizeof(Scalar) * 8 - 1 - fraction_bits)) - 1;
  constexpr bits_t above_sqrt2 =
      std::is_same_v<Scalar, float> ? bits_t(0x3504F4) : bits_t(0x6A09E667F3BCDULL);
  bits_t b;
  std::memcpy(&b, &z, sizeof b);
  const bits_t exponent = (b >> fraction_bits) & exponent_all;
  if (exponent == 0 || exponent == exponent_all) {
    if (z == Scalar(0) || !std::isfinite(z)) return z;
    int e = 0;  // subnormal: |z| = m 2^e with m in [1/2, 1); round(log2 m) = 0 iff m > 1/sqrt(2)
    const double m = std::frexp(static_cast<double>(std::abs(z)), &e);
    const Scalar p = std::ldexp(Scalar(1), m > M_SQRT1_2 ? e : e - 1);
    return z < 0 ? -p : p;
  }
  const bool up = (b & fraction_mask) >= above_sqrt2;
  b &= ~fraction_mask;
  if (up) b += bits_t{1} << fraction_bits;  // may reach the infinity pattern: 2^(max exponent + 1)
  Scalar out;
  std::memcpy(&out, &b, sizeof out);
  return out;
}

/// Shift-based batch normalisation (Hubara et al., Algorithm 3), per channel over its M values:
///   C = x - mean(x),  v = mean(C * AP2(C)),  x_hat = C * AP2(1 / sqrt(v + eps)),
///   y = AP2(gamma) * x_hat + beta.
/// Evaluation uses the running mean and running v (updated with `momentum`, PyTorch style).
/// Gradients: the AP2 factors are piecewise constant, so almost everywhere
///   dx = AP2(gamma) * s * (dy - mean(dy))  (training; s = AP2(1/sqrt(v + eps))),
///   dx = AP2(gamma) * s * dy               (evaluation),
///   dbeta = sum dy,  and dgamma = sum dy * x_hat by the straight-through rule through AP2(gamma).
/// Input (N, C), (N, C, L) or (N, C, H, W) as nn::batch_norm.
template <class Scalar>
class shift_batch_norm : public nn::cloneable<shift_batch_norm<Scalar>, Scalar> {
 public:
  struct options {
    double eps = 1e-4;
    double momentum = 0.1;
    bool affine = true;
  };

  explicit shift_batch_norm(index_t features) : shift_batch_norm(features, options{}) {}
  shift_batch_norm(index_t features, options opt)
      : opt_(opt),
        weight_("weight", {features}),
        bias_("bias", {features}),
        running_mean_("running_mean", {features}, false),
        running_var_("running_var", {features}, false) {
    if (features <= 0 || !(opt.eps > 0) || !(opt.momentum >= 0 && opt.momentum <= 1)) {
      slimnet::detail::raise<config_error>("slimnet::quant::shift_batch_norm",
                                           "invalid options: features={} eps={} momentum={}",
                                           features, opt.eps, opt.momentum);
    }
    rng gen(0);
    reset_parameters(gen);
  }

  std::string kind() const override { return "ShiftBatchNorm"; }
  std::string describe() const override {
    return fmt::format("ShiftBatchNorm({}, eps={}, momentum={}{})", features(), opt_.eps,
                       opt_.momentum, opt_.affine ? "" : ", affine=false");
  }
  index_t features() const { return weight_.size(); }
  /// The hyper-parameters it was built with (what a model file records).
  const options& settings() const { return opt_; }
  nn::parameter<Scalar>& weight() { return weight_; }
  nn::parameter<Scalar>& bias() { return bias_; }
  nn::parameter<Scalar>& running_mean() { return running_mean_; }
  nn::parameter<Scalar>& running_var() { return running_var_; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() < 2 || in.size() > 4 || in[1] != features()) {
      slimnet::detail::raise<shape_error>("slimnet::quant::shift_batch_norm::forward",
                                          "input of shape {} does not fit {}", shape_string(in),
                                          describe());
    }
    return in;
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y,
               const nn::forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), c = features(), l = x.size() / std::max<index_t>(n * c, 1);
    training_ = ctx.training;
    mean_.resize(c);
    scale_.resize(c);
    if (training_ && n * l < 2) {
      slimnet::detail::raise<shape_error>(
          "slimnet::quant::shift_batch_norm::forward",
          "training needs more than one value per channel, got input of shape {}",
          shape_string(x.shape()));
    }
    for (index_t ch = 0; ch < c; ++ch) {
      double mean = 0, var = 0;
      if (training_) {
        const double count = static_cast<double>(n * l);
        for (index_t i = 0; i < n; ++i)
          for (index_t j = 0; j < l; ++j) mean += x.data()[(i * c + ch) * l + j];
        mean /= count;
        for (index_t i = 0; i < n; ++i) {
          for (index_t j = 0; j < l; ++j) {
            const double centred = x.data()[(i * c + ch) * l + j] - mean;
            var += centred * ap2(centred);  // |C| * 2^round(log2 |C|): a shift instead of C * C
          }
        }
        var /= count;
        const double m = opt_.momentum;
        running_mean_.value()[ch] =
            static_cast<Scalar>((1 - m) * running_mean_.value()[ch] + m * mean);
        running_var_.value()[ch] =
            static_cast<Scalar>((1 - m) * running_var_.value()[ch] + m * var);
      } else {
        mean = running_mean_.value()[ch];
        var = running_var_.value()[ch];
      }
      mean_[ch] = static_cast<Scalar>(mean);
      scale_[ch] = static_cast<Scalar>(ap2(1.0 / std::sqrt(var + opt_.eps)));
    }
    const auto& gamma = weight_.forward_value(ctx);
    const auto& beta = bias_.forward_value(ctx);
    x_hat_.resize(x.shape());
    for (index_t i = 0; i < n; ++i) {
      for (index_t ch = 0; ch < c; ++ch) {
        const index_t off = (i * c + ch) * l;
        const Scalar g = opt_.affine ? ap2(gamma[ch]) : Scalar(1),
                     b = opt_.affine ? beta[ch] : Scalar(0);
        for (index_t j = 0; j < l; ++j) {
          const Scalar xh = (x.data()[off + j] - mean_[ch]) * scale_[ch];
          x_hat_.data()[off + j] = xh;
          y.data()[off + j] = g * xh + b;
        }
      }
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>&, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    const index_t n = x.dim(0), c = features(), l = x.size() / std::max<index_t>(n * c, 1);
    const double count = static_cast<double>(n * l);
    if (dx != nullptr) dx->resize(x.shape());
    const auto& gamma = weight_.used_value();
    for (index_t ch = 0; ch < c; ++ch) {
      double sum_dy = 0, sum_dy_xh = 0;
      for (index_t i = 0; i < n; ++i) {
        for (index_t j = 0; j < l; ++j) {
          const index_t k = (i * c + ch) * l + j;
          sum_dy += dy.data()[k];
          sum_dy_xh += dy.data()[k] * x_hat_.data()[k];
        }
      }
      if (opt_.affine) {
        weight_.grad()[ch] += static_cast<Scalar>(sum_dy_xh);
        bias_.grad()[ch] += static_cast<Scalar>(sum_dy);
      }
      if (dx == nullptr) continue;
      const double factor = (opt_.affine ? static_cast<double>(ap2(gamma[ch])) : 1.0) * scale_[ch];
      const double shift = training_ ? sum_dy / count : 0.0;
      for (index_t i = 0; i < n; ++i) {
        for (index_t j = 0; j < l; ++j) {
          const index_t k = (i * c + ch) * l + j;
          dx->data()[k] = static_cast<Scalar>(factor * (dy.data()[k] - shift));
        }
      }
    }
  }

  void visit_parameters(const typename nn::layer<Scalar>::parameter_visitor& visit) override {
    if (opt_.affine) {
      visit(weight_);
      visit(bias_);
    }
    visit(running_mean_);
    visit(running_var_);
  }
  void visit_parameters(const typename nn::layer<Scalar>::const_parameter_visitor& visit) const override {
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
  options opt_;
  nn::parameter<Scalar> weight_, bias_, running_mean_, running_var_;
  bool training_ = false;
  column_vector<Scalar> mean_, scale_;
  tensor<Scalar> x_hat_;
};

/// Shift-based AdaMax (Hubara et al., Algorithm 4):
///   m = b1 m + (1 - b1) g,   v = max(b2 v, |g|),
///   w -= AP2(lr / (1 - b1^t)) * m * AP2(1 / (v + eps)),
/// i.e. AdaMax with the bias-corrected rate and the division by v replaced by shifts.
template <class Scalar>
class shift_adamax : public train::optimizer<Scalar> {
 public:
  /// AdaMax's options (named setters: train::adamax_options{}.with_lr(...)); eps must be > 0 here.
  using options = train::adamax_options;
  explicit shift_adamax(options opt) : train::optimizer<Scalar>(opt.lr), opt_(opt) {
    if (!(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1 && opt.eps > 0 &&
          opt.weight_decay >= 0)) {
      slimnet::detail::raise<config_error>(
          "slimnet::quant::shift_adamax",
          "invalid options: beta1={} beta2={} eps={} weight_decay={}", opt.beta1, opt.beta2,
          opt.eps, opt.weight_decay);
    }
  }
  std::string name() const override { return "ShiftAdaMax"; }

 protected:
  void update(nn::parameter<Scalar>& p) override {
    auto& s = this->state_of(p, true);
    const auto t = static_cast<double>(++s.steps);
    auto w = p.value().flat();
    const auto b1 = static_cast<Scalar>(opt_.beta1), b2 = static_cast<Scalar>(opt_.beta2);
    const auto g = (p.grad().flat() + static_cast<Scalar>(opt_.weight_decay) * w).eval();
    s.a = b1 * s.a + (Scalar(1) - b1) * g;
    s.b = (b2 * s.b).cwiseMax(g.cwiseAbs());
    const auto rate = static_cast<Scalar>(ap2(this->lr_ / (1.0 - std::pow(opt_.beta1, t))));
    const auto eps = static_cast<Scalar>(opt_.eps);
    for (index_t i = 0; i < w.size(); ++i) w[i] -= rate * s.a[i] * ap2(Scalar(1) / (s.b[i] + eps));
  }

 private:
  options opt_;
};

}  // namespace slimnet::quant
