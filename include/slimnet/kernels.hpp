// slimnet::kernels: the compute kernels under the layers, each with a reference that defines it.
#pragma once

#include "slimnet/kernels/gemm.hpp"
