/*
 * Bad input, row by row: what the caller gets from every public function
 * for NULL and zero-length arguments, oversize keys and values, a full
 * noeviction cache, allocation failure injected through the allocator
 * hook (each allocation of open, put, get_or_load, get_lease/put_leased
 * and cdc_start in turn), URIs that do not parse, settings that cannot be
 * honoured, change events without documentKey (and other malformed
 * events), and an _id of every BSON type.  No server; the only threads
 * are liburcu's and, for the few cdc_start rows that succeed, a
 * subscription pointed at a closed loopback port and stopped at once.
 *
 * Each row of tests/hostile/TABLE.md is one ROW() or CU_ASSERT here.
 */
#include "cdc_internal.h"
#include "hostile_util.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY(s) (s), (sizeof(s) - 1)
/* One table row: call, expected return code. */
#define ROW(call, expected) CU_ASSERT_EQUAL((call), (expected))

static cdcache_t *open_small(uint64_t max_entries, cdcache_policy_t policy, h_alloc_t *a)
{
  cdcache_config_t cfg;
  cdcache_t *c = NULL;
  cdcache_config_init(&cfg);
  cfg.max_entries = max_entries;
  cfg.policy = policy;
  if (a)
    h_alloc_install(&cfg, a);
  CU_ASSERT_EQUAL_FATAL(cdcache_open(&cfg, &c), 0);
  return c;
}

static int loader_abc(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  if (ctx)
    ++*(int *)ctx;
  return cdcache_fill_set_value(fill, "abc", 3);
}

/* A loader that tries the bad fill_set_value arguments first. */
static int loader_bad_args(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  int *rcs = ctx;
  rcs[0] = cdcache_fill_set_value(NULL, "x", 1);
  rcs[1] = cdcache_fill_set_value(fill, NULL, 1);
  rcs[2] = cdcache_fill_set_value(fill, NULL, 0); /* a zero-length value: allowed */
  rcs[3] = (int)cdcache_fill_cluster_time(NULL);
  return 0;
}

static int loader_too_big(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  static char big[1025];
  int rc = cdcache_fill_set_value(fill, big, sizeof big);
  *(int *)ctx = rc;
  return rc;
}

/* ------------------------------------------------ NULL and zero-length */

