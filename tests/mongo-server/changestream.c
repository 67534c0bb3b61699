/*
 * Change streams: the aggregate command with a leading $changeStream stage
 * at collection, database and cluster scope, getMore with awaitData-style
 * waiting up to maxTimeMS, killCursors, and the per-stream invalidate rules
 * (drop/rename of the watched collection, dropDatabase of the watched
 * database, or the invalidateStreams fault). Cursors are server-global, as
 * on a real server, and are reaped after ten idle minutes.
 */
#include "mongo_server.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SCOPE_COLL, SCOPE_DB, SCOPE_CLUSTER } scope_t;

typedef struct ms_cursor {
  struct ms_cursor *next;
  int64_t id;
  scope_t scope;
  char *db;
  char *coll;
  char *ns;       /* cursor.ns reported to the client. */
  bson_t *stages; /* Pipeline stages after $changeStream (array); a pointer, as bson_t needs
                     128-byte alignment. */
  bool update_lookup;
  uint64_t pos; /* Last oplog sequence number consumed. */
  bool pending_invalidate;
  bool in_use;
  bool killed;
  int64_t last_used_us;
} ms_cursor_t;

_Thread_local bool ms_reply_was_cursor;
_Thread_local bool ms_reply_was_cut;

#define CURSOR_IDLE_US (600LL * 1000000)
#define DEFAULT_FIRST_BATCH 101
#define DEFAULT_AWAIT_MS 1000

static ms_cursor_t **cursor_list(void)
{
  return (ms_cursor_t **)&g_ms.cursors;
}

static void cursor_free(ms_cursor_t *c)
{
  bson_free(c->db);
  bson_free(c->coll);
  bson_free(c->ns);
  bson_destroy(c->stages);
  bson_free(c);
}

static void cursor_unlink(ms_cursor_t *c)
{
  ms_cursor_t **pp = cursor_list();
  while (*pp && *pp != c) {
    pp = &(*pp)->next;
  }
  if (*pp) {
    *pp = c->next;
  }
}

static ms_cursor_t *cursor_find(int64_t id)
{
  for (ms_cursor_t *c = *cursor_list(); c; c = c->next) {
    if (c->id == id && !c->killed) {
      return c;
    }
  }
  return NULL;
}

static void reap_idle(void)
{
  int64_t now = ms_now_mono_us();
  ms_cursor_t **pp = cursor_list();
  while (*pp) {
    ms_cursor_t *c = *pp;
    if (!c->in_use && (c->killed || now - c->last_used_us > CURSOR_IDLE_US)) {
      *pp = c->next;
      cursor_free(c);
    } else {
      pp = &c->next;
    }
  }
}

void ms_cursors_invalidate_all(void)
{
  for (ms_cursor_t *c = *cursor_list(); c; c = c->next) {
    c->pending_invalidate = true;
  }
  pthread_cond_broadcast(&g_ms.cond);
}

void ms_cursors_free_all(void)
{
  ms_cursor_t *c = *cursor_list();
  while (c) {
    ms_cursor_t *next = c->next;
    cursor_free(c);
    c = next;
  }
  g_ms.cursors = NULL;
}

size_t ms_cursors_count(void)
{
  size_t n = 0;
  for (ms_cursor_t *c = *cursor_list(); c; c = c->next) {
    n += !c->killed;
  }
  return n;
}

static bool internal_db(const char *db)
{
  return !strcmp(db, "admin") || !strcmp(db, "config") || !strcmp(db, "local");
}

