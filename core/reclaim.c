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
 * bytes_pending when freed (or reused), so stats and the max_bytes bound
 * cover memory that is unlinked but not yet free (batch headers
 * included).  Under the shard lock the moves add up in the retire list's
 * pending_delta, which retire_take applies to bytes_pending once before
 * the lock is dropped: a put that retires an entry and reuses one of the
 * same charge leaves the shared gauge's cache line alone.  When
 * bytes_pending passes half of pending_cap, the writer that noticed it
 * (outside every lock, and never inside a read-side section: cdcache holds
 * none across a call) waits for a grace period and frees its shard's
 * retire list itself; if the batches already queued still hold more than
 * three quarters of pending_cap, it also waits with rcu_barrier() until every queued batch
 * is freed.  Writers thus slow down to the reclaimer's pace instead of
 * letting the backlog grow.
 *
 * Recycling.  Freeing an entry after its grace period and allocating the
 * next one costs a malloc, a free on another thread (the call_rcu thread,
 * whose frees then feed the writers' arena through its locks) and a
 * usable_size call per put.  So entries of up to CDCACHE__RECYCLE_MAX_SIZE
 * bytes (placeholders excepted: their charge includes their fill's bytes)
 * are not freed when their grace period has passed: they go onto
 * their owner's pool (a shard's), and a put that needs exactly that size
 * takes one under the shard lock and overwrites it.  This is safe for the
 * same reason freeing is (P4 of shard.c): an entry reaches a pool only in
 * free_list, after a grace period that began after it was unlinked, so no
 * reader still holds it.  The pool is a stack pushed by CAS (the
 * call_rcu thread and a throttling writer may push at once) and taken
 * whole by exchange under the owner's lock into a lock-protected `spare`
 * list, so no element is popped alone and there is no ABA.  A pooled
 * entry's bytes stay in bytes_pending until it is reused, so stats and
 * max_bytes still cover it; a pusher reserves its charge against the
 * pool's bound first (16 bytes per entry of the shard's capacity: a
 * quarter of its entries when they are small; at least two batches of
 * small entries; within a batch's bytes), and frees what does not fit.  Only an
 * entry of exactly the size it was allocated with is reused, so the
 * allocator's free still receives the size that was asked of malloc.
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

#define RETIRE_BATCH CDCACHE__RETIRE_BATCH

struct batch {
  struct rcu_head rcu;
  struct cdcache__reclaimer *rc;
  struct cdcache__pool *pool;
  struct cdcache__entry *list;
  uint64_t bytes;
};

static size_t entry_size(const struct cdcache__entry *e)
{
  return cdcache__entry_size(e->flags, e->klen, e->vlen);
}

void cdcache__retire_list_init(const struct cdcache__reclaimer *rc, struct cdcache__retire_list *l,
                               uint64_t cap_entries)
{
  l->head = NULL;
  l->count = l->bytes = 0;
  l->pending_delta = 0;
  atomic_init(&l->pool.ready, NULL);
  l->pool.spare = NULL;
  l->pool.taken = 0;
  atomic_init(&l->pool.bytes, 0);
  /* 64 bytes (a small entry) per four entries of the shard, at least two
   * batches of them. */
  uint64_t n = cap_entries / 4;
  if (n < 2 * RETIRE_BATCH)
    n = 2 * RETIRE_BATCH;
  uint64_t by_size = n * 64;
  l->pool.max_bytes = by_size < rc->batch_bytes ? by_size : rc->batch_bytes;
}

/* Reserves charge bytes of p's bound for an entry about to be pushed. */
static bool pool_reserve(struct cdcache__pool *p, uint64_t charge)
{
  if (atomic_load_explicit(&p->bytes, memory_order_relaxed) + charge > p->max_bytes)
    return false;
  uint64_t was = atomic_fetch_add_explicit(&p->bytes, charge, memory_order_relaxed);
  if (was + charge <= p->max_bytes)
    return true;
  atomic_fetch_sub_explicit(&p->bytes, charge, memory_order_relaxed);
  return false;
}

/*
 * After a grace period: pools the small entries pool has room for (pool
 * may be NULL: free everything), frees the rest, and takes what was freed
 * off bytes_pending (`bytes` covers the whole list).
 */
static void free_list(struct cdcache__reclaimer *rc, struct cdcache__pool *pool,
                      struct cdcache__entry *e, uint64_t bytes)
{
  CDCACHE__TSAN_ACQUIRE(&cdcache__grace_token);
  struct cdcache__entry *head = NULL, *tail = NULL;
  while (e != NULL) {
    struct cdcache__entry *next = e->u.ret;
    size_t size = entry_size(e);
    /* Not a placeholder: its charge includes its fill's bytes. */
    if (pool != NULL && size <= CDCACHE__RECYCLE_MAX_SIZE && !(e->flags & CDCACHE__E_PLACEHOLDER) &&
        pool_reserve(pool, e->charge)) {
      e->u.ret = head;
      head = e;
      if (tail == NULL)
        tail = e;
      bytes -= e->charge; /* pending until reused */
    } else {
      rc->alloc->free(rc->alloc->ctx, e, size);
    }
    e = next;
  }
  if (head != NULL) {
    struct cdcache__entry *top = atomic_load_explicit(&pool->ready, memory_order_relaxed);
    do
      tail->u.ret = top;
    while (!atomic_compare_exchange_weak_explicit(&pool->ready, &top, head, memory_order_release,
                                                  memory_order_relaxed));
  }
  atomic_fetch_sub_explicit(&rc->bytes_pending, bytes, memory_order_relaxed);
}

/* The pool's gauge is lowered once this many bytes were taken (or the
 * spare list ran empty): one shared write per dozen puts or so, while a
 * pusher sees the pool at most this much fuller than it is. */
#define POOL_LOWER_BYTES 1024u

/* Takes e (the head of l's spare list) out of the pool and its bytes out
 * of bytes_pending (by the delta). */
static void pool_unlink_spare(struct cdcache__retire_list *l, struct cdcache__entry *e)
{
  struct cdcache__pool *p = &l->pool;
  p->spare = e->u.ret;
  p->taken += e->charge;
  l->pending_delta -= (int64_t)e->charge;
  if (p->spare == NULL || p->taken >= POOL_LOWER_BYTES) {
    atomic_fetch_sub_explicit(&p->bytes, p->taken, memory_order_relaxed);
    p->taken = 0;
  }
}

struct cdcache__entry *cdcache__pool_take(struct cdcache__reclaimer *rc,
                                          struct cdcache__retire_list *l, size_t size)
{
  struct cdcache__pool *p = &l->pool;
  if (p->spare == NULL)
    p->spare = atomic_exchange_explicit(&p->ready, NULL, memory_order_acquire);
  /* A head of another size is freed, so that a change of sizes does not
   * leave the pool stuck; two tries at most. */
  for (int tries = 0; tries < 2 && p->spare != NULL; tries++) {
    struct cdcache__entry *e = p->spare;
    pool_unlink_spare(l, e);
    size_t esize = entry_size(e);
    if (esize == size) {
      /* The next put here overwrites the next one: start loading it. */
      if (p->spare != NULL)
        __builtin_prefetch(p->spare, 1);
      return e;
    }
    rc->alloc->free(rc->alloc->ctx, e, esize);
  }
  return NULL;
}

void cdcache__pool_free(struct cdcache__reclaimer *rc, struct cdcache__retire_list *l)
{
  struct cdcache__pool *p = &l->pool;
  for (;;) {
    if (p->spare == NULL)
      p->spare = atomic_exchange_explicit(&p->ready, NULL, memory_order_acquire);
    struct cdcache__entry *e = p->spare;
    if (e == NULL)
      break;
    pool_unlink_spare(l, e);
    rc->alloc->free(rc->alloc->ctx, e, entry_size(e));
  }
  atomic_fetch_add_explicit(&rc->bytes_pending, (uint64_t)l->pending_delta, memory_order_relaxed);
  l->pending_delta = 0;
}

static void batch_cb(struct rcu_head *head)
{
  struct batch *b = caa_container_of(head, struct batch, rcu);
  CDCACHE__TSAN_ACQUIRE(b);
  struct cdcache__reclaimer *rc = b->rc;
  free_list(rc, b->pool, b->list, b->bytes);
  rc->alloc->free(rc->alloc->ctx, b, sizeof *b);
  CDCACHE__TSAN_RELEASE(&barrier_token);
}

void cdcache__retire_barrier(void)
{
  urcu_bp_barrier();
  CDCACHE__TSAN_ACQUIRE(&barrier_token);
}

void cdcache__retire_free_now(struct cdcache__reclaimer *rc, struct cdcache__retired *r)
{
  if (r->list == NULL)
    return;
  urcu_bp_synchronize_rcu();
  free_list(rc, r->pool, r->list, r->bytes);
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
  b->pool = r->pool;
  b->list = r->list;
  /* The batch header itself is memory held until the callback runs. */
  b->bytes = r->bytes + sizeof *b;
  atomic_fetch_add_explicit(&rc->bytes_pending, sizeof *b, memory_order_relaxed);
  CDCACHE__TSAN_RELEASE(b);
  urcu_bp_call_rcu(&b->rcu, batch_cb);
  r->list = NULL;
  r->bytes = 0;
}
