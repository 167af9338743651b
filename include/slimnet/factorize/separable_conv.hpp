// Separable convolution: a kh x kw convolution with N filters over C channels replaced by K
// vertical kh x 1 filters (C -> K channels) followed by N horizontal 1 x kw filters (K -> N),
// the "convolution separation" of SparseSep (Jaderberg et al. 2014's scheme 2), factored in closed
// form as in Tai et al. 2016 (Theorem 1): reshape the weight W (N, C, kh, kw) into
//   M ((c, i), (n, j)) = W(n, c, i, j),   M in R^{(C kh) x (N kw)},
// take the truncated SVD M ~ U_K S_K V_K^T and set
//   vertical(k, c, i) = U((c, i), k) sqrt(s_k),   horizontal(n, k, j) = V((n, j), k) sqrt(s_k),
// so sum_k horizontal(n, k, j) vertical(k, c, i) = M_K((c, i), (n, j)): the best rank-K
// approximation in the Frobenius norm over all separable pairs (Tai et al.), exact when
// K >= rank(M) <= min(C kh, N kw). Weights: K C kh + N K kw instead of N C kh kw.
// Geometry: the vertical pass has stride (sh, 1) and padding (ph, 0), the horizontal one stride
// (1, sw) and padding (0, pw). Zero columns of the input give zero columns of the intermediate
// (the vertical pass has no bias), so padding the intermediate in width equals padding the input:
// the composition computes exactly the convolution of the rank-K weight.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "slimnet/core/eigen.hpp"

#include <Eigen/SVD>

#include "slimnet/core/error.hpp"
#include "slimnet/factorize/sparse_coding.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::factorize {

/// Rank-K separable factors of a convolution weight (see the header comment).
template <class Scalar>
struct separable_factors {
  tensor<Scalar> vertical;      ///< (K, C, kh, 1)
  tensor<Scalar> horizontal;    ///< (N, K, 1, kw)
  std::vector<double> singular_values;  ///< all min(C kh, N kw) of M, descending
};

/// The largest useful rank of a weight (N, C, kh, kw): min(C kh, N kw).
inline index_t full_separable_rank(const shape_t& weight_shape) {
  return std::min(weight_shape.at(1) * weight_shape.at(2), weight_shape.at(0) * weight_shape.at(3));
}

/// Tai et al.'s closed-form separation of `weight` (N, C, kh, kw) at rank `rank`.
/// Requires 1 <= rank <= full_separable_rank(shape); a 4-d finite weight.
/// Throws shape_error (not 4-d) or config_error (rank out of range, non-finite weight).
template <class Scalar>
separable_factors<Scalar> separate_filters(const tensor<Scalar>& weight, index_t rank) {
  constexpr const char* fn = "slimnet::factorize::separate_filters";
  if (weight.rank() != 4 || weight.size() == 0) {
    slimnet::detail::raise<shape_error>(fn, "weight of shape {} is not a non-empty (N, C, kh, kw) convolution weight", shape_string(weight.shape()));
  }
  const index_t N = weight.dim(0), C = weight.dim(1), kh = weight.dim(2), kw = weight.dim(3);
  const index_t full = full_separable_rank(weight.shape());
  if (rank < 1 || rank > full) {
    slimnet::detail::raise<config_error>(fn, "rank = {} must be in [1, {}] = [1, min(C kh, N kw)] for weight {}", rank, full,
                                         shape_string(weight.shape()));
  }
  if (!weight.flat().allFinite()) slimnet::detail::raise<config_error>(fn, "weight {} holds a NaN or infinity", shape_string(weight.shape()));
  matrix<Scalar> M(C * kh, N * kw);
  for (index_t n = 0; n < N; ++n)
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < kh; ++i)
        for (index_t j = 0; j < kw; ++j) M(c * kh + i, n * kw + j) = weight[((n * C + c) * kh + i) * kw + j];
  Eigen::BDCSVD<matrix<Scalar>> svd(M, Eigen::ComputeThinU | Eigen::ComputeThinV);
  separable_factors<Scalar> f;
  f.vertical.resize({rank, C, kh, 1});
  f.horizontal.resize({N, rank, 1, kw});
  for (index_t k = 0; k < svd.singularValues().size(); ++k) f.singular_values.push_back(static_cast<double>(svd.singularValues()[k]));
  for (index_t k = 0; k < rank; ++k) {
    const Scalar root = std::sqrt(svd.singularValues()[k]);
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < kh; ++i) f.vertical[(k * C + c) * kh + i] = svd.matrixU()(c * kh + i, k) * root;
    for (index_t n = 0; n < N; ++n)
      for (index_t j = 0; j < kw; ++j) f.horizontal[(n * rank + k) * kw + j] = svd.matrixV()(n * kw + j, k) * root;
  }
  return f;
}

