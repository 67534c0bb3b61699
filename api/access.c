/*
 * get, put, delete, invalidate and flush: the operations on one key (or
 * all keys) behind the facade.
 *
 * get runs inside an RCU read-side section and takes no lock; it writes
 * nothing shared in the common case (the entry's hit count only when it
 * changes, and this thread's own counter block).  It reads the clock only
 * for an entry with a TTL, or while a CDC subscription bounds staleness.  Every writer
 * allocates outside the shard lock, links under it, and hands retired
 * entries to the reclaimer after dropping it.
 *
 * Flush and fills: flush advances the cache epoch (seq_cst) before it
 * clears the shards one by one.  A fill compares its starting epoch with
 * the current one under its shard's lock when it completes, so a fill
 * either completes before the flush reaches its shard (and is cleared by
 * it) or sees the new epoch and is not cached.
 */
#include "ops.h"
#include "shard.h"

#include <string.h>

static uint32_t effective_ttl(const cdcache_t *c, uint32_t ttl_ms)
{
  if (ttl_ms == CDCACHE_TTL_DEFAULT)
    return c->cfg.default_ttl_ms == 0 ? CDCACHE_TTL_NONE : c->cfg.default_ttl_ms;
  return ttl_ms;
}

static uint8_t entry_flags(const cdcache_t *c, uint32_t ttl, const struct cdcache_fill *fill)
{
  uint8_t flags = cdcache__policy_s3(c->cfg.policy) ? CDCACHE__E_COUNT3 : 0;
  if (fill != NULL)
    flags |= CDCACHE__E_PLACEHOLDER;
  else if (ttl != CDCACHE_TTL_NONE)
    flags |= CDCACHE__E_TTL | (cdcache__policy_volatile(c->cfg.policy) ? CDCACHE__E_VOLATILE : 0);
  return flags;
}

/* Writes an entry into e, fresh or recycled (e->charge is already set). */
static void entry_write(struct cdcache__entry *e, uint8_t flags, uint64_t h, const void *key,
                        size_t klen, const void *val, size_t vlen, uint64_t expiry,
                        struct cdcache_fill *fill)
{
  atomic_init(&e->next, NULL);
  e->u.lru.prev = e->u.lru.next = NULL;
  e->hash = (uint32_t)h;
  e->vlen = (uint32_t)vlen;
  e->klen = (uint16_t)klen;
  e->flags = flags;
  atomic_init(&e->ref, 0);
  e->in_main = 0;
  unsigned char *p = e->data;
  if (flags & CDCACHE__E_TTL) {
    memcpy(p, &expiry, sizeof expiry);
    p += sizeof expiry;
  }
  if (flags & CDCACHE__E_PLACEHOLDER) {
    uintptr_t fp = (uintptr_t)&fill->link;
    memcpy(p, &fp, sizeof fp);
    p += sizeof fp;
  }
  cdcache__copy(p, key, klen);
  cdcache__copy(p + klen, val, vlen);
}

/* A fresh entry of size bytes, charged what the allocator reports; NULL
 * when the allocator fails, or returns an address a bucket word cannot
 * hold (shard.h: above 2^48, or not 8-byte aligned). */
static struct cdcache__entry *entry_alloc(cdcache_t *c, size_t size)
{
  struct cdcache__entry *e = cdcache__alloc(c, size);
  if (e == NULL)
    return NULL;
  if (!cdcache__shard_addressable(e)) {
    cdcache__free(c, e, size);
    return NULL;
  }
  e->charge = (uint32_t)cdcache__charge(&c->cfg.allocator, e, size) & 0x7fffffffu;
  return e;
}

struct cdcache__entry *cdcache__entry_new(cdcache_t *c, uint64_t h, const void *key, size_t klen,
                                          const void *val, size_t vlen, uint32_t ttl_ms,
                                          uint64_t now, struct cdcache_fill *fill)
{
  uint32_t ttl = effective_ttl(c, ttl_ms);
  uint8_t flags = entry_flags(c, ttl, fill);
  struct cdcache__entry *e = entry_alloc(c, cdcache__entry_size(flags, klen, vlen));
  if (e == NULL)
    return NULL;
  if (fill != NULL) {
    /* A placeholder also carries its fill's own bytes: leases and loads
     * in flight count against max_bytes like the values they will bring. */
    uint64_t charge = (uint64_t)e->charge + fill->charge;
    e->charge = (uint32_t)(charge > 0x7fffffffu ? 0x7fffffffu : charge);
  }
  entry_write(e, flags, h, key, klen, val, vlen, now + ttl, fill);
  return e;
}

