/*
 * Command dispatch: the handshake (isMaster/hello), ping, endSessions, the
 * CRUD commands (insert, update with operators or a replacement, delete,
 * find), drop, dropDatabase, renameCollection, and the test-only commands:
 * cdcacheFault / configureFailPoint (fault injection), cdcacheBulk
 * (server-side write bursts) and cdcacheStats. Every write that changes data
 * appends a change event to the oplog.
 */
#include "mongo_server.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---------------------------------------------------------------- errors */

const char *ms_code_name(int32_t code)
{
  switch (code) {
  case 2:
    return "BadValue";
  case 6:
    return "HostUnreachable";
  case 7:
    return "HostNotFound";
  case 9:
    return "FailedToParse";
  case 14:
    return "TypeMismatch";
  case 26:
    return "NamespaceNotFound";
  case 43:
    return "CursorNotFound";
  case 48:
    return "NamespaceExists";
  case 50:
    return "MaxTimeMSExpired";
  case 59:
    return "CommandNotFound";
  case 66:
    return "ImmutableField";
  case 73:
    return "InvalidNamespace";
  case 89:
    return "NetworkTimeout";
  case 91:
    return "ShutdownInProgress";
  case 133:
    return "FailedToSatisfyReadPreference";
  case 136:
    return "CappedPositionLost";
  case 189:
    return "PrimarySteppedDown";
  case 234:
    return "RetryChangeStream";
  case 237:
    return "CursorKilled";
  case 260:
    return "InvalidResumeToken";
  case 262:
    return "ExceededTimeLimit";
  case 280:
    return "ChangeStreamFatalError";
  case 286:
    return "ChangeStreamHistoryLost";
  case 9001:
    return "SocketException";
  case 10107:
    return "NotWritablePrimary";
  case 11000:
    return "DuplicateKey";
  case 11600:
    return "InterruptedAtShutdown";
  case 11601:
    return "Interrupted";
  case 11602:
    return "InterruptedDueToReplStateChange";
  case 13435:
    return "NotPrimaryNoSecondaryOk";
  case 13436:
    return "NotPrimaryOrSecondary";
  case 40324:
    return "Location40324";
  default:
    return "UnknownError";
  }
}

void ms_reply_error(bson_t *reply, int32_t code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = bson_strdupv_printf(fmt, ap);
  va_end(ap);
  bson_reinit(reply);
  BSON_APPEND_DOUBLE(reply, "ok", 0.0);
  BSON_APPEND_UTF8(reply, "errmsg", msg);
  BSON_APPEND_INT32(reply, "code", code);
  BSON_APPEND_UTF8(reply, "codeName", ms_code_name(code));
  bson_free(msg);
}

/* ---------------------------------------------------------------- helpers */

static bool iter_doc(const bson_iter_t *it, bson_t *out)
{
  const uint8_t *data;
  uint32_t len;
  if (BSON_ITER_HOLDS_DOCUMENT(it)) {
    bson_iter_document(it, &len, &data);
  } else if (BSON_ITER_HOLDS_ARRAY(it)) {
    bson_iter_array(it, &len, &data);
  } else {
    return false;
  }
  return bson_init_static(out, data, len);
}

static void arr_key(uint32_t i, char *buf, const char **key)
{
  bson_uint32_to_string(i, key, buf, 16);
}

/* Rebuilds src with the value at a dotted path set (v) or removed (v NULL). */
static void set_path(const bson_t *src, const char *path, const bson_value_t *v, bson_t *dst)
{
  const char *dot = strchr(path, '.');
  size_t seglen = dot ? (size_t)(dot - path) : strlen(path);
  bool found = false;
  bson_iter_t it;
  if (src && bson_iter_init(&it, src)) {
    while (bson_iter_next(&it)) {
      const char *k = bson_iter_key(&it);
      if (found || strlen(k) != seglen || memcmp(k, path, seglen) != 0) {
        bson_append_value(dst, k, -1, bson_iter_value(&it));
        continue;
      }
      found = true;
      if (!dot) {
        if (v) {
          bson_append_value(dst, k, -1, v);
        }
        continue;
      }
      bson_t sub, child;
      if (iter_doc(&it, &sub)) {
        if (BSON_ITER_HOLDS_ARRAY(&it)) {
          bson_append_array_begin(dst, k, -1, &child);
          set_path(&sub, dot + 1, v, &child);
          bson_append_array_end(dst, &child);
        } else {
          bson_append_document_begin(dst, k, -1, &child);
          set_path(&sub, dot + 1, v, &child);
          bson_append_document_end(dst, &child);
        }
      } else if (v) {
        bson_append_document_begin(dst, k, -1, &child);
        set_path(NULL, dot + 1, v, &child);
        bson_append_document_end(dst, &child);
      } else {
        bson_append_value(dst, k, -1, bson_iter_value(&it));
      }
    }
  }
  if (!found && v) {
    if (!dot) {
      bson_append_value(dst, path, (int)seglen, v);
    } else {
      bson_t child;
      bson_append_document_begin(dst, path, (int)seglen, &child);
      set_path(NULL, dot + 1, v, &child);
      bson_append_document_end(dst, &child);
    }
  }
}

static void doc_set_path(bson_t **doc, const char *path, const bson_value_t *v)
{
  bson_t *n = bson_new();
  set_path(*doc, path, v, n);
  bson_destroy(*doc);
  *doc = n;
}

/* Returns a copy of doc with _id first, generating an ObjectId if missing. */
static bson_t *with_id_first(const bson_t *doc, const bson_value_t *force_id)
{
  bson_t *n = bson_new();
  bson_iter_t it;
  if (force_id) {
    BSON_APPEND_VALUE(n, "_id", force_id);
  } else if (bson_iter_init_find(&it, doc, "_id")) {
    BSON_APPEND_VALUE(n, "_id", bson_iter_value(&it));
  } else {
    bson_oid_t oid;
    bson_oid_init(&oid, NULL);
    BSON_APPEND_OID(n, "_id", &oid);
  }
  bson_copy_to_excluding_noinit(doc, n, "_id", NULL);
  return n;
}

static bool get_id(const bson_t *doc, bson_value_t *out)
{
  bson_iter_t it;
  if (!bson_iter_init_find(&it, doc, "_id")) {
    return false;
  }
  bson_value_copy(bson_iter_value(&it), out);
  return true;
}

static bool internal_db_name(const char *db)
{
  return !strcmp(db, "admin") || !strcmp(db, "config") || !strcmp(db, "local");
}

/* ----------------------------------------------------------------- writes */

/* Inserts doc (taking ownership) as a new document: emits insert. */
static void do_insert(ms_coll_t *c, bson_t *doc)
{
  bson_value_t id;
  get_id(doc, &id);
  ms_oplog_append(MS_EV_INSERT, c->db, c->name, &id, doc, NULL, NULL, NULL);
  ms_coll_put(c, doc);
  bson_value_destroy(&id);
}

