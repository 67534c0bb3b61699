/*
 * Helpers for the CDC end-to-end tests: the test server as a child
 * process, a writer client, fault commands, and bounded polling.
 */
#ifndef CDC_TESTUTIL_H
#define CDC_TESTUTIL_H

#include <cdcache.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tu_server {
  pid_t pid;
  int port;
  char dir[64];
  char uri[256];
} tu_server_t;

/* Starts path --port 0 --port-file F --quiet [--oplog-size N]; waits (at
 * most 10 s) for the port.  Returns 0 or -1. */
int tu_server_start(const char *path, int oplog_size, tu_server_t *s);
/* The same with extra arguments (NULL-terminated; NULL: none), e.g.
 * {"--hello-pad", "1300", NULL}. */
int tu_server_start_args(const char *path, int oplog_size, const char *const *extra,
                         tu_server_t *s);
/* SIGTERM, then SIGKILL after 5 s; reaps the child. */
void tu_server_stop(tu_server_t *s);

/* A client for the test's own writes: directConnection, short timeouts. */
mongoc_client_t *tu_client(const char *uri);

/* Runs a command on db "admin" (faults, renames); returns true on ok:1. */
bool tu_admin(mongoc_client_t *c, const char *json);
/* One counter of the test server's cdcacheStats (repliesCut, errorsSent,
 * connectionsDropped, ...); -1 when the command fails. */
int64_t tu_server_stat(mongoc_client_t *c, const char *name);
bool tu_insert(mongoc_client_t *c, const char *db, const char *coll, const bson_t *doc);
bool tu_update_set(mongoc_client_t *c, const char *db, const char *coll, int64_t id,
                   const char *field, int64_t value);
bool tu_replace(mongoc_client_t *c, const char *db, const char *coll, int64_t id, int64_t value);
bool tu_delete(mongoc_client_t *c, const char *db, const char *coll, int64_t id);
bool tu_drop(mongoc_client_t *c, const char *db, const char *coll);
bool tu_drop_database(mongoc_client_t *c, const char *db);
bool tu_rename(mongoc_client_t *c, const char *db, const char *from, const char *to);
/* Reads {_id: id}'s field "v" (int); -1 when absent. */
int64_t tu_find_v(mongoc_client_t *c, const char *db, const char *coll, int64_t id);

uint64_t tu_now_ms(void);
/* A loopback port free a moment ago (bound, then closed); -1 on error. */
int tu_free_port(void);
/* The subscription's stats (struct_size set). */
cdcache_cdc_stats_t tu_stats(cdcache_cdc_t *sub);
/* Polls pred every 2 ms until it holds or timeout_ms passed. */
bool tu_wait(bool (*pred)(void *), void *ctx, uint32_t timeout_ms);

#endif
