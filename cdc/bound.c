/*
 * The staleness bound: which answers of the server let the fail-closed
 * bound move, and how far.
 *
 * The promise
 * -----------
 * With max_stale_ms = S the cache serves only while now <= fresh_until,
 * and fresh_until = V + S, where V ("vouched") is a time of the cache
 * clock such that every write committed before V has been evicted from
 * the cache, or the cache was flushed after it.  So a reader never gets a
 * value whose replacement was committed more than S ago: the cache
 * refuses service instead.  Everything below is about when V may move.
 *
 * What the server guarantees (MongoDB's getmore_cmd.cpp, the
 * change-streams specification)
 * -------------------------------------------------------------------
 *  - A change-stream getMore returns as soon as it has results, and stops
 *    at the batch size (if the client sent one: a getMore has no count
 *    limit otherwise), before 16 MiB, or at the end of the
 *    majority-committed oplog.  An empty reply therefore always means
 *    "nothing more was committed".
 *  - operationTime in a reply is the majority commit point the server
 *    read at.  Every write committed (majority) before the request was
 *    sent has a clusterTime <= that operationTime.
 *  - The first batch of an aggregate holds at most 101 events by default;
 *    whether it is empty says nothing about what is queued.
 *  - Events arrive in clusterTime order; the events of one transaction
 *    share one clusterTime.
 *
 * The rule
 * --------
 * Reply j of the stream was stamped s_j (cache clock) when its request
 * was sent, and all its events have been applied (evicted).
 *  (a) If j was a getMore that was not cut by a limit -- fewer events than
 *      the batch size, and its bytes plus the largest event the
 *      subscription's projection can produce stay under 16 MiB -- it
 *      vouches for s_j: the server had nothing more committed than what j
 *      carried.  With fullDocument every non-empty reply may be cut (a
 *      document can be 16 MiB).  Without it the largest event is taken to
 *      be CDCACHE__EVENT_MAX_BYTES (a documentKey beyond that is outside
 *      the rule).
 *  (b) If j may have been cut (or was an aggregate, which vouches for
 *      nothing by itself), it vouches for s_j once an event with a
 *      clusterTime STRICTLY greater than j's operationTime has been
 *      applied: events come in order, so every event at or below that
 *      operationTime -- which covers every write committed before s_j --
 *      was applied before it.  Strictly, because a transaction's events
 *      share one clusterTime, and a cut may fall inside it.  A cut reply
 *      without an operationTime never vouches.
 *  (c) A flush vouches for the moment it began (every entry is gone, and
 *      the cache epoch keeps fills that began earlier from being cached).
 * Where the evidence is missing, V does not move; V never moves back
 * except to 0 when the subscription gives up its stream.
 *
 * The rule needs a single ordered stream from one source of truth: the
 * subscription's client reads from the primary (read preference forced).
 * Through mongos the same holds for the merged stream, whose events are
 * held back until every shard's high-water mark passes them, so a
 * getMore's operationTime still bounds what it has not delivered.
 *
 * The functions here are pure (no clock, no I/O, no locks): the CDC thread
 * feeds them what the APM callbacks saw and what it applied, and publishes
 * the result with cdcache__set_fresh_until.  Unit-tested in
 * tests/cdc/test_cdc_unit.c.
 */
#include "cdc_internal.h"

#include <string.h>

void cdcache__bound_init(cdcache__bound_t *b, uint32_t batch_size, bool full_document)
{
  memset(b, 0, sizeof *b);
  b->batch_size = batch_size;
  b->full_document = full_document;
}

void cdcache__bound_reset(cdcache__bound_t *b)
{
  b->vouched_ms = 0;
  b->n_pending = 0;
  b->cur_left = 0;
  b->cur_active = false;
}

bool cdcache__bound_reply_cut(const cdcache__bound_t *b, const cdcache__reply_t *r)
{
  if (!r->is_getmore)
    return true; /* an aggregate vouches for nothing by itself */
  if (r->events == 0)
    return false; /* empty: the end of the committed oplog */
  if (b->full_document)
    return true;
  if (b->batch_size != 0 && r->events >= b->batch_size)
    return true;
  return r->bytes + CDCACHE__EVENT_MAX_BYTES >= CDCACHE__REPLY_MAX_BYTES;
}

static bool vouch(cdcache__bound_t *b, uint64_t stamp_ms)
{
  uint32_t k = 0;
  if (stamp_ms <= b->vouched_ms)
    return false;
  b->vouched_ms = stamp_ms;
  /* evidence for earlier stamps is now worthless */
  for (uint32_t i = 0; i < b->n_pending; i++)
    if (b->pending[i].stamp_ms > stamp_ms)
      b->pending[k++] = b->pending[i];
  b->n_pending = k;
  return true;
}

/* The current reply's events are all applied. */
static bool finish(cdcache__bound_t *b)
{
  b->cur_active = false;
  if (!b->cur_cut)
    return vouch(b, b->cur.stamp_ms);
  if (b->cur.op_time == 0 || b->cur.stamp_ms <= b->vouched_ms)
    return false;
  if (b->n_pending == CDCACHE__BOUND_PENDING) {
    /* Full: the newest entry takes the last slot.  Its stamp and
     * operationTime are both later, so the older evidence is only
     * weakened (it will vouch later than it could have): never unsound. */
    b->pending[b->n_pending - 1].stamp_ms = b->cur.stamp_ms;
    b->pending[b->n_pending - 1].op_time = b->cur.op_time;
    return false;
  }
  b->pending[b->n_pending].stamp_ms = b->cur.stamp_ms;
  b->pending[b->n_pending].op_time = b->cur.op_time;
  b->n_pending++;
  return false;
}

bool cdcache__bound_answered(cdcache__bound_t *b, const cdcache__reply_t *r)
{
  /* A reply whose events were not all applied (a stream dropped in the
   * middle of a batch) is forgotten: it proves nothing. */
  b->cur = *r;
  b->cur_cut = cdcache__bound_reply_cut(b, r);
  b->cur_left = r->events;
  b->cur_active = true;
  if (r->events == 0)
    return finish(b);
  return false;
}

bool cdcache__bound_applied(cdcache__bound_t *b, uint64_t cluster_time)
{
  bool moved = false;
  uint64_t best = 0;
  if (cluster_time != 0) {
    for (uint32_t i = 0; i < b->n_pending; i++)
      if (b->pending[i].op_time < cluster_time && b->pending[i].stamp_ms > best)
        best = b->pending[i].stamp_ms;
    if (best != 0)
      moved = vouch(b, best);
  }
  if (b->cur_active && b->cur_left > 0 && --b->cur_left == 0)
    moved = finish(b) || moved;
  return moved;
}

bool cdcache__bound_flushed(cdcache__bound_t *b, uint64_t flush_start_ms)
{
  b->cur_active = false;
  b->cur_left = 0;
  return vouch(b, flush_start_ms);
}
