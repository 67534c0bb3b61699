/* Every public function's behaviour and errors. */
#include "testutil.h"

#include <string.h>

static cdcache_t *open_small(cdcache_config_t *cfg, uint64_t n)
{
  cdcache_config_init(cfg);
  cfg->max_entries = n;
  return test_open(cfg);
}

static void test_config_defaults(void)
{
  cdcache_config_t cfg;
  CU_ASSERT_EQUAL(cdcache_config_init(&cfg), 0);
  CU_ASSERT_EQUAL(cfg.struct_size, sizeof cfg);
  CU_ASSERT_EQUAL(cfg.max_entries, 0);
  CU_ASSERT_EQUAL(cfg.max_key_len, 250);
  CU_ASSERT_EQUAL(cfg.max_value_len, 1u << 20);
  CU_ASSERT_EQUAL(cfg.policy, CDCACHE_ALLKEYS_LRU);
  CU_ASSERT_PTR_NOT_NULL(cfg.allocator.malloc);
  CU_ASSERT_EQUAL(cdcache_config_init(NULL), CDCACHE_EINVAL);
}

static void test_open_rejects_bad_config(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = NULL;
  CU_ASSERT_EQUAL(cdcache_open(NULL, &c), CDCACHE_EINVAL);
  cdcache_config_init(&cfg);
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL); /* max_entries 0 */
  cfg.max_entries = 100;
  CU_ASSERT_EQUAL(cdcache_open(&cfg, NULL), CDCACHE_EINVAL);
  cfg.shards = 3;
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.shards = 0;
  cfg.struct_size = sizeof cfg - 8;
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.struct_size = sizeof cfg;
  cfg.max_key_len = 70000;
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.max_key_len = 250;
  cfg.max_bytes = 64; /* smaller than the tables */
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.max_bytes = 0;
  cfg.policy = (cdcache_policy_t)7;
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT_EQUAL(cdcache_close(NULL), 0);
}

static void test_put_get_round_trip_is_binary_safe(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  const char k1[] = {'a', 0, 'b'}, k2[] = {'a', 0, 'c'};
  const char v1[] = {0, 1, 2, 0}, v2[] = {9};
  char buf[16];
  size_t n = 0;
  CU_ASSERT_EQUAL(cdcache_put(c, k1, 3, v1, 4, 0), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, k2, 3, v2, 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, k1, 3, buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(n, 4);
  CU_ASSERT_EQUAL(memcmp(buf, v1, 4), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, k2, 3, buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(buf[0], 9);
  CU_ASSERT_EQUAL(cdcache_get(c, k1, 2, buf, sizeof buf, &n), CDCACHE_ENOENT); /* prefix */
  cdcache_close(c);
}

static void test_zero_length_value_caches_absence(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  size_t n = 99;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("missing:1"), NULL, 0, 0), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("missing:1"), NULL, 0, &n), 0);
  CU_ASSERT_EQUAL(n, 0);
  cdcache_close(c);
}

static void test_replace_returns_the_newest_value(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "one", 3, 0), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "three", 5, 0), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(memcmp(buf, "three", 5), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  CU_ASSERT_EQUAL(cdcache_stats(c, &st), 0);
  CU_ASSERT_EQUAL(st.entries, 1);
  CU_ASSERT_EQUAL(st.puts, 2);
  cdcache_close(c);
}

static void test_small_buffer_gives_erange_and_length(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  char buf[4];
  size_t n = 0;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "0123456789", 10, 0), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), CDCACHE_ERANGE);
  CU_ASSERT_EQUAL(n, 10);
  n = 0;
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), NULL, 0, &n), CDCACHE_ERANGE);
  CU_ASSERT_EQUAL(n, 10);
  cdcache_close(c);
}

