/*
 * The cdcache adapter, through the public API only (cdcache-bench links
 * the shared library, as `pkg-config --libs cdcache` users do;
 * cdcache-bench-static, the same sources, the static one).  The cache is
 * opened with the default shard count (shards = 0) and an allocator hook
 * that charges every block's malloc_usable_size() to a memcount_t, so that
 * bytes per entry is measured from what the allocator handed out,
 * independently of the library's own accounting (cdcache_stats), which is
 * reported beside it.  get_or_load and the lease calls are the cache-aside
 * paths users call (bench.h's bench_loader_t gives the load its cost).
 */
#include "bench.h"

#include <cdcache.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

/* Waits until cdcache's reclaimer thread has freed what was queued: the
 * pending bytes stop changing (read every millisecond; unchanged over
 * five reads, which spans several of its 1 ms rounds; at most 1 s).
 * Entries on the shards' partial retire lists and in their pools stay
 * allocated (a quiet cache keeps them); cd_pending reports them, so that
 * the harness subtracts them for the drained figure. */
static void cd_settle(void *h)
{
  cdcache_stats_t st;
  uint64_t last = UINT64_MAX;
  int same = 0;
  for (int i = 0; i < 1000 && same < 5; i++) {
    uint64_t now = stats_of(h, &st) == 0 ? st.bytes_pending_free : 0;
    same = now == last ? same + 1 : 0;
    last = now;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Bytes unlinked but not yet freed (charged as the allocator hook counts
 * them: malloc_usable_size), batch headers included. */
static int64_t cd_pending(void *h)
{
  cdcache_stats_t st;
  return stats_of(h, &st) == 0 ? (int64_t)st.bytes_pending_free : 0;
}

typedef struct {
  const bench_loader_t *ld;
  uint64_t id;
} load_ctx_t;

static int loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  (void)key;
  (void)klen;
  const load_ctx_t *lc = ctx;
  bench_load_spin(lc->ld);
  return cdcache_fill_set_value(fill, lc->ld->value, lc->ld->vlen);
}

static int cd_load(void *h, const void *key, size_t klen, void *buf, size_t cap,
                   const bench_loader_t *ld)
{
  cdc_impl_t *ci = h;
  load_ctx_t lc = {ld, 0};
  size_t vlen;
  uint64_t loads = bench_loads_get();
  int rc = cdcache_get_or_load(ci->c, key, klen, loader, &lc, CDCACHE_TTL_DEFAULT,
                               CDCACHE_WAIT_FOREVER, buf, cap, &vlen);
  (void)rc;
  return bench_loads_get() == loads; /* 1: served without this thread loading */
}

static int cd_lease(void *h, const void *key, size_t klen, void *buf, size_t cap,
                    const bench_loader_t *ld)
{
  cdc_impl_t *ci = h;
  size_t vlen;
  cdcache_lease_t *lease = NULL;
  int rc = cdcache_get_lease(ci->c, key, klen, buf, cap, &vlen, &lease);
  if (rc == 0 || rc == CDCACHE_ERANGE)
    return 1;
  bench_load_spin(ld);
  if (lease != NULL)
    cdcache_put_leased(ci->c, lease, ld->value, ld->vlen, CDCACHE_TTL_DEFAULT);
  return 0;
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

/* The two policies share every call but open. */
#define CDCACHE_IMPL(NAME, OPEN)                                                                   \
  {                                                                                                \
    .name = NAME, .open = OPEN, .close = cd_close, .get = cd_get, .put = cd_put,                   \
    .settle = cd_settle, .pending_bytes = cd_pending, .load = cd_load, .lease = cd_lease,          \
    .entries = cd_entries, .mem_bytes = cd_mem, .self_bytes = cd_self, .policy_bytes = cd_policy,  \
  }

const bench_impl_t impl_cdcache = CDCACHE_IMPL("cdcache", cd_open);
/* The same with policy = CDCACHE_ALLKEYS_S3FIFO (issue 13). */
const bench_impl_t impl_cdcache_s3fifo = CDCACHE_IMPL("cdcache-s3fifo", cd_open_s3fifo);
