// slimnet::structure: how layers shrink. Thinning removes units (output features, channels,
// hidden units) with everything coupled to them, through any Sequential nesting, LSTM / GRU stacks
// and Bidirectional layers; DeepIoT's thinning and DyNS-Ext's dead-unit removal use it.
#pragma once

#include "slimnet/structure/thin.hpp"
#include "slimnet/structure/dead_units.hpp"
