/*
 * CDC unit tests that need no server: the _id rendering of every BSON
 * type, key-template and namespace parsing, and applying synthetic change
 * events to a cache through a subscription built without its thread.
 */
#include "cdc_internal.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ helpers */

static const char *render_doc(const bson_t *doc, char *buf, size_t cap)
{
  size_t n = 0;
  int rc = cdcache_id_render(bson_get_data(doc), doc->len, buf, cap, &n);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0)
    return "<error>";
  CU_ASSERT_EQUAL(n, strlen(buf));
  return buf;
}

#define CHECK_RENDER(append_stmt, expected)                                                        \
  do {                                                                                             \
    bson_t d = BSON_INITIALIZER;                                                                   \
    char out[512];                                                                                 \
    append_stmt;                                                                                   \
    CU_ASSERT_STRING_EQUAL(render_doc(&d, out, sizeof out), expected);                             \
    bson_destroy(&d);                                                                              \
  } while (0)

static void dec(bson_decimal128_t *d, const char *s)
{
  CU_ASSERT_FATAL(bson_decimal128_from_string(s, d));
}

/* ------------------------------------------------------------ idrender */

static void test_render_same_number_same_text(void)
{
  bson_decimal128_t d1;
  CHECK_RENDER(BSON_APPEND_INT32(&d, "_id", 1), "1");
  CHECK_RENDER(BSON_APPEND_INT64(&d, "_id", 1), "1");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 1.0), "1");
  dec(&d1, "1.00");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "1");
  dec(&d1, "1");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "1");
  CHECK_RENDER(BSON_APPEND_INT32(&d, "_id", -42), "-42");
  CHECK_RENDER(BSON_APPEND_INT64(&d, "_id", -42), "-42");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", -42.0), "-42");
  dec(&d1, "-4.2E+1");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "-42");
  CHECK_RENDER(BSON_APPEND_INT64(&d, "_id", INT64_MIN), "-9223372036854775808");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 4611686018427387904.0), "4611686018427387904");
  CHECK_RENDER(BSON_APPEND_INT64(&d, "_id", 4611686018427387904LL), "4611686018427387904");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 1e20), "100000000000000000000");
  dec(&d1, "1E+20");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "100000000000000000000");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", -0.0), "0");
  dec(&d1, "-0.000");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "0");
  CHECK_RENDER(BSON_APPEND_INT32(&d, "_id", 0), "0");
}

static void test_render_non_integral(void)
{
  bson_decimal128_t d1;
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 0.1), "0.1");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 1.5), "1.5");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", -2.25), "-2.25");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 1.5e-7), "1.5e-07");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", 0.1 + 0.2), "0.30000000000000004");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", NAN), "NaN");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", INFINITY), "Infinity");
  CHECK_RENDER(BSON_APPEND_DOUBLE(&d, "_id", -INFINITY), "-Infinity");
  dec(&d1, "1.5");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "1.5");
  dec(&d1, "1.50");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "1.50");
  dec(&d1, "NaN");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "NaN");
  dec(&d1, "-Infinity");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "-Infinity");
  dec(&d1, "1.25E-10");
  CHECK_RENDER(BSON_APPEND_DECIMAL128(&d, "_id", &d1), "1.25E-10");
}

static void test_render_oid_string_other(void)
{
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, "65A1B2C3D4E5F60718293A4B");
  CHECK_RENDER(BSON_APPEND_OID(&d, "_id", &oid), "65a1b2c3d4e5f60718293a4b");
  CHECK_RENDER(BSON_APPEND_UTF8(&d, "_id", "alice"), "alice");
  CHECK_RENDER(BSON_APPEND_UTF8(&d, "_id", "42"), "42");
  CHECK_RENDER(BSON_APPEND_UTF8(&d, "_id", ""), "");
  CHECK_RENDER(BSON_APPEND_BOOL(&d, "_id", true), "true");
  CHECK_RENDER(BSON_APPEND_NULL(&d, "_id"), "null");
  CHECK_RENDER(BSON_APPEND_DATE_TIME(&d, "_id", 1700000000000LL),
               "{ \"$date\" : { \"$numberLong\" : \"1700000000000\" } }");
  CHECK_RENDER(BSON_APPEND_BINARY(&d, "_id", BSON_SUBTYPE_BINARY, (const uint8_t *)"ab", 2),
               "{ \"$binary\" : { \"base64\" : \"YWI=\", \"subType\" : "
               "\"00\" } }");
  CHECK_RENDER(BCON_APPEND(&d, "_id", "{", "a", BCON_INT32(1), "}"), "{ \"a\" : 1 }");
  CHECK_RENDER(BSON_APPEND_TIMESTAMP(&d, "_id", 5, 7),
               "{ \"$timestamp\" : { \"t\" : 5, \"i\" : 7 } }");
  /* the element's name does not matter */
  CHECK_RENDER(BSON_APPEND_INT32(&d, "whatever", 7), "7");
}

/* Renders the first element of d into a fresh string (asserts success). */
static char *render_nested(const bson_t *d)
{
  static char buf[4096];
  size_t n = 0;
  CU_ASSERT_EQUAL(cdcache_id_render(bson_get_data(d), d->len, buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(n, strlen(buf));
  return buf;
}

/* {a: 1}, {a: NumberLong(1)}, {a: 1.0} and {a: NumberDecimal("1.00")} are
 * one _id to MongoDB: one key here, at every depth. */
static void test_render_nested_numbers_by_value(void)
{
  static const char *want = "{ \"a\" : 1, \"b\" : [ 2, { \"c\" : -3 } ], \"s\" : \"1\" }";
  bson_decimal128_t one, two, m3;
  bson_decimal128_from_string("1.00", &one);
  bson_decimal128_from_string("2E0", &two);
  bson_decimal128_from_string("-3.000", &m3);
  bson_t *v[4];
  v[0] = BCON_NEW("_id", "{", "a", BCON_INT32(1), "b", "[", BCON_INT32(2), "{", "c", BCON_INT32(-3),
                  "}", "]", "s", BCON_UTF8("1"), "}");
  v[1] = BCON_NEW("_id", "{", "a", BCON_INT64(1), "b", "[", BCON_INT64(2), "{", "c", BCON_INT64(-3),
                  "}", "]", "s", BCON_UTF8("1"), "}");
  v[2] = BCON_NEW("_id", "{", "a", BCON_DOUBLE(1.0), "b", "[", BCON_DOUBLE(2.0), "{", "c",
                  BCON_DOUBLE(-3.0), "}", "]", "s", BCON_UTF8("1"), "}");
  v[3] = BCON_NEW("_id", "{", "a", BCON_DECIMAL128(&one), "b", "[", BCON_DECIMAL128(&two), "{", "c",
                  BCON_DECIMAL128(&m3), "}", "]", "s", BCON_UTF8("1"), "}");
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_STRING_EQUAL(render_nested(v[i]), want);
    bson_destroy(v[i]);
  }
  /* a nested string "1" stays distinct from a nested number 1 */
  bson_t *sn = BCON_NEW("_id", "{", "a", BCON_UTF8("1"), "}");
  CU_ASSERT_STRING_EQUAL(render_nested(sn), "{ \"a\" : \"1\" }");
  bson_destroy(sn);
  /* field order matters to MongoDB and here */
  bson_t *ba = BCON_NEW("_id", "{", "b", BCON_INT32(2), "a", BCON_INT32(1), "}");
  CU_ASSERT_STRING_EQUAL(render_nested(ba), "{ \"b\" : 2, \"a\" : 1 }");
  bson_destroy(ba);
  /* non-integral and special numbers nested, empty containers, other
   * types keep their extended JSON, names escaped */
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, "655f2a100001020304050607");
  bson_t *mix = BCON_NEW("_id", "{", "x", BCON_DOUBLE(2.5), "q\"", "{", "}", "e", "[", "]", "o",
                         BCON_OID(&oid), "t", BCON_BOOL(true), "}");
  CU_ASSERT_STRING_EQUAL(render_nested(mix),
                         "{ \"x\" : 2.5, \"q\\\"\" : { }, \"e\" : [ ], \"o\" : "
                         "{ \"$oid\" : \"655f2a100001020304050607\" }, \"t\" : true }");
  bson_destroy(mix);
}

