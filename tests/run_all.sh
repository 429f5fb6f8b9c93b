#!/usr/bin/env bash
# `make test`: the whole suite on this machine's kernel (cgroup v1 here), then the resource tests
# inside a cgroup v2 kernel (tests/run_cgroup_v2.sh). The last line is the combined
# `N passed, N failed`. Set JOBWORKER_SKIP_CGROUP_V2=1 to run only the first part.
set -uo pipefail
deno_bin=$1
cd "$(dirname "$0")/.."
mkdir -p build
total_passed=0 total_failed=0
add() {
  if [ -s "$1" ]; then
    read -r p f < "$1"
  else
    p=0 f=1
  fi
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
}
start=$(date +%s)
SUMMARY_FILE=build/summary-host bash tests/run.sh "$deno_bin" tests/
add build/summary-host
echo "host suite took $(( $(date +%s) - start )) s"
if [ "${JOBWORKER_SKIP_CGROUP_V2:-0}" != 1 ]; then
  rm -f build/cgroup-v2-summary
  bash tests/run_cgroup_v2.sh "$deno_bin"
  add build/cgroup-v2-summary
fi
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
