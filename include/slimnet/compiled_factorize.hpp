// The Eigen decompositions of factorize/ in slimnet's optional compiled mode (see compiled.hpp, which
// includes this list): the divide-and-conquer SVD (Eigen::BDCSVD, its small-problem JacobiSVD) and the
// symmetric eigensolver, for float and double, compiled once into slimnet::compiled
// (src/compiled_factorize.cpp) instead of in every translation unit that calls
// factorize::separate_conv2d or factorize::learn_dictionary.
//
// Why: BDCSVD is a large template (bidiagonalisation, the secular-equation solver and deflation of Gu
// and Eisenstat's divide and conquer, "A divide-and-conquer algorithm for the bidiagonal SVD", SIAM
// J. Matrix Anal. Appl. 16(1), 1995); a unit that computes it for float and double spends about
// 94 s of CPU at -O1 -march=native on it alone (GCC 12; 2.4 s with the declarations below), most
// of the factorize tests' and the SparseSep example's compile. Its own source file, so that it
// compiles beside src/compiled.cpp.
//
// Every entry is a whole class: its non-inline members are then compiled here only (Eigen defines
// the heavy ones, compute, divide, the secular-equation solver, outside the class body).
#pragma once

#include "slimnet/core/eigen.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#ifndef SLIMNET_COMPILED_FACTORIZE_EXTERN
#define SLIMNET_COMPILED_FACTORIZE_EXTERN extern
#endif

SLIMNET_COMPILED_FACTORIZE_EXTERN template class Eigen::BDCSVD<Eigen::MatrixXf>;
SLIMNET_COMPILED_FACTORIZE_EXTERN template class Eigen::BDCSVD<Eigen::MatrixXd>;
SLIMNET_COMPILED_FACTORIZE_EXTERN template class Eigen::JacobiSVD<Eigen::MatrixXf>;
SLIMNET_COMPILED_FACTORIZE_EXTERN template class Eigen::JacobiSVD<Eigen::MatrixXd>;
SLIMNET_COMPILED_FACTORIZE_EXTERN template class Eigen::SelfAdjointEigenSolver<Eigen::MatrixXf>;
SLIMNET_COMPILED_FACTORIZE_EXTERN template class Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>;
