/**
 * The job table and every job's lifecycle: start through the launcher inside a fresh cgroup,
 * capture output, reap, stop, time out, clean up. Knows nothing of gRPC.
 */
import type { CgroupManager, JobCgroup, Usage } from "../cgroups/types.ts";
import { LimitError } from "../cgroups/types.ts";
import type { WaitStatus } from "../../init/shim/ffi.ts";
import type { InitFailure } from "../../init/spec.ts";
import type { LaunchedProcess, Launcher } from "../runtime/launcher.ts";
import type { Reaper } from "../runtime/reaper.ts";
import { log } from "../log/logger.ts";
import { Job, type JobSpec } from "./job.ts";
import { JobError } from "./errors.ts";
import { OutputLog, type StreamId } from "./output_log.ts";
import { signalName } from "../../proto/signals.ts";
import { jobEnvironment } from "./environment.ts";
import type { JobEvents, StopKind } from "./events.ts";

export interface ManagerOptions {
  stateDir: string;
  /** Default StopJob grace, seconds. */
  stopGraceSeconds: number;
  maxRunningJobs: number;
  /** Ended jobs kept (with their output); the oldest are forgotten beyond this. */
  maxEndedJobs: number;
  /** Most bytes of output stored per job (0: no limit); the rest is read and discarded. */
  maxOutputBytes: number;
  /** Lifecycle events for observers (metrics). */
  events?: JobEvents;
}

export interface StopOptions {
  /** Seconds between SIGTERM and SIGKILL; absent: the server's default; 0: at once. */
  graceSeconds?: number;
  force?: boolean;
}

const ZERO_USAGE: Usage = {
  cpuUsec: 0,
  memoryBytes: 0,
  memoryPeakBytes: 0,
  ioReadBytes: 0,
  ioWriteBytes: 0,
  pids: 0,
};

/** How long a job's output pipes may stay open after its PID 1 died (its processes are gone). */
const OUTPUT_DRAIN_MS = 5000;

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Running {
  process: LaunchedProcess;
  cgroup: JobCgroup;
  /** Resolves when the job's PID 1 has been reaped. */
  exited: Promise<WaitStatus>;
  timeout: ReturnType<typeof setTimeout> | undefined;
  /** SIGTERM went out to the job's processes. */
  terminated: boolean;
  /** When the job gets SIGKILL; each stop may move it earlier, never later. */
  killAt: number | undefined;
  killTimer: ReturnType<typeof setTimeout> | undefined;
}

export class JobManager {
  readonly #jobs = new Map<string, Job>();
  readonly #running = new Map<string, Running>();
  /** Creates past the limit check that have not reached #running yet. */
  #starting = 0;
  #shuttingDown = false;

  constructor(
    private readonly launcher: Launcher,
    private readonly reaper: Reaper,
    private readonly cgroups: CgroupManager,
    private readonly options: ManagerOptions,
  ) {}

  get(id: string): Job | undefined {
    return this.#jobs.get(id);
  }

