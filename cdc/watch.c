/*
 * cdcache-watch: subscribe a cache to a MongoDB change stream and print
 * every eviction, one line each:
 *
 *   KEY<TAB>OPERATION<TAB>NAMESPACE<TAB>LAG_MS
 *   *<TAB>flush<TAB>REASON<TAB>-
 *
 * until SIGINT or SIGTERM, or until stdout is closed (EPIPE); then stop
 * cleanly and print a summary to stderr.  Errors go to stderr with a
 * non-zero exit (2: usage, 1: start failed).
 *
 * The subscription's thread must never block (cdcache_cdc_evict_fn), so
 * the eviction observer only formats a line into a bounded queue and
 * wakes main; a full queue drops the line and counts it (the summary says
 * how many).  main alone writes stdout, PIPE_BUF bytes at a time and only
 * when poll says stdout can take them, so a consumer that stops reading
 * never blocks it: it still sees SIGTERM (signalfd) and ends within a
 * second.  Log lines (the log callback runs on the subscription's thread
 * too, e.g. "resumed the change stream") take the same path through a
 * second queue to stderr, so `cdcache-watch ... 2>&1 | stalled-reader`
 * cannot block it either; main writes to at most one of the two
 * descriptors per poll, because they may be one pipe.  The summary gets
 * at most 300 ms to be written (it is dropped if stderr is stalled).
 * Bytes of a key or namespace below 0x20, 0x7f and the backslash are
 * escaped (\t \n \r \\ \xHH), so every line is one line of four fields.
 */
#include "cdcache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
  (void)fprintf(f, "usage: cdcache-watch --uri URI [--db DB [--coll COLL]]\n"
                   "                     --rule NS=TEMPLATE [--rule ...]\n"
                   "                     [--max-stale-ms N] [--max-await-ms N]\n"
                   "                     [--queue-bytes N] (default 4194304: lines that\n"
                   "                     do not fit while stdout is blocked are dropped)\n"
                   "                     [--verbose]\n"
                   "  NS is db.coll, db.* or *; TEMPLATE e.g. user:{_id}\n"
                   "  prints KEY<TAB>OPERATION<TAB>NAMESPACE<TAB>LAG_MS per evicted "
                   "key\n");
}

static int verbose;

/* A queue between the subscription's thread (or any thread that logs) and
 * main: a byte ring of whole lines.  Every field is protected by mu. */
#define LINE_MAX_BYTES (4u * 65536u + 1024u) /* a 65535-byte key, escaped */
typedef struct {
  pthread_mutex_t mu;
  char *buf;        /* mu; cap bytes */
  size_t cap;       /* immutable once set */
  size_t head, len; /* mu; oldest byte, bytes held */
  uint64_t lines;   /* mu; queued */
  uint64_t dropped; /* mu; did not fit */
} lineq_t;

/* evictions for stdout (--queue-bytes, default 4 MiB) */
static lineq_t q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cap = 4u << 20};
/* log lines for stderr */
static lineq_t qerr = {.mu = PTHREAD_MUTEX_INITIALIZER, .cap = 64u << 10};
static int wake_fd = -1; /* eventfd main polls; immutable once set */

/* Appends s[0..n) escaped to out (cap >= 4 * n); returns the new length. */
static size_t escape(char *out, size_t o, const char *s, size_t n)
{
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\t' || c == '\n' || c == '\r' || c == '\\') {
      out[o++] = '\\';
      out[o++] = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
    } else if (c < 0x20 || c == 0x7f) {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    } else {
      out[o++] = (char)c;
    }
  }
  return o;
}

static void queue_push(lineq_t *lq, const char *line, size_t n)
{
  uint64_t one = 1;
  (void)pthread_mutex_lock(&lq->mu);
  if (!lq->buf || n > lq->cap - lq->len) {
    lq->dropped++;
    (void)pthread_mutex_unlock(&lq->mu);
    return;
  }
  size_t tail = (lq->head + lq->len) % lq->cap;
  size_t first = n < lq->cap - tail ? n : lq->cap - tail;
  memcpy(lq->buf + tail, line, first);
  memcpy(lq->buf, line + first, n - first);
  lq->len += n;
  lq->lines++;
  (void)pthread_mutex_unlock(&lq->mu);
  if (wake_fd >= 0 && write(wake_fd, &one, sizeof one) < 0) {
    /* EAGAIN: the counter is already non-zero, main will wake */
  }
}

