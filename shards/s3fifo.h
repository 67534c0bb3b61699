/* S3-FIFO's per-shard memory: the frequency sketch and the ghost filter
 * (s3fifo.c).  Everything here is read and written under the shard lock
 * only. */
#ifndef CDCACHE_S3FIFO_H
#define CDCACHE_S3FIFO_H

#include "cdcache.h"

#include <stdbool.h>
#include <stdint.h>

/* An s3fifo shard's sketch and ghost.  Synchronization: shard lock, all
 * of it. */
struct cdcache__s3 {
  uint64_t *sketch;         /* 4-bit counters, 16 to a word */
  uint64_t sketch_mask;     /* words - 1 */
  uint64_t sketch_count;    /* counts since the last halving (halved with it) */
  uint64_t sketch_reset_at; /* halve at this many */
  uint64_t *ghost[2];       /* two Bloom filters, used in turn */
  uint64_t ghost_bits;      /* bits per filter, a multiple of 64 */
  uint64_t ghost_n;         /* hashes in the current filter */
  uint64_t ghost_per;       /* hashes a filter takes before the turn passes */
  uint64_t share;           /* the shard's max entries, which sized all this */
  int ghost_cur;
};

/* Bytes the sketch and the ghost of a shard holding `share` entries take. */
uint64_t cdcache__s3_bytes(uint64_t share);
/* Allocates them (zeroed) through the allocator: 0 or CDCACHE_ENOMEM. */
int cdcache__s3_init(const cdcache_allocator_t *a, struct cdcache__s3 *p, uint64_t share);
void cdcache__s3_destroy(const cdcache_allocator_t *a, struct cdcache__s3 *p);
/* Forgets every count and every ghost (flush). */
void cdcache__s3_clear(struct cdcache__s3 *p);
/* Counts one access of the key with this hash (a miss, or a hit the
 * hand observed), raising only its least counters (conservative update);
 * halves every counter each 20 x share counts. */
void cdcache__s3_count(struct cdcache__s3 *p, uint32_t hash);
/* The sketch's estimate of the key's recent accesses, 0..15. */
unsigned cdcache__s3_freq(const struct cdcache__s3 *p, uint32_t hash);
/* Remembers the hash of a key S evicted; was it evicted recently? */
void cdcache__s3_ghost_add(struct cdcache__s3 *p, uint32_t hash);
bool cdcache__s3_ghost_has(const struct cdcache__s3 *p, uint32_t hash);

#endif
