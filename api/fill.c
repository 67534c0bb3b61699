/*
 * Fills that can never cache a stale value: single-flight loads and
 * leases.
 *
 * The race.  A reader misses, loads v1 from the database; meanwhile a
 * writer commits v2 and invalidates the key; then the reader caches v1,
 * which nothing will ever invalidate.  Caffeine, Guava and Ristretto
 * users still report it.  cdcache closes it twice over:
 *
 * 1. Per key.  A fill (a get_or_load leader's load, or a lease handed to
 *    the application) first links a placeholder entry under the key, under
 *    the shard lock.  Anything that later removes or replaces that key -
 *    delete, invalidate, put, flush, the CDC consumer - finds the
 *    placeholder under the same lock and marks the fill dead.  When the
 *    fill completes it takes the shard lock again and caches its value only
 *    if the fill is not dead, so an invalidation that lands at any moment
 *    between the fill's start and its completion wins.
 * 2. Cache-wide.  The fill records the cache epoch when it starts; every
 *    flush advances the epoch before clearing the shards, and a fill whose
 *    epoch is no longer current is not cached.  The CDC consumer flushes
 *    when its stream is (re)established from "now", so a fill that began
 *    before the stream could see its invalidations is never cached.
 * A fill is also not cached while the cache has failed closed.
 *
 * A dead fill still hands its value to the callers already waiting for
 * it (they asked before the write, so the value is as fresh as their
 * request); its placeholder is unlinked so the next caller starts a new
 * fill.
 *
 * Single flight.  Concurrent get_or_load misses of one key find the
 * placeholder and wait on the fill's condition variable (up to their
 * timeout); exactly one caller runs the loader, on its own thread, with
 * no lock held and outside every read-side section.
 *
 * Leases (memcache at Facebook).  cdcache_get_lease hands the miss's
 * caller the fill itself; cdcache_put_leased completes it like a loader
 * would.  A lease that is neither used nor released blocks other fills of
 * its key until fill_timeout_ms (cache clock) has passed; the next caller
 * then takes the key over and the old lease's put reports CDCACHE_ESTALE.
 *
 * Memory ordering.  dead and ph are only touched under the shard lock.
 * The result (done, result, val) is published under the fill's mutex; the
 * leader writes val before taking it, and waiters read val only after
 * seeing done under it.  refs is counted under the mutex; the last
 * reference frees the fill.  The placeholder holds no reference: it is
 * unlinked, under the shard lock, before the leader drops its own.
 */
#include "ops.h"
#include "shard.h"

#include <errno.h>
#include <string.h>

/* A lease released without a value: waiters retry (never returned). */
#define FILL_RETRY (-1000001)

static struct cdcache_fill_key *fk_of(struct cdcache_fill *f)
{
  return (struct cdcache_fill_key *)f;
}

