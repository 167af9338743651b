// A Sequential model with DeepIoT gates on its droppable layers: which layers are droppable,
// where their gates sit, and the weights the compressor reads.
//
// Droppable "layers" (one compressor step each, Yao et al. 2017 Section 3.1; brief items 3-5, 8):
//   - a Linear or Conv2d (not the output layer): a unit_gate layer is inserted after it (and after
//     the per-unit layers that follow it: activation, BatchNorm, pooling, dropout);
//   - every stacked layer of an LSTM / GRU, and every stacked layer of each direction of a
//     Bidirectional, that is a direct child of the Sequential: the gate is the recurrent layer's
//     own unit mask (nn::recurrent::set_unit_mask), one mask vector per sequence used at every time
//     step on both the input path of the next layer and the layer's own recurrence (Eq. 2; for a
//     GRU the masked state is carried on, as the authors' DropoutWrapper on output and state).
// Both kinds of gate are driven through gate_control (unit_gate.hpp), so the trainer has one code
// path. A recurrent droppable layer is named by its thinning key (structure/thin.hpp):
// "<child>.l<k>" and "<child>.l<k>_reverse" for the reversed direction.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/deepiot/compressor.hpp"
#include "slimnet/deepiot/unit_gate.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::deepiot {

namespace detail {
template <class T, class Scalar>
bool is_a(const nn::layer<Scalar>& l) {
  return dynamic_cast<const T*>(&l) != nullptr;
}
/// Layers that act per unit (channel) and can sit between a droppable layer and its gate.
template <class Scalar>
bool per_unit_layer(const nn::layer<Scalar>& l) {
  return is_a<nn::relu<Scalar>>(l) || is_a<nn::tanh<Scalar>>(l) || is_a<nn::sigmoid<Scalar>>(l) || is_a<nn::batch_norm<Scalar>>(l) ||
         is_a<nn::max_pool2d<Scalar>>(l) || is_a<nn::avg_pool2d<Scalar>>(l) || is_a<nn::dropout<Scalar>>(l);
}
/// Linear or Conv2d: gated by a unit_gate layer.
template <class Scalar>
bool feedforward_droppable(const nn::layer<Scalar>& l) {
  return dynamic_cast<const nn::linear<Scalar>*>(&l) != nullptr || dynamic_cast<const nn::conv2d<Scalar>*>(&l) != nullptr;
}
/// LSTM / GRU stack or Bidirectional: gated through its unit masks.
template <class Scalar>
bool recurrent_droppable(const nn::layer<Scalar>& l) {
  return dynamic_cast<const nn::recurrent_layer<Scalar>*>(&l) != nullptr || dynamic_cast<const nn::bidirectional<Scalar>*>(&l) != nullptr;
}
/// Kind-string versions kept for callers that inspect plain Sequentials (example 11).
inline bool per_unit_kind(const std::string& kind) {
  return kind == "ReLU" || kind == "Tanh" || kind == "Sigmoid" || kind == "BatchNorm1d" || kind == "BatchNorm2d" ||
         kind == "MaxPool2d" || kind == "AvgPool2d" || kind == "Dropout";
}
inline bool droppable_kind(const std::string& kind) { return kind == "Linear" || kind == "Conv2d"; }
}  // namespace detail

/// The gate of one stacked layer of an LSTM / GRU: its unit mask. set_mask installs the (N, H)
/// 0/1 samples, set_probabilities the keep probabilities p̂ (H), set_hard the fixed factors (H).
/// Unlike a unit_gate, the recurrent layer does not switch between mask and p̂ with the training
/// flag: the factors last set are used (the trainer sets p̂ before every evaluation). In hard mode
/// set_mask only checks its argument: the hard factors stay in force, as for a unit_gate.
template <class Scalar, class Cell>
class recurrent_gate : public gate_control<Scalar> {
 public:
  recurrent_gate(nn::recurrent<Scalar, Cell>& layer, index_t stacked)
      : layer_(&layer), stacked_(stacked), scale_(vector<Scalar>::Ones(layer.hidden_size(stacked))) {}

  index_t units() const override { return layer_->hidden_size(stacked_); }
  gate_mode mode() const override { return mode_; }
  const vector<Scalar>& scale() const override { return scale_; }

