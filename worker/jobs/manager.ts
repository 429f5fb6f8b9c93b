/**
 * The live jobs and every job's lifecycle: record, start through the launcher inside a fresh
 * cgroup, capture output, reap, stop, time out, clean up, forget. The record store keeps every
 * job (live or ended); this class keeps only what a running job needs in memory. Knows nothing of
 * gRPC or SQL.
 */
import type { CgroupManager, JobCgroup, Usage } from "../cgroups/types.ts";
import { LimitError } from "../cgroups/types.ts";
import type { WaitStatus } from "../../init/shim/ffi.ts";
import type { InitFailure } from "../../init/spec.ts";
import type { LaunchedProcess, Launcher } from "../runtime/launcher.ts";
import type { Reaper } from "../runtime/reaper.ts";
import { log } from "../log/logger.ts";
import { Job, type JobRecord, type JobSpec, type JobStatus } from "./job.ts";
import { JobError } from "./errors.ts";
import { OutputLog, type StreamId } from "./output_log.ts";
import { signalName } from "../../proto/signals.ts";
import { jobEnvironment } from "./environment.ts";
import { pipeHasWriters } from "../runtime/pipe_writers.ts";
import { type JobFilter, type JobStore, StoreWriteError } from "./store.ts";
import { Stopper } from "./stopper.ts";
import type { HandedJob } from "../runtime/reexec.ts";
import { sameSpec } from "./spec_compare.ts";
import { applyDefaultTerm, type DefaultTerm, recordedSignal } from "./pid1_term.ts";
import type { JobEvents, StopKind } from "./events.ts";
import { StartGate } from "./start_gate.ts";
import { LoopTurns } from "./turns.ts";

export interface ManagerOptions {
  stateDir: string;
  /** Default StopJob grace, seconds. */
  stopGraceSeconds: number;
  maxRunningJobs: number;
  /** Ended jobs kept (with their output); the oldest are forgotten beyond this. */
  maxEndedJobs: number;
  /** Ended jobs are forgotten this long after they ended (0: kept until maxEndedJobs). */
  retentionMs?: number;
  /** Most bytes of output stored per job (0: no limit); the rest is read and discarded. */
  maxOutputBytes: number;
  /** Lifecycle events for observers (metrics). */
  events?: JobEvents;
  /** Most jobs starting (until their command exec'd) at once; the rest queue. Default 4. */
  maxStarting?: number;
}

export interface StopOptions {
  /** Seconds between SIGTERM and SIGKILL; absent: the server's default; 0: at once. */
  graceSeconds?: number;
  force?: boolean;
}

/** A page of jobs, newest first. */
export interface JobPage {
  jobs: Job[];
  /** True when older jobs matching the filter exist beyond this page. */
  more: boolean;
}

const ZERO_USAGE: Usage = {
  cpuUsec: 0,
  memoryBytes: 0,
  memoryPeakBytes: 0,
  ioReadBytes: 0,
  ioWriteBytes: 0,
  pids: 0,
};

/**
 * How long a job's output pipes may stay open, with no process of the job left, through a writer
 * that escaped the job (a descriptor passed to a process outside it). Without such a writer the
 * output is read to its end however long that takes.
 */
const OUTPUT_DRAIN_MS = 5000;
const DRAIN_CHECK_MS = 250;

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Running {
  process: LaunchedProcess;
  cgroup: JobCgroup;
  /** Resolves when the job's PID 1 has been reaped. */
  exited: Promise<WaitStatus>;
  timeout: ReturnType<typeof setTimeout> | undefined;
  /** Epoch ms when the timeout fires; undefined: none. */
  timeoutAt: number | undefined;
  stopper: Stopper;
  /** PID 1 has been reaped: the job is being cleaned up. */
  reaped: boolean;
  /** SIGTERM's default action for a PID 1 without a handler (see pid1_term.ts). */
  defaultTerm?: DefaultTerm | null;
}

