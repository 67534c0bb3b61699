/*
 * fork(): the child's pre-fork handles refuse service; a child forked
 * through cdcache_fork_prepare/_parent/_child (or with the handlers
 * installed by cdcache_fork_install) opens, uses and closes new caches,
 * even when the parent had reclamation work queued at the fork.
 */
#include "testutil.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Thread creation the test can refuse (EAGAIN, as under a pids cgroup or
 * RLIMIT_NPROC at its limit); every other call goes to the real one.
 * The suite links cdcache statically, so the library's pthread_create
 * is this one. */
static atomic_int threads_refused;
int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
  static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
  if (atomic_load(&threads_refused))
    return EAGAIN;
  if (real == NULL)
    real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(
        RTLD_NEXT, "pthread_create");
  return real(t, attr, fn, arg);
}

/*
 * A host allocator for the cdcache_allocator_t hooks, with a lock of its
 * own (heap_mu), as allocators have.  A trap holds cdcache's reclaimer
 * thread inside its first free while armed (a round in progress, batches
 * queueing behind it) until heap_release is set.  In quarantine (a
 * child) a freed block is poisoned and kept, so that a later use of it
 * crashes in a plain build too, not only under ASan.
 */
static pthread_mutex_t heap_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t heap_owner;    /* the test's thread: its frees are never trapped */
static atomic_int heap_trap;    /* 0 off, 1 armed, 2 sprung (the reclaimer waits) */
static atomic_int heap_release; /* the trapped free may go on */
static atomic_int heap_quarantine;
/* Quarantined blocks, where a leak checker sees them (a child exits
 * without freeing them); volatile, so the stores stay. */
#define HEAP_KEPT_MAX 8192
static void *volatile heap_kept[HEAP_KEPT_MAX];
static atomic_int heap_nkept;

static void *heap_malloc(void *ctx, size_t size)
{
  (void)ctx;
  pthread_mutex_lock(&heap_mu);
  void *p = malloc(size);
  pthread_mutex_unlock(&heap_mu);
  return p;
}

static void heap_free(void *ctx, void *p, size_t size)
{
  (void)ctx;
  if (p == NULL)
    return;
  int armed = 1;
  if (!pthread_equal(pthread_self(), heap_owner) &&
      atomic_compare_exchange_strong(&heap_trap, &armed, 2))
    for (int ms = 0; ms < 10000 && !atomic_load(&heap_release); ms++)
      usleep(1000);
  memset(p, 0x5a, size);
  if (atomic_load(&heap_quarantine)) {
    /* Kept; past the list's end, freed for real. */
    int i = atomic_fetch_add(&heap_nkept, 1);
    if (i < HEAP_KEPT_MAX) {
      heap_kept[i] = p;
      return;
    }
  }
  pthread_mutex_lock(&heap_mu);
  free(p);
  pthread_mutex_unlock(&heap_mu);
}

static void heap_install(cdcache_config_t *cfg)
{
  cfg->allocator.malloc = heap_malloc;
  cfg->allocator.free = heap_free;
  cfg->allocator.usable_size = NULL;
  cfg->allocator.ctx = NULL;
}

/* Waits up to 10 s for the reclaimer to spring the trap. */
static bool heap_trap_sprung(void)
{
  for (int ms = 0; ms < 10000 && atomic_load(&heap_trap) != 2; ms++)
    usleep(1000);
  return atomic_load(&heap_trap) == 2;
}

/* Waits for the child at most 120 s (a child hung inside fork handlers,
 * before it could set its own alarm, is killed): it must exit 0.  Returns whether it did. */
