/* Eviction order, policies and capacity edges. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

static int put_i(cdcache_t *c, int i, uint32_t ttl)
{
  char k[16];
  int kl = snprintf(k, sizeof k, "key%d", i);
  return cdcache_put(c, k, (size_t)kl, &i, sizeof i, ttl);
}

static int has_i(cdcache_t *c, int i)
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

static cdcache_t *open_policy(cdcache_policy_t p, uint64_t n, uint32_t shards)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = n;
  cfg.shards = shards;
  cfg.policy = p;
  return test_open(&cfg);
}

static void test_evicts_least_recently_used_first(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_LRU, 100, 1);
  for (int i = 0; i < 100; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 0), 0);
  /* Adding one more evicts the oldest, key0. */
  CU_ASSERT_EQUAL(put_i(c, 100, 0), 0);
  CU_ASSERT_FALSE(has_i(c, 0));
  CU_ASSERT_TRUE(has_i(c, 1));
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 100);
  CU_ASSERT_EQUAL(st.evictions, 1);
  cdcache_close(c);
}

static void test_recently_read_entries_survive_eviction(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_LRU, 100, 1);
  for (int i = 0; i < 100; i++)
    put_i(c, i, 0);
  /* Read the older half: they are now more recent than the newer half. */
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  for (int i = 100; i < 150; i++)
    put_i(c, i, 0);
  int old_read = 0, old_unread = 0;
  for (int i = 0; i < 50; i++)
    old_read += has_i(c, i);
  for (int i = 50; i < 100; i++)
    old_unread += has_i(c, i);
  CU_ASSERT_EQUAL(old_read, 50);
  CU_ASSERT_EQUAL(old_unread, 0);
  cdcache_close(c);
}

static void test_entries_never_exceed_max_entries_across_shards(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_LRU, 10000, 8);
  cdcache_stats_t st = {.struct_size = sizeof st};
  for (int i = 0; i < 50000; i++) {
    CU_ASSERT_EQUAL_FATAL(put_i(c, i, 0), 0);
    if (i % 1000 == 0) {
      cdcache_stats(c, &st);
      CU_ASSERT(st.entries <= 10000);
    }
  }
  cdcache_stats(c, &st);
  CU_ASSERT(st.entries <= 10000);
  CU_ASSERT(st.entries >= 9000); /* each shard filled its share */
  CU_ASSERT_EQUAL(st.evictions, 50000 - st.entries);
  cdcache_close(c);
}

static void test_noeviction_full_put_is_efull_and_changes_nothing(void)
{
  cdcache_t *c = open_policy(CDCACHE_NOEVICTION, 10, 1);
  for (int i = 0; i < 10; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 0), 0);
  CU_ASSERT_EQUAL(put_i(c, 10, 0), CDCACHE_EFULL);
  for (int i = 0; i < 10; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  CU_ASSERT_FALSE(has_i(c, 10));
  /* Replacing an existing key adds no entry: allowed. */
  CU_ASSERT_EQUAL(put_i(c, 3, 0), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 10);
  CU_ASSERT_EQUAL(st.evictions, 0);
  /* After a delete there is room again. */
  CU_ASSERT_EQUAL(cdcache_delete(c, "key0", 4), 0);
  CU_ASSERT_EQUAL(put_i(c, 10, 0), 0);
  cdcache_close(c);
}

static void test_volatile_lru_evicts_only_entries_with_ttl(void)
{
  cdcache_t *c = open_policy(CDCACHE_VOLATILE_LRU, 10, 1);
  for (int i = 0; i < 5; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  for (int i = 5; i < 10; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 60000), 0);
  for (int i = 10; i < 15; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 60000), 0);
  for (int i = 0; i < 5; i++)
    CU_ASSERT_TRUE(has_i(c, i)); /* no TTL: never evicted */
  for (int i = 5; i < 10; i++)
    CU_ASSERT_FALSE(has_i(c, i));
  /* Only entries without TTL left to make room from: EFULL, as Redis. */
  cdcache_t *d = open_policy(CDCACHE_VOLATILE_LRU, 4, 1);
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(put_i(d, i, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(put_i(d, 4, 60000), CDCACHE_EFULL);
  CU_ASSERT_EQUAL(put_i(d, 5, CDCACHE_TTL_NONE), CDCACHE_EFULL);
  for (int i = 0; i < 4; i++)
    CU_ASSERT_TRUE(has_i(d, i));
  cdcache_close(d);
  cdcache_close(c);
}

static void test_capacity_of_one_keeps_the_newest(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_LRU, 1, 0);
  CU_ASSERT_EQUAL(put_i(c, 1, 0), 0);
  CU_ASSERT_EQUAL(put_i(c, 2, 0), 0);
  CU_ASSERT_FALSE(has_i(c, 1));
  CU_ASSERT_TRUE(has_i(c, 2));
  CU_ASSERT_EQUAL(put_i(c, 2, 0), 0); /* replace in a full cache */
  CU_ASSERT_TRUE(has_i(c, 2));
  cdcache_close(c);
}

static void test_default_shard_count_respects_minimum_share(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_LRU, 500, 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.shards, 1);
  cdcache_close(c);
  c = open_policy(CDCACHE_ALLKEYS_LRU, 4 * CDCACHE_MIN_SHARD_ENTRIES, 0);
  cdcache_stats(c, &st);
  CU_ASSERT(st.shards >= 1 && st.shards <= 4);
  CU_ASSERT_EQUAL(st.shards & (st.shards - 1), 0);
  cdcache_close(c);
}

static void test_max_bytes_bounds_live_and_pending_bytes(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 2000;
  cfg.max_bytes = 64 * 1024;
  cfg.shards = 2;
  cdcache_t *c = test_open(&cfg);
  char v[200] = {0};
  cdcache_stats_t st = {.struct_size = sizeof st};
  for (int i = 0; i < 20000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL_FATAL(cdcache_put(c, k, (size_t)kl, v, sizeof v, 0), 0);
    cdcache_stats(c, &st);
    /* One writer: the bound holds to the byte after every put. */
    CU_ASSERT_FATAL(st.bytes_live + st.bytes_pending_free + st.bytes_tables <= cfg.max_bytes);
  }
  CU_ASSERT(st.evictions > 0);
  CU_ASSERT(st.entries > 100);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("eviction", NULL, NULL);
  CU_add_test(s, "evicts the least recently used entry first",
              test_evicts_least_recently_used_first);
  CU_add_test(s, "recently read entries survive eviction",
              test_recently_read_entries_survive_eviction);
  CU_add_test(s, "entries never exceed max_entries across shards",
              test_entries_never_exceed_max_entries_across_shards);
  CU_add_test(s, "noeviction: a put into a full cache is EFULL and changes nothing",
              test_noeviction_full_put_is_efull_and_changes_nothing);
  CU_add_test(s, "volatile-lru evicts only entries with a TTL",
              test_volatile_lru_evicts_only_entries_with_ttl);
  CU_add_test(s, "a capacity of one keeps the newest", test_capacity_of_one_keeps_the_newest);
  CU_add_test(s, "default shard count respects the minimum share",
              test_default_shard_count_respects_minimum_share);
  CU_add_test(s, "max_bytes bounds live plus pending bytes",
              test_max_bytes_bounds_live_and_pending_bytes);
  return test_run();
}
