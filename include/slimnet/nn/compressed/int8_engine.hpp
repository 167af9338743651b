// The int8 engine of quantized layers: weights as int8 codes with one scale per output
// (w_jk = s_j q_jk, |q_jk| <= 127), activations quantized as they arrive (x_nk ~ t_n p_nk), and
//   y_nj = t_n s_j sum_k p_nk q_jk + b_j          (int8 VNNI GEMM, int32 sums, fused dequantization)
// Weight scales: when every weight of row j lies on a power-of-two grid 2^-FL with codes within
// +-127 (8-bit fixed point <IL, FL>, power-of-two quantization) the codes are exact and s_j = 2^-FL;
// otherwise s_j = max_k |w_jk| / 127 and q_jk = round(w_jk / s_j) (|error| <= s_j / 2 per weight).
// Activations: dynamic (t_n = max_k |x_nk| / 127 per sample: |error| <= t_n / 2 per input) or a
// fixed step t (codes round(x / t) saturated to +-127; exact when x is on that grid, e.g. fixed
// point activations). Per output the difference from the float layer on the same weights is at most
//   sum_k |w_jk| t_n / 2 + sum_k |x_nk| (s_j / 2 if the weights were not exact) + float rounding,
// and only float rounding when both weights and activations are exact.
// In a Conv2d (convolve: the direct int8 convolution of kernels/int8_conv.hpp) the sample is the
// image: one step t_n = max |x[n, ...]| / 127 for the whole input image, so the bound above holds
// per output with that t_n. Measured on the trained LeNet-5 (MNIST, 2,000 test images) per-image
// steps keep the float model's accuracy (see README "Whole-model speed"); they let the input be
// quantized once instead of once per output position (25 times per pixel for a 5x5 kernel).
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include "slimnet/kernels/int8_conv.hpp"
#include "slimnet/kernels/int8_gemm.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

struct int8_options {
  /// 0: dynamic per-sample scale max|x| / 127; > 0: this fixed step for every activation.
  double activation_step = 0;
  /// Throw config_error unless the weights are exact int8 codes on a power-of-two grid.
  bool require_exact_weights = false;
  int threads = 1;

  void validate() const {
    if (!(activation_step >= 0) || !std::isfinite(activation_step)) {
      slimnet::detail::raise<config_error>("slimnet::nn::compressed::int8_options", "activation_step = {} must be >= 0 and finite",
                                           activation_step);
    }
  }
};