/* The log callback: any thread, so the line is formatted on the stack;
 * queued for main to write to stderr, never written here. */
static void on_log(void *ctx, int level, const char *msg)
{
  static const char *const names[] = {"error", "warning", "info", "debug"};
  char line[1024];
  (void)ctx;
  if (level > CDCACHE_LOG_WARNING && !verbose)
    return;
  int n = snprintf(line, sizeof line, "cdcache-watch: %s: %s\n",
                   level >= 0 && level <= 3 ? names[level] : "log", msg);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof line) { /* cut: still one line */
    n = (int)sizeof line - 1;
    line[n - 1] = '\n';
  }
  queue_push(&qerr, line, (size_t)n);
}

/* The eviction observer: format, queue, never block. */
static void on_evict(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag_ms)
{
  static char line[LINE_MAX_BYTES]; /* the subscription's thread only */
  size_t n = 0, nslen = strlen(ns);
  (void)ctx;
  if (nslen > 1024)
    nslen = 1024;
  if (!key) {
    line[n++] = '*';
    n += (size_t)snprintf(line + n, 16, "\tflush\t");
    n = escape(line, n, ns, nslen);
    line[n++] = '\t';
    line[n++] = '-';
    line[n++] = '\n';
  } else {
    if (klen > 65535)
      klen = 65535;
    n = escape(line, 0, key, klen);
    line[n++] = '\t';
    n += (size_t)snprintf(line + n, 32, "%.24s\t", op);
    n = escape(line, n, ns, nslen);
    if (lag_ms >= 0)
      n += (size_t)snprintf(line + n, 32, "\t%lld\n", (long long)lag_ms);
    else
      n += (size_t)snprintf(line + n, 32, "\t-\n");
  }
  queue_push(&q, line, n);
}

/* Copies up to cap queued bytes out (not removed yet). */
static size_t queue_peek(lineq_t *lq, char *out, size_t cap)
{
  (void)pthread_mutex_lock(&lq->mu);
  size_t n = lq->len < cap ? lq->len : cap;
  size_t first = n < lq->cap - lq->head ? n : lq->cap - lq->head;
  memcpy(out, lq->buf + lq->head, first);
  memcpy(out + first, lq->buf, n - first);
  (void)pthread_mutex_unlock(&lq->mu);
  return n;
}

static void queue_consume(lineq_t *lq, size_t n)
{
  (void)pthread_mutex_lock(&lq->mu);
  lq->head = (lq->head + n) % lq->cap;
  lq->len -= n;
  (void)pthread_mutex_unlock(&lq->mu);
}

/* One write of at most PIPE_BUF queued bytes to fd, which poll said can
 * take them (so it does not block).  Returns -1 on EPIPE or a broken fd. */
static int write_some(lineq_t *lq, int fd, short revents)
{
  char chunk[PIPE_BUF];
  size_t have = queue_peek(lq, chunk, sizeof chunk);
  if (!have)
    return 0;
  ssize_t w = write(fd, chunk, have);
  if (w < 0 && (errno == EPIPE || (revents & POLLERR)))
    return -1;
  if (w > 0)
    queue_consume(lq, (size_t)w);
  return 0;
}

static size_t queued(lineq_t *lq)
{
  (void)pthread_mutex_lock(&lq->mu);
  size_t n = lq->len;
  (void)pthread_mutex_unlock(&lq->mu);
  return n;
}

/* main's loop: write what is queued while stdout and stderr take it,
 * until a signal or EPIPE on stdout.  At most one write per poll: stdout
 * and stderr may be one pipe, and POLLOUT promises room for one write.
 * Returns the signal, or 0 when stdout was closed. */
static int pump(int sig_fd)
{
  bool err_ok = true; /* stderr still open */
  for (;;) {
    bool out_has = queued(&q) > 0, err_has = err_ok && queued(&qerr) > 0;
    struct pollfd p[4] = {{sig_fd, POLLIN, 0},
                          {wake_fd, POLLIN, 0},
                          {out_has ? 1 : -1, POLLOUT, 0},
                          {err_has ? 2 : -1, POLLOUT, 0}};
    int n = poll(p, 4, -1);
    if (n < 0 && errno != EINTR)
      return SIGTERM;
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
        return (int)si.ssi_signo;
    }
    if (p[1].revents & POLLIN) {
      uint64_t v;
      if (read(wake_fd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing to clear */
      }
    }
    if (err_has && (p[3].revents & (POLLOUT | POLLERR | POLLHUP))) {
      if (write_some(&qerr, 2, p[3].revents) < 0)
        err_ok = false;
    } else if (out_has && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      if (write_some(&q, 1, p[2].revents) < 0)
        return 0;
    }
  }
}

