/*
 * cdc: the change-stream pipeline end to end, against the project's
 * wire-protocol test server (cdcache-mongo-test-server), in two phases.
 *
 * Setup: start the server on a free loopback port, insert N documents
 * {_id: i} into bench.items (N = max(2 x THROUGHPUT_KEYS, --capacity);
 * inserted before the subscription exists, so they produce no
 * evictions), open a cache that holds all N keys, and start a subscription
 * with one rule, bench.items -> "{_id}" (the decimal id), and an on_evict
 * observer.  Readers use the same keys (decimal ids, generated before the
 * phase).
 *
 * Every phase runs against a cache holding every key it invalidates: the
 * cache is filled with all N keys before each phase, and the JSON reports
 * how many were present and how many invalidations the cache counted (an
 * invalidation of an absent key unlinks, retires and frees nothing, so it
 * would measure less than the real work).
 *
 * Throughput: readers idle; the server updates documents as fast as it can
 * (cdcacheBulk, in chunks of CHUNK so that server and CDC thread overlap)
 * and the harness waits until the subscription reports every key evicted.
 * keys/s = keys / (last eviction - first bulk sent); the CDC thread's CPU
 * time is read from its CLOCK_THREAD_CPUTIME_ID (pthread_getcpuclockid of
 * the thread that runs on_evict) before and after.
 *
 * Latency: reader threads run zipf cache-aside over the N ids, first
 * without writes (idle), then while a writer offers updates at half the
 * measured maximum: every millisecond one `update` command with rate/1000
 * statements on distinct ids (a fixed permutation).  The offered rate and
 * the rate the writer achieved are both reported.  The writer stamps each
 * id when its command is acknowledged, on_evict stamps it when its key is
 * gone (CLOCK_MONOTONIC both) and keeps the lag the library measured from
 * the change's commit wallTime (the server's clock, ms).  Lag from the
 * acknowledgement may be negative (the key was gone before the reply
 * arrived): it is kept signed and the negative ones are counted.  A key
 * never seen evicted within 10 s of the last write is lost: counted in the
 * JSON (lag_lost_keys), and any loss fails the lag target.
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>

#ifdef CDCACHE_BENCH_HAVE_CDC

#include <cdcache.h>
#include <errno.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CDC_DB "bench"
#define CDC_COLL "items"
#define CHUNK 10000
#define THROUGHPUT_KEYS 300000

static struct {
  uint64_t ndocs;
  _Atomic uint64_t *gone_ns; /* per id: when its key was evicted */
  _Atomic int64_t *wall_ms;  /* per id: the library's lag from wallTime, +1 (0: none) */
  uint64_t *ack_ns;          /* per id: when its write was acknowledged */
  _Atomic int track;
  _Atomic int have_thread;
  pthread_t cdc_thread;
} g;

