/*
 * The cache handle: open (sizing shards, tables and budgets), close,
 * stats, fork detection, and the hooks the CDC consumer drives.
 *
 * Sizing.  The shard count is a power of two: the configured one, or by
 * default the smallest power of two >= 4 x online CPUs, reduced until
 * each shard's share of max_entries is at least CDCACHE_MIN_SHARD_ENTRIES
 * (so a small cache is one shard with exact CLOCK order, and per-shard
 * imbalance never costs much hit ratio).  Each shard enforces its share
 * of max_entries (the shares add up to max_entries exactly) and of the
 * live-byte budget.  Each table has a power of two >= share/2 buckets,
 * fixed for the cache's life.
 *
 * The byte budget, when max_bytes is set: max_bytes minus the tables and
 * shard headers, of which 1/8 is reserved for entries awaiting a grace
 * period (the throttle keeps the backlog there) and 7/8 is split among
 * the shards for live entries.  So live + pending + tables stays within
 * max_bytes, give or take the one entry each writing thread has allocated
 * but not yet linked.
 */
#include "ops.h"
#include "shard.h"

#include <urcu-bp.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

_Atomic uint32_t cdcache__fork_gen;
/* The fork generation in which cdcache_fork_child() ran liburcu's child
 * handling: a child may open caches only when it equals cdcache__fork_gen. */
static _Atomic uint32_t rcu_ready_gen;
static _Atomic uint64_t next_cache_id = 1;
/* Thread-local: set by cdcache_fork_prepare() in the thread that will
 * fork, cleared by _parent/_child in that thread (the child's only thread
 * is a copy of it).  Lets the child tell a fork that skipped
 * cdcache_fork_prepare() (its liburcu handling is then not done and opens
 * answer CDCACHE_EFORKED, as after a fork without the fork calls). */
static _Thread_local bool fork_prepared;
/* Thread-local: this thread holds live_mu (core/tstats.c) for a fork,
 * taken by cdcache_fork_prepare() or, when that was not called, by the
 * always-installed prepare handler; released or re-initialised by the
 * matching parent / child code. */
static _Thread_local bool live_held;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static pthread_once_t fork_install_once = PTHREAD_ONCE_INIT;
static int fork_install_rc;

/* Registered at the first open, for every fork, with or without the fork
 * calls: cdcache's own global mutex (live_mu) is held across the fork, so
 * that no parent thread (one ending, or switching between caches) holds
 * it in the child; the child re-initialises it and bumps the generation
 * that makes pre-fork handles answer CDCACHE_EFORKED.  No allocation:
 * live_mu is never held around one.  When cdcache_fork_prepare() ran in
 * this thread it already holds live_mu (after liburcu's locks, the lock
 * order) and these do nothing with it. */
static _Thread_local bool live_by_handler; /* live_held came from on_fork_prepare */
/* Thread-local: who paused the reclaimer thread (core/reclaim.c) for this
 * fork: nobody, cdcache_fork_prepare() or on_fork_prepare().  It is
 * paused first, before any liburcu lock is taken (its round may be inside
 * a grace period, which takes them), and resumed last, by the same code.
 * Only the fork calls wait for the round in progress (their child frees
 * the parent's queue); the handler does not: it runs after the host's
 * own fork handlers registered later, and one of them may hold the lock
 * of the allocator that round is freeing through (test "a plain fork
 * beside a round freeing through a locked host heap never hangs"). */
enum reclaim_pauser { BY_NOBODY, BY_FORK_CALLS, BY_HANDLER };
static _Thread_local enum reclaim_pauser reclaim_by;
static void reclaim_pause(enum reclaim_pauser by)
{
  if (reclaim_by != BY_NOBODY)
    return;
  cdcache__reclaim_fork_prepare(by == BY_FORK_CALLS);
  reclaim_by = by;
}
static void reclaim_resume(enum reclaim_pauser by, bool child)
{
  if (reclaim_by != by)
    return;
  reclaim_by = BY_NOBODY;
  if (child)
    cdcache__reclaim_fork_child(by == BY_FORK_CALLS);
  else
    cdcache__reclaim_fork_parent();
}

static void on_fork_prepare(void)
{
  reclaim_pause(BY_HANDLER);
  if (live_held)
    return;
  cdcache__tstats_fork_prepare();
  live_held = true;
  live_by_handler = true;
}

