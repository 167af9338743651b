#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job (README, Quick start): LeNet-5 on the real
# MNIST subset trained (or loaded from out/), then compressed twice from the same baseline:
# iterative magnitude pruning with retraining (Han et al., ~12x) and Dynamic Network Surgery
# (~55x), each printing the seed's per-layer table and saving the pruned model under out/.
set -euo pipefail
cd "$(dirname "$0")/.."
SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=OFF -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF" scripts/setup.sh
mkdir -p out
baseline=out/lenet5-mnist.safetensors  # trained by the first program if it does not exist yet
./build/examples/prune_magnitude --model lenet5 --data mnist --baseline "$baseline" --quiet \
  --out out/lenet5-mnist-magnitude.safetensors
./build/examples/dns --model lenet5 --data mnist --baseline "$baseline" --quiet --out out/lenet5-mnist-dns.safetensors
