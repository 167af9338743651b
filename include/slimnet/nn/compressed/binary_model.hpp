// A trained BNN (Hubara et al. 2016: binarized weights, sign activations, BatchNorm) in its fastest
// inference form, computing bitwise what the float network computes (weight scales powers of two):
//   - every Linear / Conv2d between the first and the last on the XNOR engine
//     (compress(model, format::xnor)), the max-pool after a convolution fused into it;
//   - the first layer, which sees the real-valued input, float: a convolution in its compressed
//     dense form (compress(format::sparse) keeps a dense layer dense) so that its max-pool is fused
//     too, a Linear as it is;
//   - the last layer (the class scores) float;
//   - each BatchNorm + sign pair one comparison per channel (sign_threshold.hpp);
//   - a first convolution over one input channel (stride 1, no padding) together with its max-pool
//     and the BatchNorm + sign after it: one direct pass writing +-1 (conv1_sign.hpp), no im2col.
//
//   auto report = nn::compressed::compress_bnn(model);   // model: a Sequential, in place
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "slimnet/nn/compressed/conv1_sign.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/compressed/sign_threshold.hpp"

namespace slimnet::nn::compressed {

struct bnn_options {
  bool dense_first = true;  ///< the first convolution in its compressed dense form, max-pool fused
  bool fold = true;         ///< BatchNorm + sign pairs into per-channel thresholds
  /// With dense_first and fold: a one-channel first convolution, its max-pool and threshold as one
  /// direct pass (conv1_sign_layer).
  bool direct_first = true;
  xnor_options xnor;
};

/// Converts the trained BNN `model` (a Sequential whose direct children hold its Linear / Conv2d
/// layers) as above; returns one line per converted, kept, fused or folded layer. config_error when
/// it has fewer than two Linear / Conv2d layers, or (xnor.require_exact) when a middle layer's
/// weights are not +-alpha per output.
template <class Scalar>
std::vector<std::string> compress_bnn(sequential<Scalar>& model, const bnn_options& o = {}) {
  std::vector<std::string> layers;
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (dynamic_cast<linear<Scalar>*>(&model[i]) || dynamic_cast<conv2d<Scalar>*>(&model[i])) layers.push_back(model.local_name(i));
  }
  if (layers.size() < 2) {
    slimnet::detail::raise<config_error>("slimnet::nn::compressed::compress_bnn",
                                         "{} Linear / Conv2d layers among the model's direct children: a BNN needs a first and a last", layers.size());
  }
  const std::string first = layers.front(), last = layers.back();
  // The first convolution's bias (empty when it has none) for the direct first pass below.
  std::optional<std::vector<Scalar>> first_bias;
  if (auto* conv = dynamic_cast<conv2d<Scalar>*>(&model.find(first))) {
    first_bias.emplace();
    if (const auto b = effective_bias(conv->bias())) first_bias->assign(b->data(), b->data() + b->size());
  }
  std::vector<std::string> report;
  if (o.dense_first && dynamic_cast<conv2d<Scalar>*>(&model.find(first))) {
    compress_options dense;
    dense.keep.assign(layers.begin() + 1, layers.end());
    for (auto& line : compress(model, format::sparse, dense))
      if (line.size() < 6 || line.compare(line.size() - 6, 6, ": kept") != 0) report.push_back(std::move(line));  // the others: below
  }
  compress_options binary;
  binary.keep = {first, last};
  binary.xnor = o.xnor;
  for (auto& line : compress(model, format::xnor, binary))
    if (line != first + ": kept" || report.empty()) report.push_back(std::move(line));
  if (o.fold)
    for (auto& line : fold_batch_norm_sign(model)) report.push_back(std::move(line));
  if (o.direct_first && o.dense_first && o.fold) {
    for (std::size_t i = 0; i + 1 < model.size(); ++i) {
      if (model.local_name(i) != first) continue;
      auto* cc = dynamic_cast<compressed_conv2d<Scalar>*>(&model[i]);
      auto* th = dynamic_cast<sign_threshold<Scalar>*>(&model[i + 1]);
      if (cc == nullptr || th == nullptr || !first_bias) break;
      const window2d& win = cc->window();
      const auto& e = cc->epilogue();
      const bool pooled_evenly = !e.pooled() || e.pool_kernel == e.pool_stride;
      if (cc->in_channels() != 1 || win.stride_h != 1 || win.stride_w != 1 || win.pad_h != 0 || win.pad_w != 0 || e.relu || !pooled_evenly) break;
      auto direct = std::make_unique<conv1_sign_layer<Scalar>>(cc->weights().effective_weights(), *first_bias, win.kernel_h, win.kernel_w,
                                                               e.pooled() ? e.pool_kernel : 1, *th);
      report.push_back(first + " + " + model.local_name(i + 1) + ": " + direct->describe());
      sequential<Scalar> rebuilt;
      rebuilt.set_name(model.name());
      for (std::size_t k = 0; k < model.size(); ++k) {
        if (k == i) {
          rebuilt.add_ptr(model.local_name(k), std::move(direct));
        } else if (k != i + 1) {
          rebuilt.add_ptr(model.local_name(k), model[k].clone());
        }
      }
      model = std::move(rebuilt);
      break;
    }
  }
  return report;
}

}  // namespace slimnet::nn::compressed
