/*
 * metrics.c: counters kept by the HTTP workers, rendered on GET /metrics
 * in the Prometheus text exposition format (version 0.0.4).
 *
 * Workers only add to fixed arrays of relaxed atomics (no lock, no
 * allocation on the request path); a scrape reads them, the cache's
 * stats (cdcache_stats), its freshness (cdcache_fresh) and the CDC
 * subscription's stats (cdcache_cdc_stats), and prints.  Names follow
 * Prometheus conventions (base units: seconds, bytes; counters end in
 * _total); the tests run `promtool check metrics` on the output.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned codes[METRICS_CODES] = {200, 201, 204, 304, 400, 404, 405, 408,
                                              413, 414, 431, 500, 503, 505, 0};
static const char *const route_names[ROUTE_N] = {"users", "healthz", "metrics", "other"};
static const char *const method_names[METHOD_N] = {"GET", "HEAD", "PUT", "DELETE", "other"};
/* Histogram bucket upper bounds, seconds. */
static const double bounds[METRICS_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0};

/* The slot of a status code (the last one: any other code). */
static int code_slot(unsigned status)
{
  int c = 0;
  while (c < METRICS_CODES - 1 && codes[c] != status)
    c++;
  return c;
}

static void code_label(int c, char code[16])
{
  if (codes[c] != 0)
    snprintf(code, 16, "%u", codes[c]);
  else
    snprintf(code, 16, "other");
}

void metrics_mhd_error(metrics_t *m, unsigned status)
{
  atomic_fetch_add_explicit(&m->mhd_errors[code_slot(status)], 1, memory_order_relaxed);
}