static void test_null_and_zero_length_cache_api(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = NULL;
  cdcache_stats_t st;
  char buf[16];
  size_t n = 99;
  cdcache_lease_t *lease = (cdcache_lease_t *)&n; /* must be reset to NULL */

  ROW(strcmp(cdcache_strerror(12345), "unknown error"), 0);
  ROW(strcmp(cdcache_strerror(CDCACHE_EINVAL), "invalid argument"), 0);
  ROW(cdcache_config_init(NULL), CDCACHE_EINVAL);
  cdcache_config_init(&cfg);
  ROW(cdcache_open(NULL, &c), CDCACHE_EINVAL);
  ROW(cdcache_open(&cfg, NULL), CDCACHE_EINVAL);
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL); /* max_entries 0 */
  CU_ASSERT_PTR_NULL(c);
  cfg.max_entries = 100;
  cfg.struct_size = 0;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.struct_size = sizeof cfg;
  cfg.shards = 3;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.shards = 0;
  cfg.max_key_len = 0;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.max_key_len = 250;
  cfg.allocator.malloc = NULL;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.allocator.free = NULL;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.max_bytes = 1; /* smaller than the tables */
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.max_bytes = 0;
  cfg.policy = (cdcache_policy_t)7;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(c);
  ROW(cdcache_close(NULL), 0);

  c = open_small(100, CDCACHE_ALLKEYS_LRU, NULL);
  /* put */
  ROW(cdcache_put(NULL, KEY("k"), "v", 1, 0), CDCACHE_EINVAL);
  ROW(cdcache_put(c, NULL, 1, "v", 1, 0), CDCACHE_EINVAL);
  ROW(cdcache_put(c, "k", 0, "v", 1, 0), CDCACHE_EINVAL);
  ROW(cdcache_put(c, KEY("k"), NULL, 1, 0), CDCACHE_EINVAL);
  ROW(cdcache_put(c, KEY("empty"), NULL, 0, 0), 0); /* zero-length value: cached */
  ROW(cdcache_put(c, KEY("k"), "v", 1, 0), 0);
  /* get */
  ROW(cdcache_get(NULL, KEY("k"), buf, sizeof buf, &n), CDCACHE_EINVAL);
  ROW(cdcache_get(c, NULL, 1, buf, sizeof buf, &n), CDCACHE_EINVAL);
  ROW(cdcache_get(c, "k", 0, buf, sizeof buf, &n), CDCACHE_EINVAL);
  ROW(cdcache_get(c, KEY("k"), buf, sizeof buf, NULL), CDCACHE_EINVAL);
  ROW(cdcache_get(c, KEY("k"), NULL, 1, &n), CDCACHE_EINVAL);
  n = 0;
  ROW(cdcache_get(c, KEY("k"), NULL, 0, &n), CDCACHE_ERANGE); /* a hit; n = 1 */
  CU_ASSERT_EQUAL(n, 1);
  n = 99;
  ROW(cdcache_get(c, KEY("empty"), NULL, 0, &n), 0);
  CU_ASSERT_EQUAL(n, 0);
  /* delete, invalidate, flush */
  ROW(cdcache_delete(NULL, KEY("k")), CDCACHE_EINVAL);
  ROW(cdcache_delete(c, NULL, 1), CDCACHE_EINVAL);
  ROW(cdcache_delete(c, "k", 0), CDCACHE_EINVAL);
  ROW(cdcache_invalidate(NULL, KEY("k")), CDCACHE_EINVAL);
  ROW(cdcache_invalidate(c, NULL, 1), CDCACHE_EINVAL);
  ROW(cdcache_invalidate(c, "k", 0), CDCACHE_EINVAL);
  ROW(cdcache_delete(c, KEY("absent")), CDCACHE_ENOENT);
  ROW(cdcache_flush(NULL), CDCACHE_EINVAL);
  /* get_or_load */
  ROW(cdcache_get_or_load(NULL, KEY("g"), loader_abc, NULL, 0, 100, buf, sizeof buf, &n),
      CDCACHE_EINVAL);
  ROW(cdcache_get_or_load(c, NULL, 1, loader_abc, NULL, 0, 100, buf, sizeof buf, &n),
      CDCACHE_EINVAL);
  ROW(cdcache_get_or_load(c, "g", 0, loader_abc, NULL, 0, 100, buf, sizeof buf, &n),
      CDCACHE_EINVAL);
  ROW(cdcache_get_or_load(c, KEY("g"), NULL, NULL, 0, 100, buf, sizeof buf, &n), CDCACHE_EINVAL);
  ROW(cdcache_get_or_load(c, KEY("g"), loader_abc, NULL, 0, 100, buf, sizeof buf, NULL),
      CDCACHE_EINVAL);
  ROW(cdcache_get_or_load(c, KEY("g"), loader_abc, NULL, 0, 100, NULL, 4, &n), CDCACHE_EINVAL);
  int calls = 0;
  ROW(cdcache_get_or_load(c, KEY("g"), loader_abc, &calls, 0, 100, NULL, 0, &n),
      CDCACHE_ERANGE); /* loaded and cached; n = 3 */
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(calls, 1);
  /* fill_set_value / fill_cluster_time with bad arguments, from a loader */
  int rcs[4] = {1, 1, 1, 1};
  ROW(cdcache_get_or_load(c, KEY("h"), loader_bad_args, rcs, 0, 100, buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(rcs[0], CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(rcs[1], CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(rcs[2], 0);
  CU_ASSERT_EQUAL(rcs[3], 0);
  CU_ASSERT_EQUAL(n, 0);
  /* get_lease */
  ROW(cdcache_get_lease(NULL, KEY("l"), buf, sizeof buf, &n, &lease), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(lease);
  ROW(cdcache_get_lease(c, NULL, 1, buf, sizeof buf, &n, &lease), CDCACHE_EINVAL);
  ROW(cdcache_get_lease(c, "l", 0, buf, sizeof buf, &n, &lease), CDCACHE_EINVAL);
  ROW(cdcache_get_lease(c, KEY("l"), buf, sizeof buf, NULL, &lease), CDCACHE_EINVAL);
  ROW(cdcache_get_lease(c, KEY("l"), NULL, 4, &n, &lease), CDCACHE_EINVAL);
  ROW(cdcache_get_lease(c, KEY("l"), buf, sizeof buf, &n, NULL), CDCACHE_EINVAL);
  CU_ASSERT_PTR_NULL(lease);
  /* put_leased / lease_release */
  ROW(cdcache_get_lease(c, KEY("l"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);
  ROW(cdcache_put_leased(c, NULL, "v", 1, 0), CDCACHE_EINVAL);
  ROW(cdcache_put_leased(NULL, lease, "v", 1, 0), CDCACHE_EINVAL); /* lease NOT consumed */
  ROW(cdcache_lease_release(NULL, lease), CDCACHE_EINVAL);         /* lease NOT consumed */
  ROW(cdcache_put_leased(c, lease, NULL, 1, 0), CDCACHE_EINVAL);   /* consumed */
  ROW(cdcache_get(c, KEY("l"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  ROW(cdcache_get_lease(c, KEY("l"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);              /* the bad put released it: a new lease */
  ROW(cdcache_put_leased(c, lease, NULL, 0, 0), 0); /* zero-length value: cached */
  ROW(cdcache_get(c, KEY("l"), NULL, 0, &n), 0);
  ROW(cdcache_lease_release(c, NULL), 0);
  ROW(cdcache_lease_release(NULL, NULL), 0);
  /* stats */
  ROW(cdcache_stats(NULL, &st), CDCACHE_EINVAL);
  ROW(cdcache_stats(c, NULL), CDCACHE_EINVAL);
  memset(&st, 0, sizeof st);
  ROW(cdcache_stats(c, &st), CDCACHE_EINVAL);         /* struct_size 0 */
  st.struct_size = sizeof(size_t) + sizeof(uint64_t); /* an old, short struct: hits only */
  ROW(cdcache_stats(c, &st), 0);
  CU_ASSERT_EQUAL(st.misses, 0); /* not written */
  ROW(cdcache_close(c), 0);
}

static int key_fn_emit_bad(void *ctx, const cdcache_cdc_event_t *ev, cdcache_cdc_sink_t *sink)
{
  int *rcs = ctx;
  rcs[0] = cdcache_cdc_emit(NULL, "k", 1);
  rcs[1] = cdcache_cdc_emit(sink, NULL, 1);
  rcs[2] = cdcache_cdc_emit(sink, "k", 0);
  rcs[3] = cdcache_cdc_emit(sink, "k", 1);
  return 0;
}

static void cdc_cfg(cdcache_cdc_config_t *cfg, const char *uri, const cdcache_cdc_rule_t *rules,
                    size_t n)
{
  cdcache_cdc_config_init(cfg);
  cfg->uri = uri;
  cfg->rules = rules;
  cfg->n_rules = n;
  cfg->log = h_log_fn;
  cfg->log_ctx = NULL;
  cfg->route_mongoc_log = 1; /* keep libmongoc's DEBUG line off stdout */
}

static void test_null_and_zero_length_cdc_api(void)
{
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = (cdcache_cdc_t *)&cfg;
  cdcache_cdc_stats_t st;
  char err[256];
  char out[64];
  size_t n = 0;
  cdcache_cdc_rule_t ok_rule[] = {{"app.users", "user:{_id}"}};
  cdcache_t *c = open_small(100, CDCACHE_ALLKEYS_LRU, NULL);

  ROW(strcmp(cdcache_cdc_op_name(0), "unknown"), 0);
  ROW(strcmp(cdcache_cdc_op_name(99), "unknown"), 0);
  ROW(strcmp(cdcache_cdc_state_name(-1), "unknown"), 0);
  ROW(strcmp(cdcache_cdc_flush_reason_name(CDCACHE_CDC_FLUSH_REASONS), "unknown"), 0);
  ROW(cdcache_cdc_config_init(NULL), CDCACHE_EINVAL);
  /* rule_check */
  ROW(cdcache_cdc_rule_check(NULL, err, sizeof err), CDCACHE_EINVAL);
  cdcache_cdc_rule_t r = {NULL, "k:{_id}"};
  ROW(cdcache_cdc_rule_check(&r, err, sizeof err), CDCACHE_EINVAL);
  r.ns = "";
  ROW(cdcache_cdc_rule_check(&r, err, sizeof err), CDCACHE_EINVAL);
  r.ns = "app.users";
  r.key_template = NULL;
  ROW(cdcache_cdc_rule_check(&r, err, sizeof err), CDCACHE_EINVAL);
  r.key_template = "";
  ROW(cdcache_cdc_rule_check(&r, err, sizeof err), CDCACHE_EINVAL);
  r.key_template = "k:{}";
  ROW(cdcache_cdc_rule_check(&r, NULL, 0), CDCACHE_EINVAL); /* no error text asked */
  r.key_template = "k:{_id}";
  ROW(cdcache_cdc_rule_check(&r, NULL, 0), 0);
  /* start */
  cdc_cfg(&cfg, "mongodb://127.0.0.1:1/", ok_rule, 1);
  ROW(cdcache_cdc_start(NULL, &cfg, &sub), CDCACHE_EINVAL);
  ROW(cdcache_cdc_start(c, NULL, &sub), CDCACHE_EINVAL);
  CU_ASSERT_PTR_EQUAL(sub, (cdcache_cdc_t *)&cfg); /* *out untouched when cache/cfg is NULL */
  sub = NULL;
  ROW(cdcache_cdc_start(c, &cfg, NULL), CDCACHE_EINVAL);
  cfg.uri = NULL;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.uri = "";
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.uri = "mongodb://127.0.0.1:1/";
  cfg.struct_size = 0;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.struct_size = sizeof cfg + 1;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.struct_size = sizeof cfg;
  cfg.rules = NULL; /* n_rules 1 */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.n_rules = 0; /* no rule, no key_fn */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.rules = ok_rule;
  cfg.n_rules = 1;
  cfg.coll = "users"; /* coll without db */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.db = "";
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.db = "app";
  cfg.coll = "";
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.coll = NULL;
  cfg.db = "a.b"; /* not a database name */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.db = "other"; /* the rule lies outside the scope */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.db = NULL;
  cdcache_cdc_rule_t null_rules[] = {{NULL, NULL}};
  cfg.rules = null_rules;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.rules = ok_rule;
  cfg.key_fn_full_document = 3;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.key_fn_full_document = 0;
  CU_ASSERT_PTR_NULL(sub);
  /* stop, stats */
  ROW(cdcache_cdc_stop(NULL), 0);
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  ROW(cdcache_cdc_stats(NULL, &st), CDCACHE_EINVAL);
  /* a subscription built without its thread (test hook) for stats/emit */
  cdcache_cdc_config_t k;
  cdc_cfg(&k, "mongodb://127.0.0.1:1/", NULL, 0);
  int rcs[4] = {1, 1, 1, 1};
  k.key_fn = key_fn_emit_bad;
  k.key_ctx = rcs;
  CU_ASSERT_EQUAL_FATAL(cdcache__cdc_create(c, &k, &sub, err, sizeof err), 0);
  ROW(cdcache_cdc_stats(sub, NULL), CDCACHE_EINVAL);
  st.struct_size = 0;
  ROW(cdcache_cdc_stats(sub, &st), CDCACHE_EINVAL);
  st.struct_size = sizeof st;
  ROW(cdcache_cdc_stats(sub, &st), 0);
  bson_t *ev = BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "insert", "ns", "{", "db",
                        "app", "coll", "users", "}", "documentKey", "{", "_id", BCON_INT32(1), "}");
  ROW(cdcache__cdc_apply(sub, bson_get_data(ev), ev->len), CDCACHE__APPLY_OK);
  CU_ASSERT_EQUAL(rcs[0], CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(rcs[1], CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(rcs[2], CDCACHE_EINVAL);
  CU_ASSERT_EQUAL(rcs[3], 0);
  bson_destroy(ev);
  cdcache__cdc_destroy(sub);
  /* _id rendering */
  bson_t *one = BCON_NEW("_id", BCON_INT32(7));
  ROW(cdcache_id_render(NULL, 5, out, sizeof out, &n), CDCACHE_EINVAL);
  ROW(cdcache_id_render(bson_get_data(one), 0, out, sizeof out, &n), CDCACHE_EINVAL);
  ROW(cdcache_id_render(bson_get_data(one), one->len, out, sizeof out, NULL), CDCACHE_EINVAL);
  ROW(cdcache_id_render(bson_get_data(one), one->len, NULL, 4, &n), CDCACHE_EINVAL);
  ROW(cdcache_id_render(bson_get_data(one), one->len - 1, out, sizeof out, &n), CDCACHE_EINVAL);
  n = 0;
  ROW(cdcache_id_render(bson_get_data(one), one->len, NULL, 0, &n), CDCACHE_ERANGE);
  CU_ASSERT_EQUAL(n, 1);
  ROW(cdcache_id_render(bson_get_data(one), one->len, out, 1, &n),
      CDCACHE_ERANGE); /* no NUL room */
  ROW(cdcache_id_render(bson_get_data(one), one->len, out, 2, &n), 0);
  CU_ASSERT_STRING_EQUAL(out, "7");
  bson_t empty = BSON_INITIALIZER;
  ROW(cdcache_id_render(bson_get_data(&empty), empty.len, out, sizeof out, &n), CDCACHE_EINVAL);
  bson_destroy(one);
  ROW(cdcache_id_render_int64(1, NULL, 4, &n), CDCACHE_EINVAL);
  ROW(cdcache_id_render_int64(1, out, sizeof out, NULL), CDCACHE_EINVAL);
  ROW(cdcache_id_render_double(1.5, out, sizeof out, NULL), CDCACHE_EINVAL);
  ROW(cdcache_id_render_oid(NULL, out, sizeof out, &n), CDCACHE_EINVAL);
  ROW(cdcache_id_render_int64(-123, out, 3, &n), CDCACHE_ERANGE);
  CU_ASSERT_EQUAL(n, 4);
  cdcache_close(c);
}

/* ------------------------------------------------------------ oversize */

static void test_oversize_keys_and_values(void)
{
  cdcache_config_t cfg;
  cdcache_t *c = NULL;
  static char big[70000];
  char buf[8];
  size_t n;
  cdcache_lease_t *lease = NULL;
  memset(big, 'x', sizeof big);

  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cfg.max_key_len = 65536;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.max_key_len = 16;
  cfg.max_value_len = (1u << 30) + 1;
  ROW(cdcache_open(&cfg, &c), CDCACHE_EINVAL);
  cfg.max_value_len = 1024;
  CU_ASSERT_EQUAL_FATAL(cdcache_open(&cfg, &c), 0);

  ROW(cdcache_put(c, big, 16, "v", 1, 0), 0); /* at the limit */
  ROW(cdcache_put(c, big, 17, "v", 1, 0), CDCACHE_E2BIG);
  ROW(cdcache_put(c, big, SIZE_MAX, "v", 1, 0), CDCACHE_E2BIG);
  ROW(cdcache_get(c, big, 17, buf, sizeof buf, &n), CDCACHE_E2BIG);
  ROW(cdcache_delete(c, big, 17), CDCACHE_E2BIG);
  ROW(cdcache_invalidate(c, big, 17), CDCACHE_E2BIG);
  ROW(cdcache_get_or_load(c, big, 17, loader_abc, NULL, 0, 100, buf, sizeof buf, &n),
      CDCACHE_E2BIG);
  ROW(cdcache_get_lease(c, big, 17, buf, sizeof buf, &n, &lease), CDCACHE_E2BIG);
  CU_ASSERT_PTR_NULL(lease);
  ROW(cdcache_put(c, KEY("k"), big, 1024, 0), 0); /* at the limit */
  ROW(cdcache_put(c, KEY("k"), big, 1025, 0), CDCACHE_E2BIG);
  ROW(cdcache_put(c, KEY("k"), big, SIZE_MAX, 0), CDCACHE_E2BIG);
  ROW(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), CDCACHE_ERANGE); /* old value kept */
  CU_ASSERT_EQUAL(n, 1024);
  int lrc = 0;
  ROW(cdcache_get_or_load(c, KEY("g"), loader_too_big, &lrc, 0, 100, buf, sizeof buf, &n),
      CDCACHE_E2BIG); /* the loader's fill_set_value said E2BIG and it passed that on */
  CU_ASSERT_EQUAL(lrc, CDCACHE_E2BIG);
  ROW(cdcache_get(c, KEY("g"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  ROW(cdcache_get_lease(c, KEY("l"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);
  ROW(cdcache_put_leased(c, lease, big, 1025, 0), CDCACHE_E2BIG); /* lease consumed */
  ROW(cdcache_get_lease(c, KEY("l"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);
  ROW(cdcache_lease_release(c, lease), 0);
  cdcache_close(c);
}

/* ------------------------------------------------- full noeviction cache */

static void test_full_noeviction_cache(void)
{
  char buf[8];
  size_t n;
  int calls = 0;
  cdcache_lease_t *lease = NULL;
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_t *c = open_small(2, CDCACHE_NOEVICTION, NULL);
  ROW(cdcache_put(c, KEY("a"), "1", 1, 0), 0);
  ROW(cdcache_put(c, KEY("b"), "2", 1, 0), 0);
  ROW(cdcache_put(c, KEY("c"), "3", 1, 0), CDCACHE_EFULL);
  ROW(cdcache_get(c, KEY("c"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  ROW(cdcache_put(c, KEY("a"), "9", 1, 0), 0); /* replacing needs no room */
  ROW(cdcache_get(c, KEY("a"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(buf[0], '9');
  /* A placeholder takes no entry slot (only bytes, and there is no byte
   * bound here), so a fill starts on a full cache: the loader runs, the
   * caller gets the value, and the value is not cached (EFULL at
   * completion, not reported). */
  cdcache_stats(c, &st);
  uint64_t puts = st.puts;
  ROW(cdcache_get_or_load(c, KEY("c"), loader_abc, &calls, 0, 100, buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(calls, 1);
  CU_ASSERT(n == 3 && memcmp(buf, "abc", 3) == 0);
  ROW(cdcache_get(c, KEY("c"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  ROW(cdcache_get_lease(c, KEY("c"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);
  ROW(cdcache_put_leased(c, lease, "3", 1, 0), CDCACHE_EFULL); /* lease consumed */
  ROW(cdcache_get(c, KEY("c"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  lease = NULL;
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.puts, puts);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 2);
  CU_ASSERT_EQUAL(st.evictions, 0);
  ROW(cdcache_delete(c, KEY("b")), 0);
  ROW(cdcache_put(c, KEY("c"), "3", 1, 0), 0); /* room again */
  cdcache_close(c);

  /* volatile-lru with nothing volatile behaves the same */
  c = open_small(1, CDCACHE_VOLATILE_LRU, NULL);
  ROW(cdcache_put(c, KEY("a"), "1", 1, CDCACHE_TTL_NONE), 0);
  ROW(cdcache_put(c, KEY("b"), "2", 1, CDCACHE_TTL_NONE), CDCACHE_EFULL);
  ROW(cdcache_put(c, KEY("b"), "2", 1, 60000), CDCACHE_EFULL); /* a TTL on the new one: no help */
  cdcache_close(c);
}

/* ---------------------------------------------------- allocation failure */

static int loader_abc_rc(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  int rc = cdcache_fill_set_value(fill, "abc", 3);
  *(int *)ctx = rc;
  return rc;
}

static void test_malloc_failure_each_allocation(void)
{
  static h_alloc_t a;
  cdcache_config_t cfg;
  char buf[8];
  size_t n;
  long i;
  memset(&a, 0, sizeof a);
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  h_alloc_install(&cfg, &a);

  /* open: every allocation fails in turn, then one succeeds */
  int opened = 0;
  for (i = 1; i <= 64 && !opened; i++) {
    cdcache_t *c = NULL;
    h_alloc_fail_nth(&a, i);
    int rc = cdcache_open(&cfg, &c);
    h_alloc_fail_nth(&a, 0);
    if (rc == 0) {
      opened = 1;
      cdcache_close(c);
    } else {
      ROW(rc, CDCACHE_ENOMEM);
      CU_ASSERT_PTR_NULL(c);
    }
    CU_ASSERT_EQUAL(atomic_load(&a.live), 0);
  }
  CU_ASSERT(opened);
  (void)printf("(open: %ld allocations) ", i - 1);

  cdcache_t *c = NULL;
  CU_ASSERT_FATAL(cdcache_open(&cfg, &c) == 0);
  ROW(cdcache_put(c, KEY("k"), "old", 3, 0), 0); /* also this thread's counter block */
  long base;

  /* put: each allocation fails in turn; the old value stays */
  for (i = 1; i <= 16; i++) {
    h_alloc_fail_nth(&a, i);
    int rc = cdcache_put(c, KEY("k"), "new", 3, 0);
    h_alloc_fail_nth(&a, 0);
    if (rc == 0)
      break;
    ROW(rc, CDCACHE_ENOMEM);
    ROW(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
    CU_ASSERT(n == 3 && memcmp(buf, "old", 3) == 0);
  }
  CU_ASSERT(i == 2); /* put allocates once: the entry */

  /* get_or_load: fill, placeholder, the loader's copy, the entry */
  int results[17]; /* indexed 1..16 */
  long nallocs = 0;
  for (i = 1; i <= 16; i++) {
    int lrc = 99;
    char key[16];
    int kl = snprintf(key, sizeof key, "g%ld", i);
    h_alloc_fail_nth(&a, i);
    int rc =
        cdcache_get_or_load(c, key, (size_t)kl, loader_abc_rc, &lrc, 0, 100, buf, sizeof buf, &n);
    nallocs = atomic_load(&a.calls);
    h_alloc_fail_nth(&a, 0);
    results[i] = rc;
    int cached = cdcache_get(c, key, (size_t)kl, buf, sizeof buf, &n) == 0;
    if (i == 1 || i == 2) { /* the fill or its placeholder */
      ROW(rc, CDCACHE_ENOMEM);
      CU_ASSERT_EQUAL(lrc, 99); /* the loader never ran */
      CU_ASSERT(!cached);
    } else if (i == 3) { /* the loader's fill_set_value */
      ROW(rc, CDCACHE_ENOMEM);
      CU_ASSERT_EQUAL(lrc, CDCACHE_ENOMEM);
      CU_ASSERT(!cached);
    } else if (i == 4) { /* the entry: the caller gets the value, nothing cached */
      ROW(rc, 0);
      CU_ASSERT(n == 3 && memcmp(buf, "abc", 3) == 0);
      CU_ASSERT(!cached);
    } else {
      ROW(rc, 0);
      CU_ASSERT(cached);
      break;
    }
  }
  CU_ASSERT_EQUAL(i, 5);
  (void)results;
  (void)nallocs;

  /* get_lease: fill, placeholder; put_leased: the copy, the entry */
  for (i = 1; i <= 16; i++) {
    cdcache_lease_t *lease = NULL;
    char key[16];
    int kl = snprintf(key, sizeof key, "l%ld", i);
    h_alloc_fail_nth(&a, i);
    int rc = cdcache_get_lease(c, key, (size_t)kl, buf, sizeof buf, &n, &lease);
    int prc = lease ? cdcache_put_leased(c, lease, "xyz", 3, 0) : 1;
    h_alloc_fail_nth(&a, 0);
    int cached = cdcache_get(c, key, (size_t)kl, buf, sizeof buf, &n) == 0;
    if (i <= 2) {
      ROW(rc, CDCACHE_ENOMEM);
      CU_ASSERT_PTR_NULL(lease);
    } else if (i <= 4) {
      ROW(rc, CDCACHE_ENOENT);
      ROW(prc, CDCACHE_ENOMEM); /* lease consumed, nothing cached */
    } else {
      ROW(prc, 0);
      CU_ASSERT(cached);
      break;
    }
    CU_ASSERT(!cached);
    /* the key is free again: a new lease is handed out */
    lease = NULL;
    ROW(cdcache_get_lease(c, key, (size_t)kl, buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
    CU_ASSERT_PTR_NOT_NULL(lease);
    cdcache_lease_release(c, lease);
  }
  CU_ASSERT_EQUAL(i, 5);

  /* cdc_start: every allocation of its own fails in turn (libmongoc's
   * go through bson_malloc, which aborts: not injectable, see TABLE.md) */
  char uri[96];
  (void)snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d/?directConnection=true", h_closed_port());
  cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"}, {"app.*", "{coll}:{_id}"}};
  cdcache_cdc_config_t cc;
  cdc_cfg(&cc, uri, rules, 2);
  cc.db = "app";
  cc.max_await_ms = 100;
  cc.socket_timeout_ms = 300;
  cc.connect_timeout_ms = 300;
  cc.max_stale_ms = 0;
  int started = 0;
  for (i = 1; i <= 64 && !started; i++) {
    cdcache_cdc_t *sub = NULL;
    base = atomic_load(&a.live);
    h_alloc_fail_nth(&a, i);
    int rc = cdcache_cdc_start(c, &cc, &sub);
    h_alloc_fail_nth(&a, 0);
    if (rc == 0) {
      started = 1;
      ROW(cdcache_cdc_stop(sub), 0);
    } else {
      ROW(rc, CDCACHE_ENOMEM);
      CU_ASSERT_PTR_NULL(sub);
    }
    CU_ASSERT_EQUAL(atomic_load(&a.live), base); /* cdc_start's own: all freed */
  }
  CU_ASSERT(started);
  (void)printf("(cdc_start: %ld allocations) ", i - 1);
  ROW(cdcache_put(c, KEY("after"), "v", 1, 0), 0); /* max_stale_ms 0: never failed closed */

  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live), 0);
  CU_ASSERT_EQUAL(atomic_load(&a.bytes), 0);
}

/* ------------------------------------------------- CDC settings and URIs */

static _Atomic int g_mongoc_logged;
static void count_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                             void *user_data)
{
  atomic_fetch_add(&g_mongoc_logged, 1);
}

static void test_uri_that_does_not_parse(void)
{
  static const char *const bad[] = {
      "not a uri",
      "mongodb://",
      "mongodb://127.0.0.1:99999/",
      "mongodb://127.0.0.1:0/",
      "http://127.0.0.1/",
      "mongodb://user@:27017/",
      "mongodb://127.0.0.1/?replicaSet=",
      "mongodb+srv://127.0.0.1:27017/",
      "mongodb://[::1/",
      "mongodb://127.0.0.1/?tls=maybe&tlsInsecure=true&tlsAllowInvalidCertificates=true",
      "mongodb://127.0.0.1/\x01\xff",
  };
  cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"}};
  h_log_t log;
  h_log_init(&log, "bad uri");
  cdcache_config_t ccfg;
  cdcache_config_init(&ccfg);
  ccfg.max_entries = 100;
  ccfg.log = h_log_fn;
  ccfg.log_ctx = &log;
  cdcache_t *c = NULL;
  CU_ASSERT_FATAL(cdcache_open(&ccfg, &c) == 0);
  ROW(cdcache_put(c, KEY("k"), "v", 1, 0), 0);
  /* libmongoc logs some parse errors itself, through its process-wide
   * handler: route_mongoc_log does not cover them (routing starts only
   * once the settings are accepted).  Capture them here. */
  mongoc_log_set_handler(count_mongoc_log, NULL);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cdcache_cdc_config_t cfg;
    cdcache_cdc_t *sub = NULL;
    cdc_cfg(&cfg, bad[i], rules, 1);
    cfg.log = NULL; /* the cache's log */
    cfg.route_mongoc_log = 1;
    int rc = cdcache_cdc_start(c, &cfg, &sub);
    if (rc != CDCACHE_EINVAL)
      (void)printf("\n    uri \"%s\": %d ", bad[i], rc);
    ROW(rc, CDCACHE_EINVAL);
    CU_ASSERT_PTR_NULL(sub);
  }
  mongoc_log_set_handler(mongoc_log_default_handler, NULL);
  (void)printf("(libmongoc logged %d line(s) itself) ", atomic_load(&g_mongoc_logged));
  CU_ASSERT(h_log_matched(&log)); /* "cdc: cannot start: bad uri: ..." */
  /* nothing attached, nothing failed closed */
  char buf[4];
  size_t n;
  ROW(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  cdcache_close(c);
  pthread_mutex_destroy(&log.mu);
}

static void test_settings_that_cannot_be_honoured(void)
{
  cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"}};
  cdcache_t *c = open_small(100, CDCACHE_ALLKEYS_LRU, NULL);
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = NULL;
  char uri[96];
  (void)snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d/?directConnection=true", h_closed_port());
  cdc_cfg(&cfg, uri, rules, 1);
  /* defaults: max_await 500 -> max_stale must be 0 or >= 1500 */
  cfg.max_stale_ms = 1;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.max_stale_ms = 1499;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.max_await_ms = 900;
  cfg.max_stale_ms = 1500; /* fits the default await, not this one */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.max_await_ms = 0;
  cfg.max_stale_ms = 5000;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.max_await_ms = 950; /* socket_timeout_ms 1000 - 100 = 900 at most */
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.max_await_ms = 500;
  cfg.socket_timeout_ms = 99;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.socket_timeout_ms = 60001;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.socket_timeout_ms = 1000;
  cfg.connect_timeout_ms = 0;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.connect_timeout_ms = 1000;
  cfg.backoff_initial_ms = 0;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.backoff_initial_ms = 500;
  cfg.backoff_max_ms = 100;
  ROW(cdcache_cdc_start(c, &cfg, &sub), CDCACHE_EINVAL);
  cfg.backoff_max_ms = 1000;
  CU_ASSERT_PTR_NULL(sub);
  ROW(cdcache_put(c, KEY("k"), "v", 1, 0), 0); /* still serving: nothing started */

  /* the boundary is accepted: 500 + 500 + 500 */
  cfg.max_stale_ms = 1500;
  ROW(cdcache_cdc_start(c, &cfg, &sub), 0);
  ROW(cdcache_put(c, KEY("k"), "v", 1, 0), CDCACHE_ESTALE); /* failed closed until established */
  cdcache_cdc_t *second = NULL;
  ROW(cdcache_cdc_start(c, &cfg, &second), CDCACHE_EBUSY);
  CU_ASSERT_PTR_NULL(second);
  ROW(cdcache_cdc_stop(sub), 0);
  ROW(cdcache_put(c, KEY("k"), "v", 1, 0), CDCACHE_ESTALE); /* stopped: still failed closed */
  /* 0 turns the bound off: serving from the start, even with no server */
  cfg.max_stale_ms = 0;
  sub = NULL;
  ROW(cdcache_cdc_start(c, &cfg, &sub), 0);
  ROW(cdcache_put(c, KEY("k"), "v", 1, 0), 0);
  ROW(cdcache_cdc_stop(sub), 0);
  cdcache_close(c);
}

/* ---------------------------------------------------- malformed events */

typedef struct seen {
  int n;
  char key[32][600];
  size_t klen[32];
} seen_t;

static void on_evict(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag)
{
  seen_t *s = ctx;
  if (key && s->n < 32) {
    memcpy(s->key[s->n], key, klen < 600 ? klen : 600);
    s->klen[s->n++] = klen;
  }
}

static cdcache_cdc_stats_t sub_stats(cdcache_cdc_t *sub)
{
  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cdcache_cdc_stats(sub, &st);
  return st;
}

/* Applies ev; returns whether the cache was flushed (probe gone). */
static bool apply_flushes(cdcache_t *c, cdcache_cdc_t *sub, const uint8_t *data, size_t len)
{
  char b[4];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("probe"), "p", 1, 0), 0);
  (void)cdcache__cdc_apply(sub, data, len);
  return cdcache_get(c, KEY("probe"), b, sizeof b, &n) == CDCACHE_ENOENT;
}

static void test_change_event_without_document_key(void)
{
  cdcache_t *c = open_small(100, CDCACHE_ALLKEYS_LRU, NULL);
  cdcache_cdc_rule_t rules[] = {{"app.users", "user:{_id}"}, {"app.carts", "cart:{region}"}};
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = NULL;
  char err[256];
  seen_t seen;
  memset(&seen, 0, sizeof seen);
  cdc_cfg(&cfg, "mongodb://127.0.0.1:1/", rules, 2);
  cfg.on_evict = on_evict;
  cfg.on_evict_ctx = &seen;
  CU_ASSERT_EQUAL_FATAL(cdcache__cdc_create(c, &cfg, &sub, err, sizeof err), 0);

  struct {
    const char *what;
    bson_t *ev;
    int malformed, key_error, flush, ignored;
  } rows[] = {
      {"insert without documentKey",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "insert", "ns", "{", "db", "app",
                "coll", "users", "}"),
       1, 0, 1, 0},
      {"delete with documentKey: null",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "delete", "ns", "{", "db", "app",
                "coll", "users", "}", "documentKey", BCON_NULL),
       1, 0, 1, 0},
      {"update with documentKey: {} (no _id)",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "update", "ns", "{", "db", "app",
                "coll", "users", "}", "documentKey", "{", "}"),
       0, 1, 1, 0},
      {"shard-key field missing from documentKey",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "update", "ns", "{", "db", "app",
                "coll", "carts", "}", "documentKey", "{", "_id", BCON_INT32(1), "}"),
       0, 1, 1, 0},
      {"insert without ns",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "insert", "documentKey", "{",
                "_id", BCON_INT32(1), "}"),
       1, 0, 1, 0},
      {"ns.db not a string",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "insert", "ns", "{", "db",
                BCON_INT32(5), "coll", "users", "}", "documentKey", "{", "_id", BCON_INT32(1), "}"),
       1, 0, 1, 0},
      {"no operationType",
       BCON_NEW("_id", "{", "_data", "01", "}", "ns", "{", "db", "app", "coll", "users", "}"), 1, 0,
       1, 0},
      {"operationType not a string",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", BCON_INT32(1)), 1, 0, 1, 0},
      {"drop without ns", BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "drop"), 1, 0,
       1, 0},
      {"unknown operationType",
       BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "createIndexes", "ns", "{", "db",
                "app", "coll", "users", "}"),
       0, 0, 0, 1},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    cdcache_cdc_stats_t before = sub_stats(sub);
    bool flushed = apply_flushes(c, sub, bson_get_data(rows[i].ev), rows[i].ev->len);
    cdcache_cdc_stats_t after = sub_stats(sub);
    if (flushed != (rows[i].flush != 0))
      (void)printf("\n    %s: flushed %d ", rows[i].what, (int)flushed);
    CU_ASSERT_EQUAL(flushed, rows[i].flush != 0);
    CU_ASSERT_EQUAL(after.malformed_events - before.malformed_events, (uint64_t)rows[i].malformed);
    CU_ASSERT_EQUAL(after.key_errors - before.key_errors, (uint64_t)rows[i].key_error);
    CU_ASSERT_EQUAL(after.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE] -
                        before.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE],
                    (uint64_t)rows[i].flush);
    CU_ASSERT_EQUAL(after.ignored_events - before.ignored_events, (uint64_t)rows[i].ignored);
    CU_ASSERT_EQUAL(after.events - before.events, 1);
    bson_destroy(rows[i].ev);
  }
  /* raw bytes that are not BSON */
  static const uint8_t junk[][12] = {
      {0},
      {12, 0, 0, 0, 0x02, 'a', 0, 0xff, 0xff, 0xff, 0x7f, 0}, /* string claiming 2 GiB */
      {5, 0, 0, 0, 1},                                        /* no terminator */
      {200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},                 /* length past the buffer */
  };
  static const size_t junk_len[] = {0, 12, 5, 12};
  for (size_t i = 0; i < 4; i++) {
    cdcache_cdc_stats_t before = sub_stats(sub);
    CU_ASSERT(apply_flushes(c, sub, junk[i], junk_len[i]));
    cdcache_cdc_stats_t after = sub_stats(sub);
    CU_ASSERT_EQUAL(after.malformed_events - before.malformed_events, 1);
  }
  CU_ASSERT_EQUAL(seen.n, 0); /* no key was evicted by any of these */
  /* a good one still works afterwards */
  bson_t *good =
      BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "delete", "ns", "{", "db", "app",
               "coll", "users", "}", "documentKey", "{", "_id", BCON_INT32(7), "}");
  CU_ASSERT(!apply_flushes(c, sub, bson_get_data(good), good->len));
  CU_ASSERT_EQUAL(seen.n, 1);
  CU_ASSERT(seen.klen[0] == 6 && memcmp(seen.key[0], "user:7", 6) == 0);
  bson_destroy(good);
  cdcache__cdc_destroy(sub);
  cdcache_close(c);
}

/* ------------------------------------------------ _id of every BSON type */

static void test_id_of_every_bson_type(void)
{
  cdcache_t *c = open_small(100, CDCACHE_ALLKEYS_LRU, NULL);
  cdcache_cdc_rule_t rules[] = {{"app.users", "{_id}"}};
  cdcache_cdc_config_t cfg;
  cdcache_cdc_t *sub = NULL;
  char err[256];
  seen_t seen;
  cdc_cfg(&cfg, "mongodb://127.0.0.1:1/", rules, 1);
  cfg.on_evict = on_evict;
  cfg.on_evict_ctx = &seen;
  CU_ASSERT_EQUAL_FATAL(cdcache__cdc_create(c, &cfg, &sub, err, sizeof err), 0);
  int i;
  for (i = 0; i < H_N_ID_ROWS; i++) {
    bson_t d = BSON_INITIALIZER;
    char out[600];
    size_t n = 0;
    size_t elen = i == 6 ? 3 : strlen(h_id_rows[i].expect);
    CU_ASSERT_FATAL(h_append_id(&d, i));
    int rc = cdcache_id_render(bson_get_data(&d), d.len, out, sizeof out, &n);
    ROW(rc, 0);
    if (rc != 0 || n != elen || memcmp(out, h_id_rows[i].expect, elen) != 0)
      (void)printf("\n    %s: rc %d got [%.*s]", h_id_rows[i].type, rc, (int)n, out);
    CU_ASSERT_EQUAL(n, elen);
    CU_ASSERT(memcmp(out, h_id_rows[i].expect, elen) == 0);
    /* the subscription evicts exactly that key (an empty one: nothing) */
    bson_t *ev = BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "delete", "ns", "{",
                          "db", "app", "coll", "users", "}");
    BSON_APPEND_DOCUMENT(ev, "documentKey", &d);
    memset(&seen, 0, sizeof seen);
    CU_ASSERT(!apply_flushes(c, sub, bson_get_data(ev), ev->len));
    if (elen == 0) {
      CU_ASSERT_EQUAL(seen.n, 0);
    } else {
      CU_ASSERT_EQUAL(seen.n, 1);
      CU_ASSERT(seen.klen[0] == elen && memcmp(seen.key[0], out, elen) == 0);
    }
    bson_destroy(ev);
    bson_destroy(&d);
  }
  /* an _id longer than any key: counted as a key error, nothing flushed */
  static char huge[70000];
  memset(huge, 'z', sizeof huge - 1);
  bson_t *ev =
      BCON_NEW("_id", "{", "_data", "01", "}", "operationType", "delete", "ns", "{", "db", "app",
               "coll", "users", "}", "documentKey", "{", "_id", BCON_UTF8(huge), "}");
  cdcache_cdc_stats_t before = sub_stats(sub);
  CU_ASSERT(!apply_flushes(c, sub, bson_get_data(ev), ev->len));
  cdcache_cdc_stats_t after = sub_stats(sub);
  CU_ASSERT_EQUAL(after.key_errors - before.key_errors, 1);
  bson_destroy(ev);
  /* an _id whose nested document is corrupt: not renderable -> flush */
  bson_t *bad = BCON_NEW("_id", "{", "a", BCON_INT32(1), "}");
  uint8_t *raw = bson_malloc(bad->len);
  memcpy(raw, bson_get_data(bad), bad->len);
  raw[4 + 1 + 4 + 4] = 0x7f; /* the inner element's type byte -> unknown type */
  size_t n = 0;
  char out[64];
  ROW(cdcache_id_render(raw, bad->len, out, sizeof out, &n), CDCACHE_EINVAL);
  bson_free(raw);
  bson_destroy(bad);
  cdcache__cdc_destroy(sub);
  cdcache_close(c);
}

int main(void)
{
  mongoc_init();
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  CU_pSuite s = CU_add_suite("hostile_api", NULL, NULL);
  CU_add_test(s, "NULL and zero-length arguments: cache API", test_null_and_zero_length_cache_api);
  CU_add_test(s, "NULL and zero-length arguments: CDC API", test_null_and_zero_length_cdc_api);
  CU_add_test(s, "oversize keys and values", test_oversize_keys_and_values);
  CU_add_test(s, "a full noeviction cache", test_full_noeviction_cache);
  CU_add_test(s, "malloc failure at each allocation", test_malloc_failure_each_allocation);
  CU_add_test(s, "a URI that does not parse", test_uri_that_does_not_parse);
  CU_add_test(s, "settings that cannot be honoured", test_settings_that_cannot_be_honoured);
  CU_add_test(s, "change events without documentKey", test_change_event_without_document_key);
  CU_add_test(s, "an _id of every BSON type", test_id_of_every_bson_type);
  setvbuf(stdout, NULL, _IONBF, 0);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  mongoc_cleanup();
  return failed ? 1 : 0;
}
