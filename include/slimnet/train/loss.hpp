// Losses: softmax cross-entropy (log-sum-exp stabilised), mean squared error, and knowledge
// distillation from a fixed teacher network.
// Each returns the mean loss over the batch and writes dL/d(output) for that mean.
#pragma once

#include <cmath>
#include <memory>
#include <string>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::train {

template <class Scalar>
class loss_function {
 public:
  virtual ~loss_function() = default;
  virtual std::string name() const = 0;
  /// Mean loss of `output` against the batch's targets; `grad` receives dL/d(output).
  virtual double compute(const tensor<Scalar>& output, const data::batch<Scalar>& b, tensor<Scalar>& grad) const = 0;
};

/// L = -1/N sum_i log softmax(z_i)[y_i];  dL/dz_i = (softmax(z_i) - onehot(y_i)) / N.
template <class Scalar>
class cross_entropy : public loss_function<Scalar> {
 public:
  std::string name() const override { return "cross_entropy"; }

  double compute(const tensor<Scalar>& output, const data::batch<Scalar>& b, tensor<Scalar>& grad) const override {
    constexpr const char* fn = "slimnet::train::cross_entropy";
    if (output.rank() != 2) slimnet::detail::raise<shape_error>(fn, "logits of shape {} are not (N, classes)", shape_string(output.shape()));
    const index_t n = output.dim(0), classes = output.dim(1);
    if (static_cast<index_t>(b.labels.size()) != n) slimnet::detail::raise<shape_error>(fn, "{} labels for {} logit rows", b.labels.size(), n);
    grad.resize(output.shape());
    const auto z = output.matrix();
    auto g = grad.matrix();
    double total = 0;
    const Scalar inv_n = Scalar(1) / static_cast<Scalar>(n);
    for (index_t i = 0; i < n; ++i) {
      const index_t y = b.labels[static_cast<std::size_t>(i)];
      if (y < 0 || y >= classes) slimnet::detail::raise<config_error>(fn, "label {} of row {} is outside [0, {})", y, i, classes);
      const Scalar m = z.row(i).maxCoeff();
      g.row(i) = (z.row(i).array() - m).exp();
      const Scalar sum = g.row(i).sum();
      total += std::log(static_cast<double>(sum)) - static_cast<double>(z(i, y) - m);
      g.row(i) *= inv_n / sum;
      g(i, y) -= inv_n;
    }
    return total / static_cast<double>(n);
  }
};

/// L = 1/(N*K) sum (output - target)^2 over all N*K elements; the target is the batch's targets
/// tensor, or the one-hot encoding of its labels when it has none.
template <class Scalar>
class mse : public loss_function<Scalar> {
 public:
  std::string name() const override { return "mse"; }

  double compute(const tensor<Scalar>& output, const data::batch<Scalar>& b, tensor<Scalar>& grad) const override {
    constexpr const char* fn = "slimnet::train::mse";
    grad.resize(output.shape());
    if (!b.targets.empty()) {
      if (!b.targets.same_shape(output)) {
        slimnet::detail::raise<shape_error>(fn, "targets of shape {} for output of shape {}", shape_string(b.targets.shape()),
                                   shape_string(output.shape()));
      }
      grad.flat() = output.flat() - b.targets.flat();
    } else {
      if (output.rank() != 2 || static_cast<index_t>(b.labels.size()) != output.dim(0)) {
        slimnet::detail::raise<shape_error>(fn, "output of shape {} with {} labels: expected (N, classes) and N labels",
                                   shape_string(output.shape()), b.labels.size());
      }
      grad.flat() = output.flat();
      for (index_t i = 0; i < output.dim(0); ++i) {
        const index_t y = b.labels[static_cast<std::size_t>(i)];
        if (y < 0 || y >= output.dim(1)) slimnet::detail::raise<config_error>(fn, "label {} of row {} is outside [0, {})", y, i, output.dim(1));
        grad.matrix()(i, y) -= Scalar(1);
      }
    }
    const double loss = static_cast<double>(grad.flat().squaredNorm()) / static_cast<double>(output.size());
    grad.flat() *= Scalar(2) / static_cast<Scalar>(output.size());
    return loss;
  }
};

/// Knowledge distillation (Hinton, Vinyals & Dean 2015): the logits z are trained against the
/// labels and against a fixed teacher's logits t on the same inputs, at temperature T:
///   L     = (1 - alpha) CE(z, y) + alpha T^2 KL(softmax(t/T) || softmax(z/T))
///   dL/dz = (1 - alpha) dCE/dz   + alpha T (softmax(z/T) - softmax(t/T)) / N
/// (T^2 keeps the soft term's gradient on the hard term's scale). Retraining a pruned network
/// against its own dense original keeps it closer to the function the original computed. The
/// teacher runs in evaluation mode and is never updated; the caller keeps it alive.
template <class Scalar>
class distillation : public loss_function<Scalar> {
 public:
  distillation(nn::layer<Scalar>& teacher, double alpha, double temperature) : teacher_(&teacher), alpha_(alpha), t_(temperature) {
    constexpr const char* fn = "slimnet::train::distillation";
    if (!(alpha >= 0 && alpha <= 1)) slimnet::detail::raise<config_error>(fn, "alpha {} is outside [0, 1]", alpha);
    if (!(temperature > 0) || !std::isfinite(temperature)) {
      slimnet::detail::raise<config_error>(fn, "temperature {} is not a positive number", temperature);
    }
  }
  std::string name() const override { return "distillation"; }

  double compute(const tensor<Scalar>& output, const data::batch<Scalar>& b, tensor<Scalar>& grad) const override {
    constexpr const char* fn = "slimnet::train::distillation";
    const double hard = cross_entropy<Scalar>().compute(output, b, grad);  // checks shapes and labels
    if (alpha_ == 0) return hard;
    nn::forward_context eval;  // training = false: no dropout, BatchNorm's running statistics
    teacher_->forward(b.inputs, teacher_logits_, eval);
    if (!teacher_logits_.same_shape(output)) {
      slimnet::detail::raise<shape_error>(fn, "the teacher's logits have shape {}, the student's {}", shape_string(teacher_logits_.shape()),
                                          shape_string(output.shape()));
    }
    const index_t n = output.dim(0);
    const auto z = output.matrix();
    const auto t = teacher_logits_.matrix();
    auto g = grad.matrix();
    g *= static_cast<Scalar>(1 - alpha_);
    double soft = 0;
    Eigen::Matrix<double, 1, Eigen::Dynamic> ps, pt;
    for (index_t i = 0; i < n; ++i) {
      // log-softmax at temperature T, shifted by the row maximum for stability
      const auto log_softmax = [&](const auto& row) {
        Eigen::Matrix<double, 1, Eigen::Dynamic> r = row.template cast<double>() / t_;
        r.array() -= r.maxCoeff();
        r.array() -= std::log(r.array().exp().sum());
        return r;
      };
      const auto log_ps = log_softmax(z.row(i));
      const auto log_pt = log_softmax(t.row(i));
      ps = log_ps.array().exp();
      pt = log_pt.array().exp();
      soft += (pt.array() * (log_pt - log_ps).array()).sum();
      g.row(i) += (alpha_ * t_ / static_cast<double>(n) * (ps - pt)).template cast<Scalar>();
    }
    return (1 - alpha_) * hard + alpha_ * t_ * t_ * soft / static_cast<double>(n);
  }

 private:
  nn::layer<Scalar>* teacher_;
  double alpha_, t_;
  mutable tensor<Scalar> teacher_logits_;
};

}  // namespace slimnet::train