static void nap_ms(unsigned ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void on_evict(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag_ms)
{
  (void)ctx, (void)op, (void)ns;
  if (!atomic_load_explicit(&g.have_thread, memory_order_acquire)) {
    g.cdc_thread = pthread_self();
    atomic_store_explicit(&g.have_thread, 1, memory_order_release);
  }
  if (!key || !atomic_load_explicit(&g.track, memory_order_relaxed))
    return;
  uint64_t id = 0;
  const char *k = key;
  for (size_t i = 0; i < klen; i++) {
    if (k[i] < '0' || k[i] > '9')
      return;
    id = id * 10 + (uint64_t)(k[i] - '0');
  }
  if (id < g.ndocs) {
    uint64_t zero = 0;
    if (atomic_compare_exchange_strong_explicit(&g.gone_ns[id], &zero, bench_now_ns(),
                                                memory_order_relaxed, memory_order_relaxed) &&
        lag_ms != -1 && lag_ms >= -1000000)
      atomic_store_explicit(&g.wall_ms[id], lag_ms + 1000001, memory_order_relaxed);
  }
}

/* libmongoc's default handler prints its DEBUG lines; keep warnings. */
static void mongoc_log_quiet(mongoc_log_level_t level, const char *domain, const char *message,
                             void *ud)
{
  (void)ud;
  if (level <= MONGOC_LOG_LEVEL_WARNING)
    fprintf(stderr, "libmongoc %s: %s\n", domain, message);
}

typedef struct server {
  pid_t pid;
  char dir[64];
  char uri[128];
} server_t;

static const char *server_path(void)
{
  const char *env = getenv("CDCACHE_MONGO_TEST_SERVER");
  return env && *env ? env : CDCACHE_BENCH_SERVER;
}

static int server_start(server_t *s, uint64_t oplog)
{
  char portfile[128], oplogs[32];
  memset(s, 0, sizeof *s);
  snprintf(s->dir, sizeof s->dir, "/tmp/cdcache-bench-XXXXXX");
  if (!mkdtemp(s->dir))
    return -1;
  snprintf(portfile, sizeof portfile, "%s/port", s->dir);
  snprintf(oplogs, sizeof oplogs, "%llu", (unsigned long long)oplog);
  const char *path = server_path();
  s->pid = fork();
  if (s->pid < 0)
    return -1;
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
    execl(path, path, "--port", "0", "--port-file", portfile, "--oplog-size", oplogs, "--quiet",
          (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 2000; i++) {
    FILE *f = fopen(portfile, "r");
    if (f) {
      int port = 0, n = fscanf(f, "%d", &port);
      fclose(f);
      if (n == 1 && port > 0) {
        snprintf(s->uri, sizeof s->uri, "mongodb://127.0.0.1:%d/?directConnection=true", port);
        return 0;
      }
    }
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
      s->pid = 0;
      return -1;
    }
    nap_ms(5);
  }
  return -1;
}

static void server_stop(server_t *s)
{
  if (s->pid > 0) {
    int st;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 1000 && waitpid(s->pid, &st, WNOHANG) == 0; i++)
      nap_ms(5);
    if (waitpid(s->pid, &st, WNOHANG) == 0) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &st, 0);
    }
    s->pid = 0;
  }
  char portfile[128];
  snprintf(portfile, sizeof portfile, "%s/port", s->dir);
  unlink(portfile);
  rmdir(s->dir);
}

static mongoc_client_t *client_new(const char *uri_str)
{
  bson_error_t err;
  mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_str, &err);
  if (!uri)
    return NULL;
  mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 60000);
  mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  mongoc_client_t *c = mongoc_client_new_from_uri(uri);
  mongoc_uri_destroy(uri);
  if (c)
    mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  return c;
}

static int bulk(mongoc_client_t *c, const char *op, int64_t n, int64_t id_start, char *why,
                size_t why_len)
{
  bson_t *cmd = BCON_NEW("cdcacheBulk", BCON_UTF8(CDC_COLL), "db", BCON_UTF8(CDC_DB), "n",
                         BCON_INT64(n), "op", BCON_UTF8(op), "idStart", BCON_INT64(id_start));
  bson_t reply;
  bson_error_t err;
  bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &err);
  bson_destroy(&reply);
  bson_destroy(cmd);
  if (!ok)
    snprintf(why, why_len, "cdcacheBulk %s failed: %.200s", op, err.message);
  return ok ? 0 : -1;
}

static int sub_stats(cdcache_cdc_t *sub, cdcache_cdc_stats_t *st)
{
  memset(st, 0, sizeof *st);
  st->struct_size = sizeof *st;
  return cdcache_cdc_stats(sub, st);
}

