/*
 * Hostile keys: keys chosen to share one bucket under an unseeded hash
 * spread out under the cache's secret, and the chain-length tripwire
 * counts and logs the chains that do grow long.
 */
#include "testutil.h"

#include "cache.h"
#include "hash.h"
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 1024 /* one shard of 2048 entries: 1024 buckets */
#define NHOSTILE 200

static uint64_t longest_chain(cdcache_t *c)
{
  const struct cdcache__shard *s = &c->shards[0];
  uint64_t worst = 0;
  for (uint64_t b = 0; b <= s->mask; b++) {
    uint64_t n = 0;
    for (struct cdcache__entry *e = cdcache__bucket_first(atomic_load(&s->buckets[b])); e != NULL;
         e = atomic_load(&e->next))
      n++;
    if (n > worst)
      worst = n;
  }
  return worst;
}

/* Keys that all land in bucket 0 under plain, unseeded XXH3-64: what an
 * attacker computes offline when the hash is the same in every process. */
static int unseeded_collisions(char keys[][64], int want)
{
  int found = 0;
  for (unsigned i = 0; found < want && i < 50000000u; i++) {
    char k[64];
    int kl = snprintf(k, sizeof k, "session-%u", i);
    if ((XXH3_64bits(k, (size_t)kl) & (NBUCKETS - 1)) == 0)
      memcpy(keys[found++], k, (size_t)kl + 1);
  }
  return found;
}

static void test_keys_colliding_unseeded_spread_out_under_the_secret(void)
{
  static char keys[NHOSTILE][64];
  CU_ASSERT_EQUAL_FATAL(unseeded_collisions(keys, NHOSTILE), NHOSTILE);
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 2 * NBUCKETS;
  cfg.shards = 1;
  cdcache_t *c = test_open(&cfg);
  CU_ASSERT_EQUAL_FATAL(c->shards[0].mask, NBUCKETS - 1);
  for (int i = 0; i < NHOSTILE; i++)
    CU_ASSERT_EQUAL(cdcache_put(c, keys[i], strlen(keys[i]), "v", 1, CDCACHE_TTL_NONE), 0);
  uint64_t worst = longest_chain(c);
  printf("\n  %d keys sharing a bucket unseeded: longest chain %llu\n", NHOSTILE,
         (unsigned long long)worst);
  /* 200 random keys in 1024 buckets: a chain of 8 has odds below 1e-8. */
  CU_ASSERT(worst <= 8);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.long_chains, 0);
  /* Two caches draw different secrets. */
  cdcache_t *c2 = test_open(&cfg);
  CU_ASSERT(memcmp(c->secret, c2->secret, sizeof c->secret) != 0);
  cdcache_close(c2);
  cdcache_close(c);
}

struct logbook {
  int warnings;
  char last[512];
};

static void log_cb(void *ctx, int level, const char *msg)
{
  struct logbook *lb = ctx;
  if (level == CDCACHE_LOG_WARNING) {
    lb->warnings++;
    snprintf(lb->last, sizeof lb->last, "%s", msg);
  }
}

static void test_the_chain_tripwire_counts_and_logs_long_chains(void)
{
  static struct test_clock clk;
  static struct logbook lb;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 2 * NBUCKETS;
  cfg.shards = 1;
  cfg.log = log_cb;
  cfg.log_ctx = &lb;
  atomic_store(&clk.now_ms, 1000000);
  test_clock_install(&cfg, &clk);
  cdcache_t *c = test_open(&cfg);
  /* The attacker who knows this cache's secret (only this test does). */
  enum { N = 3 * CDCACHE_CHAIN_TRIPWIRE };
  static char keys[N][64];
  int found = 0;
  for (unsigned i = 0; found < N && i < 50000000u; i++) {
    int kl = snprintf(keys[found], sizeof keys[found], "k%u", i);
    if ((cdcache__hash(c->secret, keys[found], (size_t)kl) & (NBUCKETS - 1)) == 7)
      found++;
  }
  CU_ASSERT_EQUAL_FATAL(found, N);
  for (int i = 0; i < N; i++)
    CU_ASSERT_EQUAL(cdcache_put(c, keys[i], strlen(keys[i]), "v", 1, CDCACHE_TTL_NONE), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  /* Every insert past the tripwire length found a long chain. */
  CU_ASSERT_EQUAL(st.long_chains, (uint64_t)(N - CDCACHE_CHAIN_TRIPWIRE));
  /* Logged, but at most once per interval of the cache clock. */
  CU_ASSERT_EQUAL(lb.warnings, 1);
  CU_ASSERT(strstr(lb.last, "chain") != NULL);
  atomic_fetch_add(&clk.now_ms, CDCACHE__CHAIN_LOG_INTERVAL_MS);
  CU_ASSERT_EQUAL(cdcache_delete(c, keys[0], strlen(keys[0])), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, keys[0], strlen(keys[0]), "v", 1, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(lb.warnings, 2);
  /* Every key is still served (a long chain costs time, never answers). */
  char buf[4];
  size_t n;
  for (int i = 0; i < N; i++)
    CU_ASSERT_EQUAL(cdcache_get(c, keys[i], strlen(keys[i]), buf, sizeof buf, &n), 0);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("hash", NULL, NULL);
  CU_add_test(s, "keys colliding unseeded spread out under the secret",
              test_keys_colliding_unseeded_spread_out_under_the_secret);
  CU_add_test(s, "the chain tripwire counts and logs long chains",
              test_the_chain_tripwire_counts_and_logs_long_chains);
  return test_run();
}
