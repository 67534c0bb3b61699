/*
 * A small query-language evaluator for $match filters (and find/update/delete
 * filters) and an inclusion/exclusion $project. Supported: equality on dotted
 * paths with array expansion, $eq, $ne, $in, $nin, $exists, $gt, $gte, $lt,
 * $lte, $not, $and, $or and $nor. Anything else is reported as unsupported
 * (code 2, BadValue) instead of being silently ignored.
 */
#include "mongo_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- values */

static bool is_number(bson_type_t t)
{
  return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE;
}

static double num_as_double(const bson_value_t *v)
{
  switch (v->value_type) {
  case BSON_TYPE_INT32:
    return v->value.v_int32;
  case BSON_TYPE_INT64:
    return (double)v->value.v_int64;
  default:
    return v->value.v_double;
  }
}

/* Compares two values of comparable types: sets *ok false if not comparable. */
static int value_cmp(const bson_value_t *a, const bson_value_t *b, bool *ok)
{
  *ok = true;
  if (is_number(a->value_type) && is_number(b->value_type)) {
    if (a->value_type != BSON_TYPE_DOUBLE && b->value_type != BSON_TYPE_DOUBLE) {
      int64_t x = a->value_type == BSON_TYPE_INT32 ? a->value.v_int32 : a->value.v_int64;
      int64_t y = b->value_type == BSON_TYPE_INT32 ? b->value.v_int32 : b->value.v_int64;
      return x < y ? -1 : x > y;
    }
    double x = num_as_double(a), y = num_as_double(b);
    if (x != x || y != y) {
      *ok = false;
      return 0;
    }
    return x < y ? -1 : x > y;
  }
  if (a->value_type != b->value_type) {
    *ok = false;
    return 0;
  }
  switch (a->value_type) {
  case BSON_TYPE_UTF8: {
    uint32_t la = a->value.v_utf8.len, lb = b->value.v_utf8.len;
    int c = memcmp(a->value.v_utf8.str, b->value.v_utf8.str, la < lb ? la : lb);
    if (c == 0) {
      c = la < lb ? -1 : la > lb;
    }
    return c < 0 ? -1 : c > 0;
  }
  case BSON_TYPE_DATE_TIME:
    return a->value.v_datetime < b->value.v_datetime ? -1
                                                     : a->value.v_datetime > b->value.v_datetime;
  case BSON_TYPE_TIMESTAMP: {
    uint64_t x = ((uint64_t)a->value.v_timestamp.timestamp << 32) | a->value.v_timestamp.increment;
    uint64_t y = ((uint64_t)b->value.v_timestamp.timestamp << 32) | b->value.v_timestamp.increment;
    return x < y ? -1 : x > y;
  }
  case BSON_TYPE_OID:
    return bson_oid_compare(&a->value.v_oid, &b->value.v_oid) < 0   ? -1
           : bson_oid_compare(&a->value.v_oid, &b->value.v_oid) > 0 ? 1
                                                                    : 0;
  case BSON_TYPE_BOOL:
    return (int)a->value.v_bool - (int)b->value.v_bool;
  default:
    *ok = false;
    return 0;
  }
}

bool ms_value_equal(const bson_value_t *a, const bson_value_t *b)
{
  bool ok;
  if (is_number(a->value_type) && is_number(b->value_type)) {
    return value_cmp(a, b, &ok) == 0 && ok;
  }
  if (a->value_type != b->value_type) {
    return false;
  }
  switch (a->value_type) {
  case BSON_TYPE_NULL:
  case BSON_TYPE_UNDEFINED:
  case BSON_TYPE_MINKEY:
  case BSON_TYPE_MAXKEY:
    return true;
  case BSON_TYPE_DOCUMENT:
  case BSON_TYPE_ARRAY:
    /* Documents compare field by field in order; byte equality is that. */
    return a->value.v_doc.data_len == b->value.v_doc.data_len &&
           memcmp(a->value.v_doc.data, b->value.v_doc.data, a->value.v_doc.data_len) == 0;
  case BSON_TYPE_BINARY:
    return a->value.v_binary.subtype == b->value.v_binary.subtype &&
           a->value.v_binary.data_len == b->value.v_binary.data_len &&
           memcmp(a->value.v_binary.data, b->value.v_binary.data, a->value.v_binary.data_len) == 0;
  case BSON_TYPE_DECIMAL128:
    return memcmp(&a->value.v_decimal128, &b->value.v_decimal128, sizeof a->value.v_decimal128) ==
           0;
  case BSON_TYPE_REGEX:
    return strcmp(a->value.v_regex.regex, b->value.v_regex.regex) == 0 &&
           strcmp(a->value.v_regex.options, b->value.v_regex.options) == 0;
  default: {
    int c = value_cmp(a, b, &ok);
    return ok && c == 0;
  }
  }
}

