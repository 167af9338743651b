// Dynamic Network Surgery (Guo, Yao & Chen, NIPS 2016) as its authors' Caffe code does it
// (compress_{inner_product,conv}_layer): min L(W * T) over W, with the mask T updated by
//   h(w) = 0 if |w| <= a,  T unchanged if a < |w| <= b,  1 if |w| > b      (prune / splice)
// where, per layer, mu and sigma are the mean and population std of |w| over the nonzero weights
// AND biases of the layer, taken once at the start, t = max(mu + c_rate * sigma, 0), a = 0.9 t,
// b = 1.1 t. At training iteration `iter` each layer draws r ~ U[0, 1) and performs surgery iff
// (1 + gamma * iter)^(-power) > r and iter < iter_stop. The forward pass uses W * T, and W is
// updated with dL/d(W * T) for ALL entries (backward is the identity), so a pruned connection
// whose weight grows back past b is spliced in again.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/prune/mask.hpp"
#include "slimnet/prune/transform.hpp"

namespace slimnet::prune {

/// DNS settings of one layer. Defaults are the Caffe proto's (iter_stop there: 10,000 for
/// convolutions, 8,000 for fully connected layers); the authors' LeNet-5 example used
/// gamma 1e-4, c_rate 4 for ip1, iter_stop 14,000.
struct dns_options {
  double c_rate = 3.0;  ///< t = max(mu + c_rate * sigma, 0): larger prunes more
  double gamma = 1e-3;  ///< surgery probability (1 + gamma * iter)^(-power)
  double power = 1.0;
  index_t iter_stop = 10000;   ///< no surgery from this iteration on
  double prune_factor = 0.9;   ///< a = prune_factor * t
  double splice_factor = 1.1;  ///< b = splice_factor * t (>= prune_factor, else masks oscillate)
  bool include_bias = true;  ///< mask the bias too, with the same thresholds (as the authors' code)
  std::uint64_t seed = 1;    ///< the layer's generator for r

  void validate(const char* function = "slimnet::prune::dns_options") const {
    if (!std::isfinite(c_rate))
      slimnet::detail::raise<config_error>(function, "c_rate = {} must be finite", c_rate);
    if (!(gamma >= 0) || !std::isfinite(gamma) || !(power >= 0) || !std::isfinite(power)) {
      slimnet::detail::raise<config_error>(
          function, "gamma = {} and power = {} must be finite and >= 0", gamma, power);
    }
    if (iter_stop < 0)
      slimnet::detail::raise<config_error>(function, "iter_stop = {} must be >= 0", iter_stop);
    if (!(prune_factor > 0) || !(splice_factor >= prune_factor) || !std::isfinite(splice_factor)) {
      slimnet::detail::raise<config_error>(function,
                                           "need 0 < prune_factor <= splice_factor, got {} and {}",
                                           prune_factor, splice_factor);
    }
  }
};

/// The thresholds of one layer and the moments they come from.
struct dns_thresholds {
  double mean = 0;    ///< mu: mean |w| over nonzero entries
  double stddev = 0;  ///< sigma: population std of |w| over nonzero entries, sqrt(E[w^2] - mu^2)
  index_t count = 0;  ///< nonzero entries the moments were taken over
  double t = 0;       ///< max(mu + c_rate * sigma, 0)
  double a = 0;       ///< prune threshold
  double b = 0;       ///< splice threshold
};

/// Moments of |w| over the nonzero entries of all `weights` together and the thresholds.
template <class... W>
dns_thresholds dns_compute_thresholds(const dns_options& options, const W&... weights) {
  options.validate("slimnet::prune::dns_compute_thresholds");
  double sum = 0, sum_sq = 0;
  index_t n = 0;
  const auto add = [&](const auto& w) {
    detail::for_each_entry(w, [&](index_t, auto value) {
      const double v = static_cast<double>(value);
      if (v == 0) return;
      sum += std::abs(v);
      sum_sq += v * v;
      ++n;
    });
  };
  (add(weights), ...);
  dns_thresholds th;
  th.count = n;
  if (n > 0) {
    th.mean = sum / static_cast<double>(n);
    th.stddev = std::sqrt(std::max(0.0, sum_sq / static_cast<double>(n) - th.mean * th.mean));
  }
  th.t = std::max(th.mean + options.c_rate * th.stddev, 0.0);
  th.a = options.prune_factor * th.t;
  th.b = options.splice_factor * th.t;
  return th;
}

/// Probability that surgery happens at iteration `iter`: (1 + gamma * iter)^(-power).
inline double dns_surgery_probability(index_t iter, double gamma, double power) {
  return std::pow(1.0 + gamma * static_cast<double>(iter), -power);
}

struct surgery_counts {
  index_t pruned = 0;   ///< mask entries 1 -> 0
  index_t spliced = 0;  ///< mask entries 0 -> 1
};

/// One surgery on `mask` (shaped like w, 0/1): 1 -> 0 where |w| <= a, 0 -> 1 where |w| > b.
/// Unlike magnitude pruning, this mask may grow.
template <class W, class M>
surgery_counts dns_surgery(const W& w, M&& mask, double a, double b) {
  constexpr const char* fn = "slimnet::prune::dns_surgery";
  if (!(a >= 0) || !(b >= a))
    slimnet::detail::raise<config_error>(fn, "need 0 <= a <= b, got a = {} and b = {}", a, b);
  detail::alive_from_mask(w, mask, fn, "mask");  // shape and 0/1 checks
  const auto& wv = as_matrix(w);
  auto&& mv = as_matrix(mask);
  using S = typename std::decay_t<decltype(mv)>::Scalar;
  surgery_counts c;
  for (index_t i = 0; i < wv.rows(); ++i) {
    for (index_t j = 0; j < wv.cols(); ++j) {
      const double x = std::abs(static_cast<double>(wv(i, j)));
      if (mv(i, j) == S(1) && x <= a) {
        mv(i, j) = S(0);
        ++c.pruned;
      } else if (mv(i, j) == S(0) && x > b) {
        mv(i, j) = S(1);
        ++c.spliced;
      }
    }
  }
  return c;
}

template <class Scalar>
class dns_transform;

/// The DNS state of one layer: thresholds, iteration count, the shared random draws, totals.
/// Its weight and bias transforms each count their after_step calls; the draw for iteration k is
/// made once (the first member to reach k) and shared, so both masks change in the same
/// iterations whatever the visiting order.
template <class Scalar>
class dns_group {
 public:
  dns_group(std::string name, const dns_options& options, const dns_thresholds& thresholds)
      : name_(std::move(name)), opt_(options), th_(thresholds), gen_(options.seed) {}

