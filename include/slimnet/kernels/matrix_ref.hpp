// The strided matrix view every kernel takes (matrix_ref) and its constructors, in a header of its
// own so that a kernel needing only the view does not pull in the AVX-512 GEMM (kernels/gemm.hpp).
#pragma once

#include <type_traits>

#include "slimnet/core/eigen.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::kernels {

/// Non-owning strided matrix view: element (i, j) is data[i * row_stride + j * col_stride].
template <class T>
struct matrix_ref {
  T* data = nullptr;
  index_t rows = 0, cols = 0;
  index_t row_stride = 0, col_stride = 1;

  T& operator()(index_t i, index_t j) const { return data[i * row_stride + j * col_stride]; }
  matrix_ref transposed() const { return {data, cols, rows, col_stride, row_stride}; }
  /// A mutable view converts to a read-only one.
  template <class U = T, class = std::enable_if_t<!std::is_const_v<U>>>
  operator matrix_ref<const U>() const {
    return {data, rows, cols, row_stride, col_stride};
  }
};

/// Row-major view of contiguous storage.
template <class T>
matrix_ref<T> row_major(T* data, index_t rows, index_t cols) {
  return {data, rows, cols, cols, 1};
}
/// View of any Eigen dense object with direct access (Matrix, Map, Ref, Block), either storage order.
template <class Derived>
auto view(Eigen::DenseBase<Derived>& m) {
  using T = std::remove_reference_t<decltype(*m.derived().data())>;
  const bool row_major_storage = Derived::IsRowMajor;
  return matrix_ref<T>{m.derived().data(), m.rows(), m.cols(), row_major_storage ? m.outerStride() : m.innerStride(),
                       row_major_storage ? m.innerStride() : m.outerStride()};
}
template <class Derived>
auto view(const Eigen::DenseBase<Derived>& m) {
  using T = const std::remove_const_t<std::remove_reference_t<decltype(*m.derived().data())>>;
  const bool row_major_storage = Derived::IsRowMajor;
  return matrix_ref<T>{m.derived().data(), m.rows(), m.cols(), row_major_storage ? m.outerStride() : m.innerStride(),
                       row_major_storage ? m.innerStride() : m.outerStride()};
}

}  // namespace slimnet::kernels
