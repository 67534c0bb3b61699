/*
 * cdcache-policy-sim: eviction policies prototyped on the shared traces
 * (issue 13), single-threaded, before one of them goes into the shards.
 *
 * Every policy runs the way cdcache would run it: the key is the trace id
 * as 8 little-endian bytes, hashed with XXH3-64 like the library does; the
 * top bits pick one of the default number of shards (cdcache's own rule:
 * the smallest power of two >= 4 x online CPUs, halved until each shard
 * holds at least CDCACHE_MIN_SHARD_ENTRIES), and each shard runs its own
 * instance of the policy over its share of the capacity.  A request is a
 * get and, on a miss, a put (cache-aside, every request counted, as the
 * trace workload of cdcache-bench and the traces' README count them).
 *
 * The policies (one struct, one access function each):
 *
 *   lru      exact LRU per shard (with one shard it is the README's
 *            exact-LRU column).
 *   clock    cdcache's allkeys-lru: a FIFO with a reference bit per
 *            entry, set on a hit, given a second chance by the hand.
 *   s3fifo   S3-FIFO (Yang et al., SOSP 2023): a small FIFO (S, a
 *            fraction of the capacity) takes new keys; a ghost FIFO (G)
 *            remembers the hashes of keys S evicted.  A hit raises the
 *            entry's 2-bit saturating frequency.  S evicts its oldest:
 *            accessed (freq >= 1) -> moved to the main FIFO (M), else
 *            dropped and its hash put on G.  A miss whose hash is on G
 *            goes straight into M.  M is a CLOCK with a 2-bit counter: its
 *            oldest with freq > 0 is reinserted with freq - 1, otherwise
 *            evicted.  One-hit wonders never reach M, so a scan cannot
 *            push out the hot set.
 *   s3fifo-adapt  S3-FIFO whose small-queue target moves like ARC's: a hit
 *            on G (a key S dropped too early) grows S by one entry, a
 *            hit on a second ghost of M's victims (GM) shrinks it.  Where
 *            recency wins (trace-sprite) S grows towards LRU; where
 *            frequency wins it shrinks towards plain S3-FIFO.
 *   wtinylfu  W-TinyLFU as Caffeine 2.6.2: window LRU (1%), SLRU main
 *            (probation 20% / protected 80%), 4-bit count-min sketch with
 *            4 rows, halved every 10 x capacity samples; the window's
 *            victim enters main only if the sketch counts it more often
 *            than main's victim.  Every access (hit or miss) increments
 *            the sketch.
 *   wtinylfu-hc  the same with Caffeine 2.7's hill climber sizing the
 *            window.
 *   s3lfu-exact  S3-FIFO (S = 15%, ghost = 2 x capacity) plus a TinyLFU duel
 *            at the ghost's door: a key whose hash is on the ghost enters
 *            M only if a count-min sketch counts it more often than the
 *            entry M's hand would evict; otherwise it starts over in S.
 *            The sketch is written by the writer alone: every miss
 *            increments it, and so does M's hand each time it finds an
 *            entry's frequency above 0 (a hit it observed), so hits write
 *            nothing but the entry's own 2-bit counter.  The sketch is
 *            halved every 20 x capacity counts (it sees misses and the
 *            hits the hand observes, about half of Caffeine's events, so
 *            twice Caffeine's 10 x spans a similar stretch of requests).
 *            This one has an exact ghost and a Caffeine-sized sketch.
 *   allkeys-s3fifo  the same in the shape cdcache builds (shards/s3fifo.c):
 *            a sketch of capacity/4 words, at least 64, a key's four
 *            counters in one 8-word block (2-4 bytes per
 *            entry; below 64 words a tiny cache's counters all saturate
 *            and the duel turns every ghost hit away), and the ghost as
 *            two rotating Bloom filters of 8 bits per ghost key (2-4
 *            bytes per entry).
 *   s3fifo-hc  s3lfu with S sized by that hill climber (1%..50%).
 *
 * Options: --conf NAME=kind,small,thresh,ghost,fmax[,min,max,mghost,gfreq,
 * sduel,sketchdiv,bloombits] adds a variant (kind is the pkind_t number),
 * --only a,b runs some, --shards N fixes the shard count.
 *
 * This program is a model, not the cache: no values, no concurrency, no
 * TTL.  It answers which policy to build; shards/ holds the one built.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define NIL 0u
#define MIN_SHARD_ENTRIES 1024u /* CDCACHE_MIN_SHARD_ENTRIES */

/* ------------------------------------------------------- nodes, lists */

enum { Q_FREE, Q_A, Q_B, Q_C, Q_GHOST, Q_GHOST2, Q_N };

