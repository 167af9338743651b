// A Sequential model with DeepIoT unit gates after its droppable layers: which layers are
// droppable, where their gates sit, and the weights the compressor reads.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/deepiot/compressor.hpp"
#include "slimnet/deepiot/unit_gate.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::deepiot {

namespace detail {
/// Layers that act per unit (channel) and can sit between a droppable layer and its gate.
inline bool per_unit_kind(const std::string& kind) {
  return kind == "ReLU" || kind == "Tanh" || kind == "Sigmoid" || kind == "BatchNorm1d" || kind == "BatchNorm2d" ||
         kind == "MaxPool2d" || kind == "AvgPool2d" || kind == "Dropout";
}
inline bool droppable_kind(const std::string& kind) { return kind == "Linear" || kind == "Conv2d"; }
}  // namespace detail

/// One droppable layer of a gated model.
struct droppable_layer {
  std::string name;        ///< local name in the Sequential ("fc1")
  std::size_t layer = 0;   ///< position of the Linear / Conv2d
  std::size_t gate = 0;    ///< position of its unit_gate
  bool conv = false;
  index_t units = 0;
  index_t fan_in = 0;
  bool bias = true;
};

template <class Scalar>
struct gated_model {
  nn::sequential<Scalar> net;
  std::vector<droppable_layer> layers;

  unit_gate<Scalar>& gate(std::size_t k) { return static_cast<unit_gate<Scalar>&>(net[layers.at(k).gate]); }
  nn::parameter<Scalar>& weight(std::size_t k) {
    auto& l = net[layers.at(k).layer];
    return layers[k].conv ? static_cast<nn::conv2d<Scalar>&>(l).weight() : static_cast<nn::linear<Scalar>&>(l).weight();
  }
  nn::parameter<Scalar>* bias(std::size_t k) {
    auto& l = net[layers.at(k).layer];
    return layers[k].conv ? static_cast<nn::conv2d<Scalar>&>(l).bias() : static_cast<nn::linear<Scalar>&>(l).bias();
  }
  /// The compressor's description of the droppable layers, in order.
  std::vector<compressor_layer> compressor_layers() const {
    std::vector<compressor_layer> out;
    for (const auto& l : layers) out.push_back({l.name, l.fan_in, l.units, l.bias});
    return out;
  }
  /// Live weights and biases, for compressor::forward.
  std::pair<std::vector<const tensor<Scalar>*>, std::vector<const tensor<Scalar>*>> live_weights() {
    std::vector<const tensor<Scalar>*> w, b;
    for (std::size_t k = 0; k < layers.size(); ++k) {
      w.push_back(&weight(k).value());
      auto* bp = bias(k);
      b.push_back(bp ? &bp->value() : nullptr);
    }
    return {w, b};
  }
};

/// Copies `model` and inserts a unit_gate ("<layer>_gate") after each droppable layer and the
/// per-unit layers that follow it (activation, BatchNorm, pooling, dropout), i.e. right before the
/// next Linear / Conv2d / Flatten. `names` lists the droppable layers by local name; empty means
/// every Linear and Conv2d except the last one (the output layer is never compressed).
/// Throws config_error for unknown names, non-droppable kinds and the output layer.
template <class Scalar>
gated_model<Scalar> attach_gates(const nn::sequential<Scalar>& model, std::vector<std::string> names = {}) {
  constexpr const char* fn = "slimnet::deepiot::attach_gates";
  std::size_t last = model.size();
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (detail::droppable_kind(model[i].kind())) last = i;
  }
  if (last == model.size()) slimnet::detail::raise<config_error>(fn, "the model has no Linear or Conv2d layer");
  if (names.empty()) {
    for (std::size_t i = 0; i < last; ++i) {
      if (detail::droppable_kind(model[i].kind())) names.push_back(model.local_name(i));
    }
    if (names.empty()) slimnet::detail::raise<config_error>(fn, "the model has only its output layer to compress");
  }
  std::set<std::string> wanted(names.begin(), names.end());
  for (const auto& n : wanted) {
    bool found = false;
    for (std::size_t i = 0; i < model.size(); ++i) {
      if (model.local_name(i) != n) continue;
      found = true;
      if (!detail::droppable_kind(model[i].kind())) {
        slimnet::detail::raise<config_error>(fn, "layer '{}' is a {}, not a Linear or Conv2d", n, model[i].kind());
      }
      if (i == last) slimnet::detail::raise<config_error>(fn, "layer '{}' is the output layer, which is never compressed", n);
    }
    if (!found) slimnet::detail::raise<config_error>(fn, "no layer named '{}'", n);
  }

  gated_model<Scalar> g;
  droppable_layer pending;
  bool open = false;
  auto close = [&] {
    pending.gate = g.net.size();
    g.net.add_ptr(pending.name + "_gate", std::make_unique<unit_gate<Scalar>>(pending.units));
    g.layers.push_back(pending);
    open = false;
  };
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto& l = model[i];
    if (open && !detail::per_unit_kind(l.kind())) close();
    const std::size_t at = g.net.size();
    g.net.add_ptr(model.local_name(i), l.clone());
    if (wanted.count(model.local_name(i))) {
      auto& added = g.net[at];
      pending = droppable_layer{};
      pending.name = model.local_name(i);
      pending.layer = at;
      if (added.kind() == "Conv2d") {
        auto& c = static_cast<nn::conv2d<Scalar>&>(added);
        pending.conv = true;
        pending.units = c.out_channels();
        pending.fan_in = c.weight().size() / c.out_channels();
        pending.bias = c.bias() != nullptr;
      } else {
        auto& c = static_cast<nn::linear<Scalar>&>(added);
        pending.units = c.out_features();
        pending.fan_in = c.in_features();
        pending.bias = c.bias() != nullptr;
      }
      open = true;
    }
  }
  if (open) close();
  return g;
}

}  // namespace slimnet::deepiot
