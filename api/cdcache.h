/*
 * cdcache: an in-process, multi-threaded, lock-sharded LRU cache whose
 * lookups take no lock (RCU), kept fresh by a MongoDB change-stream
 * consumer that evicts the keys each database write affects.
 *
 * This is the library's one public header.  It includes no liburcu, ck,
 * libbson or libmongoc header.
 *
 * Conventions
 * -----------
 * - Every function returns 0 on success or a negative CDCACHE_E* code;
 *   cdcache_strerror() names it.  A failing call changes nothing unless
 *   its comment says otherwise.
 * - Handles are opaque.  Keys and values are binary-safe byte strings;
 *   a zero-length value is allowed (cache "absence" that way); a key is
 *   1..max_key_len bytes.  Values are copied in and copied out: the
 *   caller owns every buffer it passes, the library owns what it
 *   allocates.
 * - Thread contract: every function may be called from any thread at the
 *   same time, except cdcache_close(), which must be the last call on a
 *   handle and must not race with any other call on it.  Threads need no
 *   registration and never announce quiescent states.
 * - Callbacks (allocator, clock, log, loader) run on the thread that made
 *   the call that triggered them; each one's comment says what it may
 *   call.
 * - After fork(), the child's handles refuse service with
 *   CDCACHE_EFORKED: nothing keeps a copied cache fresh.  The child may
 *   still call cdcache_close() on them (it frees nothing shared).
 */
#ifndef CDCACHE_H
#define CDCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CDCACHE_BUILDING) && defined(__GNUC__)
#define CDCACHE_EXTERN __attribute__((visibility("default")))
#else
#define CDCACHE_EXTERN
#endif

#define CDCACHE_VERSION_MAJOR 0
#define CDCACHE_VERSION_MINOR 1
#define CDCACHE_VERSION_PATCH 0

/* ---------------------------------------------------------------- errors */

#define CDCACHE_OK 0
#define CDCACHE_EINVAL (-1)    /* a NULL handle or argument, or a bad setting */
#define CDCACHE_ENOMEM (-2)    /* an allocation failed; nothing changed */
#define CDCACHE_ENOENT (-3)    /* miss: no live value for the key */
#define CDCACHE_ERANGE (-4)    /* the buffer is too small; *vlen has the need */
#define CDCACHE_EFULL (-5)     /* the policy forbids making room */
#define CDCACHE_ETIMEDOUT (-6) /* waited timeout_ms for another caller's fill */
#define CDCACHE_EBUSY (-7)     /* another caller's fill is in flight */
#define CDCACHE_ESTALE (-8)    /* the fill was invalidated; value not cached */
#define CDCACHE_EFORKED (-9)   /* handle used in a child after fork() */
#define CDCACHE_E2BIG (-10)    /* key or value longer than the set limit */
#define CDCACHE_ELOADER (-11)  /* a loader returned 0 without a value */
#define CDCACHE_ECLOSED (-12)  /* the subscription was stopped or failed */
#define CDCACHE_EMONGO (-13)   /* MongoDB or libmongoc reported an error */
#define CDCACHE_ESTATE (-14)   /* the call does not fit the object's state */

/* Returns a static, never-NULL description of a CDCACHE_E* code. */
CDCACHE_EXTERN const char *cdcache_strerror(int err);

/* ------------------------------------------------------------- config */

typedef struct cdcache cdcache_t;

typedef enum cdcache_policy {
  /* Evict any entry, least recently used first (the default). */
  CDCACHE_ALLKEYS_LRU = 0,
  /* Evict only entries that have a TTL; with none evictable a put fails
   * with CDCACHE_EFULL, as Redis does. */
  CDCACHE_VOLATILE_LRU = 1,
  /* Never evict: a put that would exceed capacity fails with
   * CDCACHE_EFULL and changes nothing. */
  CDCACHE_NOEVICTION = 2
} cdcache_policy_t;

/*
 * The allocator hook.  Every byte the library allocates goes through it.
 * malloc may return NULL: the operation then fails with CDCACHE_ENOMEM and
 * changes nothing.  free receives the size that was asked of malloc.
 * usable_size may be NULL; when set, memory accounting charges what it
 * reports (the default allocator uses malloc_usable_size).  The hooks may
 * be called from any thread, including liburcu's call_rcu thread, and
 * must not call into cdcache.
 */
