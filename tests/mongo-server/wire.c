/*
 * Wire-protocol framing: reads whole messages from a socket, decodes the
 * legacy OP_QUERY handshake and OP_MSG (with kind-1 document sequences merged
 * into the command body as arrays), and sends OP_REPLY / OP_MSG replies.
 * Every length is checked, so a malformed message yields an error rather
 * than an out-of-bounds read.
 */
#include "mongo_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

static int32_t rd_i32(const uint8_t *p)
{
  uint32_t v =
      (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
  return (int32_t)v;
}

static void wr_i32(uint8_t *p, int32_t v)
{
  uint32_t u = (uint32_t)v;
  p[0] = (uint8_t)u;
  p[1] = (uint8_t)(u >> 8);
  p[2] = (uint8_t)(u >> 16);
  p[3] = (uint8_t)(u >> 24);
}

static bool read_full(int fd, uint8_t *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, buf + got, len - got, 0);
    if (n == 0) {
      return false;
    }
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    got += (size_t)n;
  }
  return true;
}

static bool write_full(int fd, const uint8_t *buf, size_t len)
{
  size_t sent = 0;
  while (sent < len) {
    ssize_t n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    sent += (size_t)n;
  }
  return true;
}

uint8_t *ms_wire_read(int fd, uint32_t *len_out)
{
  uint8_t hdr[16];
  if (!read_full(fd, hdr, sizeof hdr)) {
    return NULL;
  }
  int32_t len = rd_i32(hdr);
  if (len < 16 || len > MS_MAX_MESSAGE_SIZE) {
    return NULL;
  }
  uint8_t *buf = malloc((size_t)len);
  if (!buf) {
    return NULL;
  }
  memcpy(buf, hdr, sizeof hdr);
  if (!read_full(fd, buf + 16, (size_t)len - 16)) {
    free(buf);
    return NULL;
  }
  *len_out = (uint32_t)len;
  return buf;
}

/* Maximum nesting depth accepted in a message (MongoDB allows 100 levels). */
#define MAX_DEPTH 100

/*
 * bson_validate() skips an embedded document that bson_init_static() rejects
 * (for example one whose last byte is not NUL), so walk every embedded
 * document and array too: afterwards any nested document can be opened.
 */
static bool deep_check(const bson_t *doc, int depth)
{
  bson_iter_t it;
  if (depth > MAX_DEPTH || !bson_iter_init(&it, doc)) {
    return false;
  }
  while (bson_iter_next(&it)) {
    const uint8_t *data;
    uint32_t len;
    bson_t sub;
    if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
      if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_document(&it, &len, &data);
      } else {
        bson_iter_array(&it, &len, &data);
      }
      if (!bson_init_static(&sub, data, len) || !deep_check(&sub, depth + 1)) {
        return false;
      }
    } else if (BSON_ITER_HOLDS_CODEWSCOPE(&it)) {
      uint32_t clen;
      bson_iter_codewscope(&it, &clen, &len, &data);
      if (!bson_init_static(&sub, data, len) || !deep_check(&sub, depth + 1)) {
        return false;
      }
    }
  }
  /* bson_iter_next() stops early on corruption; the iterator records where. */
  return it.err_off == 0;
}

/* Reads a BSON document of at most avail bytes at p; validates it fully. */
static bool read_doc(const uint8_t *p, size_t avail, bson_t *out, size_t *used)
{
  if (avail < 5) {
    return false;
  }
  int32_t dlen = rd_i32(p);
  if (dlen < 5 || (size_t)dlen > avail) {
    return false;
  }
  if (!bson_init_static(out, p, (size_t)dlen)) {
    return false;
  }
  size_t off;
  if (!bson_validate(out, BSON_VALIDATE_NONE, &off) || !deep_check(out, 0)) {
    return false;
  }
  *used = (size_t)dlen;
  return true;
}

/* Length of a NUL-terminated string within avail bytes, or -1. */
static ssize_t cstring_len(const uint8_t *p, size_t avail)
{
  const void *nul = memchr(p, 0, avail);
  if (!nul) {
    return -1;
  }
  return (const uint8_t *)nul - p;
}

