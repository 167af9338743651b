// Every layer passes the finite-difference gradient check, and computes what its naive
// definition says.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "support/gradient_check.hpp"

using namespace slimnet;
using slimnet::testing::gradient_check_options;
using slimnet::testing::require_gradients;

TEST_CASE("linear passes the gradient check", "[nn][gradient]") {
  nn::linear<double> l(7, 5);
  require_gradients(l, {3, 7});
  nn::linear<double> no_bias(4, 3, false);
  require_gradients(no_bias, {2, 4});
}

TEST_CASE("conv2d passes the gradient check with stride and padding", "[nn][gradient]") {
  SECTION("3x3, stride 1, no padding") {
    nn::conv2d<double> c(2, 3, 3);
    require_gradients(c, {2, 2, 6, 5});
  }
  SECTION("3x3, stride 2, padding 1") {
    nn::conv2d<double> c(3, 4, 3, {2, 1, true});
    require_gradients(c, {2, 3, 7, 6});
  }
  SECTION("2x4 kernel, stride 3, padding 2, no bias") {
    nn::conv2d<double> c(2, 2, 2, 4, {3, 2, false});
    require_gradients(c, {1, 2, 5, 9});
  }
  SECTION("5x5 as LeNet's conv2") {
    nn::conv2d<double> c(3, 4, 5);
    require_gradients(c, {2, 3, 8, 8});
  }
}

TEST_CASE("pooling layers pass the gradient check", "[nn][gradient]") {
  nn::max_pool2d<double> mp(2);
  require_gradients(mp, {2, 3, 6, 5});
  nn::max_pool2d<double> mp_overlap(3, 2, 1);
  require_gradients(mp_overlap, {2, 2, 7, 7});
  nn::avg_pool2d<double> ap(2);
  require_gradients(ap, {2, 3, 6, 4});
  nn::avg_pool2d<double> ap_pad(3, 2, 1);
  require_gradients(ap_pad, {1, 2, 5, 6});
}

TEST_CASE("activations, flatten and dropout pass the gradient check", "[nn][gradient]") {
  nn::relu<double> r;
  require_gradients(r, {4, 9});
  nn::tanh<double> t;
  require_gradients(t, {3, 2, 4});
  nn::sigmoid<double> s;
  require_gradients(s, {5, 3});
  nn::flatten<double> f;
  require_gradients(f, {2, 3, 2, 2});
  nn::dropout<double> d(0.4);
  gradient_check_options train;
  train.training = true;
  require_gradients(d, {4, 10}, train);
  require_gradients(d, {4, 10});
}

TEST_CASE("batch norm passes the gradient check in training and evaluation mode", "[nn][gradient]") {
  gradient_check_options train;
  train.training = true;
  auto bn1 = nn::batch_norm1d<double>(4);
  require_gradients(bn1, {6, 4}, train);
  require_gradients(bn1, {6, 4, 3}, train);
  require_gradients(bn1, {6, 4});
  auto bn2 = nn::batch_norm2d<double>(3);
  bn2.weight().value().flat() << 0.5, 1.5, -2.0;
  bn2.bias().value().flat() << 0.1, -0.2, 0.3;
  require_gradients(bn2, {3, 3, 4, 5}, train);
  require_gradients(bn2, {3, 3, 4, 5});
}

TEST_CASE("sequential passes the gradient check end to end", "[nn][gradient]") {
  nn::sequential<double> m;
  m.add("conv1", nn::conv2d<double>(1, 3, 3, {1, 1, true}));
  m.add("bn1", nn::batch_norm2d<double>(3));
  m.add("relu1", nn::relu<double>());
  m.add("pool1", nn::max_pool2d<double>(2));
  m.add("flatten", nn::flatten<double>());
  m.add("fc1", nn::linear<double>(3 * 3 * 3, 5));
  m.add("tanh", nn::tanh<double>());
  m.add("fc2", nn::linear<double>(5, 4));
  rng gen(3);
  m.reset_parameters(gen);
  gradient_check_options train;
  train.training = true;
  require_gradients(m, {4, 1, 7, 6}, train);
}

