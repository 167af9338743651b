// Structured magnitude pruning: remove whole units (output channels, output features, recurrent
// hidden units) with the smallest weight norms, and get a smaller dense model (Li, Kadav, Durdanovic,
// Samet & Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017, Section 3.1: rank the filters
// of a layer by s_j = sum |F_j|, the L1 norm of the filter's kernel weights, prune the m smallest,
// and remove the next layer's kernels that read the pruned feature maps).
//
// The units and the weights each owns come from structure::unit_groups, the removal is
// structure::thin: a Conv2d filter is its (in, kh, kw) block, a Linear unit its weight row, an
// LSTM / GRU hidden unit its rows in every gate block of W_ih and W_hh (its incoming weights; the
// recurrent analogue of a filter). Biases and BatchNorm entries are not ranked, only removed with
// their unit. Coupled producers (a SensorStack's sensors' last convolutions) are ranked as one
// group: unit j's norm covers its filters in every sensor.
//
// Per layer (Li et al.'s choice) each group loses amount.units_to_prune(units, units) units. Global
// ranking compares units of layers with different fan-in, so it ranks by the norm per weight:
// mean |w| for L1, sqrt(mean w^2) for L2 (RMS); every group keeps at least one unit.
//
//   auto small = prune::structured_prune(model, 0.5);                          // half of each layer
//   auto small = prune::structured_prune(model, {{"conv1", 0.25}, {"fc1", prune::amount::count(100)}});
//   auto keep = prune::structured_selection(model, 0.3, {prune::norm::l2, true});  // global, L2
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/prune/mask.hpp"
#include "slimnet/structure/thin.hpp"
#include "slimnet/structure/units.hpp"

namespace slimnet::prune {

struct structured_options {
  norm criterion = norm::l1;  ///< Li et al. use L1
  bool global = false;        ///< rank all units together by norm per weight (else layer by layer)
  /// Selection keys of the layers to prune (structure::thin's, any key of a coupled group); empty:
  /// every group but the last one, whose units are usually the model's outputs.
  std::vector<std::string> layers;
};

/// Per-unit norms of each unit group of `model`, by the group's first key: L1 = sum |w| or
/// L2 = sqrt(sum w^2) over the unit's incoming weights (see the header comment).
template <class Scalar>
std::map<std::string, std::vector<double>> unit_norms(nn::sequential<Scalar>& model, norm criterion = norm::l1);

namespace detail {

/// Norm of each unit of `g`, and the number of weights each unit owns.
template <class Scalar>
std::vector<double> group_norms(const structure::unit_group<Scalar>& g, norm criterion, index_t& weights_per_unit) {
  std::vector<double> s(static_cast<std::size_t>(g.units), 0.0);
  weights_per_unit = 0;
  for (const auto& w : g.weights) {
    const index_t len = w.row_length();
    weights_per_unit += w.gates * len;
    const Scalar* data = w.weight->value().data();
    for (index_t j = 0; j < g.units; ++j)
      for (index_t gate = 0; gate < w.gates; ++gate) {
        const Scalar* row = data + w.row_offset(j, gate, g.units);
        double acc = 0;
        for (index_t k = 0; k < len; ++k) {
          const double v = static_cast<double>(row[k]);
          acc += criterion == norm::l1 ? std::abs(v) : v * v;
        }
        s[static_cast<std::size_t>(j)] += acc;
      }
  }
  if (criterion == norm::l2)
    for (auto& v : s) v = std::sqrt(v);
  return s;
}

/// The groups to prune: those named in `keys` (each must name a group), or all but the last.
template <class Scalar>
std::vector<std::size_t> chosen_groups(const std::vector<structure::unit_group<Scalar>>& groups,
                                       const std::vector<std::string>& keys, const char* fn) {
  std::vector<std::size_t> out;
  if (keys.empty()) {
    for (std::size_t i = 0; i + 1 < groups.size(); ++i) out.push_back(i);
    return out;
  }
  for (const auto& key : keys) {
    std::size_t found = groups.size();
    for (std::size_t i = 0; i < groups.size() && found == groups.size(); ++i)
      if (std::find(groups[i].keys.begin(), groups[i].keys.end(), key) != groups[i].keys.end()) found = i;
    if (found == groups.size()) {
      std::string known;
      for (const auto& g : groups) known += (known.empty() ? "" : ", ") + g.keys.front();
      slimnet::detail::raise<config_error>(fn, "no unit-producing layer '{}' in the model (layers: {})", key, known);
    }
    if (std::find(out.begin(), out.end(), found) == out.end()) out.push_back(found);
  }
  return out;
}

/// Keep vector of `units` without the `m` units of smallest norm (ties: lower index goes first).
inline std::vector<bool> drop_smallest(const std::vector<double>& norms, index_t m) {
  std::vector<std::size_t> order(norms.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return norms[a] < norms[b]; });
  std::vector<bool> keep(norms.size(), true);
  for (index_t k = 0; k < m; ++k) keep[order[static_cast<std::size_t>(k)]] = false;
  return keep;
}

template <class Scalar>
void select_group(structure::unit_selection& out, const structure::unit_group<Scalar>& g, std::vector<bool> keep) {
  if (std::all_of(keep.begin(), keep.end(), [](bool k) { return k; })) return;
  for (const auto& key : g.keys) out[key] = keep;
}

template <class Scalar>
structure::unit_selection select(nn::sequential<Scalar>& model, const std::map<std::string, amount>* per_layer,
                                 const amount* how_much, const structured_options& o) {
  constexpr const char* fn = "slimnet::prune::structured_selection";
  const auto groups = structure::unit_groups(model);
  std::vector<std::string> keys = o.layers;
  if (per_layer) {
    if (!o.layers.empty())
      slimnet::detail::raise<config_error>(fn, "give the layers either as per-layer amounts or in options.layers, not both");
    if (o.global)
      slimnet::detail::raise<config_error>(fn, "global ranking takes one amount for all layers, not per-layer amounts");
    for (const auto& entry : *per_layer) keys.push_back(entry.first);
  }
  const auto chosen = chosen_groups(groups, keys, fn);
  structure::unit_selection out;
  if (!o.global) {
    for (std::size_t i : chosen) {
      const auto& g = groups[i];
      const amount* a = how_much;
      if (per_layer) {
        for (const auto& key : g.keys)
          if (per_layer->count(key)) a = &per_layer->at(key);
      }
      const index_t m = a->units_to_prune(g.units, g.units, fn);
      if (m >= g.units)
        slimnet::detail::raise<config_error>(fn, "pruning {} of the {} units of '{}' would leave none", m, g.units,
                                             g.keys.front());
      index_t per_unit = 0;
      select_group(out, g, drop_smallest(group_norms(g, o.criterion, per_unit), m));
    }
    return out;
  }
  // Global: every unit of the chosen groups by norm per weight, smallest first.
  struct entry {
    double score;
    std::size_t group;
    index_t unit;
  };
  std::vector<entry> all;
  std::vector<std::vector<bool>> keep(groups.size());
  std::vector<index_t> left(groups.size(), 0);
  index_t total = 0;
  for (std::size_t i : chosen) {
    index_t per_unit = 0;
    const auto norms = group_norms(groups[i], o.criterion, per_unit);
    const double n = static_cast<double>(per_unit);
    for (index_t j = 0; j < groups[i].units; ++j) {
      const double s = norms[static_cast<std::size_t>(j)];
      all.push_back({o.criterion == norm::l1 ? s / n : s / std::sqrt(n), i, j});
    }
    keep[i].assign(static_cast<std::size_t>(groups[i].units), true);
    left[i] = groups[i].units;
    total += groups[i].units;
  }
  const index_t m = how_much->units_to_prune(total, total, fn);
  if (m > total - static_cast<index_t>(chosen.size())) {
    slimnet::detail::raise<config_error>(fn, "pruning {} of {} units in {} layers would leave a layer with none", m, total,
                                         chosen.size());
  }
  std::stable_sort(all.begin(), all.end(), [](const entry& a, const entry& b) { return a.score < b.score; });
  index_t pruned = 0;
  for (const auto& e : all) {
    if (pruned == m) break;
    if (left[e.group] == 1) continue;  // a layer's last unit stays
    keep[e.group][static_cast<std::size_t>(e.unit)] = false;
    --left[e.group];
    ++pruned;
  }
  for (std::size_t i : chosen) select_group(out, groups[i], keep[i]);
  return out;
}

}  // namespace detail

