// Reference architectures used throughout the seed papers.
#pragma once

#include <string>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
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

/// A VGG-style network for 28x28 single-channel images (Simonyan & Zisserman 2015, configuration A
/// with BatchNorm): 3x3 convolutions with padding 1, each followed by BatchNorm2d and ReLU, in four
/// blocks [64] M [128] M [256 256] M [512 512] M with every width divided by `width_divisor`, then
/// fc 256, ReLU, fc 10. VGG-11's fifth block is left out: after four 2x2 poolings a 28x28 image is
/// 1x1, where a padded 3x3 kernel would use only its centre. At the default divisor 4: 16-32-64-64-
/// 128-128 channels, 316,560 weights in convolutions and linear layers (89% in the convolutions,
/// unlike VGG-16, whose fully connected layers hold 90%). Layers conv1..conv6, bn1..bn6, fc1, fc2.
template <class Scalar>
sequential<Scalar> vgg_small(rng& gen, index_t width_divisor = 4) {
  if (width_divisor <= 0 || 64 % width_divisor != 0) {
    slimnet::detail::raise<config_error>("slimnet::nn::models::vgg_small",
                                         "width_divisor = {} must divide 64", width_divisor);
  }
  const index_t w = 64 / width_divisor;
  const index_t widths[] = {w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w};
  const bool pool_after[] = {true, true, false, true, false, true};
  sequential<Scalar> m;
  index_t in = 1;
  for (int i = 0; i < 6; ++i) {
    const auto n = std::to_string(i + 1);
    m.add("conv" + n, conv2d<Scalar>(in, widths[i], 3, {1, 1, true}));
    m.add("bn" + n, batch_norm<Scalar>(widths[i], 2, {}));
    m.add("relu" + n, relu<Scalar>());
    if (pool_after[i]) m.add("pool" + n, max_pool2d<Scalar>(2));
    in = widths[i];
  }
  m.add("flatten", flatten<Scalar>());
  m.add("fc1", linear<Scalar>(in, 256));
  m.add("relu7", relu<Scalar>());
  m.add("fc2", linear<Scalar>(256, 10));
  m.reset_parameters(gen);
  return m;
}

}  // namespace slimnet::nn::models
