/*
 * cdcache-http-driver: the demo's client side, over HTTP only.
 *
 *   cdcache-http-driver load PORT N
 *       PUTs documents /users/0 .. /users/N-1 through the instance on PORT.
 *   cdcache-http-driver lag WRITE_PORT READ_PORT READ_PORT [WRITES]
 *       Cross-instance coherence lag: WRITES times (default 500), reads a
 *       document through both readers (so each caches it), PUTs a new
 *       version through the writer, and from the moment the PUT is
 *       acknowledged polls both readers until each serves the new
 *       version.  Prints p50/p99/max of that time, in ms.
 *
 * The readers are polled in turn, one GET at a time, so the resolution is
 * one HTTP round trip (about 0.1 ms on loopback).
 */
#include "httpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TIMEOUT_MS 10000

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int put(httpc_t *h, const char *path, const char *body)
{
  http_resp_t r;
  if (httpc_request(h, "PUT", path, NULL, body, strlen(body), &r) != 0)
    return 0;
  int st = r.status;
  httpc_resp_free(&r);
  return st;
}

/* GET path; true when it answers 200 with a body containing want. */
static int serves(httpc_t *h, const char *path, const char *want)
{
  http_resp_t r;
  if (httpc_request(h, "GET", path, NULL, NULL, 0, &r) != 0)
    return -1;
  int ok = r.status == 200 && strstr(r.body, want) != NULL;
  httpc_resp_free(&r);
  return ok;
}

static int load(uint16_t port, long n)
{
  httpc_t h;
  httpc_init(&h, port, TIMEOUT_MS);
  double t0 = now_ms();
  for (long i = 0; i < n; i++) {
    char path[64], body[160];
    snprintf(path, sizeof path, "/users/%ld", i);
    snprintf(body, sizeof body,
             "{\"name\":\"user %ld\",\"email\":\"user%ld@example.com\",\"plan\":\"%s\",\"v\":0}", i,
             i, i % 7 == 0 ? "pro" : "free");
    int st = put(&h, path, body);
    if (st != 201 && st != 204) {
      fprintf(stderr, "cdcache-http-driver: PUT %s: status %d\n", path, st);
      httpc_close(&h);
      return 1;
    }
  }
  printf("loaded %ld documents in %.2f s\n", n, (now_ms() - t0) / 1e3);
  httpc_close(&h);
  return 0;
}

static int lag(uint16_t wport, uint16_t r1port, uint16_t r2port, long writes)
{
  httpc_t w, r[2];
  httpc_init(&w, wport, TIMEOUT_MS);
  httpc_init(&r[0], r1port, TIMEOUT_MS);
  httpc_init(&r[1], r2port, TIMEOUT_MS);
  double *lags = malloc((size_t)writes * sizeof *lags);
  if (lags == NULL)
    return 1;
  int rc = 0;
  /* Version numbers unique to this run, so an earlier run's value never
   * counts as new. */
  long base = (long)time(NULL) * 1000;
  for (long i = 0; i < writes && rc == 0; i++) {
    char path[64], body[96], want[64];
    long id = 900000 + i % 100, v = base + i;
    snprintf(path, sizeof path, "/users/%ld", id);
    /* Both readers hold the current version in their caches... */
    for (int k = 0; k < 2; k++)
      if (serves(&r[k], path, "") < 0)
        rc = 1;
    /* ...then one write through the writer. */
    snprintf(body, sizeof body, "{\"v\":%ld}", v);
    snprintf(want, sizeof want, "\"v\" : %ld", v);
    int st = put(&w, path, body);
    double t0 = now_ms();
    if (st != 201 && st != 204) {
      fprintf(stderr, "cdcache-http-driver: PUT %s: status %d\n", path, st);
      rc = 1;
      break;
    }
    int done[2] = {0, 0};
    while (!(done[0] && done[1])) {
      for (int k = 0; k < 2; k++)
        if (!done[k]) {
          int s = serves(&r[k], path, want);
          if (s < 0) {
            rc = 1;
            break;
          }
          done[k] = s;
        }
      if (rc != 0 || now_ms() - t0 > TIMEOUT_MS) {
        fprintf(stderr, "cdcache-http-driver: %s not served within %d ms\n", path, TIMEOUT_MS);
        rc = 1;
        break;
      }
    }
    lags[i] = now_ms() - t0;
  }
  if (rc == 0) {
    qsort(lags, (size_t)writes, sizeof *lags, cmp_double);
    printf("coherence lag over HTTP (PUT acknowledged by one instance -> both others serve the "
           "new value): %ld writes, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           writes, lags[writes / 2], lags[(writes * 99) / 100], lags[writes - 1]);
  }
  free(lags);
  httpc_close(&w);
  httpc_close(&r[0]);
  httpc_close(&r[1]);
  return rc;
}

static long arg(const char *s, long lo, long hi)
{
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "cdcache-http-driver: bad number '%s'\n", s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv)
{
  if (argc == 4 && strcmp(argv[1], "load") == 0)
    return load((uint16_t)arg(argv[2], 1, 65535), arg(argv[3], 1, 100000000));
  if ((argc == 5 || argc == 6) && strcmp(argv[1], "lag") == 0)
    return lag((uint16_t)arg(argv[2], 1, 65535), (uint16_t)arg(argv[3], 1, 65535),
               (uint16_t)arg(argv[4], 1, 65535), argc == 6 ? arg(argv[5], 1, 10000000) : 500);
  fprintf(stderr, "usage: cdcache-http-driver load PORT N\n"
                  "       cdcache-http-driver lag WRITE_PORT READ_PORT READ_PORT [WRITES]\n");
  return 2;
}
