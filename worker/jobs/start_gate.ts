/**
 * Admission for job starts: at most `limit` jobs between "create accepted" and "its command
 * exec'd" at once; the rest wait their turn, first come first served.
 *
 * Why: from the create until its exec a start is work for the worker's event loop (the record and
 * its sync, the cgroup, the clone, reading the first process's report), and that process competes
 * with the loop for the CPUs meanwhile: in a direct start (the default) jwstart taking the job's
 * steps, 2-3 ms of CPU per job in all, about what `unshare` with the same namespaces takes; a pooled
 * `jobworker init` taking them in Deno; an init cloned for the job (JOB_WORKER_DIRECT_START=0) a
 * whole Deno runtime starting up, tens of ms. That last was every start when 300 creates at once
 * left TLS handshakes and GetJobs of everyone else waiting seconds (issue 12). Starts let in all at
 * once queue all their steps on the loop at once, and another client's call waits behind them; a
 * create waiting here costs the loop nothing until its turn. More at once end a burst sooner, at
 * that price. Measured with direct starts (2026-12-03, 2 CPUs, limits interleaved): 12 at once
 * instead of 4 made the bench's 100 creates 20 at a time 0.73x as long (median of 14 rounds), but
 * during 300 creates at once another client's GetJob p50 went from 16 ms to 59 ms and a new
 * connection's first call from 137 ms to 308 ms (medians of 12); 8 at once: 0.96x, 37 ms, 260 ms;
 * 6 at once (20 rounds, 18 bursts; 4 at once there: 15 ms, 136 ms): 0.97x, 23 ms, 169 ms.
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
