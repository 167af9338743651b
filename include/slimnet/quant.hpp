// slimnet::quant: fixed point <IL,FL> and limited-precision training, k-means / product / residual
// codebooks with storage accounting and fine-tuning, BinaryConnect and BNN training (their packed-bit
// inference form: nn::compressed, format::xnor and compress_bnn).
#pragma once

#include "slimnet/quant/binary.hpp"
#include "slimnet/quant/codebook.hpp"
#include "slimnet/quant/codebook_training.hpp"
#include "slimnet/quant/fixed_point.hpp"
#include "slimnet/quant/fixed_point_training.hpp"
#include "slimnet/quant/int8_training.hpp"
#include "slimnet/quant/kmeans.hpp"
#include "slimnet/quant/shift.hpp"
#include "slimnet/quant/support.hpp"
