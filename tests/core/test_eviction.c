/* Eviction order, policies and capacity edges. */
#include "testutil.h"

#include "shard.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The shared helpers (testutil.c) under this suite's short names. */
#define put_i test_put_int
#define has_i test_has_int
#define open_policy test_open_policy

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
  cfg.max_value_len = 1024; /* each shard's share must hold a largest entry */
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

/* ---- a put never fails for want of a victim under allkeys-lru */

struct hammer {
  cdcache_t *c;
  atomic_int *stop;
  atomic_int *newest; /* the key the writer put last */
};

/* Reads the 16 keys the writer put last (the ones resident), over and
 * over, so that every entry the CLOCK hand passes is soon referenced
 * again. */
static void *hammer_reads(void *arg)
{
  struct hammer *h = arg;
  while (!atomic_load_explicit(h->stop, memory_order_relaxed)) {
    int top = atomic_load_explicit(h->newest, memory_order_relaxed);
    for (int i = top; i > top - 16 && i >= 0; i--)
      (void)has_i(h->c, i);
  }
  return NULL;
}

static void readers_never_make_a_put_efull(cdcache_policy_t policy)
{
  /* One 16-entry shard; 3 readers keep setting every entry's CLOCK bit
   * (raising its hit count, under s3fifo) while a writer replaces and
   * inserts keys. */
  cdcache_t *c = open_policy(policy, 16, 1);
  atomic_int stop = 0, newest = 0;
  struct hammer h = {c, &stop, &newest};
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&th[i], NULL, hammer_reads, &h);
  const char *env = getenv("CDCACHE_STRESS_MS");
  long ms = env != NULL ? atol(env) : 3000;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long efull = 0, puts = 0;
  for (;;) {
    for (int i = 0; i < 1000; i++, puts++) {
      efull += put_i(c, (int)puts, 0) == CDCACHE_EFULL;
      atomic_store_explicit(&newest, (int)puts, memory_order_relaxed);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > ms)
      break;
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  printf("\n  %ld puts against 3 readers: %ld EFULL\n", puts, efull);
  CU_ASSERT_EQUAL(efull, 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT(st.entries <= 16);
  cdcache_close(c);
}

static void test_readers_setting_reference_bits_never_make_a_put_efull(void)
{
  readers_never_make_a_put_efull(CDCACHE_ALLKEYS_LRU);
}

static void test_readers_raising_hit_counts_never_make_an_s3fifo_put_efull(void)
{
  readers_never_make_a_put_efull(CDCACHE_ALLKEYS_S3FIFO);
}

/* A reader that hits every entry right behind the CLOCK hand: the
 * worst interleaving of the stress test above, made deterministic. */
static void rereference(struct cdcache__entry *e)
{
  atomic_store_explicit(&e->ref, 1, memory_order_relaxed);
}

static void test_a_hand_that_readers_always_overtake_still_finds_a_victim(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_LRU, 16, 1);
  for (int i = 0; i < 16; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 0), 0);
  for (int i = 0; i < 16; i++)
    CU_ASSERT_TRUE(has_i(c, i)); /* every reference bit set */
  cdcache__hand_hook = rereference;
  for (int i = 16; i < 64; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 0), 0);
  cdcache__hand_hook = NULL;
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 16);
  CU_ASSERT_EQUAL(st.evictions, 48);
  /* The first put found no victim by the bits after two laps and took
   * the entry at the hand; each later put found the previous newcomer,
   * never read, unreferenced.  The keys readers keep hitting stay. */
  int kept = 0;
  for (int i = 0; i < 16; i++)
    kept += has_i(c, i);
  CU_ASSERT_EQUAL(kept, 15);
  CU_ASSERT_TRUE(has_i(c, 63));
  cdcache_close(c);
}

static void test_a_shard_holding_only_placeholders_is_the_one_efull(void)
{
  /* The documented exception: when a shard's byte share is taken by the
   * placeholders of fills in flight, there is no entry to evict. */
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1000;
  cfg.shards = 1;
  cfg.max_key_len = 200;
  cfg.max_value_len = 512;
  cfg.max_bytes = 64 * 1024;
  cdcache_t *c = test_open(&cfg);
  static cdcache_lease_t *leases[4096];
  char k[256], buf[8];
  size_t n;
  int got = 0, rc = 0;
  memset(k, 'p', sizeof k);
  while (got < 4096) {
    int kl = snprintf(k, sizeof k, "%0190d", got);
    rc = cdcache_get_lease(c, k, (size_t)kl, buf, sizeof buf, &n, &leases[got]);
    if (rc != CDCACHE_ENOENT)
      break;
    got++;
  }
  CU_ASSERT_EQUAL(rc, CDCACHE_EFULL);
  CU_ASSERT(got > 10);
  /* Nothing but placeholders: a put finds no victim.  (Its entry, a key
   * of max_key_len and a value of max_value_len, is larger than the room
   * one more placeholder lacked.) */
  static char big[512];
  char xk[200];
  memset(xk, 'x', sizeof xk);
  CU_ASSERT_EQUAL(cdcache_put(c, xk, sizeof xk, big, sizeof big, 0), CDCACHE_EFULL);
  /* Once a fill completes, puts evict as usual again. */
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(cdcache_lease_release(c, leases[--got]), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, xk, sizeof xk, big, sizeof big, 0), 0);
  while (got > 0)
    CU_ASSERT_EQUAL(cdcache_lease_release(c, leases[--got]), 0);
  for (int i = 0; i < 500; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 0), 0);
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
  CU_add_test(s, "readers setting reference bits never make a put EFULL",
              test_readers_setting_reference_bits_never_make_a_put_efull);
  CU_add_test(s, "readers raising hit counts never make an allkeys-s3fifo put EFULL",
              test_readers_raising_hit_counts_never_make_an_s3fifo_put_efull);
  CU_add_test(s, "a hand that readers always overtake still finds a victim",
              test_a_hand_that_readers_always_overtake_still_finds_a_victim);
  CU_add_test(s, "a shard holding only placeholders is the one EFULL",
              test_a_shard_holding_only_placeholders_is_the_one_efull);
  return test_run();
}
