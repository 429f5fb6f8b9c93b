/**
 * What the worker tells `jobworker init` about the job it is to become. The worker writes it as
 * JSON into a pipe that the child sees as fd 3 ({@link SPEC_FD}); init reads it to EOF.
 *
 * The handshake, parent (worker) on the left, child on the right:
 *
 *   worker                                   child (clone3: new pid/mnt/ipc/uts namespaces)
 *   create cgroup, write limits
 *   pipes: out, err, spec, status
 *   shim spawn ───────────────────────────▶  fd0=/dev/null fd1=out fd2=err fd3=spec fd4=status
 *   write spec to fd3, close it               execve(self, "init")
 *                                             read spec from fd3 to EOF
 *                                             mounts private, fresh /proc, hostname, env, workDir
 *                                             join job cgroup (write 0 to cgroup.procs)
 *                                             execve(command)  ── fd4 is close-on-exec
 *   status pipe EOF  ◀──────────────────────  (exec succeeded: the job is RUNNING)
 *   status pipe JSON ◀──────────────────────  (a step failed: InitFailure, then exit 127)
 */
export const SPEC_FD = 3;
export const STATUS_FD = 4;

export interface InitSpec {
  jobId: string;
  /** Absolute path, or a name looked up in the PATH of {@link env}. */
  command: string;
  args: string[];
  /** The job's whole environment, KEY=VALUE. */
  env: string[];
  /** Absolute path; the job starts there. */
  workDir: string;
  /** Files init writes "0" to, joining the job's cgroup(s), right before exec. */
  cgroupProcsFiles: string[];
}

/** init's command line after the program: `init --shim <path of the C shim library>`. */
export function initArgs(shimPath: string): string[] {
  return ["init", "--shim", shimPath];
}

/** What init reports on the status pipe when it cannot start the command. */
export interface InitFailure {
  stage:
    | "spawn"
    | "spec"
    | "mounts"
    | "proc"
    | "hostname"
    | "workdir"
    | "cgroup"
    | "lookup"
    | "exec";
  /** errno of the failed call, 0 when there is none. */
  errno: number;
  message: string;
}
