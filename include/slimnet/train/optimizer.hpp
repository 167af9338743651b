// Optimizers with PyTorch's update rules. State is keyed by parameter identity (parameter::id()),
// never by data pointer, and is reset when a parameter changes shape (e.g. after thinning).
// Checkpoints save and load it by parameter NAME (save_state / load_state), so a model rebuilt
// from scratch, whose parameters have new identities, gets its moments back.
#pragma once

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/state.hpp"

namespace slimnet::train {

// Optimizer options are plain aggregates with PyTorch's defaults and chainable setters, so a call
// names what it sets instead of listing values by position:
//   train::sgd<float> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9).with_weight_decay(5e-4));
// Each with_* returns a modified copy (nothing can dangle when the chain starts from a temporary);
// the optimizer's constructor calls validate(). The aggregate form (`sgd_options{0.05, 0.9}`, fields
// in declaration order) still compiles, and each optimizer names its options `options` too.

namespace detail {
/// A copy of `o` with `o.*field = v`: the body of every with_* setter below.
template <class Options, class T>
Options with(const Options& o, T Options::*field, T v) {
  Options copy = o;
  copy.*field = v;
  return copy;
}

/// Adam and AdaMax share their options' contract: lr finite and >= 0, betas in [0, 1), eps and
/// weight_decay >= 0.
inline void validate_adam_like(const char* fn, double lr, double beta1, double beta2, double eps, double weight_decay) {
  if (!(lr >= 0.0) || !std::isfinite(lr) ||
      !(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0 && weight_decay >= 0)) {
    slimnet::detail::raise<config_error>(fn, "invalid options: lr={} beta1={} beta2={} eps={} weight_decay={}", lr, beta1, beta2,
                                         eps, weight_decay);
  }
}
}  // namespace detail

/// Options of train::sgd (torch.optim.SGD's arguments and defaults).
struct sgd_options {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;

  sgd_options with_lr(double v) const { return detail::with(*this, &sgd_options::lr, v); }
  sgd_options with_momentum(double v) const { return detail::with(*this, &sgd_options::momentum, v); }
  sgd_options with_dampening(double v) const { return detail::with(*this, &sgd_options::dampening, v); }
  sgd_options with_weight_decay(double v) const { return detail::with(*this, &sgd_options::weight_decay, v); }
  sgd_options with_nesterov(bool v = true) const { return detail::with(*this, &sgd_options::nesterov, v); }

  /// Throws config_error unless lr is finite and >= 0, momentum, dampening and weight_decay are
  /// >= 0, and Nesterov momentum has momentum > 0 and no dampening (as torch.optim.SGD).
  void validate() const {
    if (!(lr >= 0.0) || !std::isfinite(lr) || !(momentum >= 0) || !(weight_decay >= 0) || !(dampening >= 0) ||
        (nesterov && (momentum <= 0 || dampening != 0))) {
      slimnet::detail::raise<config_error>("slimnet::train::sgd",
                                           "invalid options: lr={} momentum={} dampening={} weight_decay={} nesterov={}", lr,
                                           momentum, dampening, weight_decay, nesterov);
    }
  }
};

/// Options of train::adam (torch.optim.Adam; weight_decay is L2 added to the gradient).
struct adam_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;

  adam_options with_lr(double v) const { return detail::with(*this, &adam_options::lr, v); }
  /// PyTorch's `betas=(beta1, beta2)`.
  adam_options with_betas(double b1, double b2) const { return with_beta1(b1).with_beta2(b2); }
  adam_options with_beta1(double v) const { return detail::with(*this, &adam_options::beta1, v); }
  adam_options with_beta2(double v) const { return detail::with(*this, &adam_options::beta2, v); }
  adam_options with_eps(double v) const { return detail::with(*this, &adam_options::eps, v); }
  adam_options with_weight_decay(double v) const { return detail::with(*this, &adam_options::weight_decay, v); }

  void validate() const { detail::validate_adam_like("slimnet::train::adam", lr, beta1, beta2, eps, weight_decay); }
};

/// Options of train::adamax (torch.optim.Adamax; its default lr is 2e-3).
struct adamax_options {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;

