/* Helpers for the hostile suites (see hostile_util.h). */
#include "hostile_util.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ allocator */

static void *h_malloc(void *ctx, size_t size)
{
  h_alloc_t *a = ctx;
  long n = atomic_fetch_add(&a->calls, 1) + 1;
  long f = atomic_load(&a->fail_at);
  if (atomic_load(&a->fail_all) || (f != 0 && n == f))
    return NULL;
  void *p = malloc(size);
  if (p != NULL) {
    atomic_fetch_add(&a->live, 1);
    atomic_fetch_add(&a->bytes, (long long)size);
  }
  return p;
}

static void h_free(void *ctx, void *ptr, size_t size)
{
  h_alloc_t *a = ctx;
  if (ptr == NULL)
    return;
  atomic_fetch_sub(&a->live, 1);
  atomic_fetch_sub(&a->bytes, (long long)size);
  free(ptr);
}

void h_alloc_install(cdcache_config_t *cfg, h_alloc_t *a)
{
  cfg->allocator.malloc = h_malloc;
  cfg->allocator.free = h_free;
  cfg->allocator.usable_size = NULL;
  cfg->allocator.ctx = a;
}

void h_alloc_fail_nth(h_alloc_t *a, long n)
{
  atomic_store(&a->fail_at, 0);
  atomic_store(&a->calls, 0);
  atomic_store(&a->fail_at, n);
}

/* -------------------------------------------------------------- logging */

void h_log_init(h_log_t *l, const char *want)
{
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
  l->want = want;
}

void h_log_fn(void *ctx, int level, const char *msg)
{
  h_log_t *l = ctx;
  (void)level;
  if (getenv("CDCACHE_HOSTILE_VERBOSE"))
    (void)fprintf(stderr, "    [log %d] %s\n", level, msg);
  if (l == NULL)
    return;
  pthread_mutex_lock(&l->mu);
  l->n++;
  (void)snprintf(l->last, sizeof l->last, "%s", msg);
  if (!l->matched && l->want && strstr(msg, l->want)) {
    l->matched = 1;
    (void)snprintf(l->match, sizeof l->match, "%s", msg);
  }
  pthread_mutex_unlock(&l->mu);
}

int h_log_matched(h_log_t *l)
{
  pthread_mutex_lock(&l->mu);
  int m = l->matched;
  pthread_mutex_unlock(&l->mu);
  return m;
}

uint64_t h_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void h_nap_ms(unsigned ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int h_closed_port(void)
{
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(s, (struct sockaddr *)&a, &al) != 0) {
    if (s >= 0)
      close(s);
    return -1;
  }
  close(s);
  return ntohs(a.sin_port);
}

/* ------------------------------------------------------- fake server */

#define OP_REPLY 1
#define OP_QUERY 2004
#define OP_MSG 2013
#define MAX_REQUEST (1 << 20)

typedef struct conn_arg {
  h_server_t *s;
  int fd;
  int id;
} conn_arg_t;

static void put_i32(uint8_t *p, int32_t v)
{
  uint32_t u = (uint32_t)v;
  p[0] = (uint8_t)u;
  p[1] = (uint8_t)(u >> 8);
  p[2] = (uint8_t)(u >> 16);
  p[3] = (uint8_t)(u >> 24);
}

static int32_t get_i32(const uint8_t *p)
{
  return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24);
}

/* Waits for fd readable; false on stop, error or timeout (ms < 0: none). */
static bool wait_in(int fd, int stop_fd, int ms)
{
  for (;;) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int n = poll(p, 2, ms);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || p[1].revents)
      return false;
    return true;
  }
}

static bool read_full(int fd, int stop_fd, uint8_t *buf, size_t n)
{
  size_t got = 0;
  while (got < n) {
    if (!wait_in(fd, stop_fd, -1))
      return false;
    ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r == 0)
      return false;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return false;
    }
    got += (size_t)r;
  }
  return true;
}

