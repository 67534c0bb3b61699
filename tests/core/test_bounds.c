/*
 * Bounds: every size computed at open, the byte shares against
 * max_value_len, the documented max_bytes slack under large values and
 * concurrent writers, the hit path's cache-line layout, and a thread that
 * gets no counter block.
 */
#include "testutil.h"

#include "cache.h"
#include "reclaim.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sizes at open */

static void test_open_refuses_sizes_that_overflow(void)
{
  static struct test_alloc a;
  const uint64_t huge[] = {(uint64_t)1 << 62, UINT64_MAX, ((uint64_t)1 << 63) + 1,
                           (uint64_t)1 << 40};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    for (uint32_t shards = 1; shards <= 1024; shards *= 1024) {
      cdcache_config_t cfg;
      cdcache_config_init(&cfg);
      test_alloc_install(&cfg, &a);
      cfg.max_entries = huge[i];
      cfg.shards = shards;
      cdcache_t *c = NULL;
      int rc = cdcache_open(&cfg, &c);
      CU_ASSERT(rc == CDCACHE_EINVAL || rc == CDCACHE_ENOMEM);
      CU_ASSERT_PTR_NULL(c);
      if (rc == 0)
        cdcache_close(c);
      cfg.max_bytes = UINT64_MAX; /* the byte budget adds nothing that wraps */
      rc = cdcache_open(&cfg, &c);
      CU_ASSERT(rc == CDCACHE_EINVAL || rc == CDCACHE_ENOMEM);
      if (rc == 0)
        cdcache_close(c);
    }
  }
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

/* ---- byte shares */

static void test_a_byte_share_smaller_than_max_value_len_is_refused(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 65536;
  cfg.max_bytes = 64u << 20;
  cfg.shards = 64; /* 7/8 of 64 MiB over 64 shards: 917 KB, less than 1 MiB */
  cdcache_t *c = NULL;
  CU_ASSERT_EQUAL(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(c);
  /* The automatic shard count is sized so that a max_value_len put fits. */
  cfg.shards = 0;
  c = test_open(&cfg);
  char *big = calloc(1, cfg.max_value_len);
  CU_ASSERT_FATAL(big != NULL);
  for (int i = 0; i < 200; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "big%d", i);
    CU_ASSERT_EQUAL(cdcache_put(c, k, (size_t)kl, big, cfg.max_value_len, CDCACHE_TTL_NONE), 0);
  }
  free(big);
  cdcache_close(c);
}

/* The smallest max_bytes cdcache_open accepts for *cfg (a binary search;
 * open refuses a budget whose shares cannot hold the largest entry or
 * placeholder). */
