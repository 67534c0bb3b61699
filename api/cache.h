/*
 * Private definitions of the cache (api/): the cache handle, entries, fills
 * and the counters.  Not installed; see cache_internal.h for what the CDC
 * consumer uses.
 *
 * Lock order (a thread holding a lock may only take locks below it):
 *   1. a shard's lock        (struct cdcache_shard.lock; never two at once)
 *   2. a fill's mutex        (struct cdcache_fill.mu)
 *   3. the counters' registry mutex (tstats.c), the attach mutex
 * and, apart from these, the reclaimer's mutex (core/reclaim.c), taken
 * with no other lock held; around fork() only: liburcu's call_rcu lock,
 * then its reader registry and grace-period locks, then live_mu
 * (tstats.c, the live-cache registry; a registry mutex is taken after it),
 * then the reclaimer's -- see cdcache_fork_prepare() in cache.c.
 * No lock is ever held while a callback (loader, log) runs; the
 * allocator is called with a shard lock held only to free.
 */
#ifndef CDCACHE_CACHE_H
#define CDCACHE_CACHE_H

#include "cache_internal.h"
#include "clock.h"
#include "entry.h"
#include "hash.h"
#include "mem.h"
#include "reclaim.h"
#include "shard.h"
#include "tstats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

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
  /* Synchronization: shard lock.  What the shard sees of this fill: its
   * placeholder (NULL once unlinked) and whether it died. */
  struct cdcache__fill_link link;
  uint64_t epoch;      /* read-only: the cache epoch when the fill began */
  uint64_t started_ms; /* read-only: cache clock at start (takeover) */
  uint64_t hash;       /* read-only */
  bool is_lease;       /* read-only */
  cdcache_t *cache;    /* read-only */
  /* read-only: the bytes the fill's own allocation takes (struct, mutex,
   * condition variable, key copy), charged with its placeholder. */
  uint32_t charge;
};

/* A fill and its key copy, one allocation. */
struct cdcache_fill_key {
  struct cdcache_fill f;
  size_t klen;         /* read-only */
  unsigned char key[]; /* read-only */
};

/* --------------------------------------------------------------- cache */

/* The padding is deliberate: the read-mostly line and the writers' line
 * are kept apart. */
struct cdcache {           // NOLINT(clang-analyzer-optin.performance.Padding)
  cdcache_config_t cfg;    /* read-only after open */
  uint64_t id;             /* read-only: unique per process, never reused */
  uint32_t fork_gen;       /* read-only: cdcache__fork_gen at open */
  uint32_t nshards;        /* read-only */
  unsigned shard_shift;    /* read-only: hash >> shard_shift picks the shard (64 = one shard) */
  uint64_t clock_slack_ms; /* read-only: coarse clock lag (0 when injected) */
  uint64_t tables_bytes;   /* read-only */
  uint64_t policy_bytes;   /* read-only: of tables_bytes, the s3fifo sketches and ghosts */
  struct cdcache__shard_env shard_env; /* read-only after open */
  struct cdcache__shard *shards;       /* read-only pointer; see the shard */
  void *shards_raw;                    /* read-only: what to free (aligned allocation) */
  void *self_raw;                      /* read-only: what to free for this handle */
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

  /* Written by writers and the reclaimer: the byte gauge. */
  struct cdcache__reclaimer rec __attribute__((aligned(CDCACHE__CACHELINE)));

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

/* The fill a placeholder stands for. */
static inline struct cdcache_fill *cdcache__entry_fill(const struct cdcache__entry *e)
{
  return (struct cdcache_fill *)((char *)cdcache__entry_link(e) -
                                 offsetof(struct cdcache_fill, link));
}

/* Is a value entry expired at `now` (cache clock)?  Errs early by the
 * coarse clock's lag. */
static inline bool cdcache__expired(const cdcache_t *c, const struct cdcache__entry *e,
                                    uint64_t now)
{
  return cdcache__entry_expired(e, now, c->clock_slack_ms);
}

/* No lock held: free every retired entry of every shard (close, tests). */
void cdcache__retire_drain_all(cdcache_t *c);

static inline struct cdcache__shard *cdcache__shard_of(const cdcache_t *c, uint64_t h)
{
  return &c->shards[c->shard_shift >= 64 ? 0 : (h >> c->shard_shift)];
}

/* This thread's counter block for the cache (NULL if none could be
 * allocated: cdcache__count counts into the fallback then). */
static inline struct cdcache__tstats *cdcache__tstats_of(cdcache_t *c)
{
  return cdcache__tstats_get(&c->tstats);
}

static inline bool cdcache__forked(const cdcache_t *c)
{
  return atomic_load_explicit(&cdcache__fork_gen, memory_order_relaxed) != c->fork_gen;
}

/* A fill is cacheable only while the cache has not failed closed (erring
 * towards refusing by the coarse clock's tick). */
static inline bool cdcache__fresh(const cdcache_t *c, uint64_t now)
{
  uint64_t fu = atomic_load_explicit(&c->fresh_until, memory_order_acquire);
  return fu == CDCACHE__FRESH_FOREVER || now + c->clock_slack_ms <= fu;
}

#endif /* CDCACHE_CACHE_H */
