/*
 * CUnit tests of cdcache-mongo-test-server, driven through libmongoc 1.23:
 * CRUD, change events and their fields, resume, history loss, invalidate,
 * database and cluster scope, $match/$project, every fault command, the bulk
 * and stats commands, and robustness against malformed messages.
 * Usage: test_mongo_server PATH-TO-cdcache-mongo-test-server
 */
#include <CUnit/Basic.h>
#include <mongoc/mongoc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STR_EQ(a, b)                                                                               \
  do {                                                                                             \
    const char *sa_ = (a);                                                                         \
    CU_ASSERT(sa_ != NULL && strcmp(sa_, (b)) == 0);                                               \
  } while (0)

typedef struct {
  pid_t pid;
  int port;
  char uri[256];
} server_t;

static const char *server_path;
static server_t srv;            /* The main server, shared by most tests. */
static mongoc_client_t *reader; /* Opens change streams. */
static mongoc_client_t *writer; /* Writes and sends fault commands. */

/* ------------------------------------------------------------------ helpers */

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool start_server(server_t *s, int oplog_size)
{
  char port_file[] = "/tmp/cdcache-ms-port-XXXXXX";
  int fd = mkstemp(port_file);
  if (fd < 0) {
    return false;
  }
  close(fd);
  unlink(port_file);
  char oplog[32];
  snprintf(oplog, sizeof oplog, "%d", oplog_size);
  s->pid = fork();
  if (s->pid < 0) {
    return false;
  }
  if (s->pid == 0) {
    execl(server_path, server_path, "--port", "0", "--port-file", port_file, "--oplog-size", oplog,
          "--quiet", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 200; i++) {
    FILE *f = fopen(port_file, "r");
    if (f) {
      int port = 0;
      int n = fscanf(f, "%d", &port);
      fclose(f);
      if (n == 1 && port > 0) {
        unlink(port_file);
        s->port = port;
        snprintf(s->uri, sizeof s->uri, "mongodb://127.0.0.1:%d/?replicaSet=rs0", port);
        return true;
      }
    }
    usleep(25000);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  return false;
}

/* Stops the server with SIGTERM; returns its exit status (-1 if it crashed). */
static int stop_server(server_t *s)
{
  int status = 0;
  kill(s->pid, SIGTERM);
  for (int i = 0; i < 400; i++) {
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    usleep(25000);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, &status, 0);
  return -1;
}

static mongoc_client_t *new_client(const server_t *s)
{
  mongoc_client_t *c = mongoc_client_new(s->uri);
  mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  return c;
}

/* Runs a command on admin through the writer; one retry covers a dropped connection. */
static bool admin_cmd(mongoc_client_t *c, const bson_t *cmd, bson_t *reply_out, bson_error_t *err)
{
  bson_t reply;
  bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, err);
  if (!ok && err->domain != MONGOC_ERROR_SERVER && err->domain != MONGOC_ERROR_WRITE_CONCERN) {
    bson_destroy(&reply);
    ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, err);
  }
  if (reply_out) {
    bson_copy_to(&reply, reply_out);
  }
  bson_destroy(&reply);
  return ok;
}

static bool fault(const char *json)
{
  bson_error_t err;
  bson_t *cmd = bson_new_from_json((const uint8_t *)json, -1, &err);
  if (!cmd) {
    fprintf(stderr, "bad json %s: %s\n", json, err.message);
    return false;
  }
  bool ok = admin_cmd(writer, cmd, NULL, &err);
  if (!ok) {
    fprintf(stderr, "fault %s failed: %s\n", json, err.message);
  }
  bson_destroy(cmd);
  return ok;
}

static bool insert_doc(const char *db, const char *coll, const char *json)
{
  bson_error_t err;
  bson_t *doc = bson_new_from_json((const uint8_t *)json, -1, &err);
  mongoc_collection_t *c = mongoc_client_get_collection(writer, db, coll);
  bool ok = doc && mongoc_collection_insert_one(c, doc, NULL, NULL, &err);
  if (!ok) {
    fprintf(stderr, "insert %s failed: %s\n", json, err.message);
  }
  mongoc_collection_destroy(c);
  bson_destroy(doc);
  return ok;
}

static const char *get_str(const bson_t *d, const char *path)
{
  bson_iter_t it, f;
  if (d && bson_iter_init(&it, d) && bson_iter_find_descendant(&it, path, &f) &&
      BSON_ITER_HOLDS_UTF8(&f)) {
    return bson_iter_utf8(&f, NULL);
  }
  return NULL;
}

static int64_t get_int(const bson_t *d, const char *path, int64_t dflt)
{
  bson_iter_t it, f;
  if (d && bson_iter_init(&it, d) && bson_iter_find_descendant(&it, path, &f) &&
      BSON_ITER_HOLDS_NUMBER(&f)) {
    return bson_iter_as_int64(&f);
  }
  return dflt;
}

static bool has_field(const bson_t *d, const char *path)
{
  bson_iter_t it, f;
  return d && bson_iter_init(&it, d) && bson_iter_find_descendant(&it, path, &f);
}

static bson_type_t field_type(const bson_t *d, const char *path)
{
  bson_iter_t it, f;
  if (d && bson_iter_init(&it, d) && bson_iter_find_descendant(&it, path, &f)) {
    return bson_iter_type(&f);
  }
  return BSON_TYPE_EOD;
}

static bson_t *watch_opts(const char *extra_json)
{
  bson_t *opts = bson_new();
  BSON_APPEND_INT64(opts, "maxAwaitTimeMS", 100);
  if (extra_json) {
    bson_error_t err;
    bson_t *x = bson_new_from_json((const uint8_t *)extra_json, -1, &err);
    if (x) {
      bson_concat(opts, x);
      bson_destroy(x);
    }
  }
  return opts;
}

static mongoc_change_stream_t *watch_coll(const char *db, const char *coll,
                                          const char *pipeline_json, bson_t *opts)
{
  bson_error_t err;
  bson_t *pipeline =
      pipeline_json ? bson_new_from_json((const uint8_t *)pipeline_json, -1, &err) : bson_new();
  mongoc_collection_t *c = mongoc_client_get_collection(reader, db, coll);
  mongoc_change_stream_t *cs = mongoc_collection_watch(c, pipeline, opts);
  mongoc_collection_destroy(c);
  bson_destroy(pipeline);
  return cs;
}

/*
 * Waits up to timeout_ms for the next event. Returns a copy (caller frees)
 * or NULL; *err_code is set to the error code on a stream error, else 0.
 */
static bson_t *next_event(mongoc_change_stream_t *cs, int timeout_ms, int *err_code)
{
  int64_t deadline = now_ms() + timeout_ms;
  const bson_t *ev;
  bson_error_t err;
  const bson_t *edoc;
  *err_code = 0;
  do {
    if (mongoc_change_stream_next(cs, &ev)) {
      return bson_copy(ev);
    }
    if (mongoc_change_stream_error_document(cs, &err, &edoc)) {
      *err_code = (int)err.code ? (int)err.code : -1;
      return NULL;
    }
  } while (now_ms() < deadline);
  return NULL;
}

/* Reads the next event and checks its operationType. */
static bson_t *expect_event(mongoc_change_stream_t *cs, const char *op)
{
  int code;
  bson_t *ev = next_event(cs, 5000, &code);
  CU_ASSERT_PTR_NOT_NULL(ev);
  CU_ASSERT_EQUAL(code, 0);
  if (!ev) {
    fprintf(stderr, "  expected %s, got nothing (error %d)\n", op, code);
    return NULL;
  }
  const char *got = get_str(ev, "operationType");
  if (!got || strcmp(got, op) != 0) {
    char *js = bson_as_relaxed_extended_json(ev, NULL);
    fprintf(stderr, "  expected %s, got %s\n", op, js);
    bson_free(js);
  }
  STR_EQ(got, op);
  return ev;
}

static int stream_error_code(mongoc_change_stream_t *cs)
{
  bson_error_t err;
  const bson_t *edoc;
  if (mongoc_change_stream_error_document(cs, &err, &edoc)) {
    return (int)err.code;
  }
  return 0;
}

