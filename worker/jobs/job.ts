/**
 * A job and its state machine: INITIALIZING → RUNNING → COMPLETED | FAILED | STOPPED (or straight
 * from INITIALIZING to an end state when the command cannot start). Any other move is a bug and
 * throws {@link StateTransitionError}.
 */
import type { Limits, Usage } from "../cgroups/types.ts";
import type { OutputLog } from "./output_log.ts";
import type { ResolvedUser } from "../runtime/users.ts";

export type JobStatus = "INITIALIZING" | "RUNNING" | "COMPLETED" | "FAILED" | "STOPPED";
export const END_STATES: readonly JobStatus[] = ["COMPLETED", "FAILED", "STOPPED"];

const ALLOWED: Record<JobStatus, readonly JobStatus[]> = {
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

/** What a client asked for, validated, with server defaults resolved into `limits`. */
export interface JobSpec {
  command: string;
  args: string[];
  /** The extra KEY=VALUE entries as requested. */
  env: string[];
  workDir: string;
  timeoutSeconds: number;
  limits: Limits;
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

export class Job {
  status: JobStatus = "INITIALIZING";
  readonly createTime = new Date();
  startTime: Date | undefined;
  endTime: Date | undefined;
  exit: ExitInfo | undefined;
  oomKilled = false;
  reason = "";
  /** Set by StopJob or the timeout; the job then ends STOPPED. */
  stopReason: string | undefined;
  /** Usage read just before the job's cgroup was removed. */
  finalUsage: Usage | undefined;
  readonly #ended = Promise.withResolvers<void>();

  constructor(
    readonly id: string,
    readonly owner: string,
    readonly spec: JobSpec,
    readonly output: OutputLog,
  ) {}

  get isEnded(): boolean {
    return END_STATES.includes(this.status);
  }

  /** Resolves once the job has ended and everything of it is cleaned up. */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  transition(to: JobStatus, reason?: string): void {
    if (!ALLOWED[this.status].includes(to)) throw new StateTransitionError(this.status, to);
    this.status = to;
    if (reason !== undefined) this.reason = reason;
    if (to === "RUNNING") this.startTime = new Date();
    if (END_STATES.includes(to)) {
      this.endTime = new Date();
      this.#ended.resolve();
    }
  }
}
