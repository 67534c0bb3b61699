/*
 * A bounded stress: threads mix get, put, delete, invalidate, flush,
 * get_or_load and leases on a small set of overlapping keys.  Checked
 * invariants:
 *  - a lookup returns only a value that was put for that key (each value
 *    names its key and carries a checksum);
 *  - entries never exceed max_entries (a monitor samples the stats);
 *  - hits + misses equal the lookups the threads made;
 *  - at the end, after a flush, no live bytes remain, and close frees all
 *    (ASan: no use after free; TSan: no data race).
 * CDCACHE_STRESS_MS sets the duration (default 1500 ms).
 */
#include "testutil.h"

#include "cache_internal.h"
#include "reclaim.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { THREADS = 6, KEYS = 512, CAP = 200 };

struct value {
  uint32_t key;
  uint32_t writer;
  uint64_t seq;
  uint64_t check;
};

static uint64_t checksum(const struct value *v)
{
  return (v->key * 0x9E3779B97F4A7C15ull) ^ (v->writer * 0xC2B2AE3D27D4EB4Full) ^ v->seq;
}

static cdcache_t *cache;
static _Atomic int stop;
static _Atomic long bad_values, lookups, entries_over;

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void make_value(struct value *v, uint32_t key, uint32_t writer, uint64_t seq)
{
  v->key = key;
  v->writer = writer;
  v->seq = seq;
  v->check = checksum(v);
}

static void verify(uint32_t key, const struct value *v, size_t n)
{
  if (n != sizeof *v || v->key != key || v->check != checksum(v))
    atomic_fetch_add(&bad_values, 1);
}

/* Lets the threads run for CDCACHE_STRESS_MS (default 1500 ms), then
 * tells them to stop. */
static void run_then_stop(void)
{
  const char *env = getenv("CDCACHE_STRESS_MS");
  uint64_t ms = env != NULL ? strtoull(env, NULL, 10) : 1500;
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL); /* the test's duration, not an ordering */
  }
  atomic_store(&stop, 1);
}

struct loader_ctx {
  uint32_t key;
  uint32_t writer;
  uint64_t seq;
};

static int loader(void *ctx, const void *k, size_t kl, cdcache_fill_t *fill)
{
  struct loader_ctx *l = ctx;
  struct value v;
  (void)k;
  (void)kl;
  make_value(&v, l->key, l->writer, l->seq);
  return cdcache_fill_set_value(fill, &v, sizeof v);
}

static void *worker(void *arg)
{
  uint32_t id = (uint32_t)(uintptr_t)arg;
  unsigned seed = id * 7919u + 1;
  uint64_t seq = 0;
  long my_lookups = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    uint32_t key = (uint32_t)rand_r(&seed) % KEYS;
    char k[16];
    int kl = snprintf(k, sizeof k, "key:%u", key);
    struct value v;
    size_t n = 0;
    int op = rand_r(&seed) % 100;
    int rc;
    if (op < 50) {
      rc = cdcache_get(cache, k, (size_t)kl, &v, sizeof v, &n);
      my_lookups++;
      if (rc == 0)
        verify(key, &v, n);
      else if (rc != CDCACHE_ENOENT)
        atomic_fetch_add(&bad_values, 1);
    } else if (op < 70) {
      make_value(&v, key, id, ++seq);
      rc = cdcache_put(cache, k, (size_t)kl, &v, sizeof v, (op & 1) ? 0 : 5);
      if (rc != 0)
        atomic_fetch_add(&bad_values, 1);
    } else if (op < 78) {
      rc = cdcache_delete(cache, k, (size_t)kl);
      if (rc != 0 && rc != CDCACHE_ENOENT)
        atomic_fetch_add(&bad_values, 1);
    } else if (op < 84) {
      (void)cdcache_invalidate(cache, k, (size_t)kl);
    } else if (op < 85) {
      if (rand_r(&seed) % 20 == 0)
        cdcache_flush(cache);
    } else if (op < 95) {
      struct loader_ctx l = {key, id, ++seq};
      rc = cdcache_get_or_load(cache, k, (size_t)kl, loader, &l, 0, 50, &v, sizeof v, &n);
      my_lookups++;
      if (rc == 0)
        verify(key, &v, n);
      else if (rc != CDCACHE_ETIMEDOUT)
        atomic_fetch_add(&bad_values, 1);
    } else {
      cdcache_lease_t *lease = NULL;
      rc = cdcache_get_lease(cache, k, (size_t)kl, &v, sizeof v, &n, &lease);
      my_lookups++;
      if (rc == 0) {
        verify(key, &v, n);
      } else if (rc == CDCACHE_ENOENT && lease != NULL) {
        if (rand_r(&seed) % 4 == 0) {
          cdcache_lease_release(cache, lease);
        } else {
          make_value(&v, key, id, ++seq);
          rc = cdcache_put_leased(cache, lease, &v, sizeof v, 0);
          if (rc != 0 && rc != CDCACHE_ESTALE)
            atomic_fetch_add(&bad_values, 1);
        }
      } else if (rc != CDCACHE_EBUSY) {
        atomic_fetch_add(&bad_values, 1);
      }
    }
  }
  atomic_fetch_add(&lookups, my_lookups);
  return NULL;
}

