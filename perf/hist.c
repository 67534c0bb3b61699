/*
 * Log-linear latency histogram.  A value v lands in bucket
 * (e * HIST_SUB + m) where e is the position of its top bit and m the next
 * log2(HIST_SUB) bits below it; values below HIST_SUB map to themselves.
 * Recording is a few instructions; quantiles report the bucket's upper
 * edge, so they over-state by at most 1/HIST_SUB.
 */
#include "bench.h"

#include <string.h>

#define SUB_BITS 4 /* log2(HIST_SUB) */

static unsigned bucket_of(uint64_t v)
{
  if (v < HIST_SUB)
    return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
  unsigned m = (unsigned)(v >> (e - SUB_BITS)) & (HIST_SUB - 1);
  return (e - SUB_BITS + 1) * HIST_SUB + m;
}

static double bucket_upper(unsigned b)
{
  if (b < HIST_SUB)
    return (double)b;
  unsigned e = b / HIST_SUB + SUB_BITS - 1, m = b % HIST_SUB;
  double base = (double)(1ULL << e);
  return base + (double)(m + 1) * base / HIST_SUB;
}

void hist_clear(hist_t *h)
{
  memset(h, 0, sizeof *h);
}

void hist_record(hist_t *h, uint64_t ns)
{
  unsigned b = bucket_of(ns);
  if (b >= HIST_BUCKETS)
    b = HIST_BUCKETS - 1;
  h->b[b]++;
  h->count++;
}

void hist_merge(hist_t *dst, const hist_t *src)
{
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    dst->b[i] += src->b[i];
  dst->count += src->count;
}

double hist_quantile(const hist_t *h, double q)
{
  if (h->count == 0)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count);
  if (rank >= h->count)
    rank = h->count - 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->b[i];
    if (seen > rank)
      return bucket_upper(i);
  }
  return bucket_upper(HIST_BUCKETS - 1);
}
