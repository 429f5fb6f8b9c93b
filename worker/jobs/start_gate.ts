/**
 * Admission for job starts: at most `limit` jobs between "create accepted" and "its command
 * exec'd" at once; the rest wait their turn, first come first served.
 *
 * Why: each start runs a fresh `init` process (a Deno runtime starting up) until the job's command
 * execs. 300 creates at once made 300 such processes compete with the worker for 2 cores: the
 * worker's own event loop got a 1/300 share, so TLS handshakes and GetJobs calls of everyone else
 * waited seconds (issue 12). With a few starts at a time the cores stay busy just the same (the
 * burst takes no longer), and the worker keeps its share to answer everyone else.
 */
export class StartGate {
  #inside = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** Starts in progress, and waiting. */
  get starting(): number {
    return this.#inside;
  }
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Waits for a free slot; call the returned function (once) when the start is done. */
  async enter(): Promise<() => void> {
    if (this.#inside < this.limit) {
      this.#inside++;
    } else {
      // The slot is handed over by leave(), so the count never drops and rises in between.
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.#leave();
    };
  }

  #leave(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#inside--;
  }
}
