/* Loads the shared library with dlopen() into a process that links neither
 * it nor liburcu-bp, then puts and gets a key: the library's initial-exec
 * TLS (its per-thread counter slots) must fit glibc's surplus static TLS,
 * and liburcu-bp's reader must be reachable through its TLS descriptors.
 * Run by check.sh. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "cdcache.h"

int main(int argc, char **argv)
{
  if (argc != 2)
    return 2;
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  int (*init)(cdcache_config_t *) = (int (*)(cdcache_config_t *))dlsym(lib, "cdcache_config_init");
  int (*open)(const cdcache_config_t *, cdcache_t **) =
      (int (*)(const cdcache_config_t *, cdcache_t **))dlsym(lib, "cdcache_open");
  int (*put)(cdcache_t *, const void *, size_t, const void *, size_t, uint32_t) = (int (*)(
      cdcache_t *, const void *, size_t, const void *, size_t, uint32_t))dlsym(lib, "cdcache_put");
  int (*get)(cdcache_t *, const void *, size_t, void *, size_t, size_t *) =
      (int (*)(cdcache_t *, const void *, size_t, void *, size_t, size_t *))dlsym(lib,
                                                                                  "cdcache_get");
  int (*close_)(cdcache_t *) = (int (*)(cdcache_t *))dlsym(lib, "cdcache_close");
  if (!init || !open || !put || !get || !close_) {
    fprintf(stderr, "dlsym: %s\n", dlerror());
    return 1;
  }
  cdcache_config_t cfg;
  cdcache_t *c;
  init(&cfg);
  cfg.max_entries = 100;
  if (open(&cfg, &c) != 0)
    return 1;
  char buf[16];
  size_t vlen = 0;
  int ok = put(c, "k", 1, "value", 5, CDCACHE_TTL_DEFAULT) == 0 &&
           get(c, "k", 1, buf, sizeof buf, &vlen) == 0 && vlen == 5 && memcmp(buf, "value", 5) == 0;
  close_(c);
  dlclose(lib);
  if (!ok) {
    fprintf(stderr, "dlopen: put/get through the dlopen()ed library failed\n");
    return 1;
  }
  return 0;
}
