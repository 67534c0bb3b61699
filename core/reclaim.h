/* Deferred reclamation of unlinked entries (see reclaim.c). */
#ifndef CDCACHE_RECLAIM_H
#define CDCACHE_RECLAIM_H

#include "cdcache.h"
#include "entry.h"

/*
 * One cache's reclamation: its allocator, the byte gauge of unlinked
 * entries not yet freed, and the thresholds derived from max_bytes.
 */
struct cdcache__reclaimer {
  const cdcache_allocator_t *alloc; /* read-only after open */
  uint64_t pending_cap;             /* read-only: throttle threshold for bytes_pending */
  uint64_t batch_bytes;             /* read-only: a retire list is handed over past this */
  /* Synchronization: atomic, relaxed (a gauge; the throttle rereads it). */
  _Atomic uint64_t bytes_pending;
};

/* A retire list is handed to a grace period at this many entries. */
#define CDCACHE__RETIRE_BATCH 64

/* Entries of up to this many bytes (header, key and value) are recycled. */
#define CDCACHE__RECYCLE_MAX_SIZE 256u

/*
 * Entries whose grace period has passed, kept for their owner's puts to
 * overwrite instead of freeing them (reclaim.c, "Recycling"): the part
 * other threads write (the owner's part is in its retire list).
 */
struct cdcache__pool {
  /* Synchronization: atomic.  A stack that whoever frees a batch after
   * its grace period pushes onto (CAS, release) and the owner takes whole
   * under its lock (exchange, acquire) into its retire list's `spare`: no
   * element is ever popped alone, so there is no ABA. */
  _Atomic(struct cdcache__entry *) ready;
  /* Synchronization: atomic, relaxed.  The charges of the entries on
   * ready and spare: a pusher reserves an entry's charge before pushing
   * it, so racing pushers cannot pass max_bytes together. */
  _Atomic uint64_t bytes;
  uint64_t max_bytes; /* read-only after init */
} __attribute__((aligned(CDCACHE__CACHELINE)));

/* Unlinked entries waiting to be handed to a grace period, and the pool
 * they come back to.  Synchronization: the owner's lock (a shard's),
 * except as the pool's fields say. */
struct cdcache__retire_list {
  struct cdcache__entry *head;
  struct cdcache__entry *tail; /* the first retired: the list's last */
  uint64_t count, bytes;
  /* Bytes that entered (retired) or left (reused) bytes_pending under the
   * owner's lock and are not yet applied to it: retire_take applies them
   * once per write, so a put that retires one entry and reuses another of
   * its size writes the shared gauge not at all. */
  int64_t pending_delta;
  /* Does the list hold an entry the pool does not take (a placeholder, or
   * one above CDCACHE__RECYCLE_MAX_SIZE)?  If not, a batch goes to the
   * pool whole, its entries untouched (reclaim.c). */
  bool mixed;
  /* The pool's entries taken from `ready`, not reused yet (pool_take
   * reads these two on every put, so they share the line above). */
  struct cdcache__entry *spare;
  /* Charges taken off spare since pool.bytes was last lowered (every
   * kilobyte or so, and when spare runs empty: until then the bound sees
   * the pool fuller than it is, never emptier). */
  uint64_t taken;
  /* On a line of its own: the fields other threads write. */
  struct cdcache__pool pool;
};

/* A retire list taken from its owner, to submit after the lock is dropped. */
struct cdcache__retired {
  struct cdcache__pool *pool; /* where its small entries go back to */
  struct cdcache__entry *list, *tail;
  uint64_t bytes;
  bool mixed; /* as the list's */
};

/* Owner's init (no other thread yet): an empty list, whose pool keeps up
 * to 2 bytes per entry of cap_entries (at least four batches of 64-byte
 * entries, 16 KiB), within a batch's bytes. */
void cdcache__retire_list_init(const struct cdcache__reclaimer *rc, struct cdcache__retire_list *l,
                               uint64_t cap_entries);
/* Any thread, no lock: might the pool hold an entry?  A hint. */
static inline bool cdcache__pool_maybe(const struct cdcache__pool *p)
{
  return atomic_load_explicit(&p->bytes, memory_order_relaxed) != 0;
}
/* Owner's lock held: an entry of exactly `size` bytes (as allocated)
 * whose grace period has passed, for a put to overwrite (its charge
 * stays e->charge and leaves bytes_pending by l's pending_delta), or
 * NULL.  Entries of another
 * size met on the way (at most two) are freed. */
struct cdcache__entry *cdcache__pool_take(struct cdcache__reclaimer *rc,
                                          struct cdcache__retire_list *l, size_t size);
/* Owner's lock held, or no other thread (close): frees the pool's
 * entries. */
void cdcache__pool_free(struct cdcache__reclaimer *rc, struct cdcache__retire_list *l);

/* Owner's lock held: put an unlinked entry on l and move `charge` bytes
 * to bytes_pending (by l's pending_delta, applied by retire_take). */
