/*
 * Applying one change event: decode, map to keys, evict; flush what
 * cannot be mapped.
 *
 * The event arrives as raw BSON after the subscription's $project
 * (_id, operationType, ns, to, documentKey, clusterTime, wallTime, and
 * fullDocument if asked).  Decoding checks every field it uses for type
 * and, for names, for embedded NULs; it never trusts the server.
 *
 * Mapping, by operation:
 *   insert, update, replace, delete: every rule whose namespace matches
 *     renders one key from the documentKey and the key is evicted at once
 *     (cdcache_invalidate also kills a fill of the key in flight, which is
 *     what keeps a load that overlaps the write from caching the old
 *     value); then the key callback, if any, emits more keys.  Inserts
 *     are evicted too: an application may have cached the absence.
 *   drop, rename, dropDatabase: no documentKey, so everything of the
 *     namespace may be stale: the whole cache is flushed (reason
 *     "namespace") when a rule covers the namespace (for a rename, the
 *     source or the target), or when the key callback, which sees the
 *     event first, does not call cdcache_cdc_not_mine().  A drop or
 *     rename nothing covers flushes nothing.
 *   events on the temporary collections $out and mapReduce write into
 *     (tmp.agg_out.*, tmp.mr.*) are ignored: no application key can
 *     depend on them (unless a rule names such a collection exactly, or
 *     the scope is exactly it: then it is an ordinary collection).  The rename that ends such a job
 * (a temporary collection renamed over its target) is judged by its target. invalidate: the cursor
 * is dead; flush (reason "invalidate") and let the stream loop reopen with startAfter. any other
 * operation type (createIndexes, modify, ... with expanded events): changes no document; counted as
 * ignored.
 *
 * Failure is always on the side of evicting more: an event that cannot
 * be decoded, a template field missing from the documentKey, a value that
 * cannot be rendered, or a key callback that fails flushes the whole
 * cache (reason "unmappable"), is counted and logged, and the stream goes
 * on.  A template field missing from the documentKey usually means a rule
 * that does not fit the collection (every event then flushes): it is
 * counted every time but logged once per namespace per minute
 * (CDCACHE__LOGLIMIT_MS), with the number of occurrences held back.  Duplicate delivery (after a
 * resume) only evicts again, which is harmless.
 */
#include "cdc_internal.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* One event's fields, on the stack for one call (padding is harmless). */
typedef struct decoded { // NOLINT(clang-analyzer-optin.performance.Padding)
  int op;                /* 0: an operation type we do not handle */
  const char *op_str;
  const char *db, *coll, *to_db, *to_coll;
  bson_t doc_key; /* static view into the event */
  bool has_doc_key;
  const uint8_t *dk_data;
  uint32_t dk_len;
  uint64_t cluster_time;
  int64_t wall_ms;
  bool has_wall;
} decoded_t;

struct cdcache_cdc_sink {
  cdcache_cdc_t *sub;
  const char *op_name;
  const char *ns;
  int64_t commit_ms; /* -1 unknown */
  uint64_t evicted;  /* keys this event evicted */
  bool not_mine;     /* the key callback called cdcache_cdc_not_mine */
};

static const char *const op_names[] = {"unknown", "insert", "update",       "replace",   "delete",
                                       "drop",    "rename", "dropDatabase", "invalidate"};

const char *cdcache_cdc_op_name(int op)
{
  if (op < 1 || op > CDCACHE_CDC_OP_INVALIDATE)
    return op_names[0];
  return op_names[op];
}

/* A string field without embedded NUL, or NULL. */
static const char *get_str(const bson_iter_t *it)
{
  uint32_t len = 0;
  const char *s;
  if (!BSON_ITER_HOLDS_UTF8(it))
    return NULL;
  s = bson_iter_utf8(it, &len);
  if (!s || strlen(s) != len)
    return NULL;
  return s;
}

/* Reads {db: string, coll: string?} at it. */
static bool get_ns(const bson_iter_t *it, const char **db, const char **coll)
{
  bson_iter_t child;
  *db = *coll = NULL;
  if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &child))
    return false;
  while (bson_iter_next(&child)) {
    const char *k = bson_iter_key(&child);
    if (strcmp(k, "db") == 0) {
      if (!(*db = get_str(&child)))
        return false;
    } else if (strcmp(k, "coll") == 0) {
      if (!(*coll = get_str(&child)))
        return false;
    }
  }
  return *db != NULL;
}

static int op_from_string(const char *s)
{
  for (int i = 1; i <= CDCACHE_CDC_OP_INVALIDATE; i++)
    if (strcmp(s, op_names[i]) == 0)
      return i;
  return 0;
}

