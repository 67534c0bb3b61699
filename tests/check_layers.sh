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
# preprocessed with its layer's include directories, once per set of build
# definitions the sources test (plain, CDCACHE_ASSERTS, the sanitizer
# ones, NDEBUG), so an include under #ifdef is seen too; each header opened
# by a file of a layer must lie in an allowed folder (or outside the
# source tree: system and package headers).  With BUILD_DIR, the symbols
# are checked as well (nm over each layer's object files, shipped and
# _checked): every cdcache symbol a layer uses must be defined in its own
# folder or one below (for cdc/: one that api/cdcache.h or
# api/cache_internal.h declares), which also catches a hand-written
# prototype that needs no include at all.
# Usage: tests/check_layers.sh [SOURCE_DIR [CC [BUILD_DIR]]]
set -euo pipefail
SRC=$(cd "${1:-$(dirname "$0")/..}" && pwd)
CC=${2:-cc}
BUILD=${3:-}
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
   for defs in "" "-DCDCACHE_ASSERTS=1" "-DCDCACHE_ASSERTS=1 -DCDCACHE_TSAN=1 -DCDCACHE_SANITIZED=1" \
     "-DNDEBUG -DCDCACHE_SANITIZED=1"; do
    # shellcheck disable=SC2086
    if ! out=$("$CC" -H -fsyntax-only -std=gnu11 -D_GNU_SOURCE -DCDCACHE_BUILDING=1 $defs \
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
        echo "$rel_in: $from/ opens $rel (${defs:-no definitions}), not in: ${allowed[$from]}" >&2
        bad=1
      fi
    done <<<"$out"
   done
  done < <(find "$layer" -maxdepth 1 -name '*.[ch]' -print0)
done

# Symbols: what each layer's objects use against what it may use.
syms_checked=0
if [ -n "$BUILD" ]; then
  declare -A below=([core]="core" [shards]="shards core" [api]="api shards core"
    [cdc]="cdc api shards core")
  # cdc/ may call what the two api headers declare, nothing else of api/.
  cdc_ok=$(grep -ohE '\bcdcache_{1,2}[a-z0-9_]+\b' api/cdcache.h api/cache_internal.h | sort -u)
  for suffix in "" _checked; do
    for layer in core shards api cdc; do
      dir="$BUILD/CMakeFiles/cdcache_${layer}${suffix}.dir"
      [ -d "$dir" ] || continue
      mapfile -t objs < <(find "$dir" -name '*.o')
      ((${#objs[@]})) || continue
      defined=""
      for l in ${below[$layer]}; do
        d="$BUILD/CMakeFiles/cdcache_${l}${suffix}.dir"
        [ -d "$d" ] || continue
        defined+=$(find "$d" -name '*.o' -exec nm --defined-only -g {} + | awk 'NF>=3 {print $3}')
        defined+=$'\n'
      done
      own=$(nm --defined-only -g "${objs[@]}" | awk 'NF>=3 {print $3}' | sort -u)
      while read -r sym; do
        [[ $sym == cdcache_* ]] || continue
        syms_checked=$((syms_checked + 1))
        if grep -qxF "$sym" <<<"$own"; then
          continue
        fi
        if ! grep -qxF "$sym" <<<"$defined"; then
          echo "cdcache_${layer}${suffix}: uses $sym, defined in no folder at or below $layer/" >&2
          bad=1
        elif [[ $layer == cdc ]] && ! grep -qxF "$sym" <<<"$cdc_ok"; then
          echo "cdcache_cdc${suffix}: uses $sym, which neither api/cdcache.h nor api/cache_internal.h declares" >&2
          bad=1
        fi
      done < <(nm -u "${objs[@]}" | awk '$1=="U" {print $2}' | sort -u)
    done
  done
fi
if ((bad)); then
  echo "check_layers: an include climbs the stack core <- shards <- api <- cdc" >&2
  exit 1
fi
echo "check_layers: $checked files x 4 sets of definitions, $syms_checked symbol uses:" \
  "core <- shards <- api <- cdc, nothing climbs"
