/* A program built against an installed cdcache, as a user would. */
#include <cdcache.h>

#include <stdio.h>

int main(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 10;
  cdcache_t *c;
  if (cdcache_open(&cfg, &c) != 0)
    return 1;
  char v[4];
  size_t n;
  int ok = cdcache_put(c, "k", 1, "v", 1, 0) == 0 && cdcache_get(c, "k", 1, v, sizeof v, &n) == 0 &&
           n == 1 && v[0] == 'v';
  cdcache_close(c);
  puts(ok ? "consumer: ok" : "consumer: FAILED");
  return ok ? 0 : 1;
}
