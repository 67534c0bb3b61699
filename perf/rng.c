/*
 * Key and value encoding, the clock, the thread's preemption count, the
 * references' hash secrets, the loader's cost and the process's RSS.  Keys are numbered; key
 * number id is its 8 little-endian bytes followed, for --key-size > 8, by bytes derived from id, so
 * that a longer key still differs in every compare.
 */
#include "bench.h"
#include "bench_hash.h"

#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

#include <string.h>
#include <sys/resource.h>
#include <time.h>

void key_encode(unsigned char *buf, size_t ksz, uint64_t id)
{
  uint64_t le = id; /* x86-64 and the traces are little-endian */
  if (ksz <= 8) {
    memcpy(buf, &le, ksz);
    return;
  }
  memcpy(buf, &le, 8);
  uint64_t s = id;
  for (size_t i = 8; i < ksz; i += 8) {
    uint64_t r = rng_next(&s);
    memcpy(buf + i, &r, ksz - i < 8 ? ksz - i : 8);
  }
}

void value_encode(unsigned char *buf, size_t vsz, uint64_t id)
{
  uint64_t s = id ^ 0x5555555555555555ULL;
  for (size_t i = 0; i < vsz; i += 8) {
    uint64_t r = rng_next(&s);
    memcpy(buf + i, &r, vsz - i < 8 ? vsz - i : 8);
  }
}

uint64_t bench_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t thread_nivcsw(void)
{
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0)
    return 0;
  return (uint64_t)ru.ru_nivcsw;
}

int bench_secret_init(unsigned char secret[BENCH_SECRET_SIZE])
{
  size_t got = 0;
  while (got < BENCH_SECRET_SIZE) {
    ssize_t n = getrandom(secret + got, BENCH_SECRET_SIZE - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    got += (size_t)n;
  }
  return 0;
}

static _Thread_local uint64_t loads_run;

void bench_load_spin(const bench_loader_t *ld)
{
  loads_run++;
  if (ld->cost_ns == 0)
    return;
  uint64_t until = bench_now_ns() + ld->cost_ns;
  while (bench_now_ns() < until) {
  }
}

uint64_t bench_loads_get(void)
{
  return loads_run;
}

int64_t bench_rss_bytes(void)
{
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  unsigned long long size = 0, resident = 0;
  int n = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  return n == 2 ? (int64_t)resident * (int64_t)sysconf(_SC_PAGESIZE) : -1;
}
