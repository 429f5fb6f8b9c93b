/**
 * Paces a warning that a flood can repeat (refused connections, dropped handshakes): one line per
 * interval however many events came, each line carrying the running count, so a flood cannot
 * flood the log as well.
 *
 * @module
 */

export class WarningPace {
  #last = -Infinity;

  constructor(private readonly intervalMs = 10_000) {}

  /** Whether a line may be written now; if so, the next one waits a whole interval. */
  due(now = Date.now()): boolean {
    if (now - this.#last < this.intervalMs) return false;
    this.#last = now;
    return true;
  }
}
