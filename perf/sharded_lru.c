/*
 * sharded-mutex-lru: the design most C caches use (memcached's item
 * locks): N shards, one pthread mutex each, an exact LRU (exact_lru.c)
 * per shard.  N is cdcache's own shard count for the same capacity (read
 * from cdcache_stats of a cache opened for that purpose), the hash is the
 * same keyed XXH3 (bench_hash.h, its own secret), and, as in cdcache, the
 * hash's top bits pick the shard and its low bits the bucket.  Each shard
 * holds capacity / N entries (the remainder spread over the first shards).
 * So against cdcache it differs only in what the shard does: a get takes
 * the shard mutex and moves the entry to the head of its list.
 */
#include "bench.h"
#include "bench_hash.h"

#include <cdcache.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct {
  pthread_mutex_t lock;
  exact_lru_t *l; /* Synchronization: lock */
} __attribute__((aligned(64))) shard_t;

typedef struct {
  memcount_t mc;
  shard_t *shards;  /* read-only after open */
  unsigned nshards; /* read-only after open, a power of two */
  unsigned shift;   /* read-only: hash >> shift picks the shard (64: one shard) */
  unsigned char secret[BENCH_SECRET_SIZE]; /* read-only after open */
} sharded_t;

/* cdcache's default shard count for this capacity. */
static unsigned cdcache_shards(uint64_t capacity)
{
  cdcache_config_t c;
  cdcache_config_init(&c);
  c.max_entries = capacity;
  cdcache_t *cache;
  if (cdcache_open(&c, &cache) != 0)
    return 1;
  cdcache_stats_t st = {.struct_size = sizeof st};
  unsigned n = cdcache_stats(cache, &st) == 0 && st.shards ? st.shards : 1;
  cdcache_close(cache);
  return n;
}

static void sh_close(void *h)
{
  sharded_t *s = h;
  for (unsigned i = 0; s->shards && i < s->nshards; i++) {
    exact_lru_delete(s->shards[i].l);
    pthread_mutex_destroy(&s->shards[i].lock);
  }
  free(s->shards);
  free(s);
}

static int sh_open(const impl_cfg_t *cfg, void **out)
{
  sharded_t *s = bench_alloc64(sizeof *s);
  if (!s)
    return -1;
  memcount_init(&s->mc);
  s->nshards = cdcache_shards(cfg->capacity);
  unsigned bits = 0;
  while ((1u << bits) < s->nshards)
    bits++;
  s->shift = 64 - bits;
  s->shards = bench_alloc64(s->nshards * sizeof *s->shards);
  if (!s->shards || bench_secret_init(s->secret) != 0) {
    free(s->shards);
    free(s);
    return -1;
  }
  memcount_add(&s->mc, (int64_t)(s->nshards * sizeof *s->shards));
  uint64_t base = cfg->capacity / s->nshards, extra = cfg->capacity % s->nshards;
  int failed = 0;
  for (unsigned i = 0; i < s->nshards; i++) {
    pthread_mutex_init(&s->shards[i].lock, NULL);
    s->shards[i].l = exact_lru_new(base + (i < extra), &s->mc);
    failed |= s->shards[i].l == NULL;
  }
  if (failed) {
    sh_close(s);
    return -1;
  }
  *out = s;
  return 0;
}

static inline shard_t *shard_of(sharded_t *s, uint64_t hv)
{
  return &s->shards[s->shift >= 64 ? 0 : hv >> s->shift];
}

static int sh_get(void *h, const void *key, size_t klen, void *buf, size_t cap)
{
  sharded_t *s = h;
  uint64_t hv = bench_hash(s->secret, key, klen);
  shard_t *sh = shard_of(s, hv);
  pthread_mutex_lock(&sh->lock);
  int hit = exact_lru_get(sh->l, hv, key, klen, buf, cap);
  pthread_mutex_unlock(&sh->lock);
  return hit;
}

static void sh_put(void *h, const void *key, size_t klen, const void *val, size_t vlen)
{
  sharded_t *s = h;
  uint64_t hv = bench_hash(s->secret, key, klen);
  shard_t *sh = shard_of(s, hv);
  pthread_mutex_lock(&sh->lock);
  exact_lru_put(sh->l, hv, key, klen, val, vlen);
  pthread_mutex_unlock(&sh->lock);
}

static void sh_settle(void *h)
{
  (void)h;
}

static uint64_t sh_entries(void *h)
{
  sharded_t *s = h;
  uint64_t n = 0;
  for (unsigned i = 0; i < s->nshards; i++) {
    pthread_mutex_lock(&s->shards[i].lock);
    n += exact_lru_count(s->shards[i].l);
    pthread_mutex_unlock(&s->shards[i].lock);
  }
  return n;
}

static int64_t sh_mem(void *h)
{
  return memcount_bytes(&((sharded_t *)h)->mc);
}
static int64_t sh_self(void *h)
{
  (void)h;
  return -1;
}

const bench_impl_t impl_sharded_lru = {
    .name = "sharded-mutex-lru",
    .open = sh_open,
    .close = sh_close,
    .get = sh_get,
    .put = sh_put,
    .settle = sh_settle,
    .entries = sh_entries,
    .mem_bytes = sh_mem,
    .self_bytes = sh_self,
};
