// slimnet::train: losses, optimizers, learning-rate schedules, fit / evaluate with callbacks,
// checkpoint state (the file format: train/checkpoint.hpp, in slimnet/io.hpp).
#pragma once

#include "slimnet/train/checkpoint_state.hpp"
#include "slimnet/train/fit.hpp"
#include "slimnet/train/loss.hpp"
#include "slimnet/train/optimizer.hpp"
#include "slimnet/train/schedule.hpp"
#include "slimnet/train/step.hpp"