  adamax_options with_lr(double v) const { return detail::with(*this, &adamax_options::lr, v); }
  /// PyTorch's `betas=(beta1, beta2)`.
  adamax_options with_betas(double b1, double b2) const { return with_beta1(b1).with_beta2(b2); }
  adamax_options with_beta1(double v) const { return detail::with(*this, &adamax_options::beta1, v); }
  adamax_options with_beta2(double v) const { return detail::with(*this, &adamax_options::beta2, v); }
  adamax_options with_eps(double v) const { return detail::with(*this, &adamax_options::eps, v); }
  adamax_options with_weight_decay(double v) const { return detail::with(*this, &adamax_options::weight_decay, v); }

  void validate() const { detail::validate_adam_like("slimnet::train::adamax", lr, beta1, beta2, eps, weight_decay); }
};

/// Options of train::rmsprop (torch.optim.RMSprop's arguments and defaults; not centered).
struct rmsprop_options {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double momentum = 0.0;
  double weight_decay = 0.0;

  rmsprop_options with_lr(double v) const { return detail::with(*this, &rmsprop_options::lr, v); }
  rmsprop_options with_alpha(double v) const { return detail::with(*this, &rmsprop_options::alpha, v); }
  rmsprop_options with_eps(double v) const { return detail::with(*this, &rmsprop_options::eps, v); }
  rmsprop_options with_momentum(double v) const { return detail::with(*this, &rmsprop_options::momentum, v); }
  rmsprop_options with_weight_decay(double v) const { return detail::with(*this, &rmsprop_options::weight_decay, v); }

  /// Throws config_error unless lr is finite and >= 0, alpha in [0, 1), eps, momentum and
  /// weight_decay >= 0.
  void validate() const {
    if (!(lr >= 0.0) || !std::isfinite(lr) || !(alpha >= 0 && alpha < 1 && eps >= 0 && momentum >= 0 && weight_decay >= 0)) {
      slimnet::detail::raise<config_error>("slimnet::train::rmsprop",
                                           "invalid options: lr={} alpha={} eps={} momentum={} weight_decay={}", lr, alpha, eps,
                                           momentum, weight_decay);
    }
  }
};

template <class Scalar>
class optimizer {
 public:
  virtual ~optimizer() = default;
  virtual std::string name() const = 0;

  /// One update of every trainable parameter of `model` from its grad().
  void step(nn::layer<Scalar>& model) {
    model.visit_parameters([&](nn::parameter<Scalar>& p) {
      if (p.trainable()) update(p);
    });
  }

  static void zero_grad(nn::layer<Scalar>& model) {
    model.visit_parameters([](nn::parameter<Scalar>& p) { p.zero_grad(); });
  }

  double learning_rate() const { return lr_; }
  void set_learning_rate(double lr) {
    if (!(lr >= 0.0) || !std::isfinite(lr)) slimnet::detail::raise<config_error>("slimnet::train::optimizer::set_learning_rate", "lr = {} must be finite and >= 0", lr);
    lr_ = lr;
  }
  /// Forgets all per-parameter state (momentum buffers, moments, step counts).
  void reset_state() { states_.clear(); }

  /// Writes the learning rate and, under each trainable parameter's name, its step count and
  /// buffers (or that it has none yet). Names must be unique (config_error otherwise).
  void save_state(const nn::layer<Scalar>& model, nn::state_writer<Scalar>& out) const {
    out.put_text("kind", name());
    out.put_real("lr", lr_);
    each_trainable(model, "slimnet::train::optimizer::save_state", [&](const nn::parameter<Scalar>& p) {
      auto scope = out.scope(p.name());
      const auto it = states_.find(p.id());
      const bool present = it != states_.end() && it->second.a.size() == p.size();
      scope.put_integer("present", present ? 1 : 0);
      if (!present) return;
      const state& st = it->second;
      scope.put_integer("steps", st.steps);
      scope.put_tensor("a", as_tensor(st.a));
      scope.put_integer("has_b", st.b.size() > 0 ? 1 : 0);
      if (st.b.size() > 0) scope.put_tensor("b", as_tensor(st.b));
    });
  }

