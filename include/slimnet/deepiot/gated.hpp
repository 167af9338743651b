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
// Both kinds of gate are the same unit transform, an nn::unit_mask (nn/unit_mask.hpp): in a
// unit_gate layer after the producer, or attached to the recurrent stacked layer. The trainer
// drives every gate through it (set_mask, set_probabilities, set_hard): one code path. A
// recurrent droppable layer is named by its thinning key (structure/thin.hpp): "<child>.l<k>" and
// "<child>.l<k>_reverse" for the reversed direction.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/deepiot/compressor.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/nn/unit_mask.hpp"
#include "slimnet/nn/unit_transform.hpp"
#include "slimnet/structure/units.hpp"

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

/// The DeepIoT gate placed after a Linear / Conv2d (and the per-unit layers that follow it): the
/// layer that applies an nn::unit_mask (nn/unit_transform.hpp), e.g. `gate.transform().set_mask(z)`.
/// A recurrent stacked layer's gate is the nn::unit_mask attached to it (set_unit_mask).
template <class Scalar>
using unit_gate = nn::unit_transform_layer<Scalar, nn::unit_mask<Scalar>>;
/// A gate's mode is its unit mask's (stochastic in the compressor-critic phase, hard after Eq. 11).
using gate_mode = nn::mask_mode;

/// One droppable layer of a gated model.
struct droppable_layer {
  /// The producer's dotted path from the model ("fc1", "frames.conv4", "frames.sensors.acc.conv1"),
  /// "<child>.l<k>[_reverse]" for a recurrent stacked layer, and for a coupled group (the sensors'
  /// last convolutions, one shared gate) "<stack path>.<their common local name>"
  /// ("frames.sensors.conv3").
  std::string name;
  /// structure::thin selection keys of the units this gate drops: {name}, or one per sensor for a
  /// coupled group ("frames.sensors.acc.conv3", "frames.sensors.gyro.conv3").
  std::vector<std::string> keys;
  std::string gate_path;   ///< dotted path of its unit_gate layer (Linear / Conv2d / coupled group)
  std::size_t layer = 0;   ///< position in the top Sequential of the layer holding the producer
  std::size_t gate = 0;    ///< position of its unit_gate in the Sequential that holds the gate
  bool conv = false;
  bool recurrent = false;  ///< a stacked layer of an LSTM / GRU (gated by its unit mask)
  index_t stacked = 0;     ///< recurrent: the stacked layer k
  bool reverse = false;    ///< recurrent: in the reversed direction of a Bidirectional
  index_t units = 0;
  index_t fan_in = 0;      ///< values per unit the compressor reads (recurrent: G (F + H + 2 biases))
  bool bias = true;        ///< a separate bias vector (recurrent, coupled: false, the biases are in fan_in)
  bool coupled = false;    ///< one gate for several producers (keys.size() > 1), after the SensorStack
  bool folded_steps = false;  ///< its gate is inside a TimeDistributed: one mask row per sequence
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

  /// The gate of droppable layer k: set_mask (N, units) 0/1 samples for stochastic training,
  /// set_probabilities (p̂, evaluation), set_hard (fixed factors, Eq. 11).
  nn::unit_mask<Scalar>& gate(std::size_t k) { return *gates_.at(k); }
  const nn::unit_mask<Scalar>& gate(std::size_t k) const { return *gates_.at(k); }