  void set_mask(const tensor<Scalar>& z) override {
    detail::check_gate_mask("slimnet::deepiot::recurrent_gate::set_mask", z, units());
    if (mode_ == gate_mode::hard) return;
    layer_->set_unit_mask(stacked_, z);
  }
  void set_probabilities(const vector<Scalar>& keep) override {
    detail::check_gate_scale("slimnet::deepiot::recurrent_gate::set_probabilities", keep, units(), true);
    install(keep, gate_mode::stochastic);
  }
  void set_hard(const vector<Scalar>& scale) override {
    detail::check_gate_scale("slimnet::deepiot::recurrent_gate::set_hard", scale, units(), false);
    install(scale, gate_mode::hard);
  }

 private:
  void install(const vector<Scalar>& s, gate_mode mode) {
    scale_ = s;
    mode_ = mode;
    tensor<Scalar> m({s.size()});
    m.flat() = s;
    layer_->set_unit_mask(stacked_, std::move(m));
  }

  nn::recurrent<Scalar, Cell>* layer_;
  index_t stacked_;
  gate_mode mode_ = gate_mode::stochastic;
  vector<Scalar> scale_;
};

/// One droppable layer of a gated model.
struct droppable_layer {
  std::string name;        ///< local name in the Sequential ("fc1"), or "<child>.l<k>[_reverse]"
  std::size_t layer = 0;   ///< position of the Linear / Conv2d / recurrent layer in the Sequential
  std::size_t gate = 0;    ///< position of its unit_gate (Linear / Conv2d only)
  bool conv = false;
  bool recurrent = false;  ///< a stacked layer of an LSTM / GRU (gated by its unit mask)
  index_t stacked = 0;     ///< recurrent: the stacked layer k
  bool reverse = false;    ///< recurrent: in the reversed direction of a Bidirectional
  index_t units = 0;
  index_t fan_in = 0;      ///< values per unit the compressor reads (recurrent: G (F + H + 2 biases))
  bool bias = true;        ///< a separate bias vector (recurrent: false, the biases are in fan_in)
};

/// The model with its gates. Holds pointers into `net`: move it, do not copy it (not copyable).
template <class Scalar>
struct gated_model {
  nn::sequential<Scalar> net;
  std::vector<droppable_layer> layers;

  gated_model() = default;
  gated_model(gated_model&&) noexcept = default;
  gated_model& operator=(gated_model&&) noexcept = default;
  gated_model(const gated_model&) = delete;
  gated_model& operator=(const gated_model&) = delete;

  gate_control<Scalar>& gate(std::size_t k) { return *gates_.at(k); }
  const gate_control<Scalar>& gate(std::size_t k) const { return *gates_.at(k); }

  /// The weight / bias of a Linear or Conv2d droppable layer (config_error for a recurrent one:
  /// its compressor matrix is packed, see live_weights).
  nn::parameter<Scalar>& weight(std::size_t k) {
    auto& l = feedforward(k);
    if (auto* c = dynamic_cast<nn::conv2d<Scalar>*>(&l)) return c->weight();
    return static_cast<nn::linear<Scalar>&>(l).weight();
  }
  nn::parameter<Scalar>* bias(std::size_t k) {
    auto& l = feedforward(k);
    if (auto* c = dynamic_cast<nn::conv2d<Scalar>*>(&l)) return c->bias();
    return static_cast<nn::linear<Scalar>&>(l).bias();
  }
  /// The compressor's description of the droppable layers, in order.
  std::vector<compressor_layer> compressor_layers() const {
    std::vector<compressor_layer> out;
    for (const auto& l : layers) out.push_back({l.name, l.fan_in, l.units, l.bias});
    return out;
  }
  /// Live weights and biases, for compressor::forward: (units, fan_in) per layer. A Linear /
  /// Conv2d gives its own weight and bias. A recurrent stacked layer gives the brief's LSTM matrix
  /// 4(n_{l-1} + n_l) x n_l transposed, with the biases as the authors' code appends them: row j
  /// (unit j) = for each gate block g, [W_ih[gH + j, :], W_hh[gH + j, :], b_ih[gH + j], b_hh[gH + j]]
  /// (PyTorch's two biases; G = 4 for an LSTM, 3 for a GRU as the authors' [1899 x 120] GRU
  /// matrix). Repacked at each call; valid until the next call.
  std::pair<std::vector<const tensor<Scalar>*>, std::vector<const tensor<Scalar>*>> live_weights() {
    std::vector<const tensor<Scalar>*> w, b;
    for (std::size_t k = 0; k < layers.size(); ++k) {
      if (layers[k].recurrent) {
        w.push_back(&packers_.at(k)());
        b.push_back(nullptr);
        continue;
      }
      w.push_back(&weight(k).value());
      auto* bp = bias(k);
      b.push_back(bp ? &bp->value() : nullptr);
    }
    return {w, b};
  }