/* Does the stream see this event, and does it invalidate the stream? */
static bool scope_sees(const ms_cursor_t *c, const ms_oplog_entry_t *e, bool *invalidates,
                       bool *event_hidden)
{
  *invalidates = false;
  *event_hidden = false;
  switch (c->scope) {
  case SCOPE_CLUSTER:
    return !internal_db(e->db);
  case SCOPE_DB:
    if (strcmp(e->db, c->db) != 0) {
      return false;
    }
    *invalidates = e->type == MS_EV_DROPDATABASE;
    return true;
  case SCOPE_COLL:
  default:
    if (strcmp(e->db, c->db) != 0) {
      return false;
    }
    if (e->type == MS_EV_DROPDATABASE) {
      /* The drop of the collection came first if it existed; either way the stream ends. */
      *invalidates = true;
      *event_hidden = true;
      return true;
    }
    if (!e->coll || strcmp(e->coll, c->coll) != 0) {
      return false;
    }
    *invalidates = e->type == MS_EV_DROP || e->type == MS_EV_RENAME;
    return true;
  }
}

/* Runs the user stages on an event; returns false if $match filtered it out. */
static bool apply_stages(const ms_cursor_t *c, const bson_t *ev, bool is_invalidate, bson_t *out)
{
  bson_t cur;
  bson_copy_to(ev, &cur);
  bson_iter_t it;
  bson_iter_init(&it, c->stages);
  while (bson_iter_next(&it)) {
    bson_t stage;
    const uint8_t *data;
    uint32_t len;
    bson_iter_document(&it, &len, &data);
    bson_init_static(&stage, data, len);
    bson_iter_t si;
    bson_iter_init(&si, &stage);
    bson_iter_next(&si);
    const char *name = bson_iter_key(&si);
    bson_t arg;
    bson_iter_document(&si, &len, &data);
    bson_init_static(&arg, data, len);
    if (!strcmp(name, "$match")) {
      if (is_invalidate) {
        continue; /* This server always delivers invalidate events. */
      }
      bson_error_t err;
      if (ms_match(&cur, &arg, &err) != 1) {
        bson_destroy(&cur);
        return false;
      }
    } else if (!strcmp(name, "$project")) {
      bson_t p = BSON_INITIALIZER;
      ms_project(&cur, &arg, &p);
      bson_destroy(&cur);
      bson_steal(&cur, &p);
    }
  }
  bson_steal(out, &cur);
  return true;
}

static void make_invalidate(uint64_t seq, uint32_t ts, bson_t *ev)
{
  bson_init(ev);
  ms_token_append(ev, "_id", seq, true);
  BSON_APPEND_UTF8(ev, "operationType", "invalidate");
  BSON_APPEND_TIMESTAMP(ev, "clusterTime", ts, (uint32_t)seq);
  BSON_APPEND_DATE_TIME(ev, "wallTime", (int64_t)ts * 1000);
}

typedef struct {
  bson_t *arr;
  uint32_t n;
  size_t bytes;
} batch_t;

static void batch_add(batch_t *b, const bson_t *doc)
{
  char key[16];
  const char *k;
  bson_uint32_to_string(b->n++, &k, key, sizeof key);
  bson_append_document(b->arr, k, -1, doc);
  b->bytes += doc->len;
}

/* Room a cursor reply keeps for its envelope (cursor, ns, token, times). */
#define REPLY_ENVELOPE_BYTES (16 * 1024)

/*
 * Moves the cursor forward over available events, adding what the stream
 * shows to the batch, as a real server's getMore does: it stops at limit
 * events, or before the event that would take the reply past 16 MiB.
 * Returns false with *code set if history was lost under the cursor. Sets
 * *closed if the stream got invalidated. A batch stopped by a limit while
 * events remain is counted as cut (stat_replies_cut).
 */
