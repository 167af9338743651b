// Dead units: units that a pruned model computes for nothing, found from its zeros and removed
// exactly with structure::thin. This is the second step of DyNS-Ext (DeepIoT, Yao et al. 2017,
// Section 5: DNS on every weight matrix, then "removing hidden units without connections").
//
// A unit is dead, and removing it changes no output, when
//   - nothing reads it: its consumer's input columns are all zero (for a recurrent unit also its
//     own column of W_hh, through which the other units of its layer read it), or
//   - it is constantly zero: no incoming weight, a zero bias, and only zero-preserving layers
//     (ReLU, Tanh, pooling, zero padding, Dropout, Flatten, a sequence mean) before its consumer.
//     An LSTM or GRU unit with zero rows in W_ih and W_hh and zero biases stays at h = 0 (LSTM:
//     i = f = o = 1/2, g = 0, so c stays 0; GRU: n = 0, h_t = z h_{t-1} = 0).
// Units of the model's output are never dead; every layer keeps at least one unit. The walk
// follows the containers thin follows (DeepSense's TimeDistributed and SensorStack): channel c of
// a SensorStack is read if its consumer reads it and zero only if it is zero in every sensor, so
// the sensors' last producers lose the same channels, as thin requires.
//
//   auto removed = structure::remove_dead_units(model);   // model thinned in place, repeatedly
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "slimnet/structure/thin.hpp"

namespace slimnet::structure {

struct dead_unit_options {
  /// Also count as dead a unit with no incoming weight whose bias is not zero (DyNS-Ext's rule,
  /// which prunes weights only): it adds an input-independent, bias-driven signal, so removing it
  /// is not exact and the model is usually fine-tuned afterwards.
  bool ignore_biases = false;
};

namespace detail {

/// Walks a model like thinner, tracking the last producer's units: where each output unit comes
/// from (selection key, unit), whether it is still exactly zero, and which ones a consumer reads.
template <class Scalar>
class dead_unit_finder {
 public:
  explicit dead_unit_finder(dead_unit_options o) : o_(o) {}

  unit_selection run(nn::sequential<Scalar>& model) {
    walk(model, "");
    keep_pending();  // the model's outputs
    // Each layer keeps at least one unit: the first one if all are dead.
    for (auto& [key, keep] : dead_) {
      if (std::none_of(keep.begin(), keep.end(), [](bool k) { return k; })) keep.front() = true;
    }
    unit_selection out;
    for (auto& [key, keep] : dead_)
      if (std::any_of(keep.begin(), keep.end(), [](bool k) { return !k; })) out[key] = keep;
    return out;
  }

 private:
  struct origin {
    std::string key;
    index_t unit;
  };

  void walk(nn::sequential<Scalar>& model, const std::string& prefix) {
    for (std::size_t i = 0; i < model.size(); ++i) walk_layer(model[i], prefix + model.local_name(i));
  }

  /// Containers as structure::thin follows them (see thin.hpp's header comment).
  void walk_layer(nn::layer<Scalar>& l, const std::string& path) {
    if (auto* seq = dynamic_cast<nn::sequential<Scalar>*>(&l)) {
      walk(*seq, path + ".");
    } else if (auto* td = dynamic_cast<nn::time_distributed<Scalar>*>(&l)) {
      if (p_.active && td->step_shape().size() != 1) keep_pending();
      walk_layer(td->inner(), path);
      if (p_.active) p_.flattened = p_.per_step = true;  // (N, T, C*H*W): channel-major blocks per step
    } else if (auto* ss = dynamic_cast<nn::sensor_stack<Scalar>*>(&l)) {
      sensors(*ss, path);
    } else {
      visit(l, path);
    }
  }

