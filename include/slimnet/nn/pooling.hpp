// Max and average pooling over NCHW input (PyTorch semantics: floor mode, padding counted in
// the average, padded cells never win the max).
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/eigen.hpp"  // <immintrin.h>, first included there (GCC bug 105593)

#include "slimnet/core/error.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/kernels/intrinsics.hpp"

SLIMNET_INTRINSICS_BEGIN

namespace slimnet::nn {
namespace detail {

inline window2d pool_window(const char* function, index_t kernel, index_t stride, index_t padding) {
  if (stride == 0) stride = kernel;  // PyTorch: stride defaults to the kernel size
  if (kernel <= 0 || stride <= 0 || padding < 0 || 2 * padding > kernel) {
    slimnet::detail::raise<config_error>(function, "invalid pooling window: kernel={} stride={} padding={}", kernel,
                                         stride, padding);
  }
  return window2d{kernel, kernel, stride, stride, padding, padding};
}

inline shape_t pool_output_shape(const char* function, const std::string& what, const window2d& win, const shape_t& in) {
  if (in.size() != 4 || !win.fits(in[2], in[3])) {
    slimnet::detail::raise<shape_error>(function, "input of shape {} does not fit {}: expected (N, C, H, W)",
                                        shape_string(in), what);
  }
  return {in[0], in[1], win.out_h(in[2]), win.out_w(in[3])};
}

}  // namespace detail

template <class Scalar>
class max_pool2d : public cloneable<max_pool2d<Scalar>, Scalar> {
 public:
  /// stride 0 means "same as kernel".
  explicit max_pool2d(index_t kernel, index_t stride = 0, index_t padding = 0)
      : win_(detail::pool_window("slimnet::nn::max_pool2d", kernel, stride, padding)) {}

  std::string kind() const override { return "MaxPool2d"; }
  std::string describe() const override {
    return fmt::format("MaxPool2d(kernel_size={}, stride={}, padding={})", win_.kernel_h, win_.stride_h, win_.pad_h);
  }
  /// The pooling window (square: kernel_h == kernel_w, equal strides and paddings).
  const window2d& window() const { return win_; }
  shape_t output_shape(const shape_t& in) const override {
    return detail::pool_output_shape("slimnet::nn::max_pool2d::forward", describe(), win_, in);
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    const index_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3), oh_n = y.dim(2), ow_n = y.dim(3);
    argmax_.resize(static_cast<std::size_t>(y.size()));
    argmax_input_ = x.shape();
    if (win_.kernel_h == 2 && win_.stride_h == 2 && win_.pad_h == 0) {
      forward_2x2(x, y);
      return;
    }
    for (index_t p = 0; p < planes; ++p) {
      const Scalar* xp = x.data() + p * h * w;
      Scalar* yp = y.data() + p * oh_n * ow_n;
      std::int32_t* ap = argmax_.data() + p * oh_n * ow_n;
      for (index_t oh = 0; oh < oh_n; ++oh) {
        const index_t h0 = oh * win_.stride_h - win_.pad_h;
        for (index_t ow = 0; ow < ow_n; ++ow) {
          const index_t w0 = ow * win_.stride_w - win_.pad_w;
          Scalar best = -std::numeric_limits<Scalar>::infinity();
          std::int32_t best_at = -1;
          for (index_t i = std::max<index_t>(h0, 0); i < std::min(h0 + win_.kernel_h, h); ++i) {
            for (index_t j = std::max<index_t>(w0, 0); j < std::min(w0 + win_.kernel_w, w); ++j) {
              const Scalar v = xp[i * w + j];
              // '>' keeps the first maximum, as PyTorch does; NaN propagates by winning once.
              if (v > best || best_at < 0 || v != v) {
                best = v;
                best_at = static_cast<std::int32_t>(i * w + j);
              }
            }
          }
          yp[oh * ow_n + ow] = best;
          ap[oh * ow_n + ow] = best_at;
        }
      }
    }
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    // The argmax indices address the input planes of the last forward pass: an x of another width
    // with the same output shape (7 vs 6 columns for a 2x2 window) would scatter to wrong cells.
    if (x.shape() != argmax_input_) {
      slimnet::detail::raise<shape_error>("slimnet::nn::max_pool2d::backward", "{}: x has shape {}, the last forward pass had {}",
                                          describe(), shape_string(x.shape()), shape_string(argmax_input_));
    }
    if (dx == nullptr) return;
    dx->resize(x.shape());
    dx->set_zero();
    const index_t planes = x.dim(0) * x.dim(1), in_plane = x.dim(2) * x.dim(3), out_plane = y.dim(2) * y.dim(3);
    for (index_t p = 0; p < planes; ++p) {
      Scalar* dxp = dx->data() + p * in_plane;
      const Scalar* dyp = dy.data() + p * out_plane;
      const std::int32_t* ap = argmax_.data() + p * out_plane;
      for (index_t q = 0; q < out_plane; ++q) dxp[ap[q]] += dyp[q];
    }
  }

