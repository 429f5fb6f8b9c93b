#!/usr/bin/env bash
# Builds bin/jobworker. With a denort base binary (DENORT_BIN, or one deno can download) it is one
# self-contained executable with the C shim embedded. Without one it is a launcher that runs the
# same main.ts under `deno run`, so `bin/jobworker serve` and `bin/jobworker create ...` work
# either way.
set -euo pipefail
deno_bin=$1
cd "$(dirname "$0")/.."
mkdir -p bin
rm -f bin/jobworker
if timeout 300 "$deno_bin" compile --allow-all --no-prompt --include build/libjwshim.so --include build/jwinit \
     --output bin/jobworker main.ts >build/compile.log 2>&1; then
  echo "built bin/jobworker: one executable with the shim embedded ($(du -h bin/jobworker | cut -f1))"
  exit 0
fi
echo "deno compile could not build a standalone binary (it needs the denort base runtime:" >&2
echo "set DENORT_BIN to a denort $("$deno_bin" --version | head -1 | cut -d' ' -f2) binary); see build/compile.log" >&2
deno_abs=$(cd "$(dirname "$deno_bin")" && pwd)/$(basename "$deno_bin")
# The client commands run from pre-bundled files: no module graph, no npm resolution at start.
# Code split (one file per dynamic import): the entry (cli/bin.ts) is a few hundred bytes and
# starts the TLS warm-up before anything else loads, and a command loads only the parts it
# reaches (`context list` no transport). Left out (and run from main.ts): grpc-js (the command
# line has its own HTTP/2) and the certificate authority of `certs`.
client=""
rm -rf build/client build/jobworker-client.js
if "$deno_bin" bundle --quiet --platform deno --code-splitting --external ./transport/grpc_js.ts \
     --external ../pki/provision.ts --outdir build/client cli/bin.ts >build/bundle.log 2>&1; then
  client="$(pwd)/build/client/bin.js"
  # commander loads node:child_process at start, for executable subcommands (jobworker has none):
  # about 5 ms of a short command's start. The bundle loads it only if spawn is ever called.
  sed -i 's/^\( *\)var childProcess = __require("node:child_process");$/\1var childProcess = { spawn: (...args) => __require("node:child_process").spawn(...args) };/' \
    build/client/*.js
  grep -q 'var childProcess = { spawn: ' build/client/*.js ||
    echo "note: commander's node:child_process is loaded eagerly (its code changed); the client starts ~5 ms slower" >&2
else
  rm -rf build/client
  echo "deno bundle failed (see build/bundle.log): the client runs from main.ts (slower to start)" >&2
fi
cat > bin/jobworker <<LAUNCHER
#!/bin/sh
# jobworker launcher (no denort here): runs main.ts from $(pwd) under deno; the client commands
# run from the bundle make build wrote (build/client/) when there is one.
export DENO_DIR=\${DENO_DIR:-$(pwd)/.cache/deno} DENO_NO_UPDATE_CHECK=1
case "\${1:-}" in
  serve | init | install | uninstall | certs) ;;
  *) [ -f "$client" ] && exec "$deno_abs" run --allow-all --no-prompt --no-config "$client" "\$@" ;;
esac
exec "$deno_abs" run --allow-all --no-prompt --cached-only "$(pwd)/main.ts" "\$@"
LAUNCHER
chmod +x bin/jobworker
echo "built bin/jobworker as a launcher of main.ts under deno run${client:+ (client commands: build/client/)}"
