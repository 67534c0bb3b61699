/*
 * A socket stream for libmongoc whose every wait a stop can interrupt.
 *
 * libmongoc's own socket stream blocks in poll() for up to
 * socketTimeoutMS / connectTimeoutMS, and one mongoc_change_stream_next()
 * can chain many such waits (resume, retry, rescan).  To make
 * cdcache_cdc_stop() prompt however silent or unreachable the server is,
 * the subscription's client gets this stream through
 * mongoc_client_set_stream_initiator(): a non-blocking socket, and every
 * wait is poll() on two descriptors, the socket and the subscription's
 * stop eventfd.  Stop writes the eventfd once and never reads it, so it
 * stays readable: from then on every connect, read and write of the
 * client fails at once with ECANCELED, libmongoc reports a network error,
 * gives up after its one retry, and mongoc_change_stream_next() returns.
 *
 * THE CONTRACT (libmongoc 1.23's stream vtable, as mongoc-stream-socket.c
 * and mongoc-socket.c implement it; every caller in libmongoc relies on
 * it, and a short count where -1 is due makes libmongoc assert):
 *
 *  readv(iov, min_bytes, timeout) mirrors _mongoc_stream_socket_readv over
 *    mongoc_socket_recv: it reads into the iovecs in order, and returns as
 *    soon as at least min_bytes arrived or every iovec is full (so with
 *    min_bytes 0 it returns after the first recv that got bytes).  When
 *    a recv fails (end of file, timeout, stop, socket error) it returns
 *    what it has if that is >= min_bytes - which is 0 when min_bytes is 0:
 *    the async handshake (mongoc-async-cmd.c, timeout 0, min_bytes 0)
 *    tells "nothing yet" from "closed" by should_retry - and otherwise -1
 *    with errno set.  Never a count below min_bytes.  Bytes read before
 *    a -1 are gone: -1 means the connection is dead, as in libmongoc.
 *  writev(iov, timeout) mirrors _mongoc_stream_socket_writev over
 *    mongoc_socket_sendv: it writes everything, or stops at the deadline
 *    and returns the count written so far (possibly 0; the caller,
 *    _mongoc_stream_writev_full or the async command, treats a short
 *    count as failure or "in progress"), or -1 on a socket error.
 *  timeout: > 0 milliseconds, 0 "do not wait" (one non-blocking try, as
 *    mongoc_socket_recv's expire_at 0), < 0 wait forever - here always
 *    still interruptible by the stop.
 *  The last error is kept per stream, as mongoc_socket_t's errno_:
 *    timed_out() is true after a wait that ran out (ETIMEDOUT), as
 *    _mongoc_stream_socket_timed_out; should_retry() is true after a
 *    "would block" with timeout 0 (EAGAIN), as
 *    _mongoc_stream_socket_should_retry.  A successful call clears it.
 *  poll() mirrors mongoc_socket_poll for mongoc_stream_poll (the topology
 *    scanner): any number of streams, revents copied back, the count of
 *    ready streams returned.
 *  check_closed() mirrors mongoc_socket_check_closed (a readable socket
 *    whose peek reads nothing is closed).
 *  Two deliberate differences, both failures where libmongoc also fails:
 *    a stop is ECANCELED, a hard error (-1 from readv and writev, every
 *    stream POLLERR from poll, check_closed true); and a read that meets
 *    end of file below min_bytes sets errno ECONNRESET where
 *    mongoc_socket_recv leaves 0.
 *
 * The stream is NOT wrapped in mongoc_stream_buffered_new.  The buffered
 * stream ignores min_bytes and always asks its base for the whole
 * request (mongoc-stream-buffered.c, _mongoc_buffer_fill): the async
 * handshake's "whatever is there, do not wait" read then becomes "all of
 * it, do not wait", which fails (and drops the bytes already read)
 * whenever a reply arrives in pieces.  libmongoc's own scanner hands the
 * plain socket stream to the async command the same way.
 *
 * Connecting: a non-blocking connect() polled with the stop eventfd.
 * Every address the host name resolves to is tried in turn (a stale AAAA
 * record first must not hide a working A record), each with a
 * connectTimeoutMS of its own, the whole attempt bounded by
 * CDCACHE__NET_MAX_WAITS connect timeouts (a refused address costs
 * nothing; at most that many unreachable ones are waited out).  A
 * Unix socket whose listener's backlog is full answers EAGAIN without
 * starting a connection; that is retried (backing off 1 to 50 ms) until
 * connectTimeoutMS, never failed at once.  TLS: see wrap_tls.
 */
