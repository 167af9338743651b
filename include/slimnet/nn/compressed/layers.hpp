// Compressed inference layers: a Linear or Conv2d whose weights live in a compressed format and run
// on that format's kernel (an engine). They compute what the float layer computes with its
// effective (masked / quantized / binarized) weights, to the tolerance each engine states, and
// are inference-only: backward throws (train the float model, convert again).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/sparse_choice.hpp"
#include "slimnet/kernels/sparse_conv.hpp"
#include "slimnet/nn/compressed/csr16_engine.hpp"
#include "slimnet/nn/compressed/engine.hpp"
#include "slimnet/nn/compressed/int8_engine.hpp"
#include "slimnet/nn/compressed/xnor_engine.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::nn::compressed {

/// y = x W^T + b for x of shape (N, in).
template <class Scalar>
class compressed_linear : public layer<Scalar> {
 public:
  explicit compressed_linear(std::unique_ptr<engine<Scalar>> e) : engine_(std::move(e)) {
    if (!engine_) slimnet::detail::raise<config_error>("slimnet::nn::compressed::compressed_linear", "null engine");
  }
  compressed_linear(const compressed_linear& other)
      : layer<Scalar>(other), engine_(other.engine_->clone()), relu_(other.relu_), flatten_(other.flatten_) {}
  compressed_linear(compressed_linear&&) noexcept = default;

  std::string kind() const override { return engine_->kind_prefix() + "Linear"; }
  std::string describe() const override {
    return fmt::format("{}{}({}, {}, {}, {} bytes){}", flatten_ ? "Flatten + " : "", kind(), engine_->in_features(), engine_->out_features(),
                       engine_->format(), engine_->bytes(), relu_ ? " + ReLU" : "");
  }
  index_t in_features() const { return engine_->in_features(); }
  index_t out_features() const { return engine_->out_features(); }
  const engine<Scalar>& weights() const { return *engine_; }
  engine<Scalar>& weights() { return *engine_; }

  shape_t output_shape(const shape_t& in) const override {
    // With the Flatten fused: any (N, d1, d2, ...) whose d1 d2 ... is in_features, read as (N, in).
    const bool fits = flatten_ ? in.size() >= 2 && shape_size(in) == in[0] * in_features() && (in[0] > 0 || shape_size(in) == 0)
                               : in.size() == 2 && in[1] == in_features();
    if (!fits) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::compressed_linear::forward", "input of shape {} does not fit {}: expected (N, {}{})",
                                          shape_string(in), describe(), flatten_ ? "... of " : "", in_features());
    }
    return {in[0], out_features()};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    if (x.dim(0) == 0) return;
    engine_->apply_rows(x.data(), x.dim(0), y.data());
    if (!relu_) return;
    // max(0, v), NaN -> 0 (as the fused convolution epilogue).
    Scalar* out = y.data();
    for (index_t i = 0; i < y.size(); ++i) out[i] = out[i] > Scalar(0) ? out[i] : Scalar(0);
  }

  /// A ReLU applied to the output inside forward (compress folds the ReLU layer that follows a
  /// compressed Linear into it: one layer call and one pass over the activations fewer).
  void fuse_relu(bool on = true) { relu_ = on; }
  bool relu_fused() const { return relu_; }
  /// The Flatten before it folded in (compress does this): an (N, C, H, W) input is read as the
  /// (N, C H W) rows it already is in memory, with no copy and no layer call.
  void fuse_flatten(bool on = true) { flatten_ = on; }
  bool flatten_fused() const { return flatten_; }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&, tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::nn::compressed::compressed_linear::backward",
                                         "{} is an inference-only layer: train the float layer and convert it again", describe());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<compressed_linear>(*this); }

 private:
  std::unique_ptr<engine<Scalar>> engine_;
  bool relu_ = false;
  bool flatten_ = false;
};

