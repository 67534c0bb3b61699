/*
 * The subscription: one thread, one libmongoc client, one change stream,
 * and the rules for keeping the cache no staler than the stream.
 *
 * Life of the thread
 * ------------------
 *   connect -> watch (aggregate) -> [flush if opened "from now"] ->
 *   loop next(): apply each event at once; keep the resume token after
 *   every answer (a batch, even empty).
 *
 * The fail-closed bound follows the rule written down in bound.c: the
 * APM "command started" callback stamps each aggregate/getMore with the
 * cache clock, the "succeeded" callback hands the reply (events, bytes,
 * operationTime) to the bound, each applied event's clusterTime is handed
 * to it too, and whenever the evidence lets the vouched time move,
 * fresh_until becomes vouched + max_stale_ms.  A getMore that was not cut
 * by a limit vouches for its stamp once its events are applied; a cut
 * reply or an aggregate only once an event past its operationTime has
 * been applied.  Readers check the bound on their own
 * (cdcache__set_fresh_until): a silent or poisoned stream makes the cache
 * fail closed without this thread doing anything.
 *
 * Opening "from now" (at start, and after history was lost, a token was
 * refused or a poison error) loses every write between the last applied
 * event and the new stream's start, so: flush at once (if the cause was a
 * loss), keep the cache failed closed (fresh_until 0, the bound's
 * evidence forgotten) while reconnecting, and flush once more right after
 * the first aggregate succeeds.  That second flush advances the cache
 * epoch (a fill that began before the stream existed may have read data
 * older than its start, and is not cached), it vouches for the moment it
 * began, and the cluster time handed to loaders becomes the aggregate's
 * operationTime.  The cluster time never moves backwards (a resume
 * replays events).
 *
 * Failures, classified as the change-streams specification does:
 *   - libmongoc resumes resumable errors itself (network, ok:1 replies,
 *     CursorNotFound, labelled errors), possibly many times inside one
 *     next(); we see nothing but the bound not moving meanwhile.
 *   - When libmongoc gives up, we destroy the stream (and the client after
 *     a client-side error), back off and watch again with resumeAfter =
 *     the latest token: lossless, no flush.  Errors with no server reply
 *     (network, server selection), the ResumableChangeStreamError label
 *     (an election: NotWritablePrimary, InterruptedDueToReplStateChange)
 *     and CursorNotFound never count against the token.
 *   - Code 286 ChangeStreamHistoryLost or 136 CappedPositionLost (the
 *     token is older than the oplog), 260 InvalidResumeToken or 280
 *     ChangeStreamFatalError (the server refuses it): flush, log why,
 *     reopen from now at once.
 *   - Any other server error is non-resumable: the same code
 *     poison_errors times in a row at the same token (a poison error, e.g.
 *     BSONObjectTooLarge on every getMore) gives the token up: flush
 *     (reason poison), log, reopen from now.
 *   - invalidate: flush, then watch with startAfter = the invalidate's
 *     token (resumeAfter would be refused, and libmongoc would send it if
 *     we called next() again).
 * The backoff (exponential, jittered, interruptible) grows with every
 * failure and starts over only when a getMore is answered without error;
 * it is capped at backoff_max_ms and logged once per step.
 *
 * Timeouts: the client's URI gets socketTimeoutMS (> maxAwaitTimeMS) and
 * connectTimeoutMS from the config, instead of libmongoc's 300 s; and the
 * interruptible stream (netstream.c) makes stop prompt regardless.  The
 * client reads from the primary whatever the URI says (bound.c).
 */
#include "cdc_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- names */

static const char *const state_names[] = {"connecting", "streaming", "backing_off", "failed_closed",
                                          "stopped"};
static const char *const reason_names[] = {"established", "history_lost", "token_rejected",
                                           "invalidate",  "namespace",    "unmappable",
                                           "poison"};

const char *cdcache_cdc_state_name(int state)
{
  if (state < 0 || state > CDCACHE_CDC_STOPPED)
    return "unknown";
  return state_names[state];
}

const char *cdcache_cdc_flush_reason_name(int reason)
{
  if (reason < 0 || reason >= CDCACHE_CDC_FLUSH_REASONS)
    return "unknown";
  return reason_names[reason];
}

/* --------------------------------------------------------------- log */

