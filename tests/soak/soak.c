/*
 * cdcache-soak: everything at once, for a long time, with invariants.
 *
 *   cdcache-soak [--seconds N] [--mongo-server PATH] [--seed N] [--verbose]
 *
 * One cache (max_entries and max_bytes set, an allocator hook counting
 * live bytes) with a CDC subscription on soak.c (rule "c:{_id}") against
 * cdcache-mongo-test-server, and at the same time:
 *
 *   putget x2  get / put / delete / invalidate on "k:N" (more keys than
 *              the cache holds: evictions) and "c:N" (also evicted by CDC)
 *   loader x2  cdcache_get_or_load on "c:N" (the loader finds the document
 *              on the primary) and on "g:N" (a computed value, raced by
 *              the putget threads' puts of the same keys)
 *   lease  x1  get_lease, then put_leased or lease_release, on "l:N"
 *   ttl    x1  puts with 20..150 ms TTLs on keys only it writes, and
 *              checks that none is served after its expiry
 *   flusher    cdcache_flush every 700 ms
 *   checker    cdcache_stats / allocator invariants every 50 ms
 *   storm      cdcacheBulk writes (5000 mixed inserts, updates, deletes on
 *              soak.c) and one fault after each, in rotation:
 *              dropConnections, failCommands getMore (resumable),
 *              invalidateStreams, truncateOplog right after a bulk (the
 *              consumer lags: history lost), stall longer than
 *              max_stale_ms; after each it waits for the subscription to
 *              answer again (a fault the subscription does not recover
 *              from within 20 s is an error)
 *
 * Invariants (each check counted):
 *   - every value served (get, get_or_load, get_lease) is one that was
 *     put or loaded for that key: it carries its key, length, sequence
 *     and a checksum over them and its padding;
 *   - every return code is one the header allows for that call in that
 *     situation;
 *   - no TTL entry is served after its expiry (plus one coarse tick);
 *   - entries <= max_entries; bytes_live + bytes_pending_free +
 *     bytes_tables <= max_bytes;
 *   - the allocator's live bytes never exceed max_bytes plus what was
 *     live before the first entry (tables, subscription) plus a fixed
 *     allowance for in-flight fills and placeholders (SOAK_FILL_SLACK);
 *   - after cdcache_close the allocator's live bytes are 0;
 *   - every fault is recovered from.
 * The last line is
 *   soak: ops=N invariants=M faults=F errors=E mem_start=B mem_end=B ...
 * and the exit status is 0 only with errors=0.
 */
#include "harness.h"

#include <cdcache.h>

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DB_NAME "soak"
#define COLL_NAME "c"
#define MAX_ENTRIES 20000u
#define MAX_BYTES (8u << 20)
#define MAX_STALE_MS 3000u
#define C_IDS 10000
#define K_KEYS 60000
#define G_KEYS 5000
#define L_KEYS 5000
#define TTL_KEYS 2048
#define MAX_VAL 2048
/* Bytes that may be live outside the byte bound: the values of fills in
 * flight (copied before they are cached or dropped), placeholders and
 * leases.  Fills in flight are at most one per thread. */
#define SOAK_FILL_SLACK (64u * 1024u)

/* --------------------------------------------------------- settings */

/* Set by main before any thread; read-only after. */
static struct {
  int seconds, verbose;
  uint64_t seed;
  const char *server_path;
  h_server_t ms;
} cfg;

static _Atomic int stop_all; /* main sets it at the end of the run */

/* ------------------------------------------------ counting allocator */

/*
 * The allocator hook: every byte cdcache allocates, counted by what the
 * allocator really charged (malloc_usable_size), in relaxed atomics (any
 * thread, including cdcache's reclaimer thread, calls it).
 */
static _Atomic int64_t mem_live; /* bytes currently allocated */
static _Atomic int64_t mem_peak; /* largest mem_live seen */
static _Atomic uint64_t mem_allocs;

static void *count_malloc(void *ctx, size_t size)
{
  (void)ctx;
  void *p = malloc(size);
  if (p) {
    int64_t n = (int64_t)malloc_usable_size(p);
    int64_t now = atomic_fetch_add_explicit(&mem_live, n, memory_order_relaxed) + n;
    int64_t peak = atomic_load_explicit(&mem_peak, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak_explicit(
                             &mem_peak, &peak, now, memory_order_relaxed, memory_order_relaxed)) {
    }
    atomic_fetch_add_explicit(&mem_allocs, 1, memory_order_relaxed);
  }
  return p;
}

static void count_free(void *ctx, void *ptr, size_t size)
{
  (void)ctx;
  (void)size;
  if (!ptr)
    return;
  atomic_fetch_sub_explicit(&mem_live, (int64_t)malloc_usable_size(ptr), memory_order_relaxed);
  free(ptr);
}

