/*
 * The in-memory document store (one hash table keyed by _id per namespace)
 * and the oplog: a bounded ring of change events, each stamped with a
 * sequence number, a clusterTime and a resume token. Dropping old entries
 * (ring overflow or the truncate fault) records the newest lost sequence
 * number so that resuming from before it reports ChangeStreamHistoryLost.
 * All functions expect g_ms.mu to be held.
 */
#include "mongo_server.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* -------------------------------------------------------------- documents */

/* Encodes an _id so that equal values (1, 1L, 1.0) get equal bytes. */
static bson_t *id_key(const bson_value_t *id)
{
  bson_t *k = bson_new();
  bson_value_t v = *id;
  if (v.value_type == BSON_TYPE_INT32) {
    v.value_type = BSON_TYPE_INT64;
    v.value.v_int64 = id->value.v_int32;
  } else if (v.value_type == BSON_TYPE_DOUBLE) {
    double d = v.value.v_double;
    if (d >= -9.2e18 && d <= 9.2e18 && (double)(int64_t)d == d) {
      v.value_type = BSON_TYPE_INT64;
      v.value.v_int64 = (int64_t)d;
    }
  } else if (v.value_type == BSON_TYPE_SYMBOL) {
    v.value_type = BSON_TYPE_UTF8;
  }
  bson_append_value(k, "", 0, &v);
  return k;
}

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

ms_coll_t *ms_coll_get(const char *db, const char *name, bool create)
{
  for (ms_coll_t *c = g_ms.colls; c; c = c->next) {
    if (!strcmp(c->db, db) && !strcmp(c->name, name)) {
      return c;
    }
  }
  if (!create) {
    return NULL;
  }
  ms_coll_t *c = bson_malloc0(sizeof *c);
  c->db = bson_strdup(db);
  c->name = bson_strdup(name);
  c->nbuckets = 64;
  c->buckets = bson_malloc0(c->nbuckets * sizeof(ms_doc_t *));
  /* Append at the end so that dropDatabase emits drops in creation order. */
  ms_coll_t **pp = &g_ms.colls;
  while (*pp) {
    pp = &(*pp)->next;
  }
  *pp = c;
  return c;
}

static ms_doc_t **find_slot(ms_coll_t *c, const uint8_t *key, uint32_t keylen, uint32_t hash)
{
  ms_doc_t **pp = &c->buckets[hash & (c->nbuckets - 1)];
  while (*pp) {
    if ((*pp)->hash == hash && (*pp)->keylen == keylen && !memcmp((*pp)->key, key, keylen)) {
      return pp;
    }
    pp = &(*pp)->next;
  }
  return pp;
}

bson_t *ms_coll_find_id(ms_coll_t *c, const bson_value_t *id)
{
  bson_t *k = id_key(id);
  uint32_t h = fnv1a(bson_get_data(k), k->len);
  ms_doc_t **pp = find_slot(c, bson_get_data(k), k->len, h);
  bson_destroy(k);
  return *pp ? (*pp)->doc : NULL;
}

static void grow(ms_coll_t *c)
{
  size_t nb = c->nbuckets * 2;
  ms_doc_t **b = bson_malloc0(nb * sizeof(ms_doc_t *));
  for (size_t i = 0; i < c->nbuckets; i++) {
    ms_doc_t *d = c->buckets[i];
    while (d) {
      ms_doc_t *next = d->next;
      d->next = b[d->hash & (nb - 1)];
      b[d->hash & (nb - 1)] = d;
      d = next;
    }
  }
  bson_free(c->buckets);
  c->buckets = b;
  c->nbuckets = nb;
}

void ms_coll_put(ms_coll_t *c, bson_t *doc)
{
  bson_iter_t it;
  if (!bson_iter_init_find(&it, doc, "_id")) {
    bson_destroy(doc);
    return;
  }
  bson_t *k = id_key(bson_iter_value(&it));
  uint32_t h = fnv1a(bson_get_data(k), k->len);
  ms_doc_t **pp = find_slot(c, bson_get_data(k), k->len, h);
  if (*pp) {
    bson_destroy((*pp)->doc);
    (*pp)->doc = doc;
    bson_destroy(k);
    return;
  }
  ms_doc_t *d = bson_malloc0(sizeof *d);
  d->keylen = k->len;
  d->key = bson_malloc(k->len);
  memcpy(d->key, bson_get_data(k), k->len);
  d->hash = h;
  d->doc = doc;
  *pp = d;
  bson_destroy(k);
  if (++c->count > c->nbuckets * 2) {
    grow(c);
  }
}

