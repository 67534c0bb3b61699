/*
 * Internal interface of the CDC consumer (cdc/).  Not installed.
 *
 * Files:
 *   idrender.c  BSON value -> key text (the one _id rendering)
 *   keyrule.c   namespace patterns and key templates: parse, match, render
 *   event.c     decode one change event, evict its keys, flush when needed
 *   stats.c     counters, lag window, resume-token text (stats mutex)
 *   netstream.c a socket mongoc_stream_t whose waits a stop can interrupt
 *   stream.c    the subscription: config, thread, libmongoc, resume/backoff
 *
 * libmongoc and libbson allocate through bson_malloc (their own allocator,
 * which aborts on failure); cdcache's allocator hook covers only what the
 * files here allocate themselves.
 */
#ifndef CDCACHE_CDC_INTERNAL_H
#define CDCACHE_CDC_INTERNAL_H

#include "cache_internal.h"
#include "cdcache.h"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ idrender.c */

/*
 * Renders the value at it (see cdcache_id_render) into buf without a NUL.
 * Always stores the full length in *out_len; returns 0, CDCACHE_ERANGE
 * (len > cap, nothing or part written) or CDCACHE_EINVAL (a value libbson
 * cannot turn into JSON).  Thread-safe.
 */
int cdcache__render_value(const bson_iter_t *it, char *buf, size_t cap, size_t *out_len);

/* ------------------------------------------------------------- keyrule.c */

enum { CDCACHE__NS_ALL = 0, CDCACHE__NS_DB = 1, CDCACHE__NS_EXACT = 2 };
enum { CDCACHE__SEG_LIT = 0, CDCACHE__SEG_DB = 1, CDCACHE__SEG_COLL = 2, CDCACHE__SEG_FIELD = 3 };

/* One template segment: a literal run or a placeholder; off/len index the
 * rule's template text (for SEG_FIELD: the field name). */
typedef struct cdcache__seg {
  uint8_t kind;
  uint32_t off;
  uint32_t len;
} cdcache__seg_t;

/* A parsed rule.  Immutable after parsing; read by the CDC thread only. */
typedef struct cdcache__rule {
  int ns_kind; /* CDCACHE__NS_* */
  char *db;    /* NUL-terminated; NULL for NS_ALL */
  char *coll;  /* NULL unless NS_EXACT */
  char *tmpl;  /* the template's copy */
  size_t tmpl_len;
  cdcache__seg_t *segs;
  size_t nsegs;
} cdcache__rule_t;

/* Parses ns into kind and the byte ranges of db and coll within ns.
 * Returns 0 or CDCACHE_EINVAL with a reason in err. */
int cdcache__ns_parse(const char *ns, int *kind, size_t *db_len, const char **coll, char *err,
                      size_t errcap);

/*
 * Parses a template.  With segs NULL only counts (*nsegs) and checks;
 * otherwise fills up to cap segments.  Returns 0 or CDCACHE_EINVAL.
 */
int cdcache__tmpl_parse(const char *tmpl, cdcache__seg_t *segs, size_t cap, size_t *nsegs,
                        char *err, size_t errcap);

/* Builds *out from a public rule, allocating through cache's allocator.
 * Returns 0, CDCACHE_EINVAL, CDCACHE_ENOMEM. */
int cdcache__rule_build(const cdcache_t *cache, const cdcache_cdc_rule_t *in, cdcache__rule_t *out,
                        char *err, size_t errcap);
void cdcache__rule_free(const cdcache_t *cache, cdcache__rule_t *r);

/* Whether the rule applies to db/coll (coll NULL: a database-level event
 * never matches a rule, it flushes). */
bool cdcache__rule_matches(const cdcache__rule_t *r, const char *db, const char *coll);

/*
 * Renders the rule's key for one event into buf (cap bytes, no NUL).
 * Returns 0; CDCACHE_ERANGE (*out_len holds the length needed);
 * CDCACHE_ENOENT (a {FIELD} absent from documentKey, or documentKey
 * missing while the template needs it); CDCACHE_EINVAL (a value that
 * cannot be rendered).
 */
int cdcache__rule_render(const cdcache__rule_t *r, const char *db, const char *coll,
                         const bson_t *doc_key, char *buf, size_t cap, size_t *out_len);

/* --------------------------------------------------------------- stats.c */

#define CDCACHE__LAG_WINDOW 1024u

/* Counters and text the CDC thread writes and cdcache_cdc_stats reads.
 * Every field is protected by mu. */
