/*
 * cdcache-bench: internal declarations shared by the harness's files.
 *
 * The harness compares cache implementations ("impls") behind one small
 * vtable (bench_impl_t) on a few workloads.  Each file owns one concept:
 *
 *   bench.c      command line, the suite, repeats and medians, targets
 *   workloads.c  the timed multi-threaded runner (read-hit, zipf,
 *                write-heavy, scale) and trace replay
 *   memcount.c   the counting allocator (live bytes from malloc_usable_size)
 *   hist.c       log-linear latency histogram
 *   rng.c        fixed-seed generators (wyrand) and key encoding
 *   zipf.c       Zipf(s) sampler (Gray et al., as YCSB)
 *   trace.c      .u64 trace loading and discovery
 *   exact_lru.c  hash map + doubly linked list, exact LRU, one thread
 *   mutex_lru.c  exact_lru behind one global pthread mutex
 *   sharded_lru.c  exact_lru per shard, one pthread mutex each
 *   lfht_ref.c   liburcu cds_lfht lookup loop (the RCU lookup limit)
 *   child.c      running one point in another process (the static row)
 *   meta.c       what the JSON records about the build and the machine
 *   cdcache_impl.c  the cdcache adapter
 *   cdc_bench.c  the change-stream pipeline benchmark
 *   report.c     table, JSON Lines, gnuplot charts, targets
 */
#ifndef CDCACHE_BENCH_H
#define CDCACHE_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------ memcount */

#define MEMCOUNT_SLOTS 64

/* Live allocator bytes, summed per thread slot to keep the count off a
 * shared cache line.  Synchronization: each slot is atomic (relaxed); a
 * sum is exact once every thread that allocated has stopped. */
typedef struct memcount {
  struct {
    _Atomic int64_t bytes;
    char pad[64 - sizeof(int64_t)];
  } slot[MEMCOUNT_SLOTS];
} memcount_t;

void memcount_init(memcount_t *mc);
/* malloc/free that charge malloc_usable_size() to mc. */
void *memcount_malloc(memcount_t *mc, size_t size);
void *memcount_calloc(memcount_t *mc, size_t n, size_t size);
void memcount_free(memcount_t *mc, void *ptr);
/* Charges (or with a negative n, refunds) bytes allocated elsewhere. */
void memcount_add(memcount_t *mc, int64_t n);
int64_t memcount_bytes(const memcount_t *mc);
/* aligned_alloc(64, ...) with the size rounded up as C11 requires; for the
 * impls' handles (memcount_t is cache-line padded).  free() releases it. */
void *bench_alloc64(size_t size);

/* ----------------------------------------------------------------- hist */

/* Log-linear histogram of nanoseconds: 16 sub-buckets per power of two
 * (worst relative error 1/16).  One per thread; merged after the run. */
#define HIST_SUB 16
#define HIST_BUCKETS (64 * HIST_SUB)
typedef struct hist {
  uint64_t count;
  uint64_t b[HIST_BUCKETS];
} hist_t;

void hist_clear(hist_t *h);
void hist_record(hist_t *h, uint64_t ns);
void hist_merge(hist_t *dst, const hist_t *src);
/* Value at quantile q (0..1), the upper edge of its bucket; 0 if empty. */
double hist_quantile(const hist_t *h, double q);

/* ------------------------------------------------------------------ rng */

