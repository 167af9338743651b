#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (see README, Quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=ON -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF" scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
