/*
 * httpc.c: a minimal HTTP/1.1 client (see httpc.h).  Blocking sockets with
 * SO_RCVTIMEO/SO_SNDTIMEO; the response head is read byte-exact up to the
 * blank line, then the body by Content-Length or until the server closes.
 */
#include "httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define HEAD_MAX 16384

void httpc_init(httpc_t *h, uint16_t port, int timeout_ms)
{
  h->fd = -1;
  h->port = port;
  h->timeout_ms = timeout_ms;
}

void httpc_close(httpc_t *h)
{
  if (h->fd >= 0)
    close(h->fd);
  h->fd = -1;
}

int httpc_dial(uint16_t port, int timeout_ms)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int httpc_send_all(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Copies header value v (to end of line) into dst. */
static void header_value(const char *v, const char *eol, char *dst, size_t cap)
{
  while (v < eol && (*v == ' ' || *v == '\t'))
    v++;
  size_t n = (size_t)(eol - v);
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, v, n);
  dst[n] = '\0';
}

int httpc_read_response(int fd, int head_only, http_resp_t *out)
{
  memset(out, 0, sizeof *out);
  out->content_length = -1;
  char head[HEAD_MAX + 1];
  size_t hn = 0;
  uint32_t last4 = 0; /* the last four bytes read */
  /* Byte by byte up to the blank line: simple, and never reads into the
   * next response on a kept-alive connection. */
  while (last4 != 0x0d0a0d0au) {
    if (hn == HEAD_MAX)
      return -1;
    ssize_t n = recv(fd, head + hn, 1, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    last4 = last4 << 8 | (unsigned char)head[hn];
    hn++;
  }
  head[hn] = '\0';
  if (sscanf(head, "HTTP/1.%*d %d", &out->status) != 1)
    return -1;
  for (char *line = strstr(head, "\r\n") + 2; *line != '\r';) {
    char *eol = strstr(line, "\r\n");
    char *colon = memchr(line, ':', (size_t)(eol - line));
    if (colon != NULL) {
      size_t kl = (size_t)(colon - line);
      char val[128];
      header_value(colon + 1, eol, val, sizeof val);
      if (kl == 14 && strncasecmp(line, "Content-Length", kl) == 0)
        out->content_length = strtol(val, NULL, 10);
      else if (kl == 4 && strncasecmp(line, "ETag", kl) == 0)
        snprintf(out->etag, sizeof out->etag, "%s", val);
      else if (kl == 5 && strncasecmp(line, "Allow", kl) == 0)
        snprintf(out->allow, sizeof out->allow, "%s", val);
      else if (kl == 12 && strncasecmp(line, "Content-Type", kl) == 0)
        snprintf(out->content_type, sizeof out->content_type, "%s", val);
      else if (kl == 13 && strncasecmp(line, "Cache-Control", kl) == 0)
        snprintf(out->cache_control, sizeof out->cache_control, "%s", val);
      else if (kl == 10 && strncasecmp(line, "Connection", kl) == 0 &&
               strcasecmp(val, "close") == 0)
        out->closed = 1;
    }
    line = eol + 2;
  }
  int no_body = head_only || out->status == 204 || out->status == 304;
  size_t want = no_body ? 0 : out->content_length >= 0 ? (size_t)out->content_length : SIZE_MAX;
  size_t cap = want != SIZE_MAX ? want + 1 : 4096;
  out->body = malloc(cap);
  if (out->body == NULL)
    return -1;
  while (out->body_len < want) {
    if (out->body_len + 1 >= cap) {
      char *nb = realloc(out->body, cap * 2);
      if (nb == NULL)
        goto fail;
      out->body = nb;
      cap *= 2;
    }
    size_t room = cap - 1 - out->body_len;
    if (want != SIZE_MAX && want - out->body_len < room)
      room = want - out->body_len;
    ssize_t n = recv(fd, out->body + out->body_len, room, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 && want == SIZE_MAX) {
      out->closed = 1;
      break;
    }
    if (n <= 0)
      goto fail;
    out->body_len += (size_t)n;
  }
  out->body[out->body_len] = '\0';
  return 0;
fail:
  free(out->body);
  out->body = NULL;
  return -1;
}

int httpc_request(httpc_t *h, const char *method, const char *path, const char *headers,
                  const void *body, size_t blen, http_resp_t *out)
{
  size_t cap = strlen(method) + strlen(path) + (headers != NULL ? strlen(headers) : 0) + 128;
  char *req = malloc(cap + blen);
  if (req == NULL)
    return -1;
  int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n%s", method, path,
                   (unsigned)h->port, headers != NULL ? headers : "");
  if (body != NULL)
    n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", blen);
  n += snprintf(req + n, cap - (size_t)n, "\r\n");
  if (body != NULL && blen > 0)
    memcpy(req + n, body, blen);
  size_t len = (size_t)n + blen;
  int ret = -1;
  for (int attempt = 0; attempt < 2 && ret != 0; attempt++) {
    int fresh = h->fd < 0;
    if (fresh && (h->fd = httpc_dial(h->port, h->timeout_ms)) < 0)
      break;
    if (httpc_send_all(h->fd, req, len) == 0 &&
        httpc_read_response(h->fd, strcmp(method, "HEAD") == 0, out) == 0) {
      ret = 0;
      if (out->closed)
        httpc_close(h);
    } else {
      httpc_close(h);
      if (fresh)
        break; /* a new connection failed: do not retry */
    }
  }
  free(req);
  return ret;
}

void httpc_resp_free(http_resp_t *r)
{
  free(r->body);
  r->body = NULL;
}