  /// The stack's channel c is channel c of every sensor: its origins are all of theirs, it is
  /// zero if it is zero in every sensor, and a consumer that reads it reads all of them.
  void sensors(nn::sensor_stack<Scalar>& ss, const std::string& path) {
    struct state {
      pending_units<Scalar> p;
      std::vector<std::vector<origin>> origins;
      std::vector<bool> zero, self;
    };
    const state entry{p_, origins_, zero_, self_read_};
    std::vector<state> ends;
    for (std::size_t k = 0; k < ss.size(); ++k) {
      std::tie(p_, origins_, zero_, self_read_) = std::tie(entry.p, entry.origins, entry.zero, entry.self);
      walk_layer(ss[k], path + "." + ss.branch_name(k));
      ends.push_back({p_, origins_, zero_, self_read_});
    }
    const bool alike = std::all_of(ends.begin(), ends.end(), [&](const state& e) {
      return e.p.active && !e.p.flattened && e.p.total == ends.front().p.total;
    });
    if (!alike) {  // thin refuses such a stack: keep every unit that reaches it
      for (auto& e : ends) {
        std::tie(p_, origins_, zero_, self_read_) = std::tie(e.p, e.origins, e.zero, e.self);
        keep_pending();
      }
      return;
    }
    std::tie(p_, origins_, zero_, self_read_) = std::tie(ends[0].p, ends[0].origins, ends[0].zero, ends[0].self);
    for (std::size_t k = 1; k < ends.size(); ++k)
      for (std::size_t u = 0; u < origins_.size(); ++u) {
        origins_[u].insert(origins_[u].end(), ends[k].origins[u].begin(), ends[k].origins[u].end());
        zero_[u] = zero_[u] && ends[k].zero[u];
        self_read_[u] = self_read_[u] || ends[k].self[u];
      }
  }

  static bool all_zero(const Scalar* p, index_t n, index_t stride = 1) {
    for (index_t k = 0; k < n; ++k)
      if (p[k * stride] != Scalar(0)) return false;
    return true;
  }
  /// Input column c of a weight (rows x in x inner...) is zero in every row.
  static bool column_zero(const tensor<Scalar>& w, index_t c) {
    const index_t rows = w.dim(0), in = w.dim(1), inner = w.size() / (rows * in);
    for (index_t r = 0; r < rows; ++r)
      if (!all_zero(w.data() + (r * in + c) * inner, inner)) return false;
    return true;
  }
  static bool row_zero(const tensor<Scalar>& w, index_t r) {
    const index_t len = w.size() / w.dim(0);
    return all_zero(w.data() + r * len, len);
  }
  bool entry_zero(nn::parameter<Scalar>* b, index_t r) const {
    return o_.ignore_biases || b == nullptr || b->value()[r] == Scalar(0);
  }

  /// The pending units' reads by a consumer with weight `w` (input columns along dim 1).
  void consume(const tensor<Scalar>& w, const std::string& path, bool conv) {
    if (!p_.active) return;
    std::vector<index_t> cols;
    std::vector<Scalar> unused;
    if (conv) {
      cols = p_.sel;
    } else {
      consumer_columns(p_, w.dim(1), path, cols, unused);
    }
    const std::size_t per_unit = cols.size() / p_.sel.size();
    for (std::size_t u = 0; u < p_.sel.size(); ++u) {
      bool read = false;
      for (std::size_t b = 0; b < per_unit && !read; ++b) {
        const std::size_t k = p_.unit_inner ? b * p_.sel.size() + u : u * per_unit + b;
        read = !column_zero(w, cols[k]);
      }
      const bool dead = (!read && !self_read_[u]) || zero_[u];
      if (!dead)
        for (const origin& o : origins_[u]) dead_.at(o.key)[static_cast<std::size_t>(o.unit)] = true;  // true: keep
    }
    p_.active = false;
  }

  /// The layer's units become the pending ones: `keys[u]` and `zero[u]` per output unit.
  void produce(std::vector<origin> origins, std::vector<bool> zero, std::vector<bool> self_read) {
    p_ = {};
    p_.active = true;
    p_.total = static_cast<index_t>(origins.size());
    for (index_t j = 0; j < p_.total; ++j) p_.sel.push_back(j);
    p_.scale.assign(origins.size(), Scalar(1));
    for (const auto& o : origins) {
      auto& keep = dead_[o.key];
      if (keep.empty()) keep.assign(static_cast<std::size_t>(count_[o.key]), false);
    }
    origins_.clear();
    for (auto& o : origins) origins_.push_back({std::move(o)});
    zero_ = std::move(zero);
    self_read_ = std::move(self_read);
  }

