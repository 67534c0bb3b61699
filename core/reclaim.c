/*
 * Deferred reclamation of unlinked entries.
 *
 * A reader may still be looking at an entry after a writer unlinked it, so
 * the entry is freed only after an RCU grace period (liburcu's urcu-bp
 * flavour: readers need no registration and announce nothing).
 *
 * Batching.  Each shard keeps the entries it unlinked on a retire list
 * (linked through the entry's list union, which is unused once the entry
 * is off its eviction list; the chain link `next` must stay intact for
 * readers still walking through it).  When a list reaches RETIRE_BATCH
 * entries (or retire_batch_bytes, a small share of the byte bound) the
 * writer, after dropping the shard lock, hands the whole list
 * to call_rcu as one callback: one grace-period registration per batch
 * instead of per entry.  If the batch header cannot be allocated the
 * writer waits for a grace period itself and frees the list.
 *
 * Accounting and throttling.  An entry's bytes move from the shard's live
 * bytes to the cache-wide bytes_pending when it is unlinked, and leave
 * bytes_pending when freed, so stats and the max_bytes bound cover memory
 * that is unlinked but not yet free (batch headers included).  When
 * bytes_pending passes half of pending_cap, the writer that noticed it
 * (outside every lock, and never inside a read-side section: cdcache holds
 * none across a call) waits for a grace period and frees its shard's
 * retire list itself; if the batches already queued still hold more than
 * three quarters of pending_cap, it also waits with rcu_barrier() until every queued batch
 * is freed.  Writers thus slow down to the reclaimer's pace instead of
 * letting the backlog grow.
 *
 * Ordering for ThreadSanitizer, which cannot see the grace period: a
 * reader releases cdcache__grace_token just before rcu_read_unlock(), and
 * the reclaimer acquires it after the grace period, before freeing.  That
 * is the happens-before edge the grace period provides.
 */
#include "reclaim.h"

char cdcache__grace_token;
/* ThreadSanitizer: a batch is released by its submitter before call_rcu
 * and acquired by the callback; every callback releases barrier_token
 * when done, and rcu_barrier's caller acquires it. */
static char barrier_token;

#define RETIRE_BATCH 64

struct batch {
  struct rcu_head rcu;
  cdcache_t *cache;
  struct cdcache__entry *list;
  uint64_t bytes;
};

static void free_list(cdcache_t *c, struct cdcache__entry *e, uint64_t bytes)
{
  CDCACHE__TSAN_ACQUIRE(&cdcache__grace_token);
  while (e != NULL) {
    struct cdcache__entry *next = e->u.ret;
    cdcache__free(c, e, cdcache__entry_size(e->flags, e->klen, e->vlen));
    e = next;
  }
  atomic_fetch_sub_explicit(&c->bytes_pending, bytes, memory_order_relaxed);
}

static void batch_cb(struct rcu_head *head)
{
  struct batch *b = caa_container_of(head, struct batch, rcu);
  CDCACHE__TSAN_ACQUIRE(b);
  cdcache_t *c = b->cache;
  free_list(c, b->list, b->bytes);
  cdcache__free(c, b, sizeof *b);
  CDCACHE__TSAN_RELEASE(&barrier_token);
}

/* rcu_barrier() with its ThreadSanitizer edge. */
static void barrier(void)
{
  urcu_bp_barrier();
  CDCACHE__TSAN_ACQUIRE(&barrier_token);
}

void cdcache__retire(cdcache_t *c, struct cdcache__shard *s, struct cdcache__entry *e,
                     uint64_t charge)
{
  e->u.ret = s->retired;
  s->retired = e;
  s->retired_count++;
  s->retired_bytes += charge;
  atomic_fetch_add_explicit(&c->bytes_pending, charge, memory_order_relaxed);
}

void cdcache__retire_take(const cdcache_t *c, struct cdcache__shard *s,
                          struct cdcache__retired *out, bool force)
{
  out->list = NULL;
  out->bytes = 0;
  if (s->retired == NULL ||
      (!force && s->retired_count < RETIRE_BATCH && s->retired_bytes < c->retire_batch_bytes))
    return;
  out->list = s->retired;
  out->bytes = s->retired_bytes;
  s->retired = NULL;
  s->retired_count = 0;
  s->retired_bytes = 0;
}

void cdcache__retire_submit(cdcache_t *c, struct cdcache__retired *r)
{
  if (r->list == NULL)
    return;
  struct batch *b = cdcache__alloc(c, sizeof *b);
  if (b == NULL) {
    urcu_bp_synchronize_rcu();
    free_list(c, r->list, r->bytes);
  } else {
    b->cache = c;
    b->list = r->list;
    /* The batch header itself is memory held until the callback runs. */
    b->bytes = r->bytes + sizeof *b;
    atomic_fetch_add_explicit(&c->bytes_pending, sizeof *b, memory_order_relaxed);
    CDCACHE__TSAN_RELEASE(b);
    urcu_bp_call_rcu(&b->rcu, batch_cb);
  }
  r->list = NULL;
  r->bytes = 0;
}

bool cdcache__throttle_needed(const cdcache_t *c)
{
  /* Half the reserve: past it, a writer frees its own shard's list (see
   * cdcache__throttle). */
  return atomic_load_explicit(&c->bytes_pending, memory_order_relaxed) > c->pending_cap / 2;
}

void cdcache__throttle(cdcache_t *c, struct cdcache__shard *s)
{
  /* First free this shard's retire list here, after one grace period of
   * our own: cheap (membarrier), and it does not wait for the call_rcu
   * thread, which naps between rounds. */
  struct cdcache__retired r;
  pthread_mutex_lock(&s->lock);
  cdcache__retire_take(c, s, &r, true);
  pthread_mutex_unlock(&s->lock);
  if (r.list != NULL) {
    urcu_bp_synchronize_rcu();
    free_list(c, r.list, r.bytes);
  }
  /* Only when the batches already queued hold three quarters of the
   * reserve, wait for the reclaimer to free them (the last quarter absorbs
   * what writers past their check evict and allocate meanwhile). */
  if (atomic_load_explicit(&c->bytes_pending, memory_order_relaxed) > c->pending_cap / 4 * 3)
    barrier();
}

void cdcache__retire_drain_forked(cdcache_t *c)
{
  barrier();
  for (uint32_t i = 0; i < c->nshards; i++) {
    struct cdcache__retired r;
    struct cdcache__shard *s = &c->shards[i];
    /* Held by a thread of the parent at the fork: its lists may be half
     * updated; leave them (the child's copy leaks, nothing worse). */
    if (pthread_mutex_trylock(&s->lock) != 0)
      continue;
    cdcache__retire_take(c, s, &r, true);
    pthread_mutex_unlock(&s->lock);
    if (r.list != NULL) {
      urcu_bp_synchronize_rcu();
      free_list(c, r.list, r.bytes);
    }
  }
}

void cdcache__retire_drain_all(cdcache_t *c)
{
  for (uint32_t i = 0; i < c->nshards; i++) {
    struct cdcache__retired r;
    struct cdcache__shard *s = &c->shards[i];
    pthread_mutex_lock(&s->lock);
    cdcache__retire_take(c, s, &r, true);
    pthread_mutex_unlock(&s->lock);
    if (r.list != NULL) {
      urcu_bp_synchronize_rcu();
      free_list(c, r.list, r.bytes);
    }
  }
  barrier();
}