static void on_fork_parent(void)
{
  if (live_by_handler) {
    live_by_handler = false;
    live_held = false;
    cdcache__tstats_fork_parent();
  }
  reclaim_resume(BY_HANDLER, false);
}

static void on_fork_child(void)
{
  atomic_fetch_add_explicit(&cdcache__fork_gen, 1, memory_order_relaxed);
  if (live_by_handler) {
    live_by_handler = false;
    live_held = false;
    cdcache__tstats_fork_child();
  }
  reclaim_resume(BY_HANDLER, true);
}

static void install_atfork(void)
{
  (void)pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
}

/*
 * fork.  liburcu-bp survives fork only if its own handlers run around it
 * in both processes: the call_rcu worker threads are paused before the
 * fork and restarted after it (in the child, recreated: the parent's
 * threads do not exist there), and the reader registry is locked across
 * it and pruned in the child.  Without that, the child's first
 * rcu_barrier or synchronize_rcu waits forever for threads that were not
 * copied.  The order: call_rcu's before the reader registry's going in,
 * the reverse coming out (a call_rcu worker may be inside a grace period,
 * which takes the registry lock).  cdcache's reclaimer thread is paused
 * first (core/reclaim.c: its mutex held, no round in progress), before
 * liburcu's locks, because a round waits for a grace period, which takes
 * them; it is resumed last.  cdcache's own global mutex (live_mu, the
 * live-cache registry of the per-thread counters, core/tstats.c) is taken
 * last, after liburcu's locks, and released first: the lock order is the
 * reclaimer's, call_rcu's, liburcu-bp's registry, then live_mu (no
 * cdcache code takes a liburcu lock while holding live_mu, nor the
 * reclaimer's mutex while holding either).  cdcache itself queues no
 * call_rcu work; the host may.  A cache's own mutexes are
 * not taken: the child never locks those of a cache opened before the
 * fork (it may only close it, which frees without locking).
 */
void cdcache_fork_prepare(void)
{
  reclaim_pause(BY_FORK_CALLS);
  urcu_bp_call_rcu_before_fork();
  urcu_bp_before_fork();
  if (!live_held) {
    cdcache__tstats_fork_prepare();
    live_held = true;
  }
  fork_prepared = true;
}

void cdcache_fork_parent(void)
{
  if (!fork_prepared)
    return;
  fork_prepared = false;
  if (live_held && !live_by_handler) {
    live_held = false;
    cdcache__tstats_fork_parent();
  }
  urcu_bp_after_fork_parent();
  urcu_bp_call_rcu_after_fork_parent();
  reclaim_resume(BY_FORK_CALLS, false);
}

void cdcache_fork_child(void)
{
  if (!fork_prepared)
    return;
  fork_prepared = false;
  if (live_held && !live_by_handler) {
    live_held = false;
    cdcache__tstats_fork_child();
  }
  urcu_bp_after_fork_child();
  urcu_bp_call_rcu_after_fork_child();
  reclaim_resume(BY_FORK_CALLS, true);
  atomic_store_explicit(&rcu_ready_gen,
                        atomic_load_explicit(&cdcache__fork_gen, memory_order_relaxed),
                        memory_order_relaxed);
}

static void install_fork_handlers(void)
{
  /* The generation counter's handler first, so that in the child it runs
   * before cdcache_fork_child (child handlers run in registration order). */
  pthread_once(&atfork_once, install_atfork);
  fork_install_rc =
      pthread_atfork(cdcache_fork_prepare, cdcache_fork_parent, cdcache_fork_child) == 0
          ? 0
          : CDCACHE_ENOMEM;
}

int cdcache_fork_install(void)
{
  pthread_once(&fork_install_once, install_fork_handlers);
  return fork_install_rc;
}

static bool rcu_usable(void)
{
  return atomic_load_explicit(&rcu_ready_gen, memory_order_relaxed) ==
         atomic_load_explicit(&cdcache__fork_gen, memory_order_relaxed);
}

static uint32_t default_shards(uint64_t max_entries)
{
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  uint32_t n = 1;
  while (n < 4u * (uint32_t)(cpus > 0 ? cpus : 1) && n < 1024)
    n <<= 1;
  while (n > 1 && max_entries / n < CDCACHE_MIN_SHARD_ENTRIES)
    n >>= 1;
  return n;
}

static uint64_t pow2_at_least(uint64_t x)
{
  uint64_t p = 1;
  while (p < x)
    p <<= 1;
  return p;
}