  /// A layer that nothing below reads as units (the output, or a layer the walk does not follow):
  /// every pending unit is kept.
  void keep_pending() {
    if (!p_.active) return;
    for (const auto& unit : origins_)
      for (const auto& o : unit) dead_.at(o.key)[static_cast<std::size_t>(o.unit)] = true;
    p_.active = false;
  }

  template <class Cell>
  void stack(nn::recurrent<Scalar, Cell>& r, const std::string& path, const std::string& suffix, std::vector<origin>& top,
             std::vector<bool>& top_zero, std::vector<bool>& top_self) {
    for (index_t k = 0; k < r.num_layers(); ++k) {
      const std::string key = fmt::format("{}.l{}{}", path, k, suffix);
      const index_t h = r.hidden_size(k);
      count_[key] = h;
      auto& keep = dead_[key];
      keep.assign(static_cast<std::size_t>(h), false);
      const auto& w_ih = r.weight_ih(k).value();
      const auto& w_hh = r.weight_hh(k).value();
      for (index_t j = 0; j < h; ++j) {
        bool no_in = true;
        for (index_t g = 0; g < Cell::gates && no_in; ++g) {
          const index_t row = g * h + j;
          no_in = row_zero(w_ih, row) && row_zero(w_hh, row) && entry_zero(r.bias_ih(k), row) && entry_zero(r.bias_hh(k), row);
        }
        const bool self = !column_zero(w_hh, j);
        if (k + 1 < r.num_layers()) {
          const bool read = self || !column_zero(r.weight_ih(k + 1).value(), j);
          if (read && !no_in) keep[static_cast<std::size_t>(j)] = true;
        } else {
          top.push_back({key, j});
          top_zero.push_back(no_in);
          top_self.push_back(self);
        }
      }
    }
  }
  void direction(nn::recurrent_layer<Scalar>& d, const std::string& path, const std::string& suffix, std::vector<origin>& top,
                 std::vector<bool>& zero, std::vector<bool>& self) {
    if (auto* l = dynamic_cast<nn::lstm<Scalar>*>(&d)) return stack(*l, path, suffix, top, zero, self);
    if (auto* g = dynamic_cast<nn::gru<Scalar>*>(&d)) return stack(*g, path, suffix, top, zero, self);
    slimnet::detail::raise<config_error>("slimnet::structure::dead_units", "recurrent layer '{}' is a {}, not an LSTM or GRU", path, d.kind());
  }