static inline void cdcache__retire(struct cdcache__retire_list *l, struct cdcache__entry *e,
                                   uint64_t charge)
{
  e->u.ret = l->head;
  if (l->head == NULL)
    l->tail = e;
  l->head = e;
  if ((e->flags & CDCACHE__E_PLACEHOLDER) ||
      cdcache__entry_size(e->flags, e->klen, e->vlen) > CDCACHE__RECYCLE_MAX_SIZE)
    l->mixed = true;
  l->count++;
  l->bytes += charge;
  l->pending_delta += (int64_t)charge;
}
/* Owner's lock held: apply l's pending_delta to bytes_pending, and take
 * l if it is a full batch (or any non-empty list when force).  Every
 * write that retires or reuses entries calls it before unlocking. */
static inline void cdcache__retire_take(struct cdcache__reclaimer *rc,
                                        struct cdcache__retire_list *l,
                                        struct cdcache__retired *out, bool force)
{
  if (l->pending_delta != 0) {
    /* Two's complement: a negative delta subtracts. */
    atomic_fetch_add_explicit(&rc->bytes_pending, (uint64_t)l->pending_delta, memory_order_relaxed);
    l->pending_delta = 0;
  }
  out->pool = &l->pool;
  out->list = out->tail = NULL;
  out->bytes = 0;
  out->mixed = false;
  if (l->head == NULL || (!force && l->count < CDCACHE__RETIRE_BATCH && l->bytes < rc->batch_bytes))
    return;
  out->list = l->head;
  out->tail = l->tail;
  out->bytes = l->bytes;
  out->mixed = l->mixed;
  l->head = l->tail = NULL;
  l->count = 0;
  l->bytes = 0;
  l->mixed = false;
}
/* No lock held: free the list after a grace period (the reclaimer
 * thread's); its small entries go back to its pool while there is room. */
void cdcache__retire_submit(struct cdcache__reclaimer *rc, struct cdcache__retired *r);
/* No lock held, not in a read-side section: wait for a grace period here
 * and free the list (or pool its small entries). */
void cdcache__retire_free_now(struct cdcache__reclaimer *rc, struct cdcache__retired *r);
/* No lock held: is bytes_pending past half its cap (throttle) / past
 * three quarters (wait for the queued batches too)? */
static inline bool cdcache__throttle_needed(const struct cdcache__reclaimer *rc)
{
  /* Half the reserve: past it, a writer frees its own shard's list. */
  return atomic_load_explicit(&rc->bytes_pending, memory_order_relaxed) > rc->pending_cap / 2;
}
static inline bool cdcache__backlog_high(const struct cdcache__reclaimer *rc)
{
  /* Three quarters: the batches already queued must be waited for (the
   * last quarter absorbs what writers past their check evict meanwhile). */
  return atomic_load_explicit(&rc->bytes_pending, memory_order_relaxed) > rc->pending_cap / 4 * 3;
}
/* No lock held, not in a read-side section: wait until every batch
 * queued so far (by any cache) is freed. */
void cdcache__retire_barrier(void);
/* Around fork() (api/cache.c), before liburcu's handling and undone after
 * it: prepare takes the reclaimer's mutex.  whole (the fork calls): it
 * also waits for the round in progress to end, so the queue is whole in
 * the child; there no reclaimer thread exists, and the child's next batch
 * or barrier starts one, which frees what the parent had queued too.
 * Not whole (a fork without the calls, from the handler cdcache_open
 * installs): no wait, since the round may be inside the host's allocator,
 * whose own fork handler may already hold its lock, and the child, which
 * has no grace periods, never frees what the parent had queued. */
void cdcache__reclaim_fork_prepare(bool whole);
void cdcache__reclaim_fork_parent(void);
void cdcache__reclaim_fork_child(bool whole);

/*
 * The read-side section (urcu-bp), with the ThreadSanitizer annotation of
 * reclaim.c.  Release builds inline liburcu's read lock (_LGPL_SOURCE).
 * Sanitizer builds call the out-of-line one instead: liburcu-bp 0.13 hands
 * out its per-thread reader slots at addresses that do not honour the
 * 128-byte alignment its struct declares (harmless on x86), which UBSan
 * would report in the inlined code inside our own functions.  The static
 * analyzer gets the out-of-line calls too: inlined, it does not see
 * urcu_bp_register() set the reader pointer and reports a NULL
 * dereference inside liburcu's read lock.
 */
#if !defined(_LGPL_SOURCE) && !defined(CDCACHE_SANITIZED) && !defined(__clang_analyzer__)
#define _LGPL_SOURCE
#endif
#include <urcu-bp.h>

#if defined(_LGPL_SOURCE) && defined(CONFIG_RCU_TLS)
/* liburcu-bp's per-thread reader pointer, read twice per get by the
 * inlined read lock.  It lives in liburcu-bp.so, which libcdcache.so
 * needs at load time, so it is in the static TLS block: initial-exec
 * access is a register-relative load instead of a __tls_get_addr call
 * (the library's own counter slots are initial-exec for the same reason). */
extern __thread struct urcu_bp_reader *urcu_bp_reader __attribute__((tls_model("initial-exec")));
#endif

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
