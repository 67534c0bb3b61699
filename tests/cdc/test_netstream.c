/*
 * The stream contract of cdc/netstream.c (see the essay at its top),
 * checked call by call against the behaviour of libmongoc 1.23's socket
 * stream, over socketpairs whose far end the test drives: replies in
 * pieces, end of file and timeouts in the middle of a read, the "do not
 * wait" reads of the async handshake, writes into a full socket, stop in
 * the middle of a wait, mongoc_stream_poll over more than 64 streams,
 * Unix-socket connects to a listener whose backlog is full, and TCP
 * connects to a list of addresses whose first ones do not answer (a
 * listener whose backlog is full drops the SYN: the connect times out).
 */
#include "cdc_internal.h"

#include <CUnit/Basic.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static cdcache_t *g_cache;

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void nap(unsigned ms)
{
  (void)poll(NULL, 0, (int)ms);
}

/* A stream over one end of a socketpair; *peer is the other end. */
typedef struct pair {
  mongoc_stream_t *s;
  int peer;
  int stop_fd;
} pair_t;

static void pair_open(pair_t *p)
{
  int sv[2];
  CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  CU_ASSERT_FATAL(p->stop_fd >= 0);
  p->s = cdcache__net_stream_new(g_cache, sv[0], p->stop_fd);
  CU_ASSERT_FATAL(p->s != NULL);
  p->peer = sv[1];
}

static void pair_close(pair_t *p)
{
  mongoc_stream_destroy(p->s);
  if (p->peer >= 0)
    close(p->peer);
  close(p->stop_fd);
}

static void put(int fd, const char *bytes, size_t n)
{
  CU_ASSERT_EQUAL(write(fd, bytes, n), (ssize_t)n);
}

/* A writer thread: after delay_ms, writes n bytes (or, with n == 0,
 * closes the peer; with stop set, writes the stop eventfd). */
typedef struct later {
  pthread_t t;
  int fd;
  unsigned delay_ms;
  const char *bytes;
  size_t n;
  bool stop;
} later_t;

static void *later_main(void *arg)
{
  later_t *l = arg;
  nap(l->delay_ms);
  if (l->stop) {
    uint64_t one = 1;
    if (write(l->fd, &one, sizeof one) != sizeof one)
      abort();
  } else if (l->n) {
    if (write(l->fd, l->bytes, l->n) != (ssize_t)l->n)
      abort();
  } else {
    shutdown(l->fd, SHUT_WR);
  }
  return NULL;
}

static void later_start(later_t *l, int fd, unsigned delay_ms, const char *bytes, size_t n)
{
  l->fd = fd;
  l->delay_ms = delay_ms;
  l->bytes = bytes;
  l->n = n;
  CU_ASSERT_FATAL(pthread_create(&l->t, NULL, later_main, l) == 0);
}

static ssize_t readv1(mongoc_stream_t *s, char *buf, size_t len, size_t min, int32_t tmo)
{
  mongoc_iovec_t iov = {.iov_base = buf, .iov_len = len};
  return mongoc_stream_readv(s, &iov, 1, min, tmo);
}

/* ------------------------------------------------------------- readv */

/* A 16-byte header in two pieces 100 ms apart, the second ending the
 * header: one read with min_bytes 16 returns all 16. */
static void test_read_pieces_reach_min_bytes(void)
{
  pair_t p;
  later_t l = {0};
  char buf[64];
  pair_open(&p);
  put(p.peer, "0123456789", 10);
  later_start(&l, p.peer, 100, "abcdef", 6);
  ssize_t n = readv1(p.s, buf, 16, 16, 2000);
  pthread_join(l.t, NULL);
  CU_ASSERT_EQUAL(n, 16);
  CU_ASSERT(memcmp(buf, "0123456789abcdef", 16) == 0);
  CU_ASSERT(!mongoc_stream_timed_out(p.s));
  pair_close(&p);
}

/* Two iovecs (header and body, as _mongoc_rpc_scatter's caller does not,
 * but the vtable allows), filled across three pieces. */