typedef struct cdcache_allocator {
  void *(*malloc)(void *ctx, size_t size);
  void (*free)(void *ctx, void *ptr, size_t size);
  size_t (*usable_size)(void *ctx, void *ptr, size_t size);
  void *ctx;
} cdcache_allocator_t;

/* Log levels passed to a log callback. */
#define CDCACHE_LOG_ERROR 0
#define CDCACHE_LOG_WARNING 1
#define CDCACHE_LOG_INFO 2
#define CDCACHE_LOG_DEBUG 3

/*
 * A log callback.  It may be called from any thread (a caller's, or the
 * CDC thread) with no cdcache lock held; it must not call cdcache_close()
 * or cdcache_cdc_stop().  msg is valid for the call only.
 */
typedef void (*cdcache_log_fn)(void *ctx, int level, const char *msg);

/*
 * A clock in milliseconds, monotonic, for TTLs and fill timeouts; tests
 * inject one so they never sleep.  Called with no lock held, possibly
 * inside a read-side section: it must not block or call into cdcache.
 */
typedef uint64_t (*cdcache_clock_fn)(void *ctx);

/* ttl_ms values: 0 means "the cache's default TTL"; CDCACHE_TTL_NONE never
 * expires. */
#define CDCACHE_TTL_DEFAULT 0u
#define CDCACHE_TTL_NONE UINT32_MAX
/* timeout_ms value for cdcache_get_or_load: wait as long as the fill takes. */
#define CDCACHE_WAIT_FOREVER UINT32_MAX

typedef struct cdcache_config {
  /* sizeof(cdcache_config_t) as the caller was compiled; set by
   * cdcache_config_init.  Lets the struct grow without breaking binaries. */
  size_t struct_size;
  /* Required: the most entries the cache holds (whole cache). */
  uint64_t max_entries;
  /* The most bytes the cache holds: entries (key, value, real allocator
   * overhead, including unlinked entries awaiting their grace period) plus
   * the shards' tables.  0 means no byte bound.  Default 0. */
  uint64_t max_bytes;
  /* Number of shards, a power of two; 0 picks one from the core count,
   * capped so that each shard's share is at least CDCACHE_MIN_SHARD_ENTRIES.
   * Default 0. */
  uint32_t shards;
  /* Longest key in bytes; default 250, at most 65535. */
  uint32_t max_key_len;
  /* Longest value in bytes; default 1 MiB, at most 1 GiB. */
  uint32_t max_value_len;
  /* TTL applied when a put passes CDCACHE_TTL_DEFAULT; 0 (the default)
   * means entries do not expire. */
  uint32_t default_ttl_ms;
  /* How long a lease or load placeholder blocks other fills before a new
   * caller may take it over; default 10000 ms. */
  uint32_t fill_timeout_ms;
  cdcache_policy_t policy;
  /* Default: malloc/free/malloc_usable_size. */
  cdcache_allocator_t allocator;
  /* Default: CLOCK_MONOTONIC_COARSE in ms (NULL selects it). */
  cdcache_clock_fn clock;
  void *clock_ctx;
  /* Default: NULL (nothing is logged). */
  cdcache_log_fn log;
  void *log_ctx;
} cdcache_config_t;

/* A shard's share of max_entries is never below this (unless max_entries
 * itself is smaller, in which case there is one shard). */
#define CDCACHE_MIN_SHARD_ENTRIES 1024u

/* Fills *cfg with the defaults above; max_entries is left 0 and must be
 * set.  Thread-safe (touches only *cfg). */
CDCACHE_EXTERN int cdcache_config_init(cdcache_config_t *cfg);

/*
 * Creates a cache.  Copies *cfg; the caller keeps it.  Allocates the
 * shards and their tables through the allocator hook.  Errors:
 * CDCACHE_EINVAL (NULL, max_entries 0, a limit out of range, shards not a
 * power of two, a struct_size this library does not know, max_bytes too
 * small for the tables), CDCACHE_ENOMEM.
 */
