/*
 * The entry layout and what every layer above needs to handle entries:
 * cache-line size, the ThreadSanitizer annotations of the grace period,
 * the debug assertions, key comparison and value copy.  Knows nothing of
 * shards, fills or the cache handle: a placeholder points at an opaque
 * link (struct cdcache__fill_link) whose two fields the shard sets.
 */
#ifndef CDCACHE_ENTRY_H
#define CDCACHE_ENTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CDCACHE__CACHELINE 64

/* Invariants the code relies on ("shard lock held", "entry unlinked").
 * Checked when CDCACHE_ASSERTS is defined (the library the tests link is
 * built so); compiled out otherwise. */
#ifdef CDCACHE_ASSERTS
#include <assert.h>
void cdcache__assert_fail(const char *expr, const char *file, int line);
#define CDCACHE__ASSERT(x) ((x) ? (void)0 : cdcache__assert_fail(#x, __FILE__, __LINE__))
#else
#define CDCACHE__ASSERT(x) ((void)0)
#endif

/* ThreadSanitizer cannot see liburcu's grace periods (inline assembly and
 * membarrier), so the read side and the reclaimer tell it about the
 * ordering they rely on.  See reclaim.c. */
#ifdef CDCACHE_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CDCACHE__TSAN_ACQUIRE(a) __tsan_acquire(a)
#define CDCACHE__TSAN_RELEASE(a) __tsan_release(a)
#else
#define CDCACHE__TSAN_ACQUIRE(a) ((void)(a))
#define CDCACHE__TSAN_RELEASE(a) ((void)(a))
#endif
extern char cdcache__grace_token;

/*
 * The fill a placeholder stands for, as a shard sees it: the shard sets
 * these under its lock when it unlinks or replaces the placeholder, and
 * touches nothing else of the fill (api/fill.c embeds it).
 */
struct cdcache__fill_link {
  /* Synchronization: shard lock.  The placeholder, NULL once unlinked. */
  struct cdcache__entry *ph;
  /* Synchronization: shard lock.  Set when a delete, put, invalidation,
   * flush or takeover of the key happens while the fill is in flight. */
  bool dead;
};

#define CDCACHE__E_TTL 0x01u         /* data begins with a uint64_t expiry (ms) */
#define CDCACHE__E_PLACEHOLDER 0x02u /* a fill in flight: data holds its link */
#define CDCACHE__E_VOLATILE 0x04u    /* lives on the shard's TTL list */
/* ref counts hits up to 3 (s3fifo), not 1; 0x08 >> 2 is what it adds to
 * the cap, so a reader finds the cap in the flags it has already loaded. */
#define CDCACHE__E_COUNT3 0x08u
static inline uint8_t cdcache__entry_ref_cap(uint8_t flags)
{
  return (uint8_t)(1u + ((flags & CDCACHE__E_COUNT3) >> 2));
}

/*
 * A cached key and value, or a placeholder for a fill in flight.  The
 * entry is immutable once published except for next (RCU-published chain
 * link), the list links and in_main (shard lock) and ref (the hit count).
 * Layout: 40 bytes of header, then [expiry][link pointer][key][value].
 */
struct cdcache__entry {
  /* Synchronization: RCU-published.  Written under the shard lock with
   * release order; readers load it with acquire (consume) order. */
  _Atomic(struct cdcache__entry *) next;
  /* Synchronization: shard lock.  The eviction list while linked; the
   * retire list (ret) once unlinked. */
  union {
    struct {
      struct cdcache__entry *prev, *next;
    } lru;
    struct cdcache__entry *ret;
  } u;
  uint32_t hash; /* Synchronization: read-only after publication (low hash bits) */
  uint32_t vlen; /* read-only after publication */
  uint16_t klen; /* read-only after publication */
  uint8_t flags; /* read-only after publication */
  /* Synchronization: atomic, relaxed.  The hits since the hand last
   * passed, saturating at the cache's cap (1: CLOCK's reference bit; 3:
   * s3fifo's 2-bit counter): a reader stores ref + 1 only while it is
   * below the cap, so a hot entry's byte is written a few times per trip
   * of the hand, not once per hit.  The evictor lowers it under the shard
   * lock.  A reader's store may overwrite a concurrent lowering, or two
   * readers may count one hit: the count is a hint, never a bound. */
  _Atomic uint8_t ref;
  uint32_t charge : 31; /* read-only: bytes the allocator charged (< 2^31: values <= 1 GiB) */
  /* Synchronization: shard lock (writers only; readers never look).
   * s3fifo: the entry is on the main FIFO, not the small one. */
  uint32_t in_main : 1;
  unsigned char data[];
};

static inline size_t cdcache__entry_prefix(uint8_t flags)
{
  return ((flags & CDCACHE__E_TTL) ? sizeof(uint64_t) : 0) +
         ((flags & CDCACHE__E_PLACEHOLDER) ? sizeof(uintptr_t) : 0);
}
static inline size_t cdcache__entry_size(uint8_t flags, size_t klen, size_t vlen)
{
  return offsetof(struct cdcache__entry, data) + cdcache__entry_prefix(flags) + klen + vlen;
}
static inline const unsigned char *cdcache__entry_key(const struct cdcache__entry *e)
{
  return e->data + cdcache__entry_prefix(e->flags);
}
static inline const unsigned char *cdcache__entry_val(const struct cdcache__entry *e)
{
  return cdcache__entry_key(e) + e->klen;
}
static inline uint64_t cdcache__entry_expiry(const struct cdcache__entry *e)
{
  uint64_t x;
  __builtin_memcpy(&x, e->data, sizeof x);
  return x;
}
/* A placeholder's link: what the shard knows of the fill in flight. */
static inline struct cdcache__fill_link *cdcache__entry_link(const struct cdcache__entry *e)
{
  uintptr_t f;
  __builtin_memcpy(&f, e->data + ((e->flags & CDCACHE__E_TTL) ? sizeof(uint64_t) : 0), sizeof f);
  return (struct cdcache__fill_link *)f;
}

/* Is a value entry expired at `now`?  slack_ms: the clock's possible lag
 * (errs towards early). */
static inline bool cdcache__entry_expired(const struct cdcache__entry *e, uint64_t now,
                                          uint64_t slack_ms)
{
  return (e->flags & CDCACHE__E_TTL) && now + slack_ms >= cdcache__entry_expiry(e);
}

/* Key comparison and value copy, inlined for the short keys and values
 * caches mostly hold (a libc call costs more than the work). */
static inline bool cdcache__key_eq(const unsigned char *a, const void *bv, size_t n)
{
  const unsigned char *b = bv;
  if (n >= 8 && n <= 16) {
    uint64_t x0, x1, y0, y1;
    __builtin_memcpy(&x0, a, 8);
    __builtin_memcpy(&y0, b, 8);
    __builtin_memcpy(&x1, a + n - 8, 8);
    __builtin_memcpy(&y1, b + n - 8, 8);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
  }
  return __builtin_memcmp(a, b, n) == 0;
}

static inline void cdcache__copy(void *dst, const void *src, size_t n)
{
  if (n >= 8 && n <= 16) {
    uint64_t x0, x1;
    __builtin_memcpy(&x0, src, 8);
    __builtin_memcpy(&x1, (const unsigned char *)src + n - 8, 8);
    __builtin_memcpy(dst, &x0, 8);
    __builtin_memcpy((unsigned char *)dst + n - 8, &x1, 8);
  } else if (n > 0) {
    __builtin_memcpy(dst, src, n);
  }
}

#endif /* CDCACHE_ENTRY_H */