static bson_t *token_of(const bson_t *ev)
{
  bson_iter_t it;
  bson_t *tok = bson_new();
  if (ev && bson_iter_init_find(&it, ev, "_id") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    const uint8_t *data;
    uint32_t len;
    bson_iter_document(&it, &len, &data);
    bson_destroy(tok);
    tok = bson_new_from_data(data, len);
  }
  return tok;
}

static bson_t *opts_with_doc(const char *key, const bson_t *doc)
{
  bson_t *o = watch_opts(NULL);
  BSON_APPEND_DOCUMENT(o, key, doc);
  return o;
}

/* --------------------------------------------------------------- the tests */

static void test_crud(void)
{
  bson_error_t err;
  bson_t reply;
  mongoc_collection_t *c = mongoc_client_get_collection(writer, "crud", "items");
  CU_ASSERT(insert_doc("crud", "items", "{\"_id\": 1, \"a\": 1, \"tags\": [\"x\", \"y\"]}"));
  CU_ASSERT(insert_doc("crud", "items", "{\"_id\": 2, \"a\": 2}"));
  CU_ASSERT(insert_doc("crud", "items", "{\"a\": 3}")); /* ObjectId _id. */

  /* Duplicate key. */
  bson_t *dup = BCON_NEW("_id", BCON_INT32(1));
  CU_ASSERT_FALSE(mongoc_collection_insert_one(c, dup, NULL, NULL, &err));
  CU_ASSERT_EQUAL(err.code, 11000);
  bson_destroy(dup);

  /* Update by _id with $set/$inc/$unset. */
  bson_t *q = BCON_NEW("_id", BCON_INT32(1));
  bson_t *u =
      BCON_NEW("$set", "{", "b.c", BCON_UTF8("hi"), "}", "$inc", "{", "a", BCON_INT32(10), "}");
  CU_ASSERT(mongoc_collection_update_one(c, q, u, NULL, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "modifiedCount", -1), 1);
  bson_destroy(&reply);
  bson_destroy(u);

  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, q, NULL, NULL);
  const bson_t *d;
  CU_ASSERT(mongoc_cursor_next(cur, &d));
  CU_ASSERT_EQUAL(get_int(d, "a", 0), 11);
  STR_EQ(get_str(d, "b.c"), "hi");
  mongoc_cursor_destroy(cur);

  /* Replacement. */
  bson_t *r = BCON_NEW("z", BCON_INT32(9));
  CU_ASSERT(mongoc_collection_replace_one(c, q, r, NULL, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "modifiedCount", -1), 1);
  bson_destroy(&reply);
  bson_destroy(r);
  cur = mongoc_collection_find_with_opts(c, q, NULL, NULL);
  CU_ASSERT(mongoc_cursor_next(cur, &d));
  CU_ASSERT_EQUAL(get_int(d, "z", 0), 9);
  CU_ASSERT_FALSE(has_field(d, "a"));
  mongoc_cursor_destroy(cur);

  /* Filter find with $in and count through the cursor. */
  bson_t *f = BCON_NEW("a", "{", "$in", "[", BCON_INT32(2), BCON_INT32(3), "]", "}");
  cur = mongoc_collection_find_with_opts(c, f, NULL, NULL);
  int n = 0;
  while (mongoc_cursor_next(cur, &d)) {
    n++;
  }
  CU_ASSERT_FALSE(mongoc_cursor_error(cur, &err));
  CU_ASSERT_EQUAL(n, 2);
  mongoc_cursor_destroy(cur);
  bson_destroy(f);

  /* Upsert. */
  bson_t *q7 = BCON_NEW("_id", BCON_INT32(7));
  bson_t *u7 = BCON_NEW("$set", "{", "v", BCON_INT32(1), "}");
  bson_t *uo = BCON_NEW("upsert", BCON_BOOL(true));
  CU_ASSERT(mongoc_collection_update_one(c, q7, u7, uo, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "upsertedCount", -1), 1);
  bson_destroy(&reply);
  bson_destroy(q7);
  bson_destroy(u7);
  bson_destroy(uo);

  /* Delete. */
  CU_ASSERT(mongoc_collection_delete_one(c, q, NULL, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "deletedCount", -1), 1);
  bson_destroy(&reply);
  cur = mongoc_collection_find_with_opts(c, q, NULL, NULL);
  CU_ASSERT_FALSE(mongoc_cursor_next(cur, &d));
  mongoc_cursor_destroy(cur);
  bson_destroy(q);

  /* Unknown command. */
  bson_t *bad = BCON_NEW("noSuchCommand", BCON_INT32(1));
  CU_ASSERT_FALSE(mongoc_client_command_simple(writer, "admin", bad, NULL, NULL, &err));
  CU_ASSERT_EQUAL(err.code, 59);
  bson_destroy(bad);
  mongoc_collection_destroy(c);
}

static void test_collection_stream(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("app", "users", NULL, opts);
  bson_destroy(opts);
  CU_ASSERT_EQUAL(stream_error_code(cs), 0);
  /* A write to another collection must not show up. */
  CU_ASSERT(insert_doc("app", "other", "{\"_id\": 1}"));
  CU_ASSERT(insert_doc("app", "users", "{\"_id\": 1, \"name\": \"ann\", \"age\": 30}"));

  mongoc_collection_t *c = mongoc_client_get_collection(writer, "app", "users");
  bson_error_t err;
  bson_t *q = BCON_NEW("_id", BCON_INT32(1));
  bson_t *u = BCON_NEW("$set", "{", "name", BCON_UTF8("bob"), "}", "$unset", "{", "age",
                       BCON_INT32(1), "}");
  CU_ASSERT(mongoc_collection_update_one(c, q, u, NULL, NULL, &err));
  bson_t *r = BCON_NEW("name", BCON_UTF8("cy"));
  CU_ASSERT(mongoc_collection_replace_one(c, q, r, NULL, NULL, &err));
  CU_ASSERT(mongoc_collection_delete_one(c, q, NULL, NULL, &err));
  bson_destroy(q);
  bson_destroy(u);
  bson_destroy(r);
  mongoc_collection_destroy(c);

  bson_t *ev = expect_event(cs, "insert");
  if (ev) {
    STR_EQ(get_str(ev, "ns.db"), "app");
    STR_EQ(get_str(ev, "ns.coll"), "users");
    CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 1);
    STR_EQ(get_str(ev, "fullDocument.name"), "ann");
    CU_ASSERT_EQUAL(field_type(ev, "_id"), BSON_TYPE_DOCUMENT);
    CU_ASSERT_EQUAL(field_type(ev, "_id._data"), BSON_TYPE_UTF8);
    CU_ASSERT_EQUAL(field_type(ev, "clusterTime"), BSON_TYPE_TIMESTAMP);
    CU_ASSERT_EQUAL(field_type(ev, "wallTime"), BSON_TYPE_DATE_TIME);
    /* The stream's cached token follows the events. */
    const bson_t *tok = mongoc_change_stream_get_resume_token(cs);
    CU_ASSERT_PTR_NOT_NULL(tok);
    STR_EQ(get_str(tok, "_data"), get_str(ev, "_id._data"));
  }
  bson_destroy(ev);
  ev = expect_event(cs, "update");
  if (ev) {
    STR_EQ(get_str(ev, "updateDescription.updatedFields.name"), "bob");
    STR_EQ(get_str(ev, "updateDescription.removedFields.0"), "age");
    CU_ASSERT_EQUAL(field_type(ev, "updateDescription.truncatedArrays"), BSON_TYPE_ARRAY);
    CU_ASSERT_FALSE(has_field(ev, "fullDocument"));
    CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 1);
  }
  bson_destroy(ev);
  ev = expect_event(cs, "replace");
  if (ev) {
    STR_EQ(get_str(ev, "fullDocument.name"), "cy");
    CU_ASSERT_EQUAL(get_int(ev, "fullDocument._id", 0), 1);
  }
  bson_destroy(ev);
  ev = expect_event(cs, "delete");
  if (ev) {
    CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 1);
    CU_ASSERT_FALSE(has_field(ev, "fullDocument"));
  }
  bson_destroy(ev);
  int code;
  ev = next_event(cs, 300, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 0);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);
}