/* A buffer too small for a nested rendering reports the whole length,
 * and that length is then enough. */
static void test_render_nested_erange_reports_length(void)
{
  bson_t *d =
      BCON_NEW("_id", "{", "a", BCON_INT64(123456789), "b", "[", BCON_UTF8("xyz"), "]", "}");
  const char *want = "{ \"a\" : 123456789, \"b\" : [ \"xyz\" ] }";
  char buf[64];
  size_t n = 0;
  for (size_t cap = 0; cap <= strlen(want); cap++) {
    CU_ASSERT_EQUAL(cdcache_id_render(bson_get_data(d), d->len, cap ? buf : NULL, cap, &n),
                    CDCACHE_ERANGE);
    CU_ASSERT_EQUAL(n, strlen(want));
  }
  CU_ASSERT_EQUAL(cdcache_id_render(bson_get_data(d), d->len, buf, strlen(want) + 1, &n), 0);
  CU_ASSERT_STRING_EQUAL(buf, want);
  bson_destroy(d);
}

/* Nesting deeper than the renderer's limit is refused, not recursed into
 * (a hostile _id could nest millions of levels in 16 MiB). */
static void test_render_refuses_deep_nesting(void)
{
  for (int depth = 99; depth <= 101; depth++) {
    bson_t *docs = calloc((size_t)depth + 1, sizeof(bson_t));
    bson_init(&docs[0]);
    for (int i = 0; i < depth; i++)
      bson_append_document_begin(&docs[i], "a", 1, &docs[i + 1]);
    BSON_APPEND_INT32(&docs[depth], "x", 1);
    for (int i = depth - 1; i >= 0; i--)
      bson_append_document_end(&docs[i], &docs[i + 1]);
    char *buf = malloc(8192);
    size_t n = 0;
    int rc = cdcache_id_render(bson_get_data(&docs[0]), docs[0].len, buf, 8192, &n);
    /* docs[0] = {a: <depth-1 more levels>}: the _id value nests depth-1
     * documents below it */
    CU_ASSERT_EQUAL(rc, depth <= 100 ? 0 : CDCACHE_EINVAL);
    free(buf);
    bson_destroy(&docs[0]);
    free(docs);
  }
}

static void test_render_helpers_and_errors(void)
{
  char buf[64];
  size_t n = 0;
  uint8_t raw[12];
  memset(raw, 0xab, sizeof raw);
  CU_ASSERT_EQUAL(cdcache_id_render_int64(12345, buf, sizeof buf, &n), 0);
  CU_ASSERT_STRING_EQUAL(buf, "12345");
  CU_ASSERT_EQUAL(cdcache_id_render_double(3.0, buf, sizeof buf, &n), 0);
  CU_ASSERT_STRING_EQUAL(buf, "3");
  CU_ASSERT_EQUAL(cdcache_id_render_double(3.25, buf, sizeof buf, &n), 0);
  CU_ASSERT_STRING_EQUAL(buf, "3.25");
  CU_ASSERT_EQUAL(cdcache_id_render_oid(raw, buf, sizeof buf, &n), 0);
  CU_ASSERT_STRING_EQUAL(buf, "abababababababababababab");
  CU_ASSERT_EQUAL(n, 24);
  /* too small: ERANGE with the length */
  CU_ASSERT_EQUAL(cdcache_id_render_int64(12345, buf, 5, &n), CDCACHE_ERANGE);
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(cdcache_id_render_int64(12345, buf, 6, &n), 0);
  /* invalid input never aborts */
  CU_ASSERT_EQUAL(cdcache_id_render(NULL, 0, buf, sizeof buf, &n), CDCACHE_EINVAL);
  uint8_t junk[16] = {16, 0, 0, 0, 0x02, 'a', 0, 0xff, 0xff, 0, 0, 'x', 0, 0, 0, 0};
  CU_ASSERT_EQUAL(cdcache_id_render(junk, sizeof junk, buf, sizeof buf, &n), CDCACHE_EINVAL);
  bson_t empty = BSON_INITIALIZER;
  CU_ASSERT_EQUAL(cdcache_id_render(bson_get_data(&empty), empty.len, buf, sizeof buf, &n),
                  CDCACHE_EINVAL);
  /* a truncated buffer */
  bson_t d = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&d, "_id", "hello");
  CU_ASSERT_EQUAL(cdcache_id_render(bson_get_data(&d), d.len - 3, buf, sizeof buf, &n),
                  CDCACHE_EINVAL);
  bson_destroy(&d);
}

/* ------------------------------------------------------------ templates */

static cdcache_t *open_cache(void)
{
  cdcache_config_t c;
  cdcache_t *cache = NULL;
  cdcache_config_init(&c);
  c.max_entries = 1000;
  CU_ASSERT_FATAL(cdcache_open(&c, &cache) == 0);
  return cache;
}

static int check(const char *ns, const char *tmpl, char *err, size_t cap)
{
  cdcache_cdc_rule_t r = {ns, tmpl};
  return cdcache_cdc_rule_check(&r, err, cap);
}

