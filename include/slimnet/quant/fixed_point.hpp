// Fixed-point numbers <IL, FL> (Gupta et al. 2015): round-to-nearest and stochastic rounding with
// saturation, over any Eigen dense object, Eigen::Tensor / TensorMap or slimnet::tensor, and the
// exact integer storage (int8 / int16 / int32 codes) behind them.
//
// A format <IL, FL> has word length WL = IL + FL bits (IL counts the sign bit), resolution
// epsilon = 2^-FL and range [-2^(IL-1), 2^(IL-1) - 2^-FL]: the integer codes
// c in [-2^(WL-1), 2^(WL-1) - 1] stand for the values c * epsilon. With floor(x) the largest
// multiple of epsilon <= x:
//   nearest:    Round(x) = floor(x)            if x - floor(x) <  epsilon/2
//                          floor(x) + epsilon  if x - floor(x) >= epsilon/2   (ties go up)
//   stochastic: Round(x) = floor(x) + epsilon with probability (x - floor(x)) / epsilon,
//               floor(x) otherwise, so E[Round(x)] = x (unbiased) for x inside the range;
// then values outside the range saturate to its nearest end.
//
// All arithmetic is done in double, where scaling by 2^FL is exact, so the codes are exact for
// float and double input. A Scalar result holds c * epsilon exactly whenever Scalar's significand
// can hold every WL-bit code: always for double, for float when WL <= 25 (beyond that the float
// result is the float nearest to the grid value; the codes stay exact).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/core/view.hpp"

namespace slimnet::quant {

enum class rounding { nearest, stochastic };

inline const char* to_string(rounding r) {
  return r == rounding::nearest ? "nearest" : "stochastic";
}

/// A fixed-point format <IL, FL>, chosen at run time (fixed_point<IL, FL> is the compile-time
/// twin).
struct fixed_point_format {
  int integer_bits = 4;    ///< IL, including the sign bit
  int fraction_bits = 12;  ///< FL

  static constexpr int max_word_length = 32;

  constexpr int word_length() const { return integer_bits + fraction_bits; }
  /// Resolution 2^-FL.
  double epsilon() const { return std::ldexp(1.0, -fraction_bits); }
  /// Smallest representable value, -2^(IL-1).
  double lowest() const { return std::ldexp(static_cast<double>(code_min()), -fraction_bits); }
  /// Largest representable value, 2^(IL-1) - 2^-FL.
  double highest() const { return std::ldexp(static_cast<double>(code_max()), -fraction_bits); }
  /// Codes run over [-2^(WL-1), 2^(WL-1) - 1].
  std::int64_t code_min() const { return -(std::int64_t{1} << (word_length() - 1)); }
  std::int64_t code_max() const { return (std::int64_t{1} << (word_length() - 1)) - 1; }

  /// Throws config_error unless 1 <= WL <= 32 and -32 <= FL <= 64 (which keeps every grid value
  /// a normal float).
  void validate(const char* function = "slimnet::quant::fixed_point_format") const {
    if (word_length() < 1 || word_length() > max_word_length || fraction_bits < -32 ||
        fraction_bits > 64) {
      slimnet::detail::raise<config_error>(
          function,
          "invalid fixed-point format <{},{}>: word length IL + FL = {} must be in "
          "[1, {}] and FL in [-32, 64]",
          integer_bits, fraction_bits, word_length(), max_word_length);
    }
  }

  std::string describe() const { return fmt::format("<{},{}>", integer_bits, fraction_bits); }
  friend bool operator==(const fixed_point_format& a, const fixed_point_format& b) {
    return a.integer_bits == b.integer_bits && a.fraction_bits == b.fraction_bits;
  }
  friend bool operator!=(const fixed_point_format& a, const fixed_point_format& b) {
    return !(a == b);
  }
};

/// Integer codes of a fixed-point tensor: `codes[i * cols + j]` is element (i, j) of the
/// out_units x rest view it was taken from; the value is codes[k] * 2^-FL.
template <class Code>
struct fixed_point_codes {
  static_assert(std::is_integral_v<Code> && std::is_signed_v<Code>,
                "slimnet::quant::fixed_point_codes needs a signed integer code type.");
  fixed_point_format format;
  index_t rows = 0, cols = 0;
  std::vector<Code> codes;

  std::size_t storage_bytes() const { return codes.size() * sizeof(Code); }
};

namespace detail {

/// Precomputed constants of one format; every operation below goes through it.
struct fixed_point_grid {
  double scale;     // 2^FL
  double inverse;   // 2^-FL
  double code_min;  // as doubles, for clamping before any integer conversion
  double code_max;

