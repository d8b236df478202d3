#!/usr/bin/env bash
# The scale benchmark of deed (issue 6): generates a workload, measures the
# floors and deed's commands on it in one run, and prints a table of ratios.
#
#   benches/scale.sh [SCALE ...]        SCALE: XS | S | M | L   (default: M)
#   benches/scale.sh M L                also prints the growth from M to L
#
# Needs only cargo (and GNU time at /usr/bin/time for peak RSS; without it
# RSS is reported as n/a). Environment:
#   BENCH_DIR   where workloads, states and results go (default target/bench)
#   BENCH_KEEP  1: keep the workloads and states afterwards (default: removed)
#   BENCH_SKIP_DUMP  1: skip the dump/restore round trip
#   BENCH_REPEAT  runs of validate, the plan without changes and their
#               floors, alternately; their medians are compared (default 5)
#   BENCH_APPLY_REPEAT  runs of the reassign apply and of the rewrite floor,
#               alternately, each on a fresh copy of the state; their
#               medians are compared (default 3)
# Results: BENCH_DIR/results-SCALE.md (the table) and results-SCALE.tsv.
#
# Every deed time is wall time of the real binary measured from outside
# (process start-up included); each floor is a process of
# examples/floors.rs timed the same way on the same data:
#   parse floor    serde_yaml of every document into deed's Fragment, 1 thread
#   scan floor     open a copy of the state with one record per object (deed
#                  keeps assets in pages; `floors records` makes the copy),
#                  iterate objects+invoices with sled
#   rewrite floor  open that copy, rewrite N asset values (keys) in sled
#                  batches of 250 (sled's fastest batch; see BENCHMARKS.md),
#                  flush
#   (reference)    the same with a history entry per rewrite (--history)
#   (reference)    the same with the history in deed's packed groups
#                  (--history --grouped): deed's history records, next
#                  to a record per asset
#   (reference)    the same with no batches, each value set on its own
#                  (--batch 0): faster than any batch in sled 0.34
# Benchmarks are not timed tests: CI runs `benches/scale.sh XS` only to keep
# this script working; the targets are checked by reading the table.
set -euo pipefail
# $EPOCHREALTIME, awk and sort read numbers with a decimal point.
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/bench}
SCALES=("$@")
[ ${#SCALES[@]} -eq 0 ] && SCALES=(M)
for scale in "${SCALES[@]}"; do
  case $scale in XS|S|M|L) ;; *) echo "unknown scale $scale (XS|S|M|L)" >&2; exit 2 ;; esac
done

(cd "$ROOT" && cargo build --release --quiet --bin deed --example generate --example floors)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DEED=$TARGET/release/deed
GEN=$TARGET/release/examples/generate
FLOORS=$TARGET/release/examples/floors
TIME=/usr/bin/time
if ! "$TIME" -f %M true >/dev/null 2>&1; then
  echo "note: GNU time not found at /usr/bin/time (apt-get install time): peak RSS is n/a" >&2
  TIME=""
fi
# A fixed clock: invitations issued at setup do not expire during the run.
export DEED_NOW=2026-11-23T12:00:00Z NO_COLOR=1
unset DEED_SPECS DEED_STATE DEED_LOG
mkdir -p "$WORK"
REPEAT=${BENCH_REPEAT:-5}
APPLY_REPEAT=${BENCH_APPLY_REPEAT:-3}

# measure NAME CMD...: runs CMD, sets SECS (wall) and RSS_MB (peak), keeps
# its stdout in $DIR/NAME.out; a failure stops the benchmark.
measure() {
  local name=$1; shift
  # `deed SPECS STATE ARGS...` is the deed binary on folders of $DIR.
  [ "$1" = deed ] && set -- "$DEED" --specs "$DIR/$2" --state "$DIR/$3" "${@:4}"
  local t0 t1
  # bash's own clock: no process started around the command timed.
  t0=$EPOCHREALTIME
  if [ -n "$TIME" ] && [ -z "${UNWRAPPED:-}" ]; then
    if ! "$TIME" -f %M -o "$DIR/$name.rss" "$@" >"$DIR/$name.out" 2>"$DIR/$name.err"; then
      echo "FAILED: $name: $*" >&2; tail -20 "$DIR/$name.err" >&2; exit 1
    fi
    RSS_MB=$(awk 'END { printf "%.0f", $1 / 1024 }' "$DIR/$name.rss")
  else
    if ! "$@" >"$DIR/$name.out" 2>"$DIR/$name.err"; then
      echo "FAILED: $name: $*" >&2; tail -20 "$DIR/$name.err" >&2; exit 1
    fi
    RSS_MB=n/a
  fi
  t1=$EPOCHREALTIME
  SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  printf '  %-22s %9s s %7s MB\n' "$name" "$SECS" "$RSS_MB" >&2
  printf '%s\t%s\t%s\n' "$name" "$SECS" "$RSS_MB" >>"$DIR/times.tsv"
}

