/**
 * Which ended jobs someone is reading, or just read: the retention limits leave them alone for a
 * while. A client that follows a job to its end (`jobworker run`, `stream`) asks how it ended
 * right after its stream closes; forgotten in between (a small JOB_WORKER_MAX_ENDED_JOBS, many
 * jobs ending at once), the job answered NOT_FOUND and `run` failed although the job had completed.
 */

/**
 * How long after its last stream closed a job stays held: as long as the command line keeps trying
 * to resume a stream whose connection dropped (cli/output.ts), so a resume finds the job too.
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

  /** True while a stream of the job is open, or closed less than READ_HOLD_MS ago. */
  held(id: string, now = Date.now()): boolean {
    const entry = this.#jobs.get(id);
    return entry !== undefined && (entry.open > 0 || now - entry.closedAt < READ_HOLD_MS);
  }

  /** Forgets the jobs no longer held (run with each retention pass: this map stays small). */
  prune(now = Date.now()): void {
    for (const [id, entry] of this.#jobs) {
      if (entry.open === 0 && now - entry.closedAt >= READ_HOLD_MS) this.#jobs.delete(id);
    }
  }
}
