/*
 * cdcache-splitproxy: the splitproxy library as a program, for trying a
 * client against a server whose replies arrive in pieces.
 *
 *   cdcache-splitproxy --to PORT [--port N] [--match TEXT] [--nth N]
 *                      [--cuts A,B,...] [--random SEED] [--pause MS]
 *                      [--withhold N] [--hold MS] [--then deliver|close|silent]
 *
 * Listens on 127.0.0.1:N (default: a free port, printed on stdout) and
 * forwards to 127.0.0.1:PORT until SIGINT or SIGTERM.  Without --cuts or
 * --random every reply passes whole.
 */
#include "splitproxy.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
  (void)sig;
  g_stop = 1;
}

static void usage(void)
{
  (void)fprintf(stderr, "usage: cdcache-splitproxy --to PORT [--port N] [--match TEXT] [--nth N]\n"
                        "         [--cuts A,B,...] [--random SEED] [--pause MS]\n"
                        "         [--withhold N] [--hold MS] [--then deliver|close|silent]\n");
}

static bool num(const char *s, unsigned long max, unsigned long *out)
{
  char *end;
  unsigned long v = strtoul(s, &end, 10);
  if (!*s || *end || v > max)
    return false;
  *out = v;
  return true;
}

int main(int argc, char **argv)
{
  sp_rule_t r;
  unsigned long to = 0, port = 0, v = 0, seed = 0;
  bool any = false;
  memset(&r, 0, sizeof r);
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *val = argv[i + 1];
    // NOLINTNEXTLINE(bugprone-branch-clone): each option only parses its value
    if ((!strcmp(a, "--to") && num(val, 65535, &to)) ||
        (!strcmp(a, "--port") && num(val, 65535, &port))) {
      continue;
    } else if (!strcmp(a, "--match")) {
      r.match = val;
    } else if (!strcmp(a, "--nth") && num(val, 1000000, &v)) {
      r.nth = (unsigned)v;
    } else if (!strcmp(a, "--withhold") && num(val, 1ul << 30, &v)) {
      r.withhold = v;
      any = true;
    } else if (!strcmp(a, "--hold") && num(val, 600000, &v)) {
      r.hold_ms = (unsigned)v;
    } else if (!strcmp(a, "--pause") && num(val, 600000, &v)) {
      r.pause_ms = (unsigned)v;
    } else if (!strcmp(a, "--random") && num(val, ~0ul, &seed)) {
      r.random = 1;
      any = true;
    } else if (!strcmp(a, "--then") && !strcmp(val, "close")) {
      r.after = SP_CLOSE;
      any = true;
    } else if (!strcmp(a, "--then") && !strcmp(val, "silent")) {
      r.after = SP_SILENT;
      any = true;
    } else if (!strcmp(a, "--then") && !strcmp(val, "deliver")) {
      r.after = SP_DELIVER;
    } else if (!strcmp(a, "--cuts")) {
      char *copy = strdup(val), *save = NULL;
      for (char *t = strtok_r(copy, ",", &save); t && r.ncuts < SP_MAX_CUTS;
           t = strtok_r(NULL, ",", &save)) {
        if (!num(t, 1ul << 30, &v)) {
          free(copy);
          usage();
          return 2;
        }
        r.cuts[r.ncuts++] = v;
      }
      free(copy);
      any = true;
    } else {
      usage();
      return 2;
    }
  }
  if (argc % 2 == 0 || to == 0) {
    usage();
    return 2;
  }
  sp_proxy_t *p;
  if (sp_start((int)port, (int)to, any ? &r : NULL, seed, &p) != 0) {
    perror("cdcache-splitproxy");
    return 1;
  }
  (void)printf("%d\n", sp_port(p));
  (void)fflush(stdout);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  while (!g_stop)
    pause();
  sp_stats_t st;
  sp_stats(p, &st);
  (void)fprintf(stderr, "cdcache-splitproxy: %llu connections, %llu replies, %llu split\n",
                (unsigned long long)st.connections, (unsigned long long)st.replies,
                (unsigned long long)st.split);
  sp_stop(p);
  return 0;
}