/** Where a job's output files live under the state directory. */
export function jobDir(stateDir: string, id: string): string {
  return `${stateDir}/jobs/${id}`;
}

export class JobManager {
  /** Jobs not yet ended and cleaned up; every other job lives only in the store. */
  readonly #live = new Map<string, Job>();
  readonly #running = new Map<string, Running>();
  /** Ended jobs whose last state the store could not take yet (disk full): retried. */
  readonly #unsaved = new Map<string, Job>();
  /** Creates with a requestId in progress, by owner and key: a retry waits for the first. */
  readonly #pendingKeys = new Map<string, Promise<Job>>();
  /** Heavy synchronous sections take turns on the event loop (see turns.ts). */
  readonly #turns = new LoopTurns();
  /** Creates past the limit check that have not reached #running yet. */
  #starting = 0;
  #shuttingDown = false;
  /** A reload is under way: creates wait for the new process (UNAVAILABLE). */
  #reloading = false;
  #seq: number;
  readonly #startGate: StartGate;

  constructor(
    private readonly launcher: Launcher,
    private readonly reaper: Reaper,
    private readonly cgroups: CgroupManager,
    private readonly store: JobStore,
    private readonly options: ManagerOptions,
  ) {
    this.#seq = store.lastSeq();
    this.#startGate = new StartGate(options.maxStarting ?? 4);
  }

  get(id: string): Job | undefined {
    const live = this.#live.get(id) ?? this.#unsaved.get(id);
    if (live) return live;
    const record = this.store.get(id);
    return record && Job.fromRecord(record);
  }

  /** Jobs matching `filter` created before `beforeSeq`, newest first, at most `limit`. */
  page(filter: JobFilter, limit: number, beforeSeq?: number): JobPage {
    const records = this.store.page({
      ...filter,
      limit: limit + 1,
      ...(beforeSeq !== undefined ? { beforeSeq } : {}),
    });
    const more = records.length > limit;
    const jobs = records.slice(0, limit).map((r) =>
      this.#live.get(r.id) ?? this.#unsaved.get(r.id) ?? Job.fromRecord(r)
    );
    return { jobs, more };
  }

  countByStatus(filter: JobFilter): Record<JobStatus, number> {
    return this.store.countByStatus(filter);
  }

  /** The newest seq handed out so far. */
  get lastSeq(): number {
    return this.#seq;
  }

  get runningJobs(): number {
    return this.#running.size;
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

  /** The job's output: the live log while it runs, else the log its files hold. */
  output(job: Job): OutputLog {
    const live = this.#live.get(job.id)?.output;
    if (live) return live;
    try {
      return OutputLog.open(`${jobDir(this.options.stateDir, job.id)}/output`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new JobError("not-found", `the output of job "${job.id}" is gone`);
      }
      throw e;
    }
  }

  /**
   * Starts a job; resolves once it runs (or has already ended). With a requestId this owner used
   * before, returns that job instead (ALREADY_EXISTS if the request differs). Throws JobError.
   */
  async create(spec: JobSpec, owner: string): Promise<Job> {
    if (spec.requestId === "") return await this.#create(spec, owner);
    const key = `${owner}\0${spec.requestId}`;
    for (;;) {
      const pending = this.#pendingKeys.get(key);
      if (!pending) break;
      await pending.catch(() => {});
    }
    const earlier = this.store.byRequestId(owner, spec.requestId);
    if (earlier) return this.#repeat(earlier, spec);
    const created = this.#create(spec, owner);
    this.#pendingKeys.set(key, created);
    try {
      return await created;
    } finally {
      this.#pendingKeys.delete(key);
    }
  }

  #repeat(earlier: JobRecord, spec: JobSpec): Job {
    if (!sameSpec(earlier.spec, spec)) {
      throw new JobError(
        "already-exists",
        `requestId "${spec.requestId}" was used for job ${earlier.id} with other parameters`,
      );
    }
    return this.get(earlier.id) ?? Job.fromRecord(earlier);
  }

