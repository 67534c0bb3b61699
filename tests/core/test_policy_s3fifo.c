/*
 * The s3fifo policies (allkeys-s3fifo, volatile-s3fifo): what they promise
 * beyond the lru ones, each shown against allkeys-lru on the same input,
 * and the bounds every policy keeps (capacity, max_bytes at the
 * allocator's peak, TTL, fills, flush).  The main FIFO's hand is watched
 * (and, for the last resort, overtaken) through cdcache__s3_hand_hook, in
 * the assertion build the suites link; the sketch and the ghost are also
 * checked alone against their claims.  tests/mutants/run.sh holds the
 * broken variants each of these must catch.  Under concurrent readers:
 * test_eviction.c and test_concurrency.c run allkeys-s3fifo too.
 */
#include "testutil.h"

#include "shard.h"

#include <stdio.h>
#include <string.h>

/* The shared helpers (testutil.c) under this suite's short names. */
#define put_i test_put_int
#define has_i test_has_int
#define open_policy test_open_policy

/* Cache-aside, as an application reads: get, and put on a miss. */
static int read_through(cdcache_t *c, int i)
{
  if (has_i(c, i))
    return 1;
  CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  return 0;
}

/*
 * A working set of 200 keys, each read a few times, then one pass over
 * 5,000 keys never seen again (a report, a backup, a crawler) through a
 * cache of 1,000.  How many of the 200 are still there afterwards?
 */
static int hot_left_after_scan(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 1000, 1);
  for (int i = 0; i < 200; i++)
    read_through(c, i);
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < 200; i++)
      CU_ASSERT_TRUE(has_i(c, i));
  for (int i = 0; i < 5000; i++)
    CU_ASSERT_FALSE(read_through(c, 100000 + i));
  int left = 0;
  for (int i = 0; i < 200; i++)
    left += has_i(c, i);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 1000);
  cdcache_close(c);
  return left;
}

static void test_scan_does_not_evict_the_hot_set(void)
{
  int s3 = hot_left_after_scan(CDCACHE_ALLKEYS_S3FIFO);
  int lru = hot_left_after_scan(CDCACHE_ALLKEYS_LRU);
  /* Every hot key survives the scan, give or take the odd false ghost hit
   * (the hash, so the Bloom ghost, is keyed per cache) winning a duel. */
  CU_ASSERT(s3 >= 190);
  CU_ASSERT_EQUAL(lru, 0); /* LRU order: the scan pushes them all out */
}

/*
 * A key read every 250 requests while a stream of one-hit keys goes
 * through a cache of 100: how many of its 40 reads hit?
 */
static int hot_hits_among_one_hit_keys(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 100, 1);
  int hits = 0, next = 1000;
  read_through(c, 0);
  CU_ASSERT_TRUE(has_i(c, 0));
  for (int round = 0; round < 40; round++) {
    for (int i = 0; i < 250; i++)
      CU_ASSERT_FALSE(read_through(c, next++));
    hits += read_through(c, 0);
  }
  cdcache_close(c);
  return hits;
}

static void test_often_read_key_survives_one_hit_stream(void)
{
  int s3 = hot_hits_among_one_hit_keys(CDCACHE_ALLKEYS_S3FIFO);
  int lru = hot_hits_among_one_hit_keys(CDCACHE_ALLKEYS_LRU);
  CU_ASSERT(s3 >= 36); /* all, give or take a false ghost hit's duel */
  /* CLOCK forgets a key not read within two laps of the hand (200
   * inserts here): every read misses, and the key starts over. */
  CU_ASSERT_EQUAL(lru, 0);
}

/* A key evicted from the small FIFO and asked for again soon comes back
 * (the ghost remembers it) into the main FIFO: does it survive the next
 * 100 new keys (in S it would be gone after about 15)? */
static int ghost_readmits(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 100, 1);
  /* 0..99 fill the cache; 100..199 push 0 out of S before it is read. */
  for (int i = 0; i < 200; i++)
    read_through(c, i);
  CU_ASSERT_FALSE(has_i(c, 0));
  CU_ASSERT_FALSE(read_through(c, 0)); /* a miss: put again, now into M */
  for (int i = 0; i < 100; i++)
    read_through(c, 10000 + i);
  int kept = has_i(c, 0);
  cdcache_close(c);
  return kept;
}

static void test_ghost_readmits_a_key_dropped_too_early(void)
{
  /* The hash is keyed per cache, so each cache's Bloom ghost and sketch
   * collide differently: now and then a newcomer's false ghost hit with
   * an inflated count wins the duel against the key (about 1 cache in
   * 20).  Twenty caches: nearly all keep it; under LRU none does. */
  int s3 = 0, lru = 0;
  for (int i = 0; i < 20; i++) {
    s3 += ghost_readmits(CDCACHE_ALLKEYS_S3FIFO);
    lru += ghost_readmits(CDCACHE_ALLKEYS_LRU);
  }
  CU_ASSERT(s3 >= 15);
  CU_ASSERT_EQUAL(lru, 0);
}