static bool fill_batch(ms_cursor_t *c, batch_t *b, uint32_t limit, bool *closed, int32_t *code)
{
  bool full = false;
  *closed = false;
  while (!full && b->n < limit && c->pos < ms_visible_seq()) {
    if (c->pos < g_ms.last_dropped_seq) {
      *code = 286;
      return false;
    }
    ms_oplog_entry_t *e = ms_oplog_get(c->pos + 1);
    if (!e) {
      *code = 286;
      return false;
    }
    uint64_t before = c->pos;
    c->pos = e->seq;
    bool inval, hidden;
    if (!scope_sees(c, e, &inval, &hidden)) {
      continue;
    }
    if (!hidden) {
      const bson_t *src = e->event;
      bson_t lookup;
      bool have_lookup = false;
      if (c->update_lookup && e->type == MS_EV_UPDATE) {
        /* fullDocument: "updateLookup" gives the document as it is now. */
        bson_iter_t it;
        bson_init(&lookup);
        bson_concat(&lookup, e->event);
        ms_coll_t *coll = ms_coll_get(e->db, e->coll, false);
        bson_t *cur = NULL;
        if (coll && bson_iter_init_find(&it, e->event, "documentKey") &&
            BSON_ITER_HOLDS_DOCUMENT(&it)) {
          bson_iter_t id;
          if (bson_iter_recurse(&it, &id) && bson_iter_find(&id, "_id")) {
            cur = ms_coll_find_id(coll, bson_iter_value(&id));
          }
        }
        if (cur) {
          BSON_APPEND_DOCUMENT(&lookup, "fullDocument", cur);
        } else {
          BSON_APPEND_NULL(&lookup, "fullDocument");
        }
        src = &lookup;
        have_lookup = true;
      }
      bson_t out;
      if (apply_stages(c, src, false, &out)) {
        if (b->n > 0 && b->bytes + out.len > MS_MAX_BSON_SIZE - REPLY_ENVELOPE_BYTES) {
          /* It does not fit: the next reply starts with it. */
          c->pos = before;
          full = true;
          inval = false;
        } else {
          batch_add(b, &out);
        }
        bson_destroy(&out);
      }
      if (have_lookup) {
        bson_destroy(&lookup);
      }
    }
    if (inval) {
      bson_t ev, out;
      make_invalidate(e->seq, e->ts, &ev);
      apply_stages(c, &ev, true, &out);
      batch_add(b, &out);
      bson_destroy(&ev);
      bson_destroy(&out);
      *closed = true;
      return true;
    }
  }
  if ((full || b->n >= limit) && c->pos < ms_visible_seq()) {
    g_ms.stat_replies_cut++;
    ms_reply_was_cut = true;
    return true;
  }
  if (c->pending_invalidate && b->n < limit && !full) {
    bson_t ev, out;
    make_invalidate(c->pos, g_ms.last_ts, &ev);
    apply_stages(c, &ev, true, &out);
    batch_add(b, &out);
    bson_destroy(&ev);
    bson_destroy(&out);
    *closed = true;
  }
  return true;
}

uint64_t ms_visible_seq(void)
{
  return g_ms.majority_stalled ? g_ms.majority_seq : g_ms.last_seq;
}

uint32_t ms_visible_ts(void)
{
  return g_ms.majority_stalled ? g_ms.majority_ts : g_ms.last_ts;
}

static void append_operation_time(bson_t *reply)
{
  BSON_APPEND_TIMESTAMP(reply, "operationTime", ms_visible_ts(), (uint32_t)ms_visible_seq());
}

static void history_lost(bson_t *reply)
{
  ms_reply_error(reply, 286,
                 "Resume of change stream was not possible, as the resume point may no longer be "
                 "in the oplog.");
}

static bool get_doc(bson_iter_t *it, bson_t *out)
{
  const uint8_t *data;
  uint32_t len;
  if (!BSON_ITER_HOLDS_DOCUMENT(it)) {
    return false;
  }
  bson_iter_document(it, &len, &data);
  return bson_init_static(out, data, len);
}

/* Position for startAtOperationTime: just before the first event at or after (t, i). */
static bool pos_for_time(uint32_t t, uint32_t i, uint64_t *pos)
{
  uint64_t want = ((uint64_t)t << 32) | i;
  /* An event's clusterTime is (ts, seq); the newest lost event has the largest lost time. */
  if (g_ms.last_dropped_seq > 0 &&
      (((uint64_t)g_ms.last_dropped_ts << 32) | (uint32_t)g_ms.last_dropped_seq) >= want) {
    return false;
  }
  *pos = g_ms.last_seq;
  for (uint64_t s = g_ms.last_dropped_seq + 1; s <= g_ms.last_seq; s++) {
    ms_oplog_entry_t *e = ms_oplog_get(s);
    if (e && (((uint64_t)e->ts << 32) | (uint32_t)e->seq) >= want) {
      *pos = s - 1;
      break;
    }
  }
  return true;
}

