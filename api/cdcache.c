/*
 * The public facade: validates every argument, refuses service in a
 * forked child, and hands over to the core (core/ops.h).  Nothing here
 * touches shared state beyond reading the handle.
 */
#include "ops.h"

#include <string.h>

#define MAX_KEY_LIMIT 65535u
#define MAX_VALUE_LIMIT (1u << 30)

const char *cdcache_strerror(int err)
{
  switch (err) {
  case CDCACHE_OK:
    return "success";
  case CDCACHE_EINVAL:
    return "invalid argument";
  case CDCACHE_ENOMEM:
    return "out of memory";
  case CDCACHE_ENOENT:
    return "not found";
  case CDCACHE_ERANGE:
    return "buffer too small for the value";
  case CDCACHE_EFULL:
    return "cache full and the eviction policy forbids making room";
  case CDCACHE_ETIMEDOUT:
    return "timed out waiting for another caller's fill";
  case CDCACHE_EBUSY:
    return "another fill of the key is in flight";
  case CDCACHE_ESTALE:
    return "stale: the key was invalidated or the cache has failed closed";
  case CDCACHE_EFORKED:
    return "handle used in a child process after fork";
  case CDCACHE_E2BIG:
    return "key or value longer than the configured limit";
  case CDCACHE_ELOADER:
    return "the loader returned success without a value";
  case CDCACHE_ECLOSED:
    return "the subscription is stopped";
  case CDCACHE_EMONGO:
    return "MongoDB error";
  case CDCACHE_ESTATE:
    return "the call does not fit the object's state";
  default:
    return "unknown error";
  }
}

int cdcache_config_init(cdcache_config_t *cfg)
{
  if (cfg == NULL)
    return CDCACHE_EINVAL;
  memset(cfg, 0, sizeof *cfg);
  cfg->struct_size = sizeof *cfg;
  cfg->max_key_len = 250;
  cfg->max_value_len = 1u << 20;
  cfg->fill_timeout_ms = 10000;
  cfg->policy = CDCACHE_ALLKEYS_LRU;
  cdcache__default_allocator(&cfg->allocator);
  return 0;
}

int cdcache_open(const cdcache_config_t *cfg, cdcache_t **out)
{
  if (cfg == NULL || out == NULL)
    return CDCACHE_EINVAL;
  /* Only the layout this library was built with is known so far; a
   * future version accepts older (smaller) struct sizes here. */
  if (cfg->struct_size != sizeof(cdcache_config_t))
    return CDCACHE_EINVAL;
  if (cfg->max_entries == 0 || cfg->max_key_len == 0 || cfg->max_key_len > MAX_KEY_LIMIT ||
      cfg->max_value_len > MAX_VALUE_LIMIT || (cfg->shards & (cfg->shards - 1)) != 0 ||
      cfg->shards > 65536 || (cfg->shards != 0 && cfg->max_entries < cfg->shards) ||
      cfg->policy > CDCACHE_VOLATILE_S3FIFO || cfg->allocator.malloc == NULL ||
      cfg->allocator.free == NULL)
    return CDCACHE_EINVAL;
  return cdcache__open(cfg, out);
}

int cdcache_close(cdcache_t *cache)
{
  if (cache == NULL)
    return 0;
  return cdcache__close(cache);
}

static int check_key(const cdcache_t *c, const void *key, size_t klen)
{
  if (c == NULL || key == NULL || klen == 0)
    return CDCACHE_EINVAL;
  if (cdcache__forked(c))
    return CDCACHE_EFORKED;
  if (klen > c->cfg.max_key_len)
    return CDCACHE_E2BIG;
  return 0;
}

static int check_out(const void *buf, size_t cap, const size_t *vlen)
{
  return (vlen == NULL || (buf == NULL && cap != 0)) ? CDCACHE_EINVAL : 0;
}

int cdcache_put(cdcache_t *cache, const void *key, size_t klen, const void *val, size_t vlen,
                uint32_t ttl_ms)
{
  int rc = check_key(cache, key, klen);
  if (rc != 0)
    return rc;
  if (val == NULL && vlen != 0)
    return CDCACHE_EINVAL;
  if (vlen > cache->cfg.max_value_len) {
    cdcache__put_failed(cache, key, klen);
    return CDCACHE_E2BIG;
  }
  return cdcache__put(cache, key, klen, val, vlen, ttl_ms);
}

