#!/bin/sh
# Compiler launcher of the compile-only checks (slimnet_syntax_only_launcher in CMakeLists.txt: the
# header self-containment check, the benchmarks under SLIMNET_BENCHMARKS_SYNTAX_ONLY): runs the
# compile command with -fsyntax-only (parse and instantiate, no code generation: these checks only
# need to know that the file compiles) and then creates the object file the build expects, empty.
out=
prev=
for a in "$@"; do
  [ "$prev" = "-o" ] && out=$a
  prev=$a
done
"$@" -fsyntax-only || exit $?
[ -z "$out" ] || : > "$out"
