#!/usr/bin/env bash
# Runs a deno test suite and ends with the plain summary line `N passed, N failed`.
# Usage: tests/run.sh DENO [deno test arguments...]   (default: the whole suite under tests/)
# The counts are also written to $SUMMARY_FILE when it is set.
set -uo pipefail
deno_bin=$1
shift
[ $# -gt 0 ] || set -- tests/
log=$(mktemp)
trap 'rm -f "$log"' EXIT
NO_COLOR=1 "$deno_bin" test --allow-all --no-prompt "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1)
passed=$(sed -nE 's/^[A-Z a-z]+\| ([0-9]+) passed.*/\1/p' <<<"$summary")
failed=$(sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' <<<"$summary")
if [ -z "$passed" ] || [ -z "$failed" ]; then
  # The runner died before its summary: count that as a failure, never as a pass.
  passed=${passed:-0}
  failed=$(( ${failed:-0} + 1 ))
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
[ -n "${SUMMARY_FILE:-}" ] && echo "$passed $failed" > "$SUMMARY_FILE"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
