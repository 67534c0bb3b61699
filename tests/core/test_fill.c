/*
 * Single flight, waiter timeouts, leases, and every stale-fill rejection.
 * Interleavings are forced with loaders that act from inside the load or
 * block on a gate the test opens: no sleeps decide an outcome.
 */
#include "testutil.h"

#include <pthread.h>
#include <string.h>

static cdcache_t *open_cache(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1000;
  return test_open(&cfg);
}

static int cached(cdcache_t *c, const char *k, char *out)
{
  char buf[64];
  size_t n;
  int rc = cdcache_get(c, k, strlen(k), buf, sizeof buf, &n);
  if (rc == 0 && out != NULL) {
    memcpy(out, buf, n);
    out[n] = 0;
  }
  return rc == 0;
}

static uint64_t stat_of(cdcache_t *c, size_t off)
{
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  uint64_t v;
  memcpy(&v, (char *)&st + off, sizeof v);
  return v;
}
#define STAT(c, f) stat_of((c), offsetof(cdcache_stats_t, f))

/* ---- loaders that act on the cache from inside the load */

struct act {
  cdcache_t *c;
  const char *value;
  int what; /* 0 nothing, 1 invalidate, 2 delete, 3 flush, 4 put, 5 error, 6 no value */
  int calls;
};

static int acting_loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  struct act *a = ctx;
  a->calls++;
  switch (a->what) {
  case 1:
    cdcache_invalidate(a->c, key, klen);
    break;
  case 2:
    cdcache_delete(a->c, key, klen);
    break;
  case 3:
    cdcache_flush(a->c);
    break;
  case 4:
    cdcache_put(a->c, key, klen, "from-put", 8, 0);
    break;
  case 5:
    return -42;
  case 6:
    return 0;
  default:
    break;
  }
  return cdcache_fill_set_value(fill, a->value, strlen(a->value));
}

static int gol(cdcache_t *c, const char *k, struct act *a, char *out, uint32_t timeout)
{
  char buf[64];
  size_t n = 0;
  int rc = cdcache_get_or_load(c, k, strlen(k), acting_loader, a, 0, timeout, buf, sizeof buf, &n);
  if (rc == 0 && out != NULL) {
    memcpy(out, buf, n);
    out[n] = 0;
  }
  return rc;
}

static void test_miss_loads_once_and_caches(void)
{
  cdcache_t *c = open_cache();
  struct act a = {c, "v1", 0, 0};
  char out[64];
  CU_ASSERT_EQUAL(gol(c, "k", &a, out, 0), 0);
  CU_ASSERT_STRING_EQUAL(out, "v1");
  CU_ASSERT_EQUAL(gol(c, "k", &a, out, 0), 0);
  CU_ASSERT_EQUAL(a.calls, 1);
  CU_ASSERT_TRUE(cached(c, "k", out));
  CU_ASSERT_STRING_EQUAL(out, "v1");
  CU_ASSERT_EQUAL(STAT(c, loads), 1);
  CU_ASSERT_EQUAL(STAT(c, hits), 2);
  CU_ASSERT_EQUAL(STAT(c, misses), 1);
  cdcache_close(c);
}

static void check_rejected(int what)
{
  cdcache_t *c = open_cache();
  struct act a = {c, "old", what, 0};
  char out[64];
  CU_ASSERT_EQUAL(gol(c, "k", &a, out, 0), 0);
  CU_ASSERT_STRING_EQUAL(out, "old"); /* the caller still gets its value */
  if (what == 4) {
    CU_ASSERT_TRUE(cached(c, "k", out)); /* the put's value, not the load's */
    CU_ASSERT_STRING_EQUAL(out, "from-put");
  } else {
    CU_ASSERT_FALSE(cached(c, "k", out));
  }
  CU_ASSERT_EQUAL(STAT(c, stale_fills_rejected), 1);
  /* The dead placeholder is gone: the next caller loads afresh. */
  a.what = 0;
  a.value = "new";
  /* what == 4 left the put's value, the others nothing at all */
  CU_ASSERT_EQUAL(cdcache_delete(c, KEY("k")), what == 4 ? 0 : CDCACHE_ENOENT);
  CU_ASSERT_EQUAL(gol(c, "k", &a, out, 0), 0);
  CU_ASSERT_STRING_EQUAL(out, "new");
  CU_ASSERT_TRUE(cached(c, "k", out));
  CU_ASSERT_STRING_EQUAL(out, "new");
  cdcache_close(c);
}