static void write_all(int fd, const void *buf, size_t n)
{
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

static void hello_doc(bson_t *d, int conn_id)
{
  bson_init(d);
  BSON_APPEND_BOOL(d, "helloOk", true);
  BSON_APPEND_BOOL(d, "ismaster", true);
  BSON_APPEND_BOOL(d, "isWritablePrimary", true);
  BSON_APPEND_INT32(d, "maxBsonObjectSize", 16 * 1024 * 1024);
  BSON_APPEND_INT32(d, "maxMessageSizeBytes", 48000000);
  BSON_APPEND_INT32(d, "maxWriteBatchSize", 100000);
  BSON_APPEND_DATE_TIME(d, "localTime", (int64_t)time(NULL) * 1000);
  BSON_APPEND_INT32(d, "logicalSessionTimeoutMinutes", 30);
  BSON_APPEND_INT32(d, "connectionId", conn_id);
  BSON_APPEND_INT32(d, "minWireVersion", 0);
  BSON_APPEND_INT32(d, "maxWireVersion", 17);
  BSON_APPEND_BOOL(d, "readOnly", false);
  BSON_APPEND_DOUBLE(d, "ok", 1.0);
}

static void cursor_doc(h_server_t *s, bson_t *d, const char *ns, bool first)
{
  bson_t cur, arr, tok;
  bson_init(d);
  BSON_APPEND_DOCUMENT_BEGIN(d, "cursor", &cur);
  BSON_APPEND_ARRAY_BEGIN(&cur, first ? "firstBatch" : "nextBatch", &arr);
  if (first) {
    for (int i = 0; i < s->n_events; i++) {
      char k[16];
      (void)snprintf(k, sizeof k, "%d", i);
      BSON_APPEND_DOCUMENT(&arr, k, s->events[i]);
    }
  }
  bson_append_array_end(&cur, &arr);
  BSON_APPEND_DOCUMENT_BEGIN(&cur, "postBatchResumeToken", &tok);
  BSON_APPEND_UTF8(&tok, "_data", first ? "8200000001" : "8200000002");
  bson_append_document_end(&cur, &tok);
  BSON_APPEND_INT64(&cur, "id", 42);
  switch (first ? s->ns_shape : H_NS_OK) {
  case H_NS_OK:
    BSON_APPEND_UTF8(&cur, "ns", ns);
    break;
  case H_NS_MISSING:
    break;
  case H_NS_NODOT:
    BSON_APPEND_UTF8(&cur, "ns", "app");
    break;
  case H_NS_NOT_UTF8:
    BSON_APPEND_INT32(&cur, "ns", 42);
    break;
  case H_NS_EMPTY_COLL:
    BSON_APPEND_UTF8(&cur, "ns", "app.");
    break;
  }
  bson_append_document_end(d, &cur);
  BSON_APPEND_TIMESTAMP(d, "operationTime", (uint32_t)time(NULL), 1);
  BSON_APPEND_DOUBLE(d, "ok", 1.0);
}

/* The whole reply frame for doc (OP_REPLY to OP_QUERY, else OP_MSG). */
static uint8_t *frame(const bson_t *doc, int32_t req_id, int32_t opcode, size_t *len)
{
  size_t body = opcode == OP_QUERY ? 20 : 5;
  size_t n = 16 + body + doc->len;
  uint8_t *f = calloc(1, n);
  if (!f)
    abort();
  put_i32(f, (int32_t)n);
  put_i32(f + 4, 7000 + req_id);
  put_i32(f + 8, req_id);
  if (opcode == OP_QUERY) {
    put_i32(f + 12, OP_REPLY);
    put_i32(f + 32, 1); /* numberReturned */
  } else {
    put_i32(f + 12, OP_MSG);
    f[20] = 0; /* section kind 0 */
  }
  memcpy(f + 16 + body, bson_get_data(doc), doc->len);
  *len = n;
  return f;
}

/* The command document of a request (static view into msg), or false. */
static bool command_of(const uint8_t *msg, size_t len, int32_t opcode, bson_t *cmd)
{
  size_t off;
  if (opcode == OP_QUERY) {
    off = 20;
    while (off < len && msg[off] != 0)
      off++;
    off += 1 + 8;
  } else if (opcode == OP_MSG) {
    off = 20;
    if (off < len && msg[off] != 0)
      return false; /* the body section comes first in libmongoc's */
    off++;
  } else {
    return false;
  }
  if (off + 5 > len)
    return false;
  uint32_t dl = (uint32_t)get_i32(msg + off);
  if (dl < 5 || off + dl > len)
    return false;
  return bson_init_static(cmd, msg + off, dl);
}

static void spoil(h_server_t *s, int fd, h_bad_t bad, const uint8_t *reply, size_t rlen,
                  int32_t req_id, bool *close_now, bool *silent_now)
{
  uint8_t b[64];
  atomic_fetch_add(&s->spoiled, 1);
  switch (bad) {
  case H_GARBAGE_HTTP: {
    static const char http[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 11\r\nConnection: close\r\n\r\nBad Request";
    write_all(fd, http, sizeof http - 1);
    *close_now = true;
    break;
  }
  case H_GARBAGE_FRAME:
    for (size_t i = 0; i < sizeof b; i++)
      b[i] = (uint8_t)(0xA5 ^ (i * 37));
    put_i32(b, (int32_t)sizeof b);
    put_i32(b + 4, 1);
    put_i32(b + 8, req_id);
    put_i32(b + 12, 0x0badf00d);
    write_all(fd, b, sizeof b);
    break;
  case H_TRUNCATED:
  case H_TRUNCATED_STALL:
    write_all(fd, reply, rlen / 2);
    if (bad == H_TRUNCATED)
      *close_now = true;
    else
      *silent_now = true;
    break;
  case H_HUGE_LENGTH:
    memset(b, 0, sizeof b);
    put_i32(b, 64 * 1024 * 1024);
    put_i32(b + 4, 1);
    put_i32(b + 8, req_id);
    put_i32(b + 12, OP_MSG);
    write_all(fd, b, 32);
    *close_now = true;
    break;
  case H_OVERSIZE_BSON:
    memset(b, 0, sizeof b);
    put_i32(b, 16 + 5 + 16);
    put_i32(b + 4, 1);
    put_i32(b + 8, req_id);
    put_i32(b + 12, OP_MSG);
    b[20] = 0;
    put_i32(b + 21, 0x7fffff00); /* the document claims ~2 GiB */
    b[25] = 0x10;                /* int32 "a" */
    b[26] = 'a';
    write_all(fd, b, 16 + 5 + 16);
    break;
  case H_CLOSE:
    *close_now = true;
    break;
  case H_SILENT:
  case H_ANSWER:
    *silent_now = bad == H_SILENT;
    break;
  }
}

static void *conn_main(void *arg)
{
  conn_arg_t *ca = arg;
  h_server_t *s = ca->s;
  int fd = ca->fd;
  int conn_id = ca->id;
  bool silent = false;
  uint8_t hdr[16];
  free(ca);
  for (;;) {
    if (!read_full(fd, s->stop_fd, hdr, 16))
      break;
    int32_t len = get_i32(hdr), req_id = get_i32(hdr + 4), opcode = get_i32(hdr + 12);
    if (len < 16 || len > MAX_REQUEST)
      break;
    uint8_t *msg = malloc((size_t)len);
    if (!msg)
      break;
    memcpy(msg, hdr, 16);
    if (!read_full(fd, s->stop_fd, msg + 16, (size_t)len - 16)) {
      free(msg);
      break;
    }
    if (silent) {
      free(msg);
      continue;
    }
    bson_t cmd, reply;
    bson_iter_t it;
    const char *name = "";
    bool close_now = false;
    if (command_of(msg, (size_t)len, opcode, &cmd) && bson_iter_init(&it, &cmd) &&
        bson_iter_next(&it)) {
      name = bson_iter_key(&it);
      if (strcmp(name, "$query") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_t q;
        if (bson_iter_recurse(&it, &q) && bson_iter_next(&q))
          name = bson_iter_key(&q);
      }
    }
    bool is_hello =
        !strcasecmp(name, "ismaster") || !strcmp(name, "hello") || !strcmp(name, "isMaster");
    if (is_hello) {
      atomic_fetch_add(&s->hellos, 1);
      hello_doc(&reply, conn_id);
    } else if (!strcmp(name, "aggregate") || !strcmp(name, "getMore")) {
      bool first = name[0] == 'a';
      char ns[200] = "app.users";
      bson_iter_t db;
      if (bson_iter_init_find(&db, &cmd, "$db") && BSON_ITER_HOLDS_UTF8(&db)) {
        bson_iter_t c;
        const char *coll = "$cmd.aggregate";
        if (first && bson_iter_init_find(&c, &cmd, "aggregate") && BSON_ITER_HOLDS_UTF8(&c))
          coll = bson_iter_utf8(&c, NULL);
        (void)snprintf(ns, sizeof ns, "%s.%s", bson_iter_utf8(&db, NULL), coll);
      }
      if (first) {
        atomic_fetch_add(&s->aggregates, 1);
      } else {
        atomic_fetch_add(&s->getmores, 1);
        if (s->on_command == H_ANSWER)
          (void)wait_in(s->stop_fd, s->stop_fd, (int)s->getmore_wait_ms); /* await */
      }
      cursor_doc(s, &reply, ns, first);
    } else {
      atomic_fetch_add(&s->others, 1);
      bson_init(&reply);
      BSON_APPEND_DOUBLE(&reply, "ok", 1.0);
    }
    size_t rlen;
    uint8_t *r = frame(&reply, req_id, opcode, &rlen);
    bson_destroy(&reply);
    free(msg);
    h_bad_t bad = is_hello ? s->on_hello : s->on_command;
    if (bad == H_ANSWER)
      write_all(fd, r, rlen);
    else
      spoil(s, fd, bad, r, rlen, req_id, &close_now, &silent);
    free(r);
    if (close_now)
      break;
  }
  shutdown(fd, SHUT_RDWR); /* closed by h_server_stop, after the join */
  return NULL;
}

static void *accept_main(void *arg)
{
  h_server_t *s = arg;
  for (;;) {
    if (!wait_in(s->listen_fd, s->stop_fd, -1))
      break;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
      continue;
    atomic_fetch_add(&s->accepted, 1);
    pthread_mutex_lock(&s->mu);
    if (s->n_conns == H_MAX_CONNS) {
      pthread_mutex_unlock(&s->mu);
      close(fd); /* too many: behaves as H_CLOSE */
      continue;
    }
    conn_arg_t *ca = malloc(sizeof *ca);
    if (!ca) {
      pthread_mutex_unlock(&s->mu);
      close(fd);
      continue;
    }
    ca->s = s;
    ca->fd = fd;
    ca->id = s->n_conns + 1;
    if (pthread_create(&s->conn_thr[s->n_conns], NULL, conn_main, ca) != 0) {
      free(ca);
      close(fd);
    } else {
      s->conn_fd[s->n_conns++] = fd;
    }
    pthread_mutex_unlock(&s->mu);
  }
  return NULL;
}

void h_server_init(h_server_t *s)
{
  memset(s, 0, sizeof *s);
  s->listen_fd = -1;
  s->stop_fd = -1;
  s->getmore_wait_ms = 50;
}

void h_server_add_event(h_server_t *s, const bson_t *ev)
{
  if (s->n_events < H_MAX_EVENTS)
    s->events[s->n_events++] = bson_copy(ev);
}

int h_server_start(h_server_t *s)
{
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int one = 1;
  pthread_mutex_init(&s->mu, NULL);
  s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd < 0)
    return -1;
  (void)setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->listen_fd, 16) != 0 ||
      getsockname(s->listen_fd, (struct sockaddr *)&a, &al) != 0)
    return -1;
  s->port = ntohs(a.sin_port);
  (void)snprintf(s->uri, sizeof s->uri, "mongodb://127.0.0.1:%d/?directConnection=true", s->port);
  s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->stop_fd < 0)
    return -1;
  if (pthread_create(&s->acceptor, NULL, accept_main, s) != 0)
    return -1;
  return 0;
}

