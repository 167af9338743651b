// Packed-bit inference form of binarized layers. The bit conventions, written once (as Larq's
// compute engine does):
//   - a +-1 value is one bit: bit 1 = -1, bit 0 = +1 (so sign(0) = +1, as in binarize);
//   - values are packed along the reduction axis (a Linear weight's input axis, a Conv2d weight's
//     (in_c, kh, kw) axis), element j in word j / 64 at bit j % 64 (least significant first);
//   - bits past the end of a row are 0 (zero padding).
// For +-1 vectors a, b of length K:  a.b = K - 2 popcount(a XOR b); padding bits are 0 in both
// operands, XOR to 0 and are not counted, so K is the true length. Where some positions must
// count as 0 (a convolution's spatial zero padding), a validity mask v (bit 1 = present) gives
//   a.b = popcount(v) - 2 popcount((a XOR b) AND v).
// These are integer sums, so the packed layers reproduce the float computation on +-1 values
// exactly (float sums of up to 2^24 terms +-1 are exact). This is the plain popcount reference;
// the fast XNOR kernels belong to slimnet::kernels.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/view.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/quant/binary.hpp"

namespace slimnet::quant {

using bit_word = std::uint64_t;
constexpr index_t bits_per_word = 64;

inline index_t words_for(index_t length) { return (length + bits_per_word - 1) / bits_per_word; }

inline int popcount(bit_word w) { return __builtin_popcountll(w); }

/// Rows of +-1 values, each packed into words_per_row words (conventions above).
struct packed_bits {
  index_t rows = 0, length = 0, words_per_row = 0;
  std::vector<bit_word> words;

  packed_bits() = default;
  packed_bits(index_t r, index_t len)
      : rows(r),
        length(len),
        words_per_row(words_for(len)),
        words(static_cast<std::size_t>(r * words_for(len)), 0) {}

  bit_word* row(index_t r) { return words.data() + r * words_per_row; }
  const bit_word* row(index_t r) const { return words.data() + r * words_per_row; }
  /// +1 or -1.
  int value(index_t r, index_t j) const {
    return (row(r)[j / bits_per_word] >> (j % bits_per_word)) & 1u ? -1 : 1;
  }
  void set_negative(index_t r, index_t j) {
    row(r)[j / bits_per_word] |= bit_word{1} << (j % bits_per_word);
  }
  std::size_t storage_bytes() const { return words.size() * sizeof(bit_word); }
};

/// The signs of the out_units x rest view of `x`, one packed row per row (x < 0 -> bit 1).
template <class T>
packed_bits pack_signs(const T& x) {
  auto&& m = as_matrix(x);
  packed_bits p(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j)
      if (m(i, j) < 0) p.set_negative(i, j);
  return p;
}

/// The +-1 values of `p` as a rows x length matrix.
template <class Scalar>
row_matrix<Scalar> unpack(const packed_bits& p) {
  row_matrix<Scalar> out(p.rows, p.length);
  for (index_t i = 0; i < p.rows; ++i)
    for (index_t j = 0; j < p.length; ++j) out(i, j) = static_cast<Scalar>(p.value(i, j));
  return out;
}

/// sum_j a_j b_j of two packed +-1 rows of `length` values: length - 2 popcount(a XOR b).
inline std::int64_t binary_dot(const bit_word* a, const bit_word* b, index_t words,
                               index_t length) {
  std::int64_t differ = 0;
  for (index_t w = 0; w < words; ++w) differ += popcount(a[w] ^ b[w]);
  return length - 2 * differ;
}

/// sum over the positions present in `mask` of a_j b_j: popcount(mask) - 2 popcount((a XOR b) AND
/// mask).
inline std::int64_t binary_dot_masked(const bit_word* a, const bit_word* b, const bit_word* mask,
                                      index_t words) {
  std::int64_t present = 0, differ = 0;
  for (index_t w = 0; w < words; ++w) {
    present += popcount(mask[w]);
    differ += popcount((a[w] ^ b[w]) & mask[w]);
  }
  return present - 2 * differ;
}

namespace detail {

/// Throws unless every element of x is exactly +1 or -1: packed layers only take binary inputs.
template <class Scalar>
void require_binary_input(const tensor<Scalar>& x, const char* fn) {
  for (index_t i = 0; i < x.size(); ++i) {
    if (x[i] != Scalar(1) && x[i] != Scalar(-1)) {
      slimnet::detail::raise<config_error>(
          fn,
          "input element {} is {}, not +-1: a packed binary layer needs binary inputs "
          "(keep the float layer where the input is real)",
          i, x[i]);
    }
  }
}

template <class Layer, class Scalar>
std::optional<vector<Scalar>> copy_bias(Layer& l) {
  if (l.bias() == nullptr) return std::nullopt;
  return vector<Scalar>(l.bias()->value().flat());
}

}  // namespace detail

/// Inference-only Linear with packed +-1 weights on +-1 inputs: y = scale * (x . w_b) + b.
/// Equal to the float layer with weights +-scale whenever scale is a power of two (1 by default).
template <class Scalar>
class binary_linear : public nn::cloneable<binary_linear<Scalar>, Scalar> {
 public:
  binary_linear(packed_bits weights, double scale, std::optional<vector<Scalar>> bias)
      : w_(std::move(weights)), scale_(scale), bias_(std::move(bias)) {
    if (bias_ && bias_->size() != w_.rows) {
      slimnet::detail::raise<shape_error>("slimnet::quant::binary_linear",
                                          "{} biases for {} outputs", bias_->size(), w_.rows);
    }
  }
  /// The packed form of `l`: the signs of its weight (W itself, not W_eff) times `scale`.
  static binary_linear from(nn::linear<Scalar>& l, double scale = 1.0) {
    return binary_linear(pack_signs(l.weight().value()), scale,
                         detail::copy_bias<nn::linear<Scalar>, Scalar>(l));
  }

