// BinaryConnect and BNN: binarization, the weight transform, the sign activation's
// straight-through rule, shift-based BatchNorm and AdaMax, and a trained BNN deployed on XNOR layers.
#include "slimnet/quant/binary.hpp"

#include <catch2/catch.hpp>
#include <cmath>

#include "slimnet/nn.hpp"
#include "slimnet/nn/compressed/binary_model.hpp"
#include "slimnet/quant/shift.hpp"
#include "slimnet/train.hpp"
#include "support/gradient_check.hpp"

using namespace slimnet;
using quant::binarization;

TEMPLATE_TEST_CASE("deterministic and stochastic binarization", "[quant][binary]", float, double) {
  Eigen::Matrix<TestType, 1, 5> x;
  x << TestType(-0.3), TestType(0), TestType(2), TestType(-7), TestType(1e-30);
  auto d = x;
  quant::binarize_in_place(d);
  CHECK(d == (Eigen::Matrix<TestType, 1, 5>() << -1, 1, 1, -1, 1).finished());
  auto s = x;
  quant::binarize_in_place(s, binarization::deterministic, nullptr, 0.25);
  CHECK(s == (Eigen::Matrix<TestType, 1, 5>() << -0.25, 0.25, 0.25, -0.25, 0.25).finished());
  CHECK(quant::hard_sigmoid(-3) == 0.0);
  CHECK(quant::hard_sigmoid(0.5) == 0.75);
  CHECK(quant::hard_sigmoid(1.5) == 1.0);

  // P(+1) = hard_sigmoid(w): check the frequency within 5 standard errors; outside [-1, 1] the
  // outcome is certain.
  rng gen(3);
  const int n = 20000;
  for (double w : {-1.5, -0.6, 0.0, 0.3, 0.95, 1.0, 4.0}) {
    Eigen::Matrix<TestType, Eigen::Dynamic, 1> v =
        Eigen::Matrix<TestType, Eigen::Dynamic, 1>::Constant(n, static_cast<TestType>(w));
    quant::binarize_in_place(v, binarization::stochastic, &gen);
    CHECK((v.array().abs() == TestType(1)).all());
    const double p = quant::hard_sigmoid(static_cast<TestType>(w));
    const double freq = static_cast<double>((v.array() > 0).count()) / n;
    INFO("w = " << w);
    CHECK(std::abs(freq - p) <= 5 * std::sqrt(p * (1 - p) / n) + 1e-12);
  }
  CHECK_THROWS_AS(quant::binarize_in_place(x, binarization::stochastic), config_error);
  CHECK_THROWS_AS(quant::binarize_in_place(x, binarization::deterministic, nullptr, 0.0),
                  config_error);
}

