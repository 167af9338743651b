// The XNOR engine of binarized layers (BinaryConnect / BNN weights W_eff = alpha_j * sign, one
// alpha per output): the input is binarized (x < 0 -> -1, else +1, as BNN's sign activation; the
// identity on inputs that already are +-1), packed along the reduction axis (kernels/bitpack.hpp),
// and multiplied by the packed weights with the XNOR/popcount GEMM:
//   y_j = alpha_j * (K - 2 popcount(x_bits XOR w_bits_j)) + b_j
// The dot products are exact integers; y equals the float layer applied to sign(x) exactly when
// alpha_j is a power of two (BinaryConnect's default scale 1), and within one rounding of
// alpha_j * dot otherwise (the float layer's sum of +-alpha_j terms rounds at every step instead).
#pragma once

#include <cmath>
#include <type_traits>

#include "slimnet/kernels/binary_gemm.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class xnor_engine : public engine<Scalar> {
 public:
  /// From weights whose row j is +-alpha_j (alpha_j = mean |w_j|). require_exact: throw config_error
  /// when a row holds other magnitudes (binarizing it would change the layer); false binarizes such
  /// rows anyway (XNOR-Net's approximation W ~ alpha sign(W)).
  xnor_engine(const row_matrix<Scalar>& w, std::optional<vector<Scalar>> bias, bool require_exact = true, int threads = 1)
      : rows_(w.rows()),
        cols_(w.cols()),
        alpha_(static_cast<std::size_t>(w.rows())),
        alpha_float_(alpha_.size()),
        bias_(std::move(bias)),
        threads_(threads) {
    const char* fn = "slimnet::nn::compressed::xnor_engine";
    detail::check_bias(fn, bias_, rows_);
    for (index_t j = 0; j < rows_; ++j) {
      // alpha_j: the common magnitude of an exact row, the mean magnitude otherwise.
      const Scalar mean = cols_ == 0 ? Scalar(1) : static_cast<Scalar>(w.row(j).cwiseAbs().template cast<double>().mean());
      Scalar alpha = mean > Scalar(0) ? mean : Scalar(1);
      if (require_exact && cols_ > 0) {
        alpha = std::abs(w(j, 0));
        if (alpha == Scalar(0)) slimnet::detail::raise<config_error>(fn, "row {} of the weights holds a zero: not a binarized layer", j);
        for (index_t k = 0; k < cols_; ++k) {
          if (std::abs(w(j, k)) != alpha) {
            slimnet::detail::raise<config_error>(fn,
                                                 "row {} of the weights holds magnitudes {} and {}: not a binarized layer "
                                                 "(+-alpha per row); pass require_exact = false to binarize it anyway",
                                                 j, alpha, std::abs(w(j, k)));
          }
        }
      }
      alpha_[static_cast<std::size_t>(j)] = alpha;
      alpha_float_[static_cast<std::size_t>(j)] = static_cast<float>(alpha);
    }
    packed_ = kernels::xnor_packed_rhs(kernels::pack_signs(kernels::row_major<const Scalar>(w.data(), rows_, cols_)).ref());
    if (bias_) bias_float_.assign(bias_->data(), bias_->data() + bias_->size());
  }

  std::string format() const override { return fmt::format("XNOR bits, {} bytes", bytes()); }
  std::string kind_prefix() const override { return "Xnor"; }
  index_t out_features() const override { return rows_; }
  index_t in_features() const override { return cols_; }
  /// The packed bits (one bit per weight, rows padded to 64 bits) and one float scale per output.
  std::size_t bytes() const override {
    return static_cast<std::size_t>(rows_ * kernels::words_for_bits(cols_)) * sizeof(kernels::bit_word) + alpha_.size() * sizeof(Scalar);
  }
  layout preferred() const override { return layout::rows; }
  const std::vector<Scalar>& scales() const { return alpha_; }

  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    kernels::pack_signs(kernels::row_major(x, n, cols_), bits_);
    multiply(n, y);
  }
  void apply_cols(const Scalar* x, index_t n, Scalar* z) override {
    kernels::pack_signs(kernels::row_major(x, cols_, n).transposed(), bits_);
    scratch_.resize(static_cast<std::size_t>(n * rows_));
    multiply(n, scratch_.data());
    detail::transpose(scratch_.data(), n, rows_, z);
  }

  /// As apply_rows with the integer dot products corrected before scaling:
  ///   y_ij = alpha_j (dot_ij - correction[(i % period) * out + j]) + b_j
  /// A convolution's zero padding: sign(0) = +1 makes each padded tap add sign(w) to the dot product,
  /// the correction takes exactly that back out (an integer, so the result stays exact).
  void apply_rows_corrected(const Scalar* x, index_t n, Scalar* y, const std::int32_t* correction, index_t period) {
    kernels::pack_signs(kernels::row_major(x, n, cols_), bits_);
    dots_.resize(static_cast<std::size_t>(n * rows_));
    kernels::xnor_params p;
    p.threads = threads_;
    kernels::gemm_xnor(bits_.ref(), packed_, kernels::row_major(dots_.data(), n, rows_), p);
    for (index_t i = 0; i < n; ++i) {
      const std::int32_t* c = correction + (i % period) * rows_;
      for (index_t j = 0; j < rows_; ++j) {
        const auto dot = static_cast<Scalar>(dots_[static_cast<std::size_t>(i * rows_ + j)] - c[j]);
        y[i * rows_ + j] = alpha_[static_cast<std::size_t>(j)] * dot + (bias_ ? (*bias_)[j] : Scalar(0));
      }
    }
  }

  /// Sign of weight (j, k): +1 or -1.
  int sign(index_t j, index_t k) const {
    const kernels::bit_word* pj = packed_.panel(j / 32) + j % 32;
    return ((pj[(k / 64) * 32] >> (k % 64)) & 1u) ? -1 : 1;
  }

  row_matrix<Scalar> effective_weights() const override {
    row_matrix<Scalar> w(rows_, cols_);
    for (index_t j = 0; j < rows_; ++j)
      for (index_t k = 0; k < cols_; ++k) w(j, k) = static_cast<Scalar>(sign(j, k)) * alpha_[static_cast<std::size_t>(j)];
    return w;
  }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<xnor_engine>(*this); }

 private:
  /// Y (n x out) from bits_ (n x K).
  void multiply(index_t n, Scalar* y) {
    kernels::xnor_params p;
    p.threads = threads_;
    p.col_scale = alpha_float_.data();
    p.col_bias = bias_float_.empty() ? nullptr : bias_float_.data();
    if constexpr (std::is_same_v<Scalar, float>) {
      kernels::gemm_xnor(bits_.ref(), packed_, kernels::row_major(y, n, rows_), p);
    } else {
      dots_.resize(static_cast<std::size_t>(n * rows_));
      kernels::gemm_xnor(bits_.ref(), packed_, kernels::row_major(dots_.data(), n, rows_), p);
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < rows_; ++j)
          y[i * rows_ + j] = alpha_[static_cast<std::size_t>(j)] * static_cast<Scalar>(dots_[static_cast<std::size_t>(i * rows_ + j)]) +
                             (bias_ ? (*bias_)[j] : Scalar(0));
    }
  }

  index_t rows_, cols_;
  std::vector<Scalar> alpha_;
  std::vector<float> alpha_float_;  // the float epilogue's copy
  std::optional<vector<Scalar>> bias_;
  std::vector<float> bias_float_;
  int threads_;
  kernels::xnor_packed_rhs packed_;
  kernels::bit_matrix bits_;          // packed input (scratch)
  std::vector<std::int32_t> dots_;    // integer products (scratch, double layers)
  std::vector<Scalar> scratch_;
};

}  // namespace slimnet::nn::compressed