namespace {
// Direct definition of cross-correlation with zero padding.
tensor<double> naive_conv(const tensor<double>& x, const tensor<double>& w, const tensor<double>* b, index_t stride, index_t pad) {
  const index_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const index_t oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1;
  tensor<double> y({n, o, oh, ow}, 0.0);
  for (index_t in = 0; in < n; ++in)
    for (index_t io = 0; io < o; ++io)
      for (index_t i = 0; i < oh; ++i)
        for (index_t j = 0; j < ow; ++j) {
          double s = b ? (*b)[io] : 0.0;
          for (index_t ic = 0; ic < c; ++ic)
            for (index_t a = 0; a < kh; ++a)
              for (index_t bb = 0; bb < kw; ++bb) {
                const index_t ii = i * stride - pad + a, jj = j * stride - pad + bb;
                if (ii < 0 || ii >= h || jj < 0 || jj >= wd) continue;
                s += x[((in * c + ic) * h + ii) * wd + jj] * w[((io * c + ic) * kh + a) * kw + bb];
              }
          y[((in * o + io) * oh + i) * ow + j] = s;
        }
  return y;
}
}  // namespace

TEST_CASE("conv2d equals the direct definition over odd shapes", "[nn]") {
  rng gen(9);
  for (auto [c, o, k, stride, pad, h, w] : std::vector<std::array<index_t, 7>>{
           {1, 1, 1, 1, 0, 1, 1}, {1, 20, 5, 1, 0, 28, 28}, {3, 7, 3, 2, 1, 11, 13}, {2, 5, 4, 3, 2, 9, 7}, {4, 3, 3, 1, 1, 5, 5}}) {
    nn::conv2d<double> conv(c, o, k, {stride, pad, true});
    conv.reset_parameters(gen);
    tensor<double> x({3, c, h, w});
    for (index_t i = 0; i < x.size(); ++i) x[i] = gen.normal();
    tensor<double> y;
    conv.forward(x, y, {});
    const auto expected = naive_conv(x, conv.weight().value(), &conv.bias()->value(), stride, pad);
    REQUIRE(y.shape() == expected.shape());
    CHECK((y.flat() - expected.flat()).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("max pooling picks the window maximum and routes the gradient to it", "[nn]") {
  nn::max_pool2d<float> pool(2);
  tensor<float> x({1, 1, 2, 4});
  x.flat() << 1, 5, 2, 0, 3, 4, 8, 7;
  tensor<float> y;
  pool.forward(x, y, {});
  REQUIRE(y.shape() == shape_t{1, 1, 1, 2});
  CHECK(y[0] == 5);
  CHECK(y[1] == 8);
  tensor<float> dy({1, 1, 1, 2}), dx;
  dy.flat() << 10, 20;
  pool.backward(x, y, dy, &dx);
  tensor<float> expected({1, 1, 2, 4});
  expected.flat() << 0, 10, 0, 0, 0, 0, 20, 0;
  CHECK(dx.flat() == expected.flat());
}

TEST_CASE("batch norm keeps PyTorch's running statistics", "[nn]") {
  auto bn = nn::batch_norm1d<double>(1);
  tensor<double> x({4, 1}), y;
  x.flat() << 1, 2, 3, 6;  // mean 3, biased var 3.5, unbiased var 14/3
  rng gen(1);
  bn.forward(x, y, {true, &gen});
  CHECK(bn.running_mean().value()[0] == Approx(0.3));
  CHECK(bn.running_var().value()[0] == Approx(0.9 + 0.1 * 14.0 / 3.0));
  CHECK(y[0] == Approx((1 - 3) / std::sqrt(3.5 + 1e-5)));
  bn.forward(x, y, {false, &gen});
  CHECK(y[3] == Approx((6 - 0.3) / std::sqrt(0.9 + 0.1 * 14.0 / 3.0 + 1e-5)));
}

TEST_CASE("dropout zeroes about p of the inputs and rescales the rest", "[nn]") {
  nn::dropout<float> d(0.25);
  tensor<float> x({100, 100}, 1.0f), y;
  rng gen(5);
  d.forward(x, y, {true, &gen});
  const index_t zeros = (y.flat().array() == 0.0f).count();
  CHECK(std::abs(static_cast<double>(zeros) / 1e4 - 0.25) < 0.02);
  CHECK((y.flat().array() == 0.0f || (y.flat().array() - 1.0f / 0.75f).abs() < 1e-6f).all());
  d.forward(x, y, {false, &gen});
  CHECK(y.flat() == x.flat());
  CHECK_THROWS_AS(nn::dropout<float>(1.0), config_error);
}

TEST_CASE("layers reject inputs that do not fit, naming the layer and the shape", "[nn][errors]") {
  nn::linear<float> l(784, 300);
  tensor<float> x({2, 783}), y;
  CHECK_THROWS_WITH(l.forward(x, y, {}), Catch::Contains("slimnet::nn::linear::forward") && Catch::Contains("(2, 783)"));
  nn::conv2d<float> c(1, 20, 5);
  tensor<float> img({1, 3, 28, 28});
  CHECK_THROWS_AS(c.forward(img, y, {}), shape_error);
  tensor<float> tiny({1, 1, 4, 4});
  CHECK_THROWS_AS(c.forward(tiny, y, {}), shape_error);
  CHECK_THROWS_AS(nn::conv2d<float>(1, 0, 5), config_error);
  CHECK_THROWS_AS(nn::max_pool2d<float>(0), config_error);
}

namespace {
// A linear layer whose weight gradient is off by 1%: the checker must catch it.
struct broken_linear : nn::linear<double> {
  using nn::linear<double>::linear;
  void backward(const tensor<double>& x, const tensor<double>& y, const tensor<double>& dy, tensor<double>* dx) override {
    nn::linear<double>::backward(x, y, dy, dx);
    weight().grad().flat() *= 1.01;
  }
};
}  // namespace

TEST_CASE("the gradient checker catches a wrong gradient", "[nn][gradient]") {
  broken_linear l(3, 2);
  const auto r = slimnet::testing::check_gradients(l, {2, 3});
  CHECK(r.worst_error > 1e-3);
  CHECK_THAT(r.worst_where, Catch::Contains("weight"));
}

TEMPLATE_TEST_CASE("conv2d forward and backward equal the direct definition across several im2col chunks", "[nn]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 2e-4 : 1e-9;
  // LeNet's conv2 shape works on chunks of a few images; 9 images leave a partial last chunk.
  rng gen(21);
  nn::conv2d<TestType> conv(20, 50, 5);
  conv.reset_parameters(gen);
  tensor<TestType> x({9, 20, 12, 12}), y, dy({9, 50, 8, 8}), dx;
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(gen.normal());
  for (index_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<TestType>(gen.normal());
  conv.forward(x, y, {});
  const tensor<double> bias = conv.bias()->value().template cast<double>();
  const auto expected = naive_conv(x.template cast<double>(), conv.weight().value().template cast<double>(), &bias, 1, 0);
  CHECK((y.flat().template cast<double>() - expected.flat()).cwiseAbs().maxCoeff() < tol);
  conv.weight().zero_grad();
  conv.bias()->zero_grad();
  conv.backward(x, y, dy, &dx);
  // Direct definitions: dW[o,c,a,b] = sum dy[n,o,i,j] x[n,c,i+a,j+b]; dx[n,c,i+a,j+b] += dy[n,o,i,j] W[o,c,a,b].
  tensor<double> dw({50, 20, 5, 5}, 0.0), dx_ref(x.shape(), 0.0), db({50}, 0.0);
  const auto& w = conv.weight().value();
  for (index_t n = 0; n < 9; ++n)
    for (index_t o = 0; o < 50; ++o)
      for (index_t i = 0; i < 8; ++i)
        for (index_t j = 0; j < 8; ++j) {
          const double g = dy[((n * 50 + o) * 8 + i) * 8 + j];
          db[o] += g;
          for (index_t c = 0; c < 20; ++c)
            for (index_t a = 0; a < 5; ++a)
              for (index_t b = 0; b < 5; ++b) {
                const index_t xi = ((n * 20 + c) * 12 + i + a) * 12 + j + b, wi = ((o * 20 + c) * 5 + a) * 5 + b;
                dw[wi] += g * x[xi];
                dx_ref[xi] += g * w[wi];
              }
        }
  CHECK((conv.weight().grad().flat().template cast<double>() - dw.flat()).cwiseAbs().maxCoeff() < tol * 10);
  CHECK((conv.bias()->grad().flat().template cast<double>() - db.flat()).cwiseAbs().maxCoeff() < tol * 10);
  CHECK((dx.flat().template cast<double>() - dx_ref.flat()).cwiseAbs().maxCoeff() < tol);
}
