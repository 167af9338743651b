// 2-d convolution (cross-correlation, as PyTorch) over NCHW input, weight (out_c, in_c, kh, kw).
// Computed as one GEMM per batch on an im2col matrix:
//   cols (K = in_c*kh*kw, N*P) with P = out_h*out_w,   Z (out_c, N*P) = W (out_c, K) * cols
// backward:  dW += dZ cols^T,  db += rowsum(dZ),  dcols = W^T dZ  -> col2im -> dx.
// One large GEMM per batch keeps the microkernel busy where per-image GEMMs (P = 64 for LeNet's
// conv2) would not.
#pragma once

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>

#include "slimnet/core/eigen.hpp"  // <immintrin.h>, first included there (GCC bug 105593)

#include "slimnet/core/error.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/nn/init.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/kernels/intrinsics.hpp"

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::nn {

/// Geometry of a 2-d sliding window (shared by convolution and pooling).
struct window2d {
  index_t kernel_h = 1, kernel_w = 1;
  index_t stride_h = 1, stride_w = 1;
  index_t pad_h = 0, pad_w = 0;

  index_t out_h(index_t h) const { return (h + 2 * pad_h - kernel_h) / stride_h + 1; }
  index_t out_w(index_t w) const { return (w + 2 * pad_w - kernel_w) / stride_w + 1; }
  bool fits(index_t h, index_t w) const { return h + 2 * pad_h >= kernel_h && w + 2 * pad_w >= kernel_w; }
};

namespace detail {

// im2col moves rows of a few floats (8 for LeNet's conv2); masked vector moves avoid both the
// call overhead of memcpy and the alias checks of a compiler-vectorised loop.
template <class Scalar>
inline void copy_short(const Scalar* src, Scalar* dst, index_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Scalar, float>) {
    // Unmasked moves only: masked stores are slow on some cores (Zen 4).
    for (; n >= 16; n -= 16, src += 16, dst += 16) _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
    if (n >= 8) {
      _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
      n -= 8, src += 8, dst += 8;
    }
    for (index_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
#endif
  for (index_t i = 0; i < n; ++i) dst[i] = src[i];
}

/// dst[0:n] += src[0:n]
template <class Scalar>
inline void add_short(const Scalar* src, Scalar* dst, index_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Scalar, float>) {
    for (; n >= 16; n -= 16, src += 16, dst += 16) _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), _mm512_loadu_ps(src)));
    if (n >= 8) {
      _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), _mm256_loadu_ps(src)));
      n -= 8, src += 8, dst += 8;
    }
    for (index_t i = 0; i < n; ++i) dst[i] += src[i];
    return;
  }
#endif
  for (index_t i = 0; i < n; ++i) dst[i] += src[i];
}

/// cols(r, n*P + oh*OW + ow) = x[n, c, oh*sh - ph + ki, ow*sw - pw + kj] (0 outside), r = (c, ki, kj).
template <class Scalar>
void im2col(const Scalar* x, index_t batch, index_t channels, index_t h, index_t w, const window2d& win, Scalar* cols) {
  const index_t oh_n = win.out_h(h), ow_n = win.out_w(w), plane = oh_n * ow_n;
  const index_t row_len = batch * plane;
  for (index_t c = 0; c < channels; ++c) {
    for (index_t ki = 0; ki < win.kernel_h; ++ki) {
      for (index_t kj = 0; kj < win.kernel_w; ++kj) {
        Scalar* row = cols + ((c * win.kernel_h + ki) * win.kernel_w + kj) * row_len;
        // Output columns whose input column stays inside [0, w): ow in [ow_lo, ow_hi).
        const index_t shift = kj - win.pad_w;
        index_t ow_lo = shift >= 0 ? 0 : (-shift + win.stride_w - 1) / win.stride_w;
        index_t ow_hi = w - shift <= 0 ? 0 : std::min(ow_n, (w - shift - 1) / win.stride_w + 1);
        ow_hi = std::max(ow_hi, ow_lo);
        for (index_t n = 0; n < batch; ++n) {
          const Scalar* xc = x + (n * channels + c) * h * w;
          Scalar* out = row + n * plane;
          for (index_t oh = 0; oh < oh_n; ++oh) {
            const index_t ih = oh * win.stride_h - win.pad_h + ki;
            Scalar* o = out + oh * ow_n;
            if (ih < 0 || ih >= h) {
              std::fill(o, o + ow_n, Scalar(0));
              continue;
            }
            const Scalar* xr = xc + ih * w;  // input column of output ow: ow * stride + shift
            std::fill(o, o + ow_lo, Scalar(0));
            if (win.stride_w == 1) {
              copy_short(xr + ow_lo + shift, o + ow_lo, ow_hi - ow_lo);
            } else {
              for (index_t ow = ow_lo; ow < ow_hi; ++ow) o[ow] = xr[ow * win.stride_w + shift];
            }
            std::fill(o + ow_hi, o + ow_n, Scalar(0));
          }
        }
      }
    }
  }
}

