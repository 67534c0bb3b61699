/*
 * Hostile servers: the CDC subscription against tiny in-test TCP servers
 * on 127.0.0.1 (hostile_util.c) that answer garbage, truncated frames,
 * frames claiming more than 48 MB, BSON claiming 2 GiB, nothing at all,
 * or close at once - from the first byte, or after a correct handshake
 * on the aggregate - and against a closed loopback port.  For each:
 * cdcache_cdc_start returns 0, the process does not crash, stats show the
 * state and counters, the cache has failed closed (max_stale_ms > 0:
 * gets miss, puts return CDCACHE_ESTALE), and stop returns within 1.5 s.
 * Then change streams with hostile contents: an event without
 * documentKey, an event without _id (resume token), an _id of every BSON
 * type.  ASan / valgrind check that nothing leaks.
 *
 * The cases that kill the process inside libmongoc 1.23 (an OP_MSG reply
 * whose BSON claims more bytes than the frame holds: SIGSEGV in
 * _mongoc_rpc_scatter; a cursor reply whose cursor.ns is missing, has no
 * collection part or is not a string: abort) are NOT run unless
 * CDCACHE_HOSTILE_CRASH_CASES=1: each then runs in a child process (this
 * program re-executed with --crash-case N) and the parent reports how the
 * child ended.  See TABLE.md.
 */
#include "hostile_util.h"

#include <CUnit/Basic.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY(s) (s), (sizeof(s) - 1)
#define ROW(call, expected) CU_ASSERT_EQUAL((call), (expected))

static const char *g_self;

static const char *const bad_names[] = {"answer",        "silent",        "garbage_http",
                                        "garbage_frame", "truncated",     "truncated_stall",
                                        "huge_length",   "oversize_bson", "close"};

typedef struct seen {
  pthread_mutex_t mu;
  int n;
  char key[64][128];
  size_t klen[64];
} seen_t;

static void on_evict(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag)
{
  seen_t *s = ctx;
  if (!key || !s)
    return;
  pthread_mutex_lock(&s->mu);
  if (s->n < 64) {
    memcpy(s->key[s->n], key, klen < 128 ? klen : 128);
    s->klen[s->n++] = klen;
  }
  pthread_mutex_unlock(&s->mu);
}

typedef struct fx {
  h_server_t srv;
  h_log_t log;
  seen_t seen;
  cdcache_t *cache;
  cdcache_cdc_t *sub;
  cdcache_cdc_config_t cfg;
  cdcache_cdc_rule_t rules[1];
} fx_t;

static void fx_open(fx_t *f, const char *rule_tmpl)
{
  cdcache_config_t c;
  memset(&f->seen, 0, sizeof f->seen);
  pthread_mutex_init(&f->seen.mu, NULL);
  h_log_init(&f->log, "cdc:");
  cdcache_config_init(&c);
  c.max_entries = 1000;
  c.log = h_log_fn;
  c.log_ctx = &f->log;
  CU_ASSERT_FATAL(cdcache_open(&c, &f->cache) == 0);
  f->rules[0].ns = "app.users";
  f->rules[0].key_template = rule_tmpl;
  cdcache_cdc_config_init(&f->cfg);
  f->cfg.db = "app";
  f->cfg.coll = "users";
  f->cfg.rules = f->rules;
  f->cfg.n_rules = 1;
  f->cfg.max_await_ms = 100;
  f->cfg.socket_timeout_ms = 400;
  f->cfg.connect_timeout_ms = 400;
  f->cfg.max_stale_ms = 1100;
  f->cfg.backoff_initial_ms = 50;
  f->cfg.backoff_max_ms = 200;
  f->cfg.route_mongoc_log = 1; /* libmongoc's complaints go to our log, not stderr */
  f->cfg.on_evict = on_evict;
  f->cfg.on_evict_ctx = &f->seen;
}

static void fx_close(fx_t *f)
{
  if (f->sub)
    cdcache_cdc_stop(f->sub);
  f->sub = NULL;
  cdcache_close(f->cache);
  pthread_mutex_destroy(&f->seen.mu);
  pthread_mutex_destroy(&f->log.mu);
}

