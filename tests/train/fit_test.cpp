// Losses, the training loop, callbacks and determinism.
#include <catch2/catch.hpp>

#include <limits>

#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;

TEMPLATE_TEST_CASE("cross-entropy is stable and its gradient is softmax - onehot", "[train][loss]", float, double) {
  tensor<TestType> z({2, 3});
  z.flat() << 1000, 0, -1000, 1, 2, 3;
  data::batch<TestType> b;
  b.labels = {0, 1};
  tensor<TestType> g;
  const double loss = train::cross_entropy<TestType>().compute(z, b, g);
  const double second = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 2.0;
  CHECK(loss == Approx(second / 2).epsilon(1e-5));
  CHECK(g.matrix()(0, 0) == Approx(0.0).margin(1e-6));
  const double s = std::exp(2.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  CHECK(g.matrix()(1, 1) == Approx((s - 1) / 2).epsilon(1e-5));
  CHECK(std::abs(g.matrix().row(1).sum()) < 1e-6);
  b.labels = {0, 3};
  CHECK_THROWS_AS(train::cross_entropy<TestType>().compute(z, b, g), config_error);
}

TEST_CASE("MSE against targets and against one-hot labels", "[train][loss]") {
  tensor<double> out({1, 2});
  out.flat() << 1, 3;
  data::batch<double> b;
  b.targets = tensor<double>({1, 2});
  b.targets.flat() << 0, 1;
  tensor<double> g;
  CHECK(train::mse<double>().compute(out, b, g) == Approx((1 + 4) / 2.0));
  CHECK(g[1] == Approx(2 * 2 / 2.0));
  data::batch<double> l;
  l.labels = {1};
  CHECK(train::mse<double>().compute(out, l, g) == Approx((1 + 4) / 2.0));
}

namespace {
// Two Gaussian blobs per class in 2-d, linearly separable with a margin.
data::dataset<float> separable(index_t n, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<float> d;
  d.num_classes = 3;
  d.inputs.resize({n, 2});
  const float centers[3][2] = {{3, 0}, {-3, 3}, {-3, -3}};
  for (index_t i = 0; i < n; ++i) {
    const auto c = static_cast<int>(i % 3);
    d.labels.push_back(c);
    d.inputs.matrix()(i, 0) = centers[c][0] + 0.5f * static_cast<float>(gen.normal());
    d.inputs.matrix()(i, 1) = centers[c][1] + 0.5f * static_cast<float>(gen.normal());
  }
  return d;
}

nn::sequential<float> small_mlp(std::uint64_t seed) {
  rng gen(seed);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(2, 16));
  m.add("relu", nn::relu<float>());
  m.add("drop", nn::dropout<float>(0.1));
  m.add("fc2", nn::linear<float>(16, 3));
  m.reset_parameters(gen);
  return m;
}

struct recorder : train::callback<float> {
  std::vector<std::string> events;
  void on_train_begin(train::train_state<float>&) override { events.push_back("begin"); }
  void on_epoch_begin(train::train_state<float>& s) override { events.push_back("epoch" + std::to_string(s.epoch)); }
  void after_backward(train::train_state<float>& s) override {
    if (s.batch_in_epoch == 0) events.push_back("backward");
  }
  void after_step(train::train_state<float>& s) override {
    if (s.batch_in_epoch == 0) events.push_back("step");
  }
  void on_epoch_end(train::train_state<float>& s) override {
    events.push_back("end" + std::to_string(s.epoch));
    if (s.epoch == 2) s.stop = true;
  }
  void on_train_end(train::train_state<float>&) override { events.push_back("done"); }
};
}  // namespace

TEST_CASE("the loss of a small net on a separable problem falls to near zero", "[train]") {
  const auto train_set = separable(300, 1), test_set = separable(150, 2);
  auto model = small_mlp(3);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.1).with_momentum(0.9));
  train::fit_options o;
  o.epochs = 30;
  o.batch_size = 16;
  o.progress = false;
  const auto h = train::fit(model, opt, train::cross_entropy<float>(), train_set, o, {}, &test_set);
  REQUIRE(h.epochs.size() == 30);
  CHECK(h.epochs.front().train.loss > 0.1);
  CHECK(h.epochs.back().train.loss < 0.02);
  CHECK(h.epochs.back().validation.accuracy == 1.0);
  const auto m = train::evaluate(model, test_set, train::cross_entropy<float>());
  CHECK(m.loss < 0.02);
  CHECK(m.samples == 150);
}

TEST_CASE("same seed, one thread: bitwise identical training", "[train]") {
  const auto train_set = separable(120, 4);
  auto run = [&]() {
    auto model = small_mlp(5);
    train::adam<float> opt(train::adam_options{}.with_lr(0.01));
    train::fit_options o;
    o.epochs = 3;
    o.batch_size = 10;
    o.seed = 77;
    o.progress = false;
    train::fit(model, opt, train::cross_entropy<float>(), train_set, o);
    std::vector<float> values;
    model.visit_parameters([&](nn::parameter<float>& p) {
      values.insert(values.end(), p.value().data(), p.value().data() + p.size());
    });
    return values;
  };
  const auto a = run(), b = run();
  CHECK(a == b);
}

