// Sparse kernels: CSR (any batch), column-blocked CSR (batch >= 2), sliced ELL (batch 1), CSC
// skipping zero inputs (batch 1, activation sparsity), the
// direct sparse convolution with its fused epilogue, and the dense-or-sparse choice made once per layer.
#pragma once

#include "slimnet/kernels/sparse_blocked.hpp"
#include "slimnet/kernels/sparse_choice.hpp"
#include "slimnet/kernels/sparse_conv.hpp"
#include "slimnet/kernels/sparse_csc.hpp"
#include "slimnet/kernels/sparse_csr.hpp"
#include "slimnet/kernels/sparse_sell.hpp"