namespace detail {

/// rows(n P + oh OW + ow, (c kh + ki) kw + kj) = x[n, c, oh sh - ph + ki, ow sw - pw + kj] (0 outside):
/// the transpose of nn::detail::im2col, one row per output position (what the XNOR and int8
/// kernels multiply: activations as rows packed along the reduction axis).
template <class Scalar>
void im2row(const Scalar* x, index_t batch, index_t channels, index_t h, index_t w, const window2d& win, Scalar* rows) {
  const index_t oh_n = win.out_h(h), ow_n = win.out_w(w), k = channels * win.kernel_h * win.kernel_w;
  for (index_t n = 0; n < batch; ++n) {
    for (index_t oh = 0; oh < oh_n; ++oh) {
      for (index_t ow = 0; ow < ow_n; ++ow) {
        Scalar* r = rows + ((n * oh_n + oh) * ow_n + ow) * k;
        for (index_t c = 0; c < channels; ++c) {
          const Scalar* xc = x + (n * channels + c) * h * w;
          for (index_t ki = 0; ki < win.kernel_h; ++ki) {
            const index_t ih = oh * win.stride_h - win.pad_h + ki;
            for (index_t kj = 0; kj < win.kernel_w; ++kj) {
              const index_t iw = ow * win.stride_w - win.pad_w + kj;
              *r++ = ih < 0 || ih >= h || iw < 0 || iw >= w ? Scalar(0) : xc[ih * w + iw];
            }
          }
        }
      }
    }
  }
}

}  // namespace detail

