/*
 * fork(): the child's pre-fork handles refuse service; a child forked
 * through cdcache_fork_prepare/_parent/_child (or with the handlers
 * installed by cdcache_fork_install) opens, uses and closes new caches,
 * even when the parent had reclamation work queued at the fork.
 */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

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
    int bad = 0;
    bad |= cdcache_get(c, KEY("k"), buf, sizeof buf, &n) != CDCACHE_EFORKED;
    bad |= cdcache_put(c, KEY("k"), "w", 1, 0) != CDCACHE_EFORKED;
    bad |= cdcache_delete(c, KEY("k")) != CDCACHE_EFORKED;
    bad |= cdcache_flush(c) != CDCACHE_EFORKED;
    bad |= cdcache_close(c) != 0;
    _exit(bad ? 3 : 0);
  }
  int status = 0;
  CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT_TRUE(WIFEXITED(status));
  CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
  /* The parent is unaffected. */
  CU_ASSERT_EQUAL(cdcache_get(c, KEY("k"), buf, sizeof buf, &n), 0);
  CU_ASSERT_EQUAL(cdcache_put(c, KEY("k2"), "v", 1, 0), 0);
  cdcache_close(c);
}

/* The parent deletes hundreds of keys right before the fork, so batches
 * are queued for call_rcu when it happens. */
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
 * A hang is turned into a failure by the alarm. */
static int child_body(cdcache_t *old)
{
  alarm(60);
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

static void expect_child_ok(pid_t pid)
{
  int status = 0;
  CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT_TRUE(WIFEXITED(status));
  if (WIFEXITED(status))
    CU_ASSERT_EQUAL(WEXITSTATUS(status), 0);
  if (WIFSIGNALED(status))
    printf("\n  child killed by signal %d (a hang ends with SIGALRM)\n", WTERMSIG(status));
}

static void test_a_child_forked_with_the_fork_calls_uses_new_caches(void)
{
  cdcache_t *c = parent_with_queued_reclamation();
  cdcache_fork_prepare();
  pid_t pid = fork();
  if (pid == 0) {
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

/* Last: the handlers stay installed for the rest of the process. */
static void test_installed_fork_handlers_let_a_plain_fork_child_use_caches(void)
{
  CU_ASSERT_EQUAL(cdcache_fork_install(), 0);
  CU_ASSERT_EQUAL(cdcache_fork_install(), 0); /* idempotent */
  cdcache_t *c = parent_with_queued_reclamation();
  pid_t pid = fork();
  if (pid == 0)
    _exit(child_body(c));
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
  CU_add_test(s, "installed fork handlers let a plain fork's child use caches",
              test_installed_fork_handlers_let_a_plain_fork_child_use_caches);
  return test_run();
}
