// The public header compiles on its own as C++, with nothing included before it.
#include <cdcache.h>

int main()
{
  cdcache_config_t cfg = cdcache_config_t();
  cdcache_stats_t st = cdcache_stats_t();
  cdcache_policy_t p = CDCACHE_NOEVICTION;
  return static_cast<int>(cfg.max_entries + st.hits) + (p == CDCACHE_NOEVICTION ? 0 : 1);
}