static uint64_t buckets_for(uint64_t share)
{
  uint64_t b = pow2_at_least(share / 2 == 0 ? 1 : share / 2);
  return b < 8 ? 8 : b;
}

uint64_t cdcache__max_entry_charge(const cdcache_config_t *cfg)
{
  uint64_t sz = cdcache__entry_size(CDCACHE__E_TTL, cfg->max_key_len, cfg->max_value_len);
  uint64_t most = sz + sz / 4 + (sz >= (64u << 10) ? 4096 : 16);
  /* A fill's placeholder carries the fill (two allocations, the key in
   * each): a share must take the largest one too, or a lease or load of
   * a long key could never start on an empty shard. */
  uint64_t ph = cdcache__entry_size(CDCACHE__E_PLACEHOLDER, cfg->max_key_len, 0);
  uint64_t fk = sizeof(struct cdcache_fill_key) + cfg->max_key_len;
  uint64_t ph_most = ph + ph / 4 + 16 + fk + fk / 4 + 16;
  return ph_most > most ? ph_most : most;
}

/*
 * Sizes the cache for nshards: the fixed part (tables_bytes), the pending
 * reserve and the live share per shard.  Every quantity is bounded:
 * max_entries <= CDCACHE_MAX_ENTRIES_LIMIT and nshards <= 65536 keep the
 * tables far below 2^64; the byte budget is only subtracted from once
 * checked larger.  Returns 0, or CDCACHE_EINVAL when max_bytes cannot
 * hold the tables and one largest entry per shard.
 */
static int size_for(cdcache_t *c, const cdcache_config_t *cfg, uint64_t *live_share)
{
  uint64_t base = cfg->max_entries / c->nshards, extra = cfg->max_entries % c->nshards;
  /* The fixed part: shard headers, bucket arrays, and the slack of the
   * two cache-line-aligned allocations and the registry node. */
  c->tables_bytes = sizeof(struct cdcache__shard) * c->nshards + 3 * CDCACHE__CACHELINE;
  c->policy_bytes = 0;
  for (uint32_t i = 0; i < c->nshards; i++) {
    c->tables_bytes += cdcache__shard_table_bytes(buckets_for(base + (i < extra)));
    if (cdcache__policy_s3(cfg->policy))
      c->policy_bytes += cdcache__s3_bytes(base + (i < extra));
  }
  c->tables_bytes += c->policy_bytes;
  *live_share = 0;
  if (cfg->max_bytes == 0) {
    c->rec.pending_cap = 64u << 20;
    return 0;
  }
  if (cfg->max_bytes <= c->tables_bytes + sizeof *c)
    return CDCACHE_EINVAL;
  uint64_t budget = cfg->max_bytes - c->tables_bytes - sizeof *c;
  c->rec.pending_cap = budget / 8;
  *live_share = (budget - c->rec.pending_cap) / c->nshards;
  /* A share must take one largest entry, or such a put could never
   * succeed; a share of 0 would mean "no bound". */
  return *live_share < cdcache__max_entry_charge(cfg) ? CDCACHE_EINVAL : 0;
}

