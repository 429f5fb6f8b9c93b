/**
 * Colour on a terminal only, never with NO_COLOR set (https://no-color.org).
 *
 * @module
 */
import type { EnvReader } from "./config.ts";

const STATUS_COLORS: Record<string, string> = {
  INITIALIZING: "36", // cyan
  RUNNING: "34", // blue
  COMPLETED: "32", // green
  FAILED: "31", // red
  STOPPED: "33", // yellow
};

/** Whether to colour output going to a stream that is (or is not) a terminal. */
export function colorEnabled(isTerminal: boolean, env: EnvReader): boolean {
  const noColor = env("NO_COLOR");
  return isTerminal && (noColor === undefined || noColor === "");
}

/** A status word, coloured when `enabled`. */
export function paintStatus(status: string, enabled: boolean): string {
  const code = STATUS_COLORS[status];
  return enabled && code ? `\x1b[${code}m${status}\x1b[0m` : status;
}

/** Text dimmed when `enabled`. */
export function dim(text: string, enabled: boolean): string {
  return enabled ? `\x1b[2m${text}\x1b[0m` : text;
}