/* ------------------------------------------------ the main FIFO's hand */

/* What the main FIFO's hand saw (cdcache__s3_hand_hook): per step, the
 * number of the key ("key<i>") it stood on and the count it read. */
#define HAND_LOG 65536
static struct {
  int key[HAND_LOG];
  unsigned ref[HAND_LOG];
  int n;
} hand;

static int entry_number(const struct cdcache__entry *e)
{
  const unsigned char *k = cdcache__entry_key(e);
  int v = 0;
  if (e->klen < 4 || memcmp(k, "key", 3) != 0)
    return -1;
  for (size_t i = 3; i < e->klen; i++)
    v = v * 10 + (k[i] - '0');
  return v;
}

static void log_step(struct cdcache__entry *e)
{
  if (hand.n < HAND_LOG) {
    hand.key[hand.n] = entry_number(e);
    hand.ref[hand.n] = atomic_load_explicit(&e->ref, memory_order_relaxed);
    hand.n++;
  }
}

/* The counts the hand read on key i's entry, in order, as digits
 * ("3210": three more laps, then evicted); at most cap - 1 of them. */
static void counts_seen(int i, char *out, size_t cap)
{
  size_t n = 0;
  for (int s = 0; s < hand.n && n + 1 < cap; s++)
    if (hand.key[s] == i)
      out[n++] = (char)('0' + hand.ref[s]);
  out[n] = '\0';
}

/* A key loaded on a miss and read once more soon after, as most keys of a
 * cache-aside workload are: S gives it up to M (it was hit), so in the
 * steady state each such put moves one key from S to M and M's hand
 * evicts one.  The ghost stays empty: nothing leaves S unread. */
static void load_and_read(cdcache_t *c, int i)
{
  CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_TRUE(has_i(c, i));
}

/*
 * Ten keys read once more and ten read five more times once they are in
 * M (a cache of 100: M holds 85): M's hand gives the first ten one more
 * lap and the others three (the count saturates at 3), lowering the count
 * each time, and evicts each when it finds the count at 0.
 */
static void test_each_hit_up_to_three_buys_another_lap_of_the_main_hand(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 100, 1);
  int next = 1000;
  for (int i = 0; i < 300; i++)
    load_and_read(c, next++);
  for (int i = 0; i < 20; i++)
    load_and_read(c, i);
  /* 50 puts later the 20 have left S for M's tail, count cleared, and
   * M's hand, one entry per put, is still 35 entries short of them. */
  for (int i = 0; i < 50; i++)
    load_and_read(c, next++);
  hand.n = 0;
  cdcache__s3_hand_hook = log_step;
  for (int i = 0; i < 20; i++)
    for (int r = 0; r < (i < 10 ? 1 : 5); r++)
      CU_ASSERT_TRUE(has_i(c, i));
  for (int i = 0; i < 600; i++)
    load_and_read(c, next++);
  cdcache__s3_hand_hook = NULL;
  CU_ASSERT(hand.n > 600 && hand.n < HAND_LOG);
  for (int i = 0; i < 20; i++) {
    char seen[16];
    counts_seen(i, seen, sizeof seen);
    if (strcmp(seen, i < 10 ? "10" : "3210") != 0)
      printf("\n  key%d: the hand read the counts \"%s\"", i, seen);
    CU_ASSERT_STRING_EQUAL(seen, i < 10 ? "10" : "3210");
    CU_ASSERT_FALSE(has_i(c, i)); /* evicted at the last step */
  }
  cdcache_close(c);
}

/*
 * A key in M replaced (a write-through, a reload after an update) keeps
 * its FIFO and its count: its new entry is still M's, and M's hand reads
 * the two hits it had.  Started over in S, it would reach M with its
 * count cleared, or be dropped before.
 */
static void test_a_replaced_entry_keeps_its_fifo_and_count(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 100, 1);
  int next = 1000;
  for (int i = 0; i < 300; i++)
    load_and_read(c, next++);
  for (int i = 0; i < 10; i++)
    load_and_read(c, i);
  for (int i = 0; i < 50; i++)
    load_and_read(c, next++);
  hand.n = 0;
  cdcache__s3_hand_hook = log_step;
  for (int i = 0; i < 10; i++) {
    CU_ASSERT_TRUE(has_i(c, i));
    CU_ASSERT_TRUE(has_i(c, i));
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  }
  for (int i = 0; i < 400; i++)
    load_and_read(c, next++);
  cdcache__s3_hand_hook = NULL;
  for (int i = 0; i < 10; i++) {
    char seen[16];
    counts_seen(i, seen, sizeof seen);
    CU_ASSERT_STRING_EQUAL(seen, "210");
  }
  cdcache_close(c);
}