  explicit fixed_point_grid(const fixed_point_format& f, const char* function) {
    f.validate(function);
    scale = std::ldexp(1.0, f.fraction_bits);
    inverse = std::ldexp(1.0, -f.fraction_bits);
    code_min = static_cast<double>(f.code_min());
    code_max = static_cast<double>(f.code_max());
  }

  // x * 2^FL is exact; floor and the difference t - floor(t) are exact too, so the tie and the
  // probability below are decided on the true fraction (std::round(t) or floor(t + 0.5) would not
  // be: 0.49999999999999994 + 0.5 rounds to 1). NaN stays NaN; +-inf saturate. Written without
  // branches: the round-up decision is a coin flip for the CPU's predictor.
  double nearest(double x) const {
    const double t = x * scale;
    const double f = std::floor(t);
    return clamp(f + static_cast<double>(t - f >= 0.5));
  }
  double stochastic(double x, rng& gen) const {
    const double t = x * scale;
    const double f = std::floor(t);
    return clamp(f + static_cast<double>(gen.uniform() < t - f));
  }
  // std::max(c, lo) is (c < lo ? lo : c): a NaN c stays NaN.
  double clamp(double c) const { return std::min(std::max(c, code_min), code_max); }
  double code(double x, rounding mode, rng* gen) const {
    return mode == rounding::nearest ? nearest(x) : stochastic(x, *gen);
  }
  double value(double code) const { return code * inverse; }
};

inline void require_generator(rounding mode, const rng* gen, const char* function) {
  if (mode == rounding::stochastic && gen == nullptr) {
    slimnet::detail::raise<config_error>(function,
                                         "stochastic rounding needs a random generator, got none");
  }
}

template <class Code>
const char* code_name() {
  if constexpr (sizeof(Code) == 1) return "int8";
  if constexpr (sizeof(Code) == 2) return "int16";
  if constexpr (sizeof(Code) == 4) return "int32";
  return "int64";
}

}  // namespace detail

/// Quantizes one value to <IL, FL> (NaN stays NaN).
inline double quantize_value(double x, const fixed_point_format& format,
                             rounding mode = rounding::nearest, rng* gen = nullptr) {
  detail::require_generator(mode, gen, "slimnet::quant::quantize_value");
  const detail::fixed_point_grid grid(format, "slimnet::quant::quantize_value");
  return grid.value(grid.code(x, mode, gen));
}

/// Rounds every element of `x` (Eigen Matrix / Array / Map / Ref / Block, Eigen::Tensor /
/// TensorMap, slimnet::tensor) to `format` in place. Stochastic rounding draws one uniform number
/// per element from `gen`, in row-major order of the out_units x rest view, so a seed gives the
/// same result whatever the storage order. NaN stays NaN.
template <class T>
void quantize_in_place(T&& x, const fixed_point_format& format, rounding mode = rounding::nearest,
                       rng* gen = nullptr) {
  constexpr const char* fn = "slimnet::quant::quantize_in_place";
  detail::require_generator(mode, gen, fn);
  const detail::fixed_point_grid grid(format, fn);
  if constexpr (slimnet::detail::is_slimnet_tensor<std::decay_t<T>>::value) {
    // Contiguous row-major storage: one flat loop (the training path: weights, activations,
    // gradients).
    auto* p = x.data();
    using scalar = std::remove_reference_t<decltype(*p)>;
    const index_t n = x.size();
    if (mode == rounding::nearest) {
      for (index_t i = 0; i < n; ++i)
        p[i] = static_cast<scalar>(grid.value(grid.nearest(static_cast<double>(p[i]))));
    } else {
      for (index_t i = 0; i < n; ++i)
        p[i] = static_cast<scalar>(grid.value(grid.stochastic(static_cast<double>(p[i]), *gen)));
    }
    return;
  }
  auto&& m = as_matrix(x);
  using scalar = std::remove_cv_t<std::remove_reference_t<decltype(m(0, 0))>>;
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      m(i, j) = static_cast<scalar>(grid.value(grid.code(static_cast<double>(m(i, j)), mode, gen)));
    }
  }
}