  async #create(spec: JobSpec, owner: string): Promise<Job> {
    if (this.#shuttingDown) {
      throw new JobError("failed-precondition", "the worker is shutting down");
    }
    if (this.#reloading) {
      throw new JobError("unavailable", "the worker is reloading; retry in a moment");
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
    let leaveGate = () => {};
    try {
      leaveGate = await this.#startGate.enter();
      if (this.#shuttingDown || this.#reloading) {
        throw new JobError("unavailable", "the worker is shutting down or reloading; retry");
      }
      const id = crypto.randomUUID();
      const dir = jobDir(this.options.stateDir, id);
      const job = new Job(id, ++this.#seq, owner, spec);
      try {
        await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
        job.output = OutputLog.create(`${dir}/output`, this.options.maxOutputBytes);
      } catch (e) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        throw new JobError("resource-exhausted", `cannot store the job's output: ${message(e)}`);
      }
      const forget = async () => {
        this.#live.delete(id);
        job.output?.finish();
        try {
          this.store.delete(id);
        } catch (e) {
          log.error("cannot delete the record of a job that did not start", {
            id,
            error: message(e),
          });
        }
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      };
      // The record is durable before anything runs: a job a caller hears of is never forgotten.
      try {
        this.store.insert(job.toRecord());
      } catch (e) {
        job.output.finish();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        if (e instanceof StoreWriteError) {
          throw new JobError("resource-exhausted", `cannot record the job: ${e.message}`);
        }
        throw e;
      }
      this.#live.set(id, job);
      let cgroup: JobCgroup;
      try {
        cgroup = this.cgroups.create(id, spec.limits);
      } catch (e) {
        await forget();
        if (e instanceof LimitError) throw new JobError("failed-precondition", e.message);
        throw e;
      }
      let process: LaunchedProcess;
      try {
        process = this.launcher.launch({
          jobId: id,
          command: spec.command,
          args: spec.args,
          env: jobEnvironment(id, spec.env, spec.user.home),
          workDir: spec.workDir,
          cgroupProcsFiles: cgroup.procsFiles,
          user: { uid: spec.user.uid, gid: spec.user.gid, groups: spec.user.groups },
          network: spec.network,
          privileged: spec.privileged,
          init: spec.init,
        });
      } catch (e) {
        await cgroup.remove().catch(() => {});
        await forget();
        throw new JobError("internal", `cannot start the job: ${message(e)}`);
      }
      const running = this.#runningOf(process, cgroup);
      this.#running.set(id, running);
      release();
      const outputDone = Promise.all([
        this.#pump(job, process.stdout, 1),
        this.#pump(job, process.stderr, 2),
      ]);
      const failure = await process.started;
      leaveGate();
      if (failure) {
        await this.#finish(job, running, outputDone);
        await forget();
        throw startError(failure);
      }
      this.#transition(job, "RUNNING");
      const startMs = performance.now() - began;
      this.options.events?.started(job, startMs / 1000);
      log.info("job started", {
        id,
        owner,
        command: spec.command,
        pid: process.pid,
        pooled: process.pooled,
        startMs: Math.round(startMs * 100) / 100,
      });
      running.stopper.started();
      if (spec.timeoutSeconds > 0) {
        this.#armTimeout(job, running, Date.now() + spec.timeoutSeconds * 1000);
      }
      this.#watch(job, running, outputDone);
      return job;
    } catch (e) {
      this.options.events?.startFailed();
      throw e;
    } finally {
      leaveGate();
      release();
    }
  }

