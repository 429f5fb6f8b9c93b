/**
 * Sends a job's output to one client from an offset on, with its own file cursor: what was
 * written already, then live output, honouring the call's backpressure, until the job's output
 * is complete (or, without follow, until the size seen at the start).
 */
import type { ServerWritableStream } from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { EncodedDataChunk, type jobworker } from "../../proto/service.ts";
import type { OutputLog } from "../jobs/output_log.ts";
import { type UnsentMeter, unsentMeter } from "./http2_unsent.ts";
import { sendPreFramed } from "../tls/internals.ts";
import { streamedOut } from "../runtime/memory_trim.ts";

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
/**
 * The streams of one connection share this many unsent bytes: each may leave MAX_CONNECTION_UNSENT
 * divided by their number unsent (at least MIN_UNSENT_BYTES, at most MAX_UNSENT_BYTES), so a lone
 * stream keeps MAX_UNSENT_BYTES. Each stream waits only on its own bytes: one that its client
 * stopped reading never holds back the others. Why: what is unsent is what nghttp2 frames in one
 * go when the client's connection window opens, and on Deno 2.8.3 the worker's CPU per byte grows
 * with that burst (50 streams on one connection, 1.6 GiB: 5.5 s of worker CPU at a 64 KiB client
 * window, 10-11 s at 8 MiB, 27 s at 32 MiB; memmove in Deno's native code was 62% of its samples).
 * Shared, 10 streams on each of 5 connections (the bench's 50 clients) cost the worker 5.0 s
 * instead of 9.3 s for the same bytes, and a client with many stalled streams on one connection
 * makes the worker hold far less (tests/stream_budget_test.ts). Most of that memmove was Deno's TLS
 * layer copying the rest of each large write again after every 48 KiB (quadratic in the burst):
 * tls_write_groups.ts now keeps the writes of every session's socket (hooked in server.ts as each
 * session starts, streams and unary responses alike) at most 48 KiB, so a burst costs about
 * linearly.
 */
const MAX_CONNECTION_UNSENT_BYTES = 512 * 1024;
/** One HTTP/2 DATA frame's worth (the default SETTINGS_MAX_FRAME_SIZE). */
const MIN_UNSENT_BYTES = 16 * 1024;
/**
 * The smallest message a stream sends while it shares its connection (a lone stream sends the
 * server's chunkBytes): 50 streams on one connection, 1.6 GiB, took 10.1 s of worker CPU with
 * 128 KiB messages and 6.2 s with 32 KiB ones (138 and 184 MiB/s in aggregate).
 */
const MIN_CHUNK = 32 * 1024;

/**
 * Message buffers whose writes completed, for the next chunk of any stream. Deno 2.8.3's HTTP/2
 * stream copies what is written into its own native buffer before the write's callback runs
 * (after the native write completes), so a buffer is free again once that callback ran, and
 * never before. A new 128 KiB buffer per message was 8,192 ArrayBuffers per GiB streamed: zeroed
 * fresh pages, page faults, and the external memory that drives V8's collections. At most
 * POOLED_BUFFERS wait here (2 MiB at the default chunk size), and none once no stream is left.
 */
const pool: Buffer[] = [];
const POOLED_BUFFERS = 16;
let poolCapacity = 0;
let activeStreams = 0;

function takeBuffer(chunkBytes: number): Buffer {
  const capacity = EncodedDataChunk.capacityFor(chunkBytes);
  if (capacity !== poolCapacity) {
    pool.length = 0; // another chunk size (one server has one): start over
    poolCapacity = capacity;
  }
  return pool.pop() ?? Buffer.allocUnsafe(capacity);
}

function releaseBuffer(buffer: Buffer): void {
  if (activeStreams > 0 && buffer.length === poolCapacity && pool.length < POOLED_BUFFERS) {
    pool.push(buffer);
  }
}

/** How many bytes one of `streams` streams of a connection may leave unsent. */
function unsentShare(streams: number): number {
  const share = Math.floor(MAX_CONNECTION_UNSENT_BYTES / Math.max(1, streams));
  return Math.min(MAX_UNSENT_BYTES, Math.max(MIN_UNSENT_BYTES, share));
}

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