/// Adjoint of im2col: dx[n, c, ih, iw] += dcols(r, column) for every column that read it.
template <class Scalar>
void col2im(const Scalar* cols, index_t batch, index_t channels, index_t h, index_t w, const window2d& win, Scalar* dx) {
  const index_t oh_n = win.out_h(h), ow_n = win.out_w(w), plane = oh_n * ow_n;
  const index_t row_len = batch * plane;
  std::fill(dx, dx + batch * channels * h * w, Scalar(0));
  for (index_t c = 0; c < channels; ++c) {
    for (index_t ki = 0; ki < win.kernel_h; ++ki) {
      for (index_t kj = 0; kj < win.kernel_w; ++kj) {
        const Scalar* row = cols + ((c * win.kernel_h + ki) * win.kernel_w + kj) * row_len;
        const index_t shift = kj - win.pad_w;
        index_t ow_lo = shift >= 0 ? 0 : (-shift + win.stride_w - 1) / win.stride_w;
        index_t ow_hi = w - shift <= 0 ? 0 : std::min(ow_n, (w - shift - 1) / win.stride_w + 1);
        ow_hi = std::max(ow_hi, ow_lo);
        for (index_t n = 0; n < batch; ++n) {
          Scalar* xc = dx + (n * channels + c) * h * w;
          const Scalar* in = row + n * plane;
          for (index_t oh = 0; oh < oh_n; ++oh) {
            const index_t ih = oh * win.stride_h - win.pad_h + ki;
            if (ih < 0 || ih >= h) continue;
            Scalar* xr = xc + ih * w;
            const Scalar* g = in + oh * ow_n;
            if (win.stride_w == 1) {
              add_short(g + ow_lo, xr + ow_lo + shift, ow_hi - ow_lo);
            } else {
              for (index_t ow = ow_lo; ow < ow_hi; ++ow) xr[ow * win.stride_w + shift] += g[ow];
            }
          }
        }
      }
    }
  }
}

}  // namespace detail

template <class Scalar>
class conv2d : public cloneable<conv2d<Scalar>, Scalar> {
 public:
  struct options {
    index_t stride = 1;
    index_t padding = 0;
    bool bias = true;
  };

  conv2d(index_t in_channels, index_t out_channels, index_t kernel_size) : conv2d(in_channels, out_channels, kernel_size, options{}) {}
  conv2d(index_t in_channels, index_t out_channels, index_t kernel_size, options opt)
      : conv2d(in_channels, out_channels, kernel_size, kernel_size, opt) {}
  conv2d(index_t in_channels, index_t out_channels, index_t kernel_h, index_t kernel_w, options opt)
      : weight_("weight", {out_channels, in_channels, kernel_h, kernel_w}) {
    if (in_channels <= 0 || out_channels <= 0 || kernel_h <= 0 || kernel_w <= 0 || opt.stride <= 0 || opt.padding < 0) {
      slimnet::detail::raise<config_error>("slimnet::nn::conv2d",
                                  "invalid geometry: in={} out={} kernel={}x{} stride={} padding={}", in_channels,
                                  out_channels, kernel_h, kernel_w, opt.stride, opt.padding);
    }
    win_ = window2d{kernel_h, kernel_w, opt.stride, opt.stride, opt.padding, opt.padding};
    if (opt.bias) bias_.emplace("bias", shape_t{out_channels});
    rng gen(0);
    reset_parameters(gen);
  }

  std::string kind() const override { return "Conv2d"; }
  std::string describe() const override {
    return fmt::format("Conv2d({}, {}, kernel_size=({}, {}), stride={}, padding={}{})", in_channels(), out_channels(),
                       win_.kernel_h, win_.kernel_w, win_.stride_h, win_.pad_h, bias_ ? "" : ", bias=false");
  }
  index_t in_channels() const { return weight_.value().dim(1); }
  index_t out_channels() const { return weight_.value().dim(0); }
  const window2d& window() const { return win_; }

