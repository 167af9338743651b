// A fully connected layer whose weight is a dense basis times a sparse code matrix (SparseSep's
// factored FC layer): W (out x in) = C (out x k, sparse) * B (k x in, dense), so
//   y = x W^T + b = (x B^T) C^T + b:   first k dense projections, then a sparse product.
// The k rows of B are the dictionary atoms (over the layer's inputs); row o of C codes output
// unit o's weight vector with a few atoms. C is stored in CSR form: its nonzero values are the
// trainable parameter "codes" (so parameter_count() counts nonzeros, not out * k), the row
// pointers and column indices are fixed structure. Training (fine-tuning) keeps the support:
// only stored entries receive gradients, so no optimizer step can make C denser.
// backward:  dZ = dY C,  dC(o, c) = dY(:, o) . Z(:, c) on the support,  dB = dZ^T X,  dX = dZ B.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/eigen.hpp"

#include <Eigen/SparseCore>

#include "slimnet/core/error.hpp"
#include "slimnet/factorize/sparse_coding.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::factorize {

template <class Scalar>
class sparse_coded_linear : public nn::cloneable<sparse_coded_linear<Scalar>, Scalar> {
 public:
  using storage_index = std::int32_t;

  /// From a learned factorisation of W^T (in x out) = D (in x k) X (k x out): basis B = D^T,
  /// codes C = X^T keeping X's exact zeros. `bias` (length out) is copied when given.
  /// Throws shape_error when D and X do not chain or the bias has the wrong length.
  sparse_coded_linear(const matrix<Scalar>& dictionary, const matrix<Scalar>& codes, const Scalar* bias = nullptr)
      : basis_("basis", {dictionary.cols(), dictionary.rows()}), codes_("codes", {0}) {
    constexpr const char* fn = "slimnet::factorize::sparse_coded_linear";
    if (dictionary.rows() < 1 || dictionary.cols() < 1 || codes.rows() != dictionary.cols() || codes.cols() < 1) {
      slimnet::detail::raise<shape_error>(fn, "dictionary {} x {} and codes {} x {} do not chain (in x k and k x out, all >= 1)",
                                          dictionary.rows(), dictionary.cols(), codes.rows(), codes.cols());
    }
    const index_t k = dictionary.cols(), in = dictionary.rows(), out = codes.cols();
    Eigen::Map<row_matrix<Scalar>>(basis_.value().data(), k, in) = dictionary.transpose();
    row_ptr_.assign(static_cast<std::size_t>(out + 1), 0);
    std::vector<Scalar> values;
    for (index_t o = 0; o < out; ++o) {
      for (index_t c = 0; c < k; ++c) {
        if (codes(c, o) != Scalar(0)) {
          values.push_back(codes(c, o));
          col_idx_.push_back(static_cast<storage_index>(c));
        }
      }
      row_ptr_[static_cast<std::size_t>(o + 1)] = static_cast<storage_index>(values.size());
    }
    tensor<Scalar> v(shape_t{static_cast<index_t>(values.size())});
    for (std::size_t i = 0; i < values.size(); ++i) v[static_cast<index_t>(i)] = values[i];
    codes_.assign(std::move(v));
    out_ = out;
    if (bias != nullptr) {
      bias_.emplace("bias", shape_t{out});
      for (index_t o = 0; o < out; ++o) bias_->value()[o] = bias[o];
    }
  }

  std::string kind() const override { return "SparseCodedLinear"; }
  std::string describe() const override {
    return fmt::format("SparseCodedLinear({}, {}, basis={}, code_nonzeros={} (<= {} per output){})", in_features(), out_features(),
                       basis_size(), code_nonzeros(), max_code_nonzeros(), bias_ ? "" : ", bias=false");
  }
  index_t in_features() const { return basis_.value().dim(1); }
  index_t out_features() const { return out_; }
  index_t basis_size() const { return basis_.value().dim(0); }
  index_t code_nonzeros() const { return codes_.size(); }
  /// The largest number of atoms any output unit uses.
  index_t max_code_nonzeros() const {
    index_t most = 0;
    for (std::size_t o = 0; o + 1 < row_ptr_.size(); ++o) most = std::max<index_t>(most, row_ptr_[o + 1] - row_ptr_[o]);
    return most;
  }
  /// Weights stored (basis plus code nonzeros, biases excluded): the count the compression tables use.
  index_t weight_count() const { return basis_.size() + codes_.size(); }

