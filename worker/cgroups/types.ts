/**
 * The cgroup layer's public types: what a job may be limited to, what it used, and the two objects
 * (a manager per worker, a cgroup per job) the rest of the worker talks to. Both cgroup versions
 * implement them (v1.ts, v2.ts); detect.ts picks one.
 */
import type { FileBatch } from "./file_batch.ts";

/** Resource limits of one job; 0 means unlimited for each. */
export interface Limits {
  /** Percent of one core; above 100 means several cores. */
  cpuPercent: number;
  /** Memory (and, where the kernel accounts it, memory plus swap) in MiB. */
  memoryMiB: number;
  /** Bytes per second, read and write each, on every IO device. */
  ioBps: number;
  /** Most processes (and threads) at once. */
  pids: number;
}

/** Resources a job's cgroup has used so far. */
export interface Usage {
  /** CPU time, microseconds. */
  cpuUsec: number;
  /** Memory charged to the cgroup now (including page cache), bytes. */
  memoryBytes: number;
  /** Highest memory charge seen, bytes. */
  memoryPeakBytes: number;
  /** Bytes read from and written to block devices. */
  ioReadBytes: number;
  ioWriteBytes: number;
  /** Processes (and threads) in the cgroup now. */
  pids: number;
  /** Scheduling periods in which the CPU limit throttled the job (cpu.stat nr_throttled). */
  cpuThrottledCount?: number;
  /** Time the job spent throttled, microseconds (cpu.stat throttled_usec / throttled_time). */
  cpuThrottledUsec?: number;
}

/** The name a limit has in the API, used in error messages. */
export type LimitName = "maxCPU" | "maxMemory" | "maxIOBPS" | "maxPids";

/** Details a {@link LimitError} may carry besides its message. */
export interface LimitErrorDetails {
  /** The limit that could not be applied; absent when the cgroup itself could not be set up. */
  limit?: LimitName;
  /** The file or directory the failing operation used. */
  path?: string;
  /** The errno name (EACCES, EINVAL, ...), when a system call failed. */
  errno?: string;
  cause?: unknown;
}

/**
 * A requested limit cannot be applied, or the job's cgroup cannot be made at all. The message says
 * which limit and why, e.g. `Cannot apply maxMemory: writing "8388608" to
 * /sys/fs/cgroup/memory/.../memory.limit_in_bytes failed: EACCES (Permission denied)`.
 */
export class LimitError extends Error {
  readonly limit?: LimitName;
  readonly path?: string;
  readonly errno?: string;

  constructor(message: string, details: LimitErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "LimitError";
    this.limit = details.limit;
    this.path = details.path;
    this.errno = details.errno;
  }
}

/** The cgroup (or, on v1, the set of cgroups, one per hierarchy) of one job. */
export interface JobCgroup {
  /** Files a process writes "0" to in order to join this job's cgroup(s) (v2: one; v1: one per hierarchy used). */
  readonly procsFiles: string[];
  /**
   * cgroup v2: the job's directory, which a new process can be born in (clone3's
   * CLONE_INTO_CGROUP takes v2 cgroups only) instead of joining through procsFiles; v1: absent.
   */
  readonly cloneInto?: string;
  /** PIDs (host pid namespace) of every process in the job's cgroup. */
  pids(): number[];
  /**
   * True when no process is left in the job's cgroup: the kernel's own count where it keeps one (v1:
   * pids.current, so the pids hierarchy only; v2: cgroup.events), else, or when that count is not
   * 0, the pids() list.
   */
  isEmpty(): boolean;
  /** Current usage; safe to call after all processes exited (until remove()). */
  usage(): Usage;
  /** True if the kernel OOM killer killed a process in this cgroup. */
  oomKilled(): boolean;
  /**
   * Usage and OOM state at the job's end, read off the event loop; usage() returns this usage from
   * then on (also after remove()). With `thenRemove` the same batch then tries to remove the
   * directories (the job's end, which calls remove() right after: one batch instead of two);
   * remove() must still be called, and removes what is left (busy, or an error to report).
   */
  final(options?: { thenRemove?: boolean }): Promise<{ usage: Usage; oomKilled: boolean }>;
  /** Send a signal to every process of the cgroup; returns how many were signalled. */
  signalAll(signal: Deno.Signal): number;
  /** Kill everything at once: v2 cgroup.kill; v1 freeze (freezer.state FROZEN, wait until frozen), SIGKILL each pid, thaw. Resolves when done, never rejects; the waits do not block the event loop. */
  killAll(): Promise<void>;
  /** Remove the cgroup directories (all hierarchies); retries briefly while EBUSY; throws if still busy after ~2 s. */
  remove(): Promise<void>;
}

