/*
 * The workloads and their timed runner.
 *
 *   read-hit     the cache is prefilled with keys 0..capacity-1; gets are
 *                uniform over them, so every get hits: pure lookup speed.
 *   zipf         cache-aside over Zipf(0.99) ranks of a key space 10x the
 *                capacity: get, and on a miss put.  Prefilled with the
 *                capacity hottest keys (ranks 0..capacity-1).
 *   write-heavy  as zipf, but each op is a put or a get with even odds.
 *   trace        a .u64 trace replayed once on one thread, cache-aside.
 *
 * Each thread draws its own keys from a fixed seed (the same for every
 * impl), all threads start together at a barrier, and the main thread
 * stops them after --seconds.  One op in LAT_SAMPLE_EVERY is timed with
 * two clock_gettime(CLOCK_MONOTONIC) calls into the thread's histogram;
 * the clock's own cost (the median of back-to-back pairs, calibrated at
 * start) is subtracted.  Key generation happens before the first
 * timestamp, so it is not part of a sample.
 */
#include "bench.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LAT_SAMPLE_EVERY 64
#define ZIPF_S 0.99
#define ZIPF_SPACE 10 /* key space / capacity */

static uint64_t clock_overhead_ns(void)
{
  static uint64_t cached = UINT64_MAX;
  if (cached != UINT64_MAX)
    return cached;
  uint64_t d[1001];
  for (int i = 0; i < 1001; i++) {
    uint64_t a = bench_now_ns(), b = bench_now_ns();
    d[i] = b - a;
  }
  /* median by partial selection sort of a small array */
  for (int i = 0; i <= 500; i++)
    for (int j = i + 1; j < 1001; j++)
      if (d[j] < d[i]) {
        uint64_t t = d[i];
        d[i] = d[j];
        d[j] = t;
      }
  cached = d[500];
  return cached;
}

