// slimnet::kernels: the compute kernels under the layers, each with a reference that defines it.
#pragma once

#include "slimnet/kernels/gemm.hpp"
// Compressed formats: sparse (CSR, column-blocked CSR, SELL-16, the dense-or-sparse choice),
// bit-packed XNOR/popcount, int8 / int16, codebook; dispatch.hpp says which paths are compiled in.
#include "slimnet/kernels/binary_gemm.hpp"
#include "slimnet/kernels/bitpack.hpp"
#include "slimnet/kernels/codebook_gemm.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/dispatch.hpp"
#include "slimnet/kernels/int8_gemm.hpp"
#include "slimnet/kernels/sparse.hpp"
