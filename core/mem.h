/* The allocator hook and byte accounting (mem.c). */
#ifndef CDCACHE_MEM_H
#define CDCACHE_MEM_H

#include "cdcache.h"

#include <stddef.h>

void cdcache__default_allocator(cdcache_allocator_t *a);
/* Cache-line-aligned block of size bytes; *raw is what to free. */
void *cdcache__alloc_aligned(const cdcache_allocator_t *a, size_t size, void **raw);
void cdcache__free_aligned(const cdcache_allocator_t *a, void *raw, size_t size);
/* The bytes the allocator charged for ptr (asked size bytes). */
size_t cdcache__charge(const cdcache_allocator_t *a, void *ptr, size_t size);

#endif
