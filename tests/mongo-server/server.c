/*
 * Entry point of cdcache-mongo-test-server: parses the command line, listens
 * on a loopback address, runs one thread per client connection, applies the
 * "stall" fault, and shuts down cleanly (joining every thread and freeing all
 * state) on SIGTERM or SIGINT.
 */
#include "mongo_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Connections beyond this many are closed at once (one thread each). */
#define MAX_CONNECTIONS 1000

ms_server_t g_ms;

static int sig_pipe[2] = {-1, -1};

int64_t ms_now_mono_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void ms_cond_wait_until(int64_t deadline_us)
{
  struct timespec ts;
  ts.tv_sec = (time_t)(deadline_us / 1000000);
  ts.tv_nsec = (long)(deadline_us % 1000000) * 1000;
  pthread_cond_timedwait(&g_ms.cond, &g_ms.mu, &ts);
}

void ms_log(const char *fmt, ...)
{
  if (g_ms.quiet) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cdcache-mongo-test-server: ");
  vfprintf(stderr, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized): va_start above
  fputc('\n', stderr);
  va_end(ap);
}

void ms_drop_all_connections(ms_conn_t *self)
{
  uint64_t n = 0;
  pthread_mutex_lock(&g_ms.conn_mu);
  for (ms_conn_t *c = g_ms.conns; c; c = c->next) {
    if (self != NULL && c == self) {
      c->close_after_reply = true;
    } else if (c->fd >= 0) {
      shutdown(c->fd, SHUT_RDWR);
      n++;
    }
  }
  pthread_mutex_unlock(&g_ms.conn_mu);
  pthread_mutex_lock(&g_ms.mu);
  g_ms.stat_conns_dropped += n;
  pthread_mutex_unlock(&g_ms.mu);
}

bool ms_wait_out_partition(ms_conn_t *c)
{
  if (!c->change_stream) {
    return true;
  }
  pthread_mutex_lock(&g_ms.mu);
  if (!g_ms.shutting_down && g_ms.partition_until_us > ms_now_mono_us()) {
    g_ms.stat_partition_held++;
  }
  while (!g_ms.shutting_down && g_ms.partition_until_us > ms_now_mono_us()) {
    ms_cond_wait_until(g_ms.partition_until_us);
  }
  bool running = !g_ms.shutting_down;
  pthread_mutex_unlock(&g_ms.mu);
  return running;
}

/* The slow catch-up after a partition: every cut change-stream reply
 * waits (of any connection: a stream resumed on a new one too), until
 * "off" or the next partition. */
static void pace_catch_up(void)
{
  pthread_mutex_lock(&g_ms.mu);
  if (g_ms.catchup_delay_ms > 0 && ms_reply_was_cursor && ms_reply_was_cut &&
      g_ms.partition_until_us <= ms_now_mono_us()) {
    int64_t until = ms_now_mono_us() + g_ms.catchup_delay_ms * 1000;
    g_ms.stat_catchup_delayed++;
    while (!g_ms.shutting_down && ms_now_mono_us() < until) {
      ms_cond_wait_until(until);
    }
  }
  pthread_mutex_unlock(&g_ms.mu);
}

static bool is_change_stream_command(const ms_request_t *req)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, &req->cmd) || !bson_iter_next(&it)) {
    return false;
  }
  const char *name = bson_iter_key(&it);
  return !strcmp(name, "aggregate") || !strcmp(name, "getMore") || !strcmp(name, "killCursors");
}

/* Waits while a stall fault is active; returns false if the server is stopping. */
static bool wait_out_stall(void)
{
  pthread_mutex_lock(&g_ms.mu);
  while (!g_ms.shutting_down && g_ms.stall_until_us > ms_now_mono_us()) {
    ms_cond_wait_until(g_ms.stall_until_us);
  }
  bool running = !g_ms.shutting_down;
  pthread_mutex_unlock(&g_ms.mu);
  return running;
}