void cdcache__entry_free(cdcache_t *c, struct cdcache__entry *e)
{
  if (e != NULL)
    cdcache__free(c, e, cdcache__entry_size(e->flags, e->klen, e->vlen));
}

/*
 * Copies e's value out if it may be served now, given fu, the bound read
 * BEFORE e was found (see lookup).  Read side or lock.  The bound errs
 * towards refusing by the coarse clock's tick, as TTLs do.
 */
static inline int serve_bounded(cdcache_t *c, struct cdcache__entry *e, void *buf, size_t cap,
                                size_t *vlen, uint64_t fu)
{
  if (e->flags & CDCACHE__E_PLACEHOLDER)
    return CDCACHE_ENOENT;
  if ((e->flags & CDCACHE__E_TTL) || fu != CDCACHE__FRESH_FOREVER) {
    uint64_t now = cdcache__now_ms(c);
    if (cdcache__expired(c, e, now) ||
        (fu != CDCACHE__FRESH_FOREVER && now + c->clock_slack_ms > fu))
      return CDCACHE_ENOENT;
  }
  size_t n = e->vlen;
  *vlen = n;
  /* A store only when the count changes: no read-modify-write, and a hot
   * entry's line is written at most 1 or 3 times per trip of the hand. */
  uint8_t r = atomic_load_explicit(&e->ref, memory_order_relaxed);
  if (r < cdcache__entry_ref_cap(e->flags))
    atomic_store_explicit(&e->ref, (uint8_t)(r + 1), memory_order_relaxed);
  if (n > cap)
    return CDCACHE_ERANGE;
  cdcache__copy(buf, cdcache__entry_val(e), n);
  return 0;
}

/* Under the entry's shard lock: no eviction of e can run, so the bound
 * read now is as good as one read before e was found. */
int cdcache__serve(cdcache_t *c, struct cdcache__entry *e, void *buf, size_t cap, size_t *vlen)
{
  return serve_bounded(c, e, buf, cap, vlen,
                       atomic_load_explicit(&c->fresh_until, memory_order_acquire));
}

/*
 * The bound is read (acquire) before the entry is looked up.  The CDC
 * thread evicts a changed key and only then publishes a later bound
 * (release), so a reader that sees the new bound also sees the eviction
 * (the key is gone), and a reader that found the old entry compares with
 * the bound of its own time.  Reading the bound after the lookup would let
 * a reader that found the entry while the cache was failed closed serve
 * it under a bound published after its eviction: stale by the whole
 * outage (found by review; test "a reader never serves an entry evicted
 * before the bound it checks" in test_ttl).
 */
static inline int lookup(cdcache_t *c, uint64_t h, const void *key, size_t klen, void *buf,
                         size_t cap, size_t *vlen)
{
  struct cdcache__shard *s = cdcache__shard_of(c, h);
  int rc = CDCACHE_ENOENT;
  uint64_t fu = atomic_load_explicit(&c->fresh_until, memory_order_acquire);
  cdcache__read_lock();
  struct cdcache__entry *e = cdcache__shard_find(s, h, key, klen);
  if (e != NULL)
    rc = serve_bounded(c, e, buf, cap, vlen, fu);
  cdcache__read_unlock();
  return rc;
}

int cdcache__lookup(cdcache_t *c, uint64_t h, const void *key, size_t klen, void *buf, size_t cap,
                    size_t *vlen)
{
  return lookup(c, h, key, klen, buf, cap, vlen);
}

int cdcache__get(cdcache_t *c, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
  uint64_t h = cdcache__hash(c->secret, key, klen);
  int rc = lookup(c, h, key, klen, buf, cap, vlen);
  cdcache__count(c, cdcache__tstats_of(c), rc == CDCACHE_ENOENT ? CTR_MISSES : CTR_HITS);
  return rc;
}

void cdcache__throttle(cdcache_t *c, struct cdcache__shard *s)
{
  /* First free this shard's retire list here, after one grace period of
   * our own: cheap (membarrier), and it does not wait for the reclaimer
   * thread, which naps between rounds. */
  struct cdcache__retired r;
  cdcache__shard_lock(s);
  cdcache__shard_retire_take(s, &r, true);
  cdcache__shard_unlock(s);
  cdcache__retire_free_now(&c->rec, &r);
  if (cdcache__backlog_high(&c->rec))
    cdcache__retire_barrier();
}

