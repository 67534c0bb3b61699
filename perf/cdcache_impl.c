/*
 * The cdcache adapters: `cdcache` (the default policy, allkeys-lru) and
 * `cdcache-s3fifo` (CDCACHE_ALLKEYS_S3FIFO).  The cache is opened with the
 * default shard count (shards = 0) and an allocator hook that charges every block's
 * malloc_usable_size() to a memcount_t, so that bytes per entry is
 * measured from what the allocator handed out, independently of the
 * library's own accounting (cdcache_stats), which is reported beside it.
 */
#include "bench.h"

#include <cdcache.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <urcu-bp.h>

/* Internal (core/reclaim.h, reachable through cdcache_static): frees every
 * retired entry of every shard after a grace period.  Retired entries wait
 * on per-shard lists until a batch fills, so without it a quiet cache
 * keeps up to one partial batch per shard pending indefinitely. */
void cdcache__retire_drain_all(cdcache_t *c);

typedef struct {
  memcount_t mc;
  cdcache_t *c;
} cdc_impl_t;

static void *hook_malloc(void *ctx, size_t size)
{
  return memcount_malloc(ctx, size);
}
static void hook_free(void *ctx, void *ptr, size_t size)
{
  (void)size;
  memcount_free(ctx, ptr);
}
static size_t hook_usable(void *ctx, void *ptr, size_t size)
{
  (void)ctx;
  (void)size;
  return malloc_usable_size(ptr);
}

static int cd_open_policy(const impl_cfg_t *cfg, cdcache_policy_t policy, void **out)
{
  cdc_impl_t *ci = bench_alloc64(sizeof *ci);
  if (!ci)
    return -1;
  memcount_init(&ci->mc);
  cdcache_config_t c;
  cdcache_config_init(&c);
  c.max_entries = cfg->capacity;
  c.shards = cfg->shards;
  c.policy = policy;
  if (cfg->key_size > c.max_key_len)
    c.max_key_len = (uint32_t)cfg->key_size;
  if (cfg->value_size > c.max_value_len)
    c.max_value_len = (uint32_t)cfg->value_size;
  c.allocator.malloc = hook_malloc;
  c.allocator.free = hook_free;
  c.allocator.usable_size = hook_usable;
  c.allocator.ctx = &ci->mc;
  int rc = cdcache_open(&c, &ci->c);
  if (rc != 0) {
    fprintf(stderr, "cdcache-bench: cdcache_open: %s\n", cdcache_strerror(rc));
    free(ci);
    return -1;
  }
  *out = ci;
  return 0;
}

static int cd_open(const impl_cfg_t *cfg, void **out)
{
  return cd_open_policy(cfg, CDCACHE_ALLKEYS_LRU, out);
}

static int cd_open_s3fifo(const impl_cfg_t *cfg, void **out)
{
  return cd_open_policy(cfg, CDCACHE_ALLKEYS_S3FIFO, out);
}

static void cd_close(void *h)
{
  cdc_impl_t *ci = h;
  cdcache_close(ci->c);
  free(ci);
}

static int cd_get(void *h, const void *key, size_t klen, void *buf, size_t cap)
{
  size_t vlen;
  int rc = cdcache_get(((cdc_impl_t *)h)->c, key, klen, buf, cap, &vlen);
  return rc == 0 || rc == CDCACHE_ERANGE;
}

static void cd_put(void *h, const void *key, size_t klen, const void *val, size_t vlen)
{
  cdcache_put(((cdc_impl_t *)h)->c, key, klen, val, vlen, CDCACHE_TTL_DEFAULT);
}

static int stats_of(cdc_impl_t *ci, cdcache_stats_t *st)
{
  st->struct_size = sizeof *st;
  return cdcache_stats(ci->c, st);
}

/* A grace period after which nothing unlinked is still allocated: the
 * shards' partial retire batches are submitted and freed, and the
 * call_rcu callbacks have run. */
static void cd_settle(void *h)
{
  cdc_impl_t *ci = h;
  cdcache__retire_drain_all(ci->c);
  urcu_bp_barrier();
}

static uint64_t cd_entries(void *h)
{
  cdcache_stats_t st;
  return stats_of(h, &st) == 0 ? st.entries : 0;
}

static int64_t cd_mem(void *h)
{
  return memcount_bytes(&((cdc_impl_t *)h)->mc);
}

static int64_t cd_self(void *h)
{
  cdcache_stats_t st;
  if (stats_of(h, &st) != 0)
    return -1;
  return (int64_t)(st.bytes_live + st.bytes_tables + st.bytes_pending_free);
}

static int64_t cd_policy(void *h)
{
  cdcache_stats_t st;
  return stats_of(h, &st) == 0 ? (int64_t)st.bytes_policy : -1;
}

cdcache_t *impl_cdcache_handle(void *h)
{
  return ((cdc_impl_t *)h)->c;
}

#define CDCACHE_IMPL(NAME, OPEN)                                                                   \
  {                                                                                                \
    .name = NAME, .open = OPEN, .close = cd_close, .get = cd_get, .put = cd_put,                   \
    .settle = cd_settle, .entries = cd_entries, .mem_bytes = cd_mem, .self_bytes = cd_self,        \
    .policy_bytes = cd_policy,                                                                     \
  }

const bench_impl_t impl_cdcache = CDCACHE_IMPL("cdcache", cd_open);
const bench_impl_t impl_cdcache_s3fifo = CDCACHE_IMPL("cdcache-s3fifo", cd_open_s3fifo);