static void test_update_lookup(void)
{
  bson_t *opts = watch_opts("{\"fullDocument\": \"updateLookup\"}");
  mongoc_change_stream_t *cs = watch_coll("app", "lookup", NULL, opts);
  bson_destroy(opts);
  CU_ASSERT(insert_doc("app", "lookup", "{\"_id\": 5, \"v\": 1}"));
  mongoc_collection_t *c = mongoc_client_get_collection(writer, "app", "lookup");
  bson_error_t err;
  bson_t *q = BCON_NEW("_id", BCON_INT32(5));
  bson_t *u = BCON_NEW("$set", "{", "v", BCON_INT32(2), "}");
  CU_ASSERT(mongoc_collection_update_one(c, q, u, NULL, NULL, &err));
  bson_destroy(q);
  bson_destroy(u);
  mongoc_collection_destroy(c);
  bson_destroy(expect_event(cs, "insert"));
  bson_t *ev = expect_event(cs, "update");
  CU_ASSERT_EQUAL(get_int(ev, "fullDocument.v", 0), 2);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);
}

static void test_resume(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("app", "resume", NULL, opts);
  bson_destroy(opts);
  CU_ASSERT(insert_doc("app", "resume", "{\"_id\": 1}"));
  CU_ASSERT(insert_doc("app", "resume", "{\"_id\": 2}"));
  CU_ASSERT(insert_doc("app", "resume", "{\"_id\": 3}"));
  bson_t *ev1 = expect_event(cs, "insert");
  bson_t *ev2 = expect_event(cs, "insert");
  mongoc_change_stream_destroy(cs);
  bson_t *tok = token_of(ev1);
  CU_ASSERT(insert_doc("app", "resume", "{\"_id\": 4}"));

  /* resumeAfter the first event: events 2, 3, 4. */
  opts = opts_with_doc("resumeAfter", tok);
  cs = watch_coll("app", "resume", NULL, opts);
  bson_destroy(opts);
  for (int id = 2; id <= 4; id++) {
    bson_t *ev = expect_event(cs, "insert");
    CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), id);
    bson_destroy(ev);
  }
  mongoc_change_stream_destroy(cs);

  /* startAfter works the same for an ordinary token. */
  opts = opts_with_doc("startAfter", tok);
  cs = watch_coll("app", "resume", NULL, opts);
  bson_destroy(opts);
  bson_t *ev = expect_event(cs, "insert");
  CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 2);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);

  /* startAtOperationTime = clusterTime of event 2 includes event 2. */
  bson_iter_t it;
  uint32_t t = 0, i = 0;
  if (bson_iter_init_find(&it, ev2, "clusterTime")) {
    bson_iter_timestamp(&it, &t, &i);
  }
  opts = watch_opts(NULL);
  BSON_APPEND_TIMESTAMP(opts, "startAtOperationTime", t, i);
  cs = watch_coll("app", "resume", NULL, opts);
  bson_destroy(opts);
  ev = expect_event(cs, "insert");
  CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 2);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);

  /* An unparseable token fails with InvalidResumeToken. */
  bson_t *bad = BCON_NEW("_data", BCON_UTF8("nonsense"));
  opts = opts_with_doc("resumeAfter", bad);
  cs = watch_coll("app", "resume", NULL, opts);
  bson_destroy(opts);
  bson_destroy(bad);
  int code;
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 260);
  mongoc_change_stream_destroy(cs);

  bson_destroy(tok);
  bson_destroy(ev1);
  bson_destroy(ev2);
}

static void test_history_lost(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("app", "hist", NULL, opts);
  bson_destroy(opts);
  CU_ASSERT(insert_doc("app", "hist", "{\"_id\": 1}"));
  CU_ASSERT(insert_doc("app", "hist", "{\"_id\": 2}"));
  bson_t *ev = expect_event(cs, "insert");
  bson_t *tok = token_of(ev);
  bson_destroy(ev);
  /* The stream itself keeps working across a truncation: it is at the head. */
  bson_destroy(expect_event(cs, "insert"));
  CU_ASSERT(fault("{\"cdcacheFault\": \"truncateOplog\"}"));
  CU_ASSERT(insert_doc("app", "hist", "{\"_id\": 3}"));
  ev = expect_event(cs, "insert");
  CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 3);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);

  opts = opts_with_doc("resumeAfter", tok);
  cs = watch_coll("app", "hist", NULL, opts);
  bson_destroy(opts);
  int code;
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 286);
  bson_error_t err;
  const bson_t *edoc;
  CU_ASSERT(mongoc_change_stream_error_document(cs, &err, &edoc));
  STR_EQ(get_str(edoc, "codeName"), "ChangeStreamHistoryLost");
  mongoc_change_stream_destroy(cs);
  bson_destroy(tok);
}

static void test_oplog_overflow(void)
{
  /* A second server with a five-event oplog. */
  server_t small;
  CU_ASSERT_FATAL(start_server(&small, 5));
  mongoc_client_t *cl = new_client(&small);
  mongoc_collection_t *c = mongoc_client_get_collection(cl, "db", "c");
  mongoc_change_stream_t *cs = mongoc_collection_watch(c, &(bson_t)BSON_INITIALIZER, NULL);
  bson_error_t err;
  for (int i = 0; i < 3; i++) {
    bson_t *d = BCON_NEW("_id", BCON_INT32(i));
    CU_ASSERT(mongoc_collection_insert_one(c, d, NULL, NULL, &err));
    bson_destroy(d);
  }
  int code;
  bson_t *ev = next_event(cs, 2000, &code);
  CU_ASSERT_PTR_NOT_NULL(ev);
  bson_t *tok = token_of(ev);
  bson_destroy(ev);
  /* The open stream is now behind; ten more writes overrun it. */
  for (int i = 3; i < 13; i++) {
    bson_t *d = BCON_NEW("_id", BCON_INT32(i));
    CU_ASSERT(mongoc_collection_insert_one(c, d, NULL, NULL, &err));
    bson_destroy(d);
  }
  /* The first getMore returned events 1-3, so up to two more are buffered in
   * libmongoc; the next getMore finds that the cursor was overrun. */
  int seen = 0;
  while ((ev = next_event(cs, 2000, &code)) != NULL) {
    seen++;
    bson_destroy(ev);
  }
  CU_ASSERT_EQUAL(code, 286);
  CU_ASSERT(seen <= 2);
  mongoc_change_stream_destroy(cs);

  bson_t *opts = BCON_NEW("resumeAfter", BCON_DOCUMENT(tok));
  cs = mongoc_collection_watch(c, &(bson_t)BSON_INITIALIZER, opts);
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 286);
  mongoc_change_stream_destroy(cs);
  bson_destroy(opts);

  /* A token of another server instance reports lost history too. */
  mongoc_collection_t *mc = mongoc_client_get_collection(reader, "app", "users");
  opts = BCON_NEW("resumeAfter", BCON_DOCUMENT(tok));
  cs = mongoc_collection_watch(mc, &(bson_t)BSON_INITIALIZER, opts);
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 286);
  mongoc_change_stream_destroy(cs);
  mongoc_collection_destroy(mc);
  bson_destroy(opts);

  bson_destroy(tok);
  mongoc_collection_destroy(c);
  mongoc_client_destroy(cl);
  CU_ASSERT_EQUAL(stop_server(&small), 0);
}