static void test_invalidate_during_load_is_not_cached(void)
{
  check_rejected(1);
}
static void test_delete_during_load_is_not_cached(void)
{
  check_rejected(2);
}
static void test_flush_during_load_is_not_cached(void)
{
  check_rejected(3);
}
static void test_put_during_load_wins_over_the_load(void)
{
  check_rejected(4);
}

static void test_loader_error_propagates_and_caches_nothing(void)
{
  cdcache_t *c = open_cache();
  struct act a = {c, "x", 5, 0};
  CU_ASSERT_EQUAL(gol(c, "k", &a, NULL, 0), -42);
  CU_ASSERT_FALSE(cached(c, "k", NULL));
  a.what = 6;
  CU_ASSERT_EQUAL(gol(c, "k", &a, NULL, 0), CDCACHE_ELOADER);
  CU_ASSERT_FALSE(cached(c, "k", NULL));
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 0);
  CU_ASSERT_EQUAL(st.loads, 2);
  cdcache_close(c);
}

/* A loader that uses the cache for other keys while it loads. */
static int busy_loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  cdcache_t *c = ctx;
  char buf[8];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("side"), "s", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("side"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(cdcache_delete(c, KEY("side")), 0);
  CU_ASSERT_EQUAL(cdcache_fill_cluster_time(fill), 0); /* no CDC attached */
  return cdcache_fill_set_value(fill, key, klen);
}

static void test_loader_may_call_put_and_delete(void)
{
  cdcache_t *c = open_cache();
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("main"), busy_loader, c, 0, 0, buf, sizeof buf, &n),
                  0);
  CU_ASSERT_EQUAL(n, 4);
  CU_ASSERT_TRUE(cached(c, "main", NULL));
  CU_ASSERT_FALSE(cached(c, "side", NULL));
  cdcache_close(c);
}

/* ---- concurrent single flight with a gate */

struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
  int entered;
};
static struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void gate_reset(void)
{
  pthread_mutex_lock(&g.mu);
  g.open = 0;
  g.entered = 0;
  pthread_mutex_unlock(&g.mu);
}
static void gate_open(void)
{
  pthread_mutex_lock(&g.mu);
  g.open = 1;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
}
static void gate_wait_entered(void)
{
  pthread_mutex_lock(&g.mu);
  while (!g.entered)
    pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
}

static _Atomic int gated_calls;
static int gated_loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  (void)key;
  (void)klen;
  atomic_fetch_add(&gated_calls, 1);
  pthread_mutex_lock(&g.mu);
  g.entered = 1;
  pthread_cond_broadcast(&g.cv);
  while (!g.open)
    pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
  const char *v = ctx;
  return cdcache_fill_set_value(fill, v, strlen(v));
}

struct caller {
  cdcache_t *c;
  const char *key;
  uint32_t timeout;
  int rc;
  char out[64];
};

static void *call_gol(void *arg)
{
  struct caller *k = arg;
  size_t n = 0;
  k->rc = cdcache_get_or_load(k->c, k->key, strlen(k->key), gated_loader, "loaded", 0, k->timeout,
                              k->out, sizeof k->out - 1, &n);
  if (k->rc == 0)
    k->out[n] = 0;
  return NULL;
}

static void wait_waiters(cdcache_t *c, uint64_t n)
{
  /* Waiters register (load_waits) under the shard lock before blocking. */
  while (STAT(c, load_waits) < n)
    sched_yield();
}