bool ms_coll_remove_id(ms_coll_t *c, const bson_value_t *id)
{
  bson_t *k = id_key(id);
  uint32_t h = fnv1a(bson_get_data(k), k->len);
  ms_doc_t **pp = find_slot(c, bson_get_data(k), k->len, h);
  bson_destroy(k);
  if (!*pp) {
    return false;
  }
  ms_doc_t *d = *pp;
  *pp = d->next;
  bson_destroy(d->doc);
  bson_free(d->key);
  bson_free(d);
  c->count--;
  return true;
}

static void coll_free(ms_coll_t *c)
{
  for (size_t i = 0; i < c->nbuckets; i++) {
    ms_doc_t *d = c->buckets[i];
    while (d) {
      ms_doc_t *next = d->next;
      bson_destroy(d->doc);
      bson_free(d->key);
      bson_free(d);
      d = next;
    }
  }
  bson_free(c->buckets);
  bson_free(c->db);
  bson_free(c->name);
  bson_free(c);
}

void ms_coll_drop(ms_coll_t *c)
{
  ms_coll_t **pp = &g_ms.colls;
  while (*pp && *pp != c) {
    pp = &(*pp)->next;
  }
  if (*pp) {
    *pp = c->next;
  }
  coll_free(c);
}

void ms_store_free_all(void)
{
  while (g_ms.colls) {
    ms_coll_t *c = g_ms.colls;
    g_ms.colls = c->next;
    coll_free(c);
  }
}

/* ----------------------------------------------------------------- tokens */

/*
 * A resume token is {_data: "CD" EEEEEEEE SSSSSSSSSSSSSSSS FF} in upper-case
 * hex: a format marker, the server instance's epoch, the oplog sequence
 * number and a flags byte (01: the token of an invalidate event). Tokens of
 * one server sort in event order as strings, like a real server's.
 */
void ms_token_append(bson_t *dst, const char *key, uint64_t seq, bool from_invalidate)
{
  char hex[64];
  snprintf(hex, sizeof hex, "CD%08" PRIX32 "%016" PRIX64 "%02X", g_ms.epoch, seq,
           from_invalidate ? 1u : 0u);
  bson_t tok;
  bson_append_document_begin(dst, key, -1, &tok);
  BSON_APPEND_UTF8(&tok, "_data", hex);
  bson_append_document_end(dst, &tok);
}

bool ms_token_parse(const bson_t *tok, uint64_t *seq, bool *from_invalidate, bool *epoch_ok)
{
  bson_iter_t it;
  if (!bson_iter_init_find(&it, tok, "_data") || !BSON_ITER_HOLDS_UTF8(&it)) {
    return false;
  }
  uint32_t len;
  const char *s = bson_iter_utf8(&it, &len);
  if (len != 28 || s[0] != 'C' || s[1] != 'D') {
    return false;
  }
  for (uint32_t i = 2; i < len; i++) {
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F'))) {
      return false;
    }
  }
  char buf[20];
  memcpy(buf, s + 2, 8);
  buf[8] = '\0';
  uint32_t epoch = (uint32_t)strtoul(buf, NULL, 16);
  memcpy(buf, s + 10, 16);
  buf[16] = '\0';
  *seq = strtoull(buf, NULL, 16);
  memcpy(buf, s + 26, 2);
  buf[2] = '\0';
  unsigned flags = (unsigned)strtoul(buf, NULL, 16);
  if (flags > 1) {
    return false;
  }
  *from_invalidate = flags == 1;
  *epoch_ok = epoch == g_ms.epoch;
  return true;
}

const char *ms_event_type_name(ms_event_type_t t)
{
  static const char *names[] = {"insert", "update", "replace",      "delete",
                                "drop",   "rename", "dropDatabase", "invalidate"};
  return names[t];
}

/* ------------------------------------------------------------------ oplog */