void cdcache__cdc_log(const cdcache_cdc_t *sub, int level, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  if (!sub->log) {
    /* The cache's callback (if any).  Format once, pass as "%s". */
    va_start(ap, fmt);
    /* The analyzer loses track of va_start here (a known false report). */
    (void)vsnprintf(msg, sizeof msg, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
    va_end(ap);
    cdcache__log(sub->cache, level, "%s", msg);
    return;
  }
  va_start(ap, fmt);
  (void)vsnprintf(msg, sizeof msg, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
  va_end(ap);
  sub->log(sub->log_ctx, level, msg);
}

/* ------------------------------------------------------------ config */

int cdcache_cdc_config_init(cdcache_cdc_config_t *cfg)
{
  if (!cfg)
    return CDCACHE_EINVAL;
  memset(cfg, 0, sizeof *cfg);
  cfg->struct_size = sizeof *cfg;
  cfg->max_stale_ms = 5000;
  cfg->max_await_ms = 500;
  cfg->socket_timeout_ms = 1000;
  cfg->connect_timeout_ms = 1000;
  cfg->backoff_initial_ms = 100;
  cfg->backoff_max_ms = 10000;
  cfg->poison_errors = 5;
  return 0;
}

static char *dup_str(const cdcache_t *cache, const char *s)
{
  size_t n;
  char *d;
  if (!s)
    return NULL;
  n = strlen(s);
  d = cdcache__alloc(cache, n + 1);
  if (d)
    memcpy(d, s, n + 1);
  return d;
}

static void free_str(const cdcache_t *cache, char *s)
{
  if (s)
    cdcache__free(cache, s, strlen(s) + 1);
}

#define CFG_ERR(...)                                                                               \
  do {                                                                                             \
    if (err && errcap)                                                                             \
      (void)snprintf(err, errcap, __VA_ARGS__);                                                    \
    return CDCACHE_EINVAL;                                                                         \
  } while (0)

/* Checks everything but the rules' syntax; c is a full-size copy. */
static int check_config(const cdcache_cdc_config_t *c, char *err, size_t errcap)
{
  if (!c->uri || !*c->uri)
    CFG_ERR("uri is required");
  if (c->coll && !c->db)
    CFG_ERR("coll needs db");
  if ((c->db && !*c->db) || (c->coll && !*c->coll))
    CFG_ERR("db and coll may not be empty");
  if (c->db && strpbrk(c->db, "/\\. \"$*<>:|?"))
    CFG_ERR("invalid database name \"%s\"", c->db);
  if (c->n_rules && !c->rules)
    CFG_ERR("n_rules > 0 but rules is NULL");
  if (!c->n_rules && !c->key_fn)
    CFG_ERR("need at least one rule or a key_fn");
  if (c->key_fn_full_document < CDCACHE_CDC_FULLDOC_NONE ||
      c->key_fn_full_document > CDCACHE_CDC_FULLDOC_UPDATE_LOOKUP)
    CFG_ERR("key_fn_full_document out of range");
  if (c->socket_timeout_ms < 100 || c->socket_timeout_ms > 60000)
    CFG_ERR("socket_timeout_ms must be 100..60000");
  if (c->connect_timeout_ms < 100 || c->connect_timeout_ms > 60000)
    CFG_ERR("connect_timeout_ms must be 100..60000");
  if (c->max_await_ms < 1 || (uint64_t)c->max_await_ms + 100 > c->socket_timeout_ms)
    CFG_ERR("max_await_ms must be 1..socket_timeout_ms - 100 (%u)",
            c->socket_timeout_ms > 100 ? c->socket_timeout_ms - 100 : 0);
  if (c->max_stale_ms != 0 && (uint64_t)c->max_stale_ms < (uint64_t)c->max_await_ms +
                                                              CDCACHE_CDC_RESCAN_MS +
                                                              CDCACHE_CDC_STALE_MARGIN_MS)
    CFG_ERR("max_stale_ms %u cannot be honoured: it must be 0 or at least "
            "max_await_ms + %u + %u = %u",
            c->max_stale_ms, CDCACHE_CDC_RESCAN_MS, CDCACHE_CDC_STALE_MARGIN_MS,
            (uint32_t)(c->max_await_ms + CDCACHE_CDC_RESCAN_MS + CDCACHE_CDC_STALE_MARGIN_MS));
  if (c->backoff_initial_ms < 1 || c->backoff_max_ms < c->backoff_initial_ms)
    CFG_ERR("backoff_initial_ms must be >= 1 and <= backoff_max_ms");
  if (c->poison_errors > 1000)
    CFG_ERR("poison_errors must be 1..1000 (0: the default, 5)");
  return 0;
}

/* A rule that can never see an event of the scope is a mistake. */
static int check_rule_scope(const cdcache__rule_t *r, const char *db, const char *coll, size_t i,
                            char *err, size_t errcap)
{
  if (!db || r->ns_kind == CDCACHE__NS_ALL)
    return 0;
  if (strcmp(r->db, db) != 0)
    CFG_ERR("rule %zu names database \"%s\", outside the scope \"%s\"", i, r->db, db);
  if (coll && r->ns_kind == CDCACHE__NS_EXACT && strcmp(r->coll, coll) != 0)
    CFG_ERR("rule %zu names collection \"%s\", outside the scope \"%s.%s\"", i, r->coll, db, coll);
  return 0;
}

/* {$match: {operationType: {$in: [...]}, $or: [...]}}, {$project: ...} */
static bson_t *build_pipeline(const cdcache_cdc_t *sub)
{
  static const char *const ops[] = {"insert", "update", "replace",      "delete",
                                    "drop",   "rename", "dropDatabase", "invalidate"};
  bson_t *p = bson_new();
  bson_t arr, stage, match, optype, in, or, clause, proj;
  char idx[16];
  const char *key;
  bool filter_ns = !sub->key_fn;

  for (size_t i = 0; i < sub->n_rules; i++)
    if (sub->rules[i].ns_kind == CDCACHE__NS_ALL)
      filter_ns = false;

  BSON_APPEND_ARRAY_BEGIN(p, "pipeline", &arr);
  BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &stage);
  BSON_APPEND_DOCUMENT_BEGIN(&stage, "$match", &match);
  BSON_APPEND_DOCUMENT_BEGIN(&match, "operationType", &optype);
  BSON_APPEND_ARRAY_BEGIN(&optype, "$in", &in);
  for (uint32_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    bson_uint32_to_string(i, &key, idx, sizeof idx);
    bson_append_utf8(&in, key, -1, ops[i], -1);
  }
  bson_append_array_end(&optype, &in);
  bson_append_document_end(&match, &optype);
  if (filter_ns) {
    uint32_t n = 0;
    BSON_APPEND_ARRAY_BEGIN(&match, "$or", & or);
#define CLAUSE_BEGIN()                                                                             \
  bson_uint32_to_string(n++, &key, idx, sizeof idx);                                               \
  bson_append_document_begin(& or, key, -1, &clause)
#define CLAUSE_END() bson_append_document_end(& or, &clause)
    CLAUSE_BEGIN();
    BSON_APPEND_UTF8(&clause, "operationType", "invalidate");
    CLAUSE_END();
    for (size_t i = 0; i < sub->n_rules; i++) {
      const cdcache__rule_t *r = &sub->rules[i];
      /* events in the namespace, and renames into it */
      for (int side = 0; side < 2; side++) {
        CLAUSE_BEGIN();
        BSON_APPEND_UTF8(&clause, side ? "to.db" : "ns.db", r->db);
        if (r->ns_kind == CDCACHE__NS_EXACT)
          BSON_APPEND_UTF8(&clause, side ? "to.coll" : "ns.coll", r->coll);
        CLAUSE_END();
      }
      if (r->ns_kind == CDCACHE__NS_EXACT) {
        CLAUSE_BEGIN();
        BSON_APPEND_UTF8(&clause, "operationType", "dropDatabase");
        BSON_APPEND_UTF8(&clause, "ns.db", r->db);
        CLAUSE_END();
      }
    }
#undef CLAUSE_BEGIN
#undef CLAUSE_END
    bson_append_array_end(&match, & or);
  }
  bson_append_document_end(&stage, &match);
  bson_append_document_end(&arr, &stage);

  BSON_APPEND_DOCUMENT_BEGIN(&arr, "1", &stage);
  BSON_APPEND_DOCUMENT_BEGIN(&stage, "$project", &proj);
  /* _id (the resume token) stays: inclusion projections keep it. */
  BSON_APPEND_INT32(&proj, "operationType", 1);
  BSON_APPEND_INT32(&proj, "ns", 1);
  BSON_APPEND_INT32(&proj, "to", 1);
  BSON_APPEND_INT32(&proj, "documentKey", 1);
  BSON_APPEND_INT32(&proj, "clusterTime", 1);
  BSON_APPEND_INT32(&proj, "wallTime", 1);
  if (sub->key_fn && sub->full_doc != CDCACHE_CDC_FULLDOC_NONE)
    BSON_APPEND_INT32(&proj, "fullDocument", 1);
  bson_append_document_end(&stage, &proj);
  bson_append_document_end(&arr, &stage);
  bson_append_array_end(p, &arr);
  return p;
}

static bson_t *pipeline_of(cdcache_cdc_t *sub)
{
  return sub->pipeline;
}

void cdcache__cdc_destroy(cdcache_cdc_t *sub)
{
  const cdcache_t *cache;
  if (!sub)
    return;
  cache = sub->cache;
  if (sub->stream)
    mongoc_change_stream_destroy(sub->stream);
  if (sub->client)
    mongoc_client_destroy(sub->client);
  if (sub->uri)
    mongoc_uri_destroy(sub->uri);
  if (sub->token)
    bson_destroy(sub->token);
  if (sub->poison_token)
    bson_destroy(sub->poison_token);
  if (pipeline_of(sub))
    bson_destroy(pipeline_of(sub));
  for (size_t i = 0; i < sub->n_rules; i++)
    cdcache__rule_free(cache, &sub->rules[i]);
  if (sub->rules)
    cdcache__free(cache, sub->rules, sub->n_rules * sizeof *sub->rules);
  if (sub->keybuf)
    cdcache__free(cache, sub->keybuf, sub->keybuf_cap);
  free_str(cache, sub->uri_str);
  free_str(cache, sub->db);
  free_str(cache, sub->coll);
  if (sub->stop_fd >= 0)
    close(sub->stop_fd);
  if (sub->done_fd >= 0)
    close(sub->done_fd);
  cdcache__stats_destroy(&sub->stats);
  cdcache__free(cache, sub, sizeof *sub);
}

int cdcache__cdc_create(cdcache_t *cache, const cdcache_cdc_config_t *cfg, cdcache_cdc_t **out,
                        char *err, size_t errcap)
{
  cdcache_cdc_config_t c;
  cdcache_cdc_t *sub;
  bson_error_t berr;
  int rc;

  if (err && errcap)
    err[0] = '\0';
  if (!cache || !cfg || !out)
    CFG_ERR("NULL argument");
  *out = NULL;
  if (cfg->struct_size < offsetof(cdcache_cdc_config_t, max_stale_ms) ||
      cfg->struct_size > sizeof c)
    CFG_ERR("struct_size %zu unknown to this library", cfg->struct_size);
  cdcache_cdc_config_init(&c);
  memcpy(&c, cfg, cfg->struct_size);
  if ((rc = check_config(&c, err, errcap)) != 0)
    return rc;

  mongoc_init(); /* idempotent; cdcache never calls mongoc_cleanup */

  sub = cdcache__alloc(cache, sizeof *sub);
  if (!sub)
    return CDCACHE_ENOMEM;
  memset(sub, 0, sizeof *sub);
  sub->cache = cache;
  sub->stop_fd = -1;
  sub->done_fd = -1;
  if (cdcache__stats_init(&sub->stats) != 0) {
    cdcache__free(cache, sub, sizeof *sub);
    return CDCACHE_ENOMEM;
  }
  atomic_init(&sub->stopping, false);
  sub->key_fn = c.key_fn;
  sub->key_ctx = c.key_ctx;
  sub->full_doc = c.key_fn_full_document;
  sub->max_stale_ms = c.max_stale_ms;
  sub->batch_size = c.batch_size;
  sub->max_await_ms = c.max_await_ms;
  sub->socket_timeout_ms = c.socket_timeout_ms;
  sub->connect_timeout_ms = c.connect_timeout_ms;
  sub->backoff_initial_ms = c.backoff_initial_ms;
  sub->backoff_max_ms = c.backoff_max_ms;
  sub->poison_errors = c.poison_errors ? c.poison_errors : 5;
  sub->log = c.log;
  sub->log_ctx = c.log_ctx;
  sub->route_mongoc_log = c.route_mongoc_log;
  sub->mongoc_log_prev = c.mongoc_log_prev;
  sub->mongoc_log_prev_ctx = c.mongoc_log_prev_ctx;
  sub->on_evict = c.on_evict;
  sub->on_evict_ctx = c.on_evict_ctx;
  sub->max_key_len = 65535; /* the largest any cache allows */
  sub->epoch_flush_pending = true;
  sub->pending_reason = CDCACHE_CDC_FLUSH_ESTABLISHED;
  cdcache__bound_init(&sub->bound, c.batch_size,
                      c.key_fn && c.key_fn_full_document != CDCACHE_CDC_FULLDOC_NONE);
  sub->rng = (uint64_t)(uintptr_t)sub ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;

  rc = CDCACHE_ENOMEM;
  sub->uri_str = dup_str(cache, c.uri);
  sub->db = dup_str(cache, c.db);
  sub->coll = dup_str(cache, c.coll);
  sub->keybuf_cap = 65536;
  sub->keybuf = cdcache__alloc(cache, sub->keybuf_cap);
  if (!sub->keybuf)
    sub->keybuf_cap = 0;
  if (!sub->uri_str || (c.db && !sub->db) || (c.coll && !sub->coll) || !sub->keybuf)
    goto fail;
  if (c.n_rules) {
    sub->rules = cdcache__alloc(cache, c.n_rules * sizeof *sub->rules);
    if (!sub->rules)
      goto fail;
    memset(sub->rules, 0, c.n_rules * sizeof *sub->rules);
    sub->n_rules = c.n_rules;
    for (size_t i = 0; i < c.n_rules; i++) {
      char rerr[200];
      rc = cdcache__rule_build(cache, &c.rules[i], &sub->rules[i], rerr, sizeof rerr);
      if (rc == 0)
        rc = check_rule_scope(&sub->rules[i], c.db, c.coll, i, rerr, sizeof rerr);
      if (rc != 0) {
        if (err && errcap)
          (void)snprintf(err, errcap, "rule %zu: %s", i, rerr);
        goto fail;
      }
    }
  }
  sub->uri = mongoc_uri_new_with_error(c.uri, &berr);
  if (!sub->uri) {
    if (err && errcap)
      (void)snprintf(err, errcap, "bad uri: %s", berr.message);
    rc = CDCACHE_EINVAL;
    goto fail;
  }
  mongoc_uri_set_option_as_int32(sub->uri, MONGOC_URI_SOCKETTIMEOUTMS,
                                 (int32_t)c.socket_timeout_ms);
  mongoc_uri_set_option_as_int32(sub->uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                 (int32_t)c.connect_timeout_ms);
  if (!mongoc_uri_get_appname(sub->uri))
    mongoc_uri_set_appname(sub->uri, "cdcache-cdc");
  sub->pipeline = build_pipeline(sub);
  sub->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  sub->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sub->stop_fd < 0 || sub->done_fd < 0) {
    rc = CDCACHE_ENOMEM;
    goto fail;
  }
  *out = sub;
  return 0;
fail:
  cdcache__cdc_destroy(sub);
  return rc;
}