/* wyrand: one multiply per number, period 2^64.  Fixed seeds only. */
static inline uint64_t rng_next(uint64_t *s)
{
  *s += 0xa0761d6478bd642fULL;
  __uint128_t t = (__uint128_t)*s * (*s ^ 0xe7037ed1a0b428dbULL);
  return (uint64_t)(t >> 64) ^ (uint64_t)t;
}
/* Uniform in [0, n) (Lemire's multiply-shift; bias < n / 2^64). */
static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
  return (uint64_t)(((__uint128_t)rng_next(s) * n) >> 64);
}
/* Uniform double in [0, 1). */
static inline double rng_unit(uint64_t *s)
{
  return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

#define BENCH_SEED 0x6364636163686521ULL /* "cdcache!" */

/* Writes key number id as ksz bytes: the id little-endian in the first 8
 * bytes, then a pattern derived from it (so compares see every byte). */
void key_encode(unsigned char *buf, size_t ksz, uint64_t id);
/* The value stored for id: vsz bytes derived from it. */
void value_encode(unsigned char *buf, size_t vsz, uint64_t id);
uint64_t bench_now_ns(void); /* CLOCK_MONOTONIC */

/* The loader of the cache-aside workloads (load, lease): it spins on the
 * clock for cost_ns (the source of truth's latency, as CPU time so that a
 * sleeping loader does not hand its CPU to other threads) and yields
 * value. */
typedef struct bench_loader {
  uint64_t cost_ns;
  const void *value;
  size_t vlen;
} bench_loader_t;
/* Runs one load and counts it for the calling thread. */
void bench_load_spin(const bench_loader_t *ld);
/* Loads the calling thread has run. */
uint64_t bench_loads_get(void);
/* Involuntary context switches of the calling thread so far. */
uint64_t thread_nivcsw(void);

/* ----------------------------------------------------------------- zipf */

/* Zipf over ranks 0..n-1 with exponent s (0 < s < 1), Gray et al.'s
 * method as in YCSB's ZipfianGenerator: one pow() per sample. */
typedef struct zipf {
  uint64_t n;
  double theta, alpha, zetan, eta, half_pow_theta;
} zipf_t;

/* zeta(n, s) is O(n) and cached per (n, s) for the process. */
void zipf_init(zipf_t *z, uint64_t n, double s);
uint64_t zipf_next(const zipf_t *z, uint64_t *rng);

/* ---------------------------------------------------------------- trace */

typedef struct trace {
  char *path;
  char *name;    /* basename without .u64 */
  uint64_t *ids; /* requests in order */
  size_t n;      /* requests */
  size_t unique; /* distinct ids */
} trace_t;

int trace_load(const char *path, trace_t *t); /* 0 or -errno */
void trace_free(trace_t *t);
/* A generated stream: n Zipf(s) ranks over 0..keys-1, from BENCH_SEED. */
int trace_zipf(trace_t *t, uint64_t keys, double s, size_t n);
/* Finds the shared traces directory ($CDCACHE_TRACES_DIR, ../shared/traces
 * from the cwd, or from the repository); returns a malloc'ed path or NULL. */
char *trace_find_dir(void);
/* Lists *.u64 in dir (sorted), NULL-terminated, malloc'ed. */
char **trace_list(const char *dir);

/* ---------------------------------------------------------------- impls */

typedef struct impl_cfg {
  uint64_t capacity; /* entries */
  size_t key_size, value_size;
  uint32_t shards; /* cdcache only; 0 = library default */
} impl_cfg_t;

/* Process-wide resident set size now, in bytes (/proc/self/statm). */
int64_t bench_rss_bytes(void);

/*
 * One cache implementation.  get/put may run on any number of threads at
 * once unless single_thread is set.  get returns 1 on a hit (value copied
 * into buf, except lfht-ref, which copies nothing), 0 on a miss.
 */
typedef struct bench_impl {
  const char *name;
  bool single_thread;
  int (*open)(const impl_cfg_t *cfg, void **out);
  void (*close)(void *h);
  int (*get)(void *h, const void *key, size_t klen, void *buf, size_t cap);
  void (*put)(void *h, const void *key, size_t klen, const void *val, size_t vlen);
  /* Waits until memory unlinked by earlier calls is freed (a grace
   * period); called with no other thread using h. */
  void (*settle)(void *h);
  /* Bytes unlinked but still allocated after settle (cdcache's partial
   * retire batches); NULL: none. */
  int64_t (*pending_bytes)(void *h);
  /* Cache-aside through the impl's own API (cdcache_get_or_load; leases):
   * returns 1 when served without this thread running the loader.  NULL:
   * the harness does get, then on a miss load and put. */
  int (*load)(void *h, const void *key, size_t klen, void *buf, size_t cap,
              const bench_loader_t *ld);
  int (*lease)(void *h, const void *key, size_t klen, void *buf, size_t cap,
               const bench_loader_t *ld);
  /* Not NULL: the impl runs in a child process, this executable's
   * sibling of that name (cdcache-bench-static); the fields above are
   * unused. */
  const char *child_exe;
  uint64_t (*entries)(void *h);
  /* Bytes the allocator handed out and the impl still holds. */
  int64_t (*mem_bytes)(void *h);
  /* Bytes the impl itself reports (cdcache_stats), or -1. */
  int64_t (*self_bytes)(void *h);
  /* Of those, the eviction policy's own structures (cdcache's s3fifo
   * sketch and ghost); NULL when the impl has none. */
  int64_t (*policy_bytes)(void *h);
} bench_impl_t;

extern const bench_impl_t impl_cdcache;
extern const bench_impl_t impl_cdcache_s3fifo; /* cdcache with CDCACHE_ALLKEYS_S3FIFO */
extern const bench_impl_t impl_mutex_lru;
extern const bench_impl_t impl_lfht_ref;
extern const bench_impl_t impl_exact_lru;
extern const bench_impl_t impl_sharded_lru;
/* cdcache linked statically: runs in cdcache-bench-static (child.c). */
extern const bench_impl_t impl_cdcache_static;
/* "shared" or "static": how this executable links cdcache. */
extern const char bench_linkage[];
/* The cdcache_t * behind an impl_cdcache handle (for the cdc benchmark). */
struct cdcache;
struct cdcache *impl_cdcache_handle(void *h);

/* exact_lru.c's structure, reused by mutex_lru.c. */
typedef struct exact_lru exact_lru_t;
exact_lru_t *exact_lru_new(uint64_t capacity, memcount_t *mc);
void exact_lru_delete(exact_lru_t *l);
/* h is the key's bench_hash() under the caller's secret; low bits pick
 * the bucket. */
int exact_lru_get(exact_lru_t *l, uint64_t h, const void *key, size_t klen, void *buf, size_t cap);
void exact_lru_put(exact_lru_t *l, uint64_t h, const void *key, size_t klen, const void *val,
                   size_t vlen);
uint64_t exact_lru_count(const exact_lru_t *l);

/* -------------------------------------------------------------- results */

typedef enum {
  WL_READ_HIT,
  WL_ZIPF,
  WL_WRITE_HEAVY,
  WL_TRACE,
  WL_CDC,
  WL_LOAD,  /* zipf cache-aside through get_or_load (or get, load, put) */
  WL_LEASE, /* the same through leases */
} wl_kind_t;

/* Latency is kept per kind of operation. */
typedef enum {
  OP_GET_HIT,
  OP_GET_MISS,
  OP_PUT,
  OP_LOAD_MISS, /* a get_or_load (or get, load, put) that ran the loader */
  OP__KINDS
} op_kind_t;
extern const char *const op_kind_name[OP__KINDS];

/* One measured (workload, impl, threads, entries) point; the reported
 * figure is the per-field median over --repeat runs. */
typedef struct result {
  char workload[128]; /* "read-hit", "scale/zipf", "trace:w106@0.01", ... */
  char impl[32];
  unsigned threads;
  uint64_t entries; /* capacity */
  size_t value_size;
  double ops_per_sec;
  double hit_ratio;
  double offered_ops_per_sec;     /* --rate (open loop); -1 closed loop */
  double p50_ns, p99_ns, p999_ns; /* every sampled op */
  /* Per op kind (op_kind_t): p50, p99, p99.9; -1 when no sample. */
  double kp50[OP__KINDS], kp99[OP__KINDS], kp999[OP__KINDS];
  /* Allocator bytes of the impl (memcount) and the process's RSS: peak
   * sampled every millisecond during the timed run, and after settle
   * (drained: pending bytes subtracted). */
  double mem_peak_bytes, mem_drained_bytes, rss_peak_bytes, rss_base_bytes;
  double bytes_per_entry;        /* from the allocator hook; -1 unknown */
  double stats_bytes_per_entry;  /* from the impl's own stats; -1 none */
  double policy_bytes_per_entry; /* of bytes_per_entry, the policy's sketch and ghost; -1 none */
  double live_entries;
  double ref_miss_ratio;      /* trace: exact-lru's miss ratio; -1 otherwise */
  double caffeine_miss_ratio; /* trace: Caffeine 2.6.2's (shared/traces/README.md); -1 none */
  /* cdc only (NaN-free: -1 when not measured) */
  double events_per_sec, keys_per_sec, cdc_cpu_ns_per_key;
  double offered_writes_per_sec, lag_p50_ms, lag_p99_ms;
  double achieved_writes_per_sec;
  double lag_wall_p50_ms, lag_wall_p99_ms;      /* from the commit's wallTime (ms) */
  double lag_lost_keys, lag_keys, lag_negative; /* not seen evicted; measured; gone before ack */
  double present_before_throughput;             /* keys cached when the phase began */
  double invalidated_present; /* cache invalidations counted in the throughput phase */
#define LAG_QUANTILES 13
  double lag_q_ms[LAG_QUANTILES]; /* lag (ack) at lag_q[] */
  double reader_ops_per_sec_idle, reader_ops_per_sec_storm;
  double cdc_busy; /* CDC thread CPU / wall time in the throughput phase */
  /* Involuntary context switches per second of the run, all threads: the
   * run's threads were preempted by other processes.  bench.c re-runs a
   * run above DISTURBED_PREEMPT_PER_S (at most twice). */
  double preempt_per_sec;
  double retries;
  /* filled by bench.c: min and max over the repetitions of every figure
   * take_medians reports (indexed as its table) */
#define RESULT_SPREAD 28
  double min[RESULT_SPREAD], max[RESULT_SPREAD];
  int nrep;
  /* filled by report.c */
  double ratio_mutex, ratio_lfht, ratio_sharded;
} result_t;
extern const double lag_q[LAG_QUANTILES];

/* The figures of result_t reported with their min and max (bench.c). */
typedef struct spread_field {
  const char *name;
  size_t off;
} spread_field_t;
extern const spread_field_t spread_fields[];
extern const size_t n_spread;

void result_init(result_t *r);

/* ---------------------------------------------------------------- options */

typedef struct opts {
  unsigned threads[16];
  int nthreads;
  double seconds;
  uint64_t capacity;
  int repeat;
  size_t key_size, value_size;
  const char *json_path;
  const char *plot_dir;
  bool quiet;
  bool verbose;        /* print every run, not only the medians */
  bool full;           /* --full: every value size, thread count and reference */
  double rate;         /* --rate: offered ops/s over all threads (open loop); 0 closed */
  uint64_t load_ns;    /* --load-us: the loader's cost */
  const char *exe_dir; /* directory of this executable (for the static sibling) */
} opts_t;

/* ---------------------------------------------------------------- runner */

/* Runs one timed synthetic run (READ_HIT, ZIPF, WRITE_HEAVY, LOAD,
 * LEASE). */
int run_synthetic(const opts_t *o, const bench_impl_t *impl, wl_kind_t wl, unsigned threads,
                  uint64_t capacity, result_t *out);
/* Replays a trace once, single-threaded, get then put on a miss. */
int run_trace(const opts_t *o, const bench_impl_t *impl, const trace_t *t, uint64_t capacity,
              result_t *out);

/*
 * The keys of a run, generated before it is timed: n (a power of two) keys
 * of `stride` bytes each (klen[i] bytes used when klen is not NULL: the
 * cdc benchmark's decimal ids), and for write-heavy whether each op is a
 * put.  Threads walk the array from different offsets, wrapping around.
 */
typedef struct keyset {
  unsigned char *keys;
  uint8_t *klen;  /* NULL: every key is `stride` bytes */
  uint8_t *isput; /* NULL: no op is a put */
  size_t n, stride;
} keyset_t;
/* Zipf(0.99) ids over `space` ids as decimal text keys (the cdc rule's). */
int keyset_text_zipf(keyset_t *ks, uint64_t space, uint64_t seed);
void keyset_free(keyset_t *ks);

/* Synthetic loop also used by the cdc benchmark: cache-aside (get, put on
 * a miss) over ks on an existing cache until *stop; counts ops. */
typedef struct reader_arg {
  const bench_impl_t *impl;
  void *h;
  const opts_t *o;
  const keyset_t *ks;
  size_t start; /* first index into ks */
  unsigned tid;
  unsigned threads; /* of the run (the open-loop rate is split evenly) */
  _Atomic int *stop;
  hist_t *hist;    /* OP__KINDS histograms */
  hist_t *all;     /* every sampled op (a zipf step: get and put) */
  uint64_t nivcsw; /* involuntary context switches during the run */
  uint64_t ops, hits, gets;
  uint64_t t0, t1;
} reader_arg_t;
void reader_zipf_loop(reader_arg_t *a);
void pin_to_cpu(unsigned i);
/* Lets the calling thread run on every CPU again. */
void unpin(void);
/* Runs a synthetic point in child_exe (impl->child_exe); 0 or -1. */
int run_in_child(const opts_t *o, const bench_impl_t *impl, wl_kind_t wl, unsigned threads,
                 uint64_t capacity, result_t *out);
/* write() all of buf (0, or -1); read() up to len bytes until EOF
 * (returns the count). */
int bench_write_all(int fd, const void *buf, size_t len);
size_t bench_read_all(int fd, void *buf, size_t len);
/* The child's side (--point-child-fd FD --point KIND,THREADS,CAPACITY). */
int point_child(const opts_t *o, int fd, const char *spec);

/* ---------------------------------------------------------------- meta */

/* One JSON object (no newline): commit, compiler, flags, build type,
 * linkage, CPU model, kernel. */
void meta_json(FILE *f);
/* One line for the table's header. */
void meta_line(FILE *f);

/* ---------------------------------------------------------------- cdc */

/* Runs the cdc benchmark; returns 1 and fills *out when it ran, 0 when it
 * was skipped (*why says why). */
int cdc_bench_run(const opts_t *o, result_t *out, char *why, size_t why_len);
/* The same in a child process (this executable, re-run with
 * --cdc-child-fd), so that a crash in the CDC module or the server cannot
 * take the rest of the suite's results with it. */
int cdc_bench_isolated(const opts_t *o, result_t *out, char *why, size_t why_len);
/* The child's side: runs cdc_bench_run and writes its result to fd. */
int cdc_bench_child(const opts_t *o, int fd);

/* ---------------------------------------------------------------- report */

void progress(const opts_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void progress_done(const opts_t *o);
void report_ratios(result_t *rs, size_t n, const opts_t *o);
void report_table(const result_t *rs, size_t n);
int report_json(const char *path, const result_t *rs, size_t n, const opts_t *o);
int report_plots(const char *dir, const result_t *rs, size_t n);
/* The "targets" section; notes lists skipped parts (may be NULL). */
void report_targets(const result_t *rs, size_t n, const opts_t *o);
/* Caffeine 2.6.2's miss ratio on a shared trace point ("trace:NAME@0.01"),
 * as shared/traces/README.md lists it; -1 when it lists none. */
double caffeine_miss_ratio(const char *workload);

#endif /* CDCACHE_BENCH_H */