static void test_template_errors(void)
{
  char err[200];
  static const char *const bad[] = {"",      "{",    "user:{_id", "user:{}", "a}b",       "{a{b}}",
                                    "{a b}", "{.a}", "{a..b}",    "{a.}",    "x{_id}}y}", "}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CU_ASSERT_EQUAL(check("app.users", bad[i], err, sizeof err), CDCACHE_EINVAL);
    CU_ASSERT(strlen(err) > 0);
    CU_ASSERT(strstr(err, "offset") != NULL);
  }
  CU_ASSERT_EQUAL(check("app.users", NULL, err, sizeof err), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(check("app.users", "user:{_id}", err, sizeof err), 0);
  CU_ASSERT_EQUAL(check("app.users", "{{literal}}", err, sizeof err), 0);
  CU_ASSERT_EQUAL(check("app.users", "constant", err, sizeof err), 0);
  CU_ASSERT_EQUAL(check("app.users", "{db}:{coll}:{region.code}:{_id}", err, sizeof err), 0);
  /* namespaces */
  static const char *const badns[] = {"", "nodot", ".x", "db.", "d/b.x", "db.c*", "a b.c"};
  for (size_t i = 0; i < sizeof badns / sizeof badns[0]; i++)
    CU_ASSERT_EQUAL(check(badns[i], "k:{_id}", err, sizeof err), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(check(NULL, "k", err, sizeof err), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(check("*", "k:{_id}", err, sizeof err), 0);
  CU_ASSERT_EQUAL(check("db.*", "k:{_id}", err, sizeof err), 0);
  CU_ASSERT_EQUAL(check("db.coll.with.dots", "k:{_id}", err, sizeof err), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_rule_check(NULL, err, sizeof err), CDCACHE_EINVAL);
  /* error text survives a zero-size buffer */
  CU_ASSERT_EQUAL(check("app.users", "{", NULL, 0), CDCACHE_EINVAL);
}

static void test_template_render(void)
{
  cdcache__rule_t r;
  cdcache_cdc_rule_t in = {"app.*", "{db}/{coll}/{{{region.code}}}/{_id}"};
  char err[200], buf[256];
  size_t n = 0;
  cdcache_t *cache = open_cache();
  CU_ASSERT_EQUAL_FATAL(cdcache__rule_build(cache, &in, &r, err, sizeof err), 0);
  bson_t *dk = BCON_NEW("_id", BCON_INT64(7), "region", "{", "code", "eu", "}");
  CU_ASSERT_EQUAL(cdcache__rule_render(&r, "app", "users", dk, buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(n, strlen("app/users/{eu}/7"));
  CU_ASSERT(memcmp(buf, "app/users/{eu}/7", n) == 0);
  /* a dotted shard key spelled as one top-level name */
  bson_t *dk2 = BCON_NEW("region.code", "us", "_id", BCON_DOUBLE(7.0));
  CU_ASSERT_EQUAL(cdcache__rule_render(&r, "app", "users", dk2, buf, sizeof buf, &n), 0);
  CU_ASSERT(n == strlen("app/users/{us}/7") && memcmp(buf, "app/users/{us}/7", n) == 0);
  /* too small: ERANGE and the length */
  CU_ASSERT_EQUAL(cdcache__rule_render(&r, "app", "users", dk, buf, 4, &n), CDCACHE_ERANGE);
  CU_ASSERT_EQUAL(n, strlen("app/users/{eu}/7"));
  /* missing field */
  bson_t *dk3 = BCON_NEW("_id", BCON_INT32(1));
  CU_ASSERT_EQUAL(cdcache__rule_render(&r, "app", "users", dk3, buf, sizeof buf, &n),
                  CDCACHE_ENOENT);
  CU_ASSERT(cdcache__rule_matches(&r, "app", "users"));
  CU_ASSERT(!cdcache__rule_matches(&r, "other", "users"));
  CU_ASSERT(!cdcache__rule_matches(&r, "app", NULL));
  bson_destroy(dk);
  bson_destroy(dk2);
  bson_destroy(dk3);
  cdcache__rule_free(cache, &r);
  cdcache_close(cache);
}

/* ------------------------------------------------- applying events */

typedef struct seen {
  int n;
  char keys[32][64];
  char ops[32][16];
  int flushes;
} seen_t;

static void observer(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag)
{
  seen_t *s = ctx;
  if (!key) {
    s->flushes++;
    return;
  }
  if (s->n < 32) {
    (void)snprintf(s->keys[s->n], 64, "%.*s", (int)klen, (const char *)key);
    (void)snprintf(s->ops[s->n], 16, "%s", op);
    s->n++;
  }
}

static int logged;
static void count_log(void *ctx, int level, const char *msg)
{
  logged++;
}

static void put(cdcache_t *c, const char *k)
{
  CU_ASSERT_EQUAL(cdcache_put(c, k, strlen(k), "v", 1, CDCACHE_TTL_DEFAULT), 0);
}

static bool has(cdcache_t *c, const char *k)
{
  char b[8];
  size_t n;
  return cdcache_get(c, k, strlen(k), b, sizeof b, &n) == 0;
}

static void apply(cdcache_cdc_t *sub, bson_t *ev)
{
  cdcache__cdc_apply(sub, bson_get_data(ev), ev->len);
  bson_destroy(ev);
}

static bson_t *event(const char *op, const char *db, const char *coll, bson_t *dk)
{
  bson_t *e = bson_new();
  bson_t ns;
  bson_t *tok = BCON_NEW("_data", "826500");
  BSON_APPEND_DOCUMENT(e, "_id", tok);
  bson_destroy(tok);
  BSON_APPEND_UTF8(e, "operationType", op);
  BSON_APPEND_TIMESTAMP(e, "clusterTime", (uint32_t)time(NULL), 3);
  BSON_APPEND_DATE_TIME(e, "wallTime", (int64_t)cdcache__wall_ms() - 5);
  if (db) {
    BSON_APPEND_DOCUMENT_BEGIN(e, "ns", &ns);
    BSON_APPEND_UTF8(&ns, "db", db);
    if (coll)
      BSON_APPEND_UTF8(&ns, "coll", coll);
    bson_append_document_end(e, &ns);
  }
  if (dk) {
    BSON_APPEND_DOCUMENT(e, "documentKey", dk);
    bson_destroy(dk);
  }
  return e;
}

static int fn_calls;
static int key_fn(void *ctx, const cdcache_cdc_event_t *ev, cdcache_cdc_sink_t *sink)
{
  fn_calls++;
  if (ev->op == CDCACHE_CDC_OP_UPDATE && ev->document_key_bson) {
    size_t n;
    char id[64], key[96];
    if (cdcache_id_render(ev->document_key_bson, ev->document_key_len, id, sizeof id, &n) != 0)
      return -1;
    (void)snprintf(key, sizeof key, "fn:%s:%s", ev->coll, id);
    return cdcache_cdc_emit(sink, key, strlen(key));
  }
  if (ev->op == CDCACHE_CDC_OP_DELETE)
    return -1; /* "cannot map": the subscription flushes */
  return 0;
}

static cdcache_cdc_t *make_sub(cdcache_t *cache, seen_t *seen, bool with_fn)
{
  static const cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"},
                                             {"app.users", "user_orders:{_id}"},
                                             {"app.*", "any:{coll}:{_id}"},
                                             {"app.shard", "s:{region}:{_id}"}};
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = NULL;
  char err[256];
  cdcache_cdc_config_init(&cfg);
  cfg.uri = "mongodb://127.0.0.1:1/?directConnection=true";
  cfg.db = "app";
  cfg.rules = rules;
  cfg.n_rules = 4;
  cfg.on_evict = observer;
  cfg.on_evict_ctx = seen;
  cfg.log = count_log;
  if (with_fn) {
    cfg.key_fn = key_fn;
  }
  CU_ASSERT_EQUAL_FATAL(cdcache__cdc_create(cache, &cfg, &sub, err, sizeof err), 0);
  return sub;
}

/* In a child after fork(), the parent's subscription and cache are the
 * parent's: every subscription call answers EFORKED and touches nothing
 * (its thread and connections do not exist here; a parent thread may have
 * held the cache's mutexes at the fork). */
static void test_a_pre_fork_subscription_answers_eforked_in_the_child(void)
{
  cdcache_t *cache = open_cache();
  static const cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"}};
  cdcache_cdc_config_t cfg;
  cdcache_cdc_config_init(&cfg);
  cfg.uri = "mongodb://127.0.0.1:1/?directConnection=true";
  cfg.db = "app";
  cfg.rules = rules;
  cfg.n_rules = 1;
  cdcache_cdc_t *sub = NULL;
  CU_ASSERT_EQUAL_FATAL(cdcache_cdc_start(cache, &cfg, &sub), 0);
  /* A plain fork: the child starts no thread (none of liburcu's either),
   * which keeps the sanitizers' fork limits out of it. */
  pid_t pid = fork();
  if (pid == 0) {
    alarm(20);
    cdcache_cdc_stats_t st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    cdcache_cdc_t *again = NULL;
    int bad = (cdcache_cdc_stats(sub, &st) != CDCACHE_EFORKED) << 0;
    bad |= (cdcache_cdc_start(cache, &cfg, &again) != CDCACHE_EFORKED || again != NULL) << 1;
    bad |= (cdcache_cdc_stop(sub) != CDCACHE_EFORKED) << 2;
    bad |= (cdcache_close(cache) != 0) << 3;
    _exit(bad);
  }
  CU_ASSERT_FATAL(pid > 0);
  int status = 0;
  CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    printf("\n  child status 0x%x\n", status);
  /* The parent's subscription is untouched. */
  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CU_ASSERT_EQUAL(cdcache_cdc_stats(sub, &st), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(sub), 0);
  cdcache_close(cache);
}

static void test_apply_events(void)
{
  cdcache_t *cache = open_cache();
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdcache_cdc_t *sub = make_sub(cache, &seen, false);
  cdcache_cdc_stats_t st;

  put(cache, "user:7");
  put(cache, "user_orders:7");
  put(cache, "any:users:7");
  put(cache, "user:8");
  put(cache, "s:eu:9");
  /* one update evicts every key its rules render */
  apply(sub, event("update", "app", "users", BCON_NEW("_id", BCON_INT32(7))));
  CU_ASSERT(!has(cache, "user:7"));
  CU_ASSERT(!has(cache, "user_orders:7"));
  CU_ASSERT(!has(cache, "any:users:7"));
  CU_ASSERT(has(cache, "user:8"));
  CU_ASSERT_EQUAL(seen.n, 3);
  CU_ASSERT_STRING_EQUAL(seen.ops[0], "update");
  /* double 8.0 is the same _id as int 8 */
  apply(sub, event("delete", "app", "users", BCON_NEW("_id", BCON_DOUBLE(8.0))));
  CU_ASSERT(!has(cache, "user:8"));
  /* the shard key reaches the template */
  apply(sub, event("insert", "app", "shard", BCON_NEW("region", "eu", "_id", BCON_INT64(9))));
  CU_ASSERT(!has(cache, "s:eu:9"));
  CU_ASSERT(cdcache__cluster_time(cache) != 0);

  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CU_ASSERT_EQUAL(cdcache_cdc_stats(sub, &st), 0);
  CU_ASSERT_EQUAL(st.events, 3);
  CU_ASSERT_EQUAL(st.keys_evicted, 3 + 3 + 2);
  CU_ASSERT_EQUAL(st.lag_samples, 3);
  CU_ASSERT(st.lag_p99_ms >= st.lag_p50_ms);
  CU_ASSERT(st.lag_p50_ms < 60000);
  CU_ASSERT(st.last_cluster_time != 0);

  /* replace in an unrelated namespace: nothing evicted, nothing flushed */
  put(cache, "user:10");
  apply(sub, event("replace", "other", "users", BCON_NEW("_id", BCON_INT32(10))));
  CU_ASSERT(has(cache, "user:10"));

  /* unknown operation types are ignored */
  apply(sub, event("createIndexes", "app", "users", NULL));
  CU_ASSERT(has(cache, "user:10"));

  /* drop / rename / dropDatabase / invalidate flush */
  const char *const ops[] = {"drop", "rename", "dropDatabase"};
  for (int i = 0; i < 3; i++) {
    put(cache, "user:10");
    apply(sub, event(ops[i], "app", i == 2 ? NULL : "users", NULL));
    CU_ASSERT(!has(cache, "user:10"));
  }
  put(cache, "user:10");
  bson_t *inv = event("invalidate", NULL, NULL, NULL);
  CU_ASSERT_EQUAL(cdcache__cdc_apply(sub, bson_get_data(inv), inv->len), CDCACHE__APPLY_INVALIDATE);
  bson_destroy(inv);
  CU_ASSERT(!has(cache, "user:10"));

  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cdcache_cdc_stats(sub, &st);
  CU_ASSERT_EQUAL(st.ignored_events, 1);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_NAMESPACE], 3);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_INVALIDATE], 1);
  CU_ASSERT_EQUAL(seen.flushes, 4);
  cdcache__cdc_destroy(sub);
  cdcache_close(cache);
}

