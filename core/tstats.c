/*
 * Per-thread counters.
 *
 * A hit must not write a cache line another thread writes, so each thread
 * counts into its own cache-line-aligned block per cache, with a relaxed
 * load and a relaxed store (it is the block's only writer: no atomic
 * read-modify-write).  cdcache_stats() sums the blocks with relaxed loads.
 *
 * Finding the block: a thread keeps a few (cache id, block) pairs in
 * thread-local storage; the first compares against the most recent cache,
 * so the common case is one TLS load and one compare.  Cache ids are never
 * reused, so a pair naming a closed cache is never matched again.  A
 * thread's first use of a cache takes the cache's registry mutex and adopts
 * a block whose thread has exited (counts carry on from where they were)
 * or allocates one.  At thread exit a pthread key destructor hands the
 * thread's blocks back, under the global mutex that also guards the set of
 * open caches, so it never touches a cache being closed.  If no block can
 * be allocated, the thread counts into the cache's shared fallback block
 * with atomic adds: correct, only slower.
 *
 * fork.  live_mu is taken by cdcache__tstats_fork_prepare() (lock order:
 * liburcu's fork locks first, then live_mu; a registry mutex is only ever
 * taken after live_mu or alone, never the other way round), so no parent
 * thread holds it at the fork; the parent releases it, the child
 * re-initialises it and marks every cache opened before the fork, whose
 * registry mutex a vanished parent thread may have held: the child never
 * locks such a registry again (hand-backs skip it, its close only frees).
 */
#include "tstats.h"

#include "mem.h"

#include <string.h>

#define TLS_SLOTS CDCACHE__TLS_SLOTS
#define tls_slots cdcache__tls_slots

__thread struct cdcache__tls_slot cdcache__tls_slots[CDCACHE__TLS_SLOTS]
    __attribute__((tls_model("initial-exec")));

/* Guards live_caches and the hand-back at thread exit. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
struct live_cache {
  uint64_t id;
  struct cdcache__tstats_reg *reg;
  struct live_cache *next;
  /* Synchronization: live_mu.  Set in a forked child for every cache
   * opened before the fork: its registry mutex may have been held by a
   * parent thread that does not exist here, so it is never locked again. */
  bool pre_fork;
};
static struct live_cache *live_caches; /* Synchronization: live_mu */
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static int exit_key_ok;

static void release_slots(void *unused);

static void make_exit_key(void)
{
  exit_key_ok = pthread_key_create(&exit_key, release_slots) == 0;
}

/* Thread exit: hand every block back to its cache, if that cache is open. */
static void release_slots(void *unused)
{
  (void)unused;
  pthread_mutex_lock(&live_mu);
  for (int i = 0; i < TLS_SLOTS; i++) {
    if (tls_slots[i].id == 0)
      continue;
    for (struct live_cache *l = live_caches; l != NULL; l = l->next) {
      if (l->id == tls_slots[i].id) {
        if (!l->pre_fork) {
          pthread_mutex_lock(&l->reg->mu);
          tls_slots[i].blk->owned = false;
          pthread_mutex_unlock(&l->reg->mu);
        }
        break;
      }
    }
    tls_slots[i].id = 0;
  }
  pthread_mutex_unlock(&live_mu);
}

int cdcache__tstats_init(struct cdcache__tstats_reg *r, uint64_t id,
                         const cdcache_allocator_t *alloc)
{
  memset(r, 0, sizeof *r);
  r->id = id;
  r->alloc = alloc;
  if (pthread_mutex_init(&r->mu, NULL) != 0)
    return CDCACHE_ENOMEM;
  pthread_once(&exit_key_once, make_exit_key);
  struct live_cache *l = alloc->malloc(alloc->ctx, sizeof *l);
  if (l == NULL) {
    pthread_mutex_destroy(&r->mu);
    return CDCACHE_ENOMEM;
  }
  l->id = id;
  l->reg = r;
  l->pre_fork = false;
  pthread_mutex_lock(&live_mu);
  l->next = live_caches;
  live_caches = l;
  pthread_mutex_unlock(&live_mu);
  return 0;
}