/* After the stop: what is left for stderr, then text, each write only
 * when poll says it fits, for at most ms in all (a stalled stderr does
 * not hold the exit). */
static void finish_stderr(const char *text, uint32_t ms)
{
  queue_push(&qerr, text, strlen(text));
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (queued(&qerr) > 0) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    long spent = (long)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
    if (spent >= (long)ms)
      return;
    struct pollfd p = {2, POLLOUT, 0};
    if (poll(&p, 1, (int)(ms - (uint32_t)spent)) <= 0)
      return;
    if (write_some(&qerr, 2, p.revents) < 0)
      return;
  }
}

static int parse_u32(const char *s, uint32_t *out)
{
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || *end || end == s || v > UINT32_MAX)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

int main(int argc, char **argv)
{
  cdcache_cdc_config_t cfg;
  cdcache_config_t ccfg;
  cdcache_t *cache = NULL;
  cdcache_cdc_t *sub = NULL;
  cdcache_cdc_rule_t *rules;
  size_t n_rules = 0;
  sigset_t set;
  int sig, rc;

  cdcache_cdc_config_init(&cfg);
  rules = calloc((size_t)argc, sizeof *rules);
  if (!rules) {
    (void)fprintf(stderr, "cdcache-watch: out of memory\n");
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      free(rules);
      return 0;
    } else if (!strcmp(a, "--verbose")) {
      verbose = 1;
      continue;
    }
    if (!v) {
      (void)fprintf(stderr, "cdcache-watch: %s needs a value\n", a);
      usage(stderr);
      free(rules);
      return 2;
    }
    i++;
    if (!strcmp(a, "--uri")) {
      cfg.uri = v;
    } else if (!strcmp(a, "--db")) {
      cfg.db = v;
    } else if (!strcmp(a, "--coll")) {
      cfg.coll = v;
    } else if (!strcmp(a, "--rule")) {
      const char *eq = strchr(v, '=');
      char err[256];
      if (!eq) {
        (void)fprintf(stderr, "cdcache-watch: --rule needs NS=TEMPLATE: %s\n", v);
        free(rules);
        return 2;
      }
      char *ns = strndup(v, (size_t)(eq - v));
      if (!ns) {
        free(rules);
        return 1;
      }
      rules[n_rules].ns = ns;
      rules[n_rules].key_template = eq + 1;
      if (cdcache_cdc_rule_check(&rules[n_rules], err, sizeof err) != 0) {
        (void)fprintf(stderr, "cdcache-watch: bad rule %s: %s\n", v, err);
        free(ns);
        for (size_t k = 0; k < n_rules; k++)
          free((char *)rules[k].ns);
        free(rules);
        return 2;
      }
      n_rules++;
    } else if (!strcmp(a, "--max-stale-ms")) {
      if (parse_u32(v, &cfg.max_stale_ms)) {
        (void)fprintf(stderr, "cdcache-watch: bad --max-stale-ms %s\n", v);
        free(rules);
        return 2;
      }
    } else if (!strcmp(a, "--queue-bytes")) {
      uint32_t qb;
      if (parse_u32(v, &qb) || qb < 4096) {
        (void)fprintf(stderr, "cdcache-watch: bad --queue-bytes %s (at least 4096)\n", v);
        free(rules);
        return 2;
      }
      q.cap = qb;
    } else if (!strcmp(a, "--max-await-ms")) {
      if (parse_u32(v, &cfg.max_await_ms)) {
        (void)fprintf(stderr, "cdcache-watch: bad --max-await-ms %s\n", v);
        free(rules);
        return 2;
      }
    } else {
      (void)fprintf(stderr, "cdcache-watch: unknown option %s\n", a);
      usage(stderr);
      free(rules);
      return 2;
    }
  }
  if (!cfg.uri || n_rules == 0) {
    (void)fprintf(stderr, "cdcache-watch: --uri and at least one --rule are "
                          "required\n");
    usage(stderr);
    for (size_t k = 0; k < n_rules; k++)
      free((char *)rules[k].ns);
    free(rules);
    return 2;
  }
  cfg.rules = rules;
  cfg.n_rules = n_rules;
  cfg.on_evict = on_evict;
  cfg.log = on_log;
  /* stdout carries the evictions: keep libmongoc's own log lines (its
   * default handler prints to stdout) out of it. */
  cfg.route_mongoc_log = 1;

  /* Block the signals before any thread exists: every thread inherits the
   * mask and main receives them through a signalfd.  SIGPIPE is ignored:
   * a closed stdout shows as EPIPE. */
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
  wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  q.buf = malloc(q.cap);
  qerr.buf = malloc(qerr.cap);
  if (sig_fd < 0 || wake_fd < 0 || !q.buf || !qerr.buf) {
    (void)fprintf(stderr, "cdcache-watch: cannot set up: %s\n", strerror(errno));
    for (size_t k = 0; k < n_rules; k++)
      free((char *)rules[k].ns);
    free(rules);
    free(q.buf);
    free(qerr.buf);
    return 1;
  }

  cdcache_config_init(&ccfg);
  ccfg.max_entries = 1u << 16;
  ccfg.log = on_log;
  rc = cdcache_open(&ccfg, &cache);
  if (rc == 0)
    rc = cdcache_cdc_start(cache, &cfg, &sub);
  if (rc != 0) {
    char msg[128];
    (void)snprintf(msg, sizeof msg, "cdcache-watch: cannot start: %s\n", cdcache_strerror(rc));
    finish_stderr(msg, 1000); /* after the log lines that explain it */
    cdcache_close(cache);
    for (size_t k = 0; k < n_rules; k++)
      free((char *)rules[k].ns);
    free(rules);
    free(q.buf);
    free(qerr.buf);
    return 1;
  }
  (void)fprintf(stderr, "cdcache-watch: watching (SIGINT or SIGTERM stops)\n");
  sig = pump(sig_fd);

  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cdcache_cdc_stats(sub, &st);
  cdcache_cdc_stop(sub);
  uint64_t flushes = 0, lines, dropped, log_dropped;
  for (int r = 0; r < CDCACHE_CDC_FLUSH_REASONS; r++)
    flushes += cdcache_cdc_flush_count(&st, r);
  (void)pthread_mutex_lock(&q.mu);
  lines = q.lines;
  dropped = q.dropped;
  (void)pthread_mutex_unlock(&q.mu);
  (void)pthread_mutex_lock(&qerr.mu);
  log_dropped = qerr.dropped;
  (void)pthread_mutex_unlock(&qerr.mu);
  char summary[1024];
  (void)snprintf(summary, sizeof summary,
                 "cdcache-watch: stopped on %s: events %llu, keys evicted %llu, "
                 "flushes %llu, reconnects %llu, malformed %llu, lines %llu, dropped %llu "
                 "(queue full), log lines dropped %llu, lag p50 %llu ms p99 %llu ms over %u, "
                 "state %s%s, resume token %.300s\n",
                 sig == SIGINT ? "SIGINT"
                 : sig == 0    ? "stdout closed"
                               : "SIGTERM",
                 (unsigned long long)st.events, (unsigned long long)st.keys_evicted,
                 (unsigned long long)flushes, (unsigned long long)st.reconnects,
                 (unsigned long long)st.malformed_events, (unsigned long long)lines,
                 (unsigned long long)dropped, (unsigned long long)log_dropped,
                 (unsigned long long)st.lag_p50_ms, (unsigned long long)st.lag_p99_ms,
                 st.lag_samples, cdcache_cdc_state_name(st.state),
                 st.failed_closed ? " (failed closed)" : "",
                 st.resume_token[0] ? st.resume_token : "-");
  /* every thread that logs has ended (stop joined, the cache is idle) */
  finish_stderr(summary, 300);
  free(q.buf);
  free(qerr.buf);
  close(sig_fd);
  close(wake_fd);
  cdcache_close(cache);
  for (size_t k = 0; k < n_rules; k++)
    free((char *)rules[k].ns);
  free(rules);
  return 0;
}
