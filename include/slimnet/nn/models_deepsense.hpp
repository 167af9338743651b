// DeepSense (Yao et al., WWW 2017) for HHAR as the authors' TensorFlow code builds it
// (yscacaca/DeepSense, deepSense_HHAR_tf.py), from slimnet layers, plus the three small layers it
// needs: time_distributed (per-interval layers over a sequence), sensor_stack (one sub-network per
// sensor, outputs stacked) and zero_pad2d (TensorFlow's asymmetric SAME padding).
//
// Input (N, T = 20 intervals, 120): per interval the FFT features of acc (first 60) and gyro
// (last 60), see data/hhar.hpp. Per interval, each sensor: conv1 64 @ 1x18 stride 6 -> conv2
// 64 @ 1x3 -> conv3 64 @ 1x3 (each BN -> ReLU -> dropout, none after conv3), giving (64, 1, 4);
// the two sensors stacked (64, 2, 4) -> dropout -> conv4 64 @ 2x8, conv5 64 @ 2x6, conv6 64 @ 2x4,
// SAME padding, each BN -> ReLU (-> dropout after conv4, conv5) -> 512 features per interval;
// then GRU 120 -> dropout -> GRU 120 -> dropout over the valid intervals, the average over the
// valid intervals, and a linear layer to the 6 classes.
//
// Departures from the reference, both harmless for the parameter counts: the convolutions'
// dropout here is element-wise (the reference drops whole channels per example), and the 512
// features of an interval are flattened channel-major (c, sensor, position) where TensorFlow's
// NHWC reshape gives (sensor, position, c): a fixed permutation of gru1's input columns.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequence_pool.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::nn {

/// Applies a per-step layer to every step of (N, T, F) sequences at once: the steps are folded into
/// the batch, (N*T, step_shape...) with prod(step_shape) = F, and the output (N*T, out...) is
/// unfolded to (N, T, prod(out)). The inner layer sees no sequence lengths: padded steps go
/// through it too (zeros in, whatever it makes of zeros out), as in the reference model.
template <class Scalar>
class time_distributed : public layer<Scalar> {
 public:
  template <class Layer, class = std::enable_if_t<std::is_base_of_v<layer<Scalar>, Layer>>>
  time_distributed(Layer inner, shape_t step_shape)
      : time_distributed(std::unique_ptr<layer<Scalar>>(std::make_unique<Layer>(std::move(inner))), std::move(step_shape)) {}
  time_distributed(std::unique_ptr<layer<Scalar>> inner, shape_t step_shape)
      : inner_(std::move(inner)), step_(std::move(step_shape)) {
    if (!inner_ || step_.empty() || shape_size(step_) <= 0) {
      slimnet::detail::raise<config_error>("slimnet::nn::time_distributed", "needs a layer and a non-empty step shape, got {}",
                                           shape_string(step_));
    }
  }
  time_distributed(const time_distributed& other) : layer<Scalar>(other), inner_(other.inner_->clone()), step_(other.step_) {
    inner_->set_name(other.name());
  }
  time_distributed& operator=(const time_distributed&) = delete;

  layer<Scalar>& inner() { return *inner_; }
  const layer<Scalar>& inner() const { return *inner_; }
  const shape_t& step_shape() const { return step_; }

  std::string kind() const override { return "TimeDistributed"; }
  std::string describe() const override {
    return fmt::format("TimeDistributed(step {}, {})", shape_string(step_), inner_->describe());
  }

