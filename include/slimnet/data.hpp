// slimnet::data: datasets and batching, IDX (MNIST, Fashion-MNIST), CIFAR-10, the MNIST subset.
#pragma once

#include "slimnet/data/byte_source.hpp"
#include "slimnet/data/cifar.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/data/idx.hpp"
#include "slimnet/data/mnist_json.hpp"
#include "slimnet/data/hhar.hpp"
#include "slimnet/data/synthetic_imu.hpp"
