// BatchNorm followed by BNN's sign activation, folded into one comparison per channel (inference).
//
// In evaluation mode BatchNorm is y = gamma_c (x - mu_c) / sigma_c + beta_c, and the sign activation
// that follows only asks whether y >= 0, i.e. (gamma_c > 0) whether x >= t_c = mu_c - beta_c sigma_c
// / gamma_c, with the comparison reversed where gamma_c < 0 and a constant where gamma_c = 0. The
// threshold is not computed from that formula (whose rounding differs from the BatchNorm layer's):
// each step of the layer's float arithmetic (subtract, multiply by a constant, add, fused or not)
// is monotone in x, so the set of inputs the float pair maps to +1 is an interval of floats ending
// at +-infinity, and t_c is found exactly by bisection over the ordered floats, evaluating the
// BatchNorm and sign layers themselves. The folded layer then gives bitwise the float pair's output
// (NaN inputs included: their sign is probed too) in one pass with no arithmetic.
//
//   nn::compressed::fold_batch_norm_sign(model);   // every [BatchNorm, SignActivation] pair
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/quant/binary.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class sign_threshold : public layer<Scalar> {
 public:
  /// Per channel: +1 where (lo <= x <= hi) == inside, else -1; NaN gives nan_plus. A BatchNorm with
  /// gamma > 0 is [t, +inf] (x >= t), gamma < 0 [-inf, t], and gamma = 0 a constant, except where
  /// (x - mu) / sigma overflows and 0 * inf makes the float pair's output NaN: [x1, x2] with
  /// `inside` the constant's sign and NaN's sign outside.
  struct channel {
    Scalar lo = -std::numeric_limits<Scalar>::infinity(), hi = std::numeric_limits<Scalar>::infinity();
    bool inside = true;
    bool nan_plus = true;  ///< what a NaN input gives (the float pair's answer)
  };

  sign_threshold(std::vector<channel> channels, int spatial_rank) : channels_(std::move(channels)), spatial_rank_(spatial_rank) {
    if (channels_.empty()) slimnet::detail::raise<config_error>("slimnet::nn::compressed::sign_threshold", "no channels");
    for (const channel& k : channels_) {  // the (N, C) loop's arrays
      lo_.push_back(k.lo);
      hi_.push_back(k.hi);
      in_value_.push_back(k.inside ? Scalar(1) : Scalar(-1));
      nan_value_.push_back(k.nan_plus ? Scalar(1) : Scalar(-1));
    }
  }

  /// The fold of `bn` (evaluation mode) followed by `sign` (deterministic in evaluation).
  /// config_error when a probe of the pair disagrees with the fold (a layer that is not monotone).
  static sign_threshold from(batch_norm<Scalar>& bn, quant::sign_activation<Scalar>& sign) {
    const index_t c = bn.features();
    const auto n = static_cast<std::size_t>(c);
    const int rank = bn.spatial_rank() == 2 ? 2 : 1;
    tensor<Scalar> probe(rank == 2 ? shape_t{1, c, 1, 1} : shape_t{1, c}), normed, signs;
    // plus(v): the pair's answer (+1?) for input v[ch] in each channel.
    auto plus = [&](const std::vector<Scalar>& v) {
      for (index_t ch = 0; ch < c; ++ch) probe[ch] = v[static_cast<std::size_t>(ch)];
      bn.forward(probe, normed, forward_context{});
      sign.forward(normed, signs, forward_context{});
      std::vector<bool> out(n);
      for (std::size_t ch = 0; ch < n; ++ch) out[ch] = signs[static_cast<index_t>(ch)] > Scalar(0);
      return out;
    };
    auto all = [&](Scalar v) { return std::vector<Scalar>(n, v); };
    constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
    // The ends are the infinities (ordered floats: -inf < lowest ... max < inf): with gamma = 0 the
    // pair's output at +-inf is NaN's sign whether or not (x - mu) / sigma overflows before.
    const auto at_low = plus(all(-inf)), at_zero = plus(all(Scalar(0)));
    const auto at_high = plus(all(inf)), at_nan = plus(all(std::numeric_limits<Scalar>::quiet_NaN()));
    // bisect(a, b): per channel, where the answer changes between keys a (answer A) and b (answer
    // B != A): returns the first key whose answer is B (bisection over the ordered floats).
    auto bisect = [&](std::vector<key_t> a, std::vector<key_t> b, const std::vector<bool>& active) {
      const auto answer_a = plus(values(a));
      std::vector<Scalar> mid(n);
      for (int step = 0; step <= static_cast<int>(8 * sizeof(Scalar)); ++step) {
        for (std::size_t ch = 0; ch < n; ++ch) mid[ch] = value_of(a[ch] + (b[ch] - a[ch]) / 2);
        const auto at_mid = plus(mid);
        for (std::size_t ch = 0; ch < n; ++ch) {
          if (!active[ch] || b[ch] - a[ch] <= 1) continue;
          (at_mid[ch] == answer_a[ch] ? a[ch] : b[ch]) = key_of(mid[ch]);
        }
      }
      return b;
    };
    const std::vector<key_t> low(n, key_of(-inf)), zero(n, key_of(Scalar(0))), high(n, key_of(inf));
    std::vector<bool> monotone(n), dip(n);
    for (std::size_t ch = 0; ch < n; ++ch) {
      monotone[ch] = at_low[ch] != at_high[ch];
      dip[ch] = !monotone[ch] && at_zero[ch] != at_low[ch];
    }
    const auto step = bisect(low, high, monotone);       // first key answering as +inf
    const auto rise = bisect(low, zero, dip);            // first key answering as 0
    const auto fall = bisect(zero, high, dip);           // first key past the constant
    std::vector<channel> channels(n);
    for (std::size_t ch = 0; ch < n; ++ch) {
      channel& k = channels[ch];
      k.nan_plus = at_nan[ch];
      if (monotone[ch]) {
        if (at_high[ch]) {
          k.lo = value_of(step[ch]);  // +1 from the first float answering +1 up
        } else {
          k.hi = value_of(step[ch] - 1);  // +1 up to the last float answering +1
        }
      } else if (dip[ch]) {
        k.lo = value_of(rise[ch]);
        k.hi = value_of(fall[ch] - 1);
        k.inside = at_zero[ch];
      } else {
        k.inside = at_zero[ch];  // a constant: everything is inside
      }
    }
    sign_threshold folded(std::move(channels), rank);
    // Every boundary, its neighbours and the infinities probed once more: a pair that is not
    // monotone (or not a single interval) is refused rather than folded wrongly.
    std::vector<std::vector<Scalar>> checks;
    for (const auto* keys : {&step, &rise, &fall}) {
      for (int d : {-1, 0}) {
        std::vector<Scalar> v(n);
        for (std::size_t ch = 0; ch < n; ++ch) v[ch] = value_of((*keys)[ch] + static_cast<key_t>(d) + (d < 0 && (*keys)[ch] == 0 ? 1 : 0));
        checks.push_back(std::move(v));
      }
    }
    checks.push_back(all(inf));
    checks.push_back(all(-inf));
    checks.push_back(all(Scalar(0)));
    checks.push_back(all(std::numeric_limits<Scalar>::lowest()));
    checks.push_back(all(std::numeric_limits<Scalar>::max()));
    for (const auto& v : checks) {
      const auto expected = plus(v);
      for (std::size_t ch = 0; ch < n; ++ch) {
        if (expected[ch] != folded.plus_at(static_cast<index_t>(ch), v[ch])) {
          slimnet::detail::raise<config_error>("slimnet::nn::compressed::sign_threshold::from",
                                               "channel {} of {}: the pair gives {} at {}, the fold {}: it cannot be folded", ch,
                                               bn.describe(), expected[ch] ? "+1" : "-1", v[ch], expected[ch] ? "-1" : "+1");
        }
      }
    }
    return folded;
  }

  std::string kind() const override { return "SignThreshold"; }
  std::string describe() const override { return fmt::format("SignThreshold({}, BatchNorm{}d + sign folded)", channels_.size(), spatial_rank_); }
  index_t features() const { return static_cast<index_t>(channels_.size()); }
  const std::vector<channel>& channels() const { return channels_; }

  /// The output (+1?) for input v in channel ch.
  bool plus_at(index_t ch, Scalar v) const {
    const channel& k = channels_[static_cast<std::size_t>(ch)];
    if (v != v) return k.nan_plus;
    return (v >= k.lo && v <= k.hi) == k.inside;
  }

  shape_t output_shape(const shape_t& in) const override {
    const bool rank_ok = spatial_rank_ == 2 ? in.size() == 4 : (in.size() == 2 || in.size() == 3);
    if (!rank_ok || in[1] != features()) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::sign_threshold::forward", "input of shape {} does not fit {}",
                                          shape_string(in), describe());
    }
    return in;
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), c = features(), l = x.size() / std::max<index_t>(n * c, 1);
    if (l == 1) {
      // (N, C): one value per channel and row; the loop runs along the channels instead.
      for (index_t i = 0; i < n; ++i) {
        const Scalar* xp = x.data() + i * c;
        Scalar* yp = y.data() + i * c;
        for (index_t ch = 0; ch < c; ++ch) {
          const Scalar v = xp[ch];
          const bool in = v >= lo_[static_cast<std::size_t>(ch)] && v <= hi_[static_cast<std::size_t>(ch)];
          yp[ch] = v != v ? nan_value_[static_cast<std::size_t>(ch)]
                          : (in ? in_value_[static_cast<std::size_t>(ch)] : -in_value_[static_cast<std::size_t>(ch)]);
        }
      }
      return;
    }
    for (index_t i = 0; i < n; ++i) {
      for (index_t ch = 0; ch < c; ++ch) {
        const channel& k = channels_[static_cast<std::size_t>(ch)];
        const Scalar* xp = x.data() + (i * c + ch) * l;
        Scalar* yp = y.data() + (i * c + ch) * l;
        const Scalar lo = k.lo, hi = k.hi, nan_value = k.nan_plus ? Scalar(1) : Scalar(-1);
        const Scalar in_value = k.inside ? Scalar(1) : Scalar(-1);
        // Branch-free: the compiler vectorises it; NaN (x != x) patched in the same pass.
        for (index_t j = 0; j < l; ++j) {
          const Scalar v = xp[j];
          yp[j] = v != v ? nan_value : (v >= lo && v <= hi ? in_value : -in_value);
        }
      }
    }
  }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&, tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::nn::compressed::sign_threshold::backward",
                                         "{} is an inference-only layer: train the BatchNorm and sign layers and fold them again", describe());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<sign_threshold>(*this); }

 private:
  using key_t = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
  static constexpr key_t sign_bit = key_t{1} << (8 * sizeof(Scalar) - 1);
  /// Order-preserving map of floats to unsigned integers (-0 just below +0).
  static key_t key_of(Scalar v) {
    key_t u;
    std::memcpy(&u, &v, sizeof u);
    return (u & sign_bit) ? static_cast<key_t>(~u) : static_cast<key_t>(u | sign_bit);
  }
  static Scalar value_of(key_t k) {
    const key_t u = (k & sign_bit) ? static_cast<key_t>(k & ~sign_bit) : static_cast<key_t>(~k);
    Scalar v;
    std::memcpy(&v, &u, sizeof v);
    return v;
  }
  static std::vector<Scalar> values(const std::vector<key_t>& keys) {
    std::vector<Scalar> v(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) v[i] = value_of(keys[i]);
    return v;
  }

  std::vector<channel> channels_;
  int spatial_rank_;
  std::vector<Scalar> lo_, hi_, in_value_, nan_value_;  // channels_ as arrays
};