  const std::string& name() const { return name_; }
  const dns_options& options() const { return opt_; }
  const dns_thresholds& thresholds() const { return th_; }
  /// Training iterations seen (after_step calls of the weight).
  index_t iteration() const { return iteration_; }
  /// Iterations in which surgery was performed (iteration 0, at attach time, included).
  index_t surgeries() const { return surgeries_; }
  /// Mask changes over all surgeries so far.
  const surgery_counts& totals() const { return totals_; }

  /// Whether iteration `iter` (>= 1) performs surgery; draws r for it on first request.
  bool surgery_at(index_t iter) {
    if (iter >= opt_.iter_stop) return false;
    while (static_cast<index_t>(decisions_.size()) < iter) {
      const auto k = static_cast<index_t>(decisions_.size()) + 1;
      const double r = gen_.uniform();
      const bool yes = dns_surgery_probability(k, opt_.gamma, opt_.power) > r;
      decisions_.push_back(yes);
      if (yes) ++surgeries_;
    }
    return decisions_[static_cast<std::size_t>(iter - 1)] != 0;
  }

  /// Surgery on one member's mask, added to the totals.
  void operate(const tensor<Scalar>& w, tensor<Scalar>& mask) {
    const auto c = dns_surgery(w, mask, th_.a, th_.b);
    totals_.pruned += c.pruned;
    totals_.spliced += c.spliced;
  }
  /// Called by the weight's transform after each optimizer step.
  void set_iteration(index_t iter) { iteration_ = iter; }

