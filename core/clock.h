/* Clock sources (clock.c). */
#ifndef CDCACHE_CLOCK_H
#define CDCACHE_CLOCK_H

#include <stdint.h>
#include <time.h>

uint64_t cdcache__coarse_ms(void);
uint64_t cdcache__coarse_resolution_ms(void);
/* Milliseconds of CLOCK_REALTIME.  Any thread. */
uint64_t cdcache__wall_ms(void);
/* *ts = CLOCK_MONOTONIC now + ms (for pthread_cond_timedwait). */
void cdcache__deadline_after(struct timespec *ts, uint32_t ms);

#endif
