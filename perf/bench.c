/*
 * cdcache-bench: command line, the suite plan, repeats and medians.
 *
 * Each WORKLOAD expands into measured points (workload, impl, threads,
 * entries).  The plan runs every point --repeat times, interleaving the
 * impls inside each repetition (rep 1 of every impl, then rep 2, ...) so
 * that drift in the machine's state hits them alike, and reports the
 * per-field median.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_REPEAT 99
#define DEFAULT_SECONDS 0.5
#define DEFAULT_CAPACITY 100000ULL
#define DEFAULT_REPEAT 3
/* A run whose threads were preempted more often than this (per second,
 * all threads) shared its CPUs with another process: it is run again, at
 * most MAX_RETRIES times, and the least disturbed attempt is kept. */
#define DISTURBED_PREEMPT_PER_S 20.0
#define MAX_RETRIES 2

typedef struct point {
  result_t med;
  result_t *reps;
  int nrep;
  wl_kind_t kind;
  const bench_impl_t *impl;
  unsigned threads;
  uint64_t capacity;
  const trace_t *trace;
} point_t;

typedef struct plan {
  point_t *pts;
  size_t npts, cap;
  int *jobs; /* point index per run, in execution order */
  size_t njobs, jcap;
} plan_t;

static const bench_impl_t *const synth_impls[] = {&impl_cdcache, &impl_cdcache_s3fifo,
                                                  &impl_mutex_lru, &impl_lfht_ref};
static const bench_impl_t *const trace_impls[] = {&impl_cdcache, &impl_cdcache_s3fifo,
                                                  &impl_exact_lru, &impl_mutex_lru, &impl_lfht_ref};
/* zipf-stream measures hit ratio, not speed: the policies and exact LRU. */
static const bench_impl_t *const zstream_impls[] = {&impl_cdcache, &impl_cdcache_s3fifo,
                                                    &impl_exact_lru};
/* zipf-stream: requests per entry of capacity (10^7 at the default 10^5). */
#define ZSTREAM_REQS_PER_ENTRY 100
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* --impls filter: NULL keeps every impl. */
static const char *impl_filter;

static int impl_selected(const bench_impl_t *impl)
{
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
                        unsigned threads, uint64_t capacity, const trace_t *t, int repeat)
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

/* Adds the points of one group (the same label and size, every impl and
 * thread count) and its interleaved jobs. */
