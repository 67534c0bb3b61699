#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS_PER_TARGET]
#
# Builds the libFuzzer targets with clang (a CMake project of their own,
# tests/fuzz/CMakeLists.txt, in build/fuzz), replays every regression
# input (tests/fuzz/regressions/<target>/), then fuzzes each target for
# SECONDS_PER_TARGET (default 20) starting from its committed corpus
# (tests/fuzz/corpus/<target>/, read only: new inputs go to a temporary
# directory).  Prints executions and corpus size per target.  Exits
# non-zero if a regression input or the fuzzing crashes (sanitizer
# report, model violation, timeout, leak); crash inputs are kept under
# build/fuzz-artifacts/<target>/.
#
# Environment:
#   CDCACHE_FUZZ_TARGETS    targets to run (default: all that were built)
#   CDCACHE_FUZZ_BUILD_DIR  build directory (default: build/fuzz)
#   CDCACHE_FUZZ_ARTIFACTS  where crash inputs go (default: build/fuzz-artifacts)
#   CDCACHE_FUZZ_JOBS       >1: fuzz each target with that many processes (-fork)
#   CDCACHE_FUZZ_ARGS       extra libFuzzer flags
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SECS=${1:-20}
BUILD=${CDCACHE_FUZZ_BUILD_DIR:-$ROOT/build/fuzz}
ARTIFACTS=${CDCACHE_FUZZ_ARTIFACTS:-$ROOT/build/fuzz-artifacts}
JOBS=${CDCACHE_FUZZ_JOBS:-1}
ALL="fuzz_api fuzz_keyrule fuzz_event"

if ! [[ $SECS =~ ^[0-9]+$ ]] || ((SECS < 1)); then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi

echo "=== configuring and building the fuzz targets in $BUILD" >&2
cmake -S "$HERE" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
summary=()

for t in ${CDCACHE_FUZZ_TARGETS:-$ALL}; do
  bin=$BUILD/$t
  if [[ ! -x $bin ]]; then
    echo "=== $t: not built (cdc/ incomplete?); skipped" >&2
    summary+=("$t: skipped (not built)")
    continue
  fi
  mkdir -p "$ARTIFACTS/$t" "$work/$t"

  # 1. Regression inputs first: each must run clean.
  regs=()
  if [[ -d $HERE/regressions/$t ]]; then
    while IFS= read -r -d '' f; do regs+=("$f"); done \
      < <(find "$HERE/regressions/$t" -type f ! -name '.*' ! -name '*.md' -print0 | sort -z)
  fi
  if ((${#regs[@]})); then
    echo "=== $t: replaying ${#regs[@]} regression input(s)" >&2
    for f in "${regs[@]}"; do
      if ! "$bin" -runs=1 "$f" >"$work/$t.reg.log" 2>&1; then
        echo "FAIL $t: regression input $(basename "$f") crashes:" >&2
        grep -a -E 'violation|runtime error|ERROR|fuzz_[a-z]+:' "$work/$t.reg.log" | head -5 >&2 || true
        echo "  reproduce: $bin $f" >&2
        failed+=("$t: regression $(basename "$f")")
      fi
    done
  fi

  # 2. Fuzz from the committed corpus; new inputs go to $work only.
  echo "=== $t: fuzzing for ${SECS}s" >&2
  args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=1024
        -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t/")
  ((JOBS > 1)) && args+=(-fork="$JOBS" -ignore_crashes=0)
  # shellcheck disable=SC2086
  if "$bin" "${args[@]}" ${CDCACHE_FUZZ_ARGS:-} "$work/$t" "$HERE/corpus/$t" \
      >"$work/$t.log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$t: fuzzing")
    echo "FAIL $t:" >&2
    grep -a -E 'violation|runtime error|ERROR|fuzz_[a-z]+:|Test unit written' "$work/$t.log" | head -8 >&2 || true
  fi
  execs=$(grep -a -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | tail -1 | awk '{print $2}')
  corp=$(grep -a -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$work/$t.log" | tail -1 | awk '{print $2}')
  new=$(find "$work/$t" -type f | wc -l)
  summary+=("$t: $status, ${execs:-?} executions, corpus ${corp:-?} (units/bytes), $new new input(s) not kept")
done

echo "=== summary" >&2
for s in "${summary[@]}"; do echo "  $s"; done
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}" >&2
  echo "crash inputs: $ARTIFACTS/<target>/ (add them to tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi
echo "all fuzz targets clean" >&2
