// Thinning (brief item 23): a new, smaller dense Sequential in which pruned units are physically
// removed across coupled layers; hard unit gates are folded into the next layer.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/deepiot/gated.hpp"
#include "slimnet/deepiot/unit_gate.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::deepiot {

/// Kept output units per layer, by local name: keep[name][j] is true if unit j of that Linear
/// (output feature) or Conv2d (output channel) stays.
using unit_selection = std::map<std::string, std::vector<bool>>;

/// Number of weights (biases not counted, as the paper's tables) of the Linear and Conv2d layers.
template <class Scalar>
index_t weight_count(nn::layer<Scalar>& model) {
  index_t n = 0;
  model.visit_layers([&](nn::layer<Scalar>& l) {
    if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) n += lin->weight().size();
    if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) n += conv->weight().size();
  });
  return n;
}

/// Returns `model` with the units not in `keep` removed:
///  - Linear: output rows (and bias entries); the next Linear's input columns, or for
///    Conv2d -> ... -> Flatten -> Linear the h*w input columns of each removed channel;
///  - Conv2d: output channels; BatchNorm entries between them; the next Conv2d's input channels.
/// unit_gate layers must be in hard mode: units with scale 0 are removed from the layer before
/// the gate, the scale of kept units is folded into the next layer's inputs, and the gate is
/// dropped. The result computes what `model` computes with its hard gates (in evaluation mode).
/// Between a selection and its consumer only ReLU, pooling, Dropout, Flatten (and, before the
/// gate, BatchNorm/Tanh/Sigmoid) may appear; anything else throws config_error, as do unknown
/// names, wrong lengths, a layer left with no unit, or pruning the model's output.
template <class Scalar>
nn::sequential<Scalar> thin(const nn::sequential<Scalar>& model, unit_selection keep = {}) {
  constexpr const char* fn = "slimnet::deepiot::thin";
  // Pre-pass: check names, fold each hard gate's zeros into the layer before it.
  for (const auto& [name, k] : keep) {
    bool found = false;
    for (std::size_t i = 0; i < model.size(); ++i) {
      if (model.local_name(i) != name) continue;
      found = true;
      const auto& l = model[i];
      if (!detail::droppable_kind(l.kind())) slimnet::detail::raise<config_error>(fn, "layer '{}' is a {}, not a Linear or Conv2d", name, l.kind());
      const index_t units = l.kind() == "Linear" ? static_cast<const nn::linear<Scalar>&>(l).out_features()
                                                 : static_cast<const nn::conv2d<Scalar>&>(l).out_channels();
      if (static_cast<index_t>(k.size()) != units) {
        slimnet::detail::raise<shape_error>(fn, "selection for '{}' has {} entries, the layer has {} units", name, k.size(), units);
      }
    }
    if (!found) slimnet::detail::raise<config_error>(fn, "no layer named '{}'", name);
  }
  std::string last_droppable;
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto& l = model[i];
    if (detail::droppable_kind(l.kind())) last_droppable = model.local_name(i);
    if (l.kind() != "UnitGate") continue;
    const auto& g = static_cast<const unit_gate<Scalar>&>(l);
    if (g.mode() != gate_mode::hard) {
      slimnet::detail::raise<config_error>(fn, "gate '{}' is in stochastic mode: set hard scales first", model.local_name(i));
    }
    if (last_droppable.empty()) slimnet::detail::raise<config_error>(fn, "gate '{}' follows no Linear or Conv2d", model.local_name(i));
    auto& k = keep[last_droppable];
    if (k.empty()) k.assign(static_cast<std::size_t>(g.units()), true);
    if (static_cast<index_t>(k.size()) != g.units()) {
      slimnet::detail::raise<shape_error>(fn, "gate '{}' has {} units, layer '{}' has {}", model.local_name(i), g.units(), last_droppable,
                                          k.size());
    }
    for (index_t j = 0; j < g.units(); ++j) {
      if (g.scale()[j] == Scalar(0)) k[static_cast<std::size_t>(j)] = false;
    }
  }

  nn::sequential<Scalar> out;
  bool active = false, flattened = false;
  std::vector<index_t> sel;      // kept original units of the current activation
  std::vector<Scalar> scale;     // factor per kept unit, folded into the next layer
  index_t total = 0;             // original number of units
  auto unit_scaled = [&] {
    for (Scalar s : scale) {
      if (s != Scalar(1)) return true;
    }
    return false;
  };
  auto take = [&](const std::string& name, index_t units) {
    std::vector<index_t> idx;
    auto it = keep.find(name);
    for (index_t j = 0; j < units; ++j) {
      if (it == keep.end() || it->second[static_cast<std::size_t>(j)]) idx.push_back(j);
    }
    if (idx.empty()) slimnet::detail::raise<config_error>(fn, "layer '{}' would keep no unit", name);
    return idx;
  };
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto& l = model[i];
    const std::string& name = model.local_name(i);
    const std::string kind = l.kind();
    const bool selects = keep.count(name) > 0;
    if (kind == "UnitGate") {
      const auto& g = static_cast<const unit_gate<Scalar>&>(l);
      if (!active || g.units() != total || flattened) {
        slimnet::detail::raise<config_error>(fn, "gate '{}' ({} units) does not follow the units of a thinned layer", name, g.units());
      }
      for (std::size_t k = 0; k < sel.size(); ++k) scale[k] *= g.scale()[sel[k]];
      continue;
    }
    if (kind == "Linear") {
      const auto& src = static_cast<const nn::linear<Scalar>&>(l);
      const index_t in = src.in_features(), out_f = src.out_features();
      std::vector<index_t> cols;
      std::vector<Scalar> col_scale;
      if (active) {
        if (in % total != 0) {
          slimnet::detail::raise<config_error>(fn, "layer '{}' has {} inputs, not a multiple of the {} units before it", name, in, total);
        }
        const index_t block = in / total;
        if (block != 1 && !flattened) slimnet::detail::raise<config_error>(fn, "layer '{}' has {} inputs for {} units", name, in, total);
        for (std::size_t k = 0; k < sel.size(); ++k) {
          for (index_t b = 0; b < block; ++b) {
            cols.push_back(sel[k] * block + b);
            col_scale.push_back(scale[k]);
          }
        }
      } else {
        for (index_t c = 0; c < in; ++c) cols.push_back(c), col_scale.push_back(Scalar(1));
      }
      const auto rows = take(name, out_f);
      auto& src_nc = const_cast<nn::linear<Scalar>&>(src);
      const bool has_bias = src_nc.bias() != nullptr;
      nn::linear<Scalar> dst(static_cast<index_t>(cols.size()), static_cast<index_t>(rows.size()), has_bias);
      const auto W = src_nc.weight().value().matrix();
      auto D = dst.weight().value().matrix();
      for (std::size_t r = 0; r < rows.size(); ++r) {
        for (std::size_t c = 0; c < cols.size(); ++c) D(static_cast<index_t>(r), static_cast<index_t>(c)) = W(rows[r], cols[c]) * col_scale[c];
        if (has_bias) dst.bias()->value()[static_cast<index_t>(r)] = src_nc.bias()->value()[rows[r]];
      }
      out.add(name, std::move(dst));
      active = selects, flattened = false, total = out_f, sel = rows, scale.assign(rows.size(), Scalar(1));
      continue;
    }
    if (kind == "Conv2d") {
      const auto& src = static_cast<const nn::conv2d<Scalar>&>(l);
      if (flattened) slimnet::detail::raise<config_error>(fn, "conv layer '{}' after a Flatten", name);
      const index_t ic = src.in_channels(), oc = src.out_channels();
      std::vector<index_t> in_ch;
      std::vector<Scalar> in_scale;
      if (active) {
        if (ic != total) slimnet::detail::raise<config_error>(fn, "layer '{}' has {} input channels for {} units", name, ic, total);
        in_ch = sel, in_scale = scale;
      } else {
        for (index_t c = 0; c < ic; ++c) in_ch.push_back(c), in_scale.push_back(Scalar(1));
      }
      const auto outs = take(name, oc);
      auto& src_nc = const_cast<nn::conv2d<Scalar>&>(src);
      const auto& win = src.window();
      if (win.stride_h != win.stride_w || win.pad_h != win.pad_w) {
        slimnet::detail::raise<config_error>(fn, "layer '{}' has unequal strides or paddings", name);
      }
      const bool has_bias = src_nc.bias() != nullptr;
      nn::conv2d<Scalar> dst(static_cast<index_t>(in_ch.size()), static_cast<index_t>(outs.size()), win.kernel_h, win.kernel_w,
                             typename nn::conv2d<Scalar>::options{win.stride_h, win.pad_h, has_bias});
      const index_t kk = win.kernel_h * win.kernel_w;
      const Scalar* w = src_nc.weight().value().data();
      Scalar* d = dst.weight().value().data();
      for (std::size_t o = 0; o < outs.size(); ++o) {
        for (std::size_t c = 0; c < in_ch.size(); ++c) {
          for (index_t t = 0; t < kk; ++t) {
            d[(static_cast<index_t>(o) * static_cast<index_t>(in_ch.size()) + static_cast<index_t>(c)) * kk + t] =
                w[(outs[o] * ic + in_ch[c]) * kk + t] * in_scale[c];
          }
        }
        if (has_bias) dst.bias()->value()[static_cast<index_t>(o)] = src_nc.bias()->value()[outs[o]];
      }
      out.add(name, std::move(dst));
      active = selects, flattened = false, total = oc, sel = outs, scale.assign(outs.size(), Scalar(1));
      continue;
    }
    if (selects) slimnet::detail::raise<config_error>(fn, "layer '{}' is a {}, not a Linear or Conv2d", name, kind);
    if (!active) {
      out.add_ptr(name, l.clone());
      continue;
    }
    if (kind == "BatchNorm1d" || kind == "BatchNorm2d") {
      if (unit_scaled() || flattened) slimnet::detail::raise<config_error>(fn, "BatchNorm '{}' after a gate cannot be thinned", name);
      auto& src = const_cast<nn::batch_norm<Scalar>&>(static_cast<const nn::batch_norm<Scalar>&>(l));
      if (src.features() != total) slimnet::detail::raise<config_error>(fn, "BatchNorm '{}' has {} features for {} units", name, src.features(), total);
      nn::batch_norm<Scalar> dst(static_cast<index_t>(sel.size()), kind == "BatchNorm2d" ? 2 : 1, src.opts());
      for (std::size_t k = 0; k < sel.size(); ++k) {
        const auto kk = static_cast<index_t>(k);
        dst.weight().value()[kk] = src.weight().value()[sel[k]];
        dst.bias().value()[kk] = src.bias().value()[sel[k]];
        dst.running_mean().value()[kk] = src.running_mean().value()[sel[k]];
        dst.running_var().value()[kk] = src.running_var().value()[sel[k]];
      }
      out.add(name, std::move(dst));
      continue;
    }
    // Positively homogeneous, per-unit layers commute with the pending scale.
    const bool homogeneous = kind == "ReLU" || kind == "MaxPool2d" || kind == "AvgPool2d" || kind == "Dropout";
    if (kind == "Flatten") {
      flattened = true;
    } else if (!(homogeneous || ((kind == "Tanh" || kind == "Sigmoid") && !unit_scaled())) || (flattened && kind != "ReLU" && kind != "Dropout")) {
      slimnet::detail::raise<config_error>(fn, "a {} ('{}') between a thinned layer and its consumer is not supported", kind, name);
    }
    out.add_ptr(name, l.clone());
  }
  if (active) slimnet::detail::raise<config_error>(fn, "the model's output would lose units (its last layer is thinned)");
  return out;
}

/// The gated model with every gate's hard scale folded in and the gates removed.
template <class Scalar>
nn::sequential<Scalar> thin(const gated_model<Scalar>& g) {
  return thin(g.net);
}

}  // namespace slimnet::deepiot
