#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes every file reader.
#   scripts/fuzz.sh [SECONDS_PER_READER] [READER...]   default: 600 s each, every reader
# Each reader starts from its committed corpus (fuzz/corpus/<reader>) and grows a working corpus
# in build-fuzz/corpus/<reader>; a crash is written to build-fuzz/crash-<reader>-*, to be minimised
# and committed to fuzz/corpus/<reader>/ (ctest replays that folder on every build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
readers=("$@")
if ((${#readers[@]} == 0)); then
  readers=(idx cifar hhar mnist_json safetensors)
  if [[ -f fuzz/model_file_fuzz.cpp ]]; then readers+=(model_file); fi
fi
command -v clang++ >/dev/null || { echo "fuzz: clang++ is missing (apt-get install clang)" >&2; exit 1; }
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLIMNET_BUILD_FUZZERS=ON \
  -DSLIMNET_BUILD_TESTS=OFF -DSLIMNET_BUILD_EXAMPLES=OFF -DSLIMNET_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target $(printf 'fuzz_%s ' "${readers[@]}")
for r in "${readers[@]}"; do
  mkdir -p "build-fuzz/corpus/$r"
  log="build-fuzz/fuzz-$r.log"
  status=0
  ./build-fuzz/fuzz/fuzz_"$r" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="build-fuzz/crash-$r-" "build-fuzz/corpus/$r" "fuzz/corpus/$r" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  echo "fuzz: $r: ${seconds} s, ${runs:-?} executions, exit $status$( ((status)) && echo ' (see '"$log"')')"
done