/* A reader that hits every entry of M right behind its hand (the count
 * back at its cap each time the hand lowers it): the worst interleaving
 * of test_eviction.c's readers, made deterministic. */
static long forced_laps;
static void rehit(struct cdcache__entry *e)
{
  atomic_store_explicit(&e->ref, 3, memory_order_relaxed);
  forced_laps++;
}

/*
 * When readers raise every count in M as fast as the hand lowers it, the
 * hands' step budget runs out and the oldest entry goes: a put never
 * fails with EFULL for want of a victim (README, "Writers never fail for
 * want of a victim").
 */
static void test_a_main_hand_that_readers_always_overtake_still_finds_a_victim(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 20, 1);
  for (int i = 0; i < 20; i++) {
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
    CU_ASSERT_TRUE(has_i(c, i));
    CU_ASSERT_TRUE(has_i(c, i));
  }
  forced_laps = 0;
  cdcache__s3_hand_hook = rehit;
  int efull = 0, last_resort = 0;
  for (int i = 20; i < 200; i++) {
    long before = forced_laps;
    int rc = put_i(c, i, CDCACHE_TTL_NONE);
    efull += rc == CDCACHE_EFULL;
    CU_ASSERT_EQUAL(rc, 0);
    /* More than three laps of M (of 18 entries) without a victim: only
     * the last resort ended that put. */
    last_resort += forced_laps - before > 3 * 18;
  }
  cdcache__s3_hand_hook = NULL;
  CU_ASSERT_EQUAL(efull, 0);
  CU_ASSERT_EQUAL(last_resort, 180);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 20);
  CU_ASSERT_EQUAL(st.evictions, 180);
  /* The first put moved 18 of the hit keys to M and took the 19th, the
   * oldest of S; each later put took the oldest of S again, the previous
   * newcomer.  The keys readers keep hitting stay. */
  int kept = 0;
  for (int i = 0; i < 20; i++)
    kept += has_i(c, i);
  CU_ASSERT_EQUAL(kept, 18);
  CU_ASSERT_TRUE(has_i(c, 199));
  cdcache_close(c);
}

/* ------------------------------------------- the ghost, the duel, flush */

/*
 * 17 keys the database updates often (each change invalidates the key,
 * the next read reloads it: a miss the sketch counts), read again, so
 * they fill M.  Then a batch job reads 40 new records twice each, 10
 * requests apart: each second read finds the record dropped from S
 * (3 entries) and remembered by the ghost, but counted twice against
 * M's next victim's 16 times, it loses the duel and starts over in S.
 * The 17 stay; LRU loses them all.  Without the duel every second read
 * would enter M and M's hand would evict the 17.
 */
static int reloaded_left_after_burst(cdcache_policy_t p)
{
  cdcache_t *c = open_policy(p, 20, 1);
  for (int r = 0; r < 15; r++)
    for (int i = 0; i < 17; i++) {
      CU_ASSERT_FALSE(read_through(c, i));
      char k[16];
      int kl = snprintf(k, sizeof k, "key%d", i);
      CU_ASSERT_EQUAL(cdcache_invalidate(c, k, (size_t)kl), 0);
    }
  for (int i = 0; i < 17; i++) {
    CU_ASSERT_FALSE(read_through(c, i));
    CU_ASSERT_TRUE(read_through(c, i));
  }
  for (int i = 100; i < 103; i++)
    CU_ASSERT_FALSE(read_through(c, i));
  for (int b = 0; b < 50; b++) {
    if (b < 40)
      CU_ASSERT_FALSE(read_through(c, 1000 + b));
    if (b >= 10)
      read_through(c, 1000 + b - 10); /* a miss, under s3fifo */
  }
  int left = 0;
  for (int i = 0; i < 17; i++)
    left += has_i(c, i);
  cdcache_close(c);
  return left;
}

static void test_keys_asked_for_twice_do_not_displace_keys_reloaded_often(void)
{
  CU_ASSERT_EQUAL(reloaded_left_after_burst(CDCACHE_ALLKEYS_S3FIFO), 17);
  CU_ASSERT_EQUAL(reloaded_left_after_burst(CDCACHE_ALLKEYS_LRU), 0);
}

/*
 * The hits M's hand observes build a key's history too.  17 keys read
 * three times between misses sit in M.  Each round, 10 new records are
 * read twice, the second read a ghost hit whose duel walks M's hand over
 * the 17 (three laps: each lowers a count and counts the hit it observed
 * in the sketch).  Then the 17 go quiet and a batch job reads 40 new
 * records three times, 10 requests apart (ghost hits counted 2 and 3
 * times): counted once at their load and a dozen times by the hand, the
 * 17 win the duels and stay.  Counted only at their load, they would lose.
 */