static void reply_cursor(bson_t *reply, int64_t id, const char *ns, const char *batch_key,
                         const bson_t *batch, uint64_t pbrt)
{
  bson_t cur;
  ms_reply_was_cursor = true;
  BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cur);
  bson_append_array(&cur, batch_key, -1, batch);
  ms_token_append(&cur, "postBatchResumeToken", pbrt, false);
  BSON_APPEND_INT64(&cur, "id", id);
  BSON_APPEND_UTF8(&cur, "ns", ns);
  bson_append_document_end(reply, &cur);
  append_operation_time(reply);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

void ms_cmd_aggregate(ms_conn_t *conn, const bson_t *cmd, const char *db, bson_t *reply)
{
  (void)conn;
  bson_iter_t it;
  bson_error_t err = {0};
  scope_t scope;
  const char *coll = NULL;

  bson_iter_init_find(&it, cmd, "aggregate");
  if (BSON_ITER_HOLDS_UTF8(&it)) {
    coll = bson_iter_utf8(&it, NULL);
    scope = SCOPE_COLL;
    if (!*coll) {
      ms_reply_error(reply, 73, "Invalid collection name");
      return;
    }
  } else if (BSON_ITER_HOLDS_NUMBER(&it) && bson_iter_as_int64(&it) == 1) {
    scope = SCOPE_DB;
  } else {
    ms_reply_error(reply, 14, "aggregate must be a collection name or 1");
    return;
  }

  bson_t pipeline;
  if (!bson_iter_init_find(&it, cmd, "pipeline") || !BSON_ITER_HOLDS_ARRAY(&it)) {
    ms_reply_error(reply, 14, "'pipeline' option must be specified as an array");
    return;
  }
  {
    const uint8_t *data;
    uint32_t len;
    bson_iter_array(&it, &len, &data);
    bson_init_static(&pipeline, data, len);
  }

  bson_iter_t pi;
  bson_iter_init(&pi, &pipeline);
  bson_t cs;
  if (!bson_iter_next(&pi) || !BSON_ITER_HOLDS_DOCUMENT(&pi)) {
    ms_reply_error(reply, 2, "cdcache test server: only $changeStream aggregations are supported");
    return;
  }
  {
    bson_t stage;
    bson_iter_t si;
    get_doc(&pi, &stage);
    if (!bson_iter_init_find(&si, &stage, "$changeStream") || !get_doc(&si, &cs)) {
      ms_reply_error(reply, 2,
                     "cdcache test server: only $changeStream aggregations are supported");
      return;
    }
  }

  /* Parse the $changeStream options. */
  bool cluster = false;
  const bson_t *resume_tok = NULL;
  bson_t resume_after, start_after;
  bool have_ra = false, have_sa = false, have_sat = false, update_lookup = false;
  uint32_t sat_t = 0, sat_i = 0;
  bson_iter_t ci;
  bson_iter_init(&ci, &cs);
  while (bson_iter_next(&ci)) {
    const char *k = bson_iter_key(&ci);
    if (!strcmp(k, "allChangesForCluster")) {
      cluster = bson_iter_as_bool(&ci);
    } else if (!strcmp(k, "resumeAfter")) {
      if (!get_doc(&ci, &resume_after)) {
        ms_reply_error(reply, 14, "resumeAfter must be a document");
        return;
      }
      have_ra = true;
    } else if (!strcmp(k, "startAfter")) {
      if (!get_doc(&ci, &start_after)) {
        ms_reply_error(reply, 14, "startAfter must be a document");
        return;
      }
      have_sa = true;
    } else if (!strcmp(k, "startAtOperationTime")) {
      if (!BSON_ITER_HOLDS_TIMESTAMP(&ci)) {
        ms_reply_error(reply, 14, "startAtOperationTime must be a timestamp");
        return;
      }
      bson_iter_timestamp(&ci, &sat_t, &sat_i);
      have_sat = true;
    } else if (!strcmp(k, "fullDocument")) {
      const char *v = BSON_ITER_HOLDS_UTF8(&ci) ? bson_iter_utf8(&ci, NULL) : "";
      if (!strcmp(v, "updateLookup") || !strcmp(v, "whenAvailable") || !strcmp(v, "required")) {
        update_lookup = true;
      } else if (strcmp(v, "default") != 0) {
        ms_reply_error(reply, 2, "unsupported fullDocument option");
        return;
      }
    } else if (!strcmp(k, "fullDocumentBeforeChange") || !strcmp(k, "showExpandedEvents")) {
      /* Accepted and ignored: no pre-images or expanded events here. */
    } else {
      ms_reply_error(reply, 40415, "BSON field '$changeStream.%s' is an unknown field.", k);
      return;
    }
  }
  if ((int)have_ra + (int)have_sa + (int)have_sat > 1) {
    ms_reply_error(reply, 40674,
                   "Only one type of resume option is allowed, but multiple were found.");
    return;
  }

  if (cluster) {
    if (scope != SCOPE_DB || strcmp(db, "admin") != 0) {
      ms_reply_error(reply, 73,
                     "A change stream with allChangesForCluster must be opened with aggregate: 1 "
                     "on the admin database");
      return;
    }
    scope = SCOPE_CLUSTER;
  } else if (internal_db(db)) {
    ms_reply_error(reply, 73, "$changeStream may not be opened on the internal %s database", db);
    return;
  }

  /* Validate the stages after $changeStream. */
  bson_t stages = BSON_INITIALIZER;
  uint32_t nstages = 0;
  while (bson_iter_next(&pi)) {
    bson_t stage, arg;
    bson_iter_t si;
    if (!get_doc(&pi, &stage) || !bson_iter_init(&si, &stage) || !bson_iter_next(&si)) {
      bson_destroy(&stages);
      ms_reply_error(reply, 14, "pipeline stages must be documents");
      return;
    }
    const char *name = bson_iter_key(&si);
    bool ok;
    if (!strcmp(name, "$match")) {
      ok = get_doc(&si, &arg) && ms_match_validate(&arg, &err);
    } else if (!strcmp(name, "$project")) {
      ok = get_doc(&si, &arg) && ms_project_validate(&arg, &err);
    } else {
      bson_set_error(&err, 0, 40324,
                     "cdcache test server: unsupported pipeline stage %s after $changeStream",
                     name);
      ok = false;
    }
    if (!ok) {
      bson_destroy(&stages);
      ms_reply_error(reply, err.code ? (int32_t)err.code : 14, "%s",
                     err.code ? err.message : "bad stage");
      return;
    }
    char key[16];
    const char *k;
    bson_uint32_to_string(nstages++, &k, key, sizeof key);
    bson_append_document(&stages, k, -1, &stage);
  }

  uint32_t batch_size = DEFAULT_FIRST_BATCH;
  if (bson_iter_init_find(&it, cmd, "cursor") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    bson_iter_t bi;
    if (bson_iter_recurse(&it, &bi) && bson_iter_find(&bi, "batchSize") &&
        BSON_ITER_HOLDS_NUMBER(&bi)) {
      int64_t bs = bson_iter_as_int64(&bi);
      batch_size = bs < 0 ? 0 : bs > INT32_MAX ? INT32_MAX : (uint32_t)bs;
    }
  }

  pthread_mutex_lock(&g_ms.mu);
  reap_idle();
  uint64_t pos = ms_visible_seq(); /* "now" is the majority commit point */
  if (have_ra || have_sa) {
    resume_tok = have_ra ? &resume_after : &start_after;
    uint64_t seq;
    bool from_inval, epoch_ok;
    if (!ms_token_parse(resume_tok, &seq, &from_inval, &epoch_ok)) {
      pthread_mutex_unlock(&g_ms.mu);
      bson_destroy(&stages);
      ms_reply_error(reply, 260, "cdcache test server: could not parse the resume token");
      return;
    }
    if (!epoch_ok) {
      /* A token of another server instance: its history is gone. */
      pthread_mutex_unlock(&g_ms.mu);
      bson_destroy(&stages);
      history_lost(reply);
      return;
    }
    if (have_ra && from_inval) {
      pthread_mutex_unlock(&g_ms.mu);
      bson_destroy(&stages);
      ms_reply_error(reply, 260,
                     "Attempting to resume a change stream using 'resumeAfter' is not allowed from "
                     "an invalidate "
                     "notification.");
      return;
    }
    if (seq > g_ms.last_seq) {
      pthread_mutex_unlock(&g_ms.mu);
      bson_destroy(&stages);
      ms_reply_error(
          reply, 260,
          "cdcache test server: the resume token is newer than any event of this server");
      return;
    }
    if (seq < g_ms.last_dropped_seq) {
      pthread_mutex_unlock(&g_ms.mu);
      bson_destroy(&stages);
      history_lost(reply);
      return;
    }
    pos = seq;
  } else if (have_sat) {
    if (!pos_for_time(sat_t, sat_i, &pos)) {
      pthread_mutex_unlock(&g_ms.mu);
      bson_destroy(&stages);
      history_lost(reply);
      return;
    }
  }

  ms_cursor_t *c = bson_malloc0(sizeof *c);
  do {
    c->id =
        (int64_t)(((uint64_t)rand() << 31 ^ (uint64_t)rand() << 8 ^ (uint64_t)rand()) & INT64_MAX);
  } while (c->id == 0 || cursor_find(c->id));
  c->scope = scope;
  c->db = bson_strdup(db);
  c->coll = coll ? bson_strdup(coll) : NULL;
  c->ns =
      coll ? bson_strdup_printf("%s.%s", db, coll) : bson_strdup_printf("%s.$cmd.aggregate", db);
  c->stages = bson_copy(&stages);
  bson_destroy(&stages);
  c->update_lookup = update_lookup;
  c->pos = pos;
  c->last_used_us = ms_now_mono_us();

  bson_t arr = BSON_INITIALIZER;
  batch_t b = {&arr, 0, 0};
  bool closed;
  int32_t code = 0;
  if (!fill_batch(c, &b, batch_size, &closed, &code)) {
    pthread_mutex_unlock(&g_ms.mu);
    cursor_free(c);
    bson_destroy(&arr);
    history_lost(reply);
    return;
  }
  int64_t id = closed ? 0 : c->id;
  uint64_t pbrt = c->pos;
  char *ns = bson_strdup(c->ns);
  if (closed) {
    cursor_free(c);
  } else {
    c->next = *cursor_list();
    *cursor_list() = c;
  }
  reply_cursor(reply, id, ns, "firstBatch", &arr, pbrt);
  pthread_mutex_unlock(&g_ms.mu);
  bson_free(ns);
  bson_destroy(&arr);
}