template <class Scalar>
class int8_engine : public engine<Scalar> {
 public:
  int8_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias, const int8_options& opt = {})
      : rows_(w.rows()), cols_(w.cols()), opt_(opt), scale_(static_cast<std::size_t>(w.rows())), bias_(std::move(bias)) {
    const char* fn = "slimnet::nn::compressed::int8_engine";
    opt.validate();
    detail::check_bias(fn, bias_, rows_);
    std::vector<std::int8_t> q(static_cast<std::size_t>(rows_ * cols_));
    exact_ = true;
    for (index_t j = 0; j < rows_; ++j) {
      const double s = exact_step(w.row(j));
      const bool row_exact = s > 0;
      exact_ = exact_ && row_exact;
      double step = s;
      if (!row_exact) {
        const double m = static_cast<double>(w.row(j).cwiseAbs().maxCoeff());
        step = m > 0 ? m / 127.0 : 1.0;
        if (opt.require_exact_weights) {
          slimnet::detail::raise<config_error>(fn, "row {} of the weights is not on a power-of-two grid with codes in [-127, 127]", j);
        }
      }
      scale_[static_cast<std::size_t>(j)] = static_cast<float>(step);
      for (index_t k = 0; k < cols_; ++k) {
        const double c = std::clamp(std::nearbyint(static_cast<double>(w(j, k)) / step), -127.0, 127.0);
        q[static_cast<std::size_t>(j * cols_ + k)] = static_cast<std::int8_t>(c);
      }
    }
    packed_ = kernels::int8_packed_rhs(kernels::row_major<const std::int8_t>(q.data(), rows_, cols_).transposed());
    if (bias_) bias_float_.assign(bias_->data(), bias_->data() + bias_->size());
  }

  std::string format() const override {
    return fmt::format("int8 codes ({} weights), {} activations", exact_ ? "exact" : "rounded",
                       opt_.activation_step > 0 ? fmt::format("fixed-step {}", opt_.activation_step) : std::string("dynamic per-sample (per-image in convolutions)"));
  }
  std::string kind_prefix() const override { return "Int8"; }
  index_t out_features() const override { return rows_; }
  index_t in_features() const override { return cols_; }
  /// One byte per weight and one float scale per output.
  std::size_t bytes() const override { return static_cast<std::size_t>(rows_ * cols_) + scale_.size() * sizeof(float); }
  layout preferred() const override { return layout::rows; }
  bool weights_exact() const { return exact_; }
  const std::vector<float>& weight_scales() const { return scale_; }

  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    quantize(x, n);
    kernels::int_gemm_params p;
    p.threads = opt_.threads;
    p.path = path_;
    p.row_scale = row_scale_.data();
    p.col_scale = scale_.data();
    p.col_bias = bias_float_.empty() ? nullptr : bias_float_.data();
    const auto a = kernels::row_major<const std::int8_t>(xq_.data(), n, cols_);
    if constexpr (std::is_same_v<Scalar, float>) {
      kernels::gemm_int8(a, packed_, kernels::row_major(y, n, rows_), p);
    } else {
      sums_.resize(static_cast<std::size_t>(n * rows_));
      kernels::gemm_int8(a, packed_, kernels::row_major(sums_.data(), n, rows_), p);
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < rows_; ++j)
          y[i * rows_ + j] = static_cast<Scalar>(row_scale_[static_cast<std::size_t>(i)]) * static_cast<Scalar>(scale_[static_cast<std::size_t>(j)]) *
                                 static_cast<Scalar>(sums_[static_cast<std::size_t>(i * rows_ + j)]) +
                             (bias_ ? (*bias_)[j] : Scalar(0));
    }
  }
  void apply_cols(const Scalar* x, index_t n, Scalar* z) override {
    xt_.resize(static_cast<std::size_t>(cols_ * n));
    yt_.resize(static_cast<std::size_t>(rows_ * n));
    detail::transpose(x, cols_, n, xt_.data());
    apply_rows(xt_.data(), n, yt_.data());
    detail::transpose(yt_.data(), n, rows_, z);
  }

  /// The direct int8 convolution (kernels/int8_conv.hpp) of a stride-1 Conv2d whose weights are
  /// these rows (out_c x in_c kh kw): y (N, out_c, PH, PW) with the epilogue fused. Activations
  /// get one step per image (not per output position as apply_rows would give an im2row matrix):
  /// the input is quantized once, 25x fewer values than its im2row for a 5x5 kernel. The
  /// filters are packed for the kernel on the first call with this geometry (no allocation
  /// after the first call at a given input size).
  void convolve(const Scalar* x, const kernels::conv_input& in, index_t kernel_h, index_t kernel_w, const kernels::conv_epilogue& ep,
                Scalar* y) {
    if (in.channels * kernel_h * kernel_w != cols_) {
      slimnet::detail::raise<shape_error>("slimnet::nn::compressed::int8_engine::convolve",
                                          "{} channels of {}x{} kernels do not fit weights of {} inputs", in.channels, kernel_h, kernel_w, cols_);
    }
    if (filters_.in_channels() != in.channels || filters_.kernel_h() != kernel_h || filters_.kernel_w() != kernel_w) {
      std::vector<std::int8_t> q(static_cast<std::size_t>(rows_ * cols_));
      for (index_t j = 0; j < rows_; ++j)
        for (index_t k = 0; k < cols_; ++k) q[static_cast<std::size_t>(j * cols_ + k)] = packed_.at(k, j);
      filters_ = kernels::int8_conv_filters(q.data(), rows_, in.channels, kernel_h, kernel_w);
    }
    const Scalar* bias = bias_ ? bias_->data() : nullptr;
    const int threads = static_cast<int>(std::min<index_t>(kernels::detail::resolve_threads(opt_.threads), std::max<index_t>(in.batch, 1)));
    conv_ws_.resize(static_cast<std::size_t>(std::max(threads, 1)));
    if (threads <= 1) {
      kernels::int8_conv2d(filters_, x, in, scale_.data(), bias, opt_.activation_step, ep, y, conv_ws_[0], path_);
      return;
    }
    // Images split evenly; each thread its own buffers, so the outputs do not depend on the count.
    const index_t in_size = in.channels * in.height * in.width;
    const index_t out_size = rows_ * ep.out(in.height + 2 * in.pad_h - kernel_h + 1) * ep.out(in.width + 2 * in.pad_w - kernel_w + 1);
    const auto bounds = kernels::detail::even_split(in.batch, threads);
    kernels::detail::run_threads(threads, [&](int t, int) {
      kernels::conv_input part = in;
      const index_t n0 = bounds[static_cast<std::size_t>(t)];
      part.batch = bounds[static_cast<std::size_t>(t) + 1] - n0;
      kernels::int8_conv2d(filters_, x + n0 * in_size, part, scale_.data(), bias, opt_.activation_step, ep, y + n0 * out_size,
                           conv_ws_[static_cast<std::size_t>(t)], path_);
    });
  }
  /// Forces the portable kernels (tests compare them with the dispatched ones).
  void set_path(kernels::kernel_path p) { path_ = p; }

  row_matrix<Scalar> effective_weights() const override {
    row_matrix<Scalar> w(rows_, cols_);
    for (index_t j = 0; j < rows_; ++j)
      for (index_t k = 0; k < cols_; ++k)
        w(j, k) = static_cast<Scalar>(scale_[static_cast<std::size_t>(j)]) * static_cast<Scalar>(packed_.at(k, j));
    return w;
  }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<int8_engine>(*this); }

 private:
  /// 2^-FL when every value of the row is c 2^-FL with integer |c| <= 127 (coarsest such grid),
  /// 0 when there is none. An all-zero row gets 1.
  template <class Row>
  static double exact_step(const Row& row) {
    const double m = static_cast<double>(row.cwiseAbs().maxCoeff());
    if (m == 0) return 1.0;
    // The coarsest grid that can hold max |w| with a code <= 127: 2^-FL >= m / 127.
    for (int fl = static_cast<int>(std::floor(std::log2(127.0 / m))); fl <= 60; ++fl) {
      const double step = std::ldexp(1.0, -fl);
      if (m / step > 127.0) return 0.0;
      bool on_grid = true;
      for (index_t k = 0; k < row.size() && on_grid; ++k) {
        const double c = static_cast<double>(row(k)) / step;
        on_grid = c == std::nearbyint(c);
      }
      if (on_grid) return step;
    }
    return 0.0;
  }

  /// xq_ = codes of x (n x in), row_scale_ = their steps (kernels/int8_conv.hpp: the same rule
  /// as a convolution's images). A row holding NaN or Inf gets a NaN step, so its outputs are NaN
  /// as the float layer's would be (found by fuzz/model_file_fuzz.cpp under UBSan).
  void quantize(const Scalar* x, index_t n) {
    xq_.resize(static_cast<std::size_t>(n * cols_));
    row_scale_.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
      const float step = kernels::detail::int8_image_step(x + i * cols_, cols_, opt_.activation_step);
      row_scale_[static_cast<std::size_t>(i)] = step;
      kernels::detail::int8_codes(x + i * cols_, cols_, step, xq_.data() + i * cols_, path_);
    }
  }

  index_t rows_, cols_;
  int8_options opt_;
  std::vector<float> scale_;
  std::optional<column_vector<Scalar>> bias_;
  std::vector<float> bias_float_;
  bool exact_ = false;
  kernels::int8_packed_rhs packed_;
  std::vector<std::int8_t> xq_;  // scratch
  std::vector<float> row_scale_;
  std::vector<std::int32_t> sums_;
  std::vector<Scalar> xt_, yt_;
  kernels::int8_conv_filters filters_;             // packed for convolve, on its first call
  std::vector<kernels::int8_conv_workspace> conv_ws_;  // one per thread
  kernels::kernel_path path_ = kernels::kernel_path::automatic;
};

}  // namespace slimnet::nn::compressed