  shape_t output_shape(const shape_t& in) const override {
    const index_t f = in.size() >= 3 ? shape_size(shape_t(in.begin() + 2, in.end())) : -1;
    if (in.size() < 3 || f != shape_size(step_)) {
      slimnet::detail::raise<shape_error>("slimnet::nn::time_distributed::forward",
                                          "input of shape {} is not (N, T, {} features)", shape_string(in), shape_size(step_));
    }
    const shape_t out = inner_->output_shape(folded(in[0], in[1]));
    return {in[0], in[1], shape_size(shape_t(out.begin() + 1, out.end()))};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    folded_ = x;
    folded_.reshape(folded(x.dim(0), x.dim(1)));
    forward_context per_step = ctx;
    per_step.lengths = nullptr;
    inner_->forward(folded_, out_, per_step);
    y.flat() = out_.flat();
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    d_out_ = dy;
    d_out_.reshape(out_.shape());
    inner_->backward(folded_, out_, d_out_, dx ? &d_folded_ : nullptr);
    if (dx) {
      *dx = d_folded_;
      dx->reshape(x.shape());
    }
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override { inner_->visit_parameters(visit); }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    std::as_const(*inner_).visit_parameters(visit);
  }
  void visit_layers(const typename layer<Scalar>::layer_visitor& visit) override {
    visit(*this);
    inner_->visit_layers(visit);
  }
  void reset_parameters(rng& gen) override { inner_->reset_parameters(gen); }
  std::unique_ptr<layer<Scalar>> clone() const override {
    clone_scope scope;  // the copy's parameters share one memo (nn/parameter.hpp)
    return std::make_unique<time_distributed>(*this);
  }
  /// The inner layer carries the same name: a sequential inside names its layers "<name>.<child>".
  void set_name(const std::string& name) override {
    layer<Scalar>::set_name(name);
    inner_->set_name(name);
  }

 protected:
  void visit_own_parameters(const typename layer<Scalar>::parameter_visitor&) override {}

 private:
  shape_t folded(index_t n, index_t t) const {
    shape_t s{n * t};
    s.insert(s.end(), step_.begin(), step_.end());
    return s;
  }

  std::unique_ptr<layer<Scalar>> inner_;
  shape_t step_;
  tensor<Scalar> folded_, out_, d_out_, d_folded_;
};

/// One sub-network per sensor. Input (M, C, H, K*W): K sensors side by side on the last axis;
/// sensor k's slice [k*W, (k+1)*W) goes through its own layers; the outputs, all of one shape
/// (M, C', H', W'), are stacked on the height axis: (M, C', K*H', W'), sensor k in rows
/// [k*H', (k+1)*H') (DeepSense's concatenation on the sensor axis).
template <class Scalar>
class sensor_stack : public layer<Scalar> {
 public:
  sensor_stack() = default;
  sensor_stack(const sensor_stack& other) : layer<Scalar>(other), names_(other.names_) {
    for (const auto& b : other.branches_) branches_.push_back(b->clone());
    set_name(other.name());
  }
  sensor_stack& operator=(const sensor_stack&) = delete;
  sensor_stack(sensor_stack&&) noexcept = default;
  sensor_stack& operator=(sensor_stack&&) noexcept = default;

  /// Appends the sub-network of the next sensor, named `name` ("acc": parameters "<stack>.acc.*").
  template <class Layer>
  Layer& add(std::string name, Layer l) {
    return static_cast<Layer&>(add_ptr(std::move(name), std::make_unique<Layer>(std::move(l))));
  }
  layer<Scalar>& add_ptr(std::string name, std::unique_ptr<layer<Scalar>> l) {
    names_.push_back(std::move(name));
    branches_.push_back(std::move(l));
    set_name(this->name());
    return *branches_.back();
  }
  std::size_t size() const { return branches_.size(); }
  layer<Scalar>& operator[](std::size_t k) { return *branches_.at(k); }
  const layer<Scalar>& operator[](std::size_t k) const { return *branches_.at(k); }
  /// The name sensor k's sub-network was added under ("acc").
  const std::string& branch_name(std::size_t k) const { return names_.at(k); }

  std::string kind() const override { return "SensorStack"; }
  std::string describe() const override {
    std::string s = "SensorStack(";
    for (std::size_t k = 0; k < branches_.size(); ++k) s += fmt::format("\n  ({}): {}", names_[k], branches_[k]->describe());
    return s + ")";
  }

