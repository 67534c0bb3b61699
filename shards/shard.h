/*
 * One shard (shard.c): its lock, its RCU-readable table, its CLOCK order,
 * its TTL sweep and its retire list.  Placeholders are opaque links.  It
 * reports what it did to its caller and calls nothing above it.
 */
#ifndef CDCACHE_SHARD_H
#define CDCACHE_SHARD_H

#include "cdcache.h"
#include "entry.h"
#include "reclaim.h"
#include "s3fifo.h"

#include <pthread.h>
#include <string.h>

/* What a shard needs of its cache, fixed at open. */
struct cdcache__shard_env {
  cdcache_policy_t policy;          /* read-only */
  uint64_t clock_slack_ms;          /* read-only: the clock's possible lag */
  const cdcache_allocator_t *alloc; /* read-only */
  struct cdcache__reclaimer *rec;   /* the cache's reclamation */
};

static inline bool cdcache__policy_s3(cdcache_policy_t p)
{
  return p == CDCACHE_ALLKEYS_S3FIFO || p == CDCACHE_VOLATILE_S3FIFO;
}
/* Does the policy evict only entries with a TTL? */
static inline bool cdcache__policy_volatile(cdcache_policy_t p)
{
  return p == CDCACHE_VOLATILE_LRU || p == CDCACHE_VOLATILE_S3FIFO;
}

struct cdcache__list {
  struct cdcache__entry *head; /* oldest: the CLOCK hand */
  struct cdcache__entry *tail; /* newest */
  uint64_t len;
  uint64_t bytes; /* sum of the entries' charges */
};

/*
 * Cache lines: what every reader loads (read-only after open); the lock
 * with the counters every write changes; the retire list with the pool's
 * owner fields; the pool's fields the reclaimer writes; then the eviction
 * lists and s3fifo's state.  Keeping the lock off the readers' line means
 * a write does not invalidate the line every get loads; keeping what a
 * put writes on few lines means few lines move when threads on other
 * CPUs write the same shard (and the reclaimer's pushes move none of
 * them).
 */
struct cdcache__shard {
  /* Read-mostly line. */
  /* Synchronization: read-only after open (the array); its slots are
   * bucket words (below), RCU-published like entry->next: written under
   * the shard lock with release order, loaded by readers with acquire. */
  _Atomic uintptr_t *buckets;
  uint64_t mask;        /* read-only after open */
  uint64_t cap_entries; /* read-only after open: this shard's share */
  uint64_t cap_bytes;   /* read-only after open: its share of live bytes, 0 = none */
  const struct cdcache__shard_env *env; /* read-only after open */

  pthread_mutex_t lock __attribute__((aligned(CDCACHE__CACHELINE)));
  /* Written by writers, under the lock, on the lock's line (release
   * builds: the mutex's 40 bytes and these 24), so a write in the shard
   * brings them with the lock. */
  uint64_t n_ttl; /* Synchronization: shard lock: live entries with a TTL */
  /* Synchronization: written under the shard lock, read relaxed by stats. */
  _Atomic uint64_t n_entries, n_bytes;
#ifdef CDCACHE_ASSERTS
  pthread_t owner; /* Synchronization: lock (debug: who holds it) */
  bool held;       /* Synchronization: lock */
#endif

  /* Synchronization: shard lock (its pool: as reclaim.h says).  Unlinked
   * entries waiting for a batch to be handed to a grace period, and the
   * pool of those whose grace period has passed: the fields every write
   * touches on one line, those the reclaimer writes on the next. */
  struct cdcache__retire_list retired __attribute__((aligned(CDCACHE__CACHELINE)));
  /* Synchronization: shard lock.  The lru policies: [0] entries without
   * a TTL (and every entry under allkeys-lru), [1] entries with a TTL
   * under volatile-lru.  The s3fifo policies: [1] the small FIFO, [2] the
   * main FIFO, [0] what volatile-s3fifo never evicts (no TTL). */
  struct cdcache__list lists[3] __attribute__((aligned(CDCACHE__CACHELINE)));
  struct cdcache__s3 s3; /* Synchronization: shard lock; s3fifo policies only */
  uint64_t sweep_cursor; /* Synchronization: shard lock */
} __attribute__((aligned(CDCACHE__CACHELINE)));

#ifndef CDCACHE_ASSERTS
/* The layout above, where a mutex is glibc x86-64's 40 bytes. */
_Static_assert(sizeof(pthread_mutex_t) != 40 ||
                   offsetof(struct cdcache__shard, n_bytes) + sizeof(uint64_t) <=
                       offsetof(struct cdcache__shard, lock) + CDCACHE__CACHELINE,
               "the write counters share the lock's line");