static void test_drop_invalidate(void)
{
  CU_ASSERT(insert_doc("app", "dropme", "{\"_id\": 1}"));
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("app", "dropme", NULL, opts);
  bson_destroy(opts);
  CU_ASSERT(insert_doc("app", "dropme", "{\"_id\": 2}"));
  mongoc_collection_t *c = mongoc_client_get_collection(writer, "app", "dropme");
  bson_error_t err;
  CU_ASSERT(mongoc_collection_drop(c, &err));
  bson_destroy(expect_event(cs, "insert"));
  bson_t *ev = expect_event(cs, "drop");
  STR_EQ(get_str(ev, "ns.coll"), "dropme");
  bson_destroy(ev);
  bson_t *inv = expect_event(cs, "invalidate");
  CU_ASSERT_FALSE(has_field(inv, "ns"));
  int code;
  ev = next_event(cs, 300, &code);
  CU_ASSERT_PTR_NULL(ev);
  mongoc_change_stream_destroy(cs);

  bson_t *tok = token_of(inv);
  /* resumeAfter an invalidate token is refused. */
  opts = opts_with_doc("resumeAfter", tok);
  cs = watch_coll("app", "dropme", NULL, opts);
  bson_destroy(opts);
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 260);
  mongoc_change_stream_destroy(cs);

  /* startAfter it works and sees the recreated collection. */
  opts = opts_with_doc("startAfter", tok);
  cs = watch_coll("app", "dropme", NULL, opts);
  bson_destroy(opts);
  CU_ASSERT(insert_doc("app", "dropme", "{\"_id\": 3}"));
  ev = expect_event(cs, "insert");
  CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 3);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);
  bson_destroy(tok);
  bson_destroy(inv);
  mongoc_collection_destroy(c);

  /* Dropping a missing collection is reported by libmongoc as an error or success; it must not
   * crash. */
  c = mongoc_client_get_collection(writer, "app", "never-existed");
  mongoc_collection_drop(c, &err);
  mongoc_collection_destroy(c);
}

static void test_rename(void)
{
  CU_ASSERT(insert_doc("ren", "a", "{\"_id\": 1}"));
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("ren", "a", NULL, opts);
  mongoc_database_t *db = mongoc_client_get_database(reader, "ren");
  mongoc_change_stream_t *dbs = mongoc_database_watch(db, &(bson_t)BSON_INITIALIZER, opts);
  bson_destroy(opts);
  mongoc_collection_t *c = mongoc_client_get_collection(writer, "ren", "a");
  bson_error_t err;
  CU_ASSERT(mongoc_collection_rename(c, "ren", "b", false, &err));
  bson_t *ev = expect_event(cs, "rename");
  STR_EQ(get_str(ev, "ns.coll"), "a");
  STR_EQ(get_str(ev, "to.db"), "ren");
  STR_EQ(get_str(ev, "to.coll"), "b");
  bson_destroy(ev);
  bson_destroy(expect_event(cs, "invalidate"));
  /* The database stream sees the rename and goes on. */
  bson_destroy(expect_event(dbs, "rename"));
  CU_ASSERT(insert_doc("ren", "b", "{\"_id\": 2}"));
  ev = expect_event(dbs, "insert");
  STR_EQ(get_str(ev, "ns.coll"), "b");
  bson_destroy(ev);
  /* The document moved with the collection. */
  mongoc_collection_t *b = mongoc_client_get_collection(writer, "ren", "b");
  bson_t *q = BCON_NEW("_id", BCON_INT32(1));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(b, q, NULL, NULL);
  const bson_t *d;
  CU_ASSERT(mongoc_cursor_next(cur, &d));
  mongoc_cursor_destroy(cur);
  bson_destroy(q);
  mongoc_collection_destroy(b);
  mongoc_collection_destroy(c);
  mongoc_change_stream_destroy(cs);
  mongoc_change_stream_destroy(dbs);
  mongoc_database_destroy(db);
}

static void test_database_stream(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_database_t *db = mongoc_client_get_database(reader, "dbw");
  mongoc_change_stream_t *cs = mongoc_database_watch(db, &(bson_t)BSON_INITIALIZER, opts);
  mongoc_collection_t *other = mongoc_client_get_collection(reader, "dbw", "x");
  mongoc_change_stream_t *coll_cs = mongoc_collection_watch(other, &(bson_t)BSON_INITIALIZER, opts);
  bson_destroy(opts);
  CU_ASSERT_EQUAL(stream_error_code(cs), 0);
  CU_ASSERT(insert_doc("dbw", "x", "{\"_id\": 1}"));
  CU_ASSERT(insert_doc("otherdb", "x", "{\"_id\": 1}"));
  CU_ASSERT(insert_doc("dbw", "y", "{\"_id\": 2}"));
  bson_t *ev = expect_event(cs, "insert");
  STR_EQ(get_str(ev, "ns.coll"), "x");
  bson_destroy(ev);
  ev = expect_event(cs, "insert");
  STR_EQ(get_str(ev, "ns.coll"), "y");
  STR_EQ(get_str(ev, "ns.db"), "dbw");
  bson_destroy(ev);

  mongoc_database_t *wdb = mongoc_client_get_database(writer, "dbw");
  bson_error_t err;
  CU_ASSERT(mongoc_database_drop(wdb, &err));
  mongoc_database_destroy(wdb);
  bson_destroy(expect_event(cs, "drop"));
  bson_destroy(expect_event(cs, "drop"));
  bson_destroy(expect_event(cs, "dropDatabase"));
  bson_destroy(expect_event(cs, "invalidate"));
  /* The collection stream: insert, drop, invalidate. */
  bson_destroy(expect_event(coll_cs, "insert"));
  bson_destroy(expect_event(coll_cs, "drop"));
  bson_destroy(expect_event(coll_cs, "invalidate"));
  mongoc_change_stream_destroy(coll_cs);
  mongoc_collection_destroy(other);
  mongoc_change_stream_destroy(cs);
  mongoc_database_destroy(db);
}

static void test_cluster_stream(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = mongoc_client_watch(reader, &(bson_t)BSON_INITIALIZER, opts);
  bson_destroy(opts);
  CU_ASSERT_EQUAL(stream_error_code(cs), 0);
  CU_ASSERT(insert_doc("c1", "x", "{\"_id\": 1}"));
  CU_ASSERT(insert_doc("c2", "y", "{\"_id\": 2}"));
  bson_t *ev = expect_event(cs, "insert");
  STR_EQ(get_str(ev, "ns.db"), "c1");
  bson_destroy(ev);
  ev = expect_event(cs, "insert");
  STR_EQ(get_str(ev, "ns.db"), "c2");
  STR_EQ(get_str(ev, "ns.coll"), "y");
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);

  /* A database-level watch on admin is refused. */
  mongoc_database_t *admin = mongoc_client_get_database(reader, "admin");
  opts = watch_opts(NULL);
  cs = mongoc_database_watch(admin, &(bson_t)BSON_INITIALIZER, opts);
  bson_destroy(opts);
  int code;
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 73);
  mongoc_change_stream_destroy(cs);
  mongoc_database_destroy(admin);
}

static void test_pipeline(void)
{
  const char *pipeline =
      "{\"pipeline\": ["
      " {\"$match\": {\"$or\": ["
      "   {\"operationType\": {\"$in\": [\"delete\"]}},"
      "   {\"$and\": [{\"fullDocument.kind\": \"keep\"}, {\"fullDocument.x\": {\"$exists\": "
      "true}}]}"
      " ]}},"
      " {\"$project\": {\"operationType\": 1, \"documentKey._id\": 1, \"fullDocument.x\": 1}}"
      "]}";
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("app", "pipe", pipeline, opts);
  bson_destroy(opts);
  CU_ASSERT_EQUAL(stream_error_code(cs), 0);
  CU_ASSERT(insert_doc("app", "pipe", "{\"_id\": 1, \"kind\": \"drop\", \"x\": 1}"));
  CU_ASSERT(insert_doc("app", "pipe", "{\"_id\": 2, \"kind\": \"keep\"}"));
  CU_ASSERT(insert_doc("app", "pipe", "{\"_id\": 3, \"kind\": \"keep\", \"x\": 3, \"y\": 4}"));
  mongoc_collection_t *c = mongoc_client_get_collection(writer, "app", "pipe");
  bson_error_t err;
  bson_t *q = BCON_NEW("_id", BCON_INT32(1));
  CU_ASSERT(mongoc_collection_delete_one(c, q, NULL, NULL, &err));
  bson_destroy(q);
  mongoc_collection_destroy(c);

  bson_t *ev = expect_event(cs, "insert");
  CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 3);
  CU_ASSERT_EQUAL(get_int(ev, "fullDocument.x", 0), 3);
  CU_ASSERT_FALSE(has_field(ev, "fullDocument.y"));
  CU_ASSERT_FALSE(has_field(ev, "fullDocument.kind"));
  CU_ASSERT_FALSE(has_field(ev, "ns"));
  CU_ASSERT_FALSE(has_field(ev, "clusterTime"));
  CU_ASSERT(has_field(ev, "_id._data"));
  bson_destroy(ev);
  ev = expect_event(cs, "delete");
  CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", 0), 1);
  bson_destroy(ev);
  mongoc_change_stream_destroy(cs);

  /* An unsupported stage is an error. */
  opts = watch_opts(NULL);
  cs = watch_coll("app", "pipe", "{\"pipeline\": [{\"$group\": {\"_id\": 1}}]}", opts);
  bson_destroy(opts);
  int code;
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_NOT_EQUAL(code, 0);
  mongoc_change_stream_destroy(cs);
}

