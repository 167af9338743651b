// The XNOR engine of binarized layers (BinaryConnect / BNN weights W_eff = alpha_j * sign, one
// alpha per output): the input is binarized (x < 0 -> -1, else +1, as BNN's sign activation; the
// identity on inputs that already are +-1), packed along the reduction axis (kernels/bitpack.hpp),
// and multiplied by the packed weights with the XNOR/popcount GEMM:
//   y_j = alpha_j * (K - 2 popcount(x_bits XOR w_bits_j)) + b_j
// The dot products are exact integers; y equals the float layer applied to sign(x) exactly when
// alpha_j is a power of two (BinaryConnect's default scale 1), and within one rounding of
// alpha_j * dot otherwise (the float layer's sum of +-alpha_j terms rounds at every step instead).
//
// Convolutions (convolve, stride 1, no padding) binarize before they gather: the input's signs are
// packed once per pixel along the channels (C bits per pixel instead of C floats), and each output
// position's row of K = kh kw C bits is assembled from the kh kw pixel words of its window (a
// bit-level im2row, 32x less to move than im2row of floats), with the weights' columns reordered to
// the same tap-major order k' = (ki kw + kj) C + c. The XNOR GEMM then gives the same integer dot
// products as the channel-major order, and the fused max-pool / ReLU runs on its output.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "slimnet/kernels/binary_gemm.hpp"
#include "slimnet/kernels/sparse_conv.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class xnor_engine : public engine<Scalar> {
 public:
  /// From weights whose row j is +-alpha_j (alpha_j = mean |w_j|). require_exact: throw config_error
  /// when a row holds other magnitudes (binarizing it would change the layer); false binarizes such
  /// rows anyway (XNOR-Net's approximation W ~ alpha sign(W)).
  xnor_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias, bool require_exact = true, int threads = 1)
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

  /// The direct XNOR convolution of NCHW input x (stride 1, no padding; in.pad_h / pad_w must be
  /// 0): y (N, out, OH', OW') = epilogue(alpha_j * (sign(x) * sign(w_j)) + b_j), OH' OW' the pooled
  /// size when `ep` pools. Outputs equal apply_rows on the im2row matrix followed by the epilogue.
  void convolve(const Scalar* x, const kernels::conv_input& in, index_t kernel_h, index_t kernel_w, const kernels::conv_epilogue& ep,
                Scalar* y) {
    constexpr const char* fn = "slimnet::nn::compressed::xnor_engine::convolve";
    if (in.channels * kernel_h * kernel_w != cols_) {
      slimnet::detail::raise<shape_error>(fn, "{} channels of {}x{} kernels do not fit weights of {} inputs", in.channels, kernel_h, kernel_w,
                                          cols_);
    }
    if (in.pad_h != 0 || in.pad_w != 0) slimnet::detail::raise<config_error>(fn, "padding {}x{}: the direct path takes none", in.pad_h, in.pad_w);
    if (in.height < kernel_h || in.width < kernel_w) {
      slimnet::detail::raise<shape_error>(fn, "a {}x{} input is smaller than the {}x{} kernel", in.height, in.width, kernel_h, kernel_w);
    }
    const index_t c_n = in.channels, h = in.height, w = in.width, oh_n = h - kernel_h + 1, ow_n = w - kernel_w + 1;
    const index_t plane = oh_n * ow_n, positions = in.batch * plane;
    if (conv_channels_ != c_n || conv_kh_ != kernel_h || conv_kw_ != kernel_w) {
      // The weights in tap-major order k' = (ki kw + kj) C + c, from the channel-major k = (c kh + ki) kw + kj.
      kernels::bit_matrix reordered(rows_, cols_);
      for (index_t j = 0; j < rows_; ++j)
        for (index_t c = 0; c < c_n; ++c)
          for (index_t t = 0; t < kernel_h * kernel_w; ++t) reordered.set(j, t * c_n + c, sign(j, c * kernel_h * kernel_w + t));
      conv_packed_ = kernels::xnor_packed_rhs(reordered.ref());
      conv_channels_ = c_n;
      conv_kh_ = kernel_h;
      conv_kw_ = kernel_w;
    }
    // 1. The signs of every pixel, packed along the channels: pixel_words words per pixel.
    // Word by word: the channels of one word accumulate in a contiguous plane (a loop along the
    // pixels the compiler vectorises), which is then stored at the pixels' stride.
    const index_t pixel_words = kernels::words_for_bits(c_n), hw = h * w;
    pixels_.resize(static_cast<std::size_t>(in.batch * hw * pixel_words));
    plane_.resize(static_cast<std::size_t>(hw));
    for (index_t n = 0; n < in.batch; ++n) {
      kernels::bit_word* pn = pixels_.data() + n * hw * pixel_words;
      for (index_t word = 0; word < pixel_words; ++word) {
        kernels::bit_word* acc = pixel_words == 1 ? pn : plane_.data();
        std::fill(acc, acc + hw, kernels::bit_word{0});
        for (index_t c = word * 64; c < std::min(c_n, word * 64 + 64); ++c) {
          const Scalar* xc = x + (n * c_n + c) * hw;
          const int bit = static_cast<int>(c % 64);
          for (index_t q = 0; q < hw; ++q) acc[q] |= static_cast<kernels::bit_word>(xc[q] < Scalar(0)) << bit;
        }
        if (pixel_words > 1)
          for (index_t q = 0; q < hw; ++q) pn[q * pixel_words + word] = acc[q];
      }
    }
    // 2. One row of kh kw C bits per output position, the window's pixels side by side.
    if (conv_bits_.rows() != positions || conv_bits_.cols() != cols_) conv_bits_ = kernels::bit_matrix(positions, cols_);
    const index_t row_words = conv_bits_.row_words();
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (c_n % 32 == 0) {
      // C a multiple of 32: every tap starts on a 32-bit boundary, and the row is the window's pixel
      // words copied side by side (on a little-endian machine the 32-bit halves of a word are its
      // low and high bits). Columns past K stay 0.
      const index_t halves = c_n / 32, pixel_halves = 2 * pixel_words;
      for (index_t n = 0; n < in.batch; ++n) {
        const auto* pn = reinterpret_cast<const std::uint32_t*>(pixels_.data() + n * h * w * pixel_words);
        for (index_t oh = 0; oh < oh_n; ++oh) {
          for (index_t ow = 0; ow < ow_n; ++ow) {
            kernels::bit_word* row = conv_bits_.row((n * oh_n + oh) * ow_n + ow);
            row[row_words - 1] = 0;
            auto* dst = reinterpret_cast<std::uint32_t*>(row);
            for (index_t ki = 0; ki < kernel_h; ++ki) {
              const std::uint32_t* src = pn + ((oh + ki) * w + ow) * pixel_halves;
              if (halves == 1) {  // C = 32: one 32-bit move per tap
                for (index_t kj = 0; kj < kernel_w; ++kj, src += pixel_halves, dst += 1) std::memcpy(dst, src, sizeof(std::uint32_t));
              } else {
                for (index_t kj = 0; kj < kernel_w; ++kj, src += pixel_halves, dst += halves) std::memcpy(dst, src, sizeof(std::uint32_t) * halves);
              }
            }
          }
        }
      }
    } else
#endif
    for (index_t n = 0; n < in.batch; ++n) {
      const kernels::bit_word* pn = pixels_.data() + n * h * w * pixel_words;
      for (index_t oh = 0; oh < oh_n; ++oh) {
        for (index_t ow = 0; ow < ow_n; ++ow) {
          kernels::bit_word* row = conv_bits_.row((n * oh_n + oh) * ow_n + ow);
          std::fill(row, row + row_words, kernels::bit_word{0});
          index_t offset = 0;  // bit offset of the tap in the row
          for (index_t ki = 0; ki < kernel_h; ++ki) {
            const kernels::bit_word* src = pn + ((oh + ki) * w + ow) * pixel_words;
            for (index_t kj = 0; kj < kernel_w; ++kj, src += pixel_words) {
              for (index_t cw = 0; cw < pixel_words; ++cw) {
                const index_t len = std::min<index_t>(64, c_n - cw * 64), at = offset + cw * 64;
                const kernels::bit_word v = src[cw];
                const index_t word = at / 64, shift = at % 64;
                row[word] |= v << shift;
                if (shift != 0 && shift + len > 64) row[word + 1] |= v >> (64 - shift);
              }
              offset += c_n;
            }
          }
        }
      }
    }
    // 3. The products (positions x out), scaled and biased; 4. the epilogue, into NCHW.
    conv_out_.resize(static_cast<std::size_t>(positions * rows_));
    multiply(conv_bits_, conv_packed_, positions, conv_out_.data());
    const index_t ph_n = ep.out(oh_n), pw_n = ep.out(ow_n), k = ep.pooled() ? ep.pool_kernel : 1, stride = ep.pooled() ? ep.pool_stride : 1;
    if (ep.pooled() && (oh_n < k || ow_n < k)) {
      slimnet::detail::raise<shape_error>(fn, "a {}x{} output does not fit the fused {}x{} max-pool", oh_n, ow_n, k, k);
    }
    pooled_row_.resize(static_cast<std::size_t>(rows_));
    for (index_t n = 0; n < in.batch; ++n) {
      for (index_t ph = 0; ph < ph_n; ++ph) {
        for (index_t pw = 0; pw < pw_n; ++pw) {
          Scalar* m = pooled_row_.data();
          for (index_t i = 0; i < k; ++i) {
            for (index_t j = 0; j < k; ++j) {
              const Scalar* r = conv_out_.data() + (n * plane + (ph * stride + i) * ow_n + pw * stride + j) * rows_;
              if (i == 0 && j == 0) {
                std::copy_n(r, rows_, m);
              } else {
                for (index_t o = 0; o < rows_; ++o) m[o] = std::max(m[o], r[o]);
              }
            }
          }
          if (ep.relu)
            for (index_t o = 0; o < rows_; ++o) m[o] = std::max(m[o], Scalar(0));
          Scalar* yo = y + n * rows_ * ph_n * pw_n + ph * pw_n + pw;
          for (index_t o = 0; o < rows_; ++o) yo[o * ph_n * pw_n] = m[o];
        }
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
  void multiply(index_t n, Scalar* y) { multiply(bits_, packed_, n, y); }
  /// Y (n x out) from `bits` (n x K) times `weights`.
  void multiply(const kernels::bit_matrix& bits, const kernels::xnor_packed_rhs& weights, index_t n, Scalar* y) {
    kernels::xnor_params p;
    p.threads = threads_;
    p.col_scale = alpha_float_.data();
    p.col_bias = bias_float_.empty() ? nullptr : bias_float_.data();
    if constexpr (std::is_same_v<Scalar, float>) {
      kernels::gemm_xnor(bits.ref(), weights, kernels::row_major(y, n, rows_), p);
    } else {
      dots_.resize(static_cast<std::size_t>(n * rows_));
      kernels::gemm_xnor(bits.ref(), weights, kernels::row_major(dots_.data(), n, rows_), p);
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < rows_; ++j)
          y[i * rows_ + j] = alpha_[static_cast<std::size_t>(j)] * static_cast<Scalar>(dots_[static_cast<std::size_t>(i * rows_ + j)]) +
                             (bias_ ? (*bias_)[j] : Scalar(0));
    }
  }

  index_t rows_, cols_;
  std::vector<Scalar> alpha_;
  std::vector<float> alpha_float_;  // the float epilogue's copy
  std::optional<column_vector<Scalar>> bias_;
  std::vector<float> bias_float_;
  int threads_;
  kernels::xnor_packed_rhs packed_;
  kernels::bit_matrix bits_;          // packed input (scratch)
  std::vector<std::int32_t> dots_;    // integer products (scratch, double layers)
  std::vector<Scalar> scratch_;
  // The direct convolution: weights in tap-major order for (channels, kh, kw), and scratch.
  kernels::xnor_packed_rhs conv_packed_;
  index_t conv_channels_ = -1, conv_kh_ = -1, conv_kw_ = -1;
  std::vector<kernels::bit_word> pixels_;  // input signs, packed per pixel along the channels
  std::vector<kernels::bit_word> plane_;   // one word of every pixel of an image (C > 64)
  kernels::bit_matrix conv_bits_;          // bit-level im2row
  std::vector<Scalar> conv_out_, pooled_row_;
};

}  // namespace slimnet::nn::compressed
