// DyNS-Ext (DeepIoT, Yao et al. SenSys 2017, §5.1): the paper's extension of Dynamic Network
// Surgery to recurrent layers, its baseline for the Bi-LSTM and DeepSense tables. Two steps around
// the caller's own training (train::fit; the DNS transforms do the surgery after every step):
//
//   auto run = prune::attach_dyns_ext(model, o);   // DNS on every recurrent matrix and Linear weight
//   train::fit(model, opt, loss, data, fit_options);   // min L(W * T), surgery with prob. (1 + gamma k)^-power
//   auto report = run.finish(model);               // W <- W * T, then the dead hidden units removed
//
// attach: every weight_ih_l{k} / weight_hh_l{k} of every recurrent layer (LSTM, GRU; both
// directions of a Bidirectional, however deeply nested in Sequentials) and every Linear weight gets
// its own DNS group (prune::attach_dns): per matrix, t = max(mu + c_rate sigma, 0) over its nonzero
// |w|, prune at a = 0.9 t, splice above b = 1.1 t. One c_rate for the recurrent matrices, one for
// the Linear ones (the paper tunes them per kind: "DyNS searches the optimal thresholds
// separately"). Biases are never masked: DeepIoT's tables count weights only. The seed of the k-th
// matrix (in visiting order) is seed + k, so the matrices draw their surgery decisions
// independently. With prune_recurrent = false it is plain DyNS on a recurrent net (the recurrent
// layers stay dense, as the paper's DyNS rows for DeepSense leave its GRUs at 100%).
//
// finish: bakes W * T (prune::remove) into every matrix it attached to, then removes hidden units
// with no incoming weights (a unit's G gate rows of W_ih and W_hh all zero) or no outgoing ones
// (its column of W_hh and of the next layer's input weights, or of the classifier, all zero),
// repeatedly, through structure::remove_dead_units. By default biases are ignored, DyNS-Ext's
// rule: a unit whose incoming weights are all pruned still emits a bias-driven, input-independent
// signal, so its removal may move the outputs (exact when its biases are zero), and the caller
// usually fine-tunes. The report gives, per layer, the units before and after and, per matrix,
// its size before and the nonzero weights after.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/recurrent.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/prune/dns.hpp"
#include "slimnet/prune/transform.hpp"
#include "slimnet/structure/dead_units.hpp"

namespace slimnet::prune {

/// Which matrices DyNS-Ext prunes and the DNS settings it gives them.
struct dyns_ext_options {
  bool prune_recurrent = true;    ///< weight_ih_l{k} / weight_hh_l{k} of LSTMs and GRUs (false: plain DyNS)
  bool prune_linear = true;       ///< the weight of every Linear layer
  double recurrent_c_rate = 3.0;  ///< t = max(mu + c_rate sigma, 0) for the recurrent matrices
  double linear_c_rate = 1.0;     ///< ... and for the Linear weights
  double gamma = 1e-4;            ///< surgery probability (1 + gamma k)^-power at training step k
  double power = 1.0;
  index_t iter_stop = 10000;   ///< no surgery from this training step on (masks fixed, weights still learn)
  double prune_factor = 0.9;   ///< a = prune_factor t
  double splice_factor = 1.1;  ///< b = splice_factor t
  std::uint64_t seed = 1;      ///< the k-th matrix's generator is seeded with seed + k

  /// The DNS options of one matrix.
  dns_options dns(bool recurrent, std::uint64_t k) const {
    dns_options o;
    o.c_rate = recurrent ? recurrent_c_rate : linear_c_rate;
    o.gamma = gamma;
    o.power = power;
    o.iter_stop = iter_stop;
    o.prune_factor = prune_factor;
    o.splice_factor = splice_factor;
    o.include_bias = false;
    o.seed = seed + k;
    return o;
  }

