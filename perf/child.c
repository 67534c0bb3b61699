/*
 * Running one synthetic point in another process: the static row.
 *
 * cdcache-bench links the shared library, as users of `pkg-config --libs
 * cdcache` do; its sibling cdcache-bench-static is built from the same
 * sources against the static library.  One process cannot hold both, so
 * the `cdcache-static` impl is a proxy: the plan schedules its runs like
 * any other (interleaved with the other impls, retried alike), and each
 * run executes `cdcache-bench-static --point-child-fd FD --point
 * KIND,THREADS,CAPACITY` with the same options; the child runs the point
 * with its (statically linked) cdcache and writes the result_t back
 * through the pipe.
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const bench_impl_t impl_cdcache_static = {
    .name = "cdcache-static",
    .child_exe = "cdcache-bench-static",
};

int point_child(const opts_t *o, int fd, const char *spec)
{
  unsigned kind, threads;
  unsigned long long cap;
  result_t r;
  result_init(&r);
  int rc = -1;
  if (sscanf(spec, "%u,%u,%llu", &kind, &threads, &cap) == 3 && threads > 0 && cap > 0)
    rc = run_synthetic(o, &impl_cdcache, (wl_kind_t)kind, threads, cap, &r);
  if (rc != 0)
    return 1;
  snprintf(r.impl, sizeof r.impl, "%s", impl_cdcache_static.name);
  rc = bench_write_all(fd, &r, sizeof r);
  close(fd);
  return rc == 0 ? 0 : 1;
}

int bench_write_all(int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

size_t bench_read_all(int fd, void *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, (char *)buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  return got;
}

int run_in_child(const opts_t *o, const bench_impl_t *impl, wl_kind_t wl, unsigned threads,
                 uint64_t capacity, result_t *out)
{
  char exe[4096];
  snprintf(exe, sizeof exe, "%s/%s", o->exe_dir ? o->exe_dir : ".", impl->child_exe);
  if (access(exe, X_OK) != 0)
    return -1;
  int pfd[2];
  if (pipe(pfd) != 0)
    return -1;
  char fds[16], point[96], secs[32], ksz[32], vsz[32], rate[32], load[32];
  snprintf(fds, sizeof fds, "%d", pfd[1]);
  snprintf(point, sizeof point, "%u,%u,%llu", (unsigned)wl, threads, (unsigned long long)capacity);
  snprintf(secs, sizeof secs, "%.17g", o->seconds);
  snprintf(ksz, sizeof ksz, "%zu", o->key_size);
  snprintf(vsz, sizeof vsz, "%zu", o->value_size);
  snprintf(rate, sizeof rate, "%.17g", o->rate);
  snprintf(load, sizeof load, "%.17g", (double)o->load_ns / 1000.0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(pfd[0]);
    close(pfd[1]);
    return -1;
  }
  if (pid == 0) {
    close(pfd[0]);
    char *argv[] = {exe,  "--point-child-fd", fds,  "--point",      point, "--seconds",
                    secs, "--key-size",       ksz,  "--value-size", vsz,   "--rate",
                    rate, "--load-us",        load, "--quiet",      NULL};
    execv(exe, argv);
    _exit(127);
  }
  close(pfd[1]);
  result_t r;
  size_t got = bench_read_all(pfd[0], &r, sizeof r);
  close(pfd[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (got != sizeof r || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    return -1;
  char wlname[sizeof out->workload];
  snprintf(wlname, sizeof wlname, "%s", out->workload);
  *out = r;
  snprintf(out->workload, sizeof out->workload, "%s", wlname);
  return 0;
}