TEST_CASE("stochastic binarization of a tensor: P(+scale) = hard_sigmoid(w / scale), same draws as "
          "the matrix path",
          "[quant][binary]") {
  // The training path (a contiguous tensor) and the Eigen path must consume the generator in the
  // same order, so one seed gives the same binary weights through either.
  const double scale = 0.25;
  const index_t rows = 101, cols = 199;  // odd sizes: an odd count leaves half a draw unused
  tensor<float> w({rows, cols});
  rng init(5);
  for (index_t i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(init.uniform(-0.4, 0.4));
  Eigen::MatrixXf m = w.matrix();
  rng a(9), b(9);
  quant::binarize_in_place(w, binarization::stochastic, &a, scale);
  quant::binarize_in_place(m, binarization::stochastic, &b, scale);
  CHECK(w.matrix() == m);
  CHECK((m.array().abs() == 0.25f).all());

  // Frequencies at fixed values, within 5 standard errors; values beyond +-scale are certain.
  const index_t n = 40001;
  rng gen(11);
  for (double v : {-0.3, -0.25, -0.1, 0.0, 0.05, 0.2, 0.25, 1.0}) {
    tensor<float> t({n});
    t.flat().setConstant(static_cast<float>(v));
    quant::binarize_in_place(t, binarization::stochastic, &gen, scale);
    const double p = quant::hard_sigmoid(v / scale);
    const double freq = static_cast<double>((t.flat().array() > 0).count()) / static_cast<double>(n);
    INFO("v = " << v);
    CHECK(std::abs(freq - p) <= 5 * std::sqrt(p * (1 - p) / static_cast<double>(n)) + 1e-12);
  }
}

TEST_CASE(
    "BinaryConnect transform: binary forward, straight-through backward, clipped real weights",
    "[quant][binary]") {
  nn::linear<double> l(3, 2);
  l.weight().value().flat() << 0.5, -0.2, 1.7, -3.0, 0.0, 0.9;
  quant::binary_connect_options o;
  o.mode = binarization::stochastic;
  auto t = quant::attach_binary_connect(l.weight(), o);
  // Attaching clips the real weights.
  CHECK(l.weight().value().flat() == (column_vector<double>(6) << 0.5, -0.2, 1.0, -1.0, 0.0, 0.9).finished());
  rng gen(1);
  const auto& eval = l.weight().forward_value({false, &gen});  // evaluation: deterministic signs
  CHECK(eval.flat() == (column_vector<double>(6) << 1, -1, 1, -1, 1, 1).finished());
  const auto& train_w = l.weight().forward_value({true, &gen});
  CHECK((train_w.flat().array().abs() == 1.0).all());
  CHECK(train_w[2] == 1.0);   // w = 1: P(+1) = 1
  CHECK(train_w[3] == -1.0);  // w = -1: P(+1) = 0

  // Backward: dL/dW = dL/dW_b (the layer accumulated it with the binary weights).
  tensor<double> x({2, 3}, 0.5), y, dy({2, 2}, 1.0), dx;
  l.forward(x, y, {true, &gen});
  const tensor<double> wb = l.weight().used_value();
  l.weight().zero_grad();
  l.backward(x, y, dy, &dx);
  const tensor<double> g = l.weight().grad();
  l.weight().transform_gradient();
  CHECK(l.weight().grad().flat() == g.flat());
  // dx was computed with the binary weights: dx = dy W_b.
  CHECK(dx.matrix() == (dy.matrix() * wb.matrix()).eval());
  // After an update the real weights are clipped to [-1, 1].
  train::sgd<double> opt(train::sgd_options{}.with_lr(10.0));
  opt.step(l);
  l.weight().after_step();
  CHECK(l.weight().value().flat().cwiseAbs().maxCoeff() <= 1.0);

  // real_weights_at_test evaluates with W itself.
  nn::linear<double> r(3, 2);
  quant::binary_connect_options ro;
  ro.real_weights_at_test = true;
  quant::attach_binary_connect(r.weight(), ro);
  CHECK(r.weight().forward_value({false, &gen}).flat() == r.weight().value().flat());

  // rescale: W scaled so that max |W| = scale before clipping.
  nn::linear<double> s(3, 2);
  s.weight().value().flat() << 0.1, -0.2, 0.05, 0.0, 0.15, -0.1;
  quant::binary_connect_options so;
  so.rescale = true;
  so.scale = 0.5;
  quant::attach_binary_connect(s.weight(), so);
  CHECK(s.weight().value().flat().isApprox((column_vector<double>(6) << 0.25, -0.5, 0.125, 0.0, 0.375, -0.25).finished()));

  // binary_connect() binarizes the weights of every Linear and Conv2d, never the biases.
  rng g2(2);
  auto lenet = nn::models::lenet5<float>(g2);
  CHECK(quant::binary_connect(lenet, {}) == 4);
  lenet.visit_parameters([](nn::parameter<float>& p) {
    CHECK(p.transforms().size() == (p.local_name() == "weight" ? 1u : 0u));
  });
  quant::binary_connect_options bad;
  bad.scale = -1;
  CHECK_THROWS_AS(quant::binary_connect(lenet, bad), config_error);
}

TEMPLATE_TEST_CASE("sign activation: forward sign, straight-through gradient g_r = g_q 1{|r| <= 1}",
                   "[quant][binary]", float, double) {
  quant::sign_activation<TestType> s;
  tensor<TestType> x({2, 4}), y, dy({2, 4}), dx;
  x.flat() << TestType(-2), TestType(-1), TestType(-0.5), TestType(0), TestType(0.25), TestType(1),
      TestType(1.0001), TestType(30);
  dy.flat() << 1, 2, 3, 4, 5, 6, 7, 8;
  rng gen(1);
  s.forward(x, y, {true, &gen});
  CHECK(y.flat() == (column_vector<TestType>(8) << -1, -1, -1, 1, 1, 1, 1, 1).finished());
  s.backward(x, y, dy, &dx);
  CHECK(dx.flat() == (column_vector<TestType>(8) << 0, 2, 3, 4, 5, 6, 0, 0).finished());

  quant::sign_activation<TestType> st(binarization::stochastic);
  tensor<TestType> z({1, 10000}, TestType(0.5));
  st.forward(z, y, {true, &gen});
  const double freq = static_cast<double>((y.flat().array() > 0).count()) / 10000.0;
  CHECK(std::abs(freq - 0.75) < 5 * std::sqrt(0.75 * 0.25 / 10000));
  st.forward(z, y, {false, &gen});  // evaluation: deterministic
  CHECK((y.flat().array() == TestType(1)).all());
}

TEMPLATE_TEST_CASE("AP2 is sign(z) 2^round(log2 |z|)", "[quant][shift]", float, double) {
  CHECK(quant::ap2(TestType(1)) == 1);
  CHECK(quant::ap2(TestType(3)) == 4);    // log2 3 = 1.58
  CHECK(quant::ap2(TestType(2.8)) == 2);  // log2 2.8 = 1.49
  CHECK(quant::ap2(TestType(-0.3)) == TestType(-0.25));
  CHECK(quant::ap2(TestType(0)) == 0);
  CHECK(quant::ap2(TestType(1e-3)) == std::ldexp(TestType(1), -10));
  // Either side of sqrt(2) in each binade (the nearest float to sqrt(2) lies below it, the
  // nearest double above), subnormals, and the values nearest 2^k sqrt(2) checked in long double.
  CHECK(quant::ap2(std::sqrt(TestType(2))) == (std::is_same_v<TestType, float> ? 1 : 2));
  CHECK(quant::ap2(std::nextafter(std::sqrt(TestType(2)), TestType(0))) == 1);
  CHECK(quant::ap2(std::nextafter(std::sqrt(TestType(2)), TestType(2))) == 2);
  CHECK(quant::ap2(TestType(-3) * std::numeric_limits<TestType>::denorm_min()) ==
        -4 * std::numeric_limits<TestType>::denorm_min());
  CHECK(quant::ap2(std::numeric_limits<TestType>::infinity()) ==
        std::numeric_limits<TestType>::infinity());
  for (int k = -30; k <= 30; ++k) {
    for (TestType z : {std::nextafter(std::ldexp(std::sqrt(TestType(2)), k), TestType(0)),
                       std::ldexp(std::sqrt(TestType(2)), k),
                       std::nextafter(std::ldexp(std::sqrt(TestType(2)), k), TestType(1e30))}) {
      const long double l =
          std::log2l(static_cast<long double>(z)) - k;  // in (0, 1): compare with 1/2
      REQUIRE(quant::ap2(z) == std::ldexp(TestType(1), l > 0.5L ? k + 1 : k));
    }
  }
  rng gen(4);
  for (int i = 0; i < 10000; ++i) {
    const auto z =
        static_cast<TestType>(std::exp(gen.uniform(-20, 20)) * (gen.bernoulli(0.5) ? 1 : -1));
    const TestType expected =
        std::copysign(std::pow(TestType(2), std::round(std::log2(std::abs(z)))), z);
    REQUIRE(quant::ap2(z) == expected);
  }
}

TEST_CASE(
    "shift-based BatchNorm passes the gradient check (input gradient; AP2 factors are piecewise "
    "constant)",
    "[quant][shift][gradient]") {
  testing::gradient_check_options train;
  train.training = true;
  quant::shift_batch_norm<double> bn(3, {1e-4, 0.1, false});
  testing::require_gradients(bn, {6, 3}, train);
  testing::require_gradients(bn, {4, 3, 5}, train);
  testing::require_gradients(bn, {3, 3, 2, 4}, train);
  testing::require_gradients(bn, {5, 3});  // evaluation mode with the running statistics
}

TEST_CASE("shift-based BatchNorm computes Hubara et al.'s Algorithm 3", "[quant][shift]") {
  quant::shift_batch_norm<double> bn(2);
  bn.weight().value().flat() << 0.7, -3.0;  // AP2: 0.5 and -4
  bn.bias().value().flat() << 0.1, -0.2;
  tensor<double> x({4, 2}), y;
  x.flat() << 1, 10, 2, 20, 3, 30, 6, 60;
  rng gen(1);
  bn.forward(x, y, {true, &gen});
  for (int ch = 0; ch < 2; ++ch) {
    double mean = 0, var = 0;
    for (int i = 0; i < 4; ++i) mean += x[i * 2 + ch] / 4;
    for (int i = 0; i < 4; ++i)
      var += (x[i * 2 + ch] - mean) * quant::ap2(x[i * 2 + ch] - mean) / 4;
    const double s = quant::ap2(1.0 / std::sqrt(var + 1e-4));
    const double g = ch == 0 ? 0.5 : -4.0, b = ch == 0 ? 0.1 : -0.2;
    for (int i = 0; i < 4; ++i) CHECK(y[i * 2 + ch] == Approx(g * (x[i * 2 + ch] - mean) * s + b));
    CHECK(bn.running_mean().value()[ch] == Approx(0.1 * mean));
    CHECK(bn.running_var().value()[ch] == Approx(0.9 + 0.1 * var));
  }
  // dgamma = sum dy * x_hat (straight-through AP2), dbeta = sum dy.
  tensor<double> dy({4, 2}), dx;
  dy.flat() << 0.5, -1, 2, 0.25, -1, 3, 0.1, 0.2;
  bn.weight().zero_grad();
  bn.bias().zero_grad();
  bn.backward(x, y, dy, &dx);
  for (int ch = 0; ch < 2; ++ch) {
    const double g = ch == 0 ? 0.5 : -4.0, b = ch == 0 ? 0.1 : -0.2;
    double dgamma = 0, dbeta = 0;
    for (int i = 0; i < 4; ++i) {
      dgamma += dy[i * 2 + ch] * (y[i * 2 + ch] - b) / g;
      dbeta += dy[i * 2 + ch];
    }
    CHECK(bn.weight().grad()[ch] == Approx(dgamma));
    CHECK(bn.bias().grad()[ch] == Approx(dbeta));
  }
}

TEST_CASE("shift-based AdaMax takes AdaMax's step with power-of-two factors", "[quant][shift]") {
  nn::linear<double> l(3, 1, false);
  l.weight().value().flat() << 0.5, -0.5, 0.1;
  quant::shift_adamax<double> opt(train::adamax_options{}.with_lr(0.01));
  column_vector<double> m = column_vector<double>::Zero(3), v = column_vector<double>::Zero(3), w = l.weight().value().flat();
  rng gen(5);
  for (int t = 1; t <= 4; ++t) {
    for (int i = 0; i < 3; ++i) l.weight().grad()[i] = gen.normal(0, 0.1);
    const column_vector<double> g = l.weight().grad().flat();
    opt.step(l);
    m = 0.9 * m + 0.1 * g;
    v = (0.999 * v).cwiseMax(g.cwiseAbs());
    const double rate = quant::ap2(0.01 / (1 - std::pow(0.9, t)));
    for (int i = 0; i < 3; ++i) w[i] -= rate * m[i] * quant::ap2(1.0 / (v[i] + 1e-8));
    CHECK((l.weight().value().flat() - w).cwiseAbs().maxCoeff() < 1e-15);
  }
  CHECK_THROWS_AS(quant::shift_adamax<double>(train::adamax_options{}.with_lr(0.01).with_betas(1.0, 0.999)), config_error);
}

namespace {
template <class Scalar>
nn::sequential<Scalar> tiny_bnn_conv(rng& gen) {
  nn::sequential<Scalar> m;
  m.add("conv1", nn::conv2d<Scalar>(1, 6, 3));
  m.add("pool1", nn::max_pool2d<Scalar>(2));
  m.add("bn1", nn::batch_norm2d<Scalar>(6));
  m.add("sign1", quant::sign_activation<Scalar>());
  m.add("conv2", nn::conv2d<Scalar>(6, 8, 3, typename nn::conv2d<Scalar>::options{1, 1, true}));
  m.add("pool2", nn::max_pool2d<Scalar>(2));
  m.add("bn2", quant::shift_batch_norm<Scalar>(8));
  m.add("sign2", quant::sign_activation<Scalar>());
  m.add("flatten", nn::flatten<Scalar>());
  m.add("fc1", nn::linear<Scalar>(8 * 3 * 3, 33));
  m.add("bn3", nn::batch_norm1d<Scalar>(33));
  m.add("sign3", quant::sign_activation<Scalar>());
  m.add("fc2", nn::linear<Scalar>(33, 10));
  m.reset_parameters(gen);
  return m;
}
}  // namespace

TEMPLATE_TEST_CASE("a trained BNN deployed on XNOR layers computes exactly what the float model does",
                   "[quant][binary]", float, double) {
  rng gen(12);
  auto model = tiny_bnn_conv<TestType>(gen);
  CHECK(quant::binary_connect(model, {}) == 4);
  // A few training steps so that BatchNorm statistics and weights are not at their initial values.
  data::dataset<TestType> d;
  d.inputs.resize({48, 1, 14, 14});
  for (index_t i = 0; i < d.inputs.size(); ++i) d.inputs[i] = static_cast<TestType>(gen.uniform());
  for (int i = 0; i < 48; ++i) d.labels.push_back(i % 10);
  d.num_classes = 10;
  train::adam<TestType> opt(train::adam_options{}.with_lr(0.01));
  train::fit_options fo;
  fo.epochs = 2;
  fo.batch_size = 16;
  fo.progress = false;
  const train::cross_entropy<TestType> loss;
  train::fit(model, opt, loss, d, fo);

  // Deployed through the one packed-bit stack (kernels/bitpack.hpp + the XNOR engine of
  // nn::compressed): the middle layers on XNOR-popcount, the padded conv2 included, the first and
  // last layers float, BatchNorm + sign pairs folded into thresholds where they are plain BatchNorm.
  auto deployed = model;
  const auto report = nn::compressed::compress_bnn(deployed);
  CAPTURE(report);
  CHECK(deployed.find("conv2").kind() != "Conv2d");
  CHECK(deployed.find("fc1").kind() != "Linear");
  CHECK(deployed.find("fc2").kind() == "Linear");

  tensor<TestType> y_float, y_deployed;
  rng eval_gen(0);
  model.forward(d.inputs, y_float, {false, &eval_gen});
  deployed.forward(d.inputs, y_deployed, {false, &eval_gen});
  CHECK(y_deployed.flat() == y_float.flat());
  // The original model still trains: its transforms are untouched.
  model.visit_parameters([](nn::parameter<TestType>& p) {
    if (p.local_name() == "weight" && p.shape().size() > 1) CHECK(p.transforms().size() == 1);
  });
}