namespace detail {

/// One convolution pass y = conv(x, W) (+ bias) by im2col and GEMM over chunks of images, with its
/// backward pass; nn::conv2d's algorithm for a window with separate vertical / horizontal geometry.
template <class Scalar>
class conv_pass {
 public:
  nn::window2d win;

  shape_t output_shape(const shape_t& in, index_t out_channels) const { return {in[0], out_channels, win.out_h(in[2]), win.out_w(in[3])}; }

  void forward(const tensor<Scalar>& x, const Scalar* w, index_t oc, const Scalar* bias, tensor<Scalar>& y) {
    y.resize(output_shape(x.shape(), oc));
    const index_t batch = x.dim(0), ic = x.dim(1), plane = y.dim(2) * y.dim(3), k = ic * win.kernel_h * win.kernel_w;
    const index_t in_size = ic * x.dim(2) * x.dim(3), chunk = images_per_chunk(k, plane);
    cols_.resize({k, chunk * plane});
    z_.resize({oc, chunk * plane});
    for (index_t n0 = 0; n0 < batch; n0 += chunk) {
      const index_t images = std::min(chunk, batch - n0), columns = images * plane;
      nn::detail::im2col(x.data() + n0 * in_size, images, ic, x.dim(2), x.dim(3), win, cols_.data());
      kernels::gemm<Scalar>(kernels::row_major(w, oc, k), kernels::row_major<const Scalar>(cols_.data(), k, columns),
                            kernels::row_major(z_.data(), oc, columns));
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

  /// dW += dZ cols^T (dw, k = ic kh kw columns), db += row sums (if db), dx = col2im(W^T dZ) (if dx).
  void backward(const tensor<Scalar>& x, const Scalar* w, index_t oc, const tensor<Scalar>& dy, Scalar* dw, Scalar* db,
                tensor<Scalar>* dx) {
    const index_t batch = dy.dim(0), ic = x.dim(1), plane = dy.dim(2) * dy.dim(3), k = ic * win.kernel_h * win.kernel_w;
    const index_t in_size = ic * x.dim(2) * x.dim(3), chunk = images_per_chunk(k, plane);
    cols_.resize({k, chunk * plane});
    z_.resize({oc, chunk * plane});
    if (dx != nullptr) {
      dx->resize(x.shape());
      dcols_.resize({k, chunk * plane});
    }
    for (index_t n0 = 0; n0 < batch; n0 += chunk) {
      const index_t images = std::min(chunk, batch - n0), columns = images * plane;
      for (index_t n = 0; n < images; ++n)
        for (index_t o = 0; o < oc; ++o)
          std::memcpy(z_.data() + o * columns + n * plane, dy.data() + ((n0 + n) * oc + o) * plane,
                      static_cast<std::size_t>(plane) * sizeof(Scalar));
      const auto dz = kernels::row_major<const Scalar>(z_.data(), oc, columns);
      nn::detail::im2col(x.data() + n0 * in_size, images, ic, x.dim(2), x.dim(3), win, cols_.data());
      kernels::gemm<Scalar>(dz, kernels::row_major<const Scalar>(cols_.data(), k, columns).transposed(), kernels::row_major(dw, oc, k),
                            Scalar(1), Scalar(1));
      if (db != nullptr) {
        Eigen::Map<const row_matrix<Scalar>> dz_rows(z_.data(), oc, columns);
        Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>(db, oc) += dz_rows.rowwise().sum();
      }
      if (dx != nullptr) {
        kernels::gemm<Scalar>(kernels::row_major(w, oc, k).transposed(), dz, kernels::row_major(dcols_.data(), k, columns));
        nn::detail::col2im(dcols_.data(), images, ic, x.dim(2), x.dim(3), win, dx->data() + n0 * in_size);
      }
    }
  }

 private:
  static index_t images_per_chunk(index_t k, index_t plane) {
    return std::max<index_t>(1, (index_t{64} << 10) / std::max<index_t>(k * plane, 1));
  }
  tensor<Scalar> cols_, dcols_, z_;
};

}  // namespace detail

/// A convolution computed as a vertical kh x 1 pass to `rank` channels and a horizontal 1 x kw pass
/// (with the bias) to the output channels; see the header comment.
template <class Scalar>
class separable_conv2d : public nn::cloneable<separable_conv2d<Scalar>, Scalar> {
 public:
  /// From factors (vertical (K, C, kh, 1), horizontal (N, K, 1, kw)) and the original window's
  /// stride and padding; `bias` (length N) is copied when given. Throws shape_error when the
  /// factors do not chain.
  separable_conv2d(const tensor<Scalar>& vertical, const tensor<Scalar>& horizontal, const nn::window2d& original,
                   const Scalar* bias = nullptr)
      : vertical_("vertical", vertical.shape()), horizontal_("horizontal", horizontal.shape()) {
    if (vertical.rank() != 4 || horizontal.rank() != 4 || vertical.dim(3) != 1 || horizontal.dim(2) != 1 ||
        horizontal.dim(1) != vertical.dim(0) || vertical.size() == 0 || horizontal.size() == 0) {
      slimnet::detail::raise<shape_error>("slimnet::factorize::separable_conv2d",
                                          "vertical {} and horizontal {} do not chain: expected (K, C, kh, 1) and (N, K, 1, kw)",
                                          shape_string(vertical.shape()), shape_string(horizontal.shape()));
    }
    vertical_.value() = vertical;
    horizontal_.value() = horizontal;
    vpass_.win = nn::window2d{vertical.dim(2), 1, original.stride_h, 1, original.pad_h, 0};
    hpass_.win = nn::window2d{1, horizontal.dim(3), 1, original.stride_w, 0, original.pad_w};
    if (bias != nullptr) {
      bias_.emplace("bias", shape_t{out_channels()});
      for (index_t o = 0; o < out_channels(); ++o) bias_->value()[o] = bias[o];
    }
  }

