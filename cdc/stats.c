/*
 * Subscription statistics and the invalidation-lag window.
 *
 * The CDC thread is the only writer; cdcache_cdc_stats() readers come from
 * any thread.  Everything sits under one mutex: the writer takes it a few
 * times per event, which is noise next to a network round trip, and a
 * reader gets one consistent snapshot (unlike the cache's per-thread
 * counters, these are few and written by one thread).
 *
 * Lag: each applied event that carries a commit time contributes one
 * sample, (wall clock at eviction) - (commit time), to a ring of the last
 * CDCACHE__LAG_WINDOW samples.  The commit time is the event's wallTime
 * (MongoDB 6.0+, milliseconds) or else its clusterTime seconds (so the lag
 * is then known to one second only).  Percentiles are computed on read by
 * copying the ring and sorting it (1024 values: microseconds), nearest-
 * rank: p = sorted[ceil(q * n) - 1].
 */
#include "cdc_internal.h"

#include <stdlib.h>
#include <string.h>

int cdcache__stats_init(cdcache__cdc_stats_t *s)
{
  memset(s, 0, sizeof *s);
  s->state = CDCACHE_CDC_CONNECTING;
  return pthread_mutex_init(&s->mu, NULL) == 0 ? 0 : CDCACHE_ENOMEM;
}

void cdcache__stats_destroy(cdcache__cdc_stats_t *s)
{
  pthread_mutex_destroy(&s->mu);
  bson_free(s->token);
  s->token = NULL;
  s->token_len = s->token_cap = 0;
}

void cdcache__stats_add(cdcache__cdc_stats_t *s, size_t off, uint64_t delta)
{
  (void)pthread_mutex_lock(&s->mu);
  *(uint64_t *)((char *)s + off) += delta;
  (void)pthread_mutex_unlock(&s->mu);
}

void cdcache__stats_flush(cdcache__cdc_stats_t *s, int reason)
{
  if (reason < 0 || reason >= CDCACHE_CDC_FLUSH_REASONS)
    return;
  (void)pthread_mutex_lock(&s->mu);
  s->flushes[reason]++;
  (void)pthread_mutex_unlock(&s->mu);
}

void cdcache__stats_set_state(cdcache__cdc_stats_t *s, int state)
{
  (void)pthread_mutex_lock(&s->mu);
  s->state = state;
  (void)pthread_mutex_unlock(&s->mu);
}

int cdcache__stats_get_state(cdcache__cdc_stats_t *s)
{
  int st;
  (void)pthread_mutex_lock(&s->mu);
  st = s->state;
  (void)pthread_mutex_unlock(&s->mu);
  return st;
}

void cdcache__stats_applied(cdcache__cdc_stats_t *s, uint64_t cluster_time, int64_t lag_ms,
                            bool has_lag)
{
  (void)pthread_mutex_lock(&s->mu);
  if (cluster_time)
    s->last_cluster_time = cluster_time;
  if (has_lag) {
    s->lag[s->lag_next] = lag_ms < 0 ? 0 : (uint64_t)lag_ms;
    s->lag_next = (s->lag_next + 1) % CDCACHE__LAG_WINDOW;
    if (s->lag_n < CDCACHE__LAG_WINDOW)
      s->lag_n++;
  }
  (void)pthread_mutex_unlock(&s->mu);
}

void cdcache__stats_answered(cdcache__cdc_stats_t *s, uint64_t ms)
{
  (void)pthread_mutex_lock(&s->mu);
  s->last_answer_ms = ms;
  (void)pthread_mutex_unlock(&s->mu);
}

void cdcache__stats_token(cdcache__cdc_stats_t *s, const bson_t *token)
{
  (void)pthread_mutex_lock(&s->mu);
  s->token_len = 0;
  if (token != NULL && token->len <= CDCACHE_CDC_TOKEN_MAX && s->token_cap > 64u * 1024u) {
    /* one huge token (tokens embed the documentKey) does not pin its
     * buffer for the subscription's life */
    bson_free(s->token);
    s->token = NULL;
    s->token_cap = 0;
  }
  if (token != NULL && token->len > s->token_cap) {
    /* grows rarely (to the longest token seen); libbson's allocator, as
     * libmongoc's own copies of the token.  bson_realloc aborts on
     * failure as every libbson allocation does (README: what libmongoc
     * aborts on). */
    s->token = bson_realloc(s->token, token->len);
    s->token_cap = token->len;
  }
  if (token != NULL) {
    memcpy(s->token, bson_get_data(token), token->len);
    s->token_len = token->len;
  }
  (void)pthread_mutex_unlock(&s->mu);
}

/* The token as relaxed extended JSON into out ("" if none), cut at a
 * UTF-8 character boundary when it does not fit. */
