/*
 * The workloads and their timed runner.
 *
 *   read-hit     the cache is prefilled with keys 0..capacity-1; gets are
 *                uniform over them, so every get hits: pure lookup speed.
 *   zipf         cache-aside over Zipf(0.99) ranks of a key space 10x the
 *                capacity: get, and on a miss put.  Prefilled with the
 *                capacity hottest keys (ranks 0..capacity-1).
 *   write-heavy  as zipf, but each op is a put or a get with even odds.
 *   load         as zipf, through the impl's cache-aside call
 *                (cdcache_get_or_load; the references get, load, put),
 *                with a loader that costs --load-us.
 *   lease        as load, through cdcache_get_lease / cdcache_put_leased.
 *   trace        a .u64 trace replayed once on one thread, cache-aside.
 *
 * Keys are generated before the run (keyset_t): the timed loop reads the
 * next key from an array and calls the impl, so the harness's own cost per
 * op is an index increment and a sequential load the prefetcher hides.
 * The key arrays depend only on the workload, the size and the key size,
 * so one array serves every impl and repetition of a group.
 *
 * All threads start together at a barrier, and the main thread stops them
 * after --seconds.  In the workloads that write (zipf, write-heavy, load,
 * lease) it samples the impl's allocator bytes every 2 ms and the
 * process's RSS every 10 ms meanwhile (the peaks under load, beside the
 * drained figure measured after a grace period); each of its wakeups may
 * preempt a worker, so they are taken off the workers' count of
 * involuntary context switches (the retry criterion).  Closed loop (the
 * default): one op in LAT_SAMPLE_EVERY is timed with two
 * clock_gettime(CLOCK_MONOTONIC) calls into the thread's histogram of its
 * kind (get hit, get miss, put, load miss); the clock's own cost (the
 * median of back-to-back pairs, calibrated at start) is subtracted.  Open
 * loop (--rate R): each thread owes R / threads ops per second on a fixed
 * schedule; an op's latency runs from when it was due, so time spent
 * behind a slow op counts (no coordinated omission), and every op is
 * timed.
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
#define ZIPF_SPACE 10            /* key space / capacity */
#define KEYSET_MAX (1u << 22)    /* keys per array */
#define KEYSET_BYTES (64u << 20) /* at most this much key data */
#define MEM_SAMPLE_NS 2000000ULL /* allocator bytes: every 2 ms */
#define RSS_SAMPLE_EVERY 5       /* RSS: every 5th sample */

const char *const op_kind_name[OP__KINDS] = {"get_hit", "get_miss", "put", "load_miss"};

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