static size_t count_usable(void *ctx, void *ptr, size_t size)
{
  (void)ctx;
  (void)size;
  return malloc_usable_size(ptr);
}

/* ------------------------------------------------------ bookkeeping */

/* Global tallies: relaxed atomics, any thread adds. */
static _Atomic uint64_t n_ops, n_checks, n_errors, n_faults;
static _Atomic int64_t baseline_live = -1; /* set once by main before the workload */

static void count_ops(uint64_t n)
{
  atomic_fetch_add_explicit(&n_ops, n, memory_order_relaxed);
}

static void count_checks(uint64_t n)
{
  atomic_fetch_add_explicit(&n_checks, n, memory_order_relaxed);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
  va_list ap;
  uint64_t n = atomic_fetch_add_explicit(&n_errors, 1, memory_order_relaxed);
  if (n >= 20)
    return; /* counted; the first 20 are shown */
  va_start(ap, fmt);
  fprintf(stderr, "soak: ERROR: ");
  vfprintf(stderr, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized): va_start above
  fprintf(stderr, "\n");
  va_end(ap);
}

static uint64_t xorshift(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t coarse_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------ values */

/*
 * A value: header, the key's bytes, then padding whose every byte derives
 * from seq; check covers all of it.  A value served for the wrong key, cut
 * short, or mixed with another's bytes fails validate().
 */
struct vhdr {
  uint32_t magic;
  uint16_t klen;
  uint16_t pad;
  uint64_t seq;
  uint64_t check;
};
#define VMAGIC 0x50414b53u /* "SKAP" */

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

static size_t make_value(uint8_t *out, const char *key, size_t klen, uint64_t seq, size_t pad)
{
  struct vhdr h = {VMAGIC, (uint16_t)klen, (uint16_t)pad, seq, 0};
  uint8_t *p = out + sizeof h;
  memcpy(p, key, klen);
  for (size_t i = 0; i < pad; i++)
    p[klen + i] = (uint8_t)(seq * 31u + i);
  h.check = fnv(p, klen + pad, fnv(&seq, sizeof seq, 0xcbf29ce484222325ull));
  memcpy(out, &h, sizeof h);
  return sizeof h + klen + pad;
}

static bool validate(const char *where, const char *key, size_t klen, const uint8_t *v, size_t vlen)
{
  struct vhdr h;
  count_checks(1);
  if (vlen < sizeof h) {
    fail("%s: %.*s: value of %zu bytes", where, (int)klen, key, vlen);
    return false;
  }
  memcpy(&h, v, sizeof h);
  const uint8_t *p = v + sizeof h;
  if (h.magic != VMAGIC || h.klen != klen || sizeof h + h.klen + h.pad != vlen ||
      memcmp(p, key, klen) != 0) {
    fail("%s: %.*s: value belongs to another key or is cut (%zu bytes)", where, (int)klen, key,
         vlen);
    return false;
  }
  for (size_t i = 0; i < h.pad; i++)
    if (p[klen + i] != (uint8_t)(h.seq * 31u + i)) {
      fail("%s: %.*s: padding corrupted at %zu", where, (int)klen, key, i);
      return false;
    }
  if (fnv(p, klen + h.pad, fnv(&h.seq, sizeof h.seq, 0xcbf29ce484222325ull)) != h.check) {
    fail("%s: %.*s: checksum", where, (int)klen, key);
    return false;
  }
  return true;
}

/* An allowed return code, or an error. */
static void expect(const char *what, int rc, int ok1, int ok2, int ok3)
{
  count_checks(1);
  if (rc != ok1 && rc != ok2 && rc != ok3)
    fail("%s returned %s (%d)", what, cdcache_strerror(rc), rc);
}

/* ========================================================== workloads */

/* Per-thread state: owned by its thread. */
struct worker {
  pthread_t thread;
  int index;
  cdcache_t *cache;
  uint64_t rng;
  mongoc_client_t *client; /* loader threads */
  mongoc_collection_t *coll;
  /* Operations done: written by the worker only (relaxed), read by main
   * for progress reports. */
  _Atomic uint64_t ops;
  /* loader threads only: get_or_load outcomes (worker-owned; main reads
   * after joining) */
  uint64_t ok, estale, timedout, mongo_err;
};

static void bump(struct worker *w)
{
  atomic_store_explicit(&w->ops, atomic_load_explicit(&w->ops, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

static void *putget_main(void *arg)
{
  struct worker *w = arg;
  uint8_t val[sizeof(struct vhdr) + 64 + MAX_VAL], buf[sizeof val];
  char key[48];
  uint64_t seq = (uint64_t)w->index << 48;
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    uint64_t r = xorshift(&w->rng);
    bool c_key = (r >> 8) % 4 == 0;
    int klen = c_key ? snprintf(key, sizeof key, "c:%d", (int)((r >> 16) % C_IDS))
                     : snprintf(key, sizeof key, "k:%d", (int)((r >> 16) % K_KEYS));
    unsigned op = (unsigned)(r % 100);
    size_t vlen;
    int rc;
    if (op < 50) {
      rc = cdcache_get(w->cache, key, (size_t)klen, buf, sizeof buf, &vlen);
      expect("get", rc, 0, CDCACHE_ENOENT, 0);
      if (rc == 0)
        validate("get", key, (size_t)klen, buf, vlen);
    } else if (op < 85) {
      size_t pad = (size_t)((r >> 40) % MAX_VAL);
      vlen = make_value(val, key, (size_t)klen, ++seq, pad);
      rc = cdcache_put(w->cache, key, (size_t)klen, val, vlen, CDCACHE_TTL_DEFAULT);
      /* ESTALE: failed closed while a fault lasts. */
      expect("put", rc, 0, CDCACHE_ESTALE, 0);
    } else if (op < 95) {
      rc = cdcache_delete(w->cache, key, (size_t)klen);
      expect("delete", rc, 0, CDCACHE_ENOENT, 0);
    } else {
      rc = cdcache_invalidate(w->cache, key, (size_t)klen);
      expect("invalidate", rc, 0, CDCACHE_ENOENT, 0);
    }
    /* A racing put of a g: key, so that get_or_load fills die. */
    if (op % 10 == 0) {
      klen = snprintf(key, sizeof key, "g:%d", (int)((r >> 24) % G_KEYS));
      vlen = make_value(val, key, (size_t)klen, ++seq, 16);
      rc = cdcache_put(w->cache, key, (size_t)klen, val, vlen, CDCACHE_TTL_DEFAULT);
      expect("put g", rc, 0, CDCACHE_ESTALE, 0);
      bump(w);
    }
    bump(w);
    if (r % 256 == 0)
      usleep(100); /* leave CPU to the server and the CDC thread */
  }
  return NULL;
}

#define LOADER_EMONGO 1000

/* Loader of "c:N": the document from the primary, as a value whose seq
 * is its "v" (absent: seq 0, no padding). */
static int load_c(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  struct worker *w = ctx;
  char idtxt[24];
  uint8_t val[sizeof(struct vhdr) + 64 + 256];
  if (klen <= 2 || klen - 2 >= sizeof idtxt)
    return CDCACHE_EINVAL;
  memcpy(idtxt, (const char *)key + 2, klen - 2);
  idtxt[klen - 2] = '\0';
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  BSON_APPEND_INT64(&filter, "_id", strtoll(idtxt, NULL, 10));
  BSON_APPEND_INT64(&opts, "limit", 1);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(w->coll, &filter, &opts, NULL);
  const bson_t *doc;
  bson_error_t err;
  int rc;
  if (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    uint64_t v = 0;
    if (bson_iter_init_find(&it, doc, "v") && BSON_ITER_HOLDS_INT64(&it))
      v = (uint64_t)bson_iter_int64(&it);
    size_t n = make_value(val, key, klen, v, (size_t)(v % 256));
    rc = cdcache_fill_set_value(fill, val, n);
  } else if (mongoc_cursor_error(cur, &err)) {
    rc = LOADER_EMONGO;
  } else {
    size_t n = make_value(val, key, klen, 0, 0);
    rc = cdcache_fill_set_value(fill, val, n);
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  return rc;
}

/* Loader of "g:N": a computed value. */
static int load_g(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  struct worker *w = ctx;
  uint8_t val[sizeof(struct vhdr) + 64 + 512];
  size_t n = make_value(val, key, klen, xorshift(&w->rng), (size_t)(w->rng % 512));
  return cdcache_fill_set_value(fill, val, n);
}

static void *loader_main(void *arg)
{
  struct worker *w = arg;
  uint8_t buf[sizeof(struct vhdr) + 64 + MAX_VAL];
  char key[48];
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    uint64_t r = xorshift(&w->rng);
    bool from_db = r % 3 == 0;
    int klen = from_db ? snprintf(key, sizeof key, "c:%d", (int)((r >> 16) % C_IDS))
                       : snprintf(key, sizeof key, "g:%d", (int)((r >> 16) % G_KEYS));
    size_t vlen;
    int rc = cdcache_get_or_load(w->cache, key, (size_t)klen, from_db ? load_c : load_g, w,
                                 CDCACHE_TTL_DEFAULT, 500, buf, sizeof buf, &vlen);
    /* ESTALE: failed closed, or the fill was killed by a racing write
     * (then the value was still handed out: rc 0). */
    count_checks(1);
    w->ok += rc == 0;
    w->estale += rc == CDCACHE_ESTALE;
    w->timedout += rc == CDCACHE_ETIMEDOUT;
    w->mongo_err += rc == LOADER_EMONGO;
    if (rc == 0)
      validate("get_or_load", key, (size_t)klen, buf, vlen);
    else if (rc != CDCACHE_ESTALE && rc != CDCACHE_ETIMEDOUT && !(from_db && rc == LOADER_EMONGO))
      fail("get_or_load(%s) returned %s (%d)", key, cdcache_strerror(rc), rc);
    bump(w);
  }
  return NULL;
}

static void *lease_main(void *arg)
{
  struct worker *w = arg;
  uint8_t val[sizeof(struct vhdr) + 64 + MAX_VAL], buf[sizeof val];
  char key[48];
  uint64_t seq = 1ull << 60;
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    uint64_t r = xorshift(&w->rng);
    int klen = snprintf(key, sizeof key, "l:%d", (int)((r >> 16) % L_KEYS));
    size_t vlen;
    cdcache_lease_t *lease = NULL;
    int rc = cdcache_get_lease(w->cache, key, (size_t)klen, buf, sizeof buf, &vlen, &lease);
    count_checks(1);
    if (rc == 0) {
      validate("get_lease", key, (size_t)klen, buf, vlen);
      if (lease)
        fail("get_lease hit with a lease");
    } else if (rc == CDCACHE_ENOENT) {
      if (!lease) {
        fail("get_lease miss without a lease");
      } else if (r % 10 < 7) {
        vlen = make_value(val, key, (size_t)klen, ++seq, (size_t)((r >> 40) % 512));
        rc = cdcache_put_leased(w->cache, lease, val, vlen, CDCACHE_TTL_DEFAULT);
        expect("put_leased", rc, 0, CDCACHE_ESTALE, 0);
      } else {
        rc = cdcache_lease_release(w->cache, lease);
        expect("lease_release", rc, 0, 0, 0);
      }
    } else if (rc != CDCACHE_EBUSY) {
      fail("get_lease returned %s (%d)", cdcache_strerror(rc), rc);
    }
    if (r % 256 == 1)
      usleep(100);
    /* Some deletes, so that leases die under their holder. */
    if (r % 16 == 0) {
      rc = cdcache_delete(w->cache, key, (size_t)klen);
      expect("delete l", rc, 0, CDCACHE_ENOENT, 0);
    }
    bump(w);
  }
  return NULL;
}

/* TTL keys "t:N", written by this thread only: once past its expiry a
 * key must never be served. */
static void *ttl_main(void *arg)
{
  struct worker *w = arg;
  static uint64_t expires[TTL_KEYS]; /* ttl thread only: coarse ms of expiry, 0 none */
  uint8_t val[sizeof(struct vhdr) + 64 + 256], buf[sizeof val];
  char key[48];
  uint64_t seq = 2ull << 60;
  struct timespec res;
  clock_getres(CLOCK_MONOTONIC_COARSE, &res);
  uint64_t tick = (uint64_t)res.tv_nsec / 1000000u + 1;
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    uint64_t r = xorshift(&w->rng);
    int n = (int)((r >> 16) % TTL_KEYS);
    int klen = snprintf(key, sizeof key, "t:%d", n);
    size_t vlen;
    if (r % 3 == 0) {
      uint32_t ttl = 20 + (uint32_t)((r >> 32) % 130);
      vlen = make_value(val, key, (size_t)klen, ++seq, (size_t)((r >> 40) % 256));
      int rc = cdcache_put(w->cache, key, (size_t)klen, val, vlen, ttl);
      expect("put ttl", rc, 0, CDCACHE_ESTALE, 0);
      /* The cache's expiry is its clock at the put + ttl: no later than
       * the coarse clock after the put returned + ttl. */
      expires[n] = rc == 0 ? coarse_ms() + ttl : 0;
    } else {
      uint64_t before = coarse_ms();
      int rc = cdcache_get(w->cache, key, (size_t)klen, buf, sizeof buf, &vlen);
      expect("get ttl", rc, 0, CDCACHE_ENOENT, 0);
      if (rc == 0) {
        validate("get ttl", key, (size_t)klen, buf, vlen);
        count_checks(1);
        if (expires[n] && before > expires[n] + tick)
          fail("%s served %" PRIu64 " ms after its expiry", key, before - expires[n]);
      }
    }
    bump(w);
    if (r % 64 == 0)
      usleep(200);
  }
  return NULL;
}

static void *flusher_main(void *arg)
{
  struct worker *w = arg;
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    for (int i = 0; i < 70 && !atomic_load_explicit(&stop_all, memory_order_acquire); i++)
      h_sleep_ms(10);
    if (atomic_load_explicit(&stop_all, memory_order_acquire))
      break; /* leave the end state as the workload made it */
    int rc = cdcache_flush(w->cache);
    expect("flush", rc, 0, 0, 0);
    bump(w);
  }
  return NULL;
}

