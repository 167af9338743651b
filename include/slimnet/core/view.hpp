// Uniform 2-d views of the containers users hand to compression helpers: Eigen Matrix, Map,
// Ref, Block, Eigen::Tensor / TensorMap of any rank, and slimnet::tensor. Every view is
// "out_units x rest" (PyTorch's dim 0 against everything else) and addresses the caller's
// storage directly: no copy, and strides and storage order are respected, so a mask computed
// on the view lands on the right weights.
#pragma once

#include <type_traits>

#include "slimnet/core/eigen.hpp"
#include <unsupported/Eigen/CXX11/Tensor>

#include "slimnet/core/tensor.hpp"

namespace slimnet {
namespace detail {

template <class T>
struct is_eigen_tensor : std::false_type {};
template <class S, int R, int O, class I>
struct is_eigen_tensor<Eigen::Tensor<S, R, O, I>> : std::true_type {};
template <class S, int R, int O, class I, int MapOptions, template <class> class MakePointer>
struct is_eigen_tensor<Eigen::TensorMap<Eigen::Tensor<S, R, O, I>, MapOptions, MakePointer>> : std::true_type {};
template <class S, int R, int O, class I, int MapOptions, template <class> class MakePointer>
struct is_eigen_tensor<Eigen::TensorMap<Eigen::Tensor<const S, R, O, I>, MapOptions, MakePointer>> : std::true_type {};

template <class T>
struct is_slimnet_tensor : std::false_type {};
template <class S>
struct is_slimnet_tensor<tensor<S>> : std::true_type {};

template <class T>
constexpr bool is_eigen_dense_v = std::is_base_of_v<Eigen::DenseBase<std::decay_t<T>>, std::decay_t<T>>;

}  // namespace detail

/// View of `x` as out_units x rest.
/// - Eigen dense objects are returned as they are (a reference): they already are 2-d.
/// - Eigen::Tensor / TensorMap of rank R: RowMajor tensors become a RowMajor Map
///   (dim0, product of the rest); ColMajor ones a ColMajor Map with the same row meaning
///   (row i = all elements whose first index is i); rank 1 is viewed as (n, 1).
/// - slimnet::tensor: its row-major matrix() view.
template <class T>
decltype(auto) as_matrix(T& x) {
  using U = std::remove_const_t<T>;
  if constexpr (detail::is_eigen_dense_v<U>) {
    return (x);
  } else if constexpr (detail::is_slimnet_tensor<U>::value) {
    return x.matrix();
  } else if constexpr (detail::is_eigen_tensor<U>::value) {
    using raw_scalar = std::remove_reference_t<decltype(*x.data())>;
    constexpr int layout = static_cast<int>(U::Layout) == static_cast<int>(Eigen::RowMajor) ? Eigen::RowMajor : Eigen::ColMajor;
    const Eigen::Index rows = U::NumDimensions == 0 ? 1 : x.dimension(0);
    const Eigen::Index cols = rows == 0 ? 0 : x.size() / rows;
    using plain = Eigen::Matrix<std::remove_const_t<raw_scalar>, Eigen::Dynamic, Eigen::Dynamic, layout>;
    using mapped = std::conditional_t<std::is_const_v<raw_scalar> || std::is_const_v<T>, const plain, plain>;
    return Eigen::Map<mapped>(x.data(), rows, cols);
  } else {
    static_assert(detail::is_eigen_dense_v<U>,
                  "slimnet::as_matrix accepts Eigen Matrix/Array/Map/Ref/Block, Eigen::Tensor/TensorMap and "
                  "slimnet::tensor.");
  }
}

}  // namespace slimnet
