/*
 * service.c: the HTTP side of the example, on libmicrohttpd.
 *
 * Routes
 *   GET    /users/{id}  the document as JSON, through cdcache_get_or_load
 *                       (200, or 404 for a missing document, which is
 *                       cached too: as a zero-length value)
 *   PUT    /users/{id}  replace or insert the document (JSON object body),
 *                       w: majority; 201 created, 204 replaced
 *   DELETE /users/{id}  delete it, w: majority; 204, or 404
 *   GET    /healthz     200 while the cache is fresh, 503 while it has
 *                       failed closed (cdcache_fresh) or the service is
 *                       draining for shutdown
 *   GET    /metrics     Prometheus text format
 * HEAD works wherever GET does.  Writes never touch the cache: every
 * instance's CDC subscription evicts what changed, this one included.
 *
 * HTTP caching on top of the server-side cache.  A 200 carries a strong
 * ETag, the XXH3-128 of the exact bytes served (so two instances serving
 * the same cached value give the same tag), and "Cache-Control:
 * no-cache": a client or CDN may store the response but must revalidate
 * it every time.  Revalidation is cheap, because If-None-Match is answered
 * from the in-memory cache (304, no body), and it is what keeps browsers
 * as fresh as the server: the server-side copy is evicted within
 * milliseconds of a write, where any max-age would let clients serve the
 * old value for that long.  Every If-None-Match line of a request counts
 * (the lines form one list).
 *
 * Bad requests end in a 4xx and free everything: unknown routes (404),
 * unknown methods (405 with Allow), ids that are empty, not UTF-8,
 * contain control bytes or NUL, or exceed the cache's key limit (400),
 * invalid JSON bodies (400), bodies over max_body (413, from
 * Content-Length before reading it, or once a chunked body passes it).
 * libmicrohttpd itself answers malformed request lines and headers (400)
 * and request heads larger than the connection memory limit (414, 431),
 * closes connections idle for conn_timeout_s (a half-sent request
 * included), refuses connections beyond max_connections and closes those
 * beyond max_conn_per_ip from one address; its own error answers are
 * counted from its log (mhd_log).
 *
 * Shutdown: service_drain_begin makes /healthz answer 503 and every
 * response carry "Connection: close"; the caller waits for the accept
 * queue to empty (service_backlog: connections that arrived before the
 * signal, which a worker busy with a slow request has not accepted yet),
 * quiesces the daemon (service_stop_accepting), waits for
 * service_pending() to reach 0, all within its grace period, and then
 * calls service_stop.
 *
 * Threads: libmicrohttpd's internal thread pool (cfg.threads threads,
 * each polling with poll(), not epoll: with epoll, MHD_quiesce_daemon
 * removes the listening socket from each worker's set from the caller's
 * thread while a worker that already sees the daemon quiesced (or at its
 * connection limit) removes it too, and libmicrohttpd 0.9.75 aborts the
 * process, "Failed to remove listen FD from epoll set", on the loser's
 * ENOENT -- an open libmicrohttpd defect, hit once on SIGTERM here)
 * runs every callback here.  A request's
 * state (req_t) belongs to the connection's thread; the shared state is
 * the cache (thread-safe), the store's client pool (thread-safe), the
 * metrics, the draining flag and the in-flight count (atomics).
 */
#include "service.h"

#include <microhttpd.h>
#include <xxhash.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* A loader's own failure code (handed through cdcache_get_or_load). */
#define LOAD_EDB 1
/* How long a GET waits for another request's load of the same key. */
#define FILL_WAIT_MS 5000u

/* One connection (its socket context): owned by its thread. */
typedef struct conn {
  bool fresh; /* no request of it has reached on_request yet */
} conn_t;

/* One request: owned by its connection's thread, from the first access
 * callback to the completion callback. */
typedef struct req {
  service_t *s;
  uint64_t t0_ns;
  int route, method;
  unsigned status; /* 0 until a response is queued */
  char *id;        /* decoded id (users route), NUL-terminated */
  size_t idlen;
  char *body; /* PUT body so far */
  size_t body_len, body_cap;
  bool body_too_big;
} req_t;

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------- responses */

/* The headers a response may carry besides libmicrohttpd's (NULL: none). */
typedef struct hdrs {
  const char *ctype, *cache_control, *etag, *allow;
} hdrs_t;

/* Queues a response with the given body (copied) and headers.  Records
 * the status for the metrics. */
