// Activation sparsity measured on sample inputs: the fraction of nonzero inputs each Linear of a
// float model sees, which compress_options::input_density hands to the batch-1 choice between
// SELL-16 (every weight per call) and CSC skipping zero inputs (work nnz x input density).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::nn::compressed {

/// Runs `model` (evaluation mode) on the samples `x` (N, ...) and returns, per Linear at the top
/// level of the Sequential (by local name), the fraction of its input entries that are not zero,
/// averaged over the N samples. Linears nested in inner Sequentials are not listed.
template <class Scalar>
std::map<std::string, double> input_densities(sequential<Scalar>& model, const tensor<Scalar>& x) {
  std::map<std::string, double> out;
  if (x.size() == 0) return out;
  tensor<Scalar> y;
  model.forward(x, y, forward_context{});
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (dynamic_cast<const linear<Scalar>*>(&model[i]) == nullptr) continue;
    const tensor<Scalar>& in = i == 0 ? x : model.activation(i - 1);
    index_t nonzero = 0;
    for (index_t k = 0; k < in.size(); ++k) nonzero += in[k] != Scalar(0);
    out[model.local_name(i)] = in.size() == 0 ? 0.0 : static_cast<double>(nonzero) / static_cast<double>(in.size());
  }
  return out;
}

/// Per Linear at the top level of the Sequential (by local name): for each input column, the
/// fraction of the N samples `x` in which it is not zero (a digit's border pixels: 0; units ReLU
/// keeps at zero: 0). compress_options::input_frequency hands them to the batch-1 choice, which
/// orders a layer's columns by them (kernels::reordered_columns).
template <class Scalar>
std::map<std::string, std::vector<double>> input_frequencies(sequential<Scalar>& model, const tensor<Scalar>& x) {
  std::map<std::string, std::vector<double>> out;
  if (x.size() == 0) return out;
  tensor<Scalar> y;
  model.forward(x, y, forward_context{});
  const index_t n = x.dim(0);
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (dynamic_cast<const linear<Scalar>*>(&model[i]) == nullptr) continue;
    const tensor<Scalar>& in = i == 0 ? x : model.activation(i - 1);
    const index_t cols = n == 0 ? 0 : in.size() / n;
    std::vector<double> f(static_cast<std::size_t>(cols), 0.0);
    for (index_t s = 0; s < n; ++s)
      for (index_t j = 0; j < cols; ++j) f[static_cast<std::size_t>(j)] += in[s * cols + j] != Scalar(0) ? 1.0 / static_cast<double>(n) : 0.0;
    out[model.local_name(i)] = std::move(f);
  }
  return out;
}

}  // namespace slimnet::nn::compressed
