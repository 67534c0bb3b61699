/*
 * cdcache-watch: subscribe a cache to a MongoDB change stream and print
 * every eviction, one line each:
 *
 *   KEY<TAB>OPERATION<TAB>NAMESPACE<TAB>LAG_MS
 *   *<TAB>flush<TAB>REASON<TAB>-
 *
 * until SIGINT or SIGTERM; then stop cleanly and print a summary to
 * stderr.  Errors go to stderr with a non-zero exit (2: usage, 1: start
 * failed).  The lines come from the subscription's eviction observer, on
 * the subscription's thread; main only waits for a signal (sigwait, with
 * the signals blocked in every thread).
 */
#include "cdcache.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
  (void)fprintf(f, "usage: cdcache-watch --uri URI [--db DB [--coll COLL]]\n"
                   "                     --rule NS=TEMPLATE [--rule ...]\n"
                   "                     [--max-stale-ms N] [--max-await-ms N]\n"
                   "                     [--verbose]\n"
                   "  NS is db.coll, db.* or *; TEMPLATE e.g. user:{_id}\n"
                   "  prints KEY<TAB>OPERATION<TAB>NAMESPACE<TAB>LAG_MS per evicted "
                   "key\n");
}

static int verbose;

static void on_log(void *ctx, int level, const char *msg)
{
  static const char *const names[] = {"error", "warning", "info", "debug"};
  if (level <= CDCACHE_LOG_WARNING || verbose)
    (void)fprintf(stderr, "cdcache-watch: %s: %s\n",
                  level >= 0 && level <= 3 ? names[level] : "log", msg);
}

static void on_evict(void *ctx, const void *key, size_t klen, const char *op, const char *ns,
                     int64_t lag_ms)
{
  if (!key) {
    (void)printf("*\tflush\t%s\t-\n", ns);
  } else {
    (void)fwrite(key, 1, klen, stdout);
    if (lag_ms >= 0)
      (void)printf("\t%s\t%s\t%lld\n", op, ns, (long long)lag_ms);
    else
      (void)printf("\t%s\t%s\t-\n", op, ns);
  }
  (void)fflush(stdout);
}

static int parse_u32(const char *s, uint32_t *out)
{
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || *end || end == s || v > UINT32_MAX)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

int main(int argc, char **argv)
{
  cdcache_cdc_config_t cfg;
  cdcache_config_t ccfg;
  cdcache_t *cache = NULL;
  cdcache_cdc_t *sub = NULL;
  cdcache_cdc_rule_t *rules;
  size_t n_rules = 0;
  sigset_t set;
  int sig = 0, rc;

  cdcache_cdc_config_init(&cfg);
  rules = calloc((size_t)argc, sizeof *rules);
  if (!rules) {
    (void)fprintf(stderr, "cdcache-watch: out of memory\n");
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      free(rules);
      return 0;
    } else if (!strcmp(a, "--verbose")) {
      verbose = 1;
      continue;
    }
    if (!v) {
      (void)fprintf(stderr, "cdcache-watch: %s needs a value\n", a);
      usage(stderr);
      free(rules);
      return 2;
    }
    i++;
    if (!strcmp(a, "--uri")) {
      cfg.uri = v;
    } else if (!strcmp(a, "--db")) {
      cfg.db = v;
    } else if (!strcmp(a, "--coll")) {
      cfg.coll = v;
    } else if (!strcmp(a, "--rule")) {
      const char *eq = strchr(v, '=');
      char err[256];
      if (!eq) {
        (void)fprintf(stderr, "cdcache-watch: --rule needs NS=TEMPLATE: %s\n", v);
        free(rules);
        return 2;
      }
      char *ns = strndup(v, (size_t)(eq - v));
      if (!ns) {
        free(rules);
        return 1;
      }
      rules[n_rules].ns = ns;
      rules[n_rules].key_template = eq + 1;
      if (cdcache_cdc_rule_check(&rules[n_rules], err, sizeof err) != 0) {
        (void)fprintf(stderr, "cdcache-watch: bad rule %s: %s\n", v, err);
        free(ns);
        for (size_t k = 0; k < n_rules; k++)
          free((char *)rules[k].ns);
        free(rules);
        return 2;
      }
      n_rules++;
    } else if (!strcmp(a, "--max-stale-ms")) {
      if (parse_u32(v, &cfg.max_stale_ms)) {
        (void)fprintf(stderr, "cdcache-watch: bad --max-stale-ms %s\n", v);
        free(rules);
        return 2;
      }
    } else if (!strcmp(a, "--max-await-ms")) {
      if (parse_u32(v, &cfg.max_await_ms)) {
        (void)fprintf(stderr, "cdcache-watch: bad --max-await-ms %s\n", v);
        free(rules);
        return 2;
      }
    } else {
      (void)fprintf(stderr, "cdcache-watch: unknown option %s\n", a);
      usage(stderr);
      free(rules);
      return 2;
    }
  }
  if (!cfg.uri || n_rules == 0) {
    (void)fprintf(stderr, "cdcache-watch: --uri and at least one --rule are "
                          "required\n");
    usage(stderr);
    for (size_t k = 0; k < n_rules; k++)
      free((char *)rules[k].ns);
    free(rules);
    return 2;
  }
  cfg.rules = rules;
  cfg.n_rules = n_rules;
  cfg.on_evict = on_evict;
  cfg.log = on_log;
  /* stdout carries the evictions: keep libmongoc's own log lines (its
   * default handler prints to stdout) out of it. */
  cfg.route_mongoc_log = 1;

  /* Block the signals before any thread exists: every thread inherits the
   * mask and main receives them with sigwait. */
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  cdcache_config_init(&ccfg);
  ccfg.max_entries = 1u << 16;
  ccfg.log = on_log;
  rc = cdcache_open(&ccfg, &cache);
  if (rc == 0)
    rc = cdcache_cdc_start(cache, &cfg, &sub);
  if (rc != 0) {
    (void)fprintf(stderr, "cdcache-watch: cannot start: %s\n", cdcache_strerror(rc));
    cdcache_close(cache);
    for (size_t k = 0; k < n_rules; k++)
      free((char *)rules[k].ns);
    free(rules);
    return 1;
  }
  (void)fprintf(stderr, "cdcache-watch: watching (SIGINT or SIGTERM stops)\n");
  while (sigwait(&set, &sig) != 0) {
  }

  cdcache_cdc_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cdcache_cdc_stats(sub, &st);
  cdcache_cdc_stop(sub);
  uint64_t flushes = 0;
  for (int r = 0; r < CDCACHE_CDC_FLUSH_REASONS; r++)
    flushes += st.flushes[r];
  (void)fprintf(stderr,
                "cdcache-watch: stopped on %s: events %llu, keys evicted %llu, "
                "flushes %llu, reconnects %llu, malformed %llu, lag p50 %llu ms "
                "p99 %llu ms over %u, state %s, resume token %s\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)st.events,
                (unsigned long long)st.keys_evicted, (unsigned long long)flushes,
                (unsigned long long)st.reconnects, (unsigned long long)st.malformed_events,
                (unsigned long long)st.lag_p50_ms, (unsigned long long)st.lag_p99_ms,
                st.lag_samples, cdcache_cdc_state_name(st.state),
                st.resume_token[0] ? st.resume_token : "-");
  cdcache_close(cache);
  for (size_t k = 0; k < n_rules; k++)
    free((char *)rules[k].ns);
  free(rules);
  return 0;
}
