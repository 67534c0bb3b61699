/*
 * fuzz_api: the public cache API driven by a byte stream of operations,
 * checked against a model after every call.
 *
 * Input layout: 8 config bytes, then operations (an opcode byte and its
 * argument bytes; a missing byte reads as 0).  The cache is single-shard
 * (capacity is exact), tiny (1..8 entries, optionally a byte budget of a
 * few hundred bytes), with one of the three policies, small key and value
 * limits (so E2BIG paths are hit), an injected clock the stream advances,
 * and an allocator hook the stream can make fail.
 *
 * The model.  Per key: the last value cached, its expiry, and whether the
 * entry is certainly there (PRESENT), certainly not (ABSENT), or may have
 * been evicted (MAYBE: CLOCK order is not modelled, so which entry goes is
 * not predicted; what may go is).  It checks what must hold:
 *   - a get returns exactly the last value cached for the key while it is
 *     there; never a value not put for that key, an expired one, or one
 *     deleted, invalidated or flushed since; PRESENT entries must hit;
 *   - capacity: a put (or fill) must succeed when the entries the policy
 *     cannot remove leave room, must fail with CDCACHE_EFULL when they do
 *     not, nothing is evicted when there was room, noeviction never
 *     evicts, volatile-lru never evicts an entry without a TTL, and
 *     entries <= max_entries, bytes_live <= the live byte budget;
 *   - fills: a loader's value goes to the caller; it is cached unless the
 *     key was put, deleted, invalidated or flushed during the load; a
 *     leased put after such a write returns CDCACHE_ESTALE and caches
 *     nothing; single flight (EBUSY) and lease takeover after
 *     fill_timeout_ms;
 *   - CDCACHE_ENOMEM only when the hook failed an allocation during the
 *     call, and then nothing changed;
 *   - stats: every counter the model can know is exact (hits + misses ==
 *     lookups, puts, deletes, invalidations, flushes, loads, load waits,
 *     stale fills), entries and bytes_live within the model's bounds;
 *   - after close, the allocator hook holds 0 bytes, and every free
 *     passed the size that was asked of malloc.
 * The model reads cdcache's private layout for the byte budget (entry
 * header size, the handle's size): it lives in the same tree.
 */
#include "cache.h" /* sizeof(struct cdcache), struct cdcache__entry, struct cdcache__shard */
#include "cdcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, "fuzz_api: model violation at op %u (line %d): ", g.opno, __LINE__);           \
    fprintf(stderr, __VA_ARGS__);                                                                  \
    fputc('\n', stderr);                                                                           \
    abort();                                                                                       \
  } while (0)
#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      FAIL(__VA_ARGS__);                                                                           \
  } while (0)

#define ENTRY_HDR offsetof(struct cdcache__entry, data)
_Static_assert(offsetof(struct cdcache__entry, data) == 40,
               "entry header changed: update the model");

/* ------------------------------------------------------------ allocator */

/*
 * Every block carries a 16-byte header (magic, size) just before it.  The
 * hook returns memory aligned to 16 bytes and deliberately NOT to 32 or
 * 64: that is all malloc (alignof(max_align_t)) promises, and all the
 * allocator hook's contract can be taken to promise (regression input
 * alloc-align16-overaligned-structs).
 */
#define HDR 16u
#define MAGIC 0xC0DECAC4EULL

struct alloc_state {
  _Atomic uint64_t bytes, count;
  _Atomic int64_t fail_countdown; /* > 0: the allocation that takes it to 0 fails */
  _Atomic bool fail_all;          /* every allocation fails */
  _Atomic uint64_t failures;      /* allocations failed so far */
  bool round16;                   /* usable_size rounds up to 16 */
};
static struct alloc_state A;
static const size_t g_skew = 48; /* user pointer = 64-aligned base + skew */

static void *h_malloc(void *ctx, size_t size)
{
  struct alloc_state *a = ctx;
  if (atomic_load(&a->fail_all)) {
    atomic_fetch_add(&a->failures, 1);
    return NULL;
  }
  if (atomic_load(&a->fail_countdown) > 0 && atomic_fetch_sub(&a->fail_countdown, 1) == 1) {
    atomic_fetch_add(&a->failures, 1);
    return NULL;
  }
  size_t total = (64 + size + 63) & ~(size_t)63;
  unsigned char *base = aligned_alloc(64, total);
  if (base == NULL)
    return NULL;
  unsigned char *p = base + g_skew;
  uint64_t h[2] = {MAGIC, size};
  memcpy(p - HDR, h, sizeof h);
  atomic_fetch_add(&a->bytes, size);
  atomic_fetch_add(&a->count, 1);
  return p;
}

static void h_free(void *ctx, void *ptr, size_t size)
{
  struct alloc_state *a = ctx;
  if (ptr == NULL)
    return;
  unsigned char *p = ptr;
  uint64_t h[2];
  memcpy(h, p - HDR, sizeof h);
  if (h[0] != MAGIC || h[1] != size) {
    fprintf(stderr, "fuzz_api: free of %p with size %zu; malloc was asked %llu (magic %llx)\n", ptr,
            size, (unsigned long long)h[1], (unsigned long long)h[0]);
    abort();
  }
  h[0] = 0;
  memcpy(p - HDR, h, sizeof h);
  atomic_fetch_sub(&a->bytes, size);
  atomic_fetch_sub(&a->count, 1);
  free(p - g_skew);
}

static size_t h_usable(void *ctx, void *ptr, size_t size)
{
  (void)ptr;
  struct alloc_state *a = ctx;
  return a->round16 ? (size + 15) & ~(size_t)15 : size;
}

/* --------------------------------------------------------------- input */

struct input {
  const uint8_t *p;
  size_t n, i;
};
static uint8_t rd(struct input *in)
{
  return in->i < in->n ? in->p[in->i++] : 0;
}
static bool more(const struct input *in)
{
  return in->i < in->n;
}

/* --------------------------------------------------------------- model */

enum { ABSENT = 0, PRESENT = 1, MAYBE = 2 };
enum { PH_NONE = 0, PH_LEASE = 1, PH_LOAD = 2 };

#define NIDX 8
#define MAXK 16 /* max_key_len is 1..MAXK */
#define MAXV 48 /* max_value_len is 0..MAXV */
#define NKEYS (NIDX * MAXK)
#define NLEASES 4