  /// Registers droppable layer `d` (what attach_gates does): `gate` drives its mask (a unit_gate
  /// inside `net`, or an owned recurrent_gate), `pack` builds its compressor matrix (recurrent).
  void add_droppable(droppable_layer d, gate_control<Scalar>& gate, std::unique_ptr<gate_control<Scalar>> owned = {},
                     std::function<const tensor<Scalar>&()> pack = {}) {
    layers.push_back(std::move(d));
    gates_.push_back(&gate);
    if (owned) owned_gates_.push_back(std::move(owned));
    packers_.push_back(std::move(pack));
  }

 private:
  std::vector<std::unique_ptr<gate_control<Scalar>>> owned_gates_;  // the recurrent gates
  std::vector<gate_control<Scalar>*> gates_;                        // per droppable layer
  std::vector<std::function<const tensor<Scalar>&()>> packers_;    // recurrent: packs the matrix

  nn::layer<Scalar>& feedforward(std::size_t k) {
    if (layers.at(k).recurrent) {
      slimnet::detail::raise<config_error>("slimnet::deepiot::gated_model::weight",
                                           "droppable layer '{}' is a recurrent stacked layer: read it through live_weights",
                                           layers[k].name);
    }
    return net[layers[k].layer];
  }
};

namespace detail {
/// Registers the gates of every stacked layer of one LSTM / GRU direction.
template <class Scalar, class Cell>
void add_recurrent_gates(gated_model<Scalar>& g, nn::recurrent<Scalar, Cell>& r, const std::string& child, std::size_t position,
                         bool reverse) {
  constexpr index_t gates = Cell::gates;
  for (index_t k = 0; k < r.num_layers(); ++k) {
    droppable_layer d;
    d.name = fmt::format("{}.l{}{}", child, k, reverse ? "_reverse" : "");
    d.layer = position;
    d.recurrent = true;
    d.stacked = k;
    d.reverse = reverse;
    d.units = r.hidden_size(k);
    const index_t in = k == 0 ? r.input_size() : r.hidden_size(k - 1);
    const bool bias = r.bias_ih(k) != nullptr;
    d.fan_in = gates * (in + d.units + (bias ? 2 : 0));
    d.bias = false;
    auto gate = std::make_unique<recurrent_gate<Scalar, Cell>>(r, k);
    auto& gate_ref = *gate;
    auto buffer = std::make_shared<tensor<Scalar>>(shape_t{d.units, d.fan_in});
    auto pack = [&r, k, buffer]() -> const tensor<Scalar>& {
      const index_t h = r.hidden_size(k), f = r.weight_ih(k).value().dim(1);
      const bool has_bias = r.bias_ih(k) != nullptr;
      const index_t per_gate = f + h + (has_bias ? 2 : 0);
      const tensor<Scalar>& wih = r.weight_ih(k).value();
      const tensor<Scalar>& whh = r.weight_hh(k).value();
      buffer->resize({h, gates * per_gate});
      for (index_t j = 0; j < h; ++j) {
        Scalar* row = buffer->data() + j * gates * per_gate;
        for (index_t gb = 0; gb < gates; ++gb) {
          const index_t src = gb * h + j;
          Scalar* dst = row + gb * per_gate;
          std::copy_n(wih.data() + src * f, f, dst);
          std::copy_n(whh.data() + src * h, h, dst + f);
          if (has_bias) {
            dst[f + h] = r.bias_ih(k)->value()[src];
            dst[f + h + 1] = r.bias_hh(k)->value()[src];
          }
        }
      }
      return *buffer;
    };
    g.add_droppable(std::move(d), gate_ref, std::move(gate), pack);
  }
}

template <class Scalar>
void add_direction_gates(gated_model<Scalar>& g, nn::recurrent_layer<Scalar>& d, const std::string& child, std::size_t position,
                         bool reverse) {
  if (auto* l = dynamic_cast<nn::lstm<Scalar>*>(&d)) return add_recurrent_gates(g, *l, child, position, reverse);
  if (auto* r = dynamic_cast<nn::gru<Scalar>*>(&d)) return add_recurrent_gates(g, *r, child, position, reverse);
  slimnet::detail::raise<config_error>("slimnet::deepiot::attach_gates", "recurrent layer '{}' is a {}, not an LSTM or GRU", child,
                                       d.describe());
}
}  // namespace detail

