// Binarization (Courbariaux et al. 2015, BinaryConnect; Hubara et al. 2016, BNN): free functions
// over Eigen objects and tensors, the BinaryConnect weight transform and the binary activation
// layer with the straight-through estimator.
//
//   deterministic  w_b = +1 if w >= 0, -1 otherwise
//   stochastic     w_b = +1 with probability p = hard_sigmoid(w) = clip((w + 1) / 2, 0, 1), -1
//   otherwise straight-through estimator of q = sign(r):  g_r = g_q * 1{|r| <= 1}  (the gradient of
//   hard tanh)
// BinaryConnect binarizes the weights in the forward and backward passes only; the real-valued
// weights receive the update (dL/dw_b) and are clipped to [-1, 1] after it.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/view.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/parameter.hpp"
#include "slimnet/quant/support.hpp"

namespace slimnet::quant {

enum class binarization { deterministic, stochastic };

inline const char* to_string(binarization b) {
  return b == binarization::deterministic ? "deterministic" : "stochastic";
}

/// clip((x + 1) / 2, 0, 1).
inline double hard_sigmoid(double x) { return std::clamp((x + 1.0) * 0.5, 0.0, 1.0); }

namespace detail {
/// Uniform numbers in [0, 1) with 24 random bits (exact in float), two per 64-bit draw of the
/// generator. Stochastic binarization draws one per weight per training step, millions per step,
/// so the draw must cost a few cycles; 24 bits bias P(+1) by less than 2^-24.
class uniform24_stream {
 public:
  explicit uniform24_stream(rng& gen) : gen_(gen) {}
  float next() {
    if (have_low_) {
      have_low_ = false;
      return static_cast<float>(static_cast<std::uint32_t>(bits_) >> 8) * 0x1.0p-24f;
    }
    bits_ = gen_();
    have_low_ = true;
    return static_cast<float>(bits_ >> 40) * 0x1.0p-24f;
  }

 private:
  rng& gen_;
  std::uint64_t bits_ = 0;
  bool have_low_ = false;
};

/// +1 with probability hard_sigmoid(v) = clip((v + 1) / 2, 0, 1), given u ~ U[0, 1): the clip is
/// implicit, since u < p always holds for p >= 1 and never for p <= 0.
inline bool stochastic_up(float v, float u) { return u < (v + 1.0f) * 0.5f; }
}  // namespace detail

/// Replaces every element of `x` by +scale or -scale: by its sign (0 counts as +), or
/// stochastically with P(+scale) = hard_sigmoid(x / scale), drawing one 24-bit uniform number per
/// element (two per generator output) in row-major order of the out_units x rest view.
template <class T>
void binarize_in_place(T&& x, binarization mode = binarization::deterministic, rng* gen = nullptr,
                       double scale = 1.0) {
  constexpr const char* fn = "slimnet::quant::binarize_in_place";
  if (mode == binarization::stochastic && gen == nullptr) {
    slimnet::detail::raise<config_error>(
        fn, "stochastic binarization needs a random generator, got none");
  }
  if (!(scale > 0) || !std::isfinite(scale))
    slimnet::detail::raise<config_error>(fn, "scale = {} must be positive and finite", scale);
  const auto inv_scale = static_cast<float>(1.0 / scale);
  if constexpr (slimnet::detail::is_slimnet_tensor<std::decay_t<T>>::value) {
    auto* p = x.data();  // contiguous: one flat loop (the training path)
    using scalar = std::remove_reference_t<decltype(*p)>;
    const auto plus = static_cast<scalar>(scale), minus = static_cast<scalar>(-scale);
    if (mode == binarization::deterministic) {
      for (index_t i = 0; i < x.size(); ++i) p[i] = p[i] >= scalar(0) ? plus : minus;
    } else {
      // Two elements per generator output, high 24 bits first: the same draws as
      // uniform24_stream, without its per-element branch.
      const index_t n = x.size();
      const auto decide = [&](index_t i, std::uint32_t bits24) {
        const float u = static_cast<float>(bits24) * 0x1.0p-24f;
        p[i] = detail::stochastic_up(static_cast<float>(p[i]) * inv_scale, u) ? plus : minus;
      };
      index_t i = 0;
      for (; i + 1 < n; i += 2) {
        const std::uint64_t r = (*gen)();
        decide(i, static_cast<std::uint32_t>(r >> 40));
        decide(i + 1, static_cast<std::uint32_t>(r) >> 8);
      }
      if (i < n) decide(i, static_cast<std::uint32_t>((*gen)() >> 40));
    }
    return;
  }
  auto&& m = as_matrix(x);
  using scalar = std::remove_cv_t<std::remove_reference_t<decltype(m(0, 0))>>;
  const auto plus = static_cast<scalar>(scale), minus = static_cast<scalar>(-scale);
  if (mode == binarization::deterministic) {
    for (index_t i = 0; i < m.rows(); ++i)
      for (index_t j = 0; j < m.cols(); ++j) m(i, j) = m(i, j) >= scalar(0) ? plus : minus;
    return;
  }
  detail::uniform24_stream u(*gen);
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      const bool up = detail::stochastic_up(static_cast<float>(m(i, j)) * inv_scale, u.next());
      m(i, j) = up ? plus : minus;
    }
  }
}

