/**
 * Job lifecycle events, for observers such as the metrics (the manager calls them; an observer
 * must be quick and must not throw).
 */
import type { Job } from "./job.ts";

/** Why a stop was asked for: StopJob, the job's own timeout, or the worker shutting down. */
export type StopKind = "request" | "timeout" | "shutdown";

export interface JobEvents {
  /** The job reached RUNNING, `seconds` after CreateJob reached the manager. */
  started(job: Job, seconds: number): void;
  /** A job could not be started (cgroup, launch or init failure). */
  startFailed(): void;
  /** The first stop of a job, once it reaches the job's processes (a stop while a job starts
   * counts at its launch; one of a job whose start fails before launch never does). */
  stopping(job: Job, kind: StopKind): void;
  /** The job has ended and is cleaned up (its status, exit and oomKilled are final). */
  ended(job: Job): void;
  /** Bytes of job output read from its pipes. */
  outputIngested(bytes: number): void;
}
