// DeepIoT's thinning (Yao et al. 2017, Section 4): the gated network with its hard gates folded
// into the next layer becomes a smaller dense one, through the structure module.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/deepiot/gated.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/structure/thin.hpp"

namespace slimnet::deepiot {

/// Kept output units per layer, by local name: keep[name][j] is true if unit j of that Linear
/// (output feature) or Conv2d (output channel) stays.
using unit_selection = structure::unit_selection;

/// Number of weights (biases not counted, as the paper's tables) of the Linear, Conv2d and
/// recurrent layers (weight_ih and weight_hh of every stacked layer and direction).
template <class Scalar>
index_t weight_count(nn::layer<Scalar>& model) {
  index_t n = 0;
  model.visit_layers([&](nn::layer<Scalar>& l) {
    if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) n += lin->weight().size();
    if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) n += conv->weight().size();
    if (auto* rec = dynamic_cast<nn::recurrent_layer<Scalar>*>(&l)) {
      rec->visit_parameters([&](nn::parameter<Scalar>& p) {
        if (p.local_name().rfind("weight_", 0) == 0) n += p.size();
      });
    }
  });
  return n;
}

/// Returns `model` with the units not in `keep` removed and its hard gates folded away, through
/// the structure module (structure/thin.hpp: Linear rows, Conv2d channels, the BatchNorm entries
/// between, the consumer's input columns, Flatten blocks). unit_gate layers must be in hard mode:
/// units with scale 0 are removed from the layer before the gate, the scale of kept units is
/// folded into the next layer's inputs, and the gate is dropped. The result computes what `model`
/// computes with its hard gates (in evaluation mode). Unknown names, wrong lengths, a layer left
/// with no unit, pruning the model's output, or a layer between a selection and its consumer that
/// does not commute with it throw config_error / shape_error.
template <class Scalar>
nn::sequential<Scalar> thin(const nn::sequential<Scalar>& model, unit_selection keep = {}) {
  constexpr const char* fn = "slimnet::deepiot::thin";
  structure::unit_scales<Scalar> scales;
  std::string last_droppable;
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto& l = model[i];
    if (dynamic_cast<const nn::linear<Scalar>*>(&l) || dynamic_cast<const nn::conv2d<Scalar>*>(&l)) last_droppable = model.local_name(i);
    const auto* gl = dynamic_cast<const unit_gate<Scalar>*>(&l);
    if (gl == nullptr) continue;
    const nn::unit_mask<Scalar>* g = &gl->transform();
    if (g->mode() != nn::mask_mode::hard) {
      slimnet::detail::raise<config_error>(fn, "gate '{}' is in stochastic mode: set hard scales first", model.local_name(i));
    }
    if (last_droppable.empty()) slimnet::detail::raise<config_error>(fn, "gate '{}' follows no Linear or Conv2d", model.local_name(i));
    auto& k = keep[last_droppable];
    if (k.empty()) k.assign(static_cast<std::size_t>(g->units()), true);
    if (static_cast<index_t>(k.size()) != g->units()) {
      slimnet::detail::raise<shape_error>(fn, "gate '{}' has {} units, layer '{}' has {}", model.local_name(i), g->units(), last_droppable,
                                          k.size());
    }
    const column_vector<Scalar> scale = g->scale();
    std::vector<Scalar> s(static_cast<std::size_t>(g->units()));
    for (index_t j = 0; j < g->units(); ++j) {
      s[static_cast<std::size_t>(j)] = scale[j];
      if (scale[j] == Scalar(0)) k[static_cast<std::size_t>(j)] = false;
    }
    scales[model.local_name(i)] = std::move(s);
  }
  return structure::thin(model, keep, scales);
}

namespace detail {
/// Calls f(stack) with the LSTM / GRU stack of one direction as its concrete type.
template <class Scalar, class F>
void with_stack(nn::recurrent_layer<Scalar>& d, F&& f) {
  if (auto* l = dynamic_cast<nn::lstm<Scalar>*>(&d)) return f(*l);
  if (auto* g = dynamic_cast<nn::gru<Scalar>*>(&d)) return f(*g);
  slimnet::detail::raise<config_error>("slimnet::deepiot::thin", "recurrent layer {} is not an LSTM or GRU", d.describe());
}
}  // namespace detail

/// The gated model with every gate's hard scale folded in and the gates removed, wherever they
/// sit (nested Sequentials, TimeDistributed, SensorStack). unit_gate layers: units with scale 0 are
/// removed from the producer before the gate (for a coupled gate, from every sensor's last
/// producer: its keys), the scales of kept units are folded into the consumer's input columns
/// (through a TimeDistributed's flatten: the H*W columns of each channel of gru1's input) and the
/// gate is dropped. Recurrent gates (unit masks of LSTM / GRU stacked layers): units with factor 0
/// are removed through structure::thin (their gate rows, recurrent columns, biases and the next
/// layer's inputs); the factors of the kept units stay as the thinned layer's unit mask, because a
/// factor applied to the state at every step cannot be folded into the weights (brief item 23),
/// unless they are all 1, in which case the mask is cleared. The result computes what the gated
/// model computes in evaluation mode. A gate in stochastic mode throws config_error.
template <class Scalar>
nn::sequential<Scalar> thin(const gated_model<Scalar>& g) {
  constexpr const char* fn = "slimnet::deepiot::thin";
  unit_selection keep;
  structure::unit_scales<Scalar> scales;
  std::vector<std::size_t> unmask;  // recurrent droppable layers whose kept factors are all 1
  for (std::size_t k = 0; k < g.layers.size(); ++k) {
    const auto& d = g.layers[k];
    const auto& gate = g.gate(k);
    if (gate.mode() != nn::mask_mode::hard) {
      slimnet::detail::raise<config_error>(fn, "the gate of {}layer '{}' is in stochastic mode: set hard scales first",
                                           d.recurrent ? "recurrent " : "", d.name);
    }
    std::vector<bool> kk(static_cast<std::size_t>(gate.units()));
    std::vector<Scalar> s(static_cast<std::size_t>(gate.units()));
    bool ones = true;
    const column_vector<Scalar> scale = gate.scale();
    for (index_t j = 0; j < gate.units(); ++j) {
      s[static_cast<std::size_t>(j)] = scale[j];
      kk[static_cast<std::size_t>(j)] = s[static_cast<std::size_t>(j)] != Scalar(0);
      if (s[static_cast<std::size_t>(j)] != Scalar(0) && s[static_cast<std::size_t>(j)] != Scalar(1)) ones = false;
    }
    for (const auto& key : d.keys) keep[key] = kk;
    if (!d.recurrent) {
      scales[d.gate_path] = std::move(s);
    } else if (ones) {
      unmask.push_back(k);
    }
  }
  auto out = structure::thin(g.net, keep, scales);
  for (std::size_t k : unmask) {
    const auto& d = g.layers[k];
    const std::string& child = g.net.local_name(d.layer);
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (out.local_name(i) != child) continue;
      nn::recurrent_layer<Scalar>* dir = nullptr;
      if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&out[i])) {
        dir = d.reverse ? &bi->backward_layer() : &bi->forward_layer();
      } else {
        dir = &dynamic_cast<nn::recurrent_layer<Scalar>&>(out[i]);
      }
      detail::with_stack(*dir, [&](auto& stack) { stack.clear_unit_mask(d.stacked); });
    }
  }
  return out;
}

}  // namespace slimnet::deepiot
