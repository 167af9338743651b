// as_matrix views address the caller's storage: writes through the view land on the right elements.
#include <catch2/catch.hpp>

#include "slimnet/core.hpp"

using namespace slimnet;

TEST_CASE("as_matrix of Eigen dense objects is the object itself", "[core][view]") {
  Eigen::MatrixXf col(3, 4);
  col.setZero();
  as_matrix(col)(2, 1) = 5;
  CHECK(col(2, 1) == 5);
  row_matrix<float> row = row_matrix<float>::Zero(3, 4);
  Eigen::Map<row_matrix<float>> map(row.data(), 3, 4);
  as_matrix(map)(1, 3) = 7;
  CHECK(row(1, 3) == 7);
  // A Ref to a block has an outer stride: the view must follow it.
  Eigen::MatrixXf big = Eigen::MatrixXf::Zero(6, 6);
  Eigen::Ref<Eigen::MatrixXf> ref = big.block(1, 2, 3, 3);
  as_matrix(ref)(2, 2) = 9;
  CHECK(big(3, 4) == 9);
  CHECK(big.sum() == 9);
}

TEST_CASE("as_matrix views Eigen::Tensor of any rank as out_units x rest", "[core][view]") {
  Eigen::Tensor<float, 4, Eigen::RowMajor> rm(3, 2, 2, 2);
  rm.setZero();
  auto v = as_matrix(rm);
  CHECK(v.rows() == 3);
  CHECK(v.cols() == 8);
  v(1, 5) = 4;  // row-major: element [1, 1, 0, 1]
  CHECK(rm(1, 1, 0, 1) == 4);

  Eigen::Tensor<float, 4> cm(3, 2, 2, 2);  // ColMajor (Eigen's default)
  cm.setZero();
  auto c = as_matrix(cm);
  CHECK(c.rows() == 3);
  CHECK(c.cols() == 8);
  c.row(2).setConstant(1);  // row i = every element whose first index is i
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int d = 0; d < 2; ++d) {
        CHECK(cm(2, a, b, d) == 1);
        CHECK(cm(0, a, b, d) == 0);
      }
  Eigen::TensorMap<Eigen::Tensor<float, 2, Eigen::RowMajor>> tm(rm.data(), 3, 8);
  CHECK(as_matrix(tm)(1, 5) == 4);
  Eigen::Tensor<double, 1> r1(5);
  r1.setConstant(2);
  CHECK(as_matrix(r1).rows() == 5);
  CHECK(as_matrix(r1).cols() == 1);
  tensor<float> st({2, 3, 4});
  CHECK(as_matrix(st).cols() == 12);
}
