/*
 * Rendering a BSON value (an _id, or any documentKey field) as key text.
 *
 * The point of a rendering is that one database row maps to one cache key,
 * however the application or the server happened to type the value.
 * MongoDB compares numbers by value across types: an _id of int32 1,
 * int64 1, double 1.0 and decimal128 "1.00" all name the same document
 * (a unique index refuses the second of them), and the documentKey of a
 * change event carries whichever type was stored, not the one the reader
 * used.  So every number with an integral value renders as a plain
 * decimal integer: for int32/int64 that is printf "%lld"; a double is
 * integral when it is finite and floor(x) == x, and "%.0f" prints its
 * exact integer value (glibc prints doubles exactly); a decimal128 is
 * integral when its canonical string, read as coefficient and exponent,
 * has no non-zero digit after the decimal point, and we then print the
 * coefficient's integer part followed by exponent zeros.  Negative zero
 * renders "0".
 *
 * Non-integral doubles use the shortest "%.Ng" (N = 1..17) whose strtod
 * gives the same double back: the shortest round-trip form, stable across
 * platforms with a correctly rounding libc.  Non-integral decimal128
 * values use libbson's canonical string, so "1.50" and "1.5" differ (a
 * documented limit: MongoDB would call them equal).
 *
 * ObjectIds render as 24 lowercase hex digits and strings as their bytes.
 * Documents and arrays render as libbson's canonical extended JSON lays
 * them out (`{ "a" : 1, "b" : "x" }`, `[ 1, 2 ]`), except that every
 * number inside them, at any depth, renders as it would at the top level
 * (a bare canonical number, not `{ "$numberInt" : "1" }`): MongoDB
 * compares embedded documents field by field, in order, with numbers
 * compared by value, so `{a: 1}` and `{a: NumberLong(1)}` are one _id and
 * must be one key.  Field names are JSON-escaped as libbson escapes them.
 * Nesting deeper than CDCACHE__RENDER_MAX_DEPTH is refused (EINVAL): the
 * renderer recurses, and a hostile 16 MiB document could nest millions of
 * levels.  Everything else (bool, date, binary, ...) renders as its text
 * in libbson's canonical extended JSON: we render the one-element
 * document {"": value} and cut the text between `{ "" : ` and ` }`.
 *
 * The internal entry point writes into a caller's buffer without a NUL
 * and always reports the full length, so that template rendering can
 * append in place and learn the size it needs.
 */
#include "cdc_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies len bytes of src to buf+0 if they fit (cap), reports len. */
static int put_text(const char *src, size_t len, char *buf, size_t cap, size_t *out_len)
{
  *out_len = len;
  if (len > cap)
    return CDCACHE_ERANGE;
  if (len && buf)
    memcpy(buf, src, len);
  return 0;
}

static int render_i64(int64_t v, char *buf, size_t cap, size_t *out_len)
{
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
  return put_text(tmp, (size_t)n, buf, cap, out_len);
}

static int render_double(double v, char *buf, size_t cap, size_t *out_len)
{
  /* 1e308 printed as an integer needs 309 digits; 400 is ample. */
  char tmp[400];
  int n;
  if (isnan(v))
    return put_text("NaN", 3, buf, cap, out_len);
  if (isinf(v))
    return v > 0 ? put_text("Infinity", 8, buf, cap, out_len)
                 : put_text("-Infinity", 9, buf, cap, out_len);
  if (v == 0.0)
    return put_text("0", 1, buf, cap, out_len);
  if (floor(v) == v) {
    n = snprintf(tmp, sizeof tmp, "%.0f", v);
  } else {
    n = 0;
    for (int prec = 1; prec <= 17; prec++) {
      n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
      if (strtod(tmp, NULL) == v)
        break;
    }
  }
  if (n < 0 || (size_t)n >= sizeof tmp)
    return CDCACHE_EINVAL;
  return put_text(tmp, (size_t)n, buf, cap, out_len);
}

/*
 * decimal128: libbson's canonical string is either "[-]digits[.digits]",
 * "[-]d[.ddd]E[+-]exp", "NaN", "Infinity" or "-Infinity".  Integral
 * values become "[-]integer".
 */