#include "cdc_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CDC_STREAM_TYPE 0x43444301 /* "CDC\1": not a libmongoc type */

/* One stream belongs to one client, used by one thread at a time (the
 * CDC thread); no field is shared. */
typedef struct net_stream {
  mongoc_stream_t vt; /* first: libmongoc casts */
  const cdcache_t *cache;
  int fd;
  int stop_fd;
  int last_errno; /* the last call's error, 0 after success (errno_) */
  int dead_errno; /* a dead stream (see cdcache__net_dead_stream): its error */
} net_stream_t;

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -1: no deadline; else the monotonic ms at which waiting ends. */
static int64_t deadline_of(int32_t timeout_ms)
{
  if (timeout_ms < 0)
    return -1;
  return mono_ms() + timeout_ms;
}

/*
 * Waits for events on fd until deadline (-1 forever, else mono ms).
 * Returns 1 ready, 0 timed out, -1 stopped or failed (errno set).
 */
static int wait_fd(int fd, int stop_fd, short events, int64_t deadline)
{
  for (;;) {
    struct pollfd p[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};
    int tmo = -1;
    if (deadline >= 0) {
      int64_t left = deadline - mono_ms();
      if (left <= 0)
        left = 0;
      tmo = left > 1000000 ? 1000000 : (int)left;
    }
    int n = poll(p, 2, tmo);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (p[1].revents) {
      errno = ECANCELED;
      return -1;
    }
    if (n == 0) {
      if (deadline >= 0 && mono_ms() < deadline)
        continue; /* the 1000 s cap, not the deadline */
      return 0;
    }
    return 1;
  }
}

_Thread_local bool cdcache__net_abort_io;

static bool stopped(const net_stream_t *s)
{
  struct pollfd p = {s->stop_fd, POLLIN, 0};
  return cdcache__net_abort_io || poll(&p, 1, 0) > 0;
}

static int ns_close(mongoc_stream_t *stream)
{
  net_stream_t *s = (net_stream_t *)stream;
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  return 0;
}

static void ns_destroy(mongoc_stream_t *stream)
{
  net_stream_t *s = (net_stream_t *)stream;
  ns_close(stream);
  cdcache__free(s->cache, s, sizeof *s);
}

static void ns_failed(mongoc_stream_t *stream)
{
  ns_destroy(stream);
}

static int ns_flush(mongoc_stream_t *stream)
{
  return 0;
}

/*
 * After EAGAIN: waits until the socket is ready (true: try again), or
 * records why not in last_errno (false): EAGAIN with timeout 0, ETIMEDOUT
 * when the deadline passed, ECANCELED on stop, poll's own error.
 */
static bool wait_ready(net_stream_t *s, short events, int32_t timeout_msec, int64_t deadline)
{
  if (timeout_msec == 0) {
    s->last_errno = EAGAIN;
    return false;
  }
  int w = wait_fd(s->fd, s->stop_fd, events, deadline);
  if (w > 0)
    return true;
  s->last_errno = w == 0 ? ETIMEDOUT : errno;
  return false;
}