  void visit(nn::layer<Scalar>& l, const std::string& path) {
    if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) {
      consume(lin->weight().value(), path, false);
      linear_like(lin->weight().value(), lin->bias(), path);
      return;
    }
    if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) {
      if (p_.active && p_.flattened) keep_pending();
      consume(conv->weight().value(), path, true);
      linear_like(conv->weight().value(), conv->bias(), path);
      return;
    }
    auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&l);
    auto* rec = dynamic_cast<nn::recurrent_layer<Scalar>*>(&l);
    if (bi || rec) {
      if (p_.active && p_.flattened && !p_.per_step) keep_pending();
      std::vector<origin> top;
      std::vector<bool> zero, self;
      nn::sequence_output mode{};
      if (bi) {
        consume_recurrent_input(bi->forward_layer(), bi->backward_layer(), path);
        direction(bi->forward_layer(), path, "", top, zero, self);
        direction(bi->backward_layer(), path, "_reverse", top, zero, self);
        mode = bi->forward_layer().output();
      } else {
        consume_recurrent_input(*rec, *rec, path);
        direction(*rec, path, "", top, zero, self);
        mode = rec->output();
      }
      produce(std::move(top), std::move(zero), std::move(self));
      p_.unit_inner = mode == nn::sequence_output::all_steps;
      return;
    }
    if (!p_.active) return;
    const bool bn = is<nn::batch_norm<Scalar>>(l), sigmoid = is<nn::sigmoid<Scalar>>(l);
    if (is<nn::flatten<Scalar>>(l)) {
      if (p_.per_step) return keep_pending();  // (N, T, F) -> (N, T*F): thin does not follow it
      p_.flattened = true;
    } else if (is<nn::sequence_mean<Scalar>>(l)) {
      if (p_.flattened && !p_.per_step) return keep_pending();
      p_.per_step = p_.unit_inner = false;  // the mean of zeros is zero
    } else if (bn || sigmoid) {
      if (bn && p_.flattened) return keep_pending();
      zero_.assign(zero_.size(), false);  // BN(0) = beta - gamma mean / sd and sigmoid(0) = 1/2
    } else if (!(is<nn::relu<Scalar>>(l) || is<nn::tanh<Scalar>>(l) || is<nn::max_pool2d<Scalar>>(l) ||
                 is<nn::avg_pool2d<Scalar>>(l) || is<nn::dropout<Scalar>>(l) || is<nn::zero_pad2d<Scalar>>(l))) {
      keep_pending();  // a layer that mixes units: its inputs all count as read
    }
  }

  template <class T>
  static bool is(const nn::layer<Scalar>& l) {
    return dynamic_cast<const T*>(&l) != nullptr;
  }

  void linear_like(const tensor<Scalar>& w, nn::parameter<Scalar>* bias, const std::string& path) {
    const index_t units = w.dim(0);
    count_[path] = units;
    std::vector<origin> o;
    std::vector<bool> zero;
    for (index_t j = 0; j < units; ++j) {
      o.push_back({path, j});
      zero.push_back(row_zero(w, j) && entry_zero(bias, j));
    }
    produce(std::move(o), std::move(zero), std::vector<bool>(static_cast<std::size_t>(units), false));
  }

  void consume_recurrent_input(nn::recurrent_layer<Scalar>& a, nn::recurrent_layer<Scalar>& b, const std::string& path) {
    if (!p_.active) return;
    // Both directions read the same input: a column is read if either direction's W_ih reads it.
    const tensor<Scalar> wa = first_input_weight(a), wb = first_input_weight(b);
    tensor<Scalar> both({wa.dim(0) + wb.dim(0), wa.dim(1)});
    std::copy_n(wa.data(), wa.size(), both.data());
    std::copy_n(wb.data(), wb.size(), both.data() + wa.size());
    consume(both, path, false);  // input columns: one per unit, or a block per unit out of a TimeDistributed
  }
  static tensor<Scalar> first_input_weight(nn::recurrent_layer<Scalar>& d) {
    if (auto* l = dynamic_cast<nn::lstm<Scalar>*>(&d)) return l->weight_ih(0).value();
    if (auto* g = dynamic_cast<nn::gru<Scalar>*>(&d)) return g->weight_ih(0).value();
    slimnet::detail::raise<config_error>("slimnet::structure::dead_units", "a recurrent layer that is not an LSTM or GRU ({})", d.kind());
    return {};
  }

  dead_unit_options o_;
  pending_units<Scalar> p_;
  std::vector<std::vector<origin>> origins_;  ///< per pending unit: the producers' units it is
  std::vector<bool> zero_, self_read_;
  std::map<std::string, std::vector<bool>> dead_;  // per key: true = keep
  std::map<std::string, index_t> count_;
};

}  // namespace detail

/// The units of `model` that can be removed without changing any output (see the header
/// comment), as a selection for structure::thin (only layers with such units appear).
template <class Scalar>
unit_selection dead_units(nn::sequential<Scalar>& model, const dead_unit_options& o = {}) {
  return detail::dead_unit_finder<Scalar>(o).run(model);
}

/// Removes dead units until none is left (removing one can leave another unread); returns how
/// many were removed. The weights must carry no transform (prune::remove_all first).
template <class Scalar>
index_t remove_dead_units(nn::sequential<Scalar>& model, const dead_unit_options& o = {}) {
  index_t removed = 0;
  for (;;) {
    const auto sel = dead_units(model, o);
    if (sel.empty()) return removed;
    for (const auto& entry : sel)
      for (bool k : entry.second) removed += k ? 0 : 1;
    model = thin(model, sel);
  }
}

}  // namespace slimnet::structure