struct mkey {
  int state;
  uint8_t val[MAXV];
  size_t vlen;
  bool ttl;
  uint64_t exp;
  uint64_t charge;
  int ph; /* PH_*: a placeholder linked under the key */
};

struct mlease {
  bool used;
  cdcache_lease_t *lease;
  int key;
  uint64_t started;
  bool dead; /* its placeholder was unlinked */
};

struct expect {
  uint64_t hits, misses, puts, deletes, invalidations, flushes, stale, loads, waits;
};

static struct {
  cdcache_t *c;
  cdcache_config_t cfg;
  uint64_t now;
  uint64_t cap_e, cap_b;
  int policy;
  uint32_t max_k, max_v, ttl_default;
  struct mkey k[NKEYS];
  struct mlease l[NLEASES];
  struct expect x;
  uint64_t evictions, expirations; /* last seen */
  uint32_t seq;
  unsigned opno;
  int depth;
  /* The load in flight (one at most: loaders do not nest get_or_load). */
  int load_key;
  bool load_dead;
  uint64_t load_started; /* clock when the load's placeholder was linked */
  struct input *in;
} g;

static uint64_t clock_fn(void *ctx)
{
  (void)ctx;
  return g.now;
}

static uint64_t usable(uint64_t n)
{
  return A.round16 ? (n + 15) & ~(uint64_t)15 : n;
}
static uint64_t val_charge(int ki, size_t vlen, bool ttl)
{
  return usable(ENTRY_HDR + (ttl ? 8 : 0) + (size_t)(ki / NIDX + 1) + vlen);
}
/* A placeholder carries its fill's own allocation (fill and key copy). */
static uint64_t ph_charge(int ki)
{
  size_t klen = (size_t)(ki / NIDX + 1);
  return usable(ENTRY_HDR + sizeof(uintptr_t) + klen) +
         usable(sizeof(struct cdcache_fill_key) + klen);
}

/* Key ki: index ki % NIDX, length ki / NIDX + 1, bytes derived from both. */
static size_t key_bytes(int ki, uint8_t *out)
{
  size_t len = (size_t)(ki / NIDX) + 1;
  for (size_t i = 0; i < len; i++)
    out[i] = (uint8_t)('a' + ki % NIDX);
  out[0] = (uint8_t)('A' + ki % NIDX);
  return len;
}

static bool expired(const struct mkey *m)
{
  return m->ttl && g.now >= m->exp;
}
static bool readable(const struct mkey *m)
{
  return m->state != ABSENT && !expired(m);
}

static void make_value(uint8_t *v, size_t n, uint32_t tag)
{
  for (size_t i = 0; i < n; i++)
    v[i] = (uint8_t)(tag * 131u + i * 7u + (tag >> 8));
}

static bool evictable(const struct mkey *m)
{
  switch (g.policy) {
  case CDCACHE_ALLKEYS_LRU:
  case CDCACHE_ALLKEYS_S3FIFO:
    return true;
  case CDCACHE_VOLATILE_LRU:
  case CDCACHE_VOLATILE_S3FIFO:
    return m->ttl;
  default:
    return expired(m); /* noeviction: only expired entries may be reclaimed */
  }
}

/* Bounds of what installing key ki with charge cb meets (the key's own
 * old entry or placeholder is replaced, so it never counts). */
struct capq {
  bool over_hi;    /* the shard may be over capacity: something may be removed */
  bool over_lo;    /* it certainly is */
  bool must_efull; /* even after removing all the policy may remove */
  bool may_efull;
};
/* add_e: entries the install adds (1 for a value, 0 for a placeholder,
 * which counts against the byte budget only). */
static struct capq capacity_n(int ki, uint64_t cb, uint64_t add_e)
{
  uint64_t e_lo = 0, e_hi = 0, b_lo = 0, b_hi = 0, fe_lo = 0, fe_hi = 0, fb_lo = 0, fb_hi = 0;
  for (int i = 0; i < NKEYS; i++) {
    const struct mkey *m = &g.k[i];
    if (i == ki)
      continue;
    if (m->ph != PH_NONE) {
      uint64_t pc = ph_charge(i);
      b_lo += pc, b_hi += pc, fb_lo += pc, fb_hi += pc;
    }
    if (m->state == ABSENT)
      continue;
    bool sure = m->state == PRESENT;
    e_hi++, b_hi += m->charge;
    if (sure)
      e_lo++, b_lo += m->charge;
    if (!evictable(m)) {
      fe_hi++, fb_hi += m->charge;
      if (sure)
        fe_lo++, fb_lo += m->charge;
    }
  }
  struct capq q;
  q.over_hi = e_hi + add_e > g.cap_e || (g.cap_b && b_hi + cb > g.cap_b);
  q.over_lo = e_lo + add_e > g.cap_e || (g.cap_b && b_lo + cb > g.cap_b);
  q.must_efull = fe_lo + add_e > g.cap_e || (g.cap_b && fb_lo + cb > g.cap_b);
  q.may_efull = fe_hi + add_e > g.cap_e || (g.cap_b && fb_hi + cb > g.cap_b);
  if (g.policy == CDCACHE_NOEVICTION) {
    /* Expired entries are reclaimed only as far as the bounded sweep
     * reaches: EFULL may come whenever the shard is over before it. */
    q.may_efull = q.may_efull || q.over_hi;
  }
  return q;
}

static struct capq capacity(int ki, uint64_t cb)
{
  return capacity_n(ki, cb, 1);
}

/* After an install that may have removed entries: whatever the policy
 * could remove may be gone. */
static void may_have_removed(int ki)
{
  for (int i = 0; i < NKEYS; i++)
    if (i != ki && g.k[i].state == PRESENT && evictable(&g.k[i]))
      g.k[i].state = MAYBE;
}
/* Any write to the shard may sweep expired entries. */
static void may_have_swept(void)
{
  for (int i = 0; i < NKEYS; i++)
    if (g.k[i].state == PRESENT && expired(&g.k[i]))
      g.k[i].state = MAYBE;
}

static void read_stats(cdcache_stats_t *st)
{
  memset(st, 0, sizeof *st);
  st->struct_size = sizeof *st;
  CHECK(cdcache_stats(g.c, st) == 0, "stats failed");
}

