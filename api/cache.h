/*
 * Private definitions of the cache (api/): the cache handle, entries, fills
 * and the counters.  Not installed; see cache_internal.h for what the CDC
 * consumer uses.
 *
 * Lock order (a thread holding a lock may only take locks below it):
 *   1. a shard's lock        (struct cdcache_shard.lock; never two at once)
 *   2. a fill's mutex        (struct cdcache_fill.mu)
 *   3. the counters' registry mutex (tstats.c), the attach mutex
 * No lock is ever held while a callback (loader, log) runs; the
 * allocator is called with a shard lock held only to free.
 */
#ifndef CDCACHE_CACHE_H
#define CDCACHE_CACHE_H

#include "cache_internal.h"
#include "hash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CDCACHE__CACHELINE 64

/* ThreadSanitizer cannot see liburcu's grace periods (inline assembly and
 * membarrier), so the read side and the reclaimer tell it about the
 * ordering they rely on.  See reclaim.c. */
#ifdef CDCACHE_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CDCACHE__TSAN_ACQUIRE(a) __tsan_acquire(a)
#define CDCACHE__TSAN_RELEASE(a) __tsan_release(a)
#else
#define CDCACHE__TSAN_ACQUIRE(a) ((void)(a))
#define CDCACHE__TSAN_RELEASE(a) ((void)(a))
#endif
extern char cdcache__grace_token;

/* ------------------------------------------------------------ counters */

enum cdcache__ctr {
  CTR_HITS,
  CTR_MISSES,
  CTR_PUTS,
  CTR_EVICTIONS,
  CTR_EXPIRATIONS,
  CTR_DELETES,
  CTR_INVALIDATIONS,
  CTR_FLUSHES,
  CTR_STALE_REJECTED,
  CTR_LOADS,
  CTR_LOAD_WAITS,
  CTR_LONG_CHAINS,
  CTR__COUNT
};

/* One thread's counters for one cache (tstats.c).  Only the owning thread
 * writes them (relaxed load + relaxed store, no read-modify-write); readers
 * of the stats load them relaxed. */
struct cdcache__tstats {
  _Atomic uint64_t v[CTR__COUNT]; /* Synchronization: atomic, relaxed; one writer */
  struct cdcache__tstats *next;   /* Synchronization: registry mutex; read-only once linked */
  void *raw;                      /* read-only: what to free (aligned allocation) */
  bool owned;                     /* Synchronization: registry mutex */
} __attribute__((aligned(CDCACHE__CACHELINE)));

struct cdcache__tstats_reg {
  pthread_mutex_t mu;
  struct cdcache__tstats *blocks;  /* Synchronization: mu (push only; freed at close) */
  struct cdcache__tstats fallback; /* when a block cannot be allocated: fetch_add */
};

/* This thread's block for a cache: slot 0 is the most recently used. */
#define CDCACHE__TLS_SLOTS 4
struct cdcache__tls_slot {
  uint64_t id; /* 0: empty */
  struct cdcache__tstats *blk;
};
extern __thread struct cdcache__tls_slot cdcache__tls_slots[CDCACHE__TLS_SLOTS]
    __attribute__((tls_model("initial-exec")));
struct cdcache__tstats *cdcache__tstats_slow(cdcache_t *cache);
void cdcache__ctr_add(cdcache_t *cache, enum cdcache__ctr c, uint64_t n);
static inline void cdcache__ctr_inc(struct cdcache__tstats *t, enum cdcache__ctr c)
{
  uint64_t v = atomic_load_explicit(&t->v[c], memory_order_relaxed);
  atomic_store_explicit(&t->v[c], v + 1, memory_order_relaxed);
}
int cdcache__tstats_init(cdcache_t *cache);
void cdcache__tstats_sum(cdcache_t *cache, uint64_t out[CTR__COUNT]);
void cdcache__tstats_destroy(cdcache_t *cache);

/* -------------------------------------------------------------- entries */

