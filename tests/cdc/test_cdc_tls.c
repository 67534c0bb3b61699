/*
 * CDC over TLS through cdcache's interruptible stream (issue 11 item 1):
 * the wire-protocol test server behind stunnel (Debian's stunnel4), with
 * a self-signed certificate this test makes with the openssl tool.  The
 * subscription's URI carries tls=true and tlsCAFile.  Checks: events
 * arrive; cdcache_cdc_stop returns within 1 s while the server is silent
 * (socketTimeoutMS 10 s: libmongoc's own initiator would wait it out); a
 * certificate from another CA fails the handshake with the error in the
 * stats, and tlsAllowInvalidCertificates then connects; an option the
 * stream cannot honour fails with a message naming it.
 *
 * Exits 77 (ctest SKIP_RETURN_CODE) only when stunnel or openssl is not
 * installed; run.sh installs both.
 *
 * usage: test_cdc_tls --server PATH
 */
#include "cdc_testutil.h"

#include <CUnit/Basic.h>
#include <cdcache.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *g_server_path;
static char g_stunnel[256];
static char g_openssl[256];
static char g_dir[64];
static tu_server_t g_srv;
static pid_t g_tunnel_pid;
static int g_tls_port;

/* ------------------------------------------------------------ helpers */

static bool find_tool(const char *name, char *out, size_t cap)
{
  const char *path = getenv("PATH");
  char buf[4096];
  (void)snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin:/usr/sbin:/sbin");
  char *save = NULL;
  for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    (void)snprintf(out, cap, "%s/%s", d, name);
    if (access(out, X_OK) == 0)
      return true;
  }
  return false;
}

/* Runs argv with output to /dev/null; true when it exits 0. */
static bool run(char *const argv[])
{
  pid_t pid = fork();
  if (pid == 0) {
    int dn = open("/dev/null", O_WRONLY);
    dup2(dn, 1);
    dup2(dn, 2);
    execv(argv[0], argv);
    _exit(127);
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid)
    return false;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A self-signed certificate for 127.0.0.1 (and key) named base.pem /
 * base.key in g_dir. */
static bool make_cert(const char *base)
{
  char key[128], crt[128];
  (void)snprintf(key, sizeof key, "%s/%s.key", g_dir, base);
  (void)snprintf(crt, sizeof crt, "%s/%s.pem", g_dir, base);
  char *argv[] = {g_openssl,  "req",
                  "-x509",    "-newkey",
                  "rsa:2048", "-nodes",
                  "-keyout",  key,
                  "-out",     crt,
                  "-days",    "2",
                  "-subj",    "/CN=127.0.0.1",
                  "-addext",  "subjectAltName=IP:127.0.0.1,DNS:localhost",
                  NULL};
  return run(argv);
}

static bool port_open(int port)
{
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
  close(s);
  return ok;
}

/* stunnel in the foreground: TLS on g_tls_port -> the test server. */
static bool tunnel_start(void)
{
  char conf[128];
  (void)snprintf(conf, sizeof conf, "%s/stunnel.conf", g_dir);
  FILE *f = fopen(conf, "w");
  if (!f)
    return false;
  g_tls_port = tu_free_port();
  (void)fprintf(f,
                "foreground = yes\npid =\ndebug = 3\noutput = %s/stunnel.log\n[mongo]\n"
                "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\ncert = %s/server.pem\n"
                "key = %s/server.key\n",
                g_dir, g_tls_port, g_srv.port, g_dir, g_dir);
  (void)fclose(f);
  g_tunnel_pid = fork();
  if (g_tunnel_pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int dn = open("/dev/null", O_WRONLY);
    dup2(dn, 1);
    dup2(dn, 2);
    execl(g_stunnel, g_stunnel, conf, (char *)NULL);
    _exit(127);
  }
  uint64_t t0 = tu_now_ms();
  while (tu_now_ms() - t0 < 10000) {
    if (port_open(g_tls_port))
      return true;
    int st;
    if (waitpid(g_tunnel_pid, &st, WNOHANG) == g_tunnel_pid) {
      g_tunnel_pid = 0;
      return false;
    }
    (void)poll(NULL, 0, 20);
  }
  return false;
}

static void tunnel_stop(void)
{
  if (g_tunnel_pid > 0) {
    kill(g_tunnel_pid, SIGTERM);
    waitpid(g_tunnel_pid, NULL, 0);
    g_tunnel_pid = 0;
  }
}

/* ----------------------------------------------------------- fixture */

typedef struct seen {
  pthread_mutex_t mu;
  int n;            /* mu */
  char key[64][32]; /* mu */
} seen_t;

static void on_evict(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag)
{
  seen_t *s = ctx;
  (void)op;
  (void)ns;
  (void)lag;
  if (!key)
    return;
  pthread_mutex_lock(&s->mu);
  if (s->n < 64)
    (void)snprintf(s->key[s->n++], 32, "%.*s", (int)klen, (const char *)key);
  pthread_mutex_unlock(&s->mu);
}

static bool seen_has(seen_t *s, const char *k)
{
  bool found = false;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->n && !found; i++)
    found = strcmp(s->key[i], k) == 0;
  pthread_mutex_unlock(&s->mu);
  return found;
}