/* Applies update operators to *doc. Fills updatedFields/removedFields. */
static bool apply_operators(bson_t **doc, const bson_t *u, bool inserting, bson_t *updated,
                            bson_t *removed, uint32_t *nremoved, bson_error_t *err)
{
  bson_iter_t it;
  bson_iter_init(&it, u);
  while (bson_iter_next(&it)) {
    const char *op = bson_iter_key(&it);
    bson_t args;
    if (!iter_doc(&it, &args) || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
      bson_set_error(err, 0, 9, "Modifiers operate on fields but we found type %d instead",
                     bson_iter_type(&it));
      return false;
    }
    bool is_set = !strcmp(op, "$set"), is_unset = !strcmp(op, "$unset"),
         is_inc = !strcmp(op, "$inc");
    bool is_soi = !strcmp(op, "$setOnInsert");
    if (!is_set && !is_unset && !is_inc && !is_soi) {
      bson_set_error(err, 0, 9, "cdcache test server: unsupported update operator %s", op);
      return false;
    }
    if (is_soi && !inserting) {
      continue;
    }
    bson_iter_t ai;
    bson_iter_init(&ai, &args);
    while (bson_iter_next(&ai)) {
      const char *path = bson_iter_key(&ai);
      if (!strcmp(path, "_id") || !strncmp(path, "_id.", 4)) {
        bson_set_error(
            err, 0, 66,
            "Performing an update on the path '_id' would modify the immutable field '_id'");
        return false;
      }
      bson_iter_t cur;
      bool exists = ms_lookup_path(*doc, path, &cur);
      if (is_unset) {
        if (exists) {
          doc_set_path(doc, path, NULL);
          if (removed) {
            char kb[16];
            const char *k;
            arr_key((*nremoved)++, kb, &k);
            bson_append_utf8(removed, k, -1, path, -1);
          }
        }
        continue;
      }
      bson_value_t nv;
      const bson_value_t *arg = bson_iter_value(&ai);
      if (is_inc) {
        if (!BSON_ITER_HOLDS_NUMBER(&ai)) {
          bson_set_error(err, 0, 14, "Cannot increment with non-numeric argument");
          return false;
        }
        if (exists && !BSON_ITER_HOLDS_NUMBER(&cur)) {
          bson_set_error(err, 0, 14, "Cannot apply $inc to a value of non-numeric type");
          return false;
        }
        bson_type_t ta = arg->value_type, tc = exists ? bson_iter_type(&cur) : BSON_TYPE_INT32;
        if (ta == BSON_TYPE_DOUBLE || tc == BSON_TYPE_DOUBLE) {
          nv.value_type = BSON_TYPE_DOUBLE;
          nv.value.v_double = (exists ? bson_iter_as_double(&cur) : 0.0) + bson_iter_as_double(&ai);
        } else {
          int64_t r = (exists ? bson_iter_as_int64(&cur) : 0) + bson_iter_as_int64(&ai);
          if (ta == BSON_TYPE_INT32 && tc == BSON_TYPE_INT32 && r >= INT32_MIN && r <= INT32_MAX) {
            nv.value_type = BSON_TYPE_INT32;
            nv.value.v_int32 = (int32_t)r;
          } else {
            nv.value_type = BSON_TYPE_INT64;
            nv.value.v_int64 = r;
          }
        }
        arg = &nv;
      }
      doc_set_path(doc, path, arg);
      if (updated) {
        bson_append_value(updated, path, -1, arg);
      }
    }
  }
  return true;
}

static bool is_operator_update(const bson_t *u)
{
  bson_iter_t it;
  return bson_iter_init(&it, u) && bson_iter_next(&it) && bson_iter_key(&it)[0] == '$';
}

/* Updates one existing document. Returns 1 if modified, 0 if unchanged, -1 on error. */
static int update_one(ms_coll_t *c, const bson_t *old, const bson_t *u, bson_error_t *err)
{
  bson_value_t id;
  get_id(old, &id);
  int rc;
  if (is_operator_update(u)) {
    bson_t *doc = bson_copy(old);
    bson_t updated = BSON_INITIALIZER, removed = BSON_INITIALIZER;
    uint32_t nremoved = 0;
    if (!apply_operators(&doc, u, false, &updated, &removed, &nremoved, err)) {
      bson_destroy(doc);
      bson_destroy(&updated);
      bson_destroy(&removed);
      bson_value_destroy(&id);
      return -1;
    }
    if (doc->len == old->len && !memcmp(bson_get_data(doc), bson_get_data(old), doc->len)) {
      bson_destroy(doc);
      rc = 0;
    } else {
      bson_t desc = BSON_INITIALIZER, empty = BSON_INITIALIZER;
      BSON_APPEND_DOCUMENT(&desc, "updatedFields", &updated);
      BSON_APPEND_ARRAY(&desc, "removedFields", &removed);
      BSON_APPEND_ARRAY(&desc, "truncatedArrays", &empty);
      ms_oplog_append(MS_EV_UPDATE, c->db, c->name, &id, NULL, &desc, NULL, NULL);
      ms_coll_put(c, doc);
      bson_destroy(&desc);
      bson_destroy(&empty);
      rc = 1;
    }
    bson_destroy(&updated);
    bson_destroy(&removed);
  } else {
    bson_iter_t it;
    if (bson_iter_init_find(&it, u, "_id") && !ms_value_equal(bson_iter_value(&it), &id)) {
      bson_set_error(
          err, 0, 66,
          "After applying the update, the (immutable) field '_id' was found to have been altered");
      bson_value_destroy(&id);
      return -1;
    }
    bson_t *doc = with_id_first(u, &id);
    if (doc->len == old->len && !memcmp(bson_get_data(doc), bson_get_data(old), doc->len)) {
      bson_destroy(doc);
      rc = 0;
    } else {
      ms_oplog_append(MS_EV_REPLACE, c->db, c->name, &id, doc, NULL, NULL, NULL);
      ms_coll_put(c, doc);
      rc = 1;
    }
  }
  bson_value_destroy(&id);
  return rc;
}

/* Collects the _ids of the documents matching q (at most one unless multi). */
static int matching_ids(ms_coll_t *c, const bson_t *q, bool multi, bson_value_t **ids, size_t *n,
                        bson_error_t *err)
{
  *ids = NULL;
  *n = 0;
  if (!c) {
    return 0;
  }
  bson_iter_t it;
  /* Fast path: {_id: <value>} with a plain value. */
  if (bson_iter_init_find(&it, q, "_id") && bson_count_keys(q) == 1 &&
      !BSON_ITER_HOLDS_DOCUMENT(&it) && !BSON_ITER_HOLDS_REGEX(&it)) {
    if (ms_coll_find_id(c, bson_iter_value(&it))) {
      *ids = bson_malloc(sizeof **ids);
      bson_value_copy(bson_iter_value(&it), &(*ids)[0]);
      *n = 1;
    }
    return 0;
  }
  if (!ms_match_validate(q, err)) {
    return -1;
  }
  size_t cap = 0;
  for (size_t b = 0; b < c->nbuckets; b++) {
    for (ms_doc_t *d = c->buckets[b]; d; d = d->next) {
      int r = ms_match(d->doc, q, err);
      if (r < 0) {
        return -1;
      }
      if (!r) {
        continue;
      }
      if (*n == cap) {
        cap = cap ? cap * 2 : 8;
        *ids = bson_realloc(*ids, cap * sizeof **ids);
      }
      get_id(d->doc, &(*ids)[(*n)++]);
      if (!multi) {
        return 0;
      }
    }
  }
  return 0;
}

static void free_ids(bson_value_t *ids, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    bson_value_destroy(&ids[i]);
  }
  bson_free(ids);
}

static void add_write_error(bson_t *errs, uint32_t *nerr, uint32_t index, int32_t code,
                            const char *msg)
{
  char kb[16];
  const char *k;
  bson_t e;
  arr_key((*nerr)++, kb, &k);
  bson_append_document_begin(errs, k, -1, &e);
  BSON_APPEND_INT32(&e, "index", (int32_t)index);
  BSON_APPEND_INT32(&e, "code", code);
  BSON_APPEND_UTF8(&e, "errmsg", msg);
  bson_append_document_end(errs, &e);
}

static bool get_array(const bson_t *cmd, const char *key, bson_t *out)
{
  bson_iter_t it;
  return bson_iter_init_find(&it, cmd, key) && BSON_ITER_HOLDS_ARRAY(&it) && iter_doc(&it, out);
}

static bool ordered_of(const bson_t *cmd)
{
  bson_iter_t it;
  return !(bson_iter_init_find(&it, cmd, "ordered") && !bson_iter_as_bool(&it));
}