void metrics_request(metrics_t *m, int route, int method, unsigned status, uint64_t ns)
{
  int c = code_slot(status);
  atomic_fetch_add_explicit(&m->requests[route][method][c], 1, memory_order_relaxed);
  int b = 0;
  while (b < METRICS_BUCKETS && (double)ns / 1e9 > bounds[b])
    b++;
  atomic_fetch_add_explicit(&m->latency[route][b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->latency_sum_ns[route], ns, memory_order_relaxed);
}

/* A growing output buffer; failed stays set after the first failure. */
typedef struct out {
  char *buf;
  size_t len, cap;
  int failed;
} out_t;

__attribute__((format(printf, 2, 3))) static void put(out_t *o, const char *fmt, ...)
{
  for (;;) {
    if (o->failed)
      return;
    va_list ap;
    va_start(ap, fmt);
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is two lines up
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->failed = 1;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t ncap = o->cap * 2 + (size_t)n;
    char *nb = realloc(o->buf, ncap);
    if (nb == NULL) {
      o->failed = 1;
      return;
    }
    o->buf = nb;
    o->cap = ncap;
  }
}

static void head(out_t *o, const char *name, const char *type, const char *help)
{
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(out_t *o, const char *name, const char *help, uint64_t v)
{
  head(o, name, "counter", help);
  put(o, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(out_t *o, const char *name, const char *help, double v)
{
  head(o, name, "gauge", help);
  put(o, "%s %.9g\n", name, v);
}

static uint64_t ld(_Atomic uint64_t *a)
{
  return atomic_load_explicit(a, memory_order_relaxed);
}

static void render_http(out_t *o, metrics_t *m)
{
  head(o, "cdcache_http_requests_total", "counter",
       "HTTP requests the service answered, by route, method and status code. Not included: "
       "the error answers libmicrohttpd sends itself (cdcache_http_protocol_errors_total).");
  for (int r = 0; r < ROUTE_N; r++)
    for (int me = 0; me < METHOD_N; me++)
      for (int c = 0; c < METRICS_CODES; c++) {
        uint64_t v = ld(&m->requests[r][me][c]);
        if (v == 0)
          continue;
        char code[16];
        code_label(c, code);
        put(o, "cdcache_http_requests_total{route=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
            route_names[r], method_names[me], code, (unsigned long long)v);
      }
  head(o, "cdcache_http_protocol_errors_total", "counter",
       "Error answers libmicrohttpd sent itself, before the service saw a request (malformed "
       "request line or headers, no Host, head over the memory limit, Content-Length too "
       "large), by status code. Counted from libmicrohttpd 0.9.75's error log line.");
  for (int c = 0; c < METRICS_CODES; c++) {
    uint64_t v = ld(&m->mhd_errors[c]);
    if (v == 0)
      continue;
    char code[16];
    code_label(c, code);
    put(o, "cdcache_http_protocol_errors_total{code=\"%s\"} %llu\n", code, (unsigned long long)v);
  }
  head(o, "cdcache_http_request_duration_seconds", "histogram",
       "Time from a request's headers to its response sent, by route.");
  for (int r = 0; r < ROUTE_N; r++) {
    uint64_t cum = 0;
    for (int b = 0; b <= METRICS_BUCKETS; b++) {
      cum += ld(&m->latency[r][b]);
      if (b < METRICS_BUCKETS)
        put(o, "cdcache_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
            route_names[r], bounds[b], (unsigned long long)cum);
      else
        put(o, "cdcache_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
            route_names[r], (unsigned long long)cum);
    }
    put(o, "cdcache_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n", route_names[r],
        (double)ld(&m->latency_sum_ns[r]) / 1e9);
    put(o, "cdcache_http_request_duration_seconds_count{route=\"%s\"} %llu\n", route_names[r],
        (unsigned long long)cum);
  }
  counter(o, "cdcache_http_db_reads_total", "Documents read from MongoDB (cache loads).",
          ld(&m->db_reads));
  counter(o, "cdcache_http_db_writes_total", "Replaces and deletes sent to MongoDB.",
          ld(&m->db_writes));
  counter(o, "cdcache_http_db_errors_total", "MongoDB reads and writes that failed.",
          ld(&m->db_errors));
}

static void render_cache(out_t *o, cdcache_t *cache)
{
  cdcache_stats_t s = {.struct_size = sizeof s};
  if (cdcache_stats(cache, &s) != 0)
    return;
  counter(o, "cdcache_hits_total", "Cache lookups that found a value.", s.hits);
  counter(o, "cdcache_misses_total", "Cache lookups that found none.", s.misses);
  counter(o, "cdcache_loads_total", "Loader calls (cache fills).", s.loads);
  counter(o, "cdcache_load_waits_total", "Callers that waited for another caller's load.",
          s.load_waits);
  counter(o, "cdcache_puts_total", "Values stored.", s.puts);
  counter(o, "cdcache_evictions_total", "Entries evicted to make room.", s.evictions);
  counter(o, "cdcache_invalidations_total", "Entries invalidated (by the CDC subscription).",
          s.invalidations);
  counter(o, "cdcache_flushes_total", "Whole-cache flushes.", s.flushes);
  counter(o, "cdcache_stale_fills_rejected_total",
          "Loaded values not cached because the key changed during the load.",
          s.stale_fills_rejected);
  gauge(o, "cdcache_entries", "Live entries.", (double)s.entries);
  head(o, "cdcache_memory_bytes", "gauge", "Bytes held, by kind.");
  put(o, "cdcache_memory_bytes{kind=\"live\"} %llu\n", (unsigned long long)s.bytes_live);
  put(o, "cdcache_memory_bytes{kind=\"pending_free\"} %llu\n",
      (unsigned long long)s.bytes_pending_free);
  put(o, "cdcache_memory_bytes{kind=\"tables\"} %llu\n", (unsigned long long)s.bytes_tables);
  gauge(o, "cdcache_fresh", "1 while the cache serves (fresh), 0 while it has failed closed.",
        cdcache_fresh(cache, NULL) == 0 ? 1.0 : 0.0);
}

static void render_cdc(out_t *o, cdcache_cdc_t *sub)
{
  cdcache_cdc_stats_t s = {.struct_size = sizeof s};
  if (cdcache_cdc_stats(sub, &s) != 0)
    return;
  head(o, "cdcache_cdc_state", "gauge", "The subscription's state (1 for the current one).");
  for (int st = CDCACHE_CDC_CONNECTING; st <= CDCACHE_CDC_STOPPED; st++)
    put(o, "cdcache_cdc_state{state=\"%s\"} %d\n", cdcache_cdc_state_name(st), s.state == st);
  counter(o, "cdcache_cdc_events_total", "Change events returned by the stream.", s.events);
  counter(o, "cdcache_cdc_keys_evicted_total", "Keys evicted by change events.", s.keys_evicted);
  head(o, "cdcache_cdc_flushes_total", "counter", "Whole-cache flushes by the subscription.");
  for (int r = 0; r < CDCACHE_CDC_FLUSH_REASONS; r++)
    put(o, "cdcache_cdc_flushes_total{reason=\"%s\"} %llu\n", cdcache_cdc_flush_reason_name(r),
        (unsigned long long)cdcache_cdc_flush_count(&s, r));
  counter(o, "cdcache_cdc_reconnects_total", "Streams reopened after a failure or invalidate.",
          s.reconnects);
  counter(o, "cdcache_cdc_malformed_events_total", "Undecodable change events.",
          s.malformed_events);
  counter(o, "cdcache_cdc_key_errors_total", "Keys that could not be rendered.", s.key_errors);
  gauge(o, "cdcache_cdc_invalidation_lag_p50_seconds",
        "Median lag from a write's commit to its eviction, over the last lag samples.",
        (double)s.lag_p50_ms / 1e3);
  gauge(o, "cdcache_cdc_invalidation_lag_p99_seconds",
        "99th percentile lag from a write's commit to its eviction.", (double)s.lag_p99_ms / 1e3);
  gauge(o, "cdcache_cdc_invalidation_lag_samples", "Events the lag percentiles are taken over.",
        (double)s.lag_samples);
}

char *metrics_render(metrics_t *m, unsigned in_flight, unsigned fresh_conns, cdcache_t *cache,
                     cdcache_cdc_t *sub, size_t *len)
{
  out_t o = {.buf = malloc(8192), .cap = 8192};
  if (o.buf == NULL)
    return NULL;
  render_http(&o, m);
  gauge(&o, "cdcache_http_requests_in_flight",
        "Requests received and not yet answered (this scrape included).", (double)in_flight);
  gauge(&o, "cdcache_http_connections_waiting",
        "Connections accepted whose first request has not reached the service yet.",
        (double)fresh_conns);
  if (cache != NULL)
    render_cache(&o, cache);
  if (sub != NULL)
    render_cdc(&o, sub);
  if (o.failed) {
    free(o.buf);
    return NULL;
  }
  *len = o.len;
  return o.buf;
}
