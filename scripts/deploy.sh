#!/usr/bin/env bash
# `make deploy` and friends: install jobworker on a remote host over ssh and run it under systemd.
#   scripts/deploy.sh deploy|status|logs|certs DENO
# Settings (environment or make variables):
#   REMOTE_HOST, REMOTE_USER (root, or a user with passwordless sudo), REMOTE_PORT (22)
#   SSH_OPTS       extra ssh options (e.g. "-i ~/.ssh/deploy_key")
#   CERT_DIR       local directory of the CA (ca-cert.pem, ca-key.pem): certs
#   SERVER_NAMES   names for a new server certificate (default: REMOTE_HOST); space separated
#   RELOAD=1       reload (SIGHUP) a running service instead of restarting it
#   DEPLOY_SERVICE=0  copy, install and issue certificates, but leave systemd alone
#   REMOTE_DESTDIR install under this directory on the remote (packaging, tests)
# The CA key never leaves this machine: a missing server certificate is issued here for the
# remote's name and only that pair and the CA certificate are copied.
set -euo pipefail
action=${1:-} deno_bin=${2:-deno}
cd "$(dirname "$0")/.."
# Local scratch (the staged install, a new server key), made on first use by the deploy action and
# removed however the script ends, die included.
scratch=
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
use_scratch() { [ -n "$scratch" ] || scratch=$(mktemp -d); }

die() {
  echo "deploy: $*" >&2
  exit 1
}
[ -n "${REMOTE_HOST:-}" ] || die "set REMOTE_HOST (and REMOTE_USER), e.g. make $action REMOTE_HOST=worker1 REMOTE_USER=root"
[ -n "${REMOTE_USER:-}" ] || die "set REMOTE_USER (root, or a user with passwordless sudo)"
REMOTE_PORT=${REMOTE_PORT:-22}
CERT_DIR=${CERT_DIR:-certs}
REMOTE_DESTDIR=${REMOTE_DESTDIR:-}
target="$REMOTE_USER@$REMOTE_HOST"
# shellcheck disable=SC2206
ssh_cmd=(ssh -p "$REMOTE_PORT" -o BatchMode=yes -o ConnectTimeout=10 ${SSH_OPTS:-} "$target")
sudo=""
[ "$REMOTE_USER" = root ] || sudo="sudo -n"
etc="$REMOTE_DESTDIR/etc/jobworker"

remote() { "${ssh_cmd[@]}" "$@"; }

preflight() {
  local out
  out=$(remote true 2>&1) || die "cannot reach $target on port $REMOTE_PORT over ssh: $out"
  if [ -n "$sudo" ]; then
    remote "$sudo true" >/dev/null 2>&1 ||
      die "$REMOTE_USER on $REMOTE_HOST needs passwordless sudo (or deploy as root)"
  fi
  # One round trip: kernel, architecture, systemd. Linux >= 5.12 (clone3 with a pidfd,
  # close_range, mount_setattr), x86_64 (the pinned deno binary), systemd >= 240 (Type=exec) as init.
  out=$(remote 'echo "kernel=$(uname -r) arch=$(uname -m)"; [ -d /run/systemd/system ] && command -v systemctl >/dev/null && echo systemd=yes || echo systemd=no; echo "systemd_version=$(systemctl --version 2>/dev/null | sed -n "1s/^systemd \([0-9]*\).*/\1/p")"')
  local kernel arch systemd systemd_version
  kernel=$(sed -n 's/.*kernel=\([^ ]*\).*/\1/p' <<<"$out")
  arch=$(sed -n 's/.*arch=\([^ ]*\).*/\1/p' <<<"$out")
  systemd=$(sed -n 's/^systemd=//p' <<<"$out")
  systemd_version=$(sed -n 's/^systemd_version=//p' <<<"$out")
  local major minor
  IFS=. read -r major minor _ <<<"$kernel"
  if [ -z "$major" ] || [ "$major" -lt 5 ] || { [ "$major" -eq 5 ] && [ "${minor%%[!0-9]*}" -lt 12 ]; }; then
    die "$REMOTE_HOST runs Linux $kernel; jobworker needs 5.12 or newer"
  fi
  [ "$arch" = x86_64 ] || die "$REMOTE_HOST is $arch; this build is for x86_64"
  if [ "${DEPLOY_SERVICE:-1}" != 0 ] && [ "$systemd" != yes ]; then
    die "$REMOTE_HOST does not run systemd (no /run/systemd/system or systemctl): nothing to run the service; DEPLOY_SERVICE=0 installs the files only"
  fi
  if [ "${DEPLOY_SERVICE:-1}" != 0 ] && [ "${systemd_version:-0}" -lt 240 ]; then
    die "$REMOTE_HOST runs systemd ${systemd_version:-of unknown version}; the unit needs 240 or newer (Type=exec)"
  fi
  echo "deploy: $target: Linux $kernel $arch, systemd: $systemd${systemd_version:+ $systemd_version}"
}

