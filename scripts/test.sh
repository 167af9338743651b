#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (see README, Quick start).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
setup=(env SLIMNET_SETUP_CLANG=1 SLIMNET_SETUP_ARM64=1)
# The packages first (clang and the aarch64 cross compiler are needed by the background builds below).
"${setup[@]}" SLIMNET_SETUP_BUILD=0 scripts/setup.sh

# Two builds that no other step needs start now, in the background, beside build/: the sanitizer
# build (clang, ASan + UBSan) of the readers of untrusted files (core, data, io and the fuzz corpus
# replays; the whole suite: scripts/sanitize.sh) and the ARM64 step (scripts/test_arm64.sh: the kernel
# tests cross-built with Debian's aarch64 g++ and the subset that checks the NEON paths and the
# run-time dispatch run under qemu-user; correctness only, qemu says nothing about speed). Why: each
# of their test programs is one translation unit (a unity build), so built in a step of their own
# they left a core idle; the sanitizer io tests alone (about 410 s of CPU) ended the run on one core.
# Started first, they fill whatever core build/, its tests and build-openmp leave idle. Each runs in
# a session of its own (setsid), so that a failure elsewhere stops its compilers too; its output is
# printed when it is waited for (the time test_arm64.sh prints includes the load of the other builds).
background_pids=()
background_logs=()
start_background() {
  local log
  log=$(mktemp)
  setsid "$@" >"$log" 2>&1 &
  background_pids+=("$!")
  background_logs+=("$log")
}
stop_background() {
  local pid
  for pid in "${background_pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  rm -f "${background_logs[@]}"
}
trap stop_background EXIT
trap 'exit 130' INT TERM
finish_background() {  # index, what: waits for it, prints its output, stops the run if it failed
  local status=0
  wait "${background_pids[$1]}" || status=$?
  cat "${background_logs[$1]}"
  ((status == 0)) || { echo "test.sh: $2 failed (exit $status)" >&2; exit "$status"; }
}
sanitized=(core_tests data_tests io_tests fuzz_replay)
start_background scripts/sanitize.sh --build-only "${sanitized[@]}"
start_background scripts/test_arm64.sh

# A check build (-DSLIMNET_CHECK_BUILD=ON: -O1, about a quarter less compile time than -O3; the
# tests take seconds either way). scripts/demo.sh configures build/ back to -O3. In the compiled
# mode (-DSLIMNET_COMPILED=ON): the examples and README programs, which include
# <slimnet/slimnet.hpp>, take the common float instantiations from the slimnet::compiled library
# instead of compiling them each, and so do the unit tests of the modules listed in
# tests/CMakeLists.txt (slimnet_compiled_mode_tests: it reads include/slimnet/compiled.hpp ahead
# of their sources); the other unit tests, the header checks (every header but the umbrellas
# alone, and clang's),
# build-openmp and build-asan stay header-only; the consumer check installs the compiled
# mode (its core consumer is header-only).
"${setup[@]}" SLIMNET_CMAKE_ARGS="-DSLIMNET_BUILD_TESTS=ON -DSLIMNET_BUILD_EXAMPLES=ON -DSLIMNET_BUILD_BENCHMARKS=OFF -DSLIMNET_CHECK_BUILD=ON -DSLIMNET_COMPILED=ON" scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$jobs"
# The kernel tests again with their threads from an OpenMP pool, and every benchmark checked to
# compile (-fsyntax-only, SLIMNET_BENCHMARKS_SYNTAX_ONLY: never run here, speed is shown by
# benchmarks, not asserted by tests, so no code is generated or linked for them).
cmake -S . -B build-openmp -DCMAKE_BUILD_TYPE=Release -DSLIMNET_CHECK_BUILD=ON -DSLIMNET_OPENMP=ON -DSLIMNET_BUILD_TESTS=ON \
  -DSLIMNET_BUILD_EXAMPLES=OFF -DSLIMNET_BUILD_BENCHMARKS=ON -DSLIMNET_BENCHMARKS_SYNTAX_ONLY=ON \
  -DSLIMNET_TARGET_SET="kernels_tests;slimnet_benchmarks" >/dev/null
# One goal (see CMakeLists.txt, SLIMNET_TARGET_SET): the kernel tests, one translation unit, compile
# beside the benchmarks instead of before them on one core.
cmake --build build-openmp -j "$jobs" --target slimnet_target_set
OMP_NUM_THREADS=2 build-openmp/tests/kernels_tests --order lex
finish_background 1 scripts/test_arm64.sh
# The sanitizer tests run once their build is done and the machine is free (warnings are errors in
# that build: clang's -Werror).
finish_background 0 "the sanitizer build (scripts/sanitize.sh --build-only)"
scripts/sanitize.sh --test-only "${sanitized[@]}"
