/*
 * The one key hash of the project, keyed per cache (hash.c says why and
 * what it does not promise).  perf/ references include this header to
 * hash exactly as the cache does.
 */
#ifndef CDCACHE_HASH_H
#define CDCACHE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* Bytes of a cache's secret: XXH3's default secret size. */
#define CDCACHE__SECRET_SIZE XXH3_SECRET_DEFAULT_SIZE

/* XXH3-64 of key under a secret of CDCACHE__SECRET_SIZE bytes.  The top
 * bits pick the shard, the low bits the bucket. */
static inline uint64_t cdcache__hash(const unsigned char *secret, const void *key, size_t klen)
{
  return XXH3_64bits_withSecret(key, klen, secret, CDCACHE__SECRET_SIZE);
}

/* Fills secret with CDCACHE__SECRET_SIZE bytes from getrandom(); falls
 * back to a secret derived from the clock, the address space and a
 * counter when the kernel has none to give (returns 1 then, else 0). */
int cdcache__secret_init(unsigned char *secret);

#endif