/* An application keys a document _id {a: 1, b: "x"} through
 * cdcache_id_render; the change event's documentKey carries it as
 * {a: NumberLong(1), b: "x"} (or 1.0): the same _id, so the key goes. */
static void test_nested_id_event_evicts_app_key(void)
{
  cdcache_t *cache = open_cache();
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdcache_cdc_t *sub = make_sub(cache, &seen, false);
  bson_t *app = BCON_NEW("_id", "{", "a", BCON_INT32(1), "b", BCON_UTF8("x"), "}");
  char id[128], key[160];
  size_t n = 0;
  CU_ASSERT_EQUAL_FATAL(cdcache_id_render(bson_get_data(app), app->len, id, sizeof id, &n), 0);
  bson_destroy(app);
  (void)snprintf(key, sizeof key, "user:%s", id);
  put(cache, key);
  apply(sub, event("update", "app", "users",
                   BCON_NEW("_id", "{", "a", BCON_INT64(1), "b", BCON_UTF8("x"), "}")));
  CU_ASSERT(!has(cache, key));
  put(cache, key);
  apply(sub, event("delete", "app", "users",
                   BCON_NEW("_id", "{", "a", BCON_DOUBLE(1.0), "b", BCON_UTF8("x"), "}")));
  CU_ASSERT(!has(cache, key));
  /* a different _id ({a: "1"}) leaves it alone */
  put(cache, key);
  apply(sub, event("update", "app", "users",
                   BCON_NEW("_id", "{", "a", BCON_UTF8("1"), "b", BCON_UTF8("x"), "}")));
  CU_ASSERT(has(cache, key));
  cdcache__cdc_destroy(sub);
  cdcache_close(cache);
}

/* ---------------------------------------- flushes only what can be stale */

static _Atomic uint64_t clock_ms = 1000000;
static uint64_t test_clock(void *ctx)
{
  (void)ctx;
  return clock_ms;
}

#define VERDICT_NOT_MINE 1000 /* the test's own marker: call cdcache_cdc_not_mine */
static int fn_verdict;
static int verdict_fn(void *ctx, const cdcache_cdc_event_t *ev, cdcache_cdc_sink_t *sink)
{
  (void)ctx;
  (void)ev;
  fn_calls++;
  if (fn_verdict == VERDICT_NOT_MINE) {
    CU_ASSERT_EQUAL(cdcache_cdc_not_mine(sink), 0);
    return 0;
  }
  return fn_verdict;
}

static cdcache_cdc_t *sub_with(cdcache_t *cache, const cdcache_cdc_rule_t *rules, size_t n,
                               bool with_fn, seen_t *seen)
{
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = NULL;
  char err[256];
  cdcache_cdc_config_init(&cfg);
  cfg.uri = "mongodb://127.0.0.1:1/?directConnection=true";
  cfg.rules = rules;
  cfg.n_rules = n;
  cfg.on_evict = observer;
  cfg.on_evict_ctx = seen;
  cfg.log = count_log;
  if (with_fn)
    cfg.key_fn = verdict_fn;
  CU_ASSERT_EQUAL_FATAL(cdcache__cdc_create(cache, &cfg, &sub, err, sizeof err), 0);
  return sub;
}

static bson_t *rename_event(const char *db, const char *coll, const char *to_db,
                            const char *to_coll)
{
  bson_t *e = event("rename", db, coll, NULL);
  bson_t to;
  BSON_APPEND_DOCUMENT_BEGIN(e, "to", &to);
  BSON_APPEND_UTF8(&to, "db", to_db);
  BSON_APPEND_UTF8(&to, "coll", to_coll);
  bson_append_document_end(e, &to);
  return e;
}

