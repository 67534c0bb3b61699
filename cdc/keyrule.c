/*
 * Key rules: a namespace pattern and a key template.
 *
 * A template is parsed once, at start, into segments: literal byte runs
 * and placeholders ({db}, {coll}, or a documentKey field such as {_id} or
 * a shard-key field).  Rendering an event's key walks the segments and
 * appends each one's bytes to a buffer; placeholders render through
 * cdcache__render_value, the one value rendering applications also use
 * (cdcache_id_render), so the keys the subscription evicts are the bytes
 * the application built when it cached.  "{{" and "}}" escape braces and
 * become one-byte literal segments pointing into the template's copy.
 *
 * Parsing is strict, and runs twice with one code path: first counting
 * (segs NULL), which is also what cdcache_cdc_rule_check uses without
 * allocating, then filling the array.  Every error names the byte offset.
 *
 * Field lookup: a shard key may be a dotted path ("region.code"); the
 * field is looked up as a top-level name first (how a documentKey
 * spells a dotted shard key), then as a path into embedded documents.
 */
#include "cdc_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FIELD_MAX 127

static void set_err(char *err, size_t errcap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errcap, const char *fmt, ...)
{
  va_list ap;
  if (!err || !errcap)
    return;
  va_start(ap, fmt);
  /* The analyzer loses track of va_start here (a known false report). */
  (void)vsnprintf(err, errcap, fmt, ap); // NOLINT(clang-analyzer-valist.Uninitialized)
  va_end(ap);
}

static bool field_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '$' || c == '-';
}

static int emit_seg(cdcache__seg_t *segs, size_t cap, size_t *n, int kind, size_t off, size_t len)
{
  if (segs) {
    if (*n >= cap)
      return CDCACHE_EINVAL;
    segs[*n].kind = (uint8_t)kind;
    segs[*n].off = (uint32_t)off;
    segs[*n].len = (uint32_t)len;
  }
  (*n)++;
  return 0;
}

int cdcache__tmpl_parse(const char *t, cdcache__seg_t *segs, size_t cap, size_t *nsegs, char *err,
                        size_t errcap)
{
  size_t n = 0, i = 0, len;
  if (!t) {
    set_err(err, errcap, "key template is NULL (offset %zu)", (size_t)0);
    return CDCACHE_EINVAL;
  }
  len = strlen(t);
  if (len == 0) {
    set_err(err, errcap, "key template is empty (offset %zu)", (size_t)0);
    return CDCACHE_EINVAL;
  }
  if (len > UINT32_MAX / 2) {
    set_err(err, errcap, "key template too long (offset %zu)", (size_t)0);
    return CDCACHE_EINVAL;
  }
  while (i < len) {
    char c = t[i];
    if ((c == '{' || c == '}') && t[i + 1] == c) { /* "{{" or "}}": one literal brace */
      if (emit_seg(segs, cap, &n, CDCACHE__SEG_LIT, i, 1))
        return CDCACHE_EINVAL;
      i += 2;
    } else if (c == '}') {
      set_err(err, errcap, "lone '}' at offset %zu (write '}}' for a brace)", i);
      return CDCACHE_EINVAL;
    } else if (c == '{') {
      size_t start = i + 1, j = start;
      while (j < len && t[j] != '}' && t[j] != '{')
        j++;
      if (j >= len) {
        set_err(err, errcap, "unterminated placeholder at offset %zu", i);
        return CDCACHE_EINVAL;
      }
      if (t[j] == '{') {
        set_err(err, errcap, "'{' inside a placeholder at offset %zu", j);
        return CDCACHE_EINVAL;
      }
      size_t flen = j - start;
      if (flen == 0) {
        set_err(err, errcap, "empty placeholder at offset %zu", i);
        return CDCACHE_EINVAL;
      }
      if (flen > FIELD_MAX) {
        set_err(err, errcap, "placeholder name too long at offset %zu", i);
        return CDCACHE_EINVAL;
      }
      for (size_t k = start; k < j; k++) {
        if (!field_char(t[k])) {
          set_err(err, errcap, "invalid character in placeholder at offset %zu", k);
          return CDCACHE_EINVAL;
        }
        if (t[k] == '.' && (k == start || k + 1 == j || t[k + 1] == '.')) {
          set_err(err, errcap, "misplaced '.' in placeholder at offset %zu", k);
          return CDCACHE_EINVAL;
        }
      }
      int kind = CDCACHE__SEG_FIELD;
      if (flen == 2 && memcmp(t + start, "db", 2) == 0)
        kind = CDCACHE__SEG_DB;
      else if (flen == 4 && memcmp(t + start, "coll", 4) == 0)
        kind = CDCACHE__SEG_COLL;
      if (emit_seg(segs, cap, &n, kind, start, flen))
        return CDCACHE_EINVAL;
      i = j + 1;
    } else {
      size_t start = i;
      while (i < len && t[i] != '{' && t[i] != '}')
        i++;
      if (emit_seg(segs, cap, &n, CDCACHE__SEG_LIT, start, i - start))
        return CDCACHE_EINVAL;
    }
  }
  *nsegs = n;
  return 0;
}