static void *conn_main(void *arg)
{
  ms_conn_t *c = arg;
  for (;;) {
    uint32_t len;
    uint8_t *buf = ms_wire_read(c->fd, &len);
    if (!buf) {
      break;
    }
    ms_request_t req;
    char why[256];
    bool ok = ms_wire_parse(buf, len, &req, why, sizeof why);
    free(buf);
    if (!ok) {
      ms_log("connection %" PRId64 ": malformed message (%s); closing it", c->id, why);
      break;
    }
    if (is_change_stream_command(&req)) {
      c->change_stream = true;
    }
    if (!wait_out_stall() || !ms_wait_out_partition(c)) {
      ms_request_destroy(&req);
      break;
    }
    bson_t reply = BSON_INITIALIZER;
    ms_reply_was_cursor = false;
    ms_reply_was_cut = false;
    ms_action_t act = ms_handle_command(c, &req, &reply);
    bool keep = act == MS_REPLY;
    /* A partition that began while the command ran holds its reply too. */
    if (keep && !ms_wait_out_partition(c)) {
      keep = false;
    }
    if (keep && c->change_stream) {
      pace_catch_up();
    }
    if (keep && !req.more_to_come) {
      keep = ms_wire_reply(c->fd, &req, &reply);
    }
    bson_destroy(&reply);
    ms_request_destroy(&req);
    if (!keep || c->close_after_reply) {
      break;
    }
  }
  pthread_mutex_lock(&g_ms.conn_mu);
  close(c->fd);
  c->fd = -1;
  g_ms.conns_open--;
  c->done = true;
  pthread_mutex_unlock(&g_ms.conn_mu);
  return NULL;
}

/* Joins and frees finished connections (all of them if all is set). */
static void reap_conns(bool all)
{
  for (;;) {
    ms_conn_t *victim = NULL;
    pthread_mutex_lock(&g_ms.conn_mu);
    ms_conn_t **pp = &g_ms.conns;
    while (*pp) {
      if ((*pp)->done || all) {
        victim = *pp;
        *pp = victim->next;
        break;
      }
      pp = &(*pp)->next;
    }
    pthread_mutex_unlock(&g_ms.conn_mu);
    if (!victim) {
      return;
    }
    pthread_join(victim->thread, NULL);
    free(victim);
  }
}

static void on_signal(int sig)
{
  (void)sig;
  int saved = errno;
  if (write(sig_pipe[1], "x", 1) < 0) {
    /* Nothing can be done in a signal handler. */
  }
  errno = saved;
}

static void usage(FILE *f)
{
  fprintf(f, "usage: cdcache-mongo-test-server [--host 127.0.0.1] [--port N] [--port-file PATH]\n"
             "                                 [--oplog-size N] [--set-name rs0] [--hello-pad N]\n"
             "                                 [--quiet]\n"
             "A MongoDB wire-protocol test server with change streams and fault injection.\n"
             "  --port N         TCP port (0, the default, picks a free port)\n"
             "  --host ADDR      IPv4 loopback address to listen on (default 127.0.0.1)\n"
             "  --port-file PATH write the chosen port there once listening\n"
             "  --oplog-size N   number of change events kept for resuming (default 100000)\n"
             "  --set-name NAME  replica set name reported by hello (default rs0)\n"
             "  --hello-pad N    add N bytes of padding to every hello reply (default 0)\n"
             "  --quiet          no log output\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || !*s || *end || v < lo || v > hi) {
    return false;
  }
  *out = v;
  return true;
}

static bool write_port_file(const char *path, int port)
{
  char *tmp = bson_strdup_printf("%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f) {
    bson_free(tmp);
    return false;
  }
  fprintf(f, "%d\n", port);
  bool ok = fclose(f) == 0 && rename(tmp, path) == 0;
  if (!ok) {
    unlink(tmp);
  }
  bson_free(tmp);
  return ok;
}

