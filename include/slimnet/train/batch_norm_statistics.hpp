// Re-estimation of BatchNorm running statistics for a network whose activations changed after the
// statistics were gathered: DeepIoT's hard mask (Yao et al. 2017, Eq. 11) after training under
// random Bernoulli masks, a BinaryConnect network evaluated with sign(W) after training with
// stochastic weights (Courbariaux et al. 2015), a pruned or quantised network before evaluation.
// A BatchNorm layer evaluates with its running mean and variance; when its input distribution at
// test time differs from the one they were averaged over, the normalised activations are shifted
// and scaled wrongly, which a thinned VGG can turn into chance accuracy. Forward passes in training
// mode over training batches with the test-time network give the statistics it will see.
#pragma once

#include <cstdint>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::train {

/// Re-estimates the running mean and variance of every BatchNorm layer of `model` (found through
/// visit_layers, so also inside nested containers) as the exact average over `batches` batches of
/// `batch_size` shuffled training examples (fewer if `data` is smaller; full batches only), the
/// cumulative average PyTorch uses with momentum=None: running_mean = 1/N sum_b mean_b and
/// running_var = 1/N sum_b var_b, var_b the unbiased variance of batch b. The passes run in
/// training mode (the model's other training-mode behaviour, e.g. dropout, applies too: re-estimate
/// a model without it, or accept its noise), and no trainable parameter changes. Returns the number
/// of BatchNorm layers; a model without any is left untouched and `gen` unused. Only nn::batch_norm
/// layers are re-estimated (quant::shift_batch_norm is not found by this function).
///
/// Each layer updates running = (1 - m) running + m batch in a training pass; starting every pass
/// from running = 0 gives the batch statistic as running / m (layers need momentum m > 0).
/// Throws config_error naming the function for batches < 1, batch_size < 2, an empty `data` or a
/// BatchNorm with momentum 0; a forward pass that throws leaves the running statistics as before.
template <class Scalar>
index_t recalibrate_batch_norm(nn::layer<Scalar>& model, const data::dataset<Scalar>& data, index_t batches, index_t batch_size,
                               rng& gen) {
  constexpr const char* fn = "slimnet::train::recalibrate_batch_norm";
  if (batches < 1) slimnet::detail::raise<config_error>(fn, "batches = {} must be at least 1", batches);
  if (batch_size < 2) slimnet::detail::raise<config_error>(fn, "batch_size = {} must be at least 2 (a batch variance)", batch_size);
  data.validate(fn);
  if (data.size() < 2) slimnet::detail::raise<config_error>(fn, "{} examples: at least 2 are needed for a batch variance", data.size());
  std::vector<nn::batch_norm<Scalar>*> norms;
  model.visit_layers([&](nn::layer<Scalar>& l) {
    if (auto* bn = dynamic_cast<nn::batch_norm<Scalar>*>(&l)) norms.push_back(bn);
  });
  for (auto* bn : norms) {
    if (!(bn->opts().momentum > 0)) {
      slimnet::detail::raise<config_error>(fn, "{} '{}' has momentum 0: its running statistics do not follow the batches", bn->describe(),
                                           bn->name());
    }
  }
  if (norms.empty()) return 0;

  std::vector<tensor<Scalar>> saved_mean, saved_var;
  std::vector<std::vector<double>> sum_mean, sum_var;
  for (auto* bn : norms) {
    saved_mean.push_back(bn->running_mean().value());
    saved_var.push_back(bn->running_var().value());
    sum_mean.emplace_back(static_cast<std::size_t>(bn->features()), 0.0);
    sum_var.emplace_back(static_cast<std::size_t>(bn->features()), 0.0);
  }
  try {
    data::batcher<Scalar> batcher(data, std::min(batch_size, data.size()), true, gen, true);
    data::batch<Scalar> b;
    tensor<Scalar> out;
    nn::forward_context ctx{true, &gen};
    for (index_t i = 0; i < batches; ++i) {
      if (!batcher.next(b)) {
        batcher.reset();
        batcher.next(b);
      }
      for (auto* bn : norms) {
        bn->running_mean().value().set_zero();
        bn->running_var().value().set_zero();
      }
      ctx.lengths = b.lengths.empty() ? nullptr : &b.lengths;  // padded sequences
      model.forward(b.inputs, out, ctx);
      for (std::size_t k = 0; k < norms.size(); ++k) {
        const double m = norms[k]->opts().momentum;
        for (std::size_t c = 0; c < sum_mean[k].size(); ++c) {
          sum_mean[k][c] += static_cast<double>(norms[k]->running_mean().value()[static_cast<index_t>(c)]) / m;
          sum_var[k][c] += static_cast<double>(norms[k]->running_var().value()[static_cast<index_t>(c)]) / m;
        }
      }
    }
  } catch (...) {
    for (std::size_t k = 0; k < norms.size(); ++k) {
      norms[k]->running_mean().value() = saved_mean[k];
      norms[k]->running_var().value() = saved_var[k];
    }
    throw;
  }
  for (std::size_t k = 0; k < norms.size(); ++k) {
    for (std::size_t c = 0; c < sum_mean[k].size(); ++c) {
      norms[k]->running_mean().value()[static_cast<index_t>(c)] = static_cast<Scalar>(sum_mean[k][c] / static_cast<double>(batches));
      norms[k]->running_var().value()[static_cast<index_t>(c)] = static_cast<Scalar>(sum_var[k][c] / static_cast<double>(batches));
    }
  }
  return static_cast<index_t>(norms.size());
}

}  // namespace slimnet::train
