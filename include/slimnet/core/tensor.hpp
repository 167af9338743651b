// slimnet::tensor: a contiguous, row-major (C order, PyTorch order) n-d array on Eigen storage.
// Layers pass tensors; numerics happen on Eigen::Map views of them (matrix(), flat()).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "slimnet/core/eigen.hpp"
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slimnet/core/checked.hpp"
#include "slimnet/core/error.hpp"

namespace slimnet {

using index_t = Eigen::Index;
using shape_t = std::vector<index_t>;

template <class Scalar>
using row_matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Not `vector`: under `using namespace std; using namespace slimnet;` that name made every
/// unqualified vector<T> ambiguous.
template <class Scalar>
using column_vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Number of elements of a shape (1 for rank 0). Throws shape_error, naming `function` and the
/// shape as written, when a dimension is negative or the product does not fit index_t (a wrapped
/// product would let a huge shape pass a size check and then index past its buffer).
inline index_t shape_size(const shape_t& shape, const char* function = "slimnet::shape_size") {
  return checked_product<shape_error, index_t>(shape, function, "shape");
}

inline std::string shape_string(const shape_t& shape) { return fmt::format("({})", fmt::join(shape, ", ")); }

template <class Scalar>
class tensor {
 public:
  using scalar_type = Scalar;
  using matrix_map = Eigen::Map<row_matrix<Scalar>, Eigen::Aligned16>;
  using const_matrix_map = Eigen::Map<const row_matrix<Scalar>, Eigen::Aligned16>;
  using flat_map = Eigen::Map<column_vector<Scalar>, Eigen::Aligned16>;
  using const_flat_map = Eigen::Map<const column_vector<Scalar>, Eigen::Aligned16>;

  tensor() = default;
  explicit tensor(shape_t shape) { resize(std::move(shape)); }
  tensor(std::initializer_list<index_t> shape) : tensor(shape_t(shape)) {}
  tensor(shape_t shape, Scalar fill) : tensor(std::move(shape)) { data_.setConstant(fill); }

  /// Changes the shape; keeps the storage (and its values) when the size is unchanged.
  void resize(shape_t shape) {
    const index_t n = shape_size(shape, "slimnet::tensor::resize");
    if (n != data_.size()) data_.resize(n);
    shape_ = std::move(shape);
  }
  void resize(std::initializer_list<index_t> shape) { resize(shape_t(shape)); }

  /// Same as resize, named for the case where only the view changes (size must match).
  void reshape(shape_t shape) {
    if (shape_size(shape, "slimnet::tensor::reshape") != size()) {
      slimnet::detail::raise<shape_error>("slimnet::tensor::reshape", "cannot view {} elements of shape {} as {}", size(),
                                 shape_string(shape_), shape_string(shape));
    }
    shape_ = std::move(shape);
  }

  const shape_t& shape() const { return shape_; }
  index_t rank() const { return static_cast<index_t>(shape_.size()); }
  index_t dim(index_t i) const { return shape_.at(static_cast<std::size_t>(i)); }
  index_t size() const { return data_.size(); }
  bool empty() const { return data_.size() == 0; }

  Scalar* data() { return data_.data(); }
  const Scalar* data() const { return data_.data(); }
  Scalar& operator[](index_t i) { return data_[i]; }
  const Scalar& operator[](index_t i) const { return data_[i]; }

  /// All elements as one column vector.
  flat_map flat() { return flat_map(data_.data(), data_.size()); }
  const_flat_map flat() const { return const_flat_map(data_.data(), data_.size()); }

  /// The tensor viewed as dim(0) x (product of the other dims), row-major.
  /// This is the "out_units x rest" view every compression method works on.
  matrix_map matrix() { return matrix_map(data_.data(), rows(), cols()); }
  const_matrix_map matrix() const { return const_matrix_map(data_.data(), rows(), cols()); }

  /// Any row-major 2-d view with rows * cols == size().
  matrix_map matrix(index_t rows, index_t cols) {
    check_view(rows, cols);
    return matrix_map(data_.data(), rows, cols);
  }
  const_matrix_map matrix(index_t rows, index_t cols) const {
    check_view(rows, cols);
    return const_matrix_map(data_.data(), rows, cols);
  }

  void set_zero() { data_.setZero(); }
  void fill(Scalar v) { data_.setConstant(v); }

  /// Element-wise copy converting the scalar type.
  template <class Other>
  tensor<Other> cast() const {
    tensor<Other> out(shape_);
    out.flat() = flat().template cast<Other>();
    return out;
  }

  bool same_shape(const tensor& other) const { return shape_ == other.shape_; }

 private:
  index_t rows() const { return shape_.empty() ? 1 : shape_[0]; }
  index_t cols() const { return rows() == 0 ? 0 : size() / rows(); }
  void check_view(index_t r, index_t c) const {
    index_t n = 0;
    if (r < 0 || c < 0 || mul_overflows(r, c, n) || n != size()) {
      slimnet::detail::raise<shape_error>("slimnet::tensor::matrix", "cannot view {} elements of shape {} as {} x {}", size(),
                                 shape_string(shape_), r, c);
    }
  }

  shape_t shape_{0};
  column_vector<Scalar> data_;
};

/// Throws shape_error unless `t` has exactly `expected` shape.
template <class Scalar>
void require_shape(const tensor<Scalar>& t, const shape_t& expected, const char* function, const char* what) {
  if (t.shape() != expected) {
    slimnet::detail::raise<shape_error>(function, "{} has shape {}, expected {}", what, shape_string(t.shape()),
                               shape_string(expected));
  }
}

}  // namespace slimnet