static void test_read_pieces_across_iovecs(void)
{
  pair_t p;
  later_t l1 = {0}, l2 = {0};
  char a[4] = {0}, b[12] = {0};
  pair_open(&p);
  put(p.peer, "012", 3);
  later_start(&l1, p.peer, 50, "34567", 5);
  later_start(&l2, p.peer, 120, "89abcdef", 8);
  mongoc_iovec_t iov[2] = {{.iov_base = a, .iov_len = 4}, {.iov_base = b, .iov_len = 12}};
  ssize_t n = mongoc_stream_readv(p.s, iov, 2, 16, 2000);
  pthread_join(l1.t, NULL);
  pthread_join(l2.t, NULL);
  CU_ASSERT_EQUAL(n, 16);
  CU_ASSERT(memcmp(a, "0123", 4) == 0 && memcmp(b, "456789abcdef", 12) == 0);
  pair_close(&p);
}

/* Fewer than min_bytes, then silence past the timeout: -1 and ETIMEDOUT
 * (never the short count), timed_out() true. */
static void test_read_short_then_timeout(void)
{
  pair_t p;
  char buf[64];
  pair_open(&p);
  put(p.peer, "0123456789", 10);
  uint64_t t0 = now_ms();
  errno = 0;
  ssize_t n = readv1(p.s, buf, 16, 16, 150);
  int e = errno;
  uint64_t took = now_ms() - t0;
  CU_ASSERT_EQUAL(n, -1);
  CU_ASSERT_EQUAL(e, ETIMEDOUT);
  CU_ASSERT(took >= 140);
  CU_ASSERT(mongoc_stream_timed_out(p.s));
  CU_ASSERT(!mongoc_stream_should_retry(p.s));
  pair_close(&p);
}

/* Fewer than min_bytes, then the peer closes: -1 (a set errno), neither
 * timed out nor retryable. */
static void test_read_short_then_eof(void)
{
  pair_t p;
  later_t l = {0};
  char buf[64];
  pair_open(&p);
  put(p.peer, "0123456789", 10);
  later_start(&l, p.peer, 50, NULL, 0);
  errno = 0;
  ssize_t n = readv1(p.s, buf, 16, 16, 2000);
  int e = errno;
  pthread_join(l.t, NULL);
  CU_ASSERT_EQUAL(n, -1);
  CU_ASSERT_EQUAL(e, ECONNRESET);
  CU_ASSERT(!mongoc_stream_timed_out(p.s));
  CU_ASSERT(!mongoc_stream_should_retry(p.s));
  pair_close(&p);
}

/* The async handshake's reads (mongoc-async-cmd.c): timeout 0, min 0.
 * Nothing there: 0 and should_retry; bytes there: what is there; end of
 * file: 0 and not should_retry ("Server closed connection"). */
static void test_read_nonblocking_min_zero(void)
{
  pair_t p;
  char buf[64];
  pair_open(&p);
  CU_ASSERT_EQUAL(readv1(p.s, buf, 4, 0, 0), 0);
  CU_ASSERT(mongoc_stream_should_retry(p.s));
  CU_ASSERT(!mongoc_stream_timed_out(p.s));
  put(p.peer, "ab", 2);
  CU_ASSERT_EQUAL(readv1(p.s, buf, 4, 0, 0), 2);
  CU_ASSERT(!mongoc_stream_should_retry(p.s));
  shutdown(p.peer, SHUT_WR);
  CU_ASSERT_EQUAL(readv1(p.s, buf, 4, 0, 0), 0);
  CU_ASSERT(!mongoc_stream_should_retry(p.s));
  CU_ASSERT(!mongoc_stream_timed_out(p.s));
  pair_close(&p);
}

/* timeout 0 with min_bytes above what is there: -1 and EAGAIN, retryable
 * (never the short count). */
