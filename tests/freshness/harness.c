/* Process harness shared by cdcache-freshness and cdcache-soak (see harness.h). */
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t h_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t h_now_ms(void)
{
  return h_now_ns() / 1000000u;
}

void h_sleep_ms(uint64_t ms)
{
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/*
 * The registry.  Written only by the main thread (h_child_add/forget);
 * read by the signal handler and the atexit hook.  Each slot is a
 * volatile sig_atomic_t-sized pid written in one store, so a handler that
 * interrupts an update sees either the old or the new pid of that slot,
 * and killing a pid twice or a 0 slot is harmless (0 is skipped).
 */
#define H_MAX_CHILDREN 64
static volatile pid_t children[H_MAX_CHILDREN]; /* main thread writes; handler reads */

void h_child_add(pid_t pid)
{
  for (int i = 0; i < H_MAX_CHILDREN; i++)
    if (children[i] == 0) {
      children[i] = pid;
      return;
    }
  /* More children than slots: the caller's design is wrong. */
  fprintf(stderr, "harness: child registry full\n");
  kill(pid, SIGKILL);
  abort();
}

void h_child_forget(pid_t pid)
{
  for (int i = 0; i < H_MAX_CHILDREN; i++)
    if (children[i] == pid)
      children[i] = 0;
}

/* Async-signal-safe: kill() only. */
static void kill_all(void)
{
  for (int i = 0; i < H_MAX_CHILDREN; i++) {
    pid_t p = children[i];
    if (p > 0)
      kill(p, SIGKILL);
  }
}

static void on_fatal_signal(int sig)
{
  static const char msg_alarm[] = "harness: watchdog expired, killing children\n";
  static const char msg_sig[] = "harness: interrupted, killing children\n";
  if (sig == SIGALRM)
    (void)!write(2, msg_alarm, sizeof msg_alarm - 1);
  else
    (void)!write(2, msg_sig, sizeof msg_sig - 1);
  kill_all();
  _exit(3);
}

static void at_exit_kill(void)
{
  kill_all();
}

void h_install_cleanup(unsigned watchdog_s)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGALRM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  atexit(at_exit_kill);
  if (watchdog_s)
    alarm(watchdog_s);
}

void h_in_child(unsigned watchdog_s)
{
  pid_t parent = getppid();
  for (int i = 0; i < H_MAX_CHILDREN; i++)
    children[i] = 0; /* the siblings are not ours to kill */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGALRM, SIG_DFL); /* the watchdog terminates the child itself */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) /* the parent died before prctl */
    _exit(4);
  alarm(watchdog_s);
}

int h_wait_child(pid_t pid, uint64_t timeout_ms)
{
  int st = -1;
  uint64_t deadline = h_now_ms() + timeout_ms;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      break;
    if (r < 0 && errno != EINTR) {
      st = -1;
      break;
    }
    if (h_now_ms() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      st = -1;
      break;
    }
    h_sleep_ms(5);
  }
  h_child_forget(pid);
  return st;
}

const char *h_find_server(const char *explicit_path)
{
  static char buf[PATH_MAX];
  const char *env = getenv("CDCACHE_MONGO_TEST_SERVER");
  if (explicit_path && *explicit_path)
    return explicit_path;
  if (env && *env)
    return env;
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0)
    return NULL;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (!slash)
    return NULL;
  *slash = '\0';
  slash = strrchr(buf, '/');
  if (!slash)
    return NULL;
  *slash = '\0';
  size_t used = strlen(buf);
  if (used + 48 >= sizeof buf)
    return NULL;
  strcat(buf, "/mongo-server/cdcache-mongo-test-server");
  return access(buf, X_OK) == 0 ? buf : NULL;
}

