#!/usr/bin/env bash
# The folders form a stack: each may include only its own headers and
# those of the folders below it.
#   core/    <- shards/ <- api/ <- cdc/
# cdc/ reaches the cache only through api/cache_internal.h (and the
# public api/cdcache.h).  CMakeLists.txt builds each layer as an object
# library with just those include directories; this check asks the
# compiler itself (cc -H: every header it opened, and from where), so
# nothing a text scan could miss gets through: "../" paths, <...>
# includes resolved through -I, macro-expanded includes, line splices,
# included files of any extension.  Every .c and .h of every layer is
# preprocessed with its layer's include directories; each header opened
# by a file of a layer must lie in an allowed folder (or outside the
# source tree: system and package headers).
# Usage: tests/check_layers.sh [SOURCE_DIR [CC]]
set -euo pipefail
SRC=$(cd "${1:-$(dirname "$0")/..}" && pwd)
CC=${2:-cc}
cd "$SRC"
PUB=$(mktemp -d)
trap 'rm -rf "$PUB"' EXIT
cp api/cdcache.h "$PUB/" # as CMake's public/ copy: the layers below api/
PKG=$(pkg-config --cflags liburcu-bp libxxhash libmongoc-1.0 libbson-1.0 2>/dev/null || true)

declare -A incdirs=(
  [core]="core $PUB"
  [shards]="shards core $PUB"
  [api]="api shards core"
  [cdc]="cdc api"
)
# What a file of each layer may open (folders, or single files).
declare -A allowed=(
  [core]="core/"
  [shards]="shards/ core/"
  [api]="api/ shards/ core/"
  [cdc]="cdc/ api/cdcache.h api/cache_internal.h"
)
layer_of() { # a path relative to SRC -> its top folder, if a layer
  case $1 in
  core/* | shards/* | api/* | cdc/*) echo "${1%%/*}" ;;
  *) echo "" ;;
  esac
}
bad=0
checked=0
declare -A real=() # path as cc printed it -> resolved
for layer in core shards api cdc; do
  [ -d "$layer" ] || continue
  flags=()
  for d in ${incdirs[$layer]}; do flags+=("-I$d"); done
  while IFS= read -r -d '' f; do
    checked=$((checked + 1))
    # shellcheck disable=SC2086
    if ! out=$("$CC" -H -fsyntax-only -std=gnu11 -D_GNU_SOURCE -DCDCACHE_BUILDING=1 \
      "${flags[@]}" $PKG -x c "$f" 2>&1 >/dev/null); then
      echo "$f: does not compile with $layer/'s include directories:" >&2
      echo "$out" | grep -v '^\.' | head -5 >&2
      bad=1
      continue
    fi
    # Lines "..... path": depth = dots; the includer is the last path one
    # level up (the file itself at depth 0).
    stack=("$SRC/$f")
    while IFS= read -r line; do
      dots=${line%% *}
      [[ $dots =~ ^\.+$ ]] || continue
      depth=${#dots}
      raw=${line#* }
      if [[ -z ${real[$raw]+x} ]]; then
        real[$raw]=$(realpath -m "$raw")
      fi
      path=${real[$raw]}
      stack[depth]=$path
      includer=${stack[depth - 1]}
      case $includer in "$SRC"/*) ;; *) continue ;; esac
      rel_in=${includer#"$SRC"/}
      from=$(layer_of "$rel_in")
      [ -n "$from" ] || continue
      if [[ $path == "$PUB/cdcache.h" || $path == "$SRC/api/cdcache.h" ]]; then
        continue # the public header: every layer
      fi
      case $path in "$SRC"/*) ;; *) continue ;; esac # system and packages
      rel=${path#"$SRC"/}
      ok=0
      for a in ${allowed[$from]}; do
        if [[ $a == */ && $rel == "$a"* ]] || [[ $rel == "$a" ]]; then
          ok=1
        fi
      done
      if ((!ok)); then
        echo "$rel_in: $from/ opens $rel, not in: ${allowed[$from]}" >&2
        bad=1
      fi
    done <<<"$out"
  done < <(find "$layer" -maxdepth 1 -name '*.[ch]' -print0)
done
if ((bad)); then
  echo "check_layers: an include climbs the stack core <- shards <- api <- cdc" >&2
  exit 1
fi
echo "check_layers: $checked files, core <- shards <- api <- cdc, no include climbs"