static void quiet_log(void *ctx, int level, const char *msg)
{
  (void)ctx;
  if (getenv("CDC_TLS_VERBOSE"))
    (void)fprintf(stderr, "  [log %d] %s\n", level, msg);
}

typedef struct fx {
  cdcache_t *cache;
  cdcache_cdc_t *sub;
  cdcache_cdc_config_t cfg;
  seen_t seen;
  char uri[512];
  mongoc_client_t *w;
} fx_t;

static const cdcache_cdc_rule_t users_rule[] = {{"app.users", "user:{_id}"}};

static void fx_open(fx_t *f, const char *tls_opts)
{
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->seen.mu, NULL);
  cdcache_config_t c;
  cdcache_config_init(&c);
  c.max_entries = 1000;
  c.log = quiet_log;
  CU_ASSERT_FATAL(cdcache_open(&c, &f->cache) == 0);
  (void)snprintf(f->uri, sizeof f->uri, "mongodb://127.0.0.1:%d/?directConnection=true&tls=true&%s",
                 g_tls_port, tls_opts);
  cdcache_cdc_config_init(&f->cfg);
  f->cfg.uri = f->uri;
  f->cfg.db = "app";
  f->cfg.coll = "users";
  f->cfg.rules = users_rule;
  f->cfg.n_rules = 1;
  f->cfg.max_await_ms = 100;
  f->cfg.connect_timeout_ms = 3000;
  f->cfg.socket_timeout_ms = 3000;
  f->cfg.max_stale_ms = 0;
  f->cfg.backoff_initial_ms = 50;
  f->cfg.backoff_max_ms = 200;
  f->cfg.route_mongoc_log = 1;
  f->cfg.log = quiet_log;
  f->cfg.on_evict = on_evict;
  f->cfg.on_evict_ctx = &f->seen;
  f->w = tu_client(g_srv.uri); /* the test's writes: plain, straight to the server */
  CU_ASSERT_FATAL(f->w != NULL);
}

static void fx_close(fx_t *f)
{
  if (f->sub)
    cdcache_cdc_stop(f->sub);
  cdcache_close(f->cache);
  mongoc_client_destroy(f->w);
  pthread_mutex_destroy(&f->seen.mu);
}

static cdcache_cdc_stats_t stats_of(fx_t *f)
{
  return tu_stats(f->sub);
}

static bool pred_streaming(void *ctx)
{
  fx_t *f = ctx;
  cdcache_cdc_stats_t st = stats_of(f);
  return st.state == CDCACHE_CDC_STREAMING && st.last_answer_ms != 0;
}

