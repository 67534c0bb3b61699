/*
 * Helpers for the hostile suites: a counting allocator that fails the nth
 * allocation, a log sink, a monotonic clock, and a tiny wire-protocol
 * server on 127.0.0.1 (one thread per connection) that speaks just enough
 * MongoDB to be hostile in a chosen way.
 */
#ifndef HOSTILE_UTIL_H
#define HOSTILE_UTIL_H

#include <bson/bson.h>
#include <cdcache.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ allocator */

typedef struct h_alloc {
  _Atomic long live;       /* allocations not yet freed */
  _Atomic long long bytes; /* bytes not yet freed (as asked) */
  _Atomic long calls;      /* malloc calls since arming */
  _Atomic long fail_at;    /* 1-based call to fail; 0 off */
  _Atomic int fail_all;
} h_alloc_t;
void h_alloc_install(cdcache_config_t *cfg, h_alloc_t *a);
/* Fails the nth malloc from now (0 disarms); resets the call count. */
void h_alloc_fail_nth(h_alloc_t *a, long n);

/* -------------------------------------------------------------- logging */

typedef struct h_log {
  pthread_mutex_t mu;
  int n;            /* mu: messages seen */
  char last[512];   /* mu: the latest message */
  char match[512];  /* mu: the first one containing `want` */
  const char *want; /* set before use */
  int matched;      /* mu */
} h_log_t;
void h_log_init(h_log_t *l, const char *want);
void h_log_fn(void *ctx, int level, const char *msg);
int h_log_matched(h_log_t *l);

uint64_t h_now_ms(void);
void h_nap_ms(unsigned ms);

/* A loopback port that nothing listens on (bound, then closed). */
int h_closed_port(void);

/* ------------------------------------------------------- fake server */

/* What the server does with a request it decides to spoil. */
typedef enum h_bad {
  H_ANSWER = 0,      /* answer properly (a change stream, see below) */
  H_SILENT,          /* read everything, answer nothing, keep open */
  H_GARBAGE_HTTP,    /* an HTTP error page (length field = "HTTP") */
  H_GARBAGE_FRAME,   /* a 64-byte frame: right header size, junk body */
  H_TRUNCATED,       /* a correct reply's first half, then close */
  H_TRUNCATED_STALL, /* a correct reply's first half, then silence */
  H_HUGE_LENGTH,     /* a header claiming 64 MiB (> 48 MB), then close */
  H_OVERSIZE_BSON,   /* a small OP_MSG frame whose BSON claims 2 GiB */
  H_CLOSE            /* close the connection without a byte */
} h_bad_t;

/* How the aggregate's cursor.ns is shaped (for the abort study). */
typedef enum h_ns {
  H_NS_OK = 0,    /* "db.coll" */
  H_NS_MISSING,   /* no cursor.ns */
  H_NS_NODOT,     /* "db" */
  H_NS_NOT_UTF8,  /* cursor.ns: 42 */
  H_NS_EMPTY_COLL /* "db." */
} h_ns_t;

#define H_MAX_CONNS 64
#define H_MAX_EVENTS 64

typedef struct h_server {
  /* set before h_server_start */
  h_bad_t on_hello;             /* what the handshake gets */
  h_bad_t on_command;           /* what every other command gets */
  h_ns_t ns_shape;              /* cursor.ns of the aggregate reply */
  bson_t *events[H_MAX_EVENTS]; /* firstBatch of the aggregate (owned) */
  int n_events;
  uint32_t getmore_wait_ms; /* an empty getMore waits this (default 50) */

  /* runtime */
  int port;
  char uri[128];
  int listen_fd;
  int stop_fd; /* eventfd */
  pthread_t acceptor;
  pthread_mutex_t mu;
  pthread_t conn_thr[H_MAX_CONNS]; /* mu */
  int conn_fd[H_MAX_CONNS];        /* mu */
  int n_conns;                     /* mu */
  _Atomic int accepted, hellos, aggregates, getmores, others, spoiled;
} h_server_t;

/* Zeroes s and sets defaults (answer everything). */
void h_server_init(h_server_t *s);
/* Adds an event document to the aggregate's firstBatch (copied). */
void h_server_add_event(h_server_t *s, const bson_t *ev);
int h_server_start(h_server_t *s);
void h_server_stop(h_server_t *s);

/* ------------------------------------------- _id of every BSON type */

typedef struct id_row {
  const char *type;
  const char *expect; /* the rendering */
} h_id_row_t;
extern const h_id_row_t h_id_rows[];
extern const int H_N_ID_ROWS;
/* Appends row i's value as "_id" to d; false past the end.  Row 6 is a
 * 3-byte string with an embedded NUL (its expect is "a\0b"). */
bool h_append_id(bson_t *d, int i);

#endif