static int render_decimal128(const bson_decimal128_t *d, char *buf, size_t cap, size_t *out_len)
{
  char s[BSON_DECIMAL128_STRING];
  char digits[BSON_DECIMAL128_STRING] = {0};
  size_t nd = 0;
  long frac = 0; /* digits after the point in the coefficient */
  long exp10 = 0;
  bool neg = false, seen_point = false;
  const char *p;

  bson_decimal128_to_string(d, s);
  p = s;
  if (*p == '-') {
    neg = true;
    p++;
  }
  if (*p < '0' || *p > '9') /* NaN, Infinity */
    return put_text(s, strlen(s), buf, cap, out_len);
  for (; *p; p++) {
    if (*p >= '0' && *p <= '9') {
      digits[nd++] = *p;
      if (seen_point)
        frac++;
    } else if (*p == '.') {
      seen_point = true;
    } else if (*p == 'E' || *p == 'e') {
      exp10 = strtol(p + 1, NULL, 10);
      break;
    } else {
      return put_text(s, strlen(s), buf, cap, out_len);
    }
  }
  /* value = digits * 10^(exp10 - frac) */
  long scale = exp10 - frac;
  size_t keep = nd; /* integer digits of the coefficient */
  if (scale < 0) {
    if ((long)nd + scale < 0) {
      keep = 0;
    } else {
      keep = (size_t)((long)nd + scale);
    }
    for (size_t i = keep; i < nd; i++)
      if (digits[i] != '0') /* not integral */
        return put_text(s, strlen(s), buf, cap, out_len);
    scale = 0;
  }
  /* strip leading zeros of the integer part */
  size_t first = 0;
  while (first < keep && digits[first] == '0')
    first++;
  if (first == keep) /* zero, whatever its sign or exponent */
    return put_text("0", 1, buf, cap, out_len);
  size_t len = (neg ? 1u : 0u) + (keep - first) + (size_t)scale;
  *out_len = len;
  if (len > cap)
    return CDCACHE_ERANGE;
  char *o = buf;
  if (neg)
    *o++ = '-';
  memcpy(o, digits + first, keep - first);
  o += keep - first;
  memset(o, '0', (size_t)scale);
  return 0;
}

static int render_oid(const bson_oid_t *oid, char *buf, size_t cap, size_t *out_len)
{
  char s[25];
  bson_oid_to_string(oid, s); /* lowercase hex */
  return put_text(s, 24, buf, cap, out_len);
}

static int render_extjson(const bson_iter_t *it, char *buf, size_t cap, size_t *out_len)
{
  bson_t doc;
  size_t jlen = 0;
  char *json;
  int rc;
  static const char prefix[] = "{ \"\" : ";
  static const char suffix[] = " }";
  const size_t plen = sizeof prefix - 1, slen = sizeof suffix - 1;

  bson_init(&doc);
  if (!bson_append_iter(&doc, "", 0, it)) {
    bson_destroy(&doc);
    return CDCACHE_EINVAL;
  }
  /* Invalid nested BSON or UTF-8 makes libbson return NULL here. */
  json = bson_as_canonical_extended_json(&doc, &jlen);
  bson_destroy(&doc);
  if (!json)
    return CDCACHE_EINVAL;
  if (jlen < plen + slen || memcmp(json, prefix, plen) != 0 ||
      memcmp(json + jlen - slen, suffix, slen) != 0) {
    bson_free(json);
    return CDCACHE_EINVAL;
  }
  rc = put_text(json + plen, jlen - plen - slen, buf, cap, out_len);
  bson_free(json);
  return rc;
}

#define CDCACHE__RENDER_MAX_DEPTH 100

static int render_value(const bson_iter_t *it, char *buf, size_t cap, size_t *out_len, int depth);

/* An output that copies what fits in buf and counts everything. */
typedef struct out {
  char *buf;
  size_t cap;
  size_t len;
} out_t;

static void out_add(out_t *o, const char *s, size_t n)
{
  if (o->len < o->cap && n > 0 && o->buf)
    memcpy(o->buf + o->len, s, n <= o->cap - o->len ? n : o->cap - o->len);
  o->len += n;
}

/* A nested value: rendered straight into the unused part of the buffer
 * (or counted only, when it does not fit). */
static int out_value(out_t *o, const bson_iter_t *it, int depth)
{
  size_t n = 0;
  bool fits = o->buf && o->len <= o->cap;
  char *b = fits ? o->buf + o->len : NULL;
  size_t c = fits ? o->cap - o->len : 0;
  int rc;
  switch (bson_iter_type(it)) {
  case BSON_TYPE_INT32:
  case BSON_TYPE_INT64:
  case BSON_TYPE_DOUBLE:
  case BSON_TYPE_DECIMAL128:
  case BSON_TYPE_DOCUMENT:
  case BSON_TYPE_ARRAY:
    rc = render_value(it, b, c, &n, depth);
    break;
  default: /* strings, ObjectIds and the rest keep their extended JSON */
    rc = render_extjson(it, b, c, &n);
    break;
  }
  if (rc != 0 && rc != CDCACHE_ERANGE)
    return rc;
  if (rc == CDCACHE_ERANGE)
    o->cap = o->len; /* stop copying; keep counting */
  o->len += n;
  return 0;
}

/* A field name: quoted and escaped as libbson's extended JSON does. */
static int out_quoted(out_t *o, const char *s, size_t len)
{
  char *esc = bson_utf8_escape_for_json(s, (ssize_t)len);
  if (!esc)
    return CDCACHE_EINVAL;
  out_add(o, "\"", 1);
  out_add(o, esc, strlen(esc));
  out_add(o, "\"", 1);
  bson_free(esc);
  return 0;
}

/* A document or array: `{ "k" : v, ... }` / `[ v, ... ]`, empty `{ }` /
 * `[ ]`, as libbson lays them out. */