/* The capacity invariants. */
static void check_capacity(cdcache_t *cache, const char *when)
{
  cdcache_stats_t st = {.struct_size = sizeof st};
  int rc = cdcache_stats(cache, &st);
  expect("stats", rc, 0, 0, 0);
  count_checks(3);
  if (st.entries > MAX_ENTRIES)
    fail("%s: %" PRIu64 " entries > max_entries %u", when, st.entries, MAX_ENTRIES);
  uint64_t held = st.bytes_live + st.bytes_pending_free + st.bytes_tables;
  if (held > MAX_BYTES)
    fail("%s: cache holds %" PRIu64 " bytes > max_bytes %u", when, held, MAX_BYTES);
  int64_t base = atomic_load_explicit(&baseline_live, memory_order_relaxed);
  int64_t live = atomic_load_explicit(&mem_live, memory_order_relaxed);
  /* baseline includes the tables, already part of max_bytes */
  if (base >= 0 && live > base + (int64_t)(MAX_BYTES - st.bytes_tables) + SOAK_FILL_SLACK)
    fail("%s: allocator holds %" PRId64 " bytes > bound %" PRId64, when, live,
         base + (int64_t)(MAX_BYTES - st.bytes_tables) + SOAK_FILL_SLACK);
}

static void *checker_main(void *arg)
{
  struct worker *w = arg;
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    h_sleep_ms(50);
    check_capacity(w->cache, "during the run");
    bump(w);
  }
  return NULL;
}

