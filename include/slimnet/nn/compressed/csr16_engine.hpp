// The compact sparse engine: CSR with 16-bit column indices (4-byte value + 2-byte index per
// nonzero, plus 4 bytes per row), the form whose memory stays close to nonzeros x (value + index)
// at any density (SELL-16 pads slices to their longest row: 62 bytes per nonzero at 0.5%).
// A Conv2d whose weights are in this engine runs the direct sparse convolution
// (kernels/sparse_conv.hpp): the column index of a filter's weight is its tap (c kh + ki) kw + kj,
// so the same arrays serve the im2col product and the direct kernel.
// Results equal the masked dense layer within float rounding (same products, another order).
#pragma once

#include "slimnet/kernels/sparse_conv.hpp"
#include "slimnet/kernels/sparse_csr.hpp"
#include "slimnet/nn/compressed/engine.hpp"

namespace slimnet::nn::compressed {

template <class Scalar>
class csr16_engine : public engine<Scalar> {
 public:
  /// From the (masked) weights w (out x in, in <= 65536). For a convolution, in = in_channels kh kw;
  /// a Linear passes in_channels = in and a 1 x 1 kernel.
  csr16_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias, index_t in_channels = 0,
               index_t kernel_h = 1, index_t kernel_w = 1)
      : bias_(std::move(bias)) {
    detail::check_bias("slimnet::nn::compressed::csr16_engine", bias_, w.rows());
    if (in_channels == 0) in_channels = w.cols();
    filters_ = kernels::sparse_filters<Scalar>::from_dense(kernels::row_major<const Scalar>(w.data(), w.rows(), w.cols()), in_channels,
                                                            kernel_h, kernel_w);
  }

  std::string format() const override {
    return fmt::format("CSR with 16-bit indices, {:.1f}% nonzeros, {:.1f} bytes per nonzero{}", 100 * density(),
                       nnz() ? static_cast<double>(bytes()) / static_cast<double>(nnz()) : 0.0,
                       layout_ == kernels::conv_batch_layout::image_at_a_time ? ", one image at a time" : "");
  }
  /// How the direct convolution runs a batch of several images (kernels::conv_batch_layout; set by
  /// compressed_conv2d::choose_batch_layout from a timing, batch-innermost until then).
  kernels::conv_batch_layout batch_layout() const { return layout_; }
  void set_batch_layout(kernels::conv_batch_layout l) { layout_ = l; }
  std::string kind_prefix() const override { return "Sparse"; }
  index_t out_features() const override { return filters_.out_channels(); }
  index_t in_features() const override { return filters_.in_channels() * filters_.kernel_h() * filters_.kernel_w(); }
  std::size_t bytes() const override { return filters_.bytes(); }
  index_t nnz() const { return filters_.nnz(); }
  double density() const {
    const double all = static_cast<double>(out_features()) * static_cast<double>(in_features());
    return all == 0 ? 0.0 : static_cast<double>(nnz()) / all;
  }
  /// Columns: a strided convolution multiplies its im2col matrix (a stride-1 one runs direct).
  layout preferred() const override { return layout::cols; }
  const kernels::sparse_filters<Scalar>& filters() const { return filters_; }
  const Scalar* bias_data() const { return bias_ ? bias_->data() : nullptr; }

  void apply_rows(const Scalar* x, index_t n, Scalar* y) override {
    const auto a = csr();
    if (n == 1) {
      spmv(x, y);
      return;
    }
    xt_.resize(static_cast<std::size_t>(a.cols * n));
    zt_.resize(static_cast<std::size_t>(a.rows * n));
    detail::transpose(x, n, a.cols, xt_.data());
    apply_cols(xt_.data(), n, zt_.data());
    detail::transpose(zt_.data(), a.rows, n, y);
  }
  void apply_cols(const Scalar* x, index_t n, Scalar* z) override {
    const auto a = csr();
    if (n == 1) {
      spmv(x, z);
      return;
    }
    kernels::spmm_csr(a, kernels::row_major<const Scalar>(x, a.cols, n), kernels::row_major(z, a.rows, n), params());
  }

  row_matrix<Scalar> effective_weights() const override {
    const auto a = csr();
    row_matrix<Scalar> w = row_matrix<Scalar>::Zero(a.rows, a.cols);
    for (index_t i = 0; i < a.rows; ++i)
      for (auto p = a.row_offsets[i]; p < a.row_offsets[i + 1]; ++p) w(i, a.col_indices[p]) = a.values[p];
    return w;
  }
  std::unique_ptr<engine<Scalar>> clone() const override { return std::make_unique<csr16_engine>(*this); }

 private:
  kernels::csr_ref<Scalar, std::uint16_t> csr() const {
    const auto f = filters_.ref();
    return {f.out_channels, f.taps_per_filter(), f.row_offsets, f.taps, f.values};
  }
  void spmv(const Scalar* x, Scalar* y) { kernels::spmv_csr_compact(csr(), x, y, products_, params()); }
  kernels::sparse_params<Scalar> params() const {
    kernels::sparse_params<Scalar> p;
    p.bias = bias_data();
    return p;
  }

  kernels::sparse_filters<Scalar> filters_;
  std::optional<column_vector<Scalar>> bias_;
  kernels::conv_batch_layout layout_ = kernels::conv_batch_layout::batch_innermost;
  std::vector<Scalar> xt_, zt_;  // transposes (scratch)
  std::vector<Scalar> products_;  // spmv_csr_products' scratch
};

}  // namespace slimnet::nn::compressed
