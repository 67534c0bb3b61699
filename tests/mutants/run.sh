#!/bin/sh
# Mutants the checks must catch (issue 15).
#
#   tests/mutants/run.sh [--short] [--keep] [--only PREFIX]
#
# Copies the sources to a scratch directory (nothing here touches the
# tree it runs from, and the library carries no mutation code), builds the
# targets the suites need once, then for each mutant: applies one
# deliberately broken change to the copy (it must match exactly once, or
# the run fails: a mutation that no longer applies is an error, not a
# pass), rebuilds, runs the suites that must catch it, restores the file.
# A suite catches a mutant when it exits non-zero and not 77 (skipped).
# Prints a table mutant / suite / verdict; exits 0 only when every suite
# caught its mutant, and when (full mode) every suite passed on the
# unmutated copy first.  --short (CI) runs one quick suite per mutant and
# skips the baseline run (CI's ctest runs the same suites unmutated).
# --only PREFIX runs only the mutants whose name starts with PREFIX (the
# full mode's baseline still runs every suite).
#
# Environment: JOBS (build parallelism, default 2), CDCACHE_MUTANT_DIR
# (scratch directory; default a new one under /tmp, removed unless --keep).
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHORT=0
KEEP=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
  --short) SHORT=1 ;;
  --keep) KEEP=1 ;;
  --only)
    [ $# -ge 2 ] || {
      echo "usage: $0 [--short] [--keep] [--only PREFIX]" >&2
      exit 2
    }
    ONLY=$2
    shift
    ;;
  *)
    echo "usage: $0 [--short] [--keep] [--only PREFIX]" >&2
    exit 2
    ;;
  esac
  shift
done
JOBS=${JOBS:-2}
WORK=${CDCACHE_MUTANT_DIR:-$(mktemp -d /tmp/cdcache-mutants.XXXXXX)}
SRC=$WORK/src
BLD=$WORK/build
LOG=$WORK/log
mkdir -p "$SRC" "$BLD" "$LOG"
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  if [ "$KEEP" = 0 ] && [ -z "${CDCACHE_MUTANT_DIR:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "mutants: scratch copy in $WORK" >&2
tar -C "$ROOT" --exclude=./build --exclude=./.git -cf - . | tar -C "$SRC" -xf -
cmake -S "$SRC" -B "$BLD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$LOG/configure" 2>&1 || {
  cat "$LOG/configure" >&2
  exit 1
}
TARGETS="cdcache-freshness cdcache-mongo-test-server cdcache-watch test_cdc_e2e test_cdc_unit test_fill test_policy_s3fifo"
# Builds the targets named (default: all of TARGETS).
build() {
  # shellcheck disable=SC2086 # a list
  cmake --build "$BLD" -j"$JOBS" --target ${1:-$TARGETS} >"$LOG/build" 2>&1
}
# The targets a suite runs: a CUnit suite core_X only its test_X.
targets_for() {
  case "$1" in
  core_*) echo "test_${1#core_}" ;;
  *) echo "$TARGETS" ;;
  esac
}
if ! build; then
  tail -40 "$LOG/build" >&2
  exit 1
fi

SERVER=$BLD/tests/mongo-server/cdcache-mongo-test-server
# The suites, by name: each a command that exits 0 when the code is right.
suite() {
  case "$1" in
  fresh_none) "$BLD/tests/freshness/cdcache-freshness" --seconds "$FRESH_S" --servers 2 \
    --cold-period-ms 2000 --fault none --mongo-server "$SERVER" ;;
  fresh_stream_stall) "$BLD/tests/freshness/cdcache-freshness" --seconds "$FRESH_S" \
    --servers 2 --fault stream-stall --mongo-server "$SERVER" ;;
  fresh_partition) "$BLD/tests/freshness/cdcache-freshness" --seconds "$FRESH_S" --servers 2 \
    --fault partition --mongo-server "$SERVER" ;;
  cdc_unit) "$BLD/test_cdc_unit" ;;
  core_fill) "$BLD/tests/test_fill" ;;
  core_policy_s3fifo) "$BLD/tests/test_policy_s3fifo" ;;
  core_concurrency) "$BLD/tests/test_concurrency" ;;
  core_bytes) "$BLD/tests/test_bytes" ;;
  e2e_*) "$BLD/test_cdc_e2e" --server "$SERVER" --watch "$BLD/cdcache-watch" \
    --only "${1#e2e_}" ;;
  *)
    echo "unknown suite $1" >&2
    return 2
    ;;
  esac
}

# Replaces the only occurrence of OLD in FILE (relative to the copy) by NEW.
mutate() {
  perl -e '
    my ($f, $old, $new) = @ARGV;
    local $/;
    open my $h, "<", $f or die "$f: $!";
    my $s = <$h>;
    close $h;
    my $n = () = $s =~ /\Q$old\E/g;
    if ($n != 1) { print STDERR "mutation does not apply to $f ($n matches)\n"; exit 3 }
    $s =~ s/\Q$old\E/$new/;
    open $h, ">", $f or die "$f: $!";
    print $h $s;
    close $h;' "$SRC/$1" "$2" "$3"
}

