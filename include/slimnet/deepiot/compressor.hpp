// DeepIoT's compressor network (Yao et al. 2017, Eq. 3, as the authors' code implements it;
// brief items 8-10): one LSTM step per droppable layer, reading that layer's live weights and
// emitting the keep probabilities p of its units.
#pragma once

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/state.hpp"

namespace slimnet::deepiot {

/// One droppable layer as the compressor sees it: weight (units, fan_in...) in PyTorch layout,
/// i.e. a Linear (out, in) or a Conv2d (c_out, c_in, kh, kw); the compressor's matrix is its
/// transpose, fan_in x units, with the bias appended as an extra row.
struct compressor_layer {
  std::string name;
  index_t fan_in = 0;  ///< d_f: in (Linear) or c_in*kh*kw (Conv2d)
  index_t units = 0;   ///< d_drop: output features or channels
  bool bias = true;
  index_t rows() const { return fan_in + (bias ? 1 : 0); }
};

struct compressor_options {
  index_t hidden = 64;       ///< inter_dim: LSTM width and projection size
  double forget_bias = 1.0;  ///< constant added to the forget gate (TF LSTMCell default)

  void validate() const {
    if (hidden <= 0 || !std::isfinite(forget_bias)) {
      slimnet::detail::raise<config_error>("slimnet::deepiot::compressor", "invalid options: hidden={} forget_bias={}", hidden,
                                           forget_bias);
    }
  }
};

namespace detail {
/// Normal(0, std) redrawn outside two standard deviations (TF's truncated_normal).
inline double truncated_normal(rng& gen, double stddev) {
  for (;;) {
    const double v = gen.normal();
    if (std::abs(v) <= 2.0) return v * stddev;
  }
}
}  // namespace detail

/// For steps l = 1..L (h_0 = c_0 = 0):
///   s_l = a_l^T [W_l^T; b_l^T]   (1 x units_l),   x_l = s_l B_l   (R^H)
///   [i; j; f; o] = K [x_l; h_{l-1}] + k,  c_l = σ(f + forget_bias) c_{l-1} + σ(i) tanh(j),
///   h_l = σ(o) tanh(c_l),   p_l = σ(h_l^T T_l)   (1 x units_l, no bias)
/// φ = {a_l, B_l, T_l, K, k}. W is an input: no gradient flows into the task network.
template <class Scalar>
class compressor {
 public:
  using matrix = row_matrix<Scalar>;
  using vec = column_vector<Scalar>;

  compressor(std::vector<compressor_layer> layers, compressor_options opt, rng& gen) : layers_(std::move(layers)), opt_(opt) {
    constexpr const char* fn = "slimnet::deepiot::compressor";
    opt_.validate();
    if (layers_.empty()) slimnet::detail::raise<config_error>(fn, "no droppable layers");
    const index_t h = opt_.hidden;
    for (const auto& l : layers_) {
      if (l.fan_in <= 0 || l.units <= 0) {
        slimnet::detail::raise<config_error>(fn, "layer '{}' has fan_in={} units={}", l.name, l.fan_in, l.units);
      }
      a_.emplace_back(l.name + ".a", shape_t{l.rows()});
      b_.emplace_back(l.name + ".b", shape_t{l.units, h});
      t_.emplace_back(l.name + ".trans_back", shape_t{h, l.units});
    }
    kernel_ = std::make_unique<nn::parameter<Scalar>>("lstm.kernel", shape_t{4 * h, 2 * h});
    bias_ = std::make_unique<nn::parameter<Scalar>>("lstm.bias", shape_t{4 * h});
    reset_parameters(gen);
  }