static enum MHD_Result respond(struct MHD_Connection *c, req_t *r, unsigned status, const hdrs_t *h,
                               const char *body, size_t len)
{
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (resp == NULL)
    return MHD_NO;
  if (h->ctype != NULL)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, h->ctype);
  if (h->cache_control != NULL)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, h->cache_control);
  if (h->etag != NULL)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, h->etag);
  if (h->allow != NULL)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, h->allow);
  /* Draining: the client reconnects elsewhere for its next request. */
  if (atomic_load_explicit(&r->s->draining, memory_order_relaxed))
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
  enum MHD_Result ret = MHD_queue_response(c, status, resp);
  MHD_destroy_response(resp);
  if (ret == MHD_YES)
    r->status = status;
  return ret;
}

/*
 * 304 Not Modified: ETag and Cache-Control, no body.  libmicrohttpd 0.9.75
 * adds "Content-Length: 0" to it (RFC 9110 8.6 wants either none or the
 * full response's length); clients ignore it on a 304, and both ways
 * around it in this version are worse (two Content-Length headers, or a
 * chunked 304 with a stray terminator).
 */
static enum MHD_Result not_modified(struct MHD_Connection *c, req_t *r, const char *tag)
{
  return respond(c, r, MHD_HTTP_NOT_MODIFIED, &(hdrs_t){.cache_control = "no-cache", .etag = tag},
                 "", 0);
}

/* A JSON error body {"error": msg}, with msg escaped. */
static enum MHD_Result respond_error(struct MHD_Connection *c, req_t *r, unsigned status,
                                     const char *msg, const char *allow)
{
  char buf[512];
  size_t n = 0;
  n += (size_t)snprintf(buf, sizeof buf, "{\"error\":\"");
  for (const unsigned char *p = (const unsigned char *)msg; *p != '\0' && n < sizeof buf - 16;
       p++) {
    if (*p == '"' || *p == '\\')
      n += (size_t)snprintf(buf + n, sizeof buf - n, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      n += (size_t)snprintf(buf + n, sizeof buf - n, "\\u%04x", *p);
    else
      buf[n++] = (char)*p;
  }
  n += (size_t)snprintf(buf + n, sizeof buf - n, "\"}\n");
  return respond(
      c, r, status,
      &(hdrs_t){.ctype = "application/json", .cache_control = "no-store", .allow = allow}, buf, n);
}

/* ------------------------------------------------------------ ETags */

/* The strong ETag of a value: "<32 hex digits of XXH3-128>". */
static void etag_of(const void *val, size_t len, char out[35])
{
  XXH128_hash_t h = XXH3_128bits(val, len);
  snprintf(out, 35, "\"%016llx%016llx\"", (unsigned long long)h.high64,
           (unsigned long long)h.low64);
}

/*
 * If-None-Match (RFC 9110 13.1.2): "*" or a list of entity tags; the
 * comparison is weak (W/ prefixes ignored).  True when the current
 * representation (tag) matches, so the answer is 304.
 */
static bool none_match(const char *hdr, const char *tag)
{
  size_t tlen = strlen(tag);
  const char *p = hdr;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '\0')
      return false;
    if (*p == '*')
      return true;
    if (p[0] == 'W' && p[1] == '/')
      p += 2;
    if (*p != '"')
      return false; /* malformed: no match, serve the full response */
    const char *q = strchr(p + 1, '"');
    if (q == NULL)
      return false;
    if ((size_t)(q + 1 - p) == tlen && memcmp(p, tag, tlen) == 0)
      return true;
    p = q + 1;
  }
}

/* Iterates the request's If-None-Match lines: a client (or a proxy
 * merging requests) may send the header more than once, and the lines
 * together form one list (RFC 9110 5.3). */
typedef struct inm_scan {
  const char *tag;
  bool match;
} inm_scan_t;

static enum MHD_Result inm_line(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
  inm_scan_t *sc = cls;
  if (strcasecmp(key, MHD_HTTP_HEADER_IF_NONE_MATCH) == 0 && value != NULL &&
      none_match(value, sc->tag))
    sc->match = true;
  return sc->match ? MHD_NO : MHD_YES; /* MHD_NO: stop, found */
}

/* True when any If-None-Match line of the request matches tag. */
static bool if_none_match(struct MHD_Connection *c, const char *tag)
{
  inm_scan_t sc = {.tag = tag};
  MHD_get_connection_values(c, MHD_HEADER_KIND, inm_line, &sc);
  return sc.match;
}

