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
 * The vtable follows libmongoc's socket stream: readv returns once
 * min_bytes arrived (or what it has when the deadline passes), writev
 * writes everything (or what it could), timeout 0 means "do not wait"
 * (used by the topology scanner after its own poll), a negative timeout
 * waits forever (still interruptible).  poll serves mongoc_stream_poll
 * for the scanner; check_closed peeks.  The stream is wrapped in
 * libmongoc's buffered stream, as the default initiator does.  TLS URIs
 * keep libmongoc's initiator (see README: stop then relies on the short
 * socket timeouts).
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

typedef struct net_stream {
  mongoc_stream_t vt; /* first: libmongoc casts */
  const cdcache_t *cache;
  int fd;
  int stop_fd;
  bool timed_out;
  int last_errno;
} net_stream_t;

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    if (n == 0)
      return 0;
    return 1;
  }
}

static bool stopped(const net_stream_t *s)
{
  struct pollfd p = {s->stop_fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
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

/* After EAGAIN: waits until the socket is ready (true: try again), or
 * leaves the timeout or the stop in errno (false). */
static bool wait_ready(net_stream_t *s, short events, int64_t deadline)
{
  int w = wait_fd(s->fd, s->stop_fd, events, deadline);
  if (w > 0)
    return true;
  if (w == 0) {
    s->timed_out = true;
    errno = ETIMEDOUT;
  }
  return false;
}

static ssize_t ns_writev(mongoc_stream_t *stream, mongoc_iovec_t *iov, size_t iovcnt,
                         int32_t timeout_msec)
{
  net_stream_t *s = (net_stream_t *)stream;
  int64_t deadline = deadline_of(timeout_msec);
  size_t idx = 0, off = 0;
  ssize_t total = 0;
  s->timed_out = false;
  if (s->fd < 0 || stopped(s)) {
    errno = s->last_errno = ECANCELED;
    return -1;
  }
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
    if (n > 0) {
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
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (timeout_msec == 0)
        break;
      if (wait_ready(s, POLLOUT, deadline))
        continue;
    }
    s->last_errno = errno;
    return total > 0 ? total : -1;
  }
  if (total == 0 && idx < iovcnt) {
    errno = s->last_errno = EAGAIN;
    return -1;
  }
  return total;
}

static ssize_t ns_readv(mongoc_stream_t *stream, mongoc_iovec_t *iov, size_t iovcnt,
                        size_t min_bytes, int32_t timeout_msec)
{
  net_stream_t *s = (net_stream_t *)stream;
  int64_t deadline = deadline_of(timeout_msec);
  size_t idx = 0, off = 0, total = 0;
  s->timed_out = false;
  if (s->fd < 0 || stopped(s)) {
    errno = s->last_errno = ECANCELED;
    return -1;
  }
  while (idx < iovcnt && iov[idx].iov_len == 0)
    idx++;
  while (idx < iovcnt) {
    ssize_t n = recv(s->fd, (char *)iov[idx].iov_base + off, iov[idx].iov_len - off, 0);
    if (n > 0) {
      total += (size_t)n;
      off += (size_t)n;
      if (off == iov[idx].iov_len) {
        idx++;
        off = 0;
        while (idx < iovcnt && iov[idx].iov_len == 0)
          idx++;
      }
      if (total >= min_bytes && min_bytes > 0)
        return (ssize_t)total;
      if (min_bytes == 0)
        return (ssize_t)total;
      continue;
    }
    if (n == 0) { /* orderly shutdown by the peer */
      errno = s->last_errno = ECONNRESET;
      return total > 0 ? (ssize_t)total : -1;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (timeout_msec == 0) {
        s->last_errno = errno;
        return total > 0 ? (ssize_t)total : -1;
      }
      if (wait_ready(s, POLLIN, deadline))
        continue;
    }
    s->last_errno = errno;
    return total > 0 ? (ssize_t)total : -1;
  }
  return (ssize_t)total;
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

static ssize_t ns_poll(mongoc_stream_poll_t *streams, size_t nstreams, int32_t timeout)
{
  struct pollfd p[65];
  int stop_fd = -1;
  if (nstreams == 0 || nstreams > 64) {
    errno = EINVAL;
    return -1;
  }
  for (size_t i = 0; i < nstreams; i++) {
    net_stream_t *s = (net_stream_t *)streams[i].stream;
    p[i].fd = s->fd;
    p[i].events = (short)streams[i].events;
    p[i].revents = 0;
    stop_fd = s->stop_fd;
  }
  p[nstreams].fd = stop_fd;
  p[nstreams].events = POLLIN;
  p[nstreams].revents = 0;
  int n;
  do {
    n = poll(p, (nfds_t)nstreams + 1, timeout);
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return -1;
  if (p[nstreams].revents) { /* stopping: report every stream failed */
    for (size_t i = 0; i < nstreams; i++)
      streams[i].revents = POLLERR;
    return (ssize_t)nstreams;
  }
  ssize_t ready = 0;
  for (size_t i = 0; i < nstreams; i++) {
    streams[i].revents = p[i].revents;
    if (p[i].revents)
      ready++;
  }
  return ready;
}

static bool ns_timed_out(mongoc_stream_t *stream)
{
  return ((net_stream_t *)stream)->timed_out;
}

static bool ns_should_retry(mongoc_stream_t *stream)
{
  int e = ((net_stream_t *)stream)->last_errno;
  return e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == EINPROGRESS;
}

static net_stream_t *ns_new(cdcache_cdc_t *sub, int fd)
{
  net_stream_t *s = cdcache__alloc(sub->cache, sizeof *s);
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
  s->cache = sub->cache;
  s->fd = fd;
  s->stop_fd = sub->stop_fd;
  return s;
}

/* Non-blocking connect of fd to addr; interruptible.  0 or errno. */
static int connect_fd(int fd, int stop_fd, const struct sockaddr *addr, socklen_t alen,
                      int64_t deadline)
{
  if (connect(fd, addr, alen) == 0)
    return 0;
  if (errno != EINPROGRESS && errno != EINTR)
    return errno;
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

mongoc_stream_t *cdcache__net_initiator(const mongoc_uri_t *uri, const mongoc_host_list_t *host,
                                        void *user_data, bson_error_t *error)
{
  cdcache_cdc_t *sub = user_data;
  int32_t ct = mongoc_uri_get_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                              (int32_t)sub->connect_timeout_ms);
  int64_t deadline = mono_ms() + (ct > 0 ? ct : 1000);
  int fd = -1, err = 0;

  if (atomic_load_explicit(&sub->stopping, memory_order_acquire)) {
    bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                   "cdcache: the subscription is stopping");
    return NULL;
  }
  if (host->family == AF_UNIX) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(host->host) >= sizeof sa.sun_path) {
      bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                     "cdcache: socket path too long");
      return NULL;
    }
    strcpy(sa.sun_path, host->host);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
    } else if ((err = connect_fd(fd, sub->stop_fd, (struct sockaddr *)&sa, sizeof sa, deadline)) !=
               0) {
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
      bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_NAME_RESOLUTION,
                     "cdcache: cannot resolve %s: %s", host->host, gai_strerror(gai));
      return NULL;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) {
        err = errno;
        continue;
      }
      err = connect_fd(fd, sub->stop_fd, ai->ai_addr, ai->ai_addrlen, deadline);
      if (err == 0)
        break;
      close(fd);
      fd = -1;
      if (err == ECANCELED || err == ETIMEDOUT)
        break;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
      int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
  }
  if (fd < 0) {
    bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_CONNECT,
                   "cdcache: failed to connect to %s: %s", host->host_and_port,
                   strerror(err ? err : ECONNREFUSED));
    return NULL;
  }
  net_stream_t *s = ns_new(sub, fd);
  if (!s) {
    close(fd);
    bson_set_error(error, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET,
                   "cdcache: out of memory");
    return NULL;
  }
  return mongoc_stream_buffered_new(&s->vt, 1024);
}
