/*
 * Internal interface between the cache core and the other parts of the
 * library (the CDC consumer in cdc/, the facade in api/).  Not installed.
 *
 * Naming: cdcache__ prefixes internal functions with external linkage;
 * they are hidden from the shared library's symbol table.
 */
#ifndef CDCACHE_CACHE_INTERNAL_H
#define CDCACHE_CACHE_INTERNAL_H

#include "cdcache.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

/* Milliseconds from the cache's clock: the injected one, or
 * CLOCK_MONOTONIC_COARSE.  Any thread. */
uint64_t cdcache__now_ms(const cdcache_t *cache);

/* Milliseconds of CLOCK_REALTIME (for lag measured against a write's
 * wallTime).  Any thread. */
uint64_t cdcache__wall_ms(void);

/*
 * Fail-closed bound.  Readers treat every entry as a miss, and puts and
 * fills are refused, whenever cdcache__now_ms() > fresh_until.  The CDC
 * thread moves it forward (last answer + max_stale_ms) each time the
 * stream answers; CDCACHE__FRESH_FOREVER (the value at open) turns the
 * check off.  Stored with release order; readers load it relaxed (the
 * value itself is the whole message).
 */
#define CDCACHE__FRESH_FOREVER UINT64_MAX
void cdcache__set_fresh_until(cdcache_t *cache, uint64_t ms);
/* Whether cache was opened before a fork, in this (child) process: every
 * call on it, and on its subscription, answers CDCACHE_EFORKED. */
bool cdcache__handle_forked(const cdcache_t *cache);
uint64_t cdcache__fresh_until(const cdcache_t *cache);

/* The cluster time of the last applied change ((secs << 32) | inc),
 * handed to loaders.  Atomic, relaxed. */
void cdcache__set_cluster_time(cdcache_t *cache, uint64_t ts);
uint64_t cdcache__cluster_time(const cdcache_t *cache);

/* Logs through the cache's log callback, if any (printf format).  Never
 * called with a cdcache lock held. */
void cdcache__log(const cdcache_t *cache, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The cache's allocator hook, for the other parts' own allocations. */
void *cdcache__alloc(const cdcache_t *cache, size_t size);
void cdcache__free(const cdcache_t *cache, void *ptr, size_t size);

/*
 * A subscription attached to a cache, so that cdcache_close() stops it
 * first.  Only one may be attached; cdcache__attach returns CDCACHE_EBUSY
 * when one already is.  detach is called by the subscription's own stop.
 * Both take the cache's attach mutex.
 */
typedef void (*cdcache__detach_fn)(void *sub);
int cdcache__attach(cdcache_t *cache, void *sub, cdcache__detach_fn stop);
void cdcache__detach(cdcache_t *cache, void *sub);

#endif /* CDCACHE_CACHE_INTERNAL_H */
