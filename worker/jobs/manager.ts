/**
 * The live jobs and every job's lifecycle: record, start through the launcher inside a fresh
 * cgroup, capture output, reap, stop, time out, clean up, forget. The record store keeps every
 * job (live or ended); this class keeps only what a running job needs in memory. Knows nothing of
 * gRPC or SQL. The start of a job is job_start.ts, its output job_output.ts, its end job_end.ts,
 * a reload's hand-over handover.ts, forgetting ended jobs retention.ts.
 */
import type { CgroupManager, JobCgroup, Usage } from "../cgroups/types.ts";
import { denoFileBatch, type FileBatch } from "../cgroups/file_batch.ts";
import type { LaunchedProcess, Launcher } from "../runtime/launcher.ts";
import type { Reaper } from "../runtime/reaper.ts";
import { log } from "../log/logger.ts";
import { Job, type JobRecord, type JobSpec, type JobStatus } from "./job.ts";
import { JobError } from "./errors.ts";
import { OutputLog } from "./output_log.ts";
import { type JobFilter, type JobStore } from "./store.ts";
import { Stopper } from "./stopper.ts";
import type { HandedJob, HandedRecord } from "../runtime/reexec.ts";
import type { OutputSinks } from "../runtime/output_pipe.ts";
import { sameSpec } from "./spec_compare.ts";
import { applyDefaultTerm } from "./pid1_term.ts";
import type { JobEvents, StopKind } from "./events.ts";
import { StartGate } from "./start_gate.ts";
import { LoopTurns } from "./turns.ts";
import { jobDir, type StartContext, startJob } from "./job_start.ts";
import { type EndContext, finishJob } from "./job_end.ts";
import { adoptJob, handOver, type HandoverContext, resumeOutput, settle } from "./handover.ts";
import { message, type Running, ZERO_USAGE } from "./running.ts";
import { forget, forgetExpired, type RetentionContext } from "./retention.ts";
import { JobReaders } from "./readers.ts";

export { jobDir };

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
  /** How a job's output directory and file are made (default: Deno's async calls). */
  files?: FileBatch;
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

export class JobManager {
  /** Jobs not yet ended and cleaned up; every other job lives only in the store. */
  readonly #live = new Map<string, Job>();
  readonly #running = new Map<string, Running>();
  /** Ended jobs whose last state the store could not take yet (disk full): retried. */
  readonly #unsaved = new Map<string, Job>();
  /** Per job in #unsaved: the state whose failed save was logged (logged again once saved). */
  readonly #failedSaves = new Map<string, JobStatus>();
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
  /** What the end of a job (job_end.ts) changes here. */
  readonly #endContext: EndContext;
  /** What a reload (handover.ts) reads and changes here. */
  readonly #handover: HandoverContext;
  readonly #retention: RetentionContext;
  /** Jobs whose output is being read or was just read: retention leaves them for later. */
  readonly #readers = new JobReaders();
  /** Jobs being forgotten whose record may remain a while (retention.ts): answered as forgotten. */
  readonly #forgetting = new Map<string, boolean>();

