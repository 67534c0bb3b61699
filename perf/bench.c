/*
 * cdcache-bench: command line, the suite plan, repeats and medians.
 *
 * Each WORKLOAD expands into measured points (workload, impl, threads,
 * entries, value size).  The plan runs every point --repeat times,
 * interleaving the impls inside each repetition (rep 1 of every impl, then
 * rep 2, ...) so that drift in the machine's state hits them alike, and
 * reports the per-field median with its min and max.  A run preempted by
 * other processes is retried like any other, whatever its impl, and the
 * JSON records how many retries each point took.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef CDCACHE_BENCH_LINKAGE
#define CDCACHE_BENCH_LINKAGE "unknown"
#endif
const char bench_linkage[] = CDCACHE_BENCH_LINKAGE;

#define MAX_REPEAT 99
#define DEFAULT_SECONDS 0.5
#define DEFAULT_CAPACITY 100000ULL
#define DEFAULT_REPEAT 3
#define DEFAULT_LOAD_US 1.0
/* A run whose threads were preempted more often than this (per second,
 * all threads) shared its CPUs with another process: it is run again, at
 * most MAX_RETRIES times, and the least disturbed attempt is kept (one
 * retry: on a busy machine more only lengthen the suite). */
#define DISTURBED_PREEMPT_PER_S 20.0
#define MAX_RETRIES 1

typedef struct point {
  result_t med;
  result_t *reps;
  int nrep;
  wl_kind_t kind;
  const bench_impl_t *impl;
  unsigned threads;
  uint64_t capacity;
  size_t value_size;
  const trace_t *trace;
} point_t;

typedef struct plan {
  point_t *pts;
  size_t npts, cap;
  int *jobs; /* point index per run, in execution order */
  size_t njobs, jcap;
} plan_t;

/* The impls of each part of the plan.  The default suite keeps to what its
 * targets and tables need (about 5 minutes on 2 CPUs); --full and named
 * workloads run every impl. */
static const bench_impl_t *const all_impls[] = {&impl_cdcache, &impl_cdcache_static,
                                                &impl_sharded_lru, &impl_mutex_lru, &impl_lfht_ref};
static const bench_impl_t *const ref_impls[] = {&impl_cdcache, &impl_sharded_lru, &impl_mutex_lru,
                                                &impl_lfht_ref};
/* Without the static row (it runs at read-hit in the suite). */
static const bench_impl_t *const suite_impls[] = {&impl_cdcache, &impl_sharded_lru, &impl_mutex_lru,
                                                  &impl_lfht_ref};
/* lfht-ref has no eviction: as a cache-aside reference it would load
 * forever once full, so the load workloads leave it out; it copies no
 * value, so the value-size rows leave it out too. */
static const bench_impl_t *const load_impls[] = {&impl_cdcache, &impl_cdcache_static,
                                                 &impl_sharded_lru, &impl_mutex_lru};
static const bench_impl_t *const suite_load_impls[] = {&impl_cdcache, &impl_sharded_lru,
                                                       &impl_mutex_lru};
/* The references have no leases: their lease row would repeat load's. */
static const bench_impl_t *const lease_impls[] = {&impl_cdcache, &impl_cdcache_static};
static const bench_impl_t *const cdcache_only[] = {&impl_cdcache};
static const bench_impl_t *const s3fifo_only[] = {&impl_cdcache_s3fifo};
/* scale's target is against lfht-ref. */
static const bench_impl_t *const scale_impls[] = {&impl_cdcache, &impl_lfht_ref};
static const bench_impl_t *const trace_impls[] = {&impl_cdcache,   &impl_cdcache_s3fifo,
                                                  &impl_exact_lru, &impl_sharded_lru,
                                                  &impl_mutex_lru, &impl_lfht_ref};
/* The suite's traces are for the miss ratio (deterministic): one run each. */
static const bench_impl_t *const suite_trace_impls[] = {&impl_cdcache, &impl_cdcache_s3fifo,
                                                        &impl_exact_lru};
/* zipf-stream measures hit ratio, not speed: the policies and exact LRU. */
static const bench_impl_t *const zstream_impls[] = {&impl_cdcache, &impl_cdcache_s3fifo,
                                                    &impl_exact_lru};
