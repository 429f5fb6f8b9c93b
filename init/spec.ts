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
 *                                             mounts private, fresh /proc, hostname, loopback
 *                                             join job cgroup (write 0 to cgroup.procs)
 *                                             the default profile (init/profile.ts): private
 *                                             /dev, masks, read-only /sys, capabilities, user
 *                                             workDir and command lookup as the job's user
 *                                             fd5→1, fd6→2, execve(command)
 *                                               (fds > 2 are close-on-exec)
 *   status pipe EOF  ◀──────────────────────  (exec succeeded: the job is RUNNING)
 *   status pipe JSON ◀──────────────────────  (a step failed: InitFailure, then exit 127)
 *
 * Under the minimal init (`init: true`) the exec is jwinit's, and the status pipe crosses it:
 * jwinit's child holds it close-on-exec (jwinit closes its own copy before the child may exec), so
 * the EOF comes at the command's own exec, and a failed one writes jwinit's report
 * (init/job_steps.ts MinimalInitReport) instead of an InitFailure.
 *
 * A pooled init (`init --pooled`, worker/runtime/init_pool.ts) is cloned before any job exists:
 * the worker keeps the spec pipe's write end empty. init makes the mounts private, mounts /proc,
 * writes {@link POOL_READY} to the status pipe and blocks reading the spec. When a job claims it, the
 * worker writes the spec and closes the pipe; init goes on from the hostname as above (creating
 * the job's network namespace itself when {@link InitSpec.unshareNetwork}). An empty spec (the
 * worker closed the pipe without one: the pool is being emptied) makes init exit 0 quietly.
 *
 * On cgroup v1 a pooled init is also handed a "slot" (worker/runtime/init_pool.ts): one cgroup per
 * hierarchy, made for it alone, whose `cgroup.procs` files it gets open as fds 7, 8, ...
 * ({@link SLOT_FD_BASE}, `--slots N`). It joins them once it is ready, before POOL_READY: its Deno
 * start-up stays charged to the worker, and the cgroup move (an RCU grace period in the kernel)
 * happens before any job waits for it. A job that claims it gets the slot renamed to the job's
 * cgroup, with the job's limits written first; its spec then lists no cgroup to join.
 */
export const SPEC_FD = 3;
/** The status pipe; the C side's JW_STATUS_FD (init/shim/jw_report.h) must be the same number. */
export const STATUS_FD = 4;
/** The job's output pipes; they become fds 1 and 2 only at the final exec. */
export const JOB_STDOUT_FD = 5;
export const JOB_STDERR_FD = 6;
/** A pooled init's slot: the first of its `cgroup.procs` descriptors (one per hierarchy). */
export const SLOT_FD_BASE = 7;
/** What a pooled init writes to the status pipe once it waits for a spec (never part of a failure). */
export const POOL_READY = "\n";

export interface InitSpec {
  jobId: string;
  /** Absolute path, or a name looked up in the PATH of {@link env}. */
  command: string;
  args: string[];
  /** The job's whole environment, KEY=VALUE. */
  env: string[];
  /** Absolute path; the job starts there. */
  workDir: string;
  /** Files init writes "0" to, joining the job's cgroup(s), before it drops privileges. */
  cgroupProcsFiles: string[];
  /** Who the job runs as. */
  user: JobUser;
  /** "none": the job has a network namespace of its own, with only loopback (up). */
  network: "host" | "none";
  /** init must create the job's network namespace itself (it was cloned without one: pooled). */
  unshareNetwork: boolean;
  /** true: the seed's full root: every capability, the host's /dev, no masks. */
  privileged: boolean;
  /** The worker's own paths (state, certificates, other secrets): covered inside the job. */
  maskPaths: string[];
  /** The worker's program and code: read-only inside the job. */
  readonlyPaths: string[];
  /** The minimal init (jwinit) to run the command under, or null to exec the command itself. */
  minimalInit: string | null;
}

/** A user as resolved by the worker from its user and group databases. */
export interface JobUser {
  uid: number;
  gid: number;
  /** Supplementary groups. */
  groups: number[];
}

/**
 * init's command line after the program: `init --shim <path of the C shim library>`, with
 * `--pooled` for an init cloned ahead of demand, and `--slots N` for one handed N slot
 * descriptors from {@link SLOT_FD_BASE} on.
 */
export function initArgs(shimPath: string, pooled = false, slots = 0): string[] {
  return [
    "init",
    "--shim",
    shimPath,
    ...(pooled ? ["--pooled"] : []),
    ...(slots > 0 ? ["--slots", String(slots)] : []),
  ];
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
    | "network"
    | "profile"
    | "user"
    | "lookup"
    | "exec";
  /** errno of the failed call, 0 when there is none. */
  errno: number;
  message: string;
}

const STAGES: Record<InitFailure["stage"], true> = {
  spawn: true,
  spec: true,
  mounts: true,
  proc: true,
  hostname: true,
  workdir: true,
  cgroup: true,
  network: true,
  profile: true,
  user: true,
  lookup: true,
  exec: true,
};

/** Whether parsed status text is an {@link InitFailure}: a known stage, an errno, a message. */
export function isInitFailure(value: unknown): value is InitFailure {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const { stage, errno, message } = value as Record<string, unknown>;
  return typeof stage === "string" && Object.hasOwn(STAGES, stage) &&
    Number.isSafeInteger(errno) && (errno as number) >= 0 && typeof message === "string";
}
