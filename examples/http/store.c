/*
 * store.c: the example service's MongoDB side.
 *
 * One libmongoc client pool serves every HTTP worker thread: a request
 * pops a client, runs one command and pushes it back, so the pool (at
 * most one client per worker) bounds the connections to the database.
 *
 * Reads go to the primary with read concern "majority".  Why that is
 * enough for a cache kept fresh by a change stream: the subscription
 * evicts a key only after the write's event was returned by a majority
 * change stream, i.e. after the write was majority-committed; a load that
 * starts after that eviction reads the primary's majority snapshot, which
 * already holds the write.  So a reload never brings back the value the
 * eviction removed, and never caches a write that could still be rolled
 * back.  (Reading a secondary would need a causally consistent session
 * and afterClusterTime = cdcache_fill_cluster_time(); see the README.)
 *
 * Writes replace the whole document (upsert) or delete it, both with
 * w: "majority".  Nothing here tells any cache about them: every
 * instance's CDC subscription sees the change and evicts.
 */
#include "store.h"

#include <cdcache.h>
#include <mongoc/mongoc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
  /* The pool is thread-safe (its own mutex); the names are read-only
   * after store_open. */
  mongoc_client_pool_t *pool;
  mongoc_uri_t *uri;
  char *db;
  char *coll;
};

static void set_err(char *err, size_t cap, const char *what, const char *msg)
{
  if (cap > 0)
    snprintf(err, cap, "%s%s%s", what, msg[0] != '\0' ? ": " : "", msg);
}

/* Sets a URI timeout unless the user's URI already has one. */
static void default_timeout(mongoc_uri_t *uri, const char *key, int32_t ms)
{
  if (!mongoc_uri_has_option(uri, key))
    mongoc_uri_set_option_as_int32(uri, key, ms);
}

int store_open(const char *uri, const char *db, const char *coll, unsigned pool_size, store_t **out,
               char *err, size_t errcap)
{
  bson_error_t e;
  store_t *st = calloc(1, sizeof *st);
  if (st == NULL) {
    set_err(err, errcap, "out of memory", "");
    return -1;
  }
  st->uri = mongoc_uri_new_with_error(uri, &e);
  if (st->uri == NULL) {
    set_err(err, errcap, "bad --mongodb-uri", e.message);
    free(st);
    return -1;
  }
  default_timeout(st->uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
  default_timeout(st->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 2000);
  default_timeout(st->uri, MONGOC_URI_SOCKETTIMEOUTMS, 3000);
  st->pool = mongoc_client_pool_new_with_error(st->uri, &e);
  if (st->pool == NULL) {
    set_err(err, errcap, "mongoc_client_pool_new", e.message);
    mongoc_uri_destroy(st->uri);
    free(st);
    return -1;
  }
  mongoc_client_pool_set_error_api(st->pool, MONGOC_ERROR_API_VERSION_2);
  mongoc_client_pool_max_size(st->pool, pool_size > 0 ? pool_size : 1);
  st->db = strdup(db);
  st->coll = strdup(coll);
  if (st->db == NULL || st->coll == NULL) {
    set_err(err, errcap, "out of memory", "");
    store_close(st);
    return -1;
  }
  *out = st;
  return 0;
}

void store_close(store_t *st)
{
  if (st == NULL)
    return;
  if (st->pool != NULL)
    mongoc_client_pool_destroy(st->pool);
  mongoc_uri_destroy(st->uri);
  free(st->db);
  free(st->coll);
  free(st);
}

/* A canonical decimal int64: what cdcache_id_render_int64 writes. */
static bool id_is_int64(const char *id, size_t len, int64_t *v)
{
  char buf[24];
  if (len == 0 || len >= sizeof buf)
    return false;
  memcpy(buf, id, len);
  buf[len] = '\0';
  char *end;
  errno = 0;
  long long x = strtoll(buf, &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  char back[24];
  size_t blen;
  if (cdcache_id_render_int64((int64_t)x, back, sizeof back, &blen) != 0)
    return false;
  if (blen != len || memcmp(back, id, len) != 0)
    return false; /* "007", "+7", " 7", "-0": strings */
  *v = (int64_t)x;
  return true;
}

void store_append_id(bson_t *doc, const char *id, size_t len)
{
  int64_t v;
  if (id_is_int64(id, len, &v))
    BSON_APPEND_INT64(doc, "_id", v);
  else
    bson_append_utf8(doc, "_id", 3, id, (int)len);
}

/* Orders key pointers by the strings they point to (for qsort). */
static int cmp_keys(const void *a, const void *b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Checks that no document in doc, at any nesting level (through arrays
 * too), holds the same field name twice.  libbson's JSON reader keeps both
 * copies of {"a":1,"a":2}, and what a later reader makes of them (first,
 * last, both) differs between drivers, so the service refuses them.  Each
 * document's names are sorted and compared neighbour to neighbour: n log n
 * in the body's size, which --max-body bounds.  The depth is bounded by
 * the JSON reader's own nesting limit.  Returns 0, -1 (a duplicate, named
 * in err) or STORE_ENOMEM.
 */
static int check_names(const bson_t *doc, bool is_array, char *err, size_t errcap)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, doc))
    return 0;
  size_t n = 0, cap = 0;
  const char **keys = NULL;
  int rc = 0;
  while (rc == 0 && bson_iter_next(&it)) {
    if (!is_array) {
      if (n == cap) {
        size_t ncap = cap != 0 ? cap * 2 : 16;
        const char **nk = realloc(keys, ncap * sizeof *nk);
        if (nk == NULL) {
          set_err(err, errcap, "out of memory", "");
          rc = STORE_ENOMEM;
          break;
        }
        keys = nk;
        cap = ncap;
      }
      keys[n++] = bson_iter_key(&it);
    }
    if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
      uint32_t len;
      const uint8_t *data;
      bson_t sub;
      if (BSON_ITER_HOLDS_DOCUMENT(&it))
        bson_iter_document(&it, &len, &data);
      else
        bson_iter_array(&it, &len, &data);
      if (bson_init_static(&sub, data, len))
        rc = check_names(&sub, BSON_ITER_HOLDS_ARRAY(&it), err, errcap);
    }
  }
  if (rc == 0 && n > 1) {
    qsort(keys, n, sizeof *keys, cmp_keys);
    for (size_t i = 1; i < n && rc == 0; i++)
      if (strcmp(keys[i - 1], keys[i]) == 0) {
        set_err(err, errcap, "duplicate field name in the body", keys[i]);
        rc = -1;
      }
  }
  free(keys);
  return rc;
}

