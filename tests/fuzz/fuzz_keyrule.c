/*
 * fuzz_keyrule: key rules (namespace patterns, key templates) and the _id
 * rendering they use, from cdc/keyrule.c and cdc/idrender.c.
 *
 * Input: a flags byte, a cap byte, then four NUL-separated strings (ns,
 * key template, event db, event coll), then the rest as a BSON document
 * (its length field and final byte are fixed up so that libbson accepts
 * the frame; the elements are whatever the fuzzer made).
 *
 * Checks:
 *   - the template parser agrees with an independent reference parser
 *     written from the public spec (cdcache.h): same accept/reject, same
 *     segments; rebuilding the text from the segments gives the template
 *     back; counting and filling agree; every error message is
 *     NUL-terminated, non-empty and fits errcap (tried with tiny caps);
 *   - cdcache_cdc_rule_check and cdcache__rule_build agree; rule_build
 *     under allocation failure returns ENOMEM and leaks nothing;
 *     rule_matches follows the namespace kind;
 *   - rendering an event key: 0 means it fit in cap, ERANGE reports the
 *     full length needed, and rendering again with that cap gives the
 *     same bytes as a reference concatenation of the segments (literals,
 *     db, coll, fields rendered one by one);
 *   - cdcache_id_render of the document's first element: NUL-terminated,
 *     ERANGE exactly when cap <= length, deterministic, integral numbers
 *     render as integers with the same value, other doubles as text that
 *     reads back to the same double.
 */
#include "cdc_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz_keyrule: line %d: ", __LINE__);                                        \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* ------------------------------------------------ a counting allocator */

static _Atomic long live_blocks;
static _Atomic int fail_countdown;

static void *h_malloc(void *ctx, size_t size)
{
  (void)ctx;
  if (atomic_load(&fail_countdown) > 0 && atomic_fetch_sub(&fail_countdown, 1) == 1)
    return NULL;
  void *p = malloc(size == 0 ? 1 : size);
  if (p)
    atomic_fetch_add(&live_blocks, 1);
  return p;
}
static void h_free(void *ctx, void *ptr, size_t size)
{
  (void)ctx;
  (void)size;
  if (ptr) {
    atomic_fetch_sub(&live_blocks, 1);
    free(ptr);
  }
}

static cdcache_t *cache;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  cdcache_config_t cfg;
  cdcache_config_init(&cfg);
  cfg.max_entries = 16;
  cfg.allocator.malloc = h_malloc;
  cfg.allocator.free = h_free;
  cfg.allocator.usable_size = NULL;
  if (cdcache_open(&cfg, &cache) != 0)
    abort();
  return 0;
}

/* ----------------------------------------- reference template parser */

struct rseg {
  int kind;
  size_t off, len;
};

static bool ref_field_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '$' || c == '-';
}

/* Straight from cdcache.h: literal bytes; "{{" and "}}" are braces; a
 * placeholder is {NAME}, NAME 1..127 bytes of [A-Za-z0-9_.$-], not
 * starting or ending with '.', no ".."; {db} and {coll} are special; an
 * empty template, an empty, nested or unterminated placeholder and a
 * lone "}" are errors.  Literal runs are maximal (split only at braces). */
static int ref_parse(const char *t, struct rseg *out, size_t cap, size_t *n)
{
  size_t len = strlen(t), i = 0;
  *n = 0;
  if (len == 0)
    return -1;
  while (i < len) {
    if ((t[i] == '{' || t[i] == '}') && i + 1 < len && t[i + 1] == t[i]) {
      if (*n < cap)
        out[*n] = (struct rseg){CDCACHE__SEG_LIT, i, 1};
      (*n)++;
      i += 2;
    } else if (t[i] == '}') {
      return -1;
    } else if (t[i] == '{') {
      size_t j = i + 1;
      while (j < len && ref_field_char(t[j]))
        j++;
      if (j >= len || t[j] != '}')
        return -1; /* unterminated, nested, or a bad character */
      size_t fl = j - i - 1;
      const char *f = t + i + 1;
      if (fl == 0 || fl > 127 || f[0] == '.' || f[fl - 1] == '.')
        return -1;
      for (size_t k = 0; k + 1 < fl; k++)
        if (f[k] == '.' && f[k + 1] == '.')
          return -1;
      int kind = CDCACHE__SEG_FIELD;
      if (fl == 2 && memcmp(f, "db", 2) == 0)
        kind = CDCACHE__SEG_DB;
      else if (fl == 4 && memcmp(f, "coll", 4) == 0)
        kind = CDCACHE__SEG_COLL;
      if (*n < cap)
        out[*n] = (struct rseg){kind, i + 1, fl};
      (*n)++;
      i = j + 1;
    } else {
      size_t s = i;
      // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): i < strlen(t)
      while (i < len && t[i] != '{' && t[i] != '}')
        i++;
      if (*n < cap)
        out[*n] = (struct rseg){CDCACHE__SEG_LIT, s, i - s};
      (*n)++;
    }
  }
  return 0;
}

