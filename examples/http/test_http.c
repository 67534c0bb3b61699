/*
 * test_http: cdcache-http-example end to end, over HTTP, against the
 * wire-protocol test server.
 *
 *   test_http SERVER EXAMPLE PROMTOOL
 *
 * Starts cdcache-mongo-test-server and three instances of the example
 * (A, B, C), each with its own cache and change stream, as three servers
 * behind a load balancer would run.  Writes go through one instance and
 * reads through the others; nothing but the change stream tells the
 * readers.  Each test names the behaviour it checks.  Instances are
 * stopped with SIGTERM at the end and must exit 0 (under ASan that
 * includes LeakSanitizer finding no leak).
 *
 * Waits are bounded by generous deadlines (a loaded 2-core machine, ASan);
 * assertions are about what is served, never about speed.
 */
#include "httpc.h"

#include <CUnit/Basic.h>
#include <mongoc/mongoc.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_STALE_MS 1500
/* How long a reader may keep serving an old value after the write was
 * acknowledged: the staleness bound, plus slack for a loaded machine. */
#define COHERENT_WITHIN_MS (MAX_STALE_MS + 8000)
#define IO_TIMEOUT_MS 15000

static const char *server_path, *example_path, *promtool_path;
static char dir[] = "/tmp/cdcache-http-test-XXXXXX";
static pid_t server_pid;
static char uri[128];

typedef struct instance {
  const char *name;
  pid_t pid;
  uint16_t port;
  httpc_t c;
} instance_t;

enum { A, B, C, N_INST };
static instance_t inst[N_INST] = {{.name = "A"}, {.name = "B"}, {.name = "C"}};
/* C's limits, for the bad-request tests. */
#define C_MAX_BODY 4096
#define C_CONN_TIMEOUT_S 2
#define C_MAX_CONN 8

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Starts argv[0] (a path) with the given arguments and waits for it to
 * write its port to dir/NAME.port.  Returns the pid, or -1. */
static pid_t spawn(const char *name, char *const argv[], uint16_t *port)
{
  char pf[256];
  snprintf(pf, sizeof pf, "%s/%s.port", dir, name);
  unlink(pf); /* never read an earlier instance's port */
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    execv(argv[0], argv);
    _exit(127);
  }
  if (pid < 0)
    return -1;
  for (uint64_t end = now_ms() + 20000; now_ms() < end; sleep_ms(10)) {
    FILE *f = fopen(pf, "r");
    unsigned p = 0;
    if (f != NULL) {
      int n = fscanf(f, "%u", &p);
      fclose(f);
      if (n == 1 && p > 0) {
        *port = (uint16_t)p;
        return pid;
      }
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "test_http: %s exited before listening (status %d)\n", name, st);
      return -1;
    }
  }
  fprintf(stderr, "test_http: %s did not listen within 20 s\n", name);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

