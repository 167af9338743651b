// The matrix engines behind compressed layers: y = W x + b computed from W stored in one
// compressed format (dense, sparse, XNOR bits, int8, codebook), in the activation layout its
// kernel wants. A compressed Linear or Conv2d is an engine plus the reshaping around it.
//
// Two layouts, both row-major:
//   rows:  X (n x in)  -> Y (n x out) = X W^T + b    a Linear's input, an im2row matrix
//   cols:  X (in x n)  -> Z (out x n) = W X + b      an im2col matrix (batch-contiguous, what SpMM wants)
// Every engine computes both (converting when it must) and says which one it prefers.
#pragma once

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/kernels/gemm.hpp"

namespace slimnet::nn::compressed {

enum class layout { rows, cols };

template <class Scalar>
class engine {
 public:
  virtual ~engine() = default;
  /// The format in a few words, e.g. "sparse SELL-16, 32-column blocks".
  virtual std::string format() const = 0;
  /// "Sparse", "Xnor", "Int8", "Codebook", "Dense": the prefix of the layer's kind().
  virtual std::string kind_prefix() const = 0;
  virtual index_t out_features() const = 0;
  virtual index_t in_features() const = 0;
  /// Bytes of the weights in this format (indices, codebooks, scales included; bias excluded).
  virtual std::size_t bytes() const = 0;
  virtual layout preferred() const = 0;
  /// Y (n x out) = X (n x in) W^T + b.
  virtual void apply_rows(const Scalar* x, index_t n, Scalar* y) = 0;
  /// Z (out x n) = W X (in x n) + b.
  virtual void apply_cols(const Scalar* x, index_t n, Scalar* z) = 0;
  /// The weights the engine multiplies by (out x in).
  virtual row_matrix<Scalar> effective_weights() const = 0;
  virtual std::unique_ptr<engine> clone() const = 0;
};

namespace detail {

/// dst (cols x rows) = src (rows x cols)^T, both row-major; 32 x 32 tiles keep both sides in cache.
template <class Scalar>
void transpose(const Scalar* src, index_t rows, index_t cols, Scalar* dst) {
  constexpr index_t tile = 32;
  for (index_t i0 = 0; i0 < rows; i0 += tile) {
    for (index_t j0 = 0; j0 < cols; j0 += tile) {
      const index_t i1 = std::min(rows, i0 + tile), j1 = std::min(cols, j0 + tile);
      for (index_t i = i0; i < i1; ++i)
        for (index_t j = j0; j < j1; ++j) dst[j * rows + i] = src[i * cols + j];
    }
  }
}

/// The engines keep an optional bias; these add it along the right axis.
template <class Scalar>
void add_bias_rows(const std::optional<column_vector<Scalar>>& bias, index_t n, index_t out, Scalar* y) {
  if (!bias) return;
  for (index_t i = 0; i < n; ++i)
    for (index_t o = 0; o < out; ++o) y[i * out + o] += (*bias)[o];
}
template <class Scalar>
void add_bias_cols(const std::optional<column_vector<Scalar>>& bias, index_t n, index_t out, Scalar* z) {
  if (!bias) return;
  for (index_t o = 0; o < out; ++o)
    for (index_t i = 0; i < n; ++i) z[o * n + i] += (*bias)[o];
}

template <class Scalar>
void check_bias(const char* fn, const std::optional<column_vector<Scalar>>& bias, index_t out) {
  if (bias && bias->size() != out) slimnet::detail::raise<shape_error>(fn, "{} biases for {} outputs", bias->size(), out);
}

}  // namespace detail

/// The uncompressed engine: W row-major, the dense GEMM. What a layer becomes when its format would
/// be slower than dense (the dense-or-sparse choice), with the mask or quantization baked in.
template <class Scalar>
class dense_engine : public engine<Scalar> {
 public:
  dense_engine(row_matrix<Scalar> w, std::optional<column_vector<Scalar>> bias) : w_(std::move(w)), bias_(std::move(bias)) {
    detail::check_bias("slimnet::nn::compressed::dense_engine", bias_, w_.rows());
  }
  std::string format() const override { return "dense"; }
  std::string kind_prefix() const override { return "Dense"; }
  index_t out_features() const override { return w_.rows(); }
  index_t in_features() const override { return w_.cols(); }
  std::size_t bytes() const override { return static_cast<std::size_t>(w_.size()) * sizeof(Scalar); }
  /// Columns: a convolution then runs exactly as nn::conv2d (im2col, W times the columns).
  layout preferred() const override { return layout::cols; }
  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    kernels::gemm<Scalar>(kernels::row_major(x, n, w_.cols()), kernels::row_major(w_.data(), w_.rows(), w_.cols()).transposed(),
                          kernels::row_major(y, n, w_.rows()));
    detail::add_bias_rows(bias_, n, w_.rows(), y);
  }
  void apply_cols(const Scalar* x, index_t n, Scalar* z) override {
    kernels::gemm<Scalar>(kernels::row_major(w_.data(), w_.rows(), w_.cols()), kernels::row_major(x, w_.cols(), n),
                          kernels::row_major(z, w_.rows(), n));
    detail::add_bias_cols(bias_, n, w_.rows(), z);
  }
  row_matrix<Scalar> effective_weights() const override { return w_; }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<dense_engine>(*this); }

 private:
  row_matrix<Scalar> w_;
  std::optional<column_vector<Scalar>> bias_;
};

}  // namespace slimnet::nn::compressed
