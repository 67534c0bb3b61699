/*
 * Shared declarations of the cdcache MongoDB wire-protocol test server: the
 * global server state, the document store, the oplog, change-stream cursors,
 * the $match/$project evaluator and the wire-protocol helpers.
 */
#ifndef CDCACHE_MONGO_SERVER_H
#define CDCACHE_MONGO_SERVER_H

#include <bson/bson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest message accepted or sent (48 MB, as maxMessageSizeBytes says). */
#define MS_MAX_MESSAGE_SIZE 48000000
/* Largest document or batch body a reply carries (16 MB). */
#define MS_MAX_BSON_SIZE 16777216
#define MS_MAX_WIRE_VERSION 17

/* ----------------------------------------------------------------------
 * Wire protocol (wire.c).
 * -------------------------------------------------------------------- */

enum { MS_OP_REPLY = 1, MS_OP_QUERY = 2004, MS_OP_MSG = 2013 };

/* One decoded request: a command document with "$db" merged in. */
typedef struct {
  int32_t request_id;
  int32_t opcode;
  bool more_to_come; /* OP_MSG moreToCome: the client expects no reply. */
  bson_t cmd;        /* Body plus kind-1 sequences merged in as arrays. */
} ms_request_t;

/* Reads one whole message; returns a malloc'ed buffer or NULL on error/EOF. */
uint8_t *ms_wire_read(int fd, uint32_t *len_out);
/* Decodes a message; returns false (with a reason) on malformed input. */
bool ms_wire_parse(const uint8_t *buf, uint32_t len, ms_request_t *req, char *why, size_t why_len);
void ms_request_destroy(ms_request_t *req);
/* Sends a reply in the protocol of the request (OP_REPLY for OP_QUERY). */
bool ms_wire_reply(int fd, const ms_request_t *req, const bson_t *doc);

/* ----------------------------------------------------------------------
 * $match / $project (match.c).
 * -------------------------------------------------------------------- */

/* Returns 1 on match, 0 on no match, -1 on an unsupported filter (err set). */
int ms_match(const bson_t *doc, const bson_t *filter, bson_error_t *err);
/* Checks a filter's syntax. */
bool ms_match_validate(const bson_t *filter, bson_error_t *err);
/* Checks a $project spec; only 0/1/true/false values are supported. */
bool ms_project_validate(const bson_t *spec, bson_error_t *err);
/* Applies a $project spec; _id is always kept. dst must be initialised. */
void ms_project(const bson_t *src, const bson_t *spec, bson_t *dst);
/* Equality of two values as MongoDB compares them (numbers across types). */
bool ms_value_equal(const bson_value_t *a, const bson_value_t *b);
/* Finds a dotted path (no array expansion); returns false if absent. */
bool ms_lookup_path(const bson_t *doc, const char *path, bson_iter_t *out);

/* ----------------------------------------------------------------------
 * Store and oplog (store.c).
 * -------------------------------------------------------------------- */

typedef enum {
  MS_EV_INSERT,
  MS_EV_UPDATE,
  MS_EV_REPLACE,
  MS_EV_DELETE,
  MS_EV_DROP,
  MS_EV_RENAME,
  MS_EV_DROPDATABASE,
  MS_EV_INVALIDATE
} ms_event_type_t;

typedef struct ms_doc {
  struct ms_doc *next;
  uint8_t *key; /* Normalised encoding of the _id value. */
  uint32_t keylen;
  uint32_t hash;
  bson_t *doc;
} ms_doc_t;

typedef struct ms_coll {
  struct ms_coll *next;
  char *db;
  char *name;
  ms_doc_t **buckets;
  size_t nbuckets;
  size_t count;
} ms_coll_t;

typedef struct {
  uint64_t seq;
  uint32_t ts; /* Seconds of the clusterTime. */
  ms_event_type_t type;
  char *db;
  char *coll; /* NULL for dropDatabase. */
  char *to_db;
  char *to_coll;
  bson_t *event; /* The complete change event. */
} ms_oplog_entry_t;

/* Store API; every function expects the global lock to be held. */
ms_coll_t *ms_coll_get(const char *db, const char *name, bool create);
bson_t *ms_coll_find_id(ms_coll_t *c, const bson_value_t *id);
/* Inserts or replaces by _id; takes ownership of doc. */
void ms_coll_put(ms_coll_t *c, bson_t *doc);
bool ms_coll_remove_id(ms_coll_t *c, const bson_value_t *id);
void ms_coll_drop(ms_coll_t *c);
void ms_store_free_all(void);

/* Appends an event to the oplog and wakes waiting getMores. */
uint64_t ms_oplog_append(ms_event_type_t type, const char *db, const char *coll,
                         const bson_value_t *id, const bson_t *full_doc, const bson_t *update_desc,
                         const char *to_db, const char *to_coll);
ms_oplog_entry_t *ms_oplog_get(uint64_t seq);
void ms_oplog_truncate(void);
void ms_oplog_free_all(void);
/* Builds a resume token document {_data: "..."} at *dst (initialised). */
void ms_token_append(bson_t *dst, const char *key, uint64_t seq, bool from_invalidate);
/* Parses a token; returns false if malformed. *epoch_ok false: another server. */
bool ms_token_parse(const bson_t *tok, uint64_t *seq, bool *from_invalidate, bool *epoch_ok);
const char *ms_event_type_name(ms_event_type_t t);

/* ----------------------------------------------------------------------
 * Change streams (changestream.c).
 * -------------------------------------------------------------------- */

struct ms_conn;
void ms_cmd_aggregate(struct ms_conn *conn, const bson_t *cmd, const char *db, bson_t *reply);
void ms_cmd_get_more(struct ms_conn *conn, const bson_t *cmd, const char *db, bson_t *reply);
void ms_cmd_kill_cursors(const bson_t *cmd, const char *db, bson_t *reply);
/* What the connection thread's last command answered: a cursor reply, and
 * whether a limit cut it (set by changestream.c, read by server.c). */