typedef struct cdcache__cdc_stats {
  pthread_mutex_t mu;
  int state;                                   /* mu; CDCACHE_CDC_* */
  uint64_t events;                             /* mu */
  uint64_t keys_evicted;                       /* mu */
  uint64_t flushes[CDCACHE_CDC_FLUSH_REASONS]; /* mu; by reason */
  uint64_t reconnects;                         /* mu */
  uint64_t resumes;                            /* mu */
  uint64_t majority_gap_ms;                    /* mu */
  uint64_t malformed_events;                   /* mu */
  uint64_t ignored_events;                     /* mu */
  uint64_t key_errors;                         /* mu */
  uint64_t last_cluster_time;                  /* mu */
  uint64_t last_answer_ms;                     /* mu */
  uint64_t lag[CDCACHE__LAG_WINDOW];           /* mu; a ring of the latest lags */
  uint32_t lag_n;                              /* mu; samples held, <= window */
  uint32_t lag_next;                           /* mu; next slot to write */
  /* mu; the token's raw BSON, rendered to JSON only when stats are read
   * (rendering per event cost a quarter of the CDC thread's time), in a
   * buffer that grows to the longest token seen (bson_realloc: tokens
   * embed the documentKey, so they have no useful bound). */
  uint8_t *token;
  uint32_t token_len;                     /* mu; 0: none */
  uint32_t token_cap;                     /* mu; bytes at token */
  char last_error[CDCACHE_CDC_ERROR_MAX]; /* mu */
} cdcache__cdc_stats_t;

int cdcache__stats_init(cdcache__cdc_stats_t *s);
void cdcache__stats_destroy(cdcache__cdc_stats_t *s);
/* Adds delta to the uint64_t counter at offset off (offsetof). */
void cdcache__stats_add(cdcache__cdc_stats_t *s, size_t off, uint64_t delta);
void cdcache__stats_flush(cdcache__cdc_stats_t *s, int reason);
void cdcache__stats_set_state(cdcache__cdc_stats_t *s, int state);
int cdcache__stats_get_state(cdcache__cdc_stats_t *s);
void cdcache__stats_applied(cdcache__cdc_stats_t *s, uint64_t cluster_time, int64_t lag_ms,
                            bool has_lag);
void cdcache__stats_answered(cdcache__cdc_stats_t *s, uint64_t ms);
void cdcache__stats_token(cdcache__cdc_stats_t *s, const bson_t *token);
void cdcache__stats_error(cdcache__cdc_stats_t *s, const char *msg);
void cdcache__stats_majority_gap(cdcache__cdc_stats_t *s, uint64_t gap_ms);
/* Copies a snapshot into *out (struct_size respected); fresh_until and
 * now let it report FAILED_CLOSED. */
void cdcache__stats_snapshot(cdcache__cdc_stats_t *s, cdcache_cdc_stats_t *out, uint64_t now_ms,
                             uint64_t fresh_until);

/* --------------------------------------------------------------- bound.c */

/* Replies reach 16 MiB at most; an event without fullDocument is taken to
 * be at most 1 MiB (its documentKey included). */
#define CDCACHE__REPLY_MAX_BYTES (16u * 1024u * 1024u)
#define CDCACHE__EVENT_MAX_BYTES (1024u * 1024u)
#define CDCACHE__BOUND_PENDING 32u

/* What one answered aggregate or getMore says. */
typedef struct cdcache__reply {
  uint64_t stamp_ms; /* cache clock when its request was sent */
  uint64_t op_time;  /* operationTime ((t << 32) | i); 0 if absent */
  uint32_t events;   /* events in its batch */
  uint64_t bytes;    /* the reply's size */
  bool is_getmore;   /* false: an aggregate */
} cdcache__reply_t;

/* The bound's evidence.  CDC thread only (or a test with no thread). */
typedef struct cdcache__bound {
  uint32_t batch_size; /* the getMore batchSize sent; 0: none */
  bool full_document;  /* events may carry whole documents */
  uint64_t vouched_ms; /* every write committed before it is gone */
  struct {
    uint64_t stamp_ms, op_time;
  } pending[CDCACHE__BOUND_PENDING]; /* cut replies waiting for evidence */
  uint32_t n_pending;
  cdcache__reply_t cur; /* the reply whose events are being applied */
  uint32_t cur_left;    /* its events not yet applied */
  bool cur_cut;
  bool cur_active;
} cdcache__bound_t;

void cdcache__bound_init(cdcache__bound_t *b, uint32_t batch_size, bool full_document);
/* Forgets all evidence (the stream was given up): vouched_ms = 0. */
void cdcache__bound_reset(cdcache__bound_t *b);
/* Whether r may have been cut by a limit (an aggregate always counts). */
bool cdcache__bound_reply_cut(const cdcache__bound_t *b, const cdcache__reply_t *r);
/* A reply arrived (its events are applied next).  These three return
 * true when vouched_ms moved. */
