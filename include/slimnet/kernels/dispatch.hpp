// What the compressed-format kernels (sparse, binary, int8, codebook) share: which instruction-set
// paths are compiled in, how a caller forces the portable one, and the opt-in threads.
//
// The SIMD paths are compiled into every x86-64 build with function target attributes and chosen
// per call from kernels::active_isa() (cpu_features.hpp; each kernel family has a *_path() query
// and a *_path_calls() counter), so a program built with default flags runs the same kernels as
// one built with -march=native. compiled_kernel_paths() below only reports which instruction sets
// the program's own -m flags enabled. `kernel_path::portable` forces a call onto the portable C++
// path (tests compare both in one build); set_isa / SLIMNET_ISA pick a family for every call.
//
// Threads are opt-in: every params struct has `threads = 1`, so results are bitwise repeatable by
// default. With threads > 1 the work is split into contiguous ranges of output rows, each written by
// one thread, so results do not depend on the thread count either (no reduction across threads).
// The threads come from OpenMP when the program is compiled with -fopenmp (a pool: no start-up cost
// per call), from std::thread otherwise.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "slimnet/core/tensor.hpp"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define SLIMNET_KERNELS_AVX512 1
#if defined(__AVX512VPOPCNTDQ__)
#define SLIMNET_KERNELS_AVX512_POPCNT 1
#endif
#if defined(__AVX512VNNI__)
#define SLIMNET_KERNELS_AVX512_VNNI 1
#endif
#if defined(__AVX512VBMI__)
#define SLIMNET_KERNELS_AVX512_VBMI 1
#endif
#endif

namespace slimnet::kernels {

/// Which implementation a kernel runs. `automatic` takes the fastest one compiled in.
enum class kernel_path { automatic, portable };

/// The instruction sets the program's -m flags enabled (the dispatched kernels do not need them).
struct compiled_paths {
  bool avx512 = false;         ///< AVX-512 F/BW/VL/DQ: sparse, codebook
  bool avx512_popcnt = false;  ///< + VPOPCNTDQ: XNOR/popcount GEMM
  bool avx512_vnni = false;    ///< + VNNI: int8 and int16 GEMM
  bool avx512_vbmi = false;    ///< + VBMI: codebook index unpacking
  bool openmp = false;         ///< threads from an OpenMP pool (std::thread otherwise)
};

inline compiled_paths compiled_kernel_paths() {
  compiled_paths p;
#if defined(SLIMNET_KERNELS_AVX512)
  p.avx512 = true;
#endif
#if defined(SLIMNET_KERNELS_AVX512_POPCNT)
  p.avx512_popcnt = true;
#endif
#if defined(SLIMNET_KERNELS_AVX512_VNNI)
  p.avx512_vnni = true;
#endif
#if defined(SLIMNET_KERNELS_AVX512_VBMI)
  p.avx512_vbmi = true;
#endif
#if defined(_OPENMP)
  p.openmp = true;
#endif
  return p;
}

namespace detail {

/// Number of threads a params struct asks for: itself when positive, every hardware thread when <= 0.
inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
#if defined(_OPENMP)
  return std::max(1, omp_get_max_threads());
#else
  return std::max(1u, std::thread::hardware_concurrency());
#endif
}

/// Runs f(t, threads) for t in [0, threads) concurrently and waits; threads == 1 calls f(0, 1)
/// inline. An exception thrown by any f is rethrown here (the first one).
template <class F>
void run_threads(int threads, F&& f) {
  if (threads <= 1) {
    f(0, 1);
    return;
  }
  std::exception_ptr failure;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  {
    try {
      f(omp_get_thread_num(), omp_get_num_threads());
    } catch (...) {
#pragma omp critical(slimnet_kernels_failure)
      if (!failure) failure = std::current_exception();
    }
  }
#else
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> failures(static_cast<std::size_t>(threads));
  pool.reserve(static_cast<std::size_t>(threads - 1));
  auto guarded = [&](int t) {
    try {
      f(t, threads);
    } catch (...) {
      failures[static_cast<std::size_t>(t)] = std::current_exception();
    }
  };
  for (int t = 1; t < threads; ++t) pool.emplace_back(guarded, t);
  guarded(0);
  for (auto& th : pool) th.join();
  for (auto& e : failures)
    if (e && !failure) failure = e;
#endif
  if (failure) std::rethrow_exception(failure);
}

/// Splits [0, n) into `parts` contiguous ranges of about equal weight, where prefix[i] is the
/// weight of items [0, i) (non-decreasing, n + 1 entries). Returns parts + 1 boundaries.
template <class Prefix>
std::vector<index_t> balanced_split(const Prefix* prefix, index_t n, int parts) {
  std::vector<index_t> bounds(static_cast<std::size_t>(parts) + 1, n);
  bounds[0] = 0;
  const double total = static_cast<double>(prefix[n]);
  for (int p = 1; p < parts; ++p) {
    const double goal = total * p / parts;
    const index_t i = std::lower_bound(prefix, prefix + n + 1, static_cast<Prefix>(goal)) - prefix;
    bounds[static_cast<std::size_t>(p)] = std::clamp<index_t>(i, bounds[static_cast<std::size_t>(p) - 1], n);
  }
  if (total == 0) {
    for (int p = 0; p <= parts; ++p) bounds[static_cast<std::size_t>(p)] = n * p / parts;
  }
  return bounds;
}

/// Splits [0, n) into `parts` contiguous ranges of equal size, boundaries rounded to multiples of `align`.
inline std::vector<index_t> even_split(index_t n, int parts, index_t align = 1) {
  std::vector<index_t> bounds(static_cast<std::size_t>(parts) + 1, n);
  bounds[0] = 0;
  const index_t units = (n + align - 1) / align;
  for (int p = 1; p < parts; ++p) bounds[static_cast<std::size_t>(p)] = std::min(n, units * p / parts * align);
  return bounds;
}

}  // namespace detail
}  // namespace slimnet::kernels
