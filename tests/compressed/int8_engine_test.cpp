// The int8 engine's direct convolution (kernels/int8_conv.hpp inside compressed_conv2d): the
// kernel against its definition over odd shapes, paddings and fused epilogues (VNNI and portable
// paths, outputs poisoned with NaN), int8 Conv2d layers and the whole int8 LeNet-5 against the float
// model within the bound their quantization steps give, NaN / Inf images, and the dispatched path.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <tuple>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/int8_conv.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::poisoned_forward;
using slimnet::testing::random_tensor;

namespace {

/// Bitwise equal, NaN equal to NaN (the poison left in place is a NaN where the reference has none).
template <class Scalar>
index_t i8_mismatches(const std::vector<Scalar>& a, const std::vector<Scalar>& b) {
  index_t bad = 0;
  for (std::size_t i = 0; i < a.size(); ++i) bad += !(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])));
  return bad;
}

struct i8_conv_case {
  index_t in_c, out_c, kh, kw, pad, h, w;
};

}  // namespace

TEMPLATE_TEST_CASE("int8_conv2d equals its definition over odd shapes, paddings and epilogues", "[compressed][int8][kernels]", float,
                   double) {
  rng gen(21);
  const i8_conv_case cases[] = {{1, 20, 5, 5, 0, 28, 28}, {20, 50, 5, 5, 0, 12, 12}, {1, 1, 1, 1, 0, 1, 1},  {3, 7, 3, 3, 1, 11, 13},
                             {4, 5, 2, 7, 2, 9, 10},   {7, 13, 3, 5, 0, 7, 17},   {2, 3, 5, 1, 1, 6, 5},  {9, 6, 1, 1, 0, 5, 3},
                             {5, 17, 4, 4, 3, 4, 4},   {16, 11, 3, 3, 1, 15, 15}};
  const kernels::conv_epilogue epilogues[] = {{false, 0, 0}, {true, 0, 0}, {false, 2, 2}, {true, 2, 2}, {true, 3, 2}, {false, 2, 1}};
  for (const auto& c : cases) {
    std::vector<std::int8_t> codes(static_cast<std::size_t>(c.out_c * c.in_c * c.kh * c.kw));
    for (auto& q : codes) q = static_cast<std::int8_t>(static_cast<int>(gen.below(255)) - 127);
    std::vector<float> scale(static_cast<std::size_t>(c.out_c));
    std::vector<TestType> bias(scale.size());
    for (auto& s : scale) s = static_cast<float>(gen.uniform(0.001, 0.05));
    for (auto& b : bias) b = static_cast<TestType>(gen.uniform(-1, 1));
    const kernels::int8_conv_filters f(codes.data(), c.out_c, c.in_c, c.kh, c.kw);
    for (index_t o = 0; o < c.out_c; ++o)
      for (index_t ci = 0; ci < c.in_c; ++ci)
        for (index_t ki = 0; ki < c.kh; ++ki)
          for (index_t kj = 0; kj < c.kw; ++kj) REQUIRE(f.at(o, ci, ki, kj) == codes[static_cast<std::size_t>(((o * c.in_c + ci) * c.kh + ki) * c.kw + kj)]);
    for (index_t batch : {1, 3}) {
      const kernels::conv_input in{batch, c.in_c, c.h, c.w, c.pad, c.pad};
      const index_t oh = c.h + 2 * c.pad - c.kh + 1, ow = c.w + 2 * c.pad - c.kw + 1;
      const auto x = random_tensor<TestType>({batch, c.in_c, c.h, c.w}, gen, -2, 3);
      for (const auto& ep : epilogues) {
        if (ep.pooled() && (ep.pool_kernel > oh || ep.pool_kernel > ow)) continue;
        for (double step : {0.0, 0.02}) {  // dynamic per image, and a fixed step (codes saturate at +-127)
          const std::size_t out = static_cast<std::size_t>(batch * c.out_c * ep.out(oh) * ep.out(ow));
          std::vector<TestType> ref(out, std::numeric_limits<TestType>::quiet_NaN());
          kernels::int8_conv2d_reference(codes.data(), c.out_c, c.kh, c.kw, x.data(), in, scale.data(), bias.data(), step, ep, ref.data());
          INFO("in " << c.in_c << " out " << c.out_c << " kernel " << c.kh << "x" << c.kw << " pad " << c.pad << " input " << c.h << "x"
                     << c.w << " batch " << batch << " relu " << ep.relu << " pool " << ep.pool_kernel << "/" << ep.pool_stride << " step "
                     << step);
          REQUIRE(std::none_of(ref.begin(), ref.end(), [](TestType v) { return std::isnan(v); }));
          kernels::int8_conv_workspace ws;
          for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
            for (int call = 0; call < 2; ++call) {  // the second call reuses the workspace
              std::vector<TestType> got(out, std::numeric_limits<TestType>::quiet_NaN());
              kernels::int8_conv2d(f, x.data(), in, scale.data(), bias.data(), step, ep, got.data(), ws, path);
              CHECK(i8_mismatches(got, ref) == 0);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("int8_conv2d refuses inputs and epilogues that do not fit", "[compressed][int8][kernels]") {
  std::vector<std::int8_t> codes(2 * 3 * 9, 1);
  const kernels::int8_conv_filters f(codes.data(), 2, 3, 3, 3);
  std::vector<float> x(3 * 25), y(2 * 25), scale(2, 1.0f);
  kernels::int8_conv_workspace ws;
  CHECK_THROWS_AS(kernels::int8_conv2d(f, x.data(), {1, 2, 5, 5, 0, 0}, scale.data(), static_cast<const float*>(nullptr), 0.0, {}, y.data(), ws),
                  shape_error);
  CHECK_THROWS_AS(kernels::int8_conv2d(f, x.data(), {1, 3, 2, 2, 0, 0}, scale.data(), static_cast<const float*>(nullptr), 0.0, {}, y.data(), ws),
                  shape_error);
  CHECK_THROWS_AS(kernels::int8_conv2d(f, x.data(), {1, 3, 5, 5, 0, 0}, scale.data(), static_cast<const float*>(nullptr), 0.0,
                                       {false, 4, 2}, y.data(), ws),
                  shape_error);
  CHECK_THROWS_WITH(kernels::int8_conv2d(f, x.data(), {1, 3, 5, 5, 0, 0}, scale.data(), static_cast<const float*>(nullptr), -1.0, {},
                                         y.data(), ws),
                    Catch::Contains("int8_conv2d") && Catch::Contains("-1"));
  CHECK_THROWS_AS(kernels::int8_conv_filters(codes.data(), 0, 3, 3, 3), shape_error);
}

TEST_CASE("the VNNI int8 kernels are the dispatched path on a CPU that has them", "[compressed][int8][kernels]") {
  // The paths are chosen at run time whatever the -march of the build: with the automatic family
  // (no SLIMNET_ISA), a CPU with AVX-512 VNNI must get the VNNI convolution and int8 GEMM, and a
  // CPU without it must not. The CPU is asked through the compiler's cpuid, not slimnet's.
#if defined(__GNUC__) && defined(__x86_64__)
  if (std::getenv("SLIMNET_ISA") != nullptr) return;  // a forced family decides the path instead
  __builtin_cpu_init();
  const bool cpu = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  INFO("CPU has AVX-512 VNNI: " << cpu);
  CHECK((kernels::int8_conv_path() == kernels::isa::avx512) == cpu);
  CHECK((kernels::gemm_int_path() == kernels::isa::avx512) == cpu);
#endif
}

TEMPLATE_TEST_CASE("an int8 Conv2d is within the activation-step bound of the float layer on its weights", "[compressed][int8]", float,
                   double) {
  rng gen(22);
  for (const i8_conv_case c : {i8_conv_case{1, 20, 5, 5, 0, 28, 28}, i8_conv_case{20, 50, 5, 5, 0, 12, 12}, i8_conv_case{3, 7, 3, 3, 1, 11, 13}}) {
    nn::conv2d<TestType> conv(c.in_c, c.out_c, c.kh, {1, c.pad, true});
    conv.reset_parameters(gen);
    auto q = nc::to_int8(conv);
    REQUIRE(q.kind() == "Int8Conv2d");
    // The float layer on the int8 engine's effective weights (s_o q_o): what is left is the
    // activation rounding, |p t - x| <= t / 2 per input, so per output |y - y_float| <=
    // t_n / 2 sum |w_o| plus float rounding.
    const auto w = q.weights().effective_weights();
    conv.weight().value().matrix() = w;
    const auto x = random_tensor<TestType>({3, c.in_c, c.h, c.w}, gen, -1, 2);
    tensor<TestType> yf;
    conv.forward(x, yf, {});
    const auto y = poisoned_forward(q, x);
    REQUIRE(y.shape() == yf.shape());
    const index_t per_image = x.size() / 3, plane = yf.dim(2) * yf.dim(3);
    double worst_ratio = 0;
    for (index_t n = 0; n < 3; ++n) {
      double m = 0;
      for (index_t i = 0; i < per_image; ++i) m = std::max(m, std::abs(double(x[n * per_image + i])));
      const double t = m / 127;
      for (index_t o = 0; o < c.out_c; ++o) {
        const double bound = t / 2 * w.row(o).cwiseAbs().template cast<double>().sum() * (1 + 1e-5) + 1e-5;
        for (index_t p = 0; p < plane; ++p) {
          const index_t e = (n * c.out_c + o) * plane + p;
          const double err = std::abs(double(y[e]) - double(yf[e]));
          REQUIRE(err <= bound);
          worst_ratio = std::max(worst_ratio, err / bound);
        }
      }
    }
    CHECK(worst_ratio > 0.01);  // the bound is not vacuous: the rounding is visible
  }
}

TEST_CASE("the int8 LeNet-5 stays within the bound propagated from its quantization steps", "[compressed][int8]") {
  rng gen(23);
  auto model = nn::models::lenet5<float>(gen);
  auto int8 = model;
  nc::compress_options unfused_linear;  // flatten and relu1 stay layers: the checks below step through them
  unfused_linear.fuse_linear = false;
  const auto report = nc::compress(int8, nc::format::int8, unfused_linear);
  REQUIRE(int8.size() == 6);  // conv1+pool1, conv2+pool2, flatten, fc1, relu1, fc2
  REQUIRE(int8[0].kind() == "Int8Conv2d");
  REQUIRE(int8[1].kind() == "Int8Conv2d");
  // The float reference runs the int8 engines' effective weights, so only activations are rounded.
  std::vector<row_matrix<float>> weights;
  for (std::size_t i : {0u, 1u, 3u, 5u}) {
    const nc::engine<float>* e = nullptr;
    if (auto* cc = dynamic_cast<nc::compressed_conv2d<float>*>(&int8[i])) e = &cc->weights();
    if (auto* cl = dynamic_cast<nc::compressed_linear<float>*>(&int8[i])) e = &cl->weights();
    REQUIRE(e != nullptr);
    weights.push_back(e->effective_weights());
  }
  int k = 0;
  model.visit_parameters([&](nn::parameter<float>& p) {
    if (p.name().size() > 7 && p.name().compare(p.name().size() - 7, 7, ".weight") == 0) {
      Eigen::Map<row_matrix<float>>(p.value().data(), weights[static_cast<std::size_t>(k)].rows(), weights[static_cast<std::size_t>(k)].cols()) =
          weights[static_cast<std::size_t>(k)];
      ++k;
    }
  });
  REQUIRE(k == 4);
  const index_t batch = 4;
  const auto x = random_tensor<float>({batch, 1, 28, 28}, gen, 0, 1);
  tensor<float> yf;
  model.forward(x, yf, {});
  const auto y = poisoned_forward(int8, x);
  tensor<float> a1, a2, a3, a4, a5;
  int8[0].forward(x, a1, {});
  int8[1].forward(a1, a2, {});
  int8[2].forward(a2, a3, {});
  int8[3].forward(a3, a4, {});
  int8[4].forward(a4, a5, {});
  const tensor<float>* inputs[] = {&x, &a1, &a3, &a5};  // what conv1, conv2, fc1 and fc2 quantize
  // 1. Each quantized layer against its float layer on the same (int8 model's) input: per output
  //    channel o of image n, |y - y_float| <= t_n / 2 sum |w_o| (max-pool is 1-Lipschitz, so the
  //    pooled outputs keep the bound), plus float rounding.
  const std::pair<std::vector<std::size_t>, std::size_t> pairs[] = {{{0, 1}, 0}, {{2, 3}, 1}, {{5}, 3}, {{7}, 5}};  // float layers, int8 layer
  for (int l = 0; l < 4; ++l) {
    const tensor<float>& in = *inputs[l];
    tensor<float> yq, yl = in, tmp;
    int8[pairs[l].second].forward(in, yq, {});
    for (std::size_t f : pairs[l].first) {
      model[f].forward(yl, tmp, {});
      yl = tmp;
    }
    REQUIRE(yq.shape() == yl.shape());
    const auto& w = weights[static_cast<std::size_t>(l)];
    const index_t per_in = in.size() / batch, per_out = yq.size() / batch, plane = per_out / w.rows();
    double worst = 0;
    for (index_t n = 0; n < batch; ++n) {
      double m = 0;
      for (index_t i = 0; i < per_in; ++i) m = std::max(m, std::abs(double(in[n * per_in + i])));
      for (index_t o = 0; o < w.rows(); ++o) {
        const double bound = m / 127 / 2 * double(w.row(o).cwiseAbs().sum());
        for (index_t p = 0; p < plane; ++p) {
          const index_t e = n * per_out + o * plane + p;
          const double err = std::abs(double(yq[e]) - double(yl[e]));
          REQUIRE(err <= bound * (1 + 1e-4) + 1e-5 * (1 + std::abs(double(yl[e]))));
          worst = std::max(worst, err / bound);
        }
      }
    }
    INFO("layer " << l << ": worst error / bound " << worst);
    CHECK(worst > 0.01);  // the bound is not vacuous
  }
  // 2. End to end: the sup-norm error e of each layer's output follows from its input error e_in
  //    and its own step t: e <= max_o sum |w_o| (t / 2 + e_in); pooling, flatten and ReLU do not
  //    increase it. Loose (each layer multiplies by its gain), but a bound from the steps alone.
  for (index_t n = 0; n < batch; ++n) {
    double e = 0;
    for (int l = 0; l < 4; ++l) {
      const tensor<float>& in = *inputs[l];
      const index_t per = in.size() / batch;
      double m = 0;
      for (index_t i = 0; i < per; ++i) m = std::max(m, std::abs(double(in[n * per + i])));
      const double t = m / 127;
      double gain = 0;
      for (index_t o = 0; o < weights[static_cast<std::size_t>(l)].rows(); ++o)
        gain = std::max(gain, double(weights[static_cast<std::size_t>(l)].row(o).cwiseAbs().sum()));
      e = gain * (t / 2 + e) * (1 + 1e-4) + 1e-5;
    }
    for (index_t j = 0; j < 10; ++j) REQUIRE(std::abs(double(y[n * 10 + j]) - double(yf[n * 10 + j])) <= e);
  }
}

TEMPLATE_TEST_CASE("an image holding NaN or Inf gives NaN outputs for that image only", "[compressed][int8]", float, double) {
  rng gen(24);
  auto model = nn::models::lenet5<TestType>(gen);
  nc::compress_options unfused_linear;  // flatten and relu1 stay layers: fc1's own output is checked
  unfused_linear.fuse_linear = false;
  nc::compress(model, nc::format::int8, unfused_linear);
  // Up to fc1 (ReLU after it would turn NaN into 0, in the float model too).
  auto through_fc1 = [](nn::sequential<TestType>& m, const tensor<TestType>& x) {
    tensor<TestType> a = x;
    for (std::size_t i = 0; i < 4; ++i) a = poisoned_forward(m[i], a);
    return a;
  };
  const auto x = random_tensor<TestType>({3, 1, 28, 28}, gen, 0, 1);
  const auto clean = through_fc1(model, x);
  const index_t width = clean.size() / 3;
  for (TestType bad : {std::numeric_limits<TestType>::quiet_NaN(), std::numeric_limits<TestType>::infinity(),
                       -std::numeric_limits<TestType>::infinity()}) {
    for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
      auto m = model;
      for (std::size_t i = 0; i < m.size(); ++i)
        if (auto* cc = dynamic_cast<nc::compressed_conv2d<TestType>*>(&m[i]))
          const_cast<nc::int8_engine<TestType>&>(dynamic_cast<const nc::int8_engine<TestType>&>(cc->weights())).set_path(path);
      auto xb = x;
      xb[784 + 300] = bad;  // image 1
      const auto y = through_fc1(m, xb);
      REQUIRE(m[3].kind() == "Int8Linear");
      for (index_t j = 0; j < width; ++j) {
        CHECK(std::isnan(y[width + j]));
        CHECK(y[j] == clean[j]);  // images are quantized on their own
        CHECK(y[2 * width + j] == clean[2 * width + j]);
      }
      // The convolution alone: every output of image 1 is NaN, ReLU included.
      nn::conv2d<TestType> conv(1, 4, 3);
      conv.reset_parameters(gen);
      auto q = nc::to_int8(conv);
      q.fuse({true, 2, 2});
      const auto yc = poisoned_forward(q, xb);
      const index_t per = yc.size() / 3;
      for (index_t i = 0; i < per; ++i) {
        CHECK(std::isnan(yc[per + i]));
        CHECK_FALSE(std::isnan(yc[i]));
      }
    }
  }
}

TEMPLATE_TEST_CASE("an int8 Linear: VNNI and portable paths agree; a row with NaN or Inf gives NaN for that row only", "[compressed][int8]",
                   float, double) {
  rng gen(25);
  for (const auto& [in, out, batch] : {std::tuple<index_t, index_t, index_t>{800, 500, 1}, {500, 10, 64}, {37, 19, 7}, {3, 70, 13}}) {
    nn::linear<TestType> fc(in, out);
    fc.reset_parameters(gen);
    for (double step : {0.0, 0.01}) {
      nc::int8_options o;
      o.activation_step = step;
      auto fast = nc::to_int8(fc, o);
      auto portable = fast;
      dynamic_cast<nc::int8_engine<TestType>&>(portable.weights()).set_path(kernels::kernel_path::portable);
      auto x = random_tensor<TestType>({batch, in}, gen, -1, 1);
      INFO("in " << in << " out " << out << " batch " << batch << " step " << step);
      const auto yf = poisoned_forward(fast, x), yp = poisoned_forward(portable, x);
      index_t bad = 0;
      for (index_t i = 0; i < yf.size(); ++i) bad += !(std::abs(double(yf[i]) - double(yp[i])) <= 1e-5 * (1 + std::abs(double(yp[i]))));
      CHECK(bad == 0);
      const index_t row = batch / 2;
      for (TestType v : {std::numeric_limits<TestType>::quiet_NaN(), std::numeric_limits<TestType>::infinity()}) {
        auto xb = x;
        xb[row * in + in / 3] = v;
        for (auto [l, clean] : {std::pair{&fast, &yf}, std::pair{&portable, &yp}}) {
          const auto y = poisoned_forward(*l, xb);
          for (index_t i = 0; i < batch; ++i)
            for (index_t j = 0; j < out; ++j) {
              if (i == row) {
                CHECK(std::isnan(y[i * out + j]));
              } else {
                CHECK(y[i * out + j] == (*clean)[i * out + j]);
              }
            }
        }
      }
    }
  }
}
