// slimnet::train: losses, optimizers, learning-rate schedules, fit / evaluate with callbacks,
// checkpoints.
#pragma once

#include "slimnet/train/checkpoint.hpp"
#include "slimnet/train/fit.hpp"
#include "slimnet/train/loss.hpp"
#include "slimnet/train/optimizer.hpp"
#include "slimnet/train/schedule.hpp"
#include "slimnet/train/step.hpp"
