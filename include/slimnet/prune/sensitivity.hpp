// Sensitivity analysis (Han et al. 2015, Fig. 6; Distiller's sensitivity_analysis): prune one
// parameter alone to each sparsity in a list, evaluate, restore it; the accuracy-vs-sparsity
// curve of each layer tells how far it can be pruned. report/sensitivity.hpp prints it.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/prune/mask.hpp"
#include "slimnet/prune/transform.hpp"
#include "slimnet/train/fit.hpp"
#include "slimnet/train/loss.hpp"

namespace slimnet::prune {

struct sensitivity_options {
  /// Sparsity levels, each in [0, 1]; default 0, 5%, ..., 95%.
  std::vector<double> sparsities = {0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45,
                                    0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95};
  /// Element-wise by |w| (false) or whole rows by L2 norm (true).
  bool structured = false;
  index_t batch_size = 256;

  void validate() const {
    constexpr const char* fn = "slimnet::prune::sensitivity_analysis";
    if (sparsities.empty()) slimnet::detail::raise<config_error>(fn, "no sparsity levels given");
    for (double s : sparsities) {
      if (!(s >= 0 && s <= 1))
        slimnet::detail::raise<config_error>(fn, "sparsity = {} is outside [0, 1]", s);
    }
    if (batch_size <= 0)
      slimnet::detail::raise<config_error>(fn, "batch_size = {} must be positive", batch_size);
  }
};

/// accuracy[i][j] and loss[i][j]: parameter i pruned alone to sparsities[j] (the rest untouched).
struct sensitivity_result {
  std::vector<std::string> parameters;
  std::vector<double> sparsities;
  std::vector<std::vector<double>> accuracy;
  std::vector<std::vector<double>> loss;
  bool structured = false;
};

/// For each parameter in `params`, alone: prune it by magnitude to each sparsity level (on top of
/// any mask it carries: its pruned entries count towards the level), evaluate on `data`, then
/// restore its exact values. The model is unchanged afterwards (weights compared bitwise in the
/// tests). Levels use amount::sparsity, so each point has the exact count of zeros (rounded
/// half up); with structured, whole rows are removed and the level counts rows.
template <class Scalar>
sensitivity_result sensitivity_analysis(nn::layer<Scalar>& model,
                                        const std::vector<nn::parameter<Scalar>*>& params,
                                        const data::dataset<Scalar>& data,
                                        const train::loss_function<Scalar>& loss,
                                        const sensitivity_options& options = {}) {
  constexpr const char* fn = "slimnet::prune::sensitivity_analysis";
  options.validate();
  if (data.size() == 0) slimnet::detail::raise<config_error>(fn, "the evaluation set is empty");
  if (params.empty()) slimnet::detail::raise<config_error>(fn, "no parameters to analyse");
  sensitivity_result r;
  r.sparsities = options.sparsities;
  r.structured = options.structured;
  for (auto* p : params) {
    if (p == nullptr) slimnet::detail::raise<config_error>(fn, "a parameter is null");
    const tensor<Scalar> saved = p->value();
    const tensor<Scalar> current = mask_of(*p);
    r.parameters.push_back(p->name());
    r.accuracy.emplace_back();
    r.loss.emplace_back();
    try {
      for (double s : options.sparsities) {
        const tensor<Scalar> m = options.structured
                                     ? row_mask(saved, amount::sparsity(s), norm::l2, current)
                                     : magnitude_mask(saved, amount::sparsity(s), current);
        p->value() = saved;
        apply_mask(p->value(), m);
        const auto metrics = train::evaluate(model, data, loss, options.batch_size);
        r.accuracy.back().push_back(metrics.accuracy);
        r.loss.back().push_back(metrics.loss);
      }
    } catch (...) {
      p->value() = saved;
      throw;
    }
    p->value() = saved;
  }
  return r;
}

}  // namespace slimnet::prune
