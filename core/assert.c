/* The debug assertion's failure path (entry.h: CDCACHE__ASSERT).  Only
 * the library's own invariants are asserted, never inputs. */
#include "entry.h"

#ifdef CDCACHE_ASSERTS
#include <stdio.h>
#include <stdlib.h>

void cdcache__assert_fail(const char *expr, const char *file, int line)
{
  /* An invariant is broken: the process state cannot be trusted. */
  (void)fprintf(stderr, "cdcache: invariant failed: %s (%s:%d)\n", expr, file, line);
  abort();
}
#else
typedef int cdcache__assert_unused; /* ISO C: a translation unit is not empty */
#endif