static cdcache_cdc_stats_t stats_of(cdcache_cdc_t *sub)
{
  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CU_ASSERT_EQUAL(cdcache_cdc_stats(sub, &st), 0);
  return st;
}

static uint64_t stop_timed(fx_t *f)
{
  uint64_t t0 = h_now_ms();
  ROW(cdcache_cdc_stop(f->sub), 0);
  f->sub = NULL;
  return h_now_ms() - t0;
}

/*
 * One hostile server case, twice: with max_stale_ms 1100 (the cache must
 * stay failed closed) and with 0 (the bound off: stats show the real
 * connecting / backing-off state and the cache keeps serving).
 */
static void hostile_case(const char *uri_or_null, h_bad_t on_hello, h_bad_t on_command)
{
  for (int bounded = 1; bounded >= 0; bounded--) {
    fx_t f;
    char buf[8];
    size_t n;
    unsigned states = 0;
    const char *uri = uri_or_null;
    char closed_uri[96];
    fx_open(&f, "user:{_id}");
    if (!uri && on_hello == H_CLOSE && on_command == H_CLOSE) {
      (void)snprintf(closed_uri, sizeof closed_uri, "mongodb://127.0.0.1:%d/?directConnection=true",
                     h_closed_port());
      uri = closed_uri;
    }
    h_server_init(&f.srv);
    f.srv.on_hello = on_hello;
    f.srv.on_command = on_command;
    if (!uri) {
      CU_ASSERT_FATAL(h_server_start(&f.srv) == 0);
      uri = f.srv.uri;
    }
    f.cfg.uri = uri;
    f.cfg.max_stale_ms = bounded ? 1100 : 0;
    ROW(cdcache_put(f.cache, KEY("k"), "v", 1, 0), 0);
    ROW(cdcache_cdc_start(f.cache, &f.cfg, &f.sub), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.sub);
    uint64_t t0 = h_now_ms();
    bool served_bounded = false, always_closed = true;
    while (h_now_ms() - t0 < 1000) {
      cdcache_cdc_stats_t st = stats_of(f.sub);
      states |= 1u << st.state;
      always_closed = always_closed && st.failed_closed;
      if (bounded && (cdcache_get(f.cache, KEY("k"), buf, sizeof buf, &n) != CDCACHE_ENOENT ||
                      cdcache_put(f.cache, KEY("p"), "v", 1, 0) != CDCACHE_ESTALE))
        served_bounded = true;
      h_nap_ms(5);
    }
    cdcache_cdc_stats_t st = stats_of(f.sub);
    /* a slow machine (valgrind, a loaded CI host) may not have given up
     * on the first connection within that second: wait for it, still
     * checking that the cache never served */
    for (uint64_t t1 = h_now_ms();
         (st.reconnects < 1 || st.last_error[0] == '\0') && h_now_ms() - t1 < 15000;
         st = stats_of(f.sub)) {
      states |= 1u << st.state;
      if (bounded && cdcache_put(f.cache, KEY("p"), "v", 1, 0) != CDCACHE_ESTALE)
        served_bounded = true;
      h_nap_ms(20);
    }
    if (bounded) {
      CU_ASSERT(!served_bounded); /* failed closed all along */
      CU_ASSERT(always_closed);
      ROW(cdcache_get(f.cache, KEY("k"), buf, sizeof buf, &n), CDCACHE_ENOENT);
      ROW(cdcache_put(f.cache, KEY("k"), "v", 1, 0), CDCACHE_ESTALE);
    }
    /* never established: connecting and backing off (failed closed is a
     * flag of its own, not a state) */
    CU_ASSERT_EQUAL(states & ~((1u << CDCACHE_CDC_CONNECTING) | (1u << CDCACHE_CDC_BACKING_OFF)),
                    0);
    if (!bounded) {
      ROW(cdcache_get(f.cache, KEY("k"), buf, sizeof buf, &n), 0);
      ROW(cdcache_put(f.cache, KEY("k"), "v", 1, 0), 0);
    }
    CU_ASSERT(st.reconnects >= 1);
    CU_ASSERT(st.last_error[0] != '\0');
    CU_ASSERT_EQUAL(st.events, 0);
    CU_ASSERT_EQUAL(st.last_answer_ms, 0);
    CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_ESTABLISHED], 0);
    uint64_t took = stop_timed(&f);
    CU_ASSERT(took < 1500);
    if (bounded)
      (void)printf("\n      states 0x%x reconnects %llu, stop %llu ms, conns %d, spoiled %d, "
                   "aggregates %d: %s",
                   states, (unsigned long long)st.reconnects, (unsigned long long)took,
                   atomic_load(&f.srv.accepted), atomic_load(&f.srv.spoiled),
                   atomic_load(&f.srv.aggregates), st.last_error);
    else
      (void)printf("\n      (bound off) states 0x%x reconnects %llu, stop %llu ms", states,
                   (unsigned long long)st.reconnects, (unsigned long long)took);
    /* stopped: failed closed again if it was bounded */
    ROW(cdcache_put(f.cache, KEY("k"), "v", 1, 0), bounded ? CDCACHE_ESTALE : 0);
    if (f.srv.stop_fd >= 0)
      h_server_stop(&f.srv);
    fx_close(&f);
  }
  (void)printf("\n    ");
}