static void plan_group(plan_t *pl, const opts_t *o, const char *label, wl_kind_t kind,
                       const bench_impl_t *const *impls, size_t nimpl, const unsigned *threads,
                       int nthreads, uint64_t capacity, const trace_t *t)
{
  size_t first = pl->npts;
  for (int ti = 0; ti < nthreads; ti++)
    for (size_t ii = 0; ii < nimpl; ii++)
      if (impl_selected(impls[ii]))
        add_point(pl, label, kind, impls[ii], threads[ti], capacity, t, o->repeat);
  for (int r = 0; r < o->repeat; r++)
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

static void take_medians(point_t *p)
{
  static const size_t offs[] = {
      offsetof(result_t, ops_per_sec),
      offsetof(result_t, hit_ratio),
      offsetof(result_t, p50_ns),
      offsetof(result_t, p99_ns),
      offsetof(result_t, p999_ns),
      offsetof(result_t, bytes_per_entry),
      offsetof(result_t, stats_bytes_per_entry),
      offsetof(result_t, policy_bytes_per_entry),
      offsetof(result_t, live_entries),
      offsetof(result_t, preempt_per_sec),
      offsetof(result_t, retries),
  };
  if (p->nrep == 0)
    return;
  p->med.threads = p->threads;
  p->med.entries = p->capacity;
  snprintf(p->med.impl, sizeof p->med.impl, "%s", p->impl->name);
  for (size_t i = 0; i < NELEM(offs); i++) {
    double m = median_of(p->reps, p->nrep, offs[i]);
    memcpy((char *)&p->med + offs[i], &m, sizeof m);
  }
}

static void usage(FILE *f)
{
  fprintf(f,
          "usage: cdcache-bench [--threads 1,2] [--seconds S] [--capacity N]\n"
          "                     [--repeat N] [--key-size B] [--value-size B]\n"
          "                     [--impls LIST] [--json FILE] [--plot DIR] [--quiet]\n"
          "                     [--verbose]\n"
          "                     [WORKLOAD ...]\n"
          "WORKLOAD: read-hit | zipf | write-heavy | trace:FILE[@SIZE] | zipf-stream |\n"
          "          cdc | scale\n"
          "  SIZE is an entry count or a fraction of the trace's unique ids (0.01);\n"
          "  without @SIZE a trace runs at 0.01 and 0.1.\n"
          "No WORKLOAD runs the default suite: read-hit zipf write-heavy zipf-stream cdc,\n"
          "scale up to 10^6 entries, every shared trace at 1%% and 10%%.\n"
          "Defaults: --threads 1,2 --seconds %.1f --capacity %llu --repeat %d,\n"
          "8-byte keys and values, impls cdcache,cdcache-s3fifo,mutex-lru,lfht-ref\n"
          "(traces also exact-lru).  See perf/README.md.\n",
          DEFAULT_SECONDS, (unsigned long long)DEFAULT_CAPACITY, DEFAULT_REPEAT);
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
              .value_size = 8};
  bool w_read = false, w_zipf = false, w_write = false, w_cdc = false, w_scale = false, any = false;
  bool w_zstream = false;
  uint64_t scale_max = 10000000ULL;
  trace_req_t treq[64];
  int ntreq = 0, cdc_child_fd = -1;
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
  for (int i = 0; i < ntreq; i++) {
    char *p = strdup(treq[i].spec), *at = strrchr(p, '@');
    if (at)
      *at = 0;
    treq[i].path = p;
  }
  if (!any) { /* the default suite */
    w_read = w_zipf = w_write = w_cdc = w_scale = w_zstream = true;
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
  for (int i = 0; i < o.nthreads; i++)
    printf("%s%u", i ? "," : " ", o.threads[i]);
  printf(", capacity %llu, %ld CPUs\n", (unsigned long long)o.capacity,
         sysconf(_SC_NPROCESSORS_ONLN));
  printf("latency: 1 op in 64 timed with clock_gettime(CLOCK_MONOTONIC), clock cost "
         "subtracted, log-linear histogram (<= 6.25%% bucket error)\n");
  fflush(stdout);

  plan_t pl = {0};
  static const unsigned one = 1;
  if (w_read)
    plan_group(&pl, &o, "read-hit", WL_READ_HIT, synth_impls, NELEM(synth_impls), o.threads,
               o.nthreads, o.capacity, NULL);
  if (w_zipf)
    plan_group(&pl, &o, "zipf", WL_ZIPF, synth_impls, NELEM(synth_impls), o.threads, o.nthreads,
               o.capacity, NULL);
  if (w_write)
    plan_group(&pl, &o, "write-heavy", WL_WRITE_HEAVY, synth_impls, NELEM(synth_impls), o.threads,
               o.nthreads, o.capacity, NULL);
  if (w_scale) {
    for (uint64_t sz = 10000; sz <= scale_max; sz *= 10) {
      plan_group(&pl, &o, "scale/read-hit", WL_READ_HIT, synth_impls, NELEM(synth_impls), &one, 1,
                 sz, NULL);
      plan_group(&pl, &o, "scale/zipf", WL_ZIPF, synth_impls, NELEM(synth_impls), &one, 1, sz,
                 NULL);
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
      plan_group(&pl, &o, label, WL_TRACE, trace_impls, NELEM(trace_impls), &one, 1, cap,
                 &traces[i]);
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
               &zt);
  }

  uint64_t t_start = bench_now_ns();
  double busy0 = machine_busy_s(), own0 = own_cpu_s();
  for (size_t j = 0; j < pl.njobs; j++) {
    point_t *p = &pl.pts[pl.jobs[j]];
    progress(&o, "[%zu/%zu] %s %s threads=%u entries=%llu rep %d/%d", j + 1, pl.njobs,
             p->med.workload, p->impl->name, p->threads, (unsigned long long)p->capacity,
             p->nrep + 1, o.repeat);
    result_t *r = &p->reps[p->nrep];
    int rc = -1;
    for (int attempt = 0; attempt <= MAX_RETRIES; attempt++) {
      result_t t;
      result_init(&t);
      snprintf(t.workload, sizeof t.workload, "%s", p->med.workload);
      int trc = p->kind == WL_TRACE
                    ? run_trace(&o, p->impl, p->trace, p->capacity, &t)
                    : run_synthetic(&o, p->impl, p->kind, p->threads, p->capacity, &t);
      if (trc != 0)
        break;
      t.retries = attempt;
      if (rc != 0 || t.preempt_per_sec < r->preempt_per_sec)
        *r = t;
      rc = 0;
      if (t.preempt_per_sec <= DISTURBED_PREEMPT_PER_S)
        break;
    }
    if (rc == 0) {
      p->nrep++;
      if (o.verbose)
        fprintf(stderr,
                "\n  %s %s threads=%u entries=%llu: %.3f Mops/s, hit %.4f, p50 %.0f ns, "
                "%.0f preemptions/s, %.0f retries\n",
                p->med.workload, p->impl->name, p->threads, (unsigned long long)p->capacity,
                r->ops_per_sec / 1e6, r->hit_ratio, r->p50_ns, r->preempt_per_sec, r->retries);
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

  report_ratios(res, nres);
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
