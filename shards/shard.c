/*
 * A shard: one writer lock, one RCU-readable hash table, one eviction
 * order.
 *
 * The table.  A fixed array of bucket heads, each a singly linked chain
 * of entries.  max_entries is required, so each shard's table is sized at
 * open for its share (at most two entries per bucket on average) and is
 * never resized: no rehash pauses, no resize protocol readers must follow.
 * Writers (put, delete, evict, flush) hold the shard lock; readers hold
 * nothing but an RCU read-side section.  Publication: a new entry is
 * fully written, its `next` set, and only then stored into its bucket
 * head or predecessor's `next` with release order; a reader's acquire
 * load of that pointer sees the entry complete (guarantee P1).  Unlinking
 * stores the successor into the predecessor's link; the unlinked entry
 * keeps its own `next`, so a reader standing on it walks on to the rest
 * of the chain (P2).  A replaced entry is swapped in place: readers see
 * either the old or the new value, never a mix, because entries are
 * immutable once published (P3).  Unlinked entries are freed only after a
 * grace period (reclaim.c), so nothing a reader can reach is freed (P4).
 * A lookup may miss a key whose put is concurrent; it never returns a
 * value that was not put for that key.
 *
 * Tags.  A bucket head is a word: the chain's length in its low 3 bits
 * (saturating at 7), the first entry's address (8-byte aligned, below
 * 2^48) in the bits up to 47, and in the top 16 a summary, one bit per tag
 * (a hash's bits 28-31), set for every entry on the chain.  A lookup whose tag bit is
 * clear is a miss without loading any entry: most misses cost the bucket
 * alone, instead of the bucket and every entry of its chain.  Writers
 * keep the summary a superset of the chain's tags: an insert at the head
 * adds its tag in the same release store that publishes it; a replacement
 * has its key's tag already; an unlink leaves its tag behind (a stale bit
 * costs a walk, never an answer) unless the chain becomes empty, and an
 * insert that walked the whole chain stores the tags it saw, dropping the
 * stale ones.  So a reader that sees a clear bit saw a word published
 * while no entry of that tag was on the chain, and the key was absent at
 * that moment.  An insert walks the chain only when the key's tag is set
 * or the length field is saturated (it is exact below 7, and 7 is below
 * CDCACHE_CHAIN_TRIPWIRE, and a walk counts exactly), so the tripwire
 * counts every long chain as before.  Entries must lie below 2^48 (the
 * allocator hook's contract; api refuses an entry above).
 *
 * Eviction: CLOCK (second chance) over a FIFO list.  A hit must not write
 * a line other threads write, so there is no move-to-front on hit:
 * readers set the entry's `ref` byte, and only when it is clear, so a hot
 * entry is written once per trip of the hand, not once per hit.  New
 * entries join the tail.  To evict, the writer looks at the head: an
 * expired entry goes first; a referenced one has its bit cleared and moves
 * to the tail (its second chance); an unreferenced one is the victim.
 * Two laps at most: readers set bits without the lock and may set them
 * again behind the hand, so after two laps the hand takes the entry it
 * stands on, and a victim is always found while the list holds one (the
 * only EFULL under allkeys-lru is a shard whose bytes are all
 * placeholders, which are on no list).  This is the
 * classic approximation of LRU: an entry hit since the hand last passed
 * survives.  Measured on the shared real traces it stays within one
 * percentage point of exact LRU (README).
 *
 * The shard calls nothing above it: what it evicted, expired or found
 * abnormal (chains of CDCACHE_CHAIN_TRIPWIRE entries) goes into a report
 * the caller counts and logs after dropping the lock.  A placeholder is an
 * opaque link ({ph, dead}) the shard clears or kills when the key is
 * removed or replaced.
 *
 * Policies.  allkeys-lru keeps every entry on list 0.  volatile-lru puts
 * entries with a TTL on list 1 and evicts only from it.  noeviction never
 * evicts a live entry (expired ones are still reclaimed).
 *
 * allkeys-s3fifo (volatile-s3fifo: the same among entries with a TTL,
 * the others on list 0, never evicted).  Two FIFOs: the small one S
 * (list 1) takes every new key, the main one M (list 2) the keys that
 * proved themselves; `ref` counts hits up to 3.  To make room, the writer
 * takes S's oldest while S holds 15% or more of the two (or M is empty),
 * otherwise M's.  S's oldest, if it was hit since it came, moves to M's
 * tail with its count cleared (nothing is freed; go on); if not, it is
 * the victim and its hash goes to the ghost filter.  M's oldest, if its
 * count is above 0, goes back to M's tail with the count lowered by one
 * (and the sketch counts the hit the hand observed); if not, it is the
 * victim.  A new key goes to S, unless the ghost remembers its hash: then
 * to M if M has room, or if the sketch counts it more often than the
 * entry M's hand stops at (the victim M would give up); else to S.  A
 * replaced entry keeps its FIFO and count.  Both lists bound the number
 * of steps: each lap of M's hand lowers every count, S's entries move at
 * most once, so 4 x (|S| + |M|) + 2 steps find a victim; past that (hits
 * racing the hand), the oldest entry that is not the caller's goes.  The
 * sketch and ghost are in s3fifo.c.
 *
 * TTL.  Expired entries are never returned (readers check the expiry),
 * and are reclaimed without a scan: the evictor takes them first, and
 * every write in the shard sweeps the next SWEEP_BUCKETS buckets.
 */
