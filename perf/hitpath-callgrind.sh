#!/usr/bin/env bash
# Instructions per cdcache_get on the hit path, counted by callgrind.
#   perf/hitpath-callgrind.sh [GETS] [POLICY]   (default 200000, 0 = allkeys-lru;
#                                                3 = allkeys-s3fifo)
# Builds the release (RelWithDebInfo, as run.sh) shared library in build/hitpath, compiles
# perf/hitpath.c against it, and runs it under callgrind collecting only
# inside hit_loop(): a loop of gets over 256 keys prepared before it, all
# hits in a small cache.  Prints Ir / GETS (loop overhead included, a few
# instructions).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${CDCACHE_BUILD_DIR:-$ROOT/build}/hitpath
GETS=${1:-200000}
POLICY=${2:-0}
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j2 --target cdcache >/dev/null
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cc -O2 -std=c11 -I"$ROOT/api" perf/hitpath.c -o "$OUT/hitpath" -L"$BUILD" -lcdcache \
  -Wl,-rpath,"$BUILD"
valgrind --tool=callgrind --toggle-collect=hit_loop --callgrind-out-file="$OUT/cg.out" \
  "$OUT/hitpath" "$GETS" "$POLICY" >/dev/null 2>"$OUT/log"
IR=$(sed -n 's/^summary: *//p' "$OUT/cg.out" | awk '{print $1}')
awk -v ir="$IR" -v n="$GETS" 'BEGIN { printf "hit path: %d instructions in %d gets = %.1f instructions per get\n", ir, n, ir / n }'
