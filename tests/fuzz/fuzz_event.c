/*
 * fuzz_event: the change-event decoder and key mapping (cdc/event.c),
 * through cdcache__cdc_apply on a subscription built without a thread
 * (cdcache__cdc_create), against a real cache.
 *
 * Two input modes, chosen by the first byte:
 *   raw (odd): the rest is the event's BSON bytes, as a server might send
 *     anything.  Checks: no crash or sanitizer report; the event is
 *     counted; a key disappears only if it was a rule's key or the cache
 *     was flushed (a sentinel no rule can render survives unless a flush
 *     was counted); cache and subscription stats agree on flushes.
 *   structured (even): the rest describes an event (operation type, ns
 *     with well- or ill-typed fields, documentKey with an _id of any BSON
 *     type and an optional shard-key field, clusterTime, wallTime, junk),
 *     so that most inputs decode.  Before applying, the cache holds a
 *     sentinel and every key the rules should evict (computed here with
 *     cdcache_id_render, the one rendering).  Checks, from the contract
 *     in cdcache.h and cdc/event.c: a data change (insert, update,
 *     replace, delete) evicts exactly its rules' keys and nothing else,
 *     unless a rule cannot be mapped (field missing) or the key callback
 *     fails, which flush the cache (reason unmappable); drop, rename and
 *     dropDatabase flush (namespace); invalidate flushes (invalidate) and
 *     asks for a reopen; a malformed event flushes (unmappable); an
 *     unknown operation type changes nothing.
 */
#include "cdc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_event: line %d: ", __LINE__);                                          \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

#define MAX_KEY 200

static cdcache_t *cache;
static cdcache_cdc_t *sub;
static int key_fn_fail; /* the key callback's verdict for this input */
static int key_fn_calls;

/* The key callback: emits "kf:<op>:<db>" and fails on demand. */
static int key_fn(void *ctx, const cdcache_cdc_event_t *ev, cdcache_cdc_sink_t *sink)
{
  (void)ctx;
  key_fn_calls++;
  CHECK(ev->struct_size == sizeof *ev, "event struct_size");
  CHECK(ev->event_bson != NULL && ev->event_len >= 5, "event bytes");
  char k[MAX_KEY + 64];
  int n = snprintf(k, sizeof k, "kf:%s:%s", cdcache_cdc_op_name(ev->op), ev->db ? ev->db : "-");
  if (n > 0 && (size_t)n < sizeof k)
    (void)cdcache_cdc_emit(sink, k, (size_t)n);
  CHECK(cdcache_cdc_emit(sink, k, 0) == CDCACHE_EINVAL, "emit of an empty key");
  return key_fn_fail;
}