/* ------------------------------------------------------------- path lookup */

typedef struct {
  bson_value_t *v;
  size_t n, cap;
} vals_t;

static void vals_push(vals_t *vs, const bson_value_t *v)
{
  if (vs->n == vs->cap) {
    vs->cap = vs->cap ? vs->cap * 2 : 8;
    vs->v = bson_realloc(vs->v, vs->cap * sizeof *vs->v);
  }
  vs->v[vs->n++] = *v; /* Shallow: points into the document. */
}

static bool sub_doc(const bson_iter_t *it, bson_t *out)
{
  const uint8_t *data;
  uint32_t len;
  if (BSON_ITER_HOLDS_DOCUMENT(it)) {
    bson_iter_document(it, &len, &data);
  } else if (BSON_ITER_HOLDS_ARRAY(it)) {
    bson_iter_array(it, &len, &data);
  } else {
    return false;
  }
  return bson_init_static(out, data, len);
}

/* Collects the values a dotted path reaches, expanding arrays as MongoDB does. */
static void collect(const bson_t *doc, const char *path, vals_t *out, int depth)
{
  if (depth > 64) {
    return;
  }
  const char *dot = strchr(path, '.');
  size_t seglen = dot ? (size_t)(dot - path) : strlen(path);
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) {
    return;
  }
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (strlen(k) != seglen || memcmp(k, path, seglen) != 0) {
      continue;
    }
    const bson_value_t *v = bson_iter_value(&it);
    if (!dot) {
      vals_push(out, v);
      if (v->value_type == BSON_TYPE_ARRAY) {
        bson_t arr;
        bson_iter_t ai;
        if (sub_doc(&it, &arr) && bson_iter_init(&ai, &arr)) {
          while (bson_iter_next(&ai)) {
            vals_push(out, bson_iter_value(&ai));
          }
        }
      }
      return;
    }
    bson_t sub;
    if (!sub_doc(&it, &sub)) {
      return;
    }
    if (v->value_type == BSON_TYPE_DOCUMENT) {
      collect(&sub, dot + 1, out, depth + 1);
    } else {
      /* An array: a numeric next segment indexes it; documents inside are searched too. */
      collect(&sub, dot + 1, out, depth + 1);
      bson_iter_t ai;
      if (bson_iter_init(&ai, &sub)) {
        while (bson_iter_next(&ai)) {
          bson_t el;
          if (BSON_ITER_HOLDS_DOCUMENT(&ai) && sub_doc(&ai, &el)) {
            collect(&el, dot + 1, out, depth + 1);
          }
        }
      }
    }
    return;
  }
}

bool ms_lookup_path(const bson_t *doc, const char *path, bson_iter_t *out)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, doc)) {
    return false;
  }
  return bson_iter_find_descendant(&it, path, out);
}

/* --------------------------------------------------------------- filters */

static int eval_filter(const bson_t *doc, const bson_t *filter, bson_error_t *err, int depth);

static int unsupported(bson_error_t *err, const char *what)
{
  bson_set_error(err, 0, 2, "cdcache test server: unsupported query operator or form: %s", what);
  return -1;
}

static bool any_equal(const vals_t *vs, const bson_value_t *v)
{
  if (v->value_type == BSON_TYPE_NULL) {
    if (vs->n == 0) {
      return true;
    }
  }
  for (size_t i = 0; i < vs->n; i++) {
    if (ms_value_equal(&vs->v[i], v)) {
      return true;
    }
  }
  return false;
}

