/*
 * exact-lru: the textbook LRU cache, for one thread.  A chained hash map
 * (power-of-two bucket array sized to the capacity, key and value stored
 * inline in the node; the caller hashes, with bench_hash.h's keyed XXH3) plus a doubly linked list
 * in recency order: a hit moves its node to the head, an insert into a full cache evicts the tail.
 * This is the exact-LRU reference for trace replays and the data structure mutex_lru.c puts behind
 * one mutex.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include "bench_hash.h"

typedef struct lru_node {
  struct lru_node *hnext;       /* bucket chain */
  struct lru_node *prev, *next; /* recency list; head = most recent */
  uint64_t hash;
  uint32_t klen, vlen;
  unsigned char data[]; /* key then value */
} lru_node_t;

struct exact_lru {
  lru_node_t **buckets;
  uint64_t mask;
  uint64_t capacity, count;
  lru_node_t head; /* sentinel: head.next is the most recent */
  memcount_t *mc;
};

exact_lru_t *exact_lru_new(uint64_t capacity, memcount_t *mc)
{
  exact_lru_t *l = memcount_calloc(mc, 1, sizeof *l);
  if (!l)
    return NULL;
  uint64_t nb = 1;
  while (nb < capacity)
    nb <<= 1;
  l->buckets = memcount_calloc(mc, nb, sizeof(lru_node_t *));
  if (!l->buckets) {
    memcount_free(mc, l);
    return NULL;
  }
  l->mask = nb - 1;
  l->capacity = capacity;
  l->head.next = l->head.prev = &l->head;
  l->mc = mc;
  return l;
}

void exact_lru_delete(exact_lru_t *l)
{
  if (!l)
    return;
  memcount_t *mc = l->mc;
  for (lru_node_t *n = l->head.next, *nx; n != &l->head; n = nx) {
    nx = n->next;
    memcount_free(mc, n);
  }
  memcount_free(mc, l->buckets);
  memcount_free(mc, l);
}

static inline void list_unlink(lru_node_t *n)
{
  n->prev->next = n->next;
  n->next->prev = n->prev;
}

static inline void list_push_front(exact_lru_t *l, lru_node_t *n)
{
  n->prev = &l->head;
  n->next = l->head.next;
  l->head.next->prev = n;
  l->head.next = n;
}

static lru_node_t **find_slot(exact_lru_t *l, uint64_t h, const void *key, size_t klen)
{
  lru_node_t **pp = &l->buckets[h & l->mask];
  for (; *pp; pp = &(*pp)->hnext) {
    lru_node_t *n = *pp;
    if (n->hash == h && n->klen == klen && memcmp(n->data, key, klen) == 0)
      break;
  }
  return pp;
}

int exact_lru_get(exact_lru_t *l, uint64_t h, const void *key, size_t klen, void *buf, size_t cap)
{
  lru_node_t *n = *find_slot(l, h, key, klen);
  if (!n)
    return 0;
  if (l->head.next != n) {
    list_unlink(n);
    list_push_front(l, n);
  }
  memcpy(buf, n->data + n->klen, n->vlen < cap ? n->vlen : cap);
  return 1;
}

static void remove_node(exact_lru_t *l, lru_node_t *n)
{
  lru_node_t **pp = find_slot(l, n->hash, n->data, n->klen);
  *pp = n->hnext;
  list_unlink(n);
  l->count--;
  memcount_free(l->mc, n);
}

void exact_lru_put(exact_lru_t *l, uint64_t h, const void *key, size_t klen, const void *val,
                   size_t vlen)
{
  lru_node_t **pp = find_slot(l, h, key, klen);
  lru_node_t *n = *pp;
  if (n && n->vlen == vlen) { /* replace in place */
    memcpy(n->data + klen, val, vlen);
    if (l->head.next != n) {
      list_unlink(n);
      list_push_front(l, n);
    }
    return;
  }
  if (n)
    remove_node(l, n);
  else if (l->count >= l->capacity)
    remove_node(l, l->head.prev); /* evict the least recently used */
  n = memcount_malloc(l->mc, sizeof *n + klen + vlen);
  if (!n)
    return;
  n->hash = h;
  n->klen = (uint32_t)klen;
  n->vlen = (uint32_t)vlen;
  memcpy(n->data, key, klen);
  memcpy(n->data + klen, val, vlen);
  lru_node_t **b = &l->buckets[h & l->mask];
  n->hnext = *b;
  *b = n;
  list_push_front(l, n);
  l->count++;
}

uint64_t exact_lru_count(const exact_lru_t *l)
{
  return l->count;
}

/* ------------------------------------------------------------ the impl */

typedef struct {
  memcount_t mc;
  exact_lru_t *l;
  unsigned char secret[BENCH_SECRET_SIZE];
} exact_impl_t;

static int ex_open(const impl_cfg_t *cfg, void **out)
{
  exact_impl_t *e = bench_alloc64(sizeof *e);
  if (!e)
    return -1;
  memcount_init(&e->mc);
  e->l = exact_lru_new(cfg->capacity, &e->mc);
  if (!e->l || bench_secret_init(e->secret) != 0) {
    exact_lru_delete(e->l);
    free(e);
    return -1;
  }
  *out = e;
  return 0;
}

static void ex_close(void *h)
{
  exact_impl_t *e = h;
  exact_lru_delete(e->l);
  free(e);
}

static int ex_get(void *h, const void *key, size_t klen, void *buf, size_t cap)
{
  exact_impl_t *e = h;
  return exact_lru_get(e->l, bench_hash(e->secret, key, klen), key, klen, buf, cap);
}

static void ex_put(void *h, const void *key, size_t klen, const void *val, size_t vlen)
{
  exact_impl_t *e = h;
  exact_lru_put(e->l, bench_hash(e->secret, key, klen), key, klen, val, vlen);
}

static void ex_settle(void *h)
{
  (void)h;
}
static uint64_t ex_entries(void *h)
{
  return exact_lru_count(((exact_impl_t *)h)->l);
}
static int64_t ex_mem(void *h)
{
  return memcount_bytes(&((exact_impl_t *)h)->mc);
}
static int64_t ex_self(void *h)
{
  (void)h;
  return -1;
}

const bench_impl_t impl_exact_lru = {
    .name = "exact-lru",
    .single_thread = true,
    .open = ex_open,
    .close = ex_close,
    .get = ex_get,
    .put = ex_put,
    .settle = ex_settle,
    .entries = ex_entries,
    .mem_bytes = ex_mem,
    .self_bytes = ex_self,
};