int main(int argc, char **argv)
{
  long port = 0, oplog = 100000, pad = 0;
  const char *port_file = NULL;
  memset(&g_ms, 0, sizeof g_ms);
  bson_strncpy(g_ms.host, "127.0.0.1", sizeof g_ms.host);
  bson_strncpy(g_ms.set_name, "rs0", sizeof g_ms.set_name);

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--quiet")) {
      g_ms.quiet = true;
    } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
      // NOLINTNEXTLINE(bugprone-branch-clone): each option only consumes its value
    } else if (!strcmp(a, "--port") && v && parse_long(v, 0, 65535, &port)) {
      i++;
    } else if (!strcmp(a, "--oplog-size") && v && parse_long(v, 1, 100000000, &oplog)) {
      i++;
    } else if (!strcmp(a, "--port-file") && v) {
      port_file = v;
      i++;
    } else if (!strcmp(a, "--host") && v && strlen(v) < sizeof g_ms.host) {
      bson_strncpy(g_ms.host, v, sizeof g_ms.host);
      i++;
    } else if (!strcmp(a, "--hello-pad") && v && parse_long(v, 0, 1000000, &pad)) {
      g_ms.hello_pad = (size_t)pad;
      i++;
    } else if (!strcmp(a, "--set-name") && v && *v && strlen(v) < sizeof g_ms.set_name) {
      bson_strncpy(g_ms.set_name, v, sizeof g_ms.set_name);
      i++;
    } else {
      fprintf(stderr, "cdcache-mongo-test-server: bad argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, g_ms.host, &sa.sin_addr) != 1 ||
      (ntohl(sa.sin_addr.s_addr) >> 24) != 127) {
    fprintf(stderr,
            "cdcache-mongo-test-server: --host must be an IPv4 loopback address (127.x.x.x)\n");
    return 2;
  }

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 128) < 0) {
    fprintf(stderr, "cdcache-mongo-test-server: cannot listen on %s:%ld: %s\n", g_ms.host, port,
            strerror(errno));
    if (lfd >= 0) {
      close(lfd);
    }
    return 1;
  }
  socklen_t slen = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &slen);
  g_ms.port = ntohs(sa.sin_port);

  /* Shared state. */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g_ms.cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&g_ms.mu, NULL);
  pthread_mutex_init(&g_ms.conn_mu, NULL);
  g_ms.oplog_cap = (size_t)oplog;
  g_ms.oplog = bson_malloc0(g_ms.oplog_cap * sizeof *g_ms.oplog);
  g_ms.epoch = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16);
  srand((unsigned)g_ms.epoch);

  /* Signals: SIGTERM/SIGINT wake the accept loop through a pipe. */
  if (pipe(sig_pipe) < 0) {
    perror("pipe");
    return 1;
  }
  fcntl(sig_pipe[0], F_SETFD, FD_CLOEXEC);
  fcntl(sig_pipe[1], F_SETFD, FD_CLOEXEC);
  fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction act;
  memset(&act, 0, sizeof act);
  act.sa_handler = on_signal;
  sigemptyset(&act.sa_mask);
  sigaction(SIGTERM, &act, NULL);
  sigaction(SIGINT, &act, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (port_file && !write_port_file(port_file, g_ms.port)) {
    fprintf(stderr, "cdcache-mongo-test-server: cannot write %s: %s\n", port_file, strerror(errno));
    return 1;
  }
  ms_log("listening on %s:%d (replica set %s, oplog size %zu)", g_ms.host, g_ms.port, g_ms.set_name,
         g_ms.oplog_cap);

  int64_t next_conn_id = 1;
  for (;;) {
    struct pollfd pfd[2] = {{lfd, POLLIN, 0}, {sig_pipe[0], POLLIN, 0}};
    int r = poll(pfd, 2, 500);
    reap_conns(false);
    if (r < 0 && errno != EINTR) {
      perror("poll");
      break;
    }
    if (r > 0 && pfd[1].revents) {
      break;
    }
    if (r > 0 && (pfd[0].revents & POLLIN)) {
      int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0) {
        continue;
      }
      pthread_mutex_lock(&g_ms.conn_mu);
      bool full = g_ms.conns_open >= MAX_CONNECTIONS;
      pthread_mutex_unlock(&g_ms.conn_mu);
      if (full) {
        ms_log("too many connections (%d); refusing one", MAX_CONNECTIONS);
        close(fd);
        continue;
      }
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ms_conn_t *c = calloc(1, sizeof *c);
      if (!c) {
        close(fd);
        continue;
      }
      c->fd = fd;
      c->id = next_conn_id++;
      pthread_mutex_lock(&g_ms.conn_mu);
      c->next = g_ms.conns;
      g_ms.conns = c;
      g_ms.conns_open++;
      g_ms.stat_conns_total++;
      /* Block the signals in connection threads so only the main thread gets them. */
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, &old);
      int err = pthread_create(&c->thread, NULL, conn_main, c);
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      if (err) {
        g_ms.conns = c->next;
        g_ms.conns_open--;
        pthread_mutex_unlock(&g_ms.conn_mu);
        close(fd);
        free(c);
        continue;
      }
      pthread_mutex_unlock(&g_ms.conn_mu);
    }
  }

  ms_log("shutting down");
  close(lfd);
  pthread_mutex_lock(&g_ms.mu);
  g_ms.shutting_down = true;
  pthread_cond_broadcast(&g_ms.cond);
  pthread_mutex_unlock(&g_ms.mu);
  ms_drop_all_connections(NULL);
  reap_conns(true);

  for (int i = 0; i < MS_MAX_FAIL_RULES; i++) {
    if (g_ms.rules[i].labels) {
      bson_destroy(g_ms.rules[i].labels);
    }
  }
  ms_cursors_free_all();
  ms_store_free_all();
  ms_oplog_free_all();
  pthread_cond_destroy(&g_ms.cond);
  pthread_mutex_destroy(&g_ms.mu);
  pthread_mutex_destroy(&g_ms.conn_mu);
  close(sig_pipe[0]);
  close(sig_pipe[1]);
  return 0;
}