static int render_container(const bson_iter_t *it, bool array, char *buf, size_t cap,
                            size_t *out_len, int depth)
{
  bson_iter_t child;
  out_t o = {buf, cap, 0};
  int rc;
  bool first = true;
  if (depth >= CDCACHE__RENDER_MAX_DEPTH || !bson_iter_recurse(it, &child))
    return CDCACHE_EINVAL;
  out_add(&o, array ? "[ " : "{ ", 2);
  while (bson_iter_next(&child)) {
    if (!first)
      out_add(&o, ", ", 2);
    first = false;
    if (!array) {
      const char *k = bson_iter_key(&child);
      if ((rc = out_quoted(&o, k, strlen(k))) != 0)
        return rc;
      out_add(&o, " : ", 3);
    }
    rc = out_value(&o, &child, depth + 1);
    if (rc != 0)
      return rc;
  }
  /* a nested element that is not valid BSON ends the walk early */
  if (child.err_off != 0)
    return CDCACHE_EINVAL;
  if (first)
    out_add(&o, array ? "]" : "}", 1);
  else
    out_add(&o, array ? " ]" : " }", 2);
  *out_len = o.len;
  return o.len > cap ? CDCACHE_ERANGE : 0;
}

int cdcache__render_value(const bson_iter_t *it, char *buf, size_t cap, size_t *out_len)
{
  return render_value(it, buf, cap, out_len, 0);
}

static int render_value(const bson_iter_t *it, char *buf, size_t cap, size_t *out_len, int depth)
{
  *out_len = 0;
  switch (bson_iter_type(it)) {
  case BSON_TYPE_INT32:
    return render_i64(bson_iter_int32(it), buf, cap, out_len);
  case BSON_TYPE_INT64:
    return render_i64(bson_iter_int64(it), buf, cap, out_len);
  case BSON_TYPE_DOUBLE:
    return render_double(bson_iter_double(it), buf, cap, out_len);
  case BSON_TYPE_DECIMAL128: {
    bson_decimal128_t d;
    if (!bson_iter_decimal128(it, &d))
      return CDCACHE_EINVAL;
    return render_decimal128(&d, buf, cap, out_len);
  }
  case BSON_TYPE_OID:
    return render_oid(bson_iter_oid(it), buf, cap, out_len);
  case BSON_TYPE_UTF8: {
    uint32_t len = 0;
    const char *s = bson_iter_utf8(it, &len);
    if (!s)
      return CDCACHE_EINVAL;
    return put_text(s, len, buf, cap, out_len);
  }
  case BSON_TYPE_DOCUMENT:
    return render_container(it, false, buf, cap, out_len, depth);
  case BSON_TYPE_ARRAY:
    return render_container(it, true, buf, cap, out_len, depth);
  default:
    return render_extjson(it, buf, cap, out_len);
  }
}

/* Adds the NUL the public functions promise. */
static int finish_public(int rc, char *buf, size_t cap, size_t len)
{
  if (rc != 0)
    return rc;
  if (len >= cap || !buf)
    return CDCACHE_ERANGE;
  buf[len] = '\0';
  return 0;
}

int cdcache_id_render(const void *bson, size_t len, char *buf, size_t cap, size_t *out_len)
{
  bson_t doc;
  bson_iter_t it;
  size_t n = 0;
  int rc;
  if (!bson || !out_len || (!buf && cap) || len < 5 || len > UINT32_MAX)
    return CDCACHE_EINVAL;
  if (!bson_init_static(&doc, bson, len))
    return CDCACHE_EINVAL;
  if (!bson_iter_init(&it, &doc) || !bson_iter_next(&it))
    return CDCACHE_EINVAL;
  rc = cdcache__render_value(&it, buf, cap, &n);
  *out_len = n;
  return finish_public(rc, buf, cap, n);
}

int cdcache_id_render_int64(int64_t v, char *buf, size_t cap, size_t *out_len)
{
  size_t n = 0;
  int rc;
  if (!out_len || (!buf && cap))
    return CDCACHE_EINVAL;
  rc = render_i64(v, buf, cap, &n);
  *out_len = n;
  return finish_public(rc, buf, cap, n);
}

int cdcache_id_render_double(double v, char *buf, size_t cap, size_t *out_len)
{
  size_t n = 0;
  int rc;
  if (!out_len || (!buf && cap))
    return CDCACHE_EINVAL;
  rc = render_double(v, buf, cap, &n);
  *out_len = n;
  return finish_public(rc, buf, cap, n);
}

int cdcache_id_render_oid(const uint8_t oid[12], char *buf, size_t cap, size_t *out_len)
{
  bson_oid_t o;
  size_t n = 0;
  int rc;
  if (!oid || !out_len || (!buf && cap))
    return CDCACHE_EINVAL;
  memcpy(o.bytes, oid, 12);
  rc = render_oid(&o, buf, cap, &n);
  *out_len = n;
  return finish_public(rc, buf, cap, n);
}
