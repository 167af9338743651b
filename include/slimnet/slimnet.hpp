// slimnet: compress neural networks and run the compressed model fast on a CPU.
// The umbrella header: every module.
#pragma once

#include "slimnet/core.hpp"
#include "slimnet/data.hpp"
#include "slimnet/deepiot.hpp"
#include "slimnet/factorize.hpp"
#include "slimnet/io.hpp"
#include "slimnet/kernels.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/report.hpp"
#include "slimnet/structure.hpp"
#include "slimnet/train.hpp"

// The optional compiled mode: the common float instantiations come from the slimnet::compiled
// library instead of being compiled here (see slimnet/compiled.hpp).
#ifdef SLIMNET_COMPILED
#include "slimnet/compiled.hpp"
#endif
