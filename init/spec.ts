/**
 * What the worker tells `jobworker init` about the job it is to become. The worker writes it as
 * JSON into a pipe that the child sees as fd 3 ({@link SPEC_FD}); init reads it to EOF.
 *
 * The handshake, parent (worker) on the left, child on the right:
 *
 *   worker                                   child (clone3: new pid/mnt/ipc/uts namespaces)
 *   create cgroup, write limits
 *   pipes: out, err, spec, status
 *   write spec into its pipe
 *   shim spawn ───────────────────────────▶  fd0,1=/dev/null fd2=init log fd3=spec fd4=status
 *                                             fd5=job stdout fd6=job stderr
 *                                             execve(self, "init")
 *                                             read spec from fd3 to EOF
 *                                             mounts private, fresh /proc, hostname, env, workDir
 *                                             join job cgroup (write 0 to cgroup.procs)
 *                                             fd5→1, fd6→2, execve(command)
 *                                               (fds > 2 are close-on-exec)
 *   status pipe EOF  ◀──────────────────────  (exec succeeded: the job is RUNNING)
 *   status pipe JSON ◀──────────────────────  (a step failed: InitFailure, then exit 127)
 */
export const SPEC_FD = 3;
export const STATUS_FD = 4;
/** The job's output pipes; they become fds 1 and 2 only at the final exec. */
export const JOB_STDOUT_FD = 5;
export const JOB_STDERR_FD = 6;

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