static void token_text(const uint8_t *raw, uint32_t len, char *out, size_t cap)
{
  bson_t b;
  char *json = NULL;
  size_t jlen = 0;
  out[0] = '\0';
  if (len == 0 || !bson_init_static(&b, raw, len))
    return;
  json = bson_as_relaxed_extended_json(&b, &jlen);
  if (json == NULL)
    return;
  if (jlen >= cap) {
    jlen = cap - 1;
    while (jlen > 0 && ((unsigned char)json[jlen] & 0xC0u) == 0x80u)
      jlen--; /* json[jlen] would continue a character: cut before it */
  }
  memcpy(out, json, jlen);
  out[jlen] = '\0';
  bson_free(json);
}

void cdcache__stats_error(cdcache__cdc_stats_t *s, const char *msg)
{
  size_t len = msg ? strlen(msg) : 0;
  (void)pthread_mutex_lock(&s->mu);
  if (len >= sizeof s->last_error)
    len = sizeof s->last_error - 1;
  if (len)
    memcpy(s->last_error, msg, len);
  s->last_error[len] = '\0';
  (void)pthread_mutex_unlock(&s->mu);
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t rank(const uint64_t *sorted, uint32_t n, uint32_t pct)
{
  uint64_t r = ((uint64_t)n * pct + 99) / 100; /* ceil(n * pct / 100) */
  if (r == 0)
    r = 1;
  return sorted[r - 1];
}

void cdcache__stats_snapshot(cdcache__cdc_stats_t *s, cdcache_cdc_stats_t *out, uint64_t now_ms,
                             uint64_t fresh_until)
{
  cdcache_cdc_stats_t tmp;
  uint64_t lags[CDCACHE__LAG_WINDOW];
  size_t n = out->struct_size < sizeof tmp ? out->struct_size : sizeof tmp;

  memset(&tmp, 0, sizeof tmp);
  (void)pthread_mutex_lock(&s->mu);
  tmp.state = s->state;
  tmp.events = s->events;
  tmp.keys_evicted = s->keys_evicted;
  memcpy(tmp.flushes, s->flushes, sizeof tmp.flushes);
  tmp.flushes_poison = s->flushes[CDCACHE_CDC_FLUSH_POISON];
  tmp.resumes = s->resumes;
  tmp.majority_gap_ms = s->majority_gap_ms;
  tmp.reconnects = s->reconnects;
  tmp.malformed_events = s->malformed_events;
  tmp.ignored_events = s->ignored_events;
  tmp.key_errors = s->key_errors;
  tmp.last_cluster_time = s->last_cluster_time;
  tmp.last_answer_ms = s->last_answer_ms;
  tmp.lag_samples = s->lag_n;
  memcpy(lags, s->lag, s->lag_n * sizeof lags[0]);
  /* the raw token is copied under mu and rendered after it: a reader
   * never holds the CDC thread up for longer than a memcpy */
  uint8_t stack_token[CDCACHE_CDC_TOKEN_MAX];
  uint8_t *token = stack_token;
  uint32_t token_len = s->token_len;
  if (token_len > sizeof stack_token)
    token = bson_malloc(token_len);
  if (token_len)
    memcpy(token, s->token, token_len);
  memcpy(tmp.last_error, s->last_error, sizeof tmp.last_error);
  (void)pthread_mutex_unlock(&s->mu);

  token_text(token, token_len, tmp.resume_token, sizeof tmp.resume_token);
  if (token != stack_token)
    bson_free(token);

  tmp.fresh_until_ms = fresh_until;
  tmp.failed_closed = tmp.state != CDCACHE_CDC_STOPPED && fresh_until != CDCACHE__FRESH_FOREVER &&
                      now_ms > fresh_until;
  /* A caller built before failed_closed existed learns it from state. */
  if (tmp.failed_closed &&
      out->struct_size < offsetof(cdcache_cdc_stats_t, failed_closed) + sizeof tmp.failed_closed)
    tmp.state = CDCACHE_CDC_FAILED_CLOSED;
  if (tmp.lag_samples) {
    qsort(lags, tmp.lag_samples, sizeof lags[0], cmp_u64);
    tmp.lag_p50_ms = rank(lags, tmp.lag_samples, 50);
    tmp.lag_p99_ms = rank(lags, tmp.lag_samples, 99);
  }
  tmp.struct_size = out->struct_size;
  memcpy(out, &tmp, n);
}

void cdcache__stats_majority_gap(cdcache__cdc_stats_t *s, uint64_t gap_ms)
{
  (void)pthread_mutex_lock(&s->mu);
  s->majority_gap_ms = gap_ms;
  (void)pthread_mutex_unlock(&s->mu);
}