static int eval_ops(const vals_t *vs, const bson_t *ops, bson_error_t *err, int depth)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, ops)) {
    return unsupported(err, "bad operator document");
  }
  while (bson_iter_next(&it)) {
    const char *op = bson_iter_key(&it);
    const bson_value_t *arg = bson_iter_value(&it);
    bool r;
    if (!strcmp(op, "$eq")) {
      r = any_equal(vs, arg);
    } else if (!strcmp(op, "$ne")) {
      r = !any_equal(vs, arg);
    } else if (!strcmp(op, "$in") || !strcmp(op, "$nin")) {
      bson_t arr;
      bson_iter_t ai;
      if (!BSON_ITER_HOLDS_ARRAY(&it) || !sub_doc(&it, &arr) || !bson_iter_init(&ai, &arr)) {
        bson_set_error(err, 0, 2, "%s needs an array", op);
        return -1;
      }
      r = false;
      while (bson_iter_next(&ai)) {
        if (any_equal(vs, bson_iter_value(&ai))) {
          r = true;
          break;
        }
      }
      if (op[1] == 'n' && op[2] == 'i') {
        r = !r;
      }
    } else if (!strcmp(op, "$exists")) {
      r = (vs->n > 0) == bson_iter_as_bool(&it);
    } else if (!strcmp(op, "$gt") || !strcmp(op, "$gte") || !strcmp(op, "$lt") ||
               !strcmp(op, "$lte")) {
      r = false;
      for (size_t i = 0; i < vs->n && !r; i++) {
        bool ok;
        int c = value_cmp(&vs->v[i], arg, &ok);
        if (!ok) {
          continue;
        }
        if (!strcmp(op, "$gt")) {
          r = c > 0;
        } else if (!strcmp(op, "$gte")) {
          r = c >= 0;
        } else if (!strcmp(op, "$lt")) {
          r = c < 0;
        } else {
          r = c <= 0;
        }
      }
    } else if (!strcmp(op, "$not")) {
      bson_t sub;
      if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !sub_doc(&it, &sub)) {
        return unsupported(err, "$not needs an operator document");
      }
      int x = eval_ops(vs, &sub, err, depth + 1);
      if (x < 0) {
        return x;
      }
      r = !x;
    } else {
      return unsupported(err, op);
    }
    if (!r) {
      return 0;
    }
  }
  return 1;
}

static bool is_operator_doc(const bson_iter_t *it)
{
  bson_t sub;
  bson_iter_t si;
  if (!BSON_ITER_HOLDS_DOCUMENT(it) || !sub_doc(it, &sub) || !bson_iter_init(&si, &sub)) {
    return false;
  }
  return bson_iter_next(&si) && bson_iter_key(&si)[0] == '$';
}

static int eval_logical(const bson_t *doc, const char *op, bson_iter_t *it, bson_error_t *err,
                        int depth)
{
  bson_t arr;
  bson_iter_t ai;
  if (!BSON_ITER_HOLDS_ARRAY(it) || !sub_doc(it, &arr) || !bson_iter_init(&ai, &arr)) {
    bson_set_error(err, 0, 2, "%s must be an array", op);
    return -1;
  }
  bool is_and = !strcmp(op, "$and");
  bool any = false;
  int n = 0;
  while (bson_iter_next(&ai)) {
    bson_t sub;
    if (!BSON_ITER_HOLDS_DOCUMENT(&ai) || !sub_doc(&ai, &sub)) {
      bson_set_error(err, 0, 2, "%s entries must be documents", op);
      return -1;
    }
    n++;
    int r = eval_filter(doc, &sub, err, depth + 1);
    if (r < 0) {
      return r;
    }
    if (is_and && !r) {
      return 0;
    }
    if (r) {
      any = true;
    }
  }
  if (n == 0) {
    bson_set_error(err, 0, 2, "%s must be a nonempty array", op);
    return -1;
  }
  if (is_and) {
    return 1;
  }
  return !strcmp(op, "$or") ? any : !any;
}

static int eval_filter(const bson_t *doc, const bson_t *filter, bson_error_t *err, int depth)
{
  if (depth > 32) {
    return unsupported(err, "nesting too deep");
  }
  bson_iter_t it;
  if (!bson_iter_init(&it, filter)) {
    return unsupported(err, "bad filter document");
  }
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    int r;
    if (k[0] == '$') {
      if (!strcmp(k, "$and") || !strcmp(k, "$or") || !strcmp(k, "$nor")) {
        r = eval_logical(doc, k, &it, err, depth);
      } else if (!strcmp(k, "$comment")) {
        r = 1;
      } else {
        return unsupported(err, k);
      }
    } else {
      vals_t vs = {0};
      collect(doc, k, &vs, 0);
      if (is_operator_doc(&it)) {
        bson_t ops;
        sub_doc(&it, &ops);
        r = eval_ops(&vs, &ops, err, depth);
      } else if (BSON_ITER_HOLDS_REGEX(&it)) {
        r = unsupported(err, "regular expressions");
      } else {
        r = any_equal(&vs, bson_iter_value(&it));
      }
      bson_free(vs.v);
    }
    if (r <= 0) {
      return r;
    }
  }
  return 1;
}