static void check_err(const char *err, size_t errcap, int rc)
{
  if (errcap == 0 || rc == 0)
    return; /* a success need not write the buffer */
  CHECK(memchr(err, '\0', errcap) != NULL, "error message not NUL-terminated within errcap %zu",
        errcap);
  if (errcap > 1)
    CHECK(err[0] != '\0', "error without a reason");
}

/* ------------------------------------------------------- id rendering */

static void check_id_render(const bson_t *doc, uint8_t capb)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, doc) || !bson_iter_next(&it))
    return;
  char big[8192];
  size_t n = 0;
  int rc = cdcache_id_render(bson_get_data(doc), doc->len, big, sizeof big, &n);
  if (rc == CDCACHE_ERANGE) {
    CHECK(n >= sizeof big, "ERANGE with length %zu < cap", n);
    return;
  }
  if (rc != 0) {
    CHECK(rc == CDCACHE_EINVAL, "id_render rc %d", rc);
    return;
  }
  CHECK(n < sizeof big && big[n] == '\0', "id_render: no NUL at length %zu", n);
  /* Deterministic; the same through the internal entry point. */
  char again[8192];
  size_t n2 = 0;
  CHECK(cdcache__render_value(&it, again, sizeof again, &n2) == 0 && n2 == n &&
            memcmp(big, again, n) == 0,
        "render_value disagrees with id_render");
  /* ERANGE exactly when cap <= length, with the length reported. */
  size_t cap = capb % (n + 2);
  char small[8192];
  size_t n3 = 0;
  int rc3 = cdcache_id_render(bson_get_data(doc), doc->len, cap ? small : NULL, cap, &n3);
  if (cap == 0 && rc3 == CDCACHE_EINVAL)
    return; /* NULL buffer */
  if (cap > n) {
    CHECK(rc3 == 0 && n3 == n && memcmp(small, big, n + 1) == 0, "id_render with cap %zu: rc %d",
          cap, rc3);
  } else {
    CHECK(rc3 == CDCACHE_ERANGE && n3 == n, "id_render with cap %zu <= %zu: rc %d, len %zu", cap, n,
          rc3, n3);
  }
  /* Numbers. */
  double d = 0;
  bool is_int = false, is_dbl = false;
  int64_t iv = 0;
  switch (bson_iter_type(&it)) {
  case BSON_TYPE_INT32:
    iv = bson_iter_int32(&it), is_int = true;
    break;
  case BSON_TYPE_INT64:
    iv = bson_iter_int64(&it), is_int = true;
    break;
  case BSON_TYPE_DOUBLE:
    d = bson_iter_double(&it), is_dbl = true;
    break;
  default:
    break;
  }
  if (is_int) {
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)iv);
    CHECK(strcmp(big, want) == 0, "integer %lld rendered as \"%s\"", (long long)iv, big);
  } else if (is_dbl) {
    if (isnan(d)) {
      CHECK(strcmp(big, "NaN") == 0, "NaN rendered as \"%s\"", big);
    } else if (isinf(d)) {
      CHECK(strcmp(big, d > 0 ? "Infinity" : "-Infinity") == 0, "inf rendered as \"%s\"", big);
    } else if (floor(d) == d) {
      CHECK(strspn(big + (big[0] == '-'), "0123456789") == strlen(big + (big[0] == '-')) &&
                strtod(big, NULL) == d && strcmp(big, "-0") != 0,
            "integral double %.17g rendered as \"%s\"", d, big);
    } else {
      CHECK(strtod(big, NULL) == d, "double %.17g rendered as \"%s\", which reads back differently",
            d, big);
      /* Shortest: one digit fewer must not read back. */
    }
  }
}

/* ---------------------------------------------------------- the target */