static void test_namespace_events_flush_only_what_rules_cover(void)
{
  static const cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"},
                                             {"shop.*", "shop:{coll}:{_id}"}};
  cdcache_t *cache = open_cache();
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdcache_cdc_t *sub = sub_with(cache, rules, 2, false, &seen);

  put(cache, "user:1");
  /* drop / rename of namespaces no rule covers: nothing flushed */
  apply(sub, event("drop", "app", "logs", NULL));
  apply(sub, event("dropDatabase", "analytics", NULL, NULL));
  apply(sub, rename_event("app", "a", "app", "b"));
  CU_ASSERT(has(cache, "user:1"));
  CU_ASSERT_EQUAL(seen.flushes, 0);
  /* $out's temporary collections, even under a db.* rule: ignored */
  apply(sub, event("insert", "shop", "tmp.agg_out.5f1d", BCON_NEW("_id", BCON_INT32(1))));
  apply(sub, event("drop", "shop", "tmp.agg_out.5f1d", NULL));
  apply(sub, event("drop", "shop", "tmp.mr.orders_0", NULL));
  CU_ASSERT(has(cache, "user:1"));
  CU_ASSERT_EQUAL(seen.flushes, 0);
  CU_ASSERT_EQUAL(seen.n, 0);
  /* the rename that ends an $out job, into a covered collection: flush */
  apply(sub, rename_event("app", "tmp.agg_out.77", "app", "users"));
  CU_ASSERT(!has(cache, "user:1"));
  CU_ASSERT_EQUAL(seen.flushes, 1);
  /* a covered collection renamed away, dropped; its database dropped */
  put(cache, "user:1");
  apply(sub, rename_event("app", "users", "archive", "users_2025"));
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  apply(sub, event("drop", "shop", "carts", NULL));
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  apply(sub, event("dropDatabase", "app", NULL, NULL));
  CU_ASSERT(!has(cache, "user:1"));
  CU_ASSERT_EQUAL(seen.flushes, 4);
  cdcache_cdc_stats_t st = {.struct_size = sizeof st};
  cdcache_cdc_stats(sub, &st);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_NAMESPACE], 4);
  CU_ASSERT_EQUAL(st.ignored_events, 6);
  CU_ASSERT_EQUAL(st.lag_samples, 0); /* nothing evicted by a key */
  cdcache__cdc_destroy(sub);

  /* with a key callback: it decides for namespaces no rule covers */
  sub = sub_with(cache, rules, 2, true, &seen);
  put(cache, "user:1");
  fn_calls = 0;
  CU_ASSERT_EQUAL(cdcache_cdc_not_mine(NULL), CDCACHE_EINVAL);
  fn_verdict = VERDICT_NOT_MINE;
  apply(sub, event("drop", "app", "logs", NULL));
  apply(sub, event("update", "app", "logs", BCON_NEW("_id", BCON_INT32(3))));
  CU_ASSERT_EQUAL(fn_calls, 2);
  CU_ASSERT(has(cache, "user:1"));
  /* but not for one a rule covers */
  apply(sub, event("drop", "app", "users", NULL));
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  fn_verdict = 0; /* "mine" */
  apply(sub, event("drop", "app", "logs", NULL));
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  fn_verdict = -1; /* failed */
  apply(sub, event("update", "app", "logs", BCON_NEW("_id", BCON_INT32(3))));
  CU_ASSERT(!has(cache, "user:1"));
  /* a callback of 0.1 that says "cannot map" with 1 still gets its flush */
  put(cache, "user:1");
  fn_verdict = 1;
  apply(sub, event("update", "app", "logs", BCON_NEW("_id", BCON_INT32(3))));
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  apply(sub, event("drop", "app", "logs", NULL));
  CU_ASSERT(!has(cache, "user:1"));
  cdcache__cdc_destroy(sub);

  /* a real collection that happens to use the prefix, named by a rule */
  static const cdcache_cdc_rule_t exact[] = {{"app.tmp.mr.sessions", "sess:{_id}"},
                                             {"app.*", "any:{_id}"}};
  sub = sub_with(cache, exact, 2, false, &seen);
  put(cache, "sess:4");
  put(cache, "any:5");
  apply(sub, event("update", "app", "tmp.mr.sessions", BCON_NEW("_id", BCON_INT32(4))));
  CU_ASSERT(!has(cache, "sess:4"));
  apply(sub, event("update", "app", "tmp.mr.other", BCON_NEW("_id", BCON_INT32(5))));
  CU_ASSERT(has(cache, "any:5")); /* only the wildcard covers it: temporary */
  put(cache, "sess:4");
  apply(sub, event("drop", "app", "tmp.mr.sessions", NULL));
  CU_ASSERT(!has(cache, "sess:4"));
  cdcache__cdc_destroy(sub);
  cdcache_close(cache);
}

/* A rule whose field the collection's documentKey lacks: every event is a
 * key error and a flush, but one log line per namespace per minute. */
static void test_missing_field_logged_once_per_namespace_per_minute(void)
{
  static const cdcache_cdc_rule_t rules[] = {{"app.*", "cart:{region}:{_id}"}};
  cdcache_config_t c;
  cdcache_t *cache = NULL;
  cdcache_config_init(&c);
  c.max_entries = 1000;
  c.clock = test_clock;
  CU_ASSERT_FATAL(cdcache_open(&c, &cache) == 0);
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdcache_cdc_t *sub = sub_with(cache, rules, 1, false, &seen);
  int before = logged;
  for (int i = 0; i < 100; i++) {
    put(cache, "user:1");
    apply(sub, event("update", "app", "carts", BCON_NEW("_id", BCON_INT32(i))));
    CU_ASSERT(!has(cache, "user:1")); /* still flushed: nothing else is safe */
    clock_ms += 100;                  /* 10 s in all */
  }
  CU_ASSERT_EQUAL(logged - before, 1);
  /* another namespace logs on its own */
  apply(sub, event("update", "app", "orders", BCON_NEW("_id", BCON_INT32(1))));
  CU_ASSERT_EQUAL(logged - before, 2);
  /* a minute later, one more line for the first */
  clock_ms += 60000;
  apply(sub, event("update", "app", "carts", BCON_NEW("_id", BCON_INT32(1))));
  CU_ASSERT_EQUAL(logged - before, 3);
  cdcache_cdc_stats_t st = {.struct_size = sizeof st};
  cdcache_cdc_stats(sub, &st);
  CU_ASSERT_EQUAL(st.key_errors, 102);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE], 102);
  CU_ASSERT_EQUAL(seen.flushes, 102);
  /* twenty namespaces failing in turn each log once a minute, whatever
   * slots their hashes share */
  before = logged;
  clock_ms += 60000;
  for (int round = 0; round < 5; round++)
    for (int i = 0; i < 20; i++) {
      char coll[16];
      (void)snprintf(coll, sizeof coll, "c%d", i);
      apply(sub, event("update", "app", coll, BCON_NEW("_id", BCON_INT32(i))));
    }
  CU_ASSERT_EQUAL(logged - before, 20);
  cdcache__cdc_destroy(sub);
  cdcache_close(cache);
}

/* A resume token longer than the stats buffer (tokens embed the
 * documentKey) is shown truncated, not as "". */
