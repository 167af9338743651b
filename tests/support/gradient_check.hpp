// One generic finite-difference gradient checker that every layer must pass (double precision).
// Loss L(x, W) = sum(layer(x) .* R) with a fixed random R, so dL/dy = R. Central differences
// dL/dv ~ (L(v + h) - L(v - h)) / 2h are compared with the analytic input and parameter gradients.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::testing {

struct gradient_check_options {
  bool training = false;     // forward in training mode (BatchNorm batch statistics, dropout)
  double step = 1e-6;        // finite-difference step h
  double tolerance = 1e-6;   // on |analytic - numeric| / max(1, |analytic|, |numeric|)
  index_t max_checks = 400;    // per tensor: checks a seeded sample of at most this many entries
  std::uint64_t seed = 42;
  double input_scale = 1.0;
};

struct gradient_check_result {
  double worst_error = 0;
  std::string worst_where;
  index_t checked = 0;
};

inline gradient_check_result check_gradients(nn::layer<double>& layer, const shape_t& input_shape,
                                             gradient_check_options opt = {}) {
  rng gen(opt.seed);
  tensor<double> x(input_shape);
  for (index_t i = 0; i < x.size(); ++i) x[i] = gen.normal() * opt.input_scale;
  tensor<double> y;
  // Every evaluation uses a generator with the same seed, so dropout draws the same mask.
  auto run = [&](const tensor<double>& input, tensor<double>& out) {
    rng pass_gen(opt.seed + 1);
    nn::forward_context ctx{opt.training, &pass_gen};
    layer.forward(input, out, ctx);
  };
  run(x, y);
  tensor<double> r(y.shape());
  for (index_t i = 0; i < r.size(); ++i) r[i] = gen.normal();
  auto loss = [&](const tensor<double>& input) {
    tensor<double> out;
    run(input, out);
    return out.flat().dot(r.flat());
  };

  // Analytic gradients.
  layer.visit_parameters([](nn::parameter<double>& p) { p.zero_grad(); });
  run(x, y);
  tensor<double> dx;
  layer.backward(x, y, r, &dx);
  REQUIRE(dx.shape() == x.shape());

  gradient_check_result result;
  auto compare = [&](double analytic, double numeric, const std::string& where) {
    const double err = std::abs(analytic - numeric) / std::max({1.0, std::abs(analytic), std::abs(numeric)});
    ++result.checked;
    if (err > result.worst_error) {
      result.worst_error = err;
      result.worst_where = fmt::format("{}: analytic {} numeric {}", where, analytic, numeric);
    }
  };
  auto sample = [&](index_t n) {
    std::vector<index_t> idx(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = i;
    if (n > opt.max_checks) {
      slimnet::shuffle(idx.begin(), idx.end(), gen);
      idx.resize(static_cast<std::size_t>(opt.max_checks));
    }
    return idx;
  };

  for (index_t i : sample(x.size())) {
    tensor<double> xp = x, xm = x;
    xp[i] += opt.step;
    xm[i] -= opt.step;
    compare(dx[i], (loss(xp) - loss(xm)) / (2 * opt.step), fmt::format("input[{}]", i));
  }
  std::vector<nn::parameter<double>*> params;
  layer.visit_parameters([&](nn::parameter<double>& p) {
    if (p.trainable()) params.push_back(&p);
  });
  for (auto* p : params) {
    const tensor<double> analytic = p->grad();
    for (index_t i : sample(p->size())) {
      const double v = p->value()[i];
      p->value()[i] = v + opt.step;
      const double lp = loss(x);
      p->value()[i] = v - opt.step;
      const double lm = loss(x);
      p->value()[i] = v;
      compare(analytic[i], (lp - lm) / (2 * opt.step), fmt::format("{}[{}]", p->name(), i));
    }
  }
  return result;
}

/// REQUIREs that `layer` passes the gradient check.
inline void require_gradients(nn::layer<double>& layer, const shape_t& input_shape, gradient_check_options opt = {}) {
  const auto r = check_gradients(layer, input_shape, opt);
  INFO(layer.describe() << " on input " << shape_string(input_shape) << " worst at " << r.worst_where);
  CHECK(r.checked > 0);
  CHECK(r.worst_error < opt.tolerance);
}

}  // namespace slimnet::testing