static void *monitor(void *arg)
{
  (void)arg;
  while (!atomic_load(&stop)) {
    cdcache_stats_t st = {.struct_size = sizeof st};
    cdcache_stats(cache, &st);
    if (st.entries > CAP)
      atomic_fetch_add(&entries_over, 1);
    sched_yield();
  }
  return NULL;
}

static void run_mixed(cdcache_policy_t policy)
{
  static struct test_alloc a;
  atomic_store(&stop, 0);
  atomic_store(&bad_values, 0);
  atomic_store(&lookups, 0);
  atomic_store(&entries_over, 0);
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.policy = policy;
  cfg.max_entries = CAP;
  cfg.shards = 4;
  cfg.fill_timeout_ms = 100;
  test_alloc_install(&cfg, &a);
  cache = test_open(&cfg);
  pthread_t th[THREADS], mon;
  for (int i = 0; i < THREADS; i++)
    pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1));
  pthread_create(&mon, NULL, monitor, NULL);
  run_then_stop();
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  pthread_join(mon, NULL);

  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(cache, &st);
  printf("\n  stress: %ld lookups, hits %lu, misses %lu, puts %lu, evictions %lu, loads %lu, "
         "waits %lu, stale fills rejected %lu\n",
         atomic_load(&lookups), (unsigned long)st.hits, (unsigned long)st.misses,
         (unsigned long)st.puts, (unsigned long)st.evictions, (unsigned long)st.loads,
         (unsigned long)st.load_waits, (unsigned long)st.stale_fills_rejected);
  CU_ASSERT_EQUAL(atomic_load(&bad_values), 0);
  CU_ASSERT_EQUAL(atomic_load(&entries_over), 0);
  CU_ASSERT_EQUAL(st.hits + st.misses, (uint64_t)atomic_load(&lookups));
  CU_ASSERT(st.hits > 0);
  CU_ASSERT(st.loads > 0);
  CU_ASSERT(st.entries <= CAP);
  cdcache_flush(cache);
  cdcache_stats(cache, &st);
  CU_ASSERT_EQUAL(st.entries, 0);
  CU_ASSERT_EQUAL(st.bytes_live, 0);
  cdcache_close(cache);
  CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
}

static void test_mixed_operations_keep_every_invariant(void)
{
  run_mixed(CDCACHE_ALLKEYS_LRU);
}

/* The same under allkeys-s3fifo: its hands, sketch and ghost change
 * under the shard lock while readers raise the entries' counts. */
static void test_mixed_operations_keep_every_invariant_s3fifo(void)
{
  run_mixed(CDCACHE_ALLKEYS_S3FIFO);
}

/* ------------------------------------------------- recycled entries */

