/**
 * A lost connection, as the commands that follow a worker over time ride it out: a worker that
 * reloads or recycles in place (README "Reload") cuts every call and does not listen for a moment
 * (0.2 to 0.9 s measured, longer on a loaded host). `stream` and `run` resume their output from
 * the last byte; `list --watch` refreshes again. Both give up after the same minute.
 *
 * @module
 */
import type { ServiceError } from "@grpc/grpc-js";
import { isServiceError, Status } from "./errors.ts";

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