void ms_cmd_get_more(ms_conn_t *conn, const bson_t *cmd, const char *db, bson_t *reply)
{
  (void)conn;
  (void)db;
  bson_iter_t it;
  if (!bson_iter_init_find(&it, cmd, "getMore") ||
      !(BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it))) {
    ms_reply_error(reply, 14, "getMore must be a cursor id");
    return;
  }
  int64_t id = bson_iter_as_int64(&it);
  int64_t max_ms = DEFAULT_AWAIT_MS;
  /* No count limit unless the client asks for one; 16 MiB always. */
  uint32_t batch_size = UINT32_MAX;
  if (bson_iter_init_find(&it, cmd, "maxTimeMS") && BSON_ITER_HOLDS_NUMBER(&it)) {
    max_ms = bson_iter_as_int64(&it);
    if (max_ms < 0) {
      max_ms = 0;
    }
  }
  if (bson_iter_init_find(&it, cmd, "batchSize") && BSON_ITER_HOLDS_NUMBER(&it)) {
    int64_t bs = bson_iter_as_int64(&it);
    if (bs > 0 && bs < UINT32_MAX) {
      batch_size = (uint32_t)bs;
    }
  }

  pthread_mutex_lock(&g_ms.mu);
  ms_cursor_t *c = cursor_find(id);
  if (!c) {
    pthread_mutex_unlock(&g_ms.mu);
    ms_reply_error(reply, 43, "cursor id %" PRId64 " not found", id);
    return;
  }
  if (c->in_use) {
    pthread_mutex_unlock(&g_ms.mu);
    ms_reply_error(reply, 2, "cursor id %" PRId64 " is already in use", id);
    return;
  }
  c->in_use = true;
  int64_t deadline = ms_now_mono_us() + max_ms * 1000;
  bson_t arr = BSON_INITIALIZER;
  batch_t b = {&arr, 0, 0};
  bool closed = false, lost = false;
  for (;;) {
    int32_t code = 0;
    if (!fill_batch(c, &b, batch_size, &closed, &code)) {
      lost = true;
      break;
    }
    if (b.n > 0 || closed || c->killed || g_ms.shutting_down || ms_now_mono_us() >= deadline) {
      break;
    }
    g_ms.stat_getmore_waits++;
    ms_cond_wait_until(deadline);
  }
  c->in_use = false;
  c->last_used_us = ms_now_mono_us();
  if (lost) {
    cursor_unlink(c);
    cursor_free(c);
    pthread_mutex_unlock(&g_ms.mu);
    bson_destroy(&arr);
    history_lost(reply);
    return;
  }
  if (c->killed) {
    cursor_unlink(c);
    cursor_free(c);
    pthread_mutex_unlock(&g_ms.mu);
    bson_destroy(&arr);
    ms_reply_error(reply, 237, "cursor id %" PRId64 " was killed", id);
    return;
  }
  uint64_t pbrt = c->pos;
  reply_cursor(reply, closed ? 0 : id, c->ns, "nextBatch", &arr, pbrt);
  if (closed) {
    cursor_unlink(c);
    cursor_free(c);
  }
  pthread_mutex_unlock(&g_ms.mu);
  bson_destroy(&arr);
}

