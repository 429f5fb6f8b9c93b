/**
 * Whether the init pool gives its members slots (cgroup v1, see init_pool.ts). Slots only save
 * time: without them a waiting init joins its job's cgroup when claimed, as before. So when slots
 * keep failing, they are turned off for a while instead of making every member pay for a failure:
 *
 * - a failure is a slot that could not be made (mkdir, its cgroup.procs files not opened) or a
 *   member in a slot that died before it was ready (the join is the step only slotted members
 *   take; whatever else killed it, the pool's own refill pause applies too);
 * - {@link FAILURES_TO_TURN_OFF} failures in a row turn slots off, with one warning ("pool slots
 *   off"), until a back-off has passed: {@link FIRST_BACKOFF_MS}; then the next member is given a
 *   slot again, and if that fails the back-off doubles (up to {@link MAX_BACKOFF_MS}) without
 *   another warning (a debug line);
 * - a slotted member that gets ready is a success: the count starts again, and slots that had
 *   been turned off are back on ("pool slots on again").
 */
import { log } from "../log/logger.ts";

/** Failures in a row that turn slots off. */
export const FAILURES_TO_TURN_OFF = 3;
export const FIRST_BACKOFF_MS = 10_000;
export const MAX_BACKOFF_MS = 60 * 60_000;

/** What failed: making the slot, or the member in it before it was ready (its join). */
export type SlotFailure = "make" | "join";

export class SlotHealth {
  /** Failures since the last success (or since slots were last turned off). */
  #failures = 0;
  /** Slots are off until then (epoch ms); 0: on. */
  #offUntil = 0;
  /** Back-off of the next turn-off; grows while retries keep failing. */
  #backoffMs = FIRST_BACKOFF_MS;
  /** Turned off since the last success: one failure of a retry turns them off again. */
  #retrying = false;

  constructor(private readonly now: () => number = Date.now) {}

  /** Whether the next member gets a slot. */
  get on(): boolean {
    return this.now() >= this.#offUntil;
  }

  /**
   * A slot failed; `error` says how. Failures of slots made before they were turned off are not
   * counted.
   */
  failed(kind: SlotFailure, error: string): void {
    if (!this.on) return;
    this.#failures++;
    log.debug("a pool slot failed", { kind, error, inARow: this.#failures });
    if (!this.#retrying && this.#failures < FAILURES_TO_TURN_OFF) return;
    const pauseMs = this.#backoffMs;
    this.#offUntil = this.now() + pauseMs;
    this.#backoffMs = Math.min(MAX_BACKOFF_MS, pauseMs * 2);
    this.#failures = 0;
    const fields = { kind, error, retryInMs: pauseMs };
    if (this.#retrying) log.debug("pool slots still failing: off again", fields);
    else log.warn("pool slots off: waiting inits join a job's cgroup when claimed", fields);
    this.#retrying = true;
  }

  /** A member got ready in its slot. */
  worked(): void {
    this.#failures = 0;
    if (!this.#retrying) return;
    this.#retrying = false;
    this.#offUntil = 0;
    this.#backoffMs = FIRST_BACKOFF_MS;
    log.info("pool slots on again");
  }
}
