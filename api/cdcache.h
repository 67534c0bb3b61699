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
 *   registration and never announce quiescent states.  A host that uses
 *   liburcu's urcu-bp flavour itself must not call cdcache from inside its
 *   own read-side section (a write may wait for a grace period).
 * - Callbacks (allocator, clock, log, loader) run on the thread that made
 *   the call that triggered them; each one's comment says what it may
 *   call.
 * - After fork(), the child's handles refuse service with
 *   CDCACHE_EFORKED: nothing keeps a copied cache fresh.  The child may
 *   still call cdcache_close() on them (it frees nothing shared).  A
 *   child opens new caches only if the fork went through
 *   cdcache_fork_prepare/_parent/_child (see there).
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
  CDCACHE_NOEVICTION = 2,
  /* Evict any entry by S3-FIFO with a frequency-gated ghost: new keys
   * enter a small FIFO and reach the main one only if read again (or, when
   * seen recently, if counted more often than main's next victim), so a
   * one-time scan or a stream of one-hit keys does not evict a working set
   * that is read often.  Misses less than allkeys-lru on most workloads
   * (README, "Eviction policies"); hits cost the same, misses a little
   * more.  Its sketch and ghost take 4.75 to 6.75 bytes per entry (more
   * in shards under 256 entries), counted in bytes_tables and max_bytes. */
  CDCACHE_ALLKEYS_S3FIFO = 3,
  /* The same, among entries that have a TTL only; entries without one are
   * never evicted (CDCACHE_EFULL when nothing else can go, as
   * CDCACHE_VOLATILE_LRU). */
  CDCACHE_VOLATILE_S3FIFO = 4
} cdcache_policy_t;

/*
 * The allocator hook.  Every byte the library allocates goes through it.
 * malloc may return NULL: the operation then fails with CDCACHE_ENOMEM and
 * changes nothing.  Entries must be 8-byte aligned and lie below address
 * 2^48 (the hash table keeps tags and a length in a pointer's spare bits;
 * every x86-64 and AArch64 Linux heap qualifies, unless the process opts
 * into 5-level paging hints or memory tagging): an entry allocated
 * elsewhere fails its put with CDCACHE_ENOMEM.  free receives the size
 * that was asked of malloc. usable_size may be NULL; when set, memory accounting charges what it
 * reports (the default allocator uses malloc_usable_size).  The hooks may
 * be called from any thread, including cdcache's reclaimer thread, and
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
  /* Required: the most entries the cache holds (whole cache), at most
   * CDCACHE_MAX_ENTRIES_LIMIT. */
  uint64_t max_entries;
  /* The most bytes the cache holds: entries (key, value, real allocator
   * overhead, including unlinked entries awaiting their grace period),
   * the fills in flight behind their placeholders, plus the shards'
   * tables, give or take CDCACHE_MAX_BYTES_SLACK.  Each
   * shard's share must hold one entry of max_key_len and max_value_len:
   * with shards 0 the shard count is lowered until it does; with a set
   * shard count open fails with CDCACHE_EINVAL.  0 means no byte bound.
   * Default 0. */
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

/* The largest max_entries accepted (2^36: tables of a larger cache would
 * not fit in any machine's memory). */
#define CDCACHE_MAX_ENTRIES_LIMIT ((uint64_t)1 << 36)

/*
 * How far the memory the library holds for a cache may exceed max_bytes,
 * for `threads` threads writing at the same time: per writing thread, one
 * entry allocated but not yet linked, the entries one put evicts moving
 * to the grace-period backlog before the throttle catches up, and one
 * loaded value in flight (each bounded by max_key_len + max_value_len
 * plus allocator rounding), plus its counter block.  Proved by
 * tests/core/test_bounds.c ("the max_bytes slack holds ...").
 */
#define CDCACHE_MAX_BYTES_SLACK(cfg, threads)                                                      \
  ((uint64_t)(threads) * (3u * ((uint64_t)(cfg)->max_key_len + (cfg)->max_value_len + 8192u)))

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
 * power of two, a struct_size this library does not know, max_entries
 * above CDCACHE_MAX_ENTRIES_LIMIT, max_bytes too small for the tables and
 * one largest entry per shard), CDCACHE_ENOMEM, CDCACHE_EFORKED (a child
 * of a fork that skipped cdcache_fork_prepare/_parent/_child).
 * Thread-safe.  The process's first write to any cache starts cdcache's
 * reclaimer thread (one per process, every signal blocked, detached: it
 * frees unlinked entries after their grace period and lives until the
 * process exits).
 */
