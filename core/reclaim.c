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
  struct cdcache__reclaimer *rc;
  struct cdcache__entry *list;
  uint64_t bytes;
};

static void free_list(struct cdcache__reclaimer *rc, struct cdcache__entry *e, uint64_t bytes)
{
  CDCACHE__TSAN_ACQUIRE(&cdcache__grace_token);
  while (e != NULL) {
    struct cdcache__entry *next = e->u.ret;
    rc->alloc->free(rc->alloc->ctx, e, cdcache__entry_size(e->flags, e->klen, e->vlen));
    e = next;
  }
  atomic_fetch_sub_explicit(&rc->bytes_pending, bytes, memory_order_relaxed);
}

static void batch_cb(struct rcu_head *head)
{
  struct batch *b = caa_container_of(head, struct batch, rcu);
  CDCACHE__TSAN_ACQUIRE(b);
  struct cdcache__reclaimer *rc = b->rc;
  free_list(rc, b->list, b->bytes);
  rc->alloc->free(rc->alloc->ctx, b, sizeof *b);
  CDCACHE__TSAN_RELEASE(&barrier_token);
}

void cdcache__retire_barrier(void)
{
  urcu_bp_barrier();
  CDCACHE__TSAN_ACQUIRE(&barrier_token);
}

void cdcache__retire(struct cdcache__reclaimer *rc, struct cdcache__retire_list *l,
                     struct cdcache__entry *e, uint64_t charge)
{
  e->u.ret = l->head;
  l->head = e;
  l->count++;
  l->bytes += charge;
  atomic_fetch_add_explicit(&rc->bytes_pending, charge, memory_order_relaxed);
}

void cdcache__retire_take(const struct cdcache__reclaimer *rc, struct cdcache__retire_list *l,
                          struct cdcache__retired *out, bool force)
{
  out->list = NULL;
  out->bytes = 0;
  if (l->head == NULL || (!force && l->count < RETIRE_BATCH && l->bytes < rc->batch_bytes))
    return;
  out->list = l->head;
  out->bytes = l->bytes;
  l->head = NULL;
  l->count = 0;
  l->bytes = 0;
}

void cdcache__retire_free_now(struct cdcache__reclaimer *rc, struct cdcache__retired *r)
{
  if (r->list == NULL)
    return;
  urcu_bp_synchronize_rcu();
  free_list(rc, r->list, r->bytes);
  r->list = NULL;
  r->bytes = 0;
}

void cdcache__retire_submit(struct cdcache__reclaimer *rc, struct cdcache__retired *r)
{
  if (r->list == NULL)
    return;
  struct batch *b = rc->alloc->malloc(rc->alloc->ctx, sizeof *b);
  if (b == NULL) {
    cdcache__retire_free_now(rc, r);
    return;
  }
  b->rc = rc;
  b->list = r->list;
  /* The batch header itself is memory held until the callback runs. */
  b->bytes = r->bytes + sizeof *b;
  atomic_fetch_add_explicit(&rc->bytes_pending, sizeof *b, memory_order_relaxed);
  CDCACHE__TSAN_RELEASE(b);
  urcu_bp_call_rcu(&b->rcu, batch_cb);
  r->list = NULL;
  r->bytes = 0;
}

bool cdcache__throttle_needed(const struct cdcache__reclaimer *rc)
{
  /* Half the reserve: past it, a writer frees its own shard's list. */
  return atomic_load_explicit(&rc->bytes_pending, memory_order_relaxed) > rc->pending_cap / 2;
}

bool cdcache__backlog_high(const struct cdcache__reclaimer *rc)
{
  /* Three quarters: the batches already queued must be waited for (the
   * last quarter absorbs what writers past their check evict meanwhile). */
  return atomic_load_explicit(&rc->bytes_pending, memory_order_relaxed) > rc->pending_cap / 4 * 3;
}