static void test_long_resume_token_truncated_not_lost(void)
{
  cdcache__cdc_stats_t s;
  CU_ASSERT_EQUAL_FATAL(cdcache__stats_init(&s), 0);
  char *hex = malloc(3001);
  memset(hex, 'a', 3000);
  hex[3000] = '\0';
  bson_t *tok = BCON_NEW("_data", BCON_UTF8(hex));
  cdcache__stats_token(&s, tok);
  cdcache_cdc_stats_t out = {.struct_size = sizeof out};
  cdcache__stats_snapshot(&s, &out, 0, CDCACHE__FRESH_FOREVER);
  CU_ASSERT_EQUAL(strlen(out.resume_token), CDCACHE_CDC_TOKEN_MAX - 1);
  CU_ASSERT(strncmp(out.resume_token, "{ \"_data\" : \"aaaa", 17) == 0);
  bson_destroy(tok);
  /* a short one after it is shown whole */
  tok = BCON_NEW("_data", BCON_UTF8("8263"));
  cdcache__stats_token(&s, tok);
  cdcache__stats_snapshot(&s, &out, 0, CDCACHE__FRESH_FOREVER);
  CU_ASSERT_STRING_EQUAL(out.resume_token, "{ \"_data\" : \"8263\" }");
  bson_destroy(tok);
  /* cut inside a two-byte character: cut before it (valid UTF-8) */
  char *utf = malloc(2 * 600 + 2);
  utf[0] = 'a';
  for (int i = 0; i < 600; i++)
    memcpy(utf + 1 + 2 * i, "\xc3\xa9", 2);
  utf[1 + 2 * 600] = '\0';
  tok = BCON_NEW("_data", BCON_UTF8(utf));
  cdcache__stats_token(&s, tok);
  cdcache__stats_snapshot(&s, &out, 0, CDCACHE__FRESH_FOREVER);
  CU_ASSERT_EQUAL(strlen(out.resume_token), CDCACHE_CDC_TOKEN_MAX - 2);
  CU_ASSERT(bson_utf8_validate(out.resume_token, strlen(out.resume_token), false));
  bson_destroy(tok);
  free(utf);
  cdcache__stats_token(&s, NULL);
  cdcache__stats_snapshot(&s, &out, 0, CDCACHE__FRESH_FOREVER);
  CU_ASSERT_STRING_EQUAL(out.resume_token, "");
  free(hex);
  cdcache__stats_destroy(&s);
}

static void test_malformed_events(void)
{
  cdcache_t *cache = open_cache();
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdcache_cdc_t *sub = make_sub(cache, &seen, false);
  cdcache_cdc_stats_t st;
  int before = logged;

  /* update without documentKey; no operationType; ns of the wrong type;
   * garbage bytes; a template field missing from documentKey */
  put(cache, "user:1");
  apply(sub, event("update", "app", "users", NULL));
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  bson_t *e = BCON_NEW("_id", "{", "_data", "00", "}", "ns", BCON_INT32(3));
  apply(sub, e);
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  e = BCON_NEW("_id", "{", "_data", "00", "}");
  apply(sub, e);
  CU_ASSERT(!has(cache, "user:1"));
  uint8_t junk[40];
  memset(junk, 0x41, sizeof junk);
  put(cache, "user:1");
  cdcache__cdc_apply(sub, junk, sizeof junk);
  CU_ASSERT(!has(cache, "user:1"));
  put(cache, "user:1");
  apply(sub, event("update", "app", "shard", BCON_NEW("_id", BCON_INT32(1))));
  CU_ASSERT(!has(cache, "user:1"));

  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cdcache_cdc_stats(sub, &st);
  CU_ASSERT_EQUAL(st.malformed_events, 4);
  CU_ASSERT_EQUAL(st.key_errors, 1);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE], 5);
  CU_ASSERT(logged > before);
  /* the subscription still works afterwards */
  put(cache, "user:2");
  apply(sub, event("update", "app", "users", BCON_NEW("_id", BCON_INT32(2))));
  CU_ASSERT(!has(cache, "user:2"));
  cdcache__cdc_destroy(sub);
  cdcache_close(cache);
}

static void test_key_callback(void)
{
  cdcache_t *cache = open_cache();
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdcache_cdc_t *sub = make_sub(cache, &seen, true);
  cdcache_cdc_stats_t st;
  fn_calls = 0;
  put(cache, "fn:users:5");
  put(cache, "other");
  apply(sub, event("update", "app", "users", BCON_NEW("_id", BCON_INT32(5))));
  CU_ASSERT(!has(cache, "fn:users:5"));
  CU_ASSERT(has(cache, "other"));
  CU_ASSERT_EQUAL(fn_calls, 1);
  /* a callback that cannot map an event makes the subscription flush */
  apply(sub, event("delete", "app", "users", BCON_NEW("_id", BCON_INT32(5))));
  CU_ASSERT(!has(cache, "other"));
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cdcache_cdc_stats(sub, &st);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE], 1);
  cdcache__cdc_destroy(sub);
  cdcache_close(cache);
}

/* ----------------------------------------------- libmongoc log routing */

typedef struct logsink {
  pthread_mutex_t mu;
  int lines;
  int initiator_lines; /* "Using custom stream initiator" */
  int host_lines;      /* the test's own mongoc_log() */
} logsink_t;

static void sink_log(void *ctx, int level, const char *msg)
{
  logsink_t *k = ctx;
  (void)level;
  pthread_mutex_lock(&k->mu);
  k->lines++;
  if (strstr(msg, "stream initiator"))
    k->initiator_lines++;
  if (strstr(msg, "from the host"))
    k->host_lines++;
  pthread_mutex_unlock(&k->mu);
}

static void host_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                            void *user_data)
{
  (void)level;
  (void)domain;
  logsink_t *k = user_data;
  pthread_mutex_lock(&k->mu);
  k->lines++;
  if (strstr(message, "stream initiator"))
    k->initiator_lines++;
  if (strstr(message, "from the host"))
    k->host_lines++;
  pthread_mutex_unlock(&k->mu);
}

static int sink_get(logsink_t *k, int which)
{
  pthread_mutex_lock(&k->mu);
  int v = which == 0 ? k->lines : which == 1 ? k->initiator_lines : k->host_lines;
  pthread_mutex_unlock(&k->mu);
  return v;
}

static bool wait_initiator_line(logsink_t *k)
{
  for (int i = 0; i < 500 && sink_get(k, 1) == 0; i++)
    usleep(10000);
  return sink_get(k, 1) > 0;
}

/*
 * Two subscriptions route libmongoc's log while the host has its own
 * handler: each gets its own client's lines, the host keeps getting the
 * rest while they run, and its handler is back when the last one stops
 * (before: the last to route took every line, and stop installed
 * libmongoc's default handler, which prints).
 */
static void test_mongoc_log_routing_chains_and_restores(void)
{
  static const cdcache_cdc_rule_t rule = {"app.users", "user:{_id}"};
  logsink_t host = {.mu = PTHREAD_MUTEX_INITIALIZER};
  logsink_t a = {.mu = PTHREAD_MUTEX_INITIALIZER}, b = {.mu = PTHREAD_MUTEX_INITIALIZER};
  cdcache_t *ca = open_cache(), *cb = open_cache();
  cdcache_cdc_t *sa = NULL, *sb = NULL;
  cdcache_cdc_config_t cfg;

  mongoc_log_set_handler(host_mongoc_log, &host);
  cdcache_cdc_config_init(&cfg);
  cfg.uri = "mongodb://127.0.0.1:1/?directConnection=true";
  cfg.rules = &rule;
  cfg.n_rules = 1;
  cfg.route_mongoc_log = 1;
  cfg.mongoc_log_prev = (cdcache_mongoc_log_fn)host_mongoc_log;
  cfg.mongoc_log_prev_ctx = &host;
  cfg.log = sink_log;
  cfg.log_ctx = &a;
  CU_ASSERT_EQUAL_FATAL(cdcache_cdc_start(ca, &cfg, &sa), 0);
  cfg.log_ctx = &b;
  CU_ASSERT_EQUAL_FATAL(cdcache_cdc_start(cb, &cfg, &sb), 0);
  CU_ASSERT(wait_initiator_line(&a));
  CU_ASSERT(wait_initiator_line(&b));
  CU_ASSERT_EQUAL(sink_get(&a, 1), 1); /* one client each, its own line */
  CU_ASSERT_EQUAL(sink_get(&b, 1), 1);
  CU_ASSERT_EQUAL(sink_get(&host, 1), 0);
  mongoc_log(MONGOC_LOG_LEVEL_WARNING, "test", "a line from the host");
  CU_ASSERT_EQUAL(sink_get(&host, 2), 1);
  CU_ASSERT_EQUAL(sink_get(&a, 2) + sink_get(&b, 2), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(sa), 0);
  mongoc_log(MONGOC_LOG_LEVEL_WARNING, "test", "a line from the host");
  CU_ASSERT_EQUAL(sink_get(&host, 2), 2);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(sb), 0);
  mongoc_log(MONGOC_LOG_LEVEL_WARNING, "test", "a line from the host");
  CU_ASSERT_EQUAL(sink_get(&host, 2), 3);
  CU_ASSERT_EQUAL(sink_get(&a, 2) + sink_get(&b, 2), 0);
  mongoc_log_set_handler(mongoc_log_default_handler, NULL);
  cdcache_close(ca);
  cdcache_close(cb);
}

