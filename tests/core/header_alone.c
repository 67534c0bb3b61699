/* The public header compiles on its own, with nothing included before it. */
#include <cdcache.h>

int main(void)
{
  cdcache_config_t cfg = {0};
  cdcache_stats_t st = {0};
  cdcache_policy_t p = CDCACHE_VOLATILE_LRU;
  return (int)(cfg.max_entries + st.hits) + (p == CDCACHE_VOLATILE_LRU ? 0 : 1) +
         (CDCACHE_ENOENT < 0 ? 0 : 1);
}