#define CDCACHE__E_TTL 0x01u         /* data begins with a uint64_t expiry (ms) */
#define CDCACHE__E_PLACEHOLDER 0x02u /* a fill in flight: data holds its fill pointer */
#define CDCACHE__E_VOLATILE 0x04u    /* lives on the shard's TTL list */

/*
 * A cached key and value, or a placeholder for a fill in flight.  The
 * entry is immutable once published except for next (RCU-published chain
 * link), the list links (shard lock) and ref (the CLOCK bit).
 * Layout: 40 bytes of header, then [expiry][fill pointer][key][value].
 */
struct cdcache__entry {
  /* Synchronization: RCU-published.  Written under the shard lock with
   * release order; readers load it with acquire (consume) order. */
  _Atomic(struct cdcache__entry *) next;
  /* Synchronization: shard lock.  The eviction list while linked; the
   * retire list (ret) once unlinked. */
  union {
    struct {
      struct cdcache__entry *prev, *next;
    } lru;
    struct cdcache__entry *ret;
  } u;
  uint32_t hash; /* Synchronization: read-only after publication (low hash bits) */
  uint32_t vlen; /* read-only after publication */
  uint16_t klen; /* read-only after publication */
  uint8_t flags; /* read-only after publication */
  /* Synchronization: atomic, relaxed.  Set by readers only when clear,
   * cleared by the evictor under the shard lock. */
  _Atomic uint8_t ref;
  uint32_t charge; /* read-only: bytes the allocator charged for the entry */
  unsigned char data[];
};

static inline size_t cdcache__entry_prefix(uint8_t flags)
{
  return ((flags & CDCACHE__E_TTL) ? sizeof(uint64_t) : 0) +
         ((flags & CDCACHE__E_PLACEHOLDER) ? sizeof(uintptr_t) : 0);
}
static inline size_t cdcache__entry_size(uint8_t flags, size_t klen, size_t vlen)
{
  return offsetof(struct cdcache__entry, data) + cdcache__entry_prefix(flags) + klen + vlen;
}
static inline const unsigned char *cdcache__entry_key(const struct cdcache__entry *e)
{
  return e->data + cdcache__entry_prefix(e->flags);
}
static inline const unsigned char *cdcache__entry_val(const struct cdcache__entry *e)
{
  return cdcache__entry_key(e) + e->klen;
}
static inline uint64_t cdcache__entry_expiry(const struct cdcache__entry *e)
{
  uint64_t x;
  __builtin_memcpy(&x, e->data, sizeof x);
  return x;
}
static inline struct cdcache_fill *cdcache__entry_fill(const struct cdcache__entry *e)
{
  uintptr_t f;
  __builtin_memcpy(&f, e->data + ((e->flags & CDCACHE__E_TTL) ? sizeof(uint64_t) : 0), sizeof f);
  return (struct cdcache_fill *)f;
}

/* --------------------------------------------------------------- shards */

struct cdcache__list {
  struct cdcache__entry *head; /* oldest: the CLOCK hand */
  struct cdcache__entry *tail; /* newest */
  uint64_t len;
  uint64_t bytes; /* sum of the entries' charges */
};

/*
 * Three cache lines at least: what every reader loads (read-only after
 * open), the lock, and what writers change under it.  Keeping the lock
 * off the readers' line means a write does not invalidate the line every
 * get loads.
 */
struct cdcache__shard {
  /* Read-mostly line. */
  /* Synchronization: read-only after open (the array); its slots are
   * RCU-published like entry->next. */
  _Atomic(struct cdcache__entry *) *buckets;
  uint64_t mask;        /* read-only after open */
  uint64_t cap_entries; /* read-only after open: this shard's share */
  uint64_t cap_bytes;   /* read-only after open: its share of live bytes, 0 = none */

  pthread_mutex_t lock __attribute__((aligned(CDCACHE__CACHELINE)));

