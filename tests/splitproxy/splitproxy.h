/*
 * splitproxy: a TCP proxy for tests, placed between a MongoDB client
 * (libmongoc) and a wire-protocol server, that delivers the server's
 * replies in pieces - the way a reply of a few KB reaches a client over a
 * real network: several TCP segments, with gaps between them.
 *
 * Client-to-server bytes pass through unchanged.  Server-to-client bytes
 * are cut into messages by the 4-byte length at the start of each (the
 * wire protocol's message header); a message the rule selects is written
 * to the client in pieces, ending at chosen byte offsets (or random ones,
 * half the time inside the 16-byte header), with a pause between pieces.
 * At the last cut the rule can also close the connection or go silent
 * (hold the rest of the reply, and everything after it, until the client
 * gives up), as a peer that dies or a network that partitions mid-reply
 * does.
 *
 * Thread contract: sp_start and sp_stop from one thread (the test's);
 * sp_stats and sp_set_rule from any thread at any time in between.  Each
 * connection is served by two threads of the proxy's own.
 */
#ifndef SPLITPROXY_H
#define SPLITPROXY_H

#include <stddef.h>
#include <stdint.h>

#define SP_MAX_CUTS 8

typedef enum sp_after {
  SP_DELIVER = 0, /* deliver every piece */
  SP_CLOSE,       /* at the last cut, close both sides */
  SP_SILENT       /* at the last cut, forward nothing more (keep open) */
} sp_after_t;

typedef struct sp_rule {
  /* Which replies: those containing `match` (bytes, anywhere in the
   * message, e.g. "isWritablePrimary" for handshakes, "nextBatch" for
   * getMore replies; NULL: every reply), and of those the nth (1-based,
   * counted over all connections from when the rule was set; 0: all). */
  const char *match;
  unsigned nth;
  /* Where pieces end: byte offsets into the message, ascending; offsets
   * at or past the message's end are ignored.  With `random` set, cuts
   * are drawn instead: 1 to 3 of them, the first inside the header half
   * the time. */
  size_t cuts[SP_MAX_CUTS];
  unsigned ncuts;
  int random;
  /* withhold > 0: one more piece ends withhold bytes before the message's
   * end, so a reply can be cut just short of complete (where a reader's
   * arithmetic is most fragile); hold_ms is the pause before that tail. */
  size_t withhold;
  unsigned hold_ms;
  /* Pause between pieces, ms; with `random`, each pause is drawn from
   * 0..pause_ms. */
  unsigned pause_ms;
  /* What happens at the last cut: deliver the rest, close, go silent. */
  sp_after_t after;
  /* With SP_CLOSE: before closing, stop listening for this long, so that
   * an immediate reconnect is refused (ECONNREFUSED), as when the server
   * process died; then listen again on the same port. */
  unsigned refuse_ms;
} sp_rule_t;

typedef struct sp_stats {
  uint64_t connections; /* accepted */
  uint64_t replies;     /* messages from the server */
  uint64_t split;       /* replies delivered in pieces (or cut short) */
  uint64_t pieces;      /* pieces written for split replies */
  uint64_t closed;      /* connections closed mid-reply by SP_CLOSE */
  uint64_t silenced;    /* connections silenced mid-reply by SP_SILENT */
  uint64_t refusals;    /* times the proxy stopped listening (refuse_ms) */
  int pending;          /* split replies now between two pieces, or held */
} sp_stats_t;

typedef struct sp_proxy sp_proxy_t;

/* Listens on 127.0.0.1 (port 0: any free port) and forwards each
 * connection to 127.0.0.1:target_port.  rule may be NULL (pass-through);
 * it is copied (match too).  seed feeds the random cuts.  0 or -1. */
int sp_start(int listen_port, int target_port, const sp_rule_t *rule, uint64_t seed,
             sp_proxy_t **out);
int sp_port(const sp_proxy_t *p);
/* Replaces the rule (NULL: pass-through) and restarts the nth count. */
int sp_set_rule(sp_proxy_t *p, const sp_rule_t *rule);
void sp_stats(sp_proxy_t *p, sp_stats_t *out);
/* Closes every connection, joins every thread, frees everything. */
void sp_stop(sp_proxy_t *p);

#endif
