/*
 * Output: the progress line (stderr), the human table (stdout), JSON Lines
 * (--json), gnuplot charts (--plot) and the targets section.
 */
#include "bench.h"

#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void result_init(result_t *r)
{
  memset(r, 0, sizeof *r);
  r->bytes_per_entry = r->stats_bytes_per_entry = -1;
  r->ref_miss_ratio = -1;
  r->caffeine_miss_ratio = -1;
  r->policy_bytes_per_entry = -1;
  r->events_per_sec = r->keys_per_sec = r->cdc_cpu_ns_per_key = -1;
  r->offered_writes_per_sec = r->lag_p50_ms = r->lag_p99_ms = -1;
  r->achieved_writes_per_sec = r->lag_wall_p50_ms = r->lag_wall_p99_ms = -1;
  r->lag_lost_keys = r->lag_keys = r->lag_negative = -1;
  r->present_before_throughput = r->invalidated_present = -1;
  for (int i = 0; i < LAG_QUANTILES; i++)
    r->lag_q_ms[i] = -1;
  r->offered_ops_per_sec = -1;
  r->mem_peak_bytes = r->mem_drained_bytes = r->rss_peak_bytes = r->rss_base_bytes = -1;
  for (int k = 0; k < OP__KINDS; k++)
    r->kp50[k] = r->kp99[k] = r->kp999[k] = -1;
  r->reader_ops_per_sec_idle = r->reader_ops_per_sec_storm = -1;
  r->cdc_busy = -1;
  r->preempt_per_sec = 0;
  r->ratio_mutex = r->ratio_lfht = r->ratio_sharded = -1;
}

/* ------------------------------------------------------------ progress */

static int progress_len;

void progress(const opts_t *o, const char *fmt, ...)
{
  if (o->quiet)
    return;
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start above
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (isatty(STDERR_FILENO)) {
    fprintf(stderr, "\r%s%*s", line, progress_len > n ? progress_len - n : 0, "");
    progress_len = n;
  } else {
    fprintf(stderr, "%s\n", line);
  }
  fflush(stderr);
}

void progress_done(const opts_t *o)
{
  if (o->quiet || !isatty(STDERR_FILENO) || !progress_len)
    return;
  fprintf(stderr, "\r%*s\r", progress_len, "");
  progress_len = 0;
}

/* -------------------------------------------------------------- lookups */

/* The first result of (wl, impl) at that thread count, size and value
 * size; 0 matches any. */
static const result_t *find_v(const result_t *rs, size_t n, const char *wl, const char *impl,
                              unsigned threads, uint64_t entries, size_t vsz)
{
  for (size_t i = 0; i < n; i++)
    if (!strcmp(rs[i].workload, wl) && !strcmp(rs[i].impl, impl) &&
        (threads == 0 || rs[i].threads == threads) && (entries == 0 || rs[i].entries == entries) &&
        (vsz == 0 || rs[i].value_size == vsz))
      return &rs[i];
  return NULL;
}

/* As find_v at the run's own value size (--value-size). */
static size_t base_vsz;
static const result_t *find(const result_t *rs, size_t n, const char *wl, const char *impl,
                            unsigned threads, uint64_t entries)
{
  return find_v(rs, n, wl, impl, threads, entries, base_vsz);
}

static int is_trace(const result_t *r)
{
  return !strncmp(r->workload, "trace:", 6);
}
static int is_cdc(const result_t *r)
{
  return !strcmp(r->workload, "cdc");
}

void report_ratios(result_t *rs, size_t n, const opts_t *o)
{
  base_vsz = o->value_size;
  for (size_t i = 0; i < n; i++) {
    if (is_cdc(&rs[i]))
      continue;
    const result_t *r = &rs[i];
    const result_t *m =
        find_v(rs, n, r->workload, "mutex-lru", r->threads, r->entries, r->value_size);
    const result_t *l =
        find_v(rs, n, r->workload, "lfht-ref", r->threads, r->entries, r->value_size);
    const result_t *sh =
        find_v(rs, n, r->workload, "sharded-mutex-lru", r->threads, r->entries, r->value_size);
    rs[i].ratio_mutex = m && m->ops_per_sec > 0 ? r->ops_per_sec / m->ops_per_sec : -1;
    rs[i].ratio_lfht = l && l->ops_per_sec > 0 ? r->ops_per_sec / l->ops_per_sec : -1;
    rs[i].ratio_sharded = sh && sh->ops_per_sec > 0 ? r->ops_per_sec / sh->ops_per_sec : -1;
  }
}

/* ---------------------------------------------------------------- table */

static void fmt_ratio(char *b, size_t n, double r)
{
  if (r < 0)
    snprintf(b, n, "-");
  else
    snprintf(b, n, "%.2fx", r);
}

static void fmt_bytes(char *b, size_t n, double v)
{
  if (v < 0)
    snprintf(b, n, "-");
  else
    snprintf(b, n, "%.1f", v);
}