FAILED=0
ROWS=""
row() { ROWS="$ROWS$(printf '%-26s %-40s %s' "$1" "$2" "$3")
"; }

# run_mutant NAME FILE OLD NEW SUITE...
run_mutant() {
  name=$1 file=$2 old=$3 new=$4
  shift 4
  case "$name" in "$ONLY"*) ;; *) return ;; esac
  targets=""
  for s in "$@"; do targets="$targets $(targets_for "$s")"; done
  cp "$SRC/$file" "$WORK/saved"
  if ! mutate "$file" "$old" "$new"; then
    row "$name" "-" "MUTATION DOES NOT APPLY"
    FAILED=1
    return
  fi
  if ! build "$targets"; then
    tail -20 "$LOG/build" >&2
    row "$name" "-" "BUILD FAILED"
    FAILED=1
  else
    for s in "$@"; do
      set +e
      suite "$s" >"$LOG/$name.$s" 2>&1
      rc=$?
      set -e
      if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        row "$name" "$s" "caught (exit $rc)"
      else
        row "$name" "$s" "MISSED (exit $rc)"
        FAILED=1
      fi
    done
  fi
  cp "$WORK/saved" "$SRC/$file"
}

if [ "$SHORT" = 1 ]; then
  FRESH_S=5
  S_LATE="e2e_fail_closed_then_recover"
  S_DROP="fresh_none"
  S_BOUND="cdc_unit"
  S_ABSENT="fresh_none"
  S_FILL="e2e_race_load_overlapping_update"
else
  FRESH_S=6
  S_LATE="fresh_stream_stall e2e_fail_closed_then_recover"
  S_DROP="fresh_none e2e_ops_collection_scope"
  S_BOUND="fresh_partition e2e_catch_up_after_partition cdc_unit"
  S_ABSENT="fresh_none e2e_ops_collection_scope"
  S_FILL="e2e_race_load_overlapping_update core_fill"
  # Baseline: every suite passes on the unmutated copy, or a "caught"
  # below would mean nothing.
  DONE_BASE=""
  for s in $S_LATE $S_DROP $S_BOUND $S_ABSENT $S_FILL core_policy_s3fifo; do
    case " $DONE_BASE " in *" $s "*) continue ;; esac
    DONE_BASE="$DONE_BASE $s"
    set +e
    suite "$s" >"$LOG/baseline.$s" 2>&1
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then row "(none)" "$s" "passes"; else
      row "(none)" "$s" "FAILS UNMUTATED (exit $rc)"
      FAILED=1
    fi
  done
fi

# 1. The cache fails closed 700 ms after its bound.
# shellcheck disable=SC2086 # suite lists
run_mutant late_fail_close_700ms api/cache.c \
  'atomic_store_explicit(&c->fresh_until, ms, memory_order_release);' \
  'atomic_store_explicit(&c->fresh_until, ms != 0 && ms != CDCACHE__FRESH_FOREVER ? ms + 700 : ms, memory_order_release);' \
  $S_LATE
# 2. Three of every four evictions are dropped.
# shellcheck disable=SC2086
run_mutant evictions_dropped_3_of_4 cdc/event.c \
  '  rc = cdcache_invalidate(sub->cache, key, klen);' \
  '  static unsigned mutant_n;
  if (mutant_n++ % 4 != 0)
    return 0;
  rc = cdcache_invalidate(sub->cache, key, klen);' \
  $S_DROP
# 3. The bound advances on every reply (cut or not, aggregate or getMore).
# shellcheck disable=SC2086
run_mutant bound_on_every_reply cdc/bound.c \
  '  if (!r->is_getmore)
    return true; /* an aggregate vouches for nothing by itself */' \
  '  if (r->events == 0 || r->events > 0)
    return false;' \
  $S_BOUND
# 4. A stale absence stays cached: inserts evict nothing.
# shellcheck disable=SC2086
run_mutant stale_absence_cached cdc/event.c \
  '      evict(&sk, sub->keybuf, klen);' \
  '      if (d.op != CDCACHE_CDC_OP_INSERT)
        evict(&sk, sub->keybuf, klen);' \
  $S_ABSENT
# 5. A fill is cached although its key was invalidated while it loaded.
# shellcheck disable=SC2086
run_mutant fill_after_invalidation api/fill.c \
  'if (f->link.dead || f->epoch' \
  'if (f->epoch' \
  $S_FILL

# 5b. The reclaimer (issue 10): a round frees without waiting for a grace
# period; a batch of small entries goes to the pool with its tail lost.
run_mutant reclaim_no_grace_period core/reclaim.c \
  '  pthread_mutex_unlock(&R.mu);
  urcu_bp_synchronize_rcu();' \
  '  pthread_mutex_unlock(&R.mu);' core_concurrency