typedef struct node {
  uint64_t key;
  uint32_t hnext, prev, next;
  uint8_t q;
  uint8_t freq;
} node_t;

typedef struct qlist {
  uint32_t head, tail; /* head: oldest (evicted first); tail: newest */
  uint64_t len;
} qlist_t;

typedef struct sim {
  node_t *n;
  uint32_t nnodes, free_head;
  uint32_t *bkt;
  uint64_t bmask;
  qlist_t q[Q_N];
} sim_t;

static int sim_init(sim_t *s, uint64_t max_nodes)
{
  memset(s, 0, sizeof *s);
  s->nnodes = (uint32_t)max_nodes + 2;
  s->n = calloc(s->nnodes, sizeof *s->n);
  uint64_t nb = 16;
  while (nb < max_nodes)
    nb <<= 1;
  s->bkt = calloc(nb, sizeof *s->bkt);
  if (!s->n || !s->bkt)
    return -1;
  s->bmask = nb - 1;
  for (uint32_t i = s->nnodes - 1; i >= 1; i--) {
    s->n[i].hnext = s->free_head;
    s->free_head = i;
  }
  return 0;
}

static void sim_free(sim_t *s)
{
  free(s->n);
  free(s->bkt);
}

static inline uint64_t mix(uint64_t k)
{
  return k * 0x9e3779b97f4a7c15ULL;
}

static inline uint32_t sim_find(const sim_t *s, uint64_t key)
{
  uint32_t i = s->bkt[(mix(key) >> 20) & s->bmask];
  while (i != NIL && s->n[i].key != key)
    i = s->n[i].hnext;
  return i;
}

static void q_remove(sim_t *s, uint32_t i)
{
  node_t *x = &s->n[i];
  qlist_t *l = &s->q[x->q];
  if (x->prev)
    s->n[x->prev].next = x->next;
  else
    l->head = x->next;
  if (x->next)
    s->n[x->next].prev = x->prev;
  else
    l->tail = x->prev;
  l->len--;
}

static void q_append(sim_t *s, uint32_t i, uint8_t q)
{
  node_t *x = &s->n[i];
  qlist_t *l = &s->q[q];
  x->q = q;
  x->next = NIL;
  x->prev = l->tail;
  if (l->tail)
    s->n[l->tail].next = i;
  else
    l->head = i;
  l->tail = i;
  l->len++;
}

static void q_move(sim_t *s, uint32_t i, uint8_t q)
{
  q_remove(s, i);
  q_append(s, i, q);
}

static uint32_t node_new(sim_t *s, uint64_t key, uint8_t q)
{
  uint32_t i = s->free_head;
  if (i == NIL) {
    fprintf(stderr, "policy-sim: node pool exhausted\n");
    exit(2);
  }
  s->free_head = s->n[i].hnext;
  node_t *x = &s->n[i];
  x->key = key;
  x->freq = 0;
  uint32_t *b = &s->bkt[(mix(key) >> 20) & s->bmask];
  x->hnext = *b;
  *b = i;
  q_append(s, i, q);
  return i;
}

static void node_del(sim_t *s, uint32_t i)
{
  q_remove(s, i);
  uint32_t *pp = &s->bkt[(mix(s->n[i].key) >> 20) & s->bmask];
  while (*pp != i)
    pp = &s->n[*pp].hnext;
  *pp = s->n[i].hnext;
  s->n[i].q = Q_FREE;
  s->n[i].hnext = s->free_head;
  s->free_head = i;
}

/* ------------------------------------------------------------ policies */

typedef enum {
  P_LRU,
  P_CLOCK,
  P_S3FIFO,
  P_S3FIFO_ADAPT,
  P_WTINYLFU,
  P_WTINYLFU_HC,
  P_S3LFU,
} pkind_t;

typedef struct pconf { // NOLINT(clang-analyzer-optin.performance.Padding): readability of the table
  const char *name;
  pkind_t kind;
  double small;     /* s3fifo: S's (initial) share; wtinylfu: window share */
  int move_thresh;  /* s3fifo: freq an S entry needs to move to M */
  double ghost;     /* ghost entries as a share of the capacity */
  int freq_max;     /* saturating counter's maximum (3 = 2 bits) */
  double small_min; /* adapt: bounds of S's share */
  double small_max;
  int main_ghost;    /* s3fifo: M's victims go on the ghost too */
  int ghost_freq;    /* s3fifo: frequency a key entering M from G starts with */
  int s_duel;        /* s3lfu: S's unaccessed victim duels M's victim for a place in M */
  int sketch_div;    /* sketch words = pow2 >= capacity / sketch_div (0: 1) */
  int bloom_bits;    /* ghost as two rotating Bloom filters, bits per ghost entry (0: exact) */
  int reset;         /* s3lfu: sketch halves every reset x capacity counts (0: 10) */
  int count_promote; /* s3lfu: S's hit entry moving to M counts in the sketch */
  int sketch_min;    /* s3lfu: the sketch's least number of words (0: 8) */
} pconf_t;

