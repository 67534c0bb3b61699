/*
 * The one hash every implementation in the harness uses, inlined alike:
 * XXH3_64bits_withSecret over a random 192-byte per-instance secret read
 * from getrandom(), as cdcache does (issue 8's core/hash.h).  Each
 * reference draws its own secret at open, so none of them is handed a
 * hash weaker or cheaper than cdcache's.
 */
#ifndef CDCACHE_BENCH_HASH_H
#define CDCACHE_BENCH_HASH_H

#include <stddef.h>
#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define BENCH_SECRET_SIZE 192

/* Fills secret from getrandom(); 0, or -1 if the kernel refused. */
int bench_secret_init(unsigned char secret[BENCH_SECRET_SIZE]);

static inline uint64_t bench_hash(const unsigned char *secret, const void *key, size_t len)
{
  return XXH3_64bits_withSecret(key, len, secret, BENCH_SECRET_SIZE);
}

#endif
