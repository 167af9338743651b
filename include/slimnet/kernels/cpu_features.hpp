// What the CPU running the program can do, and which instruction set the kernels use: the run-time
// half of kernel dispatch (dispatch.hpp says what was compiled in with -m flags).
//
// Why at run time: slimnet is header-only, so its kernels are compiled with the including program's
// flags, and the installed CMake package sets no -march. Kernels that dispatch compile each path
// with a function target attribute (GCC and Clang: __attribute__((target("avx2")))) in the same
// translation unit and pick one per call from active_isa(), so a program built with default flags
// runs the same code as one built with -march=native.
//
// Detection, once per process:
//   x86-64   cpuid leaves 1 and 7 for the instruction bits, and xgetbv(0) (XCR0) for what the OS
//            saves on a context switch: AVX needs XCR0 bits 1-2 (SSE, AVX state), AVX-512 also
//            bits 5-7 (opmask, upper ZMM0-15, ZMM16-31). A CPU that has AVX-512 under an OS (or a
//            hypervisor) that does not save ZMM state must not run it.
//   aarch64  getauxval(AT_HWCAP) on Linux: HWCAP_ASIMD (NEON, mandatory in ARMv8-A) and
//            HWCAP_ASIMDDP (SDOT/UDOT, ARMv8.2's dot product). Elsewhere NEON only.
//
// Choice: best_isa() is the widest family the CPU supports; active_isa() is best_isa() unless the
// environment variable SLIMNET_ISA (portable | avx2 | avx512 | neon, read at the first use) or
// set_isa() asks for another one. Asking for a family the CPU lacks raises config_error rather
// than falling back silently: a user who pins an ISA wants exactly that code, or to know why not.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "slimnet/core/error.hpp"

#if (defined(__x86_64__) || defined(_M_X64))
#define SLIMNET_CPU_X86_64 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

#if defined(__aarch64__) || defined(_M_ARM64)
#define SLIMNET_CPU_AARCH64 1
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

// Kernels compile their x86 paths with function target attributes where the compiler has them.
#if defined(SLIMNET_CPU_X86_64) && (defined(__GNUC__) || defined(__clang__))
#define SLIMNET_DISPATCH_X86 1
#define SLIMNET_TARGET(features) __attribute__((target(features)))
#endif

namespace slimnet::kernels {

/// The instruction-set features slimnet's kernels use. All false on other architectures.
struct cpu_feature_set {
  // x86-64 (each one also usable: the OS saves its register state)
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vpopcntdq = false;  ///< VPOPCNTQ: the XNOR GEMM's popcount
  bool avx512_vnni = false;       ///< VPDPBUSD on 512 bits: int8 GEMM
  bool avx512_vbmi = false;       ///< VPERMB: codebook index unpacking
  bool avx_vnni = false;          ///< VPDPBUSD on 256 bits (VEX): int8 GEMM on AVX2-class cores
  // aarch64
  bool asimd = false;     ///< NEON
  bool asimddp = false;   ///< SDOT / UDOT
};

/// A family of kernel paths. avx2 means AVX2 + FMA (Haswell and later, Zen); avx512 means
/// AVX-512 F/BW/VL/DQ (Skylake-X and later, Zen 4); kernels that need more (VPOPCNTDQ, VNNI) check
/// cpu_features() as well and take the next family down when it is missing.
enum class isa { portable, avx2, avx512, neon };

/// "portable", "avx2", "avx512" or "neon".
inline const char* isa_name(isa i) {
  switch (i) {
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
    case isa::neon: return "neon";
    case isa::portable: break;
  }
  return "portable";
}

namespace detail {

#if defined(SLIMNET_CPU_X86_64)
struct cpuid_regs {
  std::uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

/// cpuid(leaf, subleaf); all zero when the leaf is beyond the CPU's maximum.
inline cpuid_regs cpuid(std::uint32_t leaf, std::uint32_t subleaf) {
  cpuid_regs r;
#if defined(_MSC_VER) && !defined(__clang__)
  int max_regs[4], regs[4];
  __cpuid(max_regs, static_cast<int>(leaf & 0x80000000u));
  if (static_cast<std::uint32_t>(max_regs[0]) < leaf) return r;
  __cpuidex(regs, static_cast<int>(leaf), static_cast<int>(subleaf));
  r = {static_cast<std::uint32_t>(regs[0]), static_cast<std::uint32_t>(regs[1]), static_cast<std::uint32_t>(regs[2]),
       static_cast<std::uint32_t>(regs[3])};
#else
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(leaf, subleaf, &a, &b, &c, &d)) r = {a, b, c, d};
#endif
  return r;
}

/// XCR0: the register state the OS saves. Only valid when cpuid.1:ECX.OSXSAVE is set.
inline std::uint64_t xgetbv0() {
#if defined(_MSC_VER) && !defined(__clang__)
  return _xgetbv(0);
#else
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));  // no -mxsave needed, unlike _xgetbv
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
#endif
}
#endif