/* Writes ids [from, to) and checks that the stream delivers exactly them. */
static void write_and_expect(mongoc_change_stream_t *cs, const char *coll, int from, int to)
{
  for (int i = from; i < to; i++) {
    char js[64];
    snprintf(js, sizeof js, "{\"_id\": %d}", i);
    CU_ASSERT(insert_doc("faults", coll, js));
  }
  for (int i = from; i < to; i++) {
    bson_t *ev = expect_event(cs, "insert");
    CU_ASSERT_EQUAL(get_int(ev, "documentKey._id", -1), i);
    bson_destroy(ev);
  }
}

static void test_fault_drop_connections(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("faults", "drop", NULL, opts);
  bson_destroy(opts);
  write_and_expect(cs, "drop", 0, 2);
  CU_ASSERT(fault("{\"cdcacheFault\": \"dropConnections\"}"));
  /* libmongoc notices the dead connection on the next getMore and resumes. */
  write_and_expect(cs, "drop", 2, 5);
  CU_ASSERT(fault("{\"cdcacheFault\": \"dropConnections\"}"));
  write_and_expect(cs, "drop", 5, 6);
  CU_ASSERT_EQUAL(stream_error_code(cs), 0);
  mongoc_change_stream_destroy(cs);
}

static void test_fault_fail_getmore(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("faults", "fail", NULL, opts);
  bson_destroy(opts);
  write_and_expect(cs, "fail", 0, 1);

  /* With the resumable label: transparent. */
  CU_ASSERT(fault("{\"cdcacheFault\": \"failCommands\", \"commands\": [\"getMore\"], \"times\": 1,"
                  " \"code\": 11602, \"errorLabels\": [\"ResumableChangeStreamError\"]}"));
  write_and_expect(cs, "fail", 1, 3);
  /* CursorNotFound without label: transparent. */
  CU_ASSERT(fault("{\"cdcacheFault\": \"failCommands\", \"commands\": \"getMore\", \"code\": 43}"));
  write_and_expect(cs, "fail", 3, 4);
  /* Connection closed instead of a reply: transparent. */
  CU_ASSERT(fault("{\"cdcacheFault\": \"failCommands\", \"commands\": [\"getMore\"], "
                  "\"closeConnection\": true}"));
  write_and_expect(cs, "fail", 4, 5);
  /* MongoDB's configureFailPoint syntax works too. */
  CU_ASSERT(fault("{\"configureFailPoint\": \"failCommand\", \"mode\": {\"times\": 1}, \"data\": {"
                  "\"failCommands\": [\"getMore\"], \"errorCode\": 6, \"errorLabels\": "
                  "[\"ResumableChangeStreamError\"]}}"));
  write_and_expect(cs, "fail", 5, 6);
  CU_ASSERT_EQUAL(stream_error_code(cs), 0);

  /* Without the label at wire version 17: the error reaches the application. */
  CU_ASSERT(
      fault("{\"cdcacheFault\": \"failCommands\", \"commands\": [\"getMore\"], \"code\": 11602}"));
  CU_ASSERT(insert_doc("faults", "fail", "{\"_id\": 100}"));
  int code;
  bson_t *ev = next_event(cs, 2000, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 11602);
  mongoc_change_stream_destroy(cs);

  /* A failing aggregate (history lost) is reported at once. */
  CU_ASSERT(
      fault("{\"cdcacheFault\": \"failCommands\", \"commands\": [\"aggregate\"], \"code\": 286}"));
  opts = watch_opts(NULL);
  cs = watch_coll("faults", "fail", NULL, opts);
  bson_destroy(opts);
  ev = next_event(cs, 200, &code);
  CU_ASSERT_PTR_NULL(ev);
  CU_ASSERT_EQUAL(code, 286);
  mongoc_change_stream_destroy(cs);
  CU_ASSERT(fault("{\"cdcacheFault\": \"off\"}"));
}

static void test_fault_invalidate(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("faults", "inv", NULL, opts);
  bson_destroy(opts);
  write_and_expect(cs, "inv", 0, 1);
  CU_ASSERT(fault("{\"cdcacheFault\": \"invalidateStreams\"}"));
  bson_t *inv = expect_event(cs, "invalidate");
  bson_t *tok = token_of(inv);
  mongoc_change_stream_destroy(cs);
  /* startAfter the invalidate continues where the stream stopped. */
  opts = opts_with_doc("startAfter", tok);
  cs = watch_coll("faults", "inv", NULL, opts);
  bson_destroy(opts);
  write_and_expect(cs, "inv", 1, 2);
  mongoc_change_stream_destroy(cs);
  bson_destroy(tok);
  bson_destroy(inv);
}

static int64_t server_stat(const char *name);

static void test_fault_stall(void)
{
  bson_error_t err;
  bson_t *ping = BCON_NEW("ping", BCON_INT32(1));
  int64_t stalled = server_stat("stallMs");
  CU_ASSERT(fault("{\"cdcacheFault\": \"stall\", \"ms\": 600}"));
  int64_t t0 = now_ms();
  CU_ASSERT(mongoc_client_command_simple(reader, "admin", ping, NULL, NULL, &err));
  int64_t dt = now_ms() - t0;
  CU_ASSERT(dt >= 450);
  t0 = now_ms();
  CU_ASSERT(mongoc_client_command_simple(reader, "admin", ping, NULL, NULL, &err));
  CU_ASSERT(now_ms() - t0 < 450);
  CU_ASSERT_EQUAL(server_stat("stallMs"), stalled + 600);
  bson_destroy(ping);
}

static void test_bulk_and_stats(void)
{
  bson_t *opts = watch_opts("{\"batchSize\": 1000}");
  mongoc_change_stream_t *cs = watch_coll("perf", "bulk", NULL, opts);
  bson_destroy(opts);
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = BCON_NEW("cdcacheBulk", BCON_UTF8("bulk"), "db", BCON_UTF8("perf"), "n",
                         BCON_INT32(3000), "op", BCON_UTF8("mixed"), "idStart", BCON_INT32(0));
  CU_ASSERT(admin_cmd(writer, cmd, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "events", 0), 3000);
  CU_ASSERT_EQUAL(get_int(&reply, "inserted", 0), 1000);
  CU_ASSERT_EQUAL(get_int(&reply, "updated", 0), 1000);
  CU_ASSERT_EQUAL(get_int(&reply, "deleted", 0), 1000);
  bson_destroy(&reply);
  bson_destroy(cmd);
  int counts[3] = {0, 0, 0};
  int code = 0;
  bson_t *ev;
  while ((ev = next_event(cs, 1000, &code)) != NULL) {
    const char *op = get_str(ev, "operationType");
    counts[0] += op && !strcmp(op, "insert");
    counts[1] += op && !strcmp(op, "update");
    counts[2] += op && !strcmp(op, "delete");
    bson_destroy(ev);
    if (counts[0] + counts[1] + counts[2] == 3000) {
      break;
    }
  }
  CU_ASSERT_EQUAL(code, 0);
  CU_ASSERT_EQUAL(counts[0], 1000);
  CU_ASSERT_EQUAL(counts[1], 1000);
  CU_ASSERT_EQUAL(counts[2], 1000);
  mongoc_change_stream_destroy(cs);

  cmd = BCON_NEW("cdcacheBulk", BCON_UTF8("bulk"), "db", BCON_UTF8("perf"), "n", BCON_INT32(500),
                 "op", BCON_UTF8("insert"), "idStart", BCON_INT32(10000));
  CU_ASSERT(admin_cmd(writer, cmd, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "inserted", 0), 500);
  bson_destroy(&reply);
  bson_destroy(cmd);
  cmd = BCON_NEW("cdcacheBulk", BCON_UTF8("bulk"), "db", BCON_UTF8("perf"), "n", BCON_INT32(500),
                 "op", BCON_UTF8("update"), "idStart", BCON_INT32(10000));
  CU_ASSERT(admin_cmd(writer, cmd, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "updated", 0), 500);
  bson_destroy(&reply);
  bson_destroy(cmd);

  cmd = BCON_NEW("cdcacheStats", BCON_INT32(1));
  CU_ASSERT(admin_cmd(writer, cmd, &reply, &err));
  CU_ASSERT(get_int(&reply, "events", 0) >= 4000);
  CU_ASSERT(get_int(&reply, "connectionsOpen", 0) >= 2);
  CU_ASSERT(get_int(&reply, "connectionsTotal", 0) >= 2);
  CU_ASSERT(has_field(&reply, "openCursors"));
  bson_destroy(&reply);
  bson_destroy(cmd);

  /* Bad arguments are rejected. */
  cmd = BCON_NEW("cdcacheBulk", BCON_UTF8("bulk"), "n", BCON_INT32(1), "op", BCON_UTF8("bogus"));
  CU_ASSERT_FALSE(admin_cmd(writer, cmd, NULL, &err));
  bson_destroy(cmd);
}