 private:
  // The common 2x2, stride 2 window without the general path's bounds logic.
  void forward_2x2(const tensor<Scalar>& x, tensor<Scalar>& y) {
    const index_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3), oh_n = y.dim(2), ow_n = y.dim(3);
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<Scalar, float>) {
      forward_2x2_avx512(x.data(), planes, h, w, oh_n, ow_n, y.data());
      return;
    }
#endif
    for (index_t p = 0; p < planes; ++p) {
      const Scalar* xp = x.data() + p * h * w;
      Scalar* yp = y.data() + p * oh_n * ow_n;
      std::int32_t* ap = argmax_.data() + p * oh_n * ow_n;
      for (index_t oh = 0; oh < oh_n; ++oh) {
        const Scalar* r0 = xp + 2 * oh * w;
        const Scalar* r1 = r0 + w;
        const auto base = static_cast<std::int32_t>(2 * oh * w);
        for (index_t ow = 0; ow < ow_n; ++ow) {
          // Scan order (0,0) (0,1) (1,0) (1,1); a later cell wins only if strictly greater or NaN,
          // the general path's rule, so a NaN anywhere in the window is the output (max(NaN, x) =
          // NaN): "!(cand <= best)" would also let any number replace a NaN already held.
          Scalar best = r0[2 * ow];
          std::int32_t at = base + static_cast<std::int32_t>(2 * ow);
          const Scalar cand[3] = {r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
          const std::int32_t where[3] = {at + 1, at + static_cast<std::int32_t>(w), at + static_cast<std::int32_t>(w) + 1};
          for (int c = 0; c < 3; ++c) {  // branch-free: random data would mispredict every compare
            const bool wins = (cand[c] > best) | (cand[c] != cand[c]);
            at = wins ? where[c] : at;
            best = wins ? cand[c] : best;
          }
          yp[oh * ow_n + ow] = best;
          ap[oh * ow_n + ow] = at;
        }
      }
    }
  }


#if defined(__AVX512F__)
  // LeNet's planes are narrow (12 or 4 outputs per row), so vectorise over a whole output plane:
  // 16 outputs at a time gather their window's top-left cell through a precomputed offset table,
  // then apply the scalar code's "later cell wins if strictly greater or NaN" rule with masks.
  void forward_2x2_avx512(const float* x, index_t planes, index_t h, index_t w, index_t oh_n, index_t ow_n, float* y) {
    const index_t plane_out = oh_n * ow_n;
    offsets_.resize(static_cast<std::size_t>((plane_out + 15) / 16 * 16));
    for (index_t o = 0; o < static_cast<index_t>(offsets_.size()); ++o) {
      offsets_[static_cast<std::size_t>(o)] = o < plane_out ? static_cast<std::int32_t>(2 * (o / ow_n) * w + 2 * (o % ow_n)) : 0;
    }
    const auto wi = static_cast<std::int32_t>(w);
    const __m512i step[3] = {_mm512_set1_epi32(1), _mm512_set1_epi32(wi), _mm512_set1_epi32(wi + 1)};
    for (index_t p = 0; p < planes; ++p) {
      const float* xp = x + p * h * w;
      float* yp = y + p * plane_out;
      std::int32_t* ap = argmax_.data() + p * plane_out;
      for (index_t o = 0; o < plane_out; o += 16) {
        const index_t valid = std::min<index_t>(16, plane_out - o);
        const __mmask16 m = static_cast<__mmask16>(valid == 16 ? 0xffff : (1u << valid) - 1);
        const __m512i idx = _mm512_loadu_si512(offsets_.data() + o);
        __m512 best = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, xp, 4);
        __m512i at = idx;
        for (int c = 0; c < 3; ++c) {
          const __m512i cell = _mm512_add_epi32(idx, step[c]);
          const __m512 cand = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, cell, xp, 4);
          // cand > best (ordered: false when best is NaN) or cand is NaN, as the scalar code.
          const __mmask16 wins =
              _mm512_cmp_ps_mask(cand, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(cand, cand, _CMP_UNORD_Q);
          best = _mm512_mask_blend_ps(wins, best, cand);
          at = _mm512_mask_blend_epi32(wins, at, cell);
        }
        _mm512_mask_storeu_ps(yp + o, m, best);
        _mm512_mask_storeu_epi32(ap + o, m, at);
      }
    }
  }
  std::vector<std::int32_t> offsets_;  // top-left input cell of each output in a plane (padded to 16)
