/**
 * Starts a job's first process: a `jobworker init` in new namespaces, taken from the init pool
 * when one waits there (worker/runtime/init_pool.ts), then the job's spec written into init's spec
 * pipe (see init/spec.ts). Without a waiting init the job starts directly (direct_start.ts: a small
 * C program takes init's steps), or, with the direct start turned off, from an init cloned now
 * through the shim (init_process.ts). The job's output pipes are read by the output pump, one epoll
 * set for all of them (output_pipe.ts, output_pump.ts).
 */
import { type Shim, ShimError } from "../../init/shim/ffi.ts";
import { errnoName } from "../../init/shim/errno.ts";
import { type InitFailure, type InitSpec, isInitFailure } from "../../init/spec.ts";
import { isMinimalInitReport, minimalInitFailure, unreadableReport } from "../../init/job_steps.ts";
import type { SelfCommand } from "./self_exec.ts";
import { log } from "../log/logger.ts";
import {
  closeQuietly,
  initLogText,
  type InitProcess,
  MAX_SPEC_BYTES,
  spawnInit,
  statusOverflow,
  statusText,
} from "./init_process.ts";
import type { InitPool } from "./init_pool.ts";
import type { Reaper } from "./reaper.ts";
import { openOutputPipe, type OutputPipe, type OutputSinks } from "./output_pipe.ts";
import type { OutputPump } from "./output_pump.ts";
import { type DirectProcess, spawnDirect } from "./direct_start.ts";

export { MAX_SPEC_BYTES };

export interface LaunchedProcess {
  pid: number;
  pidfd: number;
  /** Its output pipes (their handedFd: what a reload passes to the new process). */
  stdout: OutputPipe;
  stderr: OutputPipe;
  /** Whether init came from the pool (already started) rather than cloned for this job. */
  pooled: boolean;
  /** Whether the job started directly (jwstart took init's steps). */
  direct: boolean;
  /** Whether the clone placed the first process in the job's cgroup (cgroup v2, direct only). */
  intoCgroup: boolean;
  /** Settles once init has exec'd the command (null) or reported why it could not. */
  started: Promise<InitFailure | null>;
  /** Signals the first process through its pidfd (no pid-reuse race); quiet if it is gone. */
  signal(signal: number): void;
  /** Closes the pidfd; call once the process has been reaped. */
  release(): void;
}

/**
 * init's status text as a failure (null: the command was exec'd). Under the minimal init the text
 * may be jwinit's report of its command's exec instead (job_steps.ts), for the job's `command`.
 * Anything else (not JSON, an array, a stage init does not have) is an unreadable report.
 */
export function parseFailure(text: string, command: string): InitFailure | null {
  if (text === "") return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return unreadableReport(text);
  }
  if (isMinimalInitReport(parsed)) return minimalInitFailure(command, parsed);
  if (!isInitFailure(parsed)) return unreadableReport(text);
  const { stage, errno, message } = parsed;
  return { stage, errno, message };
}

/** What every job's profile shares: set once by the worker's configuration. */
export interface WorkerPaths {
  /** The worker's own paths (state, certificates, other secrets), covered inside jobs. */
  maskPaths: string[];
  /** The worker's program and code, read-only inside jobs. */
  readonlyPaths: string[];
  /** The installed minimal init (jwinit) for `init: true` jobs. */
  minimalInit: string;
}

/** One job's part of the init spec; the launcher adds the {@link WorkerPaths}. */
export type JobLaunch =
  & Omit<InitSpec, "maskPaths" | "readonlyPaths" | "minimalInit" | "unshareNetwork">
  & {
    /** Run the command under the minimal init. */
    init: boolean;
    /** The job's cgroup v2 directory, for a direct start to clone into (JobCgroup.cloneInto). */
    cloneInto?: string;
  };