  shape_t output_shape(const shape_t& in) const override {
    constexpr const char* fn = "slimnet::nn::sensor_stack::forward";
    const auto k = static_cast<index_t>(branches_.size());
    if (k == 0 || in.size() != 4 || in[3] % k != 0) {
      slimnet::detail::raise<shape_error>(fn, "input of shape {} does not split into {} sensors on its last axis",
                                          shape_string(in), k);
    }
    const shape_t out = branches_[0]->output_shape(slice_shape(in));
    for (std::size_t b = 1; b < branches_.size(); ++b) {
      if (branches_[b]->output_shape(slice_shape(in)) != out) {
        slimnet::detail::raise<shape_error>(fn, "sensor '{}' outputs {}, sensor '{}' {}", names_[0], shape_string(out), names_[b],
                                            shape_string(branches_[b]->output_shape(slice_shape(in))));
      }
    }
    if (out.size() != 4)
      slimnet::detail::raise<shape_error>(fn, "sensor outputs of shape {} are not (M, C, H, W)", shape_string(out));
    return {out[0], out[1], k * out[2], out[3]};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const std::size_t k = branches_.size();
    slices_.resize(k);
    outs_.resize(k);
    for (std::size_t b = 0; b < k; ++b) {
      slices_[b].resize(slice_shape(x.shape()));
      for_each_slice_row(x.shape(), b, [&](index_t full, index_t part, index_t w) {
        std::copy_n(x.data() + full, w, slices_[b].data() + part);
      });
      branches_[b]->forward(slices_[b], outs_[b], ctx);
      for_each_stacked_plane(outs_[b].shape(), b, [&](index_t whole, index_t part, index_t n) {
        std::copy_n(outs_[b].data() + part, n, y.data() + whole);
      });
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const std::size_t k = branches_.size();
    d_outs_.resize(k);
    d_slices_.resize(k);
    if (dx) dx->resize(x.shape());
    for (std::size_t b = 0; b < k; ++b) {
      d_outs_[b].resize(outs_[b].shape());
      for_each_stacked_plane(outs_[b].shape(), b, [&](index_t whole, index_t part, index_t n) {
        std::copy_n(dy.data() + whole, n, d_outs_[b].data() + part);
      });
      branches_[b]->backward(slices_[b], outs_[b], d_outs_[b], dx ? &d_slices_[b] : nullptr);
      if (dx) {
        for_each_slice_row(x.shape(), b, [&](index_t full, index_t part, index_t w) {
          std::copy_n(d_slices_[b].data() + part, w, dx->data() + full);
        });
      }
    }
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    for (auto& b : branches_) b->visit_parameters(visit);
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    for (const auto& b : branches_) std::as_const(*b).visit_parameters(visit);
  }
  void visit_layers(const typename layer<Scalar>::layer_visitor& visit) override {
    visit(*this);
    for (auto& b : branches_) b->visit_layers(visit);
  }
  void reset_parameters(rng& gen) override {
    for (auto& b : branches_) b->reset_parameters(gen);
  }
  std::unique_ptr<layer<Scalar>> clone() const override {
    clone_scope scope;  // the copy's parameters share one memo (nn/parameter.hpp)
    return std::make_unique<sensor_stack>(*this);
  }
  void set_name(const std::string& name) override {
    layer<Scalar>::set_name(name);
    for (std::size_t b = 0; b < branches_.size(); ++b) branches_[b]->set_name(name.empty() ? names_[b] : name + "." + names_[b]);
  }

 protected:
  void visit_own_parameters(const typename layer<Scalar>::parameter_visitor&) override {}

 private:
  shape_t slice_shape(const shape_t& in) const { return {in[0], in[1], in[2], in[3] / static_cast<index_t>(branches_.size())}; }

  /// f(offset in the full input, offset in sensor b's slice, W) for every row of sensor b's slice.
  template <class F>
  void for_each_slice_row(const shape_t& full_shape, std::size_t b, F&& f) const {
    const index_t full = full_shape[3], w = full / static_cast<index_t>(branches_.size()), rows = shape_size(full_shape) / full;
    for (index_t r = 0; r < rows; ++r) f(r * full + static_cast<index_t>(b) * w, r * w, w);
  }
  /// f(offset in the stacked output, offset in sensor b's output, H'*W') for every (m, c) plane.
  template <class F>
  void for_each_stacked_plane(const shape_t& part_shape, std::size_t b, F&& f) const {
    const index_t planes = part_shape[0] * part_shape[1], plane = part_shape[2] * part_shape[3];
    const auto k = static_cast<index_t>(branches_.size());
    for (index_t p = 0; p < planes; ++p) f((p * k + static_cast<index_t>(b)) * plane, p * plane, plane);
  }

  std::vector<std::unique_ptr<layer<Scalar>>> branches_;
  std::vector<std::string> names_;
  std::vector<tensor<Scalar>> slices_, outs_, d_outs_, d_slices_;
};

/// Zero padding of (N, C, H, W) by (left, right, top, bottom), as PyTorch's ZeroPad2d; with
/// same_padding() it gives TensorFlow's SAME convolutions (the extra row/column goes last).
template <class Scalar>
class zero_pad2d : public cloneable<zero_pad2d<Scalar>, Scalar> {
 public:
  zero_pad2d(index_t left, index_t right, index_t top, index_t bottom) : left_(left), right_(right), top_(top), bottom_(bottom) {
    if (left < 0 || right < 0 || top < 0 || bottom < 0) {
      slimnet::detail::raise<config_error>("slimnet::nn::zero_pad2d", "padding ({}, {}, {}, {}) must be >= 0", left, right, top,
                                           bottom);
    }
  }
  /// TensorFlow's SAME padding for a stride-1 kernel_h x kernel_w convolution.
  static zero_pad2d same_padding(index_t kernel_h, index_t kernel_w) {
    return zero_pad2d((kernel_w - 1) / 2, kernel_w / 2, (kernel_h - 1) / 2, kernel_h / 2);
  }

