// Thinning: a smaller dense model in which removed units (a Linear's output features, a Conv2d's
// output channels, an LSTM / GRU's hidden units) are physically gone, together with everything
// coupled to them: their bias entries, the BatchNorm entries between them and their consumer, and
// the consumer's input columns (for Conv2d -> ... -> Flatten -> Linear the h*w columns of each
// removed channel). This is the one place that knows how layers shrink; DeepIoT's thinning (Yao et
// al. 2017, Section 4: "the compressed model is a smaller dense network"), structured magnitude
// pruning (prune/structured.hpp) and the removal of DyNS-Ext's dead units use it.
//
// The walk follows Sequentials, TimeDistributed and SensorStack (DeepSense, Yao et al. WWW 2017,
// nn/models_deepsense.hpp) with paths "<layer>.<child>" ("frames.sensors.acc.conv1"):
//   - TimeDistributed folds the T steps into the batch: its inner layers thin as usual, and on the
//     way out the per-step output (C, H, W) becomes the step's C*H*W features, channel-major, so a
//     recurrent layer after it loses the H*W input columns c*H*W .. (c+1)*H*W - 1 of a removed
//     channel c (DeepSense: 2 sensors x 4 positions = 8 columns of gru1 per merge-conv channel).
//   - SensorStack stacks the sensors' outputs on the height axis, channel by channel: channel c
//     of the stack is channel c of every sensor, so the sensors' last producers must keep the same
//     channels (the DeepSense compressor's one shared mask for [acc_conv3; gyro_conv3]), and the
//     consumer (the first merge conv) loses input channel c.
//
//   auto small = structure::thin(model, {{"fc1", keep_fc1}, {"conv2", keep_conv2}});
//   auto small = structure::thin(model, keep, {{"gate1", scales}});  // fold per-unit multipliers
//
// Removing unit j of a producer is exact when the consumer's input columns for j are zero (or the
// unit's output is constantly zero and nothing in between adds to it): thin(model) then computes
// what `model` computes with those columns zeroed (tests/structure/thin_test.cpp).
#pragma once

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequence_pool.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::structure {

/// Units to keep, by the layer's dotted path from the model being thinned ("fc1",
/// "block.conv2"): keep[path][j] is true if output unit j stays. A recurrent layer's stacked
/// layer k is "<path>.l<k>", the reversed direction of a Bidirectional "<path>.l<k>_reverse"
/// (PyTorch's parameter suffixes).
using unit_selection = std::map<std::string, std::vector<bool>>;

/// Per-unit multipliers to fold into the next consumer and remove, by the path of the layer that
/// applies them (y = x * s per unit, e.g. a DeepIoT gate in hard mode); its units are those of the
/// producer before it.
template <class Scalar>
using unit_scales = std::map<std::string, std::vector<Scalar>>;

namespace detail {

/// Indices of the true entries.
inline std::vector<index_t> kept_indices(const std::vector<bool>& keep) {
  std::vector<index_t> idx;
  for (std::size_t j = 0; j < keep.size(); ++j)
    if (keep[j]) idx.push_back(static_cast<index_t>(j));
  return idx;
}

/// rows (dim 0) `rows` of t, scaled columns along dim 1 (the rest of each row kept whole).
template <class Scalar>
tensor<Scalar> take(const tensor<Scalar>& t, const std::vector<index_t>* rows, const std::vector<index_t>* cols,
                    const std::vector<Scalar>* col_scale) {
  const index_t r0 = t.dim(0), c0 = t.rank() > 1 ? t.dim(1) : 1;
  const index_t inner = t.rank() > 1 ? t.size() / (r0 * c0) : 1;
  const index_t nr = rows ? static_cast<index_t>(rows->size()) : r0, nc = cols ? static_cast<index_t>(cols->size()) : c0;
  shape_t s = t.shape();
  s[0] = nr;
  if (t.rank() > 1) s[1] = nc;
  tensor<Scalar> out(s);
  for (index_t r = 0; r < nr; ++r) {
    const index_t sr = rows ? (*rows)[static_cast<std::size_t>(r)] : r;
    for (index_t c = 0; c < nc; ++c) {
      const index_t sc = cols ? (*cols)[static_cast<std::size_t>(c)] : c;
      const Scalar f = col_scale ? (*col_scale)[static_cast<std::size_t>(c)] : Scalar(1);
      const Scalar* src = t.data() + (sr * c0 + sc) * inner;
      Scalar* dst = out.data() + (r * nc + c) * inner;
      for (index_t k = 0; k < inner; ++k) dst[k] = src[k] * f;
    }
  }
  return out;
}

/// The units a consumer sees: kept original indices, their pending factor, and how many the
/// producer had; after a Flatten each unit owns a block of columns.
template <class Scalar>
struct pending_units {
  bool active = false;
  index_t total = 0;
  std::vector<index_t> sel;
  std::vector<Scalar> scale;
  bool flattened = false;
  bool unit_inner = false;  ///< (N, T, H) flattened: column t*H + j (else j*block + b, as (C, H, W))
  bool per_step = false;    ///< flattened per step of a sequence (out of a TimeDistributed): (N, T, F)
  bool scaled() const {
    return std::any_of(scale.begin(), scale.end(), [](Scalar s) { return s != Scalar(1); });
  }
};

/// The consumer's input columns of the pending units `p`, each with its unit's factor (a Linear
/// after a Flatten: a block of columns per unit, unit-major for (C, H, W), unit-innermost for
/// (T, H)); `inputs` is the consumer's input width.
template <class Scalar>
void consumer_columns(const pending_units<Scalar>& p, index_t inputs, const std::string& path, std::vector<index_t>& cols,
                      std::vector<Scalar>& scale) {
  constexpr const char* fn = "slimnet::structure::thin";
  if (inputs % p.total != 0)
    slimnet::detail::raise<config_error>(fn, "layer '{}' has {} inputs, not a multiple of the {} units before it", path, inputs, p.total);
  const index_t block = inputs / p.total;
  if (block != 1 && !p.flattened) slimnet::detail::raise<config_error>(fn, "layer '{}' has {} inputs for {} units", path, inputs, p.total);
  if (p.unit_inner) {
    for (index_t b = 0; b < block; ++b)
      for (std::size_t k = 0; k < p.sel.size(); ++k) cols.push_back(b * p.total + p.sel[k]), scale.push_back(p.scale[k]);
  } else {
    for (std::size_t k = 0; k < p.sel.size(); ++k)
      for (index_t b = 0; b < block; ++b) cols.push_back(p.sel[k] * block + b), scale.push_back(p.scale[k]);
  }
}

template <class Scalar>
class thinner {
 public:
  thinner(const unit_selection& keep, const unit_scales<Scalar>& scales) : keep_(keep), scales_(scales) {}

  nn::sequential<Scalar> run(const nn::sequential<Scalar>& model) {
    nn::sequential<Scalar> out = walk(model, "");
    for (const auto& entry : keep_)
      if (!used_.count(entry.first)) slimnet::detail::raise<config_error>(fn, "no Linear, Conv2d or recurrent layer '{}' in the model", entry.first);
    for (const auto& entry : scales_)
      if (!used_.count(entry.first)) slimnet::detail::raise<config_error>(fn, "no layer '{}' to fold scales from", entry.first);
    if (p_.active) slimnet::detail::raise<config_error>(fn, "the model's output would lose units (its last producer is thinned)");
    return out;
  }

 private:
  static constexpr const char* fn = "slimnet::structure::thin";

  nn::sequential<Scalar> walk(const nn::sequential<Scalar>& model, const std::string& prefix) {
    nn::sequential<Scalar> out;
    out.set_name(model.name());
    for (std::size_t i = 0; i < model.size(); ++i) {
      auto l = rebuild(model[i], prefix + model.local_name(i));
      if (l) out.add_ptr(model.local_name(i), std::move(l));  // null: a multiplier folded away
    }
    return out;
  }

  /// The thinned copy of `src` (containers rebuilt from their thinned children), or null for a
  /// multiplier layer whose scales went into the consumer's columns.
  std::unique_ptr<nn::layer<Scalar>> rebuild(const nn::layer<Scalar>& src, const std::string& path) {
    if (auto* seq = dynamic_cast<const nn::sequential<Scalar>*>(&src))
      return std::make_unique<nn::sequential<Scalar>>(walk(*seq, path + "."));
    if (auto* td = dynamic_cast<const nn::time_distributed<Scalar>*>(&src)) return rebuild_time_distributed(*td, path);
    if (auto* ss = dynamic_cast<const nn::sensor_stack<Scalar>*>(&src)) return rebuild_sensor_stack(*ss, path);
    if (scales_.count(path)) {
      fold_scales(path);
      return nullptr;
    }
    auto copy = src.clone();
    visit(*copy, path);
    return copy;
  }

  std::unique_ptr<nn::layer<Scalar>> rebuild_time_distributed(const nn::time_distributed<Scalar>& td, const std::string& path) {
    // (F) steps: the inner layer sees the pending units as its input features.
    if (p_.active && td.step_shape().size() != 1) {
      slimnet::detail::raise<config_error>(fn,
                                           "the units of a thinned layer feed TimeDistributed '{}', whose steps are {} tensors",
                                           path, shape_string(td.step_shape()));
    }
    auto inner = rebuild(td.inner(), path);
    if (!inner) slimnet::detail::raise<config_error>(fn, "TimeDistributed '{}' would be left without its inner layer", path);
    // (N*T, C, H, W) or (N*T, F) out of the inner layer is unfolded to (N, T, C*H*W): channel-major
    // blocks per step, as a Flatten would make them, and the steps stay a sequence.
    if (p_.active) p_.flattened = p_.per_step = true;
    return std::make_unique<nn::time_distributed<Scalar>>(std::move(inner), td.step_shape());
  }

  std::unique_ptr<nn::layer<Scalar>> rebuild_sensor_stack(const nn::sensor_stack<Scalar>& ss, const std::string& path) {
    if (p_.active && p_.flattened) slimnet::detail::raise<config_error>(fn, "SensorStack '{}' after a Flatten", path);
    const pending_units<Scalar> entry = p_;  // every sensor's slice has the same channels
    pending_units<Scalar> first;
    auto out = std::make_unique<nn::sensor_stack<Scalar>>();
    for (std::size_t k = 0; k < ss.size(); ++k) {
      p_ = entry;
      const std::string branch = path + "." + ss.branch_name(k);
      auto b = rebuild(ss[k], branch);
      if (!b) slimnet::detail::raise<config_error>(fn, "sensor '{}' would be left without layers", branch);
      if (p_.active && p_.flattened)
        slimnet::detail::raise<config_error>(fn, "sensor '{}' flattens its output: the stack needs (C, H, W)", branch);
      if (k == 0) {
        first = p_;
      } else if (!same_units(first, p_)) {
        slimnet::detail::raise<config_error>(
            fn,
            "sensors '{}' and '{}' of '{}' end with different units ({} and {} of {} / {} kept): the stack concatenates them channel "
            "by channel, so their last producers must keep the same channels with the same multipliers",
            ss.branch_name(0), ss.branch_name(k), path, first.active ? first.sel.size() : static_cast<std::size_t>(first.total),
            p_.active ? p_.sel.size() : static_cast<std::size_t>(p_.total), first.total, p_.total);
      }
      if (p_.active) first = p_;  // an unselected branch that keeps all: the selected one's record
      out->add_ptr(ss.branch_name(k), std::move(b));
    }
    p_ = first;
    return out;
  }

  /// Two branch ends keep the same units with the same factors (an inactive end keeps all of
  /// `total` unscaled).
  static bool same_units(const pending_units<Scalar>& a, const pending_units<Scalar>& b) {
    if (!a.active && !b.active) return true;
    if (a.total != b.total) return false;
    auto units = [](const pending_units<Scalar>& p) {
      if (p.active) return std::make_pair(p.sel, p.scale);
      std::vector<index_t> all;
      for (index_t j = 0; j < p.total; ++j) all.push_back(j);
      return std::make_pair(all, std::vector<Scalar>(all.size(), Scalar(1)));
    };
    return units(a) == units(b);
  }

  void fold_scales(const std::string& path) {
    used_.insert(path);
    const auto& s = scales_.at(path);
    if (!p_.active || p_.flattened || static_cast<index_t>(s.size()) != p_.total) {
      slimnet::detail::raise<config_error>(fn, "'{}' ({} scales) does not follow the {} units of a producer", path, s.size(),
                                           p_.active ? p_.total : 0);
    }
    for (std::size_t k = 0; k < p_.sel.size(); ++k) p_.scale[k] *= s[static_cast<std::size_t>(p_.sel[k])];
  }

  /// Kept output units of producer `path` with `units` outputs (all when not selected).
  std::vector<index_t> outputs_of(const std::string& path, index_t units, bool& selected) {
    selected = keep_.count(path) > 0;
    std::vector<index_t> idx;
    if (!selected) {
      for (index_t j = 0; j < units; ++j) idx.push_back(j);
      return idx;
    }
    used_.insert(path);
    const auto& k = keep_.at(path);
    if (static_cast<index_t>(k.size()) != units)
      slimnet::detail::raise<shape_error>(fn, "selection for '{}' has {} entries, the layer has {} units", path, k.size(), units);
    idx = kept_indices(k);
    if (idx.empty()) slimnet::detail::raise<config_error>(fn, "layer '{}' would keep no unit", path);
    return idx;
  }

  static void refuse_transforms(nn::parameter<Scalar>& p) {
    if (!p.transforms().empty())
      slimnet::detail::raise<config_error>(fn, "'{}' carries the transform '{}': bake or clear transforms before thinning (they are not resized)",
                                           p.name(), p.transforms().front()->name());
  }
  static void shrink(nn::parameter<Scalar>* p, const std::vector<index_t>* rows, const std::vector<index_t>* cols = nullptr,
                     const std::vector<Scalar>* scale = nullptr) {
    if (p == nullptr) return;
    refuse_transforms(*p);
    p->assign(take(p->value(), rows, cols, scale));
  }

  void produce(index_t total, std::vector<index_t> sel, bool selected) {
    p_ = {};
    p_.active = selected;
    p_.total = total;
    p_.scale.assign(sel.size(), Scalar(1));
    p_.sel = std::move(sel);
  }

  void visit(nn::layer<Scalar>& l, const std::string& path) {
    if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) {
      std::vector<index_t> cols;
      std::vector<Scalar> scale;
      if (p_.active) consumer_columns(p_, lin->in_features(), path, cols, scale);
      bool selected = false;
      auto rows = outputs_of(path, lin->out_features(), selected);
      const index_t total = lin->out_features();
      shrink(&lin->weight(), &rows, p_.active ? &cols : nullptr, p_.active ? &scale : nullptr);
      shrink(lin->bias(), &rows);
      produce(total, std::move(rows), selected);
      return;
    }
    if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) {
      if (p_.active && p_.flattened) slimnet::detail::raise<config_error>(fn, "conv layer '{}' after a Flatten", path);
      if (p_.active && conv->in_channels() != p_.total)
        slimnet::detail::raise<config_error>(fn, "layer '{}' has {} input channels for {} units", path, conv->in_channels(), p_.total);
      bool selected = false;
      auto outs = outputs_of(path, conv->out_channels(), selected);
      const index_t total = conv->out_channels();
      shrink(&conv->weight(), &outs, p_.active ? &p_.sel : nullptr, p_.active ? &p_.scale : nullptr);
      shrink(conv->bias(), &outs);
      produce(total, std::move(outs), selected);
      return;
    }
    if (dynamic_cast<nn::recurrent_layer<Scalar>*>(&l) || dynamic_cast<nn::bidirectional<Scalar>*>(&l)) {
      visit_recurrent(l, path);
      return;
    }
    if (keep_.count(path)) slimnet::detail::raise<config_error>(fn, "layer '{}' is a {}, not a Linear, Conv2d or recurrent layer", path, l.kind());
    if (!p_.active) return;
    if (auto* bn = dynamic_cast<nn::batch_norm<Scalar>*>(&l)) {
      // y = gamma (x - mean) / sqrt(var + eps) + beta does not commute with a unit's factor.
      if (p_.scaled() || p_.flattened) slimnet::detail::raise<config_error>(fn, "BatchNorm '{}' after a per-unit multiplier or a Flatten cannot be thinned", path);
      if (bn->features() != p_.total)
        slimnet::detail::raise<config_error>(fn, "BatchNorm '{}' has {} features for {} units", path, bn->features(), p_.total);
      for (auto* p : {&bn->weight(), &bn->bias(), &bn->running_mean(), &bn->running_var()}) shrink(p, &p_.sel);
      return;
    }
    auto unsupported = [&] {
      slimnet::detail::raise<config_error>(fn, "a {} ('{}') between a thinned layer and its consumer is not supported", l.kind(),
                                           path);
    };
    if (is<nn::flatten<Scalar>>(l)) {
      if (p_.per_step) unsupported();  // (N, T, F) -> (N, T*F) would interleave the steps
      p_.flattened = true;
      return;
    }
    if (is<nn::sequence_mean<Scalar>>(l)) {
      // A mean over the valid steps, feature by feature: linear, (N, T, F) -> (N, F).
      if (p_.flattened && !p_.per_step) unsupported();
      p_.per_step = p_.unit_inner = false;
      return;
    }
    // Per-unit layers pass the selection on; positively homogeneous ones commute with a factor
    // (relu(s x) = s relu(x) for s > 0, the same for pooling and zero padding), tanh and sigmoid
    // do not. Pooling and padding act on (C, H, W) maps, not on flattened features.
    const bool elementwise =
        is<nn::relu<Scalar>>(l) || is<nn::dropout<Scalar>>(l) || is<nn::tanh<Scalar>>(l) || is<nn::sigmoid<Scalar>>(l);
    const bool spatial = is<nn::max_pool2d<Scalar>>(l) || is<nn::avg_pool2d<Scalar>>(l) || is<nn::zero_pad2d<Scalar>>(l);
    const bool homogeneous = !(is<nn::tanh<Scalar>>(l) || is<nn::sigmoid<Scalar>>(l));
    if (!(elementwise || spatial) || (!homogeneous && p_.scaled()) || (p_.flattened && spatial)) unsupported();
  }

  template <class T>
  static bool is(const nn::layer<Scalar>& l) {
    return dynamic_cast<const T*>(&l) != nullptr;
  }

  /// A stack of LSTM / GRU layers (one direction): consumes the pending input features, removes
  /// selected hidden units of each stacked layer; returns the kept units of the top layer.
  template <class Cell>
  bool thin_stack(nn::recurrent<Scalar, Cell>& r, const std::string& path, const std::string& suffix, std::vector<index_t>& top) {
    if (p_.active) {
      auto& w = r.weight_ih(0);
      refuse_transforms(w);
      w.assign(take(w.value(), nullptr, &in_cols_, &in_scale_));
    }
    bool any = false;
    for (index_t k = 0; k < r.num_layers(); ++k) {
      const std::string key = fmt::format("{}.l{}{}", path, k, suffix);
      bool selected = false;
      auto units = outputs_of(key, r.hidden_size(k), selected);
      if (selected && static_cast<index_t>(units.size()) != r.hidden_size(k)) {
        for (index_t m = k; m < std::min(k + 2, r.num_layers()); ++m) {
          refuse_transforms(r.weight_ih(m));
          refuse_transforms(r.weight_hh(m));
        }
        r.keep_hidden_units(k, units);
      }
      if (k + 1 == r.num_layers()) {
        any = selected;
        top = std::move(units);
      }
    }
    return any;
  }
  bool thin_direction(nn::recurrent_layer<Scalar>& d, const std::string& path, const std::string& suffix, std::vector<index_t>& top) {
    if (auto* l = dynamic_cast<nn::lstm<Scalar>*>(&d)) return thin_stack(*l, path, suffix, top);
    if (auto* g = dynamic_cast<nn::gru<Scalar>*>(&d)) return thin_stack(*g, path, suffix, top);
    slimnet::detail::raise<config_error>(fn, "recurrent layer '{}' is a {}, not an LSTM or GRU", path, d.kind());
    return false;
  }

  void visit_recurrent(nn::layer<Scalar>& l, const std::string& path) {
    if (p_.active) {
      // Out of a TimeDistributed, each unit owns a block of the step's features.
      if (p_.flattened && !p_.per_step) slimnet::detail::raise<config_error>(fn, "recurrent layer '{}' after a Flatten", path);
      auto* bidir = dynamic_cast<nn::bidirectional<Scalar>*>(&l);
      const index_t in = bidir ? bidir->forward_layer().input_size() : dynamic_cast<nn::recurrent_layer<Scalar>&>(l).input_size();
      in_cols_.clear();
      in_scale_.clear();
      consumer_columns(p_, in, path, in_cols_, in_scale_);
    }
    std::vector<index_t> sel;
    index_t total = 0;
    bool selected = false;
    nn::sequence_output mode{};
    if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&l)) {
      const index_t hf = bi->forward_layer().output_size(), hb = bi->backward_layer().output_size();
      std::vector<index_t> f, b;
      selected = thin_direction(bi->forward_layer(), path, "", f);
      selected = thin_direction(bi->backward_layer(), path, "_reverse", b) || selected;
      sel = f;
      for (index_t j : b) sel.push_back(hf + j);
      total = hf + hb;
      mode = bi->forward_layer().output();
    } else {
      auto& r = dynamic_cast<nn::recurrent_layer<Scalar>&>(l);
      total = r.output_size();
      selected = thin_direction(r, path, "", sel);
      mode = r.output();
    }
    produce(total, std::move(sel), selected);
    p_.unit_inner = mode == nn::sequence_output::all_steps;  // (N, T, H): a Flatten puts units innermost
  }

  const unit_selection& keep_;
  const unit_scales<Scalar>& scales_;
  std::set<std::string> used_;
  pending_units<Scalar> p_;
  std::vector<index_t> in_cols_;  ///< the first recurrent layer's kept input columns
  std::vector<Scalar> in_scale_;
};

}  // namespace detail

/// `model` with the units not in `keep` removed (see the header comment), and the multipliers of
/// `scales` folded into the consumers' input columns and their layers removed. Between a producer
/// and its consumer only ReLU, Dropout, pooling, zero padding, Flatten, a TimeDistributed's
/// unfolding, a sequence mean, Tanh / Sigmoid (not after a multiplier) and BatchNorm (not after a
/// multiplier) may appear; sensors of a SensorStack must end with the same kept channels; anything else, unknown names, wrong
/// lengths, a layer left with no unit, removing the model's outputs, or thinning a parameter that carries a weight transform
/// throws config_error / shape_error. `model` is not changed.
template <class Scalar>
nn::sequential<Scalar> thin(const nn::sequential<Scalar>& model, const unit_selection& keep,
                            const unit_scales<Scalar>& scales = {}) {
  return detail::thinner<Scalar>(keep, scales).run(model);
}

}  // namespace slimnet::structure
