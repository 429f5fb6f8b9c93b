/**
 * Waits for a worker to recycle itself in place (worker/tls/session_recycle.ts): its log says
 * "recycling the worker in place", then "listening" a second time.
 */
import type { WorkerProcess } from "./worker.ts";
import { parseLogLine } from "./log_lines.ts";

/** How many times the worker has logged a message starting with `msg`. */
export function timesLogged(worker: WorkerProcess, msg: string): number {
  return worker.logs.filter((line) => parseLogLine(line)?.msg.startsWith(msg)).length;
}

/** True once the worker has recycled and listens again; false if not within `ms`. */
export async function recycled(worker: WorkerProcess, ms = 60_000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (
    timesLogged(worker, "recycling the worker in place") === 0 ||
    timesLogged(worker, "listening") < 2
  ) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}