  /// Checkpoint state (written by the weight's transform): thresholds, the generator, the draws
  /// made so far, counters and totals. The options are checked, not restored: a layer resumed
  /// under other DNS settings is a config_error naming both.
  void save_state(nn::state_writer<Scalar>& out) const {
    out.put_text("options", describe_options());
    out.put_real("mean", th_.mean);
    out.put_real("stddev", th_.stddev);
    out.put_integer("count", th_.count);
    out.put_real("t", th_.t);
    out.put_real("a", th_.a);
    out.put_real("b", th_.b);
    out.put_generator("gen", gen_);
    out.put_integer("decisions_count", static_cast<std::int64_t>(decisions_.size()));
    out.put_integers("decisions", std::vector<std::int64_t>(decisions_.begin(), decisions_.end()));
    out.put_integer("iteration", iteration_);
    out.put_integer("surgeries", surgeries_);
    out.put_integer("pruned", totals_.pruned);
    out.put_integer("spliced", totals_.spliced);
  }
  /// Restores the state in place, so the members that share this group go on sharing it.
  void load_state(const nn::state_reader<Scalar>& in) {
    in.expect_text("options", describe_options());
    const index_t iteration = in.get_integer("iteration", 0);
    dns_thresholds th;
    th.mean = in.get_real("mean");
    th.stddev = in.get_real("stddev");
    th.count = in.get_integer("count", 0);
    th.t = in.get_real("t");
    th.a = in.get_real("a");
    th.b = in.get_real("b");
    if (!(th.a >= 0) || !(th.b >= th.a)) {
      slimnet::detail::raise<io_error>("slimnet::prune::dns_group::load_state", "{}: '{}' has thresholds a = {} and b = {}",
                                       in.source(), in.prefix(), th.a, th.b);
    }
    // The draws are made up to the furthest member's iteration, at most one past the weight's.
    const auto& raw = in.get_integers("decisions", static_cast<std::size_t>(in.get_integer("decisions_count", 0, iteration + 1)));
    std::vector<std::uint8_t> decisions;
    for (const auto d : raw) {
      if (d != 0 && d != 1) slimnet::detail::raise<io_error>("slimnet::prune::dns_group::load_state", "{}: '{}decisions' holds {}", in.source(), in.prefix(), d);
      decisions.push_back(static_cast<std::uint8_t>(d));
    }
    rng gen;
    in.read_generator("gen", gen);
    const index_t surgeries = in.get_integer("surgeries", 0);
    surgery_counts totals;
    totals.pruned = in.get_integer("pruned", 0);
    totals.spliced = in.get_integer("spliced", 0);
    th_ = th;
    gen_ = gen;
    decisions_ = std::move(decisions);
    iteration_ = iteration;
    surgeries_ = surgeries;
    totals_ = totals;
  }

 private:
  std::string describe_options() const {
    return fmt::format("c_rate={} gamma={} power={} iter_stop={} prune_factor={} splice_factor={} include_bias={} seed={}", opt_.c_rate,
                       opt_.gamma, opt_.power, opt_.iter_stop, opt_.prune_factor, opt_.splice_factor, opt_.include_bias, opt_.seed);
  }

  std::string name_;
  dns_options opt_;
  dns_thresholds th_;
  rng gen_;
  std::vector<std::uint8_t> decisions_;  // decisions_[k - 1]: surgery at iteration k
  index_t iteration_ = 0;
  index_t surgeries_ = 1;  // iteration 0 (at attach): (1 + 0)^(-power) = 1, always
  surgery_counts totals_;
};

/// W_eff = W * T; backward: identity (every entry of W gets dL/d(W*T), as the authors' code);
/// after each optimizer step: surgery on T with the layer's thresholds when the draw says so.
template <class Scalar>
class dns_transform final : public masking_transform<Scalar> {
 public:
  dns_transform(tensor<Scalar> mask, std::shared_ptr<dns_group<Scalar>> group, bool is_weight)
      : masking_transform<Scalar>(std::move(mask)),
        group_(std::move(group)),
        is_weight_(is_weight) {}

  std::string name() const override { return "dns"; }
  /// A copied model gets its own mask and its own copy of the layer's group (thresholds, draws,
  /// totals), shared by the copied weight and bias as the originals share theirs.
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo& memo) const override {
    auto copy = std::make_shared<dns_transform>(*this);
    copy->group_ = memo.copy_of(group_);
    return copy;
  }
  /// DNS's iteration is the number of training steps since attach (the surgery probability
  /// (1 + gamma k)^-power decays with it across fit calls), so it is counted here rather than
  /// read from the step context, whose count restarts with every training run.
  void after_step(tensor<Scalar>& w, const nn::step_context&) override {
    this->check_size(w, "slimnet::prune::dns_transform::after_step");
    ++iteration_;
    if (is_weight_) group_->set_iteration(iteration_);
    if (group_->surgery_at(iteration_)) group_->operate(w, this->mask_);
  }
  /// State: the mask and the step counter; the weight's transform also writes the group's state
  /// (the bias's shares it), which load_state restores in place.
  void save_state(nn::state_writer<Scalar>& out) const override {
    out.put_integer("is_weight", is_weight_ ? 1 : 0);
    out.put_tensor("mask", this->mask_);
    out.put_integer("iteration", iteration_);
    if (is_weight_) {
      auto group = out.scope("group");
      group_->save_state(group);
    }
  }
  void load_state(const nn::state_reader<Scalar>& in) override {
    if ((in.get_integer("is_weight", 0, 1) == 1) != is_weight_) {
      slimnet::detail::raise<config_error>("slimnet::prune::dns_transform::load_state", "{}: '{}' was saved from a DNS {} but restores a {}",
                                           in.source(), in.prefix(), is_weight_ ? "bias" : "weight", is_weight_ ? "weight" : "bias");
    }
    tensor<Scalar> mask = this->read_mask(in);
    const index_t iteration = in.get_integer("iteration", 0);
    if (is_weight_) group_->load_state(in.scope("group"));
    this->mask_ = std::move(mask);
    iteration_ = iteration;
  }
  dns_group<Scalar>& group() { return *group_; }
  /// Direct access for tests and tools (e.g. to start from a given mask).
  tensor<Scalar>& mutable_mask() { return this->mask_; }