/* ------------------------------------------------------------ routing */

static int method_of(const char *m)
{
  if (strcmp(m, "GET") == 0)
    return METHOD_GET;
  if (strcmp(m, "HEAD") == 0)
    return METHOD_HEAD;
  if (strcmp(m, "PUT") == 0)
    return METHOD_PUT;
  if (strcmp(m, "DELETE") == 0)
    return METHOD_DELETE;
  return METHOD_OTHER;
}

static int hexval(char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/*
 * Percent-decodes the id segment src (raw, as sent) into r->id.
 * Returns NULL, or the reason it is refused.
 */
static const char *decode_id(const service_t *s, req_t *r, const char *src)
{
  size_t n = strlen(src);
  if (n == 0)
    return "empty id";
  if (n > 3 * s->max_key_len)
    return "id longer than the key limit";
  r->id = malloc(n + 1);
  if (r->id == NULL)
    return "out of memory";
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)src[i];
    if (ch == '%') {
      if (i + 2 >= n)
        return "bad percent-encoding in the id";
      int h = hexval(src[i + 1]), l = hexval(src[i + 2]);
      if (h < 0 || l < 0)
        return "bad percent-encoding in the id";
      ch = (unsigned char)(h * 16 + l);
      i += 2;
    }
    if (ch < 0x20 || ch == 0x7f)
      return "control byte (or NUL) in the id";
    r->id[o++] = (char)ch;
  }
  r->id[o] = '\0';
  r->idlen = o;
  if (o > s->max_key_len)
    return "id longer than the key limit";
  if (!bson_utf8_validate(r->id, o, false))
    return "id is not UTF-8";
  return NULL;
}

/* ------------------------------------------------------------- users */

typedef struct load_ctx {
  service_t *s;
  char err[256];
} load_ctx_t;

/* The loader: reads the document from MongoDB; a missing one is cached
 * as a zero-length value (absence). */
static int load_user(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  load_ctx_t *lc = ctx;
  char *json = NULL;
  size_t jlen = 0;
  atomic_fetch_add_explicit(&lc->s->metrics.db_reads, 1, memory_order_relaxed);
  int rc = store_read(lc->s->store, key, klen, &json, &jlen, lc->err, sizeof lc->err);
  if (rc == STORE_NOTFOUND)
    return cdcache_fill_set_value(fill, "", 0);
  if (rc != STORE_OK) {
    atomic_fetch_add_explicit(&lc->s->metrics.db_errors, 1, memory_order_relaxed);
    return LOAD_EDB;
  }
  rc = cdcache_fill_set_value(fill, json, jlen);
  bson_free(json);
  return rc;
}

static enum MHD_Result get_user(service_t *s, struct MHD_Connection *c, req_t *r)
{
  char stackbuf[4096];
  char *buf = stackbuf;
  size_t cap = sizeof stackbuf, vlen = 0;
  load_ctx_t lc = {.s = s};
  int rc;
  if (s->cache != NULL) {
    for (;;) {
      rc = cdcache_get_or_load(s->cache, r->id, r->idlen, load_user, &lc, CDCACHE_TTL_DEFAULT,
                               FILL_WAIT_MS, buf, cap, &vlen);
      if (rc != CDCACHE_ERANGE)
        break;
      /* Larger than the buffer: retry with one that fits (the value
       * may have changed meanwhile; the loop handles that too). */
      if (buf != stackbuf)
        free(buf);
      cap = vlen;
      buf = malloc(cap);
      if (buf == NULL)
        return respond_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory", NULL);
    }
  } else {
    /* --no-cache: straight to the database. */
    char *json = NULL;
    atomic_fetch_add_explicit(&s->metrics.db_reads, 1, memory_order_relaxed);
    rc = store_read(s->store, r->id, r->idlen, &json, &vlen, lc.err, sizeof lc.err);
    if (rc == STORE_OK) {
      buf = json; /* bson_malloc'd: bson_free below */
    } else if (rc == STORE_NOTFOUND) {
      vlen = 0;
      rc = STORE_OK;
    } else {
      atomic_fetch_add_explicit(&s->metrics.db_errors, 1, memory_order_relaxed);
      rc = LOAD_EDB;
    }
  }
  enum MHD_Result ret;
  if (rc != 0) {
    char msg[320];
    snprintf(msg, sizeof msg, "%s", rc == LOAD_EDB ? lc.err : cdcache_strerror(rc));
    ret = respond_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, msg, NULL);
  } else if (vlen == 0) {
    static const char absent[] = "{\"error\":\"no such document\"}\n";
    ret = respond(c, r, MHD_HTTP_NOT_FOUND,
                  &(hdrs_t){.ctype = "application/json", .cache_control = "no-cache"}, absent,
                  sizeof absent - 1);
  } else {
    char tag[35];
    etag_of(buf, vlen, tag);
    if (if_none_match(c, tag))
      ret = not_modified(c, r, tag);
    else
      ret =
          respond(c, r, MHD_HTTP_OK,
                  &(hdrs_t){.ctype = "application/json", .cache_control = "no-cache", .etag = tag},
                  buf, vlen);
  }
  if (buf != stackbuf) {
    if (s->cache != NULL)
      free(buf);
    else
      bson_free(buf);
  }
  return ret;
}