CDCACHE_EXTERN int cdcache_open(const cdcache_config_t *cfg, cdcache_t **out);

/*
 * Destroys a cache: stops its CDC subscription if one is still attached,
 * waits for a grace period and frees everything.  Must not race with any
 * other call on the handle, and must not be called from a loader, a log
 * or an allocator callback.  NULL is a no-op returning 0.
 */
CDCACHE_EXTERN int cdcache_close(cdcache_t *cache);

/* ------------------------------------------------------------- basic ops */

/*
 * Inserts or replaces key's value.  ttl_ms as above.  Takes the key's
 * shard lock; may evict entries of that shard (by policy) and, when
 * memory awaiting a grace period has grown past its share, waits for a
 * grace period before returning (outside every lock).  A put marks any
 * fill of the key in flight as dead (its value will not be cached).
 * Errors: CDCACHE_EINVAL, CDCACHE_E2BIG, CDCACHE_EFULL, CDCACHE_ENOMEM,
 * CDCACHE_ESTALE (the cache has failed closed: its CDC subscription has
 * not answered within max_stale_ms), CDCACHE_EFORKED.
 */
CDCACHE_EXTERN int cdcache_put(cdcache_t *cache, const void *key, size_t klen,
                               const void *val, size_t vlen, uint32_t ttl_ms);

/*
 * Copies key's value into buf (cap bytes) and stores its length in *vlen.
 * Takes no lock: runs in an RCU read-side section, writes nothing shared
 * in the common case.  buf may be NULL when cap is 0.  Errors:
 * CDCACHE_ENOENT (a miss, including an expired entry, a fill in flight,
 * or a cache failed closed), CDCACHE_ERANGE (cap < value length; *vlen
 * holds the length; a hit), CDCACHE_EINVAL, CDCACHE_E2BIG,
 * CDCACHE_EFORKED.
 */
CDCACHE_EXTERN int cdcache_get(cdcache_t *cache, const void *key, size_t klen,
                               void *buf, size_t cap, size_t *vlen);

/*
 * Removes key's entry and kills any fill of it in flight.  Takes the
 * key's shard lock.  Returns 0 if an entry or a fill was there,
 * CDCACHE_ENOENT if neither was.
 */
CDCACHE_EXTERN int cdcache_delete(cdcache_t *cache, const void *key,
                                  size_t klen);

/*
 * As cdcache_delete, counted as an invalidation (for invalidation sources
 * other than the built-in CDC subscription, which uses it too).
 */
CDCACHE_EXTERN int cdcache_invalidate(cdcache_t *cache, const void *key,
                                      size_t klen);

/*
 * Removes every entry and advances the cache epoch, so that no fill or
 * lease that began before the flush can be cached.  Takes each shard lock
 * in turn (never two at once).
 */
CDCACHE_EXTERN int cdcache_flush(cdcache_t *cache);

/* ------------------------------------------------- fills that stay fresh */

/* The handle a loader fills.  Valid only during the loader call. */
typedef struct cdcache_fill cdcache_fill_t;

/*
 * A loader: fetches key's value from the source of truth and hands it to
 * cdcache_fill_set_value().  It runs on the caller's thread, outside every
 * cdcache lock and read-side section, and may call any cdcache function
 * except cdcache_close() (a put or delete of the same key kills its own
 * fill: the value then goes to the waiting callers but is not cached).
 * Return 0 after setting a value; any other return value is handed to
 * every caller of this fill unchanged, and nothing is cached.
 */
typedef int (*cdcache_loader_fn)(void *ctx, const void *key, size_t klen,
                                 cdcache_fill_t *fill);

/* Copies the loaded value (CDCACHE_ENOMEM, CDCACHE_E2BIG on failure). */
CDCACHE_EXTERN int cdcache_fill_set_value(cdcache_fill_t *fill,
                                          const void *val, size_t vlen);

/*
 * The MongoDB cluster time of the last change the cache's CDC
 * subscription applied, as (seconds << 32 | increment), or 0 when none:
 * a loader reads with afterClusterTime at least this (or from the
 * primary) so that it never loads data older than what was evicted.
 */
