// slimnet::structure: how layers shrink. Thinning removes units (output features, channels,
// hidden units) with everything coupled to them, through any Sequential nesting, LSTM / GRU stacks
// and Bidirectional layers and DeepSense's TimeDistributed / SensorStack blocks; DeepIoT's thinning,
// structured magnitude pruning and DyNS-Ext's dead-unit removal use it. unit_groups lists the
// removable units and the weights each owns.
#pragma once

#include "slimnet/structure/dead_units.hpp"
#include "slimnet/structure/thin.hpp"
#include "slimnet/structure/units.hpp"
