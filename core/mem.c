/*
 * The allocator hook and the byte accounting built on it.  Every
 * allocation the library makes goes through cache->cfg.allocator; an
 * entry is charged what the allocator reports as usable (the default
 * allocator's malloc_usable_size), so max_bytes bounds what the heap
 * really hands out, not what the structs add up to.
 */
#include "cache.h"

#include <malloc.h>
#include <stdlib.h>

static void *default_malloc(void *ctx, size_t size)
{
  (void)ctx;
  return malloc(size);
}

static void default_free(void *ctx, void *ptr, size_t size)
{
  (void)ctx;
  (void)size;
  free(ptr);
}

static size_t default_usable_size(void *ctx, void *ptr, size_t size)
{
  (void)ctx;
  (void)size;
  return malloc_usable_size(ptr);
}

void cdcache__default_allocator(cdcache_allocator_t *a)
{
  a->malloc = default_malloc;
  a->free = default_free;
  a->usable_size = default_usable_size;
  a->ctx = NULL;
}

void *cdcache__alloc(const cdcache_t *cache, size_t size)
{
  return cache->cfg.allocator.malloc(cache->cfg.allocator.ctx, size);
}

void cdcache__free(const cdcache_t *cache, void *ptr, size_t size)
{
  if (ptr != NULL)
    cache->cfg.allocator.free(cache->cfg.allocator.ctx, ptr, size);
}

size_t cdcache__charge(const cdcache_t *cache, void *ptr, size_t size)
{
  const cdcache_allocator_t *a = &cache->cfg.allocator;
  if (a->usable_size != NULL) {
    size_t u = a->usable_size(a->ctx, ptr, size);
    return u > size ? u : size;
  }
  return size;
}