  /// Truncated normal a ~ sqrt(2/(1+rows)), B ~ sqrt(2/(units+H)), T ~ sqrt(2/(H+units)) as the
  /// authors' code; the LSTM kernel Glorot-uniform and its bias 0 (TF defaults).
  void reset_parameters(rng& gen) {
    const index_t h = opt_.hidden;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const double rows = static_cast<double>(layers_[l].rows()), units = static_cast<double>(layers_[l].units);
      fill(a_[l], gen, std::sqrt(2.0 / (1.0 + rows)));
      fill(b_[l], gen, std::sqrt(2.0 / (units + static_cast<double>(h))));
      fill(t_[l], gen, std::sqrt(2.0 / (static_cast<double>(h) + units)));
    }
    const double limit = std::sqrt(6.0 / static_cast<double>(2 * h + 4 * h));
    for (index_t i = 0; i < kernel_->size(); ++i) kernel_->value()[i] = static_cast<Scalar>(gen.uniform(-limit, limit));
    bias_->value().set_zero();
  }

  const std::vector<compressor_layer>& layers() const { return layers_; }
  const compressor_options& options() const { return opt_; }

  /// p_l for every layer from the live weights: weights[l] has shape (units, ...) with
  /// fan_in values per unit; biases[l] is null for a layer without bias.
  std::vector<vec> forward(const std::vector<const tensor<Scalar>*>& weights, const std::vector<const tensor<Scalar>*>& biases) {
    constexpr const char* fn = "slimnet::deepiot::compressor::forward";
    const std::size_t nl = layers_.size();
    if (weights.size() != nl || biases.size() != nl) {
      slimnet::detail::raise<shape_error>(fn, "{} weights and {} biases for {} layers", weights.size(), biases.size(), nl);
    }
    const index_t h = opt_.hidden;
    cache_.assign(nl, step_cache{});
    weights_ = weights;
    biases_ = biases;
    vec h_prev = vec::Zero(h), c_prev = vec::Zero(h);
    std::vector<vec> p(nl);
    const auto K = kernel_->value().matrix(4 * h, 2 * h);
    const auto kb = bias_->value().flat();
    for (std::size_t l = 0; l < nl; ++l) {
      const auto& spec = layers_[l];
      if (weights[l] == nullptr || weights[l]->size() != spec.units * spec.fan_in ||
          weights[l]->dim(0) != spec.units) {
        slimnet::detail::raise<shape_error>(fn, "weight of layer '{}' has shape {}, expected {} units x {} inputs", spec.name,
                                            weights[l] ? shape_string(weights[l]->shape()) : "null", spec.units, spec.fan_in);
      }
      if ((biases[l] != nullptr) != spec.bias || (biases[l] && biases[l]->size() != spec.units)) {
        slimnet::detail::raise<shape_error>(fn, "bias of layer '{}' does not match its description", spec.name);
      }
      auto& c = cache_[l];
      const auto W = weights[l]->matrix(spec.units, spec.fan_in);
      const auto a = a_[l].value().flat();
      c.s = W * a.head(spec.fan_in);
      if (spec.bias) c.s += a[spec.fan_in] * biases[l]->flat();
      c.x = b_[l].value().matrix().transpose() * c.s;
      c.h_prev = h_prev;
      c.c_prev = c_prev;
      vec pre = K.leftCols(h) * c.x + K.rightCols(h) * h_prev + kb;
      c.i = sigmoid(pre.segment(0, h));
      c.g = pre.segment(h, h).array().tanh().matrix();
      c.f = sigmoid((pre.segment(2 * h, h).array() + static_cast<Scalar>(opt_.forget_bias)).matrix());
      c.o = sigmoid(pre.segment(3 * h, h));
      c.c = c.f.cwiseProduct(c_prev) + c.i.cwiseProduct(c.g);
      c.tanh_c = c.c.array().tanh().matrix();
      c.h = c.o.cwiseProduct(c.tanh_c);
      c.p = sigmoid(t_[l].value().matrix().transpose() * c.h);
      p[l] = c.p;
      h_prev = c.h;
      c_prev = c.c;
    }
    return p;
  }

