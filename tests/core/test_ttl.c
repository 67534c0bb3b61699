/* TTL with an injected clock: no test sleeps. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

static struct test_clock clk;

static cdcache_t *open_ttl(uint32_t default_ttl, cdcache_policy_t p)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1000;
  cfg.shards = 1;
  cfg.default_ttl_ms = default_ttl;
  cfg.policy = p;
  atomic_store(&clk.now_ms, 1000000);
  test_clock_install(&cfg, &clk);
  return test_open(&cfg);
}

static int hit(cdcache_t *c, const char *k)
{
  char buf[16];
  size_t n;
  return cdcache_get(c, k, strlen(k), buf, sizeof buf, &n) == 0;
}

static void test_entry_expires_exactly_at_its_ttl(void)
{
  cdcache_t *c = open_ttl(0, CDCACHE_ALLKEYS_LRU);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "v", 1, 100), 0);
  atomic_fetch_add(&clk.now_ms, 99);
  CU_ASSERT_TRUE(hit(c, "k"));
  atomic_fetch_add(&clk.now_ms, 1);
  CU_ASSERT_FALSE(hit(c, "k"));
  cdcache_close(c);
}

static void test_default_ttl_applies_and_ttl_none_overrides_it(void)
{
  cdcache_t *c = open_ttl(50, CDCACHE_ALLKEYS_LRU);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("dflt"), "v", 1, CDCACHE_TTL_DEFAULT), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("never"), "v", 1, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("long"), "v", 1, 500), 0);
  atomic_fetch_add(&clk.now_ms, 60);
  CU_ASSERT_FALSE(hit(c, "dflt"));
  CU_ASSERT_TRUE(hit(c, "never"));
  CU_ASSERT_TRUE(hit(c, "long"));
  atomic_fetch_add(&clk.now_ms, 1000000);
  CU_ASSERT_TRUE(hit(c, "never"));
  CU_ASSERT_FALSE(hit(c, "long"));
  cdcache_close(c);
}

static void test_writes_reclaim_expired_entries_without_reads(void)
{
  cdcache_t *c = open_ttl(0, CDCACHE_ALLKEYS_LRU);
  char k[16];
  for (int i = 0; i < 200; i++) {
    int kl = snprintf(k, sizeof k, "t%d", i);
    cdcache_put(c, k, (size_t)kl, "v", 1, 10);
  }
  atomic_fetch_add(&clk.now_ms, 20);
  cdcache_stats_t st = {.struct_size = sizeof st};
  /* Writes of other keys sweep a few buckets each: all expired entries go
   * without a single get and without a full scan per write. */
  for (int i = 0; i < 400; i++) {
    int kl = snprintf(k, sizeof k, "n%d", i % 10);
    cdcache_put(c, k, (size_t)kl, "v", 1, CDCACHE_TTL_NONE);
  }
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.expirations, 200);
  CU_ASSERT_EQUAL(st.entries, 10);
  CU_ASSERT_EQUAL(st.hits + st.misses, 0);
  cdcache_close(c);
}

static void test_referenced_entries_outlive_expired_ones(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 4;
  cfg.shards = 1;
  atomic_store(&clk.now_ms, 5000);
  test_clock_install(&cfg, &clk);
  cdcache_t *c = test_open(&cfg);
  cdcache_put(c, KEY("live1"), "v", 1, CDCACHE_TTL_NONE);
  cdcache_put(c, KEY("live2"), "v", 1, CDCACHE_TTL_NONE);
  cdcache_put(c, KEY("short"), "v", 1, 10);
  cdcache_put(c, KEY("live3"), "v", 1, CDCACHE_TTL_NONE);
  CU_ASSERT_TRUE(hit(c, "live1")); /* referenced: gets a second chance */
  cdcache_put(c, KEY("new"), "v", 1, CDCACHE_TTL_NONE);
  CU_ASSERT_TRUE(hit(c, "live1"));
  CU_ASSERT_FALSE(hit(c, "live2")); /* the unreferenced oldest went */
  CU_ASSERT_TRUE(hit(c, "short"));
  /* Now "short" expires; it is never served, and the hand takes it
   * before entries read since it last passed. */
  atomic_fetch_add(&clk.now_ms, 10);
  CU_ASSERT_FALSE(hit(c, "short"));
  CU_ASSERT_TRUE(hit(c, "live3"));
  CU_ASSERT_TRUE(hit(c, "new"));
  cdcache_put(c, KEY("newer"), "v", 1, CDCACHE_TTL_NONE);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 4);
  CU_ASSERT_EQUAL(st.expirations, 1);
  CU_ASSERT_EQUAL(st.evictions, 1);
  CU_ASSERT_TRUE(hit(c, "live1"));
  CU_ASSERT_TRUE(hit(c, "live3"));
  CU_ASSERT_TRUE(hit(c, "new"));
  CU_ASSERT_TRUE(hit(c, "newer"));
  cdcache_close(c);
}

static void test_noeviction_still_reclaims_expired_entries(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 2;
  cfg.shards = 1;
  cfg.policy = CDCACHE_NOEVICTION;
  atomic_store(&clk.now_ms, 5000);
  test_clock_install(&cfg, &clk);
  cdcache_t *c = test_open(&cfg);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("a"), "v", 1, 10), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("b"), "v", 1, 10), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("c"), "v", 1, 10), CDCACHE_EFULL);
  atomic_fetch_add(&clk.now_ms, 10);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("c"), "v", 1, 10), 0);
  CU_ASSERT_TRUE(hit(c, "c"));
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("ttl", NULL, NULL);
  CU_add_test(s, "an entry expires exactly at its TTL", test_entry_expires_exactly_at_its_ttl);
  CU_add_test(s, "default TTL applies and TTL_NONE overrides it",
              test_default_ttl_applies_and_ttl_none_overrides_it);
  CU_add_test(s, "writes reclaim expired entries without reads",
              test_writes_reclaim_expired_entries_without_reads);
  CU_add_test(s, "referenced entries outlive expired ones, which are never served",
              test_referenced_entries_outlive_expired_ones);
  CU_add_test(s, "noeviction still reclaims expired entries",
              test_noeviction_still_reclaims_expired_entries);
  return test_run();
}
