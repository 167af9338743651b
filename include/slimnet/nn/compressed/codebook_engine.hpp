// The codebook engine of weight-shared layers (k-means / Deep Compression): k-bit indices into a
// table of at most 2^k centroids (kernels/codebook_gemm.hpp). The weights are represented exactly
// (the centroids are the layer's distinct values), so outputs equal the float layer within float
// rounding: |error| <= (in + 1) eps sum_k |w_jk x_k|.
#pragma once

#include "slimnet/kernels/codebook_gemm.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class codebook_engine : public engine<Scalar> {
 public:
  /// From weights with at most 2^bits distinct values; bits = 0 takes the fewest bits that hold them.
  codebook_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias, int bits = 0, int threads = 1)
      : bias_(std::move(bias)), threads_(threads) {
    detail::check_bias("slimnet::nn::compressed::codebook_engine", bias_, w.rows());
    if (bits <= 0) {
      std::vector<Scalar> v(w.data(), w.data() + w.size());
      std::sort(v.begin(), v.end());
      const auto distinct = static_cast<std::size_t>(std::unique(v.begin(), v.end()) - v.begin());
      bits = 1;
      while (bits < 8 && (std::size_t{1} << bits) < distinct) ++bits;
    }
    matrix_ = kernels::codebook_matrix<Scalar>::from_dense(kernels::row_major<const Scalar>(w.data(), w.rows(), w.cols()), bits);
  }

  std::string format() const override {
    return fmt::format("{}-bit indices, {} centroids", matrix_.bits(), matrix_.centroids().size());
  }
  std::string kind_prefix() const override { return "Codebook"; }
  index_t out_features() const override { return matrix_.rows(); }
  index_t in_features() const override { return matrix_.cols(); }
  std::size_t bytes() const override { return matrix_.bytes(); }
  layout preferred() const override { return layout::cols; }
  const kernels::codebook_matrix<Scalar>& matrix() const { return matrix_; }

  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    const index_t in = matrix_.cols(), out = matrix_.rows();
    if (n <= 2) {  // one GEMV per sample: decoding happens in registers
      for (index_t i = 0; i < n; ++i) kernels::gemv_codebook(matrix_.ref(), x + i * in, y + i * out, params());
      return;
    }
    kernels::gemm_codebook(matrix_.ref(), kernels::row_major(x, n, in).transposed(), kernels::row_major(y, n, out).transposed(), params());
  }
  void apply_cols(const Scalar* x, index_t n, Scalar* z) override {
    if (n == 1) {
      kernels::gemv_codebook(matrix_.ref(), x, z, params());
      return;
    }
    kernels::gemm_codebook(matrix_.ref(), kernels::row_major(x, matrix_.cols(), n), kernels::row_major(z, matrix_.rows(), n), params());
  }

  row_matrix<Scalar> effective_weights() const override {
    row_matrix<Scalar> w(matrix_.rows(), matrix_.cols());
    for (index_t i = 0; i < w.rows(); ++i)
      for (index_t j = 0; j < w.cols(); ++j) w(i, j) = matrix_.ref().value(i, j);
    return w;
  }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<codebook_engine>(*this); }

 private:
  kernels::codebook_params<Scalar> params() const {
    kernels::codebook_params<Scalar> p;
    p.bias = bias_ ? bias_->data() : nullptr;
    p.threads = threads_;
    return p;
  }

  std::optional<column_vector<Scalar>> bias_;
  int threads_;
  kernels::codebook_matrix<Scalar> matrix_;
};

}  // namespace slimnet::nn::compressed
