#!/usr/bin/env bash
# Cross-builds the kernel tests for 64-bit ARM (Debian's aarch64 g++, cmake/aarch64-linux-gnu.cmake)
# and runs the subset that checks the ARM paths and the dispatch under qemu-user, in a few minutes
# (the whole kernel suite takes over 20 minutes under qemu). Correctness only: qemu says nothing
# about speed.
#
#   scripts/test_arm64.sh [build-dir]        (default build-arm64)
#
# The subset (SLIMNET_ARM64_TESTS: a file of test names, one a line, for Catch2's --input-file):
# the tests of the dispatched kernels, forced to each family the CPU has (under qemu: neon and
# portable) and on the automatic path:
#   fp32 GEMM (every family over odd shapes and layouts, small cache blocks for the NEON family's
#   block edges, the path that ran), XNOR GEMM (every path over odd shapes with 1 and 3 threads,
#   the portable path, edge cases), sign packing, int8 / int16 GEMM (every path over odd shapes
#   with 1 and 3 threads: on neon both SDOT and widened products, the portable path, strided
#   operands, SDOT asserted on the automatic path), cpu_features / SLIMNET_ISA / set_isa.
# Left out: the other kernels' tests and the 1000^3 checks (the whole suite:
# SLIMNET_ARM64_TESTS=all).
#
# The guest's C library: Debian's cross sysroot (/usr/aarch64-linux-gnu, libc6-arm64-cross) makes
# every program that starts a std::thread spin forever under qemu-aarch64 7.2 (a three-thread
# hello-world never returns), while the arm64 multiarch libc (libc6:arm64, which libfmt-dev:arm64
# pulls in; its loader is /lib/ld-linux-aarch64.so.1) runs it in 0.25 s; so qemu gets no -L when the
# multiarch loader is there, and the multi-threaded tests can run.
# Requires: g++-aarch64-linux-gnu, qemu-user, libfmt-dev:arm64, zlib1g-dev:arm64 (see the toolchain file).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-arm64}
list=${SLIMNET_ARM64_TESTS:-}
if [[ "$list" == all ]]; then
  list=""
  all=1
elif [[ -z "$list" ]]; then
  list=$(mktemp)
  trap 'rm -f "$list"' EXIT
  cat >"$list" <<'TESTS'
gemm: every path the CPU has equals the reference over odd shapes and layouts
gemm: small cache blocks exercise every block edge of the NEON family
gemm_path / gemm_path_calls say which family computed a product
gemm with beta = 0 ignores NaN in C; empty and zero-depth products
gemm: layer-shaped products (vector\, narrow\, shallow\, every tile height)
gemm_xnor: every path the CPU has equals the reference over odd shapes
gemm_xnor: kernel_path::portable runs the portable path whatever the active family
gemm_xnor: rows with extra zero words\, empty products\, shape errors
pack_signs: every path the CPU has packs the same bits as one value at a time
gemm_int8 / gemm_int16: every path the CPU has equals the reference over odd shapes
gemm_int8: kernel_path::portable and strided operands run the portable path
gemm_int8 on aarch64: the automatic path is neon and runs SDOT where the CPU has the dot product
cpu_features: the report is consistent with itself and with the compile flags
best_isa: the widest family of a feature set
parse_isa and SLIMNET_ISA: names\, unknown values\, families the CPU lacks
set_isa: round trip over every family the CPU has; the others raise
TESTS
fi
jobs=$(nproc 2>/dev/null || echo 2)

for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "test_arm64.sh: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2; exit 1; }
done

# A check build (-DSLIMNET_CHECK_BUILD=ON: -O1, as CI's other builds): the kernel tests compiled in
# 59 s of CPU instead of 113 s at -O3 (aarch64 g++ 12, load 5-6), and the subset ran as long under
# qemu (32 s against 31 s, side by side; the whole suite, SLIMNET_ARM64_TESTS=all, not timed at -O1).
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release -DSLIMNET_NATIVE=OFF \
  -DSLIMNET_CHECK_BUILD=ON -DSLIMNET_BUILD_TESTS=ON -DSLIMNET_BUILD_EXAMPLES=OFF -DSLIMNET_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target kernels_tests

# -cpu max: an ARMv8.x CPU with the dot product (HWCAP_ASIMDDP), so the int8 tests run the SDOT
# kernel, and the widened one by override.
qemu=(qemu-aarch64 -cpu max)
if [[ ! -e /lib/ld-linux-aarch64.so.1 ]]; then
  echo "test_arm64.sh: no arm64 multiarch libc (apt-get install libc6:arm64); using the cross sysroot, where threads hang under qemu" >&2
  qemu+=(-L /usr/aarch64-linux-gnu)
fi
start=$(date +%s)
status=0
# Under qemu cpu_features() finds NEON and the dot product: active_isa() is neon, the NEON paths run.
if [[ -n "${all:-}" ]]; then
  "${qemu[@]}" "$build/tests/kernels_tests" || status=$?
  what="the whole kernel suite"
else
  "${qemu[@]}" "$build/tests/kernels_tests" --input-file "$list" || status=$?
  what="$(grep -c . "$list") tests"
fi
end=$(date +%s)
echo "test_arm64.sh: $what under qemu-aarch64 took $((end - start)) s"
exit "$status"
