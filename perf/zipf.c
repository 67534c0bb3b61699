/*
 * Zipf sampler over ranks 0..n-1, P(rank r) proportional to 1/(r+1)^s,
 * by the method of Gray et al., "Quickly Generating Billion-Record
 * Synthetic Databases" (SIGMOD 1994), the one YCSB's ZipfianGenerator
 * uses: after computing zeta(n, s) once, each sample costs one pow().
 *
 * zeta(n, s) is a sum over n terms (about 2 s at n = 10^8), so it is cached
 * per (n, s) for the life of the process.
 */
#include "bench.h"

#include <math.h>
#include <pthread.h>

#define ZETA_CACHE 16
static struct {
  uint64_t n;
  double s, zeta;
} zeta_cache[ZETA_CACHE];
static int zeta_cached;
static pthread_mutex_t zeta_lock = PTHREAD_MUTEX_INITIALIZER;

static double zeta(uint64_t n, double s)
{
  pthread_mutex_lock(&zeta_lock);
  for (int i = 0; i < zeta_cached; i++)
    if (zeta_cache[i].n == n && zeta_cache[i].s == s) {
      double z = zeta_cache[i].zeta;
      pthread_mutex_unlock(&zeta_lock);
      return z;
    }
  /* Sum smallest terms first for accuracy. */
  double sum = 0;
  for (uint64_t i = n; i >= 1; i--)
    sum += 1.0 / pow((double)i, s);
  if (zeta_cached < ZETA_CACHE) {
    zeta_cache[zeta_cached].n = n;
    zeta_cache[zeta_cached].s = s;
    zeta_cache[zeta_cached].zeta = sum;
    zeta_cached++;
  }
  pthread_mutex_unlock(&zeta_lock);
  return sum;
}

void zipf_init(zipf_t *z, uint64_t n, double s)
{
  z->n = n;
  z->theta = s;
  z->alpha = 1.0 / (1.0 - s);
  z->zetan = zeta(n, s);
  double zeta2 = 1.0 + pow(0.5, s);
  z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - s)) / (1.0 - zeta2 / z->zetan);
  z->half_pow_theta = 1.0 + pow(0.5, s);
}

uint64_t zipf_next(const zipf_t *z, uint64_t *rng)
{
  double u = rng_unit(rng);
  double uz = u * z->zetan;
  if (uz < 1.0)
    return 0;
  if (uz < z->half_pow_theta)
    return 1;
  uint64_t r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
  return r < z->n ? r : z->n - 1;
}