/**
 * Resolves when `promise` does or when the call is cancelled, and leaves nothing behind on either.
 * Not `Promise.race([promise, cancelled])`: every race adds a reaction to the long-lived
 * cancellation promise that stays until the call ends, a few hundred bytes per wait. The send loop
 * waits once per message when streams share a connection, so 10 streams on each of 5 connections
 * grew the worker's heap by about 25 MiB over 6.25 GiB, and V8's every mark-compact marked it all.
 */
function unlessCancelled(call: Call, promise: Promise<void>): Promise<void> {
  if (call.cancelled) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      call.off("cancelled", done);
      resolve();
    };
    call.on("cancelled", done);
    promise.then(done, done);
  });
}

/** Aborts when the call is cancelled (at once if it already was). */
function cancelSignal(call: Call): AbortSignal {
  const controller = new AbortController();
  if (call.cancelled) controller.abort();
  else call.once("cancelled", () => controller.abort());
  return controller.signal;
}

/**
 * Stops the meter once its stream closed. A stream cut off before its output left strands the
 * unsent bytes in native memory (see http2_unsent.ts): what is unsent as the client cancels or the
 * connection drops is counted, also when the loop had already written everything and ended the
 * call (grpc-js emits 'cancelled' as the HTTP/2 stream closes, however it closes).
 */
function closeMeter(call: Call, unsent: UnsentMeter): void {
  if (call.cancelled || unsent.unsent === 0) unsent.close(call.cancelled);
  else call.once("cancelled", () => unsent.close(true));
}

export async function streamOutput(call: Call, log: OutputLog, options: StreamOptions) {
  const reader = log.openReader();
  const stopAt = options.follow ? Infinity : log.size;
  const cancel = cancelSignal(call);
  const unsent = unsentMeter(call);
  // Each chunk carries its gRPC prefix: grpc-js sends it without copying the message again.
  sendPreFramed(call, (value) => value instanceof EncodedDataChunk ? value.framed : undefined);
  let offset = options.offset;
  activeStreams++;
  try {
    while (!call.cancelled) {
      // A stream may write one chunk past its share: with many streams on a connection, smaller
      // chunks keep what they all leave unsent near MAX_CONNECTION_UNSENT_BYTES.
      const chunkBytes = unsent
        ? Math.min(options.chunkBytes, Math.max(unsentShare(unsent.streamsOnConnection), MIN_CHUNK))
        : options.chunkBytes;
      const span = offset < stopAt
        ? reader.span(offset, Math.min(chunkBytes, stopAt - offset))
        : null;
      if (span) {
        // Read straight into the encoded message: the payload is copied once on its way out.
        const backing = takeBuffer(options.chunkBytes);
        let chunk = EncodedDataChunk.allocate(span.length, offset, span.stream, backing);
        const got = reader.readAt(offset, chunk.payload);
        // A short file (its writes failed) must end the stream, not spin on empty reads.
        if (got === 0) break;
        if (got < span.length) chunk = chunk.shortened(got);
        offset += got;
        // Back to the pool only once the write is done with it (see `pool`).
        const more = call.write(chunk, () => releaseBuffer(backing));
        unsent?.wrote(got);
        streamedOut(got);
        if (!more) await drainOrCancel(call);
        const share = unsent ? unsentShare(unsent.streamsOnConnection) : MAX_UNSENT_BYTES;
        if (unsent && unsent.unsent > share) {
          await unlessCancelled(call, unsent.waitUntilAtMost(share / 2));
        }
        while (unsent && unsent.queued > MAX_QUEUED_BYTES && !call.cancelled) {
          await unlessCancelled(call, unsent.waitForSocketDrain());
        }
        continue;
      }
      if (!options.follow || log.finished) break;
      await log.waitBeyond(offset, cancel);
    }
    if (!call.cancelled) call.end();
  } finally {
    if (--activeStreams === 0) pool.length = 0;
    if (unsent) closeMeter(call, unsent);
    reader.close();
  }
}
