/**
 * Whether the init pool gives its members slots (cgroup v1, see init_pool.ts). Slots only save
 * time: without them a waiting init joins its job's cgroup when claimed, as before. So when slots
 * keep failing, they are turned off for a while instead of making every member pay for a failure:
 *
 * - a failure is a slot that could not be made (mkdir, its cgroup.procs files not opened), a
 *   member in a slot that died before it was ready (the join is the step only slotted members
 *   take; whatever else killed it, the pool's own refill pause applies too), or a slot that could
 *   not become a job's cgroup (its limits or its rename, at a claim: the adopt);
 * - {@link FAILURES_TO_TURN_OFF} failures in a row of one step turn slots off, with one warning
 *   ("pool slots off"), until a back-off has passed: {@link FIRST_BACKOFF_MS}; then the next member
 *   is given a slot again, and if that fails the back-off doubles (up to {@link MAX_BACKOFF_MS})
 *   without another warning (a debug line);
 * - the steps count apart, each reset by its own success: a slotted member that gets ready for
 *   making and joining, a slot that became a job's cgroup for adopting. Otherwise members getting
 *   ready between claims would hide adopts that always fail. A success of the step that turned
 *   slots off puts them back on ("pool slots on again").
 */
import { log } from "../log/logger.ts";

/** Failures in a row that turn slots off. */
export const FAILURES_TO_TURN_OFF = 3;
export const FIRST_BACKOFF_MS = 10_000;
export const MAX_BACKOFF_MS = 60 * 60_000;

/**
 * What failed: making the slot, the member in it before it was ready (its join), or the slot
 * becoming a job's cgroup (adopt).
 */
export type SlotFailure = "make" | "join" | "adopt";
/** What worked: a member got ready in its slot, or a slot became a job's cgroup. */
export type SlotSuccess = "ready" | "adopt";

/** The steps counted apart: a member's (make, join; ready) and a claim's (adopt). */
type Step = "member" | "adopt";
const stepOf = (what: SlotFailure | SlotSuccess): Step => what === "adopt" ? "adopt" : "member";

export class SlotHealth {
  /** Failures of each step since its last success (or since slots were last turned off). */
  readonly #failures: Record<Step, number> = { member: 0, adopt: 0 };
  /** Slots are off until then (epoch ms); 0: on. */
  #offUntil = 0;
  /** Back-off of the next turn-off; grows while retries keep failing. */
  #backoffMs = FIRST_BACKOFF_MS;
  /**
   * The step whose failures turned slots off, until it works again: meanwhile one failure of a
   * retry turns them off again.
   */
  #retrying: Step | undefined;

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
    const step = stepOf(kind);
    const inARow = ++this.#failures[step];
    log.debug("a pool slot failed", { kind, error, inARow });
    if (this.#retrying === undefined && inARow < FAILURES_TO_TURN_OFF) return;
    const pauseMs = this.#backoffMs;
    this.#offUntil = this.now() + pauseMs;
    this.#backoffMs = Math.min(MAX_BACKOFF_MS, pauseMs * 2);
    this.#failures.member = this.#failures.adopt = 0;
    const fields = { kind, error, retryInMs: pauseMs };
    if (this.#retrying) log.debug("pool slots still failing: off again", fields);
    else log.warn("pool slots off: waiting inits join a job's cgroup when claimed", fields);
    this.#retrying = step;
  }

  /** A member got ready in its slot, or a slot became a job's cgroup. */
  worked(what: SlotSuccess): void {
    const step = stepOf(what);
    this.#failures[step] = 0;
    if (this.#retrying !== step) return;
    this.#retrying = undefined;
    this.#offUntil = 0;
    this.#backoffMs = FIRST_BACKOFF_MS;
    log.info("pool slots on again");
  }
}
