/* After fork(), the child's handle refuses service. */
#include "testutil.h"

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

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("fork", NULL, NULL);
  CU_add_test(s, "a child after fork gets EFORKED; the parent goes on",
              test_child_after_fork_gets_eforked);
  return test_run();
}