  /// Restores what save_state wrote into this optimizer for `model` (matched by parameter name;
  /// the optimizer must be of the same kind). A parameter without an entry is an io_error, a
  /// buffer of another size a config_error, both naming it; nothing changes on error. State of
  /// parameters outside `model` is dropped.
  void load_state(nn::layer<Scalar>& model, const nn::state_reader<Scalar>& in) {
    constexpr const char* fn = "slimnet::train::optimizer::load_state";
    in.expect_text("kind", name());
    const double lr = in.get_real("lr");
    if (!(lr >= 0.0) || !std::isfinite(lr)) slimnet::detail::raise<io_error>(fn, "{}: '{}lr' = {} is not a learning rate", in.source(), in.prefix(), lr);
    std::unordered_map<std::uint64_t, state> loaded;
    each_trainable(model, fn, [&](nn::parameter<Scalar>& p) {
      const auto scope = in.scope(p.name());
      if (scope.get_integer("present", 0, 1) == 0) return;
      state st;
      st.steps = scope.get_integer("steps", 0);
      tensor<Scalar> a({p.size()});
      scope.read_tensor("a", a);
      st.a = a.flat();
      if (scope.get_integer("has_b", 0, 1) == 1) {
        tensor<Scalar> b({p.size()});
        scope.read_tensor("b", b);
        st.b = b.flat();
      }
      loaded.emplace(p.id(), std::move(st));
    });
    states_ = std::move(loaded);
    lr_ = lr;
  }

 protected:
  explicit optimizer(double lr) { set_learning_rate(lr); }
  /// Validates a derived optimizer's options before the base takes their learning rate, so a bad
  /// option is reported in the options' terms.
  template <class Options>
  static double validated_lr(const Options& o) {
    o.validate();
    return o.lr;
  }

  struct state {
    std::int64_t steps = 0;
    column_vector<Scalar> a, b;  // first and second buffers; meaning depends on the method
  };

  /// State of `p`, created (zeroed) on first use or when p's size changed.
  state& state_of(nn::parameter<Scalar>& p, bool needs_b) {
    state& s = states_[p.id()];
    if (s.a.size() != p.size()) {
      s = state{};
      s.a = column_vector<Scalar>::Zero(p.size());
      if (needs_b) s.b = column_vector<Scalar>::Zero(p.size());
    }
    return s;
  }

  virtual void update(nn::parameter<Scalar>& p) = 0;

  double lr_ = 0.0;

 private:
  /// f(p) once per trainable parameter of `model` (a const model gives const parameters).
  template <class Model, class F>
  static void each_trainable(Model& model, const char* fn, const F& f) {
    using parameter_type = std::conditional_t<std::is_const_v<Model>, const nn::parameter<Scalar>, nn::parameter<Scalar>>;
    std::set<std::uint64_t> seen;  // a parameter shared by two layers is visited twice, stepped once
    std::set<std::string> names;
    model.visit_parameters([&](parameter_type& p) {
      if (!p.trainable() || !seen.insert(p.id()).second) return;
      if (!names.insert(p.name()).second) slimnet::detail::raise<config_error>(fn, "two parameters are named '{}'", p.name());
      f(p);
    });
  }
  static tensor<Scalar> as_tensor(const column_vector<Scalar>& v) {
    tensor<Scalar> t({static_cast<index_t>(v.size())});
    t.flat() = v;
    return t;
  }

  std::unordered_map<std::uint64_t, state> states_;
};

/// SGD: g = grad + wd*w; buf = momentum*buf + (1-dampening)*g (buf = g on the first step);
/// update = g + momentum*buf (Nesterov) or buf; w -= lr * update.
template <class Scalar>
class sgd : public optimizer<Scalar> {
 public:
  using options = sgd_options;
  explicit sgd(options opt) : optimizer<Scalar>(optimizer<Scalar>::validated_lr(opt)), opt_(opt) {}
  std::string name() const override { return "SGD"; }

 protected:
  void update(nn::parameter<Scalar>& p) override {
    auto w = p.value().flat();
    auto g = p.grad().flat();
    const auto lr = static_cast<Scalar>(this->lr_), wd = static_cast<Scalar>(opt_.weight_decay),
               mom = static_cast<Scalar>(opt_.momentum), damp = static_cast<Scalar>(opt_.dampening);
    if (opt_.momentum == 0.0) {
      if (wd != 0) {
        w -= lr * (g + wd * w);
      } else {
        w -= lr * g;
      }
      return;
    }
    auto& s = this->state_of(p, false);
    if (s.steps++ == 0) {
      s.a = g + wd * w;
    } else {
      s.a = mom * s.a + (Scalar(1) - damp) * (g + wd * w);
    }
    if (opt_.nesterov) {
      w -= lr * (g + wd * w + mom * s.a);
    } else {
      w -= lr * s.a;
    }
  }

