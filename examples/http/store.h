/*
 * store.h: the example service's MongoDB side (store.c): a libmongoc
 * client pool, reads by _id, replace-with-upsert and delete with
 * w: majority, and the mapping between a URL id and a typed _id.
 */
#ifndef CDCACHE_HTTP_STORE_H
#define CDCACHE_HTTP_STORE_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct store store_t;

/* Results of the store calls. */
#define STORE_OK 0
#define STORE_NOTFOUND 1   /* no document with that _id */
#define STORE_EBADDOC (-1) /* the server refused the document (a client error) */
#define STORE_EDB (-2)     /* the database did not answer, or failed */
#define STORE_ENOMEM (-3)

/*
 * Opens a client pool of at most pool_size clients on uri.  Timeouts the
 * URI does not set are given short defaults (connect and server selection
 * 2 s, socket 3 s), so that a request never waits for minutes on a dead
 * database.  Returns 0, or -1 with a message in err.  Not thread-safe
 * (called once, before the server starts).
 */
int store_open(const char *uri, const char *db, const char *coll, unsigned pool_size, store_t **out,
               char *err, size_t errcap);

/* Destroys the pool.  No other store call may run at the same time. */
void store_close(store_t *st);

/*
 * Appends the typed _id that URL id (len bytes, already validated UTF-8)
 * names to doc under "_id": a canonical decimal integer ("0", "-12", as
 * cdcache_id_render writes an int64) becomes an int64, anything else a
 * string.  Both render back to exactly these bytes, so the cache key of a
 * document (the CDC rule's "{_id}") is its URL id.  Thread-safe.
 */
void store_append_id(bson_t *doc, const char *id, size_t len);

/*
 * Builds the document to store from a PUT body: the body must be exactly
 * one JSON object (relaxed or canonical extended JSON); no top-level field
 * may start with '$'; no object, at any depth, may repeat a field name;
 * an "_id" field, if present, must be the _id the URL names, of the same
 * BSON type (an int32 counts as the int64 of the same value).  On success
 * *out is initialised (the caller destroys it) and holds _id first, then
 * the body's other fields.  Returns 0; -1 with the reason in err (a bad
 * body); STORE_ENOMEM.  Thread-safe.
 */
int store_doc_from_json(const char *id, size_t idlen, const char *json, size_t jlen, bson_t *out,
                        char *err, size_t errcap);

/*
 * Reads the document with that _id from the primary (read concern
 * majority).  STORE_OK: *json is its relaxed extended JSON (bson_malloc'd,
 * the caller bson_free's it), *jlen its length; STORE_NOTFOUND; STORE_EDB.
 * Thread-safe (takes a client from the pool for the call).
 */
int store_read(store_t *st, const char *id, size_t idlen, char **json, size_t *jlen, char *err,
               size_t errcap);

/* Replaces (or inserts: upsert) the document, w: majority.  *created tells
 * which.  STORE_OK, STORE_EBADDOC, STORE_EDB.  Thread-safe. */
int store_replace(store_t *st, const char *id, size_t idlen, const bson_t *doc, bool *created,
                  char *err, size_t errcap);

/* Deletes the document, w: majority.  STORE_OK or STORE_NOTFOUND,
 * STORE_EDB.  Thread-safe. */
int store_delete(store_t *st, const char *id, size_t idlen, char *err, size_t errcap);

#endif