# Packs paths under DIR into the gzipped tarball OUT. GNU tar exits 1 when a file's ctime moved while
# it read it; CI saw that once (kernel 6.18, ext4) on the staged deno binary, which nothing but this
# script writes and which was complete: so pack again, at most three times, before giving up.
pack() {
  local dir=$1 out=$2 try rc
  shift 2
  for try in 1 2 3; do
    rc=0
    tar -C "$dir" -czf "$out" "$@" || rc=$?
    [ "$rc" -eq 1 ] && [ "$try" -lt 3 ] || break
    echo "deploy: a file changed while it was packed (try $try of 3); packing again" >&2
  done
  [ "$rc" -eq 0 ] || die "packing $dir failed (tar exit $rc)"
}

# Installs into a local staging root and ships PREFIX (bin/jobworker and lib/jobworker) as a
# tarball; on the remote, scripts/install.sh (sent on stdin) moves lib/jobworker into place so that
# a running worker keeps its paths (see place_lib there) until it is restarted or reloaded.
ship() {
  use_scratch
  local stage="$scratch/stage" t
  DESTDIR="$stage" PREFIX=/usr/local bash scripts/install.sh install "$deno_bin" >/dev/null
  pack "$stage/usr/local" "$scratch/ship.tgz" bin/jobworker $( [ -d "$stage/usr/local/lib/jobworker" ] && echo lib/jobworker)
  echo "deploy: copying $(du -sh "$stage/usr/local" | cut -f1) to $REMOTE_HOST"
  local d="$REMOTE_DESTDIR/usr/local"
  t=$(remote "set -e; $sudo mkdir -p '$d/bin' '$d/lib'; $sudo mktemp -d '$d/.deploy.XXXXXX'")
  remote "$sudo tar -C '$t' -xzf - || { $sudo rm -rf '$t'; exit 1; }" <"$scratch/ship.tgz"
  if [ -d "$stage/usr/local/lib/jobworker" ]; then
    remote "$sudo bash -s place '$t/lib/jobworker' '$d/lib/jobworker'" <scripts/install.sh
  fi
  remote "set -e; $sudo mv '$t/bin/jobworker' '$d/bin/jobworker'; $sudo rm -rf '$t'
    $sudo '$d/bin/jobworker' install --unit-only --prefix /usr/local --destdir '$REMOTE_DESTDIR'"
}