int ms_match(const bson_t *doc, const bson_t *filter, bson_error_t *err)
{
  return eval_filter(doc, filter, err, 0);
}

bool ms_match_validate(const bson_t *filter, bson_error_t *err)
{
  /*
   * Evaluate every clause, and every operator of a field on its own,
   * against an empty document: evaluation reports unsupported operators,
   * and splitting the clauses keeps a false result from hiding later ones.
   */
  bson_iter_t it;
  if (!bson_iter_init(&it, filter)) {
    bson_set_error(err, 0, 2, "bad filter");
    return false;
  }
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    bson_t one = BSON_INITIALIZER;
    bson_append_value(&one, k, -1, bson_iter_value(&it));
    bson_t empty = BSON_INITIALIZER;
    int r = 0;
    if (!strcmp(k, "$and") || !strcmp(k, "$or") || !strcmp(k, "$nor")) {
      bson_t arr;
      bson_iter_t ai;
      if (!BSON_ITER_HOLDS_ARRAY(&it) || !sub_doc(&it, &arr) || !bson_iter_init(&ai, &arr)) {
        bson_set_error(err, 0, 2, "%s must be an array", k);
        r = -1;
      } else {
        while (r >= 0 && bson_iter_next(&ai)) {
          bson_t sub;
          if (!BSON_ITER_HOLDS_DOCUMENT(&ai) || !sub_doc(&ai, &sub)) {
            bson_set_error(err, 0, 2, "%s entries must be documents", k);
            r = -1;
          } else if (!ms_match_validate(&sub, err)) {
            r = -1;
          }
        }
      }
    } else if (k[0] != '$' && is_operator_doc(&it)) {
      bson_t ops;
      bson_iter_t oi;
      sub_doc(&it, &ops);
      bson_iter_init(&oi, &ops);
      while (r >= 0 && bson_iter_next(&oi)) {
        bson_t single = BSON_INITIALIZER, wrap = BSON_INITIALIZER;
        bson_append_value(&single, bson_iter_key(&oi), -1, bson_iter_value(&oi));
        bson_append_document(&wrap, k, -1, &single);
        r = ms_match(&empty, &wrap, err);
        bson_destroy(&single);
        bson_destroy(&wrap);
      }
    } else {
      r = ms_match(&empty, &one, err);
    }
    bson_destroy(&one);
    bson_destroy(&empty);
    if (r < 0) {
      return false;
    }
  }
  return true;
}

/* --------------------------------------------------------------- project */

typedef struct {
  char **paths;
  size_t n, cap;
  bool inclusion;
  bool mode_set;
  bool bad;
} pspec_t;

static void pspec_flatten(pspec_t *ps, const bson_t *spec, const char *prefix, bson_error_t *err)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, spec)) {
    ps->bad = true;
    return;
  }
  while (bson_iter_next(&it) && !ps->bad) {
    const char *k = bson_iter_key(&it);
    char *full = prefix ? bson_strdup_printf("%s.%s", prefix, k) : bson_strdup(k);
    if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
      bson_t sub;
      sub_doc(&it, &sub);
      pspec_flatten(ps, &sub, full, err);
      bson_free(full);
      continue;
    }
    bool incl;
    if (BSON_ITER_HOLDS_BOOL(&it) || BSON_ITER_HOLDS_NUMBER(&it)) {
      incl = bson_iter_as_bool(&it);
    } else {
      if (err) {
        bson_set_error(err, 0, 2,
                       "cdcache test server: $project supports only 0/1/true/false (field %s)",
                       full);
      }
      ps->bad = true;
      bson_free(full);
      return;
    }
    if (!strcmp(full, "_id")) {
      bson_free(full); /* _id is always kept. */
      continue;
    }
    if (ps->mode_set && ps->inclusion != incl) {
      if (err) {
        bson_set_error(err, 0, 31254, "Cannot do exclusion on field %s in inclusion projection",
                       full);
      }
      ps->bad = true;
      bson_free(full);
      return;
    }
    ps->mode_set = true;
    ps->inclusion = incl;
    if (ps->n == ps->cap) {
      ps->cap = ps->cap ? ps->cap * 2 : 8;
      ps->paths = bson_realloc(ps->paths, ps->cap * sizeof *ps->paths);
    }
    ps->paths[ps->n++] = full;
  }
}

