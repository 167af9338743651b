// GEMM shapes shared by the low-precision kernel benchmarks (binary_vs_dense, int8_vs_dense):
// C (M x N) = A (M x K) W^T with W (N x K) as a layer stores it. Convolutions appear through
// im2row: M = output positions (times the batch), K = in_c * kh * kw, N = out_c.
#pragma once

#include <string>
#include <vector>

#include "slimnet/core/tensor.hpp"

namespace slimnet::bench {

struct gemm_shape {
  std::string name;
  index_t m, k, n;
};

/// 1024^3 and the LeNet-5, LeNet-300-100 and VGG-16 (224 px) layers as GEMMs. The first three are
/// the ones a --quick run keeps.
inline std::vector<gemm_shape> layer_gemm_shapes(bool quick = false) {
  std::vector<gemm_shape> v = {{"square 1024^3", 1024, 1024, 1024},
                               {"LeNet-5 conv2 (b64)", 64 * 8 * 8, 20 * 25, 50},
                               {"LeNet-5 fc1 (b64)", 64, 800, 500},
                               {"LeNet-300 fc1 (b64)", 64, 784, 300},
                               {"VGG-16 conv3_2 (b1)", 56 * 56, 256 * 9, 256},
                               {"VGG-16 conv4_2 (b1)", 28 * 28, 512 * 9, 512},
                               {"VGG-16 conv5_2 (b1)", 14 * 14, 512 * 9, 512},
                               {"VGG-16 fc7 (b64)", 64, 4096, 4096}};
  if (quick) v.resize(3);
  return v;
}

}  // namespace slimnet::bench
