/* Shared helpers for the CUnit suites: a counting, failure-injecting
 * allocator, a manual clock, and a tiny runner. */
#ifndef CDCACHE_TESTUTIL_H
#define CDCACHE_TESTUTIL_H

#include <CUnit/Basic.h>
#include <cdcache.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* An allocator that counts live allocations and bytes, and the most
 * bytes ever live at once (peak_bytes, kept by the allocation itself, so
 * no sampling misses a spike), and can fail the allocation numbered
 * fail_at (1-based, counted from arming) or every allocation while
 * fail_all is set. */
struct test_alloc {
  _Atomic long live_allocs;
  _Atomic long long live_bytes;
  _Atomic long long peak_bytes;
  _Atomic long calls;
  _Atomic long fail_at; /* 0: off */
  _Atomic int fail_all;
};
void test_alloc_install(cdcache_config_t *cfg, struct test_alloc *a);
void test_alloc_fail_nth(struct test_alloc *a, long n);

/* A clock the test moves by hand. */
struct test_clock {
  _Atomic uint64_t now_ms;
};
void test_clock_install(cdcache_config_t *cfg, struct test_clock *c);

/* Opens a cache with max_entries (and whatever cfg says); asserts. */
cdcache_t *test_open(cdcache_config_t *cfg);

/* Key "key<i>" holding the int i: put it (the put's result), or get it
 * (1 on a hit, asserting that a hit returns i). */
int test_put_int(cdcache_t *c, int i, uint32_t ttl);
int test_has_int(cdcache_t *c, int i);
/* Opens a cache of n entries under policy p on `shards` shards (0: auto). */
cdcache_t *test_open_policy(cdcache_policy_t p, uint64_t n, uint32_t shards);

/* Runs the registered suites; returns the process exit code. */
int test_run(void);

#define KEY(s) (s), (sizeof(s) - 1)

#endif
