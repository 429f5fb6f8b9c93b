#!/usr/bin/env bash
# Runs the resource tests with the worker inside a cgroup v2 kernel: User-mode Linux booted by
# shared/cgroup-v2/run-in-uml.sh, with a file-backed disk (/dev/ubda, 98:0) for the IO limit test.
# Ends with `N passed, N failed`. Usage: tests/run_cgroup_v2.sh DENO
set -uo pipefail
deno_bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
cd "$(dirname "$0")/.."
root=$(pwd)
shared=${JOBWORKER_SHARED_DIR:-$root/../shared}
runner=$shared/cgroup-v2/run-in-uml.sh
fail() { echo "cgroup v2 suite: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
[ -x "$runner" ] || [ -f "$runner" ] || fail "$runner not found (set JOBWORKER_SHARED_DIR)"
if ! command -v linux.uml >/dev/null || ! command -v insmod >/dev/null; then
  apt-get update -qq && apt-get install -y -qq user-mode-linux kmod >/dev/null || fail "cannot install user-mode-linux"
fi
# On hosts whose CPUs have AMX, the host kernel takes UML's XSTATE register writes only at full
# size; a tiny LD_PRELOAD shim pads them (see tests/uml/xstatefix.c).
mkdir -p build
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
summary=$root/build/cgroup-v2-summary
rm -f "$summary"
start=$(date +%s)
UML_BIN=$root/build/linux-uml UML_DISK=$disk UML_MEM=${UML_MEM:-3G} UML_TIMEOUT=${UML_TIMEOUT:-2400} \
  bash "$runner" "export DENO_DIR='$DENO_DIR' DENO_NO_UPDATE_CHECK=1 SUMMARY_FILE='$summary'; \
    bash tests/run.sh '$deno_bin' tests/cgroups_v2_test.ts tests/resources_test.ts"
rc=$?
echo "cgroup v2 suite took $(( $(date +%s) - start )) s (exit $rc)"
rm -f "$disk"
if [ -s "$summary" ]; then
  read -r passed failed < "$summary"
else
  passed=0 failed=1
fi
[ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