void cdcache__tstats_destroy(struct cdcache__tstats_reg *r)
{
  struct live_cache *found = NULL;
  bool pre_fork = false;
  pthread_mutex_lock(&live_mu);
  for (struct live_cache **p = &live_caches; *p != NULL; p = &(*p)->next) {
    if ((*p)->id == r->id) {
      found = *p;
      *p = found->next;
      pre_fork = found->pre_fork;
      break;
    }
  }
  pthread_mutex_unlock(&live_mu);
  if (found != NULL)
    r->alloc->free(r->alloc->ctx, found, sizeof *found);
  struct cdcache__tstats *b = r->blocks;
  while (b != NULL) {
    struct cdcache__tstats *next = b->next;
    cdcache__free_aligned(r->alloc, b->raw, sizeof *b);
    b = next;
  }
  if (!pre_fork) /* possibly held by a parent thread at the fork: left as is */
    pthread_mutex_destroy(&r->mu);
}

void cdcache__tstats_fork_prepare(void)
{
  pthread_mutex_lock(&live_mu);
}

void cdcache__tstats_fork_parent(void)
{
  pthread_mutex_unlock(&live_mu);
}

void cdcache__tstats_fork_child(void)
{
  (void)pthread_mutex_init(&live_mu, NULL);
  for (struct live_cache *l = live_caches; l != NULL; l = l->next)
    l->pre_fork = true;
}

static struct cdcache__tstats *adopt(struct cdcache__tstats_reg *r)
{
  struct cdcache__tstats *b;
  pthread_mutex_lock(&r->mu);
  for (b = r->blocks; b != NULL; b = b->next)
    if (!b->owned)
      break;
  if (b == NULL) {
    void *raw;
    b = cdcache__alloc_aligned(r->alloc, sizeof *b, &raw);
    if (b != NULL) {
      memset(b, 0, sizeof *b);
      b->raw = raw;
      b->next = r->blocks;
      r->blocks = b;
    }
  }
  if (b != NULL)
    b->owned = true;
  pthread_mutex_unlock(&r->mu);
  return b;
}

struct cdcache__tstats *cdcache__tstats_slow(struct cdcache__tstats_reg *r)
{
  for (int i = 1; i < TLS_SLOTS; i++) {
    if (tls_slots[i].id == r->id) {
      struct cdcache__tls_slot t = tls_slots[i];
      tls_slots[i] = tls_slots[0];
      tls_slots[0] = t;
      return t.blk;
    }
  }
  struct cdcache__tstats *b = adopt(r);
  if (b == NULL)
    return NULL;
  /* Evict the last slot, handing its block back if its cache is open. */
  struct cdcache__tls_slot *last = &tls_slots[TLS_SLOTS - 1];
  if (last->id != 0) {
    pthread_mutex_lock(&live_mu);
    for (struct live_cache *l = live_caches; l != NULL; l = l->next) {
      if (l->id == last->id) {
        if (!l->pre_fork) {
          pthread_mutex_lock(&l->reg->mu);
          last->blk->owned = false;
          pthread_mutex_unlock(&l->reg->mu);
        }
        break;
      }
    }
    pthread_mutex_unlock(&live_mu);
  }
  memmove(&tls_slots[1], &tls_slots[0], sizeof(tls_slots[0]) * (TLS_SLOTS - 1));
  tls_slots[0].id = r->id;
  tls_slots[0].blk = b;
  if (exit_key_ok)
    (void)pthread_setspecific(exit_key, tls_slots); /* any non-NULL value arms the destructor */
  return b;
}

void cdcache__tstats_sum(struct cdcache__tstats_reg *r, uint64_t out[CTR__COUNT])
{
  for (int i = 0; i < CTR__COUNT; i++)
    out[i] = atomic_load_explicit(&r->fallback.v[i], memory_order_relaxed);
  pthread_mutex_lock(&r->mu);
  for (struct cdcache__tstats *b = r->blocks; b != NULL; b = b->next)
    for (int i = 0; i < CTR__COUNT; i++)
      out[i] += atomic_load_explicit(&b->v[i], memory_order_relaxed);
  pthread_mutex_unlock(&r->mu);
}
