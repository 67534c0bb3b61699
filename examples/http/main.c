/*
 * cdcache-http-example: a web service that embeds cdcache.
 *
 * GET /users/{id} reads through the cache (cdcache_get_or_load, loads from
 * MongoDB through a client pool); PUT and DELETE write MongoDB only; the
 * cache's CDC subscription evicts what every write changed, on every
 * instance.  service.c has the routes and HTTP caching, store.c the
 * MongoDB side, metrics.c the /metrics page.  This file: flags, start-up
 * in dependency order, and on SIGINT/SIGTERM a drain (requests in flight
 * answered, for at most --shutdown-grace seconds), then shutdown in
 * reverse order.
 */
#include "service.h"

#include <getopt.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int verbose;

static void usage(FILE *f)
{
  fprintf(f, "usage: cdcache-http-example [options]\n"
             "  --port N             TCP port (default 8080; 0 picks a free one)\n"
             "  --bind ADDR          IPv4 address to listen on (default 127.0.0.1)\n"
             "  --mongodb-uri URI    MongoDB replica set (default "
             "mongodb://127.0.0.1:27017/?replicaSet=rs0)\n"
             "  --db NAME            database (default app)\n"
             "  --coll NAME          collection (default users)\n"
             "  --max-entries N      cache capacity (default 100000)\n"
             "  --max-stale-ms N     fail closed after N ms without the change stream (default "
             "5000)\n"
             "  --no-cache           every read goes to MongoDB (for comparison)\n"
             "  --threads N          HTTP worker threads (default 4)\n"
             "  --conn-timeout S     close connections idle for S seconds (default 10)\n"
             "  --max-connections N  refuse connections beyond N (default 1024)\n"
             "  --max-connections-per-ip N\n"
             "                       close connections from one address beyond N (default 64;\n"
             "                       0: no limit, e.g. behind a proxy)\n"
             "  --shutdown-grace S   on SIGTERM, wait up to S seconds for requests in flight\n"
             "                       (default 5)\n"
             "  --max-body BYTES     longest PUT body (default 65536)\n"
             "  --port-file PATH     write the port there once listening\n"
             "  --verbose            log cdcache's and libmongoc's informational messages\n");
}

/* Numeric flag in [lo, hi], or exit 2. */
static unsigned long long num(const char *flag, const char *v, unsigned long long lo,
                              unsigned long long hi)
{
  char *end;
  unsigned long long x = strtoull(v, &end, 10);
  if (*v == '\0' || *end != '\0' || v[0] == '-' || x < lo || x > hi) {
    fprintf(stderr, "cdcache-http-example: %s: expected a number in %llu..%llu, got '%s'\n", flag,
            lo, hi, v);
    exit(2);
  }
  return x;
}

static void log_cb(void *ctx, int level, const char *msg)
{
  if (level <= CDCACHE_LOG_WARNING || verbose)
    fprintf(stderr, "cdcache-http-example: cdcache: %s\n", msg);
}

static void mongoc_log_cb(mongoc_log_level_t level, const char *domain, const char *msg, void *ctx)
{
  if (level <= MONGOC_LOG_LEVEL_WARNING || (verbose && level <= MONGOC_LOG_LEVEL_INFO))
    fprintf(stderr, "cdcache-http-example: %s: %s\n", domain, msg);
}

static int write_port_file(const char *path, unsigned port)
{
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%u\n", port);
  if (fclose(f) != 0)
    return -1;
  return rename(tmp, path);
}