static void check_stats(void)
{
  cdcache_stats_t st;
  read_stats(&st);
  CHECK(st.hits == g.x.hits, "hits %llu, model %llu", (unsigned long long)st.hits,
        (unsigned long long)g.x.hits);
  CHECK(st.misses == g.x.misses, "misses %llu, model %llu", (unsigned long long)st.misses,
        (unsigned long long)g.x.misses);
  CHECK(st.puts == g.x.puts, "puts %llu, model %llu", (unsigned long long)st.puts,
        (unsigned long long)g.x.puts);
  CHECK(st.deletes == g.x.deletes, "deletes %llu, model %llu", (unsigned long long)st.deletes,
        (unsigned long long)g.x.deletes);
  CHECK(st.invalidations == g.x.invalidations, "invalidations %llu, model %llu",
        (unsigned long long)st.invalidations, (unsigned long long)g.x.invalidations);
  CHECK(st.flushes == g.x.flushes, "flushes");
  CHECK(st.stale_fills_rejected == g.x.stale, "stale_fills_rejected %llu, model %llu",
        (unsigned long long)st.stale_fills_rejected, (unsigned long long)g.x.stale);
  CHECK(st.loads == g.x.loads, "loads %llu, model %llu", (unsigned long long)st.loads,
        (unsigned long long)g.x.loads);
  CHECK(st.load_waits == g.x.waits, "load_waits");
  CHECK(st.evictions >= g.evictions && st.expirations >= g.expirations, "counters went back");
  if (g.policy == CDCACHE_NOEVICTION)
    CHECK(st.evictions == 0, "noeviction evicted %llu entries", (unsigned long long)st.evictions);
  g.evictions = st.evictions;
  g.expirations = st.expirations;
  CHECK(st.shards == 1, "shards");

  uint64_t lo = 0, hi = 0, blo = 0, bhi = 0;
  for (int i = 0; i < NKEYS; i++) {
    const struct mkey *m = &g.k[i];
    if (m->ph != PH_NONE) {
      blo += ph_charge(i);
      bhi += ph_charge(i);
    }
    if (m->state == PRESENT)
      lo++, blo += m->charge;
    if (m->state != ABSENT)
      hi++, bhi += m->charge;
  }
  CHECK(st.entries <= g.cap_e, "entries %llu > max_entries %llu", (unsigned long long)st.entries,
        (unsigned long long)g.cap_e);
  CHECK(st.entries >= lo && st.entries <= hi, "entries %llu, model between %llu and %llu",
        (unsigned long long)st.entries, (unsigned long long)lo, (unsigned long long)hi);
  CHECK(st.bytes_live >= blo && st.bytes_live <= bhi,
        "bytes_live %llu, model between %llu and %llu", (unsigned long long)st.bytes_live,
        (unsigned long long)blo, (unsigned long long)bhi);
  if (g.cap_b) {
    /* Placeholders are never refused, so they may overshoot on their own. */
    uint64_t ph = 0;
    for (int i = 0; i < NKEYS; i++)
      if (g.k[i].ph != PH_NONE)
        ph += ph_charge(i);
    CHECK(st.bytes_live <= g.cap_b + ph, "bytes_live %llu > live budget %llu",
          (unsigned long long)st.bytes_live, (unsigned long long)g.cap_b);
  }
  /* The count settles what MAYBE entries are. */
  if (lo != hi && (st.entries == lo || st.entries == hi))
    for (int i = 0; i < NKEYS; i++)
      if (g.k[i].state == MAYBE)
        g.k[i].state = st.entries == lo ? ABSENT : PRESENT;
}

/* Checks a value-returning call's outcome against key ki's model.  hit is
 * whether the call served from the cache (rc 0 / ERANGE). */
static void check_read(int ki, int rc, const uint8_t *buf, size_t cap, size_t vlen,
                       const char *what)
{
  struct mkey *m = &g.k[ki];
  if (rc == 0 || rc == CDCACHE_ERANGE) {
    CHECK(readable(m), "%s of key %d hit (state %d, expired %d), model has no live value", what, ki,
          m->state, expired(m));
    CHECK(vlen == m->vlen, "%s of key %d: length %zu, last put %zu", what, ki, vlen, m->vlen);
    if (rc == 0) {
      CHECK(cap >= vlen, "%s: rc 0 with cap %zu < %zu", what, cap, vlen);
      CHECK(vlen == 0 || memcmp(buf, m->val, vlen) == 0, "%s of key %d: not the last value put",
            what, ki);
    } else {
      CHECK(cap < vlen, "%s: ERANGE with cap %zu >= %zu", what, cap, vlen);
    }
    m->state = PRESENT;
  } else {
    CHECK(rc == CDCACHE_ENOENT, "%s: unexpected rc %d", what, rc);
    CHECK(!(readable(m) && m->state == PRESENT), "%s of key %d missed a live PRESENT entry", what,
          ki);
    if (m->state == MAYBE && !expired(m))
      m->state = ABSENT; /* it was evicted */
  }
}

/* Key from a selector byte: the index, and a length class that reaches
 * max_key_len exactly, one past it (E2BIG) and 0 (EINVAL). */
static int pick_key(uint8_t b, size_t *klen, uint8_t *kb)
{
  int idx = b % NIDX;
  unsigned cls = b / NIDX; /* 0..31 */
  size_t len;
  if (cls == 31)
    len = 0;
  else if (cls >= 28)
    len = g.max_k + 1;
  else if (cls >= 24)
    len = g.max_k;
  else
    len = 1 + cls % (g.max_k < 3 ? g.max_k : 3);
  *klen = len;
  if (len == 0 || len > g.max_k) {
    memset(kb, 'A' + idx, len);
    return -1;
  }
  int ki = (int)(len - 1) * NIDX + idx;
  key_bytes(ki, kb);
  return ki;
}
static int key_error(size_t klen)
{
  return klen == 0 ? CDCACHE_EINVAL : CDCACHE_E2BIG;
}

static uint32_t pick_ttl(uint8_t b, bool *has_ttl)
{
  uint32_t t;
  switch (b % 4) {
  case 0:
    t = CDCACHE_TTL_DEFAULT;
    *has_ttl = g.ttl_default != 0;
    return t;
  case 1:
    *has_ttl = false;
    return CDCACHE_TTL_NONE;
  default:
    *has_ttl = true;
    return 1 + b / 4 % 40;
  }
}
static uint64_t ttl_ms(uint32_t t)
{
  return t == CDCACHE_TTL_DEFAULT ? g.ttl_default : t;
}