static bool pred_error(void *ctx)
{
  fx_t *f = ctx;
  cdcache_cdc_stats_t st = stats_of(f);
  return st.reconnects >= 1 && st.last_error[0] != '\0';
}

static void insert(fx_t *f, int id)
{
  bson_t *d = BCON_NEW("_id", BCON_INT32(id), "v", BCON_INT32(id));
  CU_ASSERT(tu_insert(f->w, "app", "users", d));
  bson_destroy(d);
}

typedef struct keywait {
  fx_t *f;
  const char *key;
} keywait_t;

static bool pred_seen(void *ctx)
{
  keywait_t *k = ctx;
  return seen_has(&k->f->seen, k->key);
}

/* ------------------------------------------------------------- tests */

static char g_ca_opt[256];

static void test_events_over_tls(void)
{
  fx_t f;
  fx_open(&f, g_ca_opt);
  CU_ASSERT_FATAL(cdcache_cdc_start(f.cache, &f.cfg, &f.sub) == 0);
  CU_ASSERT(tu_wait(pred_streaming, &f, 15000));
  insert(&f, 1);
  insert(&f, 2);
  keywait_t k1 = {&f, "user:1"}, k2 = {&f, "user:2"};
  CU_ASSERT(tu_wait(pred_seen, &k1, 10000));
  CU_ASSERT(tu_wait(pred_seen, &k2, 10000));
  cdcache_cdc_stats_t st = stats_of(&f);
  CU_ASSERT_EQUAL(st.reconnects, 0);
  (void)printf("(events %llu over TLS) ", (unsigned long long)st.events);
  fx_close(&f);
}

/* The server goes silent (a stall: no answer to any command) while the
 * subscription waits in a getMore over TLS; socketTimeoutMS is 10 s. */
static void test_prompt_stop_over_tls(void)
{
  fx_t f;
  fx_open(&f, g_ca_opt);
  f.cfg.socket_timeout_ms = 10000;
  f.cfg.connect_timeout_ms = 10000;
  CU_ASSERT_FATAL(cdcache_cdc_start(f.cache, &f.cfg, &f.sub) == 0);
  CU_ASSERT_FATAL(tu_wait(pred_streaming, &f, 15000));
  /* 4 s of silence (a stall cannot be ended early: the "off" command
   * waits in it too) */
  CU_ASSERT(tu_admin(f.w, "{\"cdcacheFault\": \"stall\", \"ms\": 4000}"));
  uint64_t stalled = tu_now_ms();
  (void)poll(NULL, 0, 500); /* the subscription is now stuck in a read */
  uint64_t t0 = tu_now_ms();
  cdcache_cdc_stop(f.sub);
  f.sub = NULL;
  uint64_t took = tu_now_ms() - t0;
  (void)printf("(stop took %llu ms) ", (unsigned long long)took);
  CU_ASSERT(took < 1000);
  while (tu_now_ms() - stalled < 4200) /* let the stall end for the next test */
    (void)poll(NULL, 0, 50);
  fx_close(&f);
}

/* A server certificate from another CA: the handshake fails, the error
 * is in the stats; tlsAllowInvalidCertificates accepts it. */
static void test_wrong_ca_then_allow_invalid(void)
{
  fx_t f;
  char opt[300];
  (void)snprintf(opt, sizeof opt, "tlsCAFile=%s/other.pem", g_dir);
  fx_open(&f, opt);
  CU_ASSERT_FATAL(cdcache_cdc_start(f.cache, &f.cfg, &f.sub) == 0);
  CU_ASSERT(tu_wait(pred_error, &f, 15000));
  cdcache_cdc_stats_t st = stats_of(&f);
  (void)printf("(%s) ", st.last_error);
  CU_ASSERT(st.state != CDCACHE_CDC_STREAMING);
  CU_ASSERT(strstr(st.last_error, "TLS") != NULL || strstr(st.last_error, "certificate") != NULL);
  fx_close(&f);

  (void)snprintf(opt, sizeof opt, "tlsCAFile=%s/other.pem&tlsAllowInvalidCertificates=true", g_dir);
  fx_open(&f, opt);
  CU_ASSERT_FATAL(cdcache_cdc_start(f.cache, &f.cfg, &f.sub) == 0);
  CU_ASSERT(tu_wait(pred_streaming, &f, 15000));
  insert(&f, 3);
  keywait_t k = {&f, "user:3"};
  CU_ASSERT(tu_wait(pred_seen, &k, 10000));
  fx_close(&f);
}