/// The quantized copy of `x` as an out_units x rest row-major matrix.
template <class T>
auto quantized(const T& x, const fixed_point_format& format, rounding mode = rounding::nearest,
               rng* gen = nullptr) {
  auto&& m = as_matrix(x);
  using scalar = std::remove_cv_t<std::remove_reference_t<decltype(m(0, 0))>>;
  row_matrix<scalar> out(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j)
      out(i, j) = m(i, j);  // element-wise: m may be an Eigen::Array
  }
  quantize_in_place(out, format, mode, gen);
  return out;
}

/// Integer codes of `x` rounded to `format`. Code must be wide enough for WL bits (int8 up to
/// WL = 8, int16 up to 16, int32 up to 32). Throws config_error on NaN.
template <class Code, class T>
fixed_point_codes<Code> encode(const T& x, const fixed_point_format& format,
                               rounding mode = rounding::nearest, rng* gen = nullptr) {
  constexpr const char* fn = "slimnet::quant::encode";
  detail::require_generator(mode, gen, fn);
  const detail::fixed_point_grid grid(format, fn);
  if (format.word_length() > std::numeric_limits<Code>::digits + 1) {
    slimnet::detail::raise<config_error>(
        fn, "{} codes need {} bits, {} holds {}", format.describe(), format.word_length(),
        detail::code_name<Code>(), std::numeric_limits<Code>::digits + 1);
  }
  auto&& m = as_matrix(x);
  fixed_point_codes<Code> out;
  out.format = format;
  out.rows = m.rows();
  out.cols = m.cols();
  out.codes.resize(static_cast<std::size_t>(m.rows() * m.cols()));
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      const double v = static_cast<double>(m(i, j));
      if (std::isnan(v))
        slimnet::detail::raise<config_error>(
            fn, "element ({}, {}) is NaN and has no fixed-point code", i, j);
      out.codes[static_cast<std::size_t>(i * m.cols() + j)] =
          static_cast<Code>(grid.code(v, mode, gen));
    }
  }
  return out;
}

/// Writes the values of `codes` into `out`, whose out_units x rest view must be rows x cols.
template <class Code, class T>
void decode(const fixed_point_codes<Code>& codes, T&& out) {
  constexpr const char* fn = "slimnet::quant::decode";
  const detail::fixed_point_grid grid(codes.format, fn);
  auto&& m = as_matrix(out);
  if (m.rows() != codes.rows || m.cols() != codes.cols ||
      static_cast<std::size_t>(codes.rows * codes.cols) != codes.codes.size()) {
    slimnet::detail::raise<shape_error>(
        fn, "{} codes of a {} x {} view do not fit a {} x {} destination", codes.codes.size(),
        codes.rows, codes.cols, m.rows(), m.cols());
  }
  using scalar = std::remove_cv_t<std::remove_reference_t<decltype(m(0, 0))>>;
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      m(i, j) = static_cast<scalar>(
          grid.value(static_cast<double>(codes.codes[static_cast<std::size_t>(i * m.cols() + j)])));
    }
  }
}

/// The values of `codes` as a rows x cols row-major matrix.
template <class Scalar, class Code>
row_matrix<Scalar> decode(const fixed_point_codes<Code>& codes) {
  row_matrix<Scalar> out(codes.rows, codes.cols);
  decode(codes, out);
  return out;
}

/// The compile-time format <IL, FL>: `fixed_point<4, 12>::quantize(w, rounding::stochastic, &gen)`.
/// code_type is the narrowest signed integer that holds WL bits.
template <int IL, int FL>
struct fixed_point {
  static_assert(
      IL + FL >= 1 && IL + FL <= fixed_point_format::max_word_length,
      "slimnet::quant::fixed_point<IL, FL> needs a word length IL + FL between 1 and 32.");
  static_assert(FL >= -32 && FL <= 64,
                "slimnet::quant::fixed_point<IL, FL> needs FL between -32 and 64.");

  static constexpr int integer_bits = IL;
  static constexpr int fraction_bits = FL;
  static constexpr int word_length = IL + FL;
  using code_type =
      std::conditional_t<word_length <= 8, std::int8_t,
                         std::conditional_t<word_length <= 16, std::int16_t, std::int32_t>>;

  static constexpr fixed_point_format format() { return fixed_point_format{IL, FL}; }

  template <class T>
  static void quantize(T&& x, rounding mode = rounding::nearest, rng* gen = nullptr) {
    quantize_in_place(std::forward<T>(x), format(), mode, gen);
  }
  template <class T>
  static fixed_point_codes<code_type> encode(const T& x, rounding mode = rounding::nearest,
                                             rng* gen = nullptr) {
    return quant::encode<code_type>(x, format(), mode, gen);
  }
};

}  // namespace slimnet::quant