/*
 * Puts overwrite entries other puts retired, once their grace period has
 * passed (reclaim.c, "Recycling").  Readers racing them must still see
 * only values put for their key, whole: a recycled entry reused too early
 * would be rewritten under a reader's copy (a torn value, or another
 * key's).  Two key lengths, so pools meet entries of another size too;
 * deletes retire entries without a put taking one back.  Each writer
 * waits for the queued batches every 128 puts (cdcache__retire_barrier), so
 * the pools fill even when the reclaimer thread is starved (sanitizers, a
 * loaded machine): the allocator must see far fewer entries than puts.
 */
/* Gets <prefix><key> and checks a hit's value; the get's result. */
static int get_checked(const char *prefix, uint32_t key)
{
  char k[16];
  int kl = snprintf(k, sizeof k, "%s%u", prefix, key);
  struct value v;
  size_t n = 0;
  int rc = cdcache_get(cache, k, (size_t)kl, &v, sizeof v, &n);
  if (rc == 0)
    verify(key, &v, n);
  else if (rc != CDCACHE_ENOENT)
    atomic_fetch_add(&bad_values, 1);
  return rc;
}

/* Each writer puts at least RMIN_PUTS times, however slow the run
 * (valgrind serialises the threads: 384 puts in its 1 s once); the readers
 * race the writers until both are done. */
enum { RKEYS = 96, RCAP = 64, RWRITERS = 2, RREADERS = 2, RMIN_PUTS = 2000 };
static _Atomic long recycle_puts;
static atomic_int writers_done;

static void *recycle_writer(void *arg)
{
  uint32_t id = (uint32_t)(uintptr_t)arg;
  unsigned seed = id * 104729u + 7;
  uint64_t seq = 0;
  long puts = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed) || puts < RMIN_PUTS) {
    uint32_t key = (uint32_t)rand_r(&seed) % RKEYS;
    char k[16];
    int kl = snprintf(k, sizeof k, "r%u", key);
    if (rand_r(&seed) % 8 == 0) {
      (void)cdcache_delete(cache, k, (size_t)kl);
      continue;
    }
    struct value v;
    make_value(&v, key, id, ++seq);
    if (cdcache_put(cache, k, (size_t)kl, &v, sizeof v, CDCACHE_TTL_NONE) != 0)
      atomic_fetch_add(&bad_values, 1);
    if (++puts % 128 == 0)
      cdcache__retire_barrier();
  }
  atomic_fetch_add(&recycle_puts, puts);
  return NULL;
}

static void *recycle_reader(void *arg)
{
  unsigned seed = (unsigned)(uintptr_t)arg * 31u + 3;
  long my_lookups = 0;
  while (!atomic_load_explicit(&writers_done, memory_order_relaxed)) {
    (void)get_checked("r", (uint32_t)rand_r(&seed) % RKEYS);
    my_lookups++;
  }
  atomic_fetch_add(&lookups, my_lookups);
  return NULL;
}