/*
 * True when the body's _id (at it) is the _id the URL names: the same
 * BSON type and value as store_append_id builds, except that an int32
 * stands for the same int64 (JSON's 7 parses as an int32; MongoDB compares
 * _id numerically, so both are one document).  A string "7" for the URL
 * id 7 (an int64) is another document: refused, not silently replaced.
 */
static bool same_id(const bson_iter_t *it, const char *id, size_t idlen)
{
  bson_t want = BSON_INITIALIZER;
  store_append_id(&want, id, idlen);
  bson_iter_t w;
  bool same = false;
  if (bson_iter_init_find(&w, &want, "_id")) {
    if (BSON_ITER_HOLDS_INT64(&w))
      same = (BSON_ITER_HOLDS_INT64(it) || BSON_ITER_HOLDS_INT32(it)) &&
             bson_iter_as_int64(it) == bson_iter_int64(&w);
    else if (BSON_ITER_HOLDS_UTF8(it)) {
      uint32_t a_len, b_len;
      const char *a = bson_iter_utf8(it, &a_len), *b = bson_iter_utf8(&w, &b_len);
      same = a_len == b_len && memcmp(a, b, a_len) == 0;
    }
  }
  bson_destroy(&want);
  return same;
}

int store_doc_from_json(const char *id, size_t idlen, const char *json, size_t jlen, bson_t *out,
                        char *err, size_t errcap)
{
  size_t i = 0;
  while (i < jlen && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n'))
    i++;
  if (i == jlen || json[i] != '{') {
    set_err(err, errcap, "the body must be one JSON object", "");
    return -1;
  }
  bson_error_t e;
  bson_json_reader_t *rd = bson_json_data_reader_new(false, 0);
  bson_json_data_reader_ingest(rd, (const uint8_t *)json, jlen);
  bson_t body = BSON_INITIALIZER;
  int r = bson_json_reader_read(rd, &body, &e);
  if (r != 1) {
    set_err(err, errcap, "invalid JSON", r < 0 ? e.message : "empty");
    bson_json_reader_destroy(rd);
    bson_destroy(&body);
    return -1;
  }
  bson_t extra = BSON_INITIALIZER;
  r = bson_json_reader_read(rd, &extra, &e);
  bson_destroy(&extra);
  bson_json_reader_destroy(rd);
  if (r != 0) {
    set_err(err, errcap, "invalid JSON", r < 0 ? e.message : "more than one value in the body");
    bson_destroy(&body);
    return -1;
  }

  int dup = check_names(&body, false, err, errcap);
  if (dup != 0) {
    bson_destroy(&body);
    return dup;
  }

  bson_init(out);
  store_append_id(out, id, idlen);
  bson_iter_t it;
  int rc = 0;
  if (!bson_iter_init(&it, &body)) {
    set_err(err, errcap, "invalid JSON", "not a document");
    rc = -1;
  }
  while (rc == 0 && bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (k[0] == '$') {
      set_err(err, errcap, "top-level field names may not start with '$'", k);
      rc = -1;
    } else if (strcmp(k, "_id") == 0) {
      /* Allowed only when it names the URL's _id, type included. */
      if (!same_id(&it, id, idlen)) {
        set_err(err, errcap, "the body's _id differs from the URL's (value or type)", "");
        rc = -1;
      }
    } else if (!bson_append_iter(out, k, -1, &it)) {
      set_err(err, errcap, "document too large", "");
      rc = -1;
    }
  }
  bson_destroy(&body);
  if (rc != 0)
    bson_destroy(out);
  return rc;
}

int store_read(store_t *st, const char *id, size_t idlen, char **json, size_t *jlen, char *err,
               size_t errcap)
{
  mongoc_client_t *cl = mongoc_client_pool_pop(st->pool);
  mongoc_collection_t *coll = mongoc_client_get_collection(cl, st->db, st->coll);
  bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
  store_append_id(&filter, id, idlen);
  BSON_APPEND_INT64(&opts, "limit", 1);
  mongoc_read_concern_t *rc = mongoc_read_concern_new();
  mongoc_read_concern_set_level(rc, MONGOC_READ_CONCERN_LEVEL_MAJORITY);
  mongoc_read_concern_append(rc, &opts);
  mongoc_read_concern_destroy(rc);
  /* NULL read preference: the primary. */
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
  const bson_t *doc;
  int ret = STORE_NOTFOUND;
  if (mongoc_cursor_next(cur, &doc)) {
    *json = bson_as_relaxed_extended_json(doc, jlen);
    ret = *json != NULL ? STORE_OK : STORE_ENOMEM;
  }
  bson_error_t e;
  if (ret == STORE_NOTFOUND && mongoc_cursor_error(cur, &e)) {
    set_err(err, errcap, "find", e.message);
    ret = STORE_EDB;
  }
  mongoc_cursor_destroy(cur);
  bson_destroy(&filter);
  bson_destroy(&opts);
  mongoc_collection_destroy(coll);
  mongoc_client_pool_push(st->pool, cl);
  return ret;
}

/* The opts of every write: w: "majority". */
static void majority(bson_t *opts)
{
  mongoc_write_concern_t *wc = mongoc_write_concern_new();
  mongoc_write_concern_set_wmajority(wc, 0);
  mongoc_write_concern_append(wc, opts);
  mongoc_write_concern_destroy(wc);
}

/* A write the server refused for the document's sake (write error, or
 * libmongoc's own checks of the document) is the client's fault; the
 * rest (network, timeouts, write concern) is the database's. */
static int write_failure(const bson_t *reply, const bson_error_t *e, char *err, size_t errcap)
{
  set_err(err, errcap, "write", e->message);
  if (bson_has_field(reply, "writeErrors") || e->domain == MONGOC_ERROR_BSON ||
      (e->domain == MONGOC_ERROR_COMMAND && e->code == MONGOC_ERROR_COMMAND_INVALID_ARG))
    return STORE_EBADDOC;
  return STORE_EDB;
}

int store_replace(store_t *st, const char *id, size_t idlen, const bson_t *doc, bool *created,
                  char *err, size_t errcap)
{
  mongoc_client_t *cl = mongoc_client_pool_pop(st->pool);
  mongoc_collection_t *coll = mongoc_client_get_collection(cl, st->db, st->coll);
  bson_t sel = BSON_INITIALIZER, opts = BSON_INITIALIZER, reply;
  store_append_id(&sel, id, idlen);
  BSON_APPEND_BOOL(&opts, "upsert", true);
  majority(&opts);
  bson_error_t e;
  int ret = STORE_OK;
  if (mongoc_collection_replace_one(coll, &sel, doc, &opts, &reply, &e)) {
    bson_iter_t it;
    *created = bson_iter_init_find(&it, &reply, "upsertedCount") && bson_iter_as_int64(&it) > 0;
  } else {
    ret = write_failure(&reply, &e, err, errcap);
  }
  bson_destroy(&reply);
  bson_destroy(&sel);
  bson_destroy(&opts);
  mongoc_collection_destroy(coll);
  mongoc_client_pool_push(st->pool, cl);
  return ret;
}

int store_delete(store_t *st, const char *id, size_t idlen, char *err, size_t errcap)
{
  mongoc_client_t *cl = mongoc_client_pool_pop(st->pool);
  mongoc_collection_t *coll = mongoc_client_get_collection(cl, st->db, st->coll);
  bson_t sel = BSON_INITIALIZER, opts = BSON_INITIALIZER, reply;
  store_append_id(&sel, id, idlen);
  majority(&opts);
  bson_error_t e;
  int ret;
  if (mongoc_collection_delete_one(coll, &sel, &opts, &reply, &e)) {
    bson_iter_t it;
    ret = bson_iter_init_find(&it, &reply, "deletedCount") && bson_iter_as_int64(&it) > 0
              ? STORE_OK
              : STORE_NOTFOUND;
  } else {
    ret = write_failure(&reply, &e, err, errcap);
  }
  bson_destroy(&reply);
  bson_destroy(&sel);
  bson_destroy(&opts);
  mongoc_collection_destroy(coll);
  mongoc_client_pool_push(st->pool, cl);
  return ret;
}