  /* Written by writers, under the lock. */
  /* Synchronization: shard lock.  [0]: entries without a TTL (and every
   * entry under allkeys-lru); [1]: entries with a TTL under volatile-lru. */
  struct cdcache__list lists[2] __attribute__((aligned(CDCACHE__CACHELINE)));
  uint64_t sweep_cursor; /* Synchronization: shard lock */
  uint64_t n_ttl;        /* Synchronization: shard lock: live entries with a TTL */
  /* Synchronization: shard lock.  Unlinked entries waiting for a batch to
   * be handed to a grace period. */
  struct cdcache__entry *retired;
  uint64_t retired_count, retired_bytes;
  /* Synchronization: written under the shard lock, read relaxed by stats. */
  _Atomic uint64_t n_entries, n_bytes;
} __attribute__((aligned(CDCACHE__CACHELINE)));

/* ---------------------------------------------------------------- fills */

/*
 * A fill in flight (a get_or_load leader's load, or a lease).  Shared by
 * the leader, its waiters and the placeholder entry; freed by the last
 * reference.
 */
struct cdcache_fill {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;  /* Synchronization: mu */
  bool done; /* Synchronization: mu */
  /* Synchronization: mu.  Set when a later caller took the key over after
   * fill_timeout_ms: waiters stop waiting and retry. */
  bool taken_over;
  int result;   /* Synchronization: mu (meaningful once done) */
  void *val;    /* Synchronization: mu (written before done, then read-only) */
  size_t vlen;  /* Synchronization: mu, as val */
  size_t vsize; /* Synchronization: mu, as val: bytes allocated for val */
  /* Synchronization: shard lock.  Set when a delete, put, invalidation or
   * flush of the key happens while the fill is in flight. */
  bool dead;
  /* Synchronization: shard lock.  The placeholder, NULL once unlinked. */
  struct cdcache__entry *ph;
  uint64_t epoch;      /* read-only: the cache epoch when the fill began */
  uint64_t started_ms; /* read-only: cache clock at start (takeover) */
  uint64_t hash;       /* read-only */
  bool is_lease;       /* read-only */
  cdcache_t *cache;    /* read-only */
};

/* --------------------------------------------------------------- cache */

/* The padding is deliberate: the read-mostly line and the writers' line
 * are kept apart. */
struct cdcache {               // NOLINT(clang-analyzer-optin.performance.Padding)
  cdcache_config_t cfg;        /* read-only after open */
  uint64_t id;                 /* read-only: unique per process, never reused */
  uint32_t fork_gen;           /* read-only: cdcache__fork_gen at open */
  uint32_t nshards;            /* read-only */
  unsigned shard_shift;        /* read-only: hash >> shard_shift picks the shard (64 = one shard) */
  uint64_t clock_slack_ms;     /* read-only: coarse clock lag (0 when injected) */
  uint64_t pending_cap;        /* read-only: throttle threshold for bytes_pending */
  uint64_t retire_batch_bytes; /* read-only: a shard hands its retire list over past this */
  uint64_t tables_bytes;       /* read-only */
  struct cdcache__shard *shards; /* read-only pointer; see the shard */
  void *shards_raw;              /* read-only: what to free (aligned allocation) */
  void *self_raw;                /* read-only: what to free for this handle */
  /* read-only after open: this cache's hash key (hash.h), from getrandom() */
  unsigned char secret[CDCACHE__SECRET_SIZE];

  /* Read-mostly line: loaded on every hit. */
  /* Synchronization: atomic; the CDC thread stores (release), readers load
   * relaxed: the value alone is the message. */
  _Atomic uint64_t fresh_until __attribute__((aligned(CDCACHE__CACHELINE)));
  /* Synchronization: atomic.  Advanced by flush (seq_cst) before it clears
   * the shards; fills compare it under the shard lock at completion. */
  _Atomic uint64_t epoch;

  /* Written on every change event by the CDC thread: a line of its own,
   * away from fresh_until. */
  _Atomic uint64_t cluster_time __attribute__((aligned(CDCACHE__CACHELINE))); /* atomic, relaxed */
  /* Synchronization: atomic (CAS).  Cache clock of the last long-chain
   * warning; UINT64_MAX before the first.  Rate-limits the tripwire's log. */
  _Atomic uint64_t chain_log_ms;