static int decode(const bson_t *doc, decoded_t *d, char *why, size_t whycap)
{
  bson_iter_t it;
  memset(d, 0, sizeof *d);
  if (!bson_iter_init(&it, doc)) {
    (void)snprintf(why, whycap, "not a BSON document");
    return CDCACHE_EINVAL;
  }
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (strcmp(k, "operationType") == 0) {
      if (!(d->op_str = get_str(&it))) {
        (void)snprintf(why, whycap, "operationType is not a string");
        return CDCACHE_EINVAL;
      }
    } else if (strcmp(k, "ns") == 0) {
      if (!get_ns(&it, &d->db, &d->coll)) {
        (void)snprintf(why, whycap, "ns is not {db, coll}");
        return CDCACHE_EINVAL;
      }
    } else if (strcmp(k, "to") == 0) {
      if (!get_ns(&it, &d->to_db, &d->to_coll)) {
        (void)snprintf(why, whycap, "to is not {db, coll}");
        return CDCACHE_EINVAL;
      }
    } else if (strcmp(k, "documentKey") == 0) {
      if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
        (void)snprintf(why, whycap, "documentKey is not a document");
        return CDCACHE_EINVAL;
      }
      bson_iter_document(&it, &d->dk_len, &d->dk_data);
      if (!d->dk_data || !bson_init_static(&d->doc_key, d->dk_data, d->dk_len)) {
        (void)snprintf(why, whycap, "documentKey is not valid BSON");
        return CDCACHE_EINVAL;
      }
      d->has_doc_key = true;
    } else if (strcmp(k, "clusterTime") == 0) {
      uint32_t t = 0, i = 0;
      if (BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        bson_iter_timestamp(&it, &t, &i);
        d->cluster_time = ((uint64_t)t << 32) | i;
      }
    } else if (strcmp(k, "wallTime") == 0) {
      if (BSON_ITER_HOLDS_DATE_TIME(&it)) {
        d->wall_ms = bson_iter_date_time(&it);
        d->has_wall = true;
      }
    }
  }
  if (!d->op_str) {
    (void)snprintf(why, whycap, "no operationType");
    return CDCACHE_EINVAL;
  }
  d->op = op_from_string(d->op_str);
  switch (d->op) {
  case CDCACHE_CDC_OP_INSERT:
  case CDCACHE_CDC_OP_UPDATE:
  case CDCACHE_CDC_OP_REPLACE:
  case CDCACHE_CDC_OP_DELETE:
    if (!d->db || !d->coll) {
      (void)snprintf(why, whycap, "%s without ns.db/ns.coll", d->op_str);
      return CDCACHE_EINVAL;
    }
    if (!d->has_doc_key) {
      (void)snprintf(why, whycap, "%s without documentKey", d->op_str);
      return CDCACHE_EINVAL;
    }
    break;
  case CDCACHE_CDC_OP_DROP:
  case CDCACHE_CDC_OP_RENAME:
  case CDCACHE_CDC_OP_DROP_DATABASE:
    if (!d->db) {
      (void)snprintf(why, whycap, "%s without ns", d->op_str);
      return CDCACHE_EINVAL;
    }
    break;
  default:
    break;
  }
  return 0;
}

static int64_t lag_now(int64_t commit_ms)
{
  if (commit_ms < 0)
    return -1;
  return (int64_t)cdcache__wall_ms() - commit_ms;
}

/* Evicts one key; counts it; tells the observer. */
static int evict(cdcache_cdc_sink_t *sk, const void *key, size_t klen)
{
  cdcache_cdc_t *sub = sk->sub;
  int rc;
  if (klen > sub->max_key_len) {
    cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, key_errors), 1);
    return CDCACHE_E2BIG;
  }
  rc = cdcache_invalidate(sub->cache, key, klen);
  if (rc == CDCACHE_E2BIG) {
    /* longer than the cache's max_key_len: never cached */
    cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, key_errors), 1);
    return rc;
  }
  if (rc != 0 && rc != CDCACHE_ENOENT) {
    cdcache__cdc_log(sub, CDCACHE_LOG_ERROR, "cdc: invalidate failed: %s", cdcache_strerror(rc));
    return rc;
  }
  cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, keys_evicted), 1);
  sk->evicted++;
  if (sub->on_evict)
    sub->on_evict(sub->on_evict_ctx, key, klen, sk->op_name, sk->ns, lag_now(sk->commit_ms));
  return 0;
}