static void test_read_nonblocking_short(void)
{
  pair_t p;
  char buf[64];
  pair_open(&p);
  put(p.peer, "0123456789", 10);
  errno = 0;
  ssize_t n = readv1(p.s, buf, 16, 16, 0);
  CU_ASSERT_EQUAL(n, -1);
  CU_ASSERT_EQUAL(errno, EAGAIN);
  CU_ASSERT(mongoc_stream_should_retry(p.s));
  pair_close(&p);
}

/* A negative timeout waits forever - until the stop, which fails the read
 * at once with ECANCELED; every later call fails too. */
static void test_read_forever_until_stop(void)
{
  pair_t p;
  later_t l = {0};
  char buf[64];
  pair_open(&p);
  put(p.peer, "0123", 4);
  l.stop = true;
  later_start(&l, p.stop_fd, 150, NULL, 0);
  uint64_t t0 = now_ms();
  errno = 0;
  ssize_t n = readv1(p.s, buf, 16, 16, -1);
  int e = errno;
  uint64_t took = now_ms() - t0;
  pthread_join(l.t, NULL);
  CU_ASSERT_EQUAL(n, -1);
  CU_ASSERT_EQUAL(e, ECANCELED);
  CU_ASSERT(took >= 140 && took < 2000);
  CU_ASSERT(!mongoc_stream_should_retry(p.s));
  CU_ASSERT(!mongoc_stream_timed_out(p.s));
  CU_ASSERT(mongoc_stream_check_closed(p.s));
  mongoc_iovec_t iov = {.iov_base = buf, .iov_len = 1};
  CU_ASSERT_EQUAL(mongoc_stream_writev(p.s, &iov, 1, 1000), -1);
  pair_close(&p);
}

/* More than min_bytes available: returns once min_bytes arrived, with up
 * to the buffer's size, and the rest stays for the next read. */
static void test_read_returns_at_min_bytes(void)
{
  pair_t p;
  char buf[64];
  pair_open(&p);
  put(p.peer, "0123456789", 10);
  CU_ASSERT_EQUAL(readv1(p.s, buf, 4, 4, 1000), 4);
  CU_ASSERT_EQUAL(readv1(p.s, buf, 64, 1, 1000), 6);
  CU_ASSERT(memcmp(buf, "456789", 6) == 0);
  pair_close(&p);
}

/* ------------------------------------------------------------ writev */

/* Into a socket nobody reads: a timed write returns the partial count
 * (as mongoc_socket_sendv) and timed_out(); a "do not wait" write into
 * the full socket returns 0 and should_retry(); a stop fails it. */
static void test_write_full_socket(void)
{
  pair_t p;
  size_t big = 8u << 20;
  char *buf = calloc(1, big);
  pair_open(&p);
  mongoc_iovec_t iov = {.iov_base = buf, .iov_len = big};
  ssize_t n = mongoc_stream_writev(p.s, &iov, 1, 100);
  CU_ASSERT(n > 0 && (size_t)n < big);
  CU_ASSERT(mongoc_stream_timed_out(p.s));
  iov.iov_len = 4096;
  CU_ASSERT_EQUAL(mongoc_stream_writev(p.s, &iov, 1, 0), 0);
  CU_ASSERT(mongoc_stream_should_retry(p.s));
  later_t l = {.stop = true};
  later_start(&l, p.stop_fd, 100, NULL, 0);
  errno = 0;
  CU_ASSERT_EQUAL(mongoc_stream_writev(p.s, &iov, 1, -1), -1);
  CU_ASSERT_EQUAL(errno, ECANCELED);
  pthread_join(l.t, NULL);
  pair_close(&p);
  free(buf);
}

/* -------------------------------------------------------------- poll */

/* mongoc_stream_poll over 100 streams (a topology of 100 hosts): the one
 * with data is reported; a stop reports them all failed. */
