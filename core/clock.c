/*
 * The cache's clock.  TTLs, fill timeouts and the CDC fail-closed bound are
 * all compared against milliseconds from one source per cache: the clock
 * the host injected (tests use it so they never sleep), or
 * CLOCK_MONOTONIC_COARSE, which the vDSO answers from the last timer tick
 * for a few nanoseconds (a full clock_gettime(CLOCK_MONOTONIC) costs about
 * 27 ns here).  The coarse clock lags real time by up to one tick, so TTL
 * checks add the tick (clock_slack_ms) to "now" and err towards expiring
 * early.
 */
#include "clock.h"

#include <time.h>

static uint64_t ts_to_ms(const struct timespec *ts)
{
  return (uint64_t)ts->tv_sec * 1000u + (uint64_t)ts->tv_nsec / 1000000u;
}

uint64_t cdcache__coarse_ms(void)
{
  struct timespec ts;
  /* Cannot fail for a clock id the kernel supports (Linux >= 2.6.32). */
  (void)clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return ts_to_ms(&ts);
}

uint64_t cdcache__coarse_resolution_ms(void)
{
  struct timespec ts;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0)
    return 10;
  /* Round up: a 4 ms tick is 4 ms of possible lag. */
  return ts_to_ms(&ts) + (ts.tv_nsec % 1000000 != 0 ? 1 : 0);
}

uint64_t cdcache__wall_ms(void)
{
  struct timespec ts;
  (void)clock_gettime(CLOCK_REALTIME, &ts);
  return ts_to_ms(&ts);
}

void cdcache__deadline_after(struct timespec *ts, uint32_t ms)
{
  (void)clock_gettime(CLOCK_MONOTONIC, ts);
  ts->tv_sec += ms / 1000u;
  ts->tv_nsec += (long)(ms % 1000u) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec += 1;
    ts->tv_nsec -= 1000000000L;
  }
}