bool cdcache__bound_answered(cdcache__bound_t *b, const cdcache__reply_t *r);
/* One event of the current reply was applied; cluster_time 0: unknown. */
bool cdcache__bound_applied(cdcache__bound_t *b, uint64_t cluster_time);
/* A whole-cache flush that began at flush_start_ms. */
bool cdcache__bound_flushed(cdcache__bound_t *b, uint64_t flush_start_ms);

/* ----------------------------------------------------------- netstream.c */

/*
 * The stream initiator installed on the subscription's client (plain TCP,
 * Unix sockets, and TLS over them with options from the URI).  Every wait polls the
 * subscription's stop eventfd too, so a stop interrupts connect, read and
 * write at once.  user_data is the cdcache_cdc_t.
 */
mongoc_stream_t *cdcache__net_initiator(const mongoc_uri_t *uri, const mongoc_host_list_t *host,
                                        void *user_data, bson_error_t *error);

/* The stream over a connected non-blocking socket fd (owned from now on;
 * closed on destroy) whose waits also poll stop_fd.  NULL when out of
 * memory (fd then still the caller's).  For the initiator and tests. */
mongoc_stream_t *cdcache__net_stream_new(const cdcache_t *cache, int fd, int stop_fd);
/* Connects to host (TCP, every resolved address in turn, or a Unix
 * socket) within connect_timeout_ms per address, interruptible by
 * stop_fd.  0 and *fd_out a non-blocking socket, or an errno and a
 * message in why. */
int cdcache__net_connect(const mongoc_host_list_t *host, int stop_fd, int32_t connect_timeout_ms,
                         int *fd_out, char *why, size_t why_len);
/* How many connect timeouts one connect may spend in all. */
#define CDCACHE__NET_MAX_WAITS 3
struct addrinfo;
/* Tries each address of list in turn, each within connect_timeout_ms of
 * its own, all within CDCACHE__NET_MAX_WAITS of them, interruptible by
 * stop_fd.  0 and *fd_out a non-blocking socket, or the last errno. */
int cdcache__net_connect_addrs(const struct addrinfo *list, int stop_fd, int32_t connect_timeout_ms,
                               int *fd_out);

/* -------------------------------------------------------------- stream.c */

/* A warning about one namespace is logged at most once per this many ms
 * (event.c), in one of this many slots. */
#define CDCACHE__LOGLIMIT_MS 60000u
#define CDCACHE__LOGLIMIT_SLOTS 64u
#define CDCACHE__LOGLIMIT_WAYS 4u

/* cdcache_cdc_stop waits max_await_ms + EXTRA (at most MAX) for the
 * thread to end on its own before it wakes the sockets. */
#define CDCACHE__STOP_GRACE_EXTRA_MS 250u
#define CDCACHE__STOP_GRACE_MAX_MS 800u

/* libmongoc's hidden resumes are logged at most once per this many ms. */
#define CDCACHE__RESUME_LOG_MS 10000u

/* What applying one event asks of the stream loop. */
enum { CDCACHE__APPLY_OK = 0, CDCACHE__APPLY_INVALIDATE = 1 };

struct cdcache_cdc {
  /* Immutable after cdcache_cdc_start returns (read by both threads). */
  cdcache_t *cache;
  char *uri_str;
  char *db;   /* NULL: deployment scope */
  char *coll; /* NULL: database or deployment scope */
  cdcache__rule_t *rules;
  size_t n_rules;
  cdcache_cdc_key_fn key_fn;
  void *key_ctx;
  int full_doc;
  uint32_t max_stale_ms, batch_size, max_await_ms, socket_timeout_ms, connect_timeout_ms,
      backoff_initial_ms, backoff_max_ms, poison_errors;
  cdcache_log_fn log;
  void *log_ctx;
  int route_mongoc_log;
  cdcache_mongoc_log_fn mongoc_log_prev; /* see cdcache_cdc_config_t */
  void *mongoc_log_prev_ctx;
  cdcache_cdc_evict_fn on_evict;
  void *on_evict_ctx;
  uint32_t max_key_len; /* keys longer than this cannot be cached */
  bson_t *pipeline;     /* the watch pipeline, built once */

  /* Stop signalling.  stopping: atomic, stored with release by stop,
   * loaded with acquire by the CDC thread and the stream code.  stop_fd:
   * an eventfd made readable by stop (never read), immutable. */
  atomic_bool stopping;
  int stop_fd;
  /* An eventfd the CDC thread makes readable as its last act, so that
   * stop can wait a bounded time for a graceful exit (killCursors sent
   * on a live socket) before waking the sockets.  Immutable. */
  int done_fd;
  pthread_t thread;    /* written by start, joined by stop */
  bool thread_started; /* start/stop only */

