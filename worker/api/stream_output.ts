/**
 * Sends a job's output to one client from an offset on, with its own file cursor: what was
 * written already, then live output, honouring the call's backpressure, until the job's output
 * is complete (or, without follow, until the size seen at the start).
 */
import type { ServerWritableStream } from "@grpc/grpc-js";
import { jobworker } from "../../proto/service.ts";
import type { OutputLog } from "../jobs/output_log.ts";

export interface StreamOptions {
  offset: number;
  follow: boolean;
  chunkBytes: number;
}

type Call = ServerWritableStream<jobworker.GetJobsStreamReq, jobworker.DataChunk>;

/** Resolves on the call's next 'drain', or when it is cancelled. */
function drainOrCancel(call: Call): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("cancelled", done);
      resolve();
    };
    call.on("drain", done);
    call.on("cancelled", done);
  });
}

function cancelled(call: Call): Promise<void> {
  return new Promise((resolve) => {
    if (call.cancelled) resolve();
    else call.once("cancelled", () => resolve());
  });
}

export async function streamOutput(call: Call, log: OutputLog, options: StreamOptions) {
  const reader = log.openReader();
  const stopAt = options.follow ? Infinity : log.size;
  const whenCancelled = cancelled(call);
  let offset = options.offset;
  try {
    while (!call.cancelled) {
      const chunk = offset < stopAt
        ? reader.read(offset, Math.min(options.chunkBytes, stopAt - offset))
        : null;
      if (chunk) {
        offset += chunk.bytes.length;
        const more = call.write(jobworker.DataChunk.create({
          payload: chunk.bytes,
          offset: chunk.offset,
          stream: chunk.stream,
        }));
        if (!more) await drainOrCancel(call);
        continue;
      }
      if (!options.follow || log.finished) break;
      await Promise.race([log.waitBeyond(offset), whenCancelled]);
    }
    if (!call.cancelled) call.end();
  } finally {
    reader.close();
  }
}