void h_server_stop(h_server_t *s)
{
  uint64_t one = 1;
  if (s->stop_fd >= 0) {
    if (write(s->stop_fd, &one, sizeof one) < 0) {
      /* still readable */
    }
    pthread_join(s->acceptor, NULL);
    /* no new connection now; every connection thread sees stop_fd */
    pthread_mutex_lock(&s->mu);
    int n = s->n_conns;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
      pthread_join(s->conn_thr[i], NULL);
      close(s->conn_fd[i]);
    }
    close(s->stop_fd);
    s->stop_fd = -1;
  }
  if (s->listen_fd >= 0)
    close(s->listen_fd);
  s->listen_fd = -1;
  for (int i = 0; i < s->n_events; i++)
    bson_destroy(s->events[i]);
  s->n_events = 0;
  pthread_mutex_destroy(&s->mu);
}

/* ------------------------------------------- _id of every BSON type */

/* Appends the value for row i under "_id"; returns false past the end. */
bool h_append_id(bson_t *d, int i)
{
  static const uint8_t oid_bytes[12] = {0x65, 0x5f, 0x2a, 0x10, 0, 1, 2, 3, 4, 5, 6, 7};
  static const uint8_t bin[3] = {1, 2, 3};
  bson_oid_t oid;
  bson_decimal128_t dec;
  bson_oid_init_from_data(&oid, oid_bytes);
  switch (i) {
  case 0:
    return BSON_APPEND_DOUBLE(d, "_id", 2.5);
  case 1:
    return BSON_APPEND_DOUBLE(d, "_id", 3.0);
  case 2:
    return BSON_APPEND_DOUBLE(d, "_id", NAN);
  case 3:
    return BSON_APPEND_DOUBLE(d, "_id", -INFINITY);
  case 4:
    return BSON_APPEND_DOUBLE(d, "_id", -0.0);
  case 5:
    return BSON_APPEND_UTF8(d, "_id", "héllo wörld");
  case 6:
    return bson_append_utf8(d, "_id", 3, "a\0b", 3);
  case 7:
    return BSON_APPEND_UTF8(d, "_id", "");
  case 8: {
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(d, "_id", &sub);
    BSON_APPEND_INT32(&sub, "a", 1);
    BSON_APPEND_UTF8(&sub, "b", "x");
    return bson_append_document_end(d, &sub);
  }
  case 9: {
    bson_t sub;
    BSON_APPEND_ARRAY_BEGIN(d, "_id", &sub);
    BSON_APPEND_INT32(&sub, "0", 1);
    BSON_APPEND_INT64(&sub, "1", 2);
    return bson_append_array_end(d, &sub);
  }
  case 10:
    return BSON_APPEND_BINARY(d, "_id", BSON_SUBTYPE_BINARY, bin, 3);
  case 11:
    return BSON_APPEND_BINARY(d, "_id", BSON_SUBTYPE_UUID, oid_bytes, 12);
  case 12:
    return BSON_APPEND_UNDEFINED(d, "_id");
  case 13:
    return BSON_APPEND_OID(d, "_id", &oid);
  case 14:
    return BSON_APPEND_BOOL(d, "_id", true);
  case 15:
    return BSON_APPEND_DATE_TIME(d, "_id", 1700000000000LL);
  case 16:
    return BSON_APPEND_NULL(d, "_id");
  case 17:
    return BSON_APPEND_REGEX(d, "_id", "^a.*", "im");
  case 18:
    return BSON_APPEND_DBPOINTER(d, "_id", "db.c", &oid);
  case 19:
    return BSON_APPEND_CODE(d, "_id", "function(){}");
  case 20:
    return BSON_APPEND_SYMBOL(d, "_id", "sym");
  case 21: {
    bson_t *scope = BCON_NEW("x", BCON_INT32(1));
    bool ok = BSON_APPEND_CODE_WITH_SCOPE(d, "_id", "f()", scope);
    bson_destroy(scope);
    return ok;
  }
  case 22:
    return BSON_APPEND_INT32(d, "_id", -7);
  case 23:
    return BSON_APPEND_TIMESTAMP(d, "_id", 1700000000, 3);
  case 24:
    return BSON_APPEND_INT64(d, "_id", INT64_MAX);
  case 25:
    bson_decimal128_from_string("1.50", &dec);
    return BSON_APPEND_DECIMAL128(d, "_id", &dec);
  case 26:
    bson_decimal128_from_string("-12.000", &dec);
    return BSON_APPEND_DECIMAL128(d, "_id", &dec);
  case 27:
    bson_decimal128_from_string("NaN", &dec);
    return BSON_APPEND_DECIMAL128(d, "_id", &dec);
  case 28:
    return BSON_APPEND_MAXKEY(d, "_id");
  case 29:
    return BSON_APPEND_MINKEY(d, "_id");
  default:
    return false;
  }
}