#include "shard.h"

#include <string.h>

#define SWEEP_BUCKETS 4

uint64_t cdcache__shard_table_bytes(uint64_t nbuckets)
{
  return nbuckets * sizeof(_Atomic uintptr_t);
}

int cdcache__shard_init(struct cdcache__shard *s, const struct cdcache__shard_env *env,
                        uint64_t cap_entries, uint64_t cap_bytes, uint64_t nbuckets)
{
  memset(s, 0, sizeof *s);
  s->env = env;
  s->buckets = env->alloc->malloc(env->alloc->ctx, cdcache__shard_table_bytes(nbuckets));
  if (s->buckets == NULL)
    return CDCACHE_ENOMEM;
  for (uint64_t i = 0; i < nbuckets; i++)
    atomic_init(&s->buckets[i], 0);
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    env->alloc->free(env->alloc->ctx, s->buckets, cdcache__shard_table_bytes(nbuckets));
    s->buckets = NULL;
    return CDCACHE_ENOMEM;
  }
  if (cdcache__policy_s3(env->policy) && cdcache__s3_init(env->alloc, &s->s3, cap_entries) != 0) {
    pthread_mutex_destroy(&s->lock);
    env->alloc->free(env->alloc->ctx, s->buckets, cdcache__shard_table_bytes(nbuckets));
    s->buckets = NULL;
    return CDCACHE_ENOMEM;
  }
  s->mask = nbuckets - 1;
  s->cap_entries = cap_entries;
  cdcache__retire_list_init(env->rec, &s->retired, cap_entries);
  s->cap_bytes = cap_bytes;
  return 0;
}

static void free_entry(const struct cdcache__shard *s, struct cdcache__entry *e)
{
  s->env->alloc->free(s->env->alloc->ctx, e, cdcache__entry_size(e->flags, e->klen, e->vlen));
}

void cdcache__shard_destroy(struct cdcache__shard *s)
{
  if (s->buckets == NULL)
    return;
  cdcache__pool_free(s->env->rec, &s->retired);
  for (uint64_t i = 0; i <= s->mask; i++) {
    struct cdcache__entry *e =
        cdcache__bucket_first(atomic_load_explicit(&s->buckets[i], memory_order_relaxed));
    while (e != NULL) {
      struct cdcache__entry *next = atomic_load_explicit(&e->next, memory_order_relaxed);
      if (e->flags & CDCACHE__E_PLACEHOLDER)
        cdcache__entry_link(e)->ph = NULL;
      free_entry(s, e);
      e = next;
    }
  }
  s->env->alloc->free(s->env->alloc->ctx, s->buckets, cdcache__shard_table_bytes(s->mask + 1));
  s->buckets = NULL;
  if (s->s3.sketch != NULL)
    cdcache__s3_destroy(s->env->alloc, &s->s3);
  pthread_mutex_destroy(&s->lock);
}