#endif
_Static_assert(offsetof(struct cdcache__retire_list, taken) + sizeof(uint64_t) <=
                   CDCACHE__CACHELINE,
               "a write's retire fields fit one line");

/* The shard lock; in assertion builds it records its holder. */
static inline void cdcache__shard_lock(struct cdcache__shard *s)
{
  pthread_mutex_lock(&s->lock);
#ifdef CDCACHE_ASSERTS
  s->owner = pthread_self();
  s->held = true;
#endif
}
static inline void cdcache__shard_unlock(struct cdcache__shard *s)
{
#ifdef CDCACHE_ASSERTS
  CDCACHE__ASSERT(s->held && pthread_equal(s->owner, pthread_self()));
  s->held = false;
#endif
  pthread_mutex_unlock(&s->lock);
}
#ifdef CDCACHE_ASSERTS
#define CDCACHE__ASSERT_LOCKED(s)                                                                  \
  CDCACHE__ASSERT((s)->held &&pthread_equal((s)->owner, pthread_self()))
#else
#define CDCACHE__ASSERT_LOCKED(s) ((void)0)
#endif

/* Shard lock held: take the retire list if it is a full batch (or any
 * non-empty list when force), to submit after unlocking. */
static inline void cdcache__shard_retire_take(struct cdcache__shard *s, struct cdcache__retired *r,
                                              bool force)
{
  CDCACHE__ASSERT_LOCKED(s);
  cdcache__retire_take(s->env->rec, &s->retired, r, force);
}

/* Any thread, no lock: might the shard hold a recycled entry?  A hint. */
static inline bool cdcache__shard_recycled_maybe(const struct cdcache__shard *s)
{
  return cdcache__pool_maybe(&s->retired.pool);
}
/* Shard lock held: a recycled entry of exactly `size` bytes for a put to
 * overwrite (e->charge is its charge), or NULL (reclaim.c). */
static inline struct cdcache__entry *cdcache__shard_recycled(struct cdcache__shard *s, size_t size)
{
  CDCACHE__ASSERT_LOCKED(s);
  return cdcache__pool_take(s->env->rec, &s->retired, size);
}
/* Shard lock held: frees the shard's recycled entries. */
static inline void cdcache__shard_recycled_free(struct cdcache__shard *s)
{
  CDCACHE__ASSERT_LOCKED(s);
  cdcache__pool_free(s->env->rec, &s->retired);
}

int cdcache__shard_init(struct cdcache__shard *s, const struct cdcache__shard_env *env,
                        uint64_t cap_entries, uint64_t cap_bytes, uint64_t nbuckets);
/* No readers, no lock: frees every entry and the table (a placeholder's
 * link gets ph NULL). */
void cdcache__shard_destroy(struct cdcache__shard *s);
uint64_t cdcache__shard_table_bytes(uint64_t nbuckets);

/*
 * A bucket word (shard.c, "Tags"): the chain's length in bits 0-2
 * (saturating at 7: "7 or more"; entries are 8-byte aligned), the chain's
 * first entry in bits 3-47 (its address, those low bits clear), and in
 * bits 48-63 a summary with one bit per tag (a hash's bits 28-31) of the
 * entries on the chain, and maybe of entries unlinked since: a clear bit
 * means no entry of that tag is on the chain.
 */
#define CDCACHE__B_LEN_MAX 7u
#define CDCACHE__B_LEN ((uintptr_t)CDCACHE__B_LEN_MAX)
#define CDCACHE__B_PTR (((((uintptr_t)1) << 48) - 1) & ~CDCACHE__B_LEN)
#define CDCACHE__B_SUM (~(((uintptr_t)1 << 48) - 1))

static inline uintptr_t cdcache__tag_bit(uint32_t hash)
{
  return (uintptr_t)1 << (48 + (hash >> 28));
}
static inline struct cdcache__entry *cdcache__bucket_first(uintptr_t w)
{
  return (struct cdcache__entry *)(w & CDCACHE__B_PTR);
}
/* Can a bucket word hold p?  (Every 8-byte aligned x86-64 and AArch64
 * Linux heap address can, unless the process opts into 5-level paging
 * hints or memory tagging.) */
static inline bool cdcache__shard_addressable(const void *p)
{
  return ((uintptr_t)p & ~CDCACHE__B_PTR) == 0;
}

/* Any thread, no lock: starts loading hash h's bucket word and the first
 * entry of its chain (as the word reads now: a hint, which a writer may
 * change before the caller takes the lock), for a writer to overlap those
 * misses with its work before it takes the lock.  Prefetching NULL (an
 * empty chain) is harmless. */
