/**
 * A lost connection, as the commands that follow a worker over time ride it out: a worker that
 * reloads or recycles in place (README "Reload") cuts every call and does not listen for a moment
 * (0.2 to 0.9 s measured, several seconds on a loaded host). `stream` and `run` resume their output
 * from the last byte; `list --watch` refreshes again; `run` repeats the calls it may repeat (the
 * GetJob that learns the exit code, the DeleteJob of `--rm`, the StopJob of Ctrl-C). All pause
 * alike ({@linkcode Reconnection}) and give up after the same minute.
 *
 * @module
 */
import type { ServiceError } from "@grpc/grpc-js";
import { isServiceError, RetryAbandoned, Status } from "./errors.ts";

/** How long a lost connection is retried before giving up. */
export const RECONNECT_PATIENCE_MS = 60_000;
/** The pauses before the 1st, 2nd, ... retry; the last one repeats. */
const RECONNECT_DELAYS_MS = [100, 250, 500, 1000, 2000];

/** Whether an error means the server was not reachable or went away (try again later). */
export function isConnectionLoss(err: unknown): err is ServiceError {
  return isServiceError(err) &&
    (err.code === Status.UNAVAILABLE ||
      (err.code === Status.INTERNAL && /RST_STREAM|Connection|GOAWAY/i.test(err.details)));
}

/** The pause before retry number `attempt` (1, 2, ...). */
export function reconnectDelay(attempt: number): number {
  return RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length) - 1]!;
}

/** What a command waits and counts time with (its CliDeps). */
export interface CommandClock {
  /** Wait (CliDeps.sleep). */
  sleep(ms: number): Promise<void>;
  /** The time (CliDeps.now). */
  now(): Date;
}

/** The command's clock in milliseconds, for {@linkcode Reconnection}. */
export function millisecondsOf(deps: CommandClock): () => number {
  return () => deps.now().getTime();
}

/**
 * The {@linkcode RetryOptions} every command's {@linkcode retryAcrossReload} starts from: its own
 * sleep and clock (so a test's fake clock counts the minute), to be spread with the rest.
 */
export function retryOptions(deps: CommandClock): RetryOptions {
  return { sleep: deps.sleep, now: millisecondsOf(deps) };
}

/** One stretch of lost connection: how long it has lasted and which retry comes next. */
export class Reconnection {
  #since: number | undefined;
  #attempt = 0;
  readonly #now: () => number;

  /** `now`: the clock, in milliseconds (the command's: {@linkcode millisecondsOf}). */
  constructor(now: () => number) {
    this.#now = now;
  }

  /** The retries so far in this stretch (0 while connected). */
  get attempt(): number {
    return this.#attempt;
  }

  /** How long the connection has been lost (0 while connected). */
  get lostForMs(): number {
    return this.#since === undefined ? 0 : this.#now() - this.#since;
  }

  /**
   * The connection was lost (again); `since`: when the lost try began, if not now. Returns the
   * pause before the next try, or undefined when it has been lost longer than the patience.
   */
  lost(since?: number): number | undefined {
    this.#since ??= since ?? this.#now();
    if (this.lostForMs > RECONNECT_PATIENCE_MS) return undefined;
    return reconnectDelay(++this.#attempt);
  }

  /** The connection works again. */
  reset(): void {
    this.#since = undefined;
    this.#attempt = 0;
  }
}

/** How {@linkcode retryAcrossReload} waits and reports. */
export interface RetryOptions {
  /** Wait (CliDeps.sleep). */
  sleep(ms: number): Promise<void>;
  /** The clock, in milliseconds (the command's: {@linkcode retryOptions}). */
  now: () => number;
  /** Aborting ends the retries: the last error is thrown. */
  signal?: AbortSignal;
  /** How to go on after giving up, for the message ("see jobworker get ID"). */
  advice?: string;
  /** Called before each retry, with the error that made it necessary. */
  onRetry?: (attempt: number, error: ServiceError) => void;
}

/**
 * Make a call that may be repeated (idempotent: reading a job, stopping it, deleting the same
 * id) and repeat it while the connection is lost, as a resumed stream does: a worker reloading in
 * place does not listen for longer than the client's own short retries wait. `call` gets the try's
 * number (1, 2, ...).
 *
 * @throws {RetryAbandoned} When the connection stays lost longer than the patience (`what` says
 *   what was being done, and `options.advice` how to go on, for the message).
 * @throws The call's error when it is not a connection loss, or when `signal` was aborted.
 */
export async function retryAcrossReload<T>(
  what: string,
  call: (attempt: number) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const { advice = "", now } = options;
  const reconnection = new Reconnection(now);
  for (let attempt = 1;; attempt++) {
    const started = now();
    try {
      return await call(attempt);
    } catch (err) {
      if (options.signal?.aborted || !isConnectionLoss(err)) throw err;
      // Counted from the start of the first lost try: that one may itself have retried a while.
      const pause = reconnection.lost(started);
      if (pause === undefined) {
        throw new RetryAbandoned(err, what, reconnection.lostForMs, advice);
      }
      options.onRetry?.(reconnection.attempt, err);
      await options.sleep(pause);
      if (options.signal?.aborted) throw err;
    }
  }
}