static void test_unreachable(void)
{
  hostile_case(NULL, H_CLOSE, H_CLOSE); /* a closed loopback port */
}
static void test_accepts_never_answers(void)
{
  hostile_case(NULL, H_SILENT, H_SILENT);
}
static void test_accepts_and_closes(void)
{
  hostile_case(NULL, H_CLOSE, H_ANSWER);
}
static void test_garbage_http_first_byte(void)
{
  hostile_case(NULL, H_GARBAGE_HTTP, H_ANSWER);
}
static void test_garbage_frame_first_byte(void)
{
  hostile_case(NULL, H_GARBAGE_FRAME, H_ANSWER);
}
static void test_truncated_first_byte(void)
{
  hostile_case(NULL, H_TRUNCATED, H_ANSWER);
}
static void test_truncated_stall_first_byte(void)
{
  hostile_case(NULL, H_TRUNCATED_STALL, H_ANSWER);
}
static void test_huge_length_first_byte(void)
{
  hostile_case(NULL, H_HUGE_LENGTH, H_ANSWER);
}
static void test_hello_then_silent(void)
{
  hostile_case(NULL, H_ANSWER, H_SILENT);
}
static void test_hello_then_close(void)
{
  hostile_case(NULL, H_ANSWER, H_CLOSE);
}
static void test_hello_then_garbage_http(void)
{
  hostile_case(NULL, H_ANSWER, H_GARBAGE_HTTP);
}
static void test_hello_then_garbage_frame(void)
{
  hostile_case(NULL, H_ANSWER, H_GARBAGE_FRAME);
}
static void test_hello_then_truncated(void)
{
  hostile_case(NULL, H_ANSWER, H_TRUNCATED);
}
static void test_hello_then_truncated_stall(void)
{
  hostile_case(NULL, H_ANSWER, H_TRUNCATED_STALL);
}
static void test_hello_then_huge_length(void)
{
  hostile_case(NULL, H_ANSWER, H_HUGE_LENGTH);
}

/* ------------------------------------------- streams with hostile contents */

static bool wait_for(fx_t *f, uint64_t events, uint32_t ms)
{
  uint64_t t0 = h_now_ms();
  while (h_now_ms() - t0 < ms) {
    cdcache_cdc_stats_t st = stats_of(f->sub);
    if (st.state == CDCACHE_CDC_STREAMING && st.events >= events && st.last_answer_ms != 0 &&
        cdcache_put(f->cache, KEY("probe"), "p", 1, 0) == 0)
      return true;
    h_nap_ms(5);
  }
  return false;
}

static bson_t *event(const char *op, const bson_t *doc_key)
{
  bson_t *ev = BCON_NEW("_id", "{", "_data", "8200000001", "}", "operationType", BCON_UTF8(op),
                        "clusterTime", BCON_TIMESTAMP(1700000000, 1), "ns", "{", "db", "app",
                        "coll", "users", "}");
  if (doc_key)
    BSON_APPEND_DOCUMENT(ev, "documentKey", doc_key);
  return ev;
}

