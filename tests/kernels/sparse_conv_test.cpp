// The direct sparse convolution (kernels/sparse_conv.hpp): its reference against an independent
// dense convolution in double, and the fast kernel (automatic and portable paths) against the
// reference, over odd shapes (1, primes, empty filters, 0 nonzeros), densities {0, 0.01, 0.1, 0.5,
// 1}, padding and the fused ReLU / max-pool epilogues, a batch run batch-innermost and one image at
// a time. Outputs are poisoned with NaN first.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/sparse_conv.hpp"

using namespace slimnet;

namespace {

struct conv_case {
  index_t batch, channels, height, width, out_channels, kernel, pad;
  double density;
  kernels::conv_epilogue ep;
};

/// Dense convolution + ReLU + max-pool in double straight from the definition (no sparse format),
/// with the magnitude sum |w x| + |b| of each conv output carried through the pooling (the max of
/// the window's magnitudes), for the error bound.
template <class Scalar>
void dense_expected(const conv_case& c, const std::vector<Scalar>& w, const std::vector<Scalar>& x, const std::vector<Scalar>& bias,
                    std::vector<double>& y, std::vector<double>& mag) {
  const index_t oh = c.height + 2 * c.pad - c.kernel + 1, ow = c.width + 2 * c.pad - c.kernel + 1;
  const index_t ph = c.ep.out(oh), pw = c.ep.out(ow);
  y.assign(static_cast<std::size_t>(c.batch * c.out_channels * ph * pw), 0.0);
  mag.assign(y.size(), 0.0);
  std::vector<double> z(static_cast<std::size_t>(oh * ow)), zm(z.size());
  for (index_t n = 0; n < c.batch; ++n)
    for (index_t o = 0; o < c.out_channels; ++o) {
      for (index_t i = 0; i < oh; ++i)
        for (index_t j = 0; j < ow; ++j) {
          double s = bias[static_cast<std::size_t>(o)], m = std::abs(s);
          for (index_t ch = 0; ch < c.channels; ++ch)
            for (index_t ki = 0; ki < c.kernel; ++ki)
              for (index_t kj = 0; kj < c.kernel; ++kj) {
                const index_t ih = i + ki - c.pad, iw = j + kj - c.pad;
                if (ih < 0 || iw < 0 || ih >= c.height || iw >= c.width) continue;
                const double t = double(w[static_cast<std::size_t>(((o * c.channels + ch) * c.kernel + ki) * c.kernel + kj)]) *
                                 double(x[static_cast<std::size_t>(((n * c.channels + ch) * c.height + ih) * c.width + iw)]);
                s += t;
                m += std::abs(t);
              }
          if (c.ep.relu) s = std::max(s, 0.0);
          z[static_cast<std::size_t>(i * ow + j)] = s;
          zm[static_cast<std::size_t>(i * ow + j)] = m;
        }
      for (index_t pi = 0; pi < ph; ++pi)
        for (index_t pj = 0; pj < pw; ++pj) {
          double best = -INFINITY, bm = 0;
          const index_t k = c.ep.pooled() ? c.ep.pool_kernel : 1, s = c.ep.pooled() ? c.ep.pool_stride : 1;
          for (index_t a = 0; a < k; ++a)
            for (index_t b = 0; b < k; ++b) {
              const auto q = static_cast<std::size_t>((pi * s + a) * ow + pj * s + b);
              best = std::max(best, z[q]);
              bm = std::max(bm, zm[q]);
            }
          const auto e = static_cast<std::size_t>(((n * c.out_channels + o) * ph + pi) * pw + pj);
          y[e] = best;
          mag[e] = bm;
        }
    }
}

/// Runs case c through the reference and the fast kernel (both paths, twice each) and checks them
/// against dense_expected; `shared` (optional) is a workspace kept across calls with other shapes.
template <class Scalar>
void run_case(const conv_case& c, std::uint64_t seed, kernels::sparse_conv_workspace<Scalar>* shared = nullptr,
              const kernels::sparse_filters<Scalar>* given = nullptr) {
  rng gen(seed);
  const index_t k = c.channels * c.kernel * c.kernel;
  std::vector<Scalar> w(static_cast<std::size_t>(c.out_channels * k), Scalar(0));
  for (index_t o = 0; o < c.out_channels; ++o) {
    if (c.out_channels > 2 && o % 3 == 1) continue;  // empty filters
    for (index_t t = 0; t < k; ++t)
      if (gen.uniform() < c.density) w[static_cast<std::size_t>(o * k + t)] = static_cast<Scalar>(gen.uniform(-1, 1));
  }
  std::vector<Scalar> x(static_cast<std::size_t>(c.batch * c.channels * c.height * c.width)), bias(static_cast<std::size_t>(c.out_channels));
  for (auto& v : x) v = static_cast<Scalar>(gen.uniform(-1, 1));
  for (auto& v : bias) v = static_cast<Scalar>(gen.uniform(-1, 1));
  if (given != nullptr) {  // the weights of the given filters (same shape as c's)
    std::fill(w.begin(), w.end(), Scalar(0));
    const auto r = given->ref();
    for (index_t o = 0; o < c.out_channels; ++o)
      for (auto q = r.row_offsets[o]; q < r.row_offsets[o + 1]; ++q) w[static_cast<std::size_t>(o * k + r.taps[q])] = r.values[q];
  }
  const auto own = kernels::sparse_filters<Scalar>::from_dense(kernels::row_major<const Scalar>(w.data(), c.out_channels, k), c.channels,
                                                              c.kernel, c.kernel);
  const auto& filters = given != nullptr ? *given : own;
  const kernels::conv_input in{c.batch, c.channels, c.height, c.width, c.pad, c.pad};
  const shape_t shape = kernels::sparse_conv2d_output_shape(c.out_channels, c.kernel, c.kernel, in, c.ep);
  const auto size = static_cast<std::size_t>(shape_size(shape));
  std::vector<double> expected, mag;
  dense_expected(c, w, x, bias, expected, mag);
  REQUIRE(expected.size() == size);
  const double eps = std::numeric_limits<Scalar>::epsilon();
  auto check = [&](const std::vector<Scalar>& y, const char* what) {
    index_t bad = 0;
    double worst = 0;
    for (std::size_t i = 0; i < size; ++i) {
      const double err = std::abs(double(y[i]) - expected[i]);
      worst = std::max(worst, err);
      if (!(err <= double(k + 3) * eps * (mag[i] + 1e-300))) ++bad;  // also catches NaN
    }
    INFO(what << ": N=" << c.batch << " C=" << c.channels << " " << c.height << "x" << c.width << " O=" << c.out_channels << " k=" << c.kernel
              << " pad=" << c.pad << " density=" << c.density << " relu=" << c.ep.relu << " pool=" << c.ep.pool_kernel << "/"
              << c.ep.pool_stride << ": worst " << worst);
    CHECK(bad == 0);
  };
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  std::vector<Scalar> y(size, nan);
  kernels::sparse_conv2d_reference(filters.ref(), x.data(), in, bias.data(), c.ep, y.data());
  check(y, "reference");
  kernels::sparse_conv_workspace<Scalar> local;
  kernels::sparse_conv_workspace<Scalar>& ws = shared != nullptr ? *shared : local;
  for (auto layout : {kernels::conv_batch_layout::batch_innermost, kernels::conv_batch_layout::image_at_a_time}) {
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      for (int call = 0; call < 2; ++call) {  // the second call reuses the workspace
        std::fill(y.begin(), y.end(), nan);
        kernels::sparse_conv2d(filters.ref(), x.data(), in, bias.data(), c.ep, y.data(), ws, path, layout);
        const bool per_image = layout == kernels::conv_batch_layout::image_at_a_time;
        check(y, path == kernels::kernel_path::portable ? (per_image ? "portable, one image at a time" : "portable")
                                                        : (per_image ? "automatic, one image at a time" : "automatic"));
      }
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("direct sparse convolution equals the dense convolution over shapes, densities and epilogues",
                   "[kernels][sparse][conv]", float, double) {
  const kernels::conv_epilogue none{}, relu{true, 0, 0}, pool2{false, 2, 2}, relu_pool2{true, 2, 2}, pool3s2{false, 3, 2};
  std::uint64_t seed = 1;
  for (double density : {0.0, 0.01, 0.1, 0.5, 1.0}) {
    for (const auto& ep : {none, relu, pool2, relu_pool2, pool3s2}) {
      run_case<TestType>({1, 1, 28, 28, 20, 5, 0, density, ep}, seed++);   // LeNet-5 conv1, batch 1 (wide plane)
      run_case<TestType>({3, 20, 12, 12, 7, 5, 0, density, ep}, seed++);   // conv2's geometry, a small batch
      run_case<TestType>({17, 3, 7, 11, 5, 3, 1, density, ep}, seed++);    // primes, padding 1
      run_case<TestType>({2, 2, 5, 13, 3, 5, 2, density, ep}, seed++);     // padding 2, kernel as tall as the input
    }
    run_case<TestType>({1, 1, 1, 1, 1, 1, 0, density, none}, seed++);      // 1 x 1 everything
    run_case<TestType>({64, 2, 6, 6, 4, 3, 0, density, relu_pool2}, seed++);  // rows of 4 x 64: the row-by-row layout
    run_case<TestType>({5, 1, 4, 3, 2, 3, 1, density, pool3s2}, seed++);
  }
}

TEMPLATE_TEST_CASE("direct sparse convolution of one image: phase planes for every pooling whose kernel equals its stride",
                   "[kernels][sparse][conv]", float, double) {
  // Batch 1 without pooling or with pool kernel == stride runs on column-shifted phase planes
  // (the pooled plane is the max of the phase planes); pool 3 at stride 2 keeps the plane path.
  const kernels::conv_epilogue none{}, relu{true, 0, 0}, pool2{false, 2, 2}, relu_pool2{true, 2, 2}, pool3{false, 3, 3},
      relu_pool3{true, 3, 3}, pool3s2{true, 3, 2};
  std::uint64_t seed = 500;
  for (double density : {0.0, 0.03, 0.3, 1.0}) {
    for (const auto& ep : {none, relu, pool2, relu_pool2, pool3, relu_pool3, pool3s2}) {
      run_case<TestType>({1, 20, 12, 12, 50, 5, 0, density, ep}, seed++);  // LeNet-5 conv2 at batch 1 (one vector per phase)
      run_case<TestType>({1, 3, 13, 11, 5, 3, 1, density, ep}, seed++);    // odd sizes, padding 1 (odd rows per phase)
      run_case<TestType>({1, 2, 37, 41, 3, 4, 2, density, ep}, seed++);    // rows of 45 floats: the portable fill
      run_case<TestType>({1, 1, 9, 30, 4, 1, 0, density, ep}, seed++);     // 1 x 1 kernel, pw up to 30
    }
  }
}

TEST_CASE("direct sparse convolution: one workspace across batches, paddings and epilogues", "[kernels][sparse][conv]") {
  // The cached offsets depend on the batch, the padded size and the layout (phase count): a
  // workspace kept by a layer must recompute them whenever any of these changes.
  rng gen(9);
  const index_t out_c = 6, in_c = 4, k = 3;
  std::vector<float> w(static_cast<std::size_t>(out_c * in_c * k * k), 0.0f);
  for (auto& v : w)
    if (gen.uniform() < 0.3) v = static_cast<float>(gen.uniform(-1, 1));
  const auto filters = kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(w.data(), out_c, in_c * k * k), in_c, k, k);
  kernels::sparse_conv_workspace<float> ws;
  std::uint64_t seed = 900;
  const kernels::conv_epilogue none{}, pool2{false, 2, 2}, pool3s2{true, 3, 2};
  for (int round = 0; round < 2; ++round) {
    run_case<float>({1, in_c, 10, 10, out_c, k, 0, 0.3, pool2}, seed++, &ws, &filters);
    run_case<float>({3, in_c, 10, 10, out_c, k, 0, 0.3, pool2}, seed++, &ws, &filters);
    run_case<float>({1, in_c, 10, 10, out_c, k, 1, 0.3, pool2}, seed++, &ws, &filters);
    run_case<float>({1, in_c, 10, 10, out_c, k, 1, 0.3, none}, seed++, &ws, &filters);
    run_case<float>({1, in_c, 10, 10, out_c, k, 1, 0.3, pool3s2}, seed++, &ws, &filters);
    run_case<float>({1, in_c, 12, 9, out_c, k, 0, 0.3, pool2}, seed++, &ws, &filters);
  }
}

TEST_CASE("direct sparse convolution: 0 images, validation and the byte count", "[kernels][sparse][conv]") {
  std::vector<float> w(2 * 9, 0.0f);
  w[0] = 1.0f;
  w[13] = -2.0f;
  const auto f = kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(w.data(), 2, 9), 1, 3, 3);
  CHECK(f.nnz() == 2);
  CHECK(f.bytes() == 3 * 4 + 2 * 2 + 2 * 4);
  kernels::sparse_conv_workspace<float> ws;
  std::vector<float> y(1, -1.0f);
  kernels::sparse_conv2d(f.ref(), static_cast<const float*>(nullptr), {0, 1, 5, 5, 0, 0}, nullptr, {}, y.data(), ws);
  CHECK(y[0] == -1.0f);  // nothing written for an empty batch
  std::vector<float> x(25, 1.0f), out(2 * 9);
  CHECK_THROWS_AS(kernels::sparse_conv2d(f.ref(), x.data(), {1, 2, 5, 5, 0, 0}, nullptr, {}, out.data(), ws), shape_error);
  CHECK_THROWS_AS(kernels::sparse_conv2d(f.ref(), x.data(), {1, 1, 2, 5, 0, 0}, nullptr, {}, out.data(), ws), shape_error);
  CHECK_THROWS_WITH(kernels::sparse_conv2d(f.ref(), x.data(), {1, 1, 5, 5, 0, 0}, nullptr, {false, 4, 4}, out.data(), ws),
                    Catch::Contains("slimnet::kernels::sparse_conv2d") && Catch::Contains("max-pool 4"));
  CHECK_THROWS_AS(kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(w.data(), 2, 9), 1, 3, 2), shape_error);
  std::vector<float> wide(65537, 0.0f);
  CHECK_THROWS_WITH(kernels::sparse_filters<float>::from_dense(kernels::row_major<const float>(wide.data(), 1, 65537), 65537, 1, 1),
                    Catch::Contains("16-bit"));
  // A 5x5 input, 3x3 kernel, no padding: y(0, i, j) = x(i, j), y(1, i, j) = -2 x(i + 1, j + 1).
  for (index_t i = 0; i < 25; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i);
  kernels::sparse_conv2d(f.ref(), x.data(), {1, 1, 5, 5, 0, 0}, nullptr, {}, out.data(), ws);
  CHECK(out[0] == 0.0f);
  CHECK(out[4] == 6.0f);    // y(0, 1, 1) = x(1, 1)
  CHECK(out[9] == -12.0f);  // y(1, 0, 0) = -2 x(1, 1)
  CHECK(out[17] == -2.0f * 18.0f);  // y(1, 2, 2) = -2 x(3, 3)
}
