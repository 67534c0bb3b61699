/*
 * Per-thread counters (tstats.c): one block per thread and cache, found
 * through thread-local slots keyed by the cache's id.
 */
#ifndef CDCACHE_TSTATS_H
#define CDCACHE_TSTATS_H

#include "cdcache.h"
#include "entry.h"

#include <pthread.h>

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

/* One cache's counters: the blocks of its threads and the fallback. */
struct cdcache__tstats_reg {
  pthread_mutex_t mu;
  uint64_t id;                      /* read-only: the cache's id, never reused */
  const cdcache_allocator_t *alloc; /* read-only */
  struct cdcache__tstats *blocks;   /* Synchronization: mu (push only; freed at destroy) */
  struct cdcache__tstats fallback;  /* when a block cannot be allocated: atomic adds */
};

/* This thread's block for a cache: slot 0 is the most recently used. */
#define CDCACHE__TLS_SLOTS 4
struct cdcache__tls_slot {
  uint64_t id; /* 0: empty */
  struct cdcache__tstats *blk;
};
extern __thread struct cdcache__tls_slot cdcache__tls_slots[CDCACHE__TLS_SLOTS]
    __attribute__((tls_model("initial-exec")));
struct cdcache__tstats *cdcache__tstats_slow(struct cdcache__tstats_reg *r);
int cdcache__tstats_init(struct cdcache__tstats_reg *r, uint64_t id,
                         const cdcache_allocator_t *alloc);
void cdcache__tstats_sum(struct cdcache__tstats_reg *r, uint64_t out[CTR__COUNT]);
void cdcache__tstats_destroy(struct cdcache__tstats_reg *r);
/* Around fork(), from the forking thread, after liburcu's prepare and
 * before its parent/child handlers (tstats.c): prepare takes the global
 * live-cache mutex, parent releases it, child re-initialises it and marks
 * every cache open at the fork so that its registry is never locked again. */
void cdcache__tstats_fork_prepare(void);
void cdcache__tstats_fork_parent(void);
void cdcache__tstats_fork_child(void);

/* This thread's counter block in r, or NULL if none could be allocated
 * (count into r->fallback then, with cdcache__count_n). */
static inline struct cdcache__tstats *cdcache__tstats_get(struct cdcache__tstats_reg *r)
{
  if (__builtin_expect(cdcache__tls_slots[0].id == r->id, 1))
    return cdcache__tls_slots[0].blk;
  return cdcache__tstats_slow(r);
}

/* Counts n into this thread's block t, or into r's shared fallback block
 * (atomic adds) when the thread has none (t NULL). */
static inline void cdcache__count_n(struct cdcache__tstats_reg *r, struct cdcache__tstats *t,
                                    enum cdcache__ctr ctr, uint64_t n)
{
  if (__builtin_expect(t != NULL, 1)) {
    uint64_t v = atomic_load_explicit(&t->v[ctr], memory_order_relaxed);
    atomic_store_explicit(&t->v[ctr], v + n, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&r->fallback.v[ctr], n, memory_order_relaxed);
  }
}

#endif
