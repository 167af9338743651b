// slimnet core: errors, tensors, views of Eigen objects, the seeded generator.
#pragma once

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/core/view.hpp"