#endif

  window2d win_;
  std::vector<std::int32_t> argmax_;  // flat index within the input plane of each output's maximum
  shape_t argmax_input_;              // the input shape argmax_ refers to
};

template <class Scalar>
class avg_pool2d : public cloneable<avg_pool2d<Scalar>, Scalar> {
 public:
  explicit avg_pool2d(index_t kernel, index_t stride = 0, index_t padding = 0)
      : win_(detail::pool_window("slimnet::nn::avg_pool2d", kernel, stride, padding)) {}

  std::string kind() const override { return "AvgPool2d"; }
  std::string describe() const override {
    return fmt::format("AvgPool2d(kernel_size={}, stride={}, padding={})", win_.kernel_h, win_.stride_h, win_.pad_h);
  }
  /// The pooling window (square: kernel_h == kernel_w, equal strides and paddings).
  const window2d& window() const { return win_; }
  shape_t output_shape(const shape_t& in) const override {
    return detail::pool_output_shape("slimnet::nn::avg_pool2d::forward", describe(), win_, in);
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const forward_context&) override {
    y.resize(output_shape(x.shape()));
    for_each_window(x.shape(), y.shape(), [&](index_t p, index_t out, index_t i, index_t j, index_t w) {
      y.data()[out] += x.data()[p * x.dim(2) * w + i * w + j];
    }, &y);
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy,
                tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    if (dx == nullptr) return;
    dx->resize(x.shape());
    dx->set_zero();
    const Scalar scale = Scalar(1) / static_cast<Scalar>(win_.kernel_h * win_.kernel_w);
    for_each_window(x.shape(), y.shape(), [&](index_t p, index_t out, index_t i, index_t j, index_t w) {
      dx->data()[p * x.dim(2) * w + i * w + j] += dy.data()[out] * scale;
    }, nullptr);
  }

 private:
  // Calls f(plane, output index, i, j, width) for every input cell (i, j) of every window; when
  // `average` is given it is zeroed first and divided by the window area (padding included) after.
  template <class F>
  void for_each_window(const shape_t& in, const shape_t& out, F f, tensor<Scalar>* average) const {
    const index_t planes = in[0] * in[1], h = in[2], w = in[3], oh_n = out[2], ow_n = out[3];
    if (average) average->set_zero();
    for (index_t p = 0; p < planes; ++p) {
      for (index_t oh = 0; oh < oh_n; ++oh) {
        const index_t h0 = oh * win_.stride_h - win_.pad_h;
        for (index_t ow = 0; ow < ow_n; ++ow) {
          const index_t w0 = ow * win_.stride_w - win_.pad_w;
          const index_t o = (p * oh_n + oh) * ow_n + ow;
          for (index_t i = std::max<index_t>(h0, 0); i < std::min(h0 + win_.kernel_h, h); ++i)
            for (index_t j = std::max<index_t>(w0, 0); j < std::min(w0 + win_.kernel_w, w); ++j) f(p, o, i, j, w);
        }
      }
    }
    if (average) average->flat() /= static_cast<Scalar>(win_.kernel_h * win_.kernel_w);
  }

  window2d win_;
};

}  // namespace slimnet::nn

SLIMNET_INTRINSICS_END