void cdcache__retire_drain_all(cdcache_t *c)
{
  for (uint32_t i = 0; i < c->nshards; i++) {
    struct cdcache__retired r;
    struct cdcache__shard *s = &c->shards[i];
    cdcache__shard_lock(s);
    cdcache__shard_retire_take(s, &r, true);
    cdcache__shard_unlock(s);
    cdcache__retire_free_now(&c->rec, &r);
  }
  cdcache__retire_barrier();
  /* The recycled entries too: drained means nothing retired is held. */
  for (uint32_t i = 0; i < c->nshards; i++) {
    struct cdcache__shard *s = &c->shards[i];
    cdcache__shard_lock(s);
    cdcache__shard_recycled_free(s);
    cdcache__shard_unlock(s);
  }
}

void cdcache__retire_drain_forked(cdcache_t *c)
{
  cdcache__retire_barrier();
  for (uint32_t i = 0; i < c->nshards; i++) {
    struct cdcache__retired r;
    struct cdcache__shard *s = &c->shards[i];
    /* Held by a thread of the parent at the fork: its lists may be half
     * updated; leave them (the child's copy leaks, nothing worse). */
    if (pthread_mutex_trylock(&s->lock) != 0)
      continue;
    cdcache__retire_take(&c->rec, &s->retired, &r, true);
    pthread_mutex_unlock(&s->lock);
    cdcache__retire_free_now(&c->rec, &r);
  }
}

/* With s locked: a put of the key failed, but the database moved on (the
 * caller was writing a newer value): a fill of the key in flight read the
 * older value and must not be cached.  Its placeholder goes; the fill,
 * marked dead, still answers its waiters but caches nothing.  The key's
 * cached value, if any, stays (the caller learns of the failure). */
static void kill_fill_locked(struct cdcache__shard *s, uint64_t h, const void *key, size_t klen,
                             struct cdcache__shard_report *rep)
{
  struct cdcache__entry *ph = cdcache__shard_find(s, h, key, klen);
  if (ph != NULL && (ph->flags & CDCACHE__E_PLACEHOLDER))
    cdcache__shard_unlink(s, ph, WHY_REPLACED, rep);
}

void cdcache__put_failed(cdcache_t *c, const void *key, size_t klen)
{
  uint64_t h = cdcache__hash(c->secret, key, klen);
  struct cdcache__shard *s = cdcache__shard_of(c, h);
  struct cdcache__shard_report rep = {0};
  struct cdcache__retired r;
  cdcache__shard_lock(s);
  kill_fill_locked(s, h, key, klen, &rep);
  cdcache__shard_retire_take(s, &r, false);
  cdcache__shard_unlock(s);
  cdcache__after_write(c, s, &r);
}

int cdcache__put(cdcache_t *c, const void *key, size_t klen, const void *val, size_t vlen,
                 uint32_t ttl_ms)
{
  uint64_t h = cdcache__hash(c->secret, key, klen);
  struct cdcache__shard *s = cdcache__shard_of(c, h);
  cdcache__shard_prefetch(s, h);
  uint64_t now = cdcache__now_ms(c);
  if (!cdcache__fresh(c, now)) {
    cdcache__put_failed(c, key, klen);
    return CDCACHE_ESTALE;
  }
  /* Throttle first, so the bytes this put adds find the backlog small. */
  if (cdcache__throttle_needed(&c->rec))
    cdcache__throttle(c, s);
  uint32_t ttl = effective_ttl(c, ttl_ms);
  uint8_t flags = entry_flags(c, ttl, NULL);
  size_t size = cdcache__entry_size(flags, klen, vlen);
  /* A small entry overwrites a recycled one of its size (reclaim.c),
   * under the lock; otherwise it is allocated and written before the lock
   * is taken. */
  struct cdcache__entry *e = NULL;
  if (size <= CDCACHE__RECYCLE_MAX_SIZE && cdcache__shard_recycled_maybe(s)) {
    cdcache__shard_lock(s);
    e = cdcache__shard_recycled(s, size);
    if (e == NULL)
      cdcache__shard_unlock(s);
  }
  const bool locked = e != NULL;
  if (e == NULL && (e = entry_alloc(c, size)) == NULL) {
    cdcache__put_failed(c, key, klen);
    return CDCACHE_ENOMEM;
  }
  entry_write(e, flags, h, key, klen, val, vlen, now + ttl, NULL);
  struct cdcache__tstats *t = cdcache__tstats_of(c);
  struct cdcache__shard_report rep = {0};
  struct cdcache__retired r;
  if (!locked)
    cdcache__shard_lock(s);
  int rc = cdcache__shard_install(s, e, h, now, NULL, &rep);
  if (rc == 0)
    cdcache__shard_sweep(s, now, NULL, &rep);
  else
    kill_fill_locked(s, h, key, klen, &rep);
  cdcache__shard_retire_take(s, &r, false);
  cdcache__shard_unlock(s);
  if (rc == 0)
    cdcache__count(c, t, CTR_PUTS);
  else
    cdcache__entry_free(c, e);
  cdcache__account(c, t, &rep);
  cdcache__after_write(c, s, &r);
  return rc;
}