/* Waits until the subscription has evicted `target` keys in total. */
static int wait_evicted(cdcache_cdc_t *sub, uint64_t target, unsigned timeout_ms,
                        cdcache_cdc_stats_t *st)
{
  uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
  for (;;) {
    if (sub_stats(sub, st) == 0 && st->keys_evicted >= target)
      return 0;
    if (bench_now_ns() > deadline)
      return -1;
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
}

static uint64_t thread_cpu_ns(clockid_t clk)
{
  struct timespec ts;
  if (clock_gettime(clk, &ts) != 0)
    return 0;
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------- readers */

typedef struct readers {
  reader_arg_t *a;
  hist_t *h;
  pthread_t *t;
  unsigned n;
  _Atomic int stop;
} readers_t;

static void *reader_main(void *p)
{
  reader_arg_t *a = p;
  pin_to_cpu(a->tid);
  reader_zipf_loop(a);
  return NULL;
}

static void readers_start(readers_t *r, unsigned n, const bench_impl_t *impl, void *h,
                          const opts_t *o, const keyset_t *ks)
{
  r->n = n;
  r->a = calloc(n, sizeof *r->a);
  r->h = calloc((size_t)n * (OP__KINDS + 1), sizeof *r->h);
  r->t = calloc(n, sizeof *r->t);
  atomic_store(&r->stop, 0);
  for (unsigned i = 0; i < n; i++) {
    reader_arg_t *a = &r->a[i];
    a->impl = impl;
    a->h = h;
    a->o = o;
    a->ks = ks;
    a->start = (ks->n / n) * i;
    a->tid = i;
    a->threads = n;
    a->stop = &r->stop;
    a->hist = &r->h[(size_t)i * (OP__KINDS + 1)];
    a->all = &r->h[(size_t)i * (OP__KINDS + 1) + OP__KINDS];
    pthread_create(&r->t[i], NULL, reader_main, a);
  }
}

/* Stops the readers; returns ops/s and fills hit ratio and latency. */
static double readers_stop(readers_t *r, double *hit_ratio, hist_t *all)
{
  atomic_store(&r->stop, 1);
  double rate = 0;
  uint64_t hits = 0, gets = 0;
  hist_clear(all);
  for (unsigned i = 0; i < r->n; i++) {
    pthread_join(r->t[i], NULL);
    rate += (double)r->a[i].ops / ((double)(r->a[i].t1 - r->a[i].t0) / 1e9);
    hits += r->a[i].hits;
    gets += r->a[i].gets;
    hist_merge(all, r->a[i].all);
  }
  *hit_ratio = gets ? (double)hits / (double)gets : 0;
  free(r->a);
  free(r->h);
  free(r->t);
  return rate;
}

/* --------------------------------------------------------------- writer */

typedef struct writer {
  mongoc_client_t *client;
  double rate; /* writes per second offered */
  double seconds;
  uint64_t p; /* permutation step, coprime with ndocs */
  uint64_t written;
  double achieved;
  char err[256];
} writer_t;

static uint64_t gcd(uint64_t a, uint64_t b)
{
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static void *writer_main(void *p)
{
  writer_t *w = p;
  mongoc_collection_t *col = mongoc_client_get_collection(w->client, CDC_DB, CDC_COLL);
  (void)col;
  uint64_t per_tick = (uint64_t)(w->rate / 1000.0 + 0.5);
  if (per_tick < 1)
    per_tick = 1;
  uint64_t ticks = (uint64_t)(w->seconds * 1000.0);
  uint64_t i = 0, t0 = bench_now_ns();
  for (uint64_t k = 0; k < ticks && i + per_tick <= g.ndocs; k++) {
    uint64_t due = t0 + k * 1000000ULL;
    uint64_t now = bench_now_ns();
    if (now < due) {
      struct timespec ts = {(time_t)(due / 1000000000ULL), (long)(due % 1000000000ULL)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
    bson_t cmd = BSON_INITIALIZER, ups;
    BSON_APPEND_UTF8(&cmd, "update", CDC_COLL);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "updates", &ups);
    for (uint64_t j = 0; j < per_tick; j++) {
      uint64_t id = ((i + j) * w->p) % g.ndocs;
      char idx[24];
      snprintf(idx, sizeof idx, "%llu", (unsigned long long)j);
      bson_t st, q, u, set;
      bson_append_document_begin(&ups, idx, -1, &st);
      BSON_APPEND_DOCUMENT_BEGIN(&st, "q", &q);
      BSON_APPEND_INT64(&q, "_id", (int64_t)id);
      bson_append_document_end(&st, &q);
      BSON_APPEND_DOCUMENT_BEGIN(&st, "u", &u);
      BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
      BSON_APPEND_INT64(&set, "w", (int64_t)(i + j + 1));
      bson_append_document_end(&u, &set);
      bson_append_document_end(&st, &u);
      bson_append_document_end(&ups, &st);
    }
    bson_append_array_end(&cmd, &ups);
    BSON_APPEND_BOOL(&cmd, "ordered", false);
    bson_t reply;
    bson_error_t err;
    bool ok = mongoc_client_command_simple(w->client, CDC_DB, &cmd, NULL, &reply, &err);
    uint64_t ack = bench_now_ns();
    bson_destroy(&reply);
    bson_destroy(&cmd);
    if (!ok) {
      snprintf(w->err, sizeof w->err, "update failed: %.200s", err.message);
      break;
    }
    for (uint64_t j = 0; j < per_tick; j++)
      g.ack_ns[((i + j) * w->p) % g.ndocs] = ack;
    i += per_tick;
  }
  w->written = i;
  w->achieved = (double)i / ((double)(bench_now_ns() - t0) / 1e9);
  mongoc_collection_destroy(col);
  return NULL;
}

/* Samples cdcache_fresh() every millisecond while the writer runs: the
 * share of time the cache refused service (failed closed).  Fields other
 * than stop are the prober thread's until it is joined. */
typedef struct fresh_probe {
  cdcache_t *cache;
  _Atomic int stop;
  uint64_t samples, closed;
} fresh_probe_t;

static void *fresh_probe_main(void *p)
{
  fresh_probe_t *f = p;
  while (!atomic_load(&f->stop)) {
    f->samples++;
    if (cdcache_fresh(f->cache, NULL) == CDCACHE_ESTALE)
      f->closed++;
    nap_ms(1);
  }
  return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

const double lag_q[LAG_QUANTILES] = {0,   0.1, 0.2, 0.3,  0.4,   0.5, 0.6,
                                     0.7, 0.8, 0.9, 0.99, 0.999, 1.0};

static double quantile_i64(const int64_t *v, size_t n, double q)
{
  size_t i = (size_t)(q * (double)n);
  return (double)v[i >= n ? n - 1 : i];
}

/* Puts every doc's key into the cache (decimal id -> 8-byte value). */
static void fill_all(void *h, const opts_t *o)
{
  unsigned char val[4096];
  char key[24];
  value_encode(val, o->value_size, 7);
  for (uint64_t id = 0; id < g.ndocs; id++) {
    int kl = snprintf(key, sizeof key, "%llu", (unsigned long long)id);
    impl_cdcache.put(h, key, (size_t)kl, val, o->value_size);
  }
}

static uint64_t cache_invalidations(cdcache_t *c, uint64_t *entries)
{
  cdcache_stats_t st = {.struct_size = sizeof st};
  if (cdcache_stats(c, &st) != 0)
    return 0;
  if (entries)
    *entries = st.entries;
  return st.invalidations;
}

/* ------------------------------------------------------------------ run */

int cdc_bench_run(const opts_t *o, result_t *out, char *why, size_t why_len)
{
  if (access(server_path(), X_OK) != 0) {
    snprintf(why, why_len, "test server %s not built", server_path());
    return 0;
  }
  int ran = 0;
  server_t srv;
  mongoc_client_t *client = NULL;
  void *h = NULL;
  cdcache_cdc_t *sub = NULL;
  unpin(); /* whatever the parent's mask was, the pipeline gets every CPU */
  g.ndocs = o->capacity;
  if (g.ndocs < 2 * THROUGHPUT_KEYS)
    g.ndocs = 2 * THROUGHPUT_KEYS;
  keyset_t ks = {0};
  g.gone_ns = calloc(g.ndocs, sizeof *g.gone_ns);
  g.wall_ms = calloc(g.ndocs, sizeof *g.wall_ms);
  g.ack_ns = calloc(g.ndocs, sizeof *g.ack_ns);
  atomic_store(&g.track, 0);
  atomic_store(&g.have_thread, 0);
  if (server_start(&srv, g.ndocs * 3 + 1000) != 0) {
    snprintf(why, why_len, "could not start %s", server_path());
    goto done_nosrv;
  }
  mongoc_init();
  mongoc_log_set_handler(mongoc_log_quiet, NULL);
  client = client_new(srv.uri);
  if (!client) {
    snprintf(why, why_len, "mongoc client for %s failed", srv.uri);
    goto done;
  }
  if (bulk(client, "insert", (int64_t)g.ndocs, 0, why, why_len) != 0)
    goto done;

  /* 5% over N: CLOCK is per shard and shards fill unevenly, so a cache of
   * exactly N entries would evict a few of the N keys. */
  impl_cfg_t cfg = {
      .capacity = g.ndocs + g.ndocs / 20, .key_size = 20, .value_size = o->value_size};
  if (impl_cdcache.open(&cfg, &h) != 0) {
    snprintf(why, why_len, "cdcache_open failed");
    goto done;
  }
  cdcache_t *cache = impl_cdcache_handle(h);
  cdcache_cdc_config_t cc;
  cdcache_cdc_config_init(&cc);
  cdcache_cdc_rule_t rule = {CDC_DB "." CDC_COLL, "{_id}"};
  cc.uri = srv.uri;
  cc.db = CDC_DB;
  cc.coll = CDC_COLL;
  cc.rules = &rule;
  cc.n_rules = 1;
  cc.on_evict = on_evict;
  int rc = cdcache_cdc_start(cache, &cc, &sub);
  if (rc != 0) {
    snprintf(why, why_len, "cdcache_cdc_start: %s", cdcache_strerror(rc));
    sub = NULL;
    goto done;
  }
  cdcache_cdc_stats_t st;
  for (int i = 0; i < 5000; i++) {
    if (sub_stats(sub, &st) == 0 && st.state == CDCACHE_CDC_STREAMING)
      break;
    nap_ms(2);
  }
  if (st.state != CDCACHE_CDC_STREAMING) {
    snprintf(why, why_len, "subscription not streaming after 10 s (state %s, %s)",
             cdcache_cdc_state_name(st.state), st.last_error);
    goto done;
  }
  /* Warm-up write: learns the CDC thread (on_evict runs on it). */
  uint64_t base = st.keys_evicted;
  if (bulk(client, "update", 1, 0, why, why_len) != 0)
    goto done;
  if (wait_evicted(sub, base + 1, 10000, &st) != 0 ||
      !atomic_load_explicit(&g.have_thread, memory_order_acquire)) {
    snprintf(why, why_len, "a write did not reach the cache within 10 s");
    goto done;
  }
  clockid_t cdc_clk;
  if (pthread_getcpuclockid(g.cdc_thread, &cdc_clk) != 0) {
    snprintf(why, why_len, "pthread_getcpuclockid of the CDC thread failed");
    goto done;
  }

  /* ---- throughput: readers idle, the server writes as fast as it can */
  progress(o, "cdc: filling the cache with %llu keys", (unsigned long long)g.ndocs);
  fill_all(h, o);
  uint64_t present = 0, inv0 = cache_invalidations(cache, &present);
  out->present_before_throughput = (double)present;
  progress(o, "cdc: throughput phase (%d keys)", THROUGHPUT_KEYS);
  sub_stats(sub, &st);
  base = st.keys_evicted;
  uint64_t ev0 = st.events, cpu0 = thread_cpu_ns(cdc_clk), t0 = bench_now_ns();
  for (int64_t done_k = 0; done_k < THROUGHPUT_KEYS; done_k += CHUNK)
    if (bulk(client, "update", CHUNK, done_k, why, why_len) != 0)
      goto done;
  if (wait_evicted(sub, base + THROUGHPUT_KEYS, 60000, &st) != 0) {
    snprintf(why, why_len, "throughput phase: only %llu of %d keys evicted in 60 s",
             (unsigned long long)(st.keys_evicted - base), THROUGHPUT_KEYS);
    goto done;
  }
  uint64_t t1 = bench_now_ns(), cpu1 = thread_cpu_ns(cdc_clk);
  double secs = (double)(t1 - t0) / 1e9;
  out->keys_per_sec = (double)(st.keys_evicted - base) / secs;
  out->events_per_sec = (double)(st.events - ev0) / secs;
  out->cdc_cpu_ns_per_key = (double)(cpu1 - cpu0) / (double)(st.keys_evicted - base);
  out->cdc_busy = (double)(cpu1 - cpu0) / (double)(t1 - t0);
  out->invalidated_present = (double)(cache_invalidations(cache, NULL) - inv0);

  /* ---- latency: readers run zipf, idle then under writes at half max */
  /* Readers: the largest --threads count, but leave one CPU to the server,
   * the writer and the CDC thread (on 2 CPUs: 1 reader). */
  unsigned nr = 1;
  for (int i = 0; i < o->nthreads; i++)
    if (o->threads[i] > nr)
      nr = o->threads[i];
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu > 1 && nr > (unsigned)(ncpu - 1))
    nr = (unsigned)(ncpu - 1);
  double phase = o->seconds * 2 > 1.0 ? o->seconds * 2 : 1.0;
  if (keyset_text_zipf(&ks, g.ndocs, BENCH_SEED ^ 0xcdc) != 0) {
    snprintf(why, why_len, "out of memory for the readers' keys");
    goto done;
  }
  /* Every key again: the writes below find each of them cached. */
  progress(o, "cdc: filling the cache with %llu keys", (unsigned long long)g.ndocs);
  fill_all(h, o);
  readers_t rd;
  hist_t lat;
  double hit_idle, hit_storm;
  progress(o, "cdc: readers without writes (%.1f s)", phase);
  readers_start(&rd, nr, &impl_cdcache, h, o, &ks);
  nap_ms((unsigned)(phase * 1000));
  out->reader_ops_per_sec_idle = readers_stop(&rd, &hit_idle, &lat);

  writer_t w = {.client = client, .rate = out->keys_per_sec / 2, .seconds = phase};
  w.p = 1000003;
  while (gcd(w.p, g.ndocs) != 1)
    w.p += 2;
  sub_stats(sub, &st);
  base = st.keys_evicted;
  atomic_store(&g.track, 1);
  progress(o, "cdc: readers with writes at %.0f/s (%.1f s)", w.rate, phase);
  readers_start(&rd, nr, &impl_cdcache, h, o, &ks);
  pthread_t wt, ft;
  fresh_probe_t fp = {.cache = cache};
  bool probing = pthread_create(&ft, NULL, fresh_probe_main, &fp) == 0;
  pthread_create(&wt, NULL, writer_main, &w);
  pthread_join(wt, NULL);
  atomic_store(&fp.stop, 1);
  if (probing) {
    pthread_join(ft, NULL);
    printf("cdc: failed closed %.2f%% of the time (%llu of %llu 1-ms samples) with writes at "
           "%.0f/s offered (half the measured maximum); max_stale_ms %u, max_await_ms %u, "
           "batch_size %u (server default)\n",
           fp.samples ? 100.0 * (double)fp.closed / (double)fp.samples : 0.0,
           (unsigned long long)fp.closed, (unsigned long long)fp.samples, w.rate, cc.max_stale_ms,
           cc.max_await_ms, cc.batch_size);
  }
  out->reader_ops_per_sec_storm = readers_stop(&rd, &hit_storm, &lat);
  if (w.err[0]) {
    snprintf(why, why_len, "latency phase: %s", w.err);
    goto done;
  }
  wait_evicted(sub, base + w.written, 10000, &st);
  atomic_store(&g.track, 0);
  out->offered_writes_per_sec = w.rate;
  out->achieved_writes_per_sec = w.achieved;
  int64_t *lags = malloc((w.written + 1) * sizeof *lags);
  int64_t *walls = malloc((w.written + 1) * sizeof *walls);
  uint64_t nl = 0, nw = 0, lost = 0, neg = 0;
  for (uint64_t i = 0; lags && walls && i < w.written; i++) {
    uint64_t id = (i * w.p) % g.ndocs;
    uint64_t gone = atomic_load_explicit(&g.gone_ns[id], memory_order_relaxed);
    if (!gone) {
      lost++;
      continue;
    }
    int64_t lag = (int64_t)gone - (int64_t)g.ack_ns[id];
    neg += lag < 0;
    lags[nl++] = lag;
    int64_t wl = atomic_load_explicit(&g.wall_ms[id], memory_order_relaxed);
    if (wl)
      walls[nw++] = wl - 1000001;
  }
  qsort(lags, nl, sizeof *lags, cmp_i64);
  qsort(walls, nw, sizeof *walls, cmp_i64);
  if (nl) {
    out->lag_p50_ms = quantile_i64(lags, nl, 0.50) / 1e6;
    out->lag_p99_ms = quantile_i64(lags, nl, 0.99) / 1e6;
    for (int q = 0; q < LAG_QUANTILES; q++)
      out->lag_q_ms[q] = quantile_i64(lags, nl, lag_q[q]) / 1e6;
  }
  if (nw) {
    out->lag_wall_p50_ms = quantile_i64(walls, nw, 0.50);
    out->lag_wall_p99_ms = quantile_i64(walls, nw, 0.99);
  }
  out->lag_keys = (double)w.written;
  out->lag_lost_keys = (double)lost;
  out->lag_negative = (double)neg;
  free(lags);
  free(walls);
  if (lost)
    printf("cdc: %llu of %llu written keys were not seen evicted within 10 s\n",
           (unsigned long long)lost, (unsigned long long)w.written);

  snprintf(out->workload, sizeof out->workload, "cdc");
  snprintf(out->impl, sizeof out->impl, "cdcache");
  out->threads = nr;
  out->entries = o->capacity;
  out->ops_per_sec = out->reader_ops_per_sec_storm;
  out->hit_ratio = hit_storm;
  out->p50_ns = hist_quantile(&lat, 0.50);
  out->p99_ns = hist_quantile(&lat, 0.99);
  out->p999_ns = hist_quantile(&lat, 0.999);
  ran = 1;
done:
  if (sub)
    cdcache_cdc_stop(sub);
  if (h)
    impl_cdcache.close(h);
  if (client)
    mongoc_client_destroy(client);
  server_stop(&srv);
done_nosrv:
  keyset_free(&ks);
  free(g.wall_ms);
  free(g.gone_ns);
  free(g.ack_ns);
  return ran;
}

#else /* !CDCACHE_BENCH_HAVE_CDC */

int cdc_bench_run(const opts_t *o, result_t *out, char *why, size_t why_len)
{
  (void)o;
  (void)out;
  snprintf(why, why_len,
           "this build has no CDC module (cdcache_cdc_start) or no "
           "wire-protocol test server (cdcache-mongo-test-server)");
  return 0;
}

#endif

/* ------------------------------------------------------------ isolation */

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct cdc_msg {
  int ran;
  result_t r;
  char why[256];
} cdc_msg_t;

int cdc_bench_child(const opts_t *o, int fd)
{
  cdc_msg_t m;
  memset(&m, 0, sizeof m);
  result_init(&m.r);
  m.ran = cdc_bench_run(o, &m.r, m.why, sizeof m.why);
  int rc = bench_write_all(fd, &m, sizeof m);
  close(fd);
  return rc == 0 ? 0 : 1;
}

int cdc_bench_isolated(const opts_t *o, result_t *out, char *why, size_t why_len)
{
  int pfd[2];
  if (pipe(pfd) != 0) {
    snprintf(why, why_len, "pipe: %s", strerror(errno));
    return 0;
  }
  char fds[16], secs[32], cap[32], vsz[32], thr[160] = "";
  snprintf(fds, sizeof fds, "%d", pfd[1]);
  snprintf(secs, sizeof secs, "%g", o->seconds);
  snprintf(cap, sizeof cap, "%llu", (unsigned long long)o->capacity);
  snprintf(vsz, sizeof vsz, "%zu", o->value_size);
  for (int i = 0; i < o->nthreads; i++)
    snprintf(thr + strlen(thr), sizeof thr - strlen(thr), "%s%u", i ? "," : "", o->threads[i]);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(why, why_len, "fork: %s", strerror(errno));
    return 0;
  }
  if (pid == 0) {
    close(pfd[0]);
    char *argv[] = {"cdcache-bench",
                    "--cdc-child-fd",
                    fds,
                    "--seconds",
                    secs,
                    "--capacity",
                    cap,
                    "--value-size",
                    vsz,
                    "--threads",
                    thr,
                    o->quiet ? "--quiet" : NULL,
                    NULL};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  close(pfd[1]);
  cdc_msg_t m = {0};
  size_t got = bench_read_all(pfd[0], &m, sizeof m);
  close(pfd[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (got != sizeof m) {
    if (WIFSIGNALED(st))
      snprintf(why, why_len, "the cdc benchmark process died of signal %d (%s)", WTERMSIG(st),
               strsignal(WTERMSIG(st)));
    else
      snprintf(why, why_len, "the cdc benchmark process exited %d without a result",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
  }
  if (!m.ran) {
    snprintf(why, why_len, "%s", m.why);
    return 0;
  }
  *out = m.r;
  return 1;
}