/**
 * clone3 errors that say the kernel itself does not take CLONE_INTO_CGROUP (a larger clone_args
 * than it knows, or an unknown flag), whatever the cgroup.
 */
const KERNEL_REFUSALS = ["E2BIG", "EINVAL"];

export class Launcher {
  /**
   * Whether direct starts are cloned into the job's cgroup (v2) rather than joining it. Not beside
   * an init pool: on v2 its members join their job's cgroup through cgroup.procs, holding the
   * kernel's cgroup mutex for an RCU grace period, and a clone into a cgroup takes that mutex on
   * the event loop's thread, so a burst that drains the pool would hold the loop behind each join.
   */
  #cloneIntoCgroup: boolean;

  constructor(
    private readonly shim: Shim,
    /** Reads every launched job's output pipes (one per worker, made where it is assembled). */
    private readonly pump: OutputPump,
    private readonly self: SelfCommand,
    private readonly paths: WorkerPaths,
    private readonly reaper: Reaper,
    private readonly pool?: InitPool,
    /**
     * The direct start's program (jwstart): a job no pooled init waits for starts through it;
     * undefined: through an init cloned for it.
     */
    private readonly starter?: string,
  ) {
    this.#cloneIntoCgroup = (pool?.size ?? 0) === 0;
  }

  /**
   * Starts init for `job`, its output pipes read into `sinks` from the first byte; throws ShimError
   * when the process cannot be created at all.
   */
  launch(job: JobLaunch, sinks: OutputSinks): LaunchedProcess {
    const { init: minimal, cloneInto, ...rest } = job;
    const spec = (unshareNetwork: boolean, slotted = false): InitSpec => ({
      ...rest,
      // A pooled init in a slot is in the job's cgroup already (InitPool.adopt renamed it).
      ...(slotted ? { cgroupProcsFiles: [] } : {}),
      unshareNetwork,
      maskPaths: this.paths.maskPaths,
      readonlyPaths: this.paths.readonlyPaths,
      minimalInit: minimal ? this.paths.minimalInit : null,
    });
    const encode = (full: InitSpec) => new TextEncoder().encode(JSON.stringify(full));
    const noNetwork = job.network === "none";
    // A pooled init has the host's network: it makes the job's namespace itself.
    let bytes = encode(spec(noNetwork));
    if (bytes.length > MAX_SPEC_BYTES) throw new RangeError("job spec too large");
    let init = this.pool?.claim(job.jobId);
    if (init?.slotted) bytes = encode(spec(noNetwork, true));
    if (init === undefined && this.starter !== undefined) {
      return this.#launchDirect(this.starter, spec(false), cloneInto, sinks);
    }
    if (init === undefined) {
      bytes = encode(spec(false));
      init = spawnInit(this.shim, this.self, { pooled: false, newNetwork: noNetwork });
    }
    // Written at once, whether init reads yet or not: a spec larger than the pipe would block.
    if (bytes.length > init.specCapacity) {
      this.#abandon(init);
      throw new RangeError(
        `job spec of ${bytes.length} bytes exceeds the pipe's ${init.specCapacity}`,
      );
    }
    try {
      this.shim.writeAll(init.specW, bytes);
    } catch (e) {
      this.#abandon(init);
      throw e;
    }
    closeQuietly(this.shim, [init.specW]);
    return this.#launched(init, job.command, sinks);
  }

