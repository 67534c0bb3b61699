/*
 * cdcache-lockbench: which lock for a shard?  A shard's critical sections
 * are short (link an entry, move a list node), and on this 2-core machine
 * the host may run more threads than cores, so a lock holder can be
 * preempted.  Spinners then burn their whole time slice waiting for a
 * thread that is not running.  This program measures throughput of a
 * short critical section (touching two cache lines, as a put does) plus
 * some work outside it, for a pthread mutex, an adaptive pthread mutex,
 * ConcurrencyKit's fetch-and-store and ticket spinlocks, at 1, 2, 4 and 8
 * threads, each run --seconds long, the median of --repeat runs.
 *
 * Usage: cdcache-lockbench [--seconds S] [--repeat N]
 */
#include <ck_spinlock.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum lock_kind { PTHREAD, ADAPTIVE, CK_FAS, CK_TICKET, KINDS };
static const char *const names[KINDS] = {"pthread-mutex", "pthread-adaptive", "ck-spinlock-fas",
                                         "ck-spinlock-ticket"};

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t adaptive;
static ck_spinlock_fas_t fas = CK_SPINLOCK_FAS_INITIALIZER;
static ck_spinlock_ticket_t ticket = CK_SPINLOCK_TICKET_INITIALIZER;
/* Synchronization: the lock under test. */
static uint64_t shared[16];
static _Atomic int go, stop;
static enum lock_kind kind;

static void lock(void)
{
  switch (kind) {
  case PTHREAD:
    pthread_mutex_lock(&mtx);
    break;
  case ADAPTIVE:
    pthread_mutex_lock(&adaptive);
    break;
  case CK_FAS:
    ck_spinlock_fas_lock(&fas);
    break;
  default:
    ck_spinlock_ticket_lock(&ticket);
    break;
  }
}

static void unlock(void)
{
  switch (kind) {
  case PTHREAD:
    pthread_mutex_unlock(&mtx);
    break;
  case ADAPTIVE:
    pthread_mutex_unlock(&adaptive);
    break;
  case CK_FAS:
    ck_spinlock_fas_unlock(&fas);
    break;
  default:
    ck_spinlock_ticket_unlock(&ticket);
    break;
  }
}

static void *worker(void *arg)
{
  (void)arg;
  uint64_t ops = 0;
  volatile uint64_t outside = 0;
  while (!atomic_load_explicit(&go, memory_order_acquire))
    ;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    for (int i = 0; i < 256; i++) {
      lock();
      shared[0]++;
      shared[8]++;
      unlock();
      for (int j = 0; j < 40; j++) /* the put's work outside the lock */
        outside += (uint64_t)j;
    }
    ops += 256;
  }
  return (void *)(uintptr_t)ops;
}

static double run(enum lock_kind k, int threads, double seconds)
{
  pthread_t th[64];
  kind = k;
  atomic_store(&go, 0);
  atomic_store(&stop, 0);
  for (int i = 0; i < threads; i++)
    pthread_create(&th[i], NULL, worker, NULL);
  struct timespec t0, t1, d = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  atomic_store_explicit(&go, 1, memory_order_release);
  nanosleep(&d, NULL);
  atomic_store(&stop, 1);
  uint64_t total = 0;
  for (int i = 0; i < threads; i++) {
    void *r;
    pthread_join(th[i], &r);
    total += (uint64_t)(uintptr_t)r;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  return (double)total / el;
}

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  double seconds = 0.3;
  int repeat = 3;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
      repeat = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--seconds S] [--repeat N]\n", argv[0]);
      return 2;
    }
  }
  if (repeat < 1 || repeat > 15 || seconds <= 0) {
    fprintf(stderr, "bad --seconds or --repeat\n");
    return 2;
  }
  pthread_mutexattr_t at;
  pthread_mutexattr_init(&at);
  pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(&adaptive, &at);
  printf("%-8s %-20s %14s %10s\n", "threads", "lock", "Mops/s", "vs mutex");
  for (int threads = 1; threads <= 8; threads *= 2) {
    double base = 0;
    for (int k = 0; k < KINDS; k++) {
      double r[15];
      for (int i = 0; i < repeat; i++)
        r[i] = run((enum lock_kind)k, threads, seconds);
      qsort(r, (size_t)repeat, sizeof r[0], cmp);
      double med = r[repeat / 2];
      if (k == PTHREAD)
        base = med;
      printf("%-8d %-20s %14.2f %9.2fx\n", threads, names[k], med / 1e6, med / base);
    }
  }
  return 0;
}