/* ============================================================== storm */

struct storm {
  pthread_t thread;
  mongoc_client_t *client;
  cdcache_cdc_t *sub;
  uint64_t rng, bulk_writes, by_kind[6];
};

static const char *const fault_names[] = {"dropConnections",
                                          "failCommands getMore",
                                          "invalidateStreams",
                                          "truncateOplog (history lost)",
                                          "stall",
                                          "bulk only"};

static bool storm_cmd(struct storm *s, const char *json, bson_t *reply)
{
  char err[256];
  if (h_admin(s->client, json, reply, err, sizeof err))
    return true;
  fail("storm: %s: %s", json, err);
  return false;
}

/* Waits (up to 20 s) for the subscription to answer after t0_ms. */
static bool recovered(struct storm *s, uint64_t t0_coarse)
{
  uint64_t deadline = h_now_ms() + 20000;
  while (h_now_ms() < deadline) {
    cdcache_cdc_stats_t st = {.struct_size = sizeof st};
    cdcache_cdc_stats(s->sub, &st);
    if (st.state == CDCACHE_CDC_STREAMING && st.last_answer_ms > t0_coarse)
      return true;
    if (atomic_load_explicit(&stop_all, memory_order_acquire))
      return true; /* the run ended first: nothing to judge */
    h_sleep_ms(10);
  }
  cdcache_cdc_stats_t st = {.struct_size = sizeof st};
  cdcache_cdc_stats(s->sub, &st);
  fail("storm: the subscription did not recover within 20 s (state %s, last error %s)",
       cdcache_cdc_state_name(st.state), st.last_error);
  return false;
}

