/**
 * A job's output to stdout and stderr, as `stream` and `run` write it: from an offset or the last
 * N lines, one of the streams or both, resuming from the last byte written when the connection
 * drops or the server restarts (UNAVAILABLE), so that every byte is written exactly once.
 *
 * @module
 */
import { jobworker } from "../proto/service.ts";
import type { CliDeps, JobApi } from "./context.ts";
import { isServiceError, ResumeAbandoned } from "./errors.ts";
import { isConnectionLoss, millisecondsOf, Reconnection } from "./reconnect.ts";

/** What to write. */
export interface OutputOptions {
  /** First byte (stdout and stderr counted together). */
  offset?: number;
  /** Start with the last N lines (of the selected streams) instead of `offset`. */
  tail?: number;
  /** Only the output written so far. */
  noFollow?: boolean;
  /** Which streams to write; both when absent. */
  only?: "stdout" | "stderr";
  /** Aborting ends the output (the call is cancelled). */
  signal?: AbortSignal;
  /** Called when the connection was lost and the output resumes, with the delay. */
  onReconnect?: (attempt: number, error: string) => void;
}

function wanted(chunk: jobworker.IDataChunk, only: OutputOptions["only"]): boolean {
  if (only === undefined) return true;
  const stderr = chunk.stream === jobworker.OutputStream.STDERR;
  return only === "stderr" ? stderr : !stderr;
}

/**
 * Write the job's output; resolves with the offset after the last byte received.
 *
 * @throws The call's error when it is not a connection loss, or when the connection stays lost.
 */
export async function writeOutput(
  deps: CliDeps,
  client: JobApi,
  id: string,
  options: OutputOptions,
): Promise<number> {
  let next = options.offset ?? 0;
  if (options.tail !== undefined) next = await tailStart(client, id, options.tail, options.only);
  const reconnection = new Reconnection(millisecondsOf(deps));
  for (;;) {
    try {
      const chunks = client.stream(id, {
        offset: next,
        noFollow: options.noFollow ?? false,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      for await (const chunk of chunks) {
        reconnection.reset();
        const start = Number(chunk.offset ?? 0);
        let payload = chunk.payload ?? new Uint8Array();
        // Exactly once: after a resume, skip anything already written.
        if (start < next) payload = payload.subarray(Math.min(payload.length, next - start));
        next = Math.max(next, start + (chunk.payload?.length ?? 0));
        if (payload.length > 0 && wanted(chunk, options.only)) {
          const sink = chunk.stream === jobworker.OutputStream.STDERR ? deps.stderr : deps.stdout;
          await sink.write(payload);
        }
      }
      return next;
    } catch (err) {
      if (options.signal?.aborted || !isConnectionLoss(err)) throw err;
      const pause = reconnection.lost();
      if (pause === undefined) {
        throw new ResumeAbandoned(err, id, next, reconnection.lostForMs);
      }
      options.onReconnect?.(reconnection.attempt, isServiceError(err) ? err.details : String(err));
      await deps.sleep(pause);
    }
  }
}

/**
 * The offset where the last `lines` lines (of the selected streams) begin: read back from the end
 * in growing windows until enough newlines are found.
 */
async function tailStart(
  client: JobApi,
  id: string,
  lines: number,
  only: OutputOptions["only"],
): Promise<number> {
  const total = Number((await client.getJob(id)).outputBytes ?? 0);
  if (lines <= 0) return total;
  for (let window = 64 * 1024;; window *= 4) {
    const from = Math.max(0, total - window);
    const pieces: { offset: number; bytes: Uint8Array }[] = [];
    for await (const chunk of client.stream(id, { offset: from, noFollow: true })) {
      const offset = Number(chunk.offset ?? 0);
      if (offset >= total) break;
      if (!wanted(chunk, only)) continue;
      const bytes = chunk.payload.subarray(0, Math.max(0, total - offset));
      pieces.push({ offset, bytes });
    }
    // Walk back from the end; a newline that ends the output does not start a line.
    let newlines = 0;
    let last = true;
    for (let p = pieces.length - 1; p >= 0; p--) {
      const { offset, bytes } = pieces[p]!;
      for (let i = bytes.length - 1; i >= 0; i--) {
        const isNewline = bytes[i] === 0x0a;
        if (last) {
          last = false;
          if (isNewline) continue;
        }
        if (isNewline && ++newlines === lines) return offset + i + 1;
      }
    }
    if (from === 0) return 0;
  }
}
