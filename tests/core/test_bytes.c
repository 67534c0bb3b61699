/* Byte accounting: what the stats say matches what the allocator handed
 * out, and returns to zero. */
#include "testutil.h"

#include "cache.h"
#include "reclaim.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void test_accounted_bytes_match_the_allocator(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1000;
  cfg.shards = 2;
  test_alloc_install(&cfg, &a);
  cdcache_t *c = test_open(&cfg);
  long long base = atomic_load(&a.live_bytes);
  char k[16], v[40] = {0};
  for (int i = 0; i < 3000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL_FATAL(cdcache_put(c, k, (size_t)kl, v, (size_t)(i % 40), 0), 0);
  }
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  /* live + pending is exactly what the allocator holds for entries (and
   * retire batches in flight), beyond what open allocated, give or take
   * the per-thread counter block. */
  long long held = atomic_load(&a.live_bytes) - base;
  CU_ASSERT(st.bytes_live + st.bytes_pending_free <= (uint64_t)held);
  CU_ASSERT((uint64_t)held - (st.bytes_live + st.bytes_pending_free) < 4096);
  cdcache__retire_drain_all(c);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.bytes_pending_free, 0);
  CU_ASSERT_EQUAL(cdcache_flush(c), 0);
  cdcache__retire_drain_all(c);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.bytes_live, 0);
  CU_ASSERT_EQUAL(st.bytes_pending_free, 0);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
  CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
}

/* Puts after a grace period overwrite the entries earlier puts retired
 * (reclaim.c, "Recycling") instead of allocating: the allocator sees
 * almost no calls, every get returns the last value put, and the
 * accounting still matches the allocator and drains to zero. */
static void test_puts_reuse_retired_entries_after_a_grace_period(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1000;
  cfg.shards = 1;
  test_alloc_install(&cfg, &a);
  cdcache_t *c = test_open(&cfg);
  long long base = atomic_load(&a.live_bytes);
  uint64_t v = 0, got = 0;
  size_t vlen = 0;
  /* 200 replacements of one key: three batches of 64 retired entries go
   * to the reclaimer; the barrier waits until they are freed or pooled. */
  for (v = 1; v <= 200; v++)
    CU_ASSERT_EQUAL_FATAL(cdcache_put(c, "key", 3, &v, sizeof v, 0), 0);
  cdcache__retire_barrier();
  long calls0 = atomic_load(&a.calls);
  for (; v <= 300; v++) {
    CU_ASSERT_EQUAL_FATAL(cdcache_put(c, "key", 3, &v, sizeof v, 0), 0);
    CU_ASSERT_EQUAL_FATAL(cdcache_get(c, "key", 3, &got, sizeof got, &vlen), 0);
    CU_ASSERT_EQUAL_FATAL(got, v);
  }
  long calls = atomic_load(&a.calls) - calls0;
  printf("\n  100 puts after a grace period: %ld allocator calls\n", calls);
  /* Without recycling: 100 entries (and a batch header or two). */
  CU_ASSERT(calls <= 4);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  long long held = atomic_load(&a.live_bytes) - base;
  CU_ASSERT(st.bytes_live + st.bytes_pending_free <= (uint64_t)held);
  CU_ASSERT((uint64_t)held - (st.bytes_live + st.bytes_pending_free) < 4096);
  cdcache__retire_drain_all(c);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.bytes_pending_free, 0);
  held = atomic_load(&a.live_bytes) - base;
  CU_ASSERT(st.bytes_live <= (uint64_t)held && (uint64_t)held - st.bytes_live < 4096);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
  CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
}

/* A placeholder's charge includes its fill's bytes, so it is never
 * recycled: a value entry of the same size that reused one would carry
 * those bytes as live bytes the allocator never handed out.  Leases
 * released on 200 keys retire 200 placeholders of exactly the size of
 * the 8-byte values put after their grace period. */
