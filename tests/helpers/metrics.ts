/** Reads a worker's /metrics (JOB_WORKER_METRICS_ADDR set, e.g. 127.0.0.1:0). */
import assert from "node:assert/strict";
import type { WorkerProcess } from "./worker.ts";
import { parseLogLine } from "./log_lines.ts";

/**
 * The value of the sample `name` (with its labels, if any, as exposed: `a{b="c"}`) from the
 * worker's current metrics listener; NaN when there is no such sample.
 */
export async function metricValue(worker: WorkerProcess, name: string): Promise<number> {
  const port = worker.logs.map(parseLogLine).findLast((l) => l?.msg === "metrics listening")
    ?.fields.port;
  assert.ok(port, "the worker serves metrics");
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.slice(name.length + 1));
}