  void validate(const char* function = "slimnet::prune::dyns_ext_options") const {
    if (!prune_recurrent && !prune_linear)
      slimnet::detail::raise<config_error>(function, "prune_recurrent and prune_linear are both false: nothing to prune");
    dns(true, 0).validate(function);
    dns(false, 0).validate(function);
  }
};

/// One pruned matrix: its size before and the nonzero weights it keeps after finish (0 and absent
/// from the model if thinning removed all of it, which cannot happen: every layer keeps a unit).
struct dyns_ext_matrix {
  std::string name;  ///< parameter name, e.g. "bilstm.weight_hh_l0_reverse" or "fc.weight"
  bool recurrent = false;
  index_t size_before = 0;  ///< entries before pruning and thinning
  index_t size_after = 0;   ///< entries of the thinned dense matrix
  index_t kept = 0;         ///< nonzero entries after finish
};

/// Hidden units of one recurrent layer (one direction of one stacked layer) or outputs of a Linear.
struct dyns_ext_layer {
  std::string name;  ///< "bilstm.l0", "bilstm.l0_reverse" (as structure::dead_units names them), "fc"
  bool recurrent = false;
  index_t units_before = 0;
  index_t units_after = 0;
};

struct dyns_ext_report {
  std::vector<dyns_ext_layer> layers;
  std::vector<dyns_ext_matrix> matrices;
  index_t units_removed = 0;   ///< hidden units removed by structure::remove_dead_units
  index_t weights_before = 0;  ///< entries of the pruned matrices before
  index_t weights_kept = 0;    ///< their nonzero entries after finish
  double kept_fraction() const { return weights_before > 0 ? static_cast<double>(weights_kept) / static_cast<double>(weights_before) : 0.0; }
};

/// What finish does after baking W * T.
struct dyns_ext_finish_options {
  bool remove_dead_units = true;  ///< thin the model (false: only bake the masks)
  bool ignore_biases = true;      ///< DyNS-Ext's rule (see the header comment); false: only exact removals
};

namespace detail {
/// "weight_hh_l0_reverse" -> "l0_reverse": the suffix that names a stacked layer and direction.
inline std::string dyns_ext_unit_suffix(const std::string& local_name) { return local_name.substr(std::string("weight_hh_").size()); }
inline bool dyns_ext_starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace detail

/// The matrices DyNS-Ext put under DNS in one model, and the step that ends it (finish).
template <class Scalar>
class dyns_ext_run {
 public:
  struct entry {
    nn::parameter<Scalar>* parameter;
    std::string name;
    bool recurrent;
    index_t size;
    std::shared_ptr<dns_group<Scalar>> group;
  };

  const std::vector<entry>& entries() const { return entries_; }
  const std::vector<dyns_ext_layer>& layers() const { return layers_; }
  bool finished() const { return finished_; }

  /// Entries of the pruned matrices.
  index_t total() const {
    index_t n = 0;
    for (const auto& e : entries_) n += e.size;
    return n;
  }
  /// Nonzero entries of W * T over the pruned matrices now (during training: the live masks).
  index_t kept() const {
    check_live("slimnet::prune::dyns_ext_run::kept");
    index_t n = 0;
    for (const auto& e : entries_) n += (masked_weight(*e.parameter).flat().array() != Scalar(0)).count();
    return n;
  }

  /// Bakes W * T into every attached matrix, removes the dead hidden units (model is replaced by
  /// its thinned copy, so references into it are invalid afterwards) and reports per layer and
  /// matrix. Throws config_error if called twice or if a matrix lost its DNS mask meanwhile (its
  /// zeros would not be DyNS-Ext's), shape_error if `model` is not the one attached to.
  dyns_ext_report finish(nn::sequential<Scalar>& model, const dyns_ext_finish_options& o = {}) {
    constexpr const char* fn = "slimnet::prune::dyns_ext_run::finish";
    check_live(fn);
    // The model must hold exactly the parameters attach() saw (same objects).
    std::vector<const nn::parameter<Scalar>*> present;
    model.visit_parameters([&](nn::parameter<Scalar>& p) { present.push_back(&p); });
    for (const auto& e : entries_) {
      if (std::find(present.begin(), present.end(), e.parameter) == present.end())
        slimnet::detail::raise<shape_error>(fn, "parameter '{}' of the DyNS-Ext run is not in this model (a copy?)", e.name);
      if (dynamic_cast<dns_transform<Scalar>*>(find_mask(*e.parameter)) == nullptr)
        slimnet::detail::raise<config_error>(fn, "parameter '{}' no longer carries its DNS mask", e.name);
    }
    for (const auto& e : entries_) remove(*e.parameter);  // W <- W * T
    finished_ = true;
    dyns_ext_report r;
    if (o.remove_dead_units) r.units_removed = structure::remove_dead_units(model, {o.ignore_biases});
    // Read the (possibly thinned) model back by name: thin keeps parameter and layer names.
    std::vector<dyns_ext_layer> after;
    std::vector<nn::parameter<Scalar>*> params;
    collect(model, after, params);
    for (const auto& l : layers_) {
      dyns_ext_layer x = l;
      for (const auto& a : after)
        if (a.name == l.name) x.units_after = a.units_before;
      r.layers.push_back(x);
    }
    for (const auto& e : entries_) {
      dyns_ext_matrix m;
      m.name = e.name;
      m.recurrent = e.recurrent;
      m.size_before = e.size;
      for (auto* p : params) {
        if (p->name() != e.name) continue;
        m.size_after = p->size();
        m.kept = (p->value().flat().array() != Scalar(0)).count();
      }
      r.weights_before += m.size_before;
      r.weights_kept += m.kept;
      r.matrices.push_back(m);
    }
    entries_.clear();  // the parameters may be gone (thinned copies replaced them)
    return r;
  }

