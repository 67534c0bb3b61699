/*
 * The write and miss paths' cost in instructions (perf/writepath-callgrind.sh
 * runs this under callgrind).  Links the shared library as users do, with
 * the default allocator; 8-byte keys and values prepared before the loops,
 * a full cache of CAP entries (the bench's default capacity).  Each loop
 * is measured alone (callgrind --toggle-collect=LOOP, which counts the
 * calling thread only: the reclaimer thread's frees are not in it).
 *
 *   replace_loop  puts over keys already cached (overwrites)
 *   insert_loop   puts of absent keys into the full cache (insert + evict)
 *   miss_loop     gets of absent keys
 *
 * `writepath N native` runs the same loops without valgrind, through an
 * allocator hook that counts malloc calls, and prints ns and mallocs per
 * op (how many puts found a recycled entry).
 */
#define _POSIX_C_SOURCE 200809L
#include <cdcache.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAP 100000u

static uint64_t *keys; /* CAP cached keys, then CAP absent ones */

static uint64_t mix(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

static _Atomic unsigned long mallocs;

static void *count_malloc(void *ctx, size_t size)
{
  (void)ctx;
  mallocs++;
  return malloc(size);
}
static void count_free(void *ctx, void *p, size_t size)
{
  (void)ctx;
  (void)size;
  free(p);
}

static double now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Native mode: one loop's ns and mallocs per op. */
#define TIMED(native, name, call, n)                                                               \
  ({                                                                                               \
    unsigned long m0 = mallocs;                                                                    \
    double t0 = now_ns();                                                                          \
    unsigned long r_ = (call);                                                                     \
    if (native)                                                                                    \
      printf("%-12s %.1f ns/op, %.3f mallocs/op\n", name, (now_ns() - t0) / (double)(n),           \
             (double)(mallocs - m0) / (double)(n));                                                \
    r_;                                                                                            \
  })

__attribute__((noinline)) static unsigned long replace_loop(cdcache_t *c, unsigned long n)
{
  unsigned long ok = 0;
  for (unsigned long i = 0; i < n; i++) {
    uint64_t v = i;
    ok += cdcache_put(c, &keys[i % CAP], 8, &v, 8, CDCACHE_TTL_NONE) == 0;
  }
  return ok;
}

__attribute__((noinline)) static unsigned long insert_loop(cdcache_t *c, unsigned long n)
{
  unsigned long ok = 0;
  for (unsigned long i = 0; i < n; i++) {
    uint64_t v = i;
    ok += cdcache_put(c, &keys[(CAP + i) % (2 * CAP)], 8, &v, 8, CDCACHE_TTL_NONE) == 0;
  }
  return ok;
}

__attribute__((noinline)) static unsigned long miss_loop(cdcache_t *c, unsigned long n)
{
  unsigned long miss = 0;
  uint64_t buf;
  size_t vl;
  for (unsigned long i = 0; i < n; i++)
    miss += cdcache_get(c, &keys[CAP + i % CAP], 8, &buf, sizeof buf, &vl) == CDCACHE_ENOENT;
  return miss;
}

int main(int argc, char **argv)
{
  unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
  const int native = argc > 2 && strcmp(argv[2], "native") == 0;
  keys = malloc(2 * CAP * sizeof *keys);
  if (keys == NULL)
    return 1;
  for (unsigned i = 0; i < 2 * CAP; i++)
    keys[i] = mix(i + 1);
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = CAP;
  if (native) {
    cfg.allocator.malloc = count_malloc;
    cfg.allocator.free = count_free;
  }
  cdcache_t *c;
  if (cdcache_open(&cfg, &c) != 0)
    return 1;
  uint64_t v = 0;
  for (unsigned i = 0; i < CAP; i++)
    if (cdcache_put(c, &keys[i], 8, &v, 8, CDCACHE_TTL_NONE) != 0)
      return 1;
  unsigned long r = TIMED(native, "replace_loop", replace_loop(c, n), n);
  unsigned long m = TIMED(native, "miss_loop", miss_loop(c, n), n);
  /* The absent keys, then the ones they evicted: every put inserts. */
  unsigned long ins = TIMED(native, "insert_loop", insert_loop(c, n), n);
  cdcache_close(c);
  free(keys);
  if (r != n || ins != n || m != n) {
    fprintf(stderr, "writepath: %lu/%lu puts, %lu/%lu inserts, %lu misses\n", r, n, ins, n, m);
    return 1;
  }
  if (!native)
    printf("puts %lu misses %lu inserts %lu\n", r, m, ins);
  return 0;
}