# median N...: the middle of the numbers (the upper one of two).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { if (r == "n/a") print "n/a"; else if (r + 0 <= t + 0) print "met"; else print "MISSED" }'; }
deed() { "$DEED" --specs "$DIR/$1" --state "$DIR/$2" "${@:3}"; }
get() { awk -F'\t' -v n="$2" '$1 == n { v = $'"$3"' } END { print v }' "$1"; }

run_scale() {
  local scale=$1
  DIR=$WORK/$scale
  rm -rf "$DIR"; mkdir -p "$DIR"; : >"$DIR/times.tsv"
  echo "== scale $scale: generating into $DIR" >&2
  "$GEN" --scale "$scale" --out "$DIR" >"$DIR/workload.out"
  local spec_mb
  spec_mb=$(du -sb "$DIR/specs" | awk '{ printf "%.1f", $1 / 1e6 }')

  echo "== scale $scale: setting up the state" >&2
  measure setup-apply deed specs state apply
  measure inventory-import deed specs state inventory import "$DIR/inventory.jsonl"
  measure converge-apply deed specs state apply
  # The floors run on a copy with one record per object: deed keeps assets
  # in pages, the issue's floors count sled's work on a key per object.
  rm -rf "$DIR/state-records"
  "$FLOORS" records "$DIR/state" "$DIR/state-records" >"$DIR/records.out"

  echo "== scale $scale: measuring" >&2
  # validate, the plan without changes and their floors take seconds or
  # less: each pair is run $REPEAT times, alternately, and the medians are
  # compared (one run of a 50 ms command is mostly noise).
  # The timed runs are not wrapped in GNU time (its own fork and exec
  # cost milliseconds); one more run of each, untimed, gives the peak RSS.
  local parses=() validates=() scans=() plans=()
  for _ in $(seq "$REPEAT"); do
    UNWRAPPED=1 measure parse-floor "$FLOORS" parse "$DIR/specs"; parses+=("$SECS")
    UNWRAPPED=1 measure validate deed specs state validate; validates+=("$SECS")
  done
  measure validate-rss deed specs state validate
  local t_parse t_validate t_scan t_plan
  t_parse=$(median "${parses[@]}"); t_validate=$(median "${validates[@]}")
  cp -r "$DIR/state-records" "$DIR/floor-scan"
  # Copies of a large state leave gigabytes of dirty pages: written back
  # now, not while the next command is timed.
  sync
  for _ in $(seq "$REPEAT"); do
    UNWRAPPED=1 measure scan-floor "$FLOORS" scan "$DIR/floor-scan"; scans+=("$SECS")
    UNWRAPPED=1 measure plan-unchanged deed specs state plan; plans+=("$SECS")
  done
  measure plan-unchanged-rss deed specs state plan
  t_scan=$(median "${scans[@]}"); t_plan=$(median "${plans[@]}")
  rm -rf "$DIR/floor-scan"
  grep -q "No changes" "$DIR/plan-unchanged.out" || { echo "plan after apply is not empty" >&2; exit 1; }
  # The daemon: one file edited at a time, new plan (median of 5 edits).
  local t_daemon
  if command -v curl >/dev/null && command -v python3 >/dev/null; then
    t_daemon=$("$ROOT/benches/daemon-edit.sh" "$DEED" "$DIR/specs" "$DIR/state" 5 2>"$DIR/daemon-edit.err") \
      || { echo "FAILED: daemon edits" >&2; cat "$DIR/daemon-edit.err" >&2; exit 1; }
    sed 's/^/  /' "$DIR/daemon-edit.err" >&2
  else
    echo "note: curl or python3 missing: the daemon row is n/a" >&2
    t_daemon=n/a
  fi

  # The reassign benchmark, on copies of the converged state: the apply
  # and the rewrite floor APPLY_REPEAT times each, alternately, each on a
  # fresh copy; their medians are compared (one run of a large apply
  # varies by a second or more). The last apply's state is kept.
  mkdir -p "$DIR/specs-reassign"
  cp -r "$DIR/specs/." "$DIR/specs-reassign/"
  cp "$DIR/reassign.yaml" "$DIR/specs-reassign/zz-reassign.yaml"
  cp -r "$DIR/state" "$DIR/state-reassign"
  sync
  measure reassign-plan deed specs-reassign state-reassign plan; local t_rplan=$SECS rss_rplan=$RSS_MB
  local transfers
  transfers=$(sed -n 's/^Plan: .* \([0-9][0-9]*\) to transfer.*/\1/p' "$DIR/reassign-plan.out")
  local applies=() rewrites=() apply_rss=() i
  for ((i = 1; i <= APPLY_REPEAT; i++)); do
    rm -rf "$DIR/state-reassign" "$DIR/floor-rewrite"
    cp -r "$DIR/state" "$DIR/state-reassign"
    cp -r "$DIR/state-records" "$DIR/floor-rewrite"
    sync
    measure reassign-apply deed specs-reassign state-reassign apply; applies+=("$SECS"); apply_rss+=("$RSS_MB")
    measure rewrite-floor "$FLOORS" rewrite "$DIR/floor-rewrite" "$transfers"; rewrites+=("$SECS")
  done
  rm -rf "$DIR/floor-rewrite"
  local t_rapply t_rewrite rss_rapply
  t_rapply=$(median "${applies[@]}"); t_rewrite=$(median "${rewrites[@]}")
  rss_rapply=$(printf '%s\n' "${apply_rss[@]}" | sort -n | tail -1)
  # For reference: the rewrite plus the history entry the contract keeps
  # for each change, in the same batches.
  cp -r "$DIR/state-records" "$DIR/floor-history"
  sync
  measure rewrite-history-floor "$FLOORS" rewrite "$DIR/floor-history" "$transfers" --history; local t_history=$SECS
  rm -rf "$DIR/floor-history"
  # For reference: the rewrite plus the history as deed keeps it (each
  # entry's change, in deed's packed groups of about 8 KiB).
  cp -r "$DIR/state-records" "$DIR/floor-grouped"
  sync
  measure rewrite-grouped-floor "$FLOORS" rewrite "$DIR/floor-grouped" "$transfers" --history --grouped; local t_grouped=$SECS
  rm -rf "$DIR/floor-grouped"
  # For reference too: the rewrite with no batches, each record set on its
  # own (sled's fastest way; deed's journal replays so from session 13).
  cp -r "$DIR/state-records" "$DIR/floor-single"
  sync
  measure rewrite-single-floor "$FLOORS" rewrite "$DIR/floor-single" "$transfers" --batch 0; local t_single=$SECS
  rm -rf "$DIR/floor-single"
  deed specs-reassign state-reassign plan >"$DIR/reassign-replan.out" 2>&1 || true
  grep -q "No changes" "$DIR/reassign-replan.out" || { echo "plan after the reassign apply is not empty" >&2; exit 1; }
  measure state-check deed specs-reassign state-reassign state check

  # dump / restore of the whole state (issue 6, item 6).
  local dump_row=""
  if [ "${BENCH_SKIP_DUMP:-0}" != 1 ]; then
    measure state-dump deed specs-reassign state-reassign state dump "$DIR/dump.jsonl"; local t_dump=$SECS
    measure state-restore deed specs-reassign state-restored state restore "$DIR/dump.jsonl"; local t_restore=$SECS
    deed specs-reassign state-restored state dump "$DIR/dump2.jsonl" >/dev/null 2>&1
    local same=differs
    cmp -s "$DIR/dump.jsonl" "$DIR/dump2.jsonl" && same=identical
    dump_row="| state dump + restore (item 6) | ${t_dump} s + ${t_restore} s, $(du -m "$DIR/dump.jsonl" | cut -f1) MB dump, re-dump $same | | |"
    rm -rf "$DIR/state-restored" "$DIR/dump2.jsonl"
  fi

  local floor_plan r_validate r_plan r_apply rss_peak
  floor_plan=$(add "$t_parse" "$t_scan")
  r_validate=$(ratio "$t_validate" "$t_parse")
  r_plan=$(ratio "$t_plan" "$floor_plan")
  r_apply=$(ratio "$t_rapply" "$t_rewrite")
  local r_history r_grouped r_single
  r_history=$(ratio "$t_rapply" "$t_history")
  r_grouped=$(ratio "$t_rapply" "$t_grouped")
  r_single=$(ratio "$t_rapply" "$t_single")
  rss_peak=$(printf '%s\n%s\n' "$rss_rplan" "$rss_rapply" | sort -n | tail -1)
  local rss_verdict=n/a
  [ "$rss_peak" != n/a ] && rss_verdict=$(verdict "$rss_peak" 1024)
  {
    echo "### Scale $scale ($(head -c 300 "$DIR/workload.out" | tr -d '{}"' | sed 's/, /, /g'))"
    echo
    echo "Spec files: ${spec_mb} MB. Objects in the state: $(sed -n 's/.*items=\([0-9]*\).*/\1/p' "$DIR/scan-floor.out") records (objects + invoices)."
    echo
    echo "| measure | deed | floor | ratio | target | |"
    echo "| --- | --- | --- | --- | --- | --- |"
    echo "| validate vs parse floor (medians of $REPEAT alternate runs) | ${t_validate} s | ${t_parse} s | ${r_validate}× | ≤ 0.75× | $(verdict "$r_validate" 0.75) |"
    echo "| plan, no changes vs parse + scan floor (medians of $REPEAT) | ${t_plan} s | ${t_parse} + ${t_scan} s | ${r_plan}× | ≤ 1.0× | $(verdict "$r_plan" 1.0) |"
    echo "| apply of reassign (${transfers} transfers, plans too) vs rewrite floor (medians of $APPLY_REPEAT alternate runs) | ${t_rapply} s | ${t_rewrite} s | ${r_apply}× | ≤ 1.5× | $(verdict "$r_apply" 1.5) |"
    echo "| the same vs rewrite + a history entry per change (reference: the records the contract asks for) | ${t_rapply} s | ${t_history} s | ${r_history}× | | |"
    echo "| the same vs rewrite + the history as deed groups it (reference: the history records deed writes, next to a record per asset where deed writes pages; no plan, checks or journal; one run) | ${t_rapply} s | ${t_grouped} s | ${r_grouped}× | | |"
    echo "| the same vs rewrite with no batches (reference: sled's fastest way, one run) | ${t_rapply} s | ${t_single} s | ${r_single}× | | |"
    echo "| peak RSS of reassign plan / apply (the largest of the applies) | ${rss_rplan} / ${rss_rapply} MB | | | ≤ 1024 MB | ${rss_verdict} |"
    echo "| reassign plan alone (for reference) | ${t_rplan} s | | | | |"
    local d_verdict=n/a
    [ "$t_daemon" != n/a ] && d_verdict=$(verdict "$t_daemon" 150)
    echo "| daemon: one spec file edited → new plan (median of 5 edits, from the start of the reconcile) | ${t_daemon} ms | | | ≤ 150 ms | ${d_verdict} |"
    echo
    echo "Setup (for reference): first apply $(get "$DIR/times.tsv" setup-apply 2) s / $(get "$DIR/times.tsv" setup-apply 3) MB,"
    echo "inventory import $(get "$DIR/times.tsv" inventory-import 2) s / $(get "$DIR/times.tsv" inventory-import 3) MB,"
    echo "converging apply $(get "$DIR/times.tsv" converge-apply 2) s, state check after reassign $(get "$DIR/times.tsv" state-check 2) s."
    [ -n "$dump_row" ] && { echo; echo "| round trip | result | | |"; echo "| --- | --- | --- | --- |"; echo "$dump_row"; }
    echo
  } >"$DIR/results.md"
  printf 'validate\t%s\nplan\t%s\nreassign\t%s\n' "$t_validate" "$t_plan" "$t_rapply" >"$WORK/results-$scale.tsv"
  cp "$DIR/results.md" "$WORK/results-$scale.md"
  cat "$DIR/results.md"
  if [ "${BENCH_KEEP:-0}" != 1 ]; then
    rm -rf "$DIR"
  fi
}

for scale in "${SCALES[@]}"; do
  run_scale "$scale"
done

# Growth from M to L, when both ran in this invocation.
if printf '%s\n' "${SCALES[@]}" | grep -qx M && printf '%s\n' "${SCALES[@]}" | grep -qx L; then
  {
    echo "### Growth from M to L (10× the data; target ≤ 11×)"
    echo
    echo "| measure | M | L | growth | |"
    echo "| --- | --- | --- | --- | --- |"
    for m in validate plan reassign; do
      a=$(get "$WORK/results-M.tsv" $m 2); b=$(get "$WORK/results-L.tsv" $m 2); r=$(ratio "$b" "$a")
      echo "| $m | $a s | $b s | ${r}× | $(verdict "$r" 11) |"
    done
    echo
  } | tee "$WORK/results-growth.md"
fi