static int read_often_left_after_burst(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 20, 1);
  for (int i = 0; i < 17; i++) {
    CU_ASSERT_FALSE(read_through(c, i));
    CU_ASSERT_TRUE(read_through(c, i));
  }
  /* Fill the cache; the first miss past it moves the 17 to M. */
  for (int i = 100; i < 106; i++)
    CU_ASSERT_FALSE(read_through(c, i));
  int next = 1000;
  for (int round = 0; round < 4; round++) {
    for (int r = 0; r < 3; r++)
      for (int i = 0; i < 17; i++)
        read_through(c, i); /* hits, give or take a collision's loss */
    for (int b = 0; b < 10; b++)
      CU_ASSERT_FALSE(read_through(c, next + b));
    for (int b = 0; b < 10; b++)
      read_through(c, next + b);
    next += 10;
  }
  for (int b = 0; b < 60; b++) {
    if (b < 40)
      CU_ASSERT_FALSE(read_through(c, 5000 + b));
    if (b >= 10 && b < 50)
      read_through(c, 5000 + b - 10);
    if (b >= 20)
      read_through(c, 5000 + b - 20);
  }
  int left = 0;
  for (int i = 0; i < 17; i++)
    left += has_i(c, i);
  cdcache_close(c);
  return left;
}

static void test_hits_the_main_hand_observes_count_in_the_duel(void)
{
  /* Five caches (the keyed hash changes the sketch's collisions): now
   * and then one loses a key to a newcomer whose counters collide. */
  int kept = 0;
  for (int i = 0; i < 5; i++)
    kept += read_often_left_after_burst();
  printf("\n  kept %d of 85", kept);
  CU_ASSERT(kept >= 80);
}

/*
 * A flushed cache starts with no history.  100 keys pass through S
 * unread (the ghost remembers them), flush, then the same 100 and 50 new
 * ones: as in a new cache, the 100 are new keys in S and the first 50
 * go first.  Had the ghost outlived the flush, the 100 would have gone
 * straight to M and only the first 15 would be gone.  (Flush clears each
 * shard's sketch and ghost with one call, cdcache__s3_clear, which "the
 * sketch does not saturate under churn" checks empties both.)
 */
static void test_flush_forgets_the_ghost_and_the_sketch(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 100, 1);
  for (int i = 0; i < 200; i++)
    CU_ASSERT_FALSE(read_through(c, i));
  CU_ASSERT_EQUAL(cdcache_flush(c), 0);
  for (int i = 0; i < 100; i++)
    CU_ASSERT_FALSE(read_through(c, i));
  for (int i = 1000; i < 1050; i++)
    CU_ASSERT_FALSE(read_through(c, i));
  int first = 0, last = 0;
  for (int i = 0; i < 50; i++)
    first += has_i(c, i);
  for (int i = 50; i < 100; i++)
    last += has_i(c, i);
  CU_ASSERT_EQUAL(first, 0);
  CU_ASSERT_EQUAL(last, 50);
  cdcache_close(c);
}

/*
 * The sketch forgets: every 20 x share counts it halves.  After a long
 * churn (40,000 keys, each loaded and read once, through a cache of 100)
 * the workload shifts to 40 keys read in turn, more than S holds, so
 * each comes back from the ghost and must win the duel against M's next
 * victim, a key of the churn counted once.  A sketch that never halved
 * would have every counter at its ceiling (15) by then: every duel a tie,
 * lost, and not one of the 40 would ever hit.
 */
static void test_after_a_long_churn_a_new_working_set_still_gets_in(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 100, 1);
  for (int i = 0; i < 40000; i++)
    load_and_read(c, 100000 + i);
  int hits = 0;
  for (int round = 0; round < 30; round++)
    for (int i = 0; i < 40; i++)
      hits += round >= 20 ? read_through(c, i) : (read_through(c, i), 0);
  printf("\n  hits in the last 10 rounds: %d of 400", hits);
  CU_ASSERT(hits >= 300);
  cdcache_close(c);
}

static void test_entries_never_exceed_max_entries(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 10000, 8);
  cdcache_stats_t st = {.struct_size = sizeof st};
  uint64_t x = 12345;
  for (int i = 0; i < 60000; i++) {
    /* A skewed mix: a few keys often (they reach M), most once. */
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    int k = (x >> 60) < 8 ? (int)((x >> 33) % 500) : 1000 + i;
    read_through(c, k);
    if (i % 1000 == 0) {
      cdcache_stats(c, &st);
      CU_ASSERT_FATAL(st.entries <= 10000);
    }
  }
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 10000);
  CU_ASSERT(st.evictions > 0);
  CU_ASSERT(st.bytes_policy > 0);
  CU_ASSERT(st.bytes_policy < st.bytes_tables);
  /* 4.75 to 6.75 bytes per entry (sketch and ghost). */
  CU_ASSERT(4 * st.bytes_policy >= 19 * 10000 && 4 * st.bytes_policy <= 27 * 10000);
  cdcache_close(c);
}