/// Copies `model` and gates its droppable layers. `names` lists them by local name in the
/// Sequential: a Linear / Conv2d gets a unit_gate ("<layer>_gate") after it and the per-unit
/// layers that follow it (activation, BatchNorm, pooling, dropout), i.e. right before the next
/// Linear / Conv2d / Flatten / recurrent layer; an LSTM / GRU / Bidirectional gets a gate on every
/// stacked layer of every direction (its unit masks). Empty `names` means every such layer except
/// the last (the output layer is never compressed). Unknown names, other layer types, the output
/// layer, and recurrent cells other than LSTM / GRU throw config_error.
template <class Scalar>
gated_model<Scalar> attach_gates(const nn::sequential<Scalar>& model, std::vector<std::string> names = {}) {
  constexpr const char* fn = "slimnet::deepiot::attach_gates";
  auto droppable = [](const nn::layer<Scalar>& l) { return detail::feedforward_droppable(l) || detail::recurrent_droppable(l); };
  std::size_t last = model.size();
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (droppable(model[i])) last = i;
  }
  if (last == model.size()) slimnet::detail::raise<config_error>(fn, "the model has no Linear, Conv2d or recurrent layer");
  if (names.empty()) {
    for (std::size_t i = 0; i < last; ++i) {
      if (droppable(model[i])) names.push_back(model.local_name(i));
    }
    if (names.empty()) slimnet::detail::raise<config_error>(fn, "the model has only its output layer to compress");
  }
  std::set<std::string> wanted(names.begin(), names.end());
  for (const auto& n : wanted) {
    bool found = false;
    for (std::size_t i = 0; i < model.size(); ++i) {
      if (model.local_name(i) != n) continue;
      found = true;
      if (!droppable(model[i])) {
        slimnet::detail::raise<config_error>(fn, "layer '{}' is a {}, not a Linear, Conv2d or recurrent layer", n, model[i].kind());
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
    auto& gate = static_cast<unit_gate<Scalar>&>(
        g.net.add_ptr(pending.name + "_gate", std::make_unique<unit_gate<Scalar>>(pending.units)));
    g.add_droppable(pending, gate);
    open = false;
  };
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto& l = model[i];
    if (open && !detail::per_unit_layer(l)) close();
    const std::size_t at = g.net.size();
    auto& added = g.net.add_ptr(model.local_name(i), l.clone());
    if (!wanted.count(model.local_name(i))) continue;
    if (detail::recurrent_droppable(added)) {
      if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&added)) {
        detail::add_direction_gates(g, bi->forward_layer(), model.local_name(i), at, false);
        detail::add_direction_gates(g, bi->backward_layer(), model.local_name(i), at, true);
      } else {
        auto& r = dynamic_cast<nn::recurrent_layer<Scalar>&>(added);
        detail::add_direction_gates(g, r, model.local_name(i), at, false);
      }
      continue;
    }
    pending = droppable_layer{};
    pending.name = model.local_name(i);
    pending.layer = at;
    if (auto* c = dynamic_cast<nn::conv2d<Scalar>*>(&added)) {
      pending.conv = true;
      pending.units = c->out_channels();
      pending.fan_in = c->weight().size() / c->out_channels();
      pending.bias = c->bias() != nullptr;
    } else {
      auto& c2 = static_cast<nn::linear<Scalar>&>(added);
      pending.units = c2.out_features();
      pending.fan_in = c2.in_features();
      pending.bias = c2.bias() != nullptr;
    }
    open = true;
  }
  if (open) close();
  return g;
}

}  // namespace slimnet::deepiot
