/*
 * mutex-lru: the textbook thread-safe LRU cache, what a project writes
 * when it does not have cdcache: exact_lru.c (hash map + doubly linked
 * list, exact LRU) behind one global pthread mutex taken by every get and
 * put (a get moves the entry to the list head, so it writes too).  The key
 * is hashed (bench_hash.h, its own secret) before the mutex is taken, as
 * cdcache hashes before it looks.
 */
#include "bench.h"
#include "bench_hash.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
  memcount_t mc;
  pthread_mutex_t lock;
  exact_lru_t *l;                          /* Synchronization: lock */
  unsigned char secret[BENCH_SECRET_SIZE]; /* read-only after open */
} mutex_lru_t;

static int ml_open(const impl_cfg_t *cfg, void **out)
{
  mutex_lru_t *m = bench_alloc64(sizeof *m);
  if (!m)
    return -1;
  memcount_init(&m->mc);
  pthread_mutex_init(&m->lock, NULL);
  m->l = exact_lru_new(cfg->capacity, &m->mc);
  if (!m->l || bench_secret_init(m->secret) != 0) {
    exact_lru_delete(m->l);
    free(m);
    return -1;
  }
  *out = m;
  return 0;
}

static void ml_close(void *h)
{
  mutex_lru_t *m = h;
  exact_lru_delete(m->l);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

static int ml_get(void *h, const void *key, size_t klen, void *buf, size_t cap)
{
  mutex_lru_t *m = h;
  uint64_t hv = bench_hash(m->secret, key, klen);
  pthread_mutex_lock(&m->lock);
  int hit = exact_lru_get(m->l, hv, key, klen, buf, cap);
  pthread_mutex_unlock(&m->lock);
  return hit;
}

static void ml_put(void *h, const void *key, size_t klen, const void *val, size_t vlen)
{
  mutex_lru_t *m = h;
  uint64_t hv = bench_hash(m->secret, key, klen);
  pthread_mutex_lock(&m->lock);
  exact_lru_put(m->l, hv, key, klen, val, vlen);
  pthread_mutex_unlock(&m->lock);
}

static void ml_settle(void *h)
{
  (void)h;
}

static uint64_t ml_entries(void *h)
{
  mutex_lru_t *m = h;
  pthread_mutex_lock(&m->lock);
  uint64_t n = exact_lru_count(m->l);
  pthread_mutex_unlock(&m->lock);
  return n;
}

static int64_t ml_mem(void *h)
{
  return memcount_bytes(&((mutex_lru_t *)h)->mc);
}
static int64_t ml_self(void *h)
{
  (void)h;
  return -1;
}

const bench_impl_t impl_mutex_lru = {
    .name = "mutex-lru",
    .open = ml_open,
    .close = ml_close,
    .get = ml_get,
    .put = ml_put,
    .settle = ml_settle,
    .entries = ml_entries,
    .mem_bytes = ml_mem,
    .self_bytes = ml_self,
};