static void *storm_main(void *arg)
{
  struct storm *s = arg;
  char cmd[256];
  int turn = 0;
  while (!atomic_load_explicit(&stop_all, memory_order_acquire)) {
    int kind = turn++ % 6;
    int id0 = (int)(xorshift(&s->rng) % (C_IDS - 1700));
    bson_t reply;
    (void)snprintf(cmd, sizeof cmd,
                   "{\"cdcacheBulk\": \"" COLL_NAME "\", \"db\": \"" DB_NAME "\", \"n\": 5000, "
                   "\"op\": \"mixed\", \"idStart\": %d, \"padBytes\": 64}",
                   id0);
    if (storm_cmd(s, cmd, &reply)) {
      bson_iter_t it;
      if (bson_iter_init_find(&it, &reply, "n") && BSON_ITER_HOLDS_NUMBER(&it))
        s->bulk_writes += (uint64_t)bson_iter_as_int64(&it);
      bson_destroy(&reply);
    }
    uint64_t t0 = coarse_ms();
    bool ok = true;
    switch (kind) {
    case 0:
      ok = storm_cmd(s, "{\"cdcacheFault\": \"dropConnections\"}", NULL);
      break;
    case 1:
      ok = storm_cmd(s,
                     "{\"cdcacheFault\": \"failCommands\", \"commands\": [\"getMore\"], "
                     "\"times\": 2, \"code\": 43}",
                     NULL);
      break;
    case 2:
      ok = storm_cmd(s, "{\"cdcacheFault\": \"invalidateStreams\"}", NULL);
      break;
    case 3:
      /* Right behind a bulk the consumer is still reading: cut it off,
       * discard the oplog, let it resume (286, flush). */
      ok = storm_cmd(s,
                     "{\"cdcacheFault\": \"failCommands\", \"commands\": [\"aggregate\", "
                     "\"getMore\"], \"times\": -1, \"closeConnection\": true}",
                     NULL) &&
           storm_cmd(s, "{\"cdcacheFault\": \"dropConnections\"}", NULL);
      if (ok) {
        h_sleep_ms(100);
        (void)snprintf(cmd, sizeof cmd,
                       "{\"cdcacheBulk\": \"" COLL_NAME "\", \"db\": \"" DB_NAME
                       "\", \"n\": 300, \"op\": \"update\", \"idStart\": %d}",
                       id0);
        ok = storm_cmd(s, cmd, NULL) && storm_cmd(s, "{\"cdcacheFault\": \"truncateOplog\"}", NULL);
      }
      ok = storm_cmd(s, "{\"cdcacheFault\": \"off\"}", NULL) && ok;
      break;
    case 4:
      (void)snprintf(cmd, sizeof cmd, "{\"cdcacheFault\": \"stall\", \"ms\": %u}",
                     MAX_STALE_MS + 500);
      ok = storm_cmd(s, cmd, NULL);
      break;
    default:
      break;
    }
    if (ok && recovered(s, t0)) {
      s->by_kind[kind]++;
      if (kind != 5)
        atomic_fetch_add_explicit(&n_faults, 1, memory_order_relaxed);
    }
    for (int i = 0; i < 30 && !atomic_load_explicit(&stop_all, memory_order_acquire); i++)
      h_sleep_ms(10);
  }
  (void)storm_cmd(s, "{\"cdcacheFault\": \"off\"}", NULL);
  return NULL;
}