static void test_concurrent_misses_run_one_loader(void)
{
  enum { N = 6 };
  cdcache_t *c = open_cache();
  gate_reset();
  atomic_store(&gated_calls, 0);
  pthread_t th[N];
  struct caller k[N];
  for (int i = 0; i < N; i++) {
    k[i] = (struct caller){c, "hot", CDCACHE_WAIT_FOREVER, -999, {0}};
    pthread_create(&th[i], NULL, call_gol, &k[i]);
  }
  gate_wait_entered();
  wait_waiters(c, N - 1);
  gate_open();
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(k[i].rc, 0);
    CU_ASSERT_STRING_EQUAL(k[i].out, "loaded");
  }
  CU_ASSERT_EQUAL(atomic_load(&gated_calls), 1);
  CU_ASSERT_EQUAL(STAT(c, loads), 1);
  CU_ASSERT_EQUAL(STAT(c, load_waits), N - 1);
  CU_ASSERT_TRUE(cached(c, "hot", NULL));
  cdcache_close(c);
}

static void test_waiters_time_out_or_refuse_to_wait(void)
{
  cdcache_t *c = open_cache();
  gate_reset();
  pthread_t leader;
  struct caller l = {c, "slow", CDCACHE_WAIT_FOREVER, -999, {0}};
  pthread_create(&leader, NULL, call_gol, &l);
  gate_wait_entered();
  char buf[16];
  size_t n;
  /* The leader is held at the gate for as long as this test needs. */
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("slow"), gated_loader, "x", 0, 0, buf, sizeof buf, &n),
                  CDCACHE_EBUSY);
  CU_ASSERT_EQUAL(
      cdcache_get_or_load(c, KEY("slow"), gated_loader, "x", 0, 30, buf, sizeof buf, &n),
      CDCACHE_ETIMEDOUT);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("slow"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  gate_open();
  pthread_join(leader, NULL);
  CU_ASSERT_EQUAL(l.rc, 0);
  CU_ASSERT_TRUE(cached(c, "slow", NULL));
  cdcache_close(c);
}

static void test_waiters_get_the_value_of_a_fill_invalidated_meanwhile(void)
{
  cdcache_t *c = open_cache();
  gate_reset();
  pthread_t th[2];
  struct caller k[2] = {{c, "k", CDCACHE_WAIT_FOREVER, -999, {0}},
                        {c, "k", CDCACHE_WAIT_FOREVER, -999, {0}}};
  pthread_create(&th[0], NULL, call_gol, &k[0]);
  gate_wait_entered();
  pthread_create(&th[1], NULL, call_gol, &k[1]);
  wait_waiters(c, 1);
  CU_ASSERT_EQUAL(cdcache_invalidate(c, KEY("k")), 0); /* kills the fill in flight */
  gate_open();
  pthread_join(th[0], NULL);
  pthread_join(th[1], NULL);
  CU_ASSERT_EQUAL(k[0].rc, 0);
  CU_ASSERT_EQUAL(k[1].rc, 0);
  CU_ASSERT_STRING_EQUAL(k[1].out, "loaded");
  CU_ASSERT_FALSE(cached(c, "k", NULL));
  CU_ASSERT_EQUAL(STAT(c, stale_fills_rejected), 1);
  cdcache_close(c);
}

/* ---- leases */

static void test_lease_fills_an_untouched_key(void)
{
  cdcache_t *c = open_cache();
  cdcache_lease_t *l1 = NULL, *l2 = NULL;
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l1), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l1);
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l2), CDCACHE_EBUSY);
  CU_ASSERT_PTR_NULL(l2);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l1, "v", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l2), 0);
  CU_ASSERT_PTR_NULL(l2);
  CU_ASSERT_EQUAL(n, 1);
  cdcache_close(c);
}

