// slimnet::io: model and tensor files, training checkpoint files.
#pragma once

#include "slimnet/io/safetensors.hpp"
#include "slimnet/io/tensor_codec.hpp"
#include "slimnet/io/architecture.hpp"
#include "slimnet/io/model_file.hpp"
#include "slimnet/train/checkpoint.hpp"
