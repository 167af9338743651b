// Losses: softmax cross-entropy (log-sum-exp stabilised) and mean squared error.
// Each returns the mean loss over the batch and writes dL/d(output) for that mean.
#pragma once

#include <cmath>
#include <memory>
#include <string>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/data/dataset.hpp"

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

}  // namespace slimnet::train