/* A start whose thread cannot be created fails and changes nothing: the
 * cache keeps serving (before: failed closed for good). */
static void test_start_without_thread_changes_nothing(void)
{
  static const cdcache_cdc_rule_t rule = {"app.users", "user:{_id}"};
  cdcache_t *cache = open_cache();
  cdcache_cdc_t *sub = NULL;
  cdcache_cdc_config_t cfg;
  pthread_attr_t old, huge;
  put(cache, "user:1");
  cdcache_cdc_config_init(&cfg);
  cfg.uri = "mongodb://127.0.0.1:1/?directConnection=true";
  cfg.rules = &rule;
  cfg.n_rules = 1;
  cfg.log = count_log;
  /* every new thread asks for a 64 TiB stack: pthread_create fails */
  CU_ASSERT_EQUAL_FATAL(pthread_getattr_default_np(&old), 0);
  pthread_attr_init(&huge);
  pthread_attr_setstacksize(&huge, (size_t)1 << 46);
  CU_ASSERT_EQUAL_FATAL(pthread_setattr_default_np(&huge), 0);
  int rc = cdcache_cdc_start(cache, &cfg, &sub);
  CU_ASSERT_EQUAL(pthread_setattr_default_np(&old), 0);
  pthread_attr_destroy(&huge);
  pthread_attr_destroy(&old);
  CU_ASSERT_EQUAL(rc, CDCACHE_ENOMEM);
  CU_ASSERT_PTR_NULL(sub);
  CU_ASSERT(has(cache, "user:1"));
  CU_ASSERT_EQUAL(cdcache_fresh(cache, NULL), 0);
  CU_ASSERT_EQUAL(cdcache_put(cache, "user:2", 6, "v", 1, CDCACHE_TTL_DEFAULT), 0);
  /* and a later start works (nothing left attached) */
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(sub), 0);
  cdcache_close(cache);
}

static void test_refused_settings(void)
{
  cdcache_t *cache = open_cache();
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = NULL;
  cdcache_cdc_rule_t rule = {"app.users", "user:{_id}"};
  cdcache_cdc_rule_t bad = {"app.users", "user:{_id"};
  cdcache_cdc_rule_t outside = {"other.users", "user:{_id}"};

#define BASE()                                                                                     \
  cdcache_cdc_config_init(&cfg);                                                                   \
  cfg.uri = "mongodb://127.0.0.1:1/";                                                              \
  cfg.db = "app";                                                                                  \
  cfg.coll = "users";                                                                              \
  cfg.rules = &rule;                                                                               \
  cfg.n_rules = 1
  BASE();
  cfg.max_stale_ms = cfg.max_await_ms + 999; /* below await + 500 + 500 */
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(sub);
  BASE();
  cfg.max_await_ms = 2000; /* not below socket_timeout_ms */
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.uri = "not a uri";
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.uri = NULL;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.db = NULL; /* coll without db */
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.rules = &bad;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.rules = &outside;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.n_rules = 0;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  BASE();
  cfg.struct_size = sizeof cfg + 8;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(cdcache_cdc_start(NULL, &cfg, &sub), CDCACHE_EINVAL);
  /* the smallest honourable bound is accepted; 0 turns it off */
  BASE();
  cfg.max_stale_ms = cfg.max_await_ms + 1000;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), 0);
  /* one subscription per cache */
  cdcache_cdc_t *sub2 = NULL;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub2), CDCACHE_EBUSY);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(sub), 0);
  BASE();
  cfg.max_stale_ms = 0;
  CU_ASSERT_EQUAL(cdcache_cdc_start(cache, &cfg, &sub), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(sub), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_stop(NULL), 0);
  cdcache_close(cache);
#undef BASE
}

/* ----------------------------------------------- the bound's rule (bound.c) */

#define TS(t, i) (((uint64_t)(t) << 32) | (i))

static cdcache__reply_t reply_of(uint64_t stamp, uint64_t op, uint32_t n, uint64_t bytes,
                                 bool getmore)
{
  cdcache__reply_t r = {stamp, op, n, bytes, getmore};
  return r;
}

/* Feeds a reply and applies its events with the given cluster times. */
static bool feed(cdcache__bound_t *b, cdcache__reply_t r, const uint64_t *times)
{
  bool moved = cdcache__bound_answered(b, &r);
  for (uint32_t i = 0; i < r.events; i++)
    moved = cdcache__bound_applied(b, times[i]) || moved;
  return moved;
}

static void test_bound_cut_replies(void)
{
  cdcache__bound_t b;
  cdcache__bound_init(&b, 2, false);
  /* an aggregate vouches nothing by itself, even an empty one */
  CU_ASSERT(cdcache__bound_reply_cut(&b, &(cdcache__reply_t){100, TS(10, 5), 0, 200, false}));
  CU_ASSERT(!feed(&b, reply_of(100, TS(10, 5), 0, 200, false), NULL));
  CU_ASSERT_EQUAL(b.vouched_ms, 0);
  /* a getMore with as many events as the batch size is cut; its first
   * event, past the aggregate's operationTime, vouches the aggregate */
  uint64_t t1[] = {TS(10, 6), TS(10, 7)};
  CU_ASSERT(feed(&b, reply_of(200, TS(10, 9), 2, 400, true), t1));
  CU_ASSERT_EQUAL(b.vouched_ms, 100);
  /* an event at exactly the cut reply's operationTime proves nothing
   * (a transaction shares one clusterTime) */
  uint64_t t2[] = {TS(10, 8), TS(10, 9)};
  CU_ASSERT(!feed(&b, reply_of(300, TS(11, 1), 2, 400, true), t2));
  CU_ASSERT_EQUAL(b.vouched_ms, 100);
  /* strictly greater than 10.9: the first getMore (200) */
  uint64_t t3[] = {TS(11, 1)};
  CU_ASSERT(feed(&b, reply_of(400, TS(11, 1), 1, 300, true), t3));
  /* the 1-event reply was not cut: it vouches its own stamp */
  CU_ASSERT_EQUAL(b.vouched_ms, 400);
  /* an empty getMore always vouches */
  CU_ASSERT(feed(&b, reply_of(500, TS(11, 1), 0, 100, true), NULL));
  CU_ASSERT_EQUAL(b.vouched_ms, 500);
  /* never backwards */
  CU_ASSERT(!feed(&b, reply_of(450, TS(11, 1), 0, 100, true), NULL));
  CU_ASSERT_EQUAL(b.vouched_ms, 500);
}

