#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (see README, Quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
# A check build (-DSLIMNET_CHECK_BUILD=ON: -O1, about a quarter less compile time than -O3; the
# tests take seconds either way). scripts/demo.sh configures build/ back to -O3. In the compiled
# mode (-DSLIMNET_COMPILED=ON): the examples and README programs, which include
# <slimnet/slimnet.hpp>, take the common float instantiations from the slimnet::compiled library
# instead of compiling them each, and so do the unit tests of the modules listed in
# tests/CMakeLists.txt (slimnet_compiled_mode_tests: it reads include/slimnet/compiled.hpp ahead
# of their sources); the other unit tests, the header checks (every header but the umbrellas
# alone, and clang's),
# build-openmp and build-asan below stay header-only; the consumer check installs the compiled
# mode (its core consumer is header-only).
SLIMNET_SETUP_CLANG=1 SLIMNET_SETUP_ARM64=1 SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=ON -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF -DSLIMNET_CHECK_BUILD=ON -DSLIMNET_COMPILED=ON" scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$jobs"
# ARM64: the kernel tests cross-built with Debian's aarch64 g++ and run under qemu-user, the subset
# that checks the NEON paths and the run-time dispatch (scripts/test_arm64.sh lists it; correctness
# only, qemu says nothing about speed; SLIMNET_ARM64_TESTS=all runs the whole kernel suite by hand).
# Its build is one translation unit (one core), so it runs in the background beside the OpenMP build
# below (its qemu run too: the time it prints includes that load); its output is printed when done.
arm64_log=$(mktemp)
scripts/test_arm64.sh >"$arm64_log" 2>&1 &
arm64_pid=$!
trap 'kill "$arm64_pid" 2>/dev/null; rm -f "$arm64_log"' EXIT
# The kernel tests again with their threads from an OpenMP pool, and every benchmark checked to
# compile (-fsyntax-only, SLIMNET_BENCHMARKS_SYNTAX_ONLY: never run here, speed is shown by
# benchmarks, not asserted by tests, so no code is generated or linked for them).
cmake -S . -B build-openmp -DCMAKE_BUILD_TYPE=Release -DSLIMNET_CHECK_BUILD=ON -DSLIMNET_OPENMP=ON -DSLIMNET_BUILD_TESTS=ON \
  -DSLIMNET_BUILD_EXAMPLES=OFF -DSLIMNET_BUILD_BENCHMARKS=ON -DSLIMNET_BENCHMARKS_SYNTAX_ONLY=ON \
  -DSLIMNET_TARGET_SET="kernels_tests;slimnet_benchmarks" >/dev/null
# One goal (see CMakeLists.txt, SLIMNET_TARGET_SET): the kernel tests, one translation unit, compile
# beside the benchmarks instead of before them on one core.
cmake --build build-openmp -j "$jobs" --target slimnet_target_set
arm64_status=0
wait "$arm64_pid" || arm64_status=$?
cat "$arm64_log"
trap - EXIT
rm -f "$arm64_log"
((arm64_status == 0)) || { echo "test.sh: scripts/test_arm64.sh failed (exit $arm64_status)" >&2; exit "$arm64_status"; }
OMP_NUM_THREADS=2 build-openmp/tests/kernels_tests --order lex
# The readers of untrusted files (core, data, io and the fuzz corpus replays) compiled with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer, warnings as errors (the whole suite: scripts/sanitize.sh).
scripts/sanitize.sh core_tests data_tests io_tests fuzz_replay
