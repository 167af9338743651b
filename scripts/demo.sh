#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job (README, Quick start): LeNet-5 on the real
# MNIST subset trained (or loaded from out/), then compressed twice from the same baseline:
# iterative magnitude pruning with retraining (Han et al., 12.6x) and Dynamic Network Surgery
# (~120x, past the paper's 108x), both retraining with knowledge distillation from the dense
# baseline; each prints the seed's per-layer table and saves the pruned model under out/. Then each
# pruned model is deployed (example 13): written as one compressed model file under out/ (*.slim.
# safetensors), reloaded with no model code, its bytes against the dense file, its accuracy after
# reloading and its speed-up over the float model (batch 1 and 64, one thread) printed. Then the
# DNS model goes through the rest of Deep Compression (codebooks + Huffman, example 12). Last, a
# table of every compressed file written: its bytes next to its measured speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=OFF -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF" scripts/setup.sh
mkdir -p out
baseline=out/lenet5-mnist.safetensors  # trained by the first program if it does not exist yet
./build/examples/prune_magnitude --model lenet5 --data mnist --baseline "$baseline" --quiet --distill 0.5 \
  --out out/lenet5-mnist-magnitude.safetensors
# LeNet-300-100 magnitude-pruned the same way (about 10 s): the whole-model benchmark's
# lenet300-magnitude row loads it from out/ (random weights pruned to Han's densities otherwise).
./build/examples/prune_magnitude --model lenet300 --data mnist --baseline out/lenet300-mnist.safetensors --quiet \
  --out out/lenet300-mnist-magnitude.safetensors
./build/examples/dns --model lenet5 --data mnist --baseline "$baseline" --quiet --distill 0.5 \
  --c-rate conv1=1.3,conv2=4.3,fc1=7.2,fc2=3.3 --out out/lenet5-mnist-dns.safetensors
for pruned in magnitude dns; do
  ./build/examples/deploy --model lenet5 --data mnist --in out/lenet5-mnist-$pruned.safetensors \
    --out out/lenet5-mnist-$pruned.slim.safetensors --quiet
done
# Deep Compression of the DNS model (example 12): its surviving weights clustered into a 4-bit
# codebook per layer, the centroids fine-tuned, indices Huffman-coded: the whole runnable model in
# about 6 KB, its bytes against the dense file and its accuracy after reloading printed.
./build/examples/deep_compression --model lenet5 --data mnist --baseline "$baseline" \
  --pruned out/lenet5-mnist-dns.safetensors --bits conv1=4,conv2=4,fc1=4,fc2=4 --finetune-epochs 3 --quiet \
  --out out/lenet5-mnist-dns-codebook.slim.safetensors
# Last, every compressed LeNet-5 file written above, its bytes next to its measured speed-up over its
# own float model (the file decoded), one thread, batch 1 and 64, 5 interleaved rounds: the whole-
# model benchmark (issue 15) in --files mode, built once (a minute or two). Example 07's BNN file
# joins the table when it is there (build/examples/binary --data mnist --nets lenet5 --channels
# 32,64,512 --methods bnn --epochs 20 --out out/lenet5-mnist-bnn.safetensors).
cmake -S . -B build -DSLIMNET_BUILD_BENCHMARKS=ON >/dev/null
cmake --build build --target compressed_models -j "$(nproc)" >/dev/null
files=out/lenet5-mnist-magnitude.slim.safetensors,out/lenet5-mnist-dns.slim.safetensors,out/lenet5-mnist-dns-codebook.slim.safetensors
if [[ -f out/lenet5-mnist-bnn.safetensors ]]; then files+=,out/lenet5-mnist-bnn.safetensors; fi
./build/benchmarks/compressed_models --files "$files" --rounds 5