/// Replaces every BatchNorm directly followed by a SignActivation in `model` (and in the
/// Sequentials nested in it) by their sign_threshold fold; returns one line per fold ("bn2 + act2:
/// SignThreshold(64, ...)"). Inference only: the folded model cannot be trained.
template <class Scalar>
std::vector<std::string> fold_batch_norm_sign(sequential<Scalar>& model, const std::string& prefix = "") {
  std::vector<std::string> report;
  std::vector<bool> drop(model.size(), false);
  bool any = false;
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (auto* inner = dynamic_cast<sequential<Scalar>*>(&model[i])) {
      for (auto& line : fold_batch_norm_sign(*inner, prefix + model.local_name(i) + ".")) report.push_back(std::move(line));
      continue;
    }
    if (i + 1 >= model.size()) continue;
    auto* bn = dynamic_cast<batch_norm<Scalar>*>(&model[i]);
    auto* sign = dynamic_cast<quant::sign_activation<Scalar>*>(&model[i + 1]);
    if (bn == nullptr || sign == nullptr) continue;
    auto folded = std::make_unique<sign_threshold<Scalar>>(sign_threshold<Scalar>::from(*bn, *sign));
    report.push_back(prefix + model.local_name(i) + " + " + model.local_name(i + 1) + ": " + folded->describe());
    model.replace(i, std::move(folded));
    drop[i + 1] = true;
    any = true;
    ++i;
  }
  if (!any) return report;
  sequential<Scalar> rebuilt;
  rebuilt.set_name(model.name());
  for (std::size_t i = 0; i < model.size(); ++i)
    if (!drop[i]) rebuilt.add_ptr(model.local_name(i), model[i].clone());
  model = std::move(rebuilt);
  return report;
}

}  // namespace slimnet::nn::compressed
