// PyTorch-shaped pruning API (torch.nn.utils.prune): method objects with
// compute_mask(t, default_mask), the functional shortcuts l1_unstructured / ln_structured /
// global_unstructured, Han et al.'s quality-parameter rule, and layer-wise pruning to a sparsity.
//
//   prune::l1_unstructured(model.find("fc1"), "weight", 0.3);    // 30% of fc1's weights
//   prune::global_unstructured(prune::prunable_parameters(model), prune::amount::sparsity(0.9));
//   prune::remove_all(model);                                     // bake W * T into W
//
// Amounts follow PyTorch: a float is a fraction of the entries not yet pruned, so pruning a
// parameter twice with 0.5 leaves 25% (see prune::amount for count and sparsity targets).
#pragma once

#include <initializer_list>

#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/prune/mask.hpp"
#include "slimnet/prune/transform.hpp"

namespace slimnet::prune {

// --- method objects (usable on any container of mask.hpp) ------------------------------------

/// Element-wise, smallest |t| first (ties by index).
struct l1_unstructured_method {
  amount how_much;
  static constexpr const char* name = "slimnet::prune::l1_unstructured";
  template <class T, class M>
  mask_t<T> compute_mask(const T& t, const M& default_mask) const {
    return detail::magnitude_mask(
        t, how_much, detail::alive_from_mask(t, default_mask, name, "default_mask"), name);
  }
};

/// Whole rows (neurons / filters) of smallest L1 or L2 norm (ties by row index).
struct ln_structured_method {
  amount how_much;
  norm n = norm::l2;
  static constexpr const char* name = "slimnet::prune::ln_structured";
  template <class T, class M>
  mask_t<T> compute_mask(const T& t, const M& default_mask) const {
    return detail::row_mask(t, how_much, n,
                            detail::alive_from_mask(t, default_mask, name, "default_mask"), name);
  }
};

/// Keeps |t| > threshold.
struct threshold_method {
  double threshold = 0;
  static constexpr const char* name = "slimnet::prune::threshold_unstructured";
  template <class T, class M>
  mask_t<T> compute_mask(const T& t, const M& default_mask) const {
    return detail::threshold_mask(
        t, threshold, detail::alive_from_mask(t, default_mask, name, "default_mask"), name);
  }
};

/// Applies `method` to parameter p: the new mask is method.compute_mask(W, current mask), ANDed
/// into p's mask_transform (created if needed); pruned weights are zeroed at once.
template <class Scalar, class Method>
mask_transform<Scalar>& apply(nn::parameter<Scalar>& p, const Method& method) {
  const tensor<Scalar> current = mask_of(p);
  const tensor<Scalar> next = method.compute_mask(p.value(), current);
  return restrict_mask(p, next, Method::name);
}

// --- functional shortcuts ------------------------------------------------------------------

/// Prunes `how_much` of p's remaining entries by smallest |w| (PyTorch's prune.l1_unstructured).
template <class Scalar>
mask_transform<Scalar>& l1_unstructured(nn::parameter<Scalar>& p, amount how_much) {
  return apply(p, l1_unstructured_method{how_much});
}
/// Same, on the parameter named `name` of `layer` (PyTorch's (module, "weight", amount)).
template <class Scalar>
mask_transform<Scalar>& l1_unstructured(nn::layer<Scalar>& layer, const std::string& name,
                                        amount how_much) {
  return l1_unstructured(find_parameter(layer, name, l1_unstructured_method::name), how_much);
}

/// Prunes `how_much` of p's remaining rows by smallest Ln norm (PyTorch's prune.ln_structured
/// with dim=0): whole neurons / filters. The bias of a pruned unit is left alone.
template <class Scalar>
mask_transform<Scalar>& ln_structured(nn::parameter<Scalar>& p, amount how_much,
                                      norm n = norm::l2) {
  return apply(p, ln_structured_method{how_much, n});
}
template <class Scalar>
mask_transform<Scalar>& ln_structured(nn::layer<Scalar>& layer, const std::string& name,
                                      amount how_much, norm n = norm::l2) {
  return ln_structured(find_parameter(layer, name, ln_structured_method::name), how_much, n);
}

/// Keeps |w| > threshold.
template <class Scalar>
mask_transform<Scalar>& threshold_unstructured(nn::parameter<Scalar>& p, double threshold) {
  return apply(p, threshold_method{threshold});
}

/// Han et al. (2015): threshold = q * std of the layer's weights. The std is taken (population,
/// over W * T) the first time p is pruned this way and kept in its mask, so calling this again
/// after retraining prunes with the same threshold scale, as in Distiller's SensitivityPruner.
template <class Scalar>
mask_transform<Scalar>& quality_unstructured(nn::parameter<Scalar>& p, double q) {
  constexpr const char* fn = "slimnet::prune::quality_unstructured";
  detail::check_quality(q, fn);
  const tensor<Scalar> w = masked_weight(p);
  double stddev = weight_std(w);
  for (const auto& t : p.transforms()) {
    if (auto* m = dynamic_cast<mask_transform<Scalar>*>(t.get()); m != nullptr && m->reference_std)
      stddev = *m->reference_std;
  }
  auto& mt = restrict_mask(p, threshold_mask(w, q * stddev), fn);
  if (!mt.reference_std) mt.reference_std = stddev;
  return mt;
}

/// One magnitude ranking over the entries of all `params` (PyTorch's prune.global_unstructured
/// with L1Unstructured): the amount counts entries of all parameters together, ties are broken
/// by parameter order, then index. Entries pruned before are not candidates and stay pruned.
template <class Scalar>
void global_unstructured(const std::vector<nn::parameter<Scalar>*>& params, amount how_much) {
  constexpr const char* fn = "slimnet::prune::global_unstructured";
  std::vector<double> scores;
  std::vector<std::uint8_t> alive;
  std::vector<std::size_t> offsets;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i] == nullptr)
      slimnet::detail::raise<config_error>(fn, "parameter {} of {} is null", i, params.size());
    for (std::size_t j = 0; j < i; ++j) {
      if (params[j] == params[i])
        slimnet::detail::raise<config_error>(fn, "parameter '{}' is listed twice",
                                             params[i]->name());
    }
    nn::parameter<Scalar>& p = *params[i];
    offsets.push_back(scores.size());
    const auto s = detail::magnitudes(p.value(), fn);
    const auto a = detail::alive_from_mask(p.value(), mask_of(p), fn, "the current mask");
    scores.insert(scores.end(), s.begin(), s.end());
    alive.insert(alive.end(), a.begin(), a.end());
  }
  offsets.push_back(scores.size());
  detail::prune_smallest(
      scores, alive,
      how_much.units_to_prune(static_cast<index_t>(alive.size()), detail::count_alive(alive), fn));
  for (std::size_t i = 0; i < params.size(); ++i) {
    nn::parameter<Scalar>& p = *params[i];
    tensor<Scalar> m(p.shape());
    for (index_t k = 0; k < m.size(); ++k)
      m[k] = alive[offsets[i] + static_cast<std::size_t>(k)] ? Scalar(1) : Scalar(0);
    restrict_mask(p, m, fn);
  }
}

/// global_unstructured over a braced list, with the scalar type deduced:
/// prune::global_unstructured({&fc1.weight(), &fc2.weight()}, 0.5).
template <class Scalar>
void global_unstructured(std::initializer_list<nn::parameter<Scalar>*> params, amount how_much) {
  global_unstructured(std::vector<nn::parameter<Scalar>*>(params), how_much);
}

/// Fraction of p's entries that are pruned (zero in W * T).
template <class Scalar>
double sparsity(const nn::parameter<Scalar>& p) {
  return sparsity(masked_weight(p));
}

}  // namespace slimnet::prune
