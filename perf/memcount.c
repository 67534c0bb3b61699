/*
 * The counting allocator: every impl's allocations go through it (cdcache's
 * through its cdcache_allocator_t hook), and it keeps the sum of
 * malloc_usable_size() of the live blocks, i.e. what the allocator really
 * handed out, not what was asked.
 *
 * Each thread adds to its own padded slot (relaxed atomics), so counting
 * adds no shared cache-line traffic to the measured operations.
 */
#include "bench.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

static _Atomic unsigned next_slot;
static _Thread_local int my_slot = -1;

static inline unsigned slot_of_thread(void)
{
  if (my_slot < 0)
    my_slot =
        (int)(atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed) % MEMCOUNT_SLOTS);
  return (unsigned)my_slot;
}

void memcount_init(memcount_t *mc)
{
  for (int i = 0; i < MEMCOUNT_SLOTS; i++)
    atomic_init(&mc->slot[i].bytes, 0);
}

void memcount_add(memcount_t *mc, int64_t n)
{
  atomic_fetch_add_explicit(&mc->slot[slot_of_thread()].bytes, n, memory_order_relaxed);
}

void *memcount_malloc(memcount_t *mc, size_t size)
{
  void *p = malloc(size);
  if (p)
    memcount_add(mc, (int64_t)malloc_usable_size(p));
  return p;
}

void *memcount_calloc(memcount_t *mc, size_t n, size_t size)
{
  void *p = calloc(n, size);
  if (p)
    memcount_add(mc, (int64_t)malloc_usable_size(p));
  return p;
}

void memcount_free(memcount_t *mc, void *ptr)
{
  if (!ptr)
    return;
  memcount_add(mc, -(int64_t)malloc_usable_size(ptr));
  free(ptr);
}

int64_t memcount_bytes(const memcount_t *mc)
{
  int64_t sum = 0;
  for (int i = 0; i < MEMCOUNT_SLOTS; i++)
    sum += atomic_load_explicit(&mc->slot[i].bytes, memory_order_relaxed);
  return sum;
}

void *bench_alloc64(size_t size)
{
  return aligned_alloc(64, (size + 63) & ~(size_t)63);
}