static void test_bound_pending_vouch_in_order(void)
{
  cdcache__bound_t b;
  cdcache__bound_init(&b, 2, false);
  uint64_t a[] = {TS(5, 1), TS(5, 2)}, c[] = {TS(5, 3), TS(5, 4)}, d[] = {TS(5, 5), TS(5, 6)};
  CU_ASSERT(!feed(&b, reply_of(100, TS(5, 10), 2, 300, true), a));
  CU_ASSERT(!feed(&b, reply_of(110, TS(5, 10), 2, 300, true), c));
  /* a catch-up: operationTime 5.10 stays ahead of every event delivered */
  CU_ASSERT(!feed(&b, reply_of(120, TS(5, 10), 2, 300, true), d));
  CU_ASSERT_EQUAL(b.vouched_ms, 0);
  uint64_t e[] = {TS(5, 11)};
  /* the event past 5.10 vouches the latest of the cut replies (120) and
   * its own reply, not cut, vouches 130 */
  CU_ASSERT(feed(&b, reply_of(130, TS(5, 11), 1, 300, true), e));
  CU_ASSERT_EQUAL(b.vouched_ms, 130);
  CU_ASSERT_EQUAL(b.n_pending, 0);
}

static void test_bound_limits(void)
{
  cdcache__bound_t b;
  cdcache__bound_init(&b, 0, false);
  /* no batch size: only the 16 MiB limit cuts */
  CU_ASSERT(!cdcache__bound_reply_cut(&b, &(cdcache__reply_t){1, 1, 5000, 300000, true}));
  CU_ASSERT(cdcache__bound_reply_cut(
      &b,
      &(cdcache__reply_t){1, 1, 5000, CDCACHE__REPLY_MAX_BYTES - CDCACHE__EVENT_MAX_BYTES, true}));
  /* fullDocument: any non-empty reply may be cut */
  cdcache__bound_init(&b, 0, true);
  CU_ASSERT(cdcache__bound_reply_cut(&b, &(cdcache__reply_t){1, 1, 1, 300, true}));
  CU_ASSERT(!cdcache__bound_reply_cut(&b, &(cdcache__reply_t){1, 1, 0, 300, true}));
  /* a cut reply without operationTime never vouches */
  uint64_t t[] = {TS(9, 1)};
  CU_ASSERT(!feed(&b, reply_of(100, 0, 1, 300, true), t));
  uint64_t t2[] = {TS(9, 2)};
  CU_ASSERT(!feed(&b, reply_of(200, TS(9, 2), 1, 300, true), t2));
  CU_ASSERT_EQUAL(b.vouched_ms, 0);
  /* a reply dropped before its events were applied proves nothing */
  cdcache__bound_init(&b, 0, false);
  cdcache__reply_t r = reply_of(300, TS(9, 9), 3, 300, true);
  CU_ASSERT(!cdcache__bound_answered(&b, &r));
  CU_ASSERT(!cdcache__bound_applied(&b, TS(9, 3)));
  CU_ASSERT(!cdcache__bound_flushed(&b, 0));
  CU_ASSERT(!cdcache__bound_applied(&b, TS(9, 4)));
  CU_ASSERT(!cdcache__bound_applied(&b, TS(9, 5)));
  CU_ASSERT_EQUAL(b.vouched_ms, 0);
  /* a flush vouches its start; a reset forgets everything */
  CU_ASSERT(cdcache__bound_flushed(&b, 700));
  CU_ASSERT_EQUAL(b.vouched_ms, 700);
  cdcache__bound_reset(&b);
  CU_ASSERT_EQUAL(b.vouched_ms, 0);
  /* a full pending list keeps the newest evidence in its last slot */
  cdcache__bound_init(&b, 1, false);
  for (uint32_t i = 0; i < CDCACHE__BOUND_PENDING + 5; i++) {
    uint64_t ev[] = {TS(20, i)};
    CU_ASSERT(!feed(&b, reply_of(1000 + i, TS(30, i), 1, 300, true), ev));
  }
  CU_ASSERT_EQUAL(b.n_pending, CDCACHE__BOUND_PENDING);
  CU_ASSERT(cdcache__bound_applied(&b, TS(30, CDCACHE__BOUND_PENDING + 4) + 1));
  CU_ASSERT_EQUAL(b.vouched_ms, 1000 + CDCACHE__BOUND_PENDING + 4);
}

static void test_names(void)
{
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_op_name(CDCACHE_CDC_OP_DROP_DATABASE), "dropDatabase");
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_op_name(99), "unknown");
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_state_name(CDCACHE_CDC_FAILED_CLOSED), "failed_closed");
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_flush_reason_name(CDCACHE_CDC_FLUSH_HISTORY_LOST),
                         "history_lost");
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_flush_reason_name(-1), "unknown");
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_flush_reason_name(CDCACHE_CDC_FLUSH_POISON), "poison");
  CU_ASSERT_STRING_EQUAL(cdcache_cdc_flush_reason_name(CDCACHE_CDC_FLUSH_REASONS), "unknown");
  /* the poison count lives past flushes[] and is read by struct size */
  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  st.flushes[CDCACHE_CDC_FLUSH_INVALIDATE] = 3;
  st.flushes_poison = 4;
  CU_ASSERT_EQUAL(cdcache_cdc_flush_count(&st, CDCACHE_CDC_FLUSH_INVALIDATE), 3);
  CU_ASSERT_EQUAL(cdcache_cdc_flush_count(&st, CDCACHE_CDC_FLUSH_POISON), 4);
  st.struct_size = offsetof(cdcache_cdc_stats_t, failed_closed);
  CU_ASSERT_EQUAL(cdcache_cdc_flush_count(&st, CDCACHE_CDC_FLUSH_POISON), 0);
  CU_ASSERT_EQUAL(cdcache_cdc_flush_count(&st, 99), 0);
}

int main(void)
{
  CU_pSuite s;
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  s = CU_add_suite("cdc_unit", NULL, NULL);
  CU_add_test(s, "id_render_same_number_same_text", test_render_same_number_same_text);
  CU_add_test(s, "id_render_non_integral", test_render_non_integral);
  CU_add_test(s, "id_render_oid_string_other", test_render_oid_string_other);
  CU_add_test(s, "id_render_nested_numbers_by_value", test_render_nested_numbers_by_value);
  CU_add_test(s, "id_render_nested_erange_reports_length",
              test_render_nested_erange_reports_length);
  CU_add_test(s, "id_render_refuses_deep_nesting", test_render_refuses_deep_nesting);
  CU_add_test(s, "id_render_helpers_and_errors", test_render_helpers_and_errors);
  CU_add_test(s, "template_errors", test_template_errors);
  CU_add_test(s, "template_render", test_template_render);
  CU_add_test(s, "apply_events", test_apply_events);
  CU_add_test(s, "nested_id_event_evicts_app_key", test_nested_id_event_evicts_app_key);
  CU_add_test(s, "long_resume_token_truncated_not_lost", test_long_resume_token_truncated_not_lost);
  CU_add_test(s, "namespace_events_flush_only_what_rules_cover",
              test_namespace_events_flush_only_what_rules_cover);
  CU_add_test(s, "missing_field_logged_once_per_namespace_per_minute",
              test_missing_field_logged_once_per_namespace_per_minute);
  CU_add_test(s, "malformed_events", test_malformed_events);
  CU_add_test(s, "key_callback", test_key_callback);
  CU_add_test(s, "refused_settings", test_refused_settings);
  CU_add_test(s, "mongoc_log_routing_chains_and_restores",
              test_mongoc_log_routing_chains_and_restores);
  CU_add_test(s, "start_without_thread_changes_nothing", test_start_without_thread_changes_nothing);
  CU_add_test(s, "names", test_names);
  CU_add_test(s, "bound_cut_replies", test_bound_cut_replies);
  CU_add_test(s, "bound_pending_vouch_in_order", test_bound_pending_vouch_in_order);
  CU_add_test(s, "bound_limits", test_bound_limits);
  CU_add_test(s, "a pre-fork subscription answers EFORKED in the child",
              test_a_pre_fork_subscription_answers_eforked_in_the_child);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  unsigned tests_failed = CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failed || tests_failed ? 1 : 0;
}
