/*
 * S3-FIFO's memory of keys that are not in the cache: a frequency sketch
 * and a ghost filter, one of each per shard (allkeys-s3fifo and
 * volatile-s3fifo only).
 *
 * The policy (shard.c has the queues): new keys enter a small FIFO S (15%
 * of the entries); a hit raises the entry's 2-bit saturating counter (the
 * `ref` byte, written by a reader only when the value changes); S's
 * oldest entry moves to the main FIFO M if it was hit, and is otherwise
 * dropped, its hash remembered by the ghost.  M is a CLOCK whose hand
 * gives an entry with a non-zero counter another lap and decrements it.
 * A miss on a key the ghost remembers goes straight to M, but only if the
 * sketch counts it more often than the entry M's hand would evict next
 * (TinyLFU's admission duel); otherwise it starts over in S.  One-hit
 * keys never reach M, so a scan does not push out the hot set, and the
 * duel keeps a burst of ghost hits from flushing M.  The design was
 * picked from perf/policy_sim.c's table (README, "Eviction policies").
 *
 * Writers only.  Hits never touch the sketch: it counts what the shard's
 * writer sees, every insert (a miss, in cache-aside) and each lap of M's
 * hand over an entry whose counter is above zero (a hit the hand
 * observed).  So everything here is read and written under the shard
 * lock, and nothing on the hit path changes.
 *
 * The sketch is a count-min sketch of 4-bit counters, four rows, packed
 * 16 to a 64-bit word (as Caffeine's FrequencySketch): a key's four
 * counters lie in one 64-byte block (one cache miss per count), each row
 * picking a word of the block and one of its four 16-bit groups, the
 * row's counter being the group's nibble for that row.  A key's count is
 * the least of its four counters, and counting is conservative (Estan
 * and Varghese): only the key's least counters go up, the others already
 * holding more than this key's count because of other keys.  Counting
 * all four, a churn of distinct keys brought each counter about 12
 * increments per halving period: a key never seen scored a median 9 of
 * 15 and the duel was close to a coin toss; conservatively, a median 2
 * (test_policy_s3fifo: "the sketch does not saturate under churn").
 * After 20 x share counts every counter is halved, so the sketch follows
 * a changing workload (Caffeine halves after 10 x, but counts every
 * access; this one sees the misses and the hits the hand observes, about
 * half as many events; halving after 10 x measured worse on the shared
 * traces, README "Eviction policies").  Size: the power of two >=
 * share/4 words, 2 to 4 bytes per entry, and at least 64 words: in a
 * smaller sketch a tiny shard's counters all saturate, every duel ties,
 * and the ghost stops admitting anything (trace-multi2 at 56 entries
 * misses 0.91 instead of 0.79 in perf/policy_sim.c).
 *
 * The ghost is two Bloom filters (3 probes, 11 bits per remembered key),
 * used in turn: hashes go into the current one; once it holds `share`
 * hashes the other one is cleared and becomes current.  A hash is
 * remembered if either filter has it: the last share .. 2 x share keys S
 * dropped, give or take a false positive, about 1.4% per full filter, at
 * worst (both full, just before the turn) 2.8% for the two
 * (test_policy_s3fifo: "the ghost remembers what S dropped, with under 3%
 * false positives").  Sized as a power of two of at least 8 bits per key,
 * a share that was itself a power of two got exactly 8 and a false
 * positive rate of up to 6.1%; the probes now map a hash onto any number
 * of bits by multiplication, so every share gets 11.  Size: 2 x 11 bits,
 * 2.75 bytes per entry.  No per-key memory, no deletion: a ghost hit
 * leaves the hash where it is, harmlessly.
 *
 * Both sizes are charged to the cache's tables (bytes_tables, and so to
 * max_bytes) and reported as bytes_policy in the stats.
 */
#include "s3fifo.h"

#include <string.h>

#define SKETCH_MIN_WORDS 64u
#define GHOST_BITS_PER_KEY 11u
#define GHOST_MIN_BITS 64u
#define RESET_FACTOR 20u