  /** Every job, newest first. */
  list(): Job[] {
    return [...this.#jobs.values()].reverse();
  }

  /** Resource usage: live while the job runs, final once it has ended. */
  usage(job: Job): Usage {
    if (job.finalUsage) return job.finalUsage;
    const running = this.#running.get(job.id);
    if (!running) return ZERO_USAGE;
    try {
      return running.cgroup.usage();
    } catch {
      return ZERO_USAGE;
    }
  }

  /** Starts a job; resolves once it runs (or has already ended). Throws JobError. */
  async create(spec: JobSpec, owner: string): Promise<Job> {
    if (this.#shuttingDown) {
      throw new JobError("failed-precondition", "the worker is shutting down");
    }
    const busy = this.#running.size + this.#starting;
    if (busy >= this.options.maxRunningJobs) {
      throw new JobError(
        "resource-exhausted",
        `the server already runs ${busy} jobs, its limit (JOB_WORKER_MAX_JOBS)`,
      );
    }
    this.#starting++;
    const began = performance.now();
    let reserved = true;
    const release = () => {
      if (reserved) this.#starting--;
      reserved = false;
    };
    try {
      const id = crypto.randomUUID();
      const dir = `${this.options.stateDir}/jobs/${id}`;
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      const job = new Job(
        id,
        owner,
        spec,
        OutputLog.create(`${dir}/output`, this.options.maxOutputBytes),
      );
      const forget = async () => {
        this.#jobs.delete(id);
        job.output.finish();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      };
      let cgroup: JobCgroup;
      try {
        cgroup = this.cgroups.create(id, spec.limits);
      } catch (e) {
        await forget();
        if (e instanceof LimitError) throw new JobError("failed-precondition", e.message);
        throw e;
      }
      this.#jobs.set(id, job);
      let process: LaunchedProcess;
      try {
        process = this.launcher.launch({
          jobId: id,
          command: spec.command,
          args: spec.args,
          env: jobEnvironment(id, spec.env),
          workDir: spec.workDir,
          cgroupProcsFiles: cgroup.procsFiles,
        });
      } catch (e) {
        await cgroup.remove().catch(() => {});
        await forget();
        throw new JobError("internal", `cannot start the job: ${(e as Error).message}`);
      }
      const running: Running = {
        process,
        cgroup,
        exited: this.reaper.watch(process.pid),
        timeout: undefined,
        terminated: false,
        killAt: undefined,
        killTimer: undefined,
      };
      this.#running.set(id, running);
      release();
      const outputDone = Promise.all([
        this.#pump(job, process.stdout, 1),
        this.#pump(job, process.stderr, 2),
      ]);
      const failure = await process.started;
      if (failure) {
        await this.#finish(job, running, outputDone);
        await forget();
        throw startError(failure);
      }
      job.transition("RUNNING");
      this.options.events?.started(job, (performance.now() - began) / 1000);
      log.info("job started", { id, owner, command: spec.command, pid: process.pid });
      // A stop that came while init was still setting up could not reach the job's processes
      // through the cgroup yet: now it can.
      if (running.terminated) running.cgroup.signalAll("SIGTERM");
      if (spec.timeoutSeconds > 0) {
        running.timeout = setTimeout(() => {
          this.#stop(job, running, {}, `timed out after ${spec.timeoutSeconds} s`, "timeout");
        }, spec.timeoutSeconds * 1000);
      }
      this.#finish(job, running, outputDone).catch((e) =>
        log.error("job cleanup failed", { id, error: String(e) })
      );
      return job;
    } catch (e) {
      this.options.events?.startFailed();
      throw e;
    } finally {
      release();
    }
  }

  /** Stops a job and resolves once nothing of it is left; an ended job is returned as it is. */
  async stop(id: string, options: StopOptions = {}): Promise<Job> {
    const job = this.#jobs.get(id);
    if (!job) throw new JobError("not-found", `no job with id "${id}"`);
    const running = this.#running.get(id);
    if (running && !job.isEnded) this.#stop(job, running, options, "stopped by request", "request");
    await job.ended;
    return job;
  }

  /** Stops every job (SIGTERM, then SIGKILL after `graceSeconds`) and waits for all to end. */
  async shutdown(graceSeconds: number): Promise<void> {
    this.#shuttingDown = true;
    const jobs = [...this.#running.keys()].map((id) => this.#jobs.get(id)!);
    for (const job of jobs) {
      const running = this.#running.get(job.id);
      if (running) this.#stop(job, running, { graceSeconds }, "the worker shut down", "shutdown");
    }
    await Promise.all(jobs.map((job) => job.ended));
  }

  /**
   * SIGTERM to every process of the job (once), SIGKILL when the grace period ends. A later stop
   * with a shorter grace (or force) brings the SIGKILL forward; none ever delays it.
   */
  #stop(job: Job, running: Running, options: StopOptions, reason: string, kind: StopKind): void {
    if (job.stopReason === undefined) this.options.events?.stopping(job, kind);
    job.stopReason ??= reason;
    const graceMs = options.force
      ? 0
      : 1000 * (options.graceSeconds ?? this.options.stopGraceSeconds);
    if (!running.terminated && graceMs > 0) {
      running.terminated = true;
      running.cgroup.signalAll("SIGTERM");
    }
    const killAt = Date.now() + graceMs;
    if (running.killAt !== undefined && running.killAt <= killAt) return;
    running.killAt = killAt;
    clearTimeout(running.killTimer);
    running.killTimer = setTimeout(() => {
      running.cgroup.killAll();
      // Also through the pidfd, which reaches PID 1 even before it has joined the cgroup.
      running.process.signal(9);
    }, graceMs);
  }