const h_id_row_t h_id_rows[] = {
    {"double 2.5", "2.5"},
    {"double 3.0 (integral)", "3"},
    {"double NaN", "NaN"},
    {"double -Infinity", "-Infinity"},
    {"double -0.0", "0"},
    {"string (UTF-8)", "h\xc3\xa9llo w\xc3\xb6rld"},
    {"string with NUL", "a\0b"},
    {"string empty", ""},
    {"document", "{ \"a\" : 1, \"b\" : \"x\" }"},
    {"array", "[ 1, 2 ]"},
    {"binary (subtype 0)", "{ \"$binary\" : { \"base64\" : \"AQID\", \"subType\" : \"00\" } }"},
    {"binary (UUID subtype 4, 12 bytes)",
     "{ \"$binary\" : { \"base64\" : \"ZV8qEAABAgMEBQYH\", \"subType\" : \"04\" } }"},
    {"undefined", "{ \"$undefined\" : true }"},
    {"ObjectId", "655f2a100001020304050607"},
    {"bool", "true"},
    {"date", "{ \"$date\" : { \"$numberLong\" : \"1700000000000\" } }"},
    {"null", "null"},
    {"regex", "{ \"$regularExpression\" : { \"pattern\" : \"^a.*\", \"options\" : \"im\" } }"},
    {"DBPointer", "{ \"$dbPointer\" : { \"$ref\" : \"db.c\", \"$id\" : { \"$oid\" : "
                  "\"655f2a100001020304050607\" } } }"},
    {"JavaScript code", "{ \"$code\" : \"function(){}\" }"},
    {"symbol", "{ \"$symbol\" : \"sym\" }"},
    {"code with scope",
     "{ \"$code\" : \"f()\", \"$scope\" : { \"x\" : { \"$numberInt\" : \"1\" } } }"},
    {"int32", "-7"},
    {"timestamp", "{ \"$timestamp\" : { \"t\" : 1700000000, \"i\" : 3 } }"},
    {"int64", "9223372036854775807"},
    {"decimal128 1.50", "1.50"},
    {"decimal128 -12.000 (integral)", "-12"},
    {"decimal128 NaN", "NaN"},
    {"maxKey", "{ \"$maxKey\" : 1 }"},
    {"minKey", "{ \"$minKey\" : 1 }"},
};
const int H_N_ID_ROWS = (int)(sizeof h_id_rows / sizeof h_id_rows[0]);