static bool parse_query(const uint8_t *body, size_t blen, ms_request_t *req, char *why,
                        size_t why_len)
{
  if (blen < 4) {
    snprintf(why, why_len, "OP_QUERY too short");
    return false;
  }
  size_t off = 4; /* flags */
  ssize_t nlen = cstring_len(body + off, blen - off);
  if (nlen < 0) {
    snprintf(why, why_len, "OP_QUERY collection name unterminated");
    return false;
  }
  char ns[256];
  size_t copy = (size_t)nlen < sizeof ns - 1 ? (size_t)nlen : sizeof ns - 1;
  memcpy(ns, body + off, copy);
  ns[copy] = '\0';
  off += (size_t)nlen + 1;
  if (blen - off < 8) {
    snprintf(why, why_len, "OP_QUERY too short");
    return false;
  }
  off += 8; /* numberToSkip, numberToReturn */
  bson_t doc;
  size_t used;
  if (!read_doc(body + off, blen - off, &doc, &used)) {
    snprintf(why, why_len, "OP_QUERY has an invalid document");
    return false;
  }
  char *dot = strchr(ns, '.');
  if (!dot || strcmp(dot, ".$cmd") != 0) {
    snprintf(why, why_len, "OP_QUERY is only supported for commands (got %s)", ns);
    return false;
  }
  *dot = '\0';
  /* Legacy commands may be wrapped as {$query: {...}}. */
  bson_iter_t it;
  bson_t inner;
  const bson_t *cmd = &doc;
  if (bson_iter_init_find(&it, &doc, "$query") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
    const uint8_t *data;
    uint32_t dlen;
    bson_iter_document(&it, &dlen, &data);
    if (!bson_init_static(&inner, data, dlen)) {
      snprintf(why, why_len, "bad $query");
      return false;
    }
    cmd = &inner;
  }
  bson_init(&req->cmd);
  bson_copy_to_excluding_noinit(cmd, &req->cmd, "$db", NULL);
  BSON_APPEND_UTF8(&req->cmd, "$db", ns);
  return true;
}

static bool parse_msg(const uint8_t *body, size_t blen, ms_request_t *req, char *why,
                      size_t why_len)
{
  if (blen < 4) {
    snprintf(why, why_len, "OP_MSG too short");
    return false;
  }
  uint32_t flags = (uint32_t)rd_i32(body);
  /* Bits 0-15 other than checksumPresent and moreToCome are required bits we do not know. */
  if (flags & 0xFFFCu) {
    snprintf(why, why_len, "OP_MSG has unknown required flag bits 0x%x", flags);
    return false;
  }
  req->more_to_come = (flags & 2u) != 0;
  size_t end = blen;
  if (flags & 1u) {
    if (end < 8) {
      snprintf(why, why_len, "OP_MSG checksum missing");
      return false;
    }
    end -= 4; /* The CRC-32C is not verified. */
  }
  size_t off = 4;
  bool have_body = false;
  bson_t body_doc;
  /* Kind-1 sections, collected first and appended after the body. */
  struct {
    char id[64];
    const uint8_t *docs;
    size_t len;
  } seqs[8];
  int nseqs = 0;

  while (off < end) {
    uint8_t kind = body[off++];
    if (kind == 0) {
      size_t used;
      if (have_body || !read_doc(body + off, end - off, &body_doc, &used)) {
        snprintf(why, why_len, "OP_MSG has a bad or second kind-0 section");
        return false;
      }
      have_body = true;
      off += used;
    } else if (kind == 1) {
      if (end - off < 4) {
        snprintf(why, why_len, "OP_MSG kind-1 section truncated");
        return false;
      }
      int32_t slen = rd_i32(body + off);
      if (slen < 5 || (size_t)slen > end - off) {
        snprintf(why, why_len, "OP_MSG kind-1 section has a bad size");
        return false;
      }
      const uint8_t *s = body + off + 4;
      size_t savail = (size_t)slen - 4;
      ssize_t idlen = cstring_len(s, savail);
      if (idlen < 0 || (size_t)idlen >= sizeof seqs[0].id || nseqs == 8) {
        snprintf(why, why_len, "OP_MSG kind-1 section has a bad identifier");
        return false;
      }
      memcpy(seqs[nseqs].id, s, (size_t)idlen + 1);
      seqs[nseqs].docs = s + idlen + 1;
      seqs[nseqs].len = savail - (size_t)idlen - 1;
      /* Validate every document now. */
      size_t p = 0;
      while (p < seqs[nseqs].len) {
        bson_t d;
        size_t used;
        if (!read_doc(seqs[nseqs].docs + p, seqs[nseqs].len - p, &d, &used)) {
          snprintf(why, why_len, "OP_MSG kind-1 section has a bad document");
          return false;
        }
        p += used;
      }
      nseqs++;
      off += (size_t)slen;
    } else {
      snprintf(why, why_len, "OP_MSG has unknown section kind %u", kind);
      return false;
    }
  }
  if (!have_body) {
    snprintf(why, why_len, "OP_MSG without a kind-0 section");
    return false;
  }
  bson_init(&req->cmd);
  bson_concat(&req->cmd, &body_doc);
  for (int i = 0; i < nseqs; i++) {
    bson_t arr;
    bson_append_array_begin(&req->cmd, seqs[i].id, -1, &arr);
    size_t p = 0;
    uint32_t idx = 0;
    while (p < seqs[i].len) {
      bson_t d;
      size_t used;
      if (!read_doc(seqs[i].docs + p, seqs[i].len - p, &d, &used))
        break; /* cannot happen: validated above */
      char key[16];
      const char *k;
      bson_uint32_to_string(idx++, &k, key, sizeof key);
      bson_append_document(&arr, k, -1, &d);
      p += used;
    }
    bson_append_array_end(&req->cmd, &arr);
  }
  bson_iter_t it;
  if (!bson_iter_init_find(&it, &req->cmd, "$db") || !BSON_ITER_HOLDS_UTF8(&it)) {
    bson_destroy(&req->cmd);
    snprintf(why, why_len, "OP_MSG command without $db");
    return false;
  }
  return true;
}

