#!/usr/bin/env bash
# The daemon row of the scale benchmark (issue 6; issue 5 item 8): starts
# `deed daemon --dry-run` on a converged state, waits for its first plan,
# then edits one spec file at a time (a user added to one account, in turn
# in different files) and reads from /status how long after the start of
# the reconcile the new plan was ready (`plan_seconds`: reading the changed
# files, planning the accounts concerned and splicing them into the last
# plan). Prints one line per edit and the median, in milliseconds.
#
#   benches/daemon-edit.sh DEED SPECS STATE [EDITS]
#
# The specs folder is edited in place and restored at the end. With
# DAEMON_APPLY=1 the daemon applies (not --dry-run): the state changes.
set -euo pipefail
DEED=$1 SPECS=$2 STATE=$3 EDITS=${4:-5}
PORT=$(( 20000 + RANDOM % 20000 ))
LOG=$(mktemp)
MODE=--dry-run
[ "${DAEMON_APPLY:-0}" = 1 ] && MODE=--allow-removals
"$DEED" --specs "$SPECS" --state "$STATE" daemon "$MODE" --interval 1h \
  --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
PID=$!
BACKUP=$(mktemp -d)
cleanup() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  [ -d "$BACKUP/files" ] && cp -r "$BACKUP/files/." "$SPECS/"
  rm -rf "$BACKUP" "$LOG"
}
trap cleanup EXIT
status() { curl -s "http://127.0.0.1:$PORT/status" || true; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=d.get(sys.argv[1]); print("" if v is None else v)' "$1"; }
# The first plan loads the whole state: allow minutes at Workload L.
for _ in $(seq 1 1200); do
  [ -n "$(status | field result 2>/dev/null)" ] && break
  kill -0 "$PID" 2>/dev/null || { echo "the daemon exited:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.5
done
[ -n "$(status | field result)" ] || { echo "no first plan" >&2; exit 1; }
mkdir -p "$BACKUP/files"
mapfile -t FILES < <(cd "$SPECS" && find . -name '*.yaml' | sort | head -n "$EDITS")
times=()
for i in "${!FILES[@]}"; do
  file=${FILES[$i]}
  mkdir -p "$BACKUP/files/$(dirname "$file")"
  cp "$SPECS/$file" "$BACKUP/files/$file"
  before=$(status | field time)
  count=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["reconciles"])')
  account=$(sed -n 's/^account: //p' "$SPECS/$file" | head -1)
  domain=$(sed -n 's/^domains: \[\([^],]*\).*/\1/p' "$SPECS/$file" | head -1)
  # One line added under users: (a new member), as an editor would save it.
  awk -v line="  bench-$i@$domain: {role: member}" '{ print } /^users:$/ && !done { print line; done = 1 }' \
    "$SPECS/$file" >"$SPECS/$file.tmp~"
  mv "$SPECS/$file.tmp~" "$SPECS/$file"
  for _ in $(seq 1 600); do
    now=$(status)
    if [ "$(echo "$now" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reconciles"])')" != "$count" ] \
       && [ "$(echo "$now" | field trigger)" = "specs changed" ]; then
      break
    fi
    sleep 0.05
  done
  ms=$(echo "$now" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["plan_seconds"]*1000, 1))')
  how=$(echo "$now" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["planned"], d["planned_accounts"], d["changes"])')
  echo "edit $((i + 1)): $file ($account): plan ready after $ms ms ($how)" >&2
  times+=("$ms")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
