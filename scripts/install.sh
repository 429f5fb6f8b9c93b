#!/usr/bin/env bash
# `make install` / `make uninstall`: put jobworker on this host as a systemd service, or take it off.
#   scripts/install.sh install DENO     (DESTDIR, PREFIX from the environment)
#   scripts/install.sh uninstall DENO   (PURGE=1 also removes /etc/jobworker and /var/lib/jobworker)
# With a compiled bin/jobworker (see scripts/build.sh) that one file is installed. Without one,
# PREFIX/lib/jobworker becomes a self-contained directory: the pinned deno binary, the code, its
# npm packages (node_modules), the C shim, jwinit and jwstart, with PREFIX/bin/jobworker a launcher running it, so
# the installed program never needs the network or this checkout.
#   scripts/install.sh place STAGED LIB (moves a staged PREFIX/lib/jobworker into place; deploy
#                                       runs it on the remote with `bash -s`)
set -euo pipefail
action=$1 deno_bin=${2:-}

# Puts a staged self-contained directory (deno, app/) at LIB without pulling anything from under a
# worker that runs from LIB: it starts each job's init, and re-executes itself on reload, from the
# paths it was started with (LIB/deno, LIB/app/main.ts). So those paths stay valid throughout:
# deno is replaced only when it changed, app/ is swapped by two renames, deno-dir/ is kept.
place_lib() {
  local staged=$1 lib=$2
  mkdir -p "$lib/deno-dir"
  cmp -s "$staged/deno" "$lib/deno" || mv -f "$staged/deno" "$lib/deno"
  rm -rf "$lib/app.old"
  [ ! -e "$lib/app" ] || mv "$lib/app" "$lib/app.old"
  mv "$staged/app" "$lib/app"
  rm -rf "$lib/app.old" "$staged"
}
if [ "$action" = place ]; then
  place_lib "$2" "$3"
  exit 0
fi

cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
bin="$DESTDIR$PREFIX/bin/jobworker"
lib="$DESTDIR$PREFIX/lib/jobworker"
# systemctl only for the real system with systemd running, never for a DESTDIR install.
live_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

is_compiled() { [ -f bin/jobworker ] && [ "$(head -c 4 bin/jobworker)" = $'\x7fELF' ]; }

install_self_contained() {
  local real_deno app
  real_deno=$(readlink -f "$deno_bin")
  local f
  for f in build/libjwshim.so build/jwinit build/jwstart; do
    [ -f "$f" ] || { echo "$f is missing: run make shim" >&2; exit 1; }
  done
  [ -d node_modules ] || { echo "node_modules is missing: run make deps" >&2; exit 1; }
  rm -rf "$lib.new"
  mkdir -p "$lib.new/app/build" "$(dirname "$bin")"
  install -m 0755 "$real_deno" "$lib.new/deno"
  app="$lib.new/app"
  cp -a main.ts deno.json deno.lock worker cli init proto "$app/"
  install -m 0644 build/libjwshim.so "$app/build/libjwshim.so"
  install -m 0755 build/jwinit "$app/build/jwinit"
  install -m 0755 build/jwstart "$app/build/jwstart"
  cp -a node_modules "$app/node_modules"
  # deno-dir: the installed DENO_DIR (compile caches, filled on first run).
  place_lib "$lib.new" "$lib"
  # jobworker uninstall recognises the launcher by its second line: keep it as it is.
  cat > "$bin.new" <<'LAUNCHER'
#!/bin/sh
# jobworker: runs the self-contained installation in ../lib/jobworker (written by `make install`).
lib=$(dirname "$(readlink -f "$0")")/../lib/jobworker
export DENO_DIR="$lib/deno-dir" DENO_NO_UPDATE_CHECK=1
exec "$lib/deno" run --allow-all --no-prompt --cached-only --config "$lib/app/deno.json" \
  "$lib/app/main.ts" "$@"
LAUNCHER
  chmod 0755 "$bin.new"
  mv "$bin.new" "$bin"
  echo "installed a self-contained jobworker in $PREFIX/lib/jobworker ($(du -sh "$lib" | cut -f1))"
}

case "$action" in
  install)
    if is_compiled; then
      bin/jobworker install --prefix "$PREFIX" --destdir "$DESTDIR"
    else
      echo "bin/jobworker is not a compiled executable (deno compile needs denort, see make build):"
      echo "installing the self-contained directory instead"
      install_self_contained
      # The installed program writes its own unit and configuration.
      "$bin" install --unit-only --prefix "$PREFIX" --destdir "$DESTDIR"
    fi
    if live_systemd; then
      systemctl daemon-reload
      if systemctl is-active --quiet jobworker; then
        echo "jobworker is running the previous version: systemctl reload jobworker (keeps its jobs) or restart it"
      else
        echo "start it with: systemctl enable --now jobworker (certificates go in /etc/jobworker/certs)"
      fi
    fi
    ;;
  uninstall)
    # Stop the service only when it runs this prefix's program: another installation's stays up.
    unit=/etc/systemd/system/jobworker.service
    if live_systemd; then
      if [ -f "$unit" ] && ! grep -q "^ExecStart=$PREFIX/bin/jobworker serve\$" "$unit"; then
        echo "jobworker.service runs another installation: leaving it running"
      elif systemctl is-enabled --quiet jobworker 2>/dev/null; then
        systemctl disable --now jobworker
      elif systemctl is-active --quiet jobworker; then
        systemctl stop jobworker
      fi
    fi
    purge=()
    [ "${PURGE:-0}" = 1 ] && purge=(--purge)
    if [ -x "$bin" ]; then
      "$bin" uninstall --prefix "$PREFIX" --destdir "$DESTDIR" "${purge[@]}"
    else
      "$deno_bin" run -A main.ts uninstall --prefix "$PREFIX" --destdir "$DESTDIR" "${purge[@]}"
    fi
    # jobworker uninstall removes $lib itself, when it is a self-contained installation; one made
    # by an older jobworker's install is left by its own uninstall: the same test here.
    if [ -x "$lib/deno" ] && [ -f "$lib/app/main.ts" ]; then rm -rf "$lib"; fi
    if live_systemd; then systemctl daemon-reload; fi
    ;;
  *)
    echo "usage: $0 install|uninstall DENO" >&2
    exit 2
    ;;
esac
