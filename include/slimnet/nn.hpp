// slimnet::nn: layers, parameters and weight transforms, containers, initialisation, models.
#pragma once

#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/init.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/nn/parameter.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequential.hpp"