static void check_lease_invalidated(int what)
{
  cdcache_t *c = open_cache();
  cdcache_lease_t *l = NULL;
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  if (what == 1)
    CU_ASSERT_EQUAL(cdcache_delete(c, KEY("k")), 0);
  if (what == 2)
    CU_ASSERT_EQUAL(cdcache_flush(c), 0);
  if (what == 3)
    CU_ASSERT_EQUAL(cdcache_invalidate(c, KEY("k")), 0);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l, "stale", 5, 0), CDCACHE_ESTALE);
  CU_ASSERT_FALSE(cached(c, "k", NULL));
  CU_ASSERT_EQUAL(STAT(c, stale_fills_rejected), 1);
  cdcache_close(c);
}
static void test_lease_after_delete_is_stale(void)
{
  check_lease_invalidated(1);
}
static void test_lease_after_flush_is_stale(void)
{
  check_lease_invalidated(2);
}
static void test_lease_after_invalidate_is_stale(void)
{
  check_lease_invalidated(3);
}

static void test_released_lease_lets_the_next_caller_fill(void)
{
  cdcache_t *c = open_cache();
  cdcache_lease_t *l = NULL;
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  CU_ASSERT_EQUAL(cdcache_lease_release(c, l), 0);
  l = NULL;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL(l);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l, "v", 1, 0), 0);
  CU_ASSERT_TRUE(cached(c, "k", NULL));
  cdcache_close(c);
}

static void test_abandoned_lease_is_taken_over_after_fill_timeout(void)
{
  static struct test_clock clk;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.fill_timeout_ms = 1000;
  atomic_store(&clk.now_ms, 10);
  test_clock_install(&cfg, &clk);
  cdcache_t *c = test_open(&cfg);
  cdcache_lease_t *old = NULL, *nl = NULL;
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &old), CDCACHE_ENOENT);
  atomic_fetch_add(&clk.now_ms, 999);
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &nl), CDCACHE_EBUSY);
  atomic_fetch_add(&clk.now_ms, 1);
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &nl), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL(nl);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, old, "old", 3, 0), CDCACHE_ESTALE);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, nl, "new", 3, 0), 0);
  char out[16];
  CU_ASSERT_TRUE(cached(c, "k", out));
  CU_ASSERT_STRING_EQUAL(out, "new");
  cdcache_close(c);
}

static void *lease_waiter(void *arg)
{
  struct caller *k = arg;
  size_t n = 0;
  k->rc = cdcache_get_or_load(k->c, k->key, strlen(k->key), gated_loader, "from-loader", 0,
                              CDCACHE_WAIT_FOREVER, k->out, sizeof k->out - 1, &n);
  if (k->rc == 0)
    k->out[n] = 0;
  return NULL;
}

static void test_get_or_load_waits_for_a_lease_and_gets_its_value(void)
{
  cdcache_t *c = open_cache();
  cdcache_lease_t *l = NULL;
  char buf[16];
  size_t n;
  gate_reset();
  gate_open(); /* should the waiter ever load, it does not block */
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  pthread_t th;
  struct caller k = {c, "k", 0, -999, {0}};
  pthread_create(&th, NULL, lease_waiter, &k);
  wait_waiters(c, 1);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l, "leased", 6, 0), 0);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(k.rc, 0);
  CU_ASSERT_STRING_EQUAL(k.out, "leased");
  CU_ASSERT_EQUAL(STAT(c, loads), 0);
  cdcache_close(c);
}

static void test_waiter_on_a_released_lease_loads_itself(void)
{
  cdcache_t *c = open_cache();
  cdcache_lease_t *l = NULL;
  char buf[16];
  size_t n;
  gate_reset();
  gate_open();
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  pthread_t th;
  struct caller k = {c, "k", 0, -999, {0}};
  pthread_create(&th, NULL, lease_waiter, &k);
  wait_waiters(c, 1);
  CU_ASSERT_EQUAL(cdcache_lease_release(c, l), 0);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(k.rc, 0);
  CU_ASSERT_STRING_EQUAL(k.out, "from-loader");
  CU_ASSERT_EQUAL(STAT(c, loads), 1);
  CU_ASSERT_TRUE(cached(c, "k", NULL));
  cdcache_close(c);
}

static int v2_loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  (void)ctx;
  (void)key;
  (void)klen;
  return cdcache_fill_set_value(fill, "v2", 2);
}

