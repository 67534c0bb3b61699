/*
 * The seeded hash.
 *
 * Why keyed.  With one fixed hash function, bucket placement is the same
 * in every process: anyone can search offline for keys that share a
 * bucket (2,000 of them take under two seconds) and send them as session
 * ids or URLs.  Each such key then costs a walk of the whole chain, under
 * the shard lock for writers.  So every cache draws its own secret at open
 * and hashes with it; placement is unpredictable from outside.
 *
 * The choice: XXH3-64 with a 192-byte random secret (XXH3_64bits_withSecret,
 * inlined), rather than keyed SipHash-1-3 as Redis uses.  XXH3 keeps the
 * hit path's cost (perf/hitpath-callgrind.sh measures it), and a random
 * secret removes the offline search.
 *
 * Known limits.  XXH3 is not a cryptographic PRF.  xxHash issue 1127: for
 * inputs of 32 to 240 bytes, some fixed pairs of keys collide under a
 * random secret with probability about 2^-27, independent of the secret's
 * size, so an attacker who sends many such pairs gets a few collisions
 * per 2^27 pairs: chains grow by a handful, not by thousands.  Keys of
 * 0-16 and above 240 bytes have no such known pairs.  The chain-length
 * tripwire (shards/shard.c) counts and logs any chain that grows long
 * anyway.
 */
#include "hash.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int cdcache__secret_init(unsigned char *secret)
{
  size_t got = 0;
  while (got < CDCACHE__SECRET_SIZE) {
    ssize_t n = getrandom(secret + got, CDCACHE__SECRET_SIZE - got, 0);
    if (n > 0)
      got += (size_t)n;
    else if (n < 0 && errno != EINTR)
      break;
  }
  if (got == CDCACHE__SECRET_SIZE)
    return 0;
  /* No getrandom (ENOSYS under old kernels or seccomp): derive one.  Not
   * secret against a local observer, still unpredictable offline. */
  static _Atomic uint64_t counter;
  struct timespec ts;
  (void)clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)secret ^
                  (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull);
  XXH3_generateSecret_fromSeed(secret, seed);
  return 1;
}