static size_t pick_vlen(uint8_t b)
{
  if (b >= 0xf0)
    return g.max_v + 1 + b % 4; /* E2BIG */
  return b % (g.max_v + 1);
}

static size_t pick_cap(uint8_t b)
{
  return (b & 1) ? 256 : (size_t)(b >> 1) % 6;
}

/* --------------------------------------------------- lease bookkeeping */

static void lease_killed_for_key(int ki)
{
  if (g.k[ki].ph == PH_LEASE) {
    for (int i = 0; i < NLEASES; i++)
      if (g.l[i].used && g.l[i].key == ki && !g.l[i].dead)
        g.l[i].dead = true;
  } else if (g.k[ki].ph == PH_LOAD) {
    g.load_dead = true;
  }
  g.k[ki].ph = PH_NONE;
}

/* A lease placeholder under ki that has passed fill_timeout_ms is taken
 * over by the next fill. */
static bool lease_timed_out(int ki)
{
  for (int i = 0; i < NLEASES; i++)
    if (g.l[i].used && g.l[i].key == ki && !g.l[i].dead)
      return g.now - g.l[i].started >= g.cfg.fill_timeout_ms;
  return false;
}

/* A load (get_or_load's fill) past fill_timeout_ms is taken over like a
 * lease (issue 8): its value is then not cached. */
static bool load_timed_out(void)
{
  return g.now - g.load_started >= g.cfg.fill_timeout_ms;
}

static bool trace_on;
#define TRACE(...)                                                                                 \
  do {                                                                                             \
    if (trace_on)                                                                                  \
      fprintf(stderr, __VA_ARGS__);                                                                \
  } while (0)

/* ------------------------------------------------------------ the ops */

enum {
  OP_PUT,
  OP_GET,
  OP_DELETE,
  OP_INVALIDATE,
  OP_FLUSH,
  OP_GET_LEASE,
  OP_PUT_LEASED,
  OP_LEASE_RELEASE,
  OP_GET_OR_LOAD,
  OP_ADVANCE,
  OP_FAIL_ALLOC,
  OP_PUT_BAD,
  OP__COUNT
};

static void do_op(struct input *in);

/* Completes an install (put, fill, leased put) of ki, given the result. */
static void after_install(int ki, int rc, struct capq q, uint64_t fails_before, const uint8_t *val,
                          size_t vlen, bool has_ttl, uint64_t ttl, const char *what)
{
  bool failed_alloc = atomic_load(&A.failures) != fails_before;
  if (rc == 0) {
    CHECK(!q.must_efull, "%s of key %d succeeded though the policy cannot make room", what, ki);
    g.x.puts++;
    if (q.over_hi)
      may_have_removed(ki);
    may_have_swept();
    struct mkey *m = &g.k[ki];
    if (m->ph != PH_NONE)
      lease_killed_for_key(ki);
    m->state = PRESENT;
    memcpy(m->val, val, vlen);
    m->vlen = vlen;
    m->ttl = has_ttl;
    m->exp = g.now + ttl;
    m->charge = val_charge(ki, vlen, has_ttl);
    cdcache_stats_t st;
    read_stats(&st);
    if (!q.over_hi)
      CHECK(st.evictions == g.evictions, "%s of key %d evicted with room to spare", what, ki);
    else if (q.over_lo && g.policy != CDCACHE_NOEVICTION)
      CHECK(st.evictions + st.expirations > g.evictions + g.expirations,
            "%s of key %d: over capacity and nothing removed", what, ki);
    g.evictions = st.evictions;
    g.expirations = st.expirations;
  } else if (rc == CDCACHE_EFULL) {
    CHECK(q.may_efull, "%s of key %d: EFULL with room (policy %d)", what, ki, g.policy);
    cdcache_stats_t st;
    read_stats(&st);
    /* "A failing call changes nothing": no live entry may have gone
     * (regression input: efull-after-evicting). */
    CHECK(st.evictions == g.evictions, "%s of key %d: EFULL after evicting %llu entries", what, ki,
          (unsigned long long)(st.evictions - g.evictions));
    if (q.over_hi)
      may_have_removed(ki);
    may_have_swept();
    g.evictions = st.evictions;
    g.expirations = st.expirations;
  } else if (rc == CDCACHE_ENOMEM) {
    CHECK(failed_alloc, "%s: ENOMEM with no failed allocation", what);
  } else {
    FAIL("%s of key %d: unexpected rc %d", what, ki, rc);
  }
}

/*
 * A fill (lease or load) first links a placeholder, which needs room in
 * the byte budget like a value.  q was computed before the call.  EFULL:
 * nothing removed but swept expired entries; success: the policy may have
 * made room.  Keeps the eviction counters in step.
 */
static void placeholder_outcome(int ki, struct capq q, bool efull, const char *what)
{
  cdcache_stats_t st;
  read_stats(&st);
  if (efull) {
    CHECK(q.may_efull, "%s of key %d: EFULL with room for its placeholder", what, ki);
    CHECK(st.evictions == g.evictions, "%s of key %d: EFULL after evicting", what, ki);
    may_have_swept();
  } else if (q.over_hi) {
    may_have_removed(ki);
    may_have_swept();
  } else {
    CHECK(st.evictions == g.evictions, "%s of key %d: evicted with room to spare", what, ki);
  }
  g.evictions = st.evictions;
  g.expirations = st.expirations;
}

static void op_put(struct input *in, bool bad)
{
  uint8_t kb[MAXK + 2];
  size_t klen;
  int ki = pick_key(rd(in), &klen, kb);
  size_t vlen = pick_vlen(rd(in));
  bool has_ttl;
  uint32_t t = pick_ttl(rd(in), &has_ttl);
  uint8_t val[MAXV + 8];
  uint32_t tag = ++g.seq;
  make_value(val, sizeof val, tag);
  if (bad) { /* NULL value with a length: EINVAL, nothing changes */
    int rc = cdcache_put(g.c, kb, klen, NULL, vlen == 0 ? 1 : vlen, t);
    CHECK(rc == (ki < 0 ? key_error(klen) : CDCACHE_EINVAL), "put(NULL value) rc %d", rc);
    return;
  }
  uint64_t fb = atomic_load(&A.failures);
  int rc = cdcache_put(g.c, kb, klen, val, vlen, t);
  TRACE("  put key %d klen %zu vlen %zu ttl %u -> %d\n", ki, klen, vlen, t, rc);
  if (ki < 0) {
    CHECK(rc == key_error(klen), "put with klen %zu: rc %d", klen, rc);
    return;
  }
  /* A put of a valid key that fails (value too long, no room, no memory)
   * still kills a fill of the key in flight, which read an older value:
   * its placeholder is unlinked. */
  if (vlen > g.max_v) {
    CHECK(rc == CDCACHE_E2BIG, "put with vlen %zu > %u: rc %d", vlen, g.max_v, rc);
    if (g.k[ki].ph != PH_NONE)
      lease_killed_for_key(ki);
    return;
  }
  struct capq q = capacity(ki, val_charge(ki, vlen, has_ttl));
  after_install(ki, rc, q, fb, val, vlen, has_ttl, ttl_ms(t), "put");
  if (rc != 0 && g.k[ki].ph != PH_NONE)
    lease_killed_for_key(ki);
}