static inline void cdcache__shard_prefetch(const struct cdcache__shard *s, uint64_t h)
{
  uintptr_t w = atomic_load_explicit(&s->buckets[h & s->mask], memory_order_relaxed);
  __builtin_prefetch(cdcache__bucket_first(w));
}

/*
 * Finds key's entry (value or placeholder).  Call inside a read-side
 * section (the result stays valid until its end) or with the shard lock
 * held.  A key whose tag is not in its bucket's summary is absent without
 * loading any entry.
 */
static inline struct cdcache__entry *cdcache__shard_find(const struct cdcache__shard *s, uint64_t h,
                                                         const void *key, size_t klen)
{
  /* Acquire pairs with the release store that published the entry (or
   * the link to it) in shard.c; on x86 it costs nothing. */
  uintptr_t w = atomic_load_explicit(&s->buckets[h & s->mask], memory_order_acquire);
  if (!(w & cdcache__tag_bit((uint32_t)h)))
    return NULL;
  struct cdcache__entry *e = cdcache__bucket_first(w);
  for (; e != NULL; e = atomic_load_explicit(&e->next, memory_order_acquire)) {
    if (e->hash == (uint32_t)h && e->klen == klen &&
        cdcache__key_eq(cdcache__entry_key(e), key, klen))
      return e;
  }
  return NULL;
}

/*
 * What a shard operation did, for its caller to count and log: the shard
 * never calls up into counters or logging.  The caller zeroes it.
 */
struct cdcache__shard_report {
  uint64_t evicted;     /* live entries evicted for room */
  uint64_t expired;     /* expired entries reclaimed */
  uint64_t long_chains; /* inserts into a chain already CDCACHE__CHAIN_TRIPWIRE long */
};

/* A chain this long is abnormal: with at most two entries per bucket on
 * average and an unpredictable hash, a chain of 16 has odds of about
 * 4e-10 per bucket.  Inserting into one counts in the report. */
#define CDCACHE__CHAIN_TRIPWIRE CDCACHE_CHAIN_TRIPWIRE

/* Why an entry leaves the table (which counter it bumps). */
enum cdcache__why {
  WHY_REPLACED,
  WHY_EVICTED,
  WHY_EXPIRED,
  WHY_DELETED,
  WHY_INVALIDATED,
  WHY_FLUSHED,
  WHY_FILLED
};

/*
 * Shard lock held.  Unlinks e (a value or a placeholder) from table and
 * eviction list and retires it.  A placeholder's link is marked dead
 * unless why is WHY_FILLED.
 */
void cdcache__shard_unlink(struct cdcache__shard *s, struct cdcache__entry *e,
                           enum cdcache__why why, struct cdcache__shard_report *rep);

/*
 * Shard lock held.  Makes room for and links ne (a value entry or a
 * placeholder) under its key, replacing the entry or placeholder there
 * (a replaced placeholder's link is marked dead, unless it is `own`, the
 * fill completing with this very entry).  Evicts by the cache policy.
 * Returns 0, or CDCACHE_EFULL with nothing linked (ne not consumed).
 */
int cdcache__shard_install(struct cdcache__shard *s, struct cdcache__entry *ne, uint64_t h,
                           uint64_t now, const struct cdcache__fill_link *own,
                           struct cdcache__shard_report *rep);

/* Shard lock held.  Reclaims expired entries in the next few buckets,
 * except `skip` (an entry the caller is about to replace; may be NULL). */
void cdcache__shard_sweep(struct cdcache__shard *s, uint64_t now, const struct cdcache__entry *skip,
                          struct cdcache__shard_report *rep);

#ifdef CDCACHE_ASSERTS
/* Tests only (assertion builds): called at each step of the CLOCK hand
 * right after it gave e a second chance, shard lock held; a test sets
 * e->ref again as a reader racing behind the hand would. */
extern void (*cdcache__hand_hook)(struct cdcache__entry *e);
/* Tests only (assertion builds): called each time s3fifo's main-FIFO hand
 * stands on e, shard lock held, before it reads e's count.  A count above
 * 0 gives e another lap (the count lowered by one, the sketch counting
 * that hit); a count of 0 makes e M's victim (evicted, or, when the
 * ghost's duel asks, only weighed against the newcomer).  The hand never
 * calls it for an entry that is expired or the caller's own.  A test
 * records the counts the hand sees, or sets e->ref first, as a reader
 * racing behind the hand would, to force the step's decision. */
extern void (*cdcache__s3_hand_hook)(struct cdcache__entry *e);
#endif

/* Shard lock held.  Unlinks every entry and placeholder (flush). */
void cdcache__shard_clear(struct cdcache__shard *s, struct cdcache__shard_report *rep);

#endif
