// What the dispatch tests share: the instruction-set families this CPU runs (each test forces them
// in turn with set_isa), a guard that undoes set_isa when a test ends, and the family a kernel with
// AVX2 and AVX-512 paths takes under each.
#pragma once

#include <vector>

#include "slimnet/kernels/cpu_features.hpp"

namespace slimnet::testing {

/// The families this CPU runs, portable first.
inline std::vector<kernels::isa> isa_families() {
  std::vector<kernels::isa> out;
  for (kernels::isa i : {kernels::isa::portable, kernels::isa::avx2, kernels::isa::avx512, kernels::isa::neon})
    if (kernels::isa_supported(i)) out.push_back(i);
  return out;
}

/// Back to SLIMNET_ISA's or the best family when the test ends (passed or not).
struct isa_reset_guard {
  isa_reset_guard() = default;
  isa_reset_guard(const isa_reset_guard&) = delete;
  isa_reset_guard& operator=(const isa_reset_guard&) = delete;
  ~isa_reset_guard() { kernels::reset_isa(); }
};

/// The path of a kernel with AVX2 and AVX-512 paths (and no NEON one) under family `active`:
/// written out here rather than taken from kernels::x86_simd_path, so the tests check that choice.
inline kernels::isa x86_simd_expected(kernels::isa active) {
#if defined(SLIMNET_DISPATCH_X86)
  if (active == kernels::isa::avx2 || active == kernels::isa::avx512) return active;
#endif
  (void)active;
  return kernels::isa::portable;
}

}  // namespace slimnet::testing