typedef struct {
  mongoc_change_stream_t *cs;
  int64_t waited_ms;
} waiter_t;

static void *waiter_main(void *arg)
{
  waiter_t *w = arg;
  const bson_t *ev;
  int64_t t0 = now_ms();
  mongoc_change_stream_next(w->cs, &ev);
  w->waited_ms = now_ms() - t0;
  return NULL;
}

static void test_getmore_wait_does_not_block(void)
{
  /* A getMore waiting 1.5 s must not hold up another connection. */
  bson_t *opts = BCON_NEW("maxAwaitTimeMS", BCON_INT64(1500));
  mongoc_change_stream_t *cs = watch_coll("app", "idle", NULL, opts);
  bson_destroy(opts);
  const bson_t *ev;
  mongoc_change_stream_next(cs, &ev); /* Uses up the empty first batch. */
  waiter_t w = {cs, 0};
  pthread_t th;
  int64_t waits0 = server_stat("getMoreWaits");
  pthread_create(&th, NULL, waiter_main, &w);
  /* Ordered by the server's own counter, not a sleep: the getMore is
   * waiting before the ping is sent. */
  int64_t until = now_ms() + 1000;
  while (server_stat("getMoreWaits") <= waits0 && now_ms() < until) {
    usleep(2000);
  }
  CU_ASSERT(server_stat("getMoreWaits") > waits0);
  bson_t *ping = BCON_NEW("ping", BCON_INT32(1));
  bson_error_t err;
  int64_t t0 = now_ms();
  CU_ASSERT(mongoc_client_command_simple(writer, "admin", ping, NULL, NULL, &err));
  CU_ASSERT(now_ms() - t0 < 1000);
  bson_destroy(ping);
  pthread_join(th, NULL);
  CU_ASSERT(w.waited_ms >= 1000);
  mongoc_change_stream_destroy(cs);
}

/* failCommands with blockTimeMS holds the command the whole time: a write
 * (which wakes every waiting getMore) does not end it; "off" does, and the
 * command then fails as the rule says.  blockedNow counts it meanwhile. */
static void test_fault_block_until_off(void)
{
  bson_t *opts = watch_opts(NULL);
  mongoc_change_stream_t *cs = watch_coll("faults", "blk", NULL, opts);
  bson_destroy(opts);
  const bson_t *ev;
  mongoc_change_stream_next(cs, &ev); /* Uses up the empty first batch. */
  int64_t errors0 = server_stat("errorsSent");
  CU_ASSERT(fault("{\"cdcacheFault\": \"failCommands\", \"commands\": \"getMore\", "
                  "\"code\": 10334, \"blockTimeMS\": 60000, \"times\": 1}"));
  waiter_t w = {cs, 0};
  pthread_t th;
  pthread_create(&th, NULL, waiter_main, &w);
  int64_t until = now_ms() + 5000;
  while (server_stat("blockedNow") < 1 && now_ms() < until) {
    usleep(2000);
  }
  CU_ASSERT_EQUAL(server_stat("blockedNow"), 1);
  CU_ASSERT(insert_doc("faults", "blk", "{\"_id\": 1}"));
  usleep(300 * 1000); /* time for a wrongly woken getMore to answer */
  CU_ASSERT_EQUAL(server_stat("blockedNow"), 1);
  CU_ASSERT_EQUAL(server_stat("errorsSent"), errors0);
  CU_ASSERT(fault("{\"cdcacheFault\": \"off\"}"));
  pthread_join(th, NULL);
  CU_ASSERT(w.waited_ms >= 300 && w.waited_ms < 30000);
  CU_ASSERT_EQUAL(stream_error_code(cs), 10334);
  CU_ASSERT_EQUAL(server_stat("errorsSent"), errors0 + 1);
  CU_ASSERT_EQUAL(server_stat("blockedNow"), 0);
  mongoc_change_stream_destroy(cs);
}

static bool send_raw(int port, const void *data, size_t len)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (fd >= 0) {
      close(fd);
    }
    return false;
  }
  bool ok = send(fd, data, len, MSG_NOSIGNAL) == (ssize_t)len;
  /* The server must close the connection: read until EOF (with a timeout). */
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
  }
  close(fd);
  return ok && n == 0;
}

static void test_malformed_messages(void)
{
  /* A length below the header size. */
  uint8_t tiny[16] = {4, 0, 0, 0};
  CU_ASSERT(send_raw(srv.port, tiny, sizeof tiny));
  /* A length above 48 MB. */
  uint8_t huge[16] = {0, 0, 0, 0x7f, 1, 0, 0, 0, 0, 0, 0, 0, 0xdd, 7, 0, 0};
  CU_ASSERT(send_raw(srv.port, huge, sizeof huge));
  /* An OP_MSG whose document length points past the end. */
  uint8_t bad[26] = {26, 0, 0, 0, 1, 0, 0, 0, 0,    0, 0, 0, 0xdd,
                     7,  0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0};
  CU_ASSERT(send_raw(srv.port, bad, sizeof bad));
  /* An unknown opcode. */
  uint8_t unk[20] = {20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x39, 0x05, 0, 0, 0, 0, 0, 0};
  CU_ASSERT(send_raw(srv.port, unk, sizeof unk));
  /* The server is still fine. */
  bson_t *ping = BCON_NEW("ping", BCON_INT32(1));
  bson_error_t err;
  CU_ASSERT(admin_cmd(writer, ping, NULL, &err));
  bson_destroy(ping);
}

/* ------------------------------------------- batches, times, new faults */

static int64_t server_stat(const char *name)
{
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = BCON_NEW("cdcacheStats", BCON_INT32(1));
  int64_t v = -1;
  if (admin_cmd(writer, cmd, &reply, &err)) {
    v = get_int(&reply, name, -1);
  }
  bson_destroy(&reply);
  bson_destroy(cmd);
  return v;
}

/* Runs cmd on db through client c; the reply is copied to out. */
static bool db_cmd(mongoc_client_t *c, const char *db, const bson_t *cmd, bson_t *out,
                   bson_error_t *err)
{
  return mongoc_client_command_simple(c, db, cmd, NULL, out, err);
}

static int64_t batch_len(const bson_t *reply)
{
  bson_iter_t it, f, a;
  int64_t n = 0;
  if (bson_iter_init(&it, reply) &&
      (bson_iter_find_descendant(&it, "cursor.firstBatch", &f) ||
       (bson_iter_init(&it, reply) && bson_iter_find_descendant(&it, "cursor.nextBatch", &f))) &&
      bson_iter_recurse(&f, &a)) {
    while (bson_iter_next(&a)) {
      n++;
    }
  }
  return n;
}