struct binary_connect_options {
  binarization mode = binarization::deterministic;
  /// Binary weights are +-scale and the real weights are clipped to [-scale, scale]. 1 as in the
  /// paper, where BatchNorm follows every layer; without BatchNorm a Glorot-sized scale
  /// sqrt(1.5 / (fan_in + fan_out)) (the authors' code) keeps the activations in range.
  double scale = 1.0;
  bool clip = true;  ///< clip the real weights after each step (the paper's clip(w))
  /// Evaluate with the real-valued weights instead of the binary ones: the paper's test-time choice
  /// for the stochastic form. The default evaluates the binary network, the one binary hardware
  /// (and nn::compressed::compress_bnn) runs.
  bool real_weights_at_test = false;
  /// When attaching, scale W so that max |W| = scale. Default initialisations are far smaller than
  /// 1 (PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))), which leaves the stochastic form with
  /// P(+1) = hard_sigmoid(w) ~ 1/2 for every weight, i.e. random signs. With BatchNorm after the
  /// layer the rescaling changes nothing in the forward pass; it is the paper's initialisation
  /// U(-H, H) with its per-layer learning rate 1/H, expressed at scale 1.
  bool rescale = false;

  void validate() const {
    if (!(scale > 0) || !std::isfinite(scale)) {
      slimnet::detail::raise<config_error>("slimnet::quant::binary_connect_options",
                                           "scale = {} must be positive and finite", scale);
    }
  }
};

/// BinaryConnect as a weight transform: W_eff = binarize(W) (stochastic only in training; the
/// evaluation pass is deterministic), straight-through gradient dL/dW = dL/dW_b, W clipped to
/// [-scale, scale] after each step. On a pruned parameter (set_support, done by
/// attach_binary_connect) W_eff is +-scale on the surviving weights and exactly 0 on the pruned
/// ones (sign(0) would be +scale), and their gradient is 0: a ternary {-s, 0, +s} layer.
template <class Scalar>
class binary_connect_transform : public nn::parameter_transform<Scalar> {
 public:
  explicit binary_connect_transform(binary_connect_options opt = {}) : opt_(opt) { opt.validate(); }

