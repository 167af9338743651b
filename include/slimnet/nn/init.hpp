// Weight initialisation: He (Kaiming), Glorot (Xavier), and PyTorch's layer defaults.
// Fans follow PyTorch: for a weight of shape (out, in, k...), fan_in = in * prod(k),
// fan_out = out * prod(k).
#pragma once

#include <cmath>
#include <utility>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::nn::init {

/// (fan_in, fan_out) of a weight tensor in PyTorch layout.
template <class Scalar>
std::pair<index_t, index_t> fans(const tensor<Scalar>& w) {
  if (w.rank() < 2) {
    slimnet::detail::raise<shape_error>("slimnet::nn::init::fans", "weight of shape {} has rank < 2", shape_string(w.shape()));
  }
  const index_t receptive = w.size() / (w.dim(0) * w.dim(1));
  return {w.dim(1) * receptive, w.dim(0) * receptive};
}

template <class Scalar>
void uniform(tensor<Scalar>& t, double lo, double hi, rng& gen) {
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(gen.uniform(lo, hi));
}

template <class Scalar>
void normal(tensor<Scalar>& t, double mean, double stddev, rng& gen) {
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(gen.normal(mean, stddev));
}

/// He et al. 2015 for ReLU nets: N(0, 2/fan_in).
template <class Scalar>
void he_normal(tensor<Scalar>& w, rng& gen) {
  normal(w, 0.0, std::sqrt(2.0 / static_cast<double>(fans(w).first)), gen);
}

/// He et al. 2015, uniform: U(-b, b) with b = sqrt(6/fan_in).
template <class Scalar>
void he_uniform(tensor<Scalar>& w, rng& gen) {
  const double b = std::sqrt(6.0 / static_cast<double>(fans(w).first));
  uniform(w, -b, b, gen);
}

/// Glorot & Bengio 2010: U(-b, b) with b = sqrt(6/(fan_in+fan_out)).
template <class Scalar>
void glorot_uniform(tensor<Scalar>& w, rng& gen) {
  const auto [fan_in, fan_out] = fans(w);
  const double b = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  uniform(w, -b, b, gen);
}

/// Glorot & Bengio 2010, normal: N(0, 2/(fan_in+fan_out)).
template <class Scalar>
void glorot_normal(tensor<Scalar>& w, rng& gen) {
  const auto [fan_in, fan_out] = fans(w);
  normal(w, 0.0, std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)), gen);
}

/// PyTorch's default for Linear and Conv: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
/// (kaiming_uniform with a = sqrt(5) reduces to this bound).
template <class Scalar>
void pytorch_default(tensor<Scalar>& weight, tensor<Scalar>* bias, rng& gen) {
  const double b = 1.0 / std::sqrt(static_cast<double>(fans(weight).first));
  uniform(weight, -b, b, gen);
  if (bias != nullptr) uniform(*bias, -b, b, gen);
}

}  // namespace slimnet::nn::init
