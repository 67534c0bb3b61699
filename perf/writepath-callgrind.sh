#!/usr/bin/env bash
# Instructions per cdcache_put and per missing cdcache_get, counted by
# callgrind (issue 10's write path).
#   perf/writepath-callgrind.sh [OPS]   (default 200000)
# Builds the release (RelWithDebInfo, as run.sh) shared library in
# build/writepath, compiles perf/writepath.c against it, and runs it under
# callgrind once per loop (replace_loop: puts over cached keys; insert_loop:
# puts of absent keys into a full cache, each evicting one; miss_loop: gets
# of absent keys), collecting only inside that loop.  callgrind counts the
# calling thread only: the call_rcu thread's frees are not in the figures,
# and valgrind runs that thread rarely, so the share of puts that find no
# recycled entry and allocate varies between runs; the figure without the
# allocator's calls varies less.  Prints Ir / OPS per loop.
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
  # What the allocator hook's calls cost (they come and go with how often
  # valgrind lets the call_rcu thread refill the pools), shown apart.
  ALLOC=$(callgrind_annotate --inclusive=yes "$OUT/$loop.out" 2>/dev/null |
    awk '/cdcache__alloc |cdcache__charge |cdcache__free / { gsub(",", "", $1); s += $1 } END { print s + 0 }')
  awk -v ir="$IR" -v al="$ALLOC" -v n="$OPS" -v l="$loop" \
    'BEGIN { printf "%-12s %d instructions in %d ops = %.1f per op (%.1f without the allocator)\n",
             l, ir, n, ir / n, (ir - al) / n }'
  if [[ -n ${CDCACHE_CG_KEEP:-} ]]; then cp "$OUT/$loop.out" "$CDCACHE_CG_KEEP.$loop"; fi
done
