-- wrk script for examples/http/demo.sh: GET /users/{id} with ids drawn
-- from a Zipf distribution, each wrk thread bound to one instance.
--
--   INSTANCES=port1,port2,port3 ZIPF_N=10000 ZIPF_S=0.99 \
--     wrk -t3 -c48 -d10s -s zipf.lua http://127.0.0.1:port1/
--
-- Ids 0 .. ZIPF_N-1; P(rank k) is proportional to 1/k^s (rank 1 is id 0).
-- done() prints one line the demo parses.

local ports = {}
for p in string.gmatch(os.getenv("INSTANCES") or "", "%d+") do
  ports[#ports + 1] = p
end
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  if #ports > 0 then
    local p = ports[(nthreads - 1) % #ports + 1]
    thread.addr = wrk.lookup("127.0.0.1", p)[1]
  end
  thread:set("thread_no", nthreads)
end

local cdf
local n

function init(args)
  n = tonumber(os.getenv("ZIPF_N") or "10000")
  local s = tonumber(os.getenv("ZIPF_S") or "0.99")
  cdf = {}
  local sum = 0
  for k = 1, n do
    sum = sum + 1 / k ^ s
    cdf[k] = sum
  end
  for k = 1, n do
    cdf[k] = cdf[k] / sum
  end
  math.randomseed(os.time() * 100 + (thread_no or 0))
end

function request()
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do -- the first rank whose cdf >= u
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", "/users/" .. (lo - 1))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk-result requests=%d seconds=%.3f rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect + e.read + e.write + e.status + e.timeout))
end