/* Count-min sketch, 4 rows of 4-bit counters (Caffeine's FrequencySketch
 * in spirit: one table of 64-bit words, 16 counters each). */
typedef struct sketch {
  uint64_t *t;
  uint64_t mask; /* words - 1 */
  uint64_t size, sample;
  int block; /* a key's 4 counters in one 8-word block, as shards/s3fifo.c */
} sketch_t;

/* Ghost as two Bloom filters: inserts go to `cur`; when it has taken
 * ghost_cap / 2 keys the older one is cleared and becomes `cur`.  A key is
 * on the ghost if either filter holds it: the last ghost_cap / 2 ..
 * ghost_cap keys S dropped. */
typedef struct bghost {
  uint64_t *bits[2];
  uint64_t nbits, n, per;
  int cur;
} bghost_t;

static void bg_init(bghost_t *g, uint64_t ghost_cap, int bits_per)
{
  g->per = ghost_cap / 2 ? ghost_cap / 2 : 1;
  uint64_t nb = 64;
  while (nb < g->per * (uint64_t)bits_per)
    nb <<= 1;
  g->nbits = nb;
  g->bits[0] = calloc(nb / 64, 8);
  g->bits[1] = calloc(nb / 64, 8);
  g->n = 0;
  g->cur = 0;
}

static int bg_has1(const uint64_t *b, uint64_t nbits, uint64_t h)
{
  for (int i = 0; i < 3; i++) {
    uint64_t x = (h >> (i * 21)) & (nbits - 1);
    if (!(b[x / 64] >> (x % 64) & 1))
      return 0;
  }
  return 1;
}

static int bg_has(const bghost_t *g, uint64_t h)
{
  return bg_has1(g->bits[0], g->nbits, h) || bg_has1(g->bits[1], g->nbits, h);
}

static void bg_add(bghost_t *g, uint64_t h)
{
  if (g->n >= g->per) {
    g->cur ^= 1;
    memset(g->bits[g->cur], 0, g->nbits / 8);
    g->n = 0;
  }
  for (int i = 0; i < 3; i++) {
    uint64_t x = (h >> (i * 21)) & (g->nbits - 1);
    g->bits[g->cur][x / 64] |= 1ULL << (x % 64);
  }
  g->n++;
}

typedef struct pol {
  bghost_t bg;
  const pconf_t *c;
  sim_t s;
  uint64_t cap;
  /* s3fifo */
  double small_target; /* entries */
  uint64_t ghost_cap, ghost2_cap;
  /* wtinylfu */
  sketch_t sk;
  double window_target;
  uint64_t prot_cap;
  /* hill climber */
  uint64_t hc_hits, hc_reqs, hc_sample;
  double hc_prev, hc_step;
} pol_t;

static void sketch_init(sketch_t *k, uint64_t cap, int div, int minw)
{
  uint64_t w = minw > 8 ? (uint64_t)minw : 8;
  while (w < cap / (uint64_t)(div > 0 ? div : 1))
    w <<= 1;
  k->t = calloc(w, sizeof *k->t);
  k->mask = w - 1;
  k->size = 0;
  k->sample = 10 * (cap < 8 ? 8 : cap);
  (void)0;
}

static inline unsigned sketch_idx(const sketch_t *k, uint64_t h, int row, unsigned *shift)
{
  uint64_t x = (h + 0x9e3779b97f4a7c15ULL * (uint64_t)(row + 1)) * 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 31;
  *shift = (unsigned)(((x >> 8) & 3) * 16 + (unsigned)row * 4) & 63;
  return (unsigned)((x >> 16) & k->mask);
}

/* shards/s3fifo.c's layout: one spread of the hash picks an 8-word block
 * (high bits) and, per row, a word in it and a 16-bit group (a byte of the
 * low bits each). */
static inline unsigned sketch_bidx(const sketch_t *k, uint64_t h, int row, unsigned *shift)
{
  uint64_t x = (uint32_t)h + 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  unsigned b = (unsigned)(x >> (8 * row));
  *shift = ((b >> 3) & 3u) * 16 + (unsigned)row * 4;
  return (unsigned)((((x >> 32) & (k->mask >> 3)) << 3) + (b & 7u));
}

static unsigned sketch_freq(const sketch_t *k, uint64_t h)
{
  unsigned f = 15;
  for (int r = 0; r < 4; r++) {
    unsigned sh;
    unsigned i = k->block ? sketch_bidx(k, h, r, &sh) : sketch_idx(k, h, r, &sh);
    unsigned v = (unsigned)(k->t[i] >> sh) & 15;
    if (v < f)
      f = v;
  }
  return f;
}