void unpin(void)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (long i = 0; i < n && i < CPU_SETSIZE; i++)
    CPU_SET((int)i, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* ---------------------------------------------------------------- keys */

static size_t keyset_len(size_t stride)
{
  size_t n = KEYSET_MAX;
  while (n > 4096 && n * stride > KEYSET_BYTES)
    n >>= 1;
  return n;
}

static int keyset_alloc(keyset_t *ks, size_t n, size_t stride, bool text, bool puts)
{
  memset(ks, 0, sizeof *ks);
  ks->n = n;
  ks->stride = stride;
  ks->keys = malloc(n * stride);
  ks->klen = text ? malloc(n) : NULL;
  ks->isput = puts ? malloc(n) : NULL;
  if (!ks->keys || (text && !ks->klen) || (puts && !ks->isput)) {
    keyset_free(ks);
    return -1;
  }
  return 0;
}

void keyset_free(keyset_t *ks)
{
  free(ks->keys);
  free(ks->klen);
  free(ks->isput);
  memset(ks, 0, sizeof *ks);
}

int keyset_text_zipf(keyset_t *ks, uint64_t space, uint64_t seed)
{
  if (keyset_alloc(ks, keyset_len(24), 24, true, false) != 0)
    return -1;
  zipf_t z;
  zipf_init(&z, space, ZIPF_S);
  uint64_t s = seed;
  for (size_t i = 0; i < ks->n; i++) {
    int l = snprintf((char *)ks->keys + i * 24, 24, "%llu", (unsigned long long)zipf_next(&z, &s));
    ks->klen[i] = (uint8_t)l;
  }
  return 0;
}

/* The key array of a synthetic group, kept while consecutive runs share
 * its parameters (the plan runs a group's impls and repetitions in a
 * row). */
static struct {
  keyset_t ks;
  wl_kind_t wl;
  uint64_t capacity;
  size_t ksz;
  bool valid;
} cached_keys;

static const keyset_t *keys_for(wl_kind_t wl, uint64_t capacity, size_t ksz)
{
  wl_kind_t shape = wl == WL_LOAD || wl == WL_LEASE ? WL_ZIPF : wl;
  if (cached_keys.valid && cached_keys.wl == shape && cached_keys.capacity == capacity &&
      cached_keys.ksz == ksz)
    return &cached_keys.ks;
  if (cached_keys.valid)
    keyset_free(&cached_keys.ks);
  cached_keys.valid = false;
  keyset_t *ks = &cached_keys.ks;
  if (keyset_alloc(ks, keyset_len(ksz), ksz, false, shape == WL_WRITE_HEAVY) != 0)
    return NULL;
  uint64_t s = BENCH_SEED ^ ((uint64_t)shape << 48);
  zipf_t z;
  if (shape != WL_READ_HIT)
    zipf_init(&z, capacity * ZIPF_SPACE, ZIPF_S);
  for (size_t i = 0; i < ks->n; i++) {
    uint64_t id = shape == WL_READ_HIT ? rng_below(&s, capacity) : zipf_next(&z, &s);
    key_encode(ks->keys + i * ksz, ksz, id);
    if (ks->isput)
      ks->isput[i] = (uint8_t)(rng_next(&s) >> 63);
  }
  cached_keys.wl = shape;
  cached_keys.capacity = capacity;
  cached_keys.ksz = ksz;
  cached_keys.valid = true;
  return ks;
}

/* ------------------------------------------------------------- op loop */

typedef struct worker {
  reader_arg_t a; /* shared fields with the cdc readers */
  wl_kind_t wl;
  pthread_barrier_t *barrier;
} worker_t;

/* One op on key k; returns its kind.  *put_ns gets the put's own time
 * when a cache-aside miss put (zipf), measured only when timing. */
static inline op_kind_t one_op(reader_arg_t *a, wl_kind_t wl, size_t k, const unsigned char *val,
                               size_t vsz, unsigned char *buf, const bench_loader_t *ld, int timing,
                               uint64_t *put_ns)
{
  const bench_impl_t *impl = a->impl;
  const keyset_t *ks = a->ks;
  const unsigned char *key = ks->keys + k * ks->stride;
  size_t klen = ks->klen ? ks->klen[k] : ks->stride;
  if (wl == WL_LOAD || wl == WL_LEASE) {
    int (*fn)(void *, const void *, size_t, void *, size_t, const bench_loader_t *) =
        wl == WL_LOAD ? impl->load : impl->lease;
    int hit;
    if (fn) {
      hit = fn(a->h, key, klen, buf, 4096, ld);
    } else {
      hit = impl->get(a->h, key, klen, buf, 4096);
      if (!hit) {
        bench_load_spin(ld);
        impl->put(a->h, key, klen, ld->value, ld->vlen);
      }
    }
    a->gets++;
    a->hits += (uint64_t)hit;
    return hit ? OP_GET_HIT : OP_LOAD_MISS;
  }
  if (ks->isput && ks->isput[k]) {
    impl->put(a->h, key, klen, val, vsz);
    return OP_PUT;
  }
  int hit = impl->get(a->h, key, klen, buf, 4096);
  a->gets++;
  a->hits += (uint64_t)hit;
  if (!hit && (wl == WL_ZIPF)) {
    uint64_t p0 = timing ? bench_now_ns() : 0;
    impl->put(a->h, key, klen, val, vsz);
    if (timing)
      *put_ns = bench_now_ns() - p0;
  }
  return hit ? OP_GET_HIT : OP_GET_MISS;
}

static void record(reader_arg_t *a, op_kind_t kind, uint64_t d, uint64_t put_ns, uint64_t over)
{
  hist_record(a->all, d > over ? d - over : 0);
  if (put_ns) {
    /* a cache-aside step: the get and its put, each with its own kind */
    uint64_t g = d > put_ns ? d - put_ns : 0;
    hist_record(&a->hist[kind], g > over ? g - over : 0);
    hist_record(&a->hist[OP_PUT], put_ns > over ? put_ns - over : 0);
  } else {
    hist_record(&a->hist[kind], d > over ? d - over : 0);
  }
}

static void op_loop(reader_arg_t *a, wl_kind_t wl)
{
  size_t vsz = a->o->value_size;
  unsigned char val[4096], buf[4096];
  value_encode(val, vsz, a->tid + 1);
  bench_loader_t ld = {.cost_ns = a->o->load_ns, .value = val, .vlen = vsz};
  uint64_t over = clock_overhead_ns();
  size_t mask = a->ks->n - 1, idx = a->start;
  uint64_t ops = 0;
  a->hits = a->gets = 0;
  if (a->o->rate > 0) {
    /* Open loop: op i of this thread is due at t0 + i * interval. */
    double interval = 1e9 * (double)a->threads / a->o->rate;
    uint64_t t0 = bench_now_ns();
    for (;; ops++, idx++) {
      uint64_t due = t0 + (uint64_t)((double)ops * interval), now = bench_now_ns();
      while (now < due) {
        if (due - now > 200000) {
          struct timespec ts = {0, (long)(due - now - 100000)};
          nanosleep(&ts, NULL);
        }
        if (atomic_load_explicit(a->stop, memory_order_relaxed))
          goto out;
        now = bench_now_ns();
      }
      uint64_t put_ns = 0;
      op_kind_t kind = one_op(a, wl, idx & mask, val, vsz, buf, &ld, 1, &put_ns);
      uint64_t end = bench_now_ns();
      record(a, kind, end - due + over, put_ns, over);
      if (atomic_load_explicit(a->stop, memory_order_relaxed))
        break;
    }
  } else {
    for (;;) {
      uint64_t put_ns = 0, t0 = bench_now_ns();
      op_kind_t kind = one_op(a, wl, idx++ & mask, val, vsz, buf, &ld, 1, &put_ns);
      record(a, kind, bench_now_ns() - t0, put_ns, over);
      for (int i = 1; i < LAT_SAMPLE_EVERY; i++)
        one_op(a, wl, idx++ & mask, val, vsz, buf, &ld, 0, &put_ns);
      ops += LAT_SAMPLE_EVERY;
      if (atomic_load_explicit(a->stop, memory_order_relaxed))
        break;
    }
  }
out:
  a->ops = ops;
}

void reader_zipf_loop(reader_arg_t *a)
{
  a->t0 = bench_now_ns();
  op_loop(a, WL_ZIPF);
  a->t1 = bench_now_ns();
}

static void *worker_main(void *p)
{
  worker_t *w = p;
  pin_to_cpu(w->a.tid);
  /* Touch the impl once so per-thread setup (RCU registration) is not
   * timed. */
  unsigned char buf[64];
  w->a.impl->get(w->a.h, w->a.ks->keys, w->a.ks->stride, buf, 0);
  pthread_barrier_wait(w->barrier);
  uint64_t cs0 = thread_nivcsw();
  w->a.t0 = bench_now_ns();
  op_loop(&w->a, w->wl);
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

/* Memory per entry beyond the key and value bytes, after a grace period;
 * bytes still pending reclamation (cdcache's partial retire batches) are
 * subtracted. */
static void measure_memory(const bench_impl_t *impl, void *h, const opts_t *o, result_t *out)
{
  impl->settle(h);
  uint64_t n = impl->entries(h);
  out->live_entries = (double)n;
  int64_t pending = impl->pending_bytes ? impl->pending_bytes(h) : 0;
  out->mem_drained_bytes = (double)(impl->mem_bytes(h) - pending);
  if (n == 0)
    return;
  double kv = (double)(o->key_size + o->value_size);
  out->bytes_per_entry = out->mem_drained_bytes / (double)n - kv;
  int64_t self = impl->self_bytes(h);
  if (self >= 0)
    out->stats_bytes_per_entry = (double)(self - pending) / (double)n - kv;
  if (impl->policy_bytes != NULL)
    out->policy_bytes_per_entry = (double)impl->policy_bytes(h) / (double)n;
}

static void fill_latency(result_t *out, const hist_t *all, const hist_t *kinds)
{
  out->p50_ns = hist_quantile(all, 0.50);
  out->p99_ns = hist_quantile(all, 0.99);
  out->p999_ns = hist_quantile(all, 0.999);
  for (int k = 0; k < OP__KINDS; k++) {
    int any = kinds[k].count > 0;
    out->kp50[k] = any ? hist_quantile(&kinds[k], 0.50) : -1;
    out->kp99[k] = any ? hist_quantile(&kinds[k], 0.99) : -1;
    out->kp999[k] = any ? hist_quantile(&kinds[k], 0.999) : -1;
  }
}

/* Sleeps until `until`, sampling the impl's allocator bytes and the RSS
 * when `sample`; returns the number of wakeups. */
static uint64_t sample_until(const bench_impl_t *impl, void *h, uint64_t until, bool sample,
                             result_t *out)
{
  int64_t peak = impl->mem_bytes(h), rss = bench_rss_bytes();
  if (!sample) {
    uint64_t now = bench_now_ns();
    if (now < until) {
      struct timespec ts = {(time_t)((until - now) / 1000000000ULL),
                            (long)((until - now) % 1000000000ULL)};
      nanosleep(&ts, NULL);
    }
    return 0;
  }
  unsigned i = 1;
  for (;; i++) {
    uint64_t now = bench_now_ns();
    if (now >= until)
      break;
    uint64_t nap = until - now < MEM_SAMPLE_NS ? until - now : MEM_SAMPLE_NS;
    struct timespec ts = {0, (long)nap};
    nanosleep(&ts, NULL);
    int64_t m = impl->mem_bytes(h);
    if (m > peak)
      peak = m;
    if (i % RSS_SAMPLE_EVERY == 0) {
      int64_t r = bench_rss_bytes();
      if (r > rss)
        rss = r;
    }
  }
  out->mem_peak_bytes = (double)peak;
  out->rss_peak_bytes = (double)rss;
  return i;
}

int run_synthetic(const opts_t *o, const bench_impl_t *impl, wl_kind_t wl, unsigned threads,
                  uint64_t capacity, result_t *out)
{
  if (impl->child_exe)
    return run_in_child(o, impl, wl, threads, capacity, out);
  const keyset_t *ks = keys_for(wl, capacity, o->key_size);
  if (!ks) {
    fprintf(stderr, "cdcache-bench: out of memory for the keys\n");
    return -1;
  }
  out->rss_base_bytes = (double)bench_rss_bytes();
  impl_cfg_t cfg = {
      .capacity = capacity, .key_size = o->key_size, .value_size = o->value_size, .shards = 0};
  void *h;
  if (impl->open(&cfg, &h) != 0) {
    fprintf(stderr, "cdcache-bench: %s: open failed at %llu entries\n", impl->name,
            (unsigned long long)capacity);
    return -1;
  }
  prefill(impl, h, o, capacity);

  worker_t *ws = calloc(threads, sizeof *ws);
  hist_t *hs = calloc((size_t)threads * (OP__KINDS + 1), sizeof *hs);
  pthread_t *tids = calloc(threads, sizeof *tids);
  if (!ws || !hs || !tids) {
    free(ws);
    free(hs);
    free(tids);
    impl->close(h);
    return -1;
  }
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, threads + 1);
  _Atomic int stop = 0;
  for (unsigned i = 0; i < threads; i++) {
    worker_t *w = &ws[i];
    w->a.impl = impl;
    w->a.h = h;
    w->a.o = o;
    w->a.ks = ks;
    w->a.start = (ks->n / threads) * i;
    w->a.tid = i;
    w->a.threads = threads;
    w->a.stop = &stop;
    w->a.hist = &hs[(size_t)i * (OP__KINDS + 1)];
    w->a.all = &hs[(size_t)i * (OP__KINDS + 1) + OP__KINDS];
    w->wl = wl;
    w->barrier = &bar;
    pthread_create(&tids[i], NULL, worker_main, w);
  }
  pthread_barrier_wait(&bar);
  uint64_t wakes =
      sample_until(impl, h, bench_now_ns() + (uint64_t)(o->seconds * 1e9), wl != WL_READ_HIT, out);
  atomic_store_explicit(&stop, 1, memory_order_relaxed);
  hist_t *all = calloc(OP__KINDS + 1, sizeof *all);
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
    for (int k = 0; all && k <= OP__KINDS; k++)
      hist_merge(&all[k], &hs[(size_t)i * (OP__KINDS + 1) + (size_t)k]);
  }
  pthread_barrier_destroy(&bar);
  out->threads = threads;
  out->entries = capacity;
  snprintf(out->impl, sizeof out->impl, "%s", impl->name);
  out->ops_per_sec = (double)ops / ((double)(t1 - t0) / 1e9);
  out->offered_ops_per_sec = o->rate > 0 ? o->rate : -1;
  out->preempt_per_sec =
      (double)(preempt > wakes ? preempt - wakes : 0) / ((double)(t1 - t0) / 1e9);
  out->hit_ratio = gets ? (double)hits / (double)gets : 0;
  if (all)
    fill_latency(out, &all[OP__KINDS], all);
  free(all);
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
  hist_t *hist = calloc(3, sizeof *hist);
  if (!hist) {
    impl->close(h);
    return -1;
  }
  value_encode(val, vsz, 1);
  /* 8-byte keys are the trace's ids themselves (little-endian u64):
   * nothing to encode in the loop.  Longer keys are encoded per op. */
  const unsigned char *ids = (const unsigned char *)t->ids;
  pin_to_cpu(0);
  uint64_t cs0 = thread_nivcsw();
  uint64_t t0 = bench_now_ns();
  for (size_t i = 0; i < t->n; i++) {
    const unsigned char *k = ids + i * 8;
    if (ksz != 8) {
      key_encode(key, ksz, t->ids[i]);
      k = key;
    }
    int sample = (i % LAT_SAMPLE_EVERY) == 0;
    uint64_t s0 = sample ? bench_now_ns() : 0, s1 = 0;
    int hit = impl->get(h, k, ksz, buf, sizeof buf);
    if (sample)
      s1 = bench_now_ns();
    if (!hit)
      impl->put(h, k, ksz, val, vsz);
    hits += (uint64_t)hit;
    if (sample) {
      uint64_t s2 = hit ? s1 : bench_now_ns();
      hist_record(&hist[0], s2 - s0 > over ? s2 - s0 - over : 0);
      hist_record(&hist[hit ? 1 : 2], s1 - s0 > over ? s1 - s0 - over : 0);
    }
  }
  uint64_t t1 = bench_now_ns();
  /* Fault 1 of issue 10: the pin used to outlive the replay, and every
   * later run (the cdc child among them) inherited one CPU. */
  unpin();
  out->preempt_per_sec = (double)(thread_nivcsw() - cs0) / ((double)(t1 - t0) / 1e9);
  out->threads = 1;
  out->entries = capacity;
  snprintf(out->impl, sizeof out->impl, "%s", impl->name);
  out->ops_per_sec = (double)t->n / ((double)(t1 - t0) / 1e9);
  out->hit_ratio = (double)hits / (double)t->n;
  hist_t kinds[OP__KINDS];
  memset(kinds, 0, sizeof kinds);
  kinds[OP_GET_HIT] = hist[1];
  kinds[OP_GET_MISS] = hist[2];
  fill_latency(out, &hist[0], kinds);
  free(hist);
  measure_memory(impl, h, o, out);
  impl->close(h);
  return 0;
}