static bool db_char_ok(char c)
{
  /* MongoDB forbids these in database names. */
  return c != '/' && c != '\\' && c != '.' && c != ' ' && c != '"' && c != '$' && c != '*' &&
         c != '<' && c != '>' && c != ':' && c != '|' && c != '?';
}

int cdcache__ns_parse(const char *ns, int *kind, size_t *db_len, const char **coll, char *err,
                      size_t errcap)
{
  const char *dot;
  if (!ns || !*ns) {
    set_err(err, errcap, "namespace is empty (offset %zu)", (size_t)0);
    return CDCACHE_EINVAL;
  }
  if (strcmp(ns, "*") == 0) {
    *kind = CDCACHE__NS_ALL;
    *db_len = 0;
    *coll = NULL;
    return 0;
  }
  dot = strchr(ns, '.');
  if (!dot) {
    set_err(err, errcap, "namespace must be \"db.coll\", \"db.*\" or \"*\" (offset %zu)",
            strlen(ns));
    return CDCACHE_EINVAL;
  }
  if (dot == ns) {
    set_err(err, errcap, "namespace has an empty database (offset %zu)", (size_t)0);
    return CDCACHE_EINVAL;
  }
  for (const char *p = ns; p < dot; p++)
    if (!db_char_ok(*p)) {
      set_err(err, errcap, "invalid character in database name (offset %zu)", (size_t)(p - ns));
      return CDCACHE_EINVAL;
    }
  if (dot[1] == '\0') {
    set_err(err, errcap, "namespace has an empty collection (offset %zu)", (size_t)(dot - ns) + 1);
    return CDCACHE_EINVAL;
  }
  *db_len = (size_t)(dot - ns);
  if (strcmp(dot + 1, "*") == 0) {
    *kind = CDCACHE__NS_DB;
    *coll = NULL;
    return 0;
  }
  for (const char *p = dot + 1; *p; p++)
    if (*p == '*' || *p == '$') {
      set_err(err, errcap, "invalid character in collection name (offset %zu)", (size_t)(p - ns));
      return CDCACHE_EINVAL;
    }
  *kind = CDCACHE__NS_EXACT;
  *coll = dot + 1;
  return 0;
}

int cdcache_cdc_rule_check(const cdcache_cdc_rule_t *rule, char *err, size_t errcap)
{
  int kind;
  size_t dl, n;
  const char *coll;
  if (err && errcap)
    err[0] = '\0';
  if (!rule) {
    set_err(err, errcap, "rule is NULL (offset %zu)", (size_t)0);
    return CDCACHE_EINVAL;
  }
  if (cdcache__ns_parse(rule->ns, &kind, &dl, &coll, err, errcap))
    return CDCACHE_EINVAL;
  return cdcache__tmpl_parse(rule->key_template, NULL, 0, &n, err, errcap);
}