/* --------------------------------------------------------------- APM */

/*
 * An aggregate started inside next(): libmongoc resuming by itself.
 * Counted, logged at most once per CDCACHE__RESUME_LOG_MS, and past
 * CDCACHE_CDC_RESUME_LOOP_MAX without an answered getMore in between,
 * the client's I/O is made to fail (netstream), so that next() returns
 * and the loop backs off like any other failure.  CDC thread (APM).
 */
static void note_hidden_resume(cdcache_cdc_t *sub)
{
  uint64_t now = cdcache__now_ms(sub->cache);
  cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, resumes), 1);
  sub->next_resumes++;
  sub->resumes_held++;
  if (sub->resume_log_ms == 0 || now - sub->resume_log_ms >= CDCACHE__RESUME_LOG_MS ||
      now < sub->resume_log_ms) {
    cdcache__cdc_log(sub, CDCACHE_LOG_WARNING,
                     "cdc: libmongoc resumed the change stream (%llu resumes since the last "
                     "such line)",
                     (unsigned long long)sub->resumes_held);
    sub->resume_log_ms = now;
    sub->resumes_held = 0;
  }
  if (sub->next_resumes > CDCACHE_CDC_RESUME_LOOP_MAX)
    cdcache__net_abort_io = true;
}

static void apm_started(const mongoc_apm_command_started_t *e)
{
  cdcache_cdc_t *sub = mongoc_apm_command_started_get_context(e);
  const char *name = mongoc_apm_command_started_get_command_name(e);
  if (strcmp(name, "aggregate") == 0 || strcmp(name, "getMore") == 0) {
    sub->apm_request_id = mongoc_apm_command_started_get_request_id(e);
    sub->apm_start_ms = cdcache__now_ms(sub->cache);
  }
  if (sub->in_next && strcmp(name, "aggregate") == 0)
    note_hidden_resume(sub);
}