static uint64_t ts_of(const bson_t *d, const char *path)
{
  bson_iter_t it, f;
  uint32_t t = 0, i = 0;
  if (bson_iter_init(&it, d) && bson_iter_find_descendant(&it, path, &f) &&
      BSON_ITER_HOLDS_TIMESTAMP(&f)) {
    bson_iter_timestamp(&f, &t, &i);
  }
  return ((uint64_t)t << 32) | i;
}

static void bulk_insert(const char *db, const char *coll, int n, int id_start)
{
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = BCON_NEW("cdcacheBulk", BCON_UTF8(coll), "db", BCON_UTF8(db), "n", BCON_INT32(n),
                         "op", BCON_UTF8("insert"), "idStart", BCON_INT32(id_start));
  CU_ASSERT(admin_cmd(writer, cmd, &reply, &err));
  CU_ASSERT_EQUAL(get_int(&reply, "events", 0), n);
  bson_destroy(&reply);
  bson_destroy(cmd);
}

/* batchSize on aggregate (default 101) and getMore (no count limit by
 * default), replies cut by a limit counted, operationTime and $clusterTime
 * in every reply. */
static void test_batches_and_times(void)
{
  bson_error_t err;
  bson_t reply;
  bson_t *agg = BCON_NEW("aggregate", BCON_UTF8("c"), "pipeline", "[", "{", "$changeStream", "{",
                         "}", "}", "]", "cursor", "{", "}");
  CU_ASSERT_FATAL(db_cmd(reader, "cut", agg, &reply, &err));
  int64_t id = get_int(&reply, "cursor.id", 0);
  bson_iter_t pit;
  bson_t *start = NULL;
  if (bson_iter_init(&pit, &reply) &&
      bson_iter_find_descendant(&pit, "cursor.postBatchResumeToken", &pit) &&
      BSON_ITER_HOLDS_DOCUMENT(&pit)) {
    const uint8_t *data;
    uint32_t len;
    bson_iter_document(&pit, &len, &data);
    start = bson_new_from_data(data, len);
  }
  CU_ASSERT_FATAL(start != NULL);
  CU_ASSERT(id != 0);
  CU_ASSERT_EQUAL(batch_len(&reply), 0);
  CU_ASSERT(field_type(&reply, "operationTime") == BSON_TYPE_TIMESTAMP);
  CU_ASSERT(field_type(&reply, "$clusterTime.clusterTime") == BSON_TYPE_TIMESTAMP);
  bson_destroy(&reply);
  bulk_insert("cut", "c", 250, 0);

  int64_t cut0 = server_stat("repliesCut");
  bson_t *gm = BCON_NEW("getMore", BCON_INT64(id), "collection", BCON_UTF8("c"), "batchSize",
                        BCON_INT32(100), "maxTimeMS", BCON_INT32(100));
  CU_ASSERT_FATAL(db_cmd(reader, "cut", gm, &reply, &err));
  CU_ASSERT_EQUAL(batch_len(&reply), 100);
  /* operationTime is the point read at: past the last event returned */
  CU_ASSERT(ts_of(&reply, "operationTime") > ts_of(&reply, "cursor.nextBatch.99.clusterTime"));
  CU_ASSERT(ts_of(&reply, "$clusterTime.clusterTime") == ts_of(&reply, "operationTime"));
  bson_destroy(&reply);
  CU_ASSERT_EQUAL(server_stat("repliesCut"), cut0 + 1);
  bson_destroy(gm);
  gm = BCON_NEW("getMore", BCON_INT64(id), "collection", BCON_UTF8("c"), "maxTimeMS",
                BCON_INT32(100));
  CU_ASSERT_FATAL(db_cmd(reader, "cut", gm, &reply, &err));
  CU_ASSERT_EQUAL(batch_len(&reply), 150); /* no count limit */
  CU_ASSERT(ts_of(&reply, "operationTime") == ts_of(&reply, "cursor.nextBatch.149.clusterTime"));
  bson_destroy(&reply);
  CU_ASSERT_EQUAL(server_stat("repliesCut"), cut0 + 1); /* it held everything */
  bson_destroy(gm);

  /* the first batch of an aggregate: 101 by default, cut */
  bson_destroy(agg);
  agg = BCON_NEW("aggregate", BCON_UTF8("c"), "pipeline", "[", "{", "$changeStream", "{",
                 "resumeAfter", BCON_DOCUMENT(start), "}", "}", "]", "cursor", "{", "}");
  bson_destroy(start);
  CU_ASSERT(db_cmd(reader, "cut", agg, &reply, &err));
  CU_ASSERT_EQUAL(batch_len(&reply), 101);
  bson_destroy(&reply);
  CU_ASSERT_EQUAL(server_stat("repliesCut"), cut0 + 2);
  bson_destroy(agg);

  /* a plain command carries both times as well, an error too */
  bson_t *ping = BCON_NEW("ping", BCON_INT32(1));
  CU_ASSERT(db_cmd(writer, "admin", ping, &reply, &err));
  CU_ASSERT(field_type(&reply, "operationTime") == BSON_TYPE_TIMESTAMP);
  CU_ASSERT(field_type(&reply, "$clusterTime.clusterTime") == BSON_TYPE_TIMESTAMP);
  bson_destroy(&reply);
  bson_destroy(ping);
}

/* 16 MiB: big events are cut by bytes, not count. */
static void test_reply_byte_limit(void)
{
  bson_error_t err;
  bson_t reply;
  bson_t *agg =
      BCON_NEW("aggregate", BCON_UTF8("big"), "pipeline", "[", "{", "$changeStream", "{",
               "fullDocument", BCON_UTF8("updateLookup"), "}", "}", "]", "cursor", "{", "}");
  CU_ASSERT_FATAL(db_cmd(reader, "cut", agg, &reply, &err));
  int64_t id = get_int(&reply, "cursor.id", 0);
  bson_destroy(&reply);
  bson_t *cmd =
      BCON_NEW("cdcacheBulk", BCON_UTF8("big"), "db", BCON_UTF8("cut"), "n", BCON_INT32(40), "op",
               BCON_UTF8("insert"), "idStart", BCON_INT32(0), "padBytes", BCON_INT32(1000000));
  CU_ASSERT(admin_cmd(writer, cmd, &reply, &err));
  bson_destroy(&reply);
  bson_destroy(cmd);
  int64_t cut0 = server_stat("repliesCut");
  bson_t *gm = BCON_NEW("getMore", BCON_INT64(id), "collection", BCON_UTF8("big"), "maxTimeMS",
                        BCON_INT32(100));
  CU_ASSERT_FATAL(db_cmd(reader, "cut", gm, &reply, &err));
  int64_t n = batch_len(&reply);
  CU_ASSERT(n >= 10 && n <= 16); /* ~1 MB each, under 16 MiB */
  CU_ASSERT(reply.len > 15 * 1000 * 1000 && reply.len <= 16 * 1024 * 1024);
  bson_destroy(&reply);
  CU_ASSERT_EQUAL(server_stat("repliesCut"), cut0 + 1);
  CU_ASSERT_FATAL(db_cmd(reader, "cut", gm, &reply, &err));
  CU_ASSERT(batch_len(&reply) >= 10);
  bson_destroy(&reply);
  bson_destroy(gm);
  bson_destroy(agg);
}

/* partition: change-stream connections hear nothing while writes on
 * other connections go on. */