static void test_poll_many_streams(void)
{
  enum { N = 100 };
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  mongoc_stream_t *s[N];
  int peer[N];
  mongoc_stream_poll_t ps[N];
  for (int i = 0; i < N; i++) {
    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    s[i] = cdcache__net_stream_new(g_cache, sv[0], stop_fd);
    CU_ASSERT_FATAL(s[i] != NULL);
    peer[i] = sv[1];
  }
  put(peer[77], "x", 1);
  for (int i = 0; i < N; i++) {
    ps[i].stream = s[i];
    ps[i].events = POLLIN;
    ps[i].revents = 0;
  }
  errno = 0;
  ssize_t r = mongoc_stream_poll(ps, N, 1000);
  CU_ASSERT_EQUAL(r, 1);
  for (int i = 0; i < N; i++)
    CU_ASSERT_EQUAL(ps[i].revents != 0, i == 77);
  /* nothing ready: times out with 0 after about the timeout */
  char c;
  CU_ASSERT_EQUAL(read(peer[77], &c, 0), 0);
  CU_ASSERT_EQUAL(readv1(s[77], &c, 1, 1, 100), 1);
  uint64_t t0 = now_ms();
  CU_ASSERT_EQUAL(mongoc_stream_poll(ps, N, 100), 0);
  CU_ASSERT(now_ms() - t0 >= 90);
  uint64_t one = 1;
  CU_ASSERT_EQUAL(write(stop_fd, &one, sizeof one), (ssize_t)sizeof one);
  CU_ASSERT_EQUAL(mongoc_stream_poll(ps, N, 1000), N);
  for (int i = 0; i < N; i++) {
    CU_ASSERT(ps[i].revents & POLLERR);
    mongoc_stream_destroy(s[i]);
    close(peer[i]);
  }
  close(stop_fd);
}

/* ----------------------------------------------------- Unix connect */

/* A Unix listener (backlog 0) whose queue the test fills, so connect()
 * answers EAGAIN.  accept_after_ms >= 0: a thread then drains it. */
typedef struct ulisten {
  int fd;
  char path[108];
  int fillers[8];
  int nfill;
  pthread_t t;
  unsigned accept_after_ms;
  int accepted;
} ulisten_t;

static void *drain_main(void *arg)
{
  ulisten_t *u = arg;
  nap(u->accept_after_ms);
  for (int i = 0; i < 200; i++) {
    int c = accept4(u->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) {
      u->accepted++;
      close(c);
    } else {
      nap(5);
    }
    if (u->accepted > u->nfill)
      break;
  }
  return NULL;
}

