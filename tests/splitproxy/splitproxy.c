/*
 * splitproxy (see splitproxy.h): one accept thread; per connection an
 * "up" thread copying client bytes to the server and a "down" thread
 * reading the server's messages whole (length prefix, then the rest) and
 * writing each to the client in one piece or, when the rule selects it,
 * in several.  Every blocking call is a poll() that also watches the
 * proxy's stop eventfd and the connection's own "done" eventfd, so
 * sp_stop and a dead peer end both threads at once.  A message whose
 * length field is not a plausible wire message (below 16 or above 64 MiB)
 * is passed through as raw bytes from then on.
 */
#include "splitproxy.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define SP_MAX_MSG (64u << 20)

typedef struct sp_conn {
  struct sp_proxy *proxy;
  int cfd, sfd; /* client and server sockets; closed by the reaper */
  int done_fd;  /* eventfd: written when either side ends (never read) */
  pthread_t up, down;
  atomic_int finished;  /* threads that have returned (0..2) */
  struct sp_conn *next; /* the proxy's list: accept thread and sp_stop only */
} sp_conn_t;

struct sp_proxy {
  int lfd, port, target_port;
  int stop_fd; /* eventfd: written by sp_stop (never read) */
  pthread_t acceptor;
  sp_conn_t *conns; /* accept thread, then sp_stop after the join */
  pthread_mutex_t mu;
  sp_rule_t rule;   /* mu */
  char *match;      /* mu: rule.match's copy */
  size_t match_len; /* mu */
  bool has_rule;    /* mu */
  unsigned matched; /* mu: replies matched since the rule was set */
  uint64_t rng;     /* mu */
  /* statistics: atomics, relaxed (read as a snapshot) */
  atomic_uint_fast64_t connections, replies, split, pieces, closed, silenced, refusals;
  int64_t refuse_until_ms; /* mu: while refusing, when to listen again */
  atomic_int pending;
};

static uint64_t next_rand(sp_proxy_t *p)
{
  uint64_t x = p->rng; /* caller holds mu */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  p->rng = x;
  return x;
}

/* Waits for fd to be ready for events; false on stop or a dead peer. */
static bool wait_io(sp_conn_t *c, int fd, short events)
{
  for (;;) {
    struct pollfd pf[3] = {
        {fd, events, 0}, {c->proxy->stop_fd, POLLIN, 0}, {c->done_fd, POLLIN, 0}};
    int n = poll(pf, 3, -1);
    if (n < 0 && errno == EINTR)
      continue;
    return n > 0 && !pf[1].revents && !pf[2].revents;
  }
}

/* A pause that stop and a dead peer cut short; false when they did. */
static bool pause_ms(sp_conn_t *c, unsigned ms)
{
  struct pollfd pf[2] = {{c->proxy->stop_fd, POLLIN, 0}, {c->done_fd, POLLIN, 0}};
  int n;
  do {
    n = poll(pf, 2, (int)ms);
  } while (n < 0 && errno == EINTR);
  return n == 0;
}

static bool read_full(sp_conn_t *c, int fd, uint8_t *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    if (!wait_io(c, fd, POLLIN))
      return false;
    ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
    if (n > 0)
      got += (size_t)n;
    else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return false;
  }
  return true;
}

static bool write_full(sp_conn_t *c, int fd, const uint8_t *buf, size_t len)
{
  size_t put = 0;
  while (put < len) {
    if (!wait_io(c, fd, POLLOUT))
      return false;
    ssize_t n = send(fd, buf + put, len - put, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0)
      put += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return false;
  }
  return true;
}

static void conn_end(sp_conn_t *c)
{
  uint64_t one = 1;
  if (write(c->done_fd, &one, sizeof one) < 0) {
    /* an eventfd write fails only on overflow: it is readable anyway */
  }
}