static void test_null_and_empty_arguments_are_einval(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  char buf[8];
  size_t n;
  cdcache_lease_t *lease = (cdcache_lease_t *)&n;
  CU_ASSERT_EQUAL(cdcache_put(NULL, KEY("k"), "v", 1, 0), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_put(c, NULL, 1, "v", 1, 0), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_put(c, "k", 0, "v", 1, 0), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), NULL, 1, 0), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get(NULL, KEY("k"), buf, 8, &n), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, 8, NULL), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), NULL, 8, &n), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get(c, "k", 0, buf, 8, &n), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_delete(NULL, KEY("k")), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_delete(c, NULL, 1), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_invalidate(c, "k", 0), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_flush(NULL), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_stats(NULL, NULL), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("k"), NULL, NULL, 0, 0, buf, 8, &n), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, 8, &n, NULL), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_get_lease(NULL, KEY("k"), buf, 8, &n, &lease), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(lease);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, NULL, "v", 1, 0), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_lease_release(c, NULL), 0);
  CU_ASSERT_EQUAL(cdcache_fill_set_value(NULL, "v", 1), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_fill_cluster_time(NULL), 0);
  cdcache_stats_t st = {.struct_size = 0};
  CU_ASSERT_EQUAL(cdcache_stats(c, &st), CDCACHE_EINVAL);
  st.struct_size = sizeof st;
  CU_ASSERT_EQUAL(cdcache_stats(c, &st), 0);
  CU_ASSERT_EQUAL(st.entries, 0);
  CU_ASSERT_EQUAL(st.puts, 0);
  cdcache_close(c);
}

static void test_oversize_key_or_value_is_e2big_and_changes_nothing(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.max_key_len = 8;
  cfg.max_value_len = 16;
  cdcache_t *c = test_open(&cfg);
  char big[32] = {0};
  char buf[32];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "v", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, big, 9, "v", 1, 0), CDCACHE_E2BIG);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), big, 17, 0), CDCACHE_E2BIG);
  CU_ASSERT_EQUAL(cdcache_get(c, big, 9, buf, sizeof buf, &n), CDCACHE_E2BIG);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(buf[0], 'v');
  CU_ASSERT_EQUAL(cdcache_put(c, big, 8, big, 16, 0), 0); /* exactly at the limits */
  cdcache_close(c);
}

static void test_delete_and_invalidate_remove_and_count(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  char buf[8];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("a"), "1", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("b"), "2", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_delete(c, KEY("a")), 0);
  CU_ASSERT_EQUAL(cdcache_delete(c, KEY("a")), CDCACHE_ENOENT);
  CU_ASSERT_EQUAL(cdcache_invalidate(c, KEY("b")), 0);
  CU_ASSERT_EQUAL(cdcache_invalidate(c, KEY("b")), CDCACHE_ENOENT);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("a"), buf, 8, &n), CDCACHE_ENOENT);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("b"), buf, 8, &n), CDCACHE_ENOENT);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.deletes, 1);
  CU_ASSERT_EQUAL(st.invalidations, 1);
  CU_ASSERT_EQUAL(st.misses, 2);
  CU_ASSERT_EQUAL(st.entries, 0);
  cdcache_close(c);
}

static void test_flush_empties_every_shard(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100000;
  cfg.shards = 8;
  cdcache_t *c = test_open(&cfg);
  char k[16], buf[16];
  size_t n;
  for (int i = 0; i < 5000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL_FATAL(cdcache_put(c, k, (size_t)kl, k, (size_t)kl, 0), 0);
  }
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 5000);
  CU_ASSERT_EQUAL(st.shards, 8);
  CU_ASSERT_EQUAL(cdcache_flush(c), 0);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 0);
  CU_ASSERT_EQUAL(st.bytes_live, 0);
  CU_ASSERT_EQUAL(st.flushes, 1);
  int found = 0;
  for (int i = 0; i < 5000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    found += cdcache_get(c, k, (size_t)kl, buf, sizeof buf, &n) == 0;
  }
  CU_ASSERT_EQUAL(found, 0);
  cdcache_close(c);
}

static void test_allocation_failure_is_enomem_and_loses_nothing(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  test_alloc_install(&cfg, &a);
  /* open: fail each allocation in turn; every failure is clean, the
   * first ones do fail (the loop tests something), and once i passes the
   * number of allocations an open makes, it succeeds. */
  int failed_opens = 0;
  for (long i = 1; i <= 12; i++) {
    cdcache_t *c = NULL;
    test_alloc_fail_nth(&a, i);
    int rc = cdcache_open(&cfg, &c);
    test_alloc_fail_nth(&a, 0);
    if (rc == 0) {
      cdcache_close(c);
    } else {
      failed_opens++;
      CU_ASSERT_EQUAL(rc, CDCACHE_ENOMEM);
      CU_ASSERT_PTR_NULL(c);
    }
    CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
  }
  CU_ASSERT(failed_opens >= 1);
  cdcache_t *c = test_open(&cfg);
  char buf[8];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "old", 3, 0), 0);
  atomic_store(&a.fail_all, 1);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "new", 3, 0), CDCACHE_ENOMEM);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("other"), "x", 1, 0), CDCACHE_ENOMEM);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(memcmp(buf, "old", 3), 0);
  atomic_store(&a.fail_all, 0);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

