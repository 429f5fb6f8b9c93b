/**
 * What the reload tests share: a job that writes a counter at full speed, the check that a text
 * is an exact prefix of that counter, and clients that resume after the worker's reload.
 */
import assert from "node:assert/strict";
import type { JobClient } from "../../cli/client.ts";
import type { WorkerProcess } from "./worker.ts";
import { waitFor } from "./host_procs.ts";
import { isConnectionLoss } from "../../cli/reconnect.ts";

/** Writes 0, 1, 2, ... one number a line, as fast as it can. */
export const WRITER = {
  command: "sh",
  args: ["-c", 'i=0; while :; do echo "$i"; i=$((i+1)); done'],
};

/** True when `text` is the WRITER's output up to some byte: in order, no gap, no duplicate. */
export function isCounterPrefix(text: string): boolean {
  const lines = text.split("\n");
  const last = lines.pop()!;
  for (let i = 0; i < lines.length; i++) if (lines[i] !== String(i)) return false;
  return String(lines.length).startsWith(last);
}

const GRPC_UNAVAILABLE = 14;

/** Streams a job's whole output, reconnecting and resuming from its offset after errors. */
export async function streamResuming(
  c: JobClient,
  id: string,
): Promise<{ bytes: number; text: string; reconnects: number }> {
  let text = "";
  let offset = 0;
  let reconnects = 0;
  const decoder = new TextDecoder();
  for (;;) {
    try {
      for await (const chunk of c.stream(id, { offset })) {
        assert.equal(Number(chunk.offset), offset, "no gap, no duplicate");
        offset += chunk.payload.length;
        text += decoder.decode(chunk.payload, { stream: true });
      }
      return { bytes: offset, text, reconnects };
    } catch (e) {
      const code = (e as { code?: number }).code;
      // A lost connection as the CLI's stream sees it (UNAVAILABLE, or INTERNAL for a stream cut
      // mid-write), a deadline, or a cancel: resume from the offset.
      if (!isConnectionLoss(e) && code !== 4 && code !== 1) throw e;
      reconnects++;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Calls `fn` again while it fails with UNAVAILABLE (the worker is reloading). */
export async function retrying<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0;; i++) {
    try {
      return await fn();
    } catch (e) {
      if ((e as { code?: number }).code !== GRPC_UNAVAILABLE || i > 100) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** How many of the worker's log lines so far match `pattern`. */
export function logCount(worker: WorkerProcess, pattern: RegExp): number {
  return worker.logs.filter((l) => pattern.test(l)).length;
}

/** Waits until the worker has logged one more line matching `pattern` than `before`. */
export async function nextLog(
  worker: WorkerProcess,
  pattern: RegExp,
  before: number,
  ms = 60_000,
): Promise<string> {
  await waitFor(`a log line ${pattern}`, () => logCount(worker, pattern) > before, ms);
  return worker.logs.filter((l) => pattern.test(l)).at(-1)!;
}
