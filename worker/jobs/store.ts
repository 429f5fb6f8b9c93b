/**
 * The record store as the job layer sees it. worker/store/ implements it (SQLite on disk, and an
 * in-memory one for unit tests); nothing here knows how records are kept.
 */
import type { JobRecord, JobStatus } from "./job.ts";

/** Which jobs a listing covers. */
export interface JobFilter {
  /** Only jobs in one of these states; empty or absent = all. */
  statuses?: readonly JobStatus[];
  /** Only jobs of this owner; "" or absent = all. */
  owner?: string;
}

export interface JobPageQuery extends JobFilter {
  /** Only jobs created before the one with this seq (a page continues there); absent = newest. */
  beforeSeq?: number;
  limit: number;
  /**
   * These jobs too, whatever their status in the store (other filters still apply): jobs whose
   * newer state the store could not take yet, which the caller judges by that state.
   */
  alsoIds?: readonly string[];
}

/** The store cannot take a write (disk full, read-only, I/O error); the message says why. */
export class StoreWriteError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreWriteError";
  }
}

/**
 * The write failed for want of space (SQLite's "database or disk is full", ENOSPC, EDQUOT), not
 * because it is not allowed or the disk failed.
 */
export function isStoreFull(e: unknown): boolean {
  for (let err = e; err instanceof Error; err = err.cause) {
    if (/database or disk is full|SQLITE_FULL|ENOSPC|EDQUOT|No space left/i.test(err.message)) {
      return true;
    }
    const code = (err as { code?: unknown }).code;
    if (code === "ENOSPC" || code === "EDQUOT" || code === "ERR_SQLITE_FULL") return true;
  }
  return false;
}

export interface JobStore {
  /** Adds a new job's record; durable once durable() resolves. Throws StoreWriteError. */
  insert(record: JobRecord): void;
  /**
   * Resolves once every write made so far is on disk (the disk work happens off the event loop).
   * Rejects with StoreWriteError when it cannot be made durable.
   */
  durable(): Promise<void>;
  /**
   * Saves a job's newer state: what its life changes (status, times, exit, reason, final usage,
   * output size). Its id, seq, owner, spec and create time stay as inserted. Throws
   * StoreWriteError.
   */
  update(record: JobRecord): void;
  get(id: string): JobRecord | undefined;
  /** The job `owner` created with this idempotency key, if the store still has it. */
  byRequestId(owner: string, requestId: string): JobRecord | undefined;
  /** Jobs matching the query, newest first. */
  page(query: JobPageQuery): JobRecord[];
  /** How many jobs match the filter, per status. */
  countByStatus(filter: JobFilter): Record<JobStatus, number>;
  /** The highest seq ever given (0: none); seqs are never reused. */
  lastSeq(): number;
  /** Records not ended yet (what a restart must settle). */
  unended(): JobRecord[];
  /**
   * Ended jobs beyond the retention limits: all but the newest `keep` ended ones, and every one
   * that ended before `endedBefore`. Oldest first.
   */
  expired(keep: number, endedBefore: Date | undefined): string[];
  /** Forgets a job's record. Throws StoreWriteError. */
  delete(id: string): void;
  close(): void;
}
