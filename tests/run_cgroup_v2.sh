#!/usr/bin/env bash
# Runs test files on a cgroup v2 kernel. On a cgroup v2 host that is the host itself; on a cgroup
# v1 host it is User-mode Linux booted by shared/cgroup-v2/run-in-uml.sh (one boot for all the
# files: system calls are ~70x slower there, a boot ~3 s), with a file-backed scratch disk
# (/dev/ubda, 98:0) for the IO limit tests. Ends with `N passed, N failed, N skipped`.
# Usage: tests/run_cgroup_v2.sh DENO [test files...]   (default: V2_FILES below).
# Environment: SUMMARY_FILE, PART_TIMEOUT (seconds for the tests inside the guest, default 1800;
# the guest itself is killed 120 s later).
set -uo pipefail
deno_bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
cd "$(dirname "$0")/.."
root=$(pwd)
# The v2 driver tests and the end-to-end suites that touch cgroups (limits, stops, the record).
V2_FILES=(tests/cgroups_v2_test.ts tests/resources_test.ts tests/jobs_test.ts
  tests/robustness_test.ts tests/readme_claims_test.ts tests/cli_e2e_test.ts)
# With V2_ALL=1 also streaming and auth (output and roles, the same on either cgroup version), least
# privilege (a job's cgroup files), the init pool (waiting inits in the worker's cgroup) and
# operations (OOM kills counted from memory.events): they pass on v2, and take too long in the
# guest for CI's budget on the slower machines.
V2_MORE_FILES=(tests/streaming_test.ts tests/auth_test.ts tests/least_privilege_test.ts
  tests/init_pool_test.ts tests/operations_test.ts)
[ "${V2_ALL:-0}" = 1 ] && V2_FILES+=("${V2_MORE_FILES[@]}")
[ $# -gt 0 ] || set -- "${V2_FILES[@]}"
summary=${SUMMARY_FILE:-$root/build/cgroup-v2-summary}
case "$summary" in /*) ;; *) summary=$root/$summary ;; esac
part_timeout=${PART_TIMEOUT:-1800}
mkdir -p build
rm -f "$summary"
fail() {
  echo "cgroup v2 suite: $*" >&2
  echo "0 1 0" > "$summary"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
}
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "cgroup v2 suite: this host runs cgroup v2, running on it directly"
  SUMMARY_FILE=$summary PART_TIMEOUT=$part_timeout exec bash tests/run.sh "$deno_bin" "$@"
fi
shared=${JOBWORKER_SHARED_DIR:-$root/../shared}
runner=$shared/cgroup-v2/run-in-uml.sh
[ -f "$runner" ] || fail "$runner not found (set JOBWORKER_SHARED_DIR)"
if ! command -v linux.uml >/dev/null || ! command -v insmod >/dev/null; then
  apt-get update -qq && apt-get install -y -qq user-mode-linux kmod >/dev/null || fail "cannot install user-mode-linux"
fi
# On hosts whose CPUs have AMX, the host kernel takes UML's XSTATE register writes only at full
# size; a tiny LD_PRELOAD shim pads them (see tests/uml/xstatefix.c).
if [ ! -f build/xstatefix.so ] || [ tests/uml/xstatefix.c -nt build/xstatefix.so ]; then
  gcc -O2 -shared -fPIC -o build/xstatefix.so tests/uml/xstatefix.c -ldl || fail "cannot build the UML shim"
fi
cat > build/linux-uml <<WRAP
#!/bin/sh
LD_PRELOAD=$root/build/xstatefix.so exec $(command -v linux.uml) "\$@"
WRAP
chmod +x build/linux-uml
disk=$root/build/uml-disk.img
rm -f "$disk" && truncate -s 64M "$disk"
# The guest is made more like a real host before the tests: loop devices (least_privilege's block
# device test attaches one) and a network interface besides loopback (a dummy one: the guest has no
# NIC; the network tests tell the host's network from a job's own by it). The modules are UML's own.
guest_setup='mods=/usr/lib/uml/modules/$(uname -r)/kernel/drivers
  insmod $mods/block/loop.ko && insmod $mods/net/dummy.ko && ip link set dummy0 up ||
  { echo "cgroup v2 suite: cannot set up loop devices and dummy0 in the guest" >&2; exit 1; }'
start=$(date +%s)
UML_BIN=$root/build/linux-uml UML_DISK=$disk UML_MEM=${UML_MEM:-3G} \
  UML_TIMEOUT=$((part_timeout + 120)) \
  bash "$runner" "$guest_setup
    export DENO_DIR='$DENO_DIR' DENO_NO_UPDATE_CHECK=1 SUMMARY_FILE='$summary' \
    PART_TIMEOUT='$part_timeout' DENO_TEST_ARGS=--no-check JOBWORKER_UML=1; bash tests/run.sh '$deno_bin' $*"
rc=$?
echo "cgroup v2 suite took $(($(date +%s) - start)) s (exit $rc)"
rm -f "$disk"
if [ -s "$summary" ]; then
  read -r passed failed skipped < "$summary"
else
  echo "cgroup v2 suite: the guest wrote no summary" >&2
  passed=0 failed=1 skipped=0
fi
if [ "$rc" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then
  echo "cgroup v2 suite: the guest exited $rc but its summary says 0 failed" >&2
  failed=1
fi
echo "$passed $failed ${skipped:-0}" > "$summary"
echo "$passed passed, $failed failed, ${skipped:-0} skipped"
[ "$failed" -eq 0 ]
