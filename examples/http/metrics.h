/*
 * metrics.h: the example service's counters and their Prometheus text
 * exposition (metrics.c).
 */
#ifndef CDCACHE_HTTP_METRICS_H
#define CDCACHE_HTTP_METRICS_H

#include <cdcache.h>

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Routes, methods and status codes the request counters distinguish. */
enum { ROUTE_USER, ROUTE_HEALTHZ, ROUTE_METRICS, ROUTE_OTHER, ROUTE_N };
enum { METHOD_GET, METHOD_HEAD, METHOD_PUT, METHOD_DELETE, METHOD_OTHER, METHOD_N };
#define METRICS_CODES 15 /* metrics.c lists them; the last slot is "other" */
#define METRICS_BUCKETS 14

typedef struct metrics {
  /* Every field: atomic, relaxed (independent counters; a scrape may see
   * one request counted and its latency not yet). */
  _Atomic uint64_t requests[ROUTE_N][METHOD_N][METRICS_CODES];
  /* Error answers libmicrohttpd sent itself, by code (metrics_mhd_error). */
  _Atomic uint64_t mhd_errors[METRICS_CODES];
  _Atomic uint64_t latency[ROUTE_N][METRICS_BUCKETS + 1]; /* last: +Inf only */
  _Atomic uint64_t latency_sum_ns[ROUTE_N];
  _Atomic uint64_t db_reads;  /* documents read from MongoDB (loads) */
  _Atomic uint64_t db_writes; /* replaces and deletes sent */
  _Atomic uint64_t db_errors; /* reads and writes that failed */
} metrics_t;

/* Counts one finished request.  Thread-safe, lock-free. */
void metrics_request(metrics_t *m, int route, int method, unsigned status, uint64_t ns);

/* Counts one error answer libmicrohttpd sent on its own (a request the
 * service never saw).  Thread-safe, lock-free. */
void metrics_mhd_error(metrics_t *m, unsigned status);

/* Renders the exposition (text format 0.0.4) into a malloc'd buffer:
 * the HTTP counters, the requests in flight (in_flight, the scrape
 * included), the connections without a first request yet (fresh_conns), and when cache is not NULL
 * its stats, its freshness and, when sub is not NULL, the subscription's.  Returns NULL when out of
 * memory.  Thread-safe (cdcache_stats, cdcache_cdc_stats). */
char *metrics_render(metrics_t *m, unsigned in_flight, unsigned fresh_conns, cdcache_t *cache,
                     cdcache_cdc_t *sub, size_t *len);

#endif