static void test_readers_racing_puts_that_recycle_entries_see_only_their_values(void)
{
  static struct test_alloc a;
  atomic_store(&stop, 0);
  atomic_store(&bad_values, 0);
  atomic_store(&lookups, 0);
  atomic_store(&recycle_puts, 0);
  atomic_store(&writers_done, 0);
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = RCAP;
  cfg.shards = 2;
  test_alloc_install(&cfg, &a);
  cache = test_open(&cfg);
  long calls0 = atomic_load(&a.calls);
  pthread_t w[RWRITERS], r[RREADERS];
  for (int i = 0; i < RWRITERS; i++)
    pthread_create(&w[i], NULL, recycle_writer, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < RREADERS; i++)
    pthread_create(&r[i], NULL, recycle_reader, (void *)(uintptr_t)(i + 1));
  run_then_stop();
  for (int i = 0; i < RWRITERS; i++)
    pthread_join(w[i], NULL);
  atomic_store(&writers_done, 1);
  for (int i = 0; i < RREADERS; i++)
    pthread_join(r[i], NULL);
  long calls = atomic_load(&a.calls) - calls0, puts = atomic_load(&recycle_puts);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(cache, &st);
  printf("\n  recycle: %ld puts, %ld allocations, %ld lookups, hits %lu\n", puts, calls,
         atomic_load(&lookups), (unsigned long)st.hits);
  CU_ASSERT_EQUAL(atomic_load(&bad_values), 0);
  CU_ASSERT(st.hits > 0);
  CU_ASSERT(puts >= RWRITERS * RMIN_PUTS);
  /* Recycling happened: without it every put allocates its entry (calls
   * >= puts).  Plain runs allocate for about 30% of puts; valgrind, whose
   * serialised threads starve the reclaimer thread, for up to 38%. */
  CU_ASSERT(calls < puts * 3 / 4);
  CU_ASSERT(st.entries <= RCAP);
  cdcache_close(cache);
  CU_ASSERT_EQUAL(atomic_load(&a.live_allocs), 0);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

/* ------------------------------------------------------ bucket tags */

/*
 * A get skips a chain whose bucket summary lacks its key's tag (shard.c,
 * "Tags"), so a summary that ever dropped the tag of an entry still on
 * the chain would make a cached key vanish.  Sixteen keys without a TTL
 * stay cached (volatile-lru never evicts them) in a table of 32 buckets,
 * while writers insert, evict, delete and replace keys with a TTL that
 * share their buckets, and replace the staying keys too.  Readers must
 * find every staying key, every time, with a value put for it.
 */
enum { STAY = 16, CHURN = 200, TCAP = 64 };
static _Atomic long stay_lost;

static void *tags_writer(void *arg)
{
  uint32_t id = (uint32_t)(uintptr_t)arg;
  unsigned seed = id * 7717u + 5;
  uint64_t seq = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    int op = rand_r(&seed) % 16;
    uint32_t key =
        op == 0 ? (uint32_t)rand_r(&seed) % STAY : STAY + (uint32_t)rand_r(&seed) % CHURN;
    char k[16];
    int kl = snprintf(k, sizeof k, "t%u", key);
    struct value v;
    make_value(&v, key, id, ++seq);
    int rc;
    if (op == 1) {
      rc = cdcache_delete(cache, k, (size_t)kl);
      rc = rc == CDCACHE_ENOENT ? 0 : rc;
    } else {
      /* The staying keys have no TTL; the others an hour's. */
      rc = cdcache_put(cache, k, (size_t)kl, &v, sizeof v, op == 0 ? CDCACHE_TTL_NONE : 3600000u);
      rc = rc == CDCACHE_EFULL && op != 0 ? 0 : rc;
    }
    if (rc != 0)
      atomic_fetch_add(&bad_values, 1);
  }
  return NULL;
}

static void *tags_reader(void *arg)
{
  unsigned seed = (unsigned)(uintptr_t)arg * 17u + 11;
  long my_lookups = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    uint32_t key = (uint32_t)rand_r(&seed) % (STAY + CHURN);
    my_lookups++;
    if (get_checked("t", key) == CDCACHE_ENOENT && key < STAY)
      atomic_fetch_add(&stay_lost, 1);
  }
  atomic_fetch_add(&lookups, my_lookups);
  return NULL;
}

static void test_keys_that_stay_are_always_found_while_their_buckets_churn(void)
{
  atomic_store(&stop, 0);
  atomic_store(&bad_values, 0);
  atomic_store(&lookups, 0);
  atomic_store(&stay_lost, 0);
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = TCAP;
  cfg.shards = 1;
  cfg.policy = CDCACHE_VOLATILE_LRU;
  cache = test_open(&cfg);
  for (uint32_t i = 0; i < STAY; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "t%u", i);
    struct value v;
    make_value(&v, i, 0, 0);
    CU_ASSERT_EQUAL_FATAL(cdcache_put(cache, k, (size_t)kl, &v, sizeof v, CDCACHE_TTL_NONE), 0);
  }
  pthread_t w[2], r[2];
  for (int i = 0; i < 2; i++) {
    pthread_create(&w[i], NULL, tags_writer, (void *)(uintptr_t)(i + 1));
    pthread_create(&r[i], NULL, tags_reader, (void *)(uintptr_t)(i + 1));
  }
  run_then_stop();
  for (int i = 0; i < 2; i++) {
    pthread_join(w[i], NULL);
    pthread_join(r[i], NULL);
  }
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(cache, &st);
  printf("\n  tags: %ld lookups, hits %lu, evictions %lu, staying keys lost %ld\n",
         atomic_load(&lookups), (unsigned long)st.hits, (unsigned long)st.evictions,
         atomic_load(&stay_lost));
  CU_ASSERT_EQUAL(atomic_load(&bad_values), 0);
  CU_ASSERT_EQUAL(atomic_load(&stay_lost), 0);
  CU_ASSERT(st.evictions > 0);
  CU_ASSERT(st.hits > 0);
  cdcache_close(cache);
}