static void test_stream_event_without_document_key(void)
{
  fx_t f;
  fx_open(&f, "user:{_id}");
  h_server_init(&f.srv);
  bson_t *ev1 = event("insert", NULL);
  bson_t *dk = BCON_NEW("_id", BCON_INT32(7));
  bson_t *ev2 = event("delete", dk);
  h_server_add_event(&f.srv, ev1);
  h_server_add_event(&f.srv, ev2);
  bson_destroy(ev1);
  bson_destroy(ev2);
  bson_destroy(dk);
  CU_ASSERT_FATAL(h_server_start(&f.srv) == 0);
  f.cfg.uri = f.srv.uri;
  ROW(cdcache_cdc_start(f.cache, &f.cfg, &f.sub), 0);
  CU_ASSERT(wait_for(&f, 2, 3000));
  cdcache_cdc_stats_t st = stats_of(f.sub);
  CU_ASSERT_EQUAL(st.malformed_events, 1);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE], 1);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_ESTABLISHED], 1);
  CU_ASSERT_EQUAL(st.keys_evicted, 1);
  CU_ASSERT_EQUAL(st.reconnects, 0);
  CU_ASSERT(st.state == CDCACHE_CDC_STREAMING);
  pthread_mutex_lock(&f.seen.mu);
  CU_ASSERT(f.seen.n == 1 && f.seen.klen[0] == 6 && !memcmp(f.seen.key[0], "user:7", 6));
  pthread_mutex_unlock(&f.seen.mu);
  CU_ASSERT(h_log_matched(&f.log));
  uint64_t took = stop_timed(&f);
  CU_ASSERT(took < 1500);
  (void)printf("(stop %llu ms, getMores %d) ", (unsigned long long)took,
               atomic_load(&f.srv.getmores));
  h_server_stop(&f.srv);
  fx_close(&f);
}

static void test_stream_event_without_resume_token(void)
{
  fx_t f;
  fx_open(&f, "user:{_id}");
  h_server_init(&f.srv);
  bson_t *ev = BCON_NEW("operationType", "insert", "ns", "{", "db", "app", "coll", "users", "}",
                        "documentKey", "{", "_id", BCON_INT32(1), "}");
  h_server_add_event(&f.srv, ev);
  bson_destroy(ev);
  CU_ASSERT_FATAL(h_server_start(&f.srv) == 0);
  f.cfg.uri = f.srv.uri;
  ROW(cdcache_cdc_start(f.cache, &f.cfg, &f.sub), 0);
  uint64_t t0 = h_now_ms();
  cdcache_cdc_stats_t st;
  do {
    h_nap_ms(10);
    st = stats_of(f.sub);
  } while (st.reconnects < 2 && h_now_ms() - t0 < 3000);
  CU_ASSERT(st.reconnects >= 2);
  CU_ASSERT_EQUAL(st.events, 0); /* libmongoc refuses it before cdcache sees it */
  CU_ASSERT(strstr(st.last_error, "resume token") != NULL);
  (void)printf("(%s) ", st.last_error);
  uint64_t took = stop_timed(&f);
  CU_ASSERT(took < 1500);
  h_server_stop(&f.srv);
  fx_close(&f);
}