static void test_recycled_entries_are_never_placeholders(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1000;
  cfg.shards = 1;
  test_alloc_install(&cfg, &a);
  cdcache_t *c = test_open(&cfg);
  long long base = atomic_load(&a.live_bytes);
  char k[16];
  uint64_t v = 7;
  size_t vlen = 0;
  for (int i = 0; i < 200; i++) {
    int kl = snprintf(k, sizeof k, "p%03d", i);
    cdcache_lease_t *lease = NULL;
    CU_ASSERT_EQUAL_FATAL(cdcache_get_lease(c, k, (size_t)kl, &v, sizeof v, &vlen, &lease),
                          CDCACHE_ENOENT);
    CU_ASSERT_FATAL(lease != NULL);
    CU_ASSERT_EQUAL_FATAL(cdcache_lease_release(c, lease), 0);
  }
  cdcache__retire_barrier();
  for (int i = 0; i < 200; i++) {
    int kl = snprintf(k, sizeof k, "v%03d", i);
    CU_ASSERT_EQUAL_FATAL(cdcache_put(c, k, (size_t)kl, &v, sizeof v, 0), 0);
  }
  /* Drained, the live entries are all the cache holds beyond open's. */
  cdcache__retire_drain_all(c);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.bytes_pending_free, 0);
  long long held = atomic_load(&a.live_bytes) - base;
  CU_ASSERT(st.bytes_live <= (uint64_t)held);
  CU_ASSERT((uint64_t)held - st.bytes_live < 4096);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

struct churn {
  cdcache_t *c;
  int id;
};

static void *churn(void *arg)
{
  struct churn *ch = arg;
  char k[24], v[100] = {0};
  for (int i = 0; i < 20000; i++) {
    int kl = snprintf(k, sizeof k, "t%d:%d", ch->id, i);
    if (cdcache_put(ch->c, k, (size_t)kl, v, sizeof v, 0) != 0)
      return (void *)1;
  }
  return NULL;
}

static void test_max_bytes_holds_under_concurrent_writers(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 10000;
  cfg.max_bytes = 256 * 1024;
  cfg.max_value_len = 1024; /* each shard's share must hold a largest entry */
  cfg.shards = 4;
  test_alloc_install(&cfg, &a);
  cdcache_t *c = test_open(&cfg);
  long long fixed = atomic_load(&a.live_bytes); /* struct, shards, tables */
  pthread_t th[3];
  struct churn ch[3];
  for (int i = 0; i < 3; i++) {
    ch[i] = (struct churn){c, i};
    pthread_create(&th[i], NULL, churn, &ch[i]);
  }
  long long worst = 0;
  cdcache_stats_t st = {.struct_size = sizeof st};
  for (int i = 0; i < 2000; i++) {
    long long held = atomic_load(&a.live_bytes);
    if (held > worst)
      worst = held;
    cdcache_stats(c, &st);
    CU_ASSERT(st.bytes_live + st.bytes_pending_free + st.bytes_tables <= cfg.max_bytes + 3 * 256);
    sched_yield();
  }
  for (int i = 0; i < 3; i++) {
    void *r;
    pthread_join(th[i], &r);
    CU_ASSERT_PTR_NULL(r);
  }
  printf("\n  max_bytes %llu: most held by the allocator %lld (fixed part %lld)\n",
         (unsigned long long)cfg.max_bytes, worst, fixed);
  /* Allowed beyond max_bytes: one unlinked entry per writer, per-thread
   * counter blocks and a retire batch header each. */
  CU_ASSERT(worst <= (long long)cfg.max_bytes + 3 * (256 + 128 + 64));
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("bytes", NULL, NULL);
  CU_add_test(s, "accounted bytes match the allocator and return to zero",
              test_accounted_bytes_match_the_allocator);
  CU_add_test(s, "puts reuse retired entries after a grace period",
              test_puts_reuse_retired_entries_after_a_grace_period);
  CU_add_test(s, "recycled entries are never placeholders",
              test_recycled_entries_are_never_placeholders);
  CU_add_test(s, "max_bytes holds under concurrent writers",
              test_max_bytes_holds_under_concurrent_writers);
  return test_run();
}
