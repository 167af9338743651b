// slimnet::quant: fixed point <IL,FL> and limited-precision training, k-means / product / residual
// codebooks with storage accounting and fine-tuning, BinaryConnect, BNN and their packed-bit form.
#pragma once

#include "slimnet/quant/binary.hpp"
#include "slimnet/quant/codebook.hpp"
#include "slimnet/quant/codebook_training.hpp"
#include "slimnet/quant/fixed_point.hpp"
#include "slimnet/quant/fixed_point_training.hpp"
#include "slimnet/quant/int8_training.hpp"
#include "slimnet/quant/kmeans.hpp"
#include "slimnet/quant/packed.hpp"
#include "slimnet/quant/shift.hpp"
#include "slimnet/quant/support.hpp"
