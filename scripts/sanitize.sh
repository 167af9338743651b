#!/usr/bin/env bash
# The sanitizer suite (issue #17): builds the unit tests of the modules that handle untrusted input
# or raw memory (core, data, io, nn, kernels, compressed layers) and the fuzz corpus replays with
# clang under AddressSanitizer + UndefinedBehaviorSanitizer (-fno-sanitize-recover: the first
# report fails the run; -Werror: clang's warnings fail it too), then runs them. The full run takes
# about 18 minutes on 2 cores (1,085 s); CI (scripts/test.sh) runs the subset that reads untrusted
# files (core, data, io and the fuzz replays, about 6 minutes), the full list is run by hand.
#   scripts/sanitize.sh [--build-only | --test-only] [TARGET...]   default: the list below
# (--build-only builds build-asan, --test-only runs its tests: scripts/test.sh builds it in the
# background beside its other builds and runs the tests once they are done.)
set -euo pipefail
cd "$(dirname "$0")/.."
step=all
case "${1:-}" in
  --build-only) step="build"; shift ;;
  --test-only) step="test"; shift ;;
esac
targets=("$@")
((${#targets[@]})) || targets=(core_tests data_tests io_tests nn_tests kernels_tests compressed_tests fuzz_replay)
command -v clang++ >/dev/null || { echo "sanitize: clang++ is missing (SLIMNET_SETUP_CLANG=1 scripts/setup.sh installs it)" >&2; exit 1; }
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# The targets are built as one goal (slimnet_target_set, CMakeLists.txt): each is one translation
# unit, and make builds the goals named on one command line one after another, on one core. The fuzz
# corpus replay compiles at -O0 (SLIMNET_UNOPTIMISED_TARGETS): -O1 quadruples its compile under the
# sanitizers. The unit tests stay at -O1: at -O0 the io tests ran 345 s and one failed (a layer
# format chosen by timing).
if [[ "$step" != test ]]; then
  cmake -S . -B build-asan -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
    -DCMAKE_CXX_FLAGS="$flags -Werror" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DSLIMNET_BUILD_TESTS=ON -DSLIMNET_BUILD_EXAMPLES=OFF -DSLIMNET_BUILD_BENCHMARKS=OFF \
    -DSLIMNET_TARGET_SET="$(IFS=';'; echo "${targets[*]}")" -DSLIMNET_UNOPTIMISED_TARGETS=fuzz_replay >/dev/null
  cmake --build build-asan -j "$(nproc 2>/dev/null || echo 2)" --target slimnet_target_set
fi
[[ "$step" != build ]] || exit 0
regex=$(printf '^%s$|' "${targets[@]%_tests}")
regex=${regex/'^fuzz_replay$'/'^fuzz_replay_'}  # fuzz_replay runs as one test per reader
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" -R "${regex%|}"