/* SIGTERM, then the exit status (-1 if it had to be killed). */
static int stop(pid_t pid)
{
  kill(pid, SIGTERM);
  for (uint64_t end = now_ms() + 20000; now_ms() < end; sleep_ms(10)) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

static int start_instance(instance_t *in, const char *extra1, const char *extra2,
                          const char *extra3)
{
  char pf[256], stale[16];
  snprintf(pf, sizeof pf, "%s/%s.port", dir, in->name);
  snprintf(stale, sizeof stale, "%d", MAX_STALE_MS);
  char *argv[] = {(char *)example_path,
                  "--port",
                  "0",
                  "--port-file",
                  pf,
                  "--mongodb-uri",
                  uri,
                  "--db",
                  "app",
                  "--coll",
                  "users",
                  "--max-stale-ms",
                  stale,
                  "--threads",
                  "2",
                  (char *)extra1,
                  (char *)extra2,
                  (char *)extra3,
                  NULL};
  in->pid = spawn(in->name, argv, &in->port);
  if (in->pid < 0)
    return -1;
  httpc_init(&in->c, in->port, IO_TIMEOUT_MS);
  return 0;
}

/* ----------------------------------------------------------- helpers */

/* One request; status, or 0 on a transport failure.  *out (if given)
 * receives the response (caller frees). */
static int req(instance_t *in, const char *method, const char *path, const char *headers,
               const char *body, http_resp_t *out)
{
  http_resp_t r;
  if (out != NULL)
    memset(out, 0, sizeof *out);
  if (httpc_request(&in->c, method, path, headers, body, body != NULL ? strlen(body) : 0, &r) != 0)
    return 0;
  int st = r.status;
  if (out != NULL)
    *out = r;
  else
    httpc_resp_free(&r);
  return st;
}

/* Polls GET path on in until the status is want and (if substr) the body
 * contains substr.  Returns the ms it took, or -1 at the deadline. */
static long wait_for(instance_t *in, const char *path, int want, const char *substr,
                     unsigned within_ms)
{
  uint64_t t0 = now_ms();
  for (;;) {
    http_resp_t r;
    int st = req(in, "GET", path, NULL, NULL, &r);
    bool ok = st == want && (substr == NULL || strstr(r.body, substr) != NULL);
    if (st != 0)
      httpc_resp_free(&r);
    if (ok)
      return (long)(now_ms() - t0);
    if (now_ms() - t0 > within_ms)
      return -1;
    sleep_ms(5);
  }
}

/* A metric's value from in's /metrics (the first line starting with
 * name_and_labels followed by a space), or -1. */
static double metric(instance_t *in, const char *name_and_labels)
{
  http_resp_t r;
  if (req(in, "GET", "/metrics", NULL, NULL, &r) != 200) {
    return -1;
  }
  double v = -1;
  size_t n = strlen(name_and_labels);
  for (char *line = r.body; line != NULL && *line != '\0';) {
    if (strncmp(line, name_and_labels, n) == 0 && line[n] == ' ') {
      v = strtod(line + n + 1, NULL);
      break;
    }
    line = strchr(line, '\n');
    if (line != NULL)
      line++;
  }
  httpc_resp_free(&r);
  return v;
}

static mongoc_client_t *db_client(void)
{
  mongoc_client_t *cl = mongoc_client_new(uri);
  if (cl != NULL)
    mongoc_client_set_error_api(cl, MONGOC_ERROR_API_VERSION_2);
  return cl;
}

/* The client that sends fault commands.  Kept for the whole run: a
 * client destroyed during a stall would wait out the stall in
 * endSessions. */
static mongoc_client_t *admin_client;

/* Runs an admin command on the test server; true on success. */
static bool admin(const char *json)
{
  bson_error_t e;
  bson_t *cmd = bson_new_from_json((const uint8_t *)json, -1, &e);
  bson_t reply;
  bool ok = admin_client != NULL && cmd != NULL &&
            mongoc_client_command_simple(admin_client, "admin", cmd, NULL, &reply, &e);
  if (cmd != NULL)
    bson_destroy(cmd);
  if (admin_client != NULL)
    bson_destroy(&reply);
  if (!ok)
    fprintf(stderr, "test_http: %s: %s\n", json, e.message);
  return ok;
}

/* ------------------------------------------------------------- tests */

static void test_put_is_served_by_every_instance(void)
{
  /* Readers B and C cache version 1... */
  CU_ASSERT_EQUAL(req(&inst[A], "PUT", "/users/100", NULL, "{\"name\":\"ada\",\"v\":1}", NULL),
                  201);
  CU_ASSERT(wait_for(&inst[B], "/users/100", 200, "\"v\" : 1", COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT(wait_for(&inst[C], "/users/100", 200, "\"v\" : 1", COHERENT_WITHIN_MS) >= 0);
  /* ...and serve it from memory: five GETs, no database read.  (B's
   * first load may have raced the insert's event, which then evicted it
   * once more: hence a few attempts.) */
  bool from_memory = false;
  for (int attempt = 0; attempt < 10 && !from_memory; attempt++) {
    double reads_b = metric(&inst[B], "cdcache_http_db_reads_total");
    for (int i = 0; i < 5; i++)
      CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/100", NULL, NULL, NULL), 200);
    from_memory = metric(&inst[B], "cdcache_http_db_reads_total") == reads_b;
    if (!from_memory)
      sleep_ms(200);
  }
  CU_ASSERT(from_memory);

  /* A write through A reaches B and C through their change streams only. */
  CU_ASSERT_EQUAL(req(&inst[A], "PUT", "/users/100", NULL, "{\"name\":\"ada\",\"v\":2}", NULL),
                  204);
  long lag_b = wait_for(&inst[B], "/users/100", 200, "\"v\" : 2", COHERENT_WITHIN_MS);
  long lag_c = wait_for(&inst[C], "/users/100", 200, "\"v\" : 2", COHERENT_WITHIN_MS);
  CU_ASSERT(lag_b >= 0 && lag_c >= 0);
  /* Once new, never old again. */
  for (int i = 0; i < 20; i++) {
    http_resp_t r;
    CU_ASSERT_EQUAL_FATAL(req(&inst[i % 2 ? B : C], "GET", "/users/100", NULL, NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"v\" : 2"));
    httpc_resp_free(&r);
  }
  CU_ASSERT(metric(&inst[B], "cdcache_cdc_keys_evicted_total") >= 1);
}

static void test_delete_is_served_by_every_instance(void)
{
  CU_ASSERT_EQUAL(req(&inst[A], "PUT", "/users/101", NULL, "{\"name\":\"bob\"}", NULL), 201);
  CU_ASSERT(wait_for(&inst[B], "/users/101", 200, "bob", COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT(wait_for(&inst[C], "/users/101", 200, "bob", COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT_EQUAL(req(&inst[A], "DELETE", "/users/101", NULL, NULL, NULL), 204);
  CU_ASSERT(wait_for(&inst[B], "/users/101", 404, NULL, COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT(wait_for(&inst[C], "/users/101", 404, NULL, COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT_EQUAL(req(&inst[A], "DELETE", "/users/101", NULL, NULL, NULL), 404);
  /* String ids work the same way (the key is the id either way). */
  CU_ASSERT_EQUAL(req(&inst[A], "PUT", "/users/ana%20mar%C3%ADa", NULL, "{\"n\":1}", NULL), 201);
  CU_ASSERT(wait_for(&inst[B], "/users/ana%20mar%C3%ADa", 200,
                     "\"ana mar\xc3\xad"
                     "a\"",
                     COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT_EQUAL(req(&inst[C], "DELETE", "/users/ana%20mar%C3%ADa", NULL, NULL, NULL), 204);
  CU_ASSERT(wait_for(&inst[B], "/users/ana%20mar%C3%ADa", 404, NULL, COHERENT_WITHIN_MS) >= 0);
}

static void test_absence_is_cached_until_an_insert_evicts_it(void)
{
  double reads = metric(&inst[B], "cdcache_http_db_reads_total");
  for (int i = 0; i < 10; i++)
    CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/9001", NULL, NULL, NULL), 404);
  /* Ten lookups of a missing id: one database read. */
  CU_ASSERT_EQUAL(metric(&inst[B], "cdcache_http_db_reads_total"), reads + 1);

  /* An insert straight into MongoDB (no instance involved) evicts the
   * cached absence on every instance. */
  mongoc_client_t *cl = db_client();
  CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
  mongoc_collection_t *coll = mongoc_client_get_collection(cl, "app", "users");
  bson_t *doc = BCON_NEW("_id", BCON_INT64(9001), "name", BCON_UTF8("late"));
  bson_error_t e;
  CU_ASSERT(mongoc_collection_insert_one(coll, doc, NULL, NULL, &e));
  bson_destroy(doc);
  mongoc_collection_destroy(coll);
  mongoc_client_destroy(cl);
  CU_ASSERT(wait_for(&inst[B], "/users/9001", 200, "late", COHERENT_WITHIN_MS) >= 0);
}

static void test_etag_and_if_none_match(void)
{
  CU_ASSERT_EQUAL(req(&inst[A], "PUT", "/users/200", NULL, "{\"v\":\"e1\"}", NULL), 201);
  CU_ASSERT(wait_for(&inst[B], "/users/200", 200, "e1", COHERENT_WITHIN_MS) >= 0);
  http_resp_t r, r2;
  CU_ASSERT_EQUAL_FATAL(req(&inst[B], "GET", "/users/200", NULL, NULL, &r), 200);
  char tag[128];
  snprintf(tag, sizeof tag, "%s", r.etag);
  CU_ASSERT_EQUAL(tag[0], '"'); /* strong: no W/ */
  CU_ASSERT_EQUAL(strlen(tag), 34u);
  CU_ASSERT_STRING_EQUAL(r.cache_control, "no-cache");
  httpc_resp_free(&r);
  /* The tag is derived from the value: another instance gives the same. */
  CU_ASSERT(wait_for(&inst[C], "/users/200", 200, "e1", COHERENT_WITHIN_MS) >= 0);
  CU_ASSERT_EQUAL_FATAL(req(&inst[C], "GET", "/users/200", NULL, NULL, &r2), 200);
  CU_ASSERT_STRING_EQUAL(r2.etag, tag);
  httpc_resp_free(&r2);
  /* HEAD: the same headers, no body. */
  CU_ASSERT_EQUAL_FATAL(req(&inst[B], "HEAD", "/users/200", NULL, NULL, &r2), 200);
  CU_ASSERT_STRING_EQUAL(r2.etag, tag);
  CU_ASSERT_EQUAL(r2.body_len, 0u);
  CU_ASSERT(r2.content_length > 0);
  httpc_resp_free(&r2);

  char h[256];
  /* Matching lists: prefix + tag + suffix ("*" matches any current value). */
  const char *matching[][2] = {{"", ""}, {"W/", ""}, {"\"nope\", ", ""}, {"\"a\",", ", \"b\""}};
  for (size_t i = 0; i < sizeof matching / sizeof *matching + 1; i++) {
    if (i < sizeof matching / sizeof *matching)
      snprintf(h, sizeof h, "If-None-Match: %s%s%s\r\n", matching[i][0], tag, matching[i][1]);
    else
      snprintf(h, sizeof h, "If-None-Match: *\r\n");
    CU_ASSERT_EQUAL_FATAL(req(&inst[B], "GET", "/users/200", h, NULL, &r), 304);
    CU_ASSERT_EQUAL(r.body_len, 0u);
    CU_ASSERT_STRING_EQUAL(r.etag, tag);
    /* No Content-Length, or 0 (libmicrohttpd 0.9.75's), never another. */
    CU_ASSERT(r.content_length == -1 || r.content_length == 0);
    httpc_resp_free(&r);
  }
  /* The header sent twice is one list: a match on either line counts. */
  snprintf(h, sizeof h, "If-None-Match: \"other\"\r\nIf-None-Match: %s\r\n", tag);
  CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/200", h, NULL, NULL), 304);
  snprintf(h, sizeof h, "If-None-Match: %s\r\nif-none-match: \"other\"\r\n", tag);
  CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/200", h, NULL, NULL), 304);
  CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/200",
                      "If-None-Match: \"x\"\r\nIf-None-Match: \"y\"\r\n", NULL, NULL),
                  200);
  /* A 304 has no body on the wire: on a raw connection nothing follows
   * its head, and the next response on the connection parses. */
  int fd = httpc_dial(inst[B].port, IO_TIMEOUT_MS);
  CU_ASSERT_FATAL(fd >= 0);
  char rq[512];
  int rn = snprintf(rq, sizeof rq,
                    "GET /users/200 HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n\r\n", tag);
  CU_ASSERT_EQUAL(httpc_send_all(fd, rq, (size_t)rn), 0);
  CU_ASSERT_EQUAL(httpc_read_response(fd, 0, &r), 0);
  CU_ASSERT_EQUAL(r.status, 304);
  httpc_resp_free(&r);
  sleep_ms(200);
  char stray;
  CU_ASSERT(recv(fd, &stray, 1, MSG_PEEK | MSG_DONTWAIT) < 0);
  static const char next[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  CU_ASSERT_EQUAL(httpc_send_all(fd, next, sizeof next - 1), 0);
  CU_ASSERT_EQUAL(httpc_read_response(fd, 0, &r), 0);
  CU_ASSERT_EQUAL(r.status, 200);
  httpc_resp_free(&r);
  close(fd);
  const char *other[] = {"\"nope\"", "\"\"", "garbage", "W/\"x\", \"y\""};
  for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
    snprintf(h, sizeof h, "If-None-Match: %s\r\n", other[i]);
    CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/200", h, NULL, NULL), 200);
  }
  /* After a write the old tag no longer matches: a full 200, new tag. */
  CU_ASSERT_EQUAL(req(&inst[A], "PUT", "/users/200", NULL, "{\"v\":\"e2\"}", NULL), 204);
  snprintf(h, sizeof h, "If-None-Match: %s\r\n", tag);
  uint64_t end = now_ms() + COHERENT_WITHIN_MS;
  int st = 0;
  while (now_ms() < end && (st = req(&inst[B], "GET", "/users/200", h, NULL, &r)) == 304) {
    httpc_resp_free(&r);
    sleep_ms(5);
  }
  CU_ASSERT_EQUAL_FATAL(st, 200);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "e2"));
  CU_ASSERT_STRING_NOT_EQUAL(r.etag, tag);
  httpc_resp_free(&r);
  /* A missing document matches nothing, not even "*". */
  CU_ASSERT_EQUAL(req(&inst[B], "GET", "/users/404404", "If-None-Match: *\r\n", NULL, NULL), 404);
}

static void test_healthz_is_503_while_the_stream_is_stalled(void)
{
  for (int i = 0; i < N_INST; i++)
    CU_ASSERT_EQUAL(req(&inst[i], "GET", "/healthz", NULL, NULL, NULL), 200);
  /* Every connection to the database goes silent for 6 s. */
  CU_ASSERT_FATAL(admin("{\"cdcacheFault\": \"stall\", \"ms\": 6000}"));
  uint64_t t0 = now_ms();
  long to503 = wait_for(&inst[A], "/healthz", 503, NULL, 6000);
  CU_ASSERT(to503 >= 0);
  /* Not before the bound: the stream had answered just before. */
  CU_ASSERT(to503 >= 500);
  CU_ASSERT_EQUAL(metric(&inst[A], "cdcache_fresh"), 0);
  CU_ASSERT(wait_for(&inst[B], "/healthz", 503, NULL, 4000) >= 0);
  /* Back to 200 once the stall ends and the stream answers again. */
  long to200 = wait_for(&inst[A], "/healthz", 200, NULL, 30000);
  CU_ASSERT(to200 >= 0);
  CU_ASSERT(now_ms() - t0 >= 5000);
  CU_ASSERT(wait_for(&inst[B], "/healthz", 200, NULL, 30000) >= 0);
  CU_ASSERT(wait_for(&inst[C], "/healthz", 200, NULL, 30000) >= 0);
  CU_ASSERT_EQUAL(metric(&inst[A], "cdcache_fresh"), 1);
}

static void test_metrics_pass_promtool(void)
{
  http_resp_t r;
  CU_ASSERT_EQUAL_FATAL(req(&inst[A], "GET", "/metrics", NULL, NULL, &r), 200);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.content_type, "version=0.0.4"));
  char path[256];
  snprintf(path, sizeof path, "%s/metrics.txt", dir);
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fwrite(r.body, 1, r.body_len, f);
  fclose(f);
  httpc_resp_free(&r);
  if (promtool_path == NULL || promtool_path[0] == '\0' || access(promtool_path, X_OK) != 0) {
    fprintf(stderr, "test_http: promtool not found (Debian: prometheus)\n");
    CU_FAIL("promtool not found");
    return;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s'", promtool_path, path);
  CU_ASSERT_EQUAL(system(cmd), 0);
  /* And what it says is what happened. */
  CU_ASSERT(metric(&inst[A], "cdcache_http_requests_total{route=\"users\",method=\"PUT\","
                             "code=\"201\"}") >= 3);
  CU_ASSERT_EQUAL(metric(&inst[A], "cdcache_cdc_state{state=\"streaming\"}"), 1);
  CU_ASSERT(metric(&inst[A], "cdcache_http_request_duration_seconds_count{route=\"users\"}") >= 3);
}

/* The server's answer to raw bytes on a new connection to C: the status,
 * 0 if it closed the connection without one, -1 if it could not connect. */
static int raw(const char *bytes, size_t len)
{
  int fd = httpc_dial(inst[C].port, IO_TIMEOUT_MS);
  if (fd < 0)
    return -1;
  http_resp_t r;
  int st = 0;
  if (httpc_send_all(fd, bytes, len) == 0 && httpc_read_response(fd, 0, &r) == 0) {
    st = r.status;
    httpc_resp_free(&r);
  }
  close(fd);
  return st;
}

static void test_bad_requests_get_4xx(void)
{
  instance_t *c = &inst[C];
  char path[1024];
  /* Ids: at the key limit fine, over it refused, for every method. */
  snprintf(path, sizeof path, "/users/%0250d", 7);
  CU_ASSERT_EQUAL(req(c, "GET", path, NULL, NULL, NULL), 404);
  snprintf(path, sizeof path, "/users/%0251d", 7);
  CU_ASSERT_EQUAL(req(c, "GET", path, NULL, NULL, NULL), 400);
  CU_ASSERT_EQUAL(req(c, "PUT", path, NULL, "{}", NULL), 400);
  CU_ASSERT_EQUAL(req(c, "DELETE", path, NULL, NULL, NULL), 400);
  const char *bad_ids[] = {"/users/",      "/users/%zz", "/users/abc%",
                           "/users/a%00b", "/users/%ff", "/users/a%01"};
  for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++)
    CU_ASSERT_EQUAL(req(c, "GET", bad_ids[i], NULL, NULL, NULL), 400);
  /* Bodies that are not one JSON object, or would not store as a
   * replacement document. */
  const char *bad_json[] = {"",           "{",        "[1,2]",      "{} {}", "null",
                            "\"x\"",      "{\"a\":}", "{\"a\":1,}", "\xff",  "{\"$set\":{\"a\":1}}",
                            "{\"_id\":5}"};
  for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++) {
    http_resp_t r;
    CU_ASSERT_EQUAL(req(c, "PUT", "/users/6", NULL, bad_json[i], &r), 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"error\""));
    httpc_resp_free(&r);
  }
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/6", NULL, "{\"_id\":6,\"a\":1}", NULL), 201);
  /* A field name twice in one object, at any depth: refused (drivers
   * disagree on which copy a reader sees), and nothing is stored. */
  const char *dups[] = {"{\"a\":1,\"a\":2}", "{\"a\":1,\"b\":0,\"a\":1}",
                        "{\"o\":{\"b\":1,\"b\":2}}", "{\"l\":[1,{\"x\":{\"b\":1,\"b\":2}}]}",
                        "{\"_id\":9,\"_id\":9}"};
  for (size_t i = 0; i < sizeof dups / sizeof *dups; i++) {
    http_resp_t r;
    CU_ASSERT_EQUAL(req(c, "PUT", "/users/9", NULL, dups[i], &r), 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "duplicate"));
    httpc_resp_free(&r);
  }
  CU_ASSERT_EQUAL(req(c, "GET", "/users/9", NULL, NULL, NULL), 404);
  /* The same name in different objects is fine. */
  CU_ASSERT_EQUAL(
      req(c, "PUT", "/users/9", NULL, "{\"a\":{\"a\":1},\"l\":[{\"a\":1},{\"a\":2}]}", NULL), 201);
  /* A body _id must be the URL's _id by type too: "77" (a string) is not
   * the int64 77 the URL names, nor is 77.0; {"$numberLong":"77"} and the
   * int32 77 are. */
  const char *other_ids[] = {"{\"_id\":\"77\",\"s\":1}", "{\"_id\":77.0}",
                             "{\"_id\":{\"$numberDecimal\":\"77\"}}", "{\"_id\":[77]}"};
  for (size_t i = 0; i < sizeof other_ids / sizeof *other_ids; i++)
    CU_ASSERT_EQUAL(req(c, "PUT", "/users/77", NULL, other_ids[i], NULL), 400);
  CU_ASSERT_EQUAL(req(c, "GET", "/users/77", NULL, NULL, NULL), 404);
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/x77", NULL, "{\"_id\":77}", NULL), 400);
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/77", NULL, "{\"_id\":{\"$numberLong\":\"77\"}}", NULL),
                  201);
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/77", NULL, "{\"_id\":77}", NULL), 204);
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/x77", NULL, "{\"_id\":\"x77\"}", NULL), 201);
  char deep[400];
  memset(deep, '[', 200);
  memset(deep + 200, ']', 200);
  char body[512];
  snprintf(body, sizeof body, "{\"a\":%.400s}", deep);
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/6", NULL, body, NULL), 400);
  /* Bodies over the limit: declared, and chunked (no length up front). */
  char *big = malloc(C_MAX_BODY + 2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(big);
  memset(big, ' ', C_MAX_BODY + 1);
  big[0] = '{';
  big[C_MAX_BODY] = '}';
  big[C_MAX_BODY + 1] = '\0';
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/7", NULL, big, NULL), 413);
  big[C_MAX_BODY - 1] = '}';
  big[C_MAX_BODY] = '\0';
  CU_ASSERT_EQUAL(req(c, "PUT", "/users/7", NULL, big, NULL), 201); /* at the limit: fine */
  free(big);
  char chunked[8192];
  int n = snprintf(chunked, sizeof chunked,
                   "PUT /users/8 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    n += snprintf(chunked + n, sizeof chunked - (size_t)n, "800\r\n");
    memset(chunked + n, ' ', 0x800);
    n += 0x800;
    n += snprintf(chunked + n, sizeof chunked - (size_t)n, "\r\n");
  }
  n += snprintf(chunked + n, sizeof chunked - (size_t)n, "0\r\n\r\n");
  CU_ASSERT_EQUAL(raw(chunked, (size_t)n), 413);
  /* Unknown routes and methods. */
  const char *routes[] = {"/", "/user/1", "/users", "/users/1/x", "/healthz/", "/metrics.txt"};
  for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
    CU_ASSERT_EQUAL(req(c, "GET", routes[i], NULL, NULL, NULL), 404);
  http_resp_t r;
  CU_ASSERT_EQUAL(req(c, "POST", "/users/1", NULL, "{}", &r), 405);
  CU_ASSERT_STRING_EQUAL(r.allow, "GET, HEAD, PUT, DELETE");
  httpc_resp_free(&r);
  CU_ASSERT_EQUAL(req(c, "PATCH", "/users/1", NULL, "{}", NULL), 405);
  CU_ASSERT_EQUAL(req(c, "DELETE", "/healthz", NULL, NULL, NULL), 405);
  CU_ASSERT_EQUAL(req(c, "PUT", "/metrics", NULL, "{}", NULL), 405);
  /* Malformed requests libmicrohttpd refuses itself (and /metrics
   * counts them apart: cdcache_http_protocol_errors_total). */
  static const char *const pe[] = {"cdcache_http_protocol_errors_total{code=\"400\"}",
                                   "cdcache_http_protocol_errors_total{code=\"413\"}",
                                   "cdcache_http_protocol_errors_total{code=\"414\"}",
                                   "cdcache_http_protocol_errors_total{code=\"431\"}"};
  double pe0[4];
  for (int i = 0; i < 4; i++)
    pe0[i] = metric(c, pe[i]) < 0 ? 0 : metric(c, pe[i]); /* absent until counted */
  /* A request line that is not HTTP: 400; a single word is cut
   * without an answer (libmicrohttpd 0.9.75). */
  static const char garbage[] = "HELLO WORLD\r\n\r\n", word[] = "HELLO\r\n\r\n";
  CU_ASSERT_EQUAL(raw(garbage, sizeof garbage - 1), 400);
  int st = raw(word, sizeof word - 1);
  CU_ASSERT(st == 400 || st == 0);
  static const char nohost[] = "GET /healthz HTTP/1.1\r\n\r\n";
  CU_ASSERT_EQUAL(raw(nohost, sizeof nohost - 1), 400);
  char *huge = malloc(40000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
  n = snprintf(huge, 40000, "GET /users/");
  memset(huge + n, 'a', 30000);
  n += 30000;
  n += snprintf(huge + n, 40000 - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
  st = raw(huge, (size_t)n);
  CU_ASSERT(st >= 400 && st < 500); /* 414 */
  n = snprintf(huge, 40000, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
  memset(huge + n, 'b', 30000);
  n += 30000;
  n += snprintf(huge + n, 40000 - (size_t)n, "\r\n\r\n");
  st = raw(huge, (size_t)n);
  CU_ASSERT(st >= 400 && st < 500); /* 431 */
  free(huge);
  static const char hugecl[] = "PUT /users/1 HTTP/1.1\r\nHost: x\r\nContent-Length: "
                               "99999999999999999999999\r\n\r\n";
  CU_ASSERT_EQUAL(raw(hugecl, sizeof hugecl - 1), 413);
  /* Two 400s at least (garbage, no Host; the one-word line may be cut
   * without one), and one each of 413, 414, 431. */
  double pe1[4];
  for (int i = 0; i < 4; i++)
    pe1[i] = metric(c, pe[i]);
  CU_ASSERT(pe1[0] - pe0[0] >= 2 && pe1[0] - pe0[0] <= 3);
  CU_ASSERT_EQUAL(pe1[1] - pe0[1], 1);
  CU_ASSERT_EQUAL(pe1[2] - pe0[2], 1);
  CU_ASSERT_EQUAL(pe1[3] - pe0[3], 1);
  /* The instance still serves. */
  CU_ASSERT_EQUAL(req(c, "GET", "/users/6", NULL, NULL, NULL), 200);
}

static void test_slow_and_excess_connections_are_cut(void)
{
  instance_t *c = &inst[C];
  httpc_close(&c->c);
  /* A request head that never completes is dropped after the idle
   * timeout, not held forever. */
  int fd = httpc_dial(c->port, IO_TIMEOUT_MS);
  CU_ASSERT_FATAL(fd >= 0);
  static const char partial[] = "GET /users/1 HTTP/1.1\r\nHost: x\r\n";
  CU_ASSERT_EQUAL(httpc_send_all(fd, partial, sizeof partial - 1), 0);
  uint64_t t0 = now_ms();
  char b;
  ssize_t got = recv(fd, &b, 1, 0);
  uint64_t took = now_ms() - t0;
  CU_ASSERT(got <= 0 && (got == 0 || errno == ECONNRESET));
  CU_ASSERT(took >= (C_CONN_TIMEOUT_S * 1000) / 2 && took < IO_TIMEOUT_MS);
  close(fd);

  /* At most max_connections are served at once; the others wait
   * (libmicrohttpd stops accepting: they stay in the listen backlog)
   * and are served once a slot frees. */
  sleep_ms(500); /* let the server reap the connections closed above */
  enum { OPEN = C_MAX_CONN + 3 };
  int fds[OPEN];
  static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < OPEN; i++) {
    fds[i] = httpc_dial(c->port, 1000);
    CU_ASSERT_FATAL(fds[i] >= 0);
    CU_ASSERT(httpc_send_all(fds[i], get, sizeof get - 1) == 0);
  }
  /* Well inside the idle timeout, so no served connection has been
   * closed yet: count those answered. */
  sleep_ms(700);
  int answered = 0;
  bool served[OPEN];
  for (int i = 0; i < OPEN; i++) {
    char peek;
    served[i] = recv(fds[i], &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
    if (served[i]) {
      http_resp_t r;
      CU_ASSERT_EQUAL_FATAL(httpc_read_response(fds[i], 0, &r), 0);
      CU_ASSERT_EQUAL(r.status, 200);
      httpc_resp_free(&r);
      answered++;
    }
  }
  CU_ASSERT(answered >= 1 && answered <= C_MAX_CONN);
  for (int i = 0; i < OPEN; i++)
    if (served[i]) {
      close(fds[i]);
      fds[i] = -1;
    }
  /* The waiting ones are answered once the served ones are gone. */
  struct timeval tv = {.tv_sec = IO_TIMEOUT_MS / 1000};
  for (int i = 0; i < OPEN; i++) {
    if (fds[i] < 0)
      continue;
    setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    http_resp_t r;
    CU_ASSERT_EQUAL(httpc_read_response(fds[i], 0, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    httpc_resp_free(&r);
    close(fds[i]);
  }
  CU_ASSERT_EQUAL(req(c, "GET", "/healthz", NULL, NULL, NULL), 200);
}

/* A connection to port from source address src (any 127.x.y.z is a
 * local address on Linux: another client IP), or -1. */
static int dial_from(const char *src, uint16_t port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in me = {.sin_family = AF_INET},
                     to = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, src, &me.sin_addr);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = IO_TIMEOUT_MS / 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (bind(fd, (struct sockaddr *)&me, sizeof me) != 0 ||
      connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* True when the server has closed fd (EOF or reset), without waiting. */
static bool closed_by_server(int fd)
{
  char b;
  ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void test_one_address_cannot_take_every_slot(void)
{
  /* Clients that trickle a request head a byte at a time are not cut by
   * the idle timeout; the per-address limit keeps one address from
   * holding more than a few slots.  Limit 3, idle timeout 60 s: of 6
   * slow connections from 127.0.0.2, exactly 3 stay, the others are
   * closed at once, and 127.0.0.1 is still served. */
  instance_t e = {.name = "E"};
  CU_ASSERT_FATAL(start_instance(&e, "--max-connections-per-ip", "3", "--conn-timeout=60") == 0);
  CU_ASSERT(wait_for(&e, "/healthz", 200, NULL, 20000) >= 0); /* the stream is up */
  httpc_close(&e.c);
  enum { SLOW = 6, LIMIT = 3 };
  int fds[SLOW];
  static const char head[] = "GET /users/1 HTTP/1.1\r\nHost: x\r\nX-a: ";
  for (int i = 0; i < SLOW; i++) {
    fds[i] = dial_from("127.0.0.2", e.port);
    CU_ASSERT_FATAL(fds[i] >= 0);
    send(fds[i], head, sizeof head - 1, MSG_NOSIGNAL);
  }
  int closed = 0;
  for (uint64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(50)) {
    closed = 0;
    for (int i = 0; i < SLOW; i++) {
      send(fds[i], "a", 1, MSG_NOSIGNAL); /* a byte now and then */
      closed += closed_by_server(fds[i]);
    }
    if (closed >= SLOW - LIMIT)
      break;
  }
  CU_ASSERT_EQUAL(closed, SLOW - LIMIT);
  /* Another address is served meanwhile (/metrics: 200 whatever the
   * stream's state). */
  CU_ASSERT_EQUAL(req(&e, "GET", "/metrics", NULL, NULL, NULL), 200);
  sleep_ms(300);
  closed = 0;
  for (int i = 0; i < SLOW; i++)
    closed += closed_by_server(fds[i]);
  CU_ASSERT_EQUAL(closed, SLOW - LIMIT); /* the 3 admitted ones are still held */
  for (int i = 0; i < SLOW; i++)
    close(fds[i]);
  httpc_close(&e.c);
  CU_ASSERT_EQUAL(stop(e.pid), 0);
}

/* Waits up to ms for pid to exit by itself: its exit status, or -1. */
static int wait_exit(pid_t pid, unsigned ms)
{
  for (uint64_t end = now_ms() + ms; now_ms() < end; sleep_ms(10)) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  return -1;
}

/* Starts a PUT of body on a new connection to in, sending its head and
 * only the first half of the body, and waits until the service counts
 * it in flight (with the /metrics request itself: 2).  Returns the fd. */
static int half_put(instance_t *in, const char *id, const char *body)
{
  int fd = httpc_dial(in->port, IO_TIMEOUT_MS);
  if (fd < 0)
    return -1;
  char head[256];
  int n = snprintf(head, sizeof head,
                   "PUT /users/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", id,
                   strlen(body));
  if (httpc_send_all(fd, head, (size_t)n) != 0 || httpc_send_all(fd, body, strlen(body) / 2) != 0) {
    close(fd);
    return -1;
  }
  for (uint64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(20))
    if (metric(in, "cdcache_http_requests_in_flight") >= 2)
      return fd;
  close(fd);
  return -1;
}

static void test_sigterm_drains_requests_in_flight(void)
{
  instance_t d = {.name = "F"};
  CU_ASSERT_FATAL(start_instance(&d, "--shutdown-grace", "60", NULL) == 0);
  CU_ASSERT(wait_for(&d, "/healthz", 200, NULL, 20000) >= 0); /* the stream is up */
  static const char body[] = "{\"drained\":\"yes\"}";
  int fd = half_put(&d, "drain1", body);
  CU_ASSERT_FATAL(fd >= 0);
  /* And a connection whose request head is still arriving (it has not
   * reached the service: libmicrohttpd reports a request once its head
   * is in), accepted before the SIGTERM. */
  int fd2 = httpc_dial(d.port, IO_TIMEOUT_MS);
  CU_ASSERT_FATAL(fd2 >= 0);
  static const char head1[] = "GET /users/drain1 HTTP/1.1\r\nHo", head2[] = "st: x\r\n\r\n";
  CU_ASSERT_EQUAL(httpc_send_all(fd2, head1, sizeof head1 - 1), 0);
  bool waiting = false;
  for (uint64_t end = now_ms() + 10000; now_ms() < end && !waiting; sleep_ms(20))
    waiting = metric(&d, "cdcache_http_connections_waiting") >= 1;
  CU_ASSERT_FATAL(waiting);
  kill(d.pid, SIGTERM);
  sleep_ms(300);
  /* Draining: /healthz says 503 on a kept-alive connection, and asks
   * the client to close it; the process waits for the PUT. */
  http_resp_t r;
  CU_ASSERT_EQUAL(req(&d, "GET", "/healthz", NULL, NULL, &r), 503);
  CU_ASSERT(r.closed);
  httpc_resp_free(&r);
  CU_ASSERT_EQUAL(waitpid(d.pid, NULL, WNOHANG), 0);
  /* The rest of the body: the PUT is answered in full. */
  CU_ASSERT_EQUAL(httpc_send_all(fd, body + strlen(body) / 2, strlen(body) - strlen(body) / 2), 0);
  CU_ASSERT_EQUAL(httpc_read_response(fd, 0, &r), 0);
  CU_ASSERT_EQUAL(r.status, 201);
  CU_ASSERT(r.closed);
  httpc_resp_free(&r);
  close(fd);
  /* Still waiting for the other connection's request: it is answered. */
  sleep_ms(300);
  CU_ASSERT_EQUAL(waitpid(d.pid, NULL, WNOHANG), 0);
  CU_ASSERT_EQUAL(httpc_send_all(fd2, head2, sizeof head2 - 1), 0);
  CU_ASSERT_EQUAL(httpc_read_response(fd2, 0, &r), 0);
  CU_ASSERT_EQUAL(r.status, 200);
  CU_ASSERT_PTR_NOT_NULL(r.body != NULL ? strstr(r.body, "yes") : NULL);
  CU_ASSERT(r.closed);
  httpc_resp_free(&r);
  close(fd2);
  /* Then it exits by itself, well before the grace period. */
  CU_ASSERT_EQUAL(wait_exit(d.pid, 20000), 0);
  CU_ASSERT(wait_for(&inst[A], "/users/drain1", 200, "yes", COHERENT_WITHIN_MS) >= 0);

  /* The grace period bounds the wait: a PUT that never completes is cut
   * after it (--shutdown-grace 1), and the exit is still clean. */
  instance_t g = {.name = "G"};
  CU_ASSERT_FATAL(start_instance(&g, "--shutdown-grace", "1", NULL) == 0);
  fd = half_put(&g, "drain2", body);
  CU_ASSERT_FATAL(fd >= 0);
  uint64_t t0 = now_ms();
  kill(g.pid, SIGTERM);
  CU_ASSERT_EQUAL(wait_exit(g.pid, 20000), 0);
  CU_ASSERT(now_ms() - t0 >= 900);
  char b;
  CU_ASSERT(recv(fd, &b, 1, 0) <= 0); /* cut, no response */
  close(fd);

  /* A slow database at shutdown: one worker thread (--threads 1), busy
   * with a read that waits out a 2.5 s stall, so a second client's
   * connection waits in the accept queue, not yet accepted, when the
   * SIGTERM comes.  Both get complete answers (404, or 503 if the read
   * failed), none is cut. */
  instance_t h = {.name = "H"};
  CU_ASSERT_FATAL(start_instance(&h, "--no-cache", "--threads=1", "--shutdown-grace=30") == 0);
  CU_ASSERT_EQUAL(req(&h, "GET", "/healthz", NULL, NULL, NULL), 200);
  httpc_close(&h.c);
  CU_ASSERT_FATAL(admin("{\"cdcacheFault\": \"stall\", \"ms\": 2500}"));
  int q[2];
  for (int i = 0; i < 2; i++) {
    char rq[128];
    int n = snprintf(rq, sizeof rq, "GET /users/drainq%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    q[i] = httpc_dial(h.port, IO_TIMEOUT_MS);
    CU_ASSERT_FATAL(q[i] >= 0);
    CU_ASSERT_EQUAL(httpc_send_all(q[i], rq, (size_t)n), 0);
    sleep_ms(300);
  }
  kill(h.pid, SIGTERM);
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL(httpc_read_response(q[i], 0, &r), 0);
    CU_ASSERT(r.status == 404 || r.status == 503);
    httpc_resp_free(&r);
    close(q[i]);
  }
  CU_ASSERT_EQUAL(wait_exit(h.pid, 30000), 0);
  /* The stall also cut the other instances' streams: wait them back. */
  for (int i = 0; i < N_INST; i++)
    CU_ASSERT(wait_for(&inst[i], "/healthz", 200, NULL, 30000) >= 0);
}

static void test_no_cache_reads_the_database_every_time(void)
{
  instance_t d = {.name = "D"};
  CU_ASSERT_FATAL(start_instance(&d, "--no-cache", NULL, NULL) == 0);
  CU_ASSERT_EQUAL(req(&d, "GET", "/healthz", NULL, NULL, NULL), 200);
  for (int i = 0; i < 5; i++)
    CU_ASSERT_EQUAL(req(&d, "GET", "/users/6", NULL, NULL, NULL), 200);
  for (int i = 0; i < 5; i++)
    CU_ASSERT_EQUAL(req(&d, "GET", "/users/404404", NULL, NULL, NULL), 404);
  CU_ASSERT_EQUAL(metric(&d, "cdcache_http_db_reads_total"), 10);
  CU_ASSERT_EQUAL(metric(&d, "cdcache_hits_total"), -1); /* no cache, no cache metrics */
  httpc_close(&d.c);
  CU_ASSERT_EQUAL(stop(d.pid), 0);
}

static void test_instances_exit_cleanly_on_sigterm(void)
{
  for (int i = 0; i < N_INST; i++) {
    httpc_close(&inst[i].c);
    int st = stop(inst[i].pid);
    inst[i].pid = 0;
    if (st != 0)
      fprintf(stderr, "test_http: instance %s exited with %d\n", inst[i].name, st);
    CU_ASSERT_EQUAL(st, 0);
  }
}

int main(int argc, char **argv)
{
  if (argc != 4) {
    fprintf(stderr, "usage: test_http SERVER EXAMPLE PROMTOOL\n");
    return 2;
  }
  server_path = argv[1];
  example_path = argv[2];
  promtool_path = argv[3];
  if (mkdtemp(dir) == NULL)
    return 1;
  mongoc_init();
  char pf[256];
  snprintf(pf, sizeof pf, "%s/server.port", dir);
  char *sargv[] = {(char *)server_path, "--port", "0", "--port-file", pf, "--quiet", NULL};
  uint16_t sport;
  server_pid = spawn("server", sargv, &sport);
  if (server_pid < 0)
    return 1;
  snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%u/?replicaSet=rs0", sport);
  admin_client = db_client();
  char body[16], timeout[16], conns[16];
  snprintf(body, sizeof body, "%d", C_MAX_BODY);
  snprintf(timeout, sizeof timeout, "%d", C_CONN_TIMEOUT_S);
  snprintf(conns, sizeof conns, "%d", C_MAX_CONN);
  int failed = start_instance(&inst[A], NULL, NULL, NULL) != 0 ||
               start_instance(&inst[B], NULL, NULL, NULL) != 0;
  if (!failed) {
    char *cargv_extra[] = {"--max-body",        body, "--conn-timeout", timeout,
                           "--max-connections", conns};
    char pfc[256], stale[16];
    snprintf(pfc, sizeof pfc, "%s/C.port", dir);
    snprintf(stale, sizeof stale, "%d", MAX_STALE_MS);
    char *argv_c[] = {(char *)example_path,
                      "--port",
                      "0",
                      "--port-file",
                      pfc,
                      "--mongodb-uri",
                      uri,
                      "--max-stale-ms",
                      stale,
                      "--threads",
                      "2",
                      cargv_extra[0],
                      cargv_extra[1],
                      cargv_extra[2],
                      cargv_extra[3],
                      cargv_extra[4],
                      cargv_extra[5],
                      NULL};
    inst[C].pid = spawn("C", argv_c, &inst[C].port);
    failed = inst[C].pid < 0;
    if (!failed)
      httpc_init(&inst[C].c, inst[C].port, IO_TIMEOUT_MS);
  }
  /* Ready when every stream is established (healthz 200). */
  for (int i = 0; i < N_INST && !failed; i++)
    failed = wait_for(&inst[i], "/healthz", 200, NULL, 20000) < 0;
  int rc = 1;
  if (!failed && CU_initialize_registry() == CUE_SUCCESS) {
    CU_pSuite s = CU_add_suite("http", NULL, NULL);
    CU_add_test(s, "a PUT through one instance is served by every instance",
                test_put_is_served_by_every_instance);
    CU_add_test(s, "a DELETE through one instance is served by every instance",
                test_delete_is_served_by_every_instance);
    CU_add_test(s, "absence is cached until an insert evicts it",
                test_absence_is_cached_until_an_insert_evicts_it);
    CU_add_test(s, "ETag from the value, If-None-Match answered 304", test_etag_and_if_none_match);
    CU_add_test(s, "/healthz is 503 while the stream is stalled, then 200",
                test_healthz_is_503_while_the_stream_is_stalled);
    CU_add_test(s, "/metrics passes promtool", test_metrics_pass_promtool);
    CU_add_test(s, "bad requests get 4xx", test_bad_requests_get_4xx);
    CU_add_test(s, "slow and excess connections are cut", test_slow_and_excess_connections_are_cut);
    CU_add_test(s, "one address cannot take every connection slot",
                test_one_address_cannot_take_every_slot);
    CU_add_test(s, "SIGTERM drains the requests in flight", test_sigterm_drains_requests_in_flight);
    CU_add_test(s, "--no-cache reads the database every time",
                test_no_cache_reads_the_database_every_time);
    CU_add_test(s, "instances exit cleanly on SIGTERM", test_instances_exit_cleanly_on_sigterm);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    rc = CU_get_number_of_failures() == 0 ? 0 : 1;
    CU_cleanup_registry();
  } else {
    fprintf(stderr, "test_http: the instances did not come up\n");
  }
  for (int i = 0; i < N_INST; i++)
    if (inst[i].pid > 0)
      stop(inst[i].pid);
  mongoc_client_destroy(admin_client);
  int sst = stop(server_pid);
  if (sst != 0) {
    fprintf(stderr, "test_http: the test server exited with %d\n", sst);
    rc = 1;
  }
  mongoc_cleanup();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "test_http: could not remove %s\n", dir);
  return rc;
}