static void sketch_inc(sketch_t *k, uint64_t h)
{
  int added = 0;
  for (int r = 0; r < 4; r++) {
    unsigned sh;
    unsigned i = k->block ? sketch_bidx(k, h, r, &sh) : sketch_idx(k, h, r, &sh);
    if (((k->t[i] >> sh) & 15) != 15) {
      k->t[i] += 1ULL << sh;
      added = 1;
    }
  }
  if (added && ++k->size >= k->sample) {
    for (uint64_t i = 0; i <= k->mask; i++)
      k->t[i] = (k->t[i] >> 1) & 0x7777777777777777ULL;
    k->size /= 2;
  }
}

static int pol_init(pol_t *p, const pconf_t *c, uint64_t cap)
{
  memset(p, 0, sizeof *p);
  p->c = c;
  p->cap = cap < 1 ? 1 : cap;
  p->ghost_cap = (uint64_t)(c->ghost * (double)p->cap + 0.5);
  p->ghost2_cap = c->kind == P_S3FIFO_ADAPT ? p->ghost_cap : 0;
  p->small_target = c->small * (double)p->cap;
  if (p->small_target < 1)
    p->small_target = 1;
  if (c->kind == P_S3LFU) {
    sketch_init(&p->sk, p->cap, c->sketch_div, c->sketch_min);
    p->sk.block = c->sketch_div > 1; /* the shape cdcache builds */
    if (c->reset > 0)
      p->sk.sample = (uint64_t)c->reset * p->cap;
    p->hc_sample = 10 * p->cap;
    p->hc_step = 0.0625 * (double)p->cap;
    p->hc_prev = -1;
  }
  if (c->kind == P_WTINYLFU || c->kind == P_WTINYLFU_HC) {
    sketch_init(&p->sk, p->cap, c->sketch_div, c->sketch_min);
    p->window_target = p->small_target;
    p->hc_sample = 10 * p->cap;
    p->hc_step = 0.0625 * (double)p->cap;
  }
  if (c->bloom_bits > 0)
    bg_init(&p->bg, p->ghost_cap, c->bloom_bits);
  return sim_init(&p->s, p->cap + p->ghost_cap + p->ghost2_cap + 2);
}

static void pol_free(pol_t *p)
{
  sim_free(&p->s);
  free(p->sk.t);
  free(p->bg.bits[0]);
  free(p->bg.bits[1]);
}

/* --- lru, clock */

static int lru_access(pol_t *p, uint64_t key)
{
  sim_t *s = &p->s;
  uint32_t i = sim_find(s, key);
  if (i) {
    q_move(s, i, Q_A);
    return 1;
  }
  if (s->q[Q_A].len >= p->cap)
    node_del(s, s->q[Q_A].head);
  node_new(s, key, Q_A);
  return 0;
}

static int clock_access(pol_t *p, uint64_t key)
{
  sim_t *s = &p->s;
  uint32_t i = sim_find(s, key);
  if (i) {
    s->n[i].freq = 1;
    return 1;
  }
  while (s->q[Q_A].len >= p->cap) {
    uint32_t h = s->q[Q_A].head;
    if (s->n[h].freq) {
      s->n[h].freq = 0;
      q_move(s, h, Q_A);
    } else {
      node_del(s, h);
    }
  }
  node_new(s, key, Q_A);
  return 0;
}

/* --- s3fifo: Q_A = small, Q_B = main, Q_GHOST = S's victims,
 *     Q_GHOST2 = M's victims (adaptive only) */

static void ghost_add(pol_t *p, uint64_t key, uint8_t q, uint64_t cap)
{
  sim_t *s = &p->s;
  if (cap == 0)
    return;
  if (q == Q_GHOST && p->c->bloom_bits > 0) {
    bg_add(&p->bg, XXH3_64bits(&key, 8) * 0x9e3779b97f4a7c15ULL);
    return;
  }
  while (s->q[q].len >= cap)
    node_del(s, s->q[q].head);
  node_new(s, key, q);
}

static void s3_evict_main(pol_t *p)
{
  sim_t *s = &p->s;
  for (;;) {
    uint32_t h = s->q[Q_B].head;
    if (s->n[h].freq > 0) {
      s->n[h].freq--;
      if (p->c->kind == P_S3LFU)
        sketch_inc(&p->sk, XXH3_64bits(&s->n[h].key, 8));
      q_move(s, h, Q_B);
    } else {
      uint64_t k = s->n[h].key;
      node_del(s, h);
      if (p->c->main_ghost)
        ghost_add(p, k, Q_GHOST, p->ghost_cap);
      else
        ghost_add(p, k, Q_GHOST2, p->ghost2_cap);
      return;
    }
  }
}