  /** Appends everything a job stream writes to the job's log; resolves at EOF. */
  #pump(job: Job, socket: LaunchedProcess["stdout"], stream: StreamId): Promise<void> {
    return new Promise((resolve) => {
      socket.on("data", (chunk: Uint8Array) => {
        this.options.events?.outputIngested(chunk.byteLength);
        try {
          job.output.append(stream, chunk);
        } catch (e) {
          // Disk full or the like: the output log stops here (readers see it end), but the
          // pipe is still drained so the job itself is not blocked and the worker lives on.
          if (!job.output.finished) {
            log.error("cannot store the job's output", { id: job.id, error: String(e) });
            job.output.finish();
          }
        }
      });
      socket.on(
        "error",
        (e: Error) => log.warn("job output error", { id: job.id, error: e.message }),
      );
      socket.on("close", () => resolve());
    });
  }

  /** Waits for the job's end, then records how it ended and removes what it used. */
  async #finish(job: Job, running: Running, outputDone: Promise<unknown>): Promise<void> {
    const status = await running.exited;
    clearTimeout(running.timeout);
    clearTimeout(running.killTimer);
    // PID 1 is gone, so the kernel kills the rest of the namespace; make sure through the cgroup.
    for (let i = 0; i < 250 && running.cgroup.pids().length > 0; i++) {
      if (i % 25 === 0) running.cgroup.killAll();
      await delay(20);
    }
    const drained = await Promise.race([
      outputDone.then(() => true),
      delay(OUTPUT_DRAIN_MS).then(() => false),
    ]);
    if (!drained) {
      log.warn("job output still open after its processes ended", { id: job.id });
      running.process.stdout.destroy();
      running.process.stderr.destroy();
    }
    job.output.finish();
    try {
      const usage = running.cgroup.usage();
      job.finalUsage = { ...usage, memoryBytes: 0, pids: 0 };
      job.oomKilled = running.cgroup.oomKilled();
    } catch (e) {
      log.warn("cannot read the job's final usage", { id: job.id, error: String(e) });
      job.finalUsage = ZERO_USAGE;
    }
    try {
      await running.cgroup.remove();
    } catch (e) {
      log.error("cannot remove the job's cgroup", { id: job.id, error: String(e) });
    }
    this.#running.delete(job.id);
    running.process.release();
    job.exit = { exitCode: status.exitCode ?? -1, signal: status.signal ?? 0 };
    if (job.status === "INITIALIZING") {
      job.transition("FAILED", "the job could not start");
      this.options.events?.ended(job);
      return;
    }
    const how = status.signal !== null
      ? `killed by ${signalName(status.signal)}`
      : `exited with code ${status.exitCode}`;
    if (job.stopReason !== undefined) {
      job.transition("STOPPED", `${job.stopReason}; ${how}`);
    } else if (job.oomKilled) {
      job.transition(
        "FAILED",
        `killed by the OOM killer: memory limit ${job.spec.limits.memoryMiB} MiB; ${how}`,
      );
    } else if (status.exitCode === 0) {
      job.transition("COMPLETED", how);
    } else {
      job.transition("FAILED", how);
    }
    log.info("job ended", { id: job.id, status: job.status, reason: job.reason });
    this.options.events?.ended(job);
    this.#evict();
  }

  /** Forgets the oldest ended jobs beyond the retention limit, and deletes their output. */
  #evict(): void {
    let ended = 0;
    for (const job of this.#jobs.values()) if (job.isEnded) ended++;
    for (const [id, job] of this.#jobs) {
      if (ended <= this.options.maxEndedJobs) break;
      if (!job.isEnded) continue;
      this.#jobs.delete(id);
      ended--;
      // Streams still reading it keep their open handle; the file goes when they close it.
      Deno.remove(`${this.options.stateDir}/jobs/${id}`, { recursive: true }).catch(() => {});
    }
  }
}

function startError(failure: InitFailure): JobError {
  switch (failure.stage) {
    case "lookup":
    case "exec":
      return new JobError("invalid-argument", `command: ${failure.message}`);
    case "workdir":
      return new JobError("invalid-argument", `workDir: ${failure.message}`);
    case "cgroup":
      return new JobError("failed-precondition", failure.message);
    default:
      return new JobError("internal", `the job could not be isolated: ${failure.message}`);
  }
}