certificates() {
  if remote "$sudo test -s '$etc/certs/server-cert.pem' -a -s '$etc/certs/server-key.pem'"; then
    echo "deploy: $REMOTE_HOST has its server certificate; kept (deploy-certs shows it)"
    return
  fi
  [ -s "$CERT_DIR/ca-cert.pem" ] && [ -s "$CERT_DIR/ca-key.pem" ] ||
    die "$REMOTE_HOST has no server certificate and there is no CA in $CERT_DIR to issue one (make certs)"
  use_scratch
  local out="$scratch/certs"
  mkdir "$out"
  # shellcheck disable=SC2086
  "$deno_bin" run -A --no-prompt --cached-only scripts/server_cert.ts "$CERT_DIR" "$out" ${SERVER_NAMES:-$REMOTE_HOST}
  tar -C "$out" -cf - ca-cert.pem server-cert.pem server-key.pem |
    remote "set -e; $sudo mkdir -p '$etc/certs'; $sudo chmod 0700 '$etc/certs'
      $sudo tar --no-same-owner -C '$etc/certs' -xf -
      $sudo chmod 0600 '$etc/certs/server-key.pem'; $sudo chmod 0644 '$etc/certs/ca-cert.pem' '$etc/certs/server-cert.pem'"
  echo "deploy: issued and copied a server certificate for ${SERVER_NAMES:-$REMOTE_HOST} (the CA key stays here)"
}

# The worker's "listening" line in any LOG_FORMAT (logfmt, json, text).
listening_re='msg=listening |"msg":"listening"| INFO +listening '

# How many "listening" lines the service's current run (systemd invocation) has logged.
listening_count() {
  remote "id=\$(systemctl show -p InvocationID --value jobworker)
    [ -n \"\$id\" ] || { echo 0; exit 0; }
    $sudo journalctl -q -o cat _SYSTEMD_INVOCATION_ID=\$id | grep -cE '$listening_re' || true"
}

service() {
  local verb=restart before=0
  if [ "${RELOAD:-0}" = 1 ] && remote "systemctl is-active --quiet jobworker"; then
    verb=reload
    before=$(listening_count)
  fi
  remote "set -e; $sudo systemctl daemon-reload; $sudo systemctl enable --quiet jobworker; $sudo systemctl $verb jobworker"
  echo "deploy: jobworker ${verb}ed on $REMOTE_HOST"
  # Active is not enough (Type=exec is active once the program runs): wait until this run of the
  # worker (or the reloaded program) logs that it listens. A worker that fails and is restarted
  # starts a new invocation and never gets there.
  local i serving=no
  for i in $(seq 1 60); do
    if [ "$(listening_count)" -gt "$before" ] && remote "systemctl is-active --quiet jobworker"; then
      serving=yes
      break
    fi
    sleep 1
  done
  remote "$sudo systemctl status --no-pager --lines=0 jobworker" || true
  echo "--- last log lines ---"
  remote "$sudo journalctl -u jobworker -n 20 --no-pager" || true
  [ "$serving" = yes ] || die "jobworker is not serving on $REMOTE_HOST after ${verb}ing it (see the log above)"
}

case "$action" in
  deploy)
    preflight
    ship
    certificates
    if [ "${DEPLOY_SERVICE:-1}" = 0 ]; then
      echo "deploy: installed on $REMOTE_HOST; the service was left alone (DEPLOY_SERVICE=0)"
    else
      service
    fi
    ;;
  status)
    remote "$sudo systemctl status --no-pager jobworker; $sudo journalctl -u jobworker -n 20 --no-pager"
    ;;
  logs)
    # -t: Ctrl-C ends the remote journalctl too. exec: stopping this script stops the ssh.
    exec "${ssh_cmd[@]:0:${#ssh_cmd[@]}-1}" -t "$target" "$sudo journalctl -u jobworker -f -n 50"
    ;;
  certs)
    remote "command -v openssl >/dev/null || { echo 'openssl is not installed on $REMOTE_HOST' >&2; exit 1; }
      for f in '$etc'/certs/*-cert.pem; do
        [ -e \"\$f\" ] || { echo 'no certificates in $etc/certs' >&2; exit 1; }
        echo \"\$f:\"; $sudo openssl x509 -in \"\$f\" -noout -subject -ext subjectAltName -enddate | sed 's/^/  /'
        $sudo openssl x509 -in \"\$f\" -noout -checkend 2592000 >/dev/null || echo '  WARNING: expires within 30 days'
      done"
    ;;
  *)
    die "usage: $0 deploy|status|logs|certs DENO"
    ;;
esac