static void test_stream_id_of_every_bson_type(void)
{
  fx_t f;
  fx_open(&f, "{_id}");
  h_server_init(&f.srv);
  int expect_keys = 0;
  for (int i = 0; i < H_N_ID_ROWS; i++) {
    bson_t dk = BSON_INITIALIZER;
    CU_ASSERT_FATAL(h_append_id(&dk, i));
    bson_t *ev = event("update", &dk);
    h_server_add_event(&f.srv, ev);
    bson_destroy(ev);
    bson_destroy(&dk);
    expect_keys += h_id_rows[i].expect[0] != '\0' || i == 6;
  }
  CU_ASSERT_FATAL(h_server_start(&f.srv) == 0);
  f.cfg.uri = f.srv.uri;
  ROW(cdcache_cdc_start(f.cache, &f.cfg, &f.sub), 0);
  CU_ASSERT(wait_for(&f, (uint64_t)H_N_ID_ROWS, 3000));
  cdcache_cdc_stats_t st = stats_of(f.sub);
  CU_ASSERT_EQUAL(st.malformed_events, 0);
  CU_ASSERT_EQUAL(st.key_errors, 0);
  CU_ASSERT_EQUAL(st.flushes[CDCACHE_CDC_FLUSH_UNMAPPABLE], 0);
  CU_ASSERT_EQUAL(st.keys_evicted, (uint64_t)expect_keys);
  pthread_mutex_lock(&f.seen.mu);
  CU_ASSERT_EQUAL(f.seen.n, expect_keys);
  for (int i = 0, k = 0; i < H_N_ID_ROWS && k < f.seen.n; i++) {
    size_t elen = i == 6 ? 3 : strlen(h_id_rows[i].expect);
    if (elen == 0)
      continue;
    CU_ASSERT(f.seen.klen[k] == elen && memcmp(f.seen.key[k], h_id_rows[i].expect, elen) == 0);
    k++;
  }
  pthread_mutex_unlock(&f.seen.mu);
  CU_ASSERT(stop_timed(&f) < 1500);
  h_server_stop(&f.srv);
  fx_close(&f);
}

/* ------------------------------ crashes inside libmongoc (opt-in) */

typedef struct crash_case {
  const char *name;
  h_bad_t on_hello, on_command;
  h_ns_t ns;
} crash_case_t;

static const crash_case_t crash_cases[] = {
    {"control: a well-formed stream", H_ANSWER, H_ANSWER, H_NS_OK},
    {"OP_MSG whose BSON claims 2 GiB, on the handshake", H_OVERSIZE_BSON, H_ANSWER, H_NS_OK},
    {"OP_MSG whose BSON claims 2 GiB, on the aggregate", H_ANSWER, H_OVERSIZE_BSON, H_NS_OK},
    {"aggregate reply without cursor.ns", H_ANSWER, H_ANSWER, H_NS_MISSING},
    {"aggregate reply with cursor.ns \"app\" (no dot)", H_ANSWER, H_ANSWER, H_NS_NODOT},
    {"aggregate reply with cursor.ns \"app.\"", H_ANSWER, H_ANSWER, H_NS_EMPTY_COLL},
    {"aggregate reply with cursor.ns: 42 (not a string)", H_ANSWER, H_ANSWER, H_NS_NOT_UTF8},
};
#define N_CRASH_CASES ((int)(sizeof crash_cases / sizeof crash_cases[0]))

/* Child: a subscription against the case's server for 2 s.  Exit 0 if
 * the process survived. */
static int crash_case_child(int i)
{
  fx_t f;
  if (i < 0 || i >= N_CRASH_CASES)
    return 2;
  mongoc_init();
  fx_open(&f, "user:{_id}");
  h_server_init(&f.srv);
  f.srv.on_hello = crash_cases[i].on_hello;
  f.srv.on_command = crash_cases[i].on_command;
  f.srv.ns_shape = crash_cases[i].ns;
  if (h_server_start(&f.srv) != 0)
    return 3;
  f.cfg.uri = f.srv.uri;
  if (cdcache_cdc_start(f.cache, &f.cfg, &f.sub) != 0)
    return 4;
  h_nap_ms(2000);
  cdcache_cdc_stats_t st = stats_of(f.sub);
  (void)fprintf(
      stderr, "      child: state %s, reconnects %llu, aggregates %d, getMores %d, error \"%s\"\n",
      cdcache_cdc_state_name(st.state), (unsigned long long)st.reconnects,
      atomic_load(&f.srv.aggregates), atomic_load(&f.srv.getmores), st.last_error);
  cdcache_cdc_stop(f.sub);
  f.sub = NULL;
  h_server_stop(&f.srv);
  fx_close(&f);
  return 0;
}

