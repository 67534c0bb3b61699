/* A shard: its lock, its RCU-readable table and its eviction (shard.c). */
#ifndef CDCACHE_SHARD_H
#define CDCACHE_SHARD_H

#include "cache.h"
#include "reclaim.h"

#include <string.h>

int cdcache__shard_init(cdcache_t *c, struct cdcache__shard *s, uint64_t cap_entries,
                        uint64_t cap_bytes, uint64_t nbuckets);
/* No readers, no lock: frees every entry and the table. */
void cdcache__shard_destroy(cdcache_t *c, struct cdcache__shard *s);
uint64_t cdcache__shard_table_bytes(uint64_t nbuckets);

/*
 * Finds key's entry (value or placeholder).  Call inside a read-side
 * section (the result stays valid until its end) or with the shard lock
 * held.
 */
static inline struct cdcache__entry *cdcache__shard_find(const struct cdcache__shard *s, uint64_t h,
                                                         const void *key, size_t klen)
{
  /* Acquire pairs with the release store that published the entry (or
   * the link to it) in link_at(); on x86 it costs nothing. */
  struct cdcache__entry *e = atomic_load_explicit(&s->buckets[h & s->mask], memory_order_acquire);
  for (; e != NULL; e = atomic_load_explicit(&e->next, memory_order_acquire)) {
    if (e->hash == (uint32_t)h && e->klen == klen &&
        cdcache__key_eq(cdcache__entry_key(e), key, klen))
      return e;
  }
  return NULL;
}

/* Is a value entry expired at `now` (cache clock)?  Errs early by the
 * coarse clock's lag. */
static inline bool cdcache__expired(const cdcache_t *c, const struct cdcache__entry *e,
                                    uint64_t now)
{
  return (e->flags & CDCACHE__E_TTL) && now + c->clock_slack_ms >= cdcache__entry_expiry(e);
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
 * eviction list and retires it.  A placeholder's fill is marked dead
 * unless why is WHY_FILLED.
 */
void cdcache__shard_unlink(cdcache_t *c, struct cdcache__shard *s, struct cdcache__entry *e,
                           enum cdcache__why why, struct cdcache__shard_report *rep);

/*
 * Shard lock held.  Makes room for and links ne (a value entry or a
 * placeholder) under its key, replacing the entry or placeholder there
 * (a replaced placeholder's fill is marked dead, unless it is `own`, the
 * fill completing with this very entry).  Evicts by the cache policy.
 * Returns 0, or CDCACHE_EFULL with nothing linked (ne not consumed).
 */
int cdcache__shard_install(cdcache_t *c, struct cdcache__shard *s, struct cdcache__entry *ne,
                           uint64_t h, uint64_t now, const struct cdcache_fill *own,
                           struct cdcache__shard_report *rep);

/* Shard lock held.  Reclaims expired entries in the next few buckets,
 * except `skip` (an entry the caller is about to replace; may be NULL). */
void cdcache__shard_sweep(cdcache_t *c, struct cdcache__shard *s, uint64_t now,
                          const struct cdcache__entry *skip, struct cdcache__shard_report *rep);

/* Shard lock held.  Unlinks every entry and placeholder (flush). */
void cdcache__shard_clear(cdcache_t *c, struct cdcache__shard *s,
                          struct cdcache__shard_report *rep);

/* The bytes an entry is charged (what the allocator handed out). */
static inline uint64_t cdcache__entry_charge(const cdcache_t *c, struct cdcache__entry *e)
{
  (void)c;
  return e->charge;
}

#endif