void report_table(const result_t *rs, size_t n)
{
  printf("\n%-20s %-17s %3s %8s %5s %8s %7s %7s %7s %7s %6s %6s %7s %7s %7s\n", "workload", "impl",
         "thr", "entries", "value", "Mops/s", "/mutex", "/shard", "/lfht", "hit%", "p50ns", "p99ns",
         "p999ns", "B/entry", "peak/dr");
  const char *last = "";
  int ndist = 0;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (is_cdc(r))
      continue;
    if (strcmp(last, r->workload) != 0 && i)
      printf("\n");
    last = r->workload;
    char rm[16], rs_[16], rl[16], bpe[16], pk[16];
    fmt_ratio(rm, sizeof rm, r->ratio_mutex);
    fmt_ratio(rs_, sizeof rs_, r->ratio_sharded);
    fmt_ratio(rl, sizeof rl, r->ratio_lfht);
    fmt_bytes(bpe, sizeof bpe, r->bytes_per_entry);
    fmt_ratio(pk, sizeof pk,
              r->mem_drained_bytes > 0 && r->mem_peak_bytes > 0
                  ? r->mem_peak_bytes / r->mem_drained_bytes
                  : -1);
    int dist = r->preempt_per_sec > 20.0;
    ndist += dist;
    printf("%-20s %-17s %3u %8llu %5zu %7.2f%s %7s %7s %7s %7.2f %6.0f %6.0f %7.0f %7s %7s\n",
           r->workload, r->impl, r->threads, (unsigned long long)r->entries, r->value_size,
           r->ops_per_sec / 1e6, dist ? "*" : " ", rm, rs_, rl, 100 * r->hit_ratio, r->p50_ns,
           r->p99_ns, r->p999_ns, bpe, pk);
  }
  if (ndist)
    printf("* %d rows: even the less disturbed of 2 attempts was preempted by other "
           "processes more than 20 times/s (median); their throughput is low by that much\n",
           ndist);

  printf("\nlatency per kind of op, ns (p50 / p99 / p99.9; '-' no sample)\n");
  printf("%-20s %-17s %3s %5s %-20s %-20s %-20s %-20s\n", "workload", "impl", "thr", "value",
         "get hit", "get miss", "put", "load miss");
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (is_cdc(r) || is_trace(r))
      continue;
    char cols[OP__KINDS][32];
    for (int k = 0; k < OP__KINDS; k++) {
      if (r->kp50[k] < 0)
        snprintf(cols[k], sizeof cols[k], "-");
      else
        snprintf(cols[k], sizeof cols[k], "%.0f/%.0f/%.0f", r->kp50[k], r->kp99[k], r->kp999[k]);
    }
    printf("%-20s %-17s %3u %5zu %-20s %-20s %-20s %-20s\n", r->workload, r->impl, r->threads,
           r->value_size, cols[0], cols[1], cols[2], cols[3]);
  }

  /* The trace points: exact LRU, cdcache's two policies and Caffeine
   * 2.6.2's published figure side by side ("-" where not run), then the
   * means over the points that have all four (the shared traces' 8). */
  int any_trace = 0, nmean = 0;
  double sum[4] = {0};
  for (size_t i = 0; i < n; i++) {
    if (!is_trace(&rs[i]))
      continue;
    int first = 1; /* one row per trace point */
    for (size_t k = 0; k < i; k++)
      if (!strcmp(rs[k].workload, rs[i].workload))
        first = 0;
    if (!first)
      continue;
    if (!any_trace++)
      printf("\n%-30s %7s %10s %10s %10s %10s %9s %8s\n", "trace miss ratio", "entries",
             "exact-lru", "cdcache", "s3fifo", "caffeine", "s3fifo pp", "lru pp");
    const result_t *ex = find(rs, n, rs[i].workload, "exact-lru", 0, 0);
    const result_t *lr = find(rs, n, rs[i].workload, "cdcache", 0, 0);
    const result_t *s3 = find(rs, n, rs[i].workload, "cdcache-s3fifo", 0, 0);
    double v[4] = {ex ? 1 - ex->hit_ratio : -1, lr ? 1 - lr->hit_ratio : -1,
                   s3 ? 1 - s3->hit_ratio : -1, caffeine_miss_ratio(rs[i].workload)};
    char f[6][16];
    for (int j = 0; j < 4; j++)
      snprintf(f[j], sizeof f[j], v[j] >= 0 ? "%.6f" : "-", v[j]);
    for (int j = 0; j < 2; j++)
      snprintf(f[4 + j], sizeof f[4 + j], v[2 - j] >= 0 && v[0] >= 0 ? "%+.3f" : "-",
               100 * (v[2 - j] - v[0]));
    printf("%-30s %7llu %10s %10s %10s %10s %9s %8s\n", rs[i].workload + 6,
           (unsigned long long)rs[i].entries, f[0], f[1], f[2], f[3], f[4], f[5]);
    if (v[0] >= 0 && v[1] >= 0 && v[2] >= 0 && v[3] >= 0) {
      nmean++;
      for (int j = 0; j < 4; j++)
        sum[j] += v[j];
    }
  }
  if (nmean > 0)
    printf("%-30s %7s %10.6f %10.6f %10.6f %10.6f   (over %d points; pp: vs exact-lru)\n", "mean",
           "", sum[0] / nmean, sum[1] / nmean, sum[2] / nmean, sum[3] / nmean, nmean);
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (!is_cdc(r))
      continue;
    printf("\ncdc (change stream -> invalidation), %u reader threads, %llu entries\n", r->threads,
           (unsigned long long)r->entries);
    printf("  throughput phase: %.0f of the keys cached when it began; %.0f invalidations "
           "counted by the cache\n",
           r->present_before_throughput, r->invalidated_present);
    printf("  throughput phase: %.0f events/s, %.0f keys invalidated/s, "
           "CDC thread CPU %.0f ns/key\n",
           r->events_per_sec, r->keys_per_sec, r->cdc_cpu_ns_per_key);
    if (r->cdc_busy >= 0)
      printf("  the CDC thread was on CPU %.0f%% of that phase (the rest it waited for "
             "the server); at 100%% it would do %.0f keys/s\n",
             100 * r->cdc_busy, r->cdc_cpu_ns_per_key > 0 ? 1e9 / r->cdc_cpu_ns_per_key : 0);
    printf("  latency phase: offered %.0f writes/s, achieved %.0f; %.0f keys written, %.0f lost, "
           "%.0f gone before their ack\n",
           r->offered_writes_per_sec, r->achieved_writes_per_sec, r->lag_keys, r->lag_lost_keys,
           r->lag_negative);
    printf("  lag from ack: p50 %.2f ms, p99 %.2f ms; from the commit's wallTime: p50 %.0f ms, "
           "p99 %.0f ms\n",
           r->lag_p50_ms, r->lag_p99_ms, r->lag_wall_p50_ms, r->lag_wall_p99_ms);
    printf("  readers (zipf): %.2f Mops/s without writes, %.2f Mops/s during them "
           "(%.1f%%)\n",
           r->reader_ops_per_sec_idle / 1e6, r->reader_ops_per_sec_storm / 1e6,
           r->reader_ops_per_sec_idle > 0
               ? 100 * r->reader_ops_per_sec_storm / r->reader_ops_per_sec_idle
               : 0);
  }
}