CDCACHE_EXTERN int cdcache_open(const cdcache_config_t *cfg, cdcache_t **out);

/*
 * fork() without exec() (pre-fork servers).  liburcu, which reclaims the
 * cache's memory, needs its own handlers to run around a fork in both
 * processes, or the child's first grace period waits forever for threads
 * that were not copied.  Either call cdcache_fork_prepare() just before
 * fork(), then cdcache_fork_parent() in the parent and cdcache_fork_child()
 * in the child just after it (from the thread that forked, with no other
 * cdcache call in progress on that thread); or call cdcache_fork_install()
 * once to register the three with pthread_atfork() (opt-in: liburcu
 * discourages pthread_atfork when a reclamation thread allocates or
 * frees, as cdcache's does, because glibc's allocator locks may then hang a fork
 * in rare interleavings; the explicit calls avoid that).  A child forked
 * this way may open, use and close new caches.  Handles opened before the
 * fork answer CDCACHE_EFORKED in the child either way (nothing keeps a
 * copied cache fresh) and may only be closed.  In a child forked without
 * these calls after a cache was opened, cdcache_open() fails with
 * CDCACHE_EFORKED instead of hanging later.
 */
CDCACHE_EXTERN void cdcache_fork_prepare(void);
CDCACHE_EXTERN void cdcache_fork_parent(void);
CDCACHE_EXTERN void cdcache_fork_child(void);
/* Registers the three above with pthread_atfork() once per process
 * (idempotent).  0 or CDCACHE_ENOMEM.  Thread-safe. */
CDCACHE_EXTERN int cdcache_fork_install(void);

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
CDCACHE_EXTERN int cdcache_put(cdcache_t *cache, const void *key, size_t klen, const void *val,
                               size_t vlen, uint32_t ttl_ms);

/*
 * Copies key's value into buf (cap bytes) and stores its length in *vlen.
 * Takes no lock: runs in an RCU read-side section, writes nothing shared
 * in the common case.  buf may be NULL when cap is 0.  Errors:
 * CDCACHE_ENOENT (a miss, including an expired entry, a fill in flight,
 * or a cache failed closed), CDCACHE_ERANGE (cap < value length; *vlen
 * holds the length; a hit), CDCACHE_EINVAL, CDCACHE_E2BIG,
 * CDCACHE_EFORKED.
 */
CDCACHE_EXTERN int cdcache_get(cdcache_t *cache, const void *key, size_t klen, void *buf,
                               size_t cap, size_t *vlen);

/*
 * Removes key's entry and kills any fill of it in flight.  Takes the
 * key's shard lock.  Returns 0 if an entry or a fill was there,
 * CDCACHE_ENOENT if neither was.
 */
CDCACHE_EXTERN int cdcache_delete(cdcache_t *cache, const void *key, size_t klen);

/*
 * As cdcache_delete, counted as an invalidation (for invalidation sources
 * other than the built-in CDC subscription, which uses it too).
 */
CDCACHE_EXTERN int cdcache_invalidate(cdcache_t *cache, const void *key, size_t klen);

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
typedef int (*cdcache_loader_fn)(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill);

/* Copies the loaded value (CDCACHE_ENOMEM, CDCACHE_E2BIG on failure).
 * Call only from the loader that received fill, during that call. */
CDCACHE_EXTERN int cdcache_fill_set_value(cdcache_fill_t *fill, const void *val, size_t vlen);

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
 * stats.stale_fills_rejected counts it).  Starting a fill needs room for
 * its placeholder in the byte budget (a placeholder takes no entry slot):
 * CDCACHE_EFULL or CDCACHE_ENOMEM when there is none (nothing changed).
 * A loaded value the policy cannot make room for (noeviction, or memory)
 * is still returned (0), uncached.  Takes the key's shard lock
 * twice around the loader, never during it.
 */
CDCACHE_EXTERN int cdcache_get_or_load(cdcache_t *cache, const void *key, size_t klen,
                                       cdcache_loader_fn loader, void *ctx, uint32_t ttl_ms,
                                       uint32_t timeout_ms, void *buf, size_t cap, size_t *vlen);

/* A lease: the right to fill one key, issued on a miss. */
typedef struct cdcache_lease cdcache_lease_t;

/*
 * As cdcache_get, and on a miss (CDCACHE_ENOENT) also hands out a lease
 * in *lease when no other fill of the key is in flight; when one is,
 * returns CDCACHE_EBUSY and *lease is NULL (load without caching, or use
 * cdcache_get_or_load to wait).  CDCACHE_EFULL or CDCACHE_ENOMEM when the
 * lease's placeholder finds no room (nothing changed).  On a hit, *lease is NULL.  The caller
 * owns a lease and must pass it to exactly one of cdcache_put_leased or
 * cdcache_lease_release, from any thread.  Lock-free on a hit; a miss
 * takes the key's shard lock once.
 */