/* =============================================================== main */

static void mongoc_log_filter(mongoc_log_level_t level, const char *domain, const char *message,
                              void *ctx)
{
  (void)ctx;
  if (level <= MONGOC_LOG_LEVEL_CRITICAL || (cfg.verbose && level <= MONGOC_LOG_LEVEL_WARNING))
    fprintf(stderr, "soak: libmongoc %s: %s\n", domain, message);
}

static void cache_log(void *ctx, int level, const char *msg)
{
  (void)ctx;
  if (level <= CDCACHE_LOG_ERROR || cfg.verbose)
    fprintf(stderr, "soak: cdcache: %s\n", msg);
}

static long rss_kib(void)
{
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = -1;
  fclose(f);
  return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int parse_args(int argc, char **argv)
{
  const char *server_arg = NULL;
  cfg.seconds = 600;
  cfg.seed = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--verbose") == 0) {
      cfg.verbose = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0) {
      cfg.seconds = atoi(argv[++i]);
      if (cfg.seconds < 1 || cfg.seconds > 86400)
        return 2;
    } else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0) {
      cfg.seed = strtoull(argv[++i], NULL, 10) | 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--mongo-server") == 0) {
      server_arg = argv[++i];
    } else {
      return 2;
    }
  }
  cfg.server_path = h_find_server(server_arg);
  if (!cfg.server_path) {
    fprintf(stderr, "soak: cdcache-mongo-test-server not found (--mongo-server PATH or "
                    "CDCACHE_MONGO_TEST_SERVER)\n");
    return 2;
  }
  return 0;
}

static void final_line(int64_t mem_start, int64_t mem_end)
{
  printf("soak: ops=%" PRIu64 " invariants=%" PRIu64 " faults=%" PRIu64 " errors=%" PRIu64
         " mem_start=%" PRId64 " mem_end=%" PRId64 " mem_peak=%" PRId64 " max_bytes=%u\n",
         atomic_load(&n_ops), atomic_load(&n_checks), atomic_load(&n_faults),
         atomic_load(&n_errors), mem_start, mem_end, atomic_load(&mem_peak), MAX_BYTES);
  fflush(stdout);
}