  std::string kind() const override { return "ZeroPad2d"; }
  std::string describe() const override { return fmt::format("ZeroPad2d(({}, {}, {}, {}))", left_, right_, top_, bottom_); }
  index_t left() const { return left_; }
  index_t right() const { return right_; }
  index_t top() const { return top_; }
  index_t bottom() const { return bottom_; }
  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 4)
      slimnet::detail::raise<shape_error>("slimnet::nn::zero_pad2d::forward", "input of shape {} is not (N, C, H, W)",
                                          shape_string(in));
    return {in[0], in[1], in[2] + top_ + bottom_, in[3] + left_ + right_};
  }
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    y.set_zero();
    for_each_row(x.shape(), [&](index_t small, index_t big, index_t w) { std::copy_n(x.data() + small, w, y.data() + big); });
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx == nullptr) return;
    dx->resize(x.shape());
    for_each_row(x.shape(), [&](index_t small, index_t big, index_t w) { std::copy_n(dy.data() + big, w, dx->data() + small); });
  }

 private:
  /// f(offset in the unpadded tensor, offset in the padded one, W) for every row.
  template <class F>
  void for_each_row(const shape_t& in, F&& f) const {
    const index_t planes = in[0] * in[1], h = in[2], w = in[3], bh = h + top_ + bottom_, bw = w + left_ + right_;
    for (index_t p = 0; p < planes; ++p)
      for (index_t i = 0; i < h; ++i) f((p * h + i) * w, (p * bh + i + top_) * bw + left_, w);
  }
  index_t left_, right_, top_, bottom_;
};

namespace models {

/// DeepSense's sizes (deepSense_HHAR_tf.py's constants).
struct deepsense_options {
  index_t intervals = 20;         ///< WIDE: steps per window
  index_t spectral_samples = 10;  ///< FFT points per interval: 6 * this features per sensor
  index_t sensors = 2;            ///< acc, gyro
  index_t channels = 64;          ///< CONV_NUM = CONV_NUM2
  index_t hidden = 120;           ///< INTER_DIM: units of each GRU
  index_t classes = 6;            ///< OUT_DIM
  double conv_dropout = 0.2;      ///< 1 - CONV_KEEP_PROB
  double gru_dropout = 0.5;       ///< 1 - output_keep_prob of the GRUs' DropoutWrapper