static void test_fresh_without_cdc_is_fresh_forever(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 64;
  cdcache_t *c = test_open(&cfg);
  uint64_t fu = 0;
  CU_ASSERT_EQUAL(cdcache_fresh(c, &fu), 0);
  CU_ASSERT_EQUAL(fu, UINT64_MAX);
  CU_ASSERT_EQUAL(cdcache_fresh(c, NULL), 0);
  CU_ASSERT_EQUAL(cdcache_fresh(NULL, &fu), CDCACHE_EINVAL);
  cdcache_close(c);
}

static void test_strerror_names_every_code(void)
{
  const char *seen[16] = {0};
  for (int e = 0; e >= CDCACHE_ESTATE; e--) {
    const char *s = cdcache_strerror(e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    if (!s)
      return; /* not reached: the assertion above is fatal (CUnit longjmps) */
    CU_ASSERT_STRING_NOT_EQUAL(s, "unknown error");
    for (int j = 0; j < -e; j++)
      CU_ASSERT(seen[j] != NULL && strcmp(s, seen[j]) != 0);
    seen[-e] = s;
  }
  CU_ASSERT_STRING_EQUAL(cdcache_strerror(12345), "unknown error");
}

static void test_stats_count_hits_and_misses(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = open_small(&cfg, 100);
  char buf[8];
  size_t n;
  cdcache_put(c, KEY("a"), "1", 1, 0);
  for (int i = 0; i < 7; i++)
    cdcache_get(c, KEY("a"), buf, 8, &n);
  for (int i = 0; i < 3; i++)
    cdcache_get(c, KEY("zz"), buf, 8, &n);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.hits, 7);
  CU_ASSERT_EQUAL(st.misses, 3);
  CU_ASSERT_EQUAL(st.puts, 1);
  CU_ASSERT_EQUAL(st.entries, 1);
  CU_ASSERT(st.bytes_live > 0);
  /* A caller compiled against a smaller stats struct gets only its part. */
  cdcache_stats_t part;
  memset(&part, 0xab, sizeof part);
  part.struct_size = offsetof(cdcache_stats_t, misses);
  cdcache_stats(c, &part);
  CU_ASSERT_EQUAL(part.hits, 7);
  CU_ASSERT_EQUAL(part.misses, 0xababababababababull);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("api", NULL, NULL);
  CU_add_test(s, "config_init fills documented defaults", test_config_defaults);
  CU_add_test(s, "open rejects bad configuration", test_open_rejects_bad_config);
  CU_add_test(s, "put/get round trip is binary safe", test_put_get_round_trip_is_binary_safe);
  CU_add_test(s, "zero-length value caches absence", test_zero_length_value_caches_absence);
  CU_add_test(s, "replace returns the newest value", test_replace_returns_the_newest_value);
  CU_add_test(s, "small buffer gives ERANGE and the length",
              test_small_buffer_gives_erange_and_length);
  CU_add_test(s, "NULL and empty arguments are EINVAL", test_null_and_empty_arguments_are_einval);
  CU_add_test(s, "oversize key or value is E2BIG and changes nothing",
              test_oversize_key_or_value_is_e2big_and_changes_nothing);
  CU_add_test(s, "delete and invalidate remove and count",
              test_delete_and_invalidate_remove_and_count);
  CU_add_test(s, "flush empties every shard", test_flush_empties_every_shard);
  CU_add_test(s, "allocation failure is ENOMEM and loses nothing",
              test_allocation_failure_is_enomem_and_loses_nothing);
  CU_add_test(s, "fresh without CDC is fresh forever", test_fresh_without_cdc_is_fresh_forever);
  CU_add_test(s, "strerror names every code", test_strerror_names_every_code);
  CU_add_test(s, "stats count hits and misses", test_stats_count_hits_and_misses);
  return test_run();
}