  #runningOf(process: LaunchedProcess, cgroup: JobCgroup): Running {
    const running: Running = {
      process,
      cgroup,
      exited: this.reaper.watch(process.pid).then((status) => {
        running.reaped = true;
        return status;
      }),
      timeout: undefined,
      timeoutAt: undefined,
      reaped: false,
      stopper: new Stopper({
        signalAll: (s) => cgroup.signalAll(s),
        killAll: () => {
          cgroup.killAll();
          // Also through the pidfd, which reaches PID 1 even before it has joined the cgroup.
          process.signal(9);
        },
        afterTerm: () => this.#termPid1(running),
      }),
    };
    return running;
  }

  #armTimeout(job: Job, running: Running, at: number): void {
    running.timeoutAt = at;
    running.timeout = setTimeout(() => {
      this.#stop(job, running, {}, `timed out after ${job.spec.timeoutSeconds} s`, "timeout");
    }, Math.max(0, at - Date.now()));
  }

  /** Cleans up after the job once it ends, then applies retention. */
  #watch(job: Job, running: Running, outputDone: Promise<unknown>): void {
    this.#finish(job, running, outputDone).then(
      () => this.#evict(),
      (e) => log.error("job cleanup failed", { id: job.id, error: String(e) }),
    );
  }

  /**
   * First step of a reload: refuses new creates and waits (up to `ms`) until no job is starting
   * or being cleaned up, so every live job is simply running. False if that did not happen (the
   * reload is then called off and creates are accepted again), or if `abort` fired first.
   */
  async quiesce(ms: number, abort?: AbortSignal): Promise<boolean> {
    this.#reloading = true;
    const deadline = Date.now() + ms;
    const settled = () =>
      this.#starting === 0 &&
      [...this.#running.values()].every((r) => !r.reaped) &&
      [...this.#live.values()].every((j) => j.status === "RUNNING" && this.#running.has(j.id));
    while (!settled()) {
      if (Date.now() > deadline || abort?.aborted) {
        this.#reloading = false;
        return false;
      }
      await delay(10);
    }
    return true;
  }

  /**
   * Last step of a reload, right before the exec: stops reading every job's output (what is
   * not read yet stays in its pipe for the new process) and describes each running job.
   */
  handOver(): HandedJob[] {
    this.#saveUnsaved();
    for (const id of this.#unsaved.keys()) {
      log.error("a job's final state could not be recorded before the reload", { id });
    }
    const handed: HandedJob[] = [];
    for (const [id, running] of this.#running) {
      const job = this.#live.get(id)!;
      const output = job.output!;
      for (
        const [socket, stream] of [[running.process.stdout, 1], [
          running.process.stderr,
          2,
        ]] as const
      ) {
        socket.pause();
        // Bytes the socket already read but did not deliver yet.
        for (let chunk = socket.read(); chunk !== null; chunk = socket.read()) {
          this.#append(job, stream, chunk as Uint8Array);
        }
      }
      handed.push({
        id,
        pid: running.process.pid,
        pidfd: running.process.pidfd,
        stdoutFd: running.process.stdoutFd,
        stderrFd: running.process.stderrFd,
        timeoutAt: running.timeoutAt ?? null,
        killAt: running.stopper.killAt ?? null,
        terminated: running.stopper.terminated,
        stopReason: job.stopReason ?? null,
        output: output.state,
        outputLost: job.outputLost ?? null,
      });
    }
    return handed;
  }

  /** The exec failed: go on as before. */
  resumeAfterFailedHandover(): void {
    for (const running of this.#running.values()) {
      running.process.stdout.resume();
      running.process.stderr.resume();
    }
    this.#reloading = false;
  }

  /** Takes over a job the previous process of this worker handed over at a reload. */
  adopt(handed: HandedJob, process: LaunchedProcess): void {
    const record = this.store.get(handed.id);
    if (!record) {
      log.error("a handed-over job has no record; stopping it", { id: handed.id });
      process.signal(9);
      return;
    }
    const job = Job.fromRecord(record);
    job.stopReason = handed.stopReason ?? undefined;
    job.outputLost = handed.outputLost ?? undefined;
    job.output = OutputLog.resume(
      `${jobDir(this.options.stateDir, job.id)}/output`,
      handed.output,
      this.options.maxOutputBytes,
    );
    if (handed.outputLost) job.output.finish();
    const running = this.#runningOf(process, this.cgroups.open(job.id));
    this.#live.set(job.id, job);
    this.#running.set(job.id, running);
    const outputDone = Promise.all([
      this.#pump(job, process.stdout, 1),
      this.#pump(job, process.stderr, 2),
    ]);
    running.stopper.adopted();
    if (handed.terminated) running.stopper.markTerminated();
    if (handed.killAt !== null) running.stopper.killBy(handed.killAt);
    if (handed.timeoutAt !== null) this.#armTimeout(job, running, handed.timeoutAt);
    this.#watch(job, running, outputDone);
  }

  /** Stops a job and resolves once nothing of it is left; an ended job is returned as it is. */
  async stop(id: string, options: StopOptions = {}): Promise<Job> {
    const job = this.get(id);
    if (!job) throw new JobError("not-found", `no job with id "${id}"`);
    const running = this.#running.get(id);
    if (running && !job.isEnded) this.#stop(job, running, options, "stopped by request", "request");
    await job.ended;
    return job;
  }

  /** Forgets an ended job: its record and its output. Throws JobError. */
  async delete(id: string): Promise<void> {
    const job = this.get(id);
    if (!job) throw new JobError("not-found", `no job with id "${id}"`);
    if (!job.isEnded || this.#live.has(id)) {
      throw new JobError(
        "failed-precondition",
        `job ${id} is ${job.status}; only an ended job can be deleted (stop it first)`,
      );
    }
    await this.#forget(id);
  }

  /** Stops every job (SIGTERM, then SIGKILL after `graceSeconds`) and waits for all to end. */
  async shutdown(graceSeconds: number): Promise<void> {
    this.#shuttingDown = true;
    const jobs = [...this.#running.keys()].map((id) => this.#live.get(id)!);
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
    running.stopper.stop(graceMs);
  }

  /** Moves the job to `to` and records it at once; a record that cannot be written is logged. */
  #transition(job: Job, to: JobStatus, reason?: string): void {
    job.transition(to, reason);
    this.#save(job);
  }

  #save(job: Job): void {
    try {
      this.store.update(job.toRecord());
      this.#unsaved.delete(job.id);
    } catch (e) {
      log.error("cannot record the job's state; will retry", { id: job.id, error: message(e) });
      this.#unsaved.set(job.id, job);
    }
  }

  /** Retries the records the store could not take. */
  #saveUnsaved(): void {
    for (const job of [...this.#unsaved.values()]) this.#save(job);
  }

  #termPid1(running: Running): void {
    const pid = running.process.pid;
    running.defaultTerm ??= applyDefaultTerm(
      pid,
      () => running.cgroup.pids(),
      () => running.process.signal(9),
    );
  }

  /** Appends everything a job stream writes to the job's log; resolves at EOF. */
  #pump(job: Job, socket: LaunchedProcess["stdout"], stream: StreamId): Promise<void> {
    return new Promise((resolve) => {
      socket.on("data", (chunk: Uint8Array) => {
        this.options.events?.outputIngested(chunk.byteLength);
        this.#append(job, stream, chunk);
      });
      socket.on(
        "error",
        (e: Error) => log.warn("job output error", { id: job.id, error: e.message }),
      );
      socket.on("close", () => resolve());
    });
  }

  #append(job: Job, stream: StreamId, chunk: Uint8Array): void {
    const output = job.output!;
    try {
      output.append(stream, chunk);
    } catch (e) {
      // Disk full or the like: the output log stops here (readers see it end), but the
      // pipe is still drained so the job itself is not blocked and the worker lives on.
      if (!output.finished) {
        job.outputLost = { offset: output.size, error: message(e) };
        log.error("cannot store the job's output; the rest of it is lost", {
          id: job.id,
          offset: output.size,
          error: message(e),
        });
        output.finish();
      }
    }
  }

  /** Waits for the job's end, then records how it ended and removes what it used. */
  async #finish(job: Job, running: Running, outputDone: Promise<unknown>): Promise<void> {
    const exited = await running.exited;
    running.defaultTerm?.cancel();
    const status = {
      ...exited,
      signal: recordedSignal(running.defaultTerm ?? undefined, exited.signal),
    };
    clearTimeout(running.timeout);
    running.stopper.cancel();
    // PID 1 is gone, so the kernel kills the rest of the namespace; make sure through the cgroup.
    for (let i = 0; i < 250 && running.cgroup.pids().length > 0; i++) {
      if (i % 25 === 0) running.cgroup.killAll();
      await delay(20);
    }
    const outputComplete = await drainOutput(running.process, outputDone);
    if (!outputComplete) {
      log.warn("job output still open after its processes ended", { id: job.id });
      job.output?.markIncomplete();
    }
    job.output?.finish();
    await this.#turns.next();
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
      this.#transition(job, "FAILED", "the job could not start");
      this.#live.delete(job.id);
      this.options.events?.ended(job);
      return;
    }
    const how =
      (status.signal !== null
        ? `killed by ${signalName(status.signal)}`
        : `exited with code ${status.exitCode}`) +
      (outputComplete ? "" : "; output may be incomplete: a process outside the job held its pipe");
    const lost = job.outputLost
      ? `; output from byte ${job.outputLost.offset} on was lost (${job.outputLost.error})`
      : "";
    if (job.stopReason !== undefined) {
      this.#transition(job, "STOPPED", `${job.stopReason}; ${how}${lost}`);
    } else if (job.oomKilled) {
      this.#transition(
        job,
        "FAILED",
        `killed by the OOM killer: memory limit ${job.spec.limits.memoryMiB} MiB; ${how}${lost}`,
      );
    } else if (status.exitCode === 0) {
      this.#transition(job, "COMPLETED", how + lost);
    } else {
      this.#transition(job, "FAILED", how + lost);
    }
    this.#live.delete(job.id);
    log.info("job ended", { id: job.id, status: job.status, reason: job.reason });
    this.options.events?.ended(job);
  }

  /** Forgets ended jobs beyond the retention limits (count and age), with their output. */
  #evict(): void {
    const retention = this.options.retentionMs ?? 0;
    const endedBefore = retention > 0 ? new Date(Date.now() - retention) : undefined;
    let expired: string[];
    try {
      expired = this.store.expired(this.options.maxEndedJobs, endedBefore);
    } catch (e) {
      log.warn("cannot apply the retention limits", { error: message(e) });
      return;
    }
    for (const id of expired) {
      this.#forget(id).catch((e) =>
        log.warn("cannot forget an expired job", { id, error: message(e) })
      );
    }
  }

  /**
   * Housekeeping the server also runs on a timer: records the store could not take are written
   * again, and the retention limits applied.
   */
  applyRetention(): void {
    this.#saveUnsaved();
    this.#evict();
  }

  /** Deletes the record first, then the output: a record never points at missing output. */
  async #forget(id: string): Promise<void> {
    try {
      this.store.delete(id);
    } catch (e) {
      throw new JobError("resource-exhausted", `cannot delete the record: ${message(e)}`);
    }
    this.#unsaved.delete(id);
    // Streams still reading it keep their open handles; the files go when they close them.
    await Deno.remove(jobDir(this.options.stateDir, id), { recursive: true }).catch(() => {});
  }
}

/**
 * Reads the job's output pipes to their end; false when a writer outside the job held one open for
 * OUTPUT_DRAIN_MS (the pipes are then closed, the rest of the output lost).
 */
async function drainOutput(process: LaunchedProcess, outputDone: Promise<unknown>) {
  const done = outputDone.then(() => true);
  let heldMs = 0;
  for (;;) {
    if (await Promise.race([done, delay(DRAIN_CHECK_MS).then(() => false)])) return true;
    const held = pipeHasWriters(process.stdout) || pipeHasWriters(process.stderr);
    heldMs = held ? heldMs + DRAIN_CHECK_MS : 0;
    if (heldMs >= OUTPUT_DRAIN_MS) {
      process.stdout.destroy();
      process.stderr.destroy();
      return false;
    }
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
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
