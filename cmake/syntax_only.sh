#!/bin/sh
# Compiler launcher of the header self-containment check (tests/CMakeLists.txt): runs the compile
# command with -fsyntax-only (parse and instantiate, no code generation: the check only needs to
# know that each header compiles alone) and then creates the object file the build expects, empty.
out=
prev=
for a in "$@"; do
  [ "$prev" = "-o" ] && out=$a
  prev=$a
done
"$@" -fsyntax-only || exit $?
[ -z "$out" ] || : > "$out"
