#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>

static void *ta_malloc(void *ctx, size_t size)
{
  struct test_alloc *a = ctx;
  long n = atomic_fetch_add(&a->calls, 1) + 1;
  long f = atomic_load(&a->fail_at);
  if (atomic_load(&a->fail_all) || (f != 0 && n == f))
    return NULL;
  void *p = malloc(size);
  if (p != NULL) {
    atomic_fetch_add(&a->live_allocs, 1);
    long long live = atomic_fetch_add(&a->live_bytes, (long long)size) + (long long)size;
    long long peak = atomic_load(&a->peak_bytes);
    while (live > peak && !atomic_compare_exchange_weak(&a->peak_bytes, &peak, live))
      ;
  }
  return p;
}

static void ta_free(void *ctx, void *p, size_t size)
{
  struct test_alloc *a = ctx;
  if (p == NULL)
    return;
  atomic_fetch_sub(&a->live_allocs, 1);
  atomic_fetch_sub(&a->live_bytes, (long long)size);
  free(p);
}

void test_alloc_install(cdcache_config_t *cfg, struct test_alloc *a)
{
  cfg->allocator.malloc = ta_malloc;
  cfg->allocator.free = ta_free;
  cfg->allocator.usable_size = NULL;
  cfg->allocator.ctx = a;
}

void test_alloc_fail_nth(struct test_alloc *a, long n)
{
  atomic_store(&a->fail_at, n == 0 ? 0 : atomic_load(&a->calls) + n);
}

static uint64_t tc_now(void *ctx)
{
  struct test_clock *c = ctx;
  return atomic_load(&c->now_ms);
}

void test_clock_install(cdcache_config_t *cfg, struct test_clock *c)
{
  cfg->clock = tc_now;
  cfg->clock_ctx = c;
}

cdcache_t *test_open(cdcache_config_t *cfg)
{
  cdcache_t *c = NULL;
  int rc = cdcache_open(cfg, &c);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  return c;
}

int test_put_int(cdcache_t *c, int i, uint32_t ttl)
{
  char k[16];
  int kl = snprintf(k, sizeof k, "key%d", i);
  return cdcache_put(c, k, (size_t)kl, &i, sizeof i, ttl);
}

int test_has_int(cdcache_t *c, int i)
{
  char k[16];
  int v = -1;
  size_t n;
  int kl = snprintf(k, sizeof k, "key%d", i);
  int rc = cdcache_get(c, k, (size_t)kl, &v, sizeof v, &n);
  if (rc == 0)
    CU_ASSERT_EQUAL(v, i); /* never a value that was not put for the key */
  return rc == 0;
}

cdcache_t *test_open_policy(cdcache_policy_t p, uint64_t n, uint32_t shards)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = n;
  cfg.shards = shards;
  cfg.policy = p;
  return test_open(&cfg);
}

int test_run(void)
{
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned run = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  if (run == 0)
    return 1;
  return failed != 0;
}
