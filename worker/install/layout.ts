/**
 * Where an installed jobworker lives, and the systemd unit and environment file that run it.
 * Shared by `jobworker install` (the compiled binary) and `make install` (scripts/install.sh,
 * which runs `jobworker install --unit-only` to write the same files).
 */

export interface InstallLayout {
  /** Prepended to every path below (packaging, tests); "" for the real system. */
  destDir: string;
  /** The program as the unit runs it, e.g. /usr/local/bin/jobworker. */
  program: string;
  /** /etc/jobworker: jobworker.env and certs/. */
  configDir: string;
  /** /var/lib/jobworker: job records, output, the runtime shim. */
  stateDir: string;
  /** /etc/systemd/system. */
  unitDir: string;
}

export function defaultLayout(prefix = "/usr/local"): InstallLayout {
  return {
    destDir: "",
    program: `${prefix}/bin/jobworker`,
    configDir: "/etc/jobworker",
    stateDir: "/var/lib/jobworker",
    unitDir: "/etc/systemd/system",
  };
}

export function unitFile(layout: InstallLayout): string {
  return `# Written by \`jobworker install\`; \`jobworker uninstall\` removes it.
[Unit]
Description=jobworker: remote job execution over gRPC with mutual TLS
Documentation=https://github.com/jobworker/jobworker#operating-jobworker
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
EnvironmentFile=${layout.configDir}/jobworker.env
ExecStart=${layout.program} serve
# SIGHUP: reload (the worker re-executes itself; running jobs and their streams go on).
ExecReload=/bin/kill -HUP $MAINPID
# The worker makes its jobs' cgroups beneath its own: systemd must leave that subtree to it.
Delegate=yes
# SIGTERM to the worker alone: it stops every job within CLEANUP_TIMEOUT, then exits; whatever
# is left after TimeoutStopSec gets SIGKILL.
KillMode=mixed
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
# Restarting cannot help: 2, a wrong setting (in jobworker.env, or a flag: malformed, or an IO
# device that is a partition); 78, the state directory or job database cannot be used.
RestartPreventExitStatus=2 78
LimitNOFILE=1048576
TasksMax=infinity
# No systemd sandboxing (ProtectSystem=, PrivateTmp=, NoNewPrivileges=...): the jobs are the
# worker's children and would inherit it; jobworker confines each job itself.

[Install]
WantedBy=multi-user.target
`;
}

export function envFile(layout: InstallLayout): string {
  return `# jobworker settings (see \`jobworker serve --help\` for all of them).
# Read by the systemd unit; restart (or reload) the service after a change.
JOB_WORKER_ADDR=0.0.0.0:50051
JOB_WORKER_CERT_PATH=${layout.configDir}/certs
JOB_WORKER_STATE_DIR=${layout.stateDir}
LOG_LEVEL=info
# logfmt (default), json or text
LOG_FORMAT=logfmt
# Prometheus metrics over plain HTTP; keep it on a local or private address.
#JOB_WORKER_METRICS_ADDR=127.0.0.1:9464
`;
}
