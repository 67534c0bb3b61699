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
 * writer, after dropping the shard lock, queues the whole list as one
 * batch to the reclaimer thread.  If the batch header cannot be allocated
 * (or the thread cannot be started) the writer waits for a grace period
 * itself and frees the list; a barrier that finds batches queued and no
 * thread (a forked child's, the parent's batches) runs the rounds itself.
 *
 * The reclaimer thread.  One per process, started by the first batch
 * (and again in a forked child, by its first batch or barrier).  It takes
 * every queued batch at once, waits for one grace period
 * (urcu_bp_synchronize_rcu), frees or pools them, and naps PACE_NS before
 * its next round, so that grace periods stay few (at most about a
 * thousand a second) while the memory waiting for one stays small: the
 * puts of about a millisecond.  With nothing queued it sleeps on a
 * condition variable until a batch arrives; a barrier cuts its nap.
 * (liburcu's call_rcu thread naps 10 ms after each round, so under write
 * load the unlinked entries of 10 ms or more were held, a third of the
 * live bytes in the write-heavy benchmark; liburcu 0.13 has no polling
 * grace-period API to do without a thread.)  A batch is counted
 * completed only after it is freed; a round takes every batch queued
 * before it, so "completed >= the count submitted when the barrier began"
 * means every batch queued before the barrier is freed.
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
 * pool's bound first (2 bytes per entry of the shard's capacity, at least
 * four batches of small entries, within a batch's bytes: a round's worth
 * of puts, since rounds are a millisecond apart), and frees what does not
 * fit.  A batch whose entries are all small (the retire list knows) is
 * reserved and pushed whole, head to tail, without the reclaimer loading
 * a single entry: their cache lines stay where the writer left them, for
 * the put that reuses them.  Only an entry of exactly the size it was
 * allocated with is reused, so the allocator's free still receives the
 * size that was asked of malloc.
 *
 * Ordering for ThreadSanitizer, which cannot see the grace period: a
 * reader releases cdcache__grace_token just before rcu_read_unlock(), and
 * the reclaimer acquires it after the grace period, before freeing.  That
 * is the happens-before edge the grace period provides.  The queue, the
 * counts and the thread's state are under the reclaimer's mutex.
 */
#include "reclaim.h"

#include <errno.h>
#include <signal.h>
#include <time.h>

char cdcache__grace_token;

#define RETIRE_BATCH CDCACHE__RETIRE_BATCH

/* The reclaimer's nap between rounds. */
#define PACE_NS 1000000L

/*
 * Retired entries on their way out: a queued batch (its header allocated),
 * or on the stack of a writer that waits for its own grace period.  While
 * a round frees a queued batch, whatever of it is not yet freed or pooled
 * stays reachable from its header (list, cur, kept), and the round's
 * batches from R (round_rest, round_cur): a child forked in the middle of
 * a round without the fork calls (which wait for the round's end) holds
 * the parent's entries as memory it can reach, not as leaks.  (A writer's
 * own batch, like anything a thread holds in the middle of a call, is not
 * covered.)  Synchronization: its owner's (the
 * submitter's, then R.mu while queued, then the round's).
 */
struct batch {
  struct batch *next;
  struct cdcache__reclaimer *rc;
  struct cdcache__pool *pool;
  struct cdcache__entry *list, *tail;      /* list: the entries not yet freed or kept */
  struct cdcache__entry *kept, *kept_tail; /* taken for the pool, not pushed yet */
  struct cdcache__entry *cur;              /* taken off list, not yet kept or freed */
  uint64_t charges;                        /* the entries' charges */
  bool mixed;
};

/* The process's reclaimer. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake; /* the thread waits here, idle or napping */
  pthread_cond_t done; /* barriers wait here */
  bool cond_ready;     /* Synchronization: mu.  wake and done use CLOCK_MONOTONIC */
  struct batch *queue; /* Synchronization: mu.  Waiting for a round */
  uint64_t submitted;  /* Synchronization: mu.  Batches ever queued */
  uint64_t completed;  /* Synchronization: mu.  Batches freed */
  unsigned barriers;   /* Synchronization: mu.  Barriers waiting */
  bool running;        /* Synchronization: mu.  The thread exists in this process */
  bool idle;           /* Synchronization: mu.  The thread waits for a batch */
  bool in_round;       /* Synchronization: mu.  It has taken batches it has not freed */
  /* Written by the round alone (relaxed; read only by a forked child's
   * memory): the round's batches not started yet, and the one it frees. */
  _Atomic(struct batch *) round_rest, round_cur;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};
