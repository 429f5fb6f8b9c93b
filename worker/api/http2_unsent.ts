/**
 * Measures how many bytes written to a gRPC server stream have not left its HTTP/2 session yet.
 *
 * Why this exists: on Deno 2.8.3, `node:http2` completes every stream write at once (the bytes go
 * into a native per-stream buffer that nghttp2 drains only as the peer's flow-control window
 * allows; the write callback runs synchronously), so `write()` almost never returns false and
 * 'drain' follows at once: a server that honours backpressure still buffers a whole job's output
 * for a client that stopped reading.
 * Fixed upstream by denoland/deno PR 36044 (merged 2026-07-15, not in 2.8.3). Nothing public on
 * 2.8.3 reports that native buffer: `Http2Stream.bufferSize` adds up a shared, stale byte counter
 * and never decreases, `writableLength`/`writableNeedDrain` only see the JS side, `stream.state`
 * has no outbound figures, and `session.state.remoteWindowSize` is per connection (a paused stream
 * does not close it: the peer acknowledges connection-level data on receipt).
 *
 * What is observable: Deno's session hands each frame nghttp2 produces to its socket with
 * `socket.write()` from JavaScript. This module wraps that method on the session's socket and
 * reads the 9-byte frame headers going by: the DATA bytes framed for a stream, subtracted from the
 * bytes written to it, are its unsent bytes. It degrades to "no measurement" (callers then rely on
 * write()/'drain' alone) when the objects are not shaped as expected, when the wrapped method
 * never sees the stream's frames (e.g. Node, whose sessions write natively), or when the byte
 * stream stops parsing as HTTP/2 frames.
 *
 * Framed is not sent either: when the peer's window is huge (HTTP/2 allows 2 GiB per stream and
 * per connection) and it stops reading TCP, nghttp2 frames everything at once and the frames pile
 * up in the session's TLS socket, whose JavaScript write buffer grows without bound (measured on
 * 2.8.3: 100 MiB queued for a stopped reader within seconds). So the meter also reports that
 * socket's queue (`writableLength`: bytes handed to the socket that the kernel has not taken), and
 * waits for its 'drain': every stream of the connection holds while the connection is backed up.
 *
 * @module
 */

import { http2StreamOfCall, sessionSocketOf } from "../tls/internals.ts";

const FRAME_HEADER_BYTES = 9;
const FRAME_DATA = 0x0;
/** Highest frame type this server can send (ORIGIN, RFC 8336). */
const FRAME_TYPE_MAX = 0xc;

interface Watch {
  /** DATA payload bytes framed for the stream so far. */
  framed: number;
  /** Whether any frame of the stream went through the tap. */
  seen: boolean;
  /** Called whenever the stream's `framed` grows (or the tap stops working). */
  wake: (() => void) | undefined;
}

type WriteMethod = (this: unknown, ...args: unknown[]) => unknown;
interface WritableSocket {
  write: WriteMethod;
  /** Bytes written to the socket that the kernel has not taken yet (node:stream Writable). */
  readonly writableLength?: number;
  once?(event: string, listener: () => void): unknown;
  off?(event: string, listener: () => void): unknown;
  readonly destroyed?: boolean;
}

/** Follows the frames an HTTP/2 session writes to its socket; counts DATA bytes per watched stream. */
class FrameTap {
  readonly #header = new DataView(new ArrayBuffer(FRAME_HEADER_BYTES));
  #headerBytes = 0;
  #payloadToSkip = 0;
  #broken = false;
  readonly watches = new Map<number, Watch>();