static enum MHD_Result put_user(service_t *s, struct MHD_Connection *c, req_t *r)
{
  char err[320];
  if (r->body_too_big) {
    snprintf(err, sizeof err, "body larger than %zu bytes", s->max_body);
    return respond_error(c, r, MHD_HTTP_CONTENT_TOO_LARGE, err, NULL);
  }
  bson_t doc;
  int bad = store_doc_from_json(r->id, r->idlen, r->body != NULL ? r->body : "", r->body_len, &doc,
                                err, sizeof err);
  if (bad != 0)
    return respond_error(
        c, r, bad == STORE_ENOMEM ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_REQUEST, err, NULL);
  bool created = false;
  atomic_fetch_add_explicit(&s->metrics.db_writes, 1, memory_order_relaxed);
  int rc = store_replace(s->store, r->id, r->idlen, &doc, &created, err, sizeof err);
  bson_destroy(&doc);
  if (rc == STORE_EBADDOC)
    return respond_error(c, r, MHD_HTTP_BAD_REQUEST, err, NULL);
  if (rc != STORE_OK) {
    atomic_fetch_add_explicit(&s->metrics.db_errors, 1, memory_order_relaxed);
    return respond_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, err, NULL);
  }
  return respond(c, r, created ? MHD_HTTP_CREATED : MHD_HTTP_NO_CONTENT, &(hdrs_t){0}, "", 0);
}

static enum MHD_Result delete_user(service_t *s, struct MHD_Connection *c, req_t *r)
{
  char err[320];
  atomic_fetch_add_explicit(&s->metrics.db_writes, 1, memory_order_relaxed);
  int rc = store_delete(s->store, r->id, r->idlen, err, sizeof err);
  if (rc == STORE_NOTFOUND)
    return respond_error(c, r, MHD_HTTP_NOT_FOUND, "no such document", NULL);
  if (rc != STORE_OK) {
    atomic_fetch_add_explicit(&s->metrics.db_errors, 1, memory_order_relaxed);
    return respond_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, err, NULL);
  }
  return respond(c, r, MHD_HTTP_NO_CONTENT, &(hdrs_t){0}, "", 0);
}

/* -------------------------------------------------- health and metrics */

static enum MHD_Result healthz(service_t *s, struct MHD_Connection *c, req_t *r)
{
  const hdrs_t h = {.ctype = "text/plain", .cache_control = "no-store"};
  if (atomic_load_explicit(&s->draining, memory_order_relaxed)) {
    static const char bye[] = "draining: shutting down\n";
    return respond(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, &h, bye, sizeof bye - 1);
  }
  if (s->cache == NULL)
    return respond(c, r, MHD_HTTP_OK, &h, "ok (no cache)\n", 14);
  if (cdcache_fresh(s->cache, NULL) == 0)
    return respond(c, r, MHD_HTTP_OK, &h, "ok\n", 3);
  static const char stale[] = "stale: the change stream has not answered within max_stale_ms\n";
  return respond(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, &h, stale, sizeof stale - 1);
}

static enum MHD_Result metrics(service_t *s, struct MHD_Connection *c, req_t *r)
{
  size_t len;
  char *text = metrics_render(&s->metrics, service_in_flight(s),
                              atomic_load_explicit(&s->fresh_conns, memory_order_relaxed), s->cache,
                              s->sub, &len);
  if (text == NULL)
    return respond_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory", NULL);
  enum MHD_Result ret = respond(
      c, r, MHD_HTTP_OK,
      &(hdrs_t){.ctype = "text/plain; version=0.0.4; charset=utf-8", .cache_control = "no-store"},
      text, len);
  free(text);
  return ret;
}