/* ----------------------------------------------------------------- json */

static void jnum(FILE *f, const char *k, double v)
{
  if (v < 0)
    fprintf(f, ",\"%s\":null", k);
  else
    fprintf(f, ",\"%s\":%.6g", k, v);
}

static void jstr(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", *s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

/* A figure that may be negative (a lag): null only when unmeasured. */
static void jsigned(FILE *f, const char *k, double v, bool measured)
{
  if (!measured)
    fprintf(f, ",\"%s\":null", k);
  else
    fprintf(f, ",\"%s\":%.6g", k, v);
}

int report_json(const char *path, const result_t *rs, size_t n, const opts_t *o)
{
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    fputs("{\"workload\":", f);
    jstr(f, r->workload);
    fputs(",\"impl\":", f);
    jstr(f, r->impl);
    fprintf(f, ",\"threads\":%u,\"entries\":%llu,\"key_size\":%zu,\"value_size\":%zu", r->threads,
            (unsigned long long)r->entries, o->key_size, r->value_size);
    fprintf(f, ",\"seconds\":%g,\"repeat\":%d,\"runs\":%d,\"retries\":%g", o->seconds, o->repeat,
            r->nrep, r->retries);
    fprintf(f, ",\"mode\":\"%s\"", o->rate > 0 ? "open-loop" : "closed-loop");
    jnum(f, "offered_ops_per_sec", r->offered_ops_per_sec);
    jnum(f, "load_us", (double)o->load_ns / 1000.0);
    for (size_t k = 0; k < n_spread; k++) {
      double v;
      memcpy(&v, (const char *)r + spread_fields[k].off, sizeof v);
      char name[64];
      jnum(f, spread_fields[k].name, v);
      if (r->nrep > 0) {
        snprintf(name, sizeof name, "%s_min", spread_fields[k].name);
        jnum(f, name, r->min[k]);
        snprintf(name, sizeof name, "%s_max", spread_fields[k].name);
        jnum(f, name, r->max[k]);
      }
    }
    jnum(f, "ns_per_op", r->ops_per_sec > 0 ? 1e9 * r->threads / r->ops_per_sec : -1);
    jnum(f, "mem_peak_vs_drained",
         r->mem_drained_bytes > 0 && r->mem_peak_bytes > 0
             ? r->mem_peak_bytes / r->mem_drained_bytes
             : -1);
    jnum(f, "rss_base_bytes", r->rss_base_bytes);
    jnum(f, "ratio_vs_mutex_lru", r->ratio_mutex);
    jnum(f, "ratio_vs_sharded_mutex_lru", r->ratio_sharded);
    jnum(f, "ratio_vs_lfht_ref", r->ratio_lfht);
    if (is_trace(r)) {
      jnum(f, "miss_ratio", 1 - r->hit_ratio);
      jnum(f, "exact_lru_miss_ratio", r->ref_miss_ratio);
      jnum(f, "caffeine_miss_ratio", r->caffeine_miss_ratio);
    }
    if (is_cdc(r)) {
      jnum(f, "events_per_sec", r->events_per_sec);
      jnum(f, "keys_per_sec", r->keys_per_sec);
      jnum(f, "cdc_cpu_ns_per_key", r->cdc_cpu_ns_per_key);
      jnum(f, "cdc_thread_busy", r->cdc_busy);
      jnum(f, "present_before_throughput", r->present_before_throughput);
      jnum(f, "invalidated_present", r->invalidated_present);
      jnum(f, "offered_writes_per_sec", r->offered_writes_per_sec);
      jnum(f, "achieved_writes_per_sec", r->achieved_writes_per_sec);
      jnum(f, "lag_keys", r->lag_keys);
      jnum(f, "lag_lost_keys", r->lag_lost_keys);
      jnum(f, "lag_negative", r->lag_negative);
      bool have = r->lag_keys > 0 && r->lag_lost_keys < r->lag_keys;
      jsigned(f, "lag_p50_ms", r->lag_p50_ms, have);
      jsigned(f, "lag_p99_ms", r->lag_p99_ms, have);
      jsigned(f, "lag_wall_p50_ms", r->lag_wall_p50_ms, have && r->lag_wall_p50_ms != -1);
      jsigned(f, "lag_wall_p99_ms", r->lag_wall_p99_ms, have && r->lag_wall_p99_ms != -1);
      fputs(",\"lag_quantiles_ms\":{", f);
      for (int q = 0; q < LAG_QUANTILES; q++) {
        if (have)
          fprintf(f, "%s\"%g\":%.6g", q ? "," : "", lag_q[q], r->lag_q_ms[q]);
        else
          fprintf(f, "%s\"%g\":null", q ? "," : "", lag_q[q]);
      }
      fputc('}', f);
      jnum(f, "reader_ops_per_sec_idle", r->reader_ops_per_sec_idle);
      jnum(f, "reader_ops_per_sec_storm", r->reader_ops_per_sec_storm);
    }
    fputs(",\"run\":", f);
    meta_json(f);
    fputs("}\n", f);
  }
  return fclose(f);
}