  std::string kind() const override { return "SeparableConv2d"; }
  std::string describe() const override {
    return fmt::format("SeparableConv2d({}, {}, kernel_size=({}, {}), rank={}, stride={}, padding={}{})", in_channels(),
                       out_channels(), vpass_.win.kernel_h, hpass_.win.kernel_w, rank(), vpass_.win.stride_h, vpass_.win.pad_h,
                       bias_ ? "" : ", bias=false");
  }
  index_t in_channels() const { return vertical_.value().dim(1); }
  index_t out_channels() const { return horizontal_.value().dim(0); }
  index_t rank() const { return vertical_.value().dim(0); }
  /// Weights stored (biases excluded): K C kh + N K kw.
  index_t weight_count() const { return vertical_.size() + horizontal_.size(); }

  nn::parameter<Scalar>& vertical() { return vertical_; }
  nn::parameter<Scalar>& horizontal() { return horizontal_; }
  nn::parameter<Scalar>* bias() { return bias_ ? &*bias_ : nullptr; }

  /// The equivalent full weight (N, C, kh, kw): W(n, c, i, j) = sum_k H(n, k, j) V(k, c, i).
  tensor<Scalar> dense_weight() const {
    const index_t N = out_channels(), C = in_channels(), K = rank(), kh = vpass_.win.kernel_h, kw = hpass_.win.kernel_w;
    tensor<Scalar> w({N, C, kh, kw}, Scalar(0));
    for (index_t n = 0; n < N; ++n)
      for (index_t k = 0; k < K; ++k)
        for (index_t c = 0; c < C; ++c)
          for (index_t i = 0; i < kh; ++i)
            for (index_t j = 0; j < kw; ++j)
              w[((n * C + c) * kh + i) * kw + j] += horizontal_.value()[(n * K + k) * kw + j] * vertical_.value()[(k * C + c) * kh + i];
    return w;
  }

  shape_t output_shape(const shape_t& in) const override {
    const nn::window2d full{vpass_.win.kernel_h, hpass_.win.kernel_w, vpass_.win.stride_h, hpass_.win.stride_w, vpass_.win.pad_h,
                            hpass_.win.pad_w};
    if (in.size() != 4 || in[1] != in_channels() || !full.fits(in[2], in[3])) {
      slimnet::detail::raise<shape_error>("slimnet::factorize::separable_conv2d::forward",
                                          "input of shape {} does not fit {}: expected (N, {}, H, W)", shape_string(in), describe(),
                                          in_channels());
    }
    return {in[0], out_channels(), full.out_h(in[2]), full.out_w(in[3])};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context& ctx) override {
    output_shape(x.shape());
    vpass_.forward(x, vertical_.forward_value(ctx).data(), rank(), nullptr, mid_);
    hpass_.forward(mid_, horizontal_.forward_value(ctx).data(), out_channels(), bias_ ? bias_->forward_value(ctx).data() : nullptr, y);
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    hpass_.backward(mid_, horizontal_.used_value().data(), out_channels(), dy, horizontal_.grad().data(),
                    bias_ ? bias_->grad().data() : nullptr, &dmid_);
    vpass_.backward(x, vertical_.used_value().data(), rank(), dmid_, vertical_.grad().data(), nullptr, dx);
  }

  void visit_parameters(const typename nn::layer<Scalar>::parameter_visitor& visit) override {
    visit(vertical_);
    visit(horizontal_);
    if (bias_) visit(*bias_);
  }
  void visit_parameters(const typename nn::layer<Scalar>::const_parameter_visitor& visit) const override {
    visit(vertical_);
    visit(horizontal_);
    if (bias_) visit(*bias_);
  }

 private:
  nn::parameter<Scalar> vertical_;    // (K, C, kh, 1)
  nn::parameter<Scalar> horizontal_;  // (N, K, 1, kw)
  std::optional<nn::parameter<Scalar>> bias_;
  detail::conv_pass<Scalar> vpass_, hpass_;
  tensor<Scalar> mid_, dmid_;  // the intermediate (N, K, OH, W) of the last forward pass; its gradient
};

}  // namespace slimnet::factorize
