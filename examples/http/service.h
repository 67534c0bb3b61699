/*
 * service.h: the HTTP side of the example (service.c): routes, HTTP
 * caching, request limits, on a libmicrohttpd daemon.
 */
#ifndef CDCACHE_HTTP_SERVICE_H
#define CDCACHE_HTTP_SERVICE_H

#include "metrics.h"
#include "store.h"

#include <cdcache.h>

#include <stdint.h>

typedef struct service_config {
  const char *bind;         /* IPv4 address to listen on */
  uint16_t port;            /* 0: any free port (service_port() tells) */
  unsigned threads;         /* libmicrohttpd worker threads (epoll each) */
  unsigned conn_timeout_s;  /* idle connections are closed after this */
  unsigned max_connections; /* further connections are refused */
  size_t max_body;          /* longest PUT body, bytes */
  size_t max_key_len;       /* longest id (the cache's max_key_len) */
} service_config_t;

typedef struct service {
  /* Read-only while the daemon runs. */
  struct MHD_Daemon *daemon;
  cdcache_t *cache;   /* NULL with --no-cache: every read goes to MongoDB */
  cdcache_cdc_t *sub; /* NULL with --no-cache */
  store_t *store;
  size_t max_body;
  size_t max_key_len;
  /* Atomic counters (see metrics.h). */
  metrics_t metrics;
} service_t;

/*
 * Starts the daemon on s (cache, sub and store set by the caller, the rest
 * zeroed).  Returns 0, or -1 with a message in err.  The caller stops it
 * with service_stop() before closing the cache, subscription and store.
 */
int service_start(service_t *s, const service_config_t *cfg, char *err, size_t errcap);

/* The port the daemon listens on. */
uint16_t service_port(const service_t *s);

/* Stops the daemon: closes every connection and joins its threads. */
void service_stop(service_t *s);

#endif