/* Runs M's hand until the entry it would evict is at M's head; returns it. */
static uint32_t s3_main_victim(pol_t *p)
{
  sim_t *s = &p->s;
  for (;;) {
    uint32_t h = s->q[Q_B].head;
    if (s->n[h].freq == 0)
      return h;
    s->n[h].freq--;
    sketch_inc(&p->sk, XXH3_64bits(&s->n[h].key, 8));
    q_move(s, h, Q_B);
  }
}

static void s3_evict(pol_t *p)
{
  sim_t *s = &p->s;
  for (;;) {
    if ((double)s->q[Q_A].len >= p->small_target || s->q[Q_B].len == 0) {
      uint32_t h = s->q[Q_A].head;
      if (s->n[h].freq >= p->c->move_thresh) {
        if (p->c->count_promote)
          sketch_inc(&p->sk, XXH3_64bits(&s->n[h].key, 8));
        s->n[h].freq = 0;
        q_move(s, h, Q_B);
        /* M grew by one: the total is unchanged, keep looking. */
        continue;
      }
      uint64_t k = s->n[h].key;
      if (p->c->s_duel == 1 && s->q[Q_B].len > 0) {
        uint32_t v = s3_main_victim(p);
        if (sketch_freq(&p->sk, XXH3_64bits(&k, 8)) >
            sketch_freq(&p->sk, XXH3_64bits(&s->n[v].key, 8))) {
          node_del(s, v);
          q_move(s, h, Q_B);
          return;
        }
      }
      node_del(s, h);
      ghost_add(p, k, Q_GHOST, p->ghost_cap);
      return;
    }
    s3_evict_main(p);
    return;
  }
}

static int s3_access(pol_t *p, uint64_t key)
{
  sim_t *s = &p->s;
  uint32_t i = sim_find(s, key);
  if (i && (s->n[i].q == Q_A || s->n[i].q == Q_B)) {
    if (s->n[i].freq < p->c->freq_max)
      s->n[i].freq++;
    return 1;
  }
  uint8_t dest = Q_A;
  if (p->c->kind == P_S3LFU)
    sketch_inc(&p->sk, XXH3_64bits(&key, 8));
  if (!i && p->c->bloom_bits > 0 && bg_has(&p->bg, XXH3_64bits(&key, 8) * 0x9e3779b97f4a7c15ULL)) {
    /* a Bloom ghost hit: as an exact one, but nothing to unlink */
    i = node_new(s, key, Q_GHOST);
  }
  if (i) {
    if (p->c->kind == P_S3FIFO_ADAPT) {
      double lo = p->c->small_min * (double)p->cap, hi = p->c->small_max * (double)p->cap;
      if (s->n[i].q == Q_GHOST) {
        p->small_target += 1;
        if (p->small_target > hi)
          p->small_target = hi;
      } else {
        p->small_target -= 1;
        if (p->small_target < lo)
          p->small_target = lo;
      }
      if (p->small_target < 1)
        p->small_target = 1;
    }
    dest = s->n[i].q == Q_GHOST ? Q_B : Q_A;
    node_del(s, i);
    if (dest == Q_B && p->c->kind == P_S3LFU && s->q[Q_B].len > 0 &&
        s->q[Q_A].len + s->q[Q_B].len >= p->cap) {
      /* TinyLFU duel: the ghost's key enters M only if counted more often
       * than the entry M's hand would evict. */
      uint32_t v = s3_main_victim(p);
      unsigned fc = sketch_freq(&p->sk, XXH3_64bits(&key, 8));
      unsigned fv = sketch_freq(&p->sk, XXH3_64bits(&s->n[v].key, 8));
      if (p->c->s_duel == 2 ? fc < fv : fc <= fv)
        dest = Q_A;
    }
  }
  if (s->q[Q_A].len + s->q[Q_B].len >= p->cap)
    s3_evict(p);
  i = node_new(s, key, dest);
  if (dest == Q_B)
    s->n[i].freq = (uint8_t)p->c->ghost_freq;
  return 0;
}

/* --- wtinylfu: Q_A = window (LRU), Q_B = probation, Q_C = protected */