inline cpu_feature_set detect_cpu_features() {
  cpu_feature_set f;
#if defined(SLIMNET_CPU_X86_64)
  auto bit = [](std::uint32_t reg, int b) { return ((reg >> b) & 1u) != 0; };
  const cpuid_regs l1 = cpuid(1, 0);
  if (!bit(l1.ecx, 27) || !bit(l1.ecx, 28)) return f;  // no OSXSAVE or no AVX: no YMM state at all
  const std::uint64_t xcr0 = xgetbv0();
  const bool ymm_state = (xcr0 & 0x6u) == 0x6u;     // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xe6u) == 0xe6u;   // + opmask, ZMM0-15 upper halves, ZMM16-31
  if (!ymm_state) return f;
  const cpuid_regs l7 = cpuid(7, 0), l7s1 = cpuid(7, 1);
  f.fma = bit(l1.ecx, 12);
  f.f16c = bit(l1.ecx, 29);
  f.avx2 = bit(l7.ebx, 5);
  f.avx_vnni = bit(l7s1.eax, 4);
  if (zmm_state) {
    f.avx512f = bit(l7.ebx, 16);
    f.avx512dq = bit(l7.ebx, 17) && f.avx512f;
    f.avx512bw = bit(l7.ebx, 30) && f.avx512f;
    f.avx512vl = bit(l7.ebx, 31) && f.avx512f;
    f.avx512_vnni = bit(l7.ecx, 11) && f.avx512f;
    f.avx512_vpopcntdq = bit(l7.ecx, 14) && f.avx512f;
    f.avx512_vbmi = bit(l7.ecx, 1) && f.avx512f;
  }
#elif defined(SLIMNET_CPU_AARCH64)
  f.asimd = true;  // ARMv8-A mandates Advanced SIMD
#if defined(__linux__)
  constexpr unsigned long hwcap_asimd = 1ul << 1, hwcap_asimddp = 1ul << 20;  // <asm/hwcap.h>
  const unsigned long hw = getauxval(AT_HWCAP);
  f.asimd = (hw & hwcap_asimd) != 0;
  f.asimddp = (hw & hwcap_asimddp) != 0;
#endif
#endif
  return f;
}

}  // namespace detail

/// The CPU's features, detected once (thread-safe).
inline const cpu_feature_set& cpu_features() {
  static const cpu_feature_set features = detail::detect_cpu_features();
  return features;
}

/// Whether a CPU with features `f` can run the paths of family `i`.
inline bool isa_supported(isa i, const cpu_feature_set& f = cpu_features()) {
  switch (i) {
    case isa::avx2: return f.avx2 && f.fma;
    case isa::avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx2 && f.fma;
    case isa::neon: return f.asimd;
    case isa::portable: break;
  }
  return true;
}

/// The widest family a CPU with features `f` supports.
inline isa best_isa(const cpu_feature_set& f = cpu_features()) {
  if (isa_supported(isa::avx512, f)) return isa::avx512;
  if (isa_supported(isa::avx2, f)) return isa::avx2;
  if (isa_supported(isa::neon, f)) return isa::neon;
  return isa::portable;
}

/// The family named `name` (portable | avx2 | avx512 | neon); config_error from `function` otherwise.
inline isa parse_isa(std::string_view name, const char* function = "slimnet::kernels::parse_isa") {
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon})
    if (name == isa_name(i)) return i;
  slimnet::detail::raise<config_error>(function, "unknown instruction set '{}' (expected portable, avx2, avx512 or neon)", name);
}

namespace detail {

/// The family SLIMNET_ISA asks for on a CPU with features `f`: best_isa(f) when unset or empty,
/// config_error when the value is unknown or the CPU lacks it.
inline isa isa_from_env(const char* value, const cpu_feature_set& f) {
  const char* fn = "slimnet::kernels::active_isa";
  if (value == nullptr || *value == '\0') return best_isa(f);
  const isa i = parse_isa(value, fn);
  if (!isa_supported(i, f))
    slimnet::detail::raise<config_error>(fn, "SLIMNET_ISA={} but this CPU cannot run it (best: {})", value, isa_name(best_isa(f)));
  return i;
}

/// The environment's choice, read at the first call; an invalid value raises at every call.
inline isa env_isa() {
  static const isa chosen = isa_from_env(std::getenv("SLIMNET_ISA"), cpu_features());
  return chosen;
}

/// set_isa's choice, or -1 for none.
inline std::atomic<int>& isa_override() {
  static std::atomic<int> chosen{-1};
  return chosen;
}

}  // namespace detail