  /// Accumulates dL/dφ into the parameters' grad() given dL/dp_l for the last forward pass.
  void backward(const std::vector<vec>& dp) {
    constexpr const char* fn = "slimnet::deepiot::compressor::backward";
    const std::size_t nl = layers_.size();
    if (cache_.size() != nl) slimnet::detail::raise<config_error>(fn, "backward without a forward pass");
    if (dp.size() != nl) slimnet::detail::raise<shape_error>(fn, "{} gradients for {} layers", dp.size(), nl);
    const index_t h = opt_.hidden;
    const auto K = kernel_->value().matrix(4 * h, 2 * h);
    auto dK = kernel_->grad().matrix(4 * h, 2 * h);
    auto dk = bias_->grad().flat();
    vec dh_next = vec::Zero(h), dc_next = vec::Zero(h), dpre(4 * h);
    for (std::size_t l = nl; l-- > 0;) {
      const auto& spec = layers_[l];
      const auto& c = cache_[l];
      if (dp[l].size() != spec.units) {
        slimnet::detail::raise<shape_error>(fn, "gradient of layer '{}' has {} values, expected {}", spec.name, dp[l].size(),
                                            spec.units);
      }
      const vec dlogit = dp[l].cwiseProduct(c.p.cwiseProduct((vec::Ones(spec.units) - c.p)));
      t_[l].grad().matrix() += c.h * dlogit.transpose();
      const vec dh = t_[l].value().matrix() * dlogit + dh_next;
      const vec dc = dc_next + dh.cwiseProduct(c.o).cwiseProduct((vec::Ones(h) - c.tanh_c.cwiseAbs2()));
      const vec one = vec::Ones(h);
      dpre.segment(0, h) = dc.cwiseProduct(c.g).cwiseProduct(c.i.cwiseProduct(one - c.i));
      dpre.segment(h, h) = dc.cwiseProduct(c.i).cwiseProduct(one - c.g.cwiseAbs2());
      dpre.segment(2 * h, h) = dc.cwiseProduct(c.c_prev).cwiseProduct(c.f.cwiseProduct(one - c.f));
      dpre.segment(3 * h, h) = dh.cwiseProduct(c.tanh_c).cwiseProduct(c.o.cwiseProduct(one - c.o));
      dc_next = dc.cwiseProduct(c.f);
      dK.leftCols(h) += dpre * c.x.transpose();
      dK.rightCols(h) += dpre * c.h_prev.transpose();
      dk += dpre;
      const vec dx = K.leftCols(h).transpose() * dpre;
      dh_next = K.rightCols(h).transpose() * dpre;
      b_[l].grad().matrix() += c.s * dx.transpose();
      const vec ds = b_[l].value().matrix() * dx;
      auto da = a_[l].grad().flat();
      da.head(spec.fan_in) += weights_[l]->matrix(spec.units, spec.fan_in).transpose() * ds;
      if (spec.bias) da[spec.fan_in] += biases_[l]->flat().dot(ds);
    }
  }

  /// Visits φ (names "<layer>.a", "<layer>.b", "<layer>.trans_back", "lstm.kernel", "lstm.bias").
  void visit_parameters(const std::function<void(nn::parameter<Scalar>&)>& visit) {
    for (auto& p : a_) visit(p);
    for (auto& p : b_) visit(p);
    for (auto& p : t_) visit(p);
    visit(*kernel_);
    visit(*bias_);
  }
  void zero_grad() {
    visit_parameters([](nn::parameter<Scalar>& p) { p.zero_grad(); });
  }
  /// Checkpoint state: φ by parameter name. load_state checks every shape before changing any.
  void save_state(nn::state_writer<Scalar>& out) {
    visit_parameters([&](nn::parameter<Scalar>& p) { out.put_tensor(p.name(), p.value()); });
  }
  void load_state(const nn::state_reader<Scalar>& in) {
    std::vector<tensor<Scalar>> values;
    visit_parameters([&](nn::parameter<Scalar>& p) {
      values.emplace_back(p.shape());
      in.read_tensor(p.name(), values.back());
    });
    std::size_t k = 0;
    visit_parameters([&](nn::parameter<Scalar>& p) { p.value() = std::move(values[k++]); });
  }
  index_t parameter_count() {
    index_t n = 0;
    visit_parameters([&](nn::parameter<Scalar>& p) { n += p.size(); });
    return n;
  }