CDCACHE_EXTERN int cdcache_get_lease(cdcache_t *cache, const void *key, size_t klen, void *buf,
                                     size_t cap, size_t *vlen, cdcache_lease_t **lease);

/*
 * Caches val for the leased key only if nothing (delete, put,
 * invalidation, flush) touched the key since the lease was issued.
 * Consumes the lease in every case but a NULL cache (CDCACHE_EINVAL).  Returns 0 when cached,
 * CDCACHE_ESTALE when the lease was invalidated (nothing cached), or the
 * errors of cdcache_put.  Takes the key's shard lock, then the lease's
 * own mutex (to wake get_or_load callers waiting for it).
 */
CDCACHE_EXTERN int cdcache_put_leased(cdcache_t *cache, cdcache_lease_t *lease, const void *val,
                                      size_t vlen, uint32_t ttl_ms);

/* Gives a lease up without filling.  Consumes it; callers waiting for it
 * in cdcache_get_or_load retry (one of them loads).  Takes the key's shard
 * lock.  A NULL lease is a no-op; a NULL cache is CDCACHE_EINVAL and does
 * not consume the lease. */
CDCACHE_EXTERN int cdcache_lease_release(cdcache_t *cache, cdcache_lease_t *lease);

/* ---------------------------------------------------------------- stats */

typedef struct cdcache_stats {
  size_t struct_size; /* set by the caller: sizeof(cdcache_stats_t) */
  uint64_t hits, misses, puts, evictions, expirations, deletes, invalidations, flushes;
  uint64_t stale_fills_rejected; /* fills and leased puts not cached */
  uint64_t loads;                /* loader calls */
  uint64_t load_waits;           /* callers that waited for another's load */
  uint64_t entries;              /* live entries (placeholders excluded) */
  uint64_t bytes_live;           /* bytes held by live entries */
  uint64_t bytes_pending_free;   /* unlinked, awaiting a grace period */
  uint64_t bytes_tables;         /* the shards' fixed tables */
  uint32_t shards;
  /* Inserts into a hash chain already CDCACHE_CHAIN_TRIPWIRE entries long
   * (hostile keys or a failed random source; each is also logged, at most
   * once per 10 s, as a warning). */
  uint64_t long_chains;
  /* Of bytes_tables, the eviction policy's own memory (the s3fifo
   * policies' sketches and ghosts; 0 for the others). */
  uint64_t bytes_policy;
} cdcache_stats_t;

/* The chain length the long_chains statistic counts from. */
#define CDCACHE_CHAIN_TRIPWIRE 16u

/*
 * Fills *stats (set stats->struct_size first; fields past it are not
 * written).  Sums per-thread counters with relaxed loads: each counter is
 * exact at some instant, the set is not one snapshot.  Takes only the
 * counters' registry mutex, which no hit takes.
 */
CDCACHE_EXTERN int cdcache_stats(cdcache_t *cache, cdcache_stats_t *stats);

/*
 * Whether the cache serves now: 0 while it is fresh (no CDC bound is set,
 * or the subscription has vouched for the present within max_stale_ms),
 * CDCACHE_ESTALE while it has failed closed (reads miss, puts fail), so
 * that a health check (a load balancer's) can route around an instance
 * whose change stream is partitioned away.  If fresh_until_ms is not
 * NULL it receives the cache-clock millisecond until which the present
 * bound holds (UINT64_MAX when no bound is set).  Errors: CDCACHE_EINVAL
 * (NULL cache), CDCACHE_EFORKED.  Lock-free (one atomic load and the
 * clock); thread-safe.
 */
CDCACHE_EXTERN int cdcache_fresh(cdcache_t *cache, uint64_t *fresh_until_ms);

/* ============================================================ CDC (begin)
 * The change-stream subscription API.  Owned by cdc/; no libmongoc type
 * appears here.
 *
 * A subscription is one thread that tails one MongoDB change stream
 * (libmongoc, majority read concern) and, for every change it returns,
 * evicts the keys that change affects with cdcache_invalidate().  Which
 * keys: the rules (key templates per namespace) and, for mappings no
 * template can express, a key callback.  See cdc/README.md for the
 * guarantees (bounded staleness, what is flushed when) and deployment.
 *
 * Callbacks given in cdcache_cdc_config_t (key_fn, on_evict, log) run on
 * the subscription's thread with no cdcache lock held.  They may call any
 * cdcache function except cdcache_close() and cdcache_cdc_stop().
 */