/* Synchronization: R.mu.  In a child forked without the fork calls, the
 * batches its parent had queued, never freed (cdcache__reclaim_fork_child). */
static struct batch *orphans;
/* Synchronization: as orphans.  The batch a round was freeing when such a
 * fork happened (perhaps already freed: never read, only kept; volatile,
 * or the compiler drops the store to a variable nothing reads). */
static struct batch *volatile orphan_cur;

static size_t entry_size(const struct cdcache__entry *e)
{
  return cdcache__entry_size(e->flags, e->klen, e->vlen);
}

void cdcache__retire_list_init(const struct cdcache__reclaimer *rc, struct cdcache__retire_list *l,
                               uint64_t cap_entries)
{
  l->head = l->tail = NULL;
  l->count = l->bytes = 0;
  l->mixed = false;
  l->pending_delta = 0;
  atomic_init(&l->pool.ready, NULL);
  l->spare = NULL;
  l->taken = 0;
  atomic_init(&l->pool.bytes, 0);
  /* 2 bytes per entry of the shard (a small entry per 32), at least four
   * batches of small (64-byte) entries. */
  uint64_t by_size = cap_entries * 2;
  if (by_size < 4 * RETIRE_BATCH * 64)
    by_size = 4 * RETIRE_BATCH * 64;
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

/* Pushes head..tail (linked through u.ret) onto pool's ready stack. */
static void pool_push(struct cdcache__pool *pool, struct cdcache__entry *head,
                      struct cdcache__entry *tail)
{
  struct cdcache__entry *top = atomic_load_explicit(&pool->ready, memory_order_relaxed);
  do
    tail->u.ret = top;
  while (!atomic_compare_exchange_weak_explicit(&pool->ready, &top, head, memory_order_release,
                                                memory_order_relaxed));
}

/*
 * After a grace period: pools the small entries of b the pool has room
 * for (pool NULL: frees everything), frees the rest, and takes what was
 * freed off bytes_pending.  Every entry stays reachable from b until it is
 * freed or pushed (see struct batch).
 */
static void free_list(struct batch *b)
{
  CDCACHE__TSAN_ACQUIRE(&cdcache__grace_token);
  struct cdcache__reclaimer *rc = b->rc;
  struct cdcache__pool *pool = b->pool;
  uint64_t bytes = b->charges; /* less what is pooled: pending until reused */
  /* Every entry small and not a placeholder: the whole list, its charges
   * reserved at once, without loading an entry but the last. */
  if (pool != NULL && !b->mixed && pool_reserve(pool, b->charges)) {
    pool_push(pool, b->list, b->tail);
    b->list = NULL;
    return;
  }
  struct cdcache__entry *e;
  while ((e = b->list) != NULL) {
    b->cur = e; /* before list moves past it */
    b->list = e->u.ret;
    size_t size = entry_size(e);
    /* Not a placeholder: its charge includes its fill's bytes. */
    if (pool != NULL && size <= CDCACHE__RECYCLE_MAX_SIZE && !(e->flags & CDCACHE__E_PLACEHOLDER) &&
        pool_reserve(pool, e->charge)) {
      e->u.ret = b->kept;
      b->kept = e;
      if (b->kept_tail == NULL)
        b->kept_tail = e;
      bytes -= e->charge; /* pending until reused */
    } else {
      rc->alloc->free(rc->alloc->ctx, e, size);
    }
    b->cur = NULL;
  }
  if (b->kept != NULL)
    pool_push(pool, b->kept, b->kept_tail);
  b->kept = b->kept_tail = NULL;
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
  l->spare = e->u.ret;
  l->taken += e->charge;
  l->pending_delta -= (int64_t)e->charge;
  if (l->spare == NULL || l->taken >= POOL_LOWER_BYTES) {
    atomic_fetch_sub_explicit(&p->bytes, l->taken, memory_order_relaxed);
    l->taken = 0;
  }
}

struct cdcache__entry *cdcache__pool_take(struct cdcache__reclaimer *rc,
                                          struct cdcache__retire_list *l, size_t size)
{
  struct cdcache__pool *p = &l->pool;
  if (l->spare == NULL)
    l->spare = atomic_exchange_explicit(&p->ready, NULL, memory_order_acquire);
  /* A head of another size is freed, so that a change of sizes does not
   * leave the pool stuck; two tries at most. */
  for (int tries = 0; tries < 2 && l->spare != NULL; tries++) {
    struct cdcache__entry *e = l->spare;
    pool_unlink_spare(l, e);
    size_t esize = entry_size(e);
    if (esize == size) {
      /* The next put here overwrites the next one: start loading it. */
      if (l->spare != NULL)
        __builtin_prefetch(l->spare, 1);
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
    if (l->spare == NULL)
      l->spare = atomic_exchange_explicit(&p->ready, NULL, memory_order_acquire);
    struct cdcache__entry *e = l->spare;
    if (e == NULL)
      break;
    pool_unlink_spare(l, e);
    rc->alloc->free(rc->alloc->ctx, e, entry_size(e));
  }
  atomic_fetch_add_explicit(&rc->bytes_pending, (uint64_t)l->pending_delta, memory_order_relaxed);
  l->pending_delta = 0;
}

/* R.mu held: a batch's cond variables use CLOCK_MONOTONIC, set up once. */
static void cond_setup(void)
{
  if (R.cond_ready)
    return;
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&R.wake, &a);
  pthread_cond_init(&R.done, &a);
  pthread_condattr_destroy(&a);
  R.cond_ready = true;
}

static void batch_free(struct batch *b)
{
  CDCACHE__TSAN_ACQUIRE(b);
  struct cdcache__reclaimer *rc = b->rc;
  free_list(b);
  rc->alloc->free(rc->alloc->ctx, b, sizeof *b);
  atomic_fetch_sub_explicit(&rc->bytes_pending, sizeof *b, memory_order_relaxed);
}

/* R.mu held, no round in progress: takes every queued batch, waits for a
 * grace period and frees them with mu dropped, counts them completed and
 * wakes the barriers (and a fork waiting for the round's end).  One round
 * at a time (in_round), on the reclaimer thread or, when none can be
 * started, on a barrier's caller. */
static void round_run(void)
{
  atomic_store_explicit(&R.round_rest, R.queue, memory_order_relaxed);
  R.queue = NULL;
  R.in_round = true;
  pthread_mutex_unlock(&R.mu);
  urcu_bp_synchronize_rcu();
  uint64_t n = 0;
  struct batch *b;
  while ((b = atomic_load_explicit(&R.round_rest, memory_order_relaxed)) != NULL) {
    atomic_store_explicit(&R.round_cur, b, memory_order_relaxed);
    atomic_store_explicit(&R.round_rest, b->next, memory_order_relaxed);
    batch_free(b);
    atomic_store_explicit(&R.round_cur, NULL, memory_order_relaxed);
    n++;
  }
  pthread_mutex_lock(&R.mu);
  R.completed += n;
  R.in_round = false;
  pthread_cond_broadcast(&R.done);
  /* A round run by a barrier's caller may have kept the thread waiting. */
  if (R.running && R.queue != NULL)
    pthread_cond_signal(&R.wake);
}

static void *reclaimer_main(void *arg)
{
  (void)arg;
  pthread_mutex_lock(&R.mu);
  for (;;) {
    while (R.queue == NULL || R.in_round) {
      R.idle = true;
      pthread_cond_wait(&R.wake, &R.mu);
      R.idle = false;
    }
    round_run();
    if (R.barriers != 0)
      continue; /* no nap while a barrier waits */
    /* The nap between rounds; a barrier cuts it short. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += PACE_NS;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    while (R.barriers == 0 && pthread_cond_timedwait(&R.wake, &R.mu, &until) != ETIMEDOUT)
      ;
  }
  return NULL;
}

/* R.mu held: starts the thread, with every signal blocked (the host's
 * handlers never run on it), detached (it lives as long as the process). */
static bool reclaimer_start(void)
{
  cond_setup();
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0)
    return false;
  (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int rc = pthread_create(&t, &attr, reclaimer_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return false;
  R.running = true;
  return true;
}

void cdcache__retire_barrier(void)
{
  pthread_mutex_lock(&R.mu);
  uint64_t target = R.submitted;
  /* A forked child's first barrier may find batches its parent queued
   * and no thread yet.  If none can be started, this caller runs the
   * rounds: the batches may name a pre-fork handle being closed, which
   * must not outlive them (test "a child that cannot start threads closes
   * pre-fork handles safely"). */
  if (R.completed < target && !R.running && !reclaimer_start()) {
    while (R.completed < target) {
      if (R.queue != NULL && !R.in_round)
        round_run();
      else
        pthread_cond_wait(&R.done, &R.mu);
    }
    pthread_mutex_unlock(&R.mu);
    return;
  }
  if (R.completed < target) {
    R.barriers++;
    while (R.completed < target) {
      pthread_cond_signal(&R.wake);
      pthread_cond_wait(&R.done, &R.mu);
    }
    R.barriers--;
  }
  pthread_mutex_unlock(&R.mu);
}

void cdcache__reclaim_fork_prepare(bool whole)
{
  pthread_mutex_lock(&R.mu);
  /* A round in progress would be lost in the child with the thread: wait
   * for its end (the thread takes no new round while mu is held). */
  while (whole && R.in_round)
    pthread_cond_wait(&R.done, &R.mu);
}

void cdcache__reclaim_fork_parent(void)
{
  pthread_mutex_unlock(&R.mu);
}

/* R.mu held, in a child forked without the fork calls: moves the batches
 * of list onto the orphans. */
static void orphan(struct batch *list)
{
  while (list != NULL) {
    struct batch *next = list->next;
    list->next = orphans;
    orphans = list;
    list = next;
  }
}

void cdcache__reclaim_fork_child(bool whole)
{
  if (!whole) {
    /* Forked without the fork calls: no grace period here, and pre-fork
     * handles are freed by close without waiting for anything, so the
     * batches the parent had queued are never run in this process, nor
     * in a child it forks with the calls, where they could name caches
     * freed here.  Kept reachable, with a round in progress at the fork:
     * its batches not started go to the orphans too, and the one it was
     * freeing (whose header may already be free: never read) is kept
     * aside, so that a round of a grandchild forked with the calls does
     * not overwrite them. */
    orphan(R.queue);
    R.queue = NULL;
    orphan(atomic_load_explicit(&R.round_rest, memory_order_relaxed));
    atomic_store_explicit(&R.round_rest, NULL, memory_order_relaxed);
    if (atomic_load_explicit(&R.round_cur, memory_order_relaxed) != NULL)
      orphan_cur = atomic_load_explicit(&R.round_cur, memory_order_relaxed);
    atomic_store_explicit(&R.round_cur, NULL, memory_order_relaxed);
    R.submitted = R.completed = 0;
    R.in_round = false;
  }
  /* The parent's thread is not here; with the fork calls the batches it
   * had queued are, and the child's first batch or barrier starts a
   * thread that frees them (their caches may be pre-fork handles, which
   * the child may close: closing waits for them). */
  R.running = R.idle = false;
  R.barriers = 0;
  /* No waiter of the parent's exists here: start the conditions anew. */
  R.cond_ready = false;
  cond_setup();
  pthread_mutex_unlock(&R.mu);
}

void cdcache__retire_free_now(struct cdcache__reclaimer *rc, struct cdcache__retired *r)
{
  if (r->list == NULL)
    return;
  urcu_bp_synchronize_rcu();
  struct batch b = {.rc = rc,
                    .pool = r->pool,
                    .list = r->list,
                    .tail = r->tail,
                    .charges = r->bytes,
                    .mixed = r->mixed};
  free_list(&b);
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
  *b = (struct batch){.rc = rc,
                      .pool = r->pool,
                      .list = r->list,
                      .tail = r->tail,
                      .charges = r->bytes,
                      .mixed = r->mixed};
  CDCACHE__TSAN_RELEASE(b);
  pthread_mutex_lock(&R.mu);
  if (!R.running && !reclaimer_start()) {
    pthread_mutex_unlock(&R.mu);
    rc->alloc->free(rc->alloc->ctx, b, sizeof *b);
    cdcache__retire_free_now(rc, r);
    return;
  }
  atomic_fetch_add_explicit(&rc->bytes_pending, sizeof *b, memory_order_relaxed);
  b->next = R.queue;
  R.queue = b;
  R.submitted++;
  if (R.idle)
    pthread_cond_signal(&R.wake);
  pthread_mutex_unlock(&R.mu);
  r->list = NULL;
  r->bytes = 0;
}