  std::string name() const override {
    return fmt::format("binary_connect({})", to_string(opt_.mode));
  }
  const binary_connect_options& options() const { return opt_; }
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<binary_connect_transform>(*this);
  }
  /// Switches between the deterministic and the stochastic form (e.g. to re-estimate BatchNorm
  /// statistics in training mode with the weights used at test time).
  void set_mode(binarization mode) { opt_.mode = mode; }
  /// While set, the forward pass uses the real-valued W in training mode too (e.g. to re-estimate
  /// BatchNorm statistics for a network that is evaluated with real weights).
  void set_passthrough(bool on) { passthrough_ = on; }

  void forward(const tensor<Scalar>& w, tensor<Scalar>& w_eff, bool training, rng& gen) override {
    w_eff.flat() = w.flat();
    if (passthrough_ || (!training && opt_.real_weights_at_test)) return;
    binarize_in_place(w_eff, training ? opt_.mode : binarization::deterministic, &gen, opt_.scale);
    detail::zero_pruned(w_eff, support_);
  }

  void backward(const tensor<Scalar>&, tensor<Scalar>& grad) override {
    detail::zero_pruned(grad, support_);
  }

  void after_step(tensor<Scalar>& w, const nn::step_context&) override {
    if (!opt_.clip) return;
    const auto s = static_cast<Scalar>(opt_.scale);
    w.flat() = w.flat().cwiseMax(-s).cwiseMin(s);
  }

  /// State: the mode and pass-through switches (they may change during training) and the
  /// support. The stochastic draws come from the pass's generator, which fit checkpoints.
  void save_state(nn::state_writer<Scalar>& out) const override {
    out.put_integer("stochastic", opt_.mode == binarization::stochastic ? 1 : 0);
    out.put_integer("passthrough", passthrough_ ? 1 : 0);
    out.put_optional_tensor("support", support_);
  }
  void load_state(const nn::state_reader<Scalar>& in) override {
    const bool stochastic = in.get_integer("stochastic", 0, 1) == 1;
    const bool passthrough = in.get_integer("passthrough", 0, 1) == 1;
    in.read_optional_tensor("support", support_);
    opt_.mode = stochastic ? binarization::stochastic : binarization::deterministic;
    passthrough_ = passthrough;
  }

  /// The surviving entries (0/1 shaped like W; nullopt: all), normally the parameter's support().
  void set_support(std::optional<tensor<Scalar>> support) { support_ = std::move(support); }

 private:
  binary_connect_options opt_;
  bool passthrough_ = false;
  std::optional<tensor<Scalar>> support_;
};

/// Attaches a binary_connect_transform to `p` (after rescaling, if asked, and clipping its value)
/// and returns it.
template <class Scalar>
std::shared_ptr<binary_connect_transform<Scalar>> attach_binary_connect(
    nn::parameter<Scalar>& p, const binary_connect_options& opt = {}) {
  auto t = std::make_shared<binary_connect_transform<Scalar>>(opt);
  t->set_support(p.support());
  if (opt.rescale) {
    const auto largest = p.value().flat().cwiseAbs().maxCoeff();
    if (largest > 0)
      p.value().flat() *= static_cast<Scalar>(opt.scale / static_cast<double>(largest));
  }
  t->after_step(p.value(), {});
  p.add_transform(t);
  return t;
}

/// Attaches BinaryConnect to the weight (not the bias) of every Linear and Conv2d in `model`,
/// nested containers included; returns how many weights were binarized.
template <class Scalar>
int binary_connect(nn::layer<Scalar>& model, const binary_connect_options& opt = {}) {
  opt.validate();
  int count = 0;
  model.visit_layers([&](nn::layer<Scalar>& l) {
    nn::parameter<Scalar>* w = nullptr;
    if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) w = &lin->weight();
    if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) w = &conv->weight();
    if (w == nullptr) return;
    attach_binary_connect(*w, opt);
    ++count;
  });
  return count;
}

/// The binary activation of BNN: y = sign(x) (+1 for x >= 0), or in training with the stochastic
/// mode +1 with probability hard_sigmoid(x); backward is the straight-through estimator
/// dx = dy * 1{|x| <= 1}.
template <class Scalar>
class sign_activation : public nn::cloneable<sign_activation<Scalar>, Scalar> {
 public:
  explicit sign_activation(binarization mode = binarization::deterministic) : mode_(mode) {}

  std::string kind() const override { return "SignActivation"; }
  std::string describe() const override {
    return fmt::format("SignActivation({})", to_string(mode_));
  }
  binarization mode() const { return mode_; }
  shape_t output_shape(const shape_t& in) const override { return in; }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y,
               const nn::forward_context& ctx) override {
    y.resize(x.shape());
    y.flat() = x.flat();
    const bool stochastic = ctx.training && mode_ == binarization::stochastic;
    binarize_in_place(y, stochastic ? binarization::stochastic : binarization::deterministic,
                      stochastic ? &ctx.generator() : nullptr);
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>&, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    if (dx == nullptr) return;
    dx->resize(x.shape());
    dx->flat() =
        (x.flat().array().abs() <= Scalar(1)).select(dy.flat().array(), Scalar(0)).matrix();
  }

 private:
  binarization mode_;
};

}  // namespace slimnet::quant