static void wt_hill_climb(pol_t *p, int hit)
{
  p->hc_hits += (uint64_t)hit;
  if (++p->hc_reqs < p->hc_sample)
    return;
  double rate = (double)p->hc_hits / (double)p->hc_reqs;
  p->hc_hits = p->hc_reqs = 0;
  if (p->hc_prev > 0) {
    double delta = rate - p->hc_prev;
    double amount = delta >= 0 ? p->hc_step : -p->hc_step;
    p->hc_step =
        fabs(delta) >= 0.05 ? 0.0625 * (double)p->cap * (amount >= 0 ? 1 : -1) : amount * 0.98;
    p->window_target += p->hc_step;
    if (p->window_target < 1)
      p->window_target = 1;
    if (p->window_target > 0.8 * (double)p->cap)
      p->window_target = 0.8 * (double)p->cap;
  }
  p->hc_prev = rate;
}

/* Hill climbing S's target (S3LFU with small_max > 0), as Caffeine 2.7's
 * climber sizes its window. */
static void s3_hill_climb(pol_t *p, int hit)
{
  p->hc_hits += (uint64_t)hit;
  if (++p->hc_reqs < p->hc_sample)
    return;
  double rate = (double)p->hc_hits / (double)p->hc_reqs;
  p->hc_hits = p->hc_reqs = 0;
  if (p->hc_prev >= 0) {
    double delta = rate - p->hc_prev;
    double amount = delta >= 0 ? p->hc_step : -p->hc_step;
    p->hc_step =
        fabs(delta) >= 0.05 ? 0.0625 * (double)p->cap * (amount >= 0 ? 1 : -1) : amount * 0.98;
    p->small_target += p->hc_step;
    double lo = p->c->small_min * (double)p->cap, hi = p->c->small_max * (double)p->cap;
    if (p->small_target < lo)
      p->small_target = lo;
    if (p->small_target > hi)
      p->small_target = hi;
    if (p->small_target < 1)
      p->small_target = 1;
  }
  p->hc_prev = rate;
}

static int wt_access(pol_t *p, uint64_t key)
{
  sim_t *s = &p->s;
  uint64_t h = XXH3_64bits(&key, 8);
  sketch_inc(&p->sk, h);
  uint32_t i = sim_find(s, key);
  uint64_t main_cap = p->cap - (uint64_t)p->window_target;
  uint64_t prot_cap = (uint64_t)(0.8 * (double)main_cap);
  int hit = i != NIL;
  if (i) {
    if (s->n[i].q == Q_A) {
      q_move(s, i, Q_A);
    } else if (s->n[i].q == Q_B) {
      q_move(s, i, Q_C);
      while (s->q[Q_C].len > prot_cap && s->q[Q_C].len > 0)
        q_move(s, s->q[Q_C].head, Q_B);
    } else {
      q_move(s, i, Q_C);
    }
  } else {
    node_new(s, key, Q_A);
  }
  /* The window overflows into probation; when the whole is over capacity
   * the window's newcomer (probation's newest) duels probation's oldest. */
  while ((double)s->q[Q_A].len > p->window_target && s->q[Q_A].len > 1)
    q_move(s, s->q[Q_A].head, Q_B);
  while (s->q[Q_A].len + s->q[Q_B].len + s->q[Q_C].len > p->cap) {
    uint32_t cand = s->q[Q_B].tail, vict = s->q[Q_B].head;
    if (cand == NIL) { /* probation empty: demote protected */
      if (s->q[Q_C].len)
        q_move(s, s->q[Q_C].head, Q_B);
      else
        node_del(s, s->q[Q_A].head);
      continue;
    }
    if (cand == vict) {
      node_del(s, vict);
      continue;
    }
    unsigned fc = sketch_freq(&p->sk, XXH3_64bits(&s->n[cand].key, 8));
    unsigned fv = sketch_freq(&p->sk, XXH3_64bits(&s->n[vict].key, 8));
    node_del(s, fc > fv ? vict : cand);
  }
  if (p->c->kind == P_WTINYLFU_HC)
    wt_hill_climb(p, hit);
  return hit;
}

static int pol_access(pol_t *p, uint64_t key)
{
  switch (p->c->kind) {
  case P_LRU:
    return lru_access(p, key);
  case P_CLOCK:
    return clock_access(p, key);
  case P_S3FIFO:
  case P_S3FIFO_ADAPT:
    return s3_access(p, key);
  case P_S3LFU: {
    int hit = s3_access(p, key);
    if (p->c->small_max > 0)
      s3_hill_climb(p, hit);
    return hit;
  }
  case P_WTINYLFU:
  case P_WTINYLFU_HC:
    return wt_access(p, key);
  }
  return 0;
}

/* ------------------------------------------------------------- runner */

static uint32_t default_shards(uint64_t cap)
{
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  uint32_t n = 1;
  while (n < 4u * (uint32_t)(cpus > 0 ? cpus : 1) && n < 1024)
    n <<= 1;
  while (n > 1 && cap / n < MIN_SHARD_ENTRIES)
    n >>= 1;
  return n;
}

