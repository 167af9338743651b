// Limited-precision training: the fixed-point weight transform, the activation quantizer layer,
// the gradient callback and limited_precision() on a model.
#include "slimnet/quant/fixed_point_training.hpp"

#include <catch2/catch.hpp>
#include <cmath>

#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"
#include "support/gradient_check.hpp"

using namespace slimnet;
using quant::fixed_point_format;
using quant::rounding;

namespace {
template <class Scalar>
bool on_grid(const tensor<Scalar>& t, const fixed_point_format& f) {
  for (index_t i = 0; i < t.size(); ++i) {
    const double s = std::ldexp(static_cast<double>(t[i]), f.fraction_bits);
    if (s != std::floor(s) || t[i] < f.lowest() || t[i] > f.highest()) return false;
  }
  return true;
}
}  // namespace

TEMPLATE_TEST_CASE("weights stored in fixed point: rounded at attach and after every step",
                   "[quant][fixed_point]", float, double) {
  const fixed_point_format f{2, 6};
  nn::parameter<TestType> p("weight", {4, 5});
  rng gen(1);
  for (index_t i = 0; i < p.size(); ++i) p.value()[i] = static_cast<TestType>(gen.normal(0, 0.5));
  quant::fixed_point_weight_options o;
  o.format = f;
  o.mode = rounding::nearest;
  auto t = quant::attach_fixed_point(p, o);
  CHECK(on_grid(p.value(), f));
  const tensor<TestType> start = p.value();

  // Forward is the identity on the stored grid values; backward is straight-through.
  nn::forward_context ctx{true, &gen};
  CHECK(p.forward_value(ctx).flat() == start.flat());
  for (index_t i = 0; i < p.size(); ++i) p.grad()[i] = static_cast<TestType>(0.1 * (i - 10));
  const tensor<TestType> g = p.grad();
  p.transform_gradient();
  CHECK(p.grad().flat() == g.flat());

  // Round-to-nearest loses updates smaller than epsilon/2 = 1/128 ...
  p.value().flat().array() -= TestType(0.003);
  p.after_step();
  CHECK(p.value().flat() == start.flat());
  // ... and keeps larger ones on the grid.
  p.value().flat().array() += TestType(0.02);
  p.after_step();
  CHECK(on_grid(p.value(), f));
  CHECK((p.value().flat() - start.flat()).cwiseAbs().maxCoeff() == Approx(1.0 / 64));
}

TEST_CASE("stochastic rounding of tiny updates moves weights by the update on average",
          "[quant][fixed_point]") {
  // 20000 weights at 0, each updated by -0.001 (a sixth of epsilon/2 for <2,6>): under nearest
  // rounding nothing moves; under stochastic rounding the mean change is -0.001.
  const fixed_point_format f{2, 6};
  for (rounding mode : {rounding::nearest, rounding::stochastic}) {
    nn::parameter<double> p("weight", {20000});
    quant::fixed_point_weight_options o;
    o.format = f;
    o.mode = mode;
    o.seed = 3;
    quant::attach_fixed_point(p, o);
    p.value().flat().array() -= 0.001;
    p.after_step();
    const double mean = p.value().flat().mean();
    if (mode == rounding::nearest) {
      CHECK(mean == 0.0);
    } else {
      // Standard error of the mean: eps sqrt(p(1-p) / n) with p = 0.064.
      CHECK(std::abs(mean + 0.001) < 5 * f.epsilon() * std::sqrt(0.064 * 0.936 / 20000));
    }
  }
}

TEST_CASE("a real-valued copy gets the updates; the forward pass sees its rounding",
          "[quant][fixed_point]") {
  const fixed_point_format f{2, 4};
  nn::parameter<double> p("weight", {3});
  p.value().flat() << 0.30, -0.01, 5.0;
  quant::fixed_point_weight_options o;
  o.format = f;
  o.mode = rounding::stochastic;
  o.keep_real_copy = true;
  quant::attach_fixed_point(p, o);
  CHECK(p.value()[0] == 0.30);  // not rounded: it is the real copy
  rng gen(2);
  nn::forward_context eval{false, &gen};
  const auto& w = p.forward_value(eval);  // evaluation rounds to nearest
  CHECK(w[0] == 0.3125);
  CHECK(w[1] == 0.0);
  CHECK(w[2] == f.highest());
  nn::forward_context train{true, &gen};
  const auto& ws = p.forward_value(train);
  CHECK((ws[0] == 0.25 || ws[0] == 0.3125));
  p.after_step();  // clipped to the range
  CHECK(p.value()[2] == f.highest());
  CHECK(p.value()[0] == 0.30);
}