static void entry_free(ms_oplog_entry_t *e)
{
  bson_free(e->db);
  bson_free(e->coll);
  bson_free(e->to_db);
  bson_free(e->to_coll);
  bson_destroy(e->event);
  memset(e, 0, sizeof *e);
}

static void drop_oldest(void)
{
  ms_oplog_entry_t *e = &g_ms.oplog[g_ms.oplog_head];
  g_ms.last_dropped_seq = e->seq;
  g_ms.last_dropped_ts = e->ts;
  entry_free(e);
  g_ms.oplog_head = (g_ms.oplog_head + 1) % g_ms.oplog_cap;
  g_ms.oplog_count--;
}

uint64_t ms_oplog_append(ms_event_type_t type, const char *db, const char *coll,
                         const bson_value_t *id, const bson_t *full_doc, const bson_t *update_desc,
                         const char *to_db, const char *to_coll)
{
  if (g_ms.oplog_count == g_ms.oplog_cap) {
    drop_oldest();
  }
  uint64_t seq = ++g_ms.last_seq;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint32_t secs = (uint32_t)ts.tv_sec;
  if (secs < g_ms.last_ts) {
    secs = g_ms.last_ts; /* Keep clusterTime monotonic. */
  }
  g_ms.last_ts = secs;

  bson_t *ev = bson_new();
  ms_token_append(ev, "_id", seq, false);
  BSON_APPEND_UTF8(ev, "operationType", ms_event_type_name(type));
  BSON_APPEND_TIMESTAMP(ev, "clusterTime", secs, (uint32_t)seq);
  BSON_APPEND_DATE_TIME(ev, "wallTime", (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
  if (full_doc && (type == MS_EV_INSERT || type == MS_EV_REPLACE)) {
    BSON_APPEND_DOCUMENT(ev, "fullDocument", full_doc);
  }
  bson_t ns;
  BSON_APPEND_DOCUMENT_BEGIN(ev, "ns", &ns);
  BSON_APPEND_UTF8(&ns, "db", db);
  if (coll) {
    BSON_APPEND_UTF8(&ns, "coll", coll);
  }
  bson_append_document_end(ev, &ns);
  if (type == MS_EV_RENAME) {
    bson_t to;
    BSON_APPEND_DOCUMENT_BEGIN(ev, "to", &to);
    BSON_APPEND_UTF8(&to, "db", to_db);
    BSON_APPEND_UTF8(&to, "coll", to_coll);
    bson_append_document_end(ev, &to);
  }
  if (id) {
    bson_t dk;
    BSON_APPEND_DOCUMENT_BEGIN(ev, "documentKey", &dk);
    BSON_APPEND_VALUE(&dk, "_id", id);
    bson_append_document_end(ev, &dk);
  }
  if (update_desc && type == MS_EV_UPDATE) {
    BSON_APPEND_DOCUMENT(ev, "updateDescription", update_desc);
  }

  size_t idx = (g_ms.oplog_head + g_ms.oplog_count) % g_ms.oplog_cap;
  ms_oplog_entry_t *e = &g_ms.oplog[idx];
  e->seq = seq;
  e->ts = secs;
  e->type = type;
  e->db = bson_strdup(db);
  e->coll = coll ? bson_strdup(coll) : NULL;
  e->to_db = to_db ? bson_strdup(to_db) : NULL;
  e->to_coll = to_coll ? bson_strdup(to_coll) : NULL;
  e->event = ev;
  g_ms.oplog_count++;
  g_ms.stat_events++;
  pthread_cond_broadcast(&g_ms.cond);
  return seq;
}

ms_oplog_entry_t *ms_oplog_get(uint64_t seq)
{
  if (g_ms.oplog_count == 0) {
    return NULL;
  }
  uint64_t first = g_ms.oplog[g_ms.oplog_head].seq;
  if (seq < first || seq > g_ms.last_seq) {
    return NULL;
  }
  return &g_ms.oplog[(g_ms.oplog_head + (size_t)(seq - first)) % g_ms.oplog_cap];
}

void ms_oplog_truncate(void)
{
  while (g_ms.oplog_count > 0) {
    drop_oldest();
  }
}

void ms_oplog_free_all(void)
{
  ms_oplog_truncate();
  bson_free(g_ms.oplog);
  g_ms.oplog = NULL;
}