static void cmd_insert(const bson_t *cmd, const char *db, const char *coll, bson_t *reply)
{
  bson_t docs;
  if (!get_array(cmd, "documents", &docs)) {
    ms_reply_error(reply, 9, "insert needs a documents array");
    return;
  }
  bool ordered = ordered_of(cmd);
  bson_t errs = BSON_INITIALIZER;
  uint32_t nerr = 0, idx = 0;
  int32_t n = 0;
  bson_iter_t it;
  pthread_mutex_lock(&g_ms.mu);
  ms_coll_t *c = ms_coll_get(db, coll, true);
  bson_iter_init(&it, &docs);
  while (bson_iter_next(&it)) {
    bson_t d;
    uint32_t i = idx++;
    if (!iter_doc(&it, &d) || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
      add_write_error(&errs, &nerr, i, 2, "document must be an object");
    } else {
      bson_t *doc = with_id_first(&d, NULL);
      bson_iter_t id;
      bson_iter_init_find(&id, doc, "_id");
      if (ms_coll_find_id(c, bson_iter_value(&id))) {
        char *js = bson_as_relaxed_extended_json(doc, NULL);
        char *msg = bson_strdup_printf(
            "E11000 duplicate key error collection: %s.%s index: _id_ dup key: %s", db, coll,
            js ? js : "?");
        add_write_error(&errs, &nerr, i, 11000, msg);
        bson_free(msg);
        bson_free(js);
        bson_destroy(doc);
      } else {
        do_insert(c, doc);
        n++;
        continue;
      }
    }
    if (ordered) {
      break;
    }
  }
  pthread_mutex_unlock(&g_ms.mu);
  BSON_APPEND_INT32(reply, "n", n);
  if (nerr) {
    BSON_APPEND_ARRAY(reply, "writeErrors", &errs);
  }
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_destroy(&errs);
}

/* Builds the document an upsert inserts from the query's equality fields. */
static bson_t *upsert_seed(const bson_t *q)
{
  bson_t *doc = bson_new();
  bson_iter_t it;
  bson_iter_init(&it, q);
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (k[0] == '$') {
      continue;
    }
    bson_t sub;
    bson_iter_t si;
    if (BSON_ITER_HOLDS_DOCUMENT(&it) && iter_doc(&it, &sub) && bson_iter_init(&si, &sub) &&
        bson_iter_next(&si) && bson_iter_key(&si)[0] == '$') {
      if (!strcmp(bson_iter_key(&si), "$eq")) {
        doc_set_path(&doc, k, bson_iter_value(&si));
      }
      continue;
    }
    doc_set_path(&doc, k, bson_iter_value(&it));
  }
  return doc;
}

static void cmd_update(const bson_t *cmd, const char *db, const char *coll, bson_t *reply)
{
  bson_t updates;
  if (!get_array(cmd, "updates", &updates)) {
    ms_reply_error(reply, 9, "update needs an updates array");
    return;
  }
  bool ordered = ordered_of(cmd);
  bson_t errs = BSON_INITIALIZER, upserted = BSON_INITIALIZER;
  uint32_t nerr = 0, nup = 0, idx = 0;
  int32_t n = 0, nmod = 0;
  bson_iter_t it;
  pthread_mutex_lock(&g_ms.mu);
  bson_iter_init(&it, &updates);
  while (bson_iter_next(&it)) {
    uint32_t i = idx++;
    bson_t spec, q, u;
    bson_iter_t si;
    bson_error_t err = {0};
    bool multi = false, upsert = false, ok = true;
    if (!iter_doc(&it, &spec) || !bson_iter_init_find(&si, &spec, "q") || !iter_doc(&si, &q) ||
        !bson_iter_init_find(&si, &spec, "u")) {
      bson_set_error(&err, 0, 9, "update statement needs q and u");
      ok = false;
    } else if (!BSON_ITER_HOLDS_DOCUMENT(&si)) {
      bson_set_error(&err, 0, 2, "cdcache test server: pipeline-style updates are not supported");
      ok = false;
    } else if (!iter_doc(&si, &u)) {
      bson_set_error(&err, 0, 9, "bad update document");
      ok = false;
    } else {
      if (bson_iter_init_find(&si, &spec, "multi")) {
        multi = bson_iter_as_bool(&si);
      }
      if (bson_iter_init_find(&si, &spec, "upsert")) {
        upsert = bson_iter_as_bool(&si);
      }
      if (multi && !is_operator_update(&u)) {
        bson_set_error(&err, 0, 9, "multi update is not supported for replacement-style update");
        ok = false;
      }
    }
    if (ok) {
      ms_coll_t *c = ms_coll_get(db, coll, false);
      bson_value_t *ids;
      size_t nids;
      if (matching_ids(c, &q, multi, &ids, &nids, &err) < 0) {
        ok = false;
      } else if (nids > 0) {
        for (size_t j = 0; j < nids && ok; j++) {
          bson_t *old = ms_coll_find_id(c, &ids[j]);
          if (!old) {
            continue;
          }
          bson_t *copy = bson_copy(old);
          int r = update_one(c, copy, &u, &err);
          bson_destroy(copy);
          if (r < 0) {
            ok = false;
          } else {
            n++;
            nmod += r;
          }
        }
      } else if (upsert) {
        bson_t *doc;
        if (is_operator_update(&u)) {
          doc = upsert_seed(&q);
          ok = apply_operators(&doc, &u, true, NULL, NULL, NULL, &err);
        } else {
          bson_t *seed = upsert_seed(&q);
          bson_iter_t qi;
          doc = bson_copy(&u);
          if (!bson_iter_init_find(&qi, &u, "_id") && bson_iter_init_find(&qi, seed, "_id")) {
            bson_t *t = with_id_first(doc, bson_iter_value(&qi));
            bson_destroy(doc);
            doc = t;
          }
          bson_destroy(seed);
        }
        if (ok) {
          bson_t *full = with_id_first(doc, NULL);
          bson_destroy(doc);
          c = ms_coll_get(db, coll, true);
          bson_iter_t id;
          bson_iter_init_find(&id, full, "_id");
          char kb[16];
          const char *k;
          bson_t e;
          arr_key(nup++, kb, &k);
          bson_append_document_begin(&upserted, k, -1, &e);
          BSON_APPEND_INT32(&e, "index", (int32_t)i);
          BSON_APPEND_VALUE(&e, "_id", bson_iter_value(&id));
          bson_append_document_end(&upserted, &e);
          do_insert(c, full);
          n++;
        } else {
          bson_destroy(doc);
        }
      }
      free_ids(ids, nids);
    }
    if (!ok) {
      add_write_error(&errs, &nerr, i, (int32_t)err.code, err.message);
      if (ordered) {
        break;
      }
    }
  }
  pthread_mutex_unlock(&g_ms.mu);
  BSON_APPEND_INT32(reply, "n", n);
  BSON_APPEND_INT32(reply, "nModified", nmod);
  if (nup) {
    BSON_APPEND_ARRAY(reply, "upserted", &upserted);
  }
  if (nerr) {
    BSON_APPEND_ARRAY(reply, "writeErrors", &errs);
  }
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_destroy(&errs);
  bson_destroy(&upserted);
}

static void cmd_delete(const bson_t *cmd, const char *db, const char *coll, bson_t *reply)
{
  bson_t deletes;
  if (!get_array(cmd, "deletes", &deletes)) {
    ms_reply_error(reply, 9, "delete needs a deletes array");
    return;
  }
  bool ordered = ordered_of(cmd);
  bson_t errs = BSON_INITIALIZER;
  uint32_t nerr = 0, idx = 0;
  int32_t n = 0;
  bson_iter_t it;
  pthread_mutex_lock(&g_ms.mu);
  bson_iter_init(&it, &deletes);
  while (bson_iter_next(&it)) {
    uint32_t i = idx++;
    bson_t spec, q;
    bson_iter_t si;
    bson_error_t err = {0};
    if (!iter_doc(&it, &spec) || !bson_iter_init_find(&si, &spec, "q") || !iter_doc(&si, &q)) {
      add_write_error(&errs, &nerr, i, 9, "delete statement needs q");
      if (ordered) {
        break;
      }
      continue;
    }
    bool multi = !(bson_iter_init_find(&si, &spec, "limit") && bson_iter_as_int64(&si) == 1);
    ms_coll_t *c = ms_coll_get(db, coll, false);
    bson_value_t *ids;
    size_t nids;
    if (matching_ids(c, &q, multi, &ids, &nids, &err) < 0) {
      add_write_error(&errs, &nerr, i, (int32_t)err.code, err.message);
      if (ordered) {
        break;
      }
      continue;
    }
    for (size_t j = 0; j < nids; j++) {
      if (ms_coll_remove_id(c, &ids[j])) {
        ms_oplog_append(MS_EV_DELETE, db, coll, &ids[j], NULL, NULL, NULL, NULL);
        n++;
      }
    }
    free_ids(ids, nids);
  }
  pthread_mutex_unlock(&g_ms.mu);
  BSON_APPEND_INT32(reply, "n", n);
  if (nerr) {
    BSON_APPEND_ARRAY(reply, "writeErrors", &errs);
  }
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_destroy(&errs);
}

