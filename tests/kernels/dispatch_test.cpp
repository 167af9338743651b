// The fast paths the kernel tests compare against the portable ones are really compiled in on a
// CPU that has them: without this, a build that lost -march=native would compare the portable path
// with itself in every "automatic vs portable" test and still pass.
#include <catch2/catch.hpp>

#include "slimnet/kernels/dispatch.hpp"

using namespace slimnet;

TEST_CASE("a native build compiles every fast path this CPU supports", "[kernels][dispatch]") {
  const auto compiled = kernels::compiled_kernel_paths();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool cpu_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool cpu_popcnt = cpu_avx512 && __builtin_cpu_supports("avx512vpopcntdq");
  const bool cpu_vnni = cpu_avx512 && __builtin_cpu_supports("avx512vnni");
  const bool cpu_vbmi = cpu_avx512 && __builtin_cpu_supports("avx512vbmi");
  INFO("CPU: avx512 " << cpu_avx512 << " vpopcntdq " << cpu_popcnt << " vnni " << cpu_vnni << " vbmi " << cpu_vbmi);
  INFO("compiled: avx512 " << compiled.avx512 << " vpopcntdq " << compiled.avx512_popcnt << " vnni " << compiled.avx512_vnni
                           << " vbmi " << compiled.avx512_vbmi);
#if defined(SLIMNET_TESTS_NATIVE)
  // -march=native: what the CPU has is what the compiler targeted.
  CHECK(compiled.avx512 == cpu_avx512);
  CHECK(compiled.avx512_popcnt == cpu_popcnt);
  CHECK(compiled.avx512_vnni == cpu_vnni);
  CHECK(compiled.avx512_vbmi == cpu_vbmi);
  if (!cpu_avx512) WARN("this CPU has no AVX-512: the kernel tests compare the portable paths only");
#endif
#if defined(_OPENMP)
  CHECK(compiled.openmp);  // an OpenMP build: kernel threads come from its pool
#else
  CHECK_FALSE(compiled.openmp);
#endif
  // Never the other way round: a fast path the CPU cannot run would crash every test.
  CHECK((!compiled.avx512 || cpu_avx512));
  CHECK((!compiled.avx512_vnni || cpu_vnni));
#else
  WARN("not x86-64: only the portable kernel paths exist");
  CHECK_FALSE(compiled.avx512);
#endif
}
