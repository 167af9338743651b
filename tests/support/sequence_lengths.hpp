// Test helper for layers on (N, T, F) sequences: a wrapper that runs its child with fixed
// per-sequence lengths in the forward context, so the generic gradient checker (which passes
// no lengths) exercises padded batches too.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "slimnet/nn/layer.hpp"

namespace slimnet::testing {

template <class Scalar>
class with_lengths : public nn::layer<Scalar> {
 public:
  with_lengths(std::unique_ptr<nn::layer<Scalar>> inner, std::vector<std::int32_t> lengths)
      : inner_(std::move(inner)), lengths_(std::move(lengths)) {}
  template <class Layer>
  with_lengths(Layer inner, std::vector<std::int32_t> lengths)
      : with_lengths(std::unique_ptr<nn::layer<Scalar>>(std::make_unique<Layer>(std::move(inner))), std::move(lengths)) {}
  with_lengths(const with_lengths& other) : nn::layer<Scalar>(other), inner_(other.inner_->clone()), lengths_(other.lengths_) {}

  nn::layer<Scalar>& inner() { return *inner_; }
  std::string kind() const override { return "WithLengths"; }
  std::string describe() const override {
    std::string s = inner_->describe() + " with lengths [";
    for (std::size_t i = 0; i < lengths_.size(); ++i) s += (i ? ", " : "") + std::to_string(lengths_[i]);
    return s + "]";
  }
  shape_t output_shape(const shape_t& in) const override { return inner_->output_shape(in); }
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context& ctx) override {
    nn::forward_context c = ctx;
    c.lengths = &lengths_;
    inner_->forward(x, y, c);
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    inner_->backward(x, y, dy, dx);
  }
  void visit_parameters(const typename nn::layer<Scalar>::parameter_visitor& visit) override { inner_->visit_parameters(visit); }
  std::unique_ptr<nn::layer<Scalar>> clone() const override { return std::make_unique<with_lengths>(*this); }

 private:
  std::unique_ptr<nn::layer<Scalar>> inner_;
  std::vector<std::int32_t> lengths_;
};

}  // namespace slimnet::testing