static void op_get(struct input *in)
{
  uint8_t kb[MAXK + 2];
  size_t klen;
  int ki = pick_key(rd(in), &klen, kb);
  size_t cap = pick_cap(rd(in));
  uint8_t buf[256];
  size_t vlen = 12345;
  int rc = cdcache_get(g.c, kb, klen, cap ? buf : NULL, cap, &vlen);
  TRACE("  get key %d cap %zu -> %d (vlen %zu)\n", ki, cap, rc, vlen);
  if (ki < 0) {
    CHECK(rc == key_error(klen), "get with klen %zu: rc %d", klen, rc);
    return;
  }
  if (rc == CDCACHE_ENOENT)
    g.x.misses++;
  else
    g.x.hits++;
  check_read(ki, rc, buf, cap, vlen, "get");
}

static void op_remove(struct input *in, bool inval)
{
  uint8_t kb[MAXK + 2];
  size_t klen;
  int ki = pick_key(rd(in), &klen, kb);
  int rc = inval ? cdcache_invalidate(g.c, kb, klen) : cdcache_delete(g.c, kb, klen);
  TRACE("  %s key %d -> %d\n", inval ? "invalidate" : "delete", ki, rc);
  if (ki < 0) {
    CHECK(rc == key_error(klen), "delete with klen %zu: rc %d", klen, rc);
    return;
  }
  struct mkey *m = &g.k[ki];
  if (m->state == PRESENT || m->ph != PH_NONE)
    CHECK(rc == 0, "delete of key %d (state %d, ph %d): rc %d", ki, m->state, m->ph, rc);
  else if (m->state == ABSENT)
    CHECK(rc == CDCACHE_ENOENT, "delete of absent key %d: rc %d", ki, rc);
  else
    CHECK(rc == 0 || rc == CDCACHE_ENOENT, "delete: rc %d", rc);
  if (rc == 0)
    *(inval ? &g.x.invalidations : &g.x.deletes) += 1;
  m->state = ABSENT;
  lease_killed_for_key(ki);
}

static void op_flush(void)
{
  CHECK(cdcache_flush(g.c) == 0, "flush failed");
  TRACE("  flush\n");
  g.x.flushes++;
  for (int i = 0; i < NKEYS; i++) {
    g.k[i].state = ABSENT;
    lease_killed_for_key(i);
  }
}

static void op_get_lease(struct input *in)
{
  uint8_t kb[MAXK + 2];
  size_t klen;
  int ki = pick_key(rd(in), &klen, kb);
  size_t cap = pick_cap(rd(in));
  uint8_t buf[256];
  size_t vlen = 0;
  cdcache_lease_t *lease = (cdcache_lease_t *)&vlen; /* must be set to NULL or a lease */
  uint64_t fb = atomic_load(&A.failures);
  struct capq pq = ki >= 0 ? capacity_n(ki, ph_charge(ki), 0) : (struct capq){0};
  int rc = cdcache_get_lease(g.c, kb, klen, cap ? buf : NULL, cap, &vlen, &lease);
  TRACE("  get_lease key %d cap %zu -> %d lease %p\n", ki, cap, rc, (void *)lease);
  if (ki < 0) {
    CHECK(rc == key_error(klen) && lease == NULL, "get_lease with klen %zu: rc %d", klen, rc);
    return;
  }
  struct mkey *m = &g.k[ki];
  if (rc == 0 || rc == CDCACHE_ERANGE) {
    g.x.hits++;
    CHECK(lease == NULL, "lease handed out on a hit");
    check_read(ki, rc, buf, cap, vlen, "get_lease");
    return;
  }
  g.x.misses++;
  CHECK(!(readable(m) && m->state == PRESENT), "get_lease of key %d missed a PRESENT entry: rc %d",
        ki, rc);
  if (m->state == MAYBE && !expired(m))
    m->state = ABSENT;
  bool busy =
      (m->ph == PH_LOAD && !load_timed_out()) || (m->ph == PH_LEASE && !lease_timed_out(ki));
  if (rc == CDCACHE_EBUSY) {
    CHECK(busy, "get_lease of key %d: EBUSY with no fill in flight", ki);
    CHECK(lease == NULL, "lease with EBUSY");
    return;
  }
  CHECK(!busy, "get_lease of key %d: rc %d while a fill is in flight", ki, rc);
  if (rc == CDCACHE_ENOMEM) {
    CHECK(atomic_load(&A.failures) != fb, "get_lease: ENOMEM with no failed allocation");
    CHECK(lease == NULL, "lease with ENOMEM");
    return;
  }
  if (rc == CDCACHE_EFULL) {
    CHECK(lease == NULL, "lease with EFULL");
    placeholder_outcome(ki, pq, true, "get_lease");
    return;
  }
  CHECK(rc == CDCACHE_ENOENT && lease != NULL, "get_lease miss: rc %d, lease %p", rc,
        (void *)lease);
  placeholder_outcome(ki, pq, false, "get_lease");
  /* A timed-out lease was taken over; an expired value was replaced. */
  lease_killed_for_key(ki);
  m->state = ABSENT;
  int slot = -1;
  for (int i = 0; i < NLEASES; i++)
    if (!g.l[i].used) {
      slot = i;
      break;
    }
  m->ph = PH_LEASE;
  if (slot < 0) { /* no room to keep it: give it back */
    CHECK(cdcache_lease_release(g.c, lease) == 0, "lease_release failed");
    m->ph = PH_NONE;
    return;
  }
  g.l[slot] = (struct mlease){.used = true, .lease = lease, .key = ki, .started = g.now};
}