int cdcache_cdc_emit(cdcache_cdc_sink_t *sink, const void *key, size_t klen)
{
  if (!sink || !key || klen == 0)
    return CDCACHE_EINVAL;
  return evict(sink, key, klen);
}

int cdcache_cdc_not_mine(cdcache_cdc_sink_t *sink)
{
  if (!sink)
    return CDCACHE_EINVAL;
  sink->not_mine = true;
  return 0;
}

/* FNV-1a over two strings, for the rate limit's slots. */
static uint64_t hash2(const char *a, const char *b)
{
  uint64_t h = 14695981039346656037ull;
  for (const char *p = a; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ull;
  h = (h ^ 0xffu) * 1099511628211ull;
  for (const char *p = b; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ull;
  return h | 1u; /* 0 marks a free slot */
}

/*
 * Whether a warning of this kind about this namespace may be logged now
 * (at most once per CDCACHE__LOGLIMIT_MS).  *held receives how many were
 * held back since the last one logged.  Slots are a small set-associative
 * table: with more namespaces failing at once than it holds, the one
 * logged longest ago is forgotten and may log again early (a bound on
 * the rate, not a promise of silence).  CDC thread.
 */
static bool log_due(cdcache_cdc_t *sub, const char *kind, const char *ns, uint64_t *held)
{
  uint64_t h = hash2(kind, ns);
  uint64_t now = cdcache__now_ms(sub->cache);
  size_t base = (size_t)(h % CDCACHE__LOGLIMIT_SLOTS) & ~(size_t)(CDCACHE__LOGLIMIT_WAYS - 1);
  size_t victim = base;
  *held = 0;
  /* a set of CDCACHE__LOGLIMIT_WAYS slots: this message's, or the one
   * logged longest ago */
  for (size_t w = 0; w < CDCACHE__LOGLIMIT_WAYS; w++) {
    size_t i = base + w;
    if (sub->loglimit[i].hash == h) {
      victim = i;
      break;
    }
    if (sub->loglimit[i].last_ms < sub->loglimit[victim].last_ms)
      victim = i;
  }
  if (sub->loglimit[victim].hash == h && now >= sub->loglimit[victim].last_ms &&
      now - sub->loglimit[victim].last_ms < CDCACHE__LOGLIMIT_MS) {
    sub->loglimit[victim].held++;
    return false;
  }
  if (sub->loglimit[victim].hash == h)
    *held = sub->loglimit[victim].held;
  sub->loglimit[victim].hash = h;
  sub->loglimit[victim].last_ms = now;
  sub->loglimit[victim].held = 0;
  return true;
}

static int flush_cache(cdcache_cdc_t *sub, int reason, const char *why, bool log)
{
  int rc = cdcache_flush(sub->cache);
  if (rc != 0) {
    cdcache__cdc_log(sub, CDCACHE_LOG_ERROR, "cdc: flush (%s) failed: %s",
                     cdcache_cdc_flush_reason_name(reason), cdcache_strerror(rc));
    return rc;
  }
  cdcache__stats_flush(&sub->stats, reason);
  if (log)
    cdcache__cdc_log(sub,
                     reason == CDCACHE_CDC_FLUSH_ESTABLISHED ||
                             reason == CDCACHE_CDC_FLUSH_NAMESPACE
                         ? CDCACHE_LOG_INFO
                         : CDCACHE_LOG_WARNING,
                     "cdc: flushed the whole cache (%s): %s", cdcache_cdc_flush_reason_name(reason),
                     why ? why : "");
  if (sub->on_evict)
    sub->on_evict(sub->on_evict_ctx, NULL, 0, "flush", cdcache_cdc_flush_reason_name(reason), -1);
  return 0;
}

int cdcache__cdc_flush(cdcache_cdc_t *sub, int reason, const char *why)
{
  return flush_cache(sub, reason, why, true);
}

void cdcache__cdc_advance_cluster_time(cdcache_cdc_t *sub, uint64_t ct)
{
  /* The CDC thread is the only writer: load, compare, store is enough. */
  if (ct > cdcache__cluster_time(sub->cache))
    cdcache__set_cluster_time(sub->cache, ct);
}

/* tmp.agg_out.<uuid> ($out, $merge into a new collection), tmp.mr.*
 * (mapReduce): written, renamed over the target, or dropped by the
 * server; no application reads them... unless a rule names the
 * collection exactly (a real collection that happens to use the
 * prefix): then it is an ordinary collection. */
static bool temp_coll(const cdcache_cdc_t *sub, const char *db, const char *coll)
{
  if (!coll || (strncmp(coll, "tmp.agg_out.", 12) != 0 && strncmp(coll, "tmp.mr.", 7) != 0))
    return false;
  for (size_t i = 0; i < sub->n_rules; i++) {
    const cdcache__rule_t *r = &sub->rules[i];
    if (r->ns_kind == CDCACHE__NS_EXACT && cdcache__rule_matches(r, db, coll))
      return false;
  }
  /* a subscription scoped to exactly that collection watches it */
  return !(sub->coll && strcmp(sub->coll, coll) == 0);
}

/* Whether a rule covers db.coll (coll NULL: any collection of db). */
static bool rules_cover(const cdcache_cdc_t *sub, const char *db, const char *coll)
{
  if (!db)
    return true; /* cannot tell: cover */
  for (size_t i = 0; i < sub->n_rules; i++) {
    const cdcache__rule_t *r = &sub->rules[i];
    if (coll ? cdcache__rule_matches(r, db, coll)
             : r->ns_kind == CDCACHE__NS_ALL || strcmp(r->db, db) == 0)
      return true;
  }
  return false;
}

/* drop, rename, dropDatabase: whether a rule covers what it changed. */
static bool ns_event_covered(const cdcache_cdc_t *sub, const decoded_t *d)
{
  switch (d->op) {
  case CDCACHE_CDC_OP_DROP_DATABASE:
    return rules_cover(sub, d->db, NULL);
  case CDCACHE_CDC_OP_RENAME:
    if (!d->to_db || !d->to_coll) /* target unknown: assume the worst */
      return true;
    return (!temp_coll(sub, d->db, d->coll) && rules_cover(sub, d->db, d->coll)) ||
           rules_cover(sub, d->to_db, d->to_coll);
  default:
    return rules_cover(sub, d->db, d->coll);
  }
}

/* Calls the key callback; returns its verdict (0 fine). */
static int call_key_fn(cdcache_cdc_t *sub, cdcache_cdc_sink_t *sk, const decoded_t *d,
                       const uint8_t *data, size_t len)
{
  cdcache_cdc_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.struct_size = sizeof ev;
  ev.op = d->op;
  ev.db = d->db;
  ev.coll = d->coll;
  ev.to_db = d->to_db;
  ev.to_coll = d->to_coll;
  ev.event_bson = data;
  ev.event_len = len;
  ev.document_key_bson = d->has_doc_key ? d->dk_data : NULL;
  ev.document_key_len = d->has_doc_key ? d->dk_len : 0;
  ev.cluster_time = d->cluster_time;
  ev.wall_ms = d->has_wall ? d->wall_ms : -1;
  return sub->key_fn(sub->key_ctx, &ev, sk);
}

int cdcache__cdc_apply(cdcache_cdc_t *sub, const uint8_t *data, size_t len)
{
  bson_t doc;
  decoded_t d;
  char why[160];
  char ns[600];
  cdcache_cdc_sink_t sk;
  int result = CDCACHE__APPLY_OK;

  why[0] = '\0';
  cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, events), 1);
  if (len < 5 || len > UINT32_MAX || !bson_init_static(&doc, data, len) ||
      decode(&doc, &d, why, sizeof why) != 0) {
    if (!why[0])
      (void)snprintf(why, sizeof why, "not a BSON document");
    cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, malformed_events), 1);
    cdcache__cdc_log(sub, CDCACHE_LOG_WARNING, "cdc: malformed event: %s", why);
    (void)cdcache__cdc_flush(sub, CDCACHE_CDC_FLUSH_UNMAPPABLE, why);
    return CDCACHE__APPLY_OK;
  }
  if (d.op == 0 || (temp_coll(sub, d.db, d.coll) &&
                    (d.op != CDCACHE_CDC_OP_RENAME || temp_coll(sub, d.to_db, d.to_coll)))) {
    cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, ignored_events), 1);
    cdcache__cdc_log(sub, CDCACHE_LOG_DEBUG, "cdc: ignored event of operation type \"%s\"",
                     d.op_str);
    return CDCACHE__APPLY_OK;
  }

  if (d.db && d.coll)
    (void)snprintf(ns, sizeof ns, "%s.%s", d.db, d.coll);
  else if (d.db)
    (void)snprintf(ns, sizeof ns, "%s", d.db);
  else
    ns[0] = '\0';
  sk.sub = sub;
  sk.evicted = 0;
  sk.not_mine = false;
  sk.op_name = cdcache_cdc_op_name(d.op);
  sk.ns = ns;
  sk.commit_ms = d.has_wall       ? d.wall_ms
                 : d.cluster_time ? (int64_t)((d.cluster_time >> 32) * 1000u)
                                  : -1;

  /* Before evicting: a loader that misses after the eviction must read
   * with afterClusterTime at least this write's. */
  cdcache__cdc_advance_cluster_time(sub, d.cluster_time);

  switch (d.op) {
  case CDCACHE_CDC_OP_INSERT:
  case CDCACHE_CDC_OP_UPDATE:
  case CDCACHE_CDC_OP_REPLACE:
  case CDCACHE_CDC_OP_DELETE: {
    const char *unmappable = NULL;
    bool missing_field = false, other_error = false;
    for (size_t i = 0; i < sub->n_rules; i++) {
      const cdcache__rule_t *r = &sub->rules[i];
      size_t klen = 0;
      int rc;
      if (!cdcache__rule_matches(r, d.db, d.coll))
        continue;
      rc = cdcache__rule_render(r, d.db, d.coll, &d.doc_key, sub->keybuf, sub->keybuf_cap, &klen);
      if (rc == CDCACHE_ERANGE) {
        /* longer than any cache key can be: nothing to evict */
        cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, key_errors), 1);
        continue;
      }
      if (rc != 0) {
        uint64_t held = 0;
        cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, key_errors), 1);
        if (rc == CDCACHE_ENOENT) {
          unmappable = "a template field is missing from documentKey";
          missing_field = true;
          if (log_due(sub, "missing-field", ns, &held))
            cdcache__cdc_log(sub, CDCACHE_LOG_WARNING,
                             "cdc: rule %zu (%.*s) on %s: %s; every such event flushes the "
                             "whole cache (a rule that does not fit the collection's "
                             "documentKey?); %llu more since the last such line",
                             i, (int)r->tmpl_len, r->tmpl, ns, unmappable,
                             (unsigned long long)held);
        } else {
          unmappable = "a documentKey value cannot be rendered";
          other_error = true;
          cdcache__cdc_log(sub, CDCACHE_LOG_WARNING, "cdc: rule %zu (%.*s) on %s: %s", i,
                           (int)r->tmpl_len, r->tmpl, ns, unmappable);
        }
        continue;
      }
      if (klen == 0)
        continue;
      evict(&sk, sub->keybuf, klen);
    }
    if (sub->key_fn) {
      if (call_key_fn(sub, &sk, &d, data, len) != 0) {
        unmappable = "the key callback failed";
        other_error = true;
        cdcache__cdc_log(sub, CDCACHE_LOG_WARNING, "cdc: key callback failed on %s of %s", d.op_str,
                         ns);
      }
    }
    /* a missing field alone was logged (rate-limited) above: the flush
     * is not logged again for each event */
    if (unmappable)
      (void)flush_cache(sub, CDCACHE_CDC_FLUSH_UNMAPPABLE, unmappable,
                        other_error || !missing_field);
    break;
  }
  case CDCACHE_CDC_OP_DROP:
  case CDCACHE_CDC_OP_RENAME:
  case CDCACHE_CDC_OP_DROP_DATABASE: {
    char msg[700];
    bool covered = ns_event_covered(sub, &d);
    if (sub->key_fn && (call_key_fn(sub, &sk, &d, data, len) != 0 || !sk.not_mine))
      covered = true;
    if (!covered) {
      cdcache__stats_add(&sub->stats, offsetof(cdcache__cdc_stats_t, ignored_events), 1);
      cdcache__cdc_log(sub, CDCACHE_LOG_DEBUG, "cdc: %s of %s: no rule covers it, nothing flushed",
                       d.op_str, ns);
      break;
    }
    if (d.op == CDCACHE_CDC_OP_RENAME && d.to_db && d.to_coll)
      (void)snprintf(msg, sizeof msg, "rename of %s to %s.%s", ns, d.to_db, d.to_coll);
    else
      (void)snprintf(msg, sizeof msg, "%s of %s", d.op_str, ns);
    (void)cdcache__cdc_flush(sub, CDCACHE_CDC_FLUSH_NAMESPACE, msg);
    break;
  }
  case CDCACHE_CDC_OP_INVALIDATE:
    (void)cdcache__cdc_flush(sub, CDCACHE_CDC_FLUSH_INVALIDATE, "the change stream was invalidated");
    result = CDCACHE__APPLY_INVALIDATE;
    break;
  default:
    break;
  }

  /* a lag sample only for an event that evicted something: the figure
   * is the invalidation lag a reader sees */
  cdcache__stats_applied(&sub->stats, d.cluster_time, lag_now(sk.commit_ms),
                         sk.commit_ms >= 0 && sk.evicted > 0);
  return result;
}
