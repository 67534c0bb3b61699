/*
 * Traces: raw little-endian uint64 object ids, one per request (.u64).
 * Loading counts the distinct ids (an open-addressing set), which sizes
 * the cache at a fraction: capacity = int(f x unique ids), as libCacheSim's
 * cachesim and the traces' README do.
 */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CDCACHE_SOURCE_DIR
#define CDCACHE_SOURCE_DIR "."
#endif

static size_t count_unique(const uint64_t *ids, size_t n)
{
  size_t cap = 16;
  while (cap < 2 * n)
    cap <<= 1;
  /* Store id + 1 so that 0 marks an empty slot; an id of UINT64_MAX is
   * tracked on the side. */
  uint64_t *set = calloc(cap, sizeof *set);
  if (!set)
    return 0;
  size_t uniq = 0;
  int saw_max = 0;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] == UINT64_MAX) {
      if (!saw_max++)
        uniq++;
      continue;
    }
    uint64_t v = ids[i] + 1, h = v * 0x9e3779b97f4a7c15ULL;
    size_t j = (size_t)(h >> 20) & (cap - 1);
    while (set[j] && set[j] != v)
      j = (j + 1) & (cap - 1);
    if (!set[j]) {
      set[j] = v;
      uniq++;
    }
  }
  free(set);
  return uniq;
}

int trace_load(const char *path, trace_t *t)
{
  memset(t, 0, sizeof *t);
  FILE *f = fopen(path, "rb");
  if (!f)
    return -errno;
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || st.st_size % 8 != 0 || st.st_size == 0) {
    fclose(f);
    return -EINVAL;
  }
  t->n = (size_t)st.st_size / 8;
  t->ids = malloc(t->n * 8);
  if (!t->ids) {
    fclose(f);
    return -ENOMEM;
  }
  if (fread(t->ids, 8, t->n, f) != t->n) {
    fclose(f);
    trace_free(t);
    return -EIO;
  }
  fclose(f);
  t->unique = count_unique(t->ids, t->n);
  t->path = strdup(path);
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  t->name = strdup(base);
  size_t l = strlen(t->name);
  if (l > 4 && strcmp(t->name + l - 4, ".u64") == 0)
    t->name[l - 4] = 0;
  return 0;
}

int trace_zipf(trace_t *t, uint64_t keys, double s, size_t n)
{
  memset(t, 0, sizeof *t);
  t->ids = malloc(n * sizeof *t->ids);
  if (t->ids == NULL)
    return -ENOMEM;
  zipf_t z;
  zipf_init(&z, keys, s);
  uint64_t rng = BENCH_SEED;
  for (size_t i = 0; i < n; i++)
    t->ids[i] = zipf_next(&z, &rng);
  t->n = n;
  t->unique = count_unique(t->ids, n);
  char name[64];
  (void)snprintf(name, sizeof name, "zipf-stream");
  t->name = strdup(name);
  t->path = strdup("(generated)");
  return 0;
}

void trace_free(trace_t *t)
{
  free(t->ids);
  free(t->path);
  free(t->name);
  memset(t, 0, sizeof *t);
}

static int is_dir(const char *p)
{
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

char *trace_find_dir(void)
{
  const char *env = getenv("CDCACHE_TRACES_DIR");
  if (env && *env)
    return is_dir(env) ? strdup(env) : NULL;
  const char *cands[] = {"../shared/traces", "shared/traces",
                         CDCACHE_SOURCE_DIR "/../shared/traces"};
  for (size_t i = 0; i < sizeof cands / sizeof *cands; i++)
    if (is_dir(cands[i])) {
      char *r = realpath(cands[i], NULL);
      return r ? r : strdup(cands[i]);
    }
  return NULL;
}

static int cmpstr(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

char **trace_list(const char *dir)
{
  DIR *d = opendir(dir);
  if (!d)
    return NULL;
  size_t n = 0, cap = 8;
  char **out = malloc(cap * sizeof *out);
  if (!out) {
    closedir(d);
    return NULL;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l <= 4 || strcmp(e->d_name + l - 4, ".u64") != 0)
      continue;
    if (n + 2 > cap) {
      char **o2 = realloc(out, (cap *= 2) * sizeof *out);
      if (!o2)
        break;
      out = o2;
    }
    size_t pl = strlen(dir) + l + 2;
    char *path = malloc(pl);
    if (!path)
      break;
    snprintf(path, pl, "%s/%s", dir, e->d_name);
    out[n++] = path;
  }
  closedir(d);
  qsort(out, n, sizeof *out, cmpstr);
  out[n] = NULL;
  return out;
}