/* ------------------------------------------ the sketch and the ghost */

/* A share's sketch and ghost, allocated through the counting allocator. */
static void s3_open(struct test_alloc *ta, cdcache_config_t *cfg, struct cdcache__s3 *p,
                    uint64_t share)
{
  cdcache_config_init(cfg);
  test_alloc_install(cfg, ta);
  CU_ASSERT_EQUAL_FATAL(cdcache__s3_init(&cfg->allocator, p, share), 0);
  CU_ASSERT_EQUAL(atomic_load(&ta->live_bytes), (long long)cdcache__s3_bytes(share));
}

static uint32_t xorshift32(uint64_t *x)
{
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return (uint32_t)(*x >> 32);
}

/*
 * A shard of 10,000 entries sees a churn of distinct keys (60 x its share
 * counted, three halving periods).  What does the sketch then say about
 * keys it never saw, and about a key counted 5 times just now?  Counting
 * all four counters of each key, the never-seen ones scored a median 9 of
 * 15 and the duel between two of them was close to a coin toss.
 */
static void test_the_sketch_does_not_saturate_under_churn(void)
{
  struct test_alloc ta = {0};
  cdcache_config_t cfg;
  struct cdcache__s3 p;
  s3_open(&ta, &cfg, &p, 10000);
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < 600000; i++)
    cdcache__s3_count(&p, xorshift32(&x));
  unsigned hist[16] = {0};
  for (int i = 0; i < 100000; i++)
    hist[cdcache__s3_freq(&p, xorshift32(&x))]++;
  unsigned median = 0, below = 0;
  while (below + hist[median] < 50000)
    below += hist[median++];
  uint32_t hot = xorshift32(&x);
  for (int i = 0; i < 5; i++)
    cdcache__s3_count(&p, hot);
  unsigned f = cdcache__s3_freq(&p, hot), beaten = 0;
  for (unsigned v = 0; v < f; v++)
    beaten += hist[v];
  printf("\n  never-seen keys: median %u of 15; a key counted 5 times: %u, above %.1f%% of them",
         median, f, beaten / 1000.0);
  CU_ASSERT(median <= 3);
  CU_ASSERT(f >= 5);          /* a count-min sketch never undercounts (between halvings) */
  CU_ASSERT(beaten >= 95000); /* the duel tells it from noise */
  /* What flush does to each shard: no count, no ghost left. */
  cdcache__s3_ghost_add(&p, hot);
  CU_ASSERT_TRUE(cdcache__s3_ghost_has(&p, hot));
  cdcache__s3_clear(&p);
  CU_ASSERT_EQUAL(cdcache__s3_freq(&p, hot), 0);
  CU_ASSERT_FALSE(cdcache__s3_ghost_has(&p, hot));
  cdcache__s3_destroy(&cfg.allocator, &p);
  CU_ASSERT_EQUAL(atomic_load(&ta.live_bytes), 0);
}

/*
 * The ghost against its claim: everything S dropped within the last
 * `share` evictions is remembered (no false negatives), and a key never
 * dropped is taken for one at most 3% of the time, measured at the worst
 * moment (both filters full, just before the turn), for shares that are
 * powers of two and shares that are not.
 */
static void test_the_ghost_remembers_what_s_dropped_with_under_3pc_false_positives(void)
{
  static const uint64_t shares[] = {100, 1000, 1024, 4096, 6000, 8192, 12500};
  double worst = 0;
  for (size_t i = 0; i < sizeof shares / sizeof shares[0]; i++) {
    struct test_alloc ta = {0};
    cdcache_config_t cfg;
    struct cdcache__s3 p;
    uint64_t share = shares[i], x = 0x2545f4914f6cdd1dULL + share;
    s3_open(&ta, &cfg, &p, share);
    uint64_t before = x; /* where the previous turn's hashes began */
    for (int turn = 0; turn < 4; turn++) {
      /* Fill the current filter to its last hash (the other is full). */
      uint64_t first = x;
      for (uint64_t k = 0; k < share; k++)
        cdcache__s3_ghost_add(&p, xorshift32(&x));
      /* This turn's hashes and the previous turn's: the last 2 x share
       * dropped (share, on the first turn). */
      int missed = 0;
      for (int t = turn == 0 ? 1 : 0; t < 2; t++) {
        uint64_t y = t == 0 ? before : first;
        for (uint64_t k = 0; k < share; k++)
          missed += !cdcache__s3_ghost_has(&p, xorshift32(&y));
      }
      CU_ASSERT_EQUAL(missed, 0);
      before = first;
      if (turn == 0)
        continue; /* the other filter is still empty */
      int fp = 0, n = 100000;
      for (int k = 0; k < n; k++)
        fp += cdcache__s3_ghost_has(&p, xorshift32(&x));
      double rate = 100.0 * fp / n;
      worst = rate > worst ? rate : worst;
      if (rate > 3.0)
        printf("\n  share %llu: %.2f%% false positives", (unsigned long long)share, rate);
      CU_ASSERT(rate <= 3.0);
    }
    cdcache__s3_destroy(&cfg.allocator, &p);
  }
  printf("\n  worst false-positive rate %.2f%%", worst);
}