typedef struct cdcache_cdc cdcache_cdc_t;

/* Operation types of change events the subscription handles. */
typedef enum cdcache_cdc_op {
  CDCACHE_CDC_OP_INSERT = 1, /* evicted too: an application may cache absence */
  CDCACHE_CDC_OP_UPDATE = 2,
  CDCACHE_CDC_OP_REPLACE = 3,
  CDCACHE_CDC_OP_DELETE = 4,
  CDCACHE_CDC_OP_DROP = 5,          /* no documentKey: flushes the cache */
  CDCACHE_CDC_OP_RENAME = 6,        /* no documentKey: flushes the cache */
  CDCACHE_CDC_OP_DROP_DATABASE = 7, /* no documentKey: flushes the cache */
  CDCACHE_CDC_OP_INVALIDATE = 8     /* no ns: flushes, reopens after it */
} cdcache_cdc_op_t;

/* "insert", "update", ... as MongoDB spells them; "unknown" otherwise.
 * Static, never NULL.  Thread-safe. */
CDCACHE_EXTERN const char *cdcache_cdc_op_name(int op);

/*
 * A key rule: for every change in a namespace matching ns, evict the key
 * that key_template renders to.  Several rules may name one namespace
 * (one change then evicts several keys).
 *
 * ns: "db.coll" (exact; the collection part may contain dots), "db.*"
 * (every collection of db) or "*" (every namespace in scope).
 *
 * key_template: literal bytes with placeholders in braces:
 *   {db}      the event's database name
 *   {coll}    the event's collection name
 *   {_id}     the documentKey's _id, rendered as cdcache_id_render() does
 *   {FIELD}   any other documentKey field (a shard-key field), rendered
 *             the same way; "a.b" is looked up first as a top-level field
 *             named "a.b", then as the path a -> b
 * "{{" and "}}" stand for literal braces.  A template may not be empty;
 * a placeholder may not be empty, nested or unterminated; a lone "}" is
 * an error.  FIELD is 1..127 bytes of [A-Za-z0-9_.$-], not starting or
 * ending with '.' nor containing "..".
 */
typedef struct cdcache_cdc_rule {
  const char *ns;
  const char *key_template;
} cdcache_cdc_rule_t;

/*
 * Checks one rule without starting anything.  Returns 0 or CDCACHE_EINVAL;
 * on error writes a NUL-terminated reason (with the byte offset in the
 * template) to err when errcap > 0.  Thread-safe.
 */
CDCACHE_EXTERN int cdcache_cdc_rule_check(const cdcache_cdc_rule_t *rule, char *err, size_t errcap);

/* Where a key callback emits keys.  Valid only during the callback. */
typedef struct cdcache_cdc_sink cdcache_cdc_sink_t;

/*
 * Emits one key to evict (binary-safe, copied).  The key is evicted at
 * once (before this returns).  Returns 0, CDCACHE_EINVAL (NULL sink or
 * key, klen 0), or CDCACHE_E2BIG (longer than the cache's max_key_len: no
 * such key can be cached, so nothing needed evicting).  Call only from
 * the key callback that received the sink, on its thread.
 */
CDCACHE_EXTERN int cdcache_cdc_emit(cdcache_cdc_sink_t *sink, const void *key, size_t klen);

/*
 * Tells the subscription that no key of the application depends on the
 * change the key callback is looking at: a drop, rename or dropDatabase
 * that no rule covers then flushes nothing (keys already emitted stay
 * evicted; rules are not affected).  Returns 0 or CDCACHE_EINVAL (NULL
 * sink).  Call only from the key callback that received the sink.
 */
CDCACHE_EXTERN int cdcache_cdc_not_mine(cdcache_cdc_sink_t *sink);

/*
 * What a key callback sees of one change event.  Every pointer is valid
 * only during the callback.
 */
typedef struct cdcache_cdc_event {
  size_t struct_size; /* sizeof(cdcache_cdc_event_t) of the library */
  int op;             /* a cdcache_cdc_op_t */
  const char *db;     /* NUL-terminated; NULL on invalidate */
  const char *coll;   /* NULL on dropDatabase and invalidate */
  const char *to_db;  /* rename only: the new namespace; else NULL */
  const char *to_coll;
  /* The whole event as the server sent it after the subscription's
   * $project (operationType, ns, to, documentKey, clusterTime, wallTime,
   * _id, and fullDocument when key_fn_full_document asks for it): raw
   * BSON bytes. */
  const uint8_t *event_bson;
  size_t event_len;
  /* The event's documentKey as raw BSON ({_id: ...} plus shard-key fields
   * on a sharded collection); NULL / 0 for drop, rename, dropDatabase and
   * invalidate. */
  const uint8_t *document_key_bson;
  size_t document_key_len;
  uint64_t cluster_time; /* (seconds << 32) | increment; 0 if absent */
  int64_t wall_ms;       /* wallTime (ms since the epoch), -1 if absent */
} cdcache_cdc_event_t;

