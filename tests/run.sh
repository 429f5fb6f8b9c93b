#!/usr/bin/env bash
# Runs deno test files and ends with the plain line `N passed, N failed, N skipped`, counted by
# tests/summarize.ts from the runner's JUnit report and log (a runner that dies or hangs, a file
# that runs fewer tests than it registered, an ignored test that does not say why: failures).
# Usage: tests/run.sh DENO [test files or directories...]   (default: every tests/*_test.ts)
# Environment: SUMMARY_FILE (the counts are written there as `N N N`), PART_TIMEOUT (seconds for
# the whole `deno test`, default 1800; a hung product fails the run instead of hanging it),
# DENO_TEST_ARGS (more `deno test` flags, e.g. --no-check where the host part type-checked).
set -uo pipefail
deno_bin=$1
shift
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- tests/
files=()
for arg in "$@"; do
  if [ -d "$arg" ]; then
    for f in "${arg%/}"/*_test.ts; do [ -e "$f" ] && files+=("$f"); done
  else
    files+=("$arg")
  fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "${SUMMARY_FILE:-}" ] && rm -f "$SUMMARY_FILE"
NO_COLOR=1 timeout -k 30 "${PART_TIMEOUT:-1800}" "$deno_bin" test --allow-all --no-prompt \
  ${DENO_TEST_ARGS:-} --junit-path="$work/junit.xml" "${files[@]}" 2>&1 | tee "$work/log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && echo "run.sh: deno test timed out after ${PART_TIMEOUT:-1800} s" >&2
NO_COLOR=1 "$deno_bin" run --allow-all --no-prompt --cached-only tests/summarize.ts \
  "$work/log" "$work/junit.xml" "$rc" "${files[@]}"
