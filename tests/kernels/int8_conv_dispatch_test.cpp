// The run-time dispatched int8 convolution (int8_conv2d) and the BNN first-layer pass (conv1_sign):
// every family this CPU can run, forced with set_isa, against the definitions bitwise (both paths
// compute the same integers / the same fused multiply-adds in the same order), over odd shapes,
// outputs poisoned with NaN, and the path that actually ran (int8_conv_path_calls,
// conv1_sign_path_calls). Neither has an AVX2 path: on a CPU without AVX-512 (VNNI) every family
// must run the portable one, which the counters check.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/conv1_sign.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/int8_conv.hpp"
#include "support/isa_families.hpp"

using namespace slimnet;
using kernels::isa;
using int8_conv_dispatch_isa_guard = slimnet::testing::isa_reset_guard;

namespace {

/// Bitwise equal, NaN never equal (a poisoned output left unwritten fails).
bool int8_conv_dispatch_same(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("int8_conv2d: every path the CPU has equals the definition bitwise", "[kernels][int8][dispatch]") {
  int8_conv_dispatch_isa_guard guard;
  rng gen(1937);
  struct shape {
    index_t in_c, out_c, k, pad, h, w, batch;
  };
  const shape shapes[] = {{1, 6, 5, 2, 28, 28, 2}, {6, 16, 5, 0, 14, 14, 1}, {3, 7, 3, 1, 11, 13, 3}, {5, 17, 4, 3, 4, 4, 1}};
  const kernels::conv_epilogue epilogues[] = {{false, 0, 0}, {true, 2, 2}, {true, 3, 2}};
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    const isa expected = kernels::int8_conv_path();
#if defined(SLIMNET_DISPATCH_X86)
    CHECK(expected == (family == isa::avx512 && kernels::cpu_features().avx512_vnni ? isa::avx512 : isa::portable));
#else
    CHECK(expected == isa::portable);
#endif
    for (const auto& s : shapes) {
      std::vector<std::int8_t> codes(static_cast<std::size_t>(s.out_c * s.in_c * s.k * s.k));
      for (auto& q : codes) q = static_cast<std::int8_t>(static_cast<int>(gen.below(255)) - 127);
      std::vector<float> scale(static_cast<std::size_t>(s.out_c)), bias(scale.size());
      for (auto& v : scale) v = static_cast<float>(gen.uniform(0.001, 0.05));
      for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
      std::vector<float> x(static_cast<std::size_t>(s.batch * s.in_c * s.h * s.w));
      for (auto& v : x) v = static_cast<float>(gen.uniform(-2, 3));
      const kernels::int8_conv_filters f(codes.data(), s.out_c, s.in_c, s.k, s.k);
      const kernels::conv_input in{s.batch, s.in_c, s.h, s.w, s.pad, s.pad};
      const index_t oh = s.h + 2 * s.pad - s.k + 1, ow = s.w + 2 * s.pad - s.k + 1;
      for (const auto& ep : epilogues) {
        if (ep.pooled() && (ep.pool_kernel > oh || ep.pool_kernel > ow)) continue;
        const std::size_t out = static_cast<std::size_t>(s.batch * s.out_c * ep.out(oh) * ep.out(ow));
        std::vector<float> ref(out, std::numeric_limits<float>::quiet_NaN()), got(out);
        kernels::int8_conv2d_reference(codes.data(), s.out_c, s.k, s.k, x.data(), in, scale.data(), bias.data(), 0.0, ep,
                                       ref.data());
        kernels::int8_conv_workspace ws;
        got.assign(out, std::numeric_limits<float>::quiet_NaN());
        const auto calls = kernels::int8_conv_path_calls(expected);
        kernels::int8_conv2d(f, x.data(), in, scale.data(), bias.data(), 0.0, ep, got.data(), ws);
        INFO("family " << kernels::isa_name(family) << ", " << s.in_c << " -> " << s.out_c << " channels, " << s.k << "x" << s.k
                       << " pad " << s.pad << ", " << s.h << "x" << s.w << ", pool " << ep.pool_kernel << "/" << ep.pool_stride);
        CHECK(kernels::int8_conv_path_calls(expected) == calls + 1);
        CHECK(int8_conv_dispatch_same(got, ref));
      }
    }
  }
}

TEST_CASE("conv1_sign: every path the CPU has equals the portable pass bitwise", "[kernels][binary][dispatch]") {
  int8_conv_dispatch_isa_guard guard;
  rng gen(1938);
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
#if defined(SLIMNET_DISPATCH_X86)
    CHECK(kernels::conv1_sign_path() == (family == isa::avx512 ? isa::avx512 : isa::portable));
#else
    CHECK(kernels::conv1_sign_path() == isa::portable);
#endif
    for (index_t oc : {1, 17, 32, 50}) {
      for (index_t pool : {1, 2}) {
        const index_t k = 5, h = 14, w = 13, batch = 2;
        std::vector<float> wt(static_cast<std::size_t>(oc * k * k)), bias(static_cast<std::size_t>(oc)), lo(bias.size()),
            hi(bias.size()), in_value(bias.size()), nan_value(bias.size());
        for (auto& v : wt) v = static_cast<float>(gen.uniform(-1, 1));
        for (std::size_t o = 0; o < bias.size(); ++o) {
          bias[o] = static_cast<float>(gen.uniform(-1, 1));
          lo[o] = static_cast<float>(gen.uniform(-2, 0));
          hi[o] = lo[o] + static_cast<float>(gen.uniform(0, 4));
          in_value[o] = gen.below(2) ? 1.0f : -1.0f;
          nan_value[o] = -in_value[o];
        }
        // MNIST-like input: most pixels exactly 0 (blank windows are copied, not computed).
        std::vector<float> x(static_cast<std::size_t>(batch * h * w), 0.0f);
        for (auto& v : x)
          if (gen.uniform() < 0.3) v = static_cast<float>(gen.uniform(0, 1));
        kernels::conv1_sign_params<float> p;
        p.out_channels = oc, p.kernel_h = k, p.kernel_w = k, p.pool = pool;
        p.weights = wt.data(), p.bias = bias.data(), p.lo = lo.data(), p.hi = hi.data(), p.in_value = in_value.data();
        p.nan_value = nan_value.data();
        const std::size_t out = static_cast<std::size_t>(batch * oc * p.out_h(h) * p.out_w(w));
        std::vector<float> want(out, std::numeric_limits<float>::quiet_NaN()), got(out, std::numeric_limits<float>::quiet_NaN());
        kernels::conv1_sign_workspace ws;
        p.path = kernels::kernel_path::portable;
        kernels::conv1_sign(p, x.data(), batch, h, w, want.data(), ws);
        p.path = kernels::kernel_path::automatic;
        const isa expected = kernels::conv1_sign_path();
        const auto calls = kernels::conv1_sign_path_calls(expected);
        kernels::conv1_sign(p, x.data(), batch, h, w, got.data(), ws);
        INFO("family " << kernels::isa_name(family) << ", " << oc << " channels, pool " << pool);
        CHECK(kernels::conv1_sign_path_calls(expected) == calls + 1);
        CHECK(int8_conv_dispatch_same(got, want));
      }
    }
  }
}
