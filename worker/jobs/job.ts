/**
 * A job and its state machine: INITIALIZING → RUNNING → COMPLETED | FAILED | STOPPED (or straight
 * from INITIALIZING to an end state when the command cannot start). The table below is the only
 * place that says which move is allowed; any other move is a bug and throws
 * {@link StateTransitionError}.
 */
import type { Limits, Usage } from "../cgroups/types.ts";
import type { OutputLog } from "./output_log.ts";
import type { Stopper } from "./stopper.ts";
import type { ResolvedUser } from "../runtime/users.ts";

export type JobStatus = "INITIALIZING" | "RUNNING" | "COMPLETED" | "FAILED" | "STOPPED";
export const JOB_STATUSES: readonly JobStatus[] = [
  "INITIALIZING",
  "RUNNING",
  "COMPLETED",
  "FAILED",
  "STOPPED",
];
export const END_STATES: readonly JobStatus[] = ["COMPLETED", "FAILED", "STOPPED"];

/** Every allowed transition, from → to. */
const TRANSITIONS: Record<JobStatus, readonly JobStatus[]> = {
  INITIALIZING: ["RUNNING", "FAILED", "STOPPED"],
  RUNNING: END_STATES,
  COMPLETED: [],
  FAILED: [],
  STOPPED: [],
};

export class StateTransitionError extends Error {
  constructor(readonly from: JobStatus, readonly to: JobStatus) {
    super(`Invalid job state transition from ${from} to ${to}`);
    this.name = "StateTransitionError";
  }
}

/**
 * What a client asked for, validated, with server defaults resolved into `limits`. New request
 * fields go here: the record stores the spec whole, and a retried create (same requestId) is
 * compared on all of it.
 */
export interface JobSpec {
  command: string;
  args: string[];
  /** The extra KEY=VALUE entries as requested. */
  env: string[];
  workDir: string;
  timeoutSeconds: number;
  limits: Limits;
  /** The client's idempotency key; "" = none. */
  requestId: string;
  /** Who the job runs as, resolved when it was created. */
  user: ResolvedUser;
  network: "host" | "none";
  /** Every capability and no masks (the seed's behaviour). */
  privileged: boolean;
  /** Under the minimal init (jwinit) as PID 1. */
  init: boolean;
}

/** How the job's first process ended. */
export interface ExitInfo {
  exitCode: number;
  signal: number;
}

/**
 * Everything the record holds of a job (the store keeps exactly this). Its id, seq, owner, spec
 * and createTime are fixed when it is inserted (JobStore.update leaves them as they are).
 */
export interface JobRecord {
  id: string;
  /** Creation order, unique and increasing: "newest first" sorts by it. */
  seq: number;
  owner: string;
  spec: JobSpec;
  status: JobStatus;
  createTime: Date;
  startTime: Date | undefined;
  endTime: Date | undefined;
  exit: ExitInfo | undefined;
  oomKilled: boolean;
  reason: string;
  /** Usage read just before the job's cgroup was removed. */
  finalUsage: Usage | undefined;
  outputBytes: number;
  outputTruncated: boolean;
}

export class Job {
  status: JobStatus;
  readonly createTime: Date;
  startTime: Date | undefined;
  endTime: Date | undefined;
  exit: ExitInfo | undefined;
  oomKilled = false;
  reason = "";
  /** Set by StopJob or the timeout; the job then ends STOPPED. */
  stopReason: string | undefined;
  finalUsage: Usage | undefined;
  /** Where storing the job's output failed (disk full): the rest of it was read and dropped. */
  outputLost: { offset: number; error: string } | undefined;
  /** The live output log while the job runs; ended jobs loaded from the record have none. */
  output: OutputLog | undefined;
  /** Its stop escalation while it is live (from its record's insert); loaded jobs have none. */
  stopper: Stopper | undefined;
  #outputBytes = 0;
  #outputTruncated = false;
  readonly #ended = Promise.withResolvers<void>();

  constructor(
    readonly id: string,
    readonly seq: number,
    readonly owner: string,
    readonly spec: JobSpec,
    createTime = new Date(),
    status: JobStatus = "INITIALIZING",
  ) {
    this.createTime = createTime;
    this.status = status;
    if (this.isEnded) this.#ended.resolve();
  }

  /** A job as its record holds it. */
  static fromRecord(r: JobRecord): Job {
    const job = new Job(r.id, r.seq, r.owner, r.spec, r.createTime, r.status);
    job.startTime = r.startTime;
    job.endTime = r.endTime;
    job.exit = r.exit;
    job.oomKilled = r.oomKilled;
    job.reason = r.reason;
    job.finalUsage = r.finalUsage;
    job.#outputBytes = r.outputBytes;
    job.#outputTruncated = r.outputTruncated;
    return job;
  }

  toRecord(): JobRecord {
    return {
      id: this.id,
      seq: this.seq,
      owner: this.owner,
      spec: this.spec,
      status: this.status,
      createTime: this.createTime,
      startTime: this.startTime,
      endTime: this.endTime,
      exit: this.exit,
      oomKilled: this.oomKilled,
      reason: this.reason,
      finalUsage: this.finalUsage,
      outputBytes: this.outputBytes,
      outputTruncated: this.outputTruncated,
    };
  }

  get outputBytes(): number {
    return this.output?.size ?? this.#outputBytes;
  }

  get outputTruncated(): boolean {
    return this.output?.truncated ?? this.#outputTruncated;
  }

  get isEnded(): boolean {
    return END_STATES.includes(this.status);
  }

  /** Resolves once the job has ended and everything of it is cleaned up. */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  /** Moves the job to `to` (throws StateTransitionError when the table does not allow it). */
  transition(to: JobStatus, reason?: string, at = new Date()): void {
    if (!TRANSITIONS[this.status].includes(to)) throw new StateTransitionError(this.status, to);
    this.status = to;
    if (reason !== undefined) this.reason = reason;
    if (to === "RUNNING") this.startTime = at;
    if (END_STATES.includes(to)) {
      this.endTime = at;
      if (this.output) {
        this.#outputBytes = this.output.size;
        this.#outputTruncated = this.output.truncated;
      }
      this.#ended.resolve();
    }
  }
}
