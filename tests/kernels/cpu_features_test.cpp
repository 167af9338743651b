// CPU feature detection and the run-time choice of instruction set (kernels/cpu_features.hpp).
#include <catch2/catch.hpp>

#include <string>

#include "slimnet/kernels/cpu_features.hpp"

using namespace slimnet;
using kernels::isa;

namespace {
// Restores the process-wide choice when a test leaves, whatever it set.
struct cpu_features_test_isa_guard {
  ~cpu_features_test_isa_guard() { kernels::reset_isa(); }
};
}  // namespace

TEST_CASE("cpu_features: the report is consistent with itself and with the compile flags", "[kernels][dispatch]") {
  const auto& f = kernels::cpu_features();
  CHECK(&f == &kernels::cpu_features());  // detected once
  INFO(kernels::describe_cpu());
  // Every AVX-512 CPU has AVX2 and FMA; the subsets need AVX-512 F.
  if (f.avx512f) {
    CHECK(f.avx2);
    CHECK(f.fma);
  }
  if (f.avx512bw || f.avx512vl || f.avx512dq || f.avx512_vpopcntdq || f.avx512_vnni || f.avx512_vbmi) CHECK(f.avx512f);
    // What the compiler was told to assume, the CPU running the program must have.
#if defined(__AVX2__)
  CHECK(f.avx2);
#endif
#if defined(__AVX512F__)
  CHECK(f.avx512f);
#endif
#if defined(__AVX512VPOPCNTDQ__)
  CHECK(f.avx512_vpopcntdq);
#endif
#if defined(SLIMNET_CPU_X86_64)
  CHECK_FALSE(f.asimd);
#elif defined(SLIMNET_CPU_AARCH64)
  CHECK(f.asimd);
  CHECK_FALSE(f.avx2);
#endif
  CHECK(kernels::isa_supported(isa::portable));
  CHECK(kernels::isa_supported(kernels::best_isa()));
  const std::string line = kernels::describe_cpu();
  CHECK(line.rfind("cpu: ", 0) == 0);
  CHECK(line.find("active: ") != std::string::npos);
  CHECK(line.find("compiled for: ") != std::string::npos);
}

TEST_CASE("best_isa: the widest family of a feature set", "[kernels][dispatch]") {
  kernels::cpu_feature_set none;
  CHECK(kernels::best_isa(none) == isa::portable);
  kernels::cpu_feature_set haswell;
  haswell.avx2 = haswell.fma = haswell.f16c = true;
  CHECK(kernels::best_isa(haswell) == isa::avx2);
  kernels::cpu_feature_set avx2_no_fma;
  avx2_no_fma.avx2 = true;
  CHECK(kernels::best_isa(avx2_no_fma) == isa::portable);
  kernels::cpu_feature_set skylake_x = haswell;
  skylake_x.avx512f = skylake_x.avx512bw = skylake_x.avx512vl = skylake_x.avx512dq = true;
  CHECK(kernels::best_isa(skylake_x) == isa::avx512);
  kernels::cpu_feature_set knights = haswell;  // AVX-512 F without BW/VL/DQ: not our avx512 family
  knights.avx512f = true;
  CHECK(kernels::best_isa(knights) == isa::avx2);
  kernels::cpu_feature_set arm;
  arm.asimd = true;
  CHECK(kernels::best_isa(arm) == isa::neon);
  CHECK_FALSE(kernels::isa_supported(isa::neon, skylake_x));
  CHECK_FALSE(kernels::isa_supported(isa::avx2, arm));
}

TEST_CASE("parse_isa and SLIMNET_ISA: names, unknown values, families the CPU lacks", "[kernels][dispatch]") {
  CHECK(kernels::parse_isa("portable") == isa::portable);
  CHECK(kernels::parse_isa("avx2") == isa::avx2);
  CHECK(kernels::parse_isa("avx512") == isa::avx512);
  CHECK(kernels::parse_isa("neon") == isa::neon);
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon}) CHECK(kernels::parse_isa(kernels::isa_name(i)) == i);
  CHECK_THROWS_AS(kernels::parse_isa("AVX2"), config_error);  // names are exact
  CHECK_THROWS_WITH(kernels::parse_isa("sse4"), Catch::Contains("slimnet::kernels::parse_isa") && Catch::Contains("'sse4'"));

  kernels::cpu_feature_set haswell;
  haswell.avx2 = haswell.fma = true;
  using kernels::detail::isa_from_env;
  CHECK(isa_from_env(nullptr, haswell) == isa::avx2);  // unset: the best
  CHECK(isa_from_env("", haswell) == isa::avx2);
  CHECK(isa_from_env("portable", haswell) == isa::portable);
  CHECK(isa_from_env("avx2", haswell) == isa::avx2);
  CHECK_THROWS_WITH(isa_from_env("avx512", haswell),
                    Catch::Contains("slimnet::kernels::active_isa") && Catch::Contains("SLIMNET_ISA=avx512") && Catch::Contains("best: avx2"));
  CHECK_THROWS_AS(isa_from_env("neon", haswell), config_error);
  CHECK_THROWS_WITH(isa_from_env("avx-512", haswell), Catch::Contains("slimnet::kernels::active_isa") && Catch::Contains("'avx-512'"));
}

TEST_CASE("set_isa: round trip over every family the CPU has; the others raise", "[kernels][dispatch]") {
  cpu_features_test_isa_guard guard;
  const isa initial = kernels::active_isa();
  int supported = 0;
  for (isa i : {isa::portable, isa::avx2, isa::avx512, isa::neon}) {
    INFO(kernels::isa_name(i));
    if (kernels::isa_supported(i)) {
      ++supported;
      kernels::set_isa(i);
      CHECK(kernels::active_isa() == i);
      CHECK(kernels::describe_cpu().find(std::string("active: ") + kernels::isa_name(i)) != std::string::npos);
    } else {
      const isa before = kernels::active_isa();
      CHECK_THROWS_WITH(kernels::set_isa(i), Catch::Contains("slimnet::kernels::set_isa") && Catch::Contains(kernels::isa_name(i)));
      CHECK(kernels::active_isa() == before);  // a refused choice changes nothing
    }
  }
  CHECK(supported >= 1);
  kernels::reset_isa();
  CHECK(kernels::active_isa() == initial);
}
