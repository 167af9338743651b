// Reference architectures used throughout the seed papers.
#pragma once

#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::nn::models {

/// LeNet-300-100 (LeCun et al. 1998; Han et al. 2015): 784-300-100-10 with ReLU, 266,610 parameters.
/// Input (N, 1, 28, 28) or (N, 784).
template <class Scalar>
sequential<Scalar> lenet_300_100(rng& gen) {
  sequential<Scalar> m;
  m.add("flatten", flatten<Scalar>());
  m.add("fc1", linear<Scalar>(784, 300));
  m.add("relu1", relu<Scalar>());
  m.add("fc2", linear<Scalar>(300, 100));
  m.add("relu2", relu<Scalar>());
  m.add("fc3", linear<Scalar>(100, 10));
  m.reset_parameters(gen);
  return m;
}

/// LeNet-5 as in Caffe and Han et al. 2015: conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2,
/// fc 500, ReLU, fc 10: 431,080 parameters. Input (N, 1, 28, 28).
template <class Scalar>
sequential<Scalar> lenet5(rng& gen) {
  sequential<Scalar> m;
  m.add("conv1", conv2d<Scalar>(1, 20, 5));
  m.add("pool1", max_pool2d<Scalar>(2));
  m.add("conv2", conv2d<Scalar>(20, 50, 5));
  m.add("pool2", max_pool2d<Scalar>(2));
  m.add("flatten", flatten<Scalar>());
  m.add("fc1", linear<Scalar>(800, 500));
  m.add("relu1", relu<Scalar>());
  m.add("fc2", linear<Scalar>(500, 10));
  m.reset_parameters(gen);
  return m;
}

}  // namespace slimnet::nn::models