  /// The weight / bias of a Linear or Conv2d droppable layer (config_error for a recurrent layer
  /// or a coupled group: its compressor matrix is packed, see live_weights).
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
  /// matrix). A coupled group gives, per unit j, each producer's filter j followed by its bias j
  /// (the authors' [acc_conv3 ; gyro_conv3] rows with their bias rows: 2 (3*64 + 1) = 386 values per
  /// unit). Repacked at each call; valid until the next call.
  std::pair<std::vector<const tensor<Scalar>*>, std::vector<const tensor<Scalar>*>> live_weights() {
    std::vector<const tensor<Scalar>*> w, b;
    for (std::size_t k = 0; k < layers.size(); ++k) {
      if (packers_.at(k)) {
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

  /// Registers droppable layer `d` (what attach_gates does): `gate` is its mask inside `net` (in a
  /// unit_gate layer, or attached to a recurrent stacked layer), `pack` builds its compressor
  /// matrix (recurrent, coupled). `producer` is the Linear / Conv2d inside `net` (null: net[d.layer]).
  void add_droppable(droppable_layer d, nn::unit_mask<Scalar>& gate, std::function<const tensor<Scalar>&()> pack = {},
                     nn::layer<Scalar>* producer = nullptr) {
    if (d.keys.empty()) d.keys.push_back(d.name);
    layers.push_back(std::move(d));
    gates_.push_back(&gate);
    packers_.push_back(std::move(pack));
    producers_.push_back(producer);
  }

 private:
  std::vector<nn::unit_mask<Scalar>*> gates_;                      // per droppable layer, inside net
  std::vector<std::function<const tensor<Scalar>&()>> packers_;    // recurrent, coupled: packs the matrix
  std::vector<nn::layer<Scalar>*> producers_;                      // the Linear / Conv2d (null: net[layer])

  nn::layer<Scalar>& feedforward(std::size_t k) {
    if (layers.at(k).recurrent || layers[k].coupled) {
      slimnet::detail::raise<config_error>("slimnet::deepiot::gated_model::weight",
                                           "droppable layer '{}' is a {}: read it through live_weights", layers[k].name,
                                           layers[k].recurrent ? "recurrent stacked layer" : "coupled group");
    }
    return producers_[k] ? *producers_[k] : net[layers[k].layer];
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
    r.set_unit_mask(k, std::make_shared<nn::unit_mask<Scalar>>(d.units));
    auto& gate_ref = *r.unit_mask_of(k);
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
    g.add_droppable(std::move(d), gate_ref, pack);
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

namespace detail {
/// A droppable candidate: one group of structure::unit_groups (a producer, one stacked layer and
/// direction of an LSTM / GRU, or the coupled last producers of a SensorStack's sensors).
struct gate_candidate {
  std::string name;               ///< droppable_layer::name
  std::vector<std::string> keys;  ///< structure::thin keys
  std::string owner;              ///< recurrent: the path of the LSTM / GRU / Bidirectional; else name
  bool recurrent = false;
  bool wanted = false;
  bool output = false;
};

/// Builds the gated copy: walks Sequentials, TimeDistributed and SensorStack, copying every layer
/// and inserting a unit_gate after each wanted Linear / Conv2d and the per-unit layers that follow
/// it (in the Sequential that holds it), and one shared gate after a SensorStack whose sensors'
/// last producers are a wanted coupled group. Gates inside a TimeDistributed are folded_steps
/// gates (one mask row per sequence).
template <class Scalar>
class gate_attacher {
 public:
  gate_attacher(gated_model<Scalar>& g, std::vector<gate_candidate> candidates) : g_(g), cands_(std::move(candidates)) {}

  void run(const nn::sequential<Scalar>& model) {
    open_gate pending;
    g_.net = walk(model, "", false, pending, true);
    if (pending.open) close(g_.net, "", pending, false);
  }

 private:
  static constexpr const char* fn = "slimnet::deepiot::attach_gates";

  struct open_gate {
    bool open = false;
    std::size_t cand = 0;
    std::string local;  // the gate is "<local>_gate"
    droppable_layer d;
    std::vector<nn::layer<Scalar>*> producers;
  };

  const gate_candidate* find(const std::string& key) const {
    for (const auto& c : cands_)
      for (const auto& k : c.keys)
        if (k == key) return &c;
    return nullptr;
  }

  /// Opens a gate for `added` (a Linear / Conv2d at `path`) if its candidate is wanted.
  bool open_for(nn::layer<Scalar>& added, const std::string& path, const std::string& local, bool folded, open_gate& pending) {
    const gate_candidate* c = find(path);
    if (c == nullptr || !c->wanted) return false;
    pending = open_gate{};
    pending.open = true;
    pending.cand = static_cast<std::size_t>(c - cands_.data());
    pending.local = local;
    pending.producers = {&added};
    auto& d = pending.d;
    d.name = c->name;
    d.keys = c->keys;
    d.layer = top_at_;
    d.folded_steps = folded;
    if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&added)) {
      d.conv = true;
      d.units = conv->out_channels();
      d.fan_in = conv->weight().size() / conv->out_channels();
      d.bias = conv->bias() != nullptr;
    } else {
      auto& lin = static_cast<nn::linear<Scalar>&>(added);
      d.units = lin.out_features();
      d.fan_in = lin.in_features();
      d.bias = lin.bias() != nullptr;
    }
    return true;
  }

  static nn::parameter<Scalar>& weight_of(nn::layer<Scalar>& l) {
    if (auto* c = dynamic_cast<nn::conv2d<Scalar>*>(&l)) return c->weight();
    return static_cast<nn::linear<Scalar>&>(l).weight();
  }
  static nn::parameter<Scalar>* bias_of(nn::layer<Scalar>& l) {
    if (auto* c = dynamic_cast<nn::conv2d<Scalar>*>(&l)) return c->bias();
    return static_cast<nn::linear<Scalar>&>(l).bias();
  }

  void close(nn::sequential<Scalar>& out, const std::string& prefix, open_gate& pending, bool folded) {
    droppable_layer d = pending.d;
    d.gate = out.size();
    d.gate_path = prefix + pending.local + "_gate";
    d.folded_steps = folded;
    auto& gate = static_cast<unit_gate<Scalar>&>(
                     out.add_ptr(pending.local + "_gate", std::make_unique<unit_gate<Scalar>>(d.units, folded)))
                     .transform();
    std::function<const tensor<Scalar>&()> pack;
    if (d.coupled) {
      // Unit j: each producer's filter j, then its bias j (the authors' rows-concatenated matrix).
      std::vector<std::pair<nn::parameter<Scalar>*, nn::parameter<Scalar>*>> params;
      for (auto* p : pending.producers) params.emplace_back(&weight_of(*p), bias_of(*p));
      auto buffer = std::make_shared<tensor<Scalar>>(shape_t{d.units, d.fan_in});
      const index_t units = d.units, per = d.fan_in;
      pack = [params, buffer, units, per]() -> const tensor<Scalar>& {
        buffer->resize({units, per});
        for (index_t j = 0; j < units; ++j) {
          Scalar* row = buffer->data() + j * per;
          for (const auto& [w, b] : params) {
            const index_t fan = w->value().size() / units;
            row = std::copy_n(w->value().data() + j * fan, fan, row);
            if (b) *row++ = b->value()[j];
          }
        }
        return *buffer;
      };
    }
    g_.add_droppable(d, gate, pack, d.coupled ? nullptr : pending.producers.front());
    pending.open = false;
  }

  nn::sequential<Scalar> walk(const nn::sequential<Scalar>& src, const std::string& prefix, bool folded, open_gate& pending, bool top) {
    nn::sequential<Scalar> out;
    for (std::size_t i = 0; i < src.size(); ++i) {
      const auto& l = src[i];
      const std::string& local = src.local_name(i);
      const std::string path = prefix + local;
      if (pending.open && !per_unit_layer(l)) close(out, prefix, pending, folded);
      if (top) top_at_ = out.size();
      if (auto* seq = dynamic_cast<const nn::sequential<Scalar>*>(&l)) {
        open_gate inner;
        auto s = walk(*seq, path + ".", folded, inner, false);
        if (inner.open) close(s, path + ".", inner, folded);
        out.add_ptr(local, std::make_unique<nn::sequential<Scalar>>(std::move(s)));
      } else if (auto* td = dynamic_cast<const nn::time_distributed<Scalar>*>(&l)) {
        out.add_ptr(local, time_distributed(*td, path));
      } else if (auto* ss = dynamic_cast<const nn::sensor_stack<Scalar>*>(&l)) {
        open_gate end;
        out.add_ptr(local, sensor_stack(*ss, path, folded, end));
        if (end.open) {
          end.local = local;
          pending = std::move(end);
        }
      } else {
        auto& added = out.add_ptr(local, l.clone());
        if (feedforward_droppable(added)) {
          open_for(added, path, local, folded, pending);
        } else if (recurrent_droppable(added)) {
          recurrent(added, path, top);
        }
      }
    }
    return out;
  }

  std::unique_ptr<nn::layer<Scalar>> time_distributed(const nn::time_distributed<Scalar>& td, const std::string& path) {
    std::unique_ptr<nn::layer<Scalar>> inner;
    if (auto* seq = dynamic_cast<const nn::sequential<Scalar>*>(&td.inner())) {
      open_gate pending;
      auto s = walk(*seq, path + ".", true, pending, false);
      if (pending.open) close(s, path + ".", pending, true);
      inner = std::make_unique<nn::sequential<Scalar>>(std::move(s));
    } else {
      const gate_candidate* c = find(path);
      if (c && c->wanted) {
        slimnet::detail::raise<config_error>(fn, "TimeDistributed '{}' holds its {} directly: put it in a Sequential to gate it", path,
                                             td.inner().kind());
      }
      inner = td.inner().clone();
    }
    return std::make_unique<nn::time_distributed<Scalar>>(std::move(inner), td.step_shape());
  }

  /// The gated copy of a SensorStack; `end` receives the open shared gate of the sensors' coupled
  /// last producers (if wanted): it goes after the stack, where channel j of every sensor is channel j.
  std::unique_ptr<nn::layer<Scalar>> sensor_stack(const nn::sensor_stack<Scalar>& ss, const std::string& path, bool folded, open_gate& end) {
    auto out = std::make_unique<nn::sensor_stack<Scalar>>();
    for (std::size_t b = 0; b < ss.size(); ++b) {
      const std::string branch = path + "." + ss.branch_name(b);
      open_gate bg;
      std::unique_ptr<nn::layer<Scalar>> copy;
      if (auto* seq = dynamic_cast<const nn::sequential<Scalar>*>(&ss[b])) {
        auto s = walk(*seq, branch + ".", folded, bg, false);
        if (bg.open && cands_[bg.cand].keys.size() == 1) close(s, branch + ".", bg, folded);
        copy = std::make_unique<nn::sequential<Scalar>>(std::move(s));
      } else {
        copy = ss[b].clone();
        if (feedforward_droppable(*copy)) open_for(*copy, branch, ss.branch_name(b), folded, bg);
      }
      if (bg.open) {
        if (!end.open) {
          end = bg;
        } else {
          end.producers.push_back(bg.producers.front());
        }
      }
      out->add_ptr(ss.branch_name(b), std::move(copy));
    }
    if (end.open) {
      const auto& c = cands_[end.cand];
      if (end.producers.size() != c.keys.size()) {
        slimnet::detail::raise<config_error>(fn, "coupled group '{}' has {} producers, {} found in SensorStack '{}'", c.name, c.keys.size(),
                                             end.producers.size(), path);
      }
      auto& d = end.d;
      d.coupled = true;
      d.bias = false;
      d.fan_in = 0;
      for (auto* p : end.producers) d.fan_in += weight_of(*p).value().size() / d.units + (bias_of(*p) ? 1 : 0);
    }
    return out;
  }

  void recurrent(nn::layer<Scalar>& added, const std::string& path, bool top) {
    bool wanted = false;
    for (const auto& c : cands_)
      if (c.recurrent && c.owner == path && c.wanted) wanted = true;
    if (!wanted) return;
    if (!top) {
      slimnet::detail::raise<config_error>(fn, "recurrent layer '{}' is inside a container: only LSTM / GRU / Bidirectional children of the "
                                               "top Sequential are gated", path);
    }
    if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&added)) {
      add_direction_gates(g_, bi->forward_layer(), path, top_at_, false);
      add_direction_gates(g_, bi->backward_layer(), path, top_at_, true);
    } else {
      add_direction_gates(g_, dynamic_cast<nn::recurrent_layer<Scalar>&>(added), path, top_at_, false);
    }
  }

  gated_model<Scalar>& g_;
  std::vector<gate_candidate> cands_;
  std::size_t top_at_ = 0;  // position in the gated top Sequential of the child being walked
};

/// The candidates of `model` (a copy: unit_groups needs it mutable), output and wanted marked.
template <class Scalar>
std::vector<gate_candidate> gate_candidates(nn::sequential<Scalar>& model, const std::vector<std::string>& names) {
  constexpr const char* fn = "slimnet::deepiot::attach_gates";
  std::vector<gate_candidate> cands;
  for (auto& grp : structure::unit_groups(model)) {
    gate_candidate c;
    c.keys = grp.keys;
    c.recurrent = !grp.weights.empty() && grp.weights.front().gates > 1;
    if (c.keys.size() == 1) {
      c.name = c.keys.front();
    } else {
      // "<stack>.<sensor>.<local>" for every key: "<stack>.<local>" if the locals agree.
      auto last = [](const std::string& k) { return k.substr(k.rfind('.') + 1); };
      const std::string& k0 = c.keys.front();
      const std::string branch = k0.substr(0, k0.rfind('.'));
      const std::string stack = branch.substr(0, branch.rfind('.'));
      bool same = true;
      for (const auto& k : c.keys) same = same && last(k) == last(k0);
      if (same) {
        c.name = stack + "." + last(k0);
      } else {
        for (const auto& k : c.keys) c.name += (c.name.empty() ? "" : "+") + k;
      }
    }
    c.owner = c.recurrent ? c.name.substr(0, c.name.rfind(".l")) : c.name;
    cands.push_back(std::move(c));
  }
  if (cands.empty()) slimnet::detail::raise<config_error>(fn, "the model has no Linear, Conv2d or recurrent layer");
  // The output layer is never compressed: the last group, with all of its recurrent layer.
  for (auto& c : cands) c.output = c.owner == cands.back().owner;
  if (names.empty()) {
    for (auto& c : cands) c.wanted = !c.output;
    if (std::none_of(cands.begin(), cands.end(), [](const gate_candidate& c) { return c.wanted; }))
      slimnet::detail::raise<config_error>(fn, "the model has only its output layer to compress");
    return cands;
  }
  for (const auto& n : names) {
    bool found = false;
    for (auto& c : cands) {
      const bool match = c.name == n || c.owner == n || std::find(c.keys.begin(), c.keys.end(), n) != c.keys.end();
      if (!match) continue;
      if (c.output) slimnet::detail::raise<config_error>(fn, "layer '{}' is the output layer, which is never compressed", n);
      c.wanted = found = true;
    }
    if (found) continue;
    for (std::size_t i = 0; i < model.size(); ++i) {
      if (model.local_name(i) == n) {
        slimnet::detail::raise<config_error>(fn, "layer '{}' is a {}, not a Linear, Conv2d or recurrent layer", n, model[i].kind());
      }
    }
    slimnet::detail::raise<config_error>(fn, "no Linear, Conv2d or recurrent layer named '{}'", n);
  }
  return cands;
}
}  // namespace detail

/// Copies `model` and gates its droppable layers, wherever they sit: in the top Sequential, in
/// nested Sequentials, inside a TimeDistributed (DeepSense's per-interval convolutions: their
/// gates repeat each sequence's mask over its steps, unit_gate's folded_steps) and in the sensors
/// of a SensorStack. A Linear / Conv2d gets a unit_gate ("<layer>_gate") after it and the per-unit
/// layers that follow it (activation, BatchNorm, pooling, dropout), in the Sequential that holds
/// it; the last producers of a SensorStack's sensors, which thinning keeps coupled
/// (structure::unit_groups: DeepSense's [acc_conv3 ; gyro_conv3]), share ONE gate placed after the
/// stack, where channel j of every sensor is channel j (the authors' sensor_dropout_in); an
/// LSTM / GRU / Bidirectional child of the top Sequential gets a gate on every stacked layer of
/// every direction (its unit masks). `names` selects by the droppable's name (its dotted path:
/// "fc1", "frames.conv4", "frames.sensors.acc.conv1"; a coupled group "frames.sensors.conv3" or any
/// of its keys; a recurrent layer by its path, "gru1"). Empty `names` means all but the output
/// layer (the last group, never compressed). Unknown names, other layer types, the output layer,
/// recurrent cells other than LSTM / GRU, and recurrent layers inside containers throw config_error.
template <class Scalar>
gated_model<Scalar> attach_gates(const nn::sequential<Scalar>& model, std::vector<std::string> names = {}) {
  nn::sequential<Scalar> copy(model);
  auto cands = detail::gate_candidates(copy, names);
  gated_model<Scalar> g;
  detail::gate_attacher<Scalar>(g, std::move(cands)).run(model);
  return g;
}
}  // namespace slimnet::deepiot