/* Miss ratio of policy c over ids[0..n) at capacity cap, cdcache's
 * sharding.  prefill: ids 0..prefill-1 put first, not counted. */
static double run(const pconf_t *c, const uint64_t *ids, size_t n, uint64_t cap, uint64_t prefill,
                  uint32_t shards)
{
  if (shards == 0)
    shards = default_shards(cap);
  unsigned bits = 0;
  while ((1u << bits) < shards)
    bits++;
  pol_t *ps = calloc(shards, sizeof *ps);
  uint64_t base = cap / shards, extra = cap % shards;
  for (uint32_t i = 0; i < shards; i++)
    if (pol_init(&ps[i], c, base + (i < extra)) != 0) {
      fprintf(stderr, "policy-sim: out of memory\n");
      exit(2);
    }
  for (uint64_t id = 0; id < prefill; id++) {
    uint64_t h = XXH3_64bits(&id, 8);
    pol_access(&ps[bits ? h >> (64 - bits) : 0], id);
  }
  uint64_t miss = 0;
  for (size_t r = 0; r < n; r++) {
    uint64_t id = ids[r];
    uint64_t h = XXH3_64bits(&id, 8);
    miss += (uint64_t)!pol_access(&ps[bits ? h >> (64 - bits) : 0], id);
  }
  for (uint32_t i = 0; i < shards; i++)
    pol_free(&ps[i]);
  free(ps);
  return (double)miss / (double)n;
}

/* name, kind, small, move_thresh, ghost, freq_max, small_min, small_max,
 * main_ghost, ghost_freq, s_duel, sketch_div, bloom_bits */
static pconf_t CONFS[32] = {
    {"lru", P_LRU, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"clock", P_CLOCK, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"s3fifo", P_S3FIFO, 0.10, 1, 0.9, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"s3fifo-adapt", P_S3FIFO_ADAPT, 0.10, 1, 0.9, 3, 0.01, 0.9, 0, 0, 0, 0, 0, 0, 0, 0},
    {"s3fifo-hc", P_S3LFU, 0.10, 1, 1.5, 3, 0.01, 0.5, 0, 0, 0, 0, 0, 0, 0, 0},
    {"wtinylfu", P_WTINYLFU, 0.01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"wtinylfu-hc", P_WTINYLFU_HC, 0.01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"s3lfu-exact", P_S3LFU, 0.15, 1, 2, 3, 0, 0, 0, 0, 0, 1, 0, 20, 0, 64},
    {"allkeys-s3fifo", P_S3LFU, 0.15, 1, 2, 3, 0, 0, 0, 0, 0, 4, 8, 20, 0, 64},
};
static size_t NCONFS;

/* Caffeine 2.6.2's figures (shared/traces/README.md), by trace and point. */
static const struct {
  const char *trace;
  double frac, miss;
} CAFFEINE[] = {
    {"cloudPhysicsIO", 0.01, 0.833181}, {"cloudPhysicsIO", 0.1, 0.735844},
    {"trace-multi2", 0.01, 0.784501},   {"trace-multi2", 0.1, 0.486679},
    {"trace-sprite", 0.01, 0.760866},   {"trace-sprite", 0.1, 0.194857},
    {"w106", 0.01, 0.203088},           {"w106", 0.1, 0.073657},
};

static double caffeine_of(const char *trace, double frac)
{
  for (size_t i = 0; i < sizeof CAFFEINE / sizeof *CAFFEINE; i++)
    if (!strcmp(CAFFEINE[i].trace, trace) && fabs(CAFFEINE[i].frac - frac) < 1e-9)
      return CAFFEINE[i].miss;
  return -1;
}

static void usage(void)
{
  fprintf(stderr,
          "usage: cdcache-policy-sim [--shards N] [--only a,b] [--no-zipf] [TRACE.u64 ...]\n"
          "  without TRACE: every shared trace (traces dir found as cdcache-bench does)\n");
}