TEMPLATE_TEST_CASE(
    "quantize_activation: rounded output, clipped straight-through gradient, rounded error",
    "[quant][fixed_point]", float, double) {
  quant::activation_quantization_options o;
  o.activations = fixed_point_format{2, 3};  // range [-2, 1.875], epsilon 1/8
  o.activation_mode = rounding::nearest;
  quant::quantize_activation<TestType> q(o);
  tensor<TestType> x({2, 3}), y, dy({2, 3}), dx;
  x.flat() << TestType(0.3), TestType(-0.06), TestType(1.9), TestType(-2.5), TestType(1.875),
      TestType(-2.0);
  rng gen(1);
  q.forward(x, y, {true, &gen});
  CHECK(y[0] == TestType(0.25));
  CHECK(y[1] == TestType(0.0));
  CHECK(y[2] == TestType(1.875));
  CHECK(y[3] == TestType(-2.0));
  dy.flat() << 1, 2, 3, 4, 5, 6;
  q.backward(x, y, dy, &dx);
  // Gradient passes where x is inside [-2, 1.875] (both ends included), 0 where it saturated.
  CHECK(dx.flat() == (column_vector<TestType>(6) << 1, 2, 0, 0, 5, 6).finished());

  o.clip_gradient = false;
  o.gradients = fixed_point_format{4, 1};  // gradients on a grid of 1/2
  o.gradient_mode = rounding::nearest;
  quant::quantize_activation<TestType> qg(o);
  dy.flat() << TestType(0.2), TestType(0.3), TestType(-0.74), TestType(9), TestType(0),
      TestType(1.25);
  qg.forward(x, y, {true, &gen});
  qg.backward(x, y, dy, &dx);
  CHECK(dx.flat() ==
        (column_vector<TestType>(6) << TestType(0), TestType(0.5), TestType(-0.5), TestType(7.5), TestType(0), TestType(1.5))
            .finished());
  CHECK(qg.describe() == "QuantizeActivation(<2,3> nearest, gradients <4,1> nearest)");
}

TEST_CASE("limited_precision inserts quantizers and transforms; gradient_quantizer rounds dL/dW",
          "[quant][fixed_point]") {
  rng gen(4);
  auto model = nn::models::lenet_300_100<float>(gen);
  quant::limited_precision_options o;
  quant::fixed_point_weight_options w;
  w.format = {4, 12};
  o.weights = w;
  o.activations = quant::activation_quantization_options{};
  auto q = quant::limited_precision(model, o);
  CHECK(q.size() == model.size() + 3);
  CHECK(q.local_name(2) == "fc1_q");
  CHECK(q[2].kind() == "QuantizeActivation");
  int transforms = 0;
  q.visit_parameters([&](nn::parameter<float>& p) {
    transforms += static_cast<int>(p.transforms().size());
    CHECK(on_grid(p.value(), w.format));
  });
  CHECK(transforms == 6);  // three weights and three biases
  model.visit_parameters([&](nn::parameter<float>& p) {
    CHECK(p.transforms().empty());
  });  // the original is untouched

  // Train a few steps on random data with all three quantized; everything stays on its grid.
  data::dataset<float> d;
  d.inputs.resize({64, 784});
  for (index_t i = 0; i < d.inputs.size(); ++i) d.inputs[i] = static_cast<float>(gen.uniform());
  for (int i = 0; i < 64; ++i) d.labels.push_back(i % 10);
  d.num_classes = 10;
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.1));
  train::fit_options fo;
  fo.epochs = 2;
  fo.batch_size = 16;
  fo.progress = false;
  const fixed_point_format gf{1, 15};
  struct check_grads : train::callback<float> {
    fixed_point_format f;
    bool ok = true;
    void after_backward(train::train_state<float>& s) override {
      s.model.visit_parameters([&](nn::parameter<float>& p) { ok = ok && on_grid(p.grad(), f); });
    }
  } checker;
  checker.f = gf;
  quant::gradient_quantizer<float> gq(gf, rounding::stochastic, 9);
  const train::cross_entropy<float> loss;
  train::fit(q, opt, loss, d, fo, {&gq, &checker});
  CHECK(checker.ok);
  q.visit_parameters([&](nn::parameter<float>& p) { CHECK(on_grid(p.value(), w.format)); });
}

TEST_CASE(
    "quantize_activation without rounding passes the gradient check; nested models are handled",
    "[quant][fixed_point][gradient]") {
  // With neither activations nor gradients rounded the layer is the identity: differentiable, and
  // the checker confirms its backward pass. (Rounding is piecewise constant; its straight-through
  // rule is tested above.)
  quant::activation_quantization_options o;
  o.activations.reset();
  quant::quantize_activation<double> identity(o);
  testing::require_gradients(identity, {3, 5});

  nn::sequential<float> inner;
  inner.add("fc", nn::linear<float>(4, 3));
  nn::sequential<float> outer;
  outer.add("block", std::move(inner));
  outer.add("relu", nn::relu<float>());
  quant::limited_precision_options lp;
  lp.weights = quant::fixed_point_weight_options{};
  lp.activations = quant::activation_quantization_options{};
  auto q = quant::limited_precision(outer, lp);
  CHECK(q.describe().find("QuantizeActivation") != std::string::npos);
  CHECK_NOTHROW(q.find("block.fc_q"));
  int transforms = 0;
  q.visit_parameters(
      [&](nn::parameter<float>& p) { transforms += static_cast<int>(p.transforms().size()); });
  CHECK(transforms == 2);
}