static const char *next_str(const uint8_t **p, const uint8_t *end, char *buf, size_t cap)
{
  size_t i = 0;
  while (*p < end && **p != 0 && i + 1 < cap)
    buf[i++] = (char)*(*p)++;
  while (*p < end && **p != 0)
    (*p)++; /* too long: cut */
  if (*p < end)
    (*p)++;
  buf[i] = '\0';
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 2)
    return 0;
  uint8_t flags = data[0], capb = data[1];
  const uint8_t *p = data + 2, *end = data + size;
  char ns[512], tmpl[1024], db[256], coll[256];
  next_str(&p, end, ns, sizeof ns);
  next_str(&p, end, tmpl, sizeof tmpl);
  next_str(&p, end, db, sizeof db);
  next_str(&p, end, coll, sizeof coll);

  /* The document: the rest, framed. */
  uint8_t docbuf[4096];
  size_t dl = (size_t)(end - p);
  bson_t doc;
  bool have_doc = false;
  if (dl + 5 <= sizeof docbuf) {
    uint32_t total = (uint32_t)(dl + 5);
    memcpy(docbuf, &total, 4);
    memcpy(docbuf + 4, p, dl);
    docbuf[4 + dl] = 0;
    have_doc = bson_init_static(&doc, docbuf, total);
  }

  /* 1. The template parser against the reference. */
  size_t errcap = (flags & 3) == 0 ? 0 : (flags & 3) == 1 ? 1 + (capb % 8) : 256;
  char err[256];
  memset(err, 'x', sizeof err);
  size_t n = 0;
  int rc = cdcache__tmpl_parse(tmpl, NULL, 0, &n, errcap ? err : NULL, errcap);
  check_err(err, errcap, rc);
  struct rseg ref[1100];
  size_t rn = 0;
  int rrc = ref_parse(tmpl, ref, 1100, &rn);
  CHECK((rc == 0) == (rrc == 0), "template \"%s\": parser %d, reference %d", tmpl, rc, rrc);
  if (rc == 0) {
    CHECK(n == rn, "template \"%s\": %zu segments, reference %zu", tmpl, n, rn);
    cdcache__seg_t segs[1100];
    size_t n2 = 0;
    CHECK(cdcache__tmpl_parse(tmpl, segs, n, &n2, NULL, 0) == 0 && n2 == n, "fill pass disagrees");
    if (n > 0) {
      size_t n3 = 0;
      CHECK(cdcache__tmpl_parse(tmpl, segs, n - 1, &n3, NULL, 0) == CDCACHE_EINVAL,
            "a too-small segment array was accepted");
      CHECK(cdcache__tmpl_parse(tmpl, segs, n, &n2, NULL, 0) == 0, "refill");
    }
    char rebuilt[2200] = {0};
    size_t rl = 0;
    for (size_t i = 0; i < n; i++) {
      CHECK(segs[i].kind == ref[i].kind && segs[i].off == ref[i].off && segs[i].len == ref[i].len,
            "template \"%s\": segment %zu is (%d,%u,%u), reference (%d,%zu,%zu)", tmpl, i,
            segs[i].kind, segs[i].off, segs[i].len, ref[i].kind, ref[i].off, ref[i].len);
      const char *s = tmpl + segs[i].off;
      if (segs[i].kind == CDCACHE__SEG_LIT && segs[i].len == 1 && (s[0] == '{' || s[0] == '}')) {
        rebuilt[rl++] = s[0];
        rebuilt[rl++] = s[0];
      } else if (segs[i].kind == CDCACHE__SEG_LIT) {
        memcpy(rebuilt + rl, s, segs[i].len);
        rl += segs[i].len;
      } else {
        rebuilt[rl++] = '{';
        memcpy(rebuilt + rl, s, segs[i].len);
        rl += segs[i].len;
        rebuilt[rl++] = '}';
      }
    }
    CHECK(rl == strlen(tmpl) && memcmp(rebuilt, tmpl, rl) == 0, "segments do not rebuild \"%s\"",
          tmpl);
  }

  /* 2. Namespace parsing and the public check. */
  int kind = -1;
  size_t dbl = 0;
  const char *collp = NULL;
  memset(err, 'x', sizeof err);
  int nrc = cdcache__ns_parse(ns, &kind, &dbl, &collp, errcap ? err : NULL, errcap);
  check_err(err, errcap, nrc);
  if (nrc == 0) {
    if (kind == CDCACHE__NS_ALL)
      CHECK(strcmp(ns, "*") == 0, "ns \"%s\" parsed as *", ns);
    else {
      CHECK(dbl > 0 && ns[dbl] == '.' && memchr(ns, '.', dbl) == NULL, "ns \"%s\": db length %zu",
            ns, dbl);
      if (kind == CDCACHE__NS_DB)
        CHECK(strcmp(ns + dbl + 1, "*") == 0, "ns \"%s\" parsed as db.*", ns);
      else
        CHECK(kind == CDCACHE__NS_EXACT && collp == ns + dbl + 1 && *collp != '\0',
              "ns \"%s\": kind %d", ns, kind);
    }
  }
  cdcache_cdc_rule_t rule = {ns, tmpl};
  memset(err, 'x', sizeof err);
  int crc = cdcache_cdc_rule_check(&rule, errcap ? err : NULL, errcap);
  check_err(err, errcap, crc);
  CHECK((crc == 0) == (nrc == 0 && rc == 0), "rule_check %d, ns %d, template %d", crc, nrc, rc);

  /* 3. Building under allocation failure. */
  cdcache__rule_t r;
  long before = atomic_load(&live_blocks);
  atomic_store(&fail_countdown, (flags >> 2) & 7);
  int brc = cdcache__rule_build(cache, &rule, &r, NULL, 0);
  bool failed = atomic_load(&fail_countdown) <= 0 && ((flags >> 2) & 7) != 0;
  atomic_store(&fail_countdown, 0);
  if (crc != 0) {
    CHECK(brc == CDCACHE_EINVAL, "rule_build of a bad rule: rc %d", brc);
    CHECK(atomic_load(&live_blocks) == before, "rule_build leaked on EINVAL");
    return 0;
  }
  if (brc == CDCACHE_ENOMEM) {
    CHECK(failed, "rule_build ENOMEM without a failed allocation");
    CHECK(atomic_load(&live_blocks) == before, "rule_build leaked on ENOMEM");
    return 0;
  }
  CHECK(brc == 0, "rule_build of a good rule: rc %d", brc);
  CHECK(r.nsegs == n && r.tmpl_len == strlen(tmpl), "built rule differs");

  /* 4. Matching and rendering. */
  const char *edb = (flags & 0x20) ? NULL : db, *ecoll = (flags & 0x40) ? NULL : coll;
  bool m = cdcache__rule_matches(&r, edb, ecoll);
  bool want =
      edb && ecoll &&
      (r.ns_kind == CDCACHE__NS_ALL ||
       (strcmp(r.db, edb) == 0 && (r.ns_kind == CDCACHE__NS_DB || strcmp(r.coll, ecoll) == 0)));
  CHECK(m == want, "rule_matches(%s, %s) for ns \"%s\": %d", edb ? edb : "NULL",
        ecoll ? ecoll : "NULL", ns, m);

  const bson_t *dk = have_doc && !(flags & 0x80) ? &doc : NULL;
  char out[2048];
  size_t cap = capb, len = 0;
  int rrc2 = cdcache__rule_render(&r, edb, ecoll, dk, out, cap, &len);
  if (rrc2 == 0 || rrc2 == CDCACHE_ERANGE) {
    if (rrc2 == 0)
      CHECK(len <= cap, "rendered %zu bytes into cap %zu", len, cap);
    else
      CHECK(len > cap, "ERANGE with length %zu <= cap %zu", len, cap);
    /* The full rendering, and the reference concatenation. */
    static char full[1 << 20], refk[1 << 20];
    size_t flen = 0;
    if (len <= sizeof full) {
      CHECK(cdcache__rule_render(&r, edb, ecoll, dk, full, len, &flen) == 0 && flen == len,
            "render with the reported length failed");
      if (rrc2 == 0)
        CHECK(memcmp(full, out, len) == 0, "renderings differ");
      size_t rl = 0;
      for (size_t i = 0; i < r.nsegs; i++) {
        const cdcache__seg_t *s = &r.segs[i];
        const char *src = r.tmpl + s->off;
        size_t sl = s->len;
        if (s->kind == CDCACHE__SEG_DB) {
          CHECK(edb, "{db} rendered without a database");
          src = edb, sl = strlen(edb);
        } else if (s->kind == CDCACHE__SEG_COLL) {
          CHECK(ecoll, "{coll} rendered without a collection");
          src = ecoll, sl = strlen(ecoll);
        } else if (s->kind == CDCACHE__SEG_FIELD) {
          bson_iter_t it;
          char name[128];
          memcpy(name, r.tmpl + s->off, s->len);
          name[s->len] = '\0';
          bson_iter_t top;
          bool found = bson_iter_init_find(&it, dk, name) ||
                       (strchr(name, '.') && bson_iter_init(&top, dk) &&
                        bson_iter_find_descendant(&top, name, &it));
          CHECK(found, "a rendered field {%s} is not in the document", name);
          size_t vl = 0;
          CHECK(cdcache__render_value(&it, refk + rl, sizeof refk - rl, &vl) == 0, "field render");
          rl += vl;
          continue;
        }
        memcpy(refk + rl, src, sl);
        rl += sl;
      }
      CHECK(rl == len && memcmp(refk, full, len) == 0, "rendering differs from the reference");
    }
  } else {
    CHECK(rrc2 == CDCACHE_ENOENT || rrc2 == CDCACHE_EINVAL, "rule_render rc %d", rrc2);
  }
  cdcache__rule_free(cache, &r);
  CHECK(atomic_load(&live_blocks) == before, "rule_free left %ld blocks",
        atomic_load(&live_blocks) - before);

  /* 5. The _id rendering of the document's first element. */
  if (have_doc)
    check_id_render(&doc, capb);
  return 0;
}