/* bytes_tables of a cache opened with this config under policy p. */
static uint64_t tables_under(cdcache_config_t cfg, cdcache_policy_t p, uint64_t *policy_bytes)
{
  cfg.policy = p;
  cdcache_t *c = test_open(&cfg);
  cdcache_stats_t st = {.struct_size = sizeof st};
  CU_ASSERT_EQUAL(cdcache_stats(c, &st), 0);
  *policy_bytes = st.bytes_policy;
  cdcache_close(c);
  return st.bytes_tables;
}

/*
 * The sketch and the ghost are part of the tables (so of what max_bytes
 * leaves for entries): for the same config, bytes_tables under s3fifo is
 * bytes_tables under lru plus exactly bytes_policy, 4.75 to 6.75 bytes
 * per entry (the sketch's power-of-two rounding), more in tiny shards
 * (its 512-byte floor).
 */
static void test_sketch_and_ghost_are_charged_to_the_tables(void)
{
  static const struct {
    uint64_t entries;
    uint32_t shards;
    uint64_t max_bytes;
  } cfgs[] = {
      {100, 1, 0}, {4000, 2, 256 * 1024}, {100000, 8, 0}, {100000, 4, 16u << 20}, {1u << 20, 0, 0}};
  for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
    cdcache_config_t cfg;
    cdcache_config_init(&cfg);
    cfg.max_entries = cfgs[i].entries;
    cfg.shards = cfgs[i].shards;
    cfg.max_bytes = cfgs[i].max_bytes;
    cfg.max_value_len = 1024; /* each byte share must hold a largest entry */
    uint64_t pol_lru, pol_s3, pol_vs3;
    uint64_t lru = tables_under(cfg, CDCACHE_ALLKEYS_LRU, &pol_lru);
    uint64_t s3 = tables_under(cfg, CDCACHE_ALLKEYS_S3FIFO, &pol_s3);
    uint64_t vs3 = tables_under(cfg, CDCACHE_VOLATILE_S3FIFO, &pol_vs3);
    CU_ASSERT_EQUAL(pol_lru, 0);
    CU_ASSERT_EQUAL(s3 - lru, pol_s3);
    CU_ASSERT_EQUAL(vs3 - lru, pol_vs3);
    CU_ASSERT_EQUAL(pol_s3, pol_vs3);
    /* Sketch 2 to 4 bytes per entry (at least 512 per shard), ghost 2.75
     * (whole words). */
    CU_ASSERT(4 * pol_s3 >= 19 * cfgs[i].entries);
    CU_ASSERT(4 * pol_s3 <=
              27 * cfgs[i].entries + 4 * 528 * (cfgs[i].shards ? cfgs[i].shards : 64));
  }
}

static void test_max_bytes_bounds_live_pending_and_policy_bytes(void)
{
  struct test_alloc a = {0};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 4000;
  cfg.max_bytes = 256 * 1024;
  cfg.max_value_len = 1024; /* each shard's share must hold a largest entry */
  cfg.shards = 2;
  cfg.policy = CDCACHE_ALLKEYS_S3FIFO;
  cdcache_t *c = test_open(&cfg);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  /* Sized for 4,000 entries, the sketch and ghost are part of the bound. */
  CU_ASSERT(st.bytes_policy > 0);
  CU_ASSERT(st.bytes_tables > st.bytes_policy);
  char v[200] = {0};
  for (int i = 0; i < 20000; i++) {
    char k[16];
    int kl = snprintf(k, sizeof k, "k%d", i % 3 == 0 ? i % 30 : i);
    size_t n;
    if (cdcache_get(c, k, (size_t)kl, v, sizeof v, &n) != 0)
      CU_ASSERT_EQUAL_FATAL(cdcache_put(c, k, (size_t)kl, v, sizeof v, 0), 0);
    cdcache_stats(c, &st);
    /* One writer: the bound holds to the byte after every call. */
    CU_ASSERT_FATAL(st.bytes_live + st.bytes_pending_free + st.bytes_tables <= cfg.max_bytes);
  }
  CU_ASSERT(st.evictions > 0);
  CU_ASSERT(st.entries > 50);
  /* The allocator's own count, at its highest: within the documented
   * slack for one writer. */
  CU_ASSERT(atomic_load(&a.peak_bytes) <=
            (long long)(cfg.max_bytes + CDCACHE_MAX_BYTES_SLACK(&cfg, 1)));
  /* What the allocator holds is what the stats say (after the grace
   * periods): the sketch and ghost included. */
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
}