static bool expect_child_ok(pid_t pid)
{
  int status = 0;
  pid_t got = 0;
  for (int ms = 0; ms < 120000 && got == 0; ms += 10) {
    got = waitpid(pid, &status, WNOHANG);
    if (got == 0)
      usleep(10000);
  }
  if (got == 0) {
    kill(pid, SIGKILL);
    got = waitpid(pid, &status, 0);
    printf("\n  child hung for 120 s: killed\n");
    CU_FAIL("child hung");
  }
  CU_ASSERT_EQUAL(got, pid);
  CU_ASSERT_TRUE(WIFEXITED(status));
  if (WIFEXITED(status))
    CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
  if (WIFSIGNALED(status))
    printf("\n  child killed by signal %d (a hang ends with SIGALRM)\n", WTERMSIG(status));
  return got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_child_after_fork_gets_eforked(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 100;
  cdcache_t *c = test_open(&cfg);
  char buf[8];
  size_t n;
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k"), "v", 1, 0), 0);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    alarm(60); /* a hang ends with SIGALRM */
    int bad = 0;
    bad |= cdcache_get(c, KEY("k"), buf, sizeof buf, &n) != CDCACHE_EFORKED;
    bad |= cdcache_put(c, KEY("k"), "w", 1, 0) != CDCACHE_EFORKED;
    bad |= cdcache_delete(c, KEY("k")) != CDCACHE_EFORKED;
    bad |= cdcache_flush(c) != CDCACHE_EFORKED;
    bad |= cdcache_close(c) != 0;
    _exit(bad ? 3 : 0);
  }
  expect_child_ok(pid);
  /* The parent is unaffected. */
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k2"), "v", 1, 0), 0);
  cdcache_close(c);
}

/* The parent deletes hundreds of keys right before the fork, so batches
 * are queued for the reclaimer when it happens. */
static cdcache_t *parent_with_queued_reclamation(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 4096;
  cdcache_t *c = test_open(&cfg);
  char k[16];
  for (int i = 0; i < 2000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL(cdcache_put(c, k, (size_t)kl, "value", 5, 0), 0);
  }
  for (int i = 0; i < 2000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL(cdcache_delete(c, k, (size_t)kl), 0);
  }
  return c;
}

/* In the child: the old handle refuses, a new cache works end to end.
 * A hang is turned into a failure by the alarm its caller set. */
static int child_body(cdcache_t *old)
{
  int bad = 0;
  char buf[8];
  size_t n;
  bad |= (cdcache_get(old, KEY("k1"), buf, sizeof buf, &n) != CDCACHE_EFORKED) << 0;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1024;
  cdcache_t *c = NULL;
  if (cdcache_open(&cfg, &c) != 0)
    return 1 << 1;
  char k[16];
  for (int i = 0; i < 3000; i++) {
    int kl = snprintf(k, sizeof k, "c%d", i);
    bad |= (cdcache_put(c, k, (size_t)kl, "v", 1, 0) != 0) << 2;
  }
  for (int i = 2000; i < 3000; i++) {
    int kl = snprintf(k, sizeof k, "c%d", i);
    bad |= (cdcache_delete(c, k, (size_t)kl) != 0) << 3;
  }
  bad |= (cdcache_get(c, KEY("c1"), buf, sizeof buf, &n) != CDCACHE_ENOENT) << 4;
  bad |= (cdcache_close(c) != 0) << 5;
  bad |= (cdcache_get(old, KEY("k1"), buf, sizeof buf, &n) != CDCACHE_EFORKED) << 6;
  bad |= (cdcache_close(old) != 0) << 7;
  return bad;
}

static void test_a_child_forked_with_the_fork_calls_uses_new_caches(void)
{
  cdcache_t *c = parent_with_queued_reclamation();
  cdcache_fork_prepare();
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60); /* before the fork call: a hang anywhere ends with SIGALRM */
    cdcache_fork_child();
    _exit(child_body(c));
  }
  cdcache_fork_parent();
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("after"), "v", 1, 0), 0);
  cdcache_close(c);
}

static void test_a_child_forked_without_the_fork_calls_cannot_open(void)
{
  /* Without liburcu's fork handling the child's grace periods would wait
   * for the parent's threads forever: open refuses instead of hanging. */
  cdcache_t *c = parent_with_queued_reclamation();
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60);
    cdcache_config_t cfg;
    cdcache_config_init(&cfg);
    cfg.max_entries = 10;
    cdcache_t *cc = NULL;
    int rc = cdcache_open(&cfg, &cc);
    _exit(rc == CDCACHE_EFORKED && cc == NULL && cdcache_close(c) == 0 ? 0 : 1);
  }
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
  cdcache_close(c);
}