static uint32_t batch_count(const bson_t *reply)
{
  bson_iter_t it, child;
  uint32_t n = 0;
  if (!bson_iter_init(&it, reply))
    return 0;
  if (!bson_iter_find_descendant(&it, "cursor.firstBatch", &child)) {
    if (!bson_iter_init(&it, reply) || !bson_iter_find_descendant(&it, "cursor.nextBatch", &child))
      return 0;
  }
  if (!BSON_ITER_HOLDS_ARRAY(&child) || !bson_iter_recurse(&child, &it))
    return 0;
  while (bson_iter_next(&it))
    n++;
  return n;
}

/* A Timestamp field as (t << 32) | i; 0 when absent. */
static uint64_t timestamp_of(const bson_t *doc, const char *key)
{
  bson_iter_t it;
  uint32_t t = 0, i = 0;
  if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_TIMESTAMP(&it))
    return 0;
  bson_iter_timestamp(&it, &t, &i);
  return ((uint64_t)t << 32) | i;
}

/* $clusterTime (the newest write the server knows) against operationTime
 * (the majority commit point it read at): their gap, in whole seconds. */
static void note_majority_gap(cdcache_cdc_t *sub, const bson_t *reply, uint64_t op_time)
{
  bson_iter_t it;
  uint32_t t = 0, i = 0;
  if (op_time == 0 || !bson_iter_init(&it, reply) ||
      !bson_iter_find_descendant(&it, "$clusterTime.clusterTime", &it) ||
      !BSON_ITER_HOLDS_TIMESTAMP(&it))
    return;
  bson_iter_timestamp(&it, &t, &i);
  uint32_t op_secs = (uint32_t)(op_time >> 32);
  cdcache__stats_majority_gap(&sub->stats, t > op_secs ? (uint64_t)(t - op_secs) * 1000u : 0);
}

