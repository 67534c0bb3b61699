/* The cache operations behind the facade (access.c, fill.c, cache.c).
 * Arguments are validated by api/cdcache.c before these run. */
#ifndef CDCACHE_OPS_H
#define CDCACHE_OPS_H

#include "cache.h"

/* access.c */
struct cdcache__entry *cdcache__entry_new(cdcache_t *c, uint64_t h, const void *key, size_t klen,
                                          const void *val, size_t vlen, uint32_t ttl_ms,
                                          uint64_t now, struct cdcache_fill *fill);
void cdcache__entry_free(cdcache_t *c, struct cdcache__entry *e);
/* Lock-free lookup; counts nothing.  0, CDCACHE_ERANGE or CDCACHE_ENOENT. */
int cdcache__lookup(cdcache_t *c, uint64_t h, const void *key, size_t klen, void *buf, size_t cap,
                    size_t *vlen);
/* In a read-side section or with the shard lock held: copy e's value out
 * if it may be served now (0, CDCACHE_ERANGE, CDCACHE_ENOENT). */
int cdcache__serve(cdcache_t *c, struct cdcache__entry *e, void *buf, size_t cap, size_t *vlen);
int cdcache__get(cdcache_t *c, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);
/* A put of a valid key failed before reaching the shard (value too long,
 * no memory, cache stale): kill the key's fill in flight, as a put that
 * fails in the shard does.  Takes the shard lock. */
void cdcache__put_failed(cdcache_t *c, const void *key, size_t klen);
int cdcache__put(cdcache_t *c, const void *key, size_t klen, const void *val, size_t vlen,
                 uint32_t ttl_ms);
int cdcache__remove(cdcache_t *c, const void *key, size_t klen, bool invalidation);
int cdcache__flush(cdcache_t *c);
/* No lock held, not in a read-side section: free s's retire list after a
 * grace period of our own, and wait for the queued batches if the
 * backlog is past three quarters of its cap. */
void cdcache__throttle(cdcache_t *c, struct cdcache__shard *s);
/* After a write (no lock held, not in a read-side section): submit the
 * shard's retire batch, throttle if needed.  Inline: most writes have
 * nothing to do here. */
static inline void cdcache__after_write(cdcache_t *c, struct cdcache__shard *s,
                                        struct cdcache__retired *r)
{
  if (r->list != NULL)
    cdcache__retire_submit(&c->rec, r);
  if (cdcache__throttle_needed(&c->rec))
    cdcache__throttle(c, s);
}
/* In a child forked through cdcache_fork_*(), closing a handle from
 * before the fork: wait for the batches the parent had queued (they may
 * name c; the child's reclaimer frees them), then free the retire lists
 * of the shards whose lock is free. */
void cdcache__retire_drain_forked(cdcache_t *c);
/* Counts into this thread's block t, or into the cache's shared fallback
 * block (atomic adds) when the thread has none (t NULL). */
static inline void cdcache__count_add(cdcache_t *c, struct cdcache__tstats *t,
                                      enum cdcache__ctr ctr, uint64_t n)
{
  cdcache__count_n(&c->tstats, t, ctr, n);
}
static inline void cdcache__count(cdcache_t *c, struct cdcache__tstats *t, enum cdcache__ctr ctr)
{
  cdcache__count_n(&c->tstats, t, ctr, 1);
}
/* No lock held: counts what a shard operation reported, and logs long
 * chains (at most once per CDCACHE__CHAIN_LOG_INTERVAL_MS). */
void cdcache__account_slow(cdcache_t *c, struct cdcache__tstats *t,
                           const struct cdcache__shard_report *rep);
static inline void cdcache__account(cdcache_t *c, struct cdcache__tstats *t,
                                    const struct cdcache__shard_report *rep)
{
  if ((rep->evicted | rep->expired | rep->long_chains) != 0)
    cdcache__account_slow(c, t, rep);
}
#define CDCACHE__CHAIN_LOG_INTERVAL_MS 10000u

/* fill.c */
int cdcache__get_or_load(cdcache_t *c, const void *key, size_t klen, cdcache_loader_fn loader,
                         void *ctx, uint32_t ttl_ms, uint32_t timeout_ms, void *buf, size_t cap,
                         size_t *vlen);
int cdcache__get_lease(cdcache_t *c, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *vlen, cdcache_lease_t **lease);
int cdcache__put_leased(cdcache_t *c, cdcache_lease_t *lease, const void *val, size_t vlen,
                        uint32_t ttl_ms);
int cdcache__lease_release(cdcache_t *c, cdcache_lease_t *lease);
int cdcache__fill_set_value(cdcache_fill_t *f, const void *val, size_t vlen);

/* cache.c */
int cdcache__open(const cdcache_config_t *cfg, cdcache_t **out);
int cdcache__close(cdcache_t *c);
int cdcache__stats(cdcache_t *c, cdcache_stats_t *st);

#endif