  std::string kind() const override { return "BinaryLinear"; }
  std::string describe() const override {
    return fmt::format("BinaryLinear({}, {}, packed {} bytes{})", w_.length, w_.rows,
                       w_.storage_bytes(), bias_ ? "" : ", bias=false");
  }
  const packed_bits& weights() const { return w_; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 2 || in[1] != w_.length) {
      slimnet::detail::raise<shape_error>("slimnet::quant::binary_linear::forward",
                                          "input of shape {} does not fit {}: expected (N, {})",
                                          shape_string(in), describe(), w_.length);
    }
    return {in[0], w_.rows};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context&) override {
    y.resize(output_shape(x.shape()));
    detail::require_binary_input(x, "slimnet::quant::binary_linear::forward");
    const packed_bits in = pack_signs(x);
    const auto s = static_cast<Scalar>(scale_);
    for (index_t n = 0; n < x.dim(0); ++n) {
      for (index_t o = 0; o < w_.rows; ++o) {
        const auto dot =
            static_cast<Scalar>(binary_dot(in.row(n), w_.row(o), w_.words_per_row, w_.length));
        y.data()[n * w_.rows + o] = s * dot + (bias_ ? (*bias_)[o] : Scalar(0));
      }
    }
  }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&,
                tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::quant::binary_linear::backward",
                                         "{} is an inference-only layer", describe());
  }

 private:
  packed_bits w_;
  double scale_;
  std::optional<vector<Scalar>> bias_;
};

/// Inference-only Conv2d with packed +-1 weights on +-1 NCHW inputs; the spatial zero padding is
/// handled by a validity mask per output position, so padded taps count 0 as in the float layer.
template <class Scalar>
class binary_conv2d : public nn::cloneable<binary_conv2d<Scalar>, Scalar> {
 public:
  binary_conv2d(packed_bits weights, index_t in_channels, nn::window2d win, double scale,
                std::optional<vector<Scalar>> bias)
      : w_(std::move(weights)),
        in_channels_(in_channels),
        win_(win),
        scale_(scale),
        bias_(std::move(bias)) {
    if (w_.length != in_channels * win.kernel_h * win.kernel_w ||
        (bias_ && bias_->size() != w_.rows)) {
      slimnet::detail::raise<shape_error>(
          "slimnet::quant::binary_conv2d",
          "weights of {} x {} bits do not fit {} channels of {}x{} kernels", w_.rows, w_.length,
          in_channels, win.kernel_h, win.kernel_w);
    }
  }
  static binary_conv2d from(nn::conv2d<Scalar>& c, double scale = 1.0) {
    return binary_conv2d(pack_signs(c.weight().value()), c.in_channels(), c.window(), scale,
                         detail::copy_bias<nn::conv2d<Scalar>, Scalar>(c));
  }

  std::string kind() const override { return "BinaryConv2d"; }
  std::string describe() const override {
    return fmt::format(
        "BinaryConv2d({}, {}, kernel_size=({}, {}), stride={}, padding={}, packed {} bytes{})",
        in_channels_, w_.rows, win_.kernel_h, win_.kernel_w, win_.stride_h, win_.pad_h,
        w_.storage_bytes(), bias_ ? "" : ", bias=false");
  }
  const packed_bits& weights() const { return w_; }

