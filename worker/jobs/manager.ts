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

export interface ManagerOptions {
  stateDir: string;
  /** Default StopJob grace, seconds. */
  stopGraceSeconds: number;
  maxRunningJobs: number;
}

export interface StopOptions {
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
  stopping: Promise<void> | undefined;
}

export class JobManager {
  readonly #jobs = new Map<string, Job>();
  readonly #running = new Map<string, Running>();

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
    if (this.#running.size >= this.options.maxRunningJobs) {
      throw new JobError(
        "resource-exhausted",
        `the server already runs ${this.#running.size} jobs, its limit`,
      );
    }
    const id = crypto.randomUUID();
    const dir = `${this.options.stateDir}/jobs/${id}`;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const job = new Job(id, owner, spec, OutputLog.create(`${dir}/output`));
    let cgroup: JobCgroup;
    try {
      cgroup = this.cgroups.create(id, spec.limits);
    } catch (e) {
      job.output.finish();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
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
      this.#jobs.delete(id);
      job.output.finish();
      await cgroup.remove().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw new JobError("internal", `cannot start the job: ${(e as Error).message}`);
    }
    const running: Running = {
      process,
      cgroup,
      exited: this.reaper.watch(process.pid),
      timeout: undefined,
      stopping: undefined,
    };
    this.#running.set(id, running);
    const outputDone = Promise.all([
      this.#pump(job, process.stdout, 1),
      this.#pump(job, process.stderr, 2),
    ]);
    const failure = await process.started;
    if (failure) {
      await this.#finish(job, running, outputDone);
      this.#jobs.delete(id);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw startError(failure);
    }
    job.transition("RUNNING");
    log.info("job started", { id, owner, command: spec.command, pid: process.pid });
    if (spec.timeoutSeconds > 0) {
      running.timeout = setTimeout(() => {
        this.#stop(job, running, {}, `timed out after ${spec.timeoutSeconds} s`).catch((e) =>
          log.error("timeout stop failed", { id, error: String(e) })
        );
      }, spec.timeoutSeconds * 1000);
    }
    this.#finish(job, running, outputDone).catch((e) =>
      log.error("job cleanup failed", { id, error: String(e) })
    );
    return job;
  }

  /** Stops a job and resolves once nothing of it is left; an ended job is returned as it is. */
  async stop(id: string, options: StopOptions = {}): Promise<Job> {
    const job = this.#jobs.get(id);
    if (!job) throw new JobError("not-found", `no job with id "${id}"`);
    const running = this.#running.get(id);
    if (running && !job.isEnded) await this.#stop(job, running, options, "stopped by request");
    await job.ended;
    return job;
  }

  /** Stops every job (SIGTERM, then SIGKILL after `graceSeconds`) and waits for all to end. */
  async shutdown(graceSeconds: number): Promise<void> {
    const jobs = [...this.#running.keys()].map((id) => this.#jobs.get(id)!);
    await Promise.all(jobs.map((job) => {
      const running = this.#running.get(job.id);
      return running
        ? this.#stop(job, running, { graceSeconds }, "the worker shut down")
        : Promise.resolve();
    }));
    await Promise.all(jobs.map((job) => job.ended));
  }

  #stop(job: Job, running: Running, options: StopOptions, reason: string): Promise<void> {
    job.stopReason ??= reason;
    running.stopping ??= (async () => {
      const graceMs = 1000 * (options.graceSeconds || this.options.stopGraceSeconds);
      if (!options.force) {
        running.cgroup.signalAll("SIGTERM");
        const ended = await Promise.race([
          running.exited.then(() => true),
          delay(graceMs).then(() => false),
        ]);
        if (ended) return;
      }
      running.cgroup.killAll();
      // Also through the pidfd, which reaches PID 1 even before it has joined the cgroup.
      running.process.signal(9);
    })();
    return running.stopping;
  }

  /** Appends everything a job stream writes to the job's log; resolves at EOF. */
  #pump(job: Job, socket: LaunchedProcess["stdout"], stream: StreamId): Promise<void> {
    return new Promise((resolve) => {
      socket.on("data", (chunk: Uint8Array) => job.output.append(stream, chunk));
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