  void validate() const {
    if (intervals <= 0 || spectral_samples < 3 || sensors <= 0 || channels <= 0 || hidden <= 0 || classes <= 1) {
      slimnet::detail::raise<config_error>(
          "slimnet::nn::models::deepsense",
          "invalid sizes: intervals={} spectral_samples={} sensors={} channels={} hidden={} classes={}", intervals,
          spectral_samples, sensors, channels, hidden, classes);
    }
  }
  index_t features() const { return sensors * 6 * spectral_samples; }
};

/// DeepSense for (N, intervals, features()) input with sequence lengths. Layers, by name:
///   frames (time_distributed over each interval):
///     frames.sensors.{acc,gyro}.{conv1,bn1,relu1,drop1,conv2,bn2,relu2,drop2,conv3,bn3,relu3},
///     frames.drop_in, frames.{pad4,conv4,bn4,relu4,drop4,pad5,conv5,bn5,relu5,drop5,pad6,conv6,bn6,relu6},
///     frames.flatten
///   gru1, gru1_dropout, gru2, gru2_dropout, mean, fc
template <class Scalar>
sequential<Scalar> deepsense(rng& gen, const deepsense_options& o = {}) {
  o.validate();
  const index_t c = o.channels, per_sensor = 6 * o.spectral_samples;
  // conv1 covers 3 frequency bins of 3 axes x {re, im}: kernel 18, stride 6.
  const index_t k1 = 18, s1 = 6;
  if (per_sensor < k1 || (per_sensor - k1) / s1 + 1 < 5) {
    slimnet::detail::raise<config_error>("slimnet::nn::models::deepsense",
                                         "spectral_samples = {} leaves too few positions for conv1..conv3", o.spectral_samples);
  }
  sensor_stack<Scalar> sensors;
  for (index_t k = 0; k < o.sensors; ++k) {
    sequential<Scalar> s;
    s.add("conv1", conv2d<Scalar>(1, c, 1, k1, {s1, 0, true}));
    s.add("bn1", batch_norm2d<Scalar>(c));
    s.add("relu1", relu<Scalar>());
    s.add("drop1", dropout<Scalar>(o.conv_dropout));
    s.add("conv2", conv2d<Scalar>(c, c, 1, 3, {1, 0, true}));
    s.add("bn2", batch_norm2d<Scalar>(c));
    s.add("relu2", relu<Scalar>());
    s.add("drop2", dropout<Scalar>(o.conv_dropout));
    s.add("conv3", conv2d<Scalar>(c, c, 1, 3, {1, 0, true}));
    s.add("bn3", batch_norm2d<Scalar>(c));
    s.add("relu3", relu<Scalar>());
    const std::string name = o.sensors == 2 ? (k == 0 ? "acc" : "gyro") : fmt::format("sensor{}", k);
    sensors.add(name, std::move(s));
  }
  sequential<Scalar> frame;
  frame.add("sensors", std::move(sensors));
  frame.add("drop_in", dropout<Scalar>(o.conv_dropout));
  const index_t merge_kernels[3] = {8, 6, 4};
  for (int i = 0; i < 3; ++i) {
    const int id = 4 + i;
    const index_t kh = o.sensors > 1 ? 2 : 1, kw = merge_kernels[i];
    frame.add(fmt::format("pad{}", id), zero_pad2d<Scalar>::same_padding(kh, kw));
    frame.add(fmt::format("conv{}", id), conv2d<Scalar>(c, c, kh, kw, {1, 0, true}));
    frame.add(fmt::format("bn{}", id), batch_norm2d<Scalar>(c));
    frame.add(fmt::format("relu{}", id), relu<Scalar>());
    if (i < 2) frame.add(fmt::format("drop{}", id), dropout<Scalar>(o.conv_dropout));
  }
  frame.add("flatten", flatten<Scalar>());
  const index_t positions = (((per_sensor - k1) / s1 + 1) - 2) - 2;  // after conv1..conv3 (VALID)
  const index_t frame_features = c * o.sensors * positions;          // 64 * 2 * 4 = 512

  sequential<Scalar> m;
  m.add("frames", time_distributed<Scalar>(std::move(frame), {1, 1, o.features()}));
  recurrent_options every_step;
  m.add("gru1", gru<Scalar>(frame_features, o.hidden, every_step));
  m.add("gru1_dropout", dropout<Scalar>(o.gru_dropout));
  m.add("gru2", gru<Scalar>(o.hidden, o.hidden, every_step));
  m.add("gru2_dropout", dropout<Scalar>(o.gru_dropout));
  m.add("mean", sequence_mean<Scalar>());
  m.add("fc", linear<Scalar>(o.hidden, o.classes));
  m.reset_parameters(gen);
  return m;
}

}  // namespace models
}  // namespace slimnet::nn
