/*
 * service.h: the HTTP side of the example (service.c): routes, HTTP
 * caching, request limits, on a libmicrohttpd daemon.
 */
#ifndef CDCACHE_HTTP_SERVICE_H
#define CDCACHE_HTTP_SERVICE_H

#include "metrics.h"
#include "store.h"

#include <cdcache.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct service_config {
  const char *bind;         /* IPv4 address to listen on */
  uint16_t port;            /* 0: any free port (service_port() tells) */
  unsigned threads;         /* libmicrohttpd worker threads (epoll each) */
  unsigned conn_timeout_s;  /* idle connections are closed after this */
  unsigned max_connections; /* further connections are refused */
  size_t max_body;          /* longest PUT body, bytes */
  size_t max_key_len;       /* longest id (the cache's max_key_len) */
  unsigned max_conn_per_ip; /* connections from one IP address beyond this are closed */
} service_config_t;

typedef struct service {
  /* Read-only while the daemon runs. */
  struct MHD_Daemon *daemon;
  cdcache_t *cache;   /* NULL with --no-cache: every read goes to MongoDB */
  cdcache_cdc_t *sub; /* NULL with --no-cache */
  store_t *store;
  size_t max_body;
  size_t max_key_len;
  /* Set by service_drain_begin (main thread), read by the workers:
   * relaxed (a flag; nothing else is published through it). */
  _Atomic bool draining;
  /* Requests whose headers reached the handler and whose completion
   * callback has not run yet; workers add and subtract (relaxed). */
  _Atomic unsigned in_flight;
  /* Connections accepted whose first request has not reached the handler
   * yet (its head is still arriving, or waits for a busy worker thread);
   * workers add and subtract (relaxed). */
  _Atomic unsigned fresh_conns;
  /* The listening socket once service_drain_begin took it from the
   * daemon (quiesced); main thread only.  Closed by service_stop. */
  bool quiesced;
  int listen_fd;
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

/*
 * Begins a graceful shutdown: from now on /healthz answers 503 and every
 * response carries "Connection: close".  Requests go on being accepted
 * and served.  Main thread only, once, after service_start succeeded.
 */
void service_drain_begin(service_t *s);

/* Connections waiting in the listening socket's accept queue (Linux
 * TCP_INFO), 0 when unknown.  Main thread only, before
 * service_stop_accepting. */
unsigned service_backlog(const service_t *s);

/* The daemon stops accepting connections (MHD_quiesce_daemon); clients
 * that connect later stay in the listen backlog until service_stop
 * closes it, which resets them.  Main thread only, at most once. */
void service_stop_accepting(service_t *s);

/* Requests in flight (headers in, response not yet sent).  Thread-safe. */
unsigned service_in_flight(const service_t *s);

/* What a drain waits for: the requests in flight plus the connections
 * accepted whose first request has not reached the handler yet.  (A
 * kept-alive connection that has been answered before is not counted:
 * nothing tells whether a next request is coming.)  Thread-safe. */
unsigned service_pending(const service_t *s);

/* Stops the daemon: closes every connection and joins its threads. */
void service_stop(service_t *s);

#endif