run_mutant reclaim_pool_loses_tail core/reclaim.c \
  '    pool_push(pool, b->list, b->tail);' \
  '    pool_push(pool, b->list, b->list);' core_bytes

# 6. The s3fifo policy (issue 13), each against the suite that must catch
# it (one suite, one small target: about 10 s each).
S3=core_policy_s3fifo
# The ghost's duel always admits the newcomer to M.
run_mutant s3_duel_always_admits shards/shard.c \
  'to_main =
              v == NULL || cdcache__s3_freq(&s->s3, ne->hash) > cdcache__s3_freq(&s->s3, v->hash);' \
  'to_main = true;
          (void)v;' $S3
# Flush keeps the sketch and the ghost.
run_mutant s3_flush_keeps_history shards/shard.c \
  '    cdcache__s3_clear(&s->s3); /* a flushed cache starts with no history */' \
  '    (void)0;' $S3
# The hit count saturates at 1, as allkeys-lru's reference bit.
run_mutant s3_hit_count_cap_1 api/access.c \
  '  uint8_t flags = cdcache__policy_s3(c->cfg.policy) ? CDCACHE__E_COUNT3 : 0;' \
  '  uint8_t flags = 0;' $S3
# The sketch and the ghost are not charged to the tables (nor max_bytes).
run_mutant s3_policy_bytes_uncharged api/cache.c \
  '  c->tables_bytes += c->policy_bytes;' \
  '' $S3
# M's hand gives another lap without lowering the count.
run_mutant s3_hand_never_lowers shards/shard.c \
  'atomic_store_explicit(&e->ref, (uint8_t)(r - 1), memory_order_relaxed);' \
  'atomic_store_explicit(&e->ref, r, memory_order_relaxed);' $S3
# A replaced entry starts over in S.
run_mutant s3_replaced_starts_over shards/shard.c \
  '      to_main = old->in_main;' \
  '      to_main = false;' $S3
# A replaced entry loses its count.
run_mutant s3_replaced_loses_count shards/shard.c \
  '      keep_ref = atomic_load_explicit(&old->ref, memory_order_relaxed);' \
  '      keep_ref = 0;' $S3
# The sketch never halves (no aging).
run_mutant s3_sketch_never_halved shards/s3fifo.c \
  '  if (++p->sketch_count >= p->sketch_reset_at) {' \
  '  if (++p->sketch_count >= p->sketch_reset_at && p->sketch == NULL) {' $S3
# The sketch counts every row, not only the least counters (it saturates).
run_mutant s3_sketch_counts_every_row shards/s3fifo.c \
  '    if (v[r] == least)' \
  '    if (v[r] != 15u)' $S3
# M's hand does not count in the sketch the hits it observes.
run_mutant s3_hand_hits_uncounted shards/shard.c \
  '  cdcache__s3_count(&s->s3, e->hash);
  list_remove(&s->lists[L_MAIN], e);' \
  '  list_remove(&s->lists[L_MAIN], e);' $S3
# The ghost back at 8 bits per key (a false positive rate of up to 6%).
run_mutant s3_ghost_8_bits_per_key shards/s3fifo.c \
  '#define GHOST_BITS_PER_KEY 11u' \
  '#define GHOST_BITS_PER_KEY 8u' $S3
# The hands' last resort gives up (EFULL).
run_mutant s3_last_resort_gives_up shards/shard.c \
  '  struct cdcache__entry *e = s3_oldest(s, skip);' \
  '  struct cdcache__entry *e = s3_oldest(s, skip) != NULL ? NULL : NULL;' $S3
# S's hit entries are dropped instead of moving to M.
run_mutant s3_no_move_to_main shards/shard.c \
  '    } else if (atomic_load_explicit(&e->ref, memory_order_relaxed) > 0) {' \
  '    } else if (atomic_load_explicit(&e->ref, memory_order_relaxed) > 3) {' $S3
# The ghost is never asked.
run_mutant s3_ghost_ignored shards/shard.c \
  '      if (cdcache__s3_ghost_has(&s->s3, ne->hash)) {' \
  '      if (cdcache__s3_ghost_has(&s->s3, ne->hash) && ne == NULL) {' $S3
# volatile-s3fifo evicts entries without a TTL too.
run_mutant s3_volatile_evicts_all shards/shard.c \
  '  return !cdcache__policy_volatile(s->env->policy) || (e->flags & CDCACHE__E_VOLATILE);' \
  '  return s != NULL || (e->flags & CDCACHE__E_VOLATILE);' $S3

printf '%-26s %-40s %s\n' "mutant" "suite" "verdict"
printf '%s' "$ROWS"
if [ "$FAILED" = 0 ]; then
  echo "mutants: every mutant caught" >&2
else
  echo "mutants: NOT every mutant caught (logs in $WORK/log; --keep keeps them)" >&2
  KEEP=1
fi
exit "$FAILED"
