/**
 * Which ended jobs someone is reading, or just read: the retention limits leave them alone for a
 * while. A client that follows a job to its end (`jobworker run`, `stream`) asks how it ended
 * right after its stream closes; forgotten in between (a small JOB_WORKER_MAX_ENDED_JOBS, many
 * jobs ending at once), the job answered NOT_FOUND and `run` failed although the job had completed.
 */

/**
 * How long after its end a job that is being read (or was read) stays held: as long as the
 * command line keeps trying to resume a stream whose connection dropped (cli/output.ts), so a
 * resume finds the job too. Bounded by the job's end, not by its streams: a client that keeps a
 * stream open, or opens one every minute, cannot keep jobs from the retention limits (and the
 * disk from emptying) forever; so at most the jobs that ended in the last READ_HOLD_MS are held.
 */
export const READ_HOLD_MS = 60_000;

export class JobReaders {
  /** Per job: streams open now, and when the last one closed. */
  readonly #jobs = new Map<string, { open: number; closedAt: number }>();

  /** A stream of the job's output opened; call the result once it closed. */
  open(id: string): () => void {
    const entry = this.#jobs.get(id) ?? { open: 0, closedAt: 0 };
    entry.open++;
    this.#jobs.set(id, entry);
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      entry.open--;
      entry.closedAt = Date.now();
    };
  }

  /**
   * True while the job, which ended at `endTime`, ended less than READ_HOLD_MS ago and a stream of
   * it is open or closed less than READ_HOLD_MS ago.
   */
  held(id: string, endTime: Date | undefined, now = Date.now()): boolean {
    const entry = this.#jobs.get(id);
    if (entry === undefined || endTime === undefined) return false;
    if (now - endTime.getTime() >= READ_HOLD_MS) return false;
    return entry.open > 0 || now - entry.closedAt < READ_HOLD_MS;
  }

  /** True when a stream of the job is open or was opened (until prune() drops it). */
  has(id: string): boolean {
    return this.#jobs.has(id);
  }

  /** Forgets the jobs no longer held (run with each retention pass: this map stays small). */
  prune(now = Date.now()): void {
    for (const [id, entry] of this.#jobs) {
      if (entry.open === 0 && now - entry.closedAt >= READ_HOLD_MS) this.#jobs.delete(id);
    }
  }
}