  nn::parameter<Scalar>& basis() { return basis_; }
  nn::parameter<Scalar>& codes() { return codes_; }
  nn::parameter<Scalar>* bias() { return bias_ ? &*bias_ : nullptr; }
  const std::vector<storage_index>& code_row_pointers() const { return row_ptr_; }
  const std::vector<storage_index>& code_columns() const { return col_idx_; }

  /// The equivalent dense weight W = C B (out x in), PyTorch's layout.
  row_matrix<Scalar> dense_weight() const {
    const auto B = Eigen::Map<const row_matrix<Scalar>>(basis_.value().data(), basis_size(), in_features());
    return code_matrix(codes_.value().data()) * B;
  }

  shape_t output_shape(const shape_t& input) const override {
    if (input.size() != 2 || input[1] != in_features()) {
      slimnet::detail::raise<shape_error>("slimnet::factorize::sparse_coded_linear::forward", "input of shape {} does not fit {}: expected (N, {})",
                                          shape_string(input), describe(), in_features());
    }
    return {input[0], out_features()};
  }

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context& ctx) override {
    y.resize(output_shape(x.shape()));
    const index_t n = x.dim(0), in = in_features(), k = basis_size();
    const auto& b = basis_.forward_value(ctx);
    const auto& c = codes_.forward_value(ctx);
    z_.resize({n, k});
    kernels::gemm<Scalar>(kernels::row_major(x.data(), n, in), kernels::row_major(b.data(), k, in).transposed(),
                          kernels::row_major(z_.data(), n, k));  // Z = X B^T
    auto Y = y.matrix();
    Y.noalias() = z_.matrix() * code_matrix(c.data()).transpose();  // Y = Z C^T, sparse
    if (bias_) Y.rowwise() += bias_->forward_value(ctx).flat().transpose();
  }

  void backward(const tensor<Scalar>& x, const tensor<Scalar>& y, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    this->check_backward_shapes(x, y, dy);
    const index_t n = x.dim(0), in = in_features(), k = basis_size();
    const auto dY = dy.matrix();
    const auto Z = z_.matrix();
    // dC on the support only: the stored entries are the parameters.
    auto& dc = codes_.grad();
    for (index_t o = 0; o < out_; ++o) {
      for (storage_index p = row_ptr_[static_cast<std::size_t>(o)]; p < row_ptr_[static_cast<std::size_t>(o + 1)]; ++p) {
        dc[p] += dY.col(o).dot(Z.col(col_idx_[static_cast<std::size_t>(p)]));
      }
    }
    if (bias_) bias_->grad().flat() += dY.colwise().sum().transpose();
    dz_.resize({n, k});
    dz_.matrix().noalias() = dY * code_matrix(codes_.used_value().data());  // dZ = dY C
    const auto dZ = kernels::row_major<const Scalar>(dz_.data(), n, k);
    kernels::gemm<Scalar>(dZ.transposed(), kernels::row_major(x.data(), n, in), kernels::row_major(basis_.grad().data(), k, in),
                          Scalar(1), Scalar(1));  // dB += dZ^T X
    if (dx != nullptr) {
      dx->resize(x.shape());
      kernels::gemm<Scalar>(dZ, kernels::row_major(basis_.used_value().data(), k, in), kernels::row_major(dx->data(), n, in));
    }
  }

  void visit_parameters(const typename nn::layer<Scalar>::parameter_visitor& visit) override {
    visit(basis_);
    visit(codes_);
    if (bias_) visit(*bias_);
  }
  void visit_parameters(const typename nn::layer<Scalar>::const_parameter_visitor& visit) const override {
    visit(basis_);
    visit(codes_);
    if (bias_) visit(*bias_);
  }

 private:
  using code_map = Eigen::Map<const Eigen::SparseMatrix<Scalar, Eigen::RowMajor, storage_index>>;
  code_map code_matrix(const Scalar* values) const {
    return code_map(out_, basis_size(), static_cast<storage_index>(col_idx_.size()), row_ptr_.data(), col_idx_.data(), values);
  }

  nn::parameter<Scalar> basis_;  // (k, in)
  nn::parameter<Scalar> codes_;  // (nnz): values of C in CSR order
  std::optional<nn::parameter<Scalar>> bias_;
  std::vector<storage_index> row_ptr_;  // out + 1
  std::vector<storage_index> col_idx_;  // nnz
  index_t out_ = 0;
  tensor<Scalar> z_, dz_;  // Z = X B^T of the last forward pass; dZ
};

}  // namespace slimnet::factorize
