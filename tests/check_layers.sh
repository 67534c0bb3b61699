#!/usr/bin/env bash
# The folders form a stack: each may include only its own headers and
# those of the folders below it (CMakeLists.txt builds each as an object
# library with just those include directories; this check also catches
# what include paths cannot, such as "../").
#   core/    <- shards/ <- api/ <- cdc/
# cdc/ reaches the cache only through api/cache_internal.h (and the
# public api/cdcache.h).  Usage: tests/check_layers.sh [SOURCE_DIR]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

declare -A allowed=(
  [core]="core"
  [shards]="shards core"
  [api]="api shards core"
  [cdc]="cdc"
)
bad=0
for layer in core shards api cdc; do
  [ -d "$layer" ] || continue
  while IFS= read -r -d '' f; do
    while IFS=: read -r line inc; do
      name=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1/' <<<"$inc")
      if [[ $name == *..* || $name == */* ]]; then
        echo "$f:$line: includes \"$name\": no paths in includes" >&2
        bad=1
        continue
      fi
      [[ $name == cdcache.h ]] && continue # the public header: every layer
      if [[ $layer == cdc && $name == cache_internal.h ]]; then
        continue
      fi
      ok=0
      for dir in ${allowed[$layer]}; do
        [ -f "$dir/$name" ] && ok=1
      done
      if ((!ok)); then
        where=$(ls -d */"$name" 2>/dev/null | head -1 || true)
        echo "$f:$line: $layer/ includes \"$name\" (${where:-not found}), not in: ${allowed[$layer]}" >&2
        bad=1
      fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | cut -d: -f1,2- || true)
  done < <(find "$layer" -maxdepth 1 -name '*.[ch]' -print0)
done
if ((bad)); then
  echo "check_layers: an include climbs the stack core <- shards <- api <- cdc" >&2
  exit 1
fi
echo "check_layers: core <- shards <- api <- cdc, no include climbs"