static void cmd_find(const bson_t *cmd, const char *db, const char *coll, bson_t *reply)
{
  bson_iter_t it;
  bson_t filter = BSON_INITIALIZER, proj;
  bool have_proj = false;
  int64_t limit = 0, skip = 0;
  if (bson_iter_init_find(&it, cmd, "filter") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    bson_t f;
    iter_doc(&it, &f);
    bson_concat(&filter, &f);
  }
  if (bson_iter_init_find(&it, cmd, "projection") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    have_proj = iter_doc(&it, &proj);
  }
  if (bson_iter_init_find(&it, cmd, "limit") && BSON_ITER_HOLDS_NUMBER(&it)) {
    limit = bson_iter_as_int64(&it);
    limit = limit < 0 ? -limit : limit;
  }
  if (bson_iter_init_find(&it, cmd, "skip") && BSON_ITER_HOLDS_NUMBER(&it)) {
    skip = bson_iter_as_int64(&it);
  }
  bson_error_t err;
  if (!ms_match_validate(&filter, &err) || (have_proj && !ms_project_validate(&proj, &err))) {
    bson_destroy(&filter);
    ms_reply_error(reply, (int32_t)err.code, "%s", err.message);
    return;
  }
  bson_t arr = BSON_INITIALIZER;
  uint32_t n = 0;
  size_t bytes = 0;
  pthread_mutex_lock(&g_ms.mu);
  ms_coll_t *c = ms_coll_get(db, coll, false);
  bson_value_t *ids = NULL;
  size_t nids = 0;
  matching_ids(c, &filter, true, &ids, &nids, &err);
  for (size_t i = 0; i < nids; i++) {
    if ((int64_t)i < skip) {
      continue;
    }
    if (limit && n >= limit) {
      break;
    }
    bson_t *d = ms_coll_find_id(c, &ids[i]);
    if (!d || bytes + d->len > MS_MAX_BSON_SIZE - 1024 * 1024) {
      break;
    }
    char kb[16];
    const char *k;
    arr_key(n++, kb, &k);
    if (have_proj) {
      bson_t p = BSON_INITIALIZER;
      ms_project(d, &proj, &p);
      bson_append_document(&arr, k, -1, &p);
      bson_destroy(&p);
    } else {
      bson_append_document(&arr, k, -1, d);
    }
    bytes += d->len;
  }
  free_ids(ids, nids);
  pthread_mutex_unlock(&g_ms.mu);
  bson_t cur;
  BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cur);
  BSON_APPEND_ARRAY(&cur, "firstBatch", &arr);
  BSON_APPEND_INT64(&cur, "id", 0);
  char *ns = bson_strdup_printf("%s.%s", db, coll);
  BSON_APPEND_UTF8(&cur, "ns", ns);
  bson_free(ns);
  bson_append_document_end(reply, &cur);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_destroy(&arr);
  bson_destroy(&filter);
}

static void cmd_drop(const char *db, const char *coll, bson_t *reply)
{
  pthread_mutex_lock(&g_ms.mu);
  ms_coll_t *c = ms_coll_get(db, coll, false);
  if (!c) {
    pthread_mutex_unlock(&g_ms.mu);
    ms_reply_error(reply, 26, "ns not found");
    return;
  }
  ms_coll_drop(c);
  ms_oplog_append(MS_EV_DROP, db, coll, NULL, NULL, NULL, NULL, NULL);
  pthread_mutex_unlock(&g_ms.mu);
  char *ns = bson_strdup_printf("%s.%s", db, coll);
  BSON_APPEND_INT32(reply, "nIndexesWas", 1);
  BSON_APPEND_UTF8(reply, "ns", ns);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_free(ns);
}