int h_server_start(const char *path, long oplog_size, h_server_t *s)
{
  char portfile[96], oplog[32];
  memset(s, 0, sizeof *s);
  (void)snprintf(s->dir, sizeof s->dir, "/tmp/cdcache-harness-XXXXXX");
  if (!mkdtemp(s->dir))
    return -1;
  (void)snprintf(portfile, sizeof portfile, "%s/port", s->dir);
  (void)snprintf(oplog, sizeof oplog, "%ld", oplog_size > 0 ? oplog_size : 100000);
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the run */
    execl(path, path, "--port", "0", "--port-file", portfile, "--oplog-size", oplog, "--quiet",
          (char *)NULL);
    _exit(127);
  }
  s->pid = pid;
  h_child_add(pid);
  uint64_t deadline = h_now_ms() + 10000;
  while (h_now_ms() < deadline) {
    FILE *f = fopen(portfile, "r");
    if (f) {
      int port = 0;
      int n = fscanf(f, "%d", &port);
      (void)fclose(f);
      if (n == 1 && port > 0) {
        s->port = port;
        (void)snprintf(s->uri, sizeof s->uri, "mongodb://127.0.0.1:%d/?replicaSet=rs0", port);
        return 0;
      }
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      h_child_forget(pid);
      s->pid = 0;
      fprintf(stderr, "harness: %s exited before listening (status %d)\n", path, st);
      return -1;
    }
    h_sleep_ms(5);
  }
  fprintf(stderr, "harness: %s did not write its port within 10 s\n", path);
  (void)h_server_stop(s);
  return -1;
}

int h_server_stop(h_server_t *s)
{
  char portfile[96];
  int st = -1;
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    st = h_wait_child(s->pid, 5000);
    s->pid = 0;
  }
  if (s->dir[0]) {
    (void)snprintf(portfile, sizeof portfile, "%s/port", s->dir);
    (void)unlink(portfile);
    (void)rmdir(s->dir);
    s->dir[0] = '\0';
  }
  return st;
}

mongoc_client_t *h_client(const char *uri, int socket_ms, int select_ms, const char *appname)
{
  bson_error_t err;
  mongoc_uri_t *u = mongoc_uri_new_with_error(uri, &err);
  if (!u) {
    fprintf(stderr, "harness: bad uri %s: %s\n", uri, err.message);
    return NULL;
  }
  mongoc_uri_set_option_as_int32(u, MONGOC_URI_SOCKETTIMEOUTMS, socket_ms);
  mongoc_uri_set_option_as_int32(u, MONGOC_URI_CONNECTTIMEOUTMS, 1000);
  mongoc_uri_set_option_as_int32(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, select_ms);
  /* A single-threaded client otherwise waits 5 s after a failed server
   * check before it selects the server again. */
  mongoc_uri_set_option_as_bool(u, MONGOC_URI_SERVERSELECTIONTRYONCE, false);
  mongoc_uri_set_appname(u, appname);
  mongoc_client_t *c = mongoc_client_new_from_uri_with_error(u, &err);
  mongoc_uri_destroy(u);
  if (!c) {
    fprintf(stderr, "harness: client: %s\n", err.message);
    return NULL;
  }
  mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  return c;
}

bool h_admin(mongoc_client_t *c, const char *json, bson_t *reply, char *err, size_t errcap)
{
  bson_error_t berr;
  bson_t *cmd = bson_new_from_json((const uint8_t *)json, -1, &berr);
  bool ok = false;
  if (!cmd) {
    if (err && errcap)
      (void)snprintf(err, errcap, "bad command JSON: %s", berr.message);
    return false;
  }
  for (int attempt = 0; attempt < 5 && !ok; attempt++) {
    bson_t r;
    ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &r, &berr);
    if (ok && reply)
      bson_copy_to(&r, reply);
    bson_destroy(&r);
    if (!ok) {
      if (err && errcap)
        (void)snprintf(err, errcap, "%s (domain %u code %u)", berr.message, berr.domain, berr.code);
      if (berr.domain != MONGOC_ERROR_STREAM && berr.domain != MONGOC_ERROR_SERVER_SELECTION)
        break; /* the server answered: retrying changes nothing */
      h_sleep_ms(20);
    }
  }
  bson_destroy(cmd);
  return ok;
}
