#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: LeNet-5 trained and evaluated on the
# real MNIST subset and on Fashion-MNIST (see README, Quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=OFF -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF" scripts/setup.sh
mkdir -p out
./build/examples/train_lenet --model lenet5 --data mnist --epochs 20 --out out/lenet5-mnist.safetensors
./build/examples/train_lenet --model lenet5 --data fashion --epochs 15 --out out/lenet5-fashion.safetensors
