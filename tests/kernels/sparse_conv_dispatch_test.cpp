// The run-time dispatched direct sparse convolution (sparse_conv2d): every family this CPU can run,
// forced with set_isa, against the double reference over odd shapes (batch 1's phase planes with
// 1, 4 and 9 phases, batch-innermost strips of every width around the 8- and 16-float vectors, both
// batch layouts), outputs poisoned with NaN, and the path that actually ran (sparse_conv_path_calls).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/sparse_conv.hpp"
#include "support/isa_families.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using kernels::isa;
using slimnet::testing::poison;
using conv_dispatch_isa_guard = slimnet::testing::isa_reset_guard;

namespace {

struct conv_dispatch_case {
  index_t batch, channels, height, width, out_channels, kernel, pad;
  double density;
  kernels::conv_epilogue ep;
};

/// Runs c on the active family, both batch layouts, and checks every output against the double
/// reference within (taps + 3) eps times the (pooled) sum of |terms|, the bound for any summation
/// order; the magnitudes come from the reference run on |w|, |x|, |bias| without the ReLU.
void conv_dispatch_run(const conv_dispatch_case& c, std::uint64_t seed, isa family) {
  rng gen(seed);
  const index_t k = c.channels * c.kernel * c.kernel;
  std::vector<float> w(static_cast<std::size_t>(c.out_channels * k), 0.0f),
      x(static_cast<std::size_t>(c.batch * c.channels * c.height * c.width)), bias(static_cast<std::size_t>(c.out_channels));
  for (auto& v : w)
    if (gen.uniform() < c.density) v = static_cast<float>(gen.uniform(-1, 1));
  for (auto& v : x) v = static_cast<float>(gen.uniform(-1, 1));
  for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
  auto absolute = [](std::vector<float> v) {
    for (auto& e : v) e = std::abs(e);
    return v;
  };
  const auto wa = absolute(w), xa = absolute(x), ba = absolute(bias);
  const auto f = kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(w.data(), c.out_channels, k),
                                                            c.channels, c.kernel, c.kernel);
  const auto fa = kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(wa.data(), c.out_channels, k),
                                                             c.channels, c.kernel, c.kernel);
  const kernels::conv_input in{c.batch, c.channels, c.height, c.width, c.pad, c.pad};
  const shape_t shape = kernels::sparse_conv2d_output_shape(c.out_channels, c.kernel, c.kernel, in, c.ep);
  const auto size = static_cast<std::size_t>(shape[0] * shape[1] * shape[2] * shape[3]);
  std::vector<float> expected(size), magnitude(size), y(size);
  kernels::sparse_conv2d_reference(f.ref(), x.data(), in, bias.data(), c.ep, expected.data());
  kernels::conv_epilogue no_relu = c.ep;
  no_relu.relu = false;
  kernels::sparse_conv2d_reference(fa.ref(), xa.data(), in, ba.data(), no_relu, magnitude.data());
  const isa path = slimnet::testing::x86_simd_expected(family);
  kernels::sparse_conv_workspace<float> ws;
  for (auto layout : {kernels::conv_batch_layout::batch_innermost, kernels::conv_batch_layout::image_at_a_time}) {
    for (int twice = 0; twice < 2; ++twice) {  // the second call reuses the workspace's cached offsets
      poison(y);
      const auto calls = kernels::sparse_conv_path_calls(path);
      kernels::sparse_conv2d(f.ref(), x.data(), in, bias.data(), c.ep, y.data(), ws, kernels::kernel_path::automatic, layout);
      CHECK(kernels::sparse_conv_path_calls(path) == calls + 1);
      index_t bad = 0;
      for (std::size_t e = 0; e < size; ++e) {
        const double err = std::abs(double(y[e]) - double(expected[e]));
        if (!(err <= double(k + 3) * std::numeric_limits<float>::epsilon() * (double(magnitude[e]) + 1e-30))) ++bad;
      }
      INFO("N=" << c.batch << " C=" << c.channels << " " << c.height << "x" << c.width << " O=" << c.out_channels
                << " k=" << c.kernel << " pad=" << c.pad << " density=" << c.density << " relu=" << c.ep.relu
                << " pool=" << c.ep.pool_kernel << "/" << c.ep.pool_stride << " layout=" << static_cast<int>(layout));
      CHECK(bad == 0);
    }
  }
}

}  // namespace

TEST_CASE("sparse_conv2d: every path the CPU has equals the reference over odd shapes", "[kernels][sparse_conv][dispatch]") {
  conv_dispatch_isa_guard guard;
  const kernels::conv_epilogue none{}, relu{true, 0, 0}, pool2{true, 2, 2}, pool2_no_relu{false, 2, 2}, pool3{true, 3, 3},
      pool3s2{true, 3, 2};
  const std::vector<conv_dispatch_case> cases = {
      {1, 1, 5, 5, 1, 3, 0, 1.0, none},       {1, 1, 28, 28, 6, 5, 2, 0.6, pool2},  // LeNet-5 conv1 + pool
      {1, 6, 14, 14, 16, 5, 0, 0.1, pool2},   {1, 3, 11, 13, 4, 3, 1, 0.5, relu},    {1, 2, 17, 9, 3, 3, 0, 0.7, pool2_no_relu},
      {1, 2, 19, 19, 3, 3, 1, 0.5, pool3},    {1, 2, 13, 11, 5, 3, 0, 0.4, pool3s2}, {3, 2, 9, 7, 5, 3, 1, 0.5, pool2},
      {5, 3, 8, 11, 4, 3, 0, 0.3, relu},      {7, 1, 6, 6, 2, 5, 2, 0.9, none},      {64, 6, 14, 14, 16, 5, 0, 0.1, pool2},
      {17, 2, 12, 10, 3, 3, 1, 0.4, pool3s2}, {2, 4, 33, 35, 3, 3, 0, 0.2, pool2},   {1, 4, 40, 37, 2, 3, 1, 0.3, none},
      {17, 3, 7, 11, 5, 3, 1, 0.3, none},     {3, 2, 6, 21, 2, 3, 0, 0.5, relu}};  // rows of 187 = 2 x 64 + 59, 57 = 7 x 8 + 1
                                                                                   // floats
  std::uint64_t seed = 1919;
  for (isa family : slimnet::testing::isa_families()) {
    kernels::set_isa(family);
    INFO("family " << kernels::isa_name(family));
    CHECK(kernels::sparse_conv_path() == slimnet::testing::x86_simd_expected(family));
    for (const auto& c : cases) conv_dispatch_run(c, ++seed, family);
  }
}

TEST_CASE("sparse_conv2d: kernel_path::portable runs the portable path whatever the family", "[kernels][sparse_conv][dispatch]") {
  conv_dispatch_isa_guard guard;
  const kernels::conv_input in{2, 1, 6, 6, 0, 0};
  std::vector<float> w(9, 0.5f), x(72, 1.0f), y(2 * 4 * 4);
  const auto f = kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(w.data(), 1, 9), 1, 3, 3);
  kernels::sparse_conv_workspace<float> ws;
  const auto calls = kernels::sparse_conv_path_calls(isa::portable);
  poison(y);
  kernels::sparse_conv2d(f.ref(), x.data(), in, nullptr, kernels::conv_epilogue{}, y.data(), ws, kernels::kernel_path::portable);
  CHECK(kernels::sparse_conv_path_calls(isa::portable) == calls + 1);
  for (float v : y) CHECK(v == 4.5f);
}
