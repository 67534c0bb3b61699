/*
 * Key and value encoding, the clock, and the thread's preemption count.  Keys are numbered; key
 * number id is its 8 little-endian bytes followed, for --key-size > 8, by bytes derived from id, so
 * that a longer key still differs in every compare.
 */
#include "bench.h"

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
