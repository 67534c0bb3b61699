/* Deferred reclamation of unlinked entries (see reclaim.c). */
#ifndef CDCACHE_RECLAIM_H
#define CDCACHE_RECLAIM_H

#include "cache.h"

/* A retire list taken from a shard, to submit after the lock is dropped. */
struct cdcache__retired {
  struct cdcache__entry *list;
  uint64_t bytes;
};

/* Shard lock held: put an unlinked entry on the shard's retire list and
 * move `charge` bytes to bytes_pending. */
void cdcache__retire(cdcache_t *c, struct cdcache__shard *s, struct cdcache__entry *e,
                     uint64_t charge);
/* Shard lock held: take the retire list if it is a full batch (or any
 * non-empty list when force). */
void cdcache__retire_take(const cdcache_t *c, struct cdcache__shard *s,
                          struct cdcache__retired *out, bool force);
/* No lock held: free the list after a grace period. */
void cdcache__retire_submit(cdcache_t *c, struct cdcache__retired *r);
/* No lock held: is bytes_pending past its cap? */
bool cdcache__throttle_needed(const cdcache_t *c);
/* No lock held, not in a read-side section: submit s's list and wait
 * until every queued batch is freed. */
void cdcache__throttle(cdcache_t *c, struct cdcache__shard *s);
/* In a child forked through cdcache_fork_*(), closing a handle from
 * before the fork: wait for the batches call_rcu inherited (they may name
 * c), then free the retire lists of the shards whose lock is free. */
void cdcache__retire_drain_forked(cdcache_t *c);
/* No lock held: free every retired entry of every shard (close, tests). */
void cdcache__retire_drain_all(cdcache_t *c);

/*
 * The read-side section (urcu-bp), with the ThreadSanitizer annotation of
 * reclaim.c.  Release builds inline liburcu's read lock (_LGPL_SOURCE).
 * Sanitizer builds call the out-of-line one instead: liburcu-bp 0.13 hands
 * out its per-thread reader slots at addresses that do not honour the
 * 128-byte alignment its struct declares (harmless on x86), which UBSan
 * would report in the inlined code inside our own functions.
 */
#if !defined(_LGPL_SOURCE) && !defined(CDCACHE_SANITIZED)
#define _LGPL_SOURCE
#endif
#include <urcu-bp.h>

static inline void cdcache__read_lock(void)
{
  urcu_bp_read_lock();
}

static inline void cdcache__read_unlock(void)
{
  CDCACHE__TSAN_RELEASE(&cdcache__grace_token);
  urcu_bp_read_unlock();
}

#endif