 private:
  std::shared_ptr<dns_group<Scalar>> group_;
  bool is_weight_;
  index_t iteration_ = 0;
};

/// Puts `weight` (and `bias`, if not null) under DNS: thresholds from their current nonzero
/// values, masks all ones, then the surgery of iteration 0 (probability 1), so the layer is
/// pruned on return. Throws config_error if either already carries a pruning mask.
namespace detail {
template <class T>
struct non_deduced {
  using type = T;
};
}  // namespace detail

template <class Scalar>
std::shared_ptr<dns_group<Scalar>> attach_dns(
    nn::parameter<Scalar>& weight, typename detail::non_deduced<nn::parameter<Scalar>>::type* bias,
    const dns_options& options, std::string name = {}) {
  constexpr const char* fn = "slimnet::prune::attach_dns";
  options.validate(fn);
  for (auto* p : {&weight, bias}) {
    if (p != nullptr && is_pruned(*p)) {
      slimnet::detail::raise<config_error>(
          fn, "parameter '{}' already carries a pruning mask; prune::remove it first", p->name());
    }
  }
  if (bias == &weight)
    slimnet::detail::raise<config_error>(fn, "weight and bias are the same parameter '{}'",
                                         weight.name());
  const auto th = bias != nullptr ? dns_compute_thresholds(options, weight.value(), bias->value())
                                  : dns_compute_thresholds(options, weight.value());
  if (name.empty()) name = weight.name();
  auto group = std::make_shared<dns_group<Scalar>>(name, options, th);
  for (auto* p : {&weight, bias}) {
    if (p == nullptr) continue;
    auto t = std::make_shared<dns_transform<Scalar>>(tensor<Scalar>(p->shape(), Scalar(1)), group,
                                                     p == &weight);
    group->operate(p->value(), t->mutable_mask());
    p->add_transform(std::move(t));
  }
  return group;
}

/// DNS on a layer's "weight" and (with options.include_bias) "bias" parameters.
template <class Scalar>
std::shared_ptr<dns_group<Scalar>> attach_dns(nn::layer<Scalar>& layer,
                                              const dns_options& options) {
  constexpr const char* fn = "slimnet::prune::attach_dns";
  nn::parameter<Scalar>& w = find_parameter(layer, "weight", fn);
  nn::parameter<Scalar>* b = nullptr;
  if (options.include_bias) {
    layer.visit_parameters([&](nn::parameter<Scalar>& p) {
      if (b == nullptr && p.local_name() == "bias") b = &p;
    });
  }
  return attach_dns(w, b, options, layer.name());
}

/// DNS on several layers of `model`, by layer name ("conv1" -> options). Each layer's generator
/// is seeded with options.seed + its position in the map, so layers draw independently.
template <class Scalar>
std::vector<std::shared_ptr<dns_group<Scalar>>> attach_dns(
    nn::layer<Scalar>& model, const std::map<std::string, dns_options>& per_layer) {
  constexpr const char* fn = "slimnet::prune::attach_dns";
  std::vector<std::pair<nn::layer<Scalar>*, dns_options>> found;
  std::uint64_t k = 0;
  for (const auto& entry : per_layer) {
    // Not a structured binding: C++17 lambdas cannot capture those (Clang refuses, GCC allows).
    const std::string& name = entry.first;
    const dns_options& opt = entry.second;
    nn::layer<Scalar>* l = nullptr;
    model.visit_layers([&](nn::layer<Scalar>& x) {
      if (l == nullptr && x.name() == name) l = &x;
    });
    if (l == nullptr) slimnet::detail::raise<config_error>(fn, "no layer named '{}'", name);
    dns_options o = opt;
    o.seed += k++;
    o.validate(fn);
    found.emplace_back(l, o);
  }
  std::vector<std::shared_ptr<dns_group<Scalar>>> groups;
  for (auto& [l, o] : found) groups.push_back(attach_dns(*l, o));
  return groups;
}

}  // namespace slimnet::prune