/* Sizes are computed from the share capped at 2^40 entries (far past any
 * memory: the allocation fails), so that no product or sum overflows. */
#define SHARE_CAP ((uint64_t)1 << 40)

static uint64_t pow2_ceil(uint64_t x)
{
  return x <= 1 ? 1 : (uint64_t)1 << (64 - __builtin_clzll(x - 1));
}

static uint64_t sketch_words(uint64_t share)
{
  uint64_t w = pow2_ceil((share < SHARE_CAP ? share : SHARE_CAP) / 4);
  return w < SKETCH_MIN_WORDS ? SKETCH_MIN_WORDS : w;
}

/* Exactly GHOST_BITS_PER_KEY bits per key, in whole words: probes map a
 * hash onto the range by multiplication, so no power of two is needed. */
static uint64_t ghost_bits(uint64_t share)
{
  uint64_t b = (share < SHARE_CAP ? share : SHARE_CAP) * GHOST_BITS_PER_KEY;
  b = (b + 63) / 64 * 64;
  return b < GHOST_MIN_BITS ? GHOST_MIN_BITS : b;
}

uint64_t cdcache__s3_bytes(uint64_t share)
{
  return sketch_words(share) * sizeof(uint64_t) + 2 * (ghost_bits(share) / 8);
}

int cdcache__s3_init(const cdcache_allocator_t *a, struct cdcache__s3 *p, uint64_t share)
{
  memset(p, 0, sizeof *p);
  uint64_t words = sketch_words(share), gbytes = ghost_bits(share) / 8;
  p->share = share;
  p->sketch = a->malloc(a->ctx, words * sizeof(uint64_t));
  p->ghost[0] = a->malloc(a->ctx, gbytes);
  p->ghost[1] = a->malloc(a->ctx, gbytes);
  if (p->sketch == NULL || p->ghost[0] == NULL || p->ghost[1] == NULL) {
    cdcache__s3_destroy(a, p);
    return CDCACHE_ENOMEM;
  }
  p->sketch_mask = words - 1;
  p->sketch_reset_at = RESET_FACTOR * (share == 0 ? 1 : share);
  p->ghost_bits = ghost_bits(share);
  p->ghost_per = share == 0 ? 1 : share;
  cdcache__s3_clear(p);
  return 0;
}

void cdcache__s3_destroy(const cdcache_allocator_t *a, struct cdcache__s3 *p)
{
  uint64_t words = sketch_words(p->share), gbytes = ghost_bits(p->share) / 8;
  if (p->sketch != NULL)
    a->free(a->ctx, p->sketch, words * sizeof(uint64_t));
  for (int i = 0; i < 2; i++)
    if (p->ghost[i] != NULL)
      a->free(a->ctx, p->ghost[i], gbytes);
  memset(p, 0, sizeof *p);
}

void cdcache__s3_clear(struct cdcache__s3 *p)
{
  memset(p->sketch, 0, (p->sketch_mask + 1) * sizeof(uint64_t));
  memset(p->ghost[0], 0, p->ghost_bits / 8);
  memset(p->ghost[1], 0, p->ghost_bits / 8);
  p->sketch_count = 0;
  p->ghost_n = 0;
  p->ghost_cur = 0;
}

