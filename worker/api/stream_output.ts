/**
 * Sends a job's output to one client from an offset on, with its own file cursor: what was
 * written already, then live output, honouring the call's backpressure, until the job's output
 * is complete (or, without follow, until the size seen at the start).
 */
import type { ServerWritableStream } from "@grpc/grpc-js";
import { EncodedDataChunk, type jobworker } from "../../proto/service.ts";
import type { OutputLog } from "../jobs/output_log.ts";
import { unsentMeter } from "./http2_unsent.ts";
import { sendPreFramed } from "../tls/internals.ts";
import { passedThrough } from "../runtime/memory_trim.ts";

/**
 * Most bytes of one stream left unsent inside the HTTP/2 layer before the stream waits (then until
 * half of it is left). write()/'drain' alone do not bound this on Deno 2.8.3: see http2_unsent.ts.
 * A stalled client thus holds about this much here, beyond what its flow-control window let
 * through: 50 stalled streams hold 25 MiB at 512 KiB each (100 MiB at the former 2 MiB). A fast
 * client's pipe stays full (the streaming rows of `make bench`).
 */
const MAX_UNSENT_BYTES = 512 * 1024;
/**
 * Most bytes queued in the connection's socket beyond the kernel before its streams wait for the
 * socket to drain: what a client with a huge flow-control window that stopped reading TCP can make
 * the server hold per connection (plus one chunk per stream).
 */
const MAX_QUEUED_BYTES = 256 * 1024;

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

function cancelled(call: Call): { promise: Promise<void>; signal: AbortSignal } {
  const controller = new AbortController();
  if (call.cancelled) controller.abort();
  else call.once("cancelled", () => controller.abort());
  const promise = new Promise<void>((resolve) => {
    if (controller.signal.aborted) resolve();
    else controller.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  return { promise, signal: controller.signal };
}

export async function streamOutput(call: Call, log: OutputLog, options: StreamOptions) {
  const reader = log.openReader();
  const stopAt = options.follow ? Infinity : log.size;
  const whenCancelled = cancelled(call);
  const unsent = unsentMeter(call);
  // Each chunk carries its gRPC prefix: grpc-js sends it without copying the message again.
  sendPreFramed(call, (value) => value instanceof EncodedDataChunk ? value.framed : undefined);
  let offset = options.offset;
  try {
    while (!call.cancelled) {
      const span = offset < stopAt
        ? reader.span(offset, Math.min(options.chunkBytes, stopAt - offset))
        : null;
      if (span) {
        // Read straight into the encoded message: the payload is copied once on its way out.
        let chunk = EncodedDataChunk.allocate(span.length, offset, span.stream);
        const got = reader.readAt(offset, chunk.payload);
        // A short file (its writes failed) must end the stream, not spin on empty reads.
        if (got === 0) break;
        if (got < span.length) chunk = chunk.shortened(got);
        offset += got;
        const more = call.write(chunk);
        unsent?.wrote(got);
        passedThrough(got);
        if (!more) await drainOrCancel(call);
        if (unsent && unsent.unsent > MAX_UNSENT_BYTES) {
          await Promise.race([unsent.waitUntilAtMost(MAX_UNSENT_BYTES / 2), whenCancelled.promise]);
        }
        while (unsent && unsent.queued > MAX_QUEUED_BYTES && !call.cancelled) {
          await Promise.race([unsent.waitForSocketDrain(), whenCancelled.promise]);
        }
        continue;
      }
      if (!options.follow || log.finished) break;
      await log.waitBeyond(offset, whenCancelled.signal);
    }
    if (!call.cancelled) call.end();
  } finally {
    unsent?.close();
    reader.close();
  }
}