int main(int argc, char **argv)
{
  uint32_t shards = 0;
  const char *only = NULL;
  int zipf_pt = 1;
  char **files = NULL;
  int nfiles = 0;
  while (CONFS[NCONFS].name != NULL)
    NCONFS++;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--shards") && i + 1 < argc)
      shards = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!strcmp(argv[i], "--conf") && i + 1 < argc && NCONFS < 32) {
      /* name=kind,small,thresh,ghost,fmax,min,max (kind: the pkind_t number) */
      pconf_t *c = &CONFS[NCONFS++];
      char *spec = argv[++i], *eq = strchr(spec, '=');
      int kind = 0;
      if (!eq || sscanf(eq + 1, "%d,%lf,%d,%lf,%d,%lf,%lf,%d,%d,%d,%d,%d,%d,%d,%d", &kind,
                        &c->small, &c->move_thresh, &c->ghost, &c->freq_max, &c->small_min,
                        &c->small_max, &c->main_ghost, &c->ghost_freq, &c->s_duel, &c->sketch_div,
                        &c->bloom_bits, &c->reset, &c->count_promote, &c->sketch_min) < 5) {
        usage();
        return 2;
      }
      *eq = 0;
      c->name = spec;
      c->kind = (pkind_t)kind;
    } else if (!strcmp(argv[i], "--no-zipf"))
      zipf_pt = 0;
    else if (argv[i][0] == '-') {
      usage();
      return 2;
    } else {
      argv[nfiles++] = argv[i]; /* the trace files, compacted in place */
    }
  }
  if (nfiles > 0)
    files = argv;
  char **list = NULL;
  if (nfiles == 0) {
    char *dir = trace_find_dir();
    if (dir)
      list = trace_list(dir);
    free(dir);
    if (list)
      for (files = list; files[nfiles]; nfiles++)
        ;
  }
  int use[32] = {0};
  for (size_t c = 0; c < NCONFS; c++) {
    use[c] = 1;
    if (only && c > 0) { /* lru always runs: the reference */
      const char *p = strstr(only, CONFS[c].name);
      size_t l = strlen(CONFS[c].name);
      use[c] = p && (p[l] == 0 || p[l] == ',') && (p == only || p[-1] == ',');
    }
  }
  printf("%-16s %5s %7s %6s", "trace", "frac", "cap", "shards");
  for (size_t c = 0; c < NCONFS; c++)
    if (use[c])
      printf(" %12s", CONFS[c].name);
  printf(" %12s\n", "caffeine");
  double sum[32] = {0}, worst[32] = {0}, csum = 0;
  int pts = 0, cpts = 0;
  for (int f = 0; f < nfiles; f++) {
    trace_t t;
    if (trace_load(files[f], &t) != 0) {
      fprintf(stderr, "policy-sim: cannot load %s\n", files[f]);
      continue;
    }
    const double fracs[2] = {0.01, 0.1};
    for (int k = 0; k < 2; k++) {
      uint64_t cap = (uint64_t)(fracs[k] * (double)t.unique);
      printf("%-16s %5.2f %7llu %6u", t.name, fracs[k], (unsigned long long)cap,
             shards ? shards : default_shards(cap));
      double lru = 0;
      for (size_t c = 0; c < NCONFS; c++) {
        if (!use[c])
          continue;
        double m = run(&CONFS[c], t.ids, t.n, cap, 0, shards);
        if (c == 0)
          lru = m;
        sum[c] += m;
        if (m - lru > worst[c])
          worst[c] = m - lru;
        printf(" %12.6f", m);
        fflush(stdout);
      }
      double cf = caffeine_of(t.name, fracs[k]);
      if (cf >= 0) {
        csum += cf;
        cpts++;
        printf(" %12.6f\n", cf);
      } else {
        printf(" %12s\n", "-");
      }
      pts++;
    }
    trace_free(&t);
  }
  if (pts > 0) {
    printf("%-16s %5s %7s %6s", "mean", "", "", "");
    for (size_t c = 0; c < NCONFS; c++)
      if (use[c])
        printf(" %12.6f", sum[c] / pts);
    if (cpts == pts)
      printf(" %12.6f", csum / cpts);
    printf("\n%-16s %5s %7s %6s", "worst vs lru pp", "", "", "");
    for (size_t c = 0; c < NCONFS; c++)
      if (use[c])
        printf(" %+12.2f", 100 * worst[c]);
    printf("\n");
  }
  if (zipf_pt) {
    /* The peer point: Zipf 0.99 over 10^6 keys, capacity 10^5, prefilled
     * with the hottest 10^5 ranks as cdcache-bench's zipf workload. */
    const uint64_t keys = 1000000, cap = 100000;
    const size_t n = 5000000;
    uint64_t *ids = malloc(n * sizeof *ids);
    zipf_t z;
    zipf_init(&z, keys, 0.99);
    uint64_t rng = BENCH_SEED;
    for (size_t i = 0; i < n; i++)
      ids[i] = zipf_next(&z, &rng);
    printf("%-16s %5s %7llu %6u", "zipf0.99-1e6", "hit", (unsigned long long)cap,
           shards ? shards : default_shards(cap));
    for (size_t c = 0; c < NCONFS; c++)
      if (use[c])
        printf(" %12.6f", 1 - run(&CONFS[c], ids, n, cap, cap, shards));
    printf(" %12.2f\n", 0.80);
    free(ids);
  }
  if (list) {
    for (int i = 0; list[i]; i++)
      free(list[i]);
    free(list);
  }
  return 0;
}
