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
if timeout 300 "$deno_bin" compile --allow-all --no-prompt --include build/libjwshim.so --include build/jwinit --include build/jwstart \
     --output bin/jobworker main.ts >build/compile.log 2>&1; then
  echo "built bin/jobworker: one executable with the shim embedded ($(du -h bin/jobworker | cut -f1))"
  exit 0
fi
echo "deno compile could not build a standalone binary (it needs the denort base runtime:" >&2
echo "set DENORT_BIN to a denort $("$deno_bin" --version | head -1 | cut -d' ' -f2) binary); see build/compile.log" >&2
deno_abs=$(cd "$(dirname "$deno_bin")" && pwd)/$(basename "$deno_bin")
# The client commands run from pre-bundled files: no module graph, no npm resolution at start.
# build/jobworker-cli.js is the command line (cli/bin.ts and all it reaches); build/jobworker-client.js,
# which the launcher runs, is cli/bundle_entry.ts alone: it starts the TLS warm-up before it loads
# the other (cli/bundle_entry.ts says why). Left out of the command line (and run from main.ts):
# grpc-js (the command line has its own HTTP/2) and the certificate authority of `certs`.
client=""
rm -f build/jobworker-cli.js build/jobworker-client.js
if "$deno_bin" bundle --quiet --platform deno --external ./transport/grpc_js.ts \
     --external ../pki/provision.ts --output build/jobworker-cli.js cli/bin.ts >build/bundle.log 2>&1; then
  client="$(pwd)/build/jobworker-cli.js"
  # commander loads node:child_process and node:fs when it loads, for executable subcommands
  # (jobworker has none): about 5 ms and 5-6 ms of a short command's start, node:fs even with
  # node:tls loaded (bench/README.md, "Client start-up"). The bundle's copy of commander loads each
  # at its first use instead (a spawn; existsSync or realpathSync, the only node:fs functions it
  # calls); if commander's code changes, the line is not found and the bundle stays as deno made it
  # (slower, same behaviour).
  sed -i -e 's/^\( *\)var childProcess = __require("node:child_process");$/\1var childProcess = { spawn: (...args) => __require("node:child_process").spawn(...args) };/' \
    -e 's/^\( *\)var fs = __require("node:fs");$/\1var fs = { existsSync: (...args) => __require("node:fs").existsSync(...args), realpathSync: (...args) => __require("node:fs").realpathSync(...args) };/' \
    build/jobworker-cli.js
  grep -q '^ *var childProcess = { spawn: ' build/jobworker-cli.js ||
    echo "note: commander's node:child_process stays eager in build/jobworker-cli.js (its code changed)" >&2
  grep -q '^ *var fs = { existsSync: ' build/jobworker-cli.js ||
    echo "note: commander's node:fs stays eager in build/jobworker-cli.js (its code changed)" >&2
  # long.js (which protobufjs loads with it; proto/service.ts then sets protobuf.util.Long aside,
  # so int64 fields decode to numbers) compiles a small WebAssembly module when it loads, for its
  # multiply, divide and remainder: about 3 ms of a short command's start on this machine, more
  # under load (bench/README.md, "Client start-up"). The command line
  # never does Long arithmetic; in the bundle long.js uses its JavaScript arithmetic instead (the
  # same results: it is long.js's own path where WebAssembly is missing). If long.js's code changes,
  # the line is not found and the bundle stays as deno made it.
  sed -i 's/^\( *\)wasm = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(\[$/\1if (false) wasm = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array([/' \
    build/jobworker-cli.js
  grep -q '^ *if (false) wasm = new WebAssembly.Instance(' build/jobworker-cli.js ||
    echo "note: long.js still compiles its WebAssembly when build/jobworker-cli.js loads (its code changed)" >&2
  # Were node:fs loaded anywhere else at start, the rewrite would save nothing: say so.
  [ "$(grep -c '"node:fs"' build/jobworker-cli.js)" -le 1 ] ||
    echo "note: build/jobworker-cli.js names node:fs beyond commander's lazy use (loaded elsewhere, or a line of another package rewritten as commander's)" >&2
  # The entry names jobworker-cli.js by a URL made at run time, which the bundler leaves alone:
  # were the command line pulled into it, it would be no smaller than the command line.
  if "$deno_bin" bundle --quiet --platform deno --output build/jobworker-client.js cli/bundle_entry.ts \
       >>build/bundle.log 2>&1 && [ "$(wc -c <build/jobworker-client.js)" -lt 16384 ]; then
    client="$(pwd)/build/jobworker-client.js"
  else
    rm -f build/jobworker-client.js
    echo "note: no bundle entry (see build/bundle.log): the client runs build/jobworker-cli.js (slower to start)" >&2
  fi
else
  echo "deno bundle failed (see build/bundle.log): the client runs from main.ts (slower to start)" >&2
fi
cat > bin/jobworker <<LAUNCHER
#!/bin/sh
# jobworker launcher (no denort here): runs main.ts from $(pwd) under deno; the client commands
# (but certs) run from ${client:-main.ts too (deno bundle failed at build time)}.
export DENO_DIR=\${DENO_DIR:-$(pwd)/.cache/deno} DENO_NO_UPDATE_CHECK=1
case "\${1:-}" in
  serve | init | install | uninstall | certs) ;;
  *) [ -f "$client" ] && [ -f "$(pwd)/build/jobworker-cli.js" ] &&
       exec "$deno_abs" run --allow-all --no-prompt --no-config "$client" "\$@" ;;
esac
exec "$deno_abs" run --allow-all --no-prompt --cached-only "$(pwd)/main.ts" "\$@"
LAUNCHER
chmod +x bin/jobworker
echo "built bin/jobworker as a launcher of main.ts under deno run${client:+ (client commands: build/$(basename "$client"))}"