/* ----------------------------------------------------------- requests */

/* The first call for a request: headers are in, no body yet.  Refuses
 * what is wrong at once (the connection then closes: libmicrohttpd
 * cannot know whether an unread body follows); a good request is answered
 * at the last call, once the request is complete, so that the connection
 * stays open for the next one. */
static enum MHD_Result first_call(service_t *s, struct MHD_Connection *c, req_t *r, const char *url)
{
  static const char users[] = "/users/";
  if (strncmp(url, users, sizeof users - 1) == 0 && strchr(url + sizeof users - 1, '/') == NULL)
    r->route = ROUTE_USER;
  else if (strcmp(url, "/healthz") == 0)
    r->route = ROUTE_HEALTHZ;
  else if (strcmp(url, "/metrics") == 0)
    r->route = ROUTE_METRICS;
  else
    return respond_error(c, r, MHD_HTTP_NOT_FOUND, "no such route", NULL);

  if (r->route != ROUTE_USER) {
    if (r->method != METHOD_GET && r->method != METHOD_HEAD)
      return respond_error(c, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", "GET, HEAD");
    return MHD_YES;
  }
  if (r->method == METHOD_OTHER)
    return respond_error(c, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed",
                         "GET, HEAD, PUT, DELETE");
  const char *why = decode_id(s, r, url + sizeof users - 1);
  if (why != NULL)
    return respond_error(c, r, MHD_HTTP_BAD_REQUEST, why, NULL);
  /* PUT: refuse a declared oversize body before reading any of it. */
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (r->method == METHOD_PUT && cl != NULL && strtoull(cl, NULL, 10) > s->max_body) {
    r->body_too_big = true;
    return put_user(s, c, r);
  }
  return MHD_YES;
}

/* The last call: the whole request is in. */
static enum MHD_Result last_call(service_t *s, struct MHD_Connection *c, req_t *r)
{
  switch (r->route) {
  case ROUTE_HEALTHZ:
    return healthz(s, c, r);
  case ROUTE_METRICS:
    return metrics(s, c, r);
  default:
    break;
  }
  switch (r->method) {
  case METHOD_GET:
  case METHOD_HEAD:
    return get_user(s, c, r);
  case METHOD_DELETE:
    return delete_user(s, c, r);
  default:
    return put_user(s, c, r);
  }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
  service_t *s = cls;
  req_t *r = *con_cls;
  if (r == NULL) {
    r = calloc(1, sizeof *r);
    if (r == NULL)
      return MHD_NO;
    r->s = s;
    r->t0_ns = now_ns();
    atomic_fetch_add_explicit(&s->in_flight, 1, memory_order_relaxed);
    /* The connection's first request: no longer waiting (after the add
     * above, so that service_pending never dips to 0 in between). */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_t *cn = ci != NULL ? ci->socket_context : NULL;
    if (cn != NULL && cn->fresh) {
      cn->fresh = false;
      atomic_fetch_sub_explicit(&s->fresh_conns, 1, memory_order_relaxed);
    }
    r->route = ROUTE_OTHER;
    r->method = method_of(method);
    *con_cls = r;
    return first_call(s, c, r, url);
  }
  if (*upload_size > 0) {
    /* More body.  Kept for a PUT up to the limit; past it, or on another
     * method, discarded: memory stays bounded whatever the client sends
     * (the idle timeout and connection limit bound the time). */
    if (r->status == 0 && r->method == METHOD_PUT && !r->body_too_big) {
      if (r->body_len + *upload_size > s->max_body) {
        r->body_too_big = true;
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
      } else {
        if (r->body_len + *upload_size > r->body_cap) {
          size_t need = r->body_len + *upload_size;
          size_t ncap = r->body_cap * 2 > need ? r->body_cap * 2 : need;
          char *nb = realloc(r->body, ncap);
          if (nb == NULL)
            return MHD_NO;
          r->body = nb;
          r->body_cap = ncap;
        }
        memcpy(r->body + r->body_len, upload, *upload_size);
        r->body_len += *upload_size;
      }
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (r->status != 0)
    return MHD_YES; /* answered at the first call */
  return last_call(s, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
  service_t *s = cls;
  req_t *r = *con_cls;
  if (r == NULL)
    return;
  if (r->status != 0)
    metrics_request(&s->metrics, r->route, r->method, r->status, now_ns() - r->t0_ns);
  atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
  free(r->id);
  free(r->body);
  free(r);
  *con_cls = NULL;
}

/* Connection start and end: tracks the connections that have not
 * brought a first request yet (service_pending, for the drain). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
  service_t *s = cls;
  conn_t *cn = *socket_context;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    cn = calloc(1, sizeof *cn);
    if (cn == NULL)
      return; /* not tracked: a drain may not wait for it */
    cn->fresh = true;
    atomic_fetch_add_explicit(&s->fresh_conns, 1, memory_order_relaxed);
    *socket_context = cn;
  } else if (cn != NULL) {
    if (cn->fresh)
      atomic_fetch_sub_explicit(&s->fresh_conns, 1, memory_order_relaxed);
    free(cn);
    *socket_context = NULL;
  }
}

/* Leaves the path as sent: decode_id decodes (and refuses %00, which
 * libmicrohttpd's own unescaping would silently turn into a shorter id). */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
  return strlen(s);
}

/*
 * libmicrohttpd's log.  It is also the only place where libmicrohttpd
 * 0.9.75 tells of the error answers it sends itself (431, 414, 413, 400
 * for a malformed head or a missing Host): no callback reports them, and
 * at the connection-closed notification MHD_CONNECTION_INFO_HTTP_STATUS is
 * already 0.  transmit_error_response logs each with this format, the
 * status code its first argument, so that line is what the
 * cdcache_http_protocol_errors_total counter counts.
 */
static const char mhd_error_fmt[] = "Error processing request (HTTP response code is %u";

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
  service_t *s = cls;
  if (strncmp(fmt, mhd_error_fmt, sizeof mhd_error_fmt - 1) == 0) {
    va_list cp;
    va_copy(cp, ap);
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_copy is the line above
    metrics_mhd_error(&s->metrics, va_arg(cp, unsigned));
    va_end(cp);
  }
  fprintf(stderr, "cdcache-http-example: libmicrohttpd: ");
  vfprintf(stderr, fmt, ap);
}