/* ------------------------------------------------------------ caffeine */

/* shared/traces/README.md: Caffeine 2.6.2 (W-TinyLFU, static window),
 * maximumSize = the capacity, get then put on a miss, every request
 * counted. */
static const struct {
  const char *workload;
  double miss;
} CAFFEINE[] = {
    {"trace:cloudPhysicsIO@0.01", 0.833181}, {"trace:cloudPhysicsIO@0.1", 0.735844},
    {"trace:trace-multi2@0.01", 0.784501},   {"trace:trace-multi2@0.1", 0.486679},
    {"trace:trace-sprite@0.01", 0.760866},   {"trace:trace-sprite@0.1", 0.194857},
    {"trace:w106@0.01", 0.203088},           {"trace:w106@0.1", 0.073657},
};

double caffeine_miss_ratio(const char *workload)
{
  for (size_t i = 0; i < sizeof CAFFEINE / sizeof *CAFFEINE; i++)
    if (!strcmp(CAFFEINE[i].workload, workload))
      return CAFFEINE[i].miss;
  return -1;
}

/* ---------------------------------------------------------------- plots */

static const char *const plot_impls[] = {"cdcache",           "cdcache-s3fifo", "cdcache-static",
                                         "sharded-mutex-lru", "mutex-lru",      "lfht-ref"};
#define N_PLOT_IMPLS (sizeof plot_impls / sizeof plot_impls[0])

static FILE *gp_open(const char *dir, const char *name, const char *title)
{
  FILE *g = popen("gnuplot 2>/dev/null", "w");
  if (!g)
    return NULL;
  fprintf(g, "set terminal pngcairo size 900,540 noenhanced\n");
  fprintf(g, "set output '%s/%s'\n", dir, name);
  fprintf(g, "set title '%s'\nset key outside right\nset grid\n", title);
  return g;
}

static int gp_close(FILE *g)
{
  int st = pclose(g);
  return st == 0 ? 0 : -1;
}