/* Entry check of readv and writev: a closed or stopped stream fails. */
static bool usable(net_stream_t *s)
{
  if (s->fd >= 0 && !stopped(s)) {
    s->last_errno = 0;
    return true;
  }
  errno = s->last_errno = s->dead_errno ? s->dead_errno : ECANCELED;
  return false;
}

static ssize_t ns_writev(mongoc_stream_t *stream, mongoc_iovec_t *iov, size_t iovcnt,
                         int32_t timeout_msec)
{
  net_stream_t *s = (net_stream_t *)stream;
  int64_t deadline = deadline_of(timeout_msec);
  size_t idx = 0, off = 0;
  ssize_t total = 0;
  if (!usable(s))
    return -1;
  while (idx < iovcnt && iov[idx].iov_len == 0)
    idx++;
  while (idx < iovcnt) {
    struct iovec v[64];
    size_t nv = 0;
    for (size_t i = idx; i < iovcnt && nv < 64; i++) {
      v[nv].iov_base = (char *)iov[i].iov_base + (i == idx ? off : 0);
      v[nv].iov_len = iov[i].iov_len - (i == idx ? off : 0);
      nv++;
    }
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = v;
    mh.msg_iovlen = nv;
    ssize_t n = sendmsg(s->fd, &mh, MSG_NOSIGNAL);
    if (n >= 0) {
      total += n;
      size_t left = (size_t)n;
      while (idx < iovcnt && left >= iov[idx].iov_len - off) {
        left -= iov[idx].iov_len - off;
        idx++;
        off = 0;
      }
      off += left;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      errno = s->last_errno = errno; /* a socket error: -1, as mongoc_socket_sendv */
      return -1;
    }
    if (!wait_ready(s, POLLOUT, timeout_msec, deadline)) {
      errno = s->last_errno;
      /* deadline or "do not wait": what was written (possibly 0); a stop
       * or a failed poll is a hard error */
      return s->last_errno == EAGAIN || s->last_errno == ETIMEDOUT ? total : -1;
    }
  }
  return total;
}

static ssize_t ns_readv(mongoc_stream_t *stream, mongoc_iovec_t *iov, size_t iovcnt,
                        size_t min_bytes, int32_t timeout_msec)
{
  net_stream_t *s = (net_stream_t *)stream;
  int64_t deadline = deadline_of(timeout_msec);
  size_t idx = 0, off = 0, total = 0;
  if (!usable(s))
    return -1;
  while (idx < iovcnt && iov[idx].iov_len == 0)
    idx++;
  while (idx < iovcnt) {
    ssize_t n = recv(s->fd, (char *)iov[idx].iov_base + off, iov[idx].iov_len - off, 0);
    if (n > 0) {
      total += (size_t)n;
      off += (size_t)n;
      while (idx < iovcnt && off == iov[idx].iov_len) {
        idx++;
        off = 0;
      }
      if (total >= min_bytes)
        return (ssize_t)total;
      continue;
    }
    if (n == 0) {
      s->last_errno = ECONNRESET; /* orderly shutdown by the peer */
      break;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      s->last_errno = errno;
      break;
    }
    if (!wait_ready(s, POLLIN, timeout_msec, deadline))
      break;
  }
  if (idx == iovcnt || total >= min_bytes) {
    if (s->last_errno == ECONNRESET)
      s->last_errno = 0; /* as mongoc_socket_recv: end of file is no error */
    return (ssize_t)total;
  }
  errno = s->last_errno;
  return -1;
}

static int ns_setsockopt(mongoc_stream_t *stream, int level, int optname, void *optval,
                         mongoc_socklen_t optlen)
{
  net_stream_t *s = (net_stream_t *)stream;
  return setsockopt(s->fd, level, optname, optval, optlen);
}