static void pspec_free(pspec_t *ps)
{
  for (size_t i = 0; i < ps->n; i++) {
    bson_free(ps->paths[i]);
  }
  bson_free(ps->paths);
}

bool ms_project_validate(const bson_t *spec, bson_error_t *err)
{
  pspec_t ps = {0};
  pspec_flatten(&ps, spec, NULL, err);
  bool ok = !ps.bad;
  pspec_free(&ps);
  return ok;
}

/* 2: path equals full; 1: some path lies below full; 0: unrelated. */
static int path_rel(const pspec_t *ps, const char *full)
{
  size_t fl = strlen(full);
  int rel = 0;
  for (size_t i = 0; i < ps->n; i++) {
    const char *p = ps->paths[i];
    if (!strcmp(p, full)) {
      return 2;
    }
    if (strncmp(p, full, fl) == 0 && p[fl] == '.') {
      rel = 1;
    }
  }
  return rel;
}

static void project_rec(const pspec_t *ps, const bson_t *src, bson_t *dst, const char *prefix,
                        bool top);

static void project_array(const pspec_t *ps, const bson_t *arr, bson_t *dst, const char *full)
{
  bson_iter_t it;
  uint32_t idx = 0;
  if (!bson_iter_init(&it, arr)) {
    return;
  }
  while (bson_iter_next(&it)) {
    char key[16];
    const char *k;
    if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
      bson_t sub, out;
      sub_doc(&it, &sub);
      bson_uint32_to_string(idx++, &k, key, sizeof key);
      bson_append_document_begin(dst, k, -1, &out);
      project_rec(ps, &sub, &out, full, false);
      bson_append_document_end(dst, &out);
    } else if (!ps->inclusion) {
      bson_uint32_to_string(idx++, &k, key, sizeof key);
      bson_append_value(dst, k, -1, bson_iter_value(&it));
    }
  }
}

static void project_rec(const pspec_t *ps, const bson_t *src, bson_t *dst, const char *prefix,
                        bool top)
{
  bson_iter_t it;
  if (!bson_iter_init(&it, src)) {
    return;
  }
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (top && !strcmp(k, "_id")) {
      bson_append_value(dst, k, -1, bson_iter_value(&it));
      continue;
    }
    char *full = prefix ? bson_strdup_printf("%s.%s", prefix, k) : bson_strdup(k);
    int rel = path_rel(ps, full);
    bool keep_whole = (rel == 2 && ps->inclusion) || (rel == 0 && !ps->inclusion);
    if (keep_whole) { // NOLINT(bugprone-branch-clone): same action, distinct cases
      bson_append_value(dst, k, -1, bson_iter_value(&it));
    } else if (rel == 1 && BSON_ITER_HOLDS_DOCUMENT(&it)) {
      bson_t sub, out;
      sub_doc(&it, &sub);
      bson_append_document_begin(dst, k, -1, &out);
      project_rec(ps, &sub, &out, full, false);
      bson_append_document_end(dst, &out);
    } else if (rel == 1 && BSON_ITER_HOLDS_ARRAY(&it)) {
      bson_t sub, out;
      sub_doc(&it, &sub);
      bson_append_array_begin(dst, k, -1, &out);
      project_array(ps, &sub, &out, full);
      bson_append_array_end(dst, &out);
    } else if (rel == 1 && !ps->inclusion) {
      bson_append_value(dst, k, -1, bson_iter_value(&it));
    }
    bson_free(full);
  }
}

void ms_project(const bson_t *src, const bson_t *spec, bson_t *dst)
{
  pspec_t ps = {0};
  pspec_flatten(&ps, spec, NULL, NULL);
  if (ps.bad || ps.n == 0) {
    /* Only _id was named, or nothing: an inclusion of _id alone. */
    if (!ps.bad && ps.n == 0) {
      bson_iter_t it;
      if (bson_iter_init_find(&it, src, "_id")) {
        bson_append_value(dst, "_id", 3, bson_iter_value(&it));
      }
    }
    pspec_free(&ps);
    return;
  }
  project_rec(&ps, src, dst, NULL, true);
  pspec_free(&ps);
}