static const cdcache_cdc_rule_t rules[] = {
    {"app.users", "user:{_id}"},
    {"app.*", "{coll}/{_id}/{region.code}"},
    {"*", "{db}.{coll}#{_id}"},
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 64;
  cfg.shards = 1;
  cfg.max_key_len = MAX_KEY;
  if (cdcache_open(&cfg, &cache) != 0)
    abort();
  cdcache_cdc_config_t cc;
  cdcache_cdc_config_init(&cc);
  cc.uri = "mongodb://127.0.0.1:1/?replicaSet=rs0";
  cc.rules = rules;
  cc.n_rules = sizeof rules / sizeof rules[0];
  cc.key_fn = key_fn;
  char err[256];
  if (cdcache__cdc_create(cache, &cc, &sub, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_event: cdc_create: %s\n", err);
    abort();
  }
  /* Keys longer than the cache allows are never cached (start sets it). */
  sub->max_key_len = MAX_KEY;
  return 0;
}

struct snap {
  uint64_t flushes, reasons[CDCACHE_CDC_FLUSH_REASONS], events, malformed, ignored;
};
static void snap(struct snap *s)
{
  cdcache_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK(cdcache_stats(cache, &st) == 0, "stats");
  s->flushes = st.flushes;
  cdcache_cdc_stats_t cs;
  memset(&cs, 0, sizeof cs);
  cs.struct_size = sizeof cs;
  CHECK(cdcache_cdc_stats(sub, &cs) == 0, "cdc stats");
  for (int i = 0; i < CDCACHE_CDC_FLUSH_REASONS; i++)
    s->reasons[i] = cdcache_cdc_flush_count(&cs, i);
  s->events = cs.events;
  s->malformed = cs.malformed_events;
  s->ignored = cs.ignored_events;
}

static bool cached(const char *k, size_t n)
{
  char buf[8];
  size_t vl;
  int rc = cdcache_get(cache, k, n, buf, sizeof buf, &vl);
  CHECK(rc == 0 || rc == CDCACHE_ENOENT, "get rc %d", rc);
  return rc == 0;
}
static void put(const char *k, size_t n)
{
  if (n == 0 || n > MAX_KEY)
    return;
  CHECK(cdcache_put(cache, k, n, "v", 1, CDCACHE_TTL_NONE) == 0, "put");
}

static const char SENTINEL[] = "sentinel:no-rule-renders-this";

/* ----------------------------------------------------------- input */

struct input {
  const uint8_t *p;
  size_t n, i;
};
static uint8_t rd(struct input *in)
{
  return in->i < in->n ? in->p[in->i++] : 0;
}
/* Up to max bytes, length-prefixed. */
static size_t rd_bytes(struct input *in, char *out, size_t max)
{
  size_t n = rd(in) % (max + 1);
  for (size_t i = 0; i < n; i++)
    out[i] = (char)rd(in);
  return n;
}

static const char *const ops[] = {"insert",        "update", "replace",      "delete",
                                  "drop",          "rename", "dropDatabase", "invalidate",
                                  "createIndexes", "modify"};

/* Appends the _id (or shard key) value chosen by the input. */
static void append_value(bson_t *b, const char *name, struct input *in)
{
  uint8_t t = rd(in);
  char s[64];
  size_t n;
  uint64_t u = 0;
  for (int i = 0; i < 8; i++)
    u = (u << 8) | rd(in);
  int64_t v = (int64_t)u;
  switch (t % 12) {
  case 0:
    BSON_APPEND_INT32(b, name, (int32_t)v);
    break;
  case 1:
    BSON_APPEND_INT64(b, name, v);
    break;
  case 2: {
    double d;
    memcpy(&d, &v, sizeof d);
    BSON_APPEND_DOUBLE(b, name, d);
    break;
  }
  case 3:
    BSON_APPEND_DOUBLE(b, name, (double)(int32_t)v);
    break;
  case 4:
    n = rd_bytes(in, s, sizeof s);
    bson_append_utf8(b, name, -1, s, (int)n);
    break;
  case 5: {
    bson_oid_t oid;
    memcpy(oid.bytes, &v, 8);
    memset(oid.bytes + 8, t, 4);
    BSON_APPEND_OID(b, name, &oid);
    break;
  }
  case 6:
    BSON_APPEND_BOOL(b, name, v & 1);
    break;
  case 7:
    BSON_APPEND_DATE_TIME(b, name, v);
    break;
  case 8: {
    bson_decimal128_t d;
    d.high = (uint64_t)v ^ ((uint64_t)rd(in) << 56);
    d.low = (uint64_t)v * 0x9e3779b97f4a7c15ull;
    BSON_APPEND_DECIMAL128(b, name, &d);
    break;
  }
  case 9: {
    n = rd_bytes(in, s, sizeof s);
    bson_append_binary(b, name, -1, (bson_subtype_t)(t >> 4), (const uint8_t *)s, (uint32_t)n);
    break;
  }
  case 10: {
    bson_t child;
    bson_append_document_begin(b, name, -1, &child);
    BSON_APPEND_INT32(&child, "a", (int32_t)v);
    n = rd_bytes(in, s, 16);
    bson_append_utf8(&child, "s", -1, s, (int)n);
    bson_append_document_end(b, &child);
    break;
  }
  default:
    BSON_APPEND_NULL(b, name);
  }
}

/* Renders the element `name` of doc as the rules do, or -1 if absent. */
static int render_field(const bson_t *doc, const char *name, char *out, size_t cap, size_t *n)
{
  bson_iter_t it, top;
  if (!bson_iter_init_find(&it, doc, name)) {
    if (!strchr(name, '.') || !bson_iter_init(&top, doc) ||
        !bson_iter_find_descendant(&top, name, &it))
      return -1;
  }
  /* cdcache_id_render takes a document whose first element is the value. */
  bson_t one = BSON_INITIALIZER;
  if (!bson_append_iter(&one, "v", -1, &it)) {
    bson_destroy(&one);
    return -2;
  }
  /* An integral decimal128 renders as up to ~6200 digits. */
  static char tmp[1 << 16];
  int rc = cdcache_id_render(bson_get_data(&one), one.len, tmp, sizeof tmp, n);
  bson_destroy(&one);
  if (rc == CDCACHE_ERANGE)
    return -3;
  if (rc != 0)
    return -2;
  if (*n > cap)
    return -3;
  memcpy(out, tmp, *n);
  return 0;
}

/* Binary-safe concatenation of up to three pieces with separators. */
static size_t cat(char *out, size_t cap, const char *a, size_t an, const char *s1, const char *b,
                  size_t bn, const char *s2, const char *c, size_t cn)
{
  size_t n = 0;
  const char *parts[5] = {a, s1, b, s2, c};
  size_t lens[5] = {an, strlen(s1), bn, s2 ? strlen(s2) : 0, cn};
  for (int i = 0; i < 5; i++) {
    if (parts[i] == NULL)
      continue;
    if (n + lens[i] > cap)
      return cap + 1;
    memcpy(out + n, parts[i], lens[i]);
    n += lens[i];
  }
  return n;
}

struct want {
  char keys[4][MAX_KEY + 1];
  size_t klen[4];
  int nkeys;
  bool flush;
  int reason;
  bool ignored;
  bool key_fn;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  CHECK(cdcache_flush(cache) == 0, "flush");
  put(SENTINEL, sizeof SENTINEL - 1);
  key_fn_calls = 0;
  key_fn_fail = 0;
  struct snap before, after;

  if (data[0] & 1) { /* raw */
    snap(&before);
    int r = cdcache__cdc_apply(sub, data + 1, size - 1);
    snap(&after);
    CHECK(r == CDCACHE__APPLY_OK || r == CDCACHE__APPLY_INVALIDATE, "apply returned %d", r);
    CHECK(after.events == before.events + 1, "event not counted");
    uint64_t cdc_flushes = 0;
    for (int i = 0; i < CDCACHE_CDC_FLUSH_REASONS; i++)
      cdc_flushes += after.reasons[i] - before.reasons[i];
    CHECK(cdc_flushes == after.flushes - before.flushes, "cache and cdc disagree on flushes");
    if (!cached(SENTINEL, sizeof SENTINEL - 1))
      CHECK(cdc_flushes > 0, "the sentinel was evicted without a flush");
    if (r == CDCACHE__APPLY_INVALIDATE)
      CHECK(after.reasons[CDCACHE_CDC_FLUSH_INVALIDATE] >
                before.reasons[CDCACHE_CDC_FLUSH_INVALIDATE],
            "invalidate without its flush");
    return 0;
  }

  /* Structured. */
  struct input in = {data + 1, size - 1, 0};
  uint8_t opb = rd(&in), fl = rd(&in), fl2 = rd(&in);
  key_fn_fail = (fl2 & 0x80) ? -1 : 0;
  char db[40], coll[40], opstr[24];
  size_t dbn, colln;
  switch (fl2 & 3) {
  case 0:
    strcpy(db, "app");
    break;
  case 1:
    strcpy(db, "other");
    break;
  default:
    dbn = rd_bytes(&in, db, 32);
    db[dbn] = '\0';
  }
  switch ((fl2 >> 2) & 3) {
  case 0:
    strcpy(coll, "users");
    break;
  case 1:
    strcpy(coll, "orders");
    break;
  default:
    colln = rd_bytes(&in, coll, 32);
    coll[colln] = '\0';
    /* The oracle does not model $out's temporary collections (tmp.agg_out.*,
     * tmp.mr.*: ignored unless a rule names them exactly; the unit test
     * namespace_events_flush_only_what_rules_cover checks that): keep the
     * fuzzed names out of that prefix. */
    if (strncmp(coll, "tmp.", 4) == 0)
      coll[0] = 'x';
  }
  bool op_known = opb % 11 < 10;
  if (op_known)
    strcpy(opstr, ops[opb % 11]);
  else {
    size_t n = rd_bytes(&in, opstr, 20);
    opstr[n] = '\0';
  }
  bool has_op = !(fl & 0x01), has_ns = !(fl & 0x02), has_coll = !(fl & 0x04), has_dk = !(fl & 0x08),
       has_id = !(fl & 0x10), has_region = fl & 0x20, region_dotted = fl & 0x40,
       bad_types = fl & 0x80;

  bson_t ev = BSON_INITIALIZER;
  BSON_APPEND_INT32(&ev, "_id", 1); /* the resume token's place; any value */
  if (has_op) {
    if (bad_types && (fl2 & 0x10))
      BSON_APPEND_INT32(&ev, "operationType", 7);
    else
      BSON_APPEND_UTF8(&ev, "operationType", opstr);
  }
  if (has_ns) {
    bson_t ns;
    bson_append_document_begin(&ev, "ns", -1, &ns);
    if (bad_types && (fl2 & 0x20))
      BSON_APPEND_INT32(&ns, "db", 5);
    else
      bson_append_utf8(&ns, "db", -1, db, (int)strlen(db));
    if (has_coll)
      bson_append_utf8(&ns, "coll", -1, coll, (int)strlen(coll));
    bson_append_document_end(&ev, &ns);
  }
  if (fl2 & 0x40) {
    bson_t to;
    bson_append_document_begin(&ev, "to", -1, &to);
    BSON_APPEND_UTF8(&to, "db", "app");
    BSON_APPEND_UTF8(&to, "coll", "renamed");
    bson_append_document_end(&ev, &to);
  }
  bson_t dk;
  bson_init(&dk);
  if (has_id)
    append_value(&dk, "_id", &in);
  if (has_region) {
    if (region_dotted)
      append_value(&dk, "region.code", &in);
    else {
      bson_t r;
      bson_append_document_begin(&dk, "region", -1, &r);
      append_value(&r, "code", &in);
      bson_append_document_end(&dk, &r);
    }
  }
  if (has_dk) {
    if (bad_types && !(fl2 & 0x30))
      BSON_APPEND_UTF8(&ev, "documentKey", "not a document");
    else
      BSON_APPEND_DOCUMENT(&ev, "documentKey", &dk);
  }
  if (rd(&in) & 1)
    BSON_APPEND_TIMESTAMP(&ev, "clusterTime", 1700000000u, rd(&in));
  if (rd(&in) & 1)
    BSON_APPEND_DATE_TIME(&ev, "wallTime", 1700000000000LL);
  if (rd(&in) & 1)
    BSON_APPEND_UTF8(&ev, "junk", "ignored");

  /* What must happen. */
  struct want w;
  memset(&w, 0, sizeof w);
  bool ns_ok = has_ns && !(bad_types && (fl2 & 0x20));
  bool db_ok = ns_ok; /* db present and a string (no embedded NUL: strcpy'd) */
  bool coll_ok = db_ok && has_coll;
  bool dk_ok = has_dk && !(bad_types && !(fl2 & 0x30));
  bool op_ok = has_op && !(bad_types && (fl2 & 0x10));
  int op = 0;
  if (op_ok)
    for (int i = 1; i <= CDCACHE_CDC_OP_INVALIDATE; i++)
      if (strcmp(opstr, cdcache_cdc_op_name(i)) == 0)
        op = i;
  /* A field present but of the wrong type is malformed whatever the op. */
  bool malformed = !op_ok || (has_ns && !ns_ok) || (has_dk && !dk_ok);
  if (!malformed) {
    if (op >= CDCACHE_CDC_OP_INSERT && op <= CDCACHE_CDC_OP_DELETE)
      malformed = !coll_ok || !dk_ok;
    else if (op >= CDCACHE_CDC_OP_DROP && op <= CDCACHE_CDC_OP_DROP_DATABASE)
      malformed = !db_ok;
  }
  if (malformed) {
    w.flush = true;
    w.reason = CDCACHE_CDC_FLUSH_UNMAPPABLE;
  } else if (op == 0) {
    w.ignored = true;
  } else if (op == CDCACHE_CDC_OP_INVALIDATE) {
    w.flush = true;
    w.reason = CDCACHE_CDC_FLUSH_INVALIDATE;
  } else if (op >= CDCACHE_CDC_OP_DROP) {
    w.flush = true;
    w.reason = CDCACHE_CDC_FLUSH_NAMESPACE;
    w.key_fn = true;
  } else {
    w.key_fn = true;
    if (key_fn_fail) {
      w.flush = true;
      w.reason = CDCACHE_CDC_FLUSH_UNMAPPABLE;
    }
    char idt[MAX_KEY + 1], rgt[MAX_KEY + 1];
    size_t idn = 0, rgn = 0;
    int idrc = render_field(&dk, "_id", idt, MAX_KEY, &idn);
    int rgrc = render_field(&dk, "region.code", rgt, MAX_KEY, &rgn);
    /* {db}.{coll}#{_id} matches every namespace. */
    if (idrc == -1 || idrc == -2) {
      w.flush = true;
      w.reason = CDCACHE_CDC_FLUSH_UNMAPPABLE;
    }
    char k[3 * MAX_KEY + 64];
    size_t n;
    if (idrc == 0) {
      n = cat(k, MAX_KEY, db, strlen(db), ".", coll, strlen(coll), "#", idt, idn);
      if (n <= MAX_KEY) {
        memcpy(w.keys[w.nkeys], k, (size_t)n);
        w.klen[w.nkeys++] = (size_t)n;
      }
    }
    if (strcmp(db, "app") == 0) {
      if (rgrc == -1 || rgrc == -2 || idrc == -1 || idrc == -2) {
        w.flush = true;
        w.reason = CDCACHE_CDC_FLUSH_UNMAPPABLE;
      } else if (idrc == 0 && rgrc == 0) {
        n = cat(k, MAX_KEY, coll, strlen(coll), "/", idt, idn, "/", rgt, rgn);
        if (n <= MAX_KEY) {
          memcpy(w.keys[w.nkeys], k, (size_t)n);
          w.klen[w.nkeys++] = (size_t)n;
        }
      }
      if (strcmp(coll, "users") == 0 && idrc == 0) {
        n = cat(k, MAX_KEY, "user:", 5, "", idt, idn, NULL, NULL, 0);
        if (n <= MAX_KEY) {
          memcpy(w.keys[w.nkeys], k, (size_t)n);
          w.klen[w.nkeys++] = (size_t)n;
        }
      }
    }
  }
  for (int i = 0; i < w.nkeys; i++)
    put(w.keys[i], w.klen[i]);

  snap(&before);
  int r = cdcache__cdc_apply(sub, bson_get_data(&ev), ev.len);
  snap(&after);
  CHECK(after.events == before.events + 1, "event not counted");
  CHECK(r == (op == CDCACHE_CDC_OP_INVALIDATE && !malformed ? CDCACHE__APPLY_INVALIDATE
                                                            : CDCACHE__APPLY_OK),
        "apply returned %d (op %s)", r, opstr);
  CHECK(after.malformed == before.malformed + (malformed ? 1 : 0),
        "malformed_events: expected %d more (op \"%s\", flags %02x %02x)", malformed, opstr, fl,
        fl2);
  CHECK(after.ignored == before.ignored + (w.ignored ? 1 : 0), "ignored_events (op \"%s\")", opstr);
  CHECK((key_fn_calls > 0) == w.key_fn, "key callback called %d times, expected %d", key_fn_calls,
        w.key_fn);
  bool flushed = after.flushes != before.flushes;
  CHECK(flushed == w.flush, "flush %d, expected %d (op \"%s\", flags %02x %02x)", flushed, w.flush,
        opstr, fl, fl2);
  if (w.flush)
    CHECK(after.reasons[w.reason] == before.reasons[w.reason] + 1, "flush reason %s not counted",
          cdcache_cdc_flush_reason_name(w.reason));
  CHECK(cached(SENTINEL, sizeof SENTINEL - 1) == !w.flush, "sentinel");
  for (int i = 0; i < w.nkeys; i++)
    CHECK(!cached(w.keys[i], w.klen[i]), "key \"%.*s\" not evicted by %s", (int)w.klen[i],
          w.keys[i], opstr);
  bson_destroy(&dk);
  bson_destroy(&ev);
  return 0;
}