static void test_stats_and_leases_of_a_pre_fork_handle_answer_eforked(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 64;
  cdcache_t *c = test_open(&cfg);
  char buf[8];
  size_t n;
  cdcache_lease_t *l = NULL, *l2 = NULL;
  CU_ASSERT_EQUAL_FATAL(cdcache_get_lease(c, KEY("k"), buf, sizeof buf, &n, &l), CDCACHE_ENOENT);
  CU_ASSERT_EQUAL_FATAL(cdcache_get_lease(c, KEY("k2"), buf, sizeof buf, &n, &l2), CDCACHE_ENOENT);
  cdcache_fork_prepare();
  pid_t pid = fork();
  if (pid == 0) {
    alarm(20); /* before the fork call: a hang anywhere ends with SIGALRM */
    cdcache_fork_child();
    cdcache_stats_t st = {.struct_size = sizeof st};
    int bad = cdcache_stats(c, &st) != CDCACHE_EFORKED;
    bad |= (cdcache_lease_release(c, l) != CDCACHE_EFORKED) << 1;
    bad |= (cdcache_put_leased(c, l2, "v", 1, 0) != CDCACHE_EFORKED) << 2;
    bad |= (cdcache_close(c) != 0) << 3;
    _exit(bad);
  }
  cdcache_fork_parent();
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
  CU_ASSERT_EQUAL(cdcache_lease_release(c, l), 0);
  CU_ASSERT_EQUAL(cdcache_put_leased(c, l2, "v", 1, 0), 0);
  cdcache_close(c);
}

/* A loader that forks (a server spawning a helper from inside a cache
 * fill): in the child, the fill is the parent's. */
static int forking_loader(void *ctx, const void *key, size_t klen, cdcache_fill_t *fill)
{
  (void)key;
  (void)klen;
  pid_t pid = fork();
  if (pid == 0) {
    alarm(20);
    _exit(cdcache_fill_set_value(fill, "child", 5) == CDCACHE_EFORKED ? 0 : 1);
  }
  *(pid_t *)ctx = pid;
  return cdcache_fill_set_value(fill, "parent", 6);
}

static void test_a_fill_set_value_in_a_child_of_a_loader_answers_eforked(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 64;
  cdcache_t *c = test_open(&cfg);
  pid_t pid = -1;
  char buf[16];
  size_t n = 0;
  CU_ASSERT_EQUAL(
      cdcache_get_or_load(c, KEY("k"), forking_loader, &pid, 0, 1000, buf, sizeof buf, &n), 0);
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
  CU_ASSERT_EQUAL(n, 6);
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  cdcache_close(c);
}

/* A pre-fork server's master keeps serving while it forks workers: one
 * thread cycles through more caches than a thread keeps counter slots for
 * (each switch hands a counter block back under the global live-cache
 * mutex and a cache's registry mutex), another starts threads that use a
 * cache and exit (the exit hands back under the same mutexes).  Every
 * child forked with the fork calls must open, use and close a cache, and
 * close the copied handles, within its alarm. */
#define MASTER_CACHES 6
/* Forks per run; CDCACHE_TEST_FORKS overrides (fewer under valgrind, where
 * each fork costs far more, tests/CMakeLists.txt; a hunt for a rare hang
 * runs thousands). */
#define MASTER_FORKS_DEFAULT 200
static cdcache_t *master_caches[MASTER_CACHES];
static atomic_int master_stop, master_ready;

static void *master_cycler(void *arg)
{
  (void)arg;
  char buf[8];
  size_t n;
  for (unsigned i = 0; !atomic_load(&master_stop); i++) {
    (void)cdcache_get(master_caches[i % MASTER_CACHES], KEY("k"), buf, sizeof buf, &n);
    if (i == 0) /* registered with liburcu: forks may begin */
      atomic_store(&master_ready, 1);
  }
  return NULL;
}