/* ------------------------------------------------------ eviction lists */

#define L_SMALL 1 /* s3fifo */
#define L_MAIN 2  /* s3fifo */

/* Is e one of the entries the policy may evict? */
static bool evictable(const struct cdcache__shard *s, const struct cdcache__entry *e)
{
  return !cdcache__policy_volatile(s->env->policy) || (e->flags & CDCACHE__E_VOLATILE);
}

static struct cdcache__list *list_of(struct cdcache__shard *s, const struct cdcache__entry *e)
{
  if (!cdcache__policy_s3(s->env->policy))
    return &s->lists[(e->flags & CDCACHE__E_VOLATILE) ? 1 : 0];
  if (!evictable(s, e))
    return &s->lists[0];
  return &s->lists[e->in_main ? L_MAIN : L_SMALL];
}

static void list_append(struct cdcache__list *l, struct cdcache__entry *e)
{
  e->u.lru.next = NULL;
  e->u.lru.prev = l->tail;
  if (l->tail != NULL)
    l->tail->u.lru.next = e;
  else
    l->head = e;
  l->tail = e;
  l->len++;
  l->bytes += e->charge;
}

static void list_remove(struct cdcache__list *l, struct cdcache__entry *e)
{
  if (e->u.lru.prev != NULL)
    e->u.lru.prev->u.lru.next = e->u.lru.next;
  else
    l->head = e->u.lru.next;
  if (e->u.lru.next != NULL)
    e->u.lru.next->u.lru.prev = e->u.lru.prev;
  else
    l->tail = e->u.lru.prev;
  l->len--;
  l->bytes -= e->charge;
}

/* ------------------------------------------------------------- linking */

static _Atomic uintptr_t *bucket_of(const struct cdcache__shard *s, uint32_t hash)
{
  return &s->buckets[hash & s->mask];
}

static unsigned bucket_len(uintptr_t w)
{
  return (unsigned)(w & CDCACHE__B_LEN);
}

static uintptr_t bucket_word(const struct cdcache__entry *first, uintptr_t sum, unsigned len)
{
  if (first == NULL)
    return 0; /* an empty chain: no tags, no length */
  if (len > CDCACHE__B_LEN_MAX)
    len = CDCACHE__B_LEN_MAX;
  return (uintptr_t)first | (sum & CDCACHE__B_SUM) | (uintptr_t)len;
}

/* The entry before e on its chain, or NULL when e is first.  e is linked
 * (shard lock held): the walk finds it. */
static struct cdcache__entry *pred_of(const struct cdcache__shard *s,
                                      const struct cdcache__entry *e)
{
  struct cdcache__entry *pred = NULL, *cur = cdcache__bucket_first(atomic_load_explicit(
                                          bucket_of(s, e->hash), memory_order_relaxed));
  while (cur != e) {
    pred = cur;
    cur = atomic_load_explicit(&cur->next, memory_order_relaxed);
  }
  return pred;
}

#ifdef CDCACHE_ASSERTS
/* Debug: is e reachable from its bucket? */
static bool linked(const struct cdcache__shard *s, const struct cdcache__entry *e)
{
  for (struct cdcache__entry *cur =
           cdcache__bucket_first(atomic_load_explicit(bucket_of(s, e->hash), memory_order_relaxed));
       cur != NULL; cur = atomic_load_explicit(&cur->next, memory_order_relaxed))
    if (cur == e)
      return true;
  return false;
}
#endif