int cdcache__open(const cdcache_config_t *cfg, cdcache_t **out)
{
  pthread_once(&atfork_once, install_atfork);
  if (!rcu_usable())
    return CDCACHE_EFORKED; /* a child whose fork skipped cdcache_fork_*() */
  if (cfg->max_entries > CDCACHE_MAX_ENTRIES_LIMIT)
    return CDCACHE_EINVAL;
  cdcache_allocator_t alloc = cfg->allocator;
  void *self_raw;
  cdcache_t *c = cdcache__alloc_aligned(&alloc, sizeof *c, &self_raw);
  if (c == NULL)
    return CDCACHE_ENOMEM;
  memset(c, 0, sizeof *c);
  c->self_raw = self_raw;
  c->cfg = *cfg;
  c->cfg.struct_size = sizeof c->cfg;
  c->id = atomic_fetch_add_explicit(&next_cache_id, 1, memory_order_relaxed);
  c->fork_gen = atomic_load_explicit(&cdcache__fork_gen, memory_order_relaxed);
  (void)cdcache__secret_init(c->secret);
  c->nshards = cfg->shards != 0 ? cfg->shards : default_shards(cfg->max_entries);
  uint64_t live_share = 0;
  int src;
  /* The automatic shard count halves until a share takes a largest
   * entry; a configured one is refused instead. */
  while ((src = size_for(c, cfg, &live_share)) != 0 && cfg->shards == 0 && c->nshards > 1)
    c->nshards >>= 1;
  if (src != 0) {
    cdcache__free_aligned(&alloc, self_raw, sizeof *c);
    return src;
  }
  unsigned bits = 0;
  while ((1u << bits) < c->nshards)
    bits++;
  c->shard_shift = 64 - bits;
  c->clock_slack_ms = cfg->clock != NULL ? 0 : cdcache__coarse_resolution_ms();
  atomic_init(&c->fresh_until, CDCACHE__FRESH_FOREVER);
  atomic_init(&c->epoch, 1);
  atomic_init(&c->cluster_time, 0);
  atomic_init(&c->chain_log_ms, UINT64_MAX);
  atomic_init(&c->rec.bytes_pending, 0);
  c->rec.alloc = &c->cfg.allocator;
  c->shard_env = (struct cdcache__shard_env){.policy = c->cfg.policy,
                                             .clock_slack_ms = c->clock_slack_ms,
                                             .alloc = &c->cfg.allocator,
                                             .rec = &c->rec};
  uint64_t base = cfg->max_entries / c->nshards, extra = cfg->max_entries % c->nshards;
  c->rec.batch_bytes = c->rec.pending_cap / ((uint64_t)4 * c->nshards);
  if (c->rec.batch_bytes < 256)
    c->rec.batch_bytes = 256;

  int rc = CDCACHE_ENOMEM;
  if (pthread_mutex_init(&c->attach_mu, NULL) != 0)
    goto fail_c;
  c->shards = cdcache__alloc_aligned(&c->cfg.allocator, sizeof(struct cdcache__shard) * c->nshards,
                                     &c->shards_raw);
  if (c->shards == NULL)
    goto fail_mu;
  uint32_t made = 0;
  for (; made < c->nshards; made++) {
    uint64_t share = base + (made < extra);
    rc =
        cdcache__shard_init(&c->shards[made], &c->shard_env, share, live_share, buckets_for(share));
    if (rc != 0)
      goto fail_shards;
  }
  rc = cdcache__tstats_init(&c->tstats, c->id, &c->cfg.allocator);
  if (rc != 0)
    goto fail_shards;
  *out = c;
  return 0;

fail_shards:
  while (made-- > 0)
    cdcache__shard_destroy(&c->shards[made]);
  cdcache__free_aligned(&c->cfg.allocator, c->shards_raw,
                        sizeof(struct cdcache__shard) * c->nshards);
fail_mu:
  pthread_mutex_destroy(&c->attach_mu);
fail_c:
  cdcache__free_aligned(&alloc, self_raw, sizeof *c);
  return rc;
}

int cdcache__close(cdcache_t *c)
{
  /* In a forked child the only thread is this one, and a parent thread
   * may have held attach_mu at the fork: read without it. */
  bool forked = cdcache__forked(c);
  if (!forked)
    pthread_mutex_lock(&c->attach_mu);
  void *sub = c->sub;
  cdcache__detach_fn stop = c->sub_stop;
  if (!forked)
    pthread_mutex_unlock(&c->attach_mu);
  if (sub != NULL && !cdcache__forked(c))
    stop(sub);

  if (!cdcache__forked(c)) {
    for (uint32_t i = 0; i < c->nshards; i++) {
      struct cdcache__shard_report rep = {0};
      cdcache__shard_lock(&c->shards[i]);
      cdcache__shard_clear(&c->shards[i], &rep);
      cdcache__shard_unlock(&c->shards[i]);
    }
    /* Frees every retired entry, and waits for the batches in flight. */
    cdcache__retire_drain_all(c);
  } else if (rcu_usable()) {
    /* A child forked through cdcache_fork_*(): the batches the parent
     * had queued (they may name this handle) are freed first, by the
     * child's reclaimer, then what the shards had retired (only where no
     * parent thread held the lock at the fork). */
    cdcache__retire_drain_forked(c);
  }
  /* In a forked child no other thread exists: free what is linked; what
   * the parent's reclaimer thread held is not this process's to free. */
  for (uint32_t i = 0; i < c->nshards; i++)
    cdcache__shard_destroy(&c->shards[i]);
  cdcache__tstats_destroy(&c->tstats);
  cdcache__free_aligned(&c->cfg.allocator, c->shards_raw,
                        sizeof(struct cdcache__shard) * c->nshards);
  if (!forked)
    pthread_mutex_destroy(&c->attach_mu);
  cdcache_allocator_t alloc = c->cfg.allocator;
  cdcache__free_aligned(&alloc, c->self_raw, sizeof *c);
  return 0;
}