/** Makes and finds job cgroups for one worker instance. */
export interface CgroupManager {
  readonly version: 1 | 2;
  /** One line for the startup log: version, where job cgroups go, IO devices. */
  describe(): string;
  /** Create the job's cgroup(s) and apply limits, the job's own part off the event loop. Fail closed: throws LimitError when any requested (non-zero) limit cannot be applied, after removing what it created. */
  create(jobId: string, limits: Limits): Promise<JobCgroup>;
  /** Kill and remove job cgroups left under this instance's parent by a previous run, except those named in `keep` (jobs a reload handed over); returns how many. */
  cleanupStale(keep?: ReadonlySet<string>): Promise<number>;
  /** The cgroup of a job that already exists (a job handed over by a reload). */
  open(jobId: string): JobCgroup;
  /**
   * Gets ready for processes the worker starts beside itself, in its own cgroup, before any job
   * (the init pool): on v2 the controllers are enabled and the worker moved into its leaf now, as
   * the first job would; a process left in the base cgroup would stop that. Throws LimitError.
   */
  prepare?(): void;
  /** Cgroups made ahead of a job for a pooled init (cgroup v1 only; see {@link CgroupSlots}). */
  readonly slots?: CgroupSlots;
}

/**
 * "Slots" (cgroup v1): a cgroup per hierarchy, made under this instance's parent for one pooled
 * init, which joins it while it waits. A job that claims that init gets the slot renamed to its own
 * cgroup (rename(2) of each directory), its limits written first: no process moves on the job's
 * start path. A slot is never a job: its name is not a job id, and it has no limits.
 */
export interface CgroupSlots {
  /** Makes slot `name` (no limits) in every hierarchy; its cgroup.procs files. Throws LimitError. */
  make(name: string): string[];
  /** Throws the LimitError adopt() would for a bad job id or limits, before any slot is touched. */
  check(jobId: string, limits: Limits): void;
  /**
   * Makes slot `name` the job's cgroup: checks and writes `limits` (as create() does), then renames
   * each directory to `jobId`. Throws LimitError, after which the slot is unusable (remove it).
   */
  adopt(name: string, jobId: string, limits: Limits): Promise<JobCgroup>;
  /** Removes slot `name` (retrying while its process is still exiting). */
  remove(name: string): Promise<void>;
}

/** What the managers detectCgroups() returns also tell, for logs and tests. */
export interface DetectedCgroupManager extends CgroupManager {
  /** "major:minor" of the whole disks IO limits are written for (configured or detected). */
  readonly ioDevices: readonly string[];
  /** The directories job cgroups are created in (v2: one; v1: one per hierarchy). */
  readonly parentDirs: readonly string[];
}

/** How to find and place job cgroups. */
export interface CgroupOptions {
  /** Instance name: job cgroups go under `<base>/jobworker-<instance>/<jobId>`; different state dirs use different instances, so two workers never touch each other's jobs. */
  instance: string;
  /** JOB_WORKER_CGROUP_BASE: a cgroup path (e.g. "/jobworker", relative to the hierarchy root; also accepted prefixed with the mount point like /sys/fs/cgroup/...). Default: the cgroup the worker runs in (per controller on v1, from /proc/self/cgroup). */
  base?: string;
  /** "major:minor" list for IO limits; default: detected (see io_devices.ts). */
  ioDevices?: string[];
  /**
   * How the job cgroups' files are made, read and removed at a job's start and end: the worker
   * passes the shim's batch (one call per step on Deno's blocking pool); by default each file is
   * one of Deno's async calls (file_batch.ts).
   */
  files?: FileBatch;
  /** For tests: directory read instead of /proc/self (mountinfo, cgroup). */
  procSelf?: string;
  /** For tests: directory read instead of /sys (mount points under /sys are mapped into it). */
  sysRoot?: string;
}
