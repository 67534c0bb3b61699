/*
 * cdcache-example: the README's usage example, runnable.  Cache-aside
 * reads through cdcache_get_or_load from a pretend database, a write that
 * invalidates, and the stats.
 */
#include <cdcache.h>

#include <stdio.h>
#include <string.h>

/* The "database": one row per user id. */
static char db_name[64] = "Ada";
static int db_reads;

static int load_user(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  (void)ctx;
  (void)key;
  (void)klen;
  db_reads++;
  return cdcache_fill_set_value(fill, db_name, strlen(db_name));
}

int main(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100000;
  cfg.default_ttl_ms = 60000; /* a safety net; invalidation keeps it fresh */
  cdcache_t *cache;
  int rc = cdcache_open(&cfg, &cache);
  if (rc != 0) {
    fprintf(stderr, "cdcache_open: %s\n", cdcache_strerror(rc));
    return 1;
  }
  char buf[64];
  size_t n;
  for (int i = 0; i < 3; i++) {
    rc = cdcache_get_or_load(cache, "user:42", 7, load_user, NULL, CDCACHE_TTL_DEFAULT, 1000, buf,
                             sizeof buf, &n);
    printf("read %d: %s (%.*s)\n", i, cdcache_strerror(rc), (int)n, buf);
  }
  /* A write: update the row, then invalidate (the CDC subscription does
   * this for you from the change stream). */
  strcpy(db_name, "Ada Lovelace");
  cdcache_invalidate(cache, "user:42", 7);
  rc = cdcache_get_or_load(cache, "user:42", 7, load_user, NULL, CDCACHE_TTL_DEFAULT, 1000, buf,
                           sizeof buf, &n);
  printf("after write: %s (%.*s)\n", cdcache_strerror(rc), (int)n, buf);

  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(cache, &st);
  printf("database reads %d; cache hits %llu, misses %llu, loads %llu, entries %llu\n", db_reads,
         (unsigned long long)st.hits, (unsigned long long)st.misses, (unsigned long long)st.loads,
         (unsigned long long)st.entries);
  cdcache_close(cache);
  return db_reads == 2 ? 0 : 1;
}