static void ulisten_open(ulisten_t *u)
{
  memset(u, 0, sizeof *u);
  (void)snprintf(u->path, sizeof u->path, "/tmp/cdc-ns-%d.sock", (int)getpid());
  unlink(u->path);
  u->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  strcpy(sa.sun_path, u->path);
  CU_ASSERT_FATAL(bind(u->fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CU_ASSERT_FATAL(listen(u->fd, 0) == 0);
  /* fill the backlog until a non-blocking connect answers EAGAIN */
  for (;;) {
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connect(c, (struct sockaddr *)&sa, sizeof sa) == 0 && u->nfill < 8) {
      u->fillers[u->nfill++] = c;
      continue;
    }
    CU_ASSERT_EQUAL_FATAL(errno, EAGAIN);
    close(c);
    break;
  }
}

static void ulisten_close(ulisten_t *u)
{
  for (int i = 0; i < u->nfill; i++)
    close(u->fillers[i]);
  close(u->fd);
  unlink(u->path);
}

static mongoc_host_list_t unix_host(const char *path)
{
  mongoc_host_list_t h;
  memset(&h, 0, sizeof h);
  h.family = AF_UNIX;
  (void)snprintf(h.host, sizeof h.host, "%s", path);
  (void)snprintf(h.host_and_port, sizeof h.host_and_port, "%s", path);
  return h;
}

/* The listener drains its queue 300 ms later: the connect waits for it
 * (old behaviour: failed at once with EAGAIN). */
static void test_unix_connect_waits_for_backlog(void)
{
  ulisten_t u;
  ulisten_open(&u);
  CU_ASSERT(u.nfill >= 1);
  u.accept_after_ms = 300;
  CU_ASSERT_FATAL(pthread_create(&u.t, NULL, drain_main, &u) == 0);
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  mongoc_host_list_t h = unix_host(u.path);
  char why[256] = "";
  int fd = -1;
  uint64_t t0 = now_ms();
  int err = cdcache__net_connect(&h, stop_fd, 5000, &fd, why, sizeof why);
  uint64_t took = now_ms() - t0;
  pthread_join(u.t, NULL);
  if (err)
    (void)printf("(%s) ", why);
  CU_ASSERT_EQUAL(err, 0);
  CU_ASSERT(fd >= 0);
  CU_ASSERT(took >= 250);
  (void)printf("(connected after %llu ms) ", (unsigned long long)took);
  if (fd >= 0)
    close(fd);
  close(stop_fd);
  ulisten_close(&u);
}

/* Nobody drains: the connect gives up at connectTimeoutMS (not at once),
 * and a stop ends the wait at once. */
static void test_unix_connect_timeout_and_stop(void)
{
  ulisten_t u;
  ulisten_open(&u);
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  mongoc_host_list_t h = unix_host(u.path);
  char why[256] = "";
  int fd = -1;
  uint64_t t0 = now_ms();
  int err = cdcache__net_connect(&h, stop_fd, 300, &fd, why, sizeof why);
  uint64_t took = now_ms() - t0;
  CU_ASSERT_EQUAL(err, ETIMEDOUT);
  CU_ASSERT(took >= 290 && took < 3000);
  CU_ASSERT(strstr(why, u.path) != NULL);
  later_t l = {.stop = true};
  later_start(&l, stop_fd, 100, NULL, 0);
  t0 = now_ms();
  err = cdcache__net_connect(&h, stop_fd, 10000, &fd, why, sizeof why);
  took = now_ms() - t0;
  pthread_join(l.t, NULL);
  CU_ASSERT_EQUAL(err, ECANCELED);
  CU_ASSERT(took < 2000);
  close(stop_fd);
  ulisten_close(&u);
}

/* ------------------------------------------------- every address tried */

/* A TCP listener on addr whose backlog is full: further SYNs are dropped,
 * so a connect to it neither succeeds nor fails until its timeout. */
typedef struct blackhole {
  int fd;
  int fillers[16];
  int nfill;
} blackhole_t;

static bool blackhole_open(blackhole_t *b, const struct sockaddr *addr, socklen_t alen)
{
  memset(b, 0, sizeof *b);
  b->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (addr->sa_family == AF_INET6)
    (void)setsockopt(b->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (b->fd < 0 || bind(b->fd, addr, alen) != 0 || listen(b->fd, 0) != 0) {
    if (b->fd >= 0)
      close(b->fd);
    return false;
  }
  struct sockaddr_storage bound;
  socklen_t bl = sizeof bound;
  getsockname(b->fd, (struct sockaddr *)&bound, &bl);
  for (int i = 0; i < 16; i++) { /* more than the queue holds */
    int c = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    (void)connect(c, (struct sockaddr *)&bound, bl);
    b->fillers[b->nfill++] = c;
  }
  nap(50);
  return true;
}

static void blackhole_close(blackhole_t *b)
{
  for (int i = 0; i < b->nfill; i++)
    close(b->fillers[i]);
  close(b->fd);
}

static int listener_on(const struct sockaddr *addr, socklen_t alen)
{
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (addr->sa_family == AF_INET6)
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (fd < 0 || bind(fd, addr, alen) != 0 || listen(fd, 16) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* The local (peer false) or remote port of a socket; -1 on error. */
static int port_of_end(int fd, bool peer)
{
  struct sockaddr_storage a;
  socklen_t al = sizeof a;
  memset(&a, 0, sizeof a);
  if ((peer ? getpeername(fd, (struct sockaddr *)&a, &al)
            : getsockname(fd, (struct sockaddr *)&a, &al)) != 0)
    return -1;
  return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                       : ((struct sockaddr_in *)&a)->sin_port);
}

static int port_of(int fd)
{
  return port_of_end(fd, false);
}

static int peer_port(int fd)
{
  return port_of_end(fd, true);
}

static struct sockaddr_in loopback4(int port)
{
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

/* An address list whose entry i is sa[i] (n <= 8). */
static void make_list(struct addrinfo *ai, struct sockaddr_in *sa, int n)
{
  for (int i = 0; i < n; i++) {
    memset(&ai[i], 0, sizeof ai[i]);
    ai[i].ai_family = AF_INET;
    ai[i].ai_socktype = SOCK_STREAM;
    ai[i].ai_addr = (struct sockaddr *)&sa[i];
    ai[i].ai_addrlen = sizeof sa[i];
    ai[i].ai_next = i + 1 < n ? &ai[i + 1] : NULL;
  }
}

/* [an address that does not answer, the server]: the first times out
 * after its own connect timeout, the second then connects. */
static void test_connect_tries_every_address(void)
{
  struct sockaddr_in any = loopback4(0);
  blackhole_t bh;
  CU_ASSERT_FATAL(blackhole_open(&bh, (struct sockaddr *)&any, sizeof any));
  int good = listener_on((struct sockaddr *)&any, sizeof any);
  CU_ASSERT_FATAL(good >= 0);
  struct sockaddr_in sa[2] = {loopback4(port_of(bh.fd)), loopback4(port_of(good))};
  struct addrinfo ai[2];
  make_list(ai, sa, 2);
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int fd = -1;
  uint64_t t0 = now_ms();
  int err = cdcache__net_connect_addrs(ai, stop_fd, 300, &fd);
  uint64_t took = now_ms() - t0;
  (void)printf("(%s after %llu ms) ", err ? strerror(err) : "connected to the second address",
               (unsigned long long)took);
  CU_ASSERT_EQUAL(err, 0);
  CU_ASSERT(took >= 280 && took < 3000);
  CU_ASSERT(fd >= 0 && peer_port(fd) == port_of(good));
  if (fd >= 0)
    close(fd);
  close(stop_fd);
  close(good);
  blackhole_close(&bh);
}

/* Five addresses that do not answer, connect timeout 300 ms: the whole
 * attempt ends after CDCACHE__NET_MAX_WAITS (3) timeouts, not five. */
static void test_connect_whole_attempt_bounded(void)
{
  struct sockaddr_in any = loopback4(0);
  blackhole_t bh;
  CU_ASSERT_FATAL(blackhole_open(&bh, (struct sockaddr *)&any, sizeof any));
  struct sockaddr_in sa[5];
  for (int i = 0; i < 5; i++)
    sa[i] = loopback4(port_of(bh.fd));
  struct addrinfo ai[5];
  make_list(ai, sa, 5);
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int fd = -1;
  uint64_t t0 = now_ms();
  int err = cdcache__net_connect_addrs(ai, stop_fd, 300, &fd);
  uint64_t took = now_ms() - t0;
  (void)printf("(gave up after %llu ms) ", (unsigned long long)took);
  CU_ASSERT_EQUAL(err, ETIMEDOUT);
  CU_ASSERT_EQUAL(fd, -1);
  CU_ASSERT(took >= 280 * CDCACHE__NET_MAX_WAITS && took < 1400);
  /* a stop ends it at once */
  later_t l = {.stop = true};
  later_start(&l, stop_fd, 100, NULL, 0);
  t0 = now_ms();
  err = cdcache__net_connect_addrs(ai, stop_fd, 300, &fd);
  took = now_ms() - t0;
  pthread_join(l.t, NULL);
  CU_ASSERT_EQUAL(err, ECANCELED);
  CU_ASSERT(took < 280);
  close(stop_fd);
  blackhole_close(&bh);
}

/* The same through name resolution: "localhost" where it resolves to two
 * addresses (Debian's default /etc/hosts: ::1, then 127.0.0.1).  The
 * first does not answer, a listener waits on the second. */
static void test_connect_name_first_address_unreachable(void)
{
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo("localhost", "1", &hints, &res) != 0 || !res || !res->ai_next) {
    (void)printf("(not run here: localhost resolves to one address; the address-list test "
                 "above covers the logic) ");
    if (res)
      freeaddrinfo(res);
    return;
  }
  struct sockaddr_storage first, second;
  socklen_t fl = res->ai_addrlen, sl = res->ai_next->ai_addrlen;
  memcpy(&first, res->ai_addr, fl);
  memcpy(&second, res->ai_next->ai_addr, sl);
  freeaddrinfo(res);
  /* the second address listens on a free port; the first blackholes it */
  ((struct sockaddr_in *)&second)->sin_port = 0; /* same offset in sockaddr_in6 */
  int good = listener_on((struct sockaddr *)&second, sl);
  if (good < 0) {
    (void)printf("(not run here: cannot listen on localhost's second address) ");
    return;
  }
  int port = port_of(good);
  ((struct sockaddr_in *)&first)->sin_port = htons((uint16_t)port);
  blackhole_t bh;
  if (!blackhole_open(&bh, (struct sockaddr *)&first, fl)) {
    (void)printf("(not run here: cannot listen on localhost's first address) ");
    close(good);
    return;
  }
  mongoc_host_list_t h;
  memset(&h, 0, sizeof h);
  h.family = AF_UNSPEC;
  h.port = (uint16_t)port;
  (void)snprintf(h.host, sizeof h.host, "localhost");
  (void)snprintf(h.host_and_port, sizeof h.host_and_port, "localhost:%d", port);
  int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  char why[256] = "";
  int fd = -1;
  uint64_t t0 = now_ms();
  int err = cdcache__net_connect(&h, stop_fd, 300, &fd, why, sizeof why);
  uint64_t took = now_ms() - t0;
  (void)printf("(localhost: %s after %llu ms) ", err ? why : "connected", (unsigned long long)took);
  CU_ASSERT_EQUAL(err, 0);
  CU_ASSERT(took >= 280);
  if (fd >= 0)
    close(fd);
  close(stop_fd);
  close(good);
  blackhole_close(&bh);
}

int main(void)
{
  cdcache_config_t c;
  cdcache_config_init(&c);
  c.max_entries = 100;
  if (cdcache_open(&c, &g_cache) != 0)
    return 2;
  mongoc_init();
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  CU_pSuite s = CU_add_suite("cdc_netstream", NULL, NULL);
  CU_add_test(s, "read: pieces reach min_bytes", test_read_pieces_reach_min_bytes);
  CU_add_test(s, "read: pieces across iovecs", test_read_pieces_across_iovecs);
  CU_add_test(s, "read: short, then timeout -> -1 ETIMEDOUT", test_read_short_then_timeout);
  CU_add_test(s, "read: short, then EOF -> -1", test_read_short_then_eof);
  CU_add_test(s, "read: timeout 0, min 0 (async handshake)", test_read_nonblocking_min_zero);
  CU_add_test(s, "read: timeout 0, short -> -1 EAGAIN", test_read_nonblocking_short);
  CU_add_test(s, "read: timeout -1 until stop", test_read_forever_until_stop);
  CU_add_test(s, "read: returns at min_bytes", test_read_returns_at_min_bytes);
  CU_add_test(s, "write: full socket, timeout, 0, stop", test_write_full_socket);
  CU_add_test(s, "poll: 100 streams", test_poll_many_streams);
  CU_add_test(s, "unix connect: waits out a full backlog", test_unix_connect_waits_for_backlog);
  CU_add_test(s, "unix connect: timeout and stop", test_unix_connect_timeout_and_stop);
  CU_add_test(s, "tcp connect: every address tried", test_connect_tries_every_address);
  CU_add_test(s, "tcp connect: whole attempt bounded", test_connect_whole_attempt_bounded);
  CU_add_test(s, "tcp connect: a name whose first address does not answer",
              test_connect_name_first_address_unreachable);
  setvbuf(stdout, NULL, _IONBF, 0);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  mongoc_cleanup();
  cdcache_close(g_cache);
  return failed ? 1 : 0;
}
