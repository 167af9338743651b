// Each optimizer against steps computed by hand from its published update rule.
#include <catch2/catch.hpp>

#include <limits>

#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;

namespace {
// A one-parameter "model" whose parameter we set by hand.
struct single : nn::cloneable<single, double> {
  nn::parameter<double> p{"w", {2}};
  std::string kind() const override { return "Single"; }
  shape_t output_shape(const shape_t& in) const override { return in; }
  void forward(const tensor<double>& x, tensor<double>& y, const nn::forward_context&) override { y = x; }
  void backward(const tensor<double>&, const tensor<double>&, const tensor<double>&, tensor<double>*) override {}
  void visit_parameters(const parameter_visitor& v) override { v(p); }
};

void set_grad(single& m, double g0, double g1) { m.p.grad().flat() << g0, g1; }
}  // namespace

TEST_CASE("SGD with momentum, Nesterov and weight decay follows PyTorch's rule", "[train][optimizer]") {
  single m;
  m.p.value().flat() << 1.0, -2.0;
  train::sgd<double> opt(train::sgd_options{}.with_lr(0.1).with_momentum(0.9).with_weight_decay(0.01));
  set_grad(m, 0.5, 1.0);
  opt.step(m);
  // d = g + wd*w = (0.51, 0.98); buf = d; w = w - 0.1 buf
  CHECK(m.p.value()[0] == Approx(1.0 - 0.1 * 0.51));
  CHECK(m.p.value()[1] == Approx(-2.0 - 0.1 * 0.98));
  const double w0 = m.p.value()[0];
  set_grad(m, 0.5, 1.0);
  opt.step(m);
  const double d = 0.5 + 0.01 * w0, buf = 0.9 * 0.51 + d;
  CHECK(m.p.value()[0] == Approx(w0 - 0.1 * buf));

  single n;
  n.p.value().flat() << 1.0, 1.0;
  train::sgd<double> nesterov(train::sgd_options{}.with_lr(0.1).with_momentum(0.9).with_nesterov());
  set_grad(n, 1.0, 1.0);
  nesterov.step(n);  // buf = 1; update = g + 0.9 buf = 1.9
  CHECK(n.p.value()[0] == Approx(1.0 - 0.19));
  set_grad(n, 1.0, 1.0);
  nesterov.step(n);  // buf = 1.9; update = 1 + 1.71 = 2.71
  CHECK(n.p.value()[0] == Approx(0.81 - 0.271));
  CHECK_THROWS_AS(train::sgd<double>(train::sgd_options{}.with_lr(0.1).with_nesterov()), config_error);
}

TEST_CASE("Adam, AdaMax and RMSProp match hand-computed steps", "[train][optimizer]") {
  SECTION("Adam") {
    single m;
    m.p.value().flat() << 1.0, 1.0;
    train::adam<double> opt(train::adam_options{}.with_lr(0.01));
    set_grad(m, 0.2, -0.4);
    opt.step(m);
    // First step: mhat = g, vhat = g^2 -> w -= lr * g / (|g| + eps) = lr * sign(g)
    CHECK(m.p.value()[0] == Approx(1.0 - 0.01).epsilon(1e-6));
    CHECK(m.p.value()[1] == Approx(1.0 + 0.01).epsilon(1e-6));
    set_grad(m, 0.1, -0.4);
    opt.step(m);
    const double m1 = 0.9 * 0.02 + 0.1 * 0.1, v1 = 0.999 * 0.001 * 0.04 + 0.001 * 0.01;
    const double mhat = m1 / (1 - 0.81), vhat = v1 / (1 - 0.999 * 0.999);
    CHECK(m.p.value()[0] == Approx(0.99 - 0.01 * mhat / (std::sqrt(vhat) + 1e-8)));
  }
  SECTION("AdaMax") {
    single m;
    m.p.value().flat() << 0.0, 0.0;
    train::adamax<double> opt(train::adamax_options{}.with_lr(0.002));
    set_grad(m, 0.5, -2.0);
    opt.step(m);  // m = 0.1 g, u = |g| + eps, w -= lr/(0.1) * 0.1 g / |g|
    CHECK(m.p.value()[0] == Approx(-0.002).epsilon(1e-6));
    CHECK(m.p.value()[1] == Approx(0.002).epsilon(1e-6));
    set_grad(m, 0.1, -2.0);
    opt.step(m);
    const double m1 = 0.9 * 0.05 + 0.1 * 0.1, u1 = std::max(0.999 * (0.5 + 1e-8), 0.1 + 1e-8);
    CHECK(m.p.value()[0] == Approx(-0.002 - 0.002 / (1 - 0.81) * m1 / u1));
  }
  SECTION("RMSProp with momentum") {
    single m;
    m.p.value().flat() << 1.0, 1.0;
    train::rmsprop<double> opt(train::rmsprop_options{}.with_lr(0.01).with_alpha(0.9).with_momentum(0.5));
    set_grad(m, 1.0, 2.0);
    opt.step(m);  // v = 0.1 g^2; d = g / sqrt(0.1 g^2) = sign(g)/sqrt(0.1); buf = d
    const double d = 1.0 / std::sqrt(0.1);
    CHECK(m.p.value()[0] == Approx(1.0 - 0.01 * d));
    set_grad(m, 1.0, 2.0);
    opt.step(m);
    const double v = 0.9 * 0.1 + 0.1, d2 = 1.0 / std::sqrt(v), buf = 0.5 * d + d2;
    CHECK(m.p.value()[0] == Approx(1.0 - 0.01 * d - 0.01 * buf));
  }
}