extern _Thread_local bool ms_reply_was_cursor;
extern _Thread_local bool ms_reply_was_cut;
void ms_cursors_invalidate_all(void);
void ms_cursors_free_all(void);
size_t ms_cursors_count(void);

/* ----------------------------------------------------------------------
 * Commands (commands.c).
 * -------------------------------------------------------------------- */

typedef enum { MS_REPLY, MS_NO_REPLY, MS_CLOSE } ms_action_t;
/* Runs one command; fills reply (initialised) and says what to do next. */
ms_action_t ms_handle_command(struct ms_conn *conn, const ms_request_t *req, bson_t *reply);
void ms_reply_error(bson_t *reply, int32_t code, const char *fmt, ...) BSON_GNUC_PRINTF(3, 4);
const char *ms_code_name(int32_t code);

/* ----------------------------------------------------------------------
 * Server state (server.c).
 * -------------------------------------------------------------------- */

typedef struct ms_conn {
  struct ms_conn *next;
  pthread_t thread;
  int fd; /* -1 once closed; guarded by conn_mu. */
  int64_t id;
  volatile bool done;
  bool close_after_reply;
  /* Set once the connection sent aggregate, getMore or killCursors: the
   * partition fault starves it.  Its own thread only. */
  bool change_stream;
} ms_conn_t;

#define MS_MAX_FAIL_RULES 16

typedef struct {
  bool active;
  char commands[8][32];
  int ncommands;
  int64_t times; /* -1: always. */
  int32_t code;
  char errmsg[256];
  bson_t *labels; /* Array document or NULL. */
  bool close_connection;
  int64_t block_ms;
} ms_fail_rule_t;

typedef struct {
  /* Configuration. */
  char host[64];
  int port;
  size_t oplog_cap;
  bool quiet;
  char set_name[64];
  size_t hello_pad; /* --hello-pad: bytes of padding in every hello reply */
  uint32_t epoch;

  /* Everything below is guarded by mu, except the connection list. */
  pthread_mutex_t mu;
  pthread_cond_t cond; /* Broadcast on new events, faults and shutdown. */
  bool shutting_down;

  ms_coll_t *colls;

  ms_oplog_entry_t *oplog;
  size_t oplog_head;  /* Index of the oldest entry. */
  size_t oplog_count; /* Entries held. */
  uint64_t last_seq;  /* Last sequence number assigned (0: none). */
  uint64_t last_dropped_seq;
  uint32_t last_dropped_ts;
  uint32_t last_ts;

  void *cursors; /* ms_cursor_t list, owned by changestream.c. */

  ms_fail_rule_t rules[MS_MAX_FAIL_RULES];
  /* Counts every "off" (rules cleared): a command waiting out a rule's
   * blockTimeMS stops waiting when it moves. */
  uint64_t rules_epoch;
  int64_t blocked_now;    /* commands now waiting out a rule's blockTimeMS */
  int64_t stall_until_us; /* Monotonic microseconds; 0: no stall. */
  /* partition: change-stream connections get no answer until then. */
  int64_t partition_until_us;
  /* After a partition with replyDelayMs: each cut change-stream reply
   * waits this long (a slow catch-up), until "off" or the next partition. */
  int64_t catchup_delay_ms;
  /* election: hello says secondary, commands fail with 10107 / 11602. */
  int64_t election_until_us;
  /* majorityStall: the majority commit point frozen at (majority_seq,
   * majority_ts) while writes go on (acknowledged as with w:1): change
   * streams deliver nothing past it and operationTime stays there, while
   * $clusterTime advances.  Cleared by "off". */
  bool majority_stalled;
  uint64_t majority_seq;
  uint32_t majority_ts;
  uint64_t stat_majority_stalls; /* majorityStall faults begun */

  uint64_t stat_events;
  uint64_t stat_commands;
  uint64_t stat_conns_total;
  uint64_t stat_getmore_waits;
  /* Evidence that a fault happened (cdcacheStats). */
  uint64_t stat_replies_cut;     /* cursor replies stopped by batchSize or 16 MiB, more left */
  uint64_t stat_errors_sent;     /* error replies of faults (rules, election, poison) */
  uint64_t stat_stall_ms;        /* stall time asked for, in total */
  uint64_t stat_partition_ms;    /* partition time asked for, in total */
  uint64_t stat_partition_held;  /* requests and replies held by a partition */
  uint64_t stat_conns_dropped;   /* connections closed by a fault */
  uint64_t stat_election_hellos; /* hello answered "secondary" */
  uint64_t stat_catchup_delayed; /* cut replies delayed by replyDelayMs */

  pthread_mutex_t conn_mu;
  ms_conn_t *conns;
  size_t conns_open;
} ms_server_t;

extern ms_server_t g_ms;

/* The newest event a change stream may see, and its time: the majority
 * commit point (the last event, but during a majorityStall).  g_ms.mu. */
uint64_t ms_visible_seq(void);
uint32_t ms_visible_ts(void);

int64_t ms_now_mono_us(void);
/* Waits on g_ms.cond until the monotonic deadline; mu must be held. */
void ms_cond_wait_until(int64_t deadline_us);
/* Shuts down every connection's socket; self gets closed after its reply. */
void ms_drop_all_connections(ms_conn_t *self);
/* Holds a change-stream connection while a partition lasts; false if the
 * server is stopping. */
bool ms_wait_out_partition(ms_conn_t *c);
void ms_log(const char *fmt, ...) BSON_GNUC_PRINTF(1, 2);

#endif