void ms_cmd_kill_cursors(const bson_t *cmd, const char *db, bson_t *reply)
{
  (void)db;
  bson_iter_t it, ai;
  bson_t killed = BSON_INITIALIZER, notfound = BSON_INITIALIZER;
  uint32_t nk = 0, nn = 0;
  pthread_mutex_lock(&g_ms.mu);
  if (bson_iter_init_find(&it, cmd, "cursors") && BSON_ITER_HOLDS_ARRAY(&it) &&
      bson_iter_recurse(&it, &ai)) {
    while (bson_iter_next(&ai)) {
      if (!BSON_ITER_HOLDS_NUMBER(&ai)) {
        continue;
      }
      int64_t id = bson_iter_as_int64(&ai);
      ms_cursor_t *c = cursor_find(id);
      char key[16];
      const char *k;
      if (c) {
        if (c->in_use) {
          c->killed = true; /* The waiting getMore frees it. */
          pthread_cond_broadcast(&g_ms.cond);
        } else {
          cursor_unlink(c);
          cursor_free(c);
        }
        bson_uint32_to_string(nk++, &k, key, sizeof key);
        bson_append_int64(&killed, k, -1, id);
      } else {
        bson_uint32_to_string(nn++, &k, key, sizeof key);
        bson_append_int64(&notfound, k, -1, id);
      }
    }
  }
  pthread_mutex_unlock(&g_ms.mu);
  bson_t empty = BSON_INITIALIZER;
  BSON_APPEND_ARRAY(reply, "cursorsKilled", &killed);
  BSON_APPEND_ARRAY(reply, "cursorsNotFound", &notfound);
  BSON_APPEND_ARRAY(reply, "cursorsAlive", &empty);
  BSON_APPEND_ARRAY(reply, "cursorsUnknown", &empty);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_destroy(&killed);
  bson_destroy(&notfound);
  bson_destroy(&empty);
}