/// The family dispatching kernels use now: set_isa's, else SLIMNET_ISA's, else best_isa().
inline isa active_isa() {
  const int chosen = detail::isa_override().load(std::memory_order_relaxed);
  return chosen >= 0 ? static_cast<isa>(chosen) : detail::env_isa();
}

/// Makes every dispatching kernel use family `i` (for the whole process, every thread), overriding
/// SLIMNET_ISA; config_error when this CPU cannot run it. Calls already running finish on their path.
inline void set_isa(isa i) {
  if (!isa_supported(i))
    slimnet::detail::raise<config_error>("slimnet::kernels::set_isa", "this CPU cannot run {} (best: {})", isa_name(i), isa_name(best_isa()));
  detail::isa_override().store(static_cast<int>(i), std::memory_order_relaxed);
}

/// Undoes set_isa: back to SLIMNET_ISA's choice or best_isa().
inline void reset_isa() { detail::isa_override().store(-1, std::memory_order_relaxed); }

/// The family a kernel with AVX2 and AVX-512 paths (and no NEON one) runs now: active_isa() when
/// it is avx2 or avx512 (x86-64 with target attributes), portable otherwise.
inline isa x86_simd_path() {
#if defined(SLIMNET_DISPATCH_X86)
  const isa active = active_isa();
  if (active == isa::avx512 || active == isa::avx2) return active;
#endif
  return isa::portable;
}

namespace detail {
/// Per kernel family Tag: how many calls each family computed (indexed by isa), for the
/// *_path_calls() queries tests use to assert which path ran.
template <class Tag>
std::atomic<std::uint64_t>* path_counters() {
  static std::atomic<std::uint64_t> counters[4] = {};
  return counters;
}

/// Counts one call of kernel family Tag on `path` and returns `path`.
template <class Tag>
isa count_path(isa path) {
  path_counters<Tag>()[static_cast<int>(path)].fetch_add(1, std::memory_order_relaxed);
  return path;
}

/// The calls of kernel family Tag that ran on `path`.
template <class Tag>
std::uint64_t path_calls(isa path) {
  return path_counters<Tag>()[static_cast<int>(path)].load(std::memory_order_relaxed);
}
}  // namespace detail

/// One line for logs and benchmark headers, e.g.
///   "cpu: AVX-512 (avx2 fma f16c avx512f bw vl dq vpopcntdq vnni avx-vnni), active: avx512, compiled for: x86-64 baseline"
inline std::string describe_cpu() {
  const cpu_feature_set& f = cpu_features();
  std::string s = "cpu: ";
  switch (best_isa(f)) {
    case isa::avx512: s += "AVX-512"; break;
    case isa::avx2: s += "AVX2"; break;
    case isa::neon: s += "NEON"; break;
    case isa::portable: s += "no SIMD family slimnet uses"; break;
  }
  std::string list;
  auto add = [&list](bool has, const char* name) {
    if (!has) return;
    if (!list.empty()) list += ' ';
    list += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "bw");
  add(f.avx512vl, "vl");
  add(f.avx512dq, "dq");
  add(f.avx512_vpopcntdq, "vpopcntdq");
  add(f.avx512_vnni, "vnni");
  add(f.avx512_vbmi, "vbmi");
  add(f.avx_vnni, "avx-vnni");
  add(f.asimd, "asimd");
  add(f.asimddp, "asimddp");
  if (!list.empty()) s += " (" + list + ")";
  s += ", active: ";
  try {
    s += isa_name(active_isa());
  } catch (const config_error&) {
    s += "invalid SLIMNET_ISA";
  }
  s += ", compiled for: ";
  std::string flags;
  auto flag = [&flags](const char* name) {
    if (!flags.empty()) flags += ' ';
    flags += name;
  };
  (void)flag;  // unused when no flag below is defined
#if defined(__AVX2__)
  flag("avx2");
#endif
#if defined(__FMA__)
  flag("fma");
#endif
#if defined(__AVX512F__)
  flag("avx512f");
#endif
#if defined(__AVX512VPOPCNTDQ__)
  flag("vpopcntdq");
#endif
#if defined(__AVX512VNNI__)
  flag("vnni");
#endif
#if defined(__ARM_FEATURE_DOTPROD)
  flag("dotprod");
#endif
#if defined(SLIMNET_CPU_X86_64)
  s += flags.empty() ? "x86-64 baseline" : flags;
#elif defined(SLIMNET_CPU_AARCH64)
  s += flags.empty() ? "armv8-a baseline" : flags;
#else
  s += flags.empty() ? "baseline" : flags;
#endif
  return s;
}

}  // namespace slimnet::kernels