/* The most bytes the allocator held at once for a cache of policy p
 * (max_bytes 4 MiB, sized for 100,000 entries on 4 shards: 512 KiB of
 * sketch and ghost under s3fifo) while 40,000 keys of 200-byte values go
 * through it cache-aside; sets *bound to max_bytes + the slack. */
static long long peak_under(cdcache_policy_t p, long long *bound, uint64_t *policy_bytes)
{
  struct test_alloc a = {0};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_alloc_install(&cfg, &a);
  cfg.max_entries = 100000;
  cfg.shards = 4;
  cfg.max_key_len = 16;
  cfg.max_value_len = 256;
  cfg.max_bytes = 4u << 20;
  cfg.policy = p;
  cdcache_t *c = test_open(&cfg);
  char v[200] = {0}, k[16];
  size_t n;
  uint64_t x = 7;
  for (int i = 0; i < 40000; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    /* A third of the reads go to 3,000 keys, the rest are new. */
    int kl = snprintf(k, sizeof k, "k%d", (x >> 61) < 3 ? (int)((x >> 33) % 3000) : 10000 + i);
    if (cdcache_get(c, k, (size_t)kl, v, sizeof v, &n) != 0)
      CU_ASSERT_EQUAL(cdcache_put(c, k, (size_t)kl, v, sizeof v, CDCACHE_TTL_NONE), 0);
  }
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT(st.evictions > 10000); /* the byte bound, not max_entries, was the limit */
  *policy_bytes = st.bytes_policy;
  cdcache_close(c);
  CU_ASSERT_EQUAL(atomic_load(&a.live_bytes), 0);
  *bound = (long long)(cfg.max_bytes + CDCACHE_MAX_BYTES_SLACK(&cfg, 1));
  return atomic_load(&a.peak_bytes);
}

/*
 * Everything the library allocates, the sketch and ghost included, stays
 * within max_bytes and the documented slack at every moment: the
 * allocator's peak, kept by the allocator itself.  The sketch and ghost
 * (512 KiB here) are twenty times the slack, so leaving them out of the
 * bound would show.
 */
static void test_the_allocators_peak_stays_within_max_bytes_and_the_slack(void)
{
  long long bound, bound_lru;
  uint64_t pol, pol_lru;
  long long peak = peak_under(CDCACHE_ALLKEYS_S3FIFO, &bound, &pol);
  long long peak_lru = peak_under(CDCACHE_ALLKEYS_LRU, &bound_lru, &pol_lru);
  printf("\n  peak %lld (allkeys-lru %lld), bound %lld, sketch and ghost %llu", peak, peak_lru,
         bound, (unsigned long long)pol);
  CU_ASSERT(pol > 20 * (uint64_t)(bound - (4 << 20)));
  CU_ASSERT(peak <= bound);
  CU_ASSERT(peak_lru <= bound_lru);
  /* Both fill what max_bytes allows (all but the grace-period reserve,
   * an eighth, which frees as fast as it fills with one writer). */
  CU_ASSERT(peak > (4 << 20) / 8 * 7);
  CU_ASSERT(peak_lru > (4 << 20) / 8 * 7);
}

static void test_volatile_s3fifo_evicts_only_entries_with_ttl(void)
{
  cdcache_t *c = open_policy(CDCACHE_VOLATILE_S3FIFO, 100, 1);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  for (int i = 50; i < 1000; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 60000), 0);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  /* Fill the rest with entries that cannot be evicted: then a put fails. */
  cdcache_stats_t st = {.struct_size = sizeof st};
  for (int i = 2000; i < 2050; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(put_i(c, 3000, CDCACHE_TTL_NONE), CDCACHE_EFULL);
  CU_ASSERT_FALSE(has_i(c, 3000));
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 100);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  cdcache_close(c);
}

static void test_expired_entries_go_first_and_are_never_served(void)
{
  struct test_clock clk = {1000};
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  test_clock_install(&cfg, &clk);
  cfg.max_entries = 100;
  cfg.shards = 1;
  cfg.policy = CDCACHE_ALLKEYS_S3FIFO;
  cdcache_t *c = test_open(&cfg);
  /* 50 keys without TTL, read so they reach M; 50 with a short TTL. */
  for (int i = 0; i < 50; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  for (int i = 100; i < 150; i++)
    CU_ASSERT_EQUAL(put_i(c, i, 10), 0);
  atomic_store(&clk.now_ms, 2000);
  for (int i = 100; i < 150; i++)
    CU_ASSERT_FALSE(has_i(c, i));
  /* 50 new keys take the expired entries' places; nothing live goes. */
  for (int i = 200; i < 250; i++)
    CU_ASSERT_EQUAL(put_i(c, i, CDCACHE_TTL_NONE), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.evictions, 0);
  CU_ASSERT_EQUAL(st.expirations, 50);
  for (int i = 0; i < 50; i++)
    CU_ASSERT_TRUE(has_i(c, i));
  cdcache_close(c);
}

static int loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  int *calls = ctx;
  (*calls)++;
  return cdcache_fill_set_value(fill, key, klen);
}