/* ------------------------------------------- the bound and the read path */

/*
 * The CDC thread evicts a changed key and then publishes a later bound.  A
 * reader that found the key while the cache was failed closed must not
 * serve it under that later bound: the key's value was never both cached
 * and allowed.  The "CDC thread" here makes the same calls cdc/stream.c
 * makes (cdcache_invalidate, then the bound); the reader runs SCHED_IDLE
 * on the same CPU, so the writer preempts it at arbitrary instructions
 * (found by review: with the bound read after the lookup, 4,762
 * violations in 19,224 rounds).
 */
#define BOUND_T 1000000u
static _Atomic uint64_t race_phase = UINT64_MAX;
static _Atomic int race_done;
static _Atomic uint64_t race_violations, race_hits, race_reads;
static cdcache_t *race_cache;

static uint64_t race_clock(void *ctx)
{
  (void)ctx;
  return BOUND_T;
}

static void pin_cpu0(void)
{
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *race_reader(void *arg)
{
  (void)arg;
  pin_cpu0();
  struct sched_param sp = {0};
  (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
  while (!atomic_load(&race_done)) {
    uint64_t p = atomic_load_explicit(&race_phase, memory_order_acquire);
    uint64_t v = 0;
    size_t vl = 0;
    int rc = cdcache_get(race_cache, "K", 1, &v, sizeof v, &vl);
    atomic_fetch_add(&race_reads, 1);
    if (rc == 0 && v == p)
      atomic_fetch_add(&race_violations, 1);
    else if (rc == 0)
      atomic_fetch_add(&race_hits, 1);
  }
  return NULL;
}

static void test_reader_never_serves_an_entry_evicted_before_its_bound(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.clock = race_clock;
  cfg.max_entries = 1024;
  race_cache = test_open(&cfg);
  const char *env = getenv("CDCACHE_STRESS_MS");
  uint64_t ms = env != NULL ? strtoull(env, NULL, 10) : 1500;
  cpu_set_t saved;
  (void)pthread_getaffinity_np(pthread_self(), sizeof saved, &saved);
  pthread_t th;
  pthread_create(&th, NULL, race_reader, NULL);
  pin_cpu0();
  uint64_t end = now_ms() + ms, i = 0;
  while (now_ms() < end) {
    i++;
    cdcache__set_fresh_until(race_cache, BOUND_T + 1000); /* serving */
    CU_ASSERT_EQUAL_FATAL(cdcache_put(race_cache, "K", 1, &i, sizeof i, 0), 0);
    cdcache__set_fresh_until(race_cache, BOUND_T - 1); /* the bound passed */
    atomic_store_explicit(&race_phase, i, memory_order_release);
    struct timespec nap = {0, 30000};
    nanosleep(&nap, NULL);                  /* gives the reader a chance to start a read */
    cdcache_invalidate(race_cache, "K", 1); /* K's replacement's event */
    cdcache__set_fresh_until(race_cache, BOUND_T + 1000); /* then the bound */
    nanosleep(&nap, NULL);
  }
  atomic_store(&race_done, 1);
  pthread_join(th, NULL);
  (void)pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  (void)printf("(%llu rounds, %llu reads, %llu hits) ", (unsigned long long)i,
               (unsigned long long)atomic_load(&race_reads),
               (unsigned long long)atomic_load(&race_hits));
  CU_ASSERT_EQUAL(atomic_load(&race_violations), 0);
  CU_ASSERT(atomic_load(&race_reads) > 0);
  cdcache_close(race_cache);
}

/*
 * cdcache's reclaimer thread blocks every signal, so a process-directed
 * signal the host blocks in its own threads (to take it with sigwait, or
 * at a time of its choosing) never runs its handler on cdcache's thread.
 * Here the test's only thread blocks SIGUSR1 after the reclaimer has
 * started: the signal must stay pending, and its handler run on this
 * thread once unblocked.
 */
static _Atomic int usr1_runs, usr1_on_main;
static pthread_t usr1_main;

static void on_usr1(int sig)
{
  (void)sig;
  atomic_fetch_add(&usr1_runs, 1);
  if (pthread_equal(pthread_self(), usr1_main))
    atomic_fetch_add(&usr1_on_main, 1);
}

/* Puts and deletes 128 keys on c (one shard): two batches for the
 * reclaimer. */
static void queue_two_batches(cdcache_t *c)
{
  for (int i = 0; i < 128; i++) {
    CU_ASSERT_EQUAL(test_put_int(c, i, 0), 0);
    char k[16];
    int kl = snprintf(k, sizeof k, "key%d", i);
    CU_ASSERT_EQUAL(cdcache_delete(c, k, (size_t)kl), 0);
  }
}

static void test_the_reclaimer_thread_takes_none_of_the_hosts_signals(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1024;
  cfg.shards = 1;
  cdcache_t *c = test_open(&cfg);
  /* Two batches: the reclaimer thread exists (if it did not yet). */
  queue_two_batches(c);
  cdcache__retire_barrier();
  usr1_main = pthread_self();
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  CU_ASSERT_FATAL(sigaction(SIGUSR1, &sa, &old) == 0);
  sigset_t usr1, prev;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  CU_ASSERT_FATAL(pthread_sigmask(SIG_BLOCK, &usr1, &prev) == 0);
  CU_ASSERT_FATAL(kill(getpid(), SIGUSR1) == 0);
  /* The kernel hands a process-directed signal to a thread that does not
   * block it: the reclaimer, if it left SIGUSR1 open, which then runs the
   * handler on its way back from the kernel.  Two more batches and a
   * barrier make it wake and finish a round after the kill. */
  queue_two_batches(c);
  cdcache__retire_barrier();
  CU_ASSERT_EQUAL(atomic_load(&usr1_runs), 0);
  sigset_t pending;
  CU_ASSERT(sigpending(&pending) == 0 && sigismember(&pending, SIGUSR1) == 1);
  CU_ASSERT_FATAL(pthread_sigmask(SIG_SETMASK, &prev, NULL) == 0);
  CU_ASSERT_EQUAL(atomic_load(&usr1_runs), 1);
  CU_ASSERT_EQUAL(atomic_load(&usr1_on_main), 1);
  sigaction(SIGUSR1, &old, NULL);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("concurrency", NULL, NULL);
  CU_add_test(s, "mixed operations from 6 threads keep every invariant",
              test_mixed_operations_keep_every_invariant);
  CU_add_test(s, "mixed operations from 6 threads keep every invariant under allkeys-s3fifo",
              test_mixed_operations_keep_every_invariant_s3fifo);
  CU_add_test(s, "readers racing puts that recycle entries see only values put for their key",
              test_readers_racing_puts_that_recycle_entries_see_only_their_values);
  CU_add_test(s, "keys that stay are always found while their buckets churn",
              test_keys_that_stay_are_always_found_while_their_buckets_churn);
  CU_add_test(s, "a reader never serves an entry evicted before the bound it checks",
              test_reader_never_serves_an_entry_evicted_before_its_bound);
  CU_add_test(s, "the reclaimer thread takes none of the host's signals",
              test_the_reclaimer_thread_takes_none_of_the_hosts_signals);
  return test_run();
}