static void op_put_leased(struct input *in)
{
  int slot = rd(in) % NLEASES;
  size_t vlen = pick_vlen(rd(in));
  bool has_ttl;
  uint32_t t = pick_ttl(rd(in), &has_ttl);
  if (!g.l[slot].used)
    return;
  struct mlease L = g.l[slot];
  g.l[slot].used = false;
  uint8_t val[MAXV + 8];
  make_value(val, sizeof val, ++g.seq);
  uint64_t fb = atomic_load(&A.failures);
  int rc = cdcache_put_leased(g.c, L.lease, val, vlen, t);
  TRACE("  put_leased slot %d key %d dead %d vlen %zu ttl %u -> %d\n", slot, L.key, L.dead, vlen, t,
        rc);
  int ki = L.key;
  struct mkey *m = &g.k[ki];
  if (vlen > g.max_v) {
    CHECK(rc == CDCACHE_E2BIG, "put_leased with vlen %zu: rc %d", vlen, rc);
    if (L.dead)
      return;
  } else if (rc == CDCACHE_ENOMEM && atomic_load(&A.failures) != fb && !L.dead) {
    /* set_value or the entry could not be allocated: nothing cached */
  } else if (L.dead) {
    if (rc == CDCACHE_ENOMEM)
      CHECK(atomic_load(&A.failures) != fb, "put_leased: ENOMEM with no failed allocation");
    else {
      CHECK(rc == CDCACHE_ESTALE, "put_leased of a dead lease on key %d: rc %d", ki, rc);
      g.x.stale++;
    }
    return; /* the key's state is what killed the lease left */
  } else {
    struct capq q = capacity(ki, val_charge(ki, vlen, has_ttl));
    after_install(ki, rc, q, fb, val, vlen, has_ttl, ttl_ms(t), "put_leased");
    if (rc == 0)
      return; /* after_install cleared the placeholder */
  }
  /* Not cached: the placeholder goes. */
  CHECK(m->ph == PH_LEASE, "lease placeholder bookkeeping");
  m->ph = PH_NONE;
}

static void op_lease_release(struct input *in)
{
  int slot = rd(in) % NLEASES;
  if (!g.l[slot].used)
    return;
  g.l[slot].used = false;
  CHECK(cdcache_lease_release(g.c, g.l[slot].lease) == 0, "lease_release failed");
  TRACE("  lease_release slot %d key %d dead %d\n", slot, g.l[slot].key, g.l[slot].dead);
  if (!g.l[slot].dead)
    g.k[g.l[slot].key].ph = PH_NONE;
}

/* The loader: what it does was read from the stream before the call. */
struct loader_plan {
  struct capq ph_room; /* room for the fill's placeholder, before the call */
  int action;          /* 0 value, 1 error, 2 no value, 3 value too long */
  int err;
  size_t vlen;
  int nested; /* ops to run inside the loader first */
  bool called;
  int set_rc;
  uint8_t val[MAXV + 8];
  int key;
};

static int loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  struct loader_plan *p = ctx;
  CHECK(!p->called, "loader called twice");
  p->called = true;
  uint8_t kb[MAXK + 2];
  CHECK(klen == key_bytes(p->key, kb) && memcmp(kb, key, klen) == 0, "loader got another key");
  /* The fill's placeholder replaced whatever was under the key: an
   * expired value, or a lease past fill_timeout_ms (taken over). */
  lease_killed_for_key(p->key);
  g.k[p->key].state = ABSENT;
  placeholder_outcome(p->key, p->ph_room, false, "get_or_load");
  g.load_key = p->key;
  g.load_dead = false;
  g.k[p->key].ph = PH_LOAD;
  g.load_started = g.now;
  g.depth++;
  for (int i = 0; i < p->nested && more(g.in); i++)
    do_op(g.in);
  g.depth--;
  switch (p->action) {
  case 0:
  case 3: {
    uint64_t fb = atomic_load(&A.failures);
    p->set_rc = cdcache_fill_set_value(fill, p->val, p->vlen);
    if (p->vlen > g.max_v)
      CHECK(p->set_rc == CDCACHE_E2BIG, "fill_set_value(%zu): rc %d", p->vlen, p->set_rc);
    else if (p->set_rc == CDCACHE_ENOMEM)
      CHECK(atomic_load(&A.failures) != fb, "fill_set_value: ENOMEM with no failed allocation");
    else
      CHECK(p->set_rc == 0, "fill_set_value: rc %d", p->set_rc);
    return p->set_rc;
  }
  case 1:
    return p->err;
  default:
    return 0;
  }
}

