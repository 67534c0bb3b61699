/*
 * The allocator hook and the byte accounting built on it.  Every
 * allocation the library makes goes through the cache's allocator; an
 * entry is charged what the allocator reports as usable (the default
 * allocator's malloc_usable_size), so max_bytes bounds what the heap
 * really hands out, not what the structs add up to.
 */
#include "mem.h"

#include "entry.h"

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

/*
 * Cache-line-aligned blocks (the cache handle, the shard array, counter
 * blocks) from an allocator that promises only malloc's alignment: ask for
 * CDCACHE__CACHELINE - 1 bytes more and round up.  *raw keeps what to free.
 */
void *cdcache__alloc_aligned(const cdcache_allocator_t *a, size_t size, void **raw)
{
  void *p = a->malloc(a->ctx, size + CDCACHE__CACHELINE - 1);
  *raw = p;
  if (p == NULL)
    return NULL;
  uintptr_t u = ((uintptr_t)p + CDCACHE__CACHELINE - 1) & ~(uintptr_t)(CDCACHE__CACHELINE - 1);
  return (void *)u;
}

void cdcache__free_aligned(const cdcache_allocator_t *a, void *raw, size_t size)
{
  if (raw != NULL)
    a->free(a->ctx, raw, size + CDCACHE__CACHELINE - 1);
}

size_t cdcache__charge(const cdcache_allocator_t *a, void *ptr, size_t size)
{
  if (a->usable_size != NULL) {
    size_t u = a->usable_size(a->ctx, ptr, size);
    return u > size ? u : size;
  }
  return size;
}
