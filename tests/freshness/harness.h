/*
 * Process harness shared by cdcache-freshness and cdcache-soak: a
 * monotonic clock common to every process of the host, starting and
 * stopping cdcache-mongo-test-server, a registry of child processes that
 * are killed on every exit path (normal return, error, SIGINT/SIGTERM,
 * and a SIGALRM watchdog that bounds the whole run), and a few libmongoc
 * helpers (admin commands with retry across dropped connections).
 *
 * Only the process's main thread calls the registry functions; the
 * signal handler reads the registry (see harness.c for why that is safe).
 */
#ifndef CDCACHE_TEST_HARNESS_H
#define CDCACHE_TEST_HARNESS_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC in ns / ms: one clock for every process on the host, so
 * times taken in different processes compare directly. */
uint64_t h_now_ns(void);
uint64_t h_now_ms(void);
/* Sleeps ms (restarting after signals). */
void h_sleep_ms(uint64_t ms);

/* The wire-protocol test server, running as a child process. */
typedef struct h_server {
  pid_t pid; /* 0 when not running */
  int port;
  char dir[64];  /* private temp dir holding the port file */
  char uri[128]; /* mongodb://127.0.0.1:PORT/?replicaSet=rs0 */
} h_server_t;

/* Starts PATH --port 0 --port-file DIR/port --oplog-size N --quiet and
 * waits (up to 10 s) for the port.  Registers the child.  0 or -1. */
int h_server_start(const char *path, long oplog_size, h_server_t *s);
/* SIGTERM, wait up to 5 s, then SIGKILL; removes the port file.  Returns
 * the server's exit status as waitpid reported it (or -1). */
int h_server_stop(h_server_t *s);

/* Locates the test server: `explicit_path` if set, else the environment
 * variable CDCACHE_MONGO_TEST_SERVER, else ../mongo-server/ next to this
 * executable.  Returns a static buffer or NULL. */
const char *h_find_server(const char *explicit_path);

/* Child registry: every child the run creates.  h_install_cleanup()
 * installs SIGINT/SIGTERM/SIGALRM handlers that SIGKILL every registered
 * child and _exit(3), an atexit hook that does the same, and arms a
 * watchdog of watchdog_s seconds (0: none).  Call in the main thread. */
void h_install_cleanup(unsigned watchdog_s);
void h_child_add(pid_t pid);
void h_child_forget(pid_t pid);
/* In a freshly forked child: forget the parent's registry and handlers,
 * die with the parent (PR_SET_PDEATHSIG), and arm its own watchdog. */
void h_in_child(unsigned watchdog_s);
/* Waits for pid up to timeout_ms, then SIGKILLs it.  Returns the status
 * (as waitpid) or -1; forgets the child. */
int h_wait_child(pid_t pid, uint64_t timeout_ms);

/* A client for uri with the given socket/connect/server-selection
 * timeouts (ms), error API v2, and the given appname. */
mongoc_client_t *h_client(const char *uri, int socket_ms, int select_ms, const char *appname);
/* Runs cmd (a JSON text) on "admin"; retries up to 5 times across network
 * errors (a dropConnections fault closes the sender too).  Copies the
 * reply into *reply when not NULL (caller destroys).  true on ok:1. */
bool h_admin(mongoc_client_t *c, const char *json, bson_t *reply, char *err, size_t errcap);

#endif