void pin_to_cpu(unsigned i)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0)
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(i % (unsigned)n, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

typedef struct worker {
  reader_arg_t a; /* shared fields with the cdc readers */
  wl_kind_t wl;
  uint64_t capacity;
  pthread_barrier_t *barrier;
  uint64_t puts;
} worker_t;

/* The op loop for all synthetic workloads.  The branch on wl is the same
 * every iteration, so it predicts perfectly. */
static void op_loop(reader_arg_t *a, wl_kind_t wl, uint64_t capacity)
{
  const bench_impl_t *impl = a->impl;
  void *h = a->h;
  size_t ksz = a->o->key_size, vsz = a->o->value_size;
  unsigned char key[1024], val[4096], buf[4096];
  uint64_t s = a->seed, ops = 0, hits = 0, gets = 0;
  uint64_t over = clock_overhead_ns();
  value_encode(val, vsz, a->seed);
  for (;;) {
    for (int i = 0; i < LAT_SAMPLE_EVERY; i++) {
      uint64_t id;
      int is_put = 0;
      if (wl == WL_READ_HIT) {
        id = rng_below(&s, capacity);
      } else {
        id = zipf_next(a->z, &s);
        if (wl == WL_WRITE_HEAVY)
          is_put = (int)(rng_next(&s) >> 63);
      }
      size_t klen = ksz;
      if (a->text_keys)
        klen = (size_t)snprintf((char *)key, sizeof key, "%llu", (unsigned long long)id);
      else
        key_encode(key, ksz, id);
      uint64_t t0 = 0;
      if (i == 0)
        t0 = bench_now_ns();
      if (is_put) {
        impl->put(h, key, klen, val, vsz);
      } else {
        int hit = impl->get(h, key, klen, buf, sizeof buf);
        hits += (uint64_t)hit;
        gets++;
        if (!hit && wl != WL_READ_HIT && wl != WL_WRITE_HEAVY)
          impl->put(h, key, klen, val, vsz);
      }
      if (i == 0) {
        uint64_t d = bench_now_ns() - t0;
        hist_record(a->hist, d > over ? d - over : 0);
      }
    }
    ops += LAT_SAMPLE_EVERY;
    if (atomic_load_explicit(a->stop, memory_order_relaxed))
      break;
  }
  a->ops = ops;
  a->hits = hits;
  a->gets = gets;
}

void reader_zipf_loop(reader_arg_t *a)
{
  a->t0 = bench_now_ns();
  op_loop(a, WL_ZIPF, 0);
  a->t1 = bench_now_ns();
}

static void *worker_main(void *p)
{
  worker_t *w = p;
  pin_to_cpu(w->a.tid);
  /* Touch the impl once so per-thread setup (RCU registration) is not
   * timed. */
  unsigned char key[1024], buf[64];
  key_encode(key, w->a.o->key_size, UINT64_MAX);
  w->a.impl->get(w->a.h, key, w->a.o->key_size, buf, 0);
  pthread_barrier_wait(w->barrier);
  uint64_t cs0 = thread_nivcsw();
  w->a.t0 = bench_now_ns();
  op_loop(&w->a, w->wl, w->capacity);
  w->a.t1 = bench_now_ns();
  w->a.nivcsw = thread_nivcsw() - cs0;
  return NULL;
}

static void prefill(const bench_impl_t *impl, void *h, const opts_t *o, uint64_t n)
{
  unsigned char key[1024], val[4096];
  for (uint64_t id = 0; id < n; id++) {
    key_encode(key, o->key_size, id);
    value_encode(val, o->value_size, id);
    impl->put(h, key, o->key_size, val, o->value_size);
  }
}

/* Memory per entry beyond the key and value bytes, after a grace period. */
static void measure_memory(const bench_impl_t *impl, void *h, const opts_t *o, result_t *out)
{
  impl->settle(h);
  uint64_t n = impl->entries(h);
  out->live_entries = (double)n;
  if (n == 0)
    return;
  double kv = (double)(o->key_size + o->value_size);
  out->bytes_per_entry = (double)impl->mem_bytes(h) / (double)n - kv;
  int64_t self = impl->self_bytes(h);
  if (self >= 0)
    out->stats_bytes_per_entry = (double)self / (double)n - kv;
  if (impl->policy_bytes != NULL)
    out->policy_bytes_per_entry = (double)impl->policy_bytes(h) / (double)n;
}

int run_synthetic(const opts_t *o, const bench_impl_t *impl, wl_kind_t wl, unsigned threads,
                  uint64_t capacity, result_t *out)
{
  impl_cfg_t cfg = {
      .capacity = capacity, .key_size = o->key_size, .value_size = o->value_size, .shards = 0};
  void *h;
  if (impl->open(&cfg, &h) != 0) {
    fprintf(stderr, "cdcache-bench: %s: open failed at %llu entries\n", impl->name,
            (unsigned long long)capacity);
    return -1;
  }
  prefill(impl, h, o, capacity);
  zipf_t z;
  if (wl != WL_READ_HIT)
    zipf_init(&z, capacity * ZIPF_SPACE, ZIPF_S);

  worker_t *ws = calloc(threads, sizeof *ws);
  hist_t *hs = calloc(threads, sizeof *hs);
  pthread_t *tids = calloc(threads, sizeof *tids);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, threads + 1);
  _Atomic int stop = 0;
  for (unsigned i = 0; i < threads; i++) {
    worker_t *w = &ws[i];
    w->a.impl = impl;
    w->a.h = h;
    w->a.o = o;
    w->a.z = &z;
    w->a.tid = i;
    w->a.seed = BENCH_SEED ^ ((uint64_t)wl << 48) ^ (0x9e3779b97f4a7c15ULL * (i + 1));
    w->a.stop = &stop;
    w->a.hist = &hs[i];
    w->wl = wl;
    w->capacity = capacity;
    w->barrier = &bar;
    pthread_create(&tids[i], NULL, worker_main, w);
  }
  pthread_barrier_wait(&bar);
  struct timespec ts = {.tv_sec = (time_t)o->seconds,
                        .tv_nsec = (long)((o->seconds - (double)(time_t)o->seconds) * 1e9)};
  nanosleep(&ts, NULL);
  atomic_store_explicit(&stop, 1, memory_order_relaxed);
  hist_t all;
  hist_clear(&all);
  uint64_t ops = 0, hits = 0, gets = 0, t0 = UINT64_MAX, t1 = 0, preempt = 0;
  for (unsigned i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    ops += ws[i].a.ops;
    hits += ws[i].a.hits;
    gets += ws[i].a.gets;
    preempt += ws[i].a.nivcsw;
    if (ws[i].a.t0 < t0)
      t0 = ws[i].a.t0;
    if (ws[i].a.t1 > t1)
      t1 = ws[i].a.t1;
    hist_merge(&all, &hs[i]);
  }
  pthread_barrier_destroy(&bar);
  out->threads = threads;
  out->entries = capacity;
  snprintf(out->impl, sizeof out->impl, "%s", impl->name);
  out->ops_per_sec = (double)ops / ((double)(t1 - t0) / 1e9);
  out->preempt_per_sec = (double)preempt / ((double)(t1 - t0) / 1e9);
  out->hit_ratio = gets ? (double)hits / (double)gets : 0;
  out->p50_ns = hist_quantile(&all, 0.50);
  out->p99_ns = hist_quantile(&all, 0.99);
  out->p999_ns = hist_quantile(&all, 0.999);
  measure_memory(impl, h, o, out);
  impl->close(h);
  free(ws);
  free(hs);
  free(tids);
  return 0;
}