static bool ns_check_closed(mongoc_stream_t *stream)
{
  net_stream_t *s = (net_stream_t *)stream;
  char c;
  if (s->fd < 0 || stopped(s))
    return true;
  struct pollfd p = {s->fd, POLLIN, 0};
  int n = poll(&p, 1, 0);
  if (n < 0)
    return true;
  if (n == 0)
    return false;
  if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
    return true;
  ssize_t r = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/*
 * mongoc_stream_poll for the topology scanner: every stream of one call
 * belongs to one client, hence one subscription and one stop eventfd,
 * which is polled after the streams.  Any number of streams (the array
 * is allocated, as mongoc_socket_poll does).
 */
static ssize_t ns_poll(mongoc_stream_poll_t *streams, size_t nstreams, int32_t timeout)
{
  if (nstreams == 0 || nstreams >= (size_t)INT32_MAX) {
    errno = EINVAL;
    return -1;
  }
  const net_stream_t *first = (const net_stream_t *)streams[0].stream;
  size_t bytes = (nstreams + 1) * sizeof(struct pollfd);
  struct pollfd *p = cdcache__alloc(first->cache, bytes);
  if (!p) {
    errno = ENOMEM;
    return -1;
  }
  size_t dead = 0;
  for (size_t i = 0; i < nstreams; i++) {
    const net_stream_t *s = (const net_stream_t *)streams[i].stream;
    p[i].fd = s->fd; /* -1 (closed or dead) is ignored by poll */
    p[i].events = (short)streams[i].events;
    p[i].revents = 0;
    if (s->fd < 0)
      dead++;
  }
  if (dead > 0)
    timeout = 0; /* a closed or dead stream is ready now: failed */
  p[nstreams].fd = first->stop_fd;
  p[nstreams].events = POLLIN;
  p[nstreams].revents = 0;
  int64_t deadline = deadline_of(timeout);
  int n;
  for (;;) {
    int tmo = timeout;
    if (deadline >= 0) {
      int64_t left = deadline - mono_ms();
      tmo = left <= 0 ? 0 : (int)left;
    }
    n = poll(p, (nfds_t)nstreams + 1, tmo);
    if (n >= 0 || errno != EINTR)
      break;
  }
  ssize_t ready = n < 0 ? -1 : 0;
  if (n > 0 && p[nstreams].revents) { /* stopping: report every stream failed */
    for (size_t i = 0; i < nstreams; i++)
      streams[i].revents = POLLERR;
    ready = (ssize_t)nstreams;
  } else if (n >= 0) {
    for (size_t i = 0; i < nstreams; i++) {
      const net_stream_t *s = (const net_stream_t *)streams[i].stream;
      streams[i].revents = s->fd < 0 ? (POLLERR | POLLHUP) : p[i].revents;
      if (streams[i].revents)
        ready++;
    }
  }
  int saved = errno;
  cdcache__free(first->cache, p, bytes);
  errno = saved;
  return ready;
}

static bool ns_timed_out(mongoc_stream_t *stream)
{
  return ((net_stream_t *)stream)->last_errno == ETIMEDOUT;
}

static bool ns_should_retry(mongoc_stream_t *stream)
{
  int e = ((net_stream_t *)stream)->last_errno;
  return e == EAGAIN || e == EWOULDBLOCK || e == EINPROGRESS;
}

mongoc_stream_t *cdcache__net_stream_new(const cdcache_t *cache, int fd, int stop_fd)
{
  net_stream_t *s = cdcache__alloc(cache, sizeof *s);
  if (!s)
    return NULL;
  memset(s, 0, sizeof *s);
  s->vt.type = CDC_STREAM_TYPE;
  s->vt.destroy = ns_destroy;
  s->vt.close = ns_close;
  s->vt.flush = ns_flush;
  s->vt.writev = ns_writev;
  s->vt.readv = ns_readv;
  s->vt.setsockopt = ns_setsockopt;
  /* a root stream has no get_base_stream (libmongoc walks the chain) */
  s->vt.get_base_stream = NULL;
  s->vt.check_closed = ns_check_closed;
  s->vt.poll = ns_poll;
  s->vt.failed = ns_failed;
  s->vt.timed_out = ns_timed_out;
  s->vt.should_retry = ns_should_retry;
  s->cache = cache;
  s->fd = fd;
  s->stop_fd = stop_fd;
  return &s->vt;
}

/*
 * Non-blocking connect of fd to addr until deadline; interruptible.
 * Returns 0 or an errno.  A Unix socket's EAGAIN (the listener's backlog
 * is full; no connection was started) is retried after a nap that doubles
 * from 1 to 50 ms, spent polling the stop eventfd.
 */
static int connect_fd(int fd, int stop_fd, const struct sockaddr *addr, socklen_t alen,
                      int64_t deadline)
{
  int nap = 1;
  for (;;) {
    if (connect(fd, addr, alen) == 0)
      return 0;
    if (errno == EINPROGRESS || errno == EINTR)
      break;
    if (errno != EAGAIN || addr->sa_family != AF_UNIX)
      return errno;
    int64_t left = deadline - mono_ms();
    if (left <= 0)
      return ETIMEDOUT;
    struct pollfd p = {stop_fd, POLLIN, 0};
    int n = poll(&p, 1, left < nap ? (int)left : nap);
    if (n > 0)
      return ECANCELED;
    nap = nap * 2 > 50 ? 50 : nap * 2;
  }
  int w = wait_fd(fd, stop_fd, POLLOUT, deadline);
  if (w < 0)
    return errno ? errno : ECANCELED;
  if (w == 0)
    return ETIMEDOUT;
  int err = 0;
  socklen_t elen = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
    return errno;
  return err;
}

int cdcache__net_connect_addrs(const struct addrinfo *list, int stop_fd, int32_t connect_timeout_ms,
                               int *fd_out)
{
  int64_t ct = connect_timeout_ms > 0 ? connect_timeout_ms : 1000;
  int n = 0, err = ECONNREFUSED;
  *fd_out = -1;
  for (const struct addrinfo *ai = list; ai; ai = ai->ai_next)
    n++;
  int64_t start = mono_ms();
  int64_t end = start + ct * (n < CDCACHE__NET_MAX_WAITS ? n : CDCACHE__NET_MAX_WAITS);
  for (const struct addrinfo *ai = list; ai; ai = ai->ai_next) {
    int64_t now = mono_ms();
    if (now >= end) {
      err = ETIMEDOUT;
      break;
    }
    int64_t deadline = now + ct < end ? now + ct : end;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    err = connect_fd(fd, stop_fd, ai->ai_addr, ai->ai_addrlen, deadline);
    if (err == 0) {
      *fd_out = fd;
      return 0;
    }
    close(fd);
    if (err == ECANCELED)
      break; /* stopping: no next address */
  }
  return err;
}

int cdcache__net_connect(const mongoc_host_list_t *host, int stop_fd, int32_t connect_timeout_ms,
                         int *fd_out, char *why, size_t why_len)
{
  int64_t deadline = mono_ms() + (connect_timeout_ms > 0 ? connect_timeout_ms : 1000);
  int fd = -1, err = 0, naddr = 1;
  *fd_out = -1;
  if (host->family == AF_UNIX) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(host->host) >= sizeof sa.sun_path) {
      (void)snprintf(why, why_len, "socket path too long");
      return ENAMETOOLONG;
    }
    strcpy(sa.sun_path, host->host);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
    } else if ((err = connect_fd(fd, stop_fd, (struct sockaddr *)&sa, sizeof sa, deadline)) != 0) {
      close(fd);
      fd = -1;
    }
  } else {
    struct addrinfo hints, *res = NULL;
    char port[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = host->family;
    hints.ai_socktype = SOCK_STREAM;
    (void)snprintf(port, sizeof port, "%hu", host->port);
    int gai = getaddrinfo(host->host, port, &hints, &res);
    if (gai != 0) {
      (void)snprintf(why, why_len, "cannot resolve %s: %s", host->host, gai_strerror(gai));
      return EHOSTUNREACH;
    }
    naddr = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
      naddr++;
    err = cdcache__net_connect_addrs(res, stop_fd, connect_timeout_ms, &fd);
    freeaddrinfo(res);
    if (fd >= 0) {
      int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
  }
  if (fd < 0) {
    if (!err)
      err = ECONNREFUSED;
    if (naddr > 1)
      (void)snprintf(why, why_len, "failed to connect to %s (%d addresses tried): %s",
                     host->host_and_port, naddr, strerror(err));
    else
      (void)snprintf(why, why_len, "failed to connect to %s: %s", host->host_and_port,
                     strerror(err));
    return err;
  }
  *fd_out = fd;
  return 0;
}

/*
 * TLS over the stream, as libmongoc's own initiator does it
 * (mongoc_client_default_stream_initiator): libmongoc's TLS stream wraps
 * ours, and the handshake runs here within connectTimeoutMS.  Every read,
 * write and poll of the TLS stream ends in ours, so a stop interrupts the
 * handshake and every later wait too.  The options come from the URI (the
 * client's TLS settings are private to libmongoc): tlsCAFile,
 * tlsCertificateKeyFile, tlsCertificateKeyFilePassword,
 * tlsAllowInvalidCertificates, tlsAllowInvalidHostnames, tlsInsecure (and
 * their ssl* aliases, which libmongoc maps to these).  The two it cannot
 * pass on (tlsDisableOCSPEndpointCheck and
 * tlsDisableCertificateRevocationCheck live in the private part of
 * mongoc_ssl_opt_t) fail the connection with a message saying so rather
 * than being ignored.  base is consumed.
 */
static mongoc_stream_t *wrap_tls(mongoc_stream_t *base, const mongoc_uri_t *uri,
                                 const mongoc_host_list_t *host, int32_t connect_timeout_ms,
                                 bson_error_t *error)
{
#ifdef MONGOC_ENABLE_SSL
  static const char *const unsupported[] = {MONGOC_URI_TLSDISABLEOCSPENDPOINTCHECK,
                                            MONGOC_URI_TLSDISABLECERTIFICATEREVOCATIONCHECK};
  for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
    if (mongoc_uri_get_option_as_bool(uri, unsupported[i], false)) {
      mongoc_stream_destroy(base);
      bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                     "cdcache: the URI option %s is not supported (see README, TLS)",
                     unsupported[i]);
      return NULL;
    }
  }
  mongoc_ssl_opt_t opt;
  memset(&opt, 0, sizeof opt);
  opt.pem_file = mongoc_uri_get_option_as_utf8(uri, MONGOC_URI_TLSCERTIFICATEKEYFILE, NULL);
  opt.pem_pwd = mongoc_uri_get_option_as_utf8(uri, MONGOC_URI_TLSCERTIFICATEKEYFILEPASSWORD, NULL);
  opt.ca_file = mongoc_uri_get_option_as_utf8(uri, MONGOC_URI_TLSCAFILE, NULL);
  bool insecure = mongoc_uri_get_option_as_bool(uri, MONGOC_URI_TLSINSECURE, false);
  opt.weak_cert_validation =
      insecure || mongoc_uri_get_option_as_bool(uri, MONGOC_URI_TLSALLOWINVALIDCERTIFICATES, false);
  opt.allow_invalid_hostname =
      insecure || mongoc_uri_get_option_as_bool(uri, MONGOC_URI_TLSALLOWINVALIDHOSTNAMES, false);
  mongoc_stream_t *tls = mongoc_stream_tls_new_with_hostname(base, host->host, &opt, 1);
  if (!tls) {
    mongoc_stream_destroy(base);
    bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET,
                   "cdcache: cannot set up TLS for %s (certificate or key files?)",
                   host->host_and_port);
    return NULL;
  }
  if (!mongoc_stream_tls_handshake_block(tls, host->host, connect_timeout_ms, error)) {
    mongoc_stream_destroy(tls);
    return NULL;
  }
  return tls;