/* Publishes the bound: fresh_until = vouched + max_stale_ms.  Not while a
 * reopen from now waits for its flush (the cache stays failed closed). */
static void publish(cdcache_cdc_t *sub)
{
  if (sub->epoch_flush_pending || sub->bound.vouched_ms == 0)
    return;
  if (sub->max_stale_ms)
    cdcache__set_fresh_until(sub->cache, sub->bound.vouched_ms + sub->max_stale_ms);
}

static void apm_succeeded(const mongoc_apm_command_succeeded_t *e)
{
  cdcache_cdc_t *sub = mongoc_apm_command_succeeded_get_context(e);
  const char *name = mongoc_apm_command_succeeded_get_command_name(e);
  bool getmore = strcmp(name, "getMore") == 0;
  if ((getmore || strcmp(name, "aggregate") == 0) &&
      mongoc_apm_command_succeeded_get_request_id(e) == sub->apm_request_id) {
    const bson_t *reply = mongoc_apm_command_succeeded_get_reply(e);
    cdcache__reply_t r;
    r.stamp_ms = sub->apm_start_ms;
    r.op_time = timestamp_of(reply, "operationTime");
    note_majority_gap(sub, reply, r.op_time);
    r.events = batch_count(reply);
    r.bytes = reply->len;
    r.is_getmore = getmore;
    cdcache__stats_answered(&sub->stats, r.stamp_ms);
    if (getmore) {
      sub->progress = true;
      sub->next_resumes = 0;
    } else
      sub->agg_op_time = r.op_time;
    if (cdcache__bound_answered(&sub->bound, &r))
      publish(sub);
  }
}

/* ----------------------------------------------------- thread helpers */

static bool is_stopping(cdcache_cdc_t *sub)
{
  return atomic_load_explicit(&sub->stopping, memory_order_acquire);
}

/* Sleeps ms or until stop.  Returns false when stopping. */
static bool nap(cdcache_cdc_t *sub, uint64_t ms)
{
  struct pollfd p = {sub->stop_fd, POLLIN, 0};
  int64_t deadline;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + (int64_t)ms;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t left = deadline - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (left <= 0)
      return !is_stopping(sub);
    /* slices of 20 ms: stop first only raises the flag (see
     * cdcache_cdc_stop), and a nap must end on it */
    int n = poll(&p, 1, left > 20 ? 20 : (int)left);
    if (n > 0 || is_stopping(sub))
      return false;
    if (n < 0 && errno != EINTR)
      return !is_stopping(sub);
  }
}

static uint64_t next_rand(cdcache_cdc_t *sub)
{
  uint64_t x = sub->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  sub->rng = x;
  return x;
}

/*
 * Exponential backoff with jitter in [base/2, base], base doubling from
 * backoff_initial_ms with every failure since the stream last made
 * progress (a getMore answered without error), capped at backoff_max_ms.
 * Logged once per step: every doubling, then once at the cap.
 */
static void backoff(cdcache_cdc_t *sub)
{
  uint64_t base = sub->backoff_initial_ms;
  for (uint32_t i = 0; i < sub->failures && base < sub->backoff_max_ms; i++)
    base *= 2;
  bool at_cap = base >= sub->backoff_max_ms;
  if (at_cap)
    base = sub->backoff_max_ms;
  uint64_t wait = base / 2 + next_rand(sub) % (base / 2 + 1);
  if (sub->failures < UINT32_MAX)
    sub->failures++;
  cdcache__stats_set_state(&sub->stats, CDCACHE_CDC_BACKING_OFF);
  if (!sub->backoff_cap_logged) {
    cdcache__cdc_log(sub, CDCACHE_LOG_INFO, "cdc: reconnecting in %llu ms (attempt %u%s)",
                     (unsigned long long)wait, sub->failures,
                     at_cap ? "; at backoff_max_ms, further attempts are not logged until the "
                              "stream makes progress"
                            : "");
    sub->backoff_cap_logged = at_cap;
  }
  (void)nap(sub, wait);
}

/* The stream made progress: the backoff starts over. */
static void note_progress(cdcache_cdc_t *sub)
{
  if (!sub->progress)
    return;
  sub->progress = false;
  sub->failures = 0;
  sub->backoff_cap_logged = false;
}

