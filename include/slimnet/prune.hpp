// slimnet::prune: masks and magnitude criteria on Eigen objects, masks on model parameters,
// PyTorch-shaped functional API, schedules (one-shot, iterative, AGP), sensitivity analysis, DNS,
// structured magnitude pruning (whole units removed through slimnet::structure), DyNS-Ext.
#pragma once

#include "slimnet/prune/dns.hpp"
#include "slimnet/prune/dyns_ext.hpp"
#include "slimnet/prune/functional.hpp"
#include "slimnet/prune/mask.hpp"
#include "slimnet/prune/schedule.hpp"
#include "slimnet/prune/sensitivity.hpp"
#include "slimnet/prune/structured.hpp"
#include "slimnet/prune/transform.hpp"