static void op_get_or_load(struct input *in)
{
  uint8_t kb[MAXK + 2];
  size_t klen;
  int ki = pick_key(rd(in), &klen, kb);
  uint8_t a = rd(in);
  size_t cap = pick_cap(rd(in));
  bool has_ttl;
  uint32_t t = pick_ttl(rd(in), &has_ttl);
  struct loader_plan p;
  memset(&p, 0, sizeof p);
  p.key = ki;
  p.action = a % 4;
  p.err = -100 - (a >> 2) % 8;
  p.nested = g.depth == 0 ? (a >> 5) % 3 : 0;
  p.vlen = p.action == 3 ? g.max_v + 1 : (size_t)(a >> 2) % (g.max_v + 1);
  make_value(p.val, sizeof p.val, 0x10000u + (uint32_t)ki * 97u + ++g.seq);
  uint32_t timeout = (a & 0x80) && (a & 0x02) ? 1 : 0;
  uint8_t buf[256];
  size_t vlen = 0;
  uint64_t fb = atomic_load(&A.failures);
  if (g.depth > 0 || ki < 0) {
    /* Loaders do not nest here (nor may they load their own key). */
    if (ki < 0) {
      int rc = cdcache_get_or_load(g.c, kb, klen, loader, &p, t, 0, buf, cap, &vlen);
      CHECK(rc == key_error(klen), "get_or_load with klen %zu: rc %d", klen, rc);
    }
    return;
  }
  struct mkey *m = &g.k[ki];
  bool was_readable_present = readable(m) && m->state == PRESENT;
  bool busy = m->ph == PH_LEASE && !lease_timed_out(ki);
  cdcache_stats_t before;
  read_stats(&before);
  struct capq pq = capacity_n(ki, ph_charge(ki), 0);
  p.ph_room = pq;
  int rc = cdcache_get_or_load(g.c, kb, klen, loader, &p, t, timeout, cap ? buf : NULL, cap, &vlen);
  TRACE("  get_or_load key %d action %d nested %d vlen %zu ttl %u timeout %u cap %zu -> %d called "
        "%d dead %d\n",
        ki, p.action, p.nested, p.vlen, t, timeout, cap, rc, p.called, g.load_dead);
  if (!p.called) {
    if (rc == 0 || rc == CDCACHE_ERANGE) {
      g.x.hits++;
      check_read(ki, rc, buf, cap, vlen, "get_or_load");
      return;
    }
    g.x.misses++;
    CHECK(!was_readable_present, "get_or_load of key %d missed a PRESENT entry: rc %d", ki, rc);
    if (m->state == MAYBE && !expired(m))
      m->state = ABSENT;
    if (busy) {
      if (timeout == 0)
        CHECK(rc == CDCACHE_EBUSY, "get_or_load with a lease in flight: rc %d", rc);
      else {
        CHECK(rc == CDCACHE_ETIMEDOUT, "get_or_load waiting on a lease: rc %d", rc);
        g.x.waits++;
      }
      return;
    }
    if (rc == CDCACHE_EFULL) {
      placeholder_outcome(ki, pq, true, "get_or_load");
      return;
    }
    CHECK(rc == CDCACHE_ENOMEM && atomic_load(&A.failures) != fb,
          "get_or_load of key %d: rc %d without calling the loader", ki, rc);
    return;
  }
  /* The loader ran: this call led the fill. */
  g.x.misses++;
  g.x.loads++;
  CHECK(!was_readable_present, "get_or_load of key %d loaded over a PRESENT entry", ki);
  CHECK(!busy, "get_or_load of key %d loaded while a lease was in flight", ki);
  bool dead = g.load_dead;
  if (g.k[ki].ph == PH_LOAD)
    g.k[ki].ph = PH_NONE;
  int want;
  bool value = false;
  switch (p.action) {
  case 0:
  case 3:
    want = p.set_rc;
    value = p.set_rc == 0;
    break;
  case 1:
    want = p.err;
    break;
  default:
    want = CDCACHE_ELOADER;
  }
  if (!value) {
    CHECK(rc == want, "get_or_load of key %d: rc %d, loader result %d", ki, rc, want);
    return;
  }
  /* A value: the caller gets it whether or not it was cached. */
  if (cap >= p.vlen)
    CHECK(rc == 0 && vlen == p.vlen && (p.vlen == 0 || memcmp(buf, p.val, p.vlen) == 0),
          "get_or_load of key %d: rc %d, not the loaded value", ki, rc);
  else
    CHECK(rc == CDCACHE_ERANGE && vlen == p.vlen, "get_or_load ERANGE: rc %d", rc);
  cdcache_stats_t st;
  read_stats(&st);
  bool cached = st.puts != g.x.puts;
  if (dead) {
    CHECK(!cached, "a fill of key %d killed during its load was cached", ki);
    CHECK(st.stale_fills_rejected == g.x.stale + 1, "stale fill not counted");
    g.x.stale++;
    return;
  }
  /* Not dead: cached unless capacity or memory said no. */
  if (!cached && m->state != ABSENT)
    FAIL("get_or_load: key %d has a value (state %d) after a live fill", ki, m->state);
  struct capq q = capacity(ki, val_charge(ki, p.vlen, has_ttl));
  int irc = cached ? 0 : (atomic_load(&A.failures) != fb ? CDCACHE_ENOMEM : CDCACHE_EFULL);
  if (irc == CDCACHE_ENOMEM && !cached) {
    /* An allocation failed during the call: maybe the entry, maybe not
     * (then it was capacity). */
    if (!q.may_efull) {
      may_have_swept();
      return;
    }
    irc = CDCACHE_EFULL;
  }
  after_install(ki, irc, q, fb, p.val, p.vlen, has_ttl, ttl_ms(t), "get_or_load fill");
}

static void op_advance(struct input *in)
{
  uint8_t b = rd(in);
  g.now += b < 200 ? b % 16 : (uint64_t)(b - 199) * 20;
  TRACE("  advance to %llu\n", (unsigned long long)g.now);
}

static void op_fail_alloc(struct input *in)
{
  uint8_t b = rd(in);
  TRACE("  fail_alloc %s %d\n", (b & 0x80) ? "all" : "countdown", 1 + b % 6);
  if (b & 0x80)
    atomic_store(&A.fail_all, true); /* for the next op only */
  else
    atomic_store(&A.fail_countdown, 1 + b % 6);
}

static void do_op(struct input *in)
{
  uint8_t op = rd(in) % OP__COUNT;
  bool all = atomic_load(&A.fail_all);
  g.opno++;
  TRACE("op %u (depth %d, now %llu):\n", g.opno, g.depth, (unsigned long long)g.now);
  switch (op) {
  case OP_PUT:
    op_put(in, false);
    break;
  case OP_PUT_BAD:
    op_put(in, true);
    break;
  case OP_GET:
    op_get(in);
    break;
  case OP_DELETE:
    op_remove(in, false);
    break;
  case OP_INVALIDATE:
    op_remove(in, true);
    break;
  case OP_FLUSH:
    op_flush();
    break;
  case OP_GET_LEASE:
    op_get_lease(in);
    break;
  case OP_PUT_LEASED:
    op_put_leased(in);
    break;
  case OP_LEASE_RELEASE:
    op_lease_release(in);
    break;
  case OP_GET_OR_LOAD:
    op_get_or_load(in);
    break;
  case OP_ADVANCE:
    op_advance(in);
    break;
  case OP_FAIL_ALLOC:
    op_fail_alloc(in);
    break;
  }
  if (all && op != OP_FAIL_ALLOC)
    atomic_store(&A.fail_all, false);
  if (g.depth == 0)
    check_stats();
}

/* ------------------------------------------------------------ driver */

