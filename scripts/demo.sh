#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job (README, Quick start): LeNet-5 on the real
# MNIST subset trained (or loaded from out/), then compressed twice from the same baseline:
# iterative magnitude pruning with retraining (Han et al., 12.6x) and Dynamic Network Surgery
# (~120x, past the paper's 108x), both retraining with knowledge distillation from the dense
# baseline; each prints the seed's per-layer table and saves the pruned model under out/. Then each
# pruned model is deployed (example 13): written as one compressed model file under out/ (*.slim.
# safetensors), reloaded with no model code, its bytes against the dense file, its accuracy after
# reloading and its speed-up over the float model (batch 1 and 64, one thread) printed.
set -euo pipefail
cd "$(dirname "$0")/.."
SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=OFF -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF" scripts/setup.sh
mkdir -p out
baseline=out/lenet5-mnist.safetensors  # trained by the first program if it does not exist yet
./build/examples/prune_magnitude --model lenet5 --data mnist --baseline "$baseline" --quiet --distill 0.5 \
  --out out/lenet5-mnist-magnitude.safetensors
./build/examples/dns --model lenet5 --data mnist --baseline "$baseline" --quiet --distill 0.5 \
  --c-rate conv1=1.3,conv2=4.3,fc1=7.2,fc2=3.3 --out out/lenet5-mnist-dns.safetensors
for pruned in magnitude dns; do
  ./build/examples/deploy --model lenet5 --data mnist --in out/lenet5-mnist-$pruned.safetensors \
    --out out/lenet5-mnist-$pruned.slim.safetensors --quiet
done