static int plot_threads(const char *dir, const result_t *rs, size_t n, const char *wl)
{
  char name[160], title[200];
  snprintf(name, sizeof name, "throughput-%s.png", wl);
  snprintf(title, sizeof title, "%s: throughput vs threads", wl);
  FILE *g = gp_open(dir, name, title);
  if (!g)
    return -1;
  fprintf(g, "set xlabel 'threads'\nset ylabel 'Mops/s'\nset yrange [0:*]\n"
             "set xtics 1\n");
  char plot[1024] = "plot ";
  int ds = 0;
  for (size_t k = 0; k < N_PLOT_IMPLS; k++) {
    if (!find(rs, n, wl, plot_impls[k], 0, 0))
      continue;
    fprintf(g, "$d%d << EOD\n", ds);
    for (size_t i = 0; i < n; i++)
      if (!strcmp(rs[i].workload, wl) && !strcmp(rs[i].impl, plot_impls[k]) &&
          rs[i].value_size == base_vsz)
        fprintf(g, "%u %g\n", rs[i].threads, rs[i].ops_per_sec / 1e6);
    fprintf(g, "EOD\n");
    char part[160];
    snprintf(part, sizeof part, "%s$d%d w lp lw 2 t '%s'", ds ? ", " : "", ds, plot_impls[k]);
    strncat(plot, part, sizeof plot - strlen(plot) - 1);
    ds++;
  }
  fprintf(g, "%s\n", plot);
  return gp_close(g);
}

static int plot_latency(const char *dir, const result_t *rs, size_t n, const char *wl)
{
  unsigned tmax = 0;
  for (size_t i = 0; i < n; i++)
    if (!strcmp(rs[i].workload, wl) && rs[i].threads > tmax)
      tmax = rs[i].threads;
  char name[160], title[200];
  snprintf(name, sizeof name, "latency-%s.png", wl);
  snprintf(title, sizeof title, "%s: latency percentiles at %u threads (1 op in 64 sampled)", wl,
           tmax);
  FILE *g = gp_open(dir, name, title);
  if (!g)
    return -1;
  fprintf(g, "set style data histogram\nset style histogram cluster gap 1\n"
             "set style fill solid 0.8 border -1\nset logscale y\nset ylabel 'ns'\n");
  fprintf(g, "$d << EOD\n");
  for (size_t k = 0; k < N_PLOT_IMPLS; k++) {
    const result_t *r = find(rs, n, wl, plot_impls[k], tmax, 0);
    if (r)
      fprintf(g, "%s %g %g %g\n", r->impl, r->p50_ns > 0 ? r->p50_ns : 1,
              r->p99_ns > 0 ? r->p99_ns : 1, r->p999_ns > 0 ? r->p999_ns : 1);
  }
  fprintf(g, "EOD\nplot $d using 2:xtic(1) t 'p50', '' using 3 t 'p99', "
             "'' using 4 t 'p99.9'\n");
  return gp_close(g);
}

static int plot_scale(const char *dir, const result_t *rs, size_t n, int bytes)
{
  FILE *g = gp_open(dir, bytes ? "scale-bytes-per-entry.png" : "scale-ns-per-op.png",
                    bytes ? "bytes per entry beyond key and value, vs size"
                          : "ns per op (1 thread) vs size");
  if (!g)
    return -1;
  fprintf(g, "set logscale x\nset xlabel 'entries'\nset ylabel '%s'\nset yrange [0:*]\n",
          bytes ? "bytes/entry" : "ns/op");
  const char *wls[] = {"scale/read-hit", "scale/zipf"};
  int ds = 0;
  char plot[2048] = "plot ";
  for (int w = 0; w < (bytes ? 1 : 2); w++)
    for (size_t k = 0; k < N_PLOT_IMPLS; k++) {
      if (!find(rs, n, wls[w], plot_impls[k], 0, 0))
        continue;
      fprintf(g, "$d%d << EOD\n", ds);
      for (size_t i = 0; i < n; i++) {
        const result_t *r = &rs[i];
        if (strcmp(r->workload, wls[w]) != 0 || strcmp(r->impl, plot_impls[k]) != 0)
          continue;
        double y = bytes ? r->bytes_per_entry : 1e9 * r->threads / r->ops_per_sec;
        fprintf(g, "%llu %g\n", (unsigned long long)r->entries, y);
      }
      fprintf(g, "EOD\n");
      char part[200];
      snprintf(part, sizeof part, "%s$d%d w lp lw 2 t '%s%s%s'", ds ? ", " : "", ds, plot_impls[k],
               bytes ? "" : " ", bytes ? "" : wls[w] + 6);
      strncat(plot, part, sizeof plot - strlen(plot) - 1);
      ds++;
    }
  fprintf(g, "%s\n", plot);
  return gp_close(g);
}

/* Miss ratio per shared trace point: exact LRU, cdcache's two policies,
 * Caffeine 2.6.2 (its published figure), as clustered bars. */
