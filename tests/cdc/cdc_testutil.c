/* Helpers for the CDC end-to-end tests (see cdc_testutil.h). */
#include "cdc_testutil.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t tu_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int tu_free_port(void)
{
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = -1;
  if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(s, (struct sockaddr *)&a, &al) == 0)
    port = ntohs(a.sin_port);
  if (s >= 0)
    close(s);
  return port;
}

cdcache_cdc_stats_t tu_stats(cdcache_cdc_t *sub)
{
  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  (void)cdcache_cdc_stats(sub, &st);
  return st;
}

static void nap_ms(unsigned ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

bool tu_wait(bool (*pred)(void *), void *ctx, uint32_t timeout_ms)
{
  uint64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    if (pred(ctx))
      return true;
    if (tu_now_ms() > deadline)
      return false;
    nap_ms(2);
  }
}

int tu_server_start(const char *path, int oplog_size, tu_server_t *s)
{
  return tu_server_start_args(path, oplog_size, NULL, s);
}

int tu_server_start_args(const char *path, int oplog_size, const char *const *extra, tu_server_t *s)
{
  char portfile[128], oplog[32];
  memset(s, 0, sizeof *s);
  (void)snprintf(s->dir, sizeof s->dir, "/tmp/cdc-e2e-XXXXXX");
  if (!mkdtemp(s->dir))
    return -1;
  (void)snprintf(portfile, sizeof portfile, "%s/port", s->dir);
  (void)snprintf(oplog, sizeof oplog, "%d", oplog_size > 0 ? oplog_size : 100000);
  s->pid = fork();
  if (s->pid < 0)
    return -1;
  if (s->pid == 0) {
    /* never outlive the test, even when it is killed */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    const char *argv[24] = {path,     "--port",       "0",   "--port-file",
                            portfile, "--oplog-size", oplog, "--quiet"};
    for (int i = 0, n = 8; extra && extra[i] && n < 23; i++)
      argv[n++] = extra[i];
    execv(path, (char *const *)argv);
    _exit(127);
  }
  uint64_t deadline = tu_now_ms() + 10000;
  while (tu_now_ms() < deadline) {
    FILE *f = fopen(portfile, "r");
    if (f) {
      int port = 0;
      int n = fscanf(f, "%d", &port);
      (void)fclose(f);
      if (n == 1 && port > 0) {
        s->port = port;
        (void)snprintf(s->uri, sizeof s->uri, "mongodb://127.0.0.1:%d/?directConnection=true",
                       port);
        return 0;
      }
    }
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
      s->pid = 0;
      return -1;
    }
    nap_ms(5);
  }
  tu_server_stop(s);
  return -1;
}

void tu_server_stop(tu_server_t *s)
{
  char portfile[128];
  if (s->pid > 0) {
    int st;
    kill(s->pid, SIGTERM);
    uint64_t deadline = tu_now_ms() + 5000;
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
      if (tu_now_ms() > deadline) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
        break;
      }
      nap_ms(5);
    }
    s->pid = 0;
  }
  if (s->dir[0]) {
    (void)snprintf(portfile, sizeof portfile, "%s/port", s->dir);
    unlink(portfile);
    rmdir(s->dir);
    s->dir[0] = '\0';
  }
}

mongoc_client_t *tu_client(const char *uri_str)
{
  bson_error_t err;
  mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_str, &err);
  if (!uri)
    return NULL;
  mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, 20000);
  mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 2000);
  mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  mongoc_uri_set_option_as_bool(uri, MONGOC_URI_SERVERSELECTIONTRYONCE, false);
  mongoc_client_t *c = mongoc_client_new_from_uri(uri);
  mongoc_uri_destroy(uri);
  if (c)
    mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
  return c;
}

bool tu_admin(mongoc_client_t *c, const char *json)
{
  bson_error_t err;
  bson_t reply;
  bson_t *cmd = bson_new_from_json((const uint8_t *)json, -1, &err);
  if (!cmd) {
    (void)fprintf(stderr, "tu_admin: bad json %s: %s\n", json, err.message);
    return false;
  }
  bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_admin: %s: %s\n", json, err.message);
  bson_destroy(&reply);
  bson_destroy(cmd);
  return ok;
}