int cdcache_get(cdcache_t *cache, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
  int rc = check_key(cache, key, klen);
  if (rc == 0)
    rc = check_out(buf, cap, vlen);
  if (rc != 0)
    return rc;
  return cdcache__get(cache, key, klen, buf, cap, vlen);
}

int cdcache_delete(cdcache_t *cache, const void *key, size_t klen)
{
  int rc = check_key(cache, key, klen);
  return rc != 0 ? rc : cdcache__remove(cache, key, klen, false);
}

int cdcache_invalidate(cdcache_t *cache, const void *key, size_t klen)
{
  int rc = check_key(cache, key, klen);
  return rc != 0 ? rc : cdcache__remove(cache, key, klen, true);
}

int cdcache_flush(cdcache_t *cache)
{
  if (cache == NULL)
    return CDCACHE_EINVAL;
  if (cdcache__forked(cache))
    return CDCACHE_EFORKED;
  return cdcache__flush(cache);
}

int cdcache_fill_set_value(cdcache_fill_t *fill, const void *val, size_t vlen)
{
  if (fill == NULL || (val == NULL && vlen != 0))
    return CDCACHE_EINVAL;
  return cdcache__fill_set_value(fill, val, vlen);
}

uint64_t cdcache_fill_cluster_time(const cdcache_fill_t *fill)
{
  return fill == NULL ? 0 : cdcache__cluster_time(fill->cache);
}

int cdcache_get_or_load(cdcache_t *cache, const void *key, size_t klen, cdcache_loader_fn loader,
                        void *ctx, uint32_t ttl_ms, uint32_t timeout_ms, void *buf, size_t cap,
                        size_t *vlen)
{
  int rc = check_key(cache, key, klen);
  if (rc == 0)
    rc = check_out(buf, cap, vlen);
  if (rc == 0 && loader == NULL)
    rc = CDCACHE_EINVAL;
  if (rc != 0)
    return rc;
  return cdcache__get_or_load(cache, key, klen, loader, ctx, ttl_ms, timeout_ms, buf, cap, vlen);
}

int cdcache_get_lease(cdcache_t *cache, const void *key, size_t klen, void *buf, size_t cap,
                      size_t *vlen, cdcache_lease_t **lease)
{
  if (lease != NULL)
    *lease = NULL;
  int rc = check_key(cache, key, klen);
  if (rc == 0)
    rc = check_out(buf, cap, vlen);
  if (rc == 0 && lease == NULL)
    rc = CDCACHE_EINVAL;
  if (rc != 0)
    return rc;
  return cdcache__get_lease(cache, key, klen, buf, cap, vlen, lease);
}

int cdcache_put_leased(cdcache_t *cache, cdcache_lease_t *lease, const void *val, size_t vlen,
                       uint32_t ttl_ms)
{
  if (cache == NULL || lease == NULL)
    return CDCACHE_EINVAL;
  if (cdcache__forked(cache))
    return CDCACHE_EFORKED;
  if (val == NULL && vlen != 0) {
    /* The lease is consumed in every case, bad value or not. */
    (void)cdcache__lease_release(cache, lease);
    return CDCACHE_EINVAL;
  }
  return cdcache__put_leased(cache, lease, val, vlen, ttl_ms);
}

int cdcache_lease_release(cdcache_t *cache, cdcache_lease_t *lease)
{
  if (lease == NULL)
    return 0;
  if (cache == NULL)
    return CDCACHE_EINVAL;
  if (cdcache__forked(cache))
    return CDCACHE_EFORKED; /* the copied lease is the parent's: left as is */
  return cdcache__lease_release(cache, lease);
}

int cdcache_stats(cdcache_t *cache, cdcache_stats_t *stats)
{
  if (cache == NULL || stats == NULL || stats->struct_size < sizeof(size_t))
    return CDCACHE_EINVAL;
  if (cdcache__forked(cache))
    return CDCACHE_EFORKED;
  return cdcache__stats(cache, stats);
}

int cdcache_fresh(cdcache_t *cache, uint64_t *fresh_until_ms)
{
  if (cache == NULL)
    return CDCACHE_EINVAL;
  if (cdcache__forked(cache))
    return CDCACHE_EFORKED;
  uint64_t fu = cdcache__fresh_until(cache);
  if (fresh_until_ms != NULL)
    *fresh_until_ms = fu;
  return cdcache__fresh(cache, cdcache__now_ms(cache)) ? 0 : CDCACHE_ESTALE;
}