/*
 * A key callback, called for every insert, update, replace and delete in
 * scope (after the rules' keys were evicted), and for drop, rename and
 * dropDatabase (before the flush they may cause).  It emits keys with
 * cdcache_cdc_emit(), and may call cdcache_cdc_not_mine() to say that no
 * key of the application depends on this change.  It returns 0, or any
 * other value for "I could not map this change": the subscription then
 * flushes the whole cache (reason CDCACHE_CDC_FLUSH_UNMAPPABLE), because
 * it cannot know what is stale.  For drop, rename and dropDatabase, a
 * return of 0 without cdcache_cdc_not_mine() means "my keys may depend on
 * this namespace": the whole cache is flushed (reason
 * CDCACHE_CDC_FLUSH_NAMESPACE) even when no rule covers it.  It must not
 * block (it runs on the subscription's thread; while it waits, no change
 * is applied and the cache fails closed past its bound).
 */
/* A libmongoc log handler (mongoc_log_func_t) cast to this type, so that
 * this header needs no libmongoc header; cdcache casts it back before
 * every call. */
typedef void (*cdcache_mongoc_log_fn)(void);

typedef int (*cdcache_cdc_key_fn)(void *ctx, const cdcache_cdc_event_t *ev,
                                  cdcache_cdc_sink_t *sink);

/*
 * An eviction observer, called after each key was evicted: key/klen, the
 * operation's name, the namespace "db.coll" ("db" for dropDatabase) and
 * the invalidation lag in ms (see cdcache_cdc_stats_t; -1 if unknown).
 * After a flush it is called once with key NULL, klen 0, op "flush", ns
 * the reason's name (cdcache_cdc_flush_reason_name) and lag_ms -1.
 * Strings are valid only during the call.  It runs on the subscription's
 * thread, between applying one event and the next: it must not block (no
 * blocking write to a pipe or socket, no waiting for another thread), or
 * the stream stalls, the cache fails closed, and cdcache_cdc_stop() waits
 * for it.  Hand the work to another thread through a bounded queue, as
 * cdcache-watch does.  The same holds for key_fn.
 */
typedef void (*cdcache_cdc_evict_fn)(void *ctx, const void *key, size_t klen, const char *op,
                                     const char *ns, int64_t lag_ms);

/* What key_fn_full_document asks for. */
#define CDCACHE_CDC_FULLDOC_NONE 0 /* fullDocument is projected away */
#define CDCACHE_CDC_FULLDOC_PRESENT                                                                \
  1 /* kept where the server sends it                                                              \
       (insert, replace) */
#define CDCACHE_CDC_FULLDOC_UPDATE_LOOKUP                                                          \
  2 /* also on updates, looked up                                                                  \
       by the server (costly) */