 private:
  struct step_cache {
    vec s, x, h_prev, c_prev, i, g, f, o, c, tanh_c, h, p;
  };

  static void fill(nn::parameter<Scalar>& p, rng& gen, double stddev) {
    for (index_t i = 0; i < p.size(); ++i) p.value()[i] = static_cast<Scalar>(detail::truncated_normal(gen, stddev));
  }
  template <class V>
  static vec sigmoid(const V& v) {
    return (Scalar(1) / (Scalar(1) + (-v.array()).exp())).matrix();
  }

  std::vector<compressor_layer> layers_;
  compressor_options opt_;
  std::vector<nn::parameter<Scalar>> a_, b_, t_;
  std::unique_ptr<nn::parameter<Scalar>> kernel_, bias_;
  std::vector<step_cache> cache_;
  std::vector<const tensor<Scalar>*> weights_, biases_;
};

/// RMSProp as TensorFlow 1's RMSPropOptimizer (the authors' optimiser for φ): the mean square
/// starts at 1, ms = decay ms + (1-decay) g^2, w -= lr g / sqrt(ms + eps).
template <class Scalar>
class tf_rmsprop {
 public:
  struct options {
    double lr = 1e-3;
    double decay = 0.9;
    double eps = 1e-10;
    void validate() const {
      if (!(lr >= 0 && decay >= 0 && decay < 1 && eps >= 0)) {
        slimnet::detail::raise<config_error>("slimnet::deepiot::tf_rmsprop", "invalid options: lr={} decay={} eps={}", lr, decay,
                                             eps);
      }
    }
  };
  explicit tf_rmsprop(options opt) : opt_(opt) { opt_.validate(); }

  /// Checkpoint state: the mean squares, one per parameter of the compressor in visiting order.
  void save_state(nn::state_writer<Scalar>& out) const {
    out.put_integer("count", static_cast<std::int64_t>(ms_.size()));
    for (std::size_t k = 0; k < ms_.size(); ++k) {
      tensor<Scalar> t({ms_[k].size()});
      t.flat() = ms_[k];
      out.put_tensor(std::to_string(k), t);
    }
  }
  /// Restores the mean squares for `c` (each must match its parameter's size).
  void load_state(compressor<Scalar>& c, const nn::state_reader<Scalar>& in) {
    std::vector<index_t> sizes;
    c.visit_parameters([&](nn::parameter<Scalar>& p) { sizes.push_back(p.size()); });
    const auto count = static_cast<std::size_t>(in.get_integer("count", 0, static_cast<std::int64_t>(sizes.size())));
    std::vector<column_vector<Scalar>> ms;
    for (std::size_t k = 0; k < count; ++k) {
      tensor<Scalar> t({sizes[k]});
      in.read_tensor(std::to_string(k), t);
      ms.emplace_back(t.flat());
    }
    ms_ = std::move(ms);
  }

  void step(compressor<Scalar>& c) {
    std::size_t k = 0;
    const auto decay = static_cast<Scalar>(opt_.decay), lr = static_cast<Scalar>(opt_.lr), eps = static_cast<Scalar>(opt_.eps);
    c.visit_parameters([&](nn::parameter<Scalar>& p) {
      if (ms_.size() <= k) ms_.push_back(column_vector<Scalar>::Ones(p.size()));
      auto& ms = ms_[k++];
      const auto g = p.grad().flat();
      ms = decay * ms + (Scalar(1) - decay) * g.cwiseAbs2();
      p.value().flat().array() -= lr * g.array() / (ms.array() + eps).sqrt();
    });
  }

 private:
  options opt_;
  std::vector<column_vector<Scalar>> ms_;
};

}  // namespace slimnet::deepiot