bool ms_wire_parse(const uint8_t *buf, uint32_t len, ms_request_t *req, char *why, size_t why_len)
{
  memset(req, 0, sizeof *req);
  req->request_id = rd_i32(buf + 4);
  req->opcode = rd_i32(buf + 12);
  const uint8_t *body = buf + 16;
  size_t blen = len - 16;
  switch (req->opcode) {
  case MS_OP_QUERY:
    return parse_query(body, blen, req, why, why_len);
  case MS_OP_MSG:
    return parse_msg(body, blen, req, why, why_len);
  default:
    snprintf(why, why_len, "unsupported opcode %d", req->opcode);
    return false;
  }
}

void ms_request_destroy(ms_request_t *req)
{
  bson_destroy(&req->cmd);
}

static int32_t next_reply_id = 1;

bool ms_wire_reply(int fd, const ms_request_t *req, const bson_t *doc)
{
  size_t hdr = 16 + (req->opcode == MS_OP_QUERY ? 20 : 5);
  size_t total = hdr + doc->len;
  if (total > MS_MAX_MESSAGE_SIZE) {
    return false;
  }
  uint8_t *buf = malloc(total);
  if (!buf) {
    return false;
  }
  wr_i32(buf, (int32_t)total);
  wr_i32(buf + 4, __atomic_add_fetch(&next_reply_id, 1, __ATOMIC_RELAXED));
  wr_i32(buf + 8, req->request_id);
  if (req->opcode == MS_OP_QUERY) {
    wr_i32(buf + 12, MS_OP_REPLY);
    wr_i32(buf + 16, 0);    /* responseFlags */
    memset(buf + 20, 0, 8); /* cursorID */
    wr_i32(buf + 28, 0);    /* startingFrom */
    wr_i32(buf + 32, 1);    /* numberReturned */
  } else {
    wr_i32(buf + 12, MS_OP_MSG);
    wr_i32(buf + 16, 0); /* flagBits */
    buf[20] = 0;         /* kind 0 */
  }
  memcpy(buf + hdr, bson_get_data(doc), doc->len);
  bool ok = write_full(fd, buf, total);
  free(buf);
  return ok;
}