/* zipf-stream: requests per entry of capacity (10^7 at the default 10^5). */
#define ZSTREAM_REQS_PER_ENTRY 100
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* --impls filter: NULL keeps every impl. */
static const char *impl_filter;
/* The static sibling was found next to this executable. */
static bool have_static;

static int impl_selected(const bench_impl_t *impl)
{
  if (impl->child_exe && !have_static)
    return 0;
  if (!impl_filter)
    return 1;
  size_t l = strlen(impl->name);
  for (const char *p = impl_filter; (p = strstr(p, impl->name)); p += l)
    if ((p == impl_filter || p[-1] == ',') && (p[l] == 0 || p[l] == ','))
      return 1;
  return 0;
}

static void *xrealloc(void *p, size_t n)
{
  void *q = realloc(p, n);
  if (!q) {
    fprintf(stderr, "cdcache-bench: out of memory\n");
    exit(1);
  }
  return q;
}

static size_t add_point(plan_t *pl, const char *label, wl_kind_t kind, const bench_impl_t *impl,
                        unsigned threads, uint64_t capacity, size_t vsz, const trace_t *t,
                        int repeat)
{
  if (pl->npts == pl->cap) {
    pl->cap = pl->cap ? pl->cap * 2 : 64;
    pl->pts = xrealloc(pl->pts, pl->cap * sizeof *pl->pts);
  }
  point_t *p = &pl->pts[pl->npts];
  memset(p, 0, sizeof *p);
  result_init(&p->med);
  snprintf(p->med.workload, sizeof p->med.workload, "%s", label);
  p->reps = calloc((size_t)repeat, sizeof *p->reps);
  p->kind = kind;
  p->impl = impl;
  p->threads = threads;
  p->capacity = capacity;
  p->value_size = vsz;
  p->trace = t;
  return pl->npts++;
}

static void add_job(plan_t *pl, size_t point)
{
  if (pl->njobs == pl->jcap) {
    pl->jcap = pl->jcap ? pl->jcap * 2 : 256;
    pl->jobs = xrealloc(pl->jobs, pl->jcap * sizeof *pl->jobs);
  }
  pl->jobs[pl->njobs++] = (int)point;
}

/* Adds the points of one group (the same label, size and value size,
 * every impl and thread count) and its interleaved jobs.  The static row
 * only at 1 and 2 threads unless --full; `repeat` runs of each point. */