 private:
  options opt_;
};

/// Adam (Kingma & Ba): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
/// w -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps); g includes wd*w (L2, as torch.optim.Adam).
template <class Scalar>
class adam : public optimizer<Scalar> {
 public:
  using options = adam_options;
  explicit adam(options opt) : optimizer<Scalar>(optimizer<Scalar>::validated_lr(opt)), opt_(opt) {}
  std::string name() const override { return "Adam"; }

 protected:
  void update(nn::parameter<Scalar>& p) override {
    auto& s = this->state_of(p, true);
    const auto t = static_cast<double>(++s.steps);
    auto w = p.value().flat();
    const auto b1 = static_cast<Scalar>(opt_.beta1), b2 = static_cast<Scalar>(opt_.beta2);
    const auto g = (p.grad().flat() + static_cast<Scalar>(opt_.weight_decay) * w).eval();
    s.a = b1 * s.a + (Scalar(1) - b1) * g;
    s.b = b2 * s.b + (Scalar(1) - b2) * g.cwiseAbs2();
    const auto step = static_cast<Scalar>(this->lr_ / (1.0 - std::pow(opt_.beta1, t)));
    const auto bias2 = static_cast<Scalar>(std::sqrt(1.0 - std::pow(opt_.beta2, t)));
    w.array() -= step * s.a.array() / (s.b.array().sqrt() / bias2 + static_cast<Scalar>(opt_.eps));
  }

 private:
  options opt_;
};

/// AdaMax (Kingma & Ba, sec. 7.1): m = b1 m + (1-b1) g; u = max(b2 u, |g| + eps);
/// w -= lr / (1-b1^t) * m / u.
template <class Scalar>
class adamax : public optimizer<Scalar> {
 public:
  using options = adamax_options;
  explicit adamax(options opt) : optimizer<Scalar>(optimizer<Scalar>::validated_lr(opt)), opt_(opt) {}
  std::string name() const override { return "AdaMax"; }

 protected:
  void update(nn::parameter<Scalar>& p) override {
    auto& s = this->state_of(p, true);
    const auto t = static_cast<double>(++s.steps);
    auto w = p.value().flat();
    const auto b1 = static_cast<Scalar>(opt_.beta1), b2 = static_cast<Scalar>(opt_.beta2);
    const auto g = (p.grad().flat() + static_cast<Scalar>(opt_.weight_decay) * w).eval();
    s.a = b1 * s.a + (Scalar(1) - b1) * g;
    s.b = (b2 * s.b).cwiseMax(g.cwiseAbs() + column_vector<Scalar>::Constant(g.size(), static_cast<Scalar>(opt_.eps)));
    const auto step = static_cast<Scalar>(this->lr_ / (1.0 - std::pow(opt_.beta1, t)));
    w.array() -= step * s.a.array() / s.b.array();
  }

 private:
  options opt_;
};

/// RMSProp (PyTorch form): v = alpha v + (1-alpha) g^2; d = g / (sqrt(v) + eps);
/// with momentum: buf = momentum buf + d, w -= lr buf; otherwise w -= lr d.
template <class Scalar>
class rmsprop : public optimizer<Scalar> {
 public:
  using options = rmsprop_options;
  explicit rmsprop(options opt) : optimizer<Scalar>(optimizer<Scalar>::validated_lr(opt)), opt_(opt) {}
  std::string name() const override { return "RMSProp"; }

 protected:
  void update(nn::parameter<Scalar>& p) override {
    auto& s = this->state_of(p, true);  // a = square average, b = momentum buffer
    ++s.steps;
    auto w = p.value().flat();
    const auto alpha = static_cast<Scalar>(opt_.alpha);
    const auto g = (p.grad().flat() + static_cast<Scalar>(opt_.weight_decay) * w).eval();
    s.a = alpha * s.a + (Scalar(1) - alpha) * g.cwiseAbs2();
    const auto d = (g.array() / (s.a.array().sqrt() + static_cast<Scalar>(opt_.eps))).matrix().eval();
    const auto lr = static_cast<Scalar>(this->lr_);
    if (opt_.momentum > 0) {
      s.b = static_cast<Scalar>(opt_.momentum) * s.b + d;
      w -= lr * s.b;
    } else {
      w -= lr * d;
    }
  }

 private:
  options opt_;
};

}  // namespace slimnet::train