static void test_a_hung_load_is_taken_over_and_its_waiters_wake(void)
{
  static struct test_clock clk;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.fill_timeout_ms = 1000;
  atomic_store(&clk.now_ms, 5000);
  test_clock_install(&cfg, &clk);
  cdcache_t *c = test_open(&cfg);
  gate_reset();
  /* A: a loader that hangs.  B: waits for it with no time limit. */
  pthread_t ta, tb;
  struct caller a = {c, "k", CDCACHE_WAIT_FOREVER, -999, {0}};
  struct caller b = {c, "k", CDCACHE_WAIT_FOREVER, -999, {0}};
  pthread_create(&ta, NULL, call_gol, &a);
  gate_wait_entered();
  pthread_create(&tb, NULL, call_gol, &b);
  wait_waiters(c, 1);
  /* Before fill_timeout_ms, a third caller waits (and times out). */
  char buf[16];
  size_t n = 0;
  atomic_fetch_add(&clk.now_ms, 999);
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("k"), v2_loader, NULL, 0, 0, buf, sizeof buf, &n),
                  CDCACHE_EBUSY);
  /* After it, the third caller takes the key over and loads. */
  atomic_fetch_add(&clk.now_ms, 1);
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("k"), v2_loader, NULL, 0, 2000, buf, sizeof buf, &n),
                  0);
  CU_ASSERT(n == 2 && memcmp(buf, "v2", 2) == 0);
  /* B was woken by the takeover and found the new value. */
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 30;
  int joined = pthread_timedjoin_np(tb, NULL, &dl) == 0;
  CU_ASSERT_TRUE(joined);
  gate_open();
  pthread_join(ta, NULL);
  if (!joined)
    pthread_join(tb, NULL);
  CU_ASSERT_EQUAL(b.rc, 0);
  CU_ASSERT_STRING_EQUAL(b.out, "v2");
  /* A's late value reaches A only; the cache keeps the takeover's. */
  CU_ASSERT_EQUAL(a.rc, 0);
  CU_ASSERT_STRING_EQUAL(a.out, "loaded");
  char out[16];
  CU_ASSERT_TRUE(cached(c, "k", out));
  CU_ASSERT_STRING_EQUAL(out, "v2");
  CU_ASSERT_EQUAL(STAT(c, stale_fills_rejected), 1);
  cdcache_close(c);
}

static void test_a_clock_stepping_back_does_not_expire_a_lease(void)
{
  static struct test_clock clk;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.fill_timeout_ms = 1000;
  atomic_store(&clk.now_ms, 100000);
  test_clock_install(&cfg, &clk);
  cdcache_t *c = test_open(&cfg);
  cdcache_lease_t *l1 = NULL, *l2 = NULL;
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l1), CDCACHE_ENOENT);
  atomic_store(&clk.now_ms, 50000); /* an injected clock stepped back */
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l2), CDCACHE_EBUSY);
  CU_ASSERT_PTR_NULL(l2);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l1, "v1", 2, 0), 0);
  cdcache_close(c);
}

static void test_a_put_failing_with_efull_kills_the_fill_in_flight(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 2;
  cfg.shards = 1;
  cfg.policy = CDCACHE_NOEVICTION;
  cdcache_t *c = test_open(&cfg);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("a"), "1", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("b"), "2", 1, 0), 0);
  cdcache_lease_t *l = NULL;
  char buf[16];
  size_t n;
  /* A lease's placeholder takes no entry slot. */
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  /* A newer value is written to the database, but the cache is full. */
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "new", 3, 0), CDCACHE_EFULL);
  CU_ASSERT_EQUAL(cdcache_delete(c, KEY("a")), 0);
  /* The lease read the older value: it must not be cached now. */
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l, "old", 3, 0), CDCACHE_ESTALE);
  CU_ASSERT_FALSE(cached(c, "k", NULL));
  cdcache_close(c);
}

/* The same when the put fails before reaching the shard: a value longer
 * than max_value_len (the database holds it; the cache cannot) or no
 * memory for the entry.  The lease read the older value: not cached. */