static void plan_group(plan_t *pl, const opts_t *o, const char *label, wl_kind_t kind,
                       const bench_impl_t *const *impls, size_t nimpl, const unsigned *threads,
                       int nthreads, uint64_t capacity, size_t vsz, const trace_t *t, int repeat)
{
  size_t first = pl->npts;
  for (int ti = 0; ti < nthreads; ti++)
    for (size_t ii = 0; ii < nimpl; ii++)
      if (impl_selected(impls[ii]) && !(impls[ii]->child_exe && !o->full && threads[ti] > 2))
        add_point(pl, label, kind, impls[ii], threads[ti], capacity, vsz, t, o->repeat);
  for (int r = 0; r < repeat; r++)
    for (size_t p = first; p < pl->npts; p++)
      add_job(pl, p);
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median_of(const result_t *reps, int n, size_t off)
{
  double v[MAX_REPEAT] = {0};
  for (int i = 0; i < n; i++)
    memcpy(&v[i], (const char *)&reps[i] + off, sizeof v[i]);
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double extreme_of(const result_t *reps, int n, size_t off, int want_max)
{
  double best = 0;
  for (int i = 0; i < n; i++) {
    double v;
    memcpy(&v, (const char *)&reps[i] + off, sizeof v);
    if (i == 0 || (want_max ? v > best : v < best))
      best = v;
  }
  return best;
}

/* The figures reported as median, min and max over the repetitions, in
 * the order of result_t's min[] / max[]; report.c writes them to the JSON
 * under these names (NAME, NAME_min, NAME_max). */
#define SPREAD(name, field)                                                                        \
  {                                                                                                \
    name, offsetof(result_t, field)                                                                \
  }
const spread_field_t spread_fields[] = {
    SPREAD("ops_per_sec", ops_per_sec),
    SPREAD("hit_ratio", hit_ratio),
    SPREAD("p50_ns", p50_ns),
    SPREAD("p99_ns", p99_ns),
    SPREAD("p999_ns", p999_ns),
    SPREAD("get_hit_p50_ns", kp50[OP_GET_HIT]),
    SPREAD("get_hit_p99_ns", kp99[OP_GET_HIT]),
    SPREAD("get_hit_p999_ns", kp999[OP_GET_HIT]),
    SPREAD("get_miss_p50_ns", kp50[OP_GET_MISS]),
    SPREAD("get_miss_p99_ns", kp99[OP_GET_MISS]),
    SPREAD("get_miss_p999_ns", kp999[OP_GET_MISS]),
    SPREAD("put_p50_ns", kp50[OP_PUT]),
    SPREAD("put_p99_ns", kp99[OP_PUT]),
    SPREAD("put_p999_ns", kp999[OP_PUT]),
    SPREAD("load_miss_p50_ns", kp50[OP_LOAD_MISS]),
    SPREAD("load_miss_p99_ns", kp99[OP_LOAD_MISS]),
    SPREAD("load_miss_p999_ns", kp999[OP_LOAD_MISS]),
    SPREAD("bytes_per_entry", bytes_per_entry),
    SPREAD("stats_bytes_per_entry", stats_bytes_per_entry),
    SPREAD("policy_bytes_per_entry", policy_bytes_per_entry),
    SPREAD("live_entries", live_entries),
    SPREAD("mem_peak_bytes", mem_peak_bytes),
    SPREAD("mem_drained_bytes", mem_drained_bytes),
    SPREAD("rss_peak_bytes", rss_peak_bytes),
    SPREAD("preempt_per_sec", preempt_per_sec),
};
const size_t n_spread = NELEM(spread_fields);
_Static_assert(NELEM(spread_fields) <= RESULT_SPREAD, "result_t's min/max arrays are too short");

static void take_medians(point_t *p)
{
  if (p->nrep == 0)
    return;
  p->med.threads = p->threads;
  p->med.entries = p->capacity;
  p->med.value_size = p->value_size;
  p->med.offered_ops_per_sec = p->reps[0].offered_ops_per_sec;
  p->med.rss_base_bytes = p->reps[0].rss_base_bytes;
  p->med.nrep = p->nrep;
  snprintf(p->med.impl, sizeof p->med.impl, "%s", p->impl->name);
  double retries = 0;
  for (int i = 0; i < p->nrep; i++)
    retries += p->reps[i].retries;
  p->med.retries = retries;
  for (size_t i = 0; i < n_spread; i++) {
    size_t off = spread_fields[i].off;
    double m = median_of(p->reps, p->nrep, off);
    memcpy((char *)&p->med + off, &m, sizeof m);
    p->med.min[i] = extreme_of(p->reps, p->nrep, off, 0);
    p->med.max[i] = extreme_of(p->reps, p->nrep, off, 1);
  }
}

static void usage(FILE *f)
{
  fprintf(f,
          "usage: cdcache-bench [--threads 1,2] [--seconds S] [--capacity N]\n"
          "                     [--repeat N] [--key-size B] [--value-size B]\n"
          "                     [--impls LIST] [--rate OPS] [--load-us US] [--full]\n"
          "                     [--json FILE] [--plot DIR] [--quiet] [--verbose]\n"
          "                     [WORKLOAD ...]\n"
          "WORKLOAD: read-hit | zipf | write-heavy | load | lease | trace:FILE[@SIZE]\n"
          "          | zipf-stream | cdc | scale\n"
          "  SIZE is an entry count or a fraction of the trace's unique ids (0.01);\n"
          "  without @SIZE a trace runs at 0.01 and 0.1.\n"
          "No WORKLOAD runs the default suite (about 5 min on 2 CPUs): read-hit at\n"
          "1,2,4,8 threads, zipf, write-heavy, load, lease, read-hit at 64, 512 and\n"
          "4096-byte values, zipf-stream, cdc, scale up to 10^6 entries, every shared\n"
          "trace at 1%%"
          " and 10%%.  --full: every workload at threads 1,2,4,8 and values\n"
          "8,64,512,4096 with every impl.\n"
          "Defaults: --threads 1,2 --seconds %.1f --capacity %llu --repeat %d,\n"
          "--load-us %.0f, 8-byte keys and values, impls cdcache (shared library),\n"
          "cdcache-static, sharded-mutex-lru, mutex-lru, lfht-ref (traces also\n"
          "exact-lru).  See perf/README.md.\n",
          DEFAULT_SECONDS, (unsigned long long)DEFAULT_CAPACITY, DEFAULT_REPEAT, DEFAULT_LOAD_US);
}

static int parse_u64(const char *s, uint64_t *out)
{
  char *end;
  errno = 0;
  double d = strtod(s, &end);
  if (errno || end == s || *end || d < 1 || d > 1e12 || d != floor(d))
    return -1;
  *out = (uint64_t)d;
  return 0;
}

static int parse_threads(const char *s, opts_t *o)
{
  o->nthreads = 0;
  char *dup = strdup(s), *save = NULL;
  for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    uint64_t v;
    if (parse_u64(tok, &v) != 0 || v > 1024 || o->nthreads == 16) {
      free(dup);
      return -1;
    }
    o->threads[o->nthreads++] = (unsigned)v;
  }
  free(dup);
  return o->nthreads ? 0 : -1;
}

/* Busy CPU time of the whole machine (/proc/stat), in seconds. */
static double machine_busy_s(void)
{
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return -1;
  unsigned long long v[10] = {0};
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 8)
    return -1;
  /* user nice system [idle iowait] irq softirq steal */
  double ticks = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
  return ticks / (double)sysconf(_SC_CLK_TCK);
}