/* A thread that counts into a cache and exits: its exit hands its counter
 * block back under live_mu and the registry mutex.  It deletes an absent
 * key, which takes the shard lock but never liburcu: a thread that enters
 * or leaves liburcu-bp at the instant of fork is the hazard the README
 * names (liburcu-bp 0.13 does not hold its init lock across fork). */
static void *short_lived(void *arg)
{
  (void)cdcache_delete(arg, KEY("absent"));
  return NULL;
}

static void *master_spawner(void *arg)
{
  (void)arg;
  for (unsigned i = 0; !atomic_load(&master_stop); i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, short_lived, master_caches[i % MASTER_CACHES]) == 0)
      pthread_join(t, NULL);
  }
  return NULL;
}

/* with_calls: the children are forked through cdcache_fork_prepare /
 * _parent / _child and open, use and close a new cache; without, they
 * only close the copied handles (which must not hang either: the handler
 * cdcache installs at the first open holds live_mu across every fork). */
static void run_master_forks(bool with_calls)
{
  const char *env = getenv("CDCACHE_TEST_FORKS");
  int forks = env != NULL && atoi(env) > 0 ? atoi(env) : MASTER_FORKS_DEFAULT;
  for (int i = 0; i < MASTER_CACHES; i++) {
    cdcache_config_t cfg;
    cdcache_config_init(&cfg);
    cfg.max_entries = 64;
    master_caches[i] = test_open(&cfg);
  }
  atomic_store(&master_stop, 0);
  /* CDCACHE_TEST_FORK_SPAWNER=0 (the sanitizer builds, tests/CMakeLists.txt):
   * no thread creation beside the fork.  A thread being created holds
   * the sanitizer allocator's lock, which GCC 12's ASan and TSan do not
   * take around fork(): the child's first allocation then waits forever,
   * inside the sanitizer (seen in both).  glibc's malloc is fork-safe. */
  const char *sp = getenv("CDCACHE_TEST_FORK_SPAWNER");
  const bool spawner = sp == NULL || atoi(sp) != 0;
  pthread_t cyc, spawn;
  atomic_store(&master_ready, 0);
  CU_ASSERT_FATAL(pthread_create(&cyc, NULL, master_cycler, NULL) == 0);
  while (!atomic_load(&master_ready))
    usleep(1000);
  if (spawner)
    CU_ASSERT_FATAL(pthread_create(&spawn, NULL, master_spawner, NULL) == 0);
  int failed = 0;
  for (int it = 0; it < forks && failed == 0; it++) {
    if (with_calls)
      cdcache_fork_prepare();
    pid_t pid = fork();
    if (pid == 0) {
      alarm(20); /* a hang anywhere ends with SIGALRM; generous for a loaded machine */
      int bad = 0;
      if (with_calls) {
        cdcache_fork_child();
        cdcache_config_t cfg;
        cdcache_config_init(&cfg);
        cfg.max_entries = 16;
        cdcache_t *c = NULL;
        char buf[8];
        size_t n = 0;
        bad = cdcache_open(&cfg, &c) != 0;
        bad |= !bad && cdcache_put(c, KEY("a"), "b", 1, 0) != 0;
        bad |=
            !bad && (cdcache_get(c, KEY("a"), buf, sizeof buf, &n) != 0 || n != 1 || buf[0] != 'b');
        bad |= c != NULL && cdcache_close(c) != 0;
      }
      for (int i = 0; i < MASTER_CACHES; i++)
        bad |= cdcache_close(master_caches[i]) != 0;
      _exit(bad);
    }
    if (with_calls)
      cdcache_fork_parent();
    CU_ASSERT_FATAL(pid > 0);
    if (!expect_child_ok(pid)) {
      failed = 1;
      printf("\n  fork %d of %d failed\n", it + 1, forks);
    }
  }
  CU_ASSERT_EQUAL(failed, 0);
  atomic_store(&master_stop, 1);
  pthread_join(cyc, NULL);
  if (spawner)
    pthread_join(spawn, NULL);
  for (int i = 0; i < MASTER_CACHES; i++)
    cdcache_close(master_caches[i]);
}