int cdcache__remove(cdcache_t *c, const void *key, size_t klen, bool invalidation)
{
  uint64_t h = cdcache__hash(c->secret, key, klen);
  struct cdcache__shard *s = cdcache__shard_of(c, h);
  struct cdcache__tstats *t = cdcache__tstats_of(c);
  struct cdcache__shard_report rep = {0};
  struct cdcache__retired r;
  int rc = CDCACHE_ENOENT;
  cdcache__shard_lock(s);
  struct cdcache__entry *e = cdcache__shard_find(s, h, key, klen);
  if (e != NULL) {
    cdcache__shard_unlink(s, e, invalidation ? WHY_INVALIDATED : WHY_DELETED, &rep);
    rc = 0;
  }
  cdcache__shard_retire_take(s, &r, false);
  cdcache__shard_unlock(s);
  if (rc == 0)
    cdcache__count(c, t, invalidation ? CTR_INVALIDATIONS : CTR_DELETES);
  cdcache__account(c, t, &rep);
  cdcache__after_write(c, s, &r);
  return rc;
}

int cdcache__flush(cdcache_t *c)
{
  struct cdcache__tstats *t = cdcache__tstats_of(c);
  atomic_fetch_add_explicit(&c->epoch, 1, memory_order_seq_cst);
  for (uint32_t i = 0; i < c->nshards; i++) {
    struct cdcache__shard *s = &c->shards[i];
    struct cdcache__retired r;
    struct cdcache__shard_report rep = {0};
    cdcache__shard_lock(s);
    cdcache__shard_clear(s, &rep);
    cdcache__shard_retire_take(s, &r, true);
    cdcache__shard_unlock(s);
    cdcache__retire_submit(&c->rec, &r);
  }
  cdcache__count(c, t, CTR_FLUSHES);
  return 0;
}

void cdcache__account_slow(cdcache_t *c, struct cdcache__tstats *t,
                           const struct cdcache__shard_report *rep)
{
  if (rep->evicted != 0)
    cdcache__count_add(c, t, CTR_EVICTIONS, rep->evicted);
  if (rep->expired != 0)
    cdcache__count_add(c, t, CTR_EXPIRATIONS, rep->expired);
  if (__builtin_expect(rep->long_chains == 0, 1))
    return;
  cdcache__count_add(c, t, CTR_LONG_CHAINS, rep->long_chains);
  uint64_t now = cdcache__now_ms(c);
  uint64_t last = atomic_load_explicit(&c->chain_log_ms, memory_order_relaxed);
  if (last != UINT64_MAX && now - last < CDCACHE__CHAIN_LOG_INTERVAL_MS && now >= last)
    return;
  if (!atomic_compare_exchange_strong_explicit(&c->chain_log_ms, &last, now, memory_order_relaxed,
                                               memory_order_relaxed))
    return; /* another thread logs this interval */
  uint64_t v[CTR__COUNT];
  cdcache__tstats_sum(&c->tstats, v);
  cdcache__log(c, CDCACHE_LOG_WARNING,
               "hash chains of %u or more entries (%llu inserts so far): hostile keys or a "
               "broken random source",
               (unsigned)CDCACHE__CHAIN_TRIPWIRE, (unsigned long long)v[CTR_LONG_CHAINS]);
}
