/*
 * The hit path's cost in instructions (perf/hitpath-callgrind.sh runs this
 * under callgrind).  Links the shared library as users do; the keys are
 * prepared before the loop, every get hits a small cache, and only
 * hit_loop() is measured (callgrind --toggle-collect=hit_loop).
 */
#include <cdcache.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 256

static char keys[NKEYS][24];
static size_t klens[NKEYS];

__attribute__((noinline)) static unsigned long hit_loop(cdcache_t *c, unsigned long gets)
{
  char buf[64];
  size_t n;
  unsigned long hits = 0;
  for (unsigned long i = 0; i < gets; i++) {
    unsigned k = (unsigned)(i % NKEYS);
    hits += cdcache_get(c, keys[k], klens[k], buf, sizeof buf, &n) == 0;
  }
  return hits;
}

int main(int argc, char **argv)
{
  unsigned long gets = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 4096;
  /* The policy (cdcache_policy_t's number; default allkeys-lru). */
  cfg.policy = (cdcache_policy_t)(argc > 2 ? atoi(argv[2]) : CDCACHE_ALLKEYS_LRU);
  cdcache_t *c;
  if (cdcache_open(&cfg, &c) != 0)
    return 1;
  for (unsigned i = 0; i < NKEYS; i++) {
    klens[i] = (size_t)snprintf(keys[i], sizeof keys[i], "user:%08u", i * 7919u);
    if (cdcache_put(c, keys[i], klens[i], "value-0123456789", 16, CDCACHE_TTL_NONE) != 0)
      return 1;
  }
  unsigned long hits = hit_loop(c, gets);
  cdcache_close(c);
  if (hits != gets) {
    fprintf(stderr, "hitpath: %lu of %lu gets hit\n", hits, gets);
    return 1;
  }
  printf("gets %lu\n", gets);
  return 0;
}