static int plot_miss(const char *dir, const result_t *rs, size_t n)
{
  FILE *g = gp_open(dir, "trace-miss-ratio.png",
                    "trace miss ratio (lower is better), single thread, default shards");
  if (!g)
    return -1;
  fprintf(g, "set style data histogram\nset style histogram cluster gap 1\n"
             "set style fill solid 0.8 border -1\nset ylabel 'miss ratio'\n"
             "set yrange [0:1]\nset xtics rotate by -30\nset key inside top right\n");
  fprintf(g, "$d << EOD\n");
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (!is_trace(r) || strcmp(r->impl, "cdcache") != 0)
      continue;
    const result_t *s3 = find(rs, n, r->workload, "cdcache-s3fifo", 0, 0);
    fprintf(g, "%s %g %g %g %g\n", r->workload + 6, r->ref_miss_ratio, 1 - r->hit_ratio,
            s3 ? 1 - s3->hit_ratio : 0, r->caffeine_miss_ratio > 0 ? r->caffeine_miss_ratio : 0);
  }
  fprintf(g, "EOD\nplot $d using 2:xtic(1) t 'exact LRU', '' using 3 t 'cdcache allkeys-lru', "
             "'' using 4 t 'cdcache allkeys-s3fifo', '' using 5 t 'Caffeine 2.6.2'\n");
  return gp_close(g);
}

/* The CDC lag distribution (from the write's acknowledgement). */
static int plot_lag(const char *dir, const result_t *cd)
{
  FILE *g = gp_open(dir, "cdc-lag.png", "CDC lag: write acknowledged -> key gone (quantiles)");
  if (!g)
    return -1;
  fprintf(g, "set xlabel 'quantile'\nset ylabel 'ms'\nset xrange [0:1]\n");
  fprintf(g, "$d << EOD\n");
  for (int q = 0; q < LAG_QUANTILES; q++)
    fprintf(g, "%g %g\n", lag_q[q], cd->lag_q_ms[q]);
  fprintf(g, "EOD\nplot $d w lp lw 2 t 'lag (ms)'\n");
  return gp_close(g);
}

int report_plots(const char *dir, const result_t *rs, size_t n)
{
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "cdcache-bench: cannot create %s\n", dir);
    return -1;
  }
  if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
    printf("plots: skipped: gnuplot not found (apt-get install gnuplot-nox)\n");
    return -1;
  }
  int made = 0, failed = 0;
  const char *wls[] = {"read-hit", "zipf", "write-heavy", "load"};
  for (int w = 0; w < 4; w++) {
    if (!find(rs, n, wls[w], "cdcache", 0, 0))
      continue;
    plot_threads(dir, rs, n, wls[w]) == 0 ? made++ : failed++;
    plot_latency(dir, rs, n, wls[w]) == 0 ? made++ : failed++;
  }
  if (find(rs, n, "scale/read-hit", "cdcache", 0, 0)) {
    plot_scale(dir, rs, n, 0) == 0 ? made++ : failed++;
    plot_scale(dir, rs, n, 1) == 0 ? made++ : failed++;
  }
  for (size_t i = 0; i < n; i++)
    if (is_trace(&rs[i])) {
      plot_miss(dir, rs, n) == 0 ? made++ : failed++;
      break;
    }
  for (size_t i = 0; i < n; i++)
    if (is_cdc(&rs[i]) && rs[i].lag_keys > 0)
      plot_lag(dir, &rs[i]) == 0 ? made++ : failed++;
  printf("plots: %d PNG charts written to %s%s\n", made, dir, failed ? " (some failed)" : "");
  return failed ? -1 : 0;
}

/* -------------------------------------------------------------- targets */

static void target_line(const char *what, int measured, const char *fig, int met)
{
  printf("  %-58s %-28s %s\n", what, measured ? fig : "not measured",
         !measured ? "-"
         : met     ? "met"
                   : "MISSED");
}
/* figfmt is always a literal at the call site. */
#define target(what, measured, fig, figfmt, met)                                                   \
  do {                                                                                             \
    char f_[96];                                                                                   \
    snprintf(f_, sizeof f_, figfmt, (double)(fig));                                                \
    target_line(what, measured, f_, met);                                                          \
  } while (0)

static double ops(const result_t *r)
{
  return r ? r->ops_per_sec : -1;
}

static double ratio(const result_t *a, const result_t *b)
{
  return a && b && b->ops_per_sec > 0 ? a->ops_per_sec / b->ops_per_sec : 0;
}

/* A "cdcache X threads vs REF Y threads >= k" target line. */
static void ratio_target(const result_t *rs, size_t n, const char *what, const char *wl,
                         const char *impl, unsigned t, const char *ref, unsigned rt, double k)
{
  const result_t *a = find(rs, n, wl, impl, t, 0), *b = find(rs, n, wl, ref, rt, 0);
  double r = ratio(a, b);
  target(what, a && b, r, "%.2fx", a && b && r >= k);
}

