#!/usr/bin/env bash
# cdcache quick start.  On a fresh Debian bookworm machine, as root:
#   ./run.sh bench   install what is missing, build, run the perf harness
#   ./run.sh test    install what is missing, build plain, ASan+UBSan and
#                    TSan, run the whole test suite in each, then the
#                    fuzz targets briefly (CDCACHE_FUZZ_SECONDS, default 20)
#                    and the mutants the suites must catch (short)
# Other verbs: deps (install only), build (release build only).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
BUILD=${CDCACHE_BUILD_DIR:-$ROOT/build}
JOBS=$(nproc 2>/dev/null || echo 2)

# examples/http: libmicrohttpd-dev (the service), prometheus (promtool, which
# lints its /metrics in the test), wrk and curl (its demo.sh).
PKGS=(build-essential cmake pkg-config liburcu-dev libck-dev libcunit1-dev
      libmongoc-dev libbson-dev libxxhash-dev gnuplot-nox valgrind
      clang libclang-rt-14-dev
      libmicrohttpd-dev prometheus wrk curl
      stunnel4 openssl)

deps() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

build() { # build DIR [cmake args...]
  local dir=$1
  shift
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$JOBS"
}

run_tests() { # run_tests DIR NAME
  echo "=== tests: $2" >&2
  ctest --test-dir "$1" --output-on-failure -j1 "${CTEST_ARGS[@]}"
}

CTEST_ARGS=()
case "${1:-}" in
deps)
  deps
  ;;
build)
  deps
  build "$BUILD/release"
  ;;
bench)
  deps
  build "$BUILD/release"
  shift
  exec "$BUILD/release/perf/cdcache-bench" "$@"
  ;;
test)
  deps
  shift
  CTEST_ARGS=("$@")
  # Sanitizer reports fail the run: ASan/UBSan abort on the first error,
  # TSan exits non-zero on any report (tests/tsan.supp lists, with their
  # reasons, the only suppressions: inside liburcu).
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export TSAN_OPTIONS="suppressions=$ROOT/tests/tsan.supp halt_on_error=1 exitcode=66"
  build "$BUILD/plain"
  build "$BUILD/asan" -DCDCACHE_SANITIZE=address
  build "$BUILD/tsan" -DCDCACHE_SANITIZE=thread
  run_tests "$BUILD/plain" plain
  run_tests "$BUILD/asan" "ASan+UBSan"
  run_tests "$BUILD/tsan" TSan
  # libFuzzer targets (clang): regressions, then a short run of each.
  echo "=== fuzz: ${CDCACHE_FUZZ_SECONDS:-20} s per target" >&2
  CDCACHE_FUZZ_BUILD_DIR="$BUILD/fuzz" tests/fuzz/run.sh "${CDCACHE_FUZZ_SECONDS:-20}"
  # Deliberately broken copies of the library that the suites must catch
  # (a scratch copy; one quick suite per mutant: about 4.5 minutes).
  echo "=== mutants (short)" >&2
  JOBS=$JOBS tests/mutants/run.sh --short
  echo "all test suites passed: plain, ASan+UBSan, TSan, fuzz, mutants" >&2
  ;;
*)
  echo "usage: $0 bench|test|deps|build [args...]" >&2
  exit 2
  ;;
esac