template <class Scalar>
std::map<std::string, std::vector<double>> unit_norms(nn::sequential<Scalar>& model, norm criterion) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& g : structure::unit_groups(model)) {
    index_t per_unit = 0;
    out[g.keys.front()] = detail::group_norms(g, criterion, per_unit);
  }
  return out;
}

/// The units to remove: in each chosen layer (options.layers, or all but the last) the
/// how_much.units_to_prune(units, units) of smallest norm, or with options.global the smallest
/// across the chosen layers by norm per weight. Keys of the result are structure::thin's (a
/// coupled group gives every key the same vector; layers that keep every unit are left out).
/// Throws config_error for unknown layers, amounts outside their range and a layer left with no
/// unit.
template <class Scalar>
structure::unit_selection structured_selection(nn::sequential<Scalar>& model, const amount& how_much,
                                               const structured_options& o = {}) {
  return detail::select(model, nullptr, &how_much, o);
}

/// As above with an amount per layer (by selection key; only those layers are pruned).
template <class Scalar>
structure::unit_selection structured_selection(nn::sequential<Scalar>& model, const std::map<std::string, amount>& per_layer,
                                               const structured_options& o = {}) {
  return detail::select(model, &per_layer, nullptr, o);
}

/// `model` with the selected units removed (structure::thin: their biases, BatchNorm entries and
/// the consumers' input columns go with them); `model` is not changed. Weights must carry no
/// transform (thin refuses them).
template <class Scalar>
nn::sequential<Scalar> structured_prune(nn::sequential<Scalar>& model, const amount& how_much, const structured_options& o = {}) {
  return structure::thin(model, structured_selection(model, how_much, o));
}

template <class Scalar>
nn::sequential<Scalar> structured_prune(nn::sequential<Scalar>& model, const std::map<std::string, amount>& per_layer,
                                        const structured_options& o = {}) {
  return structure::thin(model, structured_selection(model, per_layer, o));
}

}  // namespace slimnet::prune