typedef struct cdcache_cdc_config {
  /* sizeof(cdcache_cdc_config_t) as the caller was compiled; set by
   * cdcache_cdc_config_init. */
  size_t struct_size;
  /* Required: a MongoDB connection string (replica set or mongos). */
  const char *uri;
  /* Scope.  db NULL: the whole deployment (coll must be NULL too);
   * db set, coll NULL: one database; both set: one collection. */
  const char *db;
  const char *coll;
  /* The rules (copied at start).  At least one rule or a key_fn. */
  const cdcache_cdc_rule_t *rules;
  size_t n_rules;
  cdcache_cdc_key_fn key_fn; /* optional */
  void *key_ctx;
  int key_fn_full_document; /* CDCACHE_CDC_FULLDOC_*; default NONE */
  /* Fail-closed bound: when the stream has not answered (a batch, even
   * an empty one) for longer than this, the cache refuses service (reads
   * miss, puts and leased puts fail with CDCACHE_ESTALE, get_or_load
   * reads through without caching) until it answers
   * again.  0 turns the bound off.  Must be at least max_await_ms +
   * CDCACHE_CDC_RESCAN_MS + CDCACHE_CDC_STALE_MARGIN_MS.  Default 5000. */
  uint32_t max_stale_ms;
  /* Change events per batch; 0 (default) leaves it to the server. */
  uint32_t batch_size;
  /* maxAwaitTimeMS: how long the server holds an empty getMore.
   * 1..socket_timeout_ms - 100.  Default 500. */
  uint32_t max_await_ms;
  /* socketTimeoutMS and connectTimeoutMS of the subscription's own
   * client.  Defaults 1000 and 1000; 100..60000 each. */
  uint32_t socket_timeout_ms;
  uint32_t connect_timeout_ms;
  /* Reconnect backoff after libmongoc gave up: exponential from initial
   * to max with full jitter.  Defaults 100 and 10000. */
  uint32_t backoff_initial_ms;
  uint32_t backoff_max_ms;
  /* Log callback for the subscription's messages; NULL (default) uses
   * the cache's log callback.  The library never prints.  It runs on
   * the subscription's thread: like on_evict and key_fn it must not
   * block (a write to a pipe nobody reads), or the stream stalls and
   * cdcache_cdc_stop() waits for it. */
  cdcache_log_fn log;
  void *log_ctx;
  /* Non-zero: libmongoc's messages about this subscription's client go
   * to this subscription's log callback while it runs.  libmongoc's log
   * handler is process-wide, so cdcache installs a router
   * (mongoc_log_set_handler) while any subscription routes: messages
   * from a routing subscription's thread go to its log, every other
   * message to mongoc_log_prev (below).  When the last routing
   * subscription stops, mongoc_log_prev is installed again.  Default 0:
   * libmongoc's logging is left as the host set it. */
  int route_mongoc_log;
  /* Optional eviction observer (cdcache_cdc_evict_fn). */
  cdcache_cdc_evict_fn on_evict;
  void *on_evict_ctx;
  /* With route_mongoc_log: the libmongoc log handler the host installed
   * (its mongoc_log_func_t, cast to cdcache_mongoc_log_fn, and its user
   * data), which libmongoc gives no way to read.  NULL (default):
   * libmongoc's default handler.  The first routing subscription's pair
   * is the one used and put back. */
  cdcache_mongoc_log_fn mongoc_log_prev;
  void *mongoc_log_prev_ctx;
  /* The same non-resumable server error this many times in a row at one
   * resume token (a "poison" error, e.g. 10334 BSONObjectTooLarge on
   * every getMore): flush the cache (CDCACHE_CDC_FLUSH_POISON), log it
   * and reopen the stream from now.  1..1000; default 5 (0 = default, for
   * callers built before this field). */
  uint32_t poison_errors;
} cdcache_cdc_config_t;

/* libmongoc's rescan delay after a lost server, and the margin that
 * max_stale_ms must leave on top of it and of max_await_ms. */
#define CDCACHE_CDC_RESCAN_MS 500u
#define CDCACHE_CDC_STALE_MARGIN_MS 500u

/* Fills *cfg with the defaults above.  Thread-safe (touches only *cfg). */
CDCACHE_EXTERN int cdcache_cdc_config_init(cdcache_cdc_config_t *cfg);

/*
 * Starts a subscription attached to cache: validates *cfg (copied; the
 * caller keeps it and the strings), then starts the subscription thread
 * and returns without waiting for MongoDB.  Until the first aggregate of
 * the stream succeeds the cache is failed closed (if max_stale_ms > 0);
 * when it succeeds the cache is flushed once (no fill that began before
 * the stream existed may be cached).  Errors: CDCACHE_EINVAL (a NULL, a
 * bad URI, scope, rule or setting, e.g. max_stale_ms too small),
 * CDCACHE_EBUSY (the cache already has a subscription), CDCACHE_ENOMEM,
 * CDCACHE_EMONGO (libmongoc refused the URI's client), CDCACHE_EFORKED
 * (cache was opened before a fork).  Thread-safe; not from a cdcache
 * callback.
 */
CDCACHE_EXTERN int cdcache_cdc_start(cdcache_t *cache, const cdcache_cdc_config_t *cfg,
                                     cdcache_cdc_t **out);

/*
 * Stops the subscription: interrupts its network I/O, joins its thread
 * (within about a second even when the server is silent or unreachable),
 * detaches it from the cache and frees it.  The cache keeps its entries,
 * but nothing keeps them fresh any more: if max_stale_ms > 0 the cache
 * fails closed at once (reads miss, puts fail with CDCACHE_ESTALE) until
 * a new subscription's stream answers.  Must be called exactly once per handle, not from a
 * subscription callback, and must not race with cdcache_cdc_stats() on
 * the same handle.  cdcache_close() stops a subscription still attached;
 * the handle is invalid after that.  NULL is a no-op returning 0.  In a
 * child after fork(), a subscription started before the fork answers
 * CDCACHE_EFORKED here and in cdcache_cdc_stats() and is left as copied
 * (its thread and connections are the parent's).
 */