static int make_client(cdcache_cdc_t *sub)
{
  bson_error_t err;
  mongoc_apm_callbacks_t *cbs;
  mongoc_read_prefs_t *primary;
  sub->client = mongoc_client_new_from_uri_with_error(sub->uri, &err);
  if (!sub->client) {
    cdcache__stats_error(&sub->stats, err.message);
    cdcache__cdc_log(sub, CDCACHE_LOG_ERROR, "cdc: cannot create client: %s", err.message);
    return CDCACHE_EMONGO;
  }
  mongoc_client_set_error_api(sub->client, MONGOC_ERROR_API_VERSION_2);
  /* The bound's rule holds for the primary's ordered stream (bound.c):
   * whatever readPreference the URI names, read from the primary. */
  primary = mongoc_read_prefs_new(MONGOC_READ_PRIMARY);
  mongoc_client_set_read_prefs(sub->client, primary);
  mongoc_read_prefs_destroy(primary);
  /* plain TCP, Unix sockets and TLS alike (netstream.c wraps TLS) */
  mongoc_client_set_stream_initiator(sub->client, cdcache__net_initiator, sub);
  cbs = mongoc_apm_callbacks_new();
  mongoc_apm_set_command_started_cb(cbs, apm_started);
  mongoc_apm_set_command_succeeded_cb(cbs, apm_succeeded);
  mongoc_client_set_apm_callbacks(sub->client, cbs, sub);
  mongoc_apm_callbacks_destroy(cbs);
  return 0;
}

static void drop_stream(cdcache_cdc_t *sub)
{
  if (sub->stream) {
    mongoc_change_stream_destroy(sub->stream);
    sub->stream = NULL;
  }
}

static void drop_client(cdcache_cdc_t *sub)
{
  drop_stream(sub);
  if (sub->client) {
    mongoc_client_destroy(sub->client);
    sub->client = NULL;
  }
}

static void open_stream(cdcache_cdc_t *sub)
{
  bson_t opts = BSON_INITIALIZER;
  if (sub->batch_size)
    BSON_APPEND_INT32(&opts, "batchSize", (int32_t)sub->batch_size);
  BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", (int64_t)sub->max_await_ms);
  if (sub->key_fn && sub->full_doc == CDCACHE_CDC_FULLDOC_UPDATE_LOOKUP)
    BSON_APPEND_UTF8(&opts, "fullDocument", "updateLookup");
  if (sub->token)
    BSON_APPEND_DOCUMENT(&opts, sub->token_start_after ? "startAfter" : "resumeAfter", sub->token);
  sub->agg_op_time = 0;
  if (sub->coll) {
    mongoc_collection_t *c = mongoc_client_get_collection(sub->client, sub->db, sub->coll);
    sub->stream = mongoc_collection_watch(c, pipeline_of(sub), &opts);
    mongoc_collection_destroy(c);
  } else if (sub->db) {
    mongoc_database_t *d = mongoc_client_get_database(sub->client, sub->db);
    sub->stream = mongoc_database_watch(d, pipeline_of(sub), &opts);
    mongoc_database_destroy(d);
  } else {
    sub->stream = mongoc_client_watch(sub->client, pipeline_of(sub), &opts);
  }
  bson_destroy(&opts);
}

/* Keeps the stream's latest resume token (it moves on empty batches too,
 * to the postBatchResumeToken). */
static void save_token(cdcache_cdc_t *sub)
{
  const bson_t *t = mongoc_change_stream_get_resume_token(sub->stream);
  if (!t || bson_empty(t))
    return;
  if (sub->token && bson_equal(sub->token, t))
    return;
  if (sub->token)
    bson_destroy(sub->token);
  sub->token = bson_copy(t);
  sub->token_start_after = false;
  cdcache__stats_token(&sub->stats, sub->token);
}

/* Gives the stream up: flush now, fail closed, reopen from now. */
static void restart_from_now(cdcache_cdc_t *sub, int reason, const char *why)
{
  (void)cdcache__cdc_flush(sub, reason, why);
  if (sub->token) {
    bson_destroy(sub->token);
    sub->token = NULL;
  }
  sub->token_start_after = false;
  cdcache__stats_token(&sub->stats, NULL);
  cdcache__bound_reset(&sub->bound);
  if (sub->max_stale_ms)
    cdcache__set_fresh_until(sub->cache, 0);
  sub->epoch_flush_pending = true;
  sub->pending_reason = CDCACHE_CDC_FLUSH_ESTABLISHED;
}

/*
 * What an error means, after the change-streams specification: resumable
 * errors (no server reply: network, timeout, server selection; the label
 * ResumableChangeStreamError; CursorNotFound; an ok:1 reply) never count
 * against the token; 286/136 say the history is gone, 260/280 that the
 * server refuses the token; anything else is a non-resumable error, which
 * only repeated poison_errors times at one token gives the token up.
 */
enum { ERR_RESUMABLE, ERR_HISTORY_LOST, ERR_TOKEN_REJECTED, ERR_OTHER };

static int classify(const bson_error_t *e, const bson_t *reply)
{
  bson_iter_t it;
  if (!reply || bson_empty(reply))
    return ERR_RESUMABLE;
  if (mongoc_error_has_label(reply, "ResumableChangeStreamError"))
    return ERR_RESUMABLE;
  if (bson_iter_init_find(&it, reply, "ok") && BSON_ITER_HOLDS_NUMBER(&it) &&
      bson_iter_as_double(&it) == 1.0)
    return ERR_RESUMABLE;
  switch (e->code) {
  case 43: /* CursorNotFound */
    return ERR_RESUMABLE;
  case 286: /* ChangeStreamHistoryLost */
  case 136: /* CappedPositionLost */
    return ERR_HISTORY_LOST;
  case 260: /* InvalidResumeToken */
  case 280: /* ChangeStreamFatalError */
    return ERR_TOKEN_REJECTED;
  default:
    return ERR_OTHER;
  }
}

/* Counts a non-resumable error; true when it is the poison_errors-th
 * time in a row with this code at this token. */
static bool note_poison(cdcache_cdc_t *sub, uint32_t code)
{
  const bson_t *t = sub->token;
  bool same = sub->poison_count > 0 && sub->poison_code == code &&
              (t ? sub->poison_token && bson_equal(t, sub->poison_token) : !sub->poison_token);
  if (!same) {
    if (sub->poison_token)
      bson_destroy(sub->poison_token);
    sub->poison_token = t ? bson_copy(t) : NULL;
    sub->poison_code = code;
    sub->poison_count = 0;
  }
  if (++sub->poison_count < sub->poison_errors)
    return false;
  sub->poison_count = 0;
  return true;
}