int64_t tu_server_stat(mongoc_client_t *c, const char *name)
{
  bson_error_t err;
  bson_t reply;
  bson_iter_t it;
  int64_t v = -1;
  bson_t *cmd = BCON_NEW("cdcacheStats", BCON_INT32(1));
  if (mongoc_client_command_simple(c, "admin", cmd, NULL, &reply, &err) &&
      bson_iter_init_find(&it, &reply, name) && BSON_ITER_HOLDS_NUMBER(&it))
    v = bson_iter_as_int64(&it);
  bson_destroy(&reply);
  bson_destroy(cmd);
  return v;
}

bool tu_insert(mongoc_client_t *c, const char *db, const char *coll, const bson_t *doc)
{
  bson_error_t err;
  mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
  bool ok = mongoc_collection_insert_one(col, doc, NULL, NULL, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_insert: %s\n", err.message);
  mongoc_collection_destroy(col);
  return ok;
}

bool tu_update_set(mongoc_client_t *c, const char *db, const char *coll, int64_t id,
                   const char *field, int64_t value)
{
  bson_error_t err;
  mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
  bson_t *sel = BCON_NEW("_id", BCON_INT64(id));
  bson_t *upd = BCON_NEW("$set", "{", field, BCON_INT64(value), "}");
  bool ok = mongoc_collection_update_one(col, sel, upd, NULL, NULL, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_update: %s\n", err.message);
  bson_destroy(sel);
  bson_destroy(upd);
  mongoc_collection_destroy(col);
  return ok;
}

bool tu_replace(mongoc_client_t *c, const char *db, const char *coll, int64_t id, int64_t value)
{
  bson_error_t err;
  mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
  bson_t *sel = BCON_NEW("_id", BCON_INT64(id));
  bson_t *rep = BCON_NEW("v", BCON_INT64(value));
  bool ok = mongoc_collection_replace_one(col, sel, rep, NULL, NULL, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_replace: %s\n", err.message);
  bson_destroy(sel);
  bson_destroy(rep);
  mongoc_collection_destroy(col);
  return ok;
}

bool tu_delete(mongoc_client_t *c, const char *db, const char *coll, int64_t id)
{
  bson_error_t err;
  mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
  bson_t *sel = BCON_NEW("_id", BCON_INT64(id));
  bool ok = mongoc_collection_delete_one(col, sel, NULL, NULL, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_delete: %s\n", err.message);
  bson_destroy(sel);
  mongoc_collection_destroy(col);
  return ok;
}

bool tu_drop(mongoc_client_t *c, const char *db, const char *coll)
{
  bson_error_t err;
  mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
  bool ok = mongoc_collection_drop(col, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_drop: %s\n", err.message);
  mongoc_collection_destroy(col);
  return ok;
}

bool tu_drop_database(mongoc_client_t *c, const char *db)
{
  bson_error_t err;
  mongoc_database_t *d = mongoc_client_get_database(c, db);
  bool ok = mongoc_database_drop(d, &err);
  if (!ok)
    (void)fprintf(stderr, "tu_drop_database: %s\n", err.message);
  mongoc_database_destroy(d);
  return ok;
}

bool tu_rename(mongoc_client_t *c, const char *db, const char *from, const char *to)
{
  char json[512];
  (void)snprintf(json, sizeof json, "{\"renameCollection\": \"%s.%s\", \"to\": \"%s.%s\"}", db,
                 from, db, to);
  return tu_admin(c, json);
}

int64_t tu_find_v(mongoc_client_t *c, const char *db, const char *coll, int64_t id)
{
  mongoc_collection_t *col = mongoc_client_get_collection(c, db, coll);
  bson_t *filter = BCON_NEW("_id", BCON_INT64(id));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
  const bson_t *doc;
  int64_t v = -1;
  bson_iter_t it;
  if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "v") &&
      BSON_ITER_HOLDS_NUMBER(&it))
    v = bson_iter_as_int64(&it);
  mongoc_cursor_destroy(cur);
  bson_destroy(filter);
  mongoc_collection_destroy(col);
  return v;
}
