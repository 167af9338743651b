// Which instruction-set path each kernel family actually ran during a benchmark, from the
// per-family call counters (kernels/*: *_path_calls), so a table of timings says what it timed:
// e.g. "gemm avx2 4210, csr avx2 1302, vector_math avx2 96, conv1_sign portable 42".
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "slimnet/kernels/binary_gemm.hpp"
#include "slimnet/kernels/codebook_gemm.hpp"
#include "slimnet/kernels/conv1_sign.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/kernels/int8_conv.hpp"
#include "slimnet/kernels/int8_gemm.hpp"
#include "slimnet/kernels/sparse_conv.hpp"
#include "slimnet/kernels/sparse_csc.hpp"
#include "slimnet/kernels/sparse_csr.hpp"
#include "slimnet/kernels/sparse_sell.hpp"
#include "slimnet/kernels/vector_math.hpp"

namespace slimnet::bench {

/// "family path calls" for every family and path with calls so far, in the order of the list.
inline std::string kernel_paths_ran() {
  using slimnet::kernels::isa;
  struct family {
    const char* name;
    std::uint64_t (*calls)(isa);
  };
  const family families[] = {{"gemm", slimnet::kernels::gemm_path_calls},
                             {"gemm_xnor", slimnet::kernels::gemm_xnor_path_calls},
                             {"gemm_int", slimnet::kernels::gemm_int_path_calls},
                             {"csr", slimnet::kernels::csr_path_calls},
                             {"sell", slimnet::kernels::sell_path_calls},
                             {"csc", slimnet::kernels::csc_path_calls},
                             {"sparse_conv", slimnet::kernels::sparse_conv_path_calls},
                             {"codebook", slimnet::kernels::codebook_path_calls},
                             {"int8_conv", slimnet::kernels::int8_conv_path_calls},
                             {"conv1_sign", slimnet::kernels::conv1_sign_path_calls},
                             {"vector_math", slimnet::kernels::vector_math_path_calls}};
  std::string out;
  for (const family& f : families) {
    for (isa path : {isa::avx512, isa::avx2, isa::neon, isa::portable}) {
      const std::uint64_t n = f.calls(path);
      if (n == 0) continue;
      out += fmt::format("{}{} {} {}", out.empty() ? "" : ", ", f.name, slimnet::kernels::isa_name(path), n);
    }
  }
  return out.empty() ? "none" : out;
}

}  // namespace slimnet::bench