static void test_fills_leases_and_flush(void)
{
  cdcache_t *c = open_policy(CDCACHE_ALLKEYS_S3FIFO, 64, 1);
  int calls = 0;
  char buf[32];
  size_t n;
  /* A load completes into the cache, then hits. */
  CU_ASSERT_EQUAL(cdcache_get_or_load(c, KEY("user:1"), loader, &calls, CDCACHE_TTL_NONE,
                                      CDCACHE_WAIT_FOREVER, buf, sizeof buf, &n),
                  0);
  CU_ASSERT_EQUAL(calls, 1);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("user:1"), buf, sizeof buf, &n), 0);
  /* A lease's put lands, after any number of evictions meanwhile. */
  cdcache_lease_t *lease = NULL;
  CU_ASSERT_EQUAL(cdcache_get_lease(c, KEY("user:2"), buf, sizeof buf, &n, &lease), CDCACHE_ENOENT);
  CU_ASSERT_PTR_NOT_NULL_FATAL(lease);
  for (int i = 0; i < 500; i++)
    read_through(c, i);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, lease, "v2", 2, CDCACHE_TTL_NONE), 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("user:2"), buf, sizeof buf, &n), 0);
  /* Flush empties every FIFO; the cache fills again to capacity. */
  CU_ASSERT_EQUAL(cdcache_flush(c), 0);
  cdcache_stats_t st = {.struct_size = sizeof st};
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 0);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("user:1"), buf, sizeof buf, &n), CDCACHE_ENOENT);
  for (int i = 0; i < 500; i++)
    read_through(c, i);
  cdcache_stats(c, &st);
  CU_ASSERT_EQUAL(st.entries, 64);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("policy_s3fifo", NULL, NULL);
  CU_add_test(s, "a one-time scan does not evict the hot set (allkeys-lru does)",
              test_scan_does_not_evict_the_hot_set);
  CU_add_test(s, "a key read often survives a stream of one-hit keys (allkeys-lru loses it)",
              test_often_read_key_survives_one_hit_stream);
  CU_add_test(s, "the ghost readmits a key dropped too early",
              test_ghost_readmits_a_key_dropped_too_early);
  CU_add_test(s, "each hit up to three buys another lap of the main hand",
              test_each_hit_up_to_three_buys_another_lap_of_the_main_hand);
  CU_add_test(s, "a replaced entry keeps its FIFO and count",
              test_a_replaced_entry_keeps_its_fifo_and_count);
  CU_add_test(s, "a main hand that readers always overtake still finds a victim",
              test_a_main_hand_that_readers_always_overtake_still_finds_a_victim);
  CU_add_test(s,
              "keys asked for twice do not displace keys reloaded often (allkeys-lru loses them)",
              test_keys_asked_for_twice_do_not_displace_keys_reloaded_often);
  CU_add_test(s, "hits the main hand observes count in the duel",
              test_hits_the_main_hand_observes_count_in_the_duel);
  CU_add_test(s, "flush forgets the ghost and the sketch",
              test_flush_forgets_the_ghost_and_the_sketch);
  CU_add_test(s, "after a long churn a new working set still gets in",
              test_after_a_long_churn_a_new_working_set_still_gets_in);
  CU_add_test(s, "entries never exceed max_entries; sketch and ghost bytes reported",
              test_entries_never_exceed_max_entries);
  CU_add_test(s, "the sketch does not saturate under churn",
              test_the_sketch_does_not_saturate_under_churn);
  CU_add_test(s, "the ghost remembers what S dropped, with under 3% false positives",
              test_the_ghost_remembers_what_s_dropped_with_under_3pc_false_positives);
  CU_add_test(s, "sketch and ghost are charged to the tables",
              test_sketch_and_ghost_are_charged_to_the_tables);
  CU_add_test(s, "max_bytes bounds live, pending and policy bytes",
              test_max_bytes_bounds_live_pending_and_policy_bytes);
  CU_add_test(s, "the allocator's peak stays within max_bytes and the slack",
              test_the_allocators_peak_stays_within_max_bytes_and_the_slack);
  CU_add_test(s, "volatile-s3fifo evicts only entries with a TTL",
              test_volatile_s3fifo_evicts_only_entries_with_ttl);
  CU_add_test(s, "expired entries go first and are never served",
              test_expired_entries_go_first_and_are_never_served);
  CU_add_test(s, "fills, leases and flush", test_fills_leases_and_flush);
  return test_run();
}