static void test_unsupported_option_named(void)
{
  fx_t f;
  char opt[300];
  (void)snprintf(opt, sizeof opt, "%s&tlsDisableOCSPEndpointCheck=true", g_ca_opt);
  fx_open(&f, opt);
  CU_ASSERT_FATAL(cdcache_cdc_start(f.cache, &f.cfg, &f.sub) == 0);
  CU_ASSERT(tu_wait(pred_error, &f, 15000));
  cdcache_cdc_stats_t st = stats_of(&f);
  (void)printf("(%s) ", st.last_error);
  CU_ASSERT(strstr(st.last_error, "tlsdisableocspendpointcheck is not supported") != NULL);
  fx_close(&f);
}

int main(int argc, char **argv)
{
  for (int i = 1; i + 1 < argc; i += 2)
    if (!strcmp(argv[i], "--server"))
      g_server_path = argv[i + 1];
  if (!g_server_path || !*g_server_path) {
    (void)fprintf(stderr, "usage: test_cdc_tls --server PATH\n");
    return 2;
  }
  if ((!find_tool("stunnel4", g_stunnel, sizeof g_stunnel) &&
       !find_tool("stunnel", g_stunnel, sizeof g_stunnel)) ||
      !find_tool("openssl", g_openssl, sizeof g_openssl)) {
    (void)printf("skipped: stunnel4 or openssl not installed (run.sh installs them)\n");
    return 77;
  }
  signal(SIGPIPE, SIG_IGN);
  mongoc_init();
  (void)snprintf(g_dir, sizeof g_dir, "/tmp/cdc-tls-XXXXXX");
  if (!mkdtemp(g_dir) || !make_cert("server") || !make_cert("other")) {
    (void)fprintf(stderr, "cannot make certificates with %s\n", g_openssl);
    return 1;
  }
  (void)snprintf(g_ca_opt, sizeof g_ca_opt, "tlsCAFile=%s/server.pem", g_dir);
  int rc = 1;
  if (tu_server_start(g_server_path, 0, &g_srv) != 0 || !tunnel_start()) {
    (void)fprintf(stderr, "cannot start the test server or stunnel\n");
    goto out;
  }
  if (CU_initialize_registry() != CUE_SUCCESS)
    goto out;
  CU_pSuite s = CU_add_suite("cdc_tls", NULL, NULL);
  CU_add_test(s, "events over TLS (stunnel)", test_events_over_tls);
  CU_add_test(s, "stop within 1 s while the server is silent", test_prompt_stop_over_tls);
  CU_add_test(s, "another CA fails; tlsAllowInvalidCertificates connects",
              test_wrong_ca_then_allow_invalid);
  CU_add_test(s, "an option the stream cannot honour is named", test_unsupported_option_named);
  setvbuf(stdout, NULL, _IONBF, 0);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  rc = CU_get_number_of_failures() ? 1 : 0;
  CU_cleanup_registry();
out:
  tunnel_stop();
  tu_server_stop(&g_srv);
  char cmd[256];
  static const char *const files[] = {"server.pem", "server.key",   "other.pem",
                                      "other.key",  "stunnel.conf", "stunnel.log"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    (void)snprintf(cmd, sizeof cmd, "%s/%s", g_dir, files[i]);
    unlink(cmd);
  }
  rmdir(g_dir);
  mongoc_cleanup();
  return rc;
}