int run_trace(const opts_t *o, const bench_impl_t *impl, const trace_t *t, uint64_t capacity,
              result_t *out)
{
  impl_cfg_t cfg = {
      .capacity = capacity, .key_size = o->key_size, .value_size = o->value_size, .shards = 0};
  void *h;
  if (impl->open(&cfg, &h) != 0)
    return -1;
  size_t ksz = o->key_size, vsz = o->value_size;
  unsigned char key[1024], val[4096], buf[4096];
  uint64_t over = clock_overhead_ns(), hits = 0;
  hist_t *hist = malloc(sizeof *hist);
  hist_clear(hist);
  value_encode(val, vsz, 1);
  pin_to_cpu(0);
  uint64_t cs0 = thread_nivcsw();
  uint64_t t0 = bench_now_ns();
  for (size_t i = 0; i < t->n; i++) {
    key_encode(key, ksz, t->ids[i]);
    int sample = (i % LAT_SAMPLE_EVERY) == 0;
    uint64_t s0 = sample ? bench_now_ns() : 0;
    int hit = impl->get(h, key, ksz, buf, sizeof buf);
    if (!hit)
      impl->put(h, key, ksz, val, vsz);
    hits += (uint64_t)hit;
    if (sample) {
      uint64_t d = bench_now_ns() - s0;
      hist_record(hist, d > over ? d - over : 0);
    }
  }
  uint64_t t1 = bench_now_ns();
  out->preempt_per_sec = (double)(thread_nivcsw() - cs0) / ((double)(t1 - t0) / 1e9);
  out->threads = 1;
  out->entries = capacity;
  snprintf(out->impl, sizeof out->impl, "%s", impl->name);
  out->ops_per_sec = (double)t->n / ((double)(t1 - t0) / 1e9);
  out->hit_ratio = (double)hits / (double)t->n;
  out->p50_ns = hist_quantile(hist, 0.50);
  out->p99_ns = hist_quantile(hist, 0.99);
  out->p999_ns = hist_quantile(hist, 0.999);
  free(hist);
  measure_memory(impl, h, o, out);
  impl->close(h);
  return 0;
}