static uint64_t smallest_max_bytes(cdcache_config_t *cfg)
{
  uint64_t lo = 1, hi = 64u << 20;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    cfg->max_bytes = mid;
    cdcache_t *c = NULL;
    if (cdcache_open(cfg, &c) == 0) {
      cdcache_close(c);
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

static void test_the_smallest_max_bytes_still_bounds(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 64 * 16;
  cfg.max_value_len = 64u << 10;
  cfg.shards = 64; /* shares small enough to round down to nothing */
  cfg.max_bytes = smallest_max_bytes(&cfg);
  cdcache_t *c = test_open(&cfg);
  char *v = calloc(1, cfg.max_value_len);
  CU_ASSERT_FATAL(v != NULL);
  long long worst = 0;
  for (int i = 0; i < 200; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "v%d", i);
    CU_ASSERT_EQUAL(cdcache_put(c, k, (size_t)kl, v, cfg.max_value_len, CDCACHE_TTL_NONE), 0);
    long long held = atomic_load(&a.live_bytes);
    if (held > worst)
      worst = held;
  }
  free(v);
  /* One writer: the slack is one entry of max_value_len and its header. */
  printf("\n  smallest max_bytes %llu: most held %lld\n", (unsigned long long)cfg.max_bytes, worst);
  CU_ASSERT(worst <= (long long)(cfg.max_bytes + CDCACHE_MAX_BYTES_SLACK(&cfg, 1)));
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

/* A share must take the largest placeholder too (a key of max_key_len and
 * its fill): with short values it is larger than the largest entry. */
static void test_at_the_smallest_max_bytes_a_lease_of_the_longest_key_starts(void)
{
  const uint32_t klens[] = {250, 65535};
  for (int t = 0; t < 2; t++) {
    cdcache_config_t cfg;
    cdcache_config_init(&cfg);
    cfg.max_entries = 1024;
    cfg.shards = 1;
    cfg.max_key_len = klens[t];
    cfg.max_value_len = 16;
    cfg.max_bytes = smallest_max_bytes(&cfg);
    cdcache_t *c = test_open(&cfg);
    char *k = malloc(cfg.max_key_len);
    CU_ASSERT_FATAL(k != NULL);
    memset(k, 'k', cfg.max_key_len);
    char buf[16];
    size_t n;
    cdcache_lease_t *l = NULL;
    CU_ASSERT_EQUAL(cdcache_get_lease(c, k, cfg.max_key_len, buf, sizeof buf, &n, &l),
                    CDCACHE_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(l);
    CU_ASSERT_EQUAL(cdcache_put_leased(c, l, "v", 1, 0), 0);
    CU_ASSERT_EQUAL(cdcache_get(c, k, cfg.max_key_len, buf, sizeof buf, &n), 0);
    free(k);
    cdcache_close(c);
  }
}

/* ---- fills in flight count against max_bytes */

/* A server under a miss storm holds many leases at once (each caller
 * fetching from the database).  Each lease's placeholder and the fill
 * behind it (mutex, condition variable, key copy) count against
 * max_bytes: the allocator never holds more than max_bytes + the slack,
 * and when placeholders fill a shard, get_lease answers EFULL. */
static void test_leases_held_at_once_stay_within_max_bytes(void)
{
  static struct test_alloc a;
  memset(&a, 0, sizeof a);
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 100000;
  cfg.max_bytes = 4u << 20;
  cfg.max_value_len = 4096;
  cdcache_t *c = test_open(&cfg);
  enum { N = 60000 };
  cdcache_lease_t **l = calloc(N, sizeof *l);
  CU_ASSERT_FATAL(l != NULL);
  long long worst = 0;
  int held = 0, efull = 0;
  char buf[16];
  size_t n;
  for (int i = 0; i < N; i++) {
    char k[32];
    int kl = snprintf(k, sizeof k, "a-key-from-a-client-%d", i);
    int rc = cdcache_get_lease(c, k, (size_t)kl, buf, sizeof buf, &n, &l[i]);
    if (rc == CDCACHE_ENOENT && l[i] != NULL)
      held++;
    else if (rc == CDCACHE_EFULL && l[i] == NULL)
      efull++;
    else
      CU_FAIL("get_lease: neither a lease nor EFULL");
  }
  /* The allocator's own peak, kept at every allocation. */
  worst = atomic_load(&a.peak_bytes);
  printf("\n  %d leases held, %d EFULL; most held %lld B, bound %llu + slack %llu\n", held, efull,
         worst, (unsigned long long)cfg.max_bytes,
         (unsigned long long)CDCACHE_MAX_BYTES_SLACK(&cfg, 1));
  CU_ASSERT(worst <= (long long)(cfg.max_bytes + CDCACHE_MAX_BYTES_SLACK(&cfg, 1)));
  CU_ASSERT(efull > 0);
  CU_ASSERT(held > 1000);
  /* Releasing them frees the room: a put fits again. */
  for (int i = 0; i < N; i++)
    if (l[i] != NULL)
      CU_ASSERT_EQUAL(cdcache_lease_release(c, l[i]), 0);
  free(l);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("after"), "v", 1, 0), 0);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

/* ---- the slack, with large values and concurrent writers */

#define WRITERS 4

struct writer {
  cdcache_t *c;
  int id;
  uint32_t vmax;
  int efull;
};

static int big_loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  const struct writer *w = ctx;
  static char zero[256u << 10];
  return cdcache_fill_set_value(fill, zero, w->vmax / 2 + klen);
}

static void *large_writer(void *arg)
{
  struct writer *w = arg;
  char *v = calloc(1, w->vmax);
  char k[24], buf[16];
  size_t n;
  unsigned x = (unsigned)w->id * 2654435761u + 1;
  for (int i = 0; i < 600 && v != NULL; i++) {
    x = x * 1103515245u + 12345u;
    int kl = snprintf(k, sizeof k, "w%d:%u", w->id, x % 500);
    size_t vl = (x >> 8) % w->vmax + 1;
    int rc;
    if (i % 7 == 0)
      rc = cdcache_get_or_load(w->c, k, (size_t)kl, big_loader, w, 0, 1000, buf, 0, &n);
    else
      rc = cdcache_put(w->c, k, (size_t)kl, v, vl, CDCACHE_TTL_NONE);
    if (rc == CDCACHE_EFULL)
      w->efull++;
    else if (rc != 0 && rc != CDCACHE_ERANGE && rc != CDCACHE_ESTALE)
      w->efull += 1000000;
  }
  free(v);
  return NULL;
}

static void test_max_bytes_slack_holds_with_large_values_and_concurrent_writers(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 100000;
  cfg.max_value_len = 256u << 10;
  cfg.max_bytes = 8u << 20;
  cfg.shards = 4;
  cdcache_t *c = test_open(&cfg);
  pthread_t th[WRITERS];
  struct writer w[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    w[i] = (struct writer){.c = c, .id = i, .vmax = cfg.max_value_len};
    pthread_create(&th[i], NULL, large_writer, &w[i]);
  }
  const long long bound = (long long)(cfg.max_bytes + CDCACHE_MAX_BYTES_SLACK(&cfg, WRITERS));
  long long worst = 0;
  int joined[WRITERS] = {0};
  for (int live = WRITERS; live > 0;) {
    long long held = atomic_load(&a.live_bytes);
    if (held > worst)
      worst = held;
    for (int i = 0; i < WRITERS; i++)
      if (!joined[i] && pthread_tryjoin_np(th[i], NULL) == 0) {
        joined[i] = 1;
        live--;
      }
    sched_yield();
  }
  for (int i = 0; i < WRITERS; i++)
    CU_ASSERT_EQUAL(w[i].efull, 0);
  printf("\n  max_bytes %llu, %d writers: most held %lld, bound %lld\n",
         (unsigned long long)cfg.max_bytes, WRITERS, worst, bound);
  CU_ASSERT(worst <= bound);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

/* ---- layout */

static void test_hit_path_fields_do_not_share_a_line_with_written_ones(void)
{
  const size_t L = CDCACHE__CACHELINE;
  /* Readers load buckets and mask on every get; writers take the lock. */
  CU_ASSERT_NOT_EQUAL(offsetof(struct cdcache__shard, lock) / L,
                      offsetof(struct cdcache__shard, buckets) / L);
  CU_ASSERT_NOT_EQUAL(offsetof(struct cdcache__shard, lock) / L,
                      offsetof(struct cdcache__shard, mask) / L);
  CU_ASSERT_NOT_EQUAL(offsetof(struct cdcache__shard, n_entries) / L,
                      offsetof(struct cdcache__shard, buckets) / L);
  /* fresh_until is read on every hit under CDC, cluster_time written on
   * every change event. */
  CU_ASSERT_NOT_EQUAL(offsetof(struct cdcache, fresh_until) / L,
                      offsetof(struct cdcache, cluster_time) / L);
  CU_ASSERT_NOT_EQUAL(offsetof(struct cdcache, fresh_until) / L, offsetof(struct cdcache, rec) / L);
  CU_ASSERT_EQUAL(sizeof(struct cdcache__shard) % L, 0);
}

/* ---- a thread without a counter block */

struct nb {
  cdcache_t *c;
  struct test_alloc *a;
  int rc_put, rc_get;
};

static void *no_block_thread(void *arg)
{
  struct nb *t = arg;
  /* The put allocates its entry (call 1), then this thread's counter
   * block (call 2): that one fails.  The put evicts (the cache is full). */
  test_alloc_fail_nth(t->a, 2);
  t->rc_put = cdcache_put(t->c, KEY("new"), "v", 1, CDCACHE_TTL_NONE);
  atomic_store(&t->a->fail_all, 1);
  char buf[4];
  size_t n;
  t->rc_get = cdcache_get(t->c, KEY("new"), buf, sizeof buf, &n);
  atomic_store(&t->a->fail_all, 0);
  test_alloc_fail_nth(t->a, 0);
  return NULL;
}

static void test_a_thread_without_a_counter_block_counts_into_the_fallback(void)
{
  static struct test_alloc a;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 4;
  cfg.shards = 1;
  cdcache_t *c = test_open(&cfg);
  char k[8];
  for (int i = 0; i < 4; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL(cdcache_put(c, k, (size_t)kl, "v", 1, CDCACHE_TTL_NONE), 0);
  }
  struct nb t = {.c = c, .a = &a};
  pthread_t th;
  pthread_create(&th, NULL, no_block_thread, &t);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(t.rc_put, 0);
  CU_ASSERT_EQUAL(t.rc_get, 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  CU_ASSERT_EQUAL(cdcache_stats(c, &st), 0);
  CU_ASSERT_EQUAL(st.puts, 5);
  CU_ASSERT_EQUAL(st.evictions, 1);
  CU_ASSERT_EQUAL(st.hits, 1);
  CU_ASSERT_EQUAL(st.entries, 4);
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("bounds", NULL, NULL);
  CU_add_test(s, "a byte share smaller than max_value_len is refused",
              test_a_byte_share_smaller_than_max_value_len_is_refused);
  CU_add_test(s, "the smallest max_bytes still bounds", test_the_smallest_max_bytes_still_bounds);
  CU_add_test(s, "at the smallest max_bytes a lease of the longest key starts",
              test_at_the_smallest_max_bytes_a_lease_of_the_longest_key_starts);
  CU_add_test(s, "leases held at once stay within max_bytes",
              test_leases_held_at_once_stay_within_max_bytes);
  CU_add_test(s, "the max_bytes slack holds with large values and concurrent writers",
              test_max_bytes_slack_holds_with_large_values_and_concurrent_writers);
  CU_add_test(s, "hit-path fields do not share a line with written ones",
              test_hit_path_fields_do_not_share_a_line_with_written_ones);
  CU_add_test(s, "a thread without a counter block counts into the fallback",
              test_a_thread_without_a_counter_block_counts_into_the_fallback);
  CU_add_test(s, "open refuses sizes that overflow", test_open_refuses_sizes_that_overflow);
  return test_run();
}