static void test_workers_forked_while_master_threads_use_caches_never_hang(void)
{
  run_master_forks(true);
}

static void test_a_child_forked_without_the_calls_closes_pre_fork_caches_beside_busy_threads(void)
{
  run_master_forks(false);
}

/*
 * A host allocator that makes itself fork-safe the usual way: a
 * pthread_atfork handler, registered lazily (after cdcache's first open,
 * so it runs before cdcache's own prepare handler), holds its lock across
 * fork().  A plain fork() -- no fork calls, which cdcache_open's handler
 * must survive -- happens while the reclaimer thread is in a round, about
 * to free through that allocator.  The fork must not wait for the round:
 * the round waits for the allocator's lock, which the forking thread
 * holds until fork() returns.  Runs in a child forked with the fork calls
 * (which may open caches and register handlers without touching the
 * suite's process); a hang there ends with its alarm.
 */
static void heap_prepare(void)
{
  pthread_mutex_lock(&heap_mu);
  atomic_store(&heap_release, 1); /* the trapped free goes on: to heap_mu */
}

static void heap_after_fork(void)
{
  pthread_mutex_unlock(&heap_mu);
}

static int fork_beside_a_round_freeing_through_the_host_heap(void)
{
  heap_owner = pthread_self();
  if (pthread_atfork(heap_prepare, heap_after_fork, heap_after_fork) != 0)
    return 1;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 1024;
  cfg.shards = 1; /* a batch every 64 deletes */
  heap_install(&cfg);
  cdcache_t *c = NULL;
  if (cdcache_open(&cfg, &c) != 0)
    return 2;
  char k[16], v[300]; /* entries above the pools' 256 bytes: each is freed */
  memset(v, 'v', sizeof v);
  int bad = 0;
  for (int i = 0; i < 256; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    bad |= cdcache_put(c, k, (size_t)kl, v, sizeof v, 0) != 0;
  }
  atomic_store(&heap_release, 0);
  atomic_store(&heap_trap, 1);
  for (int i = 0; i < 256; i++) { /* four batches */
    int kl = snprintf(k, sizeof k, "k%d", i);
    bad |= cdcache_delete(c, k, (size_t)kl) != 0;
  }
  if (bad || !heap_trap_sprung())
    return 4;
  pid_t pid = fork(); /* the reclaimer is inside heap_free, in its round */
  if (pid == 0) {
    /* The round in progress is the parent's thread's: this child never
     * frees it, but it stays reachable (from the reclaimer's round_rest
     * and round_cur, and the batch's own fields), which valgrind, checking
     * this child's leaks when it exits, verifies: a definite or indirect
     * leak fails the memcheck run. */
    _exit(0);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    bad |= 8;
  atomic_store(&heap_trap, 0);
  bad |= (cdcache_close(c) != 0) << 4;
  return bad;
}

static void test_a_plain_fork_beside_a_round_freeing_through_a_locked_host_heap_never_hangs(void)
{
  cdcache_fork_prepare();
  pid_t pid = fork();
  if (pid == 0) {
    alarm(30); /* before the fork call: a hang anywhere ends with SIGALRM */
    cdcache_fork_child();
    _exit(fork_beside_a_round_freeing_through_the_host_heap());
  }
  cdcache_fork_parent();
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
}

/*
 * A child forked with the fork calls cannot start a thread (a pids
 * cgroup at its limit, say) when it closes a pre-fork handle whose
 * batches the parent had queued: close must still free those batches
 * (they name the handle) before freeing the handle, not leave them for a
 * reclaimer thread that a later batch starts, once threads can be made
 * again, and that would then read the freed cache.  The parent's
 * reclaimer is held in a round (the heap trap) while the batches queue
 * behind it, and let go just before the fork.
 */
static void test_a_child_that_cannot_start_threads_closes_pre_fork_handles_safely(void)
{
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 4096;
  cfg.shards = 1; /* a batch every 64 deletes */
  heap_install(&cfg);
  cdcache_t *c = test_open(&cfg);
  char k[16];
  for (int i = 0; i < 2000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL(cdcache_put(c, k, (size_t)kl, "value", 5, 0), 0);
  }
  heap_owner = pthread_self();
  atomic_store(&heap_release, 0);
  atomic_store(&heap_trap, 1);
  for (int i = 0; i < 2000; i++) {
    int kl = snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL(cdcache_delete(c, k, (size_t)kl), 0);
    if (i == 200) /* the first batches are in the reclaimer's round: the rest queue */
      CU_ASSERT_FATAL(heap_trap_sprung());
  }
  atomic_store(&heap_release, 1);
  cdcache_fork_prepare();
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60); /* before the fork call: a hang anywhere ends with SIGALRM */
    cdcache_fork_child();
    atomic_store(&heap_quarantine, 1); /* the closed cache stays poisoned */
    atomic_store(&threads_refused, 1);
    int bad = cdcache_close(c) != 0;
    atomic_store(&threads_refused, 0);
    /* A new cache's batches start the child's reclaimer thread. */
    cdcache_config_t cfg2;
    cdcache_config_init(&cfg2);
    cfg2.max_entries = 1024;
    cdcache_t *c2 = NULL;
    if (cdcache_open(&cfg2, &c2) != 0)
      _exit(2);
    for (int i = 0; i < 500; i++) {
      int kl = snprintf(k, sizeof k, "c%d", i);
      bad |= (cdcache_put(c2, k, (size_t)kl, "v", 1, 0) != 0) << 2;
      bad |= (cdcache_delete(c2, k, (size_t)kl) != 0) << 3;
    }
    bad |= (cdcache_close(c2) != 0) << 4; /* waits for its batches */
    _exit(bad);
  }
  cdcache_fork_parent();
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
  atomic_store(&heap_trap, 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("after"), "v", 1, 0), 0);
  cdcache_close(c);
}

