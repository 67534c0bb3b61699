/*
 * lfht-ref: the practical limit of an RCU-protected lookup on this machine.
 * A liburcu cds_lfht (urcu-bp flavour, as cdcache) pre-sized to one bucket
 * per entry with auto-resize off, so it never resizes; the keyed XXH3 of
 * bench_hash.h (its own secret); the key
 * is stored inline in the node and compared in the match callback.
 *
 * A get is read_lock + cds_lfht_lookup + read_unlock and reports the hit:
 * no value copy, no recency update, no statistics.  A put inserts the key
 * (cds_lfht_add_unique) while the table holds fewer than capacity entries
 * and is otherwise dropped; a put of a present key changes nothing.  So
 * there is no eviction and nothing is ever freed while the table is in use:
 * it is a reference for lookup speed, not a cache.
 */
/* Inline read-side lock/unlock, the fastest form, as cdcache's release
 * builds use; sanitizer builds call the out-of-line ones, as cdcache does
 * (liburcu-bp 0.13's reader slots miss their declared alignment, which
 * UBSan reports in inlined code). */
#ifndef CDCACHE_SANITIZED
#define _LGPL_SOURCE
#endif
#include "bench.h"
#include "bench_hash.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>
#include <urcu/rculfhash.h>

typedef struct lnode {
  struct cds_lfht_node node;
  uint32_t klen, vlen;
  unsigned char data[]; /* key then value */
} lnode_t;

typedef struct {
  memcount_t mc;
  struct cds_lfht *ht;
  uint64_t capacity;
  _Atomic uint64_t count;
  int64_t bucket_bytes;
  unsigned char secret[BENCH_SECRET_SIZE]; /* read-only after open */
} lfht_ref_t;

typedef struct {
  const void *key;
  size_t klen;
} lkey_t;

static int lmatch(struct cds_lfht_node *node, const void *arg)
{
  const lnode_t *n = caa_container_of(node, lnode_t, node);
  const lkey_t *k = arg;
  return n->klen == k->klen && memcmp(n->data, k->key, k->klen) == 0;
}

static int lf_open(const impl_cfg_t *cfg, void **out)
{
  lfht_ref_t *r = bench_alloc64(sizeof *r);
  if (!r)
    return -1;
  memcount_init(&r->mc);
  if (bench_secret_init(r->secret) != 0) {
    free(r);
    return -1;
  }
  unsigned long nb = 1;
  while (nb < cfg->capacity)
    nb <<= 1;
  /* The bucket array is allocated inside liburcu: charge what malloc
   * handed out for it, or its nominal size if it came from mmap. */
  struct mallinfo2 before = mallinfo2();
  r->ht = cds_lfht_new_flavor(nb, nb, nb, 0, &urcu_bp_flavor, NULL);
  struct mallinfo2 after = mallinfo2();
  if (!r->ht) {
    free(r);
    return -1;
  }
  int64_t delta =
      (int64_t)(after.uordblks + after.hblkhd) - (int64_t)(before.uordblks + before.hblkhd);
  int64_t nominal = (int64_t)(nb * sizeof(struct cds_lfht_node));
  r->bucket_bytes = delta > nominal ? delta : nominal;
  r->capacity = cfg->capacity;
  atomic_init(&r->count, 0);
  *out = r;
  return 0;
}

static void lf_close(void *h)
{
  lfht_ref_t *r = h;
  struct cds_lfht_iter it;
  lnode_t *n;
  uint64_t cnt = atomic_load_explicit(&r->count, memory_order_relaxed), k = 0;
  lnode_t **all = malloc((cnt + 1) * sizeof(lnode_t *));
  urcu_bp_read_lock();
  cds_lfht_for_each_entry(r->ht, &it, n, node)
  {
    /* cppcheck cannot see through cds_lfht_for_each_entry's assignment. */
    if (cds_lfht_del(r->ht, &n->node) == 0 && all && k < cnt)
      all[k++] = n; // cppcheck-suppress uninitvar
  }
  urcu_bp_read_unlock();
  urcu_bp_synchronize_rcu(); /* no reader can still hold an unlinked node */
  for (uint64_t i = 0; i < k; i++)
    memcount_free(&r->mc, all[i]);
  free(all);
  cds_lfht_destroy(r->ht, NULL);
  free(r);
}

static int lf_get(void *h, const void *key, size_t klen, void *buf, size_t cap)
{
  (void)buf;
  (void)cap;
  lfht_ref_t *r = h;
  lkey_t k = {key, klen};
  struct cds_lfht_iter it;
  urcu_bp_read_lock();
  cds_lfht_lookup(r->ht, bench_hash(r->secret, key, klen), lmatch, &k, &it);
  int hit = cds_lfht_iter_get_node(&it) != NULL;
  urcu_bp_read_unlock();
  return hit;
}

static void lf_put(void *h, const void *key, size_t klen, const void *val, size_t vlen)
{
  lfht_ref_t *r = h;
  if (atomic_load_explicit(&r->count, memory_order_relaxed) >= r->capacity)
    return; /* full: no eviction */
  uint64_t hash = bench_hash(r->secret, key, klen);
  lkey_t k = {key, klen};
  struct cds_lfht_iter it;
  urcu_bp_read_lock();
  cds_lfht_lookup(r->ht, hash, lmatch, &k, &it);
  int present = cds_lfht_iter_get_node(&it) != NULL;
  urcu_bp_read_unlock();
  if (present)
    return;
  if (atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed) >= r->capacity) {
    atomic_fetch_sub_explicit(&r->count, 1, memory_order_relaxed);
    return;
  }
  lnode_t *n = memcount_malloc(&r->mc, sizeof *n + klen + vlen);
  if (!n) {
    atomic_fetch_sub_explicit(&r->count, 1, memory_order_relaxed);
    return;
  }
  cds_lfht_node_init(&n->node);
  n->klen = (uint32_t)klen;
  n->vlen = (uint32_t)vlen;
  memcpy(n->data, key, klen);
  memcpy(n->data + klen, val, vlen);
  urcu_bp_read_lock();
  struct cds_lfht_node *got = cds_lfht_add_unique(r->ht, hash, lmatch, &k, &n->node);
  urcu_bp_read_unlock();
  if (got != &n->node) { /* lost a race: ours was never published */
    memcount_free(&r->mc, n);
    atomic_fetch_sub_explicit(&r->count, 1, memory_order_relaxed);
  }
}

static void lf_settle(void *h)
{
  (void)h;
}
static uint64_t lf_entries(void *h)
{
  return atomic_load_explicit(&((lfht_ref_t *)h)->count, memory_order_relaxed);
}
static int64_t lf_mem(void *h)
{
  lfht_ref_t *r = h;
  return memcount_bytes(&r->mc) + r->bucket_bytes;
}
static int64_t lf_self(void *h)
{
  (void)h;
  return -1;
}

const bench_impl_t impl_lfht_ref = {
    .name = "lfht-ref",
    .open = lf_open,
    .close = lf_close,
    .get = lf_get,
    .put = lf_put,
    .settle = lf_settle,
    .entries = lf_entries,
    .mem_bytes = lf_mem,
    .self_bytes = lf_self,
};