  /* CDC-thread-only state: touched by the CDC thread alone between start
   * and the join in stop, and by the test hook before any thread. */
  mongoc_uri_t *uri;
  mongoc_client_t *client;
  mongoc_change_stream_t *stream;
  bson_t *token;            /* latest resume token, owned (bson_copy) */
  bool token_start_after;   /* token is an invalidate's: use startAfter */
  bool epoch_flush_pending; /* flush once the next aggregate succeeds */
  int pending_reason;       /* the reason the next reopen from now has */
  char *keybuf;             /* render buffer, keybuf_cap bytes */
  size_t keybuf_cap;
  uint64_t rng; /* backoff jitter (xorshift64) */
  /* APM bookkeeping (the CDC thread runs every command of its client). */
  int64_t apm_request_id; /* the aggregate/getMore in flight */
  uint64_t apm_start_ms;  /* when it started (cache clock) */
  /* Rate limit of per-namespace warnings (event.c): a few slots keyed by
   * a hash of the message kind and namespace. */
  struct {
    uint64_t hash;
    uint64_t last_ms; /* cache clock of the last line logged */
    uint64_t held;    /* occurrences not logged since */
  } loglimit[CDCACHE__LOGLIMIT_SLOTS];
  cdcache__bound_t bound; /* the staleness bound's evidence (bound.c) */
  /* libmongoc's own resumes (stats.resumes): inside mongoc_change_stream_
   * next(), the aggregates it started since the last answered getMore, and
   * the rate limit of their log line. */
  bool in_next;
  uint32_t next_resumes;
  uint64_t resume_log_ms;  /* cache clock of the last line */
  uint64_t resumes_held;   /* resumes not logged since */
  uint64_t connect_log_ms; /* netstream: the last "cannot connect" line */
  char connect_why[256];   /* netstream: why the last connect failed ("" after success) */
  uint64_t agg_op_time;    /* operationTime of the latest aggregate reply */
  /* Poison detection: the token the last non-resumable error happened at
   * (owned; NULL: none), its code, how many times in a row. */
  bson_t *poison_token;
  uint32_t poison_code;
  uint32_t poison_count;
  /* Backoff: failures since the last progress; the cap's log line given. */
  uint32_t failures;
  bool backoff_cap_logged;
  bool progress; /* a getMore answered without error, not yet seen */

  cdcache__cdc_stats_t stats; /* its own mutex */
};

/* Logs through the subscription's log callback or the cache's.  Any
 * thread, no lock held. */
void cdcache__cdc_log(const cdcache_cdc_t *sub, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* netstream.c: set on the CDC thread to make every I/O of its client's
 * streams fail at once (as a stop does), to break a loop of resumes
 * libmongoc runs inside one next(); cleared when next() returns. */
extern _Thread_local bool cdcache__net_abort_io;

/* logroute.c: routing libmongoc's process-wide log (see there).  on/off
 * from start/stop (any thread); thread from the subscription's thread
 * when it begins. */
void cdcache__logroute_on(cdcache_cdc_t *sub);
void cdcache__logroute_off(cdcache_cdc_t *sub);
void cdcache__logroute_thread(cdcache_cdc_t *sub);

/* Flushes the whole cache for reason, counts and logs it, tells the
 * observer.  Returns 0, or cdcache_flush's error (logged).  CDC thread. */
int cdcache__cdc_flush(cdcache_cdc_t *sub, int reason, const char *why);

/* Moves the cluster time handed to loaders forward to ct (never back:
 * duplicates after a resume carry older times).  CDC thread. */
void cdcache__cdc_advance_cluster_time(cdcache_cdc_t *sub, uint64_t ct);

/* Decodes and applies one change event (raw BSON): evicts its keys, or
 * flushes.  Never fails: what it cannot map, it flushes.  CDC thread (or a
 * test, with no thread running). */
int cdcache__cdc_apply(cdcache_cdc_t *sub, const uint8_t *data, size_t len);

/*
 * Test hooks: build a subscription (validate, copy the config) without
 * starting its thread, so that events can be applied synchronously; and
 * free one built that way.
 */
int cdcache__cdc_create(cdcache_t *cache, const cdcache_cdc_config_t *cfg, cdcache_cdc_t **out,
                        char *err, size_t errcap);
void cdcache__cdc_destroy(cdcache_cdc_t *sub);

#endif /* CDCACHE_CDC_INTERNAL_H */