  shape_t output_shape(const shape_t& in) const override {
    if (in.size() != 4 || in[1] != in_channels_ || !win_.fits(in[2], in[3])) {
      slimnet::detail::raise<shape_error>("slimnet::quant::binary_conv2d::forward",
                                          "input of shape {} does not fit {}", shape_string(in),
                                          describe());
    }
    return {in[0], w_.rows, win_.out_h(in[2]), win_.out_w(in[3])};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context&) override {
    y.resize(output_shape(x.shape()));
    detail::require_binary_input(x, "slimnet::quant::binary_conv2d::forward");
    const index_t batch = x.dim(0), h = x.dim(2), w = x.dim(3), oh_n = y.dim(2), ow_n = y.dim(3),
                  oc = w_.rows;
    const index_t words = w_.words_per_row;
    std::vector<bit_word> column(static_cast<std::size_t>(words)),
        mask(static_cast<std::size_t>(words));
    const auto s = static_cast<Scalar>(scale_);
    for (index_t n = 0; n < batch; ++n) {
      for (index_t oh = 0; oh < oh_n; ++oh) {
        for (index_t ow = 0; ow < ow_n; ++ow) {
          // Pack the receptive field in the weight's (c, ki, kj) order; taps in the padding are
          // absent from the mask.
          std::fill(column.begin(), column.end(), 0);
          std::fill(mask.begin(), mask.end(), 0);
          index_t k = 0;
          for (index_t c = 0; c < in_channels_; ++c) {
            for (index_t ki = 0; ki < win_.kernel_h; ++ki) {
              const index_t ih = oh * win_.stride_h - win_.pad_h + ki;
              for (index_t kj = 0; kj < win_.kernel_w; ++kj, ++k) {
                const index_t iw = ow * win_.stride_w - win_.pad_w + kj;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                const bit_word bit = bit_word{1} << (k % bits_per_word);
                mask[static_cast<std::size_t>(k / bits_per_word)] |= bit;
                if (x.data()[((n * in_channels_ + c) * h + ih) * w + iw] < 0)
                  column[static_cast<std::size_t>(k / bits_per_word)] |= bit;
              }
            }
          }
          for (index_t o = 0; o < oc; ++o) {
            const auto dot = static_cast<Scalar>(
                binary_dot_masked(column.data(), w_.row(o), mask.data(), words));
            y.data()[((n * oc + o) * oh_n + oh) * ow_n + ow] =
                s * dot + (bias_ ? (*bias_)[o] : Scalar(0));
          }
        }
      }
    }
  }

  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>&,
                tensor<Scalar>*) override {
    slimnet::detail::raise<config_error>("slimnet::quant::binary_conv2d::backward",
                                         "{} is an inference-only layer", describe());
  }

 private:
  packed_bits w_;
  index_t in_channels_;
  nn::window2d win_;
  double scale_;
  std::optional<vector<Scalar>> bias_;
};

namespace detail {

template <class Scalar>
const binary_connect_transform<Scalar>* find_binary_connect(nn::parameter<Scalar>& p) {
  for (const auto& t : p.transforms()) {
    if (const auto* b = dynamic_cast<const binary_connect_transform<Scalar>*>(t.get())) return b;
  }
  return nullptr;
}

/// Replaces the weight's value by its binarized value and drops its transforms.
template <class Scalar>
void bake_binary(nn::parameter<Scalar>& p, double scale) {
  binarize_in_place(p.value(), binarization::deterministic, nullptr, scale);
  p.clear_transforms();
}

}  // namespace detail

/// The packed-bit inference form of a binarized Sequential model (nested containers are copied as
/// they are). Each Linear / Conv2d whose weight carries a binary_connect_transform
///   - becomes a binary_linear / binary_conv2d when its input is binary, i.e. a SignActivation
///     precedes it with only MaxPool2d, Flatten or Dropout in between (these keep +-1 values);
///   - otherwise (the first layer, fed the real-valued input) stays a float layer whose weights
///     are replaced by their binarized values +-scale.
/// In evaluation mode the result computes exactly what the binarized model computes (binary test
/// weights, i.e. real_weights_at_test off), provided each scale is a power of two.
template <class Scalar>
nn::sequential<Scalar> to_packed_inference(const nn::sequential<Scalar>& model) {
  nn::sequential<Scalar> out;
  bool binary_input = false;
  for (std::size_t i = 0; i < model.size(); ++i) {
    std::unique_ptr<nn::layer<Scalar>> l = model[i].clone();
    const std::string kind = l->kind();
    nn::parameter<Scalar>* weight = nullptr;
    auto* lin = dynamic_cast<nn::linear<Scalar>*>(l.get());
    auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(l.get());
    if (lin) weight = &lin->weight();
    if (conv) weight = &conv->weight();
    const auto* bc = weight ? detail::find_binary_connect(*weight) : nullptr;
    if (bc != nullptr) {
      const double scale = bc->options().scale;
      if (binary_input && lin) {
        l = std::make_unique<binary_linear<Scalar>>(binary_linear<Scalar>::from(*lin, scale));
      } else if (binary_input && conv) {
        l = std::make_unique<binary_conv2d<Scalar>>(binary_conv2d<Scalar>::from(*conv, scale));
      } else {
        detail::bake_binary(*weight, scale);
      }
    }
    if (kind == "SignActivation") {
      binary_input = true;
    } else if (kind != "MaxPool2d" && kind != "Flatten" && kind != "Dropout") {
      binary_input = false;
    }
    out.add_ptr(model.local_name(i), std::move(l));
  }
  return out;
}

}  // namespace slimnet::quant
