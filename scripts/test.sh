#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (see README, Quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