  /// The layers with units (recurrent: one entry per stacked layer and direction, from weight_hh;
  /// Linear: its outputs) and the matrices DyNS-Ext can prune, in visiting order.
  static void collect(nn::layer<Scalar>& model, std::vector<dyns_ext_layer>& layers, std::vector<nn::parameter<Scalar>*>& matrices) {
    model.visit_layers([&](nn::layer<Scalar>& l) {
      if (auto* rec = dynamic_cast<nn::recurrent_layer<Scalar>*>(&l)) {
        rec->visit_parameters([&](nn::parameter<Scalar>& p) {
          const std::string& n = p.local_name();
          if (p.value().rank() != 2) return;
          if (detail::dyns_ext_starts_with(n, "weight_ih_") || detail::dyns_ext_starts_with(n, "weight_hh_")) matrices.push_back(&p);
          if (detail::dyns_ext_starts_with(n, "weight_hh_")) {
            const std::string& full = p.name();
            const std::string prefix = full.substr(0, full.size() - n.size());  // "bilstm." or ""
            layers.push_back({prefix + detail::dyns_ext_unit_suffix(n), true, p.value().dim(1), p.value().dim(1)});
          }
        });
      } else if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) {
        matrices.push_back(&lin->weight());
        layers.push_back({lin->name(), false, lin->weight().value().dim(0), lin->weight().value().dim(0)});
      }
    });
  }

 private:
  template <class S>
  friend dyns_ext_run<S> attach_dyns_ext(nn::sequential<S>& model, const dyns_ext_options& o);

  void check_live(const char* fn) const {
    if (finished_) slimnet::detail::raise<config_error>(fn, "this DyNS-Ext run is already finished");
  }

  std::vector<entry> entries_;
  std::vector<dyns_ext_layer> layers_;
  bool finished_ = false;
};

/// Puts every recurrent weight matrix and every Linear weight of `model` under DNS (see the header
/// comment); the masks are set on return (DNS's surgery of iteration 0). Throws config_error for
/// bad options, a model without any such matrix, or a matrix that already carries a pruning mask
/// (then nothing is attached).
template <class Scalar>
dyns_ext_run<Scalar> attach_dyns_ext(nn::sequential<Scalar>& model, const dyns_ext_options& o) {
  constexpr const char* fn = "slimnet::prune::attach_dyns_ext";
  o.validate(fn);
  dyns_ext_run<Scalar> run;
  std::vector<nn::parameter<Scalar>*> all;
  dyns_ext_run<Scalar>::collect(model, run.layers_, all);
  std::vector<nn::parameter<Scalar>*> chosen;
  for (auto* p : all) {
    const bool recurrent = p->local_name() != "weight";
    if (recurrent ? o.prune_recurrent : o.prune_linear) chosen.push_back(p);
  }
  if (chosen.empty()) {
    slimnet::detail::raise<config_error>(fn, "the model has no {} weight matrix to prune (only LSTM, GRU and Linear layers are pruned)",
                                         o.prune_recurrent && o.prune_linear ? "recurrent or Linear"
                                         : o.prune_recurrent               ? "recurrent"
                                                                           : "Linear");
  }
  for (auto* p : chosen)
    if (is_pruned(*p)) slimnet::detail::raise<config_error>(fn, "parameter '{}' already carries a pruning mask; prune::remove it first", p->name());
  std::uint64_t k = 0;
  for (auto* p : chosen) {
    const bool recurrent = p->local_name() != "weight";
    auto group = attach_dns(*p, nullptr, o.dns(recurrent, k++), p->name());
    run.entries_.push_back({p, p->name(), recurrent, p->size(), std::move(group)});
  }
  return run;
}

}  // namespace slimnet::prune
