// slimnet::deepiot: DeepIoT (Yao et al., SenSys 2017): unit gates, the compressor network, the
// compressor-critic training with REINFORCE, and thinning into a smaller dense network.
#pragma once

#include "slimnet/deepiot/compressor.hpp"
#include "slimnet/deepiot/gated.hpp"
#include "slimnet/deepiot/reinforce.hpp"
#include "slimnet/deepiot/thin.hpp"
#include "slimnet/deepiot/trainer.hpp"
