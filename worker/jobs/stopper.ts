/**
 * Stop escalation of one job: SIGTERM (then SIGCONT) to every process of the job (once), SIGKILL
 * when the grace period ends. A later stop with a shorter grace (or force) brings the SIGKILL
 * forward; none ever delays it. The SIGKILL deadline is an absolute time, so it can be carried
 * over a reload.
 *
 * A job has its Stopper from its record's insert on, before it has any process: a stop asked for
 * while the job is still starting (its cgroup being made) is kept, the shortest grace winning, and
 * carried out when the job's processes exist ({@link Stopper.attach}, at launch; the grace counts
 * from there). A job that never gets processes (its cgroup or launch failed) is
 * {@link Stopper.abandon}ed: whoever waits for it to end hears that instead.
 */

/** What a stop acts on: the job's cgroup and its first process. */
export interface StopTarget {
  signalAll(signal: Deno.Signal): void;
  /** SIGKILL to everything in the cgroup, and to the first process through its pidfd. */
  killAll(): void;
  /**
   * SIGTERM has just reached the processes of a job that is running (its command exec'd): the
   * place for SIGTERM's default action on a PID 1 without a handler (see pid1_term.ts).
   */
  afterTerm?(): void;
}

/**
 * SIGTERM to every process of the job, then SIGCONT, as systemd does: a suspended process (one
 * that got SIGSTOP or SIGTSTP) acts on its SIGTERM only once continued; without the SIGCONT it sat
 * out the whole grace period and was SIGKILLed, its handler never run.
 */
function terminate(target: StopTarget): void {
  target.signalAll("SIGTERM");
  target.signalAll("SIGCONT");
}

export class Stopper {
  /** What the stop acts on; undefined until the job's first process exists. */
  #target: StopTarget | undefined;
  /** The shortest grace asked for before there was a target: carried out at attach. */
  #pendingGraceMs: number | undefined;
  /** Told when the first stop reaches the job's processes (see {@link whenCarriedOut}). */
  #onCarriedOut: (() => void) | undefined;
  readonly #abandoned = Promise.withResolvers<void>();
  /** SIGTERM went out to the job's processes. */
  #terminated = false;
  /** When the job gets SIGKILL (epoch ms). */
  #killAt: number | undefined;
  #killTimer: ReturnType<typeof setTimeout> | undefined;
  #done = false;
  /** The command runs in the job's cgroup (adopted jobs are). */
  #started = false;

  /** `target`: the job's processes, when they exist already; else see {@link attach}. */
  constructor(target?: StopTarget) {
    this.#target = target;
  }

  get terminated(): boolean {
    return this.#terminated;
  }

  get killAt(): number | undefined {
    return this.#killAt;
  }

  /** Resolves when the job was abandoned: it will never have processes, nor end. */
  get abandoned(): Promise<void> {
    return this.#abandoned.promise;
  }

  /**
   * Starts (or hurries) the stop: SIGTERM now unless `graceMs` is 0, SIGKILL after `graceMs`.
   * Before {@link attach}, the stop is kept (the shortest grace wins) and carried out there.
   */
  stop(graceMs: number, now = Date.now()): void {
    if (this.#done) return;
    const target = this.#target;
    if (target === undefined) {
      this.#pendingGraceMs = Math.min(this.#pendingGraceMs ?? Infinity, graceMs);
      return;
    }
    const carriedOut = this.#onCarriedOut;
    this.#onCarriedOut = undefined;
    carriedOut?.();
    if (!this.#terminated && graceMs > 0) {
      this.#terminated = true;
      terminate(target);
      if (this.#started) target.afterTerm?.();
    }
    this.killBy(now + graceMs, now);
  }

  /**
   * Calls `then` once, when a stop first acts on the job's processes: now if it has already, at
   * {@link attach} if one is kept, never if the job is abandoned before attach (a stop kept for a
   * job whose launch failed stopped nothing). A stop that reached init before its exec failed
   * did act on a process and counts.
   */
  whenCarriedOut(then: () => void): void {
    if (this.#terminated || this.#killAt !== undefined) then();
    else this.#onCarriedOut ??= then;
  }

  /** SIGKILL at `at` (epoch ms) unless one is already due earlier. */
  killBy(at: number, now = Date.now()): void {
    if (this.#done) return;
    if (this.#killAt !== undefined && this.#killAt <= at) return;
    const target = this.#target;
    if (target === undefined) throw new Error("a SIGKILL deadline needs the job's processes");
    this.#killAt = at;
    clearTimeout(this.#killTimer);
    this.#killTimer = setTimeout(() => target.killAll(), Math.max(0, at - now));
  }

  /**
   * The job's first process exists (launched, or handed over by a reload): from now on stops act
   * on `target`, and a stop asked for before is carried out now.
   */
  attach(target: StopTarget): void {
    if (this.#target !== undefined) throw new Error("the stopper has a target already");
    this.#target = target;
    const pending = this.#pendingGraceMs;
    this.#pendingGraceMs = undefined;
    if (pending !== undefined) this.stop(pending);
  }

  /**
   * The job will never run (its cgroup, launch or init failed) and is forgotten: stops are dropped,
   * and whoever waits for it to end hears this instead.
   */
  abandon(): void {
    this.#done = true;
    clearTimeout(this.#killTimer);
    this.#pendingGraceMs = undefined;
    this.#onCarriedOut = undefined;
    this.#abandoned.resolve();
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
    this.#started = true;
    if (this.#terminated && !this.#done && this.#target !== undefined) {
      terminate(this.#target);
      this.#target.afterTerm?.();
    }
  }

  /** A job handed over by a reload: it has been running all along. */
  adopted(): void {
    this.#started = true;
  }

  /** The job has ended: no more signals. */
  cancel(): void {
    this.#done = true;
    clearTimeout(this.#killTimer);
  }
}