TEST_CASE("optimizer options: named setters, the aggregate form and validate", "[train][optimizer]") {
  // Each with_* changes one field of a copy and leaves the rest (and the original) alone.
  const auto base = train::sgd_options{};
  const auto named = base.with_lr(0.05).with_momentum(0.9).with_weight_decay(5e-4).with_dampening(0.1);
  CHECK(base.lr == 0.01);
  CHECK(base.momentum == 0.0);
  CHECK(named.lr == 0.05);
  CHECK(named.momentum == 0.9);
  CHECK(named.weight_decay == 5e-4);
  CHECK(named.dampening == 0.1);
  CHECK_FALSE(named.nesterov);
  CHECK(base.with_momentum(0.5).with_nesterov().nesterov);
  CHECK_FALSE(base.with_nesterov().with_nesterov(false).nesterov);

  const auto adam = train::adam_options{}.with_lr(0.02).with_betas(0.8, 0.95).with_eps(1e-6).with_weight_decay(0.1);
  CHECK(adam.lr == 0.02);
  CHECK(adam.beta1 == 0.8);
  CHECK(adam.beta2 == 0.95);
  CHECK(adam.eps == 1e-6);
  CHECK(adam.weight_decay == 0.1);
  CHECK(train::adam_options{}.with_beta2(0.9).beta1 == 0.9);
  CHECK(train::adamax_options{}.lr == 2e-3);  // PyTorch's Adamax default, not Adam's
  CHECK(train::adamax_options{}.with_beta1(0.5).beta2 == 0.999);
  const auto rms = train::rmsprop_options{}.with_lr(0.1).with_alpha(0.9).with_eps(1e-7).with_momentum(0.5).with_weight_decay(0.01);
  CHECK(rms.lr == 0.1);
  CHECK(rms.alpha == 0.9);
  CHECK(rms.eps == 1e-7);
  CHECK(rms.momentum == 0.5);
  CHECK(rms.weight_decay == 0.01);

  // The aggregate form users wrote before the setters still compiles and means the same thing:
  // two optimizers built both ways take identical steps.
  single a, b;
  a.p.value().flat() << 1.0, -2.0;
  b.p.value().flat() << 1.0, -2.0;
  train::sgd<double> positional({0.1, 0.9, 0.0, 0.01, false});
  train::sgd<double> by_name(train::sgd<double>::options{}.with_lr(0.1).with_momentum(0.9).with_weight_decay(0.01));
  for (int step = 0; step < 3; ++step) {
    set_grad(a, 0.5, -1.0);
    set_grad(b, 0.5, -1.0);
    positional.step(a);
    by_name.step(b);
  }
  CHECK(a.p.value()[0] == b.p.value()[0]);
  CHECK(a.p.value()[1] == b.p.value()[1]);
  CHECK(a.p.value()[0] != 1.0);

  // validate() names the optimizer and the bad value; the constructors call it.
  CHECK_THROWS_AS(train::sgd_options{}.with_lr(-1.0).validate(), config_error);
  CHECK_THROWS_WITH(train::sgd<double>(train::sgd_options{}.with_momentum(-0.5)),
                    Catch::Contains("slimnet::train::sgd") && Catch::Contains("momentum=-0.5"));
  CHECK_THROWS_WITH(train::adam<double>(train::adam_options{}.with_betas(0.9, 1.0)),
                    Catch::Contains("slimnet::train::adam") && Catch::Contains("beta2=1"));
  CHECK_THROWS_WITH(train::adamax<double>(train::adamax_options{}.with_eps(-1.0)), Catch::Contains("slimnet::train::adamax"));
  CHECK_THROWS_WITH(train::rmsprop<double>(train::rmsprop_options{}.with_alpha(1.5)),
                    Catch::Contains("slimnet::train::rmsprop") && Catch::Contains("alpha=1.5"));
  CHECK_THROWS_AS(train::rmsprop_options{}.with_lr(std::numeric_limits<double>::infinity()).validate(), config_error);
  CHECK_NOTHROW(train::rmsprop_options{}.validate());
}

TEST_CASE("optimizer state follows parameter identity and resets on resize", "[train][optimizer]") {
  single a, b;
  a.p.value().flat() << 0, 0;
  b.p.value().flat() << 0, 0;
  train::sgd<double> opt(train::sgd_options{}.with_lr(1.0).with_momentum(0.5));
  set_grad(a, 1, 1);
  opt.step(a);
  set_grad(b, 1, 1);
  opt.step(b);  // b has its own buffer: first step again
  CHECK(a.p.value()[0] == -1);
  CHECK(b.p.value()[0] == -1);
  a.p.assign(tensor<double>({3}, 0.0));  // thinning changed its shape
  a.p.grad().fill(1);
  opt.step(a);
  CHECK(a.p.value()[0] == -1);  // fresh buffer, no stale momentum
  CHECK_THROWS_AS(opt.set_learning_rate(-1), config_error);
}

TEST_CASE("learning-rate schedules", "[train]") {
  auto step = train::step_lr(0.1, 3, 0.5);
  CHECK(step(0) == Approx(0.1));
  CHECK(step(2) == Approx(0.1));
  CHECK(step(3) == Approx(0.05));
  CHECK(step(7) == Approx(0.025));
  auto cosine = train::cosine_lr(1.0, 10, 0.1);
  CHECK(cosine(0) == Approx(1.0));
  CHECK(cosine(5) == Approx(0.55));
  CHECK(cosine(10) == Approx(0.1));
  CHECK_THROWS_AS(train::step_lr(0.1, 0, 0.5), config_error);
}