#else
  (void)uri;
  (void)connect_timeout_ms;
  mongoc_stream_destroy(base);
  bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                 "cdcache: libmongoc was built without TLS; cannot connect to %s",
                 host->host_and_port);
  return NULL;
#endif
}

/* The reason a connection failed, which libmongoc's own error (it sees
 * only a failed stream) would lose: logged at most once per 10 s. */
static void note_connect_failure(cdcache_cdc_t *sub, const char *why)
{
  (void)snprintf(sub->connect_why, sizeof sub->connect_why, "%s", why);
  uint64_t now = cdcache__now_ms(sub->cache);
  if (sub->connect_log_ms != 0 && now >= sub->connect_log_ms &&
      now - sub->connect_log_ms < CDCACHE__RESUME_LOG_MS)
    return;
  sub->connect_log_ms = now;
  cdcache__cdc_log(sub, CDCACHE_LOG_WARNING, "cdc: cannot connect: %s", why);
}

/*
 * A stream that failed before it existed: every read and write fails with
 * err, check_closed says closed, poll reports it failed at once.  The
 * initiator hands this to libmongoc instead of NULL, because libmongoc
 * 1.23 can call the initiator while holding its topology lock (a heartbeat
 * that failed is retried at once, inside the scan) and, on NULL, reports
 * the failure through a callback that takes the same lock again: the
 * thread deadlocks for good (CDRIVER-4666, fixed after 1.23).  A dead
 * stream fails through the async command instead, which takes no lock.
 * NULL only when even this allocation fails.
 */