static void check_failed_put_kills_the_fill(int how)
{
  struct test_alloc a = {0};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 64;
  cfg.max_value_len = 8;
  test_alloc_install(&cfg, &a);
  cdcache_t *c = test_open(&cfg);
  cdcache_lease_t *l = NULL;
  char buf[16];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  if (how == 0) {
    CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "a newer value", 13, 0), CDCACHE_E2BIG);
  } else {
    test_alloc_fail_nth(&a, 1);
    CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "new", 3, 0), CDCACHE_ENOMEM);
    test_alloc_fail_nth(&a, 0);
  }
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l, "old", 3, 0), CDCACHE_ESTALE);
  CU_ASSERT_FALSE(cached(c, "k", NULL));
  /* A key whose put failed with no fill in flight keeps its value (the
   * documented "the old value stays"). */
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("j"), "1", 1, 0), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("j"), "a newer value", 13, 0), CDCACHE_E2BIG);
  CU_ASSERT_TRUE(cached(c, "j", NULL));
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
}
static void test_a_put_failing_with_e2big_kills_the_fill_in_flight(void)
{
  check_failed_put_kills_the_fill(0);
}
static void test_a_put_failing_with_enomem_kills_the_fill_in_flight(void)
{
  check_failed_put_kills_the_fill(1);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("fill", NULL, NULL);
  CU_add_test(s, "a miss loads once and caches", test_miss_loads_once_and_caches);
  CU_add_test(s, "invalidate during a load: value returned, not cached",
              test_invalidate_during_load_is_not_cached);
  CU_add_test(s, "delete during a load: value returned, not cached",
              test_delete_during_load_is_not_cached);
  CU_add_test(s, "flush during a load: value returned, not cached",
              test_flush_during_load_is_not_cached);
  CU_add_test(s, "a put during a load wins over the load", test_put_during_load_wins_over_the_load);
  CU_add_test(s, "a loader's error propagates and caches nothing",
              test_loader_error_propagates_and_caches_nothing);
  CU_add_test(s, "a loader may call put, get and delete", test_loader_may_call_put_and_delete);
  CU_add_test(s, "concurrent misses of one key run one loader",
              test_concurrent_misses_run_one_loader);
  CU_add_test(s, "waiters time out, or refuse to wait with timeout 0",
              test_waiters_time_out_or_refuse_to_wait);
  CU_add_test(s, "waiters get the value of a fill invalidated meanwhile, uncached",
              test_waiters_get_the_value_of_a_fill_invalidated_meanwhile);
  CU_add_test(s, "a lease fills an untouched key; a second lease is refused",
              test_lease_fills_an_untouched_key);
  CU_add_test(s, "a leased put after delete is stale", test_lease_after_delete_is_stale);
  CU_add_test(s, "a leased put after flush is stale", test_lease_after_flush_is_stale);
  CU_add_test(s, "a leased put after invalidate is stale", test_lease_after_invalidate_is_stale);
  CU_add_test(s, "a released lease lets the next caller fill",
              test_released_lease_lets_the_next_caller_fill);
  CU_add_test(s, "an abandoned lease is taken over after fill_timeout_ms",
              test_abandoned_lease_is_taken_over_after_fill_timeout);
  CU_add_test(s, "get_or_load waits for a lease and gets its value",
              test_get_or_load_waits_for_a_lease_and_gets_its_value);
  CU_add_test(s, "a waiter on a released lease loads itself",
              test_waiter_on_a_released_lease_loads_itself);
  CU_add_test(s, "a hung load is taken over and its waiters wake",
              test_a_hung_load_is_taken_over_and_its_waiters_wake);
  CU_add_test(s, "a clock stepping back does not expire a lease",
              test_a_clock_stepping_back_does_not_expire_a_lease);
  CU_add_test(s, "a put failing with EFULL kills the fill in flight",
              test_a_put_failing_with_efull_kills_the_fill_in_flight);
  CU_add_test(s, "a put failing with E2BIG kills the fill in flight",
              test_a_put_failing_with_e2big_kills_the_fill_in_flight);
  CU_add_test(s, "a put failing with ENOMEM kills the fill in flight",
              test_a_put_failing_with_enomem_kills_the_fill_in_flight);
  return test_run();
}