static struct cdcache_fill *fill_new(cdcache_t *c, uint64_t h, const void *key, size_t klen,
                                     uint64_t now, bool lease)
{
  struct cdcache_fill_key *fk = cdcache__alloc(c, sizeof *fk + klen);
  if (fk == NULL)
    return NULL;
  struct cdcache_fill *f = &fk->f;
  memset(fk, 0, sizeof *fk);
  pthread_condattr_t ca;
  if (pthread_mutex_init(&f->mu, NULL) != 0)
    goto fail;
  if (pthread_condattr_init(&ca) != 0)
    goto fail_mu;
  (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int crc = pthread_cond_init(&f->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (crc != 0)
    goto fail_mu;
  f->refs = 1;
  f->epoch = atomic_load_explicit(&c->epoch, memory_order_seq_cst);
  f->started_ms = now;
  f->hash = h;
  f->is_lease = lease;
  f->cache = c;
  fk->klen = klen;
  memcpy(fk->key, key, klen);
  size_t ch = cdcache__charge(&c->cfg.allocator, fk, sizeof *fk + klen);
  f->charge = ch > UINT32_MAX ? UINT32_MAX : (uint32_t)ch;
  return f;
fail_mu:
  pthread_mutex_destroy(&f->mu);
fail:
  cdcache__free(c, fk, sizeof *fk + klen);
  return NULL;
}

static void fill_unref(struct cdcache_fill *f)
{
  pthread_mutex_lock(&f->mu);
  int left = --f->refs;
  pthread_mutex_unlock(&f->mu);
  if (left > 0)
    return;
  cdcache_t *c = f->cache;
  cdcache__free(c, f->val, f->vsize);
  pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
  cdcache__free(c, fk_of(f), sizeof(struct cdcache_fill_key) + fk_of(f)->klen);
}

int cdcache__fill_set_value(cdcache_fill_t *f, const void *val, size_t vlen)
{
  cdcache_t *c = f->cache;
  if (vlen > c->cfg.max_value_len)
    return CDCACHE_E2BIG;
  /* Only the fill's leader runs this, before completion publishes val. */
  void *copy = cdcache__alloc(c, vlen == 0 ? 1 : vlen);
  if (copy == NULL)
    return CDCACHE_ENOMEM;
  if (vlen > 0)
    memcpy(copy, val, vlen);
  cdcache__free(c, f->val, f->vsize);
  f->val = copy;
  f->vlen = vlen;
  f->vsize = vlen == 0 ? 1 : vlen;
  return 0;
}

/*
 * Completes a fill with the loader's result rc (0: f->val is the value).
 * Caches the value if the fill is still alive.  Wakes the waiters.
 * Returns 0 when cached, CDCACHE_ESTALE when the fill was dead or
 * outdated, another error when caching failed, or rc when rc != 0.
 */
static int fill_complete(cdcache_t *c, struct cdcache_fill *f, int rc, uint32_t ttl_ms)
{
  struct cdcache_fill_key *fk = fk_of(f);
  struct cdcache__shard *s = cdcache__shard_of(c, f->hash);
  struct cdcache__tstats *t = cdcache__tstats_of(c);
  uint64_t now = cdcache__now_ms(c);
  struct cdcache__entry *ne = NULL;
  int out = rc;
  if (rc == 0) {
    ne = cdcache__entry_new(c, f->hash, fk->key, fk->klen, f->val, f->vlen, ttl_ms, now, NULL);
    if (ne == NULL)
      out = CDCACHE_ENOMEM;
  }
  struct cdcache__retired r;
  struct cdcache__shard_report rep = {0};
  bool cached = false;
  cdcache__shard_lock(s);
  if (rc == 0) {
    if (f->link.dead || f->epoch != atomic_load_explicit(&c->epoch, memory_order_seq_cst) ||
        !cdcache__fresh(c, now)) {
      out = CDCACHE_ESTALE;
      cdcache__count(c, t, CTR_STALE_REJECTED);
    } else if (ne != NULL) {
      out = cdcache__shard_install(s, ne, f->hash, now, &f->link, &rep);
      if (out == 0) {
        ne = NULL;
        cached = true;
      }
    }
  }
  if (f->link.ph != NULL) /* not replaced by the value: unlink the placeholder */
    cdcache__shard_unlink(s, f->link.ph, WHY_FILLED, &rep);
  cdcache__shard_retire_take(s, &r, false);
  cdcache__shard_unlock(s);
  if (cached)
    cdcache__count(c, t, CTR_PUTS);
  cdcache__account(c, t, &rep);
  cdcache__entry_free(c, ne);
  cdcache__after_write(c, s, &r);

  pthread_mutex_lock(&f->mu);
  f->done = true;
  f->result = rc;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  return out;
}

static int copy_result(struct cdcache_fill *f, void *buf, size_t cap, size_t *vlen)
{
  /* f->mu held, f->done set. */
  if (f->result != 0)
    return f->result;
  *vlen = f->vlen;
  if (f->vlen > cap)
    return CDCACHE_ERANGE;
  if (f->vlen > 0)
    memcpy(buf, f->val, f->vlen);
  return 0;
}

/* Waits for f (a reference held); returns its result copied out, or
 * CDCACHE_ETIMEDOUT.  Drops the reference. */
static int fill_wait(struct cdcache_fill *f, uint32_t timeout_ms, void *buf, size_t cap,
                     size_t *vlen)
{
  struct timespec deadline;
  int rc = 0;
  if (timeout_ms != CDCACHE_WAIT_FOREVER)
    cdcache__deadline_after(&deadline, timeout_ms);
  pthread_mutex_lock(&f->mu);
  while (!f->done && !f->taken_over && rc == 0) {
    if (timeout_ms == CDCACHE_WAIT_FOREVER)
      pthread_cond_wait(&f->cv, &f->mu);
    else if (pthread_cond_timedwait(&f->cv, &f->mu, &deadline) == ETIMEDOUT)
      rc = CDCACHE_ETIMEDOUT;
  }
  if (f->done)
    rc = copy_result(f, buf, cap, vlen);
  else if (f->taken_over)
    rc = FILL_RETRY; /* join the fill that took the key over */
  pthread_mutex_unlock(&f->mu);
  fill_unref(f);
  return rc;
}

/* What a miss found under the shard lock. */
enum miss_kind { MISS_HIT, MISS_LEAD, MISS_WAIT, MISS_BUSY, MISS_ERR };

/*
 * Shard lock taken and released here.  Either serves a value that
 * appeared (MISS_HIT), joins the fill in flight (MISS_WAIT, *fp
 * referenced), reports it (MISS_BUSY, when !may_wait), or starts a new
 * fill with its placeholder linked (MISS_LEAD, *fp).
 */
static enum miss_kind on_miss(cdcache_t *c, uint64_t h, const void *key, size_t klen, bool lease,
                              bool may_wait, void *buf, size_t cap, size_t *vlen, int *rc,
                              struct cdcache_fill **fp)
{
  struct cdcache__shard *s = cdcache__shard_of(c, h);
  uint64_t now = cdcache__now_ms(c);
  struct cdcache__tstats *t = cdcache__tstats_of(c);
  /* Allocate before locking; freed below if not needed. */
  struct cdcache_fill *nf = fill_new(c, h, key, klen, now, lease);
  struct cdcache__entry *ph =
      nf != NULL ? cdcache__entry_new(c, h, key, klen, NULL, 0, CDCACHE_TTL_NONE, now, nf) : NULL;
  enum miss_kind kind;
  struct cdcache__retired r;
  struct cdcache__shard_report rep = {0};
  struct cdcache_fill *stale = NULL; /* a fill past fill_timeout_ms, taken over */
  cdcache__shard_lock(s);
  struct cdcache__entry *e = cdcache__shard_find(s, h, key, klen);
  if (e != NULL && !(e->flags & CDCACHE__E_PLACEHOLDER)) {
    *rc = cdcache__serve(c, e, buf, cap, vlen);
    if (*rc != CDCACHE_ENOENT) {
      kind = MISS_HIT;
      goto out;
    }
    e = NULL; /* expired or failed closed: fill it anew */
  }
  if (e != NULL) {
    struct cdcache_fill *f = cdcache__entry_fill(e);
    /* A clock that steps back never makes a fill look old. */
    if (now >= f->started_ms && now - f->started_ms >= c->cfg.fill_timeout_ms) {
      /* An abandoned lease or a hung load: the new placeholder replaces
       * it below (its result will be stale), or nothing changes if that
       * fails. */
      stale = f;
    } else if (!may_wait) {
      kind = MISS_BUSY;
      goto out;
    } else {
      pthread_mutex_lock(&f->mu);
      f->refs++;
      pthread_mutex_unlock(&f->mu);
      *fp = f;
      kind = MISS_WAIT;
      goto out;
    }
  }
  if (ph == NULL) {
    *rc = CDCACHE_ENOMEM;
    kind = MISS_ERR;
    goto out;
  }
  /* A placeholder counts against the byte budget like any entry. */
  *rc = cdcache__shard_install(s, ph, h, now, NULL, &rep);
  if (*rc != 0) {
    kind = MISS_ERR;
    goto out;
  }
  if (stale != NULL) {
    /* The old fill is dead now (install replaced its placeholder); its
     * leader still holds its reference (it has not completed: its
     * placeholder was linked), so it is safe to wake its waiters, who
     * retry and find this fill. */
    pthread_mutex_lock(&stale->mu);
    stale->taken_over = true;
    pthread_cond_broadcast(&stale->cv);
    pthread_mutex_unlock(&stale->mu);
  }
  nf->link.ph = ph;
  *fp = nf;
  nf = NULL;
  ph = NULL;
  kind = MISS_LEAD;
out:
  cdcache__shard_retire_take(s, &r, false);
  cdcache__shard_unlock(s);
  cdcache__account(c, t, &rep);
  cdcache__entry_free(c, ph);
  if (nf != NULL)
    fill_unref(nf);
  cdcache__after_write(c, s, &r);
  return kind;
}

/* Runs the loader as the fill's leader and completes the fill. */
static int lead(cdcache_t *c, struct cdcache_fill *f, const void *key, size_t klen,
                cdcache_loader_fn loader, void *ctx, uint32_t ttl_ms, void *buf, size_t cap,
                size_t *vlen)
{
  cdcache__count(c, cdcache__tstats_of(c), CTR_LOADS);
  int lrc = loader(ctx, key, klen, f);
  if (lrc == 0 && f->val == NULL)
    lrc = CDCACHE_ELOADER;
  if (lrc == FILL_RETRY)
    lrc = CDCACHE_ELOADER;
  (void)fill_complete(c, f, lrc, ttl_ms);
  pthread_mutex_lock(&f->mu);
  int rc = copy_result(f, buf, cap, vlen);
  pthread_mutex_unlock(&f->mu);
  fill_unref(f);
  return rc;
}

int cdcache__get_or_load(cdcache_t *c, const void *key, size_t klen, cdcache_loader_fn loader,
                         void *ctx, uint32_t ttl_ms, uint32_t timeout_ms, void *buf, size_t cap,
                         size_t *vlen)
{
  uint64_t h = cdcache__hash(c->secret, key, klen);
  bool hit = false;
  int rc;
  for (;;) {
    rc = cdcache__lookup(c, h, key, klen, buf, cap, vlen);
    if (rc != CDCACHE_ENOENT) {
      hit = true;
      break;
    }
    struct cdcache_fill *f = NULL;
    enum miss_kind kind = on_miss(c, h, key, klen, false, timeout_ms != 0, buf, cap, vlen, &rc, &f);
    if (kind == MISS_HIT) {
      hit = true;
    } else if (kind == MISS_BUSY) {
      rc = CDCACHE_EBUSY;
    } else if (kind == MISS_WAIT) {
      cdcache__count(c, cdcache__tstats_of(c), CTR_LOAD_WAITS);
      rc = fill_wait(f, timeout_ms, buf, cap, vlen);
      if (rc == FILL_RETRY)
        continue; /* a lease given up without a value: try again */
    } else if (kind == MISS_LEAD) {
      rc = lead(c, f, key, klen, loader, ctx, ttl_ms, buf, cap, vlen);
    }
    break;
  }
  /* Exactly one of hits or misses per call. */
  cdcache__count(c, cdcache__tstats_of(c), hit ? CTR_HITS : CTR_MISSES);
  return rc;
}

int cdcache__get_lease(cdcache_t *c, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *vlen, cdcache_lease_t **lease)
{
  uint64_t h = cdcache__hash(c->secret, key, klen);
  *lease = NULL;
  int rc = cdcache__lookup(c, h, key, klen, buf, cap, vlen);
  if (rc == CDCACHE_ENOENT) {
    struct cdcache_fill *f = NULL;
    switch (on_miss(c, h, key, klen, true, false, buf, cap, vlen, &rc, &f)) {
    case MISS_HIT:
    case MISS_ERR:
      break;
    case MISS_BUSY:
    case MISS_WAIT: /* not reached: may_wait is false */
      rc = CDCACHE_EBUSY;
      break;
    case MISS_LEAD:
      *lease = (cdcache_lease_t *)f;
      rc = CDCACHE_ENOENT;
      break;
    }
  }
  cdcache__count(c, cdcache__tstats_of(c),
                 (rc == 0 || rc == CDCACHE_ERANGE) ? CTR_HITS : CTR_MISSES);
  return rc;
}

int cdcache__put_leased(cdcache_t *c, cdcache_lease_t *lease, const void *val, size_t vlen,
                        uint32_t ttl_ms)
{
  struct cdcache_fill *f = (struct cdcache_fill *)lease;
  int rc = cdcache__fill_set_value(f, val, vlen);
  if (rc != 0) {
    (void)fill_complete(c, f, FILL_RETRY, ttl_ms);
  } else {
    rc = fill_complete(c, f, 0, ttl_ms);
  }
  fill_unref(f);
  return rc;
}

int cdcache__lease_release(cdcache_t *c, cdcache_lease_t *lease)
{
  struct cdcache_fill *f = (struct cdcache_fill *)lease;
  (void)fill_complete(c, f, FILL_RETRY, CDCACHE_TTL_NONE);
  fill_unref(f);
  return 0;
}
