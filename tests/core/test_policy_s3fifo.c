/*
 * The s3fifo policies (allkeys-s3fifo, volatile-s3fifo): what they promise
 * beyond the lru ones, each shown against allkeys-lru on the same input,
 * and the bounds every policy keeps (capacity, max_bytes, TTL, fills,
 * flush).  Under concurrent readers: test_eviction.c and
 * test_concurrency.c run allkeys-s3fifo too.
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

/* The shared helpers (testutil.c) under this suite's short names. */
#define put_i test_put_int
#define has_i test_has_int
#define open_policy test_open_policy

/* Cache-aside, as an application reads: get, and put on a miss. */
static int read_through(cdcache_t *c, int i)
{
  if (has_i(c, i))
    return 1;
  CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  return 0;
}

/*
 * A working set of 200 keys, each read a few times, then one pass over
 * 5,000 keys never seen again (a report, a backup, a crawler) through a
 * cache of 1,000.  How many of the 200 are still there afterwards?
 */
static int hot_left_after_scan(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 1000, 1);
  for (int i = 0; i < 200; i++)
    read_through(c, i);
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < 200; i++)
      CU_ASSERT_TRUE(has_i(c, i));
  for (int i = 0; i < 5000; i++)
    CU_ASSERT_FALSE(read_through(c, 100000 + i));
  int left = 0;
  for (int i = 0; i < 200; i++)
    left += has_i(c, i);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 1000);
  cdcache_close(c);
  return left;
}

static void test_scan_does_not_evict_the_hot_set(void)
{
  int s3 = hot_left_after_scan(CDCACHE_ALLKEYS_S3FIFO);
  int lru = hot_left_after_scan(CDCACHE_ALLKEYS_LRU);
  /* Every hot key survives the scan, give or take the odd false ghost hit
   * (the hash, so the Bloom ghost, is keyed per cache) winning a duel. */
  CU_ASSERT(s3 >= 190);
  CU_ASSERT_EQUAL(lru, 0); /* LRU order: the scan pushes them all out */
}

/*
 * A key read every 250 requests while a stream of one-hit keys goes
 * through a cache of 100: how many of its 40 reads hit?
 */
static int hot_hits_among_one_hit_keys(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 100, 1);
  int hits = 0, next = 1000;
  read_through(c, 0);
  CU_ASSERT_TRUE(has_i(c, 0));
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 250; i++)
      CU_ASSERT_FALSE(read_through(c, next++));
    hits += read_through(c, 0);
  }
  cdcache_close(c);
  return hits;
}

static void test_often_read_key_survives_one_hit_stream(void)
{
  int s3 = hot_hits_among_one_hit_keys(CDCACHE_ALLKEYS_S3FIFO);
  int lru = hot_hits_among_one_hit_keys(CDCACHE_ALLKEYS_LRU);
  CU_ASSERT(s3 >= 36); /* all, give or take a false ghost hit's duel */
  /* CLOCK forgets a key not read within two laps of the hand (200
   * inserts here): every read misses, and the key starts over. */
  CU_ASSERT_EQUAL(lru, 0);
}

/* A key evicted from the small FIFO and asked for again soon comes back
 * (the ghost remembers it) into the main FIFO: does it survive the next
 * 100 new keys (in S it would be gone after about 15)? */
static int ghost_readmits(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 100, 1);
  /* 0..99 fill the cache; 100..199 push 0 out of S before it is read. */
  for (int i = 0; i < 200; i++)
    read_through(c, i);
  CU_ASSERT_FALSE(has_i(c, 0));
  CU_ASSERT_FALSE(read_through(c, 0)); /* a miss: put again, now into M */
  for (int i = 0; i < 100; i++)
    read_through(c, 10000 + i);
  int kept = has_i(c, 0);
  cdcache_close(c);
  return kept;
}

static void test_ghost_readmits_a_key_dropped_too_early(void)
{
  /* The hash is keyed per cache, so each cache's Bloom ghost and sketch
   * collide differently: now and then a newcomer's false ghost hit with
   * an inflated count wins the duel against the key (about 1 cache in
   * 20).  Twenty caches: nearly all keep it; under LRU none does. */
  int s3 = 0, lru = 0;
  for (int i = 0; i < 20; i++) {
    s3 += ghost_readmits(CDCACHE_ALLKEYS_S3FIFO);
    lru += ghost_readmits(CDCACHE_ALLKEYS_LRU);
  }
  CU_ASSERT(s3 >= 15);
  CU_ASSERT_EQUAL(lru, 0);
}

static void test_entries_never_exceed_max_entries(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 10000, 8);
  cdcache_stats_t st = {.struct_size = sizeof st};
  uint64_t x = 12345;
  for (int i = 0; i < 60000; i++) {
    /* A skewed mix: a few keys often (they reach M), most once. */
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    int k = (x >> 60) < 8 ? (int)((x >> 33) % 500) : 1000 + i;
    read_through(c, k);
    if (i % 1000 == 0) {
      cdcache_stats(c, &st);
      CU_ASSERT_FATAL(st.entries <= 10000);
    }
  }
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 10000);
  CU_ASSERT(st.evictions > 0);
  CU_ASSERT(st.bytes_policy > 0);
  CU_ASSERT(st.bytes_policy < st.bytes_tables);
  /* 4 to 8 bytes per entry (sketch and ghost, rounded to powers of two). */
  CU_ASSERT(st.bytes_policy >= 4 * 10000 && st.bytes_policy <= 8 * 10000 + 8 * 1024);
  cdcache_close(c);
}