/* Last: the handlers stay installed for the rest of the process. */
static void test_installed_fork_handlers_let_a_plain_fork_child_use_caches(void)
{
  CU_ASSERT_EQUAL(cdcache_fork_install(), 0);
  CU_ASSERT_EQUAL(cdcache_fork_install(), 0); /* idempotent */
  cdcache_t *c = parent_with_queued_reclamation();
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60); /* the handlers ran in fork(): expect_child_ok bounds them */
    _exit(child_body(c));
  }
  CU_ASSERT_FATAL(pid > 0);
  expect_child_ok(pid);
  cdcache_close(c);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("fork", NULL, NULL);
  CU_add_test(s, "a child after fork gets EFORKED; the parent goes on",
              test_child_after_fork_gets_eforked);
  CU_add_test(s, "a child forked with the fork calls opens, uses and closes new caches",
              test_a_child_forked_with_the_fork_calls_uses_new_caches);
  CU_add_test(s, "a child forked without the fork calls cannot open (no hang)",
              test_a_child_forked_without_the_fork_calls_cannot_open);
  CU_add_test(s, "stats and leases of a pre-fork handle answer EFORKED in the child",
              test_stats_and_leases_of_a_pre_fork_handle_answer_eforked);
  CU_add_test(s, "workers forked while master threads use caches never hang",
              test_workers_forked_while_master_threads_use_caches_never_hang);
  CU_add_test(s, "a fill_set_value in a child of a loader answers EFORKED",
              test_a_fill_set_value_in_a_child_of_a_loader_answers_eforked);
  CU_add_test(s, "a child forked without the calls closes pre-fork caches beside busy threads",
              test_a_child_forked_without_the_calls_closes_pre_fork_caches_beside_busy_threads);
  CU_add_test(s, "a plain fork beside a round freeing through a locked host heap never hangs",
              test_a_plain_fork_beside_a_round_freeing_through_a_locked_host_heap_never_hangs);
  CU_add_test(s, "a child that cannot start threads closes pre-fork handles safely",
              test_a_child_that_cannot_start_threads_closes_pre_fork_handles_safely);
  CU_add_test(s, "installed fork handlers let a plain fork's child use caches",
              test_installed_fork_handlers_let_a_plain_fork_child_use_caches);
  return test_run();
}
