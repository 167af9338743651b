// slimnet::io: model and tensor files.
#pragma once

#include "slimnet/io/safetensors.hpp"
