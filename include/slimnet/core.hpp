// slimnet core: errors, checked size arithmetic, tensors, views of Eigen objects, the seeded
// generator, and safe file access (regular files only, atomic writes).
#pragma once

#include "slimnet/core/checked.hpp"
#include "slimnet/core/error.hpp"
#include "slimnet/core/file.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/core/view.hpp"
