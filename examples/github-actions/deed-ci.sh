#!/usr/bin/env bash
# deed in a pull-request workflow: the logic the GitHub Actions workflow
# (deed.yml beside this file) runs, kept in a script so that it can be run
# and tested anywhere.
#
#   deed-ci.sh plan  DUMP COMMENT_FILE   plan the specs against a state dump;
#                                        write the markdown comment; exit 0
#                                        (no changes or changes), 1 on error
#   deed-ci.sh apply                     apply the specs to the live state
#
# Environment: DEED (the deed binary, default: deed on PATH), DEED_SPECS,
# DEED_STATE (for apply), DEED_ACTOR (who merged; recorded in the history),
# DEED_MAX_REMOVAL (default 25).
set -euo pipefail

deed=${DEED:-deed}
max_removal=${DEED_MAX_REMOVAL:-25}

case "${1:-}" in
  plan)
    dump=${2:?usage: deed-ci.sh plan DUMP COMMENT_FILE}
    comment=${3:?usage: deed-ci.sh plan DUMP COMMENT_FILE}
    status=0
    # A dump opened with --state FILE is read-only: planning never touches
    # the live database.
    "$deed" plan --state "$dump" --format markdown --diff --detailed-exitcode \
      --max-removal "$max_removal" >"$comment.tmp" 2>"$comment.err" || status=$?
    case "$status" in
      0|2)
        mv "$comment.tmp" "$comment"
        rm -f "$comment.err"
        echo "plan written to $comment (exit $status: $([ "$status" = 2 ] && echo changes || echo no changes))"
        exit 0
        ;;
      *)
        # Invalid specs, a broken rule or the removal guard: the comment says
        # why, and the job fails.
        {
          echo "**deed plan failed** (exit $status)"
          echo
          if [ -s "$comment.tmp" ]; then cat "$comment.tmp"; echo; fi
          echo '```'
          cat "$comment.err"
          echo '```'
        } >"$comment"
        rm -f "$comment.tmp" "$comment.err"
        echo "plan failed; the reasons are in $comment" >&2
        exit 1
        ;;
    esac
    ;;
  apply)
    actor_args=()
    if [ -n "${DEED_ACTOR:-}" ]; then actor_args=(--actor "$DEED_ACTOR"); fi
    exec "$deed" apply --wait --max-removal "$max_removal" "${actor_args[@]}"
    ;;
  *)
    echo "usage: deed-ci.sh plan DUMP COMMENT_FILE | deed-ci.sh apply" >&2
    exit 1
    ;;
esac