/* Shard lock held: e is unlinked; retire it. */
static void retire(struct cdcache__shard *s, struct cdcache__entry *e, uint64_t charge)
{
  CDCACHE__ASSERT(!linked(s, e));
  cdcache__retire(&s->retired, e, charge);
}

static bool expired(const struct cdcache__shard *s, const struct cdcache__entry *e, uint64_t now)
{
  return cdcache__entry_expired(e, now, s->env->clock_slack_ms);
}

void cdcache__shard_unlink(struct cdcache__shard *s, struct cdcache__entry *e,
                           enum cdcache__why why, struct cdcache__shard_report *rep)
{
  CDCACHE__ASSERT_LOCKED(s);
  _Atomic uintptr_t *b = bucket_of(s, e->hash);
  uintptr_t w = atomic_load_explicit(b, memory_order_relaxed);
  struct cdcache__entry *pred = pred_of(s, e);
  struct cdcache__entry *next = atomic_load_explicit(&e->next, memory_order_relaxed);
  /* One entry fewer, unless the count saturated (then a later full walk
   * counts again).  e's tag stays in the summary until such a walk. */
  unsigned len = bucket_len(w);
  if (len != CDCACHE__B_LEN_MAX)
    len--;
  /* P2: readers on e still follow e->next, which stays as it is. */
  if (pred != NULL) {
    atomic_store_explicit(&pred->next, next, memory_order_release);
    atomic_store_explicit(b, bucket_word(cdcache__bucket_first(w), w, len), memory_order_release);
  } else {
    atomic_store_explicit(b, bucket_word(next, w, len), memory_order_release);
  }
  uint64_t charge = e->charge;
  if (e->flags & CDCACHE__E_PLACEHOLDER) {
    struct cdcache__fill_link *f = cdcache__entry_link(e);
    f->ph = NULL;
    if (why != WHY_FILLED)
      f->dead = true;
  } else {
    list_remove(list_of(s, e), e);
    if (e->flags & CDCACHE__E_TTL)
      s->n_ttl--;
    atomic_store_explicit(&s->n_entries,
                          atomic_load_explicit(&s->n_entries, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    /* Reported to the caller, which counts: the shard calls nothing
     * above it. */
    if (why == WHY_EVICTED)
      rep->evicted++;
    else if (why == WHY_EXPIRED)
      rep->expired++;
  }
  atomic_store_explicit(&s->n_bytes,
                        atomic_load_explicit(&s->n_bytes, memory_order_relaxed) - charge,
                        memory_order_relaxed);
  retire(s, e, charge);
}

/* ------------------------------------------------------------ eviction */

#ifdef CDCACHE_ASSERTS
void (*cdcache__hand_hook)(struct cdcache__entry *e);
#endif

/*
 * The CLOCK hand: returns the entry to evict from l (never `skip`), or
 * NULL when l holds nothing else.  *why tells eviction from expiry.
 * Readers may set reference bits again behind the hand while it walks
 * (they take no lock), so after two laps it stops giving second chances
 * and takes the oldest entry: a victim is always found when there is one.
 */
static struct cdcache__entry *pick_victim(const struct cdcache__shard *s, struct cdcache__list *l,
                                          const struct cdcache__entry *skip, uint64_t now,
                                          enum cdcache__why *why)
{
  uint64_t budget = 2 * l->len + 1;
  struct cdcache__entry *e;
  while (budget-- > 0 && (e = l->head) != NULL) {
    if (e == skip) {
      if (l->len == 1)
        return NULL;
    } else if (expired(s, e, now)) {
      *why = WHY_EXPIRED;
      return e;
    } else if (!atomic_load_explicit(&e->ref, memory_order_relaxed)) {
      *why = WHY_EVICTED;
      return e;
    } else {
      atomic_store_explicit(&e->ref, 0, memory_order_relaxed); /* second chance */
#ifdef CDCACHE_ASSERTS
      if (cdcache__hand_hook != NULL)
        cdcache__hand_hook(e);
#endif
    }
    list_remove(l, e);
    list_append(l, e);
  }
  for (e = l->head; e != NULL; e = e->u.lru.next) {
    if (e != skip) {
      *why = expired(s, e, now) ? WHY_EXPIRED : WHY_EVICTED;
      return e;
    }
  }
  return NULL;
}

/* ------------------------------------------------------------- s3fifo */

/* Does S give up its oldest next (S holds 15% or more of S + M, or M is
 * empty)? */
static bool s3_take_small(const struct cdcache__shard *s)
{
  const struct cdcache__list *sm = &s->lists[L_SMALL], *mn = &s->lists[L_MAIN];
  return sm->len > 0 && (mn->len == 0 || sm->len * 20 >= 3 * (sm->len + mn->len));
}

#ifdef CDCACHE_ASSERTS
void (*cdcache__s3_hand_hook)(struct cdcache__entry *e);
#endif

/* One step of M's hand over its oldest entry e: false if e was hit since
 * the hand last passed (it goes round again, one hit forgotten, and the
 * sketch counts that hit); true if e is the victim. */
static bool s3_main_step(struct cdcache__shard *s, struct cdcache__entry *e)
{
#ifdef CDCACHE_ASSERTS
  if (cdcache__s3_hand_hook != NULL)
    cdcache__s3_hand_hook(e);
#endif
  uint8_t r = atomic_load_explicit(&e->ref, memory_order_relaxed);
  if (r == 0)
    return true;
  atomic_store_explicit(&e->ref, (uint8_t)(r - 1), memory_order_relaxed);
  cdcache__s3_count(&s->s3, e->hash);
  list_remove(&s->lists[L_MAIN], e);
  list_append(&s->lists[L_MAIN], e);
  return false;
}

/* The oldest entry of S or M that is not skip (the last resort). */
static struct cdcache__entry *s3_oldest(struct cdcache__shard *s, const struct cdcache__entry *skip)
{
  for (int i = L_SMALL; i <= L_MAIN; i++)
    for (struct cdcache__entry *e = s->lists[i].head; e != NULL; e = e->u.lru.next)
      if (e != skip)
        return e;
  return NULL;
}

/*
 * The s3fifo hands (see the top of the file): returns the entry to evict
 * from S or M (never `skip`), or NULL when they hold nothing else.  S's
 * victim's hash goes to the ghost.
 */
static struct cdcache__entry *pick_victim_s3(struct cdcache__shard *s,
                                             const struct cdcache__entry *skip, uint64_t now,
                                             enum cdcache__why *why)
{
  struct cdcache__list *sm = &s->lists[L_SMALL], *mn = &s->lists[L_MAIN];
  uint64_t budget = 4 * (sm->len + mn->len) + 2;
  while (budget-- > 0) {
    struct cdcache__list *l = s3_take_small(s) ? sm : mn;
    if (l->head == skip && l->len == 1)
      l = l == sm ? mn : sm; /* only the caller's own entry there */
    struct cdcache__entry *e = l->head;
    if (e == NULL)
      return NULL;
    if (e == skip) {
      list_remove(l, e);
      list_append(l, e);
    } else if (expired(s, e, now)) {
      *why = WHY_EXPIRED;
      return e;
    } else if (l == mn) {
      if (s3_main_step(s, e)) {
        *why = WHY_EVICTED;
        return e;
      }
    } else if (atomic_load_explicit(&e->ref, memory_order_relaxed) > 0) {
      list_remove(sm, e); /* hit while in S: on to M, count cleared */
      e->in_main = 1;
      atomic_store_explicit(&e->ref, 0, memory_order_relaxed);
      list_append(mn, e);
    } else {
      cdcache__s3_ghost_add(&s->s3, e->hash);
      *why = WHY_EVICTED;
      return e;
    }
  }
  /* Readers kept raising counts as fast as the hand lowered them: a put
   * never fails for want of a victim, so the oldest goes. */
  struct cdcache__entry *e = s3_oldest(s, skip);
  if (e != NULL)
    *why = expired(s, e, now) ? WHY_EXPIRED : WHY_EVICTED;
  return e;
}

/*
 * Moves M's hand until its oldest entry is the one M would give up (not
 * hit since the hand passed, or expired; never skip) and returns it,
 * without evicting; NULL if there is none.  The ghost's admission duel
 * weighs a newcomer against it.
 */
static struct cdcache__entry *s3_main_victim(struct cdcache__shard *s,
                                             const struct cdcache__entry *skip, uint64_t now)
{
  struct cdcache__list *mn = &s->lists[L_MAIN];
  uint64_t budget = 4 * mn->len + 2;
  struct cdcache__entry *e;
  while (budget-- > 0 && (e = mn->head) != NULL) {
    if (e == skip) {
      if (mn->len == 1)
        return NULL;
      list_remove(mn, e);
      list_append(mn, e);
    } else if (expired(s, e, now) || atomic_load_explicit(&e->ref, memory_order_relaxed) == 0) {
      return e;
    } else {
      (void)s3_main_step(s, e);
    }
  }
  return NULL;
}

/* Would the shard exceed its shares after adding add_entries (net) and
 * add_bytes - sub_bytes? */
static bool over_capacity(const struct cdcache__shard *s, int64_t add_entries, uint64_t add_bytes,
                          uint64_t sub_bytes)
{
  uint64_t n = atomic_load_explicit(&s->n_entries, memory_order_relaxed);
  uint64_t b = atomic_load_explicit(&s->n_bytes, memory_order_relaxed);
  if ((int64_t)n + add_entries > (int64_t)s->cap_entries)
    return true;
  return s->cap_bytes != 0 && b + add_bytes > s->cap_bytes + sub_bytes;
}

/* Unlinks expired entries from the head of list l until one is not. */
static void drop_expired_heads(struct cdcache__shard *s, struct cdcache__list *l,
                               const struct cdcache__entry *skip, uint64_t now,
                               struct cdcache__shard_report *rep)
{
  struct cdcache__entry *e;
  while ((e = l->head) != NULL && e != skip && expired(s, e, now))
    cdcache__shard_unlink(s, e, WHY_EXPIRED, rep);
}

int cdcache__shard_install(struct cdcache__shard *s, struct cdcache__entry *ne, uint64_t h,
                           uint64_t now, const struct cdcache__fill_link *own,
                           struct cdcache__shard_report *rep)
{
  CDCACHE__ASSERT_LOCKED(s);
  const bool is_ph = (ne->flags & CDCACHE__E_PLACEHOLDER) != 0;
  uint64_t charge = ne->charge;
  /* Find the key's entry, measuring the chain on the way (the tripwire).
   * No walk when the bucket's summary lacks the key's tag and the chain
   * is shorter than the tripwire (its length is in the bucket word). */
  _Atomic uintptr_t *b = bucket_of(s, (uint32_t)h);
  const uintptr_t w = atomic_load_explicit(b, memory_order_relaxed);
  struct cdcache__entry *old = NULL, *old_pred = NULL;
  uint64_t chain = 0;
  uintptr_t seen = 0; /* the tags of the entries walked */
  _Static_assert(CDCACHE__B_LEN_MAX < CDCACHE__CHAIN_TRIPWIRE, "a saturated length forces walks");
  const bool walk = (w & cdcache__tag_bit((uint32_t)h)) || bucket_len(w) == CDCACHE__B_LEN_MAX;
  if (walk) {
    /* The walk also yields the entry before the old one, to swap it
     * below without walking again (issue 10). */
    for (struct cdcache__entry *e = cdcache__bucket_first(w); e != NULL;
         old_pred = e, e = atomic_load_explicit(&e->next, memory_order_relaxed), chain++) {
      if (e->hash == (uint32_t)h && e->klen == ne->klen &&
          cdcache__key_eq(cdcache__entry_key(e), cdcache__entry_key(ne), ne->klen)) {
        old = e;
        break;
      }
      seen |= cdcache__tag_bit(e->hash);
    }
  }
  const bool old_live = old != NULL && !(old->flags & CDCACHE__E_PLACEHOLDER);
  const int64_t add_entries = (is_ph ? 0 : 1) - (old_live ? 1 : 0);
  const uint64_t old_charge = old != NULL ? old->charge : 0;
  const bool s3 = cdcache__policy_s3(s->env->policy);

  /* s3fifo: which FIFO ne joins, decided before eviction moves the hands.
   * A replaced entry's place and count carry over. */
  bool to_main = false;
  uint8_t keep_ref = 0;
  if (s3 && !is_ph && evictable(s, ne)) {
    if (old_live && evictable(s, old)) {
      to_main = old->in_main;
      keep_ref = atomic_load_explicit(&old->ref, memory_order_relaxed);
    } else {
      cdcache__s3_count(&s->s3, ne->hash);
      if (cdcache__s3_ghost_has(&s->s3, ne->hash)) {
        to_main = true;
        if (over_capacity(s, add_entries, charge, old_charge)) {
          const struct cdcache__entry *v = s3_main_victim(s, old, now);
          to_main =
              v == NULL || cdcache__s3_freq(&s->s3, ne->hash) > cdcache__s3_freq(&s->s3, v->hash);
        }
      }
    }
  }

  const bool made_room = over_capacity(s, add_entries, charge, old_charge);
  if (made_room) {
    if (s->env->policy == CDCACHE_NOEVICTION) {
      /* Only expired entries may go; if that is not enough, change nothing. */
      cdcache__shard_sweep(s, now, old, rep);
      drop_expired_heads(s, &s->lists[0], old, now, rep);
      if (over_capacity(s, add_entries, charge, old_charge))
        return CDCACHE_EFULL;
    } else {
      struct cdcache__list *l = &s->lists[s->env->policy == CDCACHE_VOLATILE_LRU ? 1 : 0];
      /* What eviction could free at most (the evictable entries, less the
       * one being replaced): when even that is not enough, fail before
       * evicting. */
      const bool old_in = old_live && (s3 ? evictable(s, old) : list_of(s, old) == l);
      uint64_t len = l->len, bytes = l->bytes;
      if (s3) {
        len = s->lists[L_SMALL].len + s->lists[L_MAIN].len;
        bytes = s->lists[L_SMALL].bytes + s->lists[L_MAIN].bytes;
      }
      const int64_t can_entries = (int64_t)len - (old_in ? 1 : 0);
      const uint64_t can_bytes = bytes - (old_in ? old_charge : 0);
      if (over_capacity(s, add_entries - can_entries, charge, old_charge + can_bytes))
        return CDCACHE_EFULL;
      while (over_capacity(s, add_entries, charge, old_charge)) {
        enum cdcache__why why;
        struct cdcache__entry *v =
            s3 ? pick_victim_s3(s, old, now, &why) : pick_victim(s, l, old, now, &why);
        if (v == NULL)
          return CDCACHE_EFULL; /* not reached: the floor check above */
        cdcache__shard_unlink(s, v, why, rep);
      }
    }
  }

  /* Link: swap in place of the old entry (P3), or push on the bucket. */
  atomic_store_explicit(&ne->ref, keep_ref, memory_order_relaxed);
  ne->in_main = to_main ? 1u : 0u;
  if (old != NULL) {
    /* Making room never unlinks old (it is skipped), but it may have
     * unlinked old_pred, which still points at old (P2): then walk again. */
    struct cdcache__entry *pred = made_room ? pred_of(s, old) : old_pred;
    atomic_store_explicit(&ne->next, atomic_load_explicit(&old->next, memory_order_relaxed),
                          memory_order_relaxed);
    if (pred != NULL) {
      atomic_store_explicit(&pred->next, ne, memory_order_release);
    } else {
      /* Same key, same tag: the summary and length stay. */
      uintptr_t wn = atomic_load_explicit(b, memory_order_relaxed);
      atomic_store_explicit(b, bucket_word(ne, wn, bucket_len(wn)), memory_order_release);
    }
    uint64_t oc = old_charge;
    if (old_live) {
      list_remove(list_of(s, old), old);
      if (old->flags & CDCACHE__E_TTL)
        s->n_ttl--;
    } else {
      struct cdcache__fill_link *f = cdcache__entry_link(old);
      f->ph = NULL;
      if (f != own)
        f->dead = true;
    }
    atomic_store_explicit(&s->n_bytes, atomic_load_explicit(&s->n_bytes, memory_order_relaxed) - oc,
                          memory_order_relaxed);
    retire(s, old, oc);
  } else {
    /* Making room may have unlinked entries of this chain since w. */
    uintptr_t wn = atomic_load_explicit(b, memory_order_relaxed);
    atomic_store_explicit(&ne->next, cdcache__bucket_first(wn), memory_order_relaxed);
    /* A full walk knew every tag on the chain (and more, if making room
     * unlinked some since): the summary drops the tags of entries gone.
     * Its count is exact unless making room changed the chain. */
    uintptr_t sum = walk ? seen : wn;
    unsigned len = walk && !made_room ? (unsigned)chain + 1 : bucket_len(wn) + 1;
    atomic_store_explicit(b, bucket_word(ne, sum | cdcache__tag_bit(ne->hash), len),
                          memory_order_release);
    if (chain >= CDCACHE__CHAIN_TRIPWIRE)
      rep->long_chains++;
  }
  if (!is_ph) {
    list_append(list_of(s, ne), ne);
    if (ne->flags & CDCACHE__E_TTL)
      s->n_ttl++;
  }
  atomic_store_explicit(&s->n_entries,
                        atomic_load_explicit(&s->n_entries, memory_order_relaxed) +
                            (uint64_t)add_entries,
                        memory_order_relaxed);
  atomic_store_explicit(&s->n_bytes,
                        atomic_load_explicit(&s->n_bytes, memory_order_relaxed) + charge,
                        memory_order_relaxed);
  return 0;
}

void cdcache__shard_sweep(struct cdcache__shard *s, uint64_t now, const struct cdcache__entry *skip,
                          struct cdcache__shard_report *rep)
{
  CDCACHE__ASSERT_LOCKED(s);
  if (s->n_ttl == 0)
    return;
  for (int i = 0; i < SWEEP_BUCKETS; i++) {
    uint64_t b = s->sweep_cursor++ & s->mask;
    struct cdcache__entry *e =
        cdcache__bucket_first(atomic_load_explicit(&s->buckets[b], memory_order_relaxed));
    while (e != NULL) {
      struct cdcache__entry *next = atomic_load_explicit(&e->next, memory_order_relaxed);
      if (e != skip && !(e->flags & CDCACHE__E_PLACEHOLDER) && expired(s, e, now))
        cdcache__shard_unlink(s, e, WHY_EXPIRED, rep);
      e = next;
    }
  }
}

void cdcache__shard_clear(struct cdcache__shard *s, struct cdcache__shard_report *rep)
{
  CDCACHE__ASSERT_LOCKED(s);
  if (s->s3.sketch != NULL)
    cdcache__s3_clear(&s->s3); /* a flushed cache starts with no history */
  for (uint64_t b = 0; b <= s->mask; b++) {
    struct cdcache__entry *e;
    while ((e = cdcache__bucket_first(
                atomic_load_explicit(&s->buckets[b], memory_order_relaxed))) != NULL)
      cdcache__shard_unlink(s, e, WHY_FLUSHED, rep);
  }
}