void report_targets(const result_t *rs, size_t n, const opts_t *o)
{
  base_vsz = o->value_size;
  int kv8 = o->key_size == 8 && o->value_size == 8;
  printf("\ntargets (benchmark results from this run; not tests)\n");
  printf(" issue 10, the write path (cdcache = the shared library):\n");
  ratio_target(rs, n, "read-hit 1 thread >= 1.0x mutex-lru 1 thread", "read-hit", "cdcache", 1,
               "mutex-lru", 1, 1.0);
  ratio_target(rs, n, "write-heavy 1 thread >= 1.0x mutex-lru 1 thread", "write-heavy", "cdcache",
               1, "mutex-lru", 1, 1.0);
  ratio_target(rs, n, "zipf 2 threads >= 5x mutex-lru 2 threads", "zipf", "cdcache", 2, "mutex-lru",
               2, 5.0);
  ratio_target(rs, n, "zipf 2 threads >= 1.3x sharded-mutex-lru 2 threads", "zipf", "cdcache", 2,
               "sharded-mutex-lru", 2, 1.3);
  ratio_target(rs, n, "read-hit 2 threads >= 1.5x sharded-mutex-lru 2 threads", "read-hit",
               "cdcache", 2, "sharded-mutex-lru", 2, 1.5);
  /* Memory: the worst drained overhead of cdcache's 8-byte synthetic
   * caches at the default size. */
  double worst = -1;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (strcmp(r->impl, "cdcache") != 0 || is_trace(r) || is_cdc(r) || r->bytes_per_entry < 0 ||
        r->value_size != 8 || r->entries != o->capacity || !strncmp(r->workload, "scale/", 6))
      continue;
    if (r->bytes_per_entry > worst)
      worst = r->bytes_per_entry;
  }
  target("overhead beyond key and value, drained <= 48 B (worst)", kv8 && worst >= 0, worst,
         "%.1f B", worst <= 48);
  double pk = -1;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (!strcmp(r->workload, "write-heavy") && !strcmp(r->impl, "cdcache") &&
        r->value_size == o->value_size && r->mem_drained_bytes > 0 &&
        r->mem_peak_bytes / r->mem_drained_bytes > pk)
      pk = r->mem_peak_bytes / r->mem_drained_bytes;
  }
  target("peak allocator bytes under write-heavy <= 1.25x drained", pk >= 0, pk, "%.2fx (worst)",
         pk >= 0 && pk <= 1.25);
  ratio_target(rs, n, "read-hit 8 threads on the CPUs >= 0.9x 2 threads", "read-hit", "cdcache", 8,
               "cdcache", 2, 0.9);
  const result_t *s1 = find(rs, n, "read-hit", "cdcache-static", 1, 0);
  const result_t *m1 = find(rs, n, "read-hit", "mutex-lru", 1, 0);
  const result_t *c1 = find(rs, n, "read-hit", "cdcache", 1, 0);
  if (s1 && m1 && c1)
    printf("  (static library: read-hit 1 thread %.2fx mutex-lru; shared/static %.2fx)\n",
           ratio(s1, m1), ratio(c1, s1));

  printf(" issue 4:\n");
  const result_t *c2 = find(rs, n, "read-hit", "cdcache", 2, 0);
  const result_t *l2 = find(rs, n, "read-hit", "lfht-ref", 2, 0);
  double mbest = -1;
  for (size_t i = 0; i < n; i++)
    if (!strcmp(rs[i].workload, "read-hit") && !strcmp(rs[i].impl, "mutex-lru") &&
        rs[i].value_size == base_vsz && rs[i].ops_per_sec > mbest)
      mbest = rs[i].ops_per_sec;
  target("read-hit 2 threads >= 0.75x lfht-ref 2 threads", c2 && l2, ratio(c2, l2), "%.2fx",
         c2 && l2 && ratio(c2, l2) >= 0.75);
  target("read-hit 2 threads >= mutex-lru's best", c2 && mbest > 0,
         c2 && mbest > 0 ? ops(c2) / mbest : 0, "%.2fx of best", c2 && ops(c2) >= mbest);
  target("read-hit 2 threads >= 1.7x 1 thread", c1 && c2, ratio(c2, c1), "%.2fx",
         c1 && c2 && ratio(c2, c1) >= 1.7);

  int ntr = 0;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (!is_trace(r) || strcmp(r->impl, "cdcache") != 0 || r->ref_miss_ratio < 0)
      continue;
    ntr++;
    char what[160];
    double d = 100 * ((1 - r->hit_ratio) - r->ref_miss_ratio);
    snprintf(what, sizeof what, "miss <= exact LRU + 1 pp: %s", r->workload + 6);
    target(what, 1, d, "%+.3f pp", d <= 1.0);
  }
  if (!ntr)
    target_line("miss ratio <= exact LRU + 1 pp on every trace", 0, "", 0);

  /* Issue 13: allkeys-s3fifo against Caffeine 2.6.2 and exact LRU. */
  int nc = 0, npts = 0;
  double s3sum = 0, cfsum = 0, worst_pp = -100;
  const char *worst_at = "";
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (!is_trace(r) || strcmp(r->impl, "cdcache-s3fifo") != 0)
      continue;
    const result_t *ex = find(rs, n, r->workload, "exact-lru", 0, 0);
    if (ex) {
      double d = 100 * (ex->hit_ratio - r->hit_ratio);
      npts++;
      if (d > worst_pp) {
        worst_pp = d;
        worst_at = r->workload + 6;
      }
    }
    double cf = caffeine_miss_ratio(r->workload);
    if (cf >= 0) {
      nc++;
      s3sum += 1 - r->hit_ratio;
      cfsum += cf;
    }
  }
  char fig13[96];
  snprintf(fig13, sizeof fig13, "%.4f vs %.4f", nc ? s3sum / nc : 0, nc ? cfsum / nc : 0);
  target_line("s3fifo mean miss <= Caffeine's, 8 shared trace points", nc == 8, fig13,
              nc == 8 && s3sum <= cfsum);
  snprintf(fig13, sizeof fig13, "%+.3f pp worst (%s)", worst_pp, worst_at);
  target_line("s3fifo miss <= exact LRU + 0.5 pp, every trace point", npts > 0, fig13,
              npts > 0 && worst_pp <= 0.5);
  const result_t *zs = NULL, *zl = NULL;
  for (size_t i = 0; i < n; i++)
    if (!strncmp(rs[i].workload, "trace:zipf", 10) && !strcmp(rs[i].impl, "cdcache-s3fifo")) {
      zs = &rs[i];
      zl = find(rs, n, zs->workload, "exact-lru", 0, 0);
    }
  snprintf(fig13, sizeof fig13, "%.4f (exact LRU %.4f)", zs ? zs->hit_ratio : 0,
           zl ? zl->hit_ratio : 0);
  target_line("s3fifo zipf-stream hit ratio >= 0.80", zs != NULL, fig13,
              zs && zs->hit_ratio >= 0.80);
  const result_t *s2 = find(rs, n, "read-hit", "cdcache-s3fifo", 2, 0);
  target("s3fifo read-hit 2 threads >= 0.95x allkeys-lru", s2 && c2,
         s2 && c2 ? ops(s2) / ops(c2) : 0, "%.3fx", s2 && c2 && ops(s2) >= 0.95 * ops(c2));
  double sw = -1, sp = -1;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (strcmp(r->impl, "cdcache-s3fifo") != 0 || is_trace(r) || r->bytes_per_entry < 0)
      continue;
    if (r->bytes_per_entry > sw) {
      sw = r->bytes_per_entry;
      sp = r->policy_bytes_per_entry;
    }
  }
  snprintf(fig13, sizeof fig13, "%.1f B (sketch+ghost %.1f B)", sw, sp);
  target_line("s3fifo <= 56 B/entry overhead with sketch and ghost",
              o->key_size == 8 && o->value_size == 8 && sw >= 0, fig13, sw <= 56);

  double wr = -1;
  uint64_t wsz = 0, maxsz = 0;
  for (size_t i = 0; i < n; i++) {
    const result_t *r = &rs[i];
    if (strcmp(r->workload, "scale/read-hit") != 0 || strcmp(r->impl, "cdcache") != 0 ||
        r->ratio_lfht < 0)
      continue;
    if (wr < 0 || r->ratio_lfht < wr) {
      wr = r->ratio_lfht;
      wsz = r->entries;
    }
    if (r->entries > maxsz)
      maxsz = r->entries;
  }
  char what[160], fig[64];
  snprintf(what, sizeof what, "scale read-hit >= 0.7x lfht-ref, every size (to %.0e)",
           (double)maxsz);
  snprintf(fig, sizeof fig, "%.2fx worst (at %.0e)", wr, (double)wsz);
  target_line(maxsz ? what : "scale read-hit >= 0.7x lfht-ref up to 10^7", wr >= 0, fig, wr >= 0.7);
  if (maxsz && maxsz < 10000000ULL)
    printf("  (10^7 entries is measured by 'cdcache-bench scale')\n");

  const result_t *cd = NULL;
  for (size_t i = 0; i < n; i++)
    if (is_cdc(&rs[i]))
      cd = &rs[i];
  target("cdc CPU per key <= 2 us", cd && cd->cdc_cpu_ns_per_key >= 0,
         cd ? cd->cdc_cpu_ns_per_key / 1000 : 0, "%.2f us", cd && cd->cdc_cpu_ns_per_key <= 2000);
  target("cdc >= 200k keys/s", cd && cd->keys_per_sec >= 0, cd ? cd->keys_per_sec / 1000 : 0,
         "%.0fk keys/s", cd && cd->keys_per_sec >= 200000);
  char lagfig[96] = "";
  if (cd)
    snprintf(lagfig, sizeof lagfig, "%.2f ms, %.0f of %.0f keys lost", cd->lag_p99_ms,
             cd->lag_lost_keys, cd->lag_keys);
  target_line("cdc lag p99 <= 20 ms, no key lost", cd && cd->lag_keys > 0, lagfig,
              cd && cd->lag_keys > 0 && cd->lag_lost_keys == 0 && cd->lag_p99_ms <= 20);
}
