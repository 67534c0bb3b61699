/*
 * The one hash every implementation in the harness uses, inlined alike:
 * the library's own inline cdcache__hash (core/hash.h: XXH3-64 with a
 * 192-byte per-instance secret), each reference with a secret of its own
 * drawn from getrandom() at open, so none of them is handed a hash weaker
 * or cheaper than cdcache's.
 */
#ifndef CDCACHE_BENCH_HASH_H
#define CDCACHE_BENCH_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "hash.h" /* core/hash.h */

#define BENCH_SECRET_SIZE CDCACHE__SECRET_SIZE

/* Fills secret from getrandom(); 0, or -1 if the kernel refused. */
int bench_secret_init(unsigned char secret[BENCH_SECRET_SIZE]);

static inline uint64_t bench_hash(const unsigned char *secret, const void *key, size_t len)
{
  return cdcache__hash(secret, key, len);
}

#endif
