/**
 * Stop escalation of one job: SIGTERM to every process of the job (once), SIGKILL when the grace
 * period ends. A later stop with a shorter grace (or force) brings the SIGKILL forward; none ever
 * delays it. The SIGKILL deadline is an absolute time, so it can be carried over a reload.
 */

/** What a stop acts on: the job's cgroup and its first process. */
export interface StopTarget {
  signalAll(signal: Deno.Signal): void;
  /** SIGKILL to everything in the cgroup, and to the first process through its pidfd. */
  killAll(): void;
}

export class Stopper {
  /** SIGTERM went out to the job's processes. */
  #terminated = false;
  /** When the job gets SIGKILL (epoch ms). */
  #killAt: number | undefined;
  #killTimer: ReturnType<typeof setTimeout> | undefined;
  #done = false;

  constructor(private readonly target: StopTarget) {}

  get terminated(): boolean {
    return this.#terminated;
  }

  get killAt(): number | undefined {
    return this.#killAt;
  }

  /** Starts (or hurries) the stop: SIGTERM now unless `graceMs` is 0, SIGKILL after `graceMs`. */
  stop(graceMs: number, now = Date.now()): void {
    if (this.#done) return;
    if (!this.#terminated && graceMs > 0) {
      this.#terminated = true;
      this.target.signalAll("SIGTERM");
    }
    this.killBy(now + graceMs, now);
  }

  /** SIGKILL at `at` (epoch ms) unless one is already due earlier. */
  killBy(at: number, now = Date.now()): void {
    if (this.#done) return;
    if (this.#killAt !== undefined && this.#killAt <= at) return;
    this.#killAt = at;
    clearTimeout(this.#killTimer);
    this.#killTimer = setTimeout(() => this.target.killAll(), Math.max(0, at - now));
  }

  /** SIGTERM went out before a reload handed the job over: do not send it again. */
  markTerminated(): void {
    this.#terminated = true;
  }

  /**
   * The job's processes joined its cgroup: a SIGTERM sent while init was still setting up could
   * not reach them through the cgroup, so send it again.
   */
  started(): void {
    if (this.#terminated && !this.#done) this.target.signalAll("SIGTERM");
  }

  /** The job has ended: no more signals. */
  cancel(): void {
    this.#done = true;
    clearTimeout(this.#killTimer);
  }
}