  parameter<Scalar>& weight() { return weight_; }
  parameter<Scalar>* bias() { return bias_ ? &*bias_ : nullptr; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 4 || in[1] != in_channels() || !win_.fits(in[2], in[3])) {
      slimnet::detail::raise<shape_error>("slimnet::nn::conv2d::forward", "input of shape {} does not fit {}: expected (N, {}, H, W)",
                                 shape_string(in), describe(), in_channels());
    }
    return {in[0], out_channels(), win_.out_h(in[2]), win_.out_w(in[3])};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const index_t batch = x.dim(0), plane = y.dim(2) * y.dim(3), oc = out_channels(), k = weight_.size() / oc;
    const index_t in_size = in_channels() * x.dim(2) * x.dim(3), chunk = images_per_chunk(k, plane);
    const auto& w = weight_.forward_value(ctx);
    const Scalar* bias = bias_ ? bias_->forward_value(ctx).data() : nullptr;
    cols_.resize({k, chunk * plane});
    z_.resize({oc, chunk * plane});
    for (index_t n0 = 0; n0 < batch; n0 += chunk) {
      const index_t images = std::min(chunk, batch - n0), columns = images * plane;
      detail::im2col(x.data() + n0 * in_size, images, in_channels(), x.dim(2), x.dim(3), win_, cols_.data());
      kernels::gemm<Scalar>(kernels::row_major(w.data(), oc, k), kernels::row_major<const Scalar>(cols_.data(), k, columns),
                            kernels::row_major(z_.data(), oc, columns));
      // Z (out_c, images*P) -> y (images, out_c, P), adding the bias.
      for (index_t n = 0; n < images; ++n) {
        for (index_t o = 0; o < oc; ++o) {
          const Scalar* src = z_.data() + o * columns + n * plane;
          Scalar* dst = y.data() + ((n0 + n) * oc + o) * plane;
          const Scalar b = bias ? bias[o] : Scalar(0);
          for (index_t p = 0; p < plane; ++p) dst[p] = src[p] + b;
        }
      }
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const index_t batch = dy.dim(0), plane = dy.dim(2) * dy.dim(3), oc = out_channels(), k = weight_.size() / oc;
    const index_t in_size = in_channels() * x.dim(2) * x.dim(3), chunk = images_per_chunk(k, plane);
    const auto w = kernels::row_major(weight_.used_value().data(), oc, k);
    const auto dw = kernels::row_major(weight_.grad().data(), oc, k);
    cols_.resize({k, chunk * plane});
    z_.resize({oc, chunk * plane});
    if (dx != nullptr) {
      dx->resize(x.shape());
      dcols_.resize({k, chunk * plane});
    }
    for (index_t n0 = 0; n0 < batch; n0 += chunk) {
      const index_t images = std::min(chunk, batch - n0), columns = images * plane;
      // dy (images, out_c, P) -> dZ (out_c, images*P)
      for (index_t n = 0; n < images; ++n) {
        for (index_t o = 0; o < oc; ++o) {
          std::memcpy(z_.data() + o * columns + n * plane, dy.data() + ((n0 + n) * oc + o) * plane,
                      static_cast<std::size_t>(plane) * sizeof(Scalar));
        }
      }
      const auto dz = kernels::row_major<const Scalar>(z_.data(), oc, columns);
      // The chunk's im2col is rebuilt here (it is cache-resident) instead of kept from forward.
      detail::im2col(x.data() + n0 * in_size, images, in_channels(), x.dim(2), x.dim(3), win_, cols_.data());
      kernels::gemm<Scalar>(dz, kernels::row_major<const Scalar>(cols_.data(), k, columns).transposed(), dw, Scalar(1),
                            Scalar(1));  // dW += dZ cols^T
      if (bias_) {
        Eigen::Map<const row_matrix<Scalar>> dz_rows(z_.data(), oc, columns);
        bias_->grad().flat() += dz_rows.rowwise().sum();
      }
      if (dx != nullptr) {
        kernels::gemm<Scalar>(w.transposed(), dz, kernels::row_major(dcols_.data(), k, columns));  // dcols = W^T dZ
        detail::col2im(dcols_.data(), images, in_channels(), x.dim(2), x.dim(3), win_, dx->data() + n0 * in_size);
      }
    }
  }

  void visit_parameters(const typename layer<Scalar>::parameter_visitor& visit) override {
    visit(weight_);
    if (bias_) visit(*bias_);
  }
  void visit_parameters(const typename layer<Scalar>::const_parameter_visitor& visit) const override {
    visit(weight_);
    if (bias_) visit(*bias_);
  }

  void reset_parameters(rng& gen) override { init::pytorch_default(weight_.value(), bias_ ? &bias_->value() : nullptr, gen); }

 private:
  // Images per im2col chunk: about 256 KiB of columns, so im2col, packing and col2im stay in L2.
  static index_t images_per_chunk(index_t k, index_t plane) {
    return std::max<index_t>(1, (index_t{64} << 10) / std::max<index_t>(k * plane, 1));
  }

  parameter<Scalar> weight_;
  std::optional<parameter<Scalar>> bias_;
  window2d win_;
  tensor<Scalar> cols_;   // im2col of one chunk of images
  tensor<Scalar> dcols_;  // gradient of cols_
  tensor<Scalar> z_;      // GEMM output / dZ buffer of one chunk
};

}  // namespace slimnet::nn

SLIMNET_INTRINSICS_END