static uint64_t buckets_for(uint64_t share)
{
  uint64_t b = 1;
  while (b < (share / 2 == 0 ? 1 : share / 2))
    b <<= 1;
  return b < 8 ? 8 : b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct input in = {data, size, 0};
  memset(&g, 0, sizeof g);
  memset(&A, 0, sizeof A);
  trace_on = getenv("CDCACHE_FUZZ_TRACE") != NULL;
  g.in = &in;
  g.now = 1000;
  g.load_key = -1;

  uint8_t c0 = rd(&in), c1 = rd(&in), c2 = rd(&in), c3 = rd(&in), c4 = rd(&in), c5 = rd(&in),
          c6 = rd(&in), c7 = rd(&in);
  cdcache_config_t *cfg = &g.cfg;
  cdcache_config_init(cfg);
  g.policy = c0 % 3;
  /* c1's top bit picks the s3fifo flavour of an evicting policy. */
  if ((c1 & 0x80) && g.policy == CDCACHE_ALLKEYS_LRU)
    g.policy = CDCACHE_ALLKEYS_S3FIFO;
  else if ((c1 & 0x80) && g.policy == CDCACHE_VOLATILE_LRU)
    g.policy = CDCACHE_VOLATILE_S3FIFO;
  cfg->policy = (cdcache_policy_t)g.policy;
  A.round16 = (c0 >> 2) & 1;
  cfg->allocator.malloc = h_malloc;
  cfg->allocator.free = h_free;
  cfg->allocator.usable_size = ((c0 >> 3) & 1) ? h_usable : NULL;
  if (cfg->allocator.usable_size == NULL)
    A.round16 = false;
  cfg->allocator.ctx = &A;
  cfg->clock = clock_fn;
  cfg->shards = 1;
  cfg->max_entries = 1 + c1 % 8;
  g.max_k = 1 + c3 % MAXK;
  g.max_v = (uint32_t)(c4 % (MAXV + 1));
  cfg->max_key_len = g.max_k;
  cfg->max_value_len = g.max_v;
  g.ttl_default = (c5 & 3) == 0 ? 1 + (c5 >> 2) % 50 : 0;
  cfg->default_ttl_ms = g.ttl_default;
  cfg->fill_timeout_ms = 1 + c6 % 100;
  /* As cache.c sizes it: handle, shard header, bucket array, and three
   * cache lines of alignment and registry slack; plus the policy's own
   * tables (s3fifo's sketch and ghost), read from a cache opened without
   * a byte bound. */
  uint64_t fixed = sizeof(struct cdcache) + sizeof(struct cdcache__shard) +
                   8 * buckets_for(cfg->max_entries) + 3 * CDCACHE__CACHELINE;
  {
    cdcache_t *probe = NULL;
    CHECK(cdcache_open(cfg, &probe) == 0, "open without a byte bound failed");
    cdcache_stats_t st = {.struct_size = sizeof st};
    CHECK(cdcache_stats(probe, &st) == 0, "stats failed");
    CHECK((st.bytes_policy != 0) == (g.policy >= CDCACHE_ALLKEYS_S3FIFO),
          "bytes_policy %llu under policy %d", (unsigned long long)st.bytes_policy, g.policy);
    CHECK(st.bytes_tables == fixed - sizeof(struct cdcache) + st.bytes_policy,
          "bytes_tables %llu, model %llu", (unsigned long long)st.bytes_tables,
          (unsigned long long)(fixed - sizeof(struct cdcache) + st.bytes_policy));
    fixed += st.bytes_policy;
    CHECK(cdcache_close(probe) == 0, "close failed");
  }
  bool bytes = c2 >= 128;
  uint64_t extra = (uint64_t)(c2 & 0x7f) * 8;
  cfg->max_bytes = bytes ? fixed + extra : 0;
  /* Open refuses a share (7/8 of the budget, one shard) that cannot hold
   * one largest entry. */
  const bool too_small = bytes && extra - extra / 8 < cdcache__max_entry_charge(cfg);
  g.cap_e = cfg->max_entries;
  TRACE("config: policy %d max_entries %llu max_bytes %llu max_key %u max_value %u default_ttl %u "
        "fill_timeout %u usable %d\n",
        g.policy, (unsigned long long)cfg->max_entries, (unsigned long long)cfg->max_bytes, g.max_k,
        g.max_v, g.ttl_default, cfg->fill_timeout_ms, cfg->allocator.usable_size != NULL);

  /* Allocation failure during open: ENOMEM and nothing held. */
  if (c7 & 0x80) {
    atomic_store(&A.fail_countdown, 1 + c7 % 5);
    cdcache_t *c = NULL;
    int rc = cdcache_open(cfg, &c);
    if (rc == 0) {
      CHECK(atomic_load(&A.failures) == 0, "open succeeded after a failed allocation");
      cdcache_close(c);
    } else {
      CHECK(rc == CDCACHE_ENOMEM || (too_small && rc == CDCACHE_EINVAL),
            "open with a failing allocator: rc %d", rc);
    }
    CHECK(atomic_load(&A.bytes) == 0 && atomic_load(&A.count) == 0,
          "open/close left %llu bytes in %llu blocks", (unsigned long long)atomic_load(&A.bytes),
          (unsigned long long)atomic_load(&A.count));
    atomic_store(&A.fail_countdown, 0);
    atomic_store(&A.failures, 0);
  }

  int rc = cdcache_open(cfg, &g.c);
  if (too_small) {
    CHECK(rc == CDCACHE_EINVAL, "open with a share below one largest entry: rc %d", rc);
    return 0;
  }
  CHECK(rc == 0, "open: rc %d", rc);
  if (bytes) {
    cdcache_stats_t st;
    read_stats(&st);
    uint64_t budget = cfg->max_bytes - st.bytes_tables - sizeof(struct cdcache);
    CHECK(budget == extra, "byte budget %llu, expected %llu", (unsigned long long)budget,
          (unsigned long long)extra);
    g.cap_b = budget - budget / 8;
  }

  while (more(&in) && g.opno < 4000)
    do_op(&in);

  /* Leases must be given back before close. */
  atomic_store(&A.fail_all, false);
  atomic_store(&A.fail_countdown, 0);
  for (int i = 0; i < NLEASES; i++)
    if (g.l[i].used) {
      CHECK(cdcache_lease_release(g.c, g.l[i].lease) == 0, "lease_release failed");
      if (!g.l[i].dead)
        g.k[g.l[i].key].ph = PH_NONE;
      g.l[i].used = false;
    }
  check_stats();
  CHECK(cdcache_close(g.c) == 0, "close failed");
  CHECK(atomic_load(&A.bytes) == 0 && atomic_load(&A.count) == 0,
        "after close the allocator holds %llu bytes in %llu blocks",
        (unsigned long long)atomic_load(&A.bytes), (unsigned long long)atomic_load(&A.count));
  return 0;
}
