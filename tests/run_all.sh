#!/usr/bin/env bash
# `make test`. The quick bench (`make bench QUICK=1`, counted by bench/main.ts), then two parts,
# each under a time limit, each counted by tests/run.sh:
#   host  every tests/*_test.ts but the v2-only files, on this machine's kernel (cgroup v1 here);
#   v2    the v2 driver tests plus the end-to-end suites (V2_FILES in tests/run_cgroup_v2.sh)
#         on a cgroup v2 kernel: User-mode Linux on a cgroup v1 host, the host itself on a v2 host.
# A part counts as failed when its exit status and its summary file disagree, or when it left no
# summary. The last line is the combined `N passed, N failed, N skipped`.
# JOBWORKER_SKIP_CGROUP_V2=1 leaves out the v2 part (counted as one skip; a failure when CI=true).
set -uo pipefail
deno_bin=$1
cd "$(dirname "$0")/.."
mkdir -p build
# Files only a cgroup v2 kernel runs.
V2_ONLY=(tests/cgroups_v2_test.ts)
host_files=()
for f in tests/*_test.ts; do
  [[ " ${V2_ONLY[*]} " == *" $f "* ]] || host_files+=("$f")
done
total_passed=0 total_failed=0 total_skipped=0

# part NAME SUMMARY_FILE COMMAND...: runs one part and adds its counts.
part() {
  local name=$1 summary=$2
  shift 2
  rm -f "$summary"
  local start rc p=0 f=0 s=0
  start=$(date +%s)
  "$@"
  rc=$?
  if [ -s "$summary" ] && read -r p f s < "$summary" && [ -n "${s:-}" ]; then
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
      echo "run_all: the $name part exited $rc but its summary says 0 failed: counted as a failure" >&2
      f=1
    elif [ "$rc" -eq 0 ] && [ "$f" -ne 0 ]; then
      echo "run_all: the $name part exited 0 but its summary says $f failed" >&2
    fi
  else
    echo "run_all: the $name part (exit $rc) left no summary in $summary: counted as a failure" >&2
    p=0 f=1 s=0
  fi
  echo "$name part: $p passed, $f failed, $s skipped in $(($(date +%s) - start)) s (exit $rc)"
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
  total_skipped=$((total_skipped + s))
}

start=$(date +%s)
# The quick bench first, while the machine is quiet: it fails only when a ratio is worse than 2x
# its recorded value (bench/recorded.json), and counts each checked ratio as passed or failed.
# JOBWORKER_SKIP_BENCH=1 leaves it out (counted as a skip; a failure under CI=true).
if [ "${JOBWORKER_SKIP_BENCH:-0}" = 1 ]; then
  if [ "${CI:-}" = true ]; then
    echo "run_all: JOBWORKER_SKIP_BENCH=1 on CI: the quick bench must run" >&2
    total_failed=$((total_failed + 1))
  else
    echo "bench part: skipped (JOBWORKER_SKIP_BENCH=1)"
    total_skipped=$((total_skipped + 1))
  fi
else
  part bench build/summary-bench env SUMMARY_FILE=build/summary-bench \
    timeout -k 30 600 "$deno_bin" run --allow-all --no-prompt --cached-only bench/main.ts --quick
fi
HOST_TIMEOUT=${HOST_TIMEOUT:-2400}
part host build/summary-host env SUMMARY_FILE=build/summary-host PART_TIMEOUT="$HOST_TIMEOUT" \
  timeout -k 30 $((HOST_TIMEOUT + 120)) bash tests/run.sh "$deno_bin" "${host_files[@]}"
if [ "${JOBWORKER_SKIP_CGROUP_V2:-0}" = 1 ]; then
  if [ "${CI:-}" = true ]; then
    echo "run_all: JOBWORKER_SKIP_CGROUP_V2=1 on CI: the v2 part must run" >&2
    total_failed=$((total_failed + 1))
  else
    echo "v2 part: skipped (JOBWORKER_SKIP_CGROUP_V2=1)"
    total_skipped=$((total_skipped + 1))
  fi
else
  V2_TIMEOUT=${V2_TIMEOUT:-2400}
  part v2 build/summary-v2 env SUMMARY_FILE=build/summary-v2 PART_TIMEOUT="$V2_TIMEOUT" \
    timeout -k 30 $((V2_TIMEOUT + 180)) bash tests/run_cgroup_v2.sh "$deno_bin"
fi
echo "whole suite took $(($(date +%s) - start)) s"
echo "$total_passed passed, $total_failed failed, $total_skipped skipped"
[ "$total_failed" -eq 0 ]