static char *dup_n(const cdcache_t *cache, const char *s, size_t n)
{
  char *d = cdcache__alloc(cache, n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

void cdcache__rule_free(const cdcache_t *cache, cdcache__rule_t *r)
{
  if (!r)
    return;
  if (r->db)
    cdcache__free(cache, r->db, strlen(r->db) + 1);
  if (r->coll)
    cdcache__free(cache, r->coll, strlen(r->coll) + 1);
  if (r->tmpl)
    cdcache__free(cache, r->tmpl, r->tmpl_len + 1);
  if (r->segs)
    cdcache__free(cache, r->segs, r->nsegs * sizeof *r->segs);
  memset(r, 0, sizeof *r);
}

int cdcache__rule_build(const cdcache_t *cache, const cdcache_cdc_rule_t *in, cdcache__rule_t *out,
                        char *err, size_t errcap)
{
  int kind = CDCACHE__NS_ALL;
  size_t dl = 0, n = 0;
  const char *coll = NULL;
  memset(out, 0, sizeof *out);
  if (cdcache_cdc_rule_check(in, err, errcap))
    return CDCACHE_EINVAL;
  cdcache__ns_parse(in->ns, &kind, &dl, &coll, NULL, 0);
  cdcache__tmpl_parse(in->key_template, NULL, 0, &n, NULL, 0);
  out->ns_kind = kind;
  out->tmpl_len = strlen(in->key_template);
  out->tmpl = dup_n(cache, in->key_template, out->tmpl_len);
  out->segs = cdcache__alloc(cache, n * sizeof *out->segs);
  if (kind != CDCACHE__NS_ALL)
    out->db = dup_n(cache, in->ns, dl);
  if (kind == CDCACHE__NS_EXACT)
    out->coll = dup_n(cache, coll, strlen(coll));
  if (!out->tmpl || !out->segs || (kind != CDCACHE__NS_ALL && !out->db) ||
      (kind == CDCACHE__NS_EXACT && !out->coll)) {
    out->nsegs = n;
    cdcache__rule_free(cache, out);
    return CDCACHE_ENOMEM;
  }
  out->nsegs = n;
  if (cdcache__tmpl_parse(out->tmpl, out->segs, n, &n, err, errcap)) {
    cdcache__rule_free(cache, out);
    return CDCACHE_EINVAL;
  }
  return 0;
}

bool cdcache__rule_matches(const cdcache__rule_t *r, const char *db, const char *coll)
{
  if (!db || !coll)
    return false;
  switch (r->ns_kind) {
  case CDCACHE__NS_ALL:
    return true;
  case CDCACHE__NS_DB:
    return strcmp(r->db, db) == 0;
  default:
    return strcmp(r->db, db) == 0 && strcmp(r->coll, coll) == 0;
  }
}

static bool find_field(const bson_t *doc, const char *name, size_t len, bson_iter_t *out)
{
  char path[FIELD_MAX + 1];
  if (!doc)
    return false;
  if (bson_iter_init_find_w_len(out, doc, name, (int)len))
    return true;
  if (!memchr(name, '.', len))
    return false;
  memcpy(path, name, len);
  path[len] = '\0';
  bson_iter_t top;
  if (!bson_iter_init(&top, doc))
    return false;
  return bson_iter_find_descendant(&top, path, out);
}

int cdcache__rule_render(const cdcache__rule_t *r, const char *db, const char *coll,
                         const bson_t *doc_key, char *buf, size_t cap, size_t *out_len)
{
  size_t pos = 0;
  bool overflow = false;
  for (size_t i = 0; i < r->nsegs; i++) {
    const cdcache__seg_t *s = &r->segs[i];
    const char *src = NULL;
    size_t n = 0;
    switch (s->kind) {
    case CDCACHE__SEG_LIT:
      src = r->tmpl + s->off;
      n = s->len;
      break;
    case CDCACHE__SEG_DB:
      if (!db)
        return CDCACHE_ENOENT;
      src = db;
      n = strlen(db);
      break;
    case CDCACHE__SEG_COLL:
      if (!coll)
        return CDCACHE_ENOENT;
      src = coll;
      n = strlen(coll);
      break;
    default: {
      bson_iter_t it;
      size_t vlen = 0;
      int rc;
      if (!find_field(doc_key, r->tmpl + s->off, s->len, &it))
        return CDCACHE_ENOENT;
      rc = cdcache__render_value(&it, overflow ? NULL : buf + pos,
                                 overflow || pos > cap ? 0 : cap - pos, &vlen);
      if (rc == CDCACHE_EINVAL)
        return rc;
      if (rc == CDCACHE_ERANGE)
        overflow = true;
      pos += vlen;
      continue;
    }
    }
    if (!overflow && pos + n <= cap) {
      memcpy(buf + pos, src, n);
    } else {
      overflow = true;
    }
    pos += n;
  }
  *out_len = pos;
  return overflow ? CDCACHE_ERANGE : 0;
}