/* The stream (opening it, or a next()) failed: decide, then back off. */
static void on_failure(cdcache_cdc_t *sub, const char *what, const bson_error_t *err,
                       const bson_t *reply)
{
  char msg[700];
  int kind = classify(err, reply);
  bool client_side = !reply || bson_empty(reply);
  int n = snprintf(msg, sizeof msg, "%s: %s (domain %u code %u)", what, err->message, err->domain,
                   err->code);
  /* libmongoc sees only a failed stream when cdcache could not connect
   * (netstream hands it a dead stream): say why */
  if (sub->connect_why[0] && n > 0 && (size_t)n < sizeof msg)
    (void)snprintf(msg + n, sizeof msg - (size_t)n, "; connecting: %s", sub->connect_why);
  cdcache__stats_error(&sub->stats, msg);
  drop_stream(sub);
  cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, reconnects), 1);
  if ((kind == ERR_HISTORY_LOST || kind == ERR_TOKEN_REJECTED) && sub->token) {
    restart_from_now(sub,
                     kind == ERR_HISTORY_LOST ? CDCACHE_CDC_FLUSH_HISTORY_LOST
                                              : CDCACHE_CDC_FLUSH_TOKEN_REJECTED,
                     msg);
    return; /* lossy already: reopen at once */
  }
  if (kind != ERR_RESUMABLE && note_poison(sub, err->code)) {
    cdcache__cdc_log(sub, CDCACHE_LOG_ERROR,
                     "cdc: %s, %u times in a row at one resume token: giving the token up", msg,
                     sub->poison_errors);
    restart_from_now(sub, CDCACHE_CDC_FLUSH_POISON, msg);
  } else {
    cdcache__cdc_log(sub, CDCACHE_LOG_WARNING, "cdc: %s; %s", msg,
                     kind == ERR_RESUMABLE ? "resumable, reopening after the last token"
                                           : "reopening after the last token");
  }
  /* A fresh client after a client-side error: new topology, no cooldown. */
  if (client_side)
    drop_client(sub);
  backoff(sub);
}

/* The cluster time of a change event (0 if absent). */
static uint64_t event_time(const bson_t *doc)
{
  return timestamp_of(doc, "clusterTime");
}

/* ------------------------------------------------------------- thread */

static void *cdc_main(void *arg)
{
  cdcache_cdc_t *sub = arg;
  cdcache__logroute_thread(sub);

  while (!is_stopping(sub)) {
    bson_error_t err;
    const bson_t *reply = NULL;

    if (!sub->client && make_client(sub) != 0) {
      backoff(sub);
      continue;
    }
    if (!sub->token && !sub->epoch_flush_pending) {
      /* Nothing to resume from (no event, no postBatchResumeToken yet). */
      restart_from_now(sub, CDCACHE_CDC_FLUSH_HISTORY_LOST, "no resume token to reopen from");
    }
    cdcache__stats_set_state(&sub->stats, CDCACHE_CDC_CONNECTING);
    bool with_token = sub->token != NULL;
    open_stream(sub);
    if (mongoc_change_stream_error_document(sub->stream, &err, &reply)) {
      on_failure(sub, "opening the change stream", &err, reply);
      continue;
    }

    /* Established. */
    if (sub->epoch_flush_pending) {
      /* Fills that begin after the flush must read with afterClusterTime
       * at least the stream's start. */
      cdcache__cdc_advance_cluster_time(sub, sub->agg_op_time);
      uint64_t flush_start = cdcache__now_ms(sub->cache);
      sub->epoch_flush_pending = false;
      if (cdcache__cdc_flush(sub, sub->pending_reason, "change stream established from now") == 0 &&
          cdcache__bound_flushed(&sub->bound, flush_start))
        publish(sub);
    }
    cdcache__stats_set_state(&sub->stats, CDCACHE_CDC_STREAMING);
    cdcache__cdc_log(sub, CDCACHE_LOG_INFO, "cdc: change stream open%s",
                     with_token ? " (resumed)" : "");
    save_token(sub);

    while (!is_stopping(sub)) {
      const bson_t *doc = NULL;
      sub->in_next = true;
      sub->next_resumes = 0;
      bool got = mongoc_change_stream_next(sub->stream, &doc);
      sub->in_next = false;
      if (cdcache__net_abort_io) {
        /* a loop of resumes without progress was cut (note_hidden_resume) */
        cdcache__net_abort_io = false;
        bson_error_t loop_err;
        bson_set_error(&loop_err, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET,
                       "libmongoc resumed the stream %u times inside one next() without an "
                       "answered getMore",
                       sub->next_resumes);
        if (is_stopping(sub))
          break;
        on_failure(sub, "resume loop without progress", &loop_err, NULL);
        break;
      }
      if (got) {
        int r = cdcache__cdc_apply(sub, bson_get_data(doc), doc->len);
        if (cdcache__bound_applied(&sub->bound, event_time(doc)))
          publish(sub);
        save_token(sub);
        note_progress(sub);
        if (r == CDCACHE__APPLY_INVALIDATE) {
          /* The cached token is now the invalidate's _id. */
          sub->token_start_after = sub->token != NULL;
          drop_stream(sub);
          cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, reconnects), 1);
          break;
        }
        continue;
      }
      if (mongoc_change_stream_error_document(sub->stream, &err, &reply)) {
        if (is_stopping(sub))
          break;
        on_failure(sub, "change stream failed", &err, reply);
        break;
      }
      /* An empty batch: the token moved to postBatchResumeToken. */
      save_token(sub);
      note_progress(sub);
    }
  }
  /* On a stop while the socket still works, this sends killCursors:
   * the server cursor does not linger for its idle timeout. */
  drop_client(sub);
  cdcache__stats_set_state(&sub->stats, CDCACHE_CDC_STOPPED);
  uint64_t one = 1;
  if (write(sub->done_fd, &one, sizeof one) < 0) {
    /* an eventfd write fails only on counter overflow: still readable */
  }
  return NULL;
}

