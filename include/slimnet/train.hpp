// slimnet::train: losses, optimizers, learning-rate schedules, fit / evaluate with callbacks,
// BatchNorm statistics re-estimation, checkpoint state (the file format: train/checkpoint.hpp, in
// slimnet/io.hpp).
#pragma once

#include "slimnet/train/batch_norm_statistics.hpp"
#include "slimnet/train/checkpoint_state.hpp"
#include "slimnet/train/fit.hpp"
#include "slimnet/train/loss.hpp"
#include "slimnet/train/optimizer.hpp"
#include "slimnet/train/schedule.hpp"
#include "slimnet/train/step.hpp"