static void test_max_bytes_bounds_live_pending_and_policy_bytes(void)
{
  struct test_alloc a = {0};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 4000;
  cfg.max_bytes = 256 * 1024;
  cfg.max_value_len = 1024; /* each shard's share must hold a largest entry */
  cfg.shards = 2;
  cfg.policy = CDCACHE_ALLKEYS_S3FIFO;
  cdcache_t *c = test_open(&cfg);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  /* Sized for 4,000 entries, the sketch and ghost are part of the bound. */
  CU_ASSERT(st.bytes_policy > 0);
  CU_ASSERT(st.bytes_tables > st.bytes_policy);
  char v[200] = {0};
  for (int i = 0; i < 20000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i % 3 == 0 ? i % 30 : i);
    size_t n;
    if (cdcache_get(c, k, (size_t)kl, v, sizeof v, &n) != 0)
      CU_ASSERT_EQUAL_FATAL(cdcache_put(c, k, (size_t)kl, v, sizeof v, 0), 0);
    cdcache_stats(c, &st);
    /* One writer: the bound holds to the byte after every call. */
    CU_ASSERT_FATAL(st.bytes_live + st.bytes_pending_free + st.bytes_tables <= cfg.max_bytes);
  }
  CU_ASSERT(st.evictions > 0);
  CU_ASSERT(st.entries > 50);
  /* What the allocator holds is what the stats say (after the grace
   * periods): the sketch and ghost included. */
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

static void test_volatile_s3fifo_evicts_only_entries_with_ttl(void)
{
  cdcache_t *c = open_policy(CDCACHE_VOLATILE_S3FIFO, 100, 1);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  for (int i = 50; i < 1000; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 60000), 0);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  /* Fill the rest with entries that cannot be evicted: then a put fails. */
  cdcache_stats_t st = {.struct_size = sizeof st};
  for (int i = 2000; i < 2050; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(put_i(c, 3000, CDCACHE_TTL_NONE), CDCACHE_EFULL);
  CU_ASSERT_FALSE(has_i(c, 3000));
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 100);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  cdcache_close(c);
}

static void test_expired_entries_go_first_and_are_never_served(void)
{
  struct test_clock clk = {1000};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_clock_install(&cfg, &clk);
  cfg.max_entries = 100;
  cfg.shards = 1;
  cfg.policy = CDCACHE_ALLKEYS_S3FIFO;
  cdcache_t *c = test_open(&cfg);
  /* 50 keys without TTL, read so they reach M; 50 with a short TTL. */
  for (int i = 0; i < 50; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  for (int i = 100; i < 150; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 10), 0);
  atomic_store(&clk.now_ms, 2000);
  for (int i = 100; i < 150; i++)
    CU_ASSERT_FALSE(has_i(c, i));
  /* 50 new keys take the expired entries' places; nothing live goes. */
  for (int i = 200; i < 250; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.evictions, 0);
  CU_ASSERT_EQUAL(st.expirations, 50);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  cdcache_close(c);
}

static int loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  int *calls = ctx;
  (*calls)++;
  return cdcache_fill_set_value(fill, key, klen);
}

static void test_fills_leases_and_flush(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 64, 1);
  int calls = 0;
  char buf[32];
  size_t n;
  /* A load completes into the cache, then hits. */
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("user:1"), loader, &calls, CDCACHE_TTL_NONE,
                                      CDCACHE_WAIT_FOREVER, buf, sizeof buf, &n),
                  0);
  CU_ASSERT_EQUAL(calls, 1);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("user:1"), buf, sizeof buf, &n), 0);
  /* A lease's put lands, after any number of evictions meanwhile. */
  cdcache_lease_t *lease = NULL;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("user:2"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);
  for (int i = 0; i < 500; i++)
    read_through(c, i);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, lease, "v2", 2, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("user:2"), buf, sizeof buf, &n), 0);
  /* Flush empties every FIFO; the cache fills again to capacity. */
  CU_ASSERT_EQUAL(cdcache_flush(c), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("user:1"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  for (int i = 0; i < 500; i++)
    read_through(c, i);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 64);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("policy_s3fifo", NULL, NULL);
  CU_add_test(s, "a one-time scan does not evict the hot set (allkeys-lru does)",
              test_scan_does_not_evict_the_hot_set);
  CU_add_test(s, "a key read often survives a stream of one-hit keys (allkeys-lru loses it)",
              test_often_read_key_survives_one_hit_stream);
  CU_add_test(s, "the ghost readmits a key dropped too early",
              test_ghost_readmits_a_key_dropped_too_early);
  CU_add_test(s, "entries never exceed max_entries; sketch and ghost bytes reported",
              test_entries_never_exceed_max_entries);
  CU_add_test(s, "max_bytes bounds live, pending and policy bytes",
              test_max_bytes_bounds_live_pending_and_policy_bytes);
  CU_add_test(s, "volatile-s3fifo evicts only entries with a TTL",
              test_volatile_s3fifo_evicts_only_entries_with_ttl);
  CU_add_test(s, "expired entries go first and are never served",
              test_expired_entries_go_first_and_are_never_served);
  CU_add_test(s, "fills, leases and flush", test_fills_leases_and_flush);
  return test_run();
}
