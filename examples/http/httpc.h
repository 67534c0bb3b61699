/*
 * httpc.h: a minimal HTTP/1.1 client over one keep-alive TCP connection to
 * 127.0.0.1 (httpc.c), for the example's test and demo driver.  It reads
 * responses framed by Content-Length (all this service sends) or by the
 * connection closing.  One httpc_t per thread.
 */
#ifndef CDCACHE_HTTPC_H
#define CDCACHE_HTTPC_H

#include <stddef.h>
#include <stdint.h>

typedef struct httpc {
  int fd; /* -1 when not connected; (re)connected on demand */
  uint16_t port;
  int timeout_ms; /* per connect, send and receive */
} httpc_t;

typedef struct http_resp {
  int status;     /* 0 when no response came */
  int closed;     /* the server closed the connection after it */
  char etag[128]; /* "" if none */
  char allow[128];
  char content_type[128];
  char cache_control[128];
  long content_length; /* -1 if absent */
  char *body;          /* NUL-terminated, malloc'd (httpc_resp_free) */
  size_t body_len;
} http_resp_t;

void httpc_init(httpc_t *h, uint16_t port, int timeout_ms);
void httpc_close(httpc_t *h);

/*
 * Sends one request (headers: extra header lines, each ending in "\r\n",
 * or NULL) and reads its response into *out.  Reconnects once when a
 * kept-alive connection turns out closed before any response byte.
 * Returns 0, or -1 (connection failed, timeout, malformed response; out
 * then holds nothing to free).
 */
int httpc_request(httpc_t *h, const char *method, const char *path, const char *headers,
                  const void *body, size_t blen, http_resp_t *out);

void httpc_resp_free(http_resp_t *r);

/* A new connection to 127.0.0.1:port (blocking, with receive and send
 * timeouts of timeout_ms), or -1. */
int httpc_dial(uint16_t port, int timeout_ms);

/* Writes all of buf; 0 or -1. */
int httpc_send_all(int fd, const void *buf, size_t len);

/* Parses one response from fd (for raw-socket tests); as httpc_request. */
int httpc_read_response(int fd, int head_only, http_resp_t *out);

#endif