/// 2-d convolution over NCHW input (PyTorch's semantics, as nn::conv2d) with compressed weights
/// (out_c x in_c kh kw). Engines that prefer batch-contiguous columns (sparse, codebook) get the
/// im2col matrix (K x N P); the others get one row per output position (im2row, N P x K).
/// XNOR reads a padded 0 as sign(0) = +1; its integer dot products are corrected at the borders
/// (sum of sign(w) over the padded taps of each position, computed once per input size), so the
/// padding counts 0 as in the float layer.
template <class Scalar>
class compressed_conv2d : public layer<Scalar> {
 public:
  compressed_conv2d(std::unique_ptr<engine<Scalar>> e, index_t in_channels, window2d win)
      : engine_(std::move(e)), in_channels_(in_channels), win_(win) {
    if (!engine_ || engine_->in_features() != in_channels * win.kernel_h * win.kernel_w) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::compressed_conv2d", "weights of {} inputs do not fit {} channels of {}x{} kernels",
                                          engine_ ? engine_->in_features() : 0, in_channels, win.kernel_h, win.kernel_w);
    }
  }
  compressed_conv2d(const compressed_conv2d& other)
      : layer<Scalar>(other), engine_(other.engine_->clone()), in_channels_(other.in_channels_), win_(other.win_), epilogue_(other.epilogue_) {}
  compressed_conv2d(compressed_conv2d&&) noexcept = default;

  std::string kind() const override { return engine_->kind_prefix() + "Conv2d"; }
  std::string describe() const override {
    std::string fused_part;
    if (epilogue_.relu) fused_part += " + ReLU";
    if (epilogue_.pooled()) fused_part += fmt::format(" + MaxPool2d({}, stride={})", epilogue_.pool_kernel, epilogue_.pool_stride);
    return fmt::format("{}({}, {}, kernel_size=({}, {}), stride={}, padding={}, {}, {} bytes){}", kind(), in_channels_,
                       engine_->out_features(), win_.kernel_h, win_.kernel_w, win_.stride_h, win_.pad_h, engine_->format(), engine_->bytes(),
                       fused_part);
  }
  index_t in_channels() const { return in_channels_; }
  index_t out_channels() const { return engine_->out_features(); }
  const window2d& window() const { return win_; }
  const engine<Scalar>& weights() const { return *engine_; }
  engine<Scalar>& weights() { return *engine_; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 4 || in[1] != in_channels_ || !win_.fits(in[2], in[3])) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::compressed_conv2d::forward",
                                          "input of shape {} does not fit {}: expected (N, {}, H, W)", shape_string(in), describe(), in_channels_);
    }
    const index_t oh = win_.out_h(in[2]), ow = win_.out_w(in[3]);
    if (epilogue_.pooled() && (oh < epilogue_.pool_kernel || ow < epilogue_.pool_kernel)) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::compressed_conv2d::forward",
                                          "a {}x{} output does not fit the fused {}x{} max-pool of {}", oh, ow, epilogue_.pool_kernel,
                                          epilogue_.pool_kernel, describe());
    }
    return {in[0], out_channels(), epilogue_.out(oh), epilogue_.out(ow)};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    const index_t batch = x.dim(0);
    if (batch == 0) return;
    auto* direct = dynamic_cast<csr16_engine<Scalar>*>(engine_.get());
    if (direct != nullptr && win_.stride_h == 1 && win_.stride_w == 1) {
      // The direct sparse convolution with the epilogue fused: no im2col, no unpooled output.
      const kernels::conv_input in{batch, in_channels_, x.dim(2), x.dim(3), win_.pad_h, win_.pad_w};
      kernels::sparse_conv2d(direct->filters().ref(), x.data(), in, direct->bias_data(), epilogue_, y.data(), direct_ws_,
                             kernels::kernel_path::automatic, direct->batch_layout());
      return;
    }
    auto* int8 = dynamic_cast<int8_engine<Scalar>*>(engine_.get());
    if (int8 != nullptr && win_.stride_h == 1 && win_.stride_w == 1) {
      // The direct int8 convolution, one activation step per image, the epilogue fused.
      int8->convolve(x.data(), {batch, in_channels_, x.dim(2), x.dim(3), win_.pad_h, win_.pad_w}, win_.kernel_h, win_.kernel_w, epilogue_,
                     y.data());
      return;
    }
    auto* xnor = dynamic_cast<xnor_engine<Scalar>*>(engine_.get());
    if (xnor != nullptr && win_.stride_h == 1 && win_.stride_w == 1 && win_.pad_h == 0 && win_.pad_w == 0) {
      // The direct XNOR convolution: signs packed per pixel before the gather, the epilogue fused.
      xnor->convolve(x.data(), {batch, in_channels_, x.dim(2), x.dim(3), 0, 0}, win_.kernel_h, win_.kernel_w, epilogue_, y.data());
      return;
    }
    if (!fused()) {
      convolve(x, y);
      return;
    }
    if (engine_->preferred() == layout::cols) {
      convolve(x, y, true);  // the epilogue reads the product where it is: no unpooled copy
      return;
    }
    conv_out_.resize({batch, out_channels(), win_.out_h(x.dim(2)), win_.out_w(x.dim(3))});
    convolve(x, conv_out_);
    const index_t oh = conv_out_.dim(2), ow = conv_out_.dim(3), q = y.dim(2) * y.dim(3);
    for (index_t p = 0; p < batch * out_channels(); ++p) {
      kernels::detail::store_channel(conv_out_.data() + p * oh * ow, oh, ow, ow, 1, epilogue_, y.data() + p * q, q, pooled_,
                                     kernels::kernel_path::automatic);
    }
  }

  /// ReLU and max-pooling applied to the output inside forward (compress fuses the ReLU and
  /// MaxPool2d layers that follow a sparse convolution); the output shape becomes the pooled one.
  void fuse(const kernels::conv_epilogue& e) {
    if (e.pool_kernel < 0 || (e.pool_kernel > 0 && e.pool_stride <= 0)) {
      slimnet::detail::raise<config_error>("slimnet::nn::compressed::compressed_conv2d::fuse", "max-pool kernel {} at stride {}",
                                           e.pool_kernel, e.pool_stride);
    }
    epilogue_ = e;
  }
  const kernels::conv_epilogue& epilogue() const { return epilogue_; }
  bool fused() const { return epilogue_.relu || epilogue_.pooled(); }

  /// For the direct sparse convolution (a csr16 engine, stride 1): times this layer, epilogue
  /// included, on a random input of `input_shape` (N, C, H, W) in each kernels::conv_batch_layout
  /// (kernels::best_seconds_per_call, `rounds` rounds) and keeps the faster one. Returns what was
  /// timed, e.g. "one image at a time (batch 64: one image at a time 131.7 us, batch innermost 267.9 us,
  /// measured)", or "" when
  /// the layer has no such choice (another engine, a stride, a batch of one image).
  std::string choose_batch_layout(const shape_t& input_shape, int rounds = 5) {
    auto* direct = dynamic_cast<csr16_engine<Scalar>*>(engine_.get());
    if (direct == nullptr || win_.stride_h != 1 || win_.stride_w != 1 || input_shape.size() != 4 || input_shape[0] <= 1) return "";
    output_shape(input_shape);  // a shape that does not fit throws here, before any timing
    tensor<Scalar> x(input_shape), y;
    rng gen(5);
    for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.uniform(-1, 1));
    double t[2];
    const kernels::conv_batch_layout layouts[2] = {kernels::conv_batch_layout::image_at_a_time, kernels::conv_batch_layout::batch_innermost};
    for (int i = 0; i < 2; ++i) {
      direct->set_batch_layout(layouts[i]);
      t[i] = kernels::best_seconds_per_call([&] { forward(x, y, {}); }, rounds);
    }
    const int best = t[0] < t[1] ? 0 : 1;
    direct->set_batch_layout(layouts[best]);
    return fmt::format("{} (batch {}: one image at a time {:.1f} us, batch innermost {:.1f} us, measured)",
                       best == 0 ? "one image at a time" : "batch innermost", input_shape[0], 1e6 * t[0], 1e6 * t[1]);
  }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&, tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::nn::compressed::compressed_conv2d::backward",
                                         "{} is an inference-only layer: train the float layer and convert it again", describe());
  }
  std::unique_ptr<layer<Scalar>> clone() const override { return std::make_unique<compressed_conv2d>(*this); }

 private:
  /// corr(p, o) = sum over the taps of output position p that fall in the padding of sign(w(o, tap)):
  /// what sign(0) = +1 added to the XNOR dot product there.
  const std::vector<std::int32_t>& padding_correction(const xnor_engine<Scalar>& xnor, index_t h, index_t w) {
    if (corr_h_ == h && corr_w_ == w) return corr_;
    const index_t oh_n = win_.out_h(h), ow_n = win_.out_w(w), oc = out_channels(), taps = win_.kernel_h * win_.kernel_w;
    std::vector<std::int32_t> tap_sum(static_cast<std::size_t>(oc * taps), 0);  // (o, tap): sum over channels
    for (index_t o = 0; o < oc; ++o)
      for (index_t c = 0; c < in_channels_; ++c)
        for (index_t t = 0; t < taps; ++t) tap_sum[static_cast<std::size_t>(o * taps + t)] += xnor.sign(o, c * taps + t);
    corr_.assign(static_cast<std::size_t>(oh_n * ow_n * oc), 0);
    for (index_t oh = 0; oh < oh_n; ++oh) {
      for (index_t ow = 0; ow < ow_n; ++ow) {
        std::int32_t* c = corr_.data() + (oh * ow_n + ow) * oc;
        for (index_t ki = 0; ki < win_.kernel_h; ++ki) {
          const index_t ih = oh * win_.stride_h - win_.pad_h + ki;
          for (index_t kj = 0; kj < win_.kernel_w; ++kj) {
            const index_t iw = ow * win_.stride_w - win_.pad_w + kj;
            if (ih >= 0 && ih < h && iw >= 0 && iw < w) continue;
            for (index_t o = 0; o < oc; ++o) c[o] += tap_sum[static_cast<std::size_t>(o * taps + ki * win_.kernel_w + kj)];
          }
        }
      }
    }
    corr_h_ = h;
    corr_w_ = w;
    return corr_;
  }

  /// y (N, oc, OH, OW) = the convolution through the engine: im2col (in chunks of images that keep
  /// the columns in L2, as nn::conv2d) for engines that take columns, im2row for the others.
  /// With `epilogue` (column engines only), y is the pooled output and each output plane goes
  /// through the fused ReLU / max-pool straight from the product.
  void convolve(const tensor<Scalar>& x, tensor<Scalar>& y, bool epilogue = false) {
    const index_t batch = x.dim(0), oc = out_channels(), k = engine_->in_features();
    const index_t oh = win_.out_h(x.dim(2)), ow = win_.out_w(x.dim(3)), plane = oh * ow, q = y.dim(2) * y.dim(3);
    if (engine_->preferred() == layout::cols) {
      const index_t chunk = std::max<index_t>(1, (index_t{64} << 10) / std::max<index_t>(k * plane, 1));
      const index_t in_size = in_channels_ * x.dim(2) * x.dim(3);
      buffer_.resize(static_cast<std::size_t>(k * std::min(chunk, batch) * plane));
      out_.resize(static_cast<std::size_t>(oc * std::min(chunk, batch) * plane));
      for (index_t n0 = 0; n0 < batch; n0 += chunk) {
        const index_t images = std::min(chunk, batch - n0), columns = images * plane;
        nn::detail::im2col(x.data() + n0 * in_size, images, in_channels_, x.dim(2), x.dim(3), win_, buffer_.data());
        engine_->apply_cols(buffer_.data(), columns, out_.data());
        // Z (oc, images P) -> y (images, oc, P), or its pooled planes
        for (index_t n = 0; n < images; ++n) {
          for (index_t o = 0; o < oc; ++o) {
            const Scalar* z = out_.data() + o * columns + n * plane;
            if (epilogue) {
              kernels::detail::store_channel(z, oh, ow, ow, 1, epilogue_, y.data() + ((n0 + n) * oc + o) * q, q, pooled_,
                                             kernels::kernel_path::automatic);
            } else {
              std::copy_n(z, plane, y.data() + ((n0 + n) * oc + o) * plane);
            }
          }
        }
      }
      return;
    }
    buffer_.resize(static_cast<std::size_t>(k * batch * plane));
    out_.resize(static_cast<std::size_t>(oc * batch * plane));
    detail::im2row(x.data(), batch, in_channels_, x.dim(2), x.dim(3), win_, buffer_.data());
    auto* xnor = dynamic_cast<xnor_engine<Scalar>*>(engine_.get());
    if (xnor != nullptr && (win_.pad_h > 0 || win_.pad_w > 0)) {
      xnor->apply_rows_corrected(buffer_.data(), batch * plane, out_.data(), padding_correction(*xnor, x.dim(2), x.dim(3)).data(), plane);
    } else {
      engine_->apply_rows(buffer_.data(), batch * plane, out_.data());
    }
    // Y (N P, oc) -> y (N, oc, P)
    for (index_t n = 0; n < batch; ++n)
      for (index_t p = 0; p < plane; ++p)
        for (index_t o = 0; o < oc; ++o) y.data()[(n * oc + o) * plane + p] = out_[static_cast<std::size_t>((n * plane + p) * oc + o)];
  }

  std::unique_ptr<engine<Scalar>> engine_;
  index_t in_channels_;
  window2d win_;
  kernels::conv_epilogue epilogue_;
  kernels::sparse_conv_workspace<Scalar> direct_ws_;  // the direct kernel's buffers (csr16 engine)
  tensor<Scalar> conv_out_;                            // unpooled output when fused on the im2col path
  std::vector<Scalar> pooled_;
  std::vector<Scalar> buffer_, out_;  // im2col / im2row and the product (scratch)
  std::vector<std::int32_t> corr_;  // XNOR padding correction for inputs of corr_h_ x corr_w_
  index_t corr_h_ = -1, corr_w_ = -1;
};

}  // namespace slimnet::nn::compressed