/* CPU time of this process and its waited-for children, in seconds. */
static double own_cpu_s(void)
{
  struct rusage a, b;
  getrusage(RUSAGE_SELF, &a);
  getrusage(RUSAGE_CHILDREN, &b);
  return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
         (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
                  b.ru_stime.tv_usec) /
             1e6;
}

typedef struct trace_req {
  const char *spec; /* the argument after "trace:", until duplicated into path */
  char *path;
  double size; /* < 1: fraction; else count; 0: both defaults */
} trace_req_t;

/* Frees the plan, the first nloaded traces, the traces array and the trace paths. */
static void free_run(plan_t *pl, trace_t *traces, int nloaded, trace_req_t *treq, int ntreq)
{
  for (size_t i = 0; i < pl->npts; i++)
    free(pl->pts[i].reps);
  free(pl->pts);
  free(pl->jobs);
  for (int i = 0; i < nloaded; i++)
    trace_free(&traces[i]);
  free(traces);
  for (int i = 0; i < ntreq; i++)
    free(treq[i].path);
}

int main(int argc, char **argv)
{
  opts_t o = {.threads = {1, 2},
              .nthreads = 2,
              .seconds = DEFAULT_SECONDS,
              .capacity = DEFAULT_CAPACITY,
              .repeat = DEFAULT_REPEAT,
              .key_size = 8,
              .value_size = 8,
              .load_ns = (uint64_t)(DEFAULT_LOAD_US * 1000)};
  bool w_read = false, w_zipf = false, w_write = false, w_cdc = false, w_scale = false, any = false;
  bool w_load = false, w_lease = false, suite = false;
  const char *point_spec = NULL;
  static char exe_dir[4096];
  ssize_t el = readlink("/proc/self/exe", exe_dir, sizeof exe_dir - 1);
  if (el > 0) {
    exe_dir[el] = 0;
    o.exe_dir = dirname(exe_dir);
  }
  bool w_zstream = false;
  uint64_t scale_max = 10000000ULL;
  trace_req_t treq[64];
  int ntreq = 0, cdc_child_fd = -1, point_child_fd = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t u;
#define NEED_ARG                                                                                   \
  do {                                                                                             \
    if (!v) {                                                                                      \
      fprintf(stderr, "cdcache-bench: %s needs a value\n", a);                                     \
      return 2;                                                                                    \
    }                                                                                              \
    i++;                                                                                           \
  } while (0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--threads")) {
      NEED_ARG;
      if (parse_threads(v, &o) != 0) {
        fprintf(stderr, "cdcache-bench: bad --threads '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--seconds")) {
      NEED_ARG;
      o.seconds = strtod(v, NULL);
      if (!(o.seconds > 0 && o.seconds < 3600)) {
        fprintf(stderr, "cdcache-bench: bad --seconds '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--capacity")) {
      NEED_ARG;
      if (parse_u64(v, &o.capacity) != 0) {
        fprintf(stderr, "cdcache-bench: bad --capacity '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--repeat")) {
      NEED_ARG;
      if (parse_u64(v, &u) != 0 || u > MAX_REPEAT) {
        fprintf(stderr, "cdcache-bench: bad --repeat '%s' (1..%d)\n", v, MAX_REPEAT);
        return 2;
      }
      o.repeat = (int)u;
    } else if (!strcmp(a, "--key-size")) {
      NEED_ARG;
      if (parse_u64(v, &u) != 0 || u < 8 || u > 1024) {
        fprintf(stderr, "cdcache-bench: --key-size must be 8..1024\n");
        return 2;
      }
      o.key_size = (size_t)u;
    } else if (!strcmp(a, "--value-size")) {
      NEED_ARG;
      if (parse_u64(v, &u) != 0 || u > 4096) {
        fprintf(stderr, "cdcache-bench: --value-size must be 1..4096\n");
        return 2;
      }
      o.value_size = (size_t)u;
    } else if (!strcmp(a, "--json")) {
      NEED_ARG;
      o.json_path = v;
    } else if (!strcmp(a, "--plot")) {
      NEED_ARG;
      o.plot_dir = v;
    } else if (!strcmp(a, "--impls")) {
      NEED_ARG;
      impl_filter = v;
    } else if (!strcmp(a, "--cdc-child-fd")) { /* internal: see cdc_bench.c */
      NEED_ARG;
      cdc_child_fd = atoi(v);
    } else if (!strcmp(a, "--point-child-fd")) { /* internal: see child.c */
      NEED_ARG;
      point_child_fd = atoi(v);
    } else if (!strcmp(a, "--point")) { /* internal: see child.c */
      NEED_ARG;
      point_spec = v;
    } else if (!strcmp(a, "--rate")) {
      NEED_ARG;
      o.rate = strtod(v, NULL);
      if (!(o.rate >= 0 && o.rate < 1e10)) {
        fprintf(stderr, "cdcache-bench: bad --rate '%s'\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--load-us")) {
      NEED_ARG;
      double us = strtod(v, NULL);
      if (!(us >= 0 && us < 1e6)) {
        fprintf(stderr, "cdcache-bench: bad --load-us '%s'\n", v);
        return 2;
      }
      o.load_ns = (uint64_t)(us * 1000);
    } else if (!strcmp(a, "--full")) {
      o.full = true;
    } else if (!strcmp(a, "--verbose")) {
      o.verbose = true;
    } else if (!strcmp(a, "--quiet")) {
      o.quiet = true;
    } else if (!strcmp(a, "read-hit")) {
      w_read = any = true;
    } else if (!strcmp(a, "zipf")) {
      w_zipf = any = true;
    } else if (!strcmp(a, "write-heavy")) {
      w_write = any = true;
    } else if (!strcmp(a, "load")) {
      w_load = any = true;
    } else if (!strcmp(a, "lease")) {
      w_lease = any = true;
    } else if (!strcmp(a, "cdc")) {
      w_cdc = any = true;
    } else if (!strcmp(a, "scale")) {
      w_scale = any = true;
    } else if (!strcmp(a, "zipf-stream")) {
      w_zstream = any = true;
    } else if (!strncmp(a, "trace:", 6) && ntreq < 64) {
      any = true;
      const char *at = strrchr(a + 6, '@');
      treq[ntreq].size = 0;
      if (at) {
        char *end;
        double d = strtod(at + 1, &end);
        if (*end || !(d > 0) || (d >= 1 && d != floor(d))) {
          fprintf(stderr, "cdcache-bench: bad trace size '%s'\n", at + 1);
          return 2;
        }
        treq[ntreq].size = d;
      }
      treq[ntreq].spec = a + 6;
      treq[ntreq++].path = NULL; /* duplicated once the arguments are all valid */
    } else {
      fprintf(stderr, "cdcache-bench: unknown argument '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (cdc_child_fd >= 0)
    return cdc_bench_child(&o, cdc_child_fd);
  if (point_child_fd >= 0)
    return point_child(&o, point_child_fd, point_spec ? point_spec : "");
  {
    char sib[4200];
    snprintf(sib, sizeof sib, "%s/%s", o.exe_dir ? o.exe_dir : ".", impl_cdcache_static.child_exe);
    have_static = strcmp(bench_linkage, "shared") == 0 && access(sib, X_OK) == 0;
  }
  for (int i = 0; i < ntreq; i++) {
    char *p = strdup(treq[i].spec), *at = strrchr(p, '@');
    if (at)
      *at = 0;
    treq[i].path = p;
  }
  if (!any) { /* the default suite */
    suite = true;
    w_read = w_zipf = w_write = w_cdc = w_scale = w_load = w_lease = w_zstream = true;
    scale_max = 1000000ULL;
    char *dir = trace_find_dir();
    char **list = dir ? trace_list(dir) : NULL;
    if (!list || !list[0]) {
      printf(
          "trace: skipped: no traces (set CDCACHE_TRACES_DIR or put them in ../shared/traces)\n");
    }
    for (int i = 0; list && list[i] && ntreq < 64; i++) {
      treq[ntreq].spec = NULL;
      treq[ntreq].path = list[i];
      treq[ntreq++].size = 0;
    }
    free(list);
    free(dir);
  }

  printf("cdcache-bench: keys %zu B, values %zu B, %.2f s per run, median of %d, "
         "threads",
         o.key_size, o.value_size, o.seconds, o.repeat);
  if (o.full) {
    o.nthreads = 4;
    for (int i = 0; i < 4; i++)
      o.threads[i] = 1u << i;
  }
  for (int i = 0; i < o.nthreads; i++)
    printf("%s%u", i ? "," : " ", o.threads[i]);
  printf(", capacity %llu, %ld CPUs\n", (unsigned long long)o.capacity,
         sysconf(_SC_NPROCESSORS_ONLN));
  meta_line(stdout);
  if (o.rate > 0)
    printf("latency: open loop at %.0f ops/s offered over all threads; every op timed from when "
           "it was due\n",
           o.rate);
  else
    printf("latency: 1 op in 64 timed with clock_gettime(CLOCK_MONOTONIC), clock cost "
           "subtracted, log-linear histogram (<= 6.25%% bucket error)\n");
  printf("keys: generated before each run into an array the timed loop walks; loader %.1f us\n",
         (double)o.load_ns / 1000.0);
  if (!have_static && strcmp(bench_linkage, "shared") == 0)
    printf("cdcache-static: skipped: %s/%s not found\n", o.exe_dir ? o.exe_dir : ".",
           impl_cdcache_static.child_exe);
  fflush(stdout);

  plan_t pl = {0};
  static const unsigned one = 1, t1248[] = {1, 2, 4, 8};
  static const size_t vsizes[] = {8, 64, 512, 4096};
  /* The thread counts of read-hit: the suite adds 4 and 8 (more threads
   * than cores), for every impl. */
  const unsigned *rt = o.threads;
  int nrt = o.nthreads;
  if (suite) {
    rt = t1248;
    nrt = 4;
  }
  /* Each part: its impls in the suite (or everything). */
#define IMPLS(suite_list, every)                                                                   \
  (suite && !o.full) ? (suite_list) : (every), (suite && !o.full) ? NELEM(suite_list) : NELEM(every)
  size_t nv = o.full ? NELEM(vsizes) : 1;
  int rep = o.repeat;
  for (size_t vi = 0; vi < nv; vi++) {
    size_t vsz = o.full ? vsizes[vi] : o.value_size;
    if (w_read)
      plan_group(&pl, &o, "read-hit", WL_READ_HIT, all_impls, NELEM(all_impls), rt, nrt, o.capacity,
                 vsz, NULL, rep);
    if (w_zipf)
      plan_group(&pl, &o, "zipf", WL_ZIPF, IMPLS(suite_impls, all_impls), o.threads, o.nthreads,
                 o.capacity, vsz, NULL, rep);
    if (w_write)
      plan_group(&pl, &o, "write-heavy", WL_WRITE_HEAVY, IMPLS(suite_impls, all_impls), o.threads,
                 o.nthreads, o.capacity, vsz, NULL, rep);
    if (w_load)
      plan_group(&pl, &o, "load", WL_LOAD, IMPLS(suite_load_impls, load_impls), o.threads,
                 o.nthreads, o.capacity, vsz, NULL, rep);
    if (w_lease)
      plan_group(&pl, &o, "lease", WL_LEASE, IMPLS(cdcache_only, lease_impls), o.threads,
                 o.nthreads, o.capacity, vsz, NULL, rep);
  }
  /* Issue 13: allkeys-s3fifo's hit speed against allkeys-lru in the same
   * run, and its bytes per entry with sketch and ghost. */
  if (w_read)
    plan_group(&pl, &o, "read-hit", WL_READ_HIT, s3fifo_only, NELEM(s3fifo_only), o.threads,
               o.nthreads, o.capacity, o.value_size, NULL, rep);
  if (suite && !o.full) /* bytes per entry and read speed at the other value sizes */
    for (size_t vi = 1; vi < NELEM(vsizes); vi++)
      plan_group(&pl, &o, "read-hit", WL_READ_HIT, suite_load_impls, NELEM(suite_load_impls), &one,
                 1, o.capacity, vsizes[vi], NULL, rep);
  if (w_scale) {
    for (uint64_t sz = 10000; sz <= scale_max; sz *= 10) {
      plan_group(&pl, &o, "scale/read-hit", WL_READ_HIT, IMPLS(scale_impls, ref_impls), &one, 1, sz,
                 o.value_size, NULL, rep);
      plan_group(&pl, &o, "scale/zipf", WL_ZIPF, IMPLS(scale_impls, ref_impls), &one, 1, sz,
                 o.value_size, NULL, rep);
    }
  }
  trace_t *traces = calloc((size_t)ntreq + 1, sizeof *traces);
  for (int i = 0; i < ntreq; i++) {
    int rc = trace_load(treq[i].path, &traces[i]);
    if (rc != 0) {
      fprintf(stderr, "cdcache-bench: %s: %s\n", treq[i].path, strerror(-rc));
      free_run(&pl, traces, i, treq, ntreq);
      return 1;
    }
    double sizes[2] = {treq[i].size, 0};
    int nsizes = 1;
    if (treq[i].size == 0) {
      sizes[0] = 0.01;
      sizes[1] = 0.1;
      nsizes = 2;
    }
    for (int s = 0; s < nsizes; s++) {
      uint64_t cap =
          sizes[s] < 1 ? (uint64_t)(sizes[s] * (double)traces[i].unique) : (uint64_t)sizes[s];
      if (cap < 1)
        cap = 1;
      char label[128];
      if (sizes[s] < 1)
        snprintf(label, sizeof label, "trace:%s@%g", traces[i].name, sizes[s]);
      else
        snprintf(label, sizeof label, "trace:%s@%llu", traces[i].name, (unsigned long long)cap);
      plan_group(&pl, &o, label, WL_TRACE, IMPLS(suite_trace_impls, trace_impls), &one, 1, cap,
                 o.value_size, &traces[i], suite && !o.full ? 1 : rep);
    }
  }

  trace_t zt = {0};
  if (w_zstream) {
    uint64_t keys = o.capacity * 10; /* as the zipf workload: 10x the capacity */
    if (trace_zipf(&zt, keys, 0.99, (size_t)(o.capacity * ZSTREAM_REQS_PER_ENTRY)) != 0) {
      fprintf(stderr, "cdcache-bench: zipf-stream: out of memory\n");
      free_run(&pl, traces, ntreq, treq, ntreq);
      return 1;
    }
    char label[128];
    snprintf(label, sizeof label, "trace:%s@%llu", zt.name, (unsigned long long)o.capacity);
    plan_group(&pl, &o, label, WL_TRACE, zstream_impls, NELEM(zstream_impls), &one, 1, o.capacity,
               o.value_size, &zt, suite && !o.full ? 1 : rep);
  }

  uint64_t t_start = bench_now_ns();
  double busy0 = machine_busy_s(), own0 = own_cpu_s();
  for (size_t j = 0; j < pl.njobs; j++) {
    point_t *p = &pl.pts[pl.jobs[j]];
    double el_s = (double)(bench_now_ns() - t_start) / 1e9;
    double left_s = j ? el_s / (double)j * (double)(pl.njobs - j) : 0;
    if (w_cdc)
      left_s += 20; /* the cdc benchmark, after the plan */
    progress(
        &o,
        "[%zu/%zu] %02d:%02d elapsed, ~%02d:%02d left: %s %s threads=%u entries=%llu%s rep %d/%d",
        j + 1, pl.njobs, (int)el_s / 60, (int)el_s % 60, (int)left_s / 60, (int)left_s % 60,
        p->med.workload, p->impl->name, p->threads, (unsigned long long)p->capacity,
        p->value_size != o.value_size ? " (value size differs)" : "", p->nrep + 1, o.repeat);
    result_t *r = &p->reps[p->nrep];
    opts_t po = o;
    po.value_size = p->value_size;
    int rc = -1;
    for (int attempt = 0; attempt <= MAX_RETRIES; attempt++) {
      result_t t;
      result_init(&t);
      snprintf(t.workload, sizeof t.workload, "%s", p->med.workload);
      int trc = p->kind == WL_TRACE
                    ? run_trace(&po, p->impl, p->trace, p->capacity, &t)
                    : run_synthetic(&po, p->impl, p->kind, p->threads, p->capacity, &t);
      if (trc != 0)
        break;
      t.retries = attempt;
      if (rc != 0 || t.preempt_per_sec < r->preempt_per_sec)
        *r = t;
      r->retries = attempt;
      rc = 0;
      if (t.preempt_per_sec <= DISTURBED_PREEMPT_PER_S)
        break;
    }
    if (rc == 0) {
      p->nrep++;
      if (o.verbose)
        fprintf(stderr,
                "\n  %s %s threads=%u entries=%llu value=%zu: %.3f Mops/s, hit %.4f, p50 %.0f ns, "
                "%.0f preemptions/s, %.0f retries\n",
                p->med.workload, p->impl->name, p->threads, (unsigned long long)p->capacity,
                p->value_size, r->ops_per_sec / 1e6, r->hit_ratio, r->p50_ns, r->preempt_per_sec,
                r->retries);
    }
  }
  progress_done(&o);

  /* Collect medians; trace points get exact-lru's miss ratio beside. */
  size_t nres = 0;
  result_t *res = calloc(pl.npts + 2, sizeof *res);
  for (size_t i = 0; i < pl.npts; i++) {
    take_medians(&pl.pts[i]);
    if (pl.pts[i].nrep)
      res[nres++] = pl.pts[i].med;
  }
  for (size_t i = 0; i < nres; i++) {
    if (strncmp(res[i].workload, "trace:", 6) != 0)
      continue;
    for (size_t k = 0; k < nres; k++)
      if (!strcmp(res[k].impl, "exact-lru") && !strcmp(res[k].workload, res[i].workload))
        res[i].ref_miss_ratio = 1.0 - res[k].hit_ratio;
    res[i].caffeine_miss_ratio = caffeine_miss_ratio(res[i].workload);
  }

  if (w_cdc) {
    progress(&o, "cdc: running");
    char why[256] = "";
    result_t cr;
    result_init(&cr);
    int ran = cdc_bench_isolated(&o, &cr, why, sizeof why);
    progress_done(&o);
    if (ran)
      res[nres++] = cr;
    else
      printf("cdc: skipped: %s\n", why);
  }

  report_ratios(res, nres, &o);
  report_table(res, nres);
  if (o.json_path && report_json(o.json_path, res, nres, &o) != 0)
    fprintf(stderr, "cdcache-bench: cannot write %s\n", o.json_path);
  if (o.plot_dir)
    report_plots(o.plot_dir, res, nres);
  report_targets(res, nres, &o);
  double wall = (double)(bench_now_ns() - t_start) / 1e9;
  printf("\ntotal time %.1f s\n", wall);
  double busy1 = machine_busy_s(), own1 = own_cpu_s();
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (busy0 >= 0 && busy1 >= 0 && ncpu > 0 && wall > 0) {
    double others = ((busy1 - busy0) - (own1 - own0)) / (wall * (double)ncpu);
    if (others < 0)
      others = 0;
    printf("other processes used %.0f%% of the machine's CPU time during the run%s\n", 100 * others,
           others > 0.05 ? ": the figures above are disturbed; rerun on a quiet machine" : "");
  }
  free_run(&pl, traces, ntreq, treq, ntreq);
  trace_free(&zt);
  free(res);
  return 0;
}
