/*
 * What a JSON record says about how its figures were made: the commit
 * (and whether the tree had uncommitted changes), the compiler, the flags
 * and build type the harness was configured with, how it links cdcache,
 * the CPU model, the number of CPUs and the kernel.  Collected once.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef CDCACHE_BENCH_FLAGS
#define CDCACHE_BENCH_FLAGS "unknown"
#endif
#ifndef CDCACHE_BENCH_BUILD_TYPE
#define CDCACHE_BENCH_BUILD_TYPE "unknown"
#endif

static struct {
  int done;
  char commit[64], cpu[128], kernel[400];
  int dirty;
} m;

static void chomp(char *s)
{
  s[strcspn(s, "\r\n")] = 0;
}

static void collect(void)
{
  if (m.done)
    return;
  m.done = 1;
  snprintf(m.commit, sizeof m.commit, "unknown");
  snprintf(m.cpu, sizeof m.cpu, "unknown");
  m.dirty = -1;
#ifdef CDCACHE_SOURCE_DIR
  FILE *p = popen("git -C '" CDCACHE_SOURCE_DIR "' rev-parse HEAD 2>/dev/null", "r");
  if (p) {
    if (fgets(m.commit, sizeof m.commit, p))
      chomp(m.commit);
    pclose(p);
  }
  p = popen("git -C '" CDCACHE_SOURCE_DIR "' status --porcelain --untracked-files=no -- api core "
            "shards cdc perf CMakeLists.txt 2>/dev/null | head -c 1",
            "r");
  if (p) {
    m.dirty = fgetc(p) != EOF;
    pclose(p);
  }
#endif
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f))
      if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
        const char *v = strchr(line, ':') + 1;
        while (*v == ' ')
          v++;
        snprintf(m.cpu, sizeof m.cpu, "%s", v);
        chomp(m.cpu);
        break;
      }
    fclose(f);
  }
  struct utsname u;
  if (uname(&u) == 0)
    snprintf(m.kernel, sizeof m.kernel, "%s %s %s", u.sysname, u.release, u.machine);
}

static void js(FILE *f, const char *k, const char *v, int first)
{
  fprintf(f, "%s\"%s\":\"", first ? "" : ",", k);
  for (; *v; v++) {
    if (*v == '"' || *v == '\\')
      fputc('\\', f);
    if ((unsigned char)*v >= 0x20)
      fputc(*v, f);
  }
  fputc('"', f);
}

void meta_json(FILE *f)
{
  collect();
  fputc('{', f);
  js(f, "commit", m.commit, 1);
  fprintf(f, ",\"dirty\":%s", m.dirty < 0 ? "null" : m.dirty ? "true" : "false");
  js(f, "compiler", __VERSION__, 0);
  js(f, "flags", CDCACHE_BENCH_FLAGS, 0);
  js(f, "build_type", CDCACHE_BENCH_BUILD_TYPE, 0);
  js(f, "linkage", bench_linkage, 0);
  js(f, "cpu", m.cpu, 0);
  fprintf(f, ",\"cpus\":%ld", sysconf(_SC_NPROCESSORS_ONLN));
  js(f, "kernel", m.kernel, 0);
  fputc('}', f);
}

void meta_line(FILE *f)
{
  collect();
  fprintf(f, "build: commit %.12s%s, %s, %s, flags '%s', cdcache linked %s; %s, %ld CPUs; %s\n",
          m.commit, m.dirty > 0 ? " (modified)" : "", __VERSION__, CDCACHE_BENCH_BUILD_TYPE,
          CDCACHE_BENCH_FLAGS, bench_linkage, m.cpu, sysconf(_SC_NPROCESSORS_ONLN), m.kernel);
}