/* Copies bytes one way until either side ends. */
static void pump_raw(sp_conn_t *c, int from, int to)
{
  uint8_t buf[16384];
  for (;;) {
    if (!wait_io(c, from, POLLIN))
      return;
    ssize_t n = recv(from, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      return;
    if (n > 0 && !write_full(c, to, buf, (size_t)n))
      return;
  }
}

static void *up_main(void *arg)
{
  sp_conn_t *c = arg;
  pump_raw(c, c->cfd, c->sfd);
  conn_end(c);
  atomic_fetch_add(&c->finished, 1);
  return NULL;
}

/* The plan for one message: where its pieces end, pauses, what then. */
typedef struct plan {
  size_t cuts[SP_MAX_CUTS + 2];
  unsigned ncuts;
  unsigned pause[SP_MAX_CUTS + 2];
  sp_after_t after;
  unsigned refuse_ms;
} plan_t;

static bool plan_for(sp_proxy_t *p, const uint8_t *msg, size_t len, plan_t *pl)
{
  bool split = false;
  memset(pl, 0, sizeof *pl);
  pthread_mutex_lock(&p->mu);
  if (p->has_rule && (!p->match || memmem(msg, len, p->match, p->match_len))) {
    p->matched++;
    if (p->rule.nth == 0 || p->rule.nth == p->matched) {
      split = true;
      pl->after = p->rule.after;
      pl->refuse_ms = p->rule.refuse_ms;
      if (p->rule.random && len > 1) {
        unsigned n = 1 + (unsigned)(next_rand(p) % 3);
        size_t at = 0;
        for (unsigned i = 0; i < n && at + 1 < len; i++) {
          size_t lo = at + 1;
          size_t hi = i == 0 && next_rand(p) % 2 == 0 && len > 16 ? 15 : len - 1;
          if (hi < lo)
            break;
          at = lo + (size_t)(next_rand(p) % (hi - lo + 1));
          pl->cuts[pl->ncuts] = at;
          pl->pause[pl->ncuts++] =
              p->rule.pause_ms ? (unsigned)(next_rand(p) % (p->rule.pause_ms + 1)) : 0;
        }
      } else {
        for (unsigned i = 0; i < p->rule.ncuts && i < SP_MAX_CUTS; i++) {
          size_t at = p->rule.cuts[i];
          if (at == 0 || at >= len || (pl->ncuts && at <= pl->cuts[pl->ncuts - 1]))
            continue;
          pl->cuts[pl->ncuts] = at;
          pl->pause[pl->ncuts++] = p->rule.pause_ms;
        }
      }
      size_t tail = p->rule.withhold;
      if (tail > 0 && tail < len && (pl->ncuts == 0 || len - tail > pl->cuts[pl->ncuts - 1])) {
        pl->cuts[pl->ncuts] = len - tail;
        pl->pause[pl->ncuts++] = p->rule.hold_ms;
      }
    }
  }
  pthread_mutex_unlock(&p->mu);
  return split && (pl->ncuts > 0 || pl->after != SP_DELIVER);
}

static int64_t mono_ms_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Stops listening now (shutdown of a listening socket makes the kernel
 * refuse new connections at once); the accept thread listens again after
 * ms. */
static void refuse(sp_proxy_t *p, unsigned ms)
{
  pthread_mutex_lock(&p->mu);
  p->refuse_until_ms = mono_ms_now() + ms;
  if (p->lfd >= 0)
    (void)shutdown(p->lfd, SHUT_RDWR);
  pthread_mutex_unlock(&p->mu);
  atomic_fetch_add(&p->refusals, 1);
}

/* Writes one message as planned; false when the connection ends. */
static bool deliver(sp_conn_t *c, const uint8_t *msg, size_t len)
{
  sp_proxy_t *p = c->proxy;
  plan_t pl;
  if (!plan_for(p, msg, len, &pl))
    return write_full(c, c->cfd, msg, len);
  atomic_fetch_add(&p->split, 1);
  size_t at = 0;
  bool ok = true;
  atomic_fetch_add(&p->pending, 1);
  for (unsigned i = 0; i <= pl.ncuts && ok; i++) {
    size_t end = i < pl.ncuts ? pl.cuts[i] : len;
    ok = write_full(c, c->cfd, msg + at, end - at);
    atomic_fetch_add(&p->pieces, 1);
    at = end;
    if (!ok || at == len)
      break;
    if (i + 1 == pl.ncuts && pl.after == SP_CLOSE) {
      if (pl.refuse_ms > 0)
        refuse(p, pl.refuse_ms);
      atomic_fetch_add(&p->closed, 1);
      ok = false;
    } else if (i + 1 == pl.ncuts && pl.after == SP_SILENT) {
      atomic_fetch_add(&p->silenced, 1);
      /* hold the rest until stop or the client hangs up */
      (void)wait_io(c, c->cfd, POLLRDHUP);
      ok = false;
    } else {
      ok = pause_ms(c, pl.pause[i]);
    }
  }
  atomic_fetch_sub(&p->pending, 1);
  return ok;
}

static void *down_main(void *arg)
{
  sp_conn_t *c = arg;
  uint8_t *msg = NULL;
  size_t cap = 0;
  for (;;) {
    uint8_t head[4];
    if (!read_full(c, c->sfd, head, 4))
      break;
    size_t len =
        (size_t)head[0] | (size_t)head[1] << 8 | (size_t)head[2] << 16 | (size_t)head[3] << 24;
    if (len < 16 || len > SP_MAX_MSG) { /* not a wire message: raw from here */
      if (write_full(c, c->cfd, head, 4))
        pump_raw(c, c->sfd, c->cfd);
      break;
    }
    if (len > cap) {
      uint8_t *m = realloc(msg, len);
      if (!m)
        break;
      msg = m;
      cap = len;
    }
    memcpy(msg, head, 4);
    if (!read_full(c, c->sfd, msg + 4, len - 4))
      break;
    atomic_fetch_add(&c->proxy->replies, 1);
    if (!deliver(c, msg, len))
      break;
  }
  free(msg);
  conn_end(c);
  atomic_fetch_add(&c->finished, 1);
  return NULL;
}

static void conn_free(sp_conn_t *c)
{
  pthread_join(c->up, NULL);
  pthread_join(c->down, NULL);
  close(c->cfd);
  close(c->sfd);
  close(c->done_fd);
  free(c);
}

/* Joins and frees the connections whose threads both returned. */
static void reap(sp_proxy_t *p, bool all)
{
  sp_conn_t **pp = &p->conns;
  while (*pp) {
    sp_conn_t *c = *pp;
    if (all || atomic_load(&c->finished) == 2) {
      *pp = c->next;
      conn_free(c);
    } else {
      pp = &c->next;
    }
  }
}

static int connect_target(int port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* A listening socket on 127.0.0.1:port (0: any); -1 on failure. */
static int listen_on(int port)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* While refusing (see refuse): close the shut listener, and listen again
 * once the time is up.  Accept thread. */
static void relisten(sp_proxy_t *p)
{
  pthread_mutex_lock(&p->mu);
  int64_t until = p->refuse_until_ms;
  bool shut = until != 0;
  if (shut && p->lfd >= 0) {
    close(p->lfd);
    p->lfd = -1;
  }
  if (shut && mono_ms_now() >= until) {
    p->lfd = listen_on(p->port);
    if (p->lfd >= 0)
      p->refuse_until_ms = 0;
  }
  pthread_mutex_unlock(&p->mu);
}

static void *accept_main(void *arg)
{
  sp_proxy_t *p = arg;
  for (;;) {
    relisten(p);
    struct pollfd pf[2] = {{p->lfd, POLLIN, 0}, {p->stop_fd, POLLIN, 0}};
    int n = poll(pf, 2, p->lfd >= 0 ? 200 : 10);
    if (n < 0 && errno != EINTR)
      break;
    if (pf[1].revents)
      break;
    reap(p, false);
    if (n <= 0 || !(pf[0].revents & POLLIN))
      continue;
    int cfd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0)
      continue;
    int sfd = connect_target(p->target_port);
    sp_conn_t *c = sfd >= 0 ? calloc(1, sizeof *c) : NULL;
    if (!c) {
      close(cfd);
      if (sfd >= 0)
        close(sfd);
      continue;
    }
    int one = 1;
    (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->proxy = p;
    c->cfd = cfd;
    c->sfd = sfd;
    c->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->done_fd < 0 || pthread_create(&c->up, NULL, up_main, c) != 0) {
      if (c->done_fd >= 0)
        close(c->done_fd);
      close(cfd);
      close(sfd);
      free(c);
      continue;
    }
    if (pthread_create(&c->down, NULL, down_main, c) != 0) {
      conn_end(c);
      pthread_join(c->up, NULL);
      close(c->done_fd);
      close(cfd);
      close(sfd);
      free(c);
      continue;
    }
    atomic_fetch_add(&p->connections, 1);
    c->next = p->conns;
    p->conns = c;
  }
  return NULL;
}

int sp_set_rule(sp_proxy_t *p, const sp_rule_t *rule)
{
  char *m = NULL;
  size_t ml = 0;
  if (rule && rule->match) {
    ml = strlen(rule->match);
    m = malloc(ml + 1);
    if (!m)
      return -1;
    memcpy(m, rule->match, ml + 1);
  }
  pthread_mutex_lock(&p->mu);
  free(p->match);
  p->match = m;
  p->match_len = ml;
  p->has_rule = rule != NULL;
  if (rule)
    p->rule = *rule;
  p->rule.match = NULL; /* p->match is the copy */
  p->matched = 0;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int sp_start(int listen_port, int target_port, const sp_rule_t *rule, uint64_t seed,
             sp_proxy_t **out)
{
  sp_proxy_t *p = calloc(1, sizeof *p);
  if (!p)
    return -1;
  p->target_port = target_port;
  p->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
  pthread_mutex_init(&p->mu, NULL);
  p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)listen_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  if (p->stop_fd < 0 || p->lfd < 0 ||
      setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(p->lfd, 64) != 0 ||
      getsockname(p->lfd, (struct sockaddr *)&a, &al) != 0 || sp_set_rule(p, rule) != 0 ||
      pthread_create(&p->acceptor, NULL, accept_main, p) != 0) {
    if (p->lfd >= 0)
      close(p->lfd);
    if (p->stop_fd >= 0)
      close(p->stop_fd);
    free(p->match);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return -1;
  }
  p->port = ntohs(a.sin_port);
  *out = p;
  return 0;
}

int sp_port(const sp_proxy_t *p)
{
  return p->port;
}

void sp_stats(sp_proxy_t *p, sp_stats_t *out)
{
  out->connections = atomic_load(&p->connections);
  out->replies = atomic_load(&p->replies);
  out->split = atomic_load(&p->split);
  out->pieces = atomic_load(&p->pieces);
  out->closed = atomic_load(&p->closed);
  out->refusals = atomic_load(&p->refusals);
  out->silenced = atomic_load(&p->silenced);
  out->pending = atomic_load(&p->pending);
}

void sp_stop(sp_proxy_t *p)
{
  if (!p)
    return;
  uint64_t one = 1;
  if (write(p->stop_fd, &one, sizeof one) < 0) {
    /* cannot fail on a fresh eventfd */
  }
  pthread_join(p->acceptor, NULL);
  reap(p, true);
  if (p->lfd >= 0)
    close(p->lfd);
  close(p->stop_fd);
  free(p->match);
  pthread_mutex_destroy(&p->mu);
  free(p);
}