static void cmd_drop_database(const char *db, bson_t *reply)
{
  pthread_mutex_lock(&g_ms.mu);
  bool any = false;
  for (;;) {
    ms_coll_t *c = g_ms.colls;
    while (c && strcmp(c->db, db) != 0) {
      c = c->next;
    }
    if (!c) {
      break;
    }
    char *name = bson_strdup(c->name);
    ms_coll_drop(c);
    ms_oplog_append(MS_EV_DROP, db, name, NULL, NULL, NULL, NULL, NULL);
    bson_free(name);
    any = true;
  }
  if (any) {
    ms_oplog_append(MS_EV_DROPDATABASE, db, NULL, NULL, NULL, NULL, NULL, NULL);
  }
  pthread_mutex_unlock(&g_ms.mu);
  BSON_APPEND_UTF8(reply, "dropped", db);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static bool split_ns(const char *ns, char **db, char **coll)
{
  const char *dot = strchr(ns, '.');
  if (!dot || dot == ns || !dot[1]) {
    return false;
  }
  *db = bson_strndup(ns, (size_t)(dot - ns));
  *coll = bson_strdup(dot + 1);
  return true;
}

static void cmd_rename(const bson_t *cmd, const char *db, bson_t *reply)
{
  bson_iter_t it;
  char *fdb = NULL, *fcoll = NULL, *tdb = NULL, *tcoll = NULL;
  if (strcmp(db, "admin") != 0) {
    ms_reply_error(reply, 13, "renameCollection may only be run against the admin database.");
    return;
  }
  if (!bson_iter_init_find(&it, cmd, "renameCollection") || !BSON_ITER_HOLDS_UTF8(&it) ||
      !split_ns(bson_iter_utf8(&it, NULL), &fdb, &fcoll)) {
    ms_reply_error(reply, 73, "Invalid source namespace");
    return;
  }
  if (!bson_iter_init_find(&it, cmd, "to") || !BSON_ITER_HOLDS_UTF8(&it) ||
      !split_ns(bson_iter_utf8(&it, NULL), &tdb, &tcoll)) {
    bson_free(fdb);
    bson_free(fcoll);
    ms_reply_error(reply, 73, "Invalid target namespace");
    return;
  }
  bool drop_target = bson_iter_init_find(&it, cmd, "dropTarget") && bson_iter_as_bool(&it);
  pthread_mutex_lock(&g_ms.mu);
  ms_coll_t *src = ms_coll_get(fdb, fcoll, false);
  ms_coll_t *dst = ms_coll_get(tdb, tcoll, false);
  if (!src) {
    ms_reply_error(reply, 26, "Source collection %s.%s does not exist", fdb, fcoll);
  } else if (src == dst) {
    ms_reply_error(reply, 20, "Can't rename a collection to itself");
  } else if (dst && !drop_target) {
    ms_reply_error(reply, 48, "target namespace exists");
  } else {
    if (dst) {
      ms_coll_drop(dst);
      ms_oplog_append(MS_EV_DROP, tdb, tcoll, NULL, NULL, NULL, NULL, NULL);
    }
    bson_free(src->db);
    bson_free(src->name);
    src->db = bson_strdup(tdb);
    src->name = bson_strdup(tcoll);
    ms_oplog_append(MS_EV_RENAME, fdb, fcoll, NULL, NULL, NULL, tdb, tcoll);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  }
  pthread_mutex_unlock(&g_ms.mu);
  bson_free(fdb);
  bson_free(fcoll);
  bson_free(tdb);
  bson_free(tcoll);
}

static void cmd_create(const char *db, const char *coll, bson_t *reply)
{
  pthread_mutex_lock(&g_ms.mu);
  bool exists = ms_coll_get(db, coll, false) != NULL;
  if (!exists) {
    ms_coll_get(db, coll, true);
  }
  pthread_mutex_unlock(&g_ms.mu);
  if (exists) {
    ms_reply_error(reply, 48, "Collection %s.%s already exists.", db, coll);
    return;
  }
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static void cmd_list_collections(const char *db, bson_t *reply)
{
  bson_t arr = BSON_INITIALIZER;
  uint32_t n = 0;
  pthread_mutex_lock(&g_ms.mu);
  for (ms_coll_t *c = g_ms.colls; c; c = c->next) {
    if (strcmp(c->db, db) != 0) {
      continue;
    }
    char kb[16];
    const char *k;
    bson_t e;
    arr_key(n++, kb, &k);
    bson_append_document_begin(&arr, k, -1, &e);
    BSON_APPEND_UTF8(&e, "name", c->name);
    BSON_APPEND_UTF8(&e, "type", "collection");
    bson_append_document_end(&arr, &e);
  }
  pthread_mutex_unlock(&g_ms.mu);
  bson_t cur;
  BSON_APPEND_DOCUMENT_BEGIN(reply, "cursor", &cur);
  BSON_APPEND_ARRAY(&cur, "firstBatch", &arr);
  BSON_APPEND_INT64(&cur, "id", 0);
  char *ns = bson_strdup_printf("%s.$cmd.listCollections", db);
  BSON_APPEND_UTF8(&cur, "ns", ns);
  bson_free(ns);
  bson_append_document_end(reply, &cur);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  bson_destroy(&arr);
}

/* ----------------------------------------------------------- test commands */

/* cdcacheBulk: N server-side writes with integer _ids, as fast as possible. */
static void cmd_bulk(const bson_t *cmd, const char *db, bson_t *reply)
{
  bson_iter_t it;
  const char *coll = NULL, *op = "update";
  int64_t n = 0, id_start = 0, pad = 0;
  if (bson_iter_init_find(&it, cmd, "cdcacheBulk") && BSON_ITER_HOLDS_UTF8(&it)) {
    coll = bson_iter_utf8(&it, NULL);
  }
  if (bson_iter_init_find(&it, cmd, "db") && BSON_ITER_HOLDS_UTF8(&it)) {
    db = bson_iter_utf8(&it, NULL);
  }
  if (bson_iter_init_find(&it, cmd, "n") && BSON_ITER_HOLDS_NUMBER(&it)) {
    n = bson_iter_as_int64(&it);
  }
  if (bson_iter_init_find(&it, cmd, "op") && BSON_ITER_HOLDS_UTF8(&it)) {
    op = bson_iter_utf8(&it, NULL);
  }
  if (bson_iter_init_find(&it, cmd, "idStart") && BSON_ITER_HOLDS_NUMBER(&it)) {
    id_start = bson_iter_as_int64(&it);
  }
  if (bson_iter_init_find(&it, cmd, "padBytes") && BSON_ITER_HOLDS_NUMBER(&it)) {
    pad = bson_iter_as_int64(&it);
  }
  int mode = !strcmp(op, "insert")   ? 0
             : !strcmp(op, "update") ? 1
             : !strcmp(op, "delete") ? 2
             : !strcmp(op, "mixed")  ? 3
                                     : -1;
  if (!coll || !*coll || n < 0 || n > 100000000 || mode < 0 || pad < 0 || pad > 1000000 ||
      internal_db_name(db)) {
    ms_reply_error(
        reply, 2,
        "usage: {cdcacheBulk: <coll>, db: <db>, n: <count>, op: insert|update|delete|mixed, "
        "idStart: <int>, padBytes: <int>} (not on admin/config/local)");
    return;
  }
  char *padding = bson_malloc((size_t)pad + 1);
  memset(padding, 'x', (size_t)pad);
  padding[pad] = '\0';
  int64_t t0 = ms_now_mono_us();
  uint64_t events0;
  int64_t counts[4] = {0, 0, 0, 0}; /* insert, update, replace, delete */
  pthread_mutex_lock(&g_ms.mu);
  events0 = g_ms.stat_events;
  ms_coll_t *c = ms_coll_get(db, coll, true);
  for (int64_t i = 0; i < n; i++) {
    int kind = mode;
    int64_t id = id_start + i;
    if (mode == 3) {
      /* Each _id is inserted, updated and deleted in turn. */
      id = id_start + i / 3;
      kind = (int)(i % 3);
    }
    bson_value_t idv;
    idv.value_type = BSON_TYPE_INT64;
    idv.value.v_int64 = id;
    bson_t *cur = ms_coll_find_id(c, &idv);
    if (kind == 2) {
      if (cur && ms_coll_remove_id(c, &idv)) {
        ms_oplog_append(MS_EV_DELETE, db, coll, &idv, NULL, NULL, NULL, NULL);
        counts[3]++;
      }
    } else if (kind == 1 && cur) {
      bson_t u = BSON_INITIALIZER, set;
      BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
      /* A value never used before, so every update changes the document. */
      BSON_APPEND_INT64(&set, "v", (int64_t)g_ms.last_seq + 1);
      bson_append_document_end(&u, &set);
      bson_error_t err;
      bson_t *copy = bson_copy(cur);
      int r = update_one(c, copy, &u, &err);
      if (r == 1) {
        counts[1]++;
      }
      bson_destroy(copy);
      bson_destroy(&u);
    } else {
      bson_t *doc = bson_new();
      BSON_APPEND_INT64(doc, "_id", id);
      BSON_APPEND_INT64(doc, "v", i);
      if (pad) {
        BSON_APPEND_UTF8(doc, "pad", padding);
      }
      if (cur) {
        ms_oplog_append(MS_EV_REPLACE, db, coll, &idv, doc, NULL, NULL, NULL);
        ms_coll_put(c, doc);
        counts[2]++;
      } else {
        do_insert(c, doc);
        counts[0]++;
      }
    }
    if ((i & 1023) == 1023) {
      /* Let getMores and other connections in between chunks. */
      pthread_mutex_unlock(&g_ms.mu);
      pthread_mutex_lock(&g_ms.mu);
      c = ms_coll_get(db, coll, true);
    }
  }
  uint64_t events = g_ms.stat_events - events0;
  pthread_mutex_unlock(&g_ms.mu);
  bson_free(padding);
  int64_t us = ms_now_mono_us() - t0;
  BSON_APPEND_INT64(reply, "n", n);
  BSON_APPEND_INT64(reply, "events", (int64_t)events);
  BSON_APPEND_INT64(reply, "inserted", counts[0]);
  BSON_APPEND_INT64(reply, "updated", counts[1]);
  BSON_APPEND_INT64(reply, "replaced", counts[2]);
  BSON_APPEND_INT64(reply, "deleted", counts[3]);
  BSON_APPEND_INT64(reply, "micros", us);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static void cmd_stats(bson_t *reply)
{
  pthread_mutex_lock(&g_ms.mu);
  BSON_APPEND_INT64(reply, "events", (int64_t)g_ms.stat_events);
  BSON_APPEND_INT64(reply, "lastSeq", (int64_t)g_ms.last_seq);
  BSON_APPEND_INT64(reply, "oplogCount", (int64_t)g_ms.oplog_count);
  BSON_APPEND_INT64(reply, "oplogMax", (int64_t)g_ms.oplog_cap);
  BSON_APPEND_INT64(reply, "oplogFirstSeq",
                    g_ms.oplog_count ? (int64_t)g_ms.oplog[g_ms.oplog_head].seq
                                     : (int64_t)g_ms.last_seq + 1);
  BSON_APPEND_INT64(reply, "commands", (int64_t)g_ms.stat_commands);
  BSON_APPEND_INT64(reply, "openCursors", (int64_t)ms_cursors_count());
  BSON_APPEND_INT64(reply, "getMoreWaits", (int64_t)g_ms.stat_getmore_waits);
  BSON_APPEND_INT64(reply, "majorityStalls", (int64_t)g_ms.stat_majority_stalls);
  BSON_APPEND_INT64(reply, "repliesCut", (int64_t)g_ms.stat_replies_cut);
  BSON_APPEND_INT64(reply, "errorsSent", (int64_t)g_ms.stat_errors_sent);
  BSON_APPEND_INT64(reply, "blockedNow", g_ms.blocked_now);
  BSON_APPEND_INT64(reply, "stallMs", (int64_t)g_ms.stat_stall_ms);
  BSON_APPEND_INT64(reply, "partitionMs", (int64_t)g_ms.stat_partition_ms);
  BSON_APPEND_INT64(reply, "partitionHeld", (int64_t)g_ms.stat_partition_held);
  BSON_APPEND_INT64(reply, "connectionsDropped", (int64_t)g_ms.stat_conns_dropped);
  BSON_APPEND_INT64(reply, "electionHellos", (int64_t)g_ms.stat_election_hellos);
  BSON_APPEND_INT64(reply, "catchUpDelayed", (int64_t)g_ms.stat_catchup_delayed);
  size_t ncolls = 0;
  for (ms_coll_t *c = g_ms.colls; c; c = c->next) {
    ncolls++;
  }
  BSON_APPEND_INT64(reply, "collections", (int64_t)ncolls);
  pthread_mutex_unlock(&g_ms.mu);
  pthread_mutex_lock(&g_ms.conn_mu);
  BSON_APPEND_INT64(reply, "connectionsOpen", (int64_t)g_ms.conns_open);
  BSON_APPEND_INT64(reply, "connectionsTotal", (int64_t)g_ms.stat_conns_total);
  pthread_mutex_unlock(&g_ms.conn_mu);
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

static void rule_clear(ms_fail_rule_t *r)
{
  if (r->labels) {
    bson_destroy(r->labels);
  }
  memset(r, 0, sizeof *r);
}

/* Adds a failCommand rule. data holds the failCommand-style fields. */
static bool add_rule(const bson_t *data, int64_t times, bson_t *reply)
{
  ms_fail_rule_t nr = {0};
  bson_iter_t it;
  if (times == 0) {
    return true; /* {times: 0} fails nothing, as in MongoDB. */
  }
  nr.active = true;
  nr.times = times < 0 ? -1 : times;
  nr.code = 0;
  if (bson_iter_init_find(&it, data, "failCommands") ||
      bson_iter_init_find(&it, data, "commands")) {
    if (BSON_ITER_HOLDS_UTF8(&it)) {
      bson_strncpy(nr.commands[nr.ncommands++], bson_iter_utf8(&it, NULL), sizeof nr.commands[0]);
    } else if (BSON_ITER_HOLDS_ARRAY(&it)) {
      bson_iter_t ai;
      bson_iter_recurse(&it, &ai);
      while (bson_iter_next(&ai) && nr.ncommands < 8) {
        if (BSON_ITER_HOLDS_UTF8(&ai)) {
          bson_strncpy(nr.commands[nr.ncommands++], bson_iter_utf8(&ai, NULL),
                       sizeof nr.commands[0]);
        }
      }
    }
  }
  if (nr.ncommands == 0) {
    ms_reply_error(reply, 2, "failCommands/commands must name at least one command");
    return false;
  }
  if ((bson_iter_init_find(&it, data, "errorCode") || bson_iter_init_find(&it, data, "code")) &&
      BSON_ITER_HOLDS_NUMBER(&it)) {
    nr.code = (int32_t)bson_iter_as_int64(&it);
  }
  if (bson_iter_init_find(&it, data, "errmsg") && BSON_ITER_HOLDS_UTF8(&it)) {
    bson_strncpy(nr.errmsg, bson_iter_utf8(&it, NULL), sizeof nr.errmsg);
  }
  if (bson_iter_init_find(&it, data, "errorLabels") && BSON_ITER_HOLDS_ARRAY(&it)) {
    /* Rebuilt with proper index keys, keeping only strings. */
    bson_iter_t ai;
    uint32_t n = 0;
    nr.labels = bson_new();
    bson_iter_recurse(&it, &ai);
    while (bson_iter_next(&ai)) {
      if (BSON_ITER_HOLDS_UTF8(&ai)) {
        char kb[16];
        const char *k;
        arr_key(n++, kb, &k);
        bson_append_utf8(nr.labels, k, -1, bson_iter_utf8(&ai, NULL), -1);
      }
    }
  }
  if (bson_iter_init_find(&it, data, "closeConnection")) {
    nr.close_connection = bson_iter_as_bool(&it);
  }
  if (bson_iter_init_find(&it, data, "blockTimeMS") && BSON_ITER_HOLDS_NUMBER(&it)) {
    bool block = !bson_iter_init_find(&it, data, "blockConnection") || bson_iter_as_bool(&it);
    bson_iter_init_find(&it, data, "blockTimeMS");
    nr.block_ms = block ? bson_iter_as_int64(&it) : 0;
  }
  if (!nr.code && !nr.close_connection && !nr.block_ms) {
    nr.code = 8; /* UnknownError */
  }
  pthread_mutex_lock(&g_ms.mu);
  int slot = -1;
  for (int i = 0; i < MS_MAX_FAIL_RULES; i++) {
    if (!g_ms.rules[i].active) {
      slot = i;
      break;
    }
  }
  if (slot < 0) {
    pthread_mutex_unlock(&g_ms.mu);
    if (nr.labels) {
      bson_destroy(nr.labels);
    }
    ms_reply_error(reply, 2, "too many fault rules (max %d); send {cdcacheFault: \"off\"}",
                   MS_MAX_FAIL_RULES);
    return false;
  }
  rule_clear(&g_ms.rules[slot]);
  g_ms.rules[slot] = nr;
  pthread_mutex_unlock(&g_ms.mu);
  return true;
}

static void rules_clear_all(void)
{
  pthread_mutex_lock(&g_ms.mu);
  for (int i = 0; i < MS_MAX_FAIL_RULES; i++) {
    rule_clear(&g_ms.rules[i]);
  }
  g_ms.stall_until_us = 0;
  g_ms.partition_until_us = 0;
  g_ms.catchup_delay_ms = 0;
  g_ms.election_until_us = 0;
  g_ms.majority_stalled = false;
  g_ms.rules_epoch++;
  pthread_cond_broadcast(&g_ms.cond);
  pthread_mutex_unlock(&g_ms.mu);
}

static ms_action_t cmd_fault(ms_conn_t *conn, const bson_t *cmd, bson_t *reply)
{
  bson_iter_t it;
  bson_iter_init_find(&it, cmd, "cdcacheFault");
  const char *what = BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "";
  if (!strcmp(what, "dropConnections")) {
    ms_drop_all_connections(conn);
  } else if (!strcmp(what, "failCommands")) {
    int64_t times = 1;
    if (bson_iter_init_find(&it, cmd, "times") && BSON_ITER_HOLDS_NUMBER(&it)) {
      times = bson_iter_as_int64(&it);
    }
    if (!add_rule(cmd, times, reply)) {
      return MS_REPLY;
    }
  } else if (!strcmp(what, "truncateOplog")) {
    pthread_mutex_lock(&g_ms.mu);
    ms_oplog_truncate();
    pthread_mutex_unlock(&g_ms.mu);
  } else if (!strcmp(what, "invalidateStreams")) {
    pthread_mutex_lock(&g_ms.mu);
    ms_cursors_invalidate_all();
    pthread_mutex_unlock(&g_ms.mu);
  } else if (!strcmp(what, "stall") || !strcmp(what, "partition") || !strcmp(what, "election")) {
    int64_t ms = 0;
    if (bson_iter_init_find(&it, cmd, "ms") && BSON_ITER_HOLDS_NUMBER(&it)) {
      ms = bson_iter_as_int64(&it);
    } else if (bson_iter_init_find(&it, cmd, "seconds") && BSON_ITER_HOLDS_NUMBER(&it)) {
      ms = bson_iter_as_int64(&it) * 1000;
    }
    if (ms < 0 || ms > 600000) {
      ms_reply_error(reply, 2, "%s needs ms between 0 and 600000", what);
      return MS_REPLY;
    }
    pthread_mutex_lock(&g_ms.mu);
    int64_t until = ms_now_mono_us() + ms * 1000;
    if (!strcmp(what, "stall")) {
      g_ms.stall_until_us = until;
      g_ms.stat_stall_ms += (uint64_t)ms;
    } else if (!strcmp(what, "partition")) {
      g_ms.partition_until_us = until;
      g_ms.stat_partition_ms += (uint64_t)ms;
      g_ms.catchup_delay_ms = 0;
      if (bson_iter_init_find(&it, cmd, "replyDelayMs") && BSON_ITER_HOLDS_NUMBER(&it)) {
        int64_t d = bson_iter_as_int64(&it);
        g_ms.catchup_delay_ms = d < 0 ? 0 : d > 10000 ? 10000 : d;
      }
    } else {
      g_ms.election_until_us = until;
    }
    pthread_mutex_unlock(&g_ms.mu);
  } else if (!strcmp(what, "poison")) {
    /* Every getMore fails with code (no label) until "off". */
    bson_t rule = BSON_INITIALIZER;
    int32_t code = 10334;
    if (bson_iter_init_find(&it, cmd, "code") && BSON_ITER_HOLDS_NUMBER(&it)) {
      code = (int32_t)bson_iter_as_int64(&it);
    }
    if (code <= 0) {
      bson_destroy(&rule);
      ms_reply_error(reply, 2, "poison needs a positive code");
      return MS_REPLY;
    }
    BSON_APPEND_UTF8(&rule, "commands", "getMore");
    BSON_APPEND_INT32(&rule, "code", code);
    bool ok = add_rule(&rule, -1, reply);
    bson_destroy(&rule);
    if (!ok) {
      return MS_REPLY;
    }
  } else if (!strcmp(what, "majorityStall")) {
    /* The majority commit point stops where it is until "off". */
    pthread_mutex_lock(&g_ms.mu);
    if (!g_ms.majority_stalled) {
      g_ms.majority_stalled = true;
      g_ms.majority_seq = g_ms.last_seq;
      g_ms.majority_ts = g_ms.last_ts;
      g_ms.stat_majority_stalls++;
    }
    pthread_mutex_unlock(&g_ms.mu);
  } else if (!strcmp(what, "off")) {
    rules_clear_all();
  } else {
    ms_reply_error(reply, 2,
                   "cdcacheFault must be one of dropConnections, failCommands, truncateOplog, "
                   "invalidateStreams, stall, partition, election, poison, majorityStall, off");
    return MS_REPLY;
  }
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  return MS_REPLY;
}

/* MongoDB's own test fail point syntax, for tests meant to run against both. */
static void cmd_configure_fail_point(const bson_t *cmd, bson_t *reply)
{
  bson_iter_t it;
  bson_iter_init_find(&it, cmd, "configureFailPoint");
  if (!BSON_ITER_HOLDS_UTF8(&it) || strcmp(bson_iter_utf8(&it, NULL), "failCommand") != 0) {
    ms_reply_error(reply, 2, "cdcache test server: only the failCommand fail point is supported");
    return;
  }
  int64_t times = -1;
  if (bson_iter_init_find(&it, cmd, "mode")) {
    if (BSON_ITER_HOLDS_UTF8(&it) && !strcmp(bson_iter_utf8(&it, NULL), "off")) {
      rules_clear_all();
      BSON_APPEND_DOUBLE(reply, "ok", 1.0);
      return;
    }
    bson_t m;
    bson_iter_t mi;
    if (BSON_ITER_HOLDS_DOCUMENT(&it) && iter_doc(&it, &m) &&
        bson_iter_init_find(&mi, &m, "times")) {
      times = bson_iter_as_int64(&mi);
    }
  }
  bson_t data;
  if (!bson_iter_init_find(&it, cmd, "data") || !iter_doc(&it, &data)) {
    ms_reply_error(reply, 2, "configureFailPoint needs data");
    return;
  }
  if (add_rule(&data, times, reply)) {
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  }
}

/* Consumes a matching fault rule, if any, for the command name. */
static bool take_rule(const char *name, ms_fail_rule_t *out)
{
  bool hit = false;
  pthread_mutex_lock(&g_ms.mu);
  for (int i = 0; i < MS_MAX_FAIL_RULES && !hit; i++) {
    ms_fail_rule_t *r = &g_ms.rules[i];
    if (!r->active) {
      continue;
    }
    for (int j = 0; j < r->ncommands; j++) {
      if (!strcmp(r->commands[j], name)) {
        hit = true;
        *out = *r;
        out->labels = r->labels ? bson_copy(r->labels) : NULL;
        if (r->times > 0 && --r->times == 0) {
          rule_clear(r);
        }
        break;
      }
    }
  }
  pthread_mutex_unlock(&g_ms.mu);
  return hit;
}

/* ------------------------------------------------------------- handshake */

/* Whether an election is going on (the caller holds no lock). */
static bool in_election(void)
{
  pthread_mutex_lock(&g_ms.mu);
  bool on = g_ms.election_until_us > ms_now_mono_us();
  pthread_mutex_unlock(&g_ms.mu);
  return on;
}

static void cmd_hello(ms_conn_t *conn, bool legacy, bson_t *reply)
{
  char me[128];
  /* During an election this member answers as real members do: not
   * writable, a secondary, no primary known. */
  bool electing = in_election();
  if (electing) {
    pthread_mutex_lock(&g_ms.mu);
    g_ms.stat_election_hellos++;
    pthread_mutex_unlock(&g_ms.mu);
  }
  snprintf(me, sizeof me, "%s:%d", g_ms.host, g_ms.port);
  BSON_APPEND_BOOL(reply, "helloOk", true);
  BSON_APPEND_BOOL(reply, legacy ? "ismaster" : "isWritablePrimary", !electing);
  BSON_APPEND_UTF8(reply, "setName", g_ms.set_name);
  BSON_APPEND_INT32(reply, "setVersion", 1);
  bson_t hosts;
  BSON_APPEND_ARRAY_BEGIN(reply, "hosts", &hosts);
  BSON_APPEND_UTF8(&hosts, "0", me);
  bson_append_array_end(reply, &hosts);
  if (!electing) {
    BSON_APPEND_UTF8(reply, "primary", me);
  }
  BSON_APPEND_UTF8(reply, "me", me);
  BSON_APPEND_BOOL(reply, "secondary", electing);
  BSON_APPEND_INT32(reply, "maxBsonObjectSize", MS_MAX_BSON_SIZE);
  BSON_APPEND_INT32(reply, "maxMessageSizeBytes", MS_MAX_MESSAGE_SIZE);
  BSON_APPEND_INT32(reply, "maxWriteBatchSize", 100000);
  BSON_APPEND_DATE_TIME(reply, "localTime", (int64_t)time(NULL) * 1000);
  BSON_APPEND_INT32(reply, "logicalSessionTimeoutMinutes", 30);
  BSON_APPEND_INT32(reply, "connectionId", (int32_t)conn->id);
  BSON_APPEND_INT32(reply, "minWireVersion", 0);
  BSON_APPEND_INT32(reply, "maxWireVersion", MS_MAX_WIRE_VERSION);
  BSON_APPEND_BOOL(reply, "readOnly", false);
  if (g_ms.hello_pad > 0) {
    /* a bigger handshake, as a large replica set or speculative
     * authentication gives; clients ignore unknown fields */
    char *pad = bson_malloc(g_ms.hello_pad + 1);
    memset(pad, 'x', g_ms.hello_pad);
    pad[g_ms.hello_pad] = '\0';
    BSON_APPEND_UTF8(reply, "cdcachePadding", pad);
    bson_free(pad);
  }
  BSON_APPEND_DOUBLE(reply, "ok", 1.0);
}

/* ------------------------------------------------------------- dispatcher */

static bool is_test_command(const char *name)
{
  return !strcmp(name, "cdcacheFault") || !strcmp(name, "configureFailPoint") ||
         !strcmp(name, "cdcacheStats") || !strcmp(name, "cdcacheBulk");
}

static void count_error_sent(void)
{
  pthread_mutex_lock(&g_ms.mu);
  g_ms.stat_errors_sent++;
  pthread_mutex_unlock(&g_ms.mu);
}

/* The error a command gets while an election is on; false: none. */
static bool election_error(const char *name, bson_t *reply)
{
  const char *label = "ResumableChangeStreamError";
  int32_t code;
  if (!strcmp(name, "getMore")) {
    code = 11602; /* InterruptedDueToReplStateChange */
  } else if (!strcmp(name, "aggregate")) {
    code = 10107; /* NotWritablePrimary */
  } else if (!strcmp(name, "insert") || !strcmp(name, "update") || !strcmp(name, "delete")) {
    code = 10107;
    label = "RetryableWriteError";
  } else if (!strcmp(name, "find")) {
    code = 13435; /* NotPrimaryNoSecondaryOk */
    label = NULL;
  } else {
    return false;
  }
  if (!in_election()) {
    return false;
  }
  ms_reply_error(reply, code, "cdcache test server: election in progress");
  if (label) {
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(reply, "errorLabels", &arr);
    BSON_APPEND_UTF8(&arr, "0", label);
    bson_append_array_end(reply, &arr);
  }
  count_error_sent();
  return true;
}

static ms_action_t handle_command(ms_conn_t *conn, const ms_request_t *req, bson_t *reply);

/*
 * Every reply carries $clusterTime (the newest event's time) and, but for
 * the handshake, operationTime: the majority commit point the server read
 * at, here the newest event, as everything written is majority-committed
 * at once.  Cursor replies set operationTime themselves, under the lock
 * that filled their batch.
 */
ms_action_t ms_handle_command(ms_conn_t *conn, const ms_request_t *req, bson_t *reply)
{
  ms_action_t act = handle_command(conn, req, reply);
  if (act != MS_REPLY) {
    return act;
  }
  bson_iter_t it;
  bool hello =
      bson_iter_init(&it, &req->cmd) && bson_iter_next(&it) &&
      (!strcmp(bson_iter_key(&it), "hello") || !strcasecmp(bson_iter_key(&it), "isMaster"));
  pthread_mutex_lock(&g_ms.mu);
  uint32_t t = g_ms.last_ts, i = (uint32_t)g_ms.last_seq;
  uint32_t mt = ms_visible_ts(), mi = (uint32_t)ms_visible_seq();
  pthread_mutex_unlock(&g_ms.mu);
  if (!hello && !bson_has_field(reply, "operationTime")) {
    BSON_APPEND_TIMESTAMP(reply, "operationTime", mt, mi);
  }
  bson_t ct, sig;
  uint8_t hash[20] = {0};
  BSON_APPEND_DOCUMENT_BEGIN(reply, "$clusterTime", &ct);
  BSON_APPEND_TIMESTAMP(&ct, "clusterTime", t, i);
  BSON_APPEND_DOCUMENT_BEGIN(&ct, "signature", &sig);
  BSON_APPEND_BINARY(&sig, "hash", BSON_SUBTYPE_BINARY, hash, sizeof hash);
  BSON_APPEND_INT64(&sig, "keyId", 0);
  bson_append_document_end(&ct, &sig);
  bson_append_document_end(reply, &ct);
  return act;
}

static ms_action_t handle_command(ms_conn_t *conn, const ms_request_t *req, bson_t *reply)
{
  const bson_t *cmd = &req->cmd;
  bson_iter_t it, dbit;
  if (!bson_iter_init(&it, cmd) || !bson_iter_next(&it)) {
    ms_reply_error(reply, 59, "empty command");
    return MS_REPLY;
  }
  const char *name = bson_iter_key(&it);
  const char *db = "admin";
  if (bson_iter_init_find(&dbit, cmd, "$db") && BSON_ITER_HOLDS_UTF8(&dbit)) {
    db = bson_iter_utf8(&dbit, NULL);
  }
  const char *target = BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;

  pthread_mutex_lock(&g_ms.mu);
  g_ms.stat_commands++;
  pthread_mutex_unlock(&g_ms.mu);

  if (!strcmp(name, "isMaster") || !strcmp(name, "ismaster") || !strcmp(name, "hello")) {
    cmd_hello(conn, strcmp(name, "hello") != 0, reply);
    return MS_REPLY;
  }

  if (!is_test_command(name) && election_error(name, reply)) {
    return MS_REPLY;
  }
  if (!is_test_command(name)) {
    ms_fail_rule_t r;
    if (take_rule(name, &r)) {
      if (r.block_ms > 0) {
        /* The whole blockTimeMS (the condition is broadcast by every
         * write too), or until "off" or shutdown. */
        pthread_mutex_lock(&g_ms.mu);
        int64_t until = ms_now_mono_us() + r.block_ms * 1000;
        uint64_t epoch = g_ms.rules_epoch;
        g_ms.blocked_now++;
        while (!g_ms.shutting_down && g_ms.rules_epoch == epoch && ms_now_mono_us() < until) {
          ms_cond_wait_until(until);
        }
        g_ms.blocked_now--;
        pthread_mutex_unlock(&g_ms.mu);
      }
      if (r.close_connection) {
        if (r.labels) {
          bson_destroy(r.labels);
        }
        pthread_mutex_lock(&g_ms.mu);
        g_ms.stat_conns_dropped++;
        pthread_mutex_unlock(&g_ms.mu);
        return MS_CLOSE;
      }
      if (r.code) {
        count_error_sent();
        ms_reply_error(reply, r.code, "%s",
                       r.errmsg[0] ? r.errmsg : "Failing command via cdcacheFault failCommands");
        if (r.labels) {
          BSON_APPEND_ARRAY(reply, "errorLabels", r.labels);
        }
      }
      if (r.labels) {
        bson_destroy(r.labels);
      }
      if (r.code) {
        return MS_REPLY;
      }
    }
  }

  if (!strcmp(name, "ping") || !strcmp(name, "endSessions") || !strcmp(name, "killAllSessions") ||
      !strcmp(name, "getParameter") || !strcmp(name, "setParameter")) {
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  } else if (!strcmp(name, "buildInfo") || !strcmp(name, "buildinfo")) {
    BSON_APPEND_UTF8(reply, "version", "6.0.0-cdcache-test");
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(reply, "versionArray", &arr);
    BSON_APPEND_INT32(&arr, "0", 6);
    BSON_APPEND_INT32(&arr, "1", 0);
    BSON_APPEND_INT32(&arr, "2", 0);
    BSON_APPEND_INT32(&arr, "3", 0);
    bson_append_array_end(reply, &arr);
    BSON_APPEND_DOUBLE(reply, "ok", 1.0);
  } else if (!strcmp(name, "insert") && target) {
    cmd_insert(cmd, db, target, reply);
  } else if (!strcmp(name, "update") && target) {
    cmd_update(cmd, db, target, reply);
  } else if (!strcmp(name, "delete") && target) {
    cmd_delete(cmd, db, target, reply);
  } else if (!strcmp(name, "find") && target) {
    cmd_find(cmd, db, target, reply);
  } else if (!strcmp(name, "aggregate")) {
    ms_cmd_aggregate(conn, cmd, db, reply);
  } else if (!strcmp(name, "getMore")) {
    ms_cmd_get_more(conn, cmd, db, reply);
  } else if (!strcmp(name, "killCursors")) {
    ms_cmd_kill_cursors(cmd, db, reply);
  } else if (!strcmp(name, "drop") && target) {
    cmd_drop(db, target, reply);
  } else if (!strcmp(name, "dropDatabase")) {
    cmd_drop_database(db, reply);
  } else if (!strcmp(name, "renameCollection")) {
    cmd_rename(cmd, db, reply);
  } else if (!strcmp(name, "create") && target) {
    cmd_create(db, target, reply);
  } else if (!strcmp(name, "listCollections")) {
    cmd_list_collections(db, reply);
  } else if (!strcmp(name, "cdcacheFault")) {
    return cmd_fault(conn, cmd, reply);
  } else if (!strcmp(name, "configureFailPoint")) {
    cmd_configure_fail_point(cmd, reply);
  } else if (!strcmp(name, "cdcacheBulk")) {
    cmd_bulk(cmd, db, reply);
  } else if (!strcmp(name, "cdcacheStats")) {
    cmd_stats(reply);
  } else {
    ms_reply_error(reply, 59, "no such command: '%s'", name);
  }
  return MS_REPLY;
}