int service_start(service_t *s, const service_config_t *cfg, char *err, size_t errcap)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cfg->port)};
  if (inet_pton(AF_INET, cfg->bind, &sa.sin_addr) != 1) {
    snprintf(err, errcap, "--bind %s: not an IPv4 address", cfg->bind);
    return -1;
  }
  s->max_body = cfg->max_body;
  s->max_key_len = cfg->max_key_len;
  /* MHD_USE_ITC: MHD_quiesce_daemon needs it with internal threads. */
  s->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC, cfg->port,
      NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->threads,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)cfg->max_conn_per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
      MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped,
      NULL, MHD_OPTION_END);
  if (s->daemon == NULL) {
    snprintf(err, errcap, "cannot start the HTTP server on %s:%u", cfg->bind, cfg->port);
    return -1;
  }
  return 0;
}

uint16_t service_port(const service_t *s)
{
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  return di != NULL ? di->port : 0;
}

void service_drain_begin(service_t *s)
{
  atomic_store_explicit(&s->draining, true, memory_order_relaxed);
}

unsigned service_backlog(const service_t *s)
{
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_LISTEN_FD);
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  /* On a listening socket Linux reports the accept queue's length in
   * tcpi_unacked. */
  if (di == NULL || di->listen_fd == MHD_INVALID_SOCKET ||
      getsockopt(di->listen_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      ti.tcpi_state != TCP_LISTEN)
    return 0;
  return ti.tcpi_unacked;
}

void service_stop_accepting(service_t *s)
{
  MHD_socket fd = MHD_quiesce_daemon(s->daemon);
  if (fd != MHD_INVALID_SOCKET) {
    s->listen_fd = fd;
    s->quiesced = true;
  }
}

unsigned service_in_flight(const service_t *s)
{
  return atomic_load_explicit(&s->in_flight, memory_order_relaxed);
}

unsigned service_pending(const service_t *s)
{
  return atomic_load_explicit(&s->in_flight, memory_order_relaxed) +
         atomic_load_explicit(&s->fresh_conns, memory_order_relaxed);
}

void service_stop(service_t *s)
{
  if (s->daemon != NULL)
    MHD_stop_daemon(s->daemon);
  s->daemon = NULL;
  /* A quiesced daemon leaves its listening socket to us, to close only
   * after its threads are gone. */
  if (s->quiesced)
    close(s->listen_fd);
  s->quiesced = false;
}