static int g_crash_case, g_crash_rc;
static void crash_case_test(void)
{
  g_crash_rc = crash_case_child(g_crash_case);
}

static void test_libmongoc_crashes(void)
{
  const char *on = getenv("CDCACHE_HOSTILE_CRASH_CASES");
  if (!on || strcmp(on, "1") != 0) {
    (void)printf("skipped: these kill the process inside libmongoc 1.23; set "
                 "CDCACHE_HOSTILE_CRASH_CASES=1 to run them (each in a child process) ");
    return;
  }
  for (int i = 0; i < N_CRASH_CASES; i++) {
    char arg[16];
    (void)snprintf(arg, sizeof arg, "%d", i);
    (void)printf("\n    %s:\n", crash_cases[i].name);
    pid_t pid = fork();
    if (pid == 0) {
      FILE *dn = freopen("/dev/null", "w", stdout); /* the child's CUnit summary */
      (void)dn;
      execl(g_self, g_self, "--crash-case", arg, (char *)NULL);
      _exit(127);
    }
    int st = 0;
    uint64_t t0 = h_now_ms();
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (h_now_ms() - t0 > 15000) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        break;
      }
      h_nap_ms(10);
    }
    if (WIFSIGNALED(st))
      (void)printf("      child killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
      (void)printf("      child exited with %d", WEXITSTATUS(st));
    if (i == 0)
      CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  (void)printf("\n    ");
}

int main(int argc, char **argv)
{
  g_self = argv[0];
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "--crash-case") == 0) {
    /* the fixture asserts through CUnit: give it a registry */
    if (CU_initialize_registry() != CUE_SUCCESS)
      return 2;
    CU_pSuite cs = CU_add_suite("child", NULL, NULL);
    g_crash_case = atoi(argv[2]);
    CU_add_test(cs, "child", crash_case_test);
    CU_basic_set_mode(CU_BRM_SILENT);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : g_crash_rc;
  }
  mongoc_init();
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  CU_pSuite s = CU_add_suite("hostile_net", NULL, NULL);
  /* CDCACHE_HOSTILE_ONLY=substring runs only the tests whose name has it. */
#define ADD(name, fn)                                                                              \
  do {                                                                                             \
    const char *only = getenv("CDCACHE_HOSTILE_ONLY");                                             \
    if (!only || strstr(name, only))                                                               \
      CU_add_test(s, name, fn);                                                                    \
  } while (0)
  ADD("unreachable server (closed loopback port)", test_unreachable);
  ADD("accepts, never answers", test_accepts_never_answers);
  ADD("accepts, closes at once", test_accepts_and_closes);
  ADD("garbage from the first byte (HTTP page)", test_garbage_http_first_byte);
  ADD("garbage from the first byte (junk frame)", test_garbage_frame_first_byte);
  ADD("truncated frame from the first byte, then close", test_truncated_first_byte);
  ADD("truncated frame from the first byte, then silence", test_truncated_stall_first_byte);
  ADD("frame claiming 64 MiB from the first byte", test_huge_length_first_byte);
  ADD("handshake ok, then silence", test_hello_then_silent);
  ADD("handshake ok, then close", test_hello_then_close);
  ADD("handshake ok, then garbage (HTTP page)", test_hello_then_garbage_http);
  ADD("handshake ok, then garbage (junk frame)", test_hello_then_garbage_frame);
  ADD("handshake ok, then truncated frame and close", test_hello_then_truncated);
  ADD("handshake ok, then truncated frame and silence", test_hello_then_truncated_stall);
  ADD("handshake ok, then frame claiming 64 MiB", test_hello_then_huge_length);
  ADD("stream: event without documentKey", test_stream_event_without_document_key);
  ADD("stream: event without _id (resume token)", test_stream_event_without_resume_token);
  ADD("stream: _id of every BSON type", test_stream_id_of_every_bson_type);
  ADD("crashes inside libmongoc (opt-in)", test_libmongoc_crashes);
#undef ADD
  setvbuf(stdout, NULL, _IONBF, 0);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  mongoc_cleanup();
  (void)bad_names;
  return failed ? 1 : 0;
}