CDCACHE_EXTERN int cdcache_cdc_stop(cdcache_cdc_t *sub);

/* Subscription states. */
typedef enum cdcache_cdc_state {
  CDCACHE_CDC_CONNECTING = 0,  /* opening the stream, not yet answered */
  CDCACHE_CDC_STREAMING = 1,   /* the stream is open */
  CDCACHE_CDC_BACKING_OFF = 2, /* the stream failed; waiting to reopen */
  /* Reported in state only to callers whose cdcache_cdc_stats_t ends
   * before failed_closed (built before it existed); others get the
   * thread's state and the failed_closed flag. */
  CDCACHE_CDC_FAILED_CLOSED = 3,
  CDCACHE_CDC_STOPPED = 4
} cdcache_cdc_state_t;

/* Why the subscription flushed the whole cache. */
typedef enum cdcache_cdc_flush_reason {
  CDCACHE_CDC_FLUSH_ESTABLISHED = 0,    /* stream (re)opened from "now" */
  CDCACHE_CDC_FLUSH_HISTORY_LOST = 1,   /* code 286 / 136: events lost */
  CDCACHE_CDC_FLUSH_TOKEN_REJECTED = 2, /* the server refused the token */
  CDCACHE_CDC_FLUSH_INVALIDATE = 3,     /* an invalidate event */
  CDCACHE_CDC_FLUSH_NAMESPACE = 4,      /* drop, rename, dropDatabase */
  CDCACHE_CDC_FLUSH_UNMAPPABLE = 5,     /* malformed event, missing key
                                           field, key_fn failure */
  CDCACHE_CDC_FLUSH_POISON = 6,         /* the same non-resumable error
                                           poison_errors times at one token */
  CDCACHE_CDC_FLUSH_REASONS = 7
} cdcache_cdc_flush_reason_t;

/* The length of cdcache_cdc_stats_t.flushes[] (reasons 0..5), fixed so
 * that the struct keeps its layout; later reasons are counted in fields
 * appended at its end.  cdcache_cdc_flush_count() reads any reason. */
#define CDCACHE_CDC_FLUSH_ARRAY 6

/* "established", "history_lost", ...; "unknown" otherwise.  Static strings;
 * thread-safe. */
CDCACHE_EXTERN const char *cdcache_cdc_state_name(int state);
CDCACHE_EXTERN const char *cdcache_cdc_flush_reason_name(int reason);

#define CDCACHE_CDC_TOKEN_MAX 512
#define CDCACHE_CDC_ERROR_MAX 256

typedef struct cdcache_cdc_stats {
  size_t struct_size;                        /* set by the caller: sizeof(cdcache_cdc_stats_t) */
  int state;                                 /* cdcache_cdc_state_t */
  uint64_t events;                           /* change events returned by the stream */
  uint64_t keys_evicted;                     /* keys passed to cdcache_invalidate */
  uint64_t flushes[CDCACHE_CDC_FLUSH_ARRAY]; /* by reason 0..5; see flushes_poison */
  uint64_t reconnects;                       /* streams reopened after a failure or invalidate */
  uint64_t malformed_events;                 /* undecodable events (logged) */
  uint64_t ignored_events;                   /* operation types that change no data */
  uint64_t key_errors;                       /* keys not renderable, or longer than max_key_len */
  uint64_t last_cluster_time;                /* of the last applied event, as
                                                cdcache_fill_cluster_time() */
  uint64_t last_answer_ms;                   /* cache clock; 0 before the first answer */
  uint64_t fresh_until_ms;                   /* the bound set; UINT64_MAX when off */
  /*
   * Invalidation lag over the last up to 1024 events that evicted keys:
   * from the write's commit (the event's wallTime, MongoDB 6.0+; else its
   * clusterTime seconds, one-second resolution) to the eviction (wall
   * clock).  Negative lags (clock skew) count as 0.
   */
  uint32_t lag_samples;
  uint64_t lag_p50_ms;
  uint64_t lag_p99_ms;
  /* The latest resume token as relaxed extended JSON, NUL-terminated
   * ("" if none; truncated at CDCACHE_CDC_TOKEN_MAX - 1 bytes). */
  char resume_token[CDCACHE_CDC_TOKEN_MAX];
  /* The last error the stream reported ("" if none). */
  char last_error[CDCACHE_CDC_ERROR_MAX];
  /* Fields below were added after the first release (struct_size tells). */
  /* Non-zero while the cache refuses service because the bound passed
   * (cdcache_fresh() says the same); state keeps saying what the thread
   * does (connecting, streaming, backing off). */
  int failed_closed;
  uint64_t flushes_poison; /* CDCACHE_CDC_FLUSH_POISON */
  /* Aggregates libmongoc started by itself inside one next() to resume
   * the stream (a dropped connection, CursorNotFound, an election): the
   * resumes the application never sees.  More than
   * CDCACHE_CDC_RESUME_LOOP_MAX of them in one next() without a getMore
   * answered in between is a loop without progress: the subscription
   * gives the client up and backs off (counted in reconnects too). */
  uint64_t resumes;
  /* The latest stream reply's $clusterTime minus its operationTime, in
   * ms (second resolution): how far the majority commit point the stream
   * reads at trails the newest write the server knows.  Near 0 normally;
   * it grows while the majority commit point stalls (writes acknowledged
   * with w:1 that no majority has yet), and those writes are not
   * delivered, so not evicted, until it moves. */
  uint64_t majority_gap_ms;
} cdcache_cdc_stats_t;