static void test_fault_partition(void)
{
  bson_error_t err;
  bson_t reply;
  mongoc_client_t *cs = new_client(&srv);
  bson_t *agg = BCON_NEW("aggregate", BCON_UTF8("p"), "pipeline", "[", "{", "$changeStream", "{",
                         "}", "}", "]", "cursor", "{", "batchSize", BCON_INT32(2), "}");
  CU_ASSERT_FATAL(db_cmd(cs, "part", agg, &reply, &err));
  int64_t id = get_int(&reply, "cursor.id", 0);
  bson_destroy(&reply);
  int64_t held0 = server_stat("partitionHeld");
  int64_t ms0 = server_stat("partitionMs");
  CU_ASSERT(fault("{\"cdcacheFault\": \"partition\", \"ms\": 900, \"replyDelayMs\": 150}"));
  int64_t t0 = now_ms();
  bulk_insert("part", "p", 20, 0); /* writes go on */
  CU_ASSERT(now_ms() - t0 < 600);
  bson_t *gm = BCON_NEW("getMore", BCON_INT64(id), "collection", BCON_UTF8("p"), "batchSize",
                        BCON_INT32(2), "maxTimeMS", BCON_INT32(100));
  CU_ASSERT(db_cmd(cs, "part", gm, &reply, &err));
  CU_ASSERT(now_ms() - t0 >= 800);       /* held until the partition ended */
  CU_ASSERT_EQUAL(batch_len(&reply), 2); /* the backlog, cut */
  bson_destroy(&reply);
  /* the catch-up is slow: each cut reply waits replyDelayMs */
  int64_t t1 = now_ms();
  CU_ASSERT(db_cmd(cs, "part", gm, &reply, &err));
  CU_ASSERT_EQUAL(batch_len(&reply), 2);
  CU_ASSERT(now_ms() - t1 >= 140);
  bson_destroy(&reply);
  CU_ASSERT(server_stat("catchUpDelayed") >= 2);
  CU_ASSERT(server_stat("partitionHeld") > held0);
  CU_ASSERT_EQUAL(server_stat("partitionMs"), ms0 + 900);
  bson_destroy(gm);
  bson_destroy(agg);
  mongoc_client_destroy(cs);
}

/* election: hello says secondary; change-stream commands fail labelled. */
static void test_fault_election(void)
{
  bson_error_t err;
  bson_t reply;
  char uri[128];
  snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d/?directConnection=true", srv.port);
  mongoc_client_t *c = mongoc_client_new(uri);
  mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  int64_t err0 = server_stat("errorsSent");
  CU_ASSERT(fault("{\"cdcacheFault\": \"election\", \"seconds\": 30}"));
  bson_t *hello = BCON_NEW("hello", BCON_INT32(1));
  CU_ASSERT(db_cmd(c, "admin", hello, &reply, &err));
  bson_iter_t it;
  CU_ASSERT(bson_iter_init_find(&it, &reply, "isWritablePrimary") && !bson_iter_as_bool(&it));
  CU_ASSERT(bson_iter_init_find(&it, &reply, "secondary") && bson_iter_as_bool(&it));
  CU_ASSERT(!has_field(&reply, "primary"));
  bson_destroy(&reply);
  bson_t *agg = BCON_NEW("aggregate", BCON_UTF8("e"), "pipeline", "[", "{", "$changeStream", "{",
                         "}", "}", "]", "cursor", "{", "}");
  CU_ASSERT(!db_cmd(c, "el", agg, &reply, &err));
  CU_ASSERT_EQUAL(err.code, 10107);
  CU_ASSERT(mongoc_error_has_label(&reply, "ResumableChangeStreamError"));
  bson_destroy(&reply);
  bson_t *gm = BCON_NEW("getMore", BCON_INT64(12345), "collection", BCON_UTF8("e"));
  CU_ASSERT(!db_cmd(c, "el", gm, &reply, &err));
  CU_ASSERT_EQUAL(err.code, 11602);
  CU_ASSERT(mongoc_error_has_label(&reply, "ResumableChangeStreamError"));
  bson_destroy(&reply);
  CU_ASSERT(server_stat("errorsSent") >= err0 + 2);
  CU_ASSERT(server_stat("electionHellos") >= 1);
  CU_ASSERT(fault("{\"cdcacheFault\": \"off\"}"));
  CU_ASSERT(db_cmd(c, "el", agg, &reply, &err));
  bson_destroy(&reply);
  bson_destroy(gm);
  bson_destroy(agg);
  bson_destroy(hello);
  mongoc_client_destroy(c);
}

/* poison: every getMore fails with the code, without a label. */
static void test_fault_poison(void)
{
  bson_error_t err;
  bson_t reply;
  bson_t *agg = BCON_NEW("aggregate", BCON_UTF8("x"), "pipeline", "[", "{", "$changeStream", "{",
                         "}", "}", "]", "cursor", "{", "}");
  CU_ASSERT_FATAL(db_cmd(reader, "poison", agg, &reply, &err));
  int64_t id = get_int(&reply, "cursor.id", 0);
  bson_destroy(&reply);
  int64_t err0 = server_stat("errorsSent");
  CU_ASSERT(fault("{\"cdcacheFault\": \"poison\", \"code\": 10334}"));
  bson_t *gm = BCON_NEW("getMore", BCON_INT64(id), "collection", BCON_UTF8("x"), "maxTimeMS",
                        BCON_INT32(50));
  for (int i = 0; i < 3; i++) {
    CU_ASSERT(!db_cmd(reader, "poison", gm, &reply, &err));
    CU_ASSERT_EQUAL(err.code, 10334);
    CU_ASSERT(!mongoc_error_has_label(&reply, "ResumableChangeStreamError"));
    bson_destroy(&reply);
  }
  CU_ASSERT_EQUAL(server_stat("errorsSent"), err0 + 3);
  CU_ASSERT(fault("{\"cdcacheFault\": \"off\"}"));
  CU_ASSERT(db_cmd(reader, "poison", gm, &reply, &err));
  bson_destroy(&reply);
  bson_destroy(gm);
  bson_destroy(agg);
}

/* ------------------------------------------------------------------- main */

static int suite_init(void)
{
  if (!start_server(&srv, 100000)) {
    return 1;
  }
  reader = new_client(&srv);
  writer = new_client(&srv);
  return 0;
}

static int suite_clean(void)
{
  mongoc_client_destroy(reader);
  mongoc_client_destroy(writer);
  return stop_server(&srv) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-cdcache-mongo-test-server\n", argv[0]);
    return 2;
  }
  server_path = argv[1];
  signal(SIGPIPE, SIG_IGN);
  mongoc_init();
  if (CU_initialize_registry() != CUE_SUCCESS) {
    return 1;
  }
  CU_pSuite s = CU_add_suite("mongo_server", suite_init, suite_clean);
  CU_add_test(s, "crud", test_crud);
  CU_add_test(s, "collection stream events", test_collection_stream);
  CU_add_test(s, "fullDocument updateLookup", test_update_lookup);
  CU_add_test(s, "resume", test_resume);
  CU_add_test(s, "history lost after truncation", test_history_lost);
  CU_add_test(s, "oplog overflow (second server)", test_oplog_overflow);
  CU_add_test(s, "drop invalidates", test_drop_invalidate);
  CU_add_test(s, "rename", test_rename);
  CU_add_test(s, "database stream", test_database_stream);
  CU_add_test(s, "cluster stream", test_cluster_stream);
  CU_add_test(s, "$match and $project", test_pipeline);
  CU_add_test(s, "fault: drop connections", test_fault_drop_connections);
  CU_add_test(s, "fault: fail getMore", test_fault_fail_getmore);
  CU_add_test(s, "fault: invalidate streams", test_fault_invalidate);
  CU_add_test(s, "fault: stall", test_fault_stall);
  CU_add_test(s, "fault: blockTimeMS holds until off", test_fault_block_until_off);
  CU_add_test(s, "bulk and stats", test_bulk_and_stats);
  CU_add_test(s, "batchSize, cut replies, operationTime", test_batches_and_times);
  CU_add_test(s, "replies stop before 16 MiB", test_reply_byte_limit);
  CU_add_test(s, "fault: partition", test_fault_partition);
  CU_add_test(s, "fault: election", test_fault_election);
  CU_add_test(s, "fault: poison", test_fault_poison);
  CU_add_test(s, "getMore wait does not block others", test_getmore_wait_does_not_block);
  CU_add_test(s, "malformed messages", test_malformed_messages);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
  unsigned tests_failed = CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  mongoc_cleanup();
  return (failed || tests_failed) ? 1 : 0;
}