int cdcache__stats(cdcache_t *c, cdcache_stats_t *st)
{
  uint64_t v[CTR__COUNT];
  cdcache__tstats_sum(&c->tstats, v);
  cdcache_stats_t full;
  memset(&full, 0, sizeof full);
  full.hits = v[CTR_HITS];
  full.misses = v[CTR_MISSES];
  full.puts = v[CTR_PUTS];
  full.evictions = v[CTR_EVICTIONS];
  full.expirations = v[CTR_EXPIRATIONS];
  full.deletes = v[CTR_DELETES];
  full.invalidations = v[CTR_INVALIDATIONS];
  full.flushes = v[CTR_FLUSHES];
  full.stale_fills_rejected = v[CTR_STALE_REJECTED];
  full.loads = v[CTR_LOADS];
  full.load_waits = v[CTR_LOAD_WAITS];
  full.long_chains = v[CTR_LONG_CHAINS];
  for (uint32_t i = 0; i < c->nshards; i++) {
    full.entries += atomic_load_explicit(&c->shards[i].n_entries, memory_order_relaxed);
    full.bytes_live += atomic_load_explicit(&c->shards[i].n_bytes, memory_order_relaxed);
  }
  full.bytes_pending_free = atomic_load_explicit(&c->rec.bytes_pending, memory_order_relaxed);
  full.bytes_tables = c->tables_bytes;
  full.bytes_policy = c->policy_bytes;
  full.shards = c->nshards;
  size_t n = st->struct_size < sizeof full ? st->struct_size : sizeof full;
  full.struct_size = st->struct_size;
  memcpy(st, &full, n);
  return 0;
}

/* ------------------------------------------------ hooks for cdc/ */

uint64_t cdcache__now_ms(const cdcache_t *c)
{
  if (c->cfg.clock != NULL)
    return c->cfg.clock(c->cfg.clock_ctx);
  return cdcache__coarse_ms();
}

void *cdcache__alloc(const cdcache_t *c, size_t size)
{
  return c->cfg.allocator.malloc(c->cfg.allocator.ctx, size);
}

void cdcache__free(const cdcache_t *c, void *ptr, size_t size)
{
  if (ptr != NULL)
    c->cfg.allocator.free(c->cfg.allocator.ctx, ptr, size);
}

void cdcache__set_fresh_until(cdcache_t *c, uint64_t ms)
{
  atomic_store_explicit(&c->fresh_until, ms, memory_order_release);
}

bool cdcache__handle_forked(const cdcache_t *c)
{
  return cdcache__forked(c);
}

uint64_t cdcache__fresh_until(const cdcache_t *c)
{
  return atomic_load_explicit(&c->fresh_until, memory_order_acquire);
}

void cdcache__set_cluster_time(cdcache_t *c, uint64_t ts)
{
  atomic_store_explicit(&c->cluster_time, ts, memory_order_relaxed);
}

uint64_t cdcache__cluster_time(const cdcache_t *c)
{
  return atomic_load_explicit(&c->cluster_time, memory_order_relaxed);
}

void cdcache__log(const cdcache_t *c, int level, const char *fmt, ...)
{
  if (c->cfg.log == NULL)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  /* The analyzer loses track of va_start here (a known false report). */
  (void)vsnprintf(msg, sizeof msg, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
  va_end(ap);
  c->cfg.log(c->cfg.log_ctx, level, msg);
}

int cdcache__attach(cdcache_t *c, void *sub, cdcache__detach_fn stop)
{
  int rc = 0;
  pthread_mutex_lock(&c->attach_mu);
  if (c->sub != NULL) {
    rc = CDCACHE_EBUSY;
  } else {
    c->sub = sub;
    c->sub_stop = stop;
  }
  pthread_mutex_unlock(&c->attach_mu);
  return rc;
}

void cdcache__detach(cdcache_t *c, void *sub)
{
  pthread_mutex_lock(&c->attach_mu);
  if (c->sub == sub) {
    c->sub = NULL;
    c->sub_stop = NULL;
  }
  pthread_mutex_unlock(&c->attach_mu);
}
