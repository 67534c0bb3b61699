#!/usr/bin/env python3
"""Prints the README's performance tables from one cdcache-bench JSON Lines
file, so that every number in the README traces to a record of that file.

usage: perf/results/tables.py perf/results/FILE.jsonl
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def find(rs, wl, impl, threads=None, value_size=8, entries=None):
    for r in rs:
        if (r["workload"] == wl and r["impl"] == impl
                and (threads is None or r["threads"] == threads)
                and r["value_size"] == value_size
                and (entries is None or r["entries"] == entries)):
            return r
    return None


def mops(r):
    return "-" if r is None else "%.2f" % (r["ops_per_sec"] / 1e6)


def ratio(a, b):
    if a is None or b is None or not b["ops_per_sec"]:
        return "-"
    return "%.2fx" % (a["ops_per_sec"] / b["ops_per_sec"])


def main():
    rs = load(sys.argv[1])
    run = rs[0]["run"]
    print("run: commit %s%s, %s, %s, %s, %s; %s, %d CPUs, %s\n" % (
        run["commit"][:12], " (modified)" if run.get("dirty") else "", run["compiler"],
        run["build_type"], run["flags"], run["linkage"], run["cpu"], run["cpus"], run["kernel"]))
    impls = ["cdcache", "cdcache-static", "sharded-mutex-lru", "mutex-lru", "lfht-ref"]
    print("| workload | threads | " + " | ".join(impls) +
          " | cdcache / mutex-lru | cdcache / sharded | cdcache / lfht-ref |")
    print("|---|---:|" + "---:|" * (len(impls) + 3))
    for wl in ["read-hit", "zipf", "write-heavy", "load", "lease"]:
        for t in [1, 2, 4, 8]:
            c = find(rs, wl, "cdcache", t)
            if c is None:
                continue
            row = [mops(find(rs, wl, i, t)) for i in impls]
            print("| %s | %d | %s | %s | %s | %s |" % (
                wl, t, " | ".join(row), ratio(c, find(rs, wl, "mutex-lru", t)),
                ratio(c, find(rs, wl, "sharded-mutex-lru", t)),
                ratio(c, find(rs, wl, "lfht-ref", t))))
    print("\nbytes per entry beyond key and value (drained), read-hit 1 thread, "
          "and peak / drained allocator bytes (zipf, write-heavy, 2 threads):\n")
    print("| value size | cdcache | sharded-mutex-lru | mutex-lru |")
    print("|---:|---:|---:|---:|")
    for v in [8, 64, 512, 4096]:
        cells = []
        for i in ["cdcache", "sharded-mutex-lru", "mutex-lru"]:
            r = find(rs, "read-hit", i, 1, v)
            cells.append("-" if r is None or r["bytes_per_entry"] is None
                         else "%.1f" % r["bytes_per_entry"])
        print("| %d | %s |" % (v, " | ".join(cells)))
    print()
    for wl in ["zipf", "write-heavy"]:
        for i in ["cdcache", "sharded-mutex-lru", "mutex-lru"]:
            r = find(rs, wl, i, 2)
            if r and r.get("mem_peak_vs_drained"):
                print("- %s %s 2 threads: peak %.2fx drained (%.1f MB peak, %.1f MB drained, "
                      "RSS peak %.0f MB)" % (
                          wl, i, r["mem_peak_vs_drained"], r["mem_peak_bytes"] / 1e6,
                          r["mem_drained_bytes"] / 1e6, r["rss_peak_bytes"] / 1e6))
    print("\nlatency per kind of op, 2 threads, ns p50 / p99 / p99.9:\n")
    print("| workload | impl | get hit | get miss | put | load miss |")
    print("|---|---|---|---|---|---|")
    for wl in ["read-hit", "zipf", "write-heavy", "load"]:
        for i in ["cdcache", "sharded-mutex-lru", "mutex-lru"]:
            r = find(rs, wl, i, 2)
            if r is None:
                continue
            cells = []
            for k in ["get_hit", "get_miss", "put", "load_miss"]:
                p = [r.get("%s_%s_ns" % (k, q)) for q in ["p50", "p99", "p999"]]
                cells.append("-" if p[0] is None else "%.0f / %.0f / %.0f" % tuple(p))
            print("| %s | %s | %s |" % (wl, i, " | ".join(cells)))
    print("\nscale, 1 thread, ns per op (cdcache / lfht-ref):\n")
    for r in rs:
        if r["workload"].startswith("scale/") and r["impl"] == "cdcache":
            l = find(rs, r["workload"], "lfht-ref", 1, 8, r["entries"])
            print("- %s %d: %.0f ns, %s of lfht-ref, %.1f B/entry" % (
                r["workload"], r["entries"], r["ns_per_op"], ratio(r, l), r["bytes_per_entry"]))
    print("\n| trace @ capacity | cdcache miss ratio | exact LRU | difference |")
    print("|---|---:|---:|---:|")
    for r in rs:
        if r["workload"].startswith("trace:") and r["impl"] == "cdcache":
            print("| %s (%d) | %.6f | %.6f | %+.2f pp |" % (
                r["workload"][6:], r["entries"], r["miss_ratio"], r["exact_lru_miss_ratio"],
                100 * (r["miss_ratio"] - r["exact_lru_miss_ratio"])))
    for r in rs:
        if r["workload"] == "cdc":
            print("\ncdc: %s" % json.dumps({k: v for k, v in r.items() if k in (
                "keys_per_sec", "cdc_cpu_ns_per_key", "cdc_thread_busy",
                "present_before_throughput", "invalidated_present", "offered_writes_per_sec",
                "achieved_writes_per_sec", "lag_keys", "lag_lost_keys", "lag_negative",
                "lag_p50_ms", "lag_p99_ms", "lag_wall_p50_ms", "lag_wall_p99_ms",
                "reader_ops_per_sec_idle", "reader_ops_per_sec_storm")}))
    print("\nretries over the run: %d; points: %d" % (
        sum(r.get("retries") or 0 for r in rs), len(rs)))


if __name__ == "__main__":
    main()
