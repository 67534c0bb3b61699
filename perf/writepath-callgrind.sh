#!/usr/bin/env bash
# Instructions per cdcache_put and per missing cdcache_get, counted by
# callgrind (issue 10's write path).
#   perf/writepath-callgrind.sh [OPS]   (default 200000)
# Builds the release (RelWithDebInfo, as run.sh) shared library in
# build/writepath, compiles perf/writepath.c against it, and runs it under
# callgrind once per loop (replace_loop: puts over cached keys; insert_loop:
# puts of absent keys into a full cache, each evicting one; miss_loop: gets
# of absent keys), collecting only inside that loop.  The call_rcu thread's
# frees that run meanwhile are counted too.  Prints Ir / OPS per loop.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${CDCACHE_BUILD_DIR:-$ROOT/build}/writepath
OPS=${1:-200000}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j2 --target cdcache >/dev/null
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cc -O2 -std=c11 -I"$ROOT/api" perf/writepath.c -o "$OUT/writepath" -L"$BUILD" -lcdcache \
  -Wl,-rpath,"$BUILD"
for loop in replace_loop insert_loop miss_loop; do
  valgrind --tool=callgrind --toggle-collect="$loop" --callgrind-out-file="$OUT/$loop.out" \
    "$OUT/writepath" "$OPS" >/dev/null 2>"$OUT/log"
  IR=$(sed -n 's/^summary: *//p' "$OUT/$loop.out" | awk '{print $1}')
  awk -v ir="$IR" -v n="$OPS" -v l="$loop" \
    'BEGIN { printf "%-12s %d instructions in %d ops = %.1f per op\n", l, ir, n, ir / n }'
  if [[ -n ${CDCACHE_CG_KEEP:-} ]]; then cp "$OUT/$loop.out" "$CDCACHE_CG_KEEP.$loop"; fi
done