  constructor(
    private readonly launcher: Launcher,
    private readonly reaper: Reaper,
    private readonly cgroups: CgroupManager,
    private readonly store: JobStore,
    private readonly options: ManagerOptions,
  ) {
    this.#seq = store.lastSeq();
    this.#startGate = new StartGate(options.maxStarting ?? 4);
    this.#endContext = {
      turns: this.#turns,
      events: options.events,
      transition: (job, to, reason) => this.#transition(job, to, reason),
      cleanedUp: (id) => this.#running.delete(id),
      ended: (id) => this.#live.delete(id),
    };
    this.#retention = {
      stateDir: options.stateDir,
      store,
      readers: this.#readers,
      forgetting: this.#forgetting,
      forgotten: (id) => {
        this.#unsaved.delete(id);
        this.#failedSaves.delete(id);
      },
    };
    this.#handover = {
      stateDir: options.stateDir,
      maxOutputBytes: options.maxOutputBytes,
      events: options.events,
      store,
      launcher,
      cgroups,
      live: this.#live,
      running: this.#running,
      starting: () => this.#starting,
      saveUnsaved: () => {
        this.#saveUnsaved();
        return [...this.#unsaved.values()];
      },
      runningOf: (process, cgroup, stopper) => this.#runningOf(process, cgroup, stopper),
      armTimeout: (job, running, at) => this.#armTimeout(job, running, at),
      watch: (job, running, outputDone) => this.#watch(job, running, outputDone),
    };
  }

  get(id: string): Job | undefined {
    if (this.#forgetting.has(id)) return undefined;
    const live = this.#live.get(id) ?? this.#unsaved.get(id);
    if (live) return live;
    const record = this.store.get(id);
    return record && Job.fromRecord(record);
  }

  /** Jobs matching `filter` created before `beforeSeq`, newest first, at most `limit`. */
  page(filter: JobFilter, limit: number, beforeSeq?: number): JobPage {
    // Jobs whose end the store could not take yet (a full disk) are still RUNNING there: a status
    // filter must judge them by the state they are in, so they are read whatever their stored
    // status and filtered here (at most that many read rows are dropped).
    const byStatus = filter.statuses?.length ? filter.statuses : undefined;
    const alsoIds = byStatus && this.#unsaved.size > 0 ? [...this.#unsaved.keys()] : [];
    // Jobs being forgotten are left out too (their records may stay a while on a full disk).
    const records = this.store.page({
      ...filter,
      limit: limit + 1 + alsoIds.length + this.#forgetting.size,
      ...(beforeSeq !== undefined ? { beforeSeq } : {}),
      ...(alsoIds.length > 0 ? { alsoIds } : {}),
    });
    const jobs = records
      .filter((r) => !this.#forgetting.has(r.id))
      .map((r) => this.#live.get(r.id) ?? this.#unsaved.get(r.id) ?? Job.fromRecord(r))
      .filter((job) => byStatus === undefined || byStatus.includes(job.status));
    return { jobs: jobs.slice(0, limit), more: jobs.length > limit };
  }

  /** How many jobs match `filter`, per status: unsaved ends counted as what they are. */
  countByStatus(filter: JobFilter): Record<JobStatus, number> {
    const counts = this.store.countByStatus(filter);
    const counted = (status: JobStatus) =>
      !filter.statuses?.length || filter.statuses.includes(status);
    for (const job of this.#unsaved.values()) {
      if (filter.owner && job.owner !== filter.owner) continue;
      if (this.#forgetting.has(job.id)) continue; // taken off as stored, below
      const stored = this.store.get(job.id)?.status;
      if (stored === undefined || stored === job.status) continue;
      if (counted(stored)) counts[stored]--;
      if (counted(job.status)) counts[job.status]++;
    }
    for (const id of this.#forgetting.keys()) {
      const stored = this.store.get(id);
      if (!stored || (filter.owner && stored.owner !== filter.owner)) continue;
      if (counted(stored.status)) counts[stored.status]--;
    }
    return counts;
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
    const gone = () => new JobError("not-found", `the output of job "${job.id}" is gone`);
    let log: OutputLog;
    try {
      log = OutputLog.open(`${jobDir(this.options.stateDir, job.id)}/output`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw gone();
      throw e;
    }
    // Opened while its files were being removed, the log may show part of the output, or none, as
    // if it were all: the job is marked before anything is removed (retention.ts).
    if (this.#forgetting.has(job.id)) throw gone();
    return log;
  }

  /**
   * A stream of the job's output opened; call the result once it closed. Until a while after that
   * the retention limits do not forget the job (readers.ts): its reader may ask how it ended.
   */
  reading(id: string): () => void {
    return this.#readers.open(id);
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
      const { job, running, outputDone } = await startJob(
        this.#startContext(release, () => leaveGate()),
        spec,
        owner,
        began,
      );
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

  /** What the start of a job (job_start.ts) uses; `release`: the job no longer counts as starting. */
  #startContext(release: () => void, leaveGate: () => void): StartContext {
    return {
      stateDir: this.options.stateDir,
      files: this.options.files ?? denoFileBatch,
      maxOutputBytes: this.options.maxOutputBytes,
      store: this.store,
      cgroups: this.cgroups,
      launcher: this.launcher,
      events: this.options.events,
      nextSeq: () => ++this.#seq,
      setLive: (job, live) => {
        if (live) this.#live.set(job.id, job);
        else this.#live.delete(job.id);
      },
      runningOf: (process, cgroup, stopper) => this.#runningOf(process, cgroup, stopper),
      launched: (id, running) => {
        this.#running.set(id, running);
        release();
      },
      answered: leaveGate,
      finish: (job, running, outputDone) => this.#finish(job, running, outputDone),
      transition: (job, to, reason) => this.#transition(job, to, reason),
    };
  }

  /** The job's Running; `stopper` gets the job's processes as its target. */
  #runningOf(process: LaunchedProcess, cgroup: JobCgroup, stopper: Stopper): Running {
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
      stopper,
    };
    stopper.attach({
      signalAll: (s) => cgroup.signalAll(s),
      killAll: () => {
        cgroup.killAll();
        // Also through the pidfd, which reaches PID 1 even before it has joined the cgroup.
        process.signal(9);
      },
      afterTerm: () => this.#termPid1(running),
    });
    return running;
  }

  #armTimeout(job: Job, running: Running, at: number): void {
    running.timeoutAt = at;
    running.timeout = setTimeout(() => {
      this.#stop(job, {}, `timed out after ${job.spec.timeoutSeconds} s`, "timeout");
    }, Math.max(0, at - Date.now()));
  }

  /**
   * Cleans up after the job once it ends, then writes what the store could not take before (the
   * end of this job shows the disk may have room again) and applies retention.
   */
  #watch(job: Job, running: Running, outputDone: Promise<unknown>): void {
    this.#finish(job, running, outputDone).then(
      () => this.applyRetention(),
      (e) => log.error("job cleanup failed", { id: job.id, error: String(e) }),
    );
  }

  /**
   * First step of a reload: refuses new creates and waits (up to `ms`) until every live job is
   * simply running (handover.ts). False if that did not happen (the reload is then called off and
   * creates are accepted again), or if `abort` fired first.
   */
  async quiesce(ms: number, abort?: AbortSignal): Promise<boolean> {
    this.#reloading = true;
    const settled = await settle(this.#handover, ms, abort);
    if (!settled) this.#reloading = false;
    return settled;
  }

  /** Last step of a reload, right before the exec: see handover.ts. */
  handOver(): { jobs: HandedJob[]; unsaved: HandedRecord[] } {
    return handOver(this.#handover);
  }

  /** The exec failed: go on as before. */
  resumeAfterFailedHandover(): void {
    resumeOutput(this.#handover);
    this.#reloading = false;
  }

  /** Takes over a job the previous process handed over at a reload (handover.ts). */
  adopt(handed: HandedJob, reattach: (sinks: OutputSinks) => LaunchedProcess): boolean {
    return adoptJob(this.#handover, handed, reattach);
  }

  /** Stops a job and resolves once nothing of it is left; an ended job is returned as it is. */
  async stop(id: string, options: StopOptions = {}): Promise<Job> {
    const job = this.get(id);
    if (!job) throw new JobError("not-found", `no job with id "${id}"`);
    if (!job.isEnded && job.stopper) {
      this.#stop(job, options, "stopped by request", "request");
      // A job still starting may never start (its cgroup or launch failed): forgotten, not ended.
      await Promise.race([job.ended, job.stopper.abandoned]);
      if (!job.isEnded) throw new JobError("not-found", `job ${id} failed to start`);
    }
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
    await forget(this.#retention, id);
  }

  /** Stops every job (SIGTERM, then SIGKILL after `graceSeconds`) and waits for all to end. */
  async shutdown(graceSeconds: number): Promise<void> {
    this.#shuttingDown = true;
    // Jobs still starting are stopped at launch (stopper.ts) and waited for like the others, or
    // until their start fails: none is left running in a cgroup nobody removes.
    const jobs = [...this.#live.values()].filter((job) => !job.isEnded);
    for (const job of jobs) this.#stop(job, { graceSeconds }, "the worker shut down", "shutdown");
    await Promise.all(
      jobs.map((job) => Promise.race([job.ended, job.stopper?.abandoned ?? job.ended])),
    );
    // A last try for what the store could not take; what still fails is settled by the next
    // start as an interrupted job (its end unknown), and the log says so.
    this.#saveUnsaved();
    for (const id of this.#unsaved.keys()) {
      log.error("the job's last state could not be written before the worker stopped", { id });
    }
  }

  /**
   * SIGTERM to every process of the job (once), SIGKILL when the grace period ends. A later stop
   * with a shorter grace (or force) brings the SIGKILL forward; none ever delays it. A job still
   * starting is stopped once it has processes.
   */
  #stop(job: Job, options: StopOptions, reason: string, kind: StopKind): void {
    const events = this.options.events;
    if (job.stopReason === undefined && events !== undefined) {
      // Counted when it reaches the job's processes: a job whose start fails was never stopped.
      if (job.stopper === undefined) events.stopping(job, kind);
      else job.stopper.whenCarriedOut(() => events.stopping(job, kind));
    }
    job.stopReason ??= reason;
    const graceMs = options.force
      ? 0
      : 1000 * (options.graceSeconds ?? this.options.stopGraceSeconds);
    job.stopper?.stop(graceMs);
  }

  /** Moves the job to `to` and records it at once; a record that cannot be written is logged. */
  #transition(job: Job, to: JobStatus, reason?: string): void {
    job.transition(to, reason);
    this.#save(job);
  }

  #save(job: Job): void {
    const failed = this.#failedSaves.get(job.id);
    try {
      this.store.update(job.toRecord());
      this.#unsaved.delete(job.id);
      this.#failedSaves.delete(job.id);
      if (failed !== undefined) log.info("the job's state is recorded now", { id: job.id });
    } catch (e) {
      // Once per state: retries run at every job's end, and on a full disk each would fail again;
      // a later state (its end after a failed RUNNING) is logged when it fails in its turn.
      if (failed !== job.status) {
        log.error("cannot record the job's state; will retry", {
          id: job.id,
          status: job.status,
          error: message(e),
        });
        this.#failedSaves.set(job.id, job.status);
      }
      this.#unsaved.set(job.id, job);
    }
  }

  /** Ended jobs whose last state the store could not take at the start: written again later. */
  keepUnsaved(jobs: readonly Job[]): void {
    for (const job of jobs) {
      this.#unsaved.set(job.id, job);
      this.#failedSaves.set(job.id, job.status); // logged where it failed
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

  /** Waits for the job's end, then records how it ended and removes what it used. */
  #finish(job: Job, running: Running, outputDone: Promise<unknown>): Promise<void> {
    return finishJob(this.#endContext, job, running, outputDone);
  }

  /** Forgets ended jobs beyond the retention limits (count and age), with their output. */
  #evict(): void {
    forgetExpired(this.#retention, this.options.maxEndedJobs, this.options.retentionMs ?? 0);
  }

  /**
   * Housekeeping the server also runs on a timer: records the store could not take are written
   * again, and the retention limits applied.
   */
  applyRetention(): void {
    this.#saveUnsaved();
    this.#evict();
  }
}