TEST_CASE("fit calls callbacks in order, applies the schedule, and stops on request", "[train]") {
  const auto train_set = separable(30, 6);
  auto model = small_mlp(7);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.1));
  train::fit_options o;
  o.epochs = 10;
  o.batch_size = 8;
  o.progress = false;
  o.learning_rate = train::step_lr(0.1, 1, 0.5);
  recorder rec;
  const auto h = train::fit(model, opt, train::cross_entropy<float>(), train_set, o, {&rec});
  CHECK(h.epochs.size() == 3);
  CHECK(h.epochs[2].learning_rate == Approx(0.025));
  CHECK(rec.events == std::vector<std::string>{"begin", "epoch0", "backward", "step", "end0", "epoch1", "backward", "step",
                                               "end1", "epoch2", "backward", "step", "end2", "done"});
  train::fit_options bad;
  bad.batch_size = 0;
  CHECK_THROWS_AS(train::fit(model, opt, train::cross_entropy<float>(), train_set, bad), config_error);
}

namespace {
/// Cross-entropy whose gradient gets one NaN at the given call: a finite loss with a broken gradient.
struct nan_gradient_at : train::loss_function<float> {
  int poison_call;
  mutable int calls = 0;
  explicit nan_gradient_at(int call) : poison_call(call) {}
  std::string name() const override { return "nan_gradient_at"; }
  double compute(const tensor<float>& out, const data::batch<float>& b, tensor<float>& grad) const override {
    const double l = train::cross_entropy<float>().compute(out, b, grad);
    if (calls++ == poison_call) grad[1] = std::numeric_limits<float>::quiet_NaN();
    return l;
  }
};
}  // namespace

TEST_CASE("fit stops at the step where a gradient or a weight stops being finite, naming it", "[train][nan]") {
  const auto train_set = separable(40, 8);
  train::fit_options o;
  o.epochs = 2;
  o.batch_size = 8;
  o.progress = false;
  o.shuffle = false;
  {
    auto model = small_mlp(9);
    train::sgd<float> opt(train::sgd_options{}.with_lr(0.1));
    CHECK_THROWS_WITH(train::fit(model, opt, nan_gradient_at(3), train_set, o),
                      Catch::Contains("slimnet::train::fit") && Catch::Contains("the gradient of fc1.weight became nan") &&
                          Catch::Contains("epoch 1 step 3"));
    // Nothing was stepped with the NaN: every weight is still finite.
    model.visit_parameters([](nn::parameter<float>& p) { CHECK(p.value().flat().allFinite()); });
  }
  {
    auto model = small_mlp(9);
    train::sgd<float> opt(train::sgd_options{}.with_lr(1e39));  // finite in double, infinite once a float step is taken
    CHECK_THROWS_WITH(train::fit(model, opt, train::cross_entropy<float>(), train_set, o),
                      Catch::Contains("the value of fc1.weight became") && Catch::Contains("epoch 1 step 0"));
  }
  {
    // The check can be switched off: the same NaN gradient then reaches the weights silently
    // (until the loss turns NaN).
    auto model = small_mlp(9);
    train::sgd<float> opt(train::sgd_options{}.with_lr(0.1));
    o.check_finite = false;
    o.epochs = 1;
    CHECK_THROWS_WITH(train::fit(model, opt, nan_gradient_at(3), train_set, o), Catch::Contains("loss became nan"));
  }
}

TEST_CASE("distillation: gradient matches finite differences, alpha 0 is cross-entropy", "[train][loss]") {
  rng gen(3);
  nn::linear<double> teacher(3, 4);
  teacher.reset_parameters(gen);
  data::batch<double> b;
  b.inputs = tensor<double>({2, 3});
  b.inputs.flat() << 0.5, -1.0, 2.0, 1.5, 0.25, -0.75;
  b.labels = {2, 0};
  tensor<double> z({2, 4});
  z.flat() << 0.3, -1.2, 2.0, 0.1, 1.1, 0.4, -0.6, 0.9;

  const train::distillation<double> kd(teacher, 0.7, 3.0);
  tensor<double> g, scratch;
  kd.compute(z, b, g);
  const double h = 1e-6;
  for (index_t k = 0; k < z.size(); ++k) {
    tensor<double> zp = z, zm = z;
    zp.flat()(k) += h;
    zm.flat()(k) -= h;
    const double numeric = (kd.compute(zp, b, scratch) - kd.compute(zm, b, scratch)) / (2 * h);
    CHECK(g.flat()(k) == Approx(numeric).margin(1e-8));
  }

  tensor<double> g_ce, g0;
  const double ce = train::cross_entropy<double>().compute(z, b, g_ce);
  CHECK(train::distillation<double>(teacher, 0.0, 2.0).compute(z, b, g0) == ce);
  CHECK(g0.flat() == g_ce.flat());

  // A student that already computes the teacher's logits has nothing left to learn from it.
  tensor<double> same;
  teacher.forward(b.inputs, same, nn::forward_context{});
  CHECK(train::distillation<double>(teacher, 1.0, 4.0).compute(same, b, g) == Approx(0.0).margin(1e-12));
  CHECK(g.flat().cwiseAbs().maxCoeff() < 1e-12);

  CHECK_THROWS_AS(train::distillation<double>(teacher, 1.5, 2.0), config_error);
  CHECK_THROWS_AS(train::distillation<double>(teacher, 0.5, 0.0), config_error);
}