CDCACHE_EXTERN uint64_t cdcache_fill_cluster_time(const cdcache_fill_t *fill);

/*
 * Cache-aside with single flight: returns key's value if cached;
 * otherwise exactly one caller among those missing the same key at the
 * same time runs loader, and the others wait for its result (up to
 * timeout_ms, then CDCACHE_ETIMEDOUT; 0 means do not wait: CDCACHE_EBUSY;
 * CDCACHE_WAIT_FOREVER waits as long as the fill takes).  The value is
 * copied out as by cdcache_get.  The loaded value is cached with ttl_ms
 * unless a delete, put, invalidation or flush of the key happened while
 * it loaded (then every waiting caller still gets the value, and
 * stats.stale_fills_rejected counts it).  Takes the key's shard lock
 * twice around the loader, never during it.
 */
CDCACHE_EXTERN int cdcache_get_or_load(cdcache_t *cache, const void *key,
                                       size_t klen, cdcache_loader_fn loader,
                                       void *ctx, uint32_t ttl_ms,
                                       uint32_t timeout_ms, void *buf,
                                       size_t cap, size_t *vlen);

/* A lease: the right to fill one key, issued on a miss. */
typedef struct cdcache_lease cdcache_lease_t;

/*
 * As cdcache_get, and on a miss (CDCACHE_ENOENT) also hands out a lease
 * in *lease when no other fill of the key is in flight; when one is,
 * returns CDCACHE_EBUSY and *lease is NULL (load without caching, or use
 * cdcache_get_or_load to wait).  On a hit, *lease is NULL.  The caller
 * owns a lease and must pass it to exactly one of cdcache_put_leased or
 * cdcache_lease_release.
 */
CDCACHE_EXTERN int cdcache_get_lease(cdcache_t *cache, const void *key,
                                     size_t klen, void *buf, size_t cap,
                                     size_t *vlen, cdcache_lease_t **lease);

/*
 * Caches val for the leased key only if nothing (delete, put,
 * invalidation, flush) touched the key since the lease was issued.
 * Consumes the lease in every case.  Returns 0 when cached,
 * CDCACHE_ESTALE when the lease was invalidated (nothing cached), or the
 * errors of cdcache_put.
 */
CDCACHE_EXTERN int cdcache_put_leased(cdcache_t *cache, cdcache_lease_t *lease,
                                      const void *val, size_t vlen,
                                      uint32_t ttl_ms);

/* Gives a lease up without filling.  Consumes it.  NULL is a no-op. */
CDCACHE_EXTERN int cdcache_lease_release(cdcache_t *cache,
                                         cdcache_lease_t *lease);

/* ---------------------------------------------------------------- stats */

typedef struct cdcache_stats {
  size_t struct_size; /* set by the caller: sizeof(cdcache_stats_t) */
  uint64_t hits, misses, puts, evictions, expirations, deletes,
      invalidations, flushes;
  uint64_t stale_fills_rejected; /* fills and leased puts not cached */
  uint64_t loads;                /* loader calls */
  uint64_t load_waits;           /* callers that waited for another's load */
  uint64_t entries;              /* live entries (placeholders excluded) */
  uint64_t bytes_live;           /* bytes held by live entries */
  uint64_t bytes_pending_free;   /* unlinked, awaiting a grace period */
  uint64_t bytes_tables;         /* the shards' fixed tables */
  uint32_t shards;
} cdcache_stats_t;

/*
 * Fills *stats (set stats->struct_size first; fields past it are not
 * written).  Sums per-thread counters with relaxed loads: each counter is
 * exact at some instant, the set is not one snapshot.  Takes no lock that
 * a hit needs.
 */
CDCACHE_EXTERN int cdcache_stats(cdcache_t *cache, cdcache_stats_t *stats);

/* ============================================================ CDC (begin)
 * The change-stream subscription API.  Owned by cdc/; no libmongoc type
 * appears here. */

/* ============================================================== CDC (end) */

#ifdef __cplusplus
}
#endif
#endif /* CDCACHE_H */