#define CDCACHE_CDC_RESUME_LOOP_MAX 3

/*
 * Fills *st (set st->struct_size first; fields past it are not written).
 * Takes the subscription's stats mutex briefly.  Thread-safe, but not
 * after (or racing with) cdcache_cdc_stop() of the handle.
 */
CDCACHE_EXTERN int cdcache_cdc_stats(cdcache_cdc_t *sub, cdcache_cdc_stats_t *st);

/* The flushes of one reason in a snapshot filled by cdcache_cdc_stats
 * (0 for an unknown reason or one past st->struct_size).  Thread-safe
 * (reads *st only). */
CDCACHE_EXTERN uint64_t cdcache_cdc_flush_count(const cdcache_cdc_stats_t *st, int reason);

/*
 * _id rendering: the one text form the subscription uses for {_id} and
 * for every documentKey field, for applications to build their own keys
 * the same way.  The value is the FIRST element of the BSON document
 * bson/len (its name does not matter):
 *   int32, int64, and double or decimal128 with an integral value: a
 *     decimal integer ("-12"), because MongoDB treats 1, NumberLong(1),
 *     1.0 and NumberDecimal("1.00") as the same _id; -0 renders "0"
 *   other doubles: the shortest "%.{1..17}g" form that reads back to the
 *     same double ("0.1", "1.5e-07"); NaN "NaN", infinities "Infinity",
 *     "-Infinity"
 *   other decimal128: libbson's canonical string (bson_decimal128_to_string)
 *   ObjectId: 24 lowercase hex digits
 *   string: its bytes as is (binary-safe)
 *   document, array: laid out as libbson's canonical extended JSON lays
 *     them out, but every number inside, at any depth, renders as above:
 *     {a: 1, b: "x"} and {a: NumberLong(1), b: "x"} both give
 *     `{ "a" : 1, "b" : "x" }`, [1, NumberLong(2)] gives `[ 1, 2 ]`
 *     (since 0.2; CHANGELOG.md); other values inside keep their extended
 *     JSON; nesting deeper than 100 levels is CDCACHE_EINVAL
 *   anything else: the value's text in libbson's canonical extended JSON
 *     (bson_as_canonical_extended_json of the document, the text after
 *     `"NAME" : ` up to the closing ` }`), e.g. true -> `true`, a date ->
 *     `{ "$date" : { "$numberLong" : "1700000000000" } }`
 * Writes the text and a terminating NUL to buf (cap bytes) and its length
 * (without the NUL) to *out_len.  Errors: CDCACHE_EINVAL (NULL, invalid
 * or empty BSON), CDCACHE_ERANGE (cap <= length; *out_len has the
 * length).  Thread-safe.
 */
CDCACHE_EXTERN int cdcache_id_render(const void *bson, size_t len, char *buf, size_t cap,
                                     size_t *out_len);
/* The same rendering of an int64, a double, and a 12-byte ObjectId. */
CDCACHE_EXTERN int cdcache_id_render_int64(int64_t v, char *buf, size_t cap, size_t *out_len);
CDCACHE_EXTERN int cdcache_id_render_double(double v, char *buf, size_t cap, size_t *out_len);
CDCACHE_EXTERN int cdcache_id_render_oid(const uint8_t oid[12], char *buf, size_t cap,
                                         size_t *out_len);

/* ============================================================== CDC (end) */

#ifdef __cplusplus
}
#endif
#endif /* CDCACHE_H */