int main(int argc, char **argv)
{
  if (parse_args(argc, argv) != 0) {
    fprintf(stderr, "usage: cdcache-soak [--seconds N] [--mongo-server PATH] [--seed N] "
                    "[--verbose]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  h_install_cleanup((unsigned)cfg.seconds + 120);
  if (h_server_start(cfg.server_path, 2000000, &cfg.ms) != 0)
    return 1;
  mongoc_init();
  mongoc_log_set_handler(mongoc_log_filter, NULL);

  cdcache_config_t cc;
  cdcache_config_init(&cc);
  cc.max_entries = MAX_ENTRIES;
  cc.max_bytes = MAX_BYTES;
  cc.allocator = (cdcache_allocator_t){count_malloc, count_free, count_usable, NULL};
  cc.log = cache_log;
  cc.fill_timeout_ms = 2000;
  cdcache_t *cache = NULL;
  int rc = cdcache_open(&cc, &cache);
  if (rc != 0) {
    fprintf(stderr, "soak: cdcache_open: %s\n", cdcache_strerror(rc));
    h_server_stop(&cfg.ms);
    return 1;
  }
  cdcache_cdc_rule_t rule = {DB_NAME "." COLL_NAME, "c:{_id}"};
  cdcache_cdc_config_t scfg;
  cdcache_cdc_config_init(&scfg);
  scfg.uri = cfg.ms.uri;
  scfg.db = DB_NAME;
  scfg.coll = COLL_NAME;
  scfg.rules = &rule;
  scfg.n_rules = 1;
  scfg.max_stale_ms = MAX_STALE_MS;
  scfg.backoff_max_ms = 1000;
  cdcache_cdc_t *sub = NULL;
  rc = cdcache_cdc_start(cache, &scfg, &sub);
  if (rc != 0) {
    fprintf(stderr, "soak: cdcache_cdc_start: %s\n", cdcache_strerror(rc));
    cdcache_close(cache);
    h_server_stop(&cfg.ms);
    return 1;
  }
  uint64_t deadline = h_now_ms() + 15000;
  for (;;) {
    cdcache_cdc_stats_t st = {.struct_size = sizeof st};
    cdcache_cdc_stats(sub, &st);
    if (st.state == CDCACHE_CDC_STREAMING && st.last_answer_ms)
      break;
    if (h_now_ms() > deadline) {
      fail("the change stream was not established within 15 s: %s", st.last_error);
      break;
    }
    h_sleep_ms(10);
  }
  int64_t mem_start = atomic_load(&mem_live);
  atomic_store(&baseline_live, mem_start);
  long rss_start = rss_kib();

  /* ---- the workload */
  struct worker w[9];
  void *(*fn[9])(void *) = {putget_main, putget_main,  loader_main,  loader_main, lease_main,
                            ttl_main,    flusher_main, checker_main, NULL};
  const char *names[9] = {"putget", "putget",  "loader",  "loader", "lease",
                          "ttl",    "flusher", "checker", NULL};
  int n_workers = 0;
  memset(w, 0, sizeof w);
  /* cppcheck misreads the initialised array of function pointers. */
  for (int i = 0; fn[i]; i++) { // cppcheck-suppress uninitvar
    w[i].index = i;
    w[i].cache = cache;
    w[i].rng = cfg.seed * 6364136223846793005ull + (uint64_t)i * 1442695040888963407ull + 1;
    if (fn[i] == loader_main) {
      w[i].client = h_client(cfg.ms.uri, 1000, 1000, "cdcache-soak-loader");
      if (!w[i].client)
        break;
      w[i].coll = mongoc_client_get_collection(w[i].client, DB_NAME, COLL_NAME);
    }
    if (pthread_create(&w[i].thread, NULL, fn[i], &w[i]) != 0)
      break;
    n_workers++;
  }
  struct storm storm = {.sub = sub, .rng = cfg.seed * 2654435761u + 7};
  storm.client = h_client(cfg.ms.uri, 30000, 5000, "cdcache-soak-storm");
  bool storm_started = storm.client && pthread_create(&storm.thread, NULL, storm_main, &storm) == 0;
  if (n_workers < 8 || !storm_started)
    fail("could not start every thread");

  uint64_t t_start = h_now_ms(), next_report = t_start + 10000;
  /* Progress: everything counted so far, read with relaxed loads. */
#define OPS_SO_FAR()                                                                               \
  ({                                                                                               \
    uint64_t s_ = atomic_load(&n_ops);                                                             \
    for (int i_ = 0; i_ < n_workers; i_++)                                                         \
      s_ += atomic_load_explicit(&w[i_].ops, memory_order_relaxed);                                \
    s_;                                                                                            \
  })
  while (h_now_ms() - t_start < (uint64_t)cfg.seconds * 1000u) {
    h_sleep_ms(50);
    if (h_now_ms() >= next_report) {
      next_report += 10000;
      fprintf(stderr,
              "soak: %3" PRIu64 " s: ops=%" PRIu64 " invariants=%" PRIu64 " faults=%" PRIu64
              " errors=%" PRIu64 " live=%" PRId64 " B\n",
              (h_now_ms() - t_start) / 1000, OPS_SO_FAR(), atomic_load(&n_checks),
              atomic_load(&n_faults), atomic_load(&n_errors), atomic_load(&mem_live));
    }
  }
  atomic_store_explicit(&stop_all, 1, memory_order_release);
  if (storm_started)
    pthread_join(storm.thread, NULL);
  for (int i = 0; i < n_workers; i++) {
    pthread_join(w[i].thread, NULL);
    count_ops(atomic_load(&w[i].ops));
  }
  count_ops(storm.bulk_writes);

  /* ---- the end state */
  check_capacity(cache, "at the end");
  cdcache_stats_t end_st = {.struct_size = sizeof end_st};
  cdcache_stats(cache, &end_st);
  int64_t mem_end = atomic_load(&mem_live);
  long rss_end = rss_kib();
  cdcache_stats_t cs = {.struct_size = sizeof cs};
  cdcache_stats(cache, &cs);
  cdcache_cdc_stats_t st = {.struct_size = sizeof st};
  cdcache_cdc_stats(sub, &st);
  rc = cdcache_cdc_stop(sub);
  expect("cdc_stop", rc, 0, 0, 0);
  rc = cdcache_close(cache);
  expect("close", rc, 0, 0, 0);
  int64_t mem_after_close = atomic_load(&mem_live);
  count_checks(1);
  if (mem_after_close != 0)
    fail("%" PRId64 " bytes still allocated after cdcache_close", mem_after_close);
  for (int i = 0; i < n_workers; i++)
    if (w[i].client) {
      mongoc_collection_destroy(w[i].coll);
      mongoc_client_destroy(w[i].client);
    }
  if (storm.client)
    mongoc_client_destroy(storm.client);
  mongoc_cleanup();
  int ms_status = h_server_stop(&cfg.ms);

  double secs = (double)(h_now_ms() - t_start) / 1000.0;
  printf("soak: %.1f s; threads:", secs);
  for (int i = 0; i < n_workers; i++)
    printf(" %s=%" PRIu64, names[i], atomic_load(&w[i].ops));
  printf("\n");
  for (int i = 0; i < n_workers; i++)
    if (fn[i] == loader_main)
      printf("soak: loader %d: ok=%" PRIu64 " failed_closed_or_killed=%" PRIu64
             " timed_out=%" PRIu64 " mongo_errors=%" PRIu64 "\n",
             i, w[i].ok, w[i].estale, w[i].timedout, w[i].mongo_err);
  printf("soak: at the end: entries=%" PRIu64 " bytes_live=%" PRIu64 " pending_free=%" PRIu64
         " tables=%" PRIu64 "\n",
         end_st.entries, end_st.bytes_live, end_st.bytes_pending_free, end_st.bytes_tables);
  printf("soak: cache: hits=%" PRIu64 " misses=%" PRIu64 " puts=%" PRIu64 " evictions=%" PRIu64
         " expirations=%" PRIu64 " deletes=%" PRIu64 " invalidations=%" PRIu64 " flushes=%" PRIu64
         " stale_fills_rejected=%" PRIu64 " loads=%" PRIu64 " load_waits=%" PRIu64 "\n",
         cs.hits, cs.misses, cs.puts, cs.evictions, cs.expirations, cs.deletes, cs.invalidations,
         cs.flushes, cs.stale_fills_rejected, cs.loads, cs.load_waits);
  printf("soak: cdc: events=%" PRIu64 " keys=%" PRIu64 " reconnects=%" PRIu64 " lag p50=%" PRIu64
         "ms p99=%" PRIu64 "ms; flushes",
         st.events, st.keys_evicted, st.reconnects, st.lag_p50_ms, st.lag_p99_ms);
  for (int k = 0; k < CDCACHE_CDC_FLUSH_REASONS; k++)
    printf(" %s=%" PRIu64, cdcache_cdc_flush_reason_name(k), cdcache_cdc_flush_count(&st, k));
  printf("\n");
  printf("soak: storm: bulk writes=%" PRIu64 "; survived", storm.bulk_writes);
  for (int k = 0; k < 6; k++)
    printf(" [%s]=%" PRIu64, fault_names[k], storm.by_kind[k]);
  printf("\n");
  printf("soak: memory (allocator hook, usable bytes): start=%" PRId64 " end=%" PRId64
         " peak=%" PRId64 " after close=%" PRId64 "; bound: max_bytes %u + %" PRId64
         " outside the cache's byte account + %u fill slack; allocations=%" PRIu64
         "; RSS %ld -> %ld KiB%s\n",
         mem_start, mem_end, atomic_load(&mem_peak), mem_after_close, MAX_BYTES,
         mem_start - (int64_t)cs.bytes_tables, SOAK_FILL_SLACK, atomic_load(&mem_allocs), rss_start,
         rss_end,
#ifdef CDCACHE_SANITIZED
         " (sanitizer build: RSS not meaningful)"
#else
         ""
#endif
  );
  if (!(ms_status >= 0 && WIFEXITED(ms_status) && WEXITSTATUS(ms_status) == 0))
    fail("the test server did not exit cleanly (status 0x%x)", (unsigned)ms_status);
  if (atomic_load(&n_faults) == 0 && cfg.seconds >= 10)
    fail("no fault was injected and survived");
  final_line(mem_start, mem_end);
  return atomic_load(&n_errors) == 0 ? 0 : 1;
}
