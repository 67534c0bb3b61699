#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a
# consumer through find_package(cdcache) (shared and static targets) and
# through pkg-config, as users do.
set -euo pipefail
build=$1 src=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
libdir=$(ls -d "$work"/prefix/lib*/ | head -n1)
cmake -S "$src" -B "$work/b" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/b" >/dev/null
LD_LIBRARY_PATH="$libdir" "$work/b/consumer_cmake"
"$work/b/consumer_cmake_static"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -o "$work/consumer_pc" "$src/consumer.c" $(pkg-config --cflags --libs cdcache)
LD_LIBRARY_PATH="$libdir" "$work/consumer_pc"
# dlopen()ed into a process that links neither cdcache nor liburcu-bp
# (its initial-exec and descriptor TLS must still load).
cc -o "$work/consumer_dlopen" -I"$work/prefix/include" "$src/dlopen.c" -ldl
"$work/consumer_dlopen" "$libdir/libcdcache.so"
# Only the public API is exported from the shared library.
if nm -D --defined-only "$libdir/libcdcache.so" | awk '{print $3}' | grep -v '^cdcache_' | grep -q .; then
  echo "unexpected exported symbols:" >&2
  nm -D --defined-only "$libdir/libcdcache.so" | awk '{print $3}' | grep -v '^cdcache_' >&2
  exit 1
fi
echo "package: find_package shared+static, pkg-config, dlopen, exports: ok"