int main(int argc, char **argv)
{
  const char *uri = "mongodb://127.0.0.1:27017/?replicaSet=rs0", *db = "app", *coll = "users";
  const char *port_file = NULL;
  uint64_t max_entries = 100000;
  uint32_t max_stale_ms = 5000;
  int no_cache = 0;
  service_config_t sc = {.bind = "127.0.0.1",
                         .port = 8080,
                         .threads = 4,
                         .conn_timeout_s = 10,
                         .max_connections = 1024,
                         .max_conn_per_ip = 64,
                         .max_body = 65536};
  unsigned grace_s = 5;
  enum {
    O_PORT = 256,
    O_BIND,
    O_URI,
    O_DB,
    O_COLL,
    O_ENTRIES,
    O_STALE,
    O_NOCACHE,
    O_THREADS,
    O_CTIMEOUT,
    O_MAXCONN,
    O_PERIP,
    O_GRACE,
    O_MAXBODY,
    O_PORTFILE,
    O_VERBOSE,
    O_HELP
  };
  static const struct option opts[] = {{"port", required_argument, NULL, O_PORT},
                                       {"bind", required_argument, NULL, O_BIND},
                                       {"mongodb-uri", required_argument, NULL, O_URI},
                                       {"db", required_argument, NULL, O_DB},
                                       {"coll", required_argument, NULL, O_COLL},
                                       {"max-entries", required_argument, NULL, O_ENTRIES},
                                       {"max-stale-ms", required_argument, NULL, O_STALE},
                                       {"no-cache", no_argument, NULL, O_NOCACHE},
                                       {"threads", required_argument, NULL, O_THREADS},
                                       {"conn-timeout", required_argument, NULL, O_CTIMEOUT},
                                       {"max-connections", required_argument, NULL, O_MAXCONN},
                                       {"max-connections-per-ip", required_argument, NULL, O_PERIP},
                                       {"shutdown-grace", required_argument, NULL, O_GRACE},
                                       {"max-body", required_argument, NULL, O_MAXBODY},
                                       {"port-file", required_argument, NULL, O_PORTFILE},
                                       {"verbose", no_argument, NULL, O_VERBOSE},
                                       {"help", no_argument, NULL, O_HELP},
                                       {NULL, 0, NULL, 0}};
  for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    switch (o) {
    case O_PORT:
      sc.port = (uint16_t)num("--port", optarg, 0, 65535);
      break;
    case O_BIND:
      sc.bind = optarg;
      break;
    case O_URI:
      uri = optarg;
      break;
    case O_DB:
      db = optarg;
      break;
    case O_COLL:
      coll = optarg;
      break;
    case O_ENTRIES:
      max_entries = num("--max-entries", optarg, 1, UINT32_MAX);
      break;
    case O_STALE:
      max_stale_ms = (uint32_t)num("--max-stale-ms", optarg, 0, 86400000);
      break;
    case O_NOCACHE:
      no_cache = 1;
      break;
    case O_THREADS:
      sc.threads = (unsigned)num("--threads", optarg, 1, 256);
      break;
    case O_CTIMEOUT:
      sc.conn_timeout_s = (unsigned)num("--conn-timeout", optarg, 1, 3600);
      break;
    case O_MAXCONN:
      sc.max_connections = (unsigned)num("--max-connections", optarg, 1, 65536);
      break;
    case O_PERIP:
      sc.max_conn_per_ip = (unsigned)num("--max-connections-per-ip", optarg, 0, 65536);
      break;
    case O_GRACE:
      grace_s = (unsigned)num("--shutdown-grace", optarg, 0, 3600);
      break;
    case O_MAXBODY:
      sc.max_body = (size_t)num("--max-body", optarg, 1, 16u << 20);
      break;
    case O_PORTFILE:
      port_file = optarg;
      break;
    case O_VERBOSE:
      verbose = 1;
      break;
    case O_HELP:
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return 2;
  }

  /* SIGINT and SIGTERM are taken by sigwait below; blocked before any
   * thread starts, so every thread inherits the mask. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);

  mongoc_init();
  mongoc_log_set_handler(mongoc_log_cb, NULL);
  int status = 1;
  char err[512];
  service_t s = {0};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  sc.max_key_len = cfg.max_key_len;
  if (store_open(uri, db, coll, sc.threads, &s.store, err, sizeof err) != 0) {
    fprintf(stderr, "cdcache-http-example: %s\n", err);
    goto out;
  }
  if (!no_cache) {
    cfg.max_entries = max_entries;
    cfg.max_value_len = 16u << 20; /* MongoDB's document limit */
    cfg.log = log_cb;
    int rc = cdcache_open(&cfg, &s.cache);
    if (rc != 0) {
      fprintf(stderr, "cdcache-http-example: cdcache_open: %s\n", cdcache_strerror(rc));
      goto out;
    }
    /* One rule: a change to db.coll evicts the key "{_id}", the URL id. */
    char ns[512];
    snprintf(ns, sizeof ns, "%s.%s", db, coll);
    cdcache_cdc_rule_t rule = {ns, "{_id}"};
    cdcache_cdc_config_t cc;
    cdcache_cdc_config_init(&cc);
    cc.uri = uri;
    cc.db = db;
    cc.coll = coll;
    cc.rules = &rule;
    cc.n_rules = 1;
    cc.max_stale_ms = max_stale_ms;
    rc = cdcache_cdc_start(s.cache, &cc, &s.sub);
    if (rc != 0) {
      fprintf(stderr, "cdcache-http-example: cdcache_cdc_start: %s\n", cdcache_strerror(rc));
      goto out;
    }
  }
  if (service_start(&s, &sc, err, sizeof err) != 0) {
    fprintf(stderr, "cdcache-http-example: %s\n", err);
    goto out;
  }
  unsigned port = service_port(&s);
  if (port_file != NULL && write_port_file(port_file, port) != 0) {
    fprintf(stderr, "cdcache-http-example: cannot write %s\n", port_file);
    goto out;
  }
  fprintf(stderr, "cdcache-http-example: listening on %s:%u (%s, %u threads)\n", sc.bind, port,
          no_cache ? "no cache" : "cache kept fresh by the change stream", sc.threads);

  int sig;
  sigwait(&sigs, &sig);
  status = 0;
  /* Drain: /healthz turns 503 (the load balancer routes elsewhere);
   * the connections already in the accept queue are taken (a worker busy
   * with a slow request may not have accepted them yet), then no new
   * connection is; the requests in flight get their answers.  All within
   * grace_s seconds; a second signal cuts it short. */
  service_drain_begin(&s);
  struct timespec now, end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_sec += (time_t)grace_s;
  bool accepting = true;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    bool late = now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec);
    if (accepting && (late || service_backlog(&s) == 0)) {
      service_stop_accepting(&s);
      accepting = false;
    }
    unsigned left = service_pending(&s);
    if (!accepting && left == 0)
      break;
    if (late) {
      fprintf(stderr,
              "cdcache-http-example: %u requests or new connections still pending after "
              "%u s: closing\n",
              left, grace_s);
      break;
    }
    const struct timespec tick = {.tv_nsec = 10 * 1000 * 1000};
    if (sigtimedwait(&sigs, NULL, &tick) >= 0)
      break;
  }
out:
  service_stop(&s);
  cdcache_cdc_stop(s.sub);
  cdcache_close(s.cache);
  store_close(s.store);
  mongoc_cleanup();
  return status;
}