  constructor(readonly socket: WritableSocket) {
    const original = socket.write;
    const observe = (chunk: unknown) => {
      if (this.#broken) return;
      try {
        this.#observe(chunk);
      } catch {
        this.#break();
      }
    };
    // A plain function: the socket's own write needs its `this`.
    socket.write = function (this: unknown, ...args: unknown[]): unknown {
      observe(args[0]);
      return Reflect.apply(original, this, args);
    };
  }

  #drained: Promise<void> | undefined;

  /** Resolves on the socket's next 'drain' or 'close' (one pair of listeners for all streams). */
  drained(): Promise<void> {
    const { once, off } = this.socket;
    if (!once || !off) return Promise.resolve();
    this.#drained ??= new Promise<void>((resolve) => {
      const done = () => {
        for (const event of ["drain", "close"]) off.call(this.socket, event, done);
        this.#drained = undefined;
        resolve();
      };
      for (const event of ["drain", "close"]) once.call(this.socket, event, done);
    });
    return this.#drained;
  }

  get broken(): boolean {
    return this.#broken;
  }

  #break(): void {
    this.#broken = true;
    for (const watch of this.watches.values()) watch.wake?.();
  }

  #observe(chunk: unknown): void {
    if (!(chunk instanceof Uint8Array)) return this.#break(); // not what Deno's session writes
    let at = 0;
    while (at < chunk.length) {
      if (this.#payloadToSkip > 0) {
        const n = Math.min(this.#payloadToSkip, chunk.length - at);
        this.#payloadToSkip -= n;
        at += n;
        continue;
      }
      const n = Math.min(FRAME_HEADER_BYTES - this.#headerBytes, chunk.length - at);
      for (let i = 0; i < n; i++) this.#header.setUint8(this.#headerBytes + i, chunk[at + i]!);
      this.#headerBytes += n;
      at += n;
      if (this.#headerBytes < FRAME_HEADER_BYTES) break;
      this.#headerBytes = 0;
      const length = this.#header.getUint32(0) >>> 8; // 24-bit length, then the type byte
      const type = this.#header.getUint8(3);
      const stream = this.#header.getUint32(5) & 0x7fff_ffff;
      if (type > FRAME_TYPE_MAX || (type === FRAME_DATA && stream === 0)) return this.#break();
      this.#payloadToSkip = length;
      const watch = this.watches.get(stream);
      if (!watch) continue;
      watch.seen = true;
      if (type === FRAME_DATA && length > 0) {
        watch.framed += length;
        watch.wake?.();
      }
    }
  }
}

/**
 * Where the bytes go that a stream leaves unsent when it ends before its output was sent: on
 * Deno 2.8.3 they stay in the stream's native buffer for good (tls/session_recycle.ts owns the
 * total and recycles the worker on it).
 */
export interface StrandedSink {
  strand(bytes: number): void;
}

let strandedSink: StrandedSink | undefined;

/** Every meter's {@link UnsentMeter.close} with `abandoned` reports to `sink` from now on. */
export function reportStrandedTo(sink: StrandedSink | undefined): void {
  strandedSink = sink;
}

/** One tap per socket (the session's streams share it). */
const taps = new WeakMap<object, FrameTap>();

/** The unsent bytes of one server stream. */
export interface UnsentMeter {
  /** Records `bytes` more written to the call (payload bytes; framing overhead is ignored). */
  wrote(bytes: number): void;
  /** Bytes written but not framed yet (0 once measuring is impossible). */
  readonly unsent: number;
  /** Bytes of the whole connection queued in its socket, not taken by the kernel yet. */
  readonly queued: number;
  /** How many streams of the connection are measured now (this one included). */
  readonly streamsOnConnection: number;
  /** Resolves once `unsent` is at most `bytes`, or measuring turned out impossible, or on close(). */
  waitUntilAtMost(bytes: number): Promise<void>;
  /** Resolves once the connection's socket queue is empty (or the socket closed), or on close(). */
  waitForSocketDrain(): Promise<void>;
  /**
   * Stops watching the stream; a pending wait resolves. `abandoned`: the stream ended before its
   * output was sent (cancelled, or its connection gone): what is unsent now is stranded.
   */
  close(abandoned?: boolean): void;
}

/**
 * A meter for the HTTP/2 stream under `call`, or null when it cannot be reached. Call it before
 * the first write, so that the stream's HEADERS go through the tap.
 */
export function unsentMeter(call: unknown): UnsentMeter | null {
  const stream = http2StreamOfCall(call);
  const socket = stream && sessionSocketOf(stream.session) as WritableSocket | null;
  if (!stream || !socket) return null;
  let tap = taps.get(socket);
  if (!tap) {
    tap = new FrameTap(socket);
    taps.set(socket, tap);
  }
  const watch: Watch = { framed: 0, seen: false, wake: undefined };
  tap.watches.set(stream.id, watch);
  const theTap = tap;
  let written = 0;
  let closed = false;
  /** Measuring works once the stream's own frames showed up; not if they never do. */
  let blind = false;
  const unsent = () => closed || blind || theTap.broken ? 0 : Math.max(0, written - watch.framed);
  const conn = theTap.socket;
  const queued = () => {
    const n = conn.writableLength;
    return closed || conn.destroyed || typeof n !== "number" ? 0 : n;
  };

  return {
    wrote(bytes) {
      written += bytes;
    },
    get unsent() {
      return unsent();
    },
    get queued() {
      return queued();
    },
    get streamsOnConnection() {
      return theTap.watches.size;
    },
    waitForSocketDrain() {
      return queued() === 0 ? Promise.resolve() : theTap.drained();
    },
    async waitUntilAtMost(bytes) {
      // Deno's session flushes frames to its socket on process.nextTick after stream writes, so
      // this stream's HEADERS show up within a macrotask. If they never do, the tap cannot see
      // this session: stop measuring rather than wait for frames that will never be counted.
      for (let turn = 0; !watch.seen && unsent() > bytes; turn++) {
        if (turn === 3) {
          blind = true;
          return;
        }
        await new Promise<void>((resolve) => setTimeout(resolve, 0));
      }
      if (unsent() <= bytes) return;
      await new Promise<void>((resolve) => {
        watch.wake = () => {
          if (unsent() > bytes) return;
          watch.wake = undefined;
          resolve();
        };
      });
    },
    close(abandoned = false) {
      if (abandoned && !closed) strandedSink?.strand(unsent());
      closed = true;
      theTap.watches.delete(stream.id);
      watch.wake?.();
    },
  };
}