static mongoc_stream_t *dead_stream(cdcache_cdc_t *sub, int err, const char *why)
{
  net_stream_t *s = (net_stream_t *)cdcache__net_stream_new(sub->cache, -1, sub->stop_fd);
  if (s == NULL)
    return NULL;
  s->dead_errno = err != 0 ? err : ECONNREFUSED;
  s->last_errno = s->dead_errno;
  note_connect_failure(sub, why);
  return &s->vt;
}

mongoc_stream_t *cdcache__net_initiator(const mongoc_uri_t *uri, const mongoc_host_list_t *host,
                                        void *user_data, bson_error_t *error)
{
  cdcache_cdc_t *sub = user_data;
  int32_t ct = mongoc_uri_get_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                              (int32_t)sub->connect_timeout_ms);
  char why[256];
  int fd;

  if (atomic_load_explicit(&sub->stopping, memory_order_acquire)) {
    bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                   "cdcache: the subscription is stopping");
    return dead_stream(sub, ECANCELED, "the subscription is stopping");
  }
  int err = cdcache__net_connect(host, sub->stop_fd, ct, &fd, why, sizeof why);
  if (err != 0) {
    bson_set_error(error, MONGOC_ERROR_STREAM,
                   strncmp(why, "cannot resolve", 14) == 0 ? MONGOC_ERROR_STREAM_NAME_RESOLUTION
                                                           : MONGOC_ERROR_STREAM_CONNECT,
                   "cdcache: %s", why);
    return dead_stream(sub, err, why);
  }
  mongoc_stream_t *s = cdcache__net_stream_new(sub->cache, fd, sub->stop_fd);
  if (!s) {
    close(fd);
    bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET,
                   "cdcache: out of memory");
    return NULL;
  }
  if (mongoc_uri_get_tls(uri)) {
    mongoc_stream_t *tls = wrap_tls(s, uri, host, ct > 0 ? ct : 1000, error);
    if (tls == NULL)
      return dead_stream(sub, EPROTO, error->message);
    s = tls;
  }
  sub->connect_why[0] = '\0';
  return s; /* unbuffered: see the contract above */
}
