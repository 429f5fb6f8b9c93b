/**
 * Turns on the event loop for heavy synchronous sections: one section per turn of the loop, in
 * order. A hundred jobs that end together would otherwise run their final accounting and record
 * (cgroup reads, an fsync'd commit each) back to back in one turn, and every call waiting on the
 * loop (a GetServerInfo, a stream's next chunk) would wait for all of them; with turns it waits
 * for one. (Creates do not take turns: it cost 5-10% of parallel start time in `make bench`.)
 */
export class LoopTurns {
  #last: Promise<void> = Promise.resolve();

  /** Resolves when the caller may run its section: after the previous one, through the loop. */
  next(): Promise<void> {
    const turn = this.#last.then(() => new Promise<void>((resolve) => setTimeout(resolve, 0)));
    this.#last = turn;
    return turn;
  }
}
