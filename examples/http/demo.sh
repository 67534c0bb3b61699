#!/bin/sh
# examples/http/demo.sh [BUILD_DIR]: cdcache-http-example, three instances,
# one database (the wire-protocol test server), in one command.
#
#   1. wrk (Zipf ids) against the 3 instances, with the cache and then with
#      --no-cache: requests/s, p50/p99, database reads per request;
#   2. writes through one instance while reading through the other two:
#      time until both serve the new value, p50/p99, over HTTP;
#   3. a conditional GET answered 304.
#
# BUILD_DIR (default build/release, as `./run.sh build` makes it) holds the
# built tree.  Knobs (environment): DEMO_SECONDS (wrk run length, 10),
# DEMO_WARMUP (the first run, from empty caches, 5),
# DEMO_DOCS (documents, 10000), DEMO_CONNECTIONS (wrk connections over the
# 3 instances, 48), DEMO_WRITES (writes timed in step 2, 500),
# DEMO_THREADS (HTTP threads per instance, 2), ZIPF_S (0.99).
# Needs wrk and curl (Debian: wrk, curl).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build/release}
server=$build/tests/mongo-server/cdcache-mongo-test-server
example=$build/examples/http/cdcache-http-example
driver=$build/examples/http/cdcache-http-driver
seconds=${DEMO_SECONDS:-10}
docs=${DEMO_DOCS:-10000}
conns=${DEMO_CONNECTIONS:-48}
writes=${DEMO_WRITES:-500}
warmup=${DEMO_WARMUP:-5}
threads=${DEMO_THREADS:-2}
for f in "$server" "$example" "$driver"; do
  [ -x "$f" ] || { echo "demo: $f not built (./run.sh build, or pass BUILD_DIR)" >&2; exit 1; }
done
for t in wrk curl; do
  command -v $t >/dev/null || { echo "demo: $t not found (apt-get install $t)" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wait_file() { # wait_file PATH: until a port file exists (10 s)
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1))
    [ $i -le 1000 ] || { echo "demo: $1 never appeared" >&2; exit 1; }
    sleep 0.01
  done
}

"$server" --port 0 --port-file "$tmp/server.port" --quiet &
pids="$pids $!"
wait_file "$tmp/server.port"
uri="mongodb://127.0.0.1:$(cat "$tmp/server.port")/?replicaSet=rs0"

# start_instances TAG [FLAGS...]: three instances; ports in $ports.
start_instances() {
  tag=$1
  shift
  ports=""
  for n in 1 2 3; do
    "$example" --port 0 --port-file "$tmp/$tag$n.port" --mongodb-uri "$uri" \
      --threads "$threads" "$@" 2>>"$tmp/$tag.log" &
    eval "pid_$tag$n=$!"
    pids="$pids $!"
  done
  for n in 1 2 3; do
    wait_file "$tmp/$tag$n.port"
    p=$(cat "$tmp/$tag$n.port")
    ports="$ports${ports:+,}$p"
    until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do sleep 0.05; done
  done
}

db_reads() { # summed cdcache_http_db_reads_total of the instances in $1
  total=0
  for p in $(echo "$1" | tr ',' ' '); do
    v=$(curl -sf "http://127.0.0.1:$p/metrics" | awk '$1 == "cdcache_http_db_reads_total" { print $2 }')
    total=$((total + v))
  done
  echo $total
}

run_wrk() { # run_wrk LABEL PORTS SECONDS
  first=$(echo "$2" | cut -d, -f1)
  before=$(db_reads "$2")
  out=$(INSTANCES=$2 ZIPF_N=$docs wrk -t3 -c"$conns" -d"${3}s" --timeout 5s \
    -s "$here/zipf.lua" "http://127.0.0.1:$first/")
  after=$(db_reads "$2")
  line=$(echo "$out" | grep '^wrk-result')
  reqs=$(echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
  echo "$line" | awk -v label="$1" -v reads=$((after - before)) -v reqs="$reqs" '{
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "%-18s %7.0f req/s   p50 %7.3f ms   p99 %7.3f ms   db reads/request %.4f   (%d requests, %d errors)\n",
      label, v["rps"], v["p50_ms"], v["p99_ms"], reads / reqs, reqs, v["errors"] }'
}

echo "== cdcache-http-example: 3 instances, wrk -t3 -c$conns ${seconds}s, Zipf(s=${ZIPF_S:-0.99}) over $docs ids"
start_instances cache
cache_ports=$ports
"$driver" load "$(echo "$cache_ports" | cut -d, -f1)" "$docs"
echo "-- 1. throughput and latency"
run_wrk "cache, cold (${warmup}s)" "$cache_ports" "$warmup"
run_wrk "cache, warm" "$cache_ports" "$seconds"
start_instances nocache --no-cache
run_wrk "no-cache" "$ports" "$seconds"
for n in 1 2 3; do
  eval "kill \$pid_nocache$n"
done

echo "-- 2. coherence across instances (write through one, read through the other two)"
set -- $(echo "$cache_ports" | tr ',' ' ')
"$driver" lag "$1" "$2" "$3" "$writes"

echo "-- 3. a conditional GET"
url="http://127.0.0.1:$2/users/42"
etag=$(curl -s -D - -o /dev/null "$url" | awk 'tolower($1) == "etag:" { print $2 }' | tr -d '\r')
echo "\$ curl -si $url  # ETag: $etag"
echo "\$ curl -si -H 'If-None-Match: $etag' $url"
resp=$(curl -si -H "If-None-Match: $etag" "$url" | tr -d '\r')
echo "$resp"
echo "$resp" | head -n1 | grep -q '^HTTP/1.1 304 ' || { echo "demo: expected a 304" >&2; exit 1; }
