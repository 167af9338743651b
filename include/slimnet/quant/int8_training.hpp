// Quantization-aware training for int8 weights with one scale per output row (the format of
// nn::compressed::to_int8 and of the int8 GEMM), as a weight transform:
//   s_r = max_c |W[r, c]| / 127   (over the surviving weights of row r; 1 for a row of zeros)
//   W_eff[r, c] = s_r * clamp(round(W[r, c] / s_r), -127, 127)
// with the straight-through gradient dL/dW = dL/dW_eff. The grid is symmetric, so 0 is a code and
// a pruned weight stays exactly 0 (nn/parameter.hpp: how transforms compose); the scale is
// re-derived from W at every forward pass, as a min-max observer does, so the real-valued W
// receives the updates and the rounding follows it.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/parameter.hpp"
#include "slimnet/quant/support.hpp"

namespace slimnet::quant {

/// W_eff = per-row symmetric int8 rounding of W (see the header comment).
template <class Scalar>
class int8_transform : public nn::parameter_transform<Scalar> {
 public:
  std::string name() const override { return "int8(per-row scales)"; }
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<int8_transform>(*this);
  }

  void forward(const tensor<Scalar>& w, tensor<Scalar>& w_eff, bool, rng&) override {
    if (w.rank() < 1 || w.size() == 0) {
      slimnet::detail::raise<shape_error>("slimnet::quant::int8_transform::forward",
                                          "cannot quantize a weight of shape {}",
                                          shape_string(w.shape()));
    }
    const index_t rows = w.shape()[0], cols = w.size() / rows;
    scales_.assign(static_cast<std::size_t>(rows), 1.0);
    w_eff.flat() = w.flat();
    detail::zero_pruned(w_eff, support_);
    for (index_t r = 0; r < rows; ++r) {
      Scalar* row = w_eff.data() + r * cols;
      double largest = 0;
      for (index_t c = 0; c < cols; ++c) largest = std::max(largest, std::abs(double(row[c])));
      const double s = largest > 0 ? largest / 127.0 : 1.0;
      scales_[static_cast<std::size_t>(r)] = s;
      for (index_t c = 0; c < cols; ++c) {
        const double code = std::clamp(std::nearbyint(double(row[c]) / s), -127.0, 127.0);
        row[c] = static_cast<Scalar>(code * s);
      }
    }
  }

  void backward(const tensor<Scalar>&, tensor<Scalar>& grad) override {
    detail::zero_pruned(grad, support_);
  }

  /// State: the support only (the scales are recomputed by every forward pass).
  void save_state(nn::state_writer<Scalar>& out) const override { out.put_optional_tensor("support", support_); }
  void load_state(const nn::state_reader<Scalar>& in) override { in.read_optional_tensor("support", support_); }

  /// Per-row steps s_r of the last forward pass.
  const std::vector<double>& scales() const { return scales_; }
  /// The surviving entries (0/1 shaped like W; nullopt: all), normally the parameter's support().
  void set_support(std::optional<tensor<Scalar>> support) { support_ = std::move(support); }

 private:
  std::vector<double> scales_;
  std::optional<tensor<Scalar>> support_;
};

/// Attaches an int8_transform to `p`, keeping p's pruned entries at 0 if it is pruned.
template <class Scalar>
std::shared_ptr<int8_transform<Scalar>> attach_int8(nn::parameter<Scalar>& p) {
  auto t = std::make_shared<int8_transform<Scalar>>();
  t->set_support(p.support());
  p.add_transform(t);
  return t;
}

}  // namespace slimnet::quant