  /* Written by writers and the reclaimer. */
  /* Synchronization: atomic, relaxed (a gauge; the throttle rereads it). */
  _Atomic uint64_t bytes_pending __attribute__((aligned(CDCACHE__CACHELINE)));

  struct cdcache__tstats_reg tstats;

  pthread_mutex_t attach_mu;
  void *sub;                   /* Synchronization: attach_mu */
  cdcache__detach_fn sub_stop; /* Synchronization: attach_mu */
};

/* Bumped in every child after fork() (pthread_atfork).  Relaxed loads. */
extern _Atomic uint32_t cdcache__fork_gen;

/* cache.c: what one entry of max_key_len and max_value_len may be
 * charged: its size plus the allocator's rounding (16-byte bins; whole
 * pages for mmap'd chunks; size classes up to a quarter apart in
 * jemalloc-like allocators).  Each shard's byte share holds at least this. */
uint64_t cdcache__max_entry_charge(const cdcache_config_t *cfg);

/* clock.c */
uint64_t cdcache__coarse_ms(void);
uint64_t cdcache__coarse_resolution_ms(void);
void cdcache__deadline_after(struct timespec *ts, uint32_t ms);

/* mem.c */
void cdcache__default_allocator(cdcache_allocator_t *a);
void *cdcache__alloc_aligned(const cdcache_allocator_t *a, size_t size, void **raw);
void cdcache__free_aligned(const cdcache_allocator_t *a, void *raw, size_t size);
size_t cdcache__charge(const cdcache_t *cache, void *ptr, size_t size);

static inline struct cdcache__shard *cdcache__shard_of(const cdcache_t *c, uint64_t h)
{
  return &c->shards[c->shard_shift >= 64 ? 0 : (h >> c->shard_shift)];
}

/* This thread's counter block for the cache (NULL if none could be
 * allocated: count through cdcache__ctr_add's fallback then). */
static inline struct cdcache__tstats *cdcache__tstats_get(cdcache_t *c)
{
  if (__builtin_expect(cdcache__tls_slots[0].id == c->id, 1))
    return cdcache__tls_slots[0].blk;
  return cdcache__tstats_slow(c);
}

static inline bool cdcache__forked(const cdcache_t *c)
{
  return atomic_load_explicit(&cdcache__fork_gen, memory_order_relaxed) != c->fork_gen;
}

/* Key comparison and value copy, inlined for the short keys and values
 * caches mostly hold (a libc call costs more than the work). */
static inline bool cdcache__key_eq(const unsigned char *a, const void *bv, size_t n)
{
  const unsigned char *b = bv;
  if (n >= 8 && n <= 16) {
    uint64_t x0, x1, y0, y1;
    __builtin_memcpy(&x0, a, 8);
    __builtin_memcpy(&y0, b, 8);
    __builtin_memcpy(&x1, a + n - 8, 8);
    __builtin_memcpy(&y1, b + n - 8, 8);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
  }
  return __builtin_memcmp(a, b, n) == 0;
}

static inline void cdcache__copy(void *dst, const void *src, size_t n)
{
  if (n >= 8 && n <= 16) {
    uint64_t x0, x1;
    __builtin_memcpy(&x0, src, 8);
    __builtin_memcpy(&x1, (const unsigned char *)src + n - 8, 8);
    __builtin_memcpy(dst, &x0, 8);
    __builtin_memcpy((unsigned char *)dst + n - 8, &x1, 8);
  } else if (n > 0) {
    __builtin_memcpy(dst, src, n);
  }
}

/* A fill is cacheable only while the cache has not failed closed. */
static inline bool cdcache__fresh(const cdcache_t *c, uint64_t now)
{
  uint64_t fu = atomic_load_explicit(&c->fresh_until, memory_order_relaxed);
  return fu == CDCACHE__FRESH_FOREVER || now <= fu;
}

#endif /* CDCACHE_CACHE_H */