/* --------------------------------------------------------- public API */

static void stop_from_cache(void *sub)
{
  cdcache_cdc_stop(sub);
}

int cdcache_cdc_start(cdcache_t *cache, const cdcache_cdc_config_t *cfg, cdcache_cdc_t **out)
{
  cdcache_cdc_t *sub = NULL;
  char err[256];
  int rc;
  if (!cache || !cfg || !out)
    return CDCACHE_EINVAL;
  *out = NULL;
  if (cdcache__handle_forked(cache))
    return CDCACHE_EFORKED;
  rc = cdcache__cdc_create(cache, cfg, &sub, err, sizeof err);
  if (rc != 0) {
    cdcache__log(cache, CDCACHE_LOG_ERROR, "cdc: cannot start: %s",
                 err[0] ? err : cdcache_strerror(rc));
    return rc;
  }
  rc = cdcache__attach(cache, sub, stop_from_cache);
  if (rc != 0) {
    cdcache__cdc_log(sub, CDCACHE_LOG_ERROR, "cdc: the cache already has a subscription");
    cdcache__cdc_destroy(sub);
    return rc;
  }
  /* Failed closed until the stream is established.  A failing start
   * changes nothing: the bound the cache had is put back. */
  uint64_t fresh_before = cdcache__fresh_until(cache);
  cdcache__set_fresh_until(cache, sub->max_stale_ms ? 0 : CDCACHE__FRESH_FOREVER);
  if (sub->route_mongoc_log)
    cdcache__logroute_on(sub);
  int trc = pthread_create(&sub->thread, NULL, cdc_main, sub);
  if (trc != 0) {
    if (sub->route_mongoc_log)
      cdcache__logroute_off(sub);
    cdcache__set_fresh_until(cache, fresh_before);
    cdcache__cdc_log(sub, CDCACHE_LOG_ERROR, "cdc: cannot start the subscription's thread: %s",
                     strerror(trc));
    cdcache__detach(cache, sub);
    cdcache__cdc_destroy(sub);
    return CDCACHE_ENOMEM;
  }
  sub->thread_started = true;
  *out = sub;
  return 0;
}

int cdcache_cdc_stop(cdcache_cdc_t *sub)
{
  uint64_t one = 1;
  if (!sub)
    return 0;
  /* A subscription from before a fork is the parent's: its thread does not
   * exist here, and its cache's mutexes may have been held by a parent
   * thread at the fork.  Nothing is touched; its memory stays as copied. */
  if (cdcache__handle_forked(sub->cache))
    return CDCACHE_EFORKED;
  atomic_store_explicit(&sub->stopping, true, memory_order_release);
  /*
   * First the flag alone: a thread waiting on a healthy server sees it
   * when its getMore returns (within max_await_ms), leaves its loop and
   * destroys its stream, which sends killCursors on the live socket.
   * Only past that grace (capped so that stop stays within about a
   * second) are the sockets woken, which fails every wait at once.
   */
  if (sub->thread_started) {
    uint64_t grace = (uint64_t)sub->max_await_ms + CDCACHE__STOP_GRACE_EXTRA_MS;
    struct pollfd p = {sub->done_fd, POLLIN, 0};
    if (grace > CDCACHE__STOP_GRACE_MAX_MS)
      grace = CDCACHE__STOP_GRACE_MAX_MS;
    while (poll(&p, 1, (int)grace) < 0 && errno == EINTR) {
    }
  }
  if (write(sub->stop_fd, &one, sizeof one) < 0) {
    /* an eventfd write fails only on counter overflow: still readable */
  }
  if (sub->thread_started)
    pthread_join(sub->thread, NULL);
  sub->thread_started = false;
  if (sub->route_mongoc_log)
    cdcache__logroute_off(sub);
  /* Nothing keeps the cache fresh any more: fail closed if it was bounded. */
  if (sub->max_stale_ms)
    cdcache__set_fresh_until(sub->cache, 0);
  cdcache__detach(sub->cache, sub);
  cdcache__cdc_destroy(sub);
  return 0;
}

uint64_t cdcache_cdc_flush_count(const cdcache_cdc_stats_t *st, int reason)
{
  if (!st || reason < 0 || reason >= CDCACHE_CDC_FLUSH_REASONS)
    return 0;
  if (reason < CDCACHE_CDC_FLUSH_ARRAY)
    return st->struct_size >= offsetof(cdcache_cdc_stats_t, flushes) + (size_t)(reason + 1) * 8u
               ? st->flushes[reason]
               : 0;
  /* CDCACHE_CDC_FLUSH_POISON */
  return st->struct_size >= offsetof(cdcache_cdc_stats_t, flushes_poison) + sizeof(uint64_t)
             ? st->flushes_poison
             : 0;
}

int cdcache_cdc_stats(cdcache_cdc_t *sub, cdcache_cdc_stats_t *st)
{
  if (!sub || !st || st->struct_size < offsetof(cdcache_cdc_stats_t, events))
    return CDCACHE_EINVAL;
  if (cdcache__handle_forked(sub->cache))
    return CDCACHE_EFORKED;
  cdcache__stats_snapshot(&sub->stats, st, cdcache__now_ms(sub->cache),
                          cdcache__fresh_until(sub->cache));
  return 0;
}