  /** An init that will not get its job: killed, reaped, its descriptors closed. */
  #abandon(init: InitProcess): void {
    void this.kill(init.pid, init.pidfd, [init.specW, init.outR, init.errR]);
    init.status.destroy();
    init.initLog.destroy();
  }

  /**
   * Kills a process of this worker that it will not keep (SIGKILL through its pidfd; an init is
   * its PID namespace's PID 1, so the namespace goes with it) and closes `fds` (pipes it will not
   * read) at once, its pidfd once it has been reaped. Resolves then; never rejects.
   */
  kill(pid: number, pidfd: number, fds: readonly number[]): Promise<void> {
    try {
      this.shim.pidfdSignal(pidfd, 9);
    } catch { /* gone */ }
    closeQuietly(this.shim, fds);
    return this.reaper.watch(pid).then(() => closeQuietly(this.shim, [pidfd]));
  }

  #launchDirect(
    starter: string,
    spec: InitSpec,
    cloneInto: string | undefined,
    sinks: OutputSinks,
  ): LaunchedProcess {
    let cgroupFd = -1;
    if (cloneInto !== undefined && this.#cloneIntoCgroup) {
      try {
        cgroupFd = this.shim.openPath(cloneInto);
      } catch { /* gone already: jwstart's join says so, as a job's error */ }
    }
    let child: DirectProcess;
    try {
      child = spawnDirect(this.shim, starter, spec, cgroupFd);
    } finally {
      if (cgroupFd >= 0) closeQuietly(this.shim, [cgroupFd]);
    }
    if (child.refused !== undefined) {
      const error = new ShimError("clone3", child.refused).message;
      if (KERNEL_REFUSALS.includes(errnoName(child.refused))) {
        // The kernel does not know the flag (older than 5.7): not worth a failed clone per job.
        this.#cloneIntoCgroup = false;
        log.warn("clone3 cannot place jobs in their cgroups; they join them instead", { error });
      } else {
        // This cgroup only (removed, or one that takes no process): the job joins it, or fails to.
        log.info("clone3 could not place a job in its cgroup; it joins it instead", {
          cgroup: cloneInto,
          error,
        });
      }
    }
    return this.#process(child.pid, child.pidfd, child.outR, child.errR, sinks, {
      pooled: false,
      direct: true,
      intoCgroup: child.intoCgroup,
      started: child.started,
    });
  }

  #launched(init: InitProcess, command: string, sinks: OutputSinks): LaunchedProcess {
    const { pid } = init;
    return this.#process(init.pid, init.pidfd, init.outR, init.errR, sinks, {
      pooled: init.pooled,
      direct: false,
      intoCgroup: false,
      started: Promise.all([init.status.closed, init.initLog.closed]).then(
        ([status, initLogRead]) => {
          const failure = init.status.overflowed
            ? statusOverflow()
            : parseFailure(statusText(init, status), command);
          // A failure's message goes to the caller and the job's record: init's stderr is cut
          // there as in the log line below.
          const initLog = initLogText(init.initLog, initLogRead, 2000);
          if (initLog === "") return failure;
          if (failure) return { ...failure, message: `${failure.message} (${initLog})` };
          log.warn("job init wrote to stderr", { pid, text: initLog });
          return null;
        },
      ),
    });
  }

  #process(
    pid: number,
    pidfd: number,
    outR: number,
    errR: number,
    sinks: OutputSinks,
    how: Pick<LaunchedProcess, "pooled" | "direct" | "intoCgroup" | "started">,
  ): LaunchedProcess {
    let released = false;
    // A pipe that cannot be watched is closed by openOutputPipe, the other one here, and the
    // process goes (unread, its output would stop it; its status pipes end with it).
    let stdout: OutputPipe | undefined;
    let stderr: OutputPipe;
    try {
      stdout = openOutputPipe(this.pump, outR, sinks.stdout);
      stderr = openOutputPipe(this.pump, errR, sinks.stderr);
    } catch (e) {
      if (stdout) stdout.destroy();
      else closeQuietly(this.shim, [errR]);
      void this.kill(pid, pidfd, []);
      throw e;
    }
    return {
      ...how,
      pid,
      pidfd,
      signal: (signal) => {
        if (released) return;
        try {
          this.shim.pidfdSignal(pidfd, signal);
        } catch { /* already ended */ }
      },
      release: () => {
        if (!released) closeQuietly(this.shim, [pidfd]);
        released = true;
      },
      stdout,
      stderr,
    };
  }
}