/* 64 well-mixed bits from the entry's 32-bit hash (splitmix64's finalizer). */
static inline uint64_t spread(uint32_t hash, uint64_t salt)
{
  uint64_t x = (uint64_t)hash + salt;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* A hash's four counters, one per row, all in one 64-byte block of 8
 * words (one cache line, as Caffeine 3 lays them out): the high bits of
 * the spread hash pick the block, each row takes a byte of the low bits
 * for its word in the block and its 16-bit group in the word; the row's
 * nibble is at row x 4 in the group. */
static inline void slots(const struct cdcache__s3 *p, uint32_t hash, uint64_t idx[4],
                         unsigned sh[4])
{
  uint64_t x = spread(hash, 0x9e3779b97f4a7c15ULL);
  uint64_t block = ((x >> 32) & (p->sketch_mask >> 3)) << 3;
  for (unsigned r = 0; r < 4; r++) {
    unsigned b = (unsigned)(x >> (8 * r));
    idx[r] = block + (b & 7u);
    sh[r] = ((b >> 3) & 3u) * 16 + r * 4;
  }
}

unsigned cdcache__s3_freq(const struct cdcache__s3 *p, uint32_t hash)
{
  uint64_t idx[4];
  unsigned sh[4], f = 15;
  slots(p, hash, idx, sh);
  for (unsigned r = 0; r < 4; r++) {
    unsigned v = (unsigned)(p->sketch[idx[r]] >> sh[r]) & 15u;
    f = v < f ? v : f;
  }
  return f;
}

/* Conservative update: only the key's least counters go up (the others
 * already count more than this key, because of other keys), and nothing
 * once they are at 15. */
void cdcache__s3_count(struct cdcache__s3 *p, uint32_t hash)
{
  uint64_t idx[4];
  unsigned sh[4], v[4], least = 15;
  slots(p, hash, idx, sh);
  for (unsigned r = 0; r < 4; r++) {
    v[r] = (unsigned)(p->sketch[idx[r]] >> sh[r]) & 15u;
    least = v[r] < least ? v[r] : least;
  }
  if (least == 15)
    return;
  for (unsigned r = 0; r < 4; r++)
    if (v[r] == least)
      p->sketch[idx[r]] += (uint64_t)1 << sh[r];
  if (++p->sketch_count >= p->sketch_reset_at) {
    for (uint64_t i = 0; i <= p->sketch_mask; i++)
      p->sketch[i] = (p->sketch[i] >> 1) & 0x7777777777777777ULL;
    p->sketch_count /= 2;
  }
}

/* The high 64 bits of a x b. */
static inline uint64_t mul_hi(uint64_t a, uint64_t b)
{
  uint64_t al = a & 0xffffffffu, ah = a >> 32, bl = b & 0xffffffffu, bh = b >> 32;
  uint64_t mid = (al * bl >> 32) + (ah * bl & 0xffffffffu) + al * bh;
  return ah * bh + (ah * bl >> 32) + (mid >> 32);
}

/* Probe i of a hash, a bit in [0, nbits): double hashing (Kirsch and
 * Mitzenmacher), mapped onto the range by multiplication (Lemire). */
static inline uint64_t probe(uint64_t x, unsigned i, uint64_t nbits)
{
  return mul_hi(x + i * (((x >> 32) | (x << 32)) | 1u), nbits);
}

static inline bool ghost_in(const uint64_t *bits, uint64_t nbits, uint64_t x)
{
  for (unsigned i = 0; i < 3; i++) {
    uint64_t b = probe(x, i, nbits);
    if (!((bits[b / 64] >> (b % 64)) & 1u))
      return false;
  }
  return true;
}

bool cdcache__s3_ghost_has(const struct cdcache__s3 *p, uint32_t hash)
{
  uint64_t x = spread(hash, 0);
  return ghost_in(p->ghost[0], p->ghost_bits, x) || ghost_in(p->ghost[1], p->ghost_bits, x);
}

void cdcache__s3_ghost_add(struct cdcache__s3 *p, uint32_t hash)
{
  if (p->ghost_n >= p->ghost_per) {
    p->ghost_cur ^= 1;
    memset(p->ghost[p->ghost_cur], 0, p->ghost_bits / 8);
    p->ghost_n = 0;
  }
  uint64_t x = spread(hash, 0);
  uint64_t *bits = p->ghost[p->ghost_cur];
  for (unsigned i = 0; i < 3; i++) {
    uint64_t b = probe(x, i, p->ghost_bits);
    bits[b / 64] |= (uint64_t)1 << (b % 64);
  }
  p->ghost_n++;
}
