// Learning-rate schedules, as functions epoch -> learning rate (epochs count from 0).
#pragma once

#include <cmath>
#include <functional>

#include "slimnet/core/error.hpp"

namespace slimnet::train {

using lr_schedule = std::function<double(int epoch)>;

/// lr = base * gamma^floor(epoch / step) (PyTorch StepLR).
inline lr_schedule step_lr(double base, int step, double gamma) {
  if (step <= 0 || !(gamma > 0) || !(base >= 0)) {
    slimnet::detail::raise<config_error>("slimnet::train::step_lr", "invalid schedule: base={} step={} gamma={}", base, step, gamma);
  }
  return [=](int epoch) { return base * std::pow(gamma, epoch / step); };
}

/// lr = min + (base - min) (1 + cos(pi epoch / epochs)) / 2 (PyTorch CosineAnnealingLR, no restarts).
inline lr_schedule cosine_lr(double base, int epochs, double min_lr = 0.0) {
  if (epochs <= 0 || !(base >= 0) || !(min_lr >= 0)) {
    slimnet::detail::raise<config_error>("slimnet::train::cosine_lr", "invalid schedule: base={} epochs={} min_lr={}", base, epochs, min_lr);
  }
  return [=](int epoch) {
    const double t = std::min(epoch, epochs);
    return min_lr + (base - min_lr) * 0.5 * (1.0 + std::cos(M_PI * t / epochs));
  };
}

}  // namespace slimnet::train
