/**
 * The client side of one HTTP/2 connection (RFC 9113), as much as gRPC needs: the connection
 * preface, SETTINGS and their acknowledgement, PING replies, GOAWAY both ways, RST_STREAM,
 * flow control both ways (a large receive window for streaming throughput; our sends wait for
 * the server's window), header blocks split into CONTINUATION frames, and streams our side opens
 * (the server may not open any: push is disabled).
 *
 * It knows nothing of sockets: bytes come in through {@linkcode H2Session.receive} and go out
 * through the {@linkcode SessionIo} it is given, so the transport owns the TLS connection.
 *
 * The server is untrusted input. What it can make us hold is bounded: a frame by the 16 KiB we
 * allow; a header block by the header list size we advertise and by 32 frames (an empty
 * CONTINUATION without END_HEADERS is refused at once: the CONTINUATION flood); HPACK's table by
 * its 4096 bytes and its integers by 2^28 in at most 5 continuation bytes (hpack.ts); the unread
 * data of the connection by our flow-control window (data beyond it is a FLOW_CONTROL_ERROR),
 * and the memory it takes by twice that window plus a small constant per stream however the
 * server cuts its DATA frames: payloads of 4 KiB or more stay views of their socket chunks only
 * while the chunks so kept stay within twice the unread bytes in views plus 256 KiB, others are
 * copied into 16 KiB blocks (a view of every frame would keep its whole socket chunk, and an
 * entry each). A payload read is no longer counted: its reader must not keep it (http2.ts's
 * MessageReader copies a message that spans payloads into a buffer of the message's length as
 * they come). What we write for it (PING and SETTINGS acknowledgements) is bounded by a cap on
 * the socket's write buffer, past which the connection is closed at once, what is unsent dropped
 * ({@linkcode SessionIo.close} without drain). Our sends never go below a window, even one a SETTINGS made negative. A protocol
 * violation (a frame of the wrong size included) ends the connection with a GOAWAY saying why,
 * whose last stream id is 0 (we process no stream the server opens: push is disabled), then the
 * connection ({@linkcode SessionIo.close}); every call fails with the reason.
 *
 * @module
 */

import {
  DEFAULT_MAX_FRAME_SIZE,
  encodeFrame,
  ErrorCode,
  Flag,
  type Frame,
  framePayload,
  FrameReader,
  FrameType,
  H2ProtocolError,
  MAX_WINDOW,
  Setting,
} from "./frames.ts";
import { encodeHeaders, type HeaderField, HpackDecoder } from "./hpack.ts";

/** The client connection preface (RFC 9113 section 3.4). */
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** The initial flow-control window of a connection and a stream, before any SETTINGS. */
const DEFAULT_WINDOW = 65_535;
/** The most bytes waiting in the socket's write buffer before we call the server abusive. */
const MAX_WRITE_BACKLOG = 4 * 1024 * 1024;
/** The most frames of one header block (HEADERS and its CONTINUATIONs): 64 KiB needs 4 at most. */
const MAX_BLOCK_FRAMES = 32;
/** Small DATA payloads are copied into blocks of this size (an entry per run of them). */
const DATA_BLOCK_BYTES = 16 * 1024;
/** A DATA payload this large may be kept as a view of its socket chunk (no copy)... */
const DATA_VIEW_BYTES = 4 * 1024;
/**
 * ... while the socket chunks a stream's views keep stay within twice its unread bytes in views
 * plus this; beyond, payloads are copied. So a stream holds at most twice our window plus this,
 * a socket chunk and a block, however the server cuts its DATA frames and pads its chunks. (Not
 * once the window: frames straddle socket chunks, so a chunk's views cover about 3/4 of it, and
 * copying what a tighter bound refuses cost about 0.5 s of CPU per GiB streamed, some 12%.)
 */
const PIN_SLACK_BYTES = 256 * 1024;

/** How the session sends bytes and ends the connection. */
export interface SessionIo {
  /** Send bytes. */
  write(bytes: Uint8Array): void;
  /** Bytes written but not yet sent. */
  backlog(): number;
  /**
   * End the connection: with `drain`, once what was written is sent (then close it, do not leave
   * it half-open); without, at once (the server does not read what we send: it never would be).
   */
  close(drain: boolean): void;
}

/** Options of a session. */
export interface SessionOptions {
  /** Our receive window for the connection and each stream. */
  windowBytes?: number;
  /** The largest header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE). */
  maxHeaderListSize?: number;
}

/** Header fields as a record; a repeated name's values joined with ",". */
export type Headers = Record<string, string>;

function toRecord(fields: HeaderField[]): Headers {
  const out: Headers = {};
  for (const [name, value] of fields) {
    out[name] = Object.hasOwn(out, name) ? `${out[name]},${value}` : value;
  }
  return out;
}

/** A header block being received: a HEADERS frame and its CONTINUATION frames so far. */
interface PendingBlock {
  streamId: number;
  endStream: boolean;
  parts: Uint8Array[];
  size: number;
}

/** One request and its response. Iterate it for the response body. */
export class H2Stream implements AsyncIterable<Uint8Array> {
  /** The response headers (the first header block). */
  headers: Headers | undefined;
  /** The trailers (a second header block). */
  trailers: Headers | undefined;
  /** The code of an RST_STREAM the server sent, or REFUSED_STREAM for a stream its GOAWAY left. */
  rstCode: number | undefined;
  /** Unread data: views and copies; then the block being filled, from `#read` to `#filled`. */
  #queue: Uint8Array[] = [];
  #block: Uint8Array | undefined;
  #filled = 0;
  #read = 0;
  /** Bytes not yet read. */
  #unread = 0;
  /** The socket chunks the views in `#queue` keep: how many views each, and their total size. */
  #pinned = new Map<ArrayBufferLike, number>();
  #pinnedBytes = 0;
  /** The unread bytes in views. */
  #viewed = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  /** Request body still to send (waiting for flow-control window). */
  pending: Uint8Array = new Uint8Array(0);
  /** Our END_STREAM is still to be sent. */
  pendingEnd = true;
  /** What the server may still send us on this stream. */
  receiveWindow: number;
  /** What we may still send on this stream. */
  sendWindow: number;
  /** Bytes read by the consumer and not yet given back to the server. */
  unacknowledged = 0;

  constructor(readonly id: number, readonly session: H2Session, receive: number, send: number) {
    this.receiveWindow = receive;
    this.sendWindow = send;
  }

  /** The stream ended (either side) or was reset. */
  get closed(): boolean {
    return this.#ended;
  }

  /**
   * Cancel: RST_STREAM with `code` (CANCEL by default); the iteration ends. On a stream already
   * over, only gives back the window of what is left unread.
   */
  close(code: number = ErrorCode.CANCEL): void {
    if (this.#ended) this.session.consumed(this, this.discard());
    else this.session.resetStream(this, code);
  }

  /**
   * @internal Response bytes arrived. A large payload is kept as a view while the socket chunks
   * kept stay within twice the unread bytes in views plus a slack; any other is copied into a block
   * (so a copy is paid only for small payloads, or when a view would keep too much): a view of
   * each small frame would keep its socket chunk, and an entry each, for a byte or two.
   */
  push(bytes: Uint8Array): void {
    if (this.#ended) return;
    this.#unread += bytes.length;
    const buffer = bytes.buffer;
    const views = this.#pinned.get(buffer);
    if (
      bytes.length >= DATA_VIEW_BYTES &&
      (views !== undefined ||
        this.#pinnedBytes + buffer.byteLength <=
          2 * (this.#viewed + bytes.length) + PIN_SLACK_BYTES)
    ) {
      if (this.#block && this.#read < this.#filled) { // what came before it goes first
        this.#queue.push(this.#block.subarray(this.#read, this.#filled));
        this.#read = this.#filled;
      }
      this.#queue.push(bytes);
      this.#viewed += bytes.length;
      this.#pinned.set(buffer, (views ?? 0) + 1);
      if (views === undefined) this.#pinnedBytes += buffer.byteLength;
      return this.#notify();
    }
    for (let at = 0; at < bytes.length;) {
      let block = this.#block;
      if (!block || this.#filled === block.length) {
        if (block && this.#read < this.#filled) {
          this.#queue.push(block.subarray(this.#read, this.#filled));
        }
        block = this.#block = new Uint8Array(DATA_BLOCK_BYTES);
        this.#filled = this.#read = 0;
      }
      const part = Math.min(bytes.length - at, block.length - this.#filled);
      block.set(bytes.subarray(at, at + part), this.#filled);
      this.#filled += part;
      at += part;
    }
    this.#notify();
  }

  /** @internal Drop what the consumer has not read; returns its size. */
  discard(): number {
    const bytes = this.#unread;
    this.#queue = [];
    this.#block = undefined;
    this.#filled = this.#read = 0;
    this.#unread = this.#viewed = this.#pinnedBytes = 0;
    this.#pinned.clear();
    return bytes;
  }

  /** @internal What the unread data holds: its chunks and the bytes of the buffers they keep. */
  held(): { chunks: number; bytes: number } {
    const buffers = new Set<ArrayBufferLike>(this.#queue.map((chunk) => chunk.buffer));
    if (this.#block) buffers.add(this.#block.buffer);
    let bytes = 0;
    for (const buffer of buffers) bytes += buffer.byteLength;
    return { chunks: this.#queue.length + (this.#filled > this.#read ? 1 : 0), bytes };
  }

  /** The next unread chunk, if any. */
  #next(): Uint8Array | undefined {
    let chunk = this.#queue.shift();
    if (chunk) {
      const views = this.#pinned.get(chunk.buffer);
      if (views !== undefined) this.#viewed -= chunk.length;
      if (views === 1) {
        this.#pinned.delete(chunk.buffer);
        this.#pinnedBytes -= chunk.buffer.byteLength;
      } else if (views !== undefined) this.#pinned.set(chunk.buffer, views - 1);
    } else if (this.#block && this.#read < this.#filled) {
      chunk = this.#block.subarray(this.#read, this.#filled);
      this.#read = this.#filled;
    }
    if (chunk) this.#unread -= chunk.length;
    return chunk;
  }

  /** @internal The stream is over: no more bytes will come. */
  end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error ??= error;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      const chunk = this.#next();
      if (chunk) {
        this.session.consumed(this, chunk.length);
        yield chunk;
        continue;
      }
      if (this.#error) throw this.#error;
      if (this.#ended) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }
}

/** The client side of one HTTP/2 connection. */
export class H2Session {
  readonly #io: SessionIo;
  readonly #window: number;
  readonly #reader = new FrameReader(DEFAULT_MAX_FRAME_SIZE);
  readonly #decoder: HpackDecoder;
  readonly #streams = new Map<number, H2Stream>();
  #nextId = 1;
  #block: PendingBlock | undefined;
  /** The server's SETTINGS arrived (the first frame it must send). */
  #started = false;
  #goaway = false;
  #closed = false;
  #error: Error | undefined;
  #peerInitialWindow = DEFAULT_WINDOW;
  #peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  #sendWindow = DEFAULT_WINDOW;
  #receiveWindow: number;
  #unacknowledged = 0;
  /** Called once when the session can take no more calls (GOAWAY, error or close). */
  onUnusable: (() => void) | undefined;

  constructor(io: SessionIo, options: SessionOptions = {}) {
    this.#io = io;
    this.#window = Math.min(options.windowBytes ?? 8 * 1024 * 1024, MAX_WINDOW);
    this.#receiveWindow = this.#window;
    this.#decoder = new HpackDecoder(4096, options.maxHeaderListSize ?? 64 * 1024);
    const settings = new Uint8Array(18);
    const view = new DataView(settings.buffer);
    view.setUint16(0, Setting.ENABLE_PUSH);
    view.setUint32(2, 0);
    view.setUint16(6, Setting.INITIAL_WINDOW_SIZE);
    view.setUint32(8, this.#window);
    view.setUint16(12, Setting.MAX_HEADER_LIST_SIZE);
    view.setUint32(14, this.#decoder.maxHeaderListSize);
    this.#write(PREFACE);
    this.#write(encodeFrame(FrameType.SETTINGS, 0, 0, settings));
    if (this.#window > DEFAULT_WINDOW) this.#windowUpdate(0, this.#window - DEFAULT_WINDOW);
  }

  /** The server's SETTINGS arrived: it speaks HTTP/2 (and so accepted our TLS handshake). */
  get started(): boolean {
    return this.#started;
  }

  /** The error that ended the session, if one did. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** Whether new calls can go on this session. */
  get usable(): boolean {
    return !this.#closed && !this.#goaway;
  }

  /** Open a stream: send the request's headers and body (then END_STREAM). */
  request(fields: HeaderField[], body: Uint8Array): H2Stream {
    if (!this.usable) throw this.#error ?? new Error("the HTTP/2 connection is closed");
    const id = this.#nextId;
    if (id > MAX_WINDOW) throw new Error("no HTTP/2 stream ids left on this connection");
    this.#nextId += 2;
    const stream = new H2Stream(id, this, this.#window, this.#peerInitialWindow);
    this.#streams.set(id, stream);
    const block = encodeHeaders(fields);
    const max = this.#peerMaxFrame;
    for (let offset = 0, first = true; first || offset < block.length; first = false) {
      const part = block.subarray(offset, offset + max);
      offset += part.length;
      const last = offset >= block.length;
      this.#write(encodeFrame(
        first ? FrameType.HEADERS : FrameType.CONTINUATION,
        last ? Flag.END_HEADERS : 0,
        id,
        part,
      ));
    }
    stream.pending = body;
    this.#flush(stream);
    return stream;
  }

  /** Feed bytes read from the connection. */
  receive(bytes: Uint8Array): void {
    if (this.#closed) return;
    try {
      for (const frame of this.#reader.push(bytes)) {
        this.#frame(frame);
        if (this.#closed) return;
      }
    } catch (err) {
      if (err instanceof H2ProtocolError) {
        // The last stream id is the last one the server opened that we processed: none (no push).
        this.#write(goaway(0, err.code, err.message));
        this.destroy(new Error(`HTTP/2 protocol error from the server: ${err.message}`));
      } else {
        this.destroy(err instanceof Error ? err : new Error(String(err)));
      }
    }
  }

  /** Close gracefully: GOAWAY, then the connection; calls still running end with an error. */
  close(): void {
    if (this.#closed) return;
    this.#write(goaway(0, ErrorCode.NO_ERROR, ""));
    this.destroy(new Error("the HTTP/2 connection was closed"));
  }

  /**
   * The connection ended or failed: every stream still open fails with `error`. With `drain`
   * false, what is left unsent is dropped (the connection is closed at once).
   */
  destroy(error: Error, drain = true): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#error ??= error;
    for (const stream of this.#streams.values()) stream.end(this.#error);
    this.#streams.clear();
    this.#io.close(drain);
    this.onUnusable?.();
  }

  /** @internal A stream's consumer read `n` bytes: give them back to the server in batches. */
  consumed(stream: H2Stream, n: number): void {
    if (this.#closed) return;
    const threshold = this.#window / 4;
    stream.unacknowledged += n;
    if (!stream.closed && stream.unacknowledged >= threshold) {
      stream.receiveWindow += stream.unacknowledged;
      this.#windowUpdate(stream.id, stream.unacknowledged);
      stream.unacknowledged = 0;
    }
    this.#connectionConsumed(n);
  }

  /** @internal Reset a stream from our side. */
  resetStream(stream: H2Stream, code: number): void {
    if (this.#streams.get(stream.id) !== stream) return;
    this.#streams.delete(stream.id);
    if (!this.#closed) this.#write(encodeFrame(FrameType.RST_STREAM, 0, stream.id, u32(code)));
    // What it held unread still counts against the connection's window: give it back.
    this.#connectionConsumed(stream.discard());
    stream.end();
    this.#maybeFinish();
  }

  #connectionConsumed(n: number): void {
    if (this.#closed) return;
    this.#unacknowledged += n;
    if (this.#unacknowledged >= this.#window / 4) {
      this.#receiveWindow += this.#unacknowledged;
      this.#windowUpdate(0, this.#unacknowledged);
      this.#unacknowledged = 0;
    }
  }

  #frame(frame: Frame): void {
    if (this.#block && frame.type !== FrameType.CONTINUATION) {
      throw protocol(`a ${frame.type} frame inside a header block (CONTINUATION expected)`);
    }
    if (!this.#started && frame.type !== FrameType.SETTINGS) {
      throw protocol("the server's first frame is not SETTINGS");
    }
    switch (frame.type) {
      case FrameType.DATA:
        return this.#data(frame);
      case FrameType.HEADERS:
      case FrameType.CONTINUATION:
        return this.#headers(frame);
      case FrameType.PRIORITY:
        if (frame.streamId === 0) throw protocol("PRIORITY on stream 0");
        // A stream error in RFC 9113 6.3, which section 5.4.1 lets us treat as the connection's.
        if (frame.payload.length !== 5) throw frameSize("PRIORITY", frame);
        return;
      case FrameType.RST_STREAM:
        return this.#rstStream(frame);
      case FrameType.SETTINGS:
        return this.#settings(frame);
      case FrameType.PUSH_PROMISE:
        throw protocol("PUSH_PROMISE, though we disabled push");
      case FrameType.PING:
        if (frame.streamId !== 0) throw protocol("PING on a stream");
        if (frame.payload.length !== 8) throw frameSize("PING", frame);
        if (!(frame.flags & Flag.ACK)) {
          this.#write(encodeFrame(FrameType.PING, Flag.ACK, 0, frame.payload));
        }
        return;
      case FrameType.GOAWAY:
        return this.#goawayFrame(frame);
      case FrameType.WINDOW_UPDATE:
        return this.#windowUpdateFrame(frame);
      default:
        return; // unknown frame types are ignored (RFC 9113 section 4.1)
    }
  }

  /** The stream a frame names: undefined for one already closed; an idle one is an error. */
  #stream(frame: Frame): H2Stream | undefined {
    const id = frame.streamId;
    if (id === 0) throw protocol(`frame type ${frame.type} on stream 0`);
    if (id % 2 === 0 || id >= this.#nextId) {
      throw protocol(`frame type ${frame.type} on idle stream ${id}`);
    }
    return this.#streams.get(id);
  }

  #data(frame: Frame): void {
    const stream = this.#stream(frame);
    const length = frame.payload.length; // padding counts against the window too
    if (length > this.#receiveWindow) {
      throw new H2ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    }
    this.#receiveWindow -= length;
    const content = framePayload(frame);
    if (!stream) return this.#connectionConsumed(length);
    if (length > stream.receiveWindow) {
      throw new H2ProtocolError(
        ErrorCode.FLOW_CONTROL_ERROR,
        `DATA beyond stream ${stream.id}'s window`,
      );
    }
    stream.receiveWindow -= length;
    // Padding is never read by the consumer: give it back now.
    if (length > content.length) this.consumed(stream, length - content.length);
    if (!stream.headers) throw protocol(`DATA before HEADERS on stream ${stream.id}`);
    stream.push(content);
    if (frame.flags & Flag.END_STREAM) this.#remoteEnd(stream);
  }

  #headers(frame: Frame): void {
    let block = this.#block;
    if (frame.type === FrameType.HEADERS) {
      this.#stream(frame);
      block = this.#block = {
        streamId: frame.streamId,
        endStream: (frame.flags & Flag.END_STREAM) !== 0,
        parts: [],
        size: 0,
      };
      const content = framePayload(frame);
      block.parts.push(content);
      block.size = content.length;
    } else {
      if (!block || frame.streamId !== block.streamId) {
        throw protocol("CONTINUATION without a header block in progress on its stream");
      }
      // A flood of CONTINUATIONs, each too small to reach the size limit, is refused by count.
      if (frame.payload.length === 0 && !(frame.flags & Flag.END_HEADERS)) {
        throw protocol("an empty CONTINUATION without END_HEADERS");
      }
      if (block.parts.length >= MAX_BLOCK_FRAMES) {
        throw new H2ProtocolError(
          ErrorCode.ENHANCE_YOUR_CALM,
          `a header block in more than ${MAX_BLOCK_FRAMES} frames`,
        );
      }
      block.parts.push(frame.payload);
      block.size += frame.payload.length;
    }
    if (block.size > this.#decoder.maxHeaderListSize) {
      throw new H2ProtocolError(
        ErrorCode.ENHANCE_YOUR_CALM,
        `a header block larger than the ${this.#decoder.maxHeaderListSize} bytes we allow`,
      );
    }
    if (!(frame.flags & Flag.END_HEADERS)) return;
    this.#block = undefined;
    const bytes = block.parts.length === 1 ? block.parts[0]! : concat(block.parts, block.size);
    // Decoded even for a stream we closed: the dynamic table spans the connection.
    const fields = toRecord(this.#decoder.decode(bytes));
    const stream = this.#streams.get(block.streamId);
    if (!stream) return;
    if (!stream.headers) stream.headers = fields;
    else if (block.endStream) stream.trailers = fields;
    else throw protocol(`a second header block without END_STREAM on stream ${stream.id}`);
    if (block.endStream) this.#remoteEnd(stream);
  }

  #rstStream(frame: Frame): void {
    if (frame.payload.length !== 4) throw frameSize("RST_STREAM", frame);
    const stream = this.#stream(frame);
    if (!stream) return;
    stream.rstCode = readU32(frame.payload, 0);
    this.#streams.delete(stream.id);
    stream.end();
    this.#maybeFinish();
  }

  #settings(frame: Frame): void {
    if (frame.streamId !== 0) throw protocol("SETTINGS on a stream");
    if (frame.flags & Flag.ACK) {
      if (frame.payload.length !== 0) throw frameSize("SETTINGS acknowledgement", frame);
      return;
    }
    if (frame.payload.length % 6 !== 0) throw frameSize("SETTINGS", frame);
    for (let at = 0; at < frame.payload.length; at += 6) {
      const id = (frame.payload[at]! << 8) | frame.payload[at + 1]!;
      const value = readU32(frame.payload, at + 2);
      if (id === Setting.ENABLE_PUSH && value > 1) throw protocol("SETTINGS_ENABLE_PUSH above 1");
      if (id === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) {
          throw new H2ProtocolError(
            ErrorCode.FLOW_CONTROL_ERROR,
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
          );
        }
        const delta = value - this.#peerInitialWindow;
        this.#peerInitialWindow = value;
        for (const stream of this.#streams.values()) {
          stream.sendWindow += delta;
          if (stream.sendWindow > MAX_WINDOW) {
            throw new H2ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window above 2^31-1");
          }
        }
      }
      if (id === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME_SIZE || value > 2 ** 24 - 1) {
          throw protocol(`SETTINGS_MAX_FRAME_SIZE ${value} out of range`);
        }
        this.#peerMaxFrame = value;
      }
      // HEADER_TABLE_SIZE: our encoder never indexes. MAX_CONCURRENT_STREAMS: the command line
      // makes a few calls at a time; a server that refuses one resets it (REFUSED_STREAM).
    }
    this.#started = true;
    this.#write(encodeFrame(FrameType.SETTINGS, Flag.ACK, 0));
    for (const stream of this.#streams.values()) this.#flush(stream);
  }

  #goawayFrame(frame: Frame): void {
    if (frame.streamId !== 0) throw protocol("GOAWAY on a stream");
    if (frame.payload.length < 8) throw frameSize("GOAWAY", frame);
    const last = readU32(frame.payload, 0) & MAX_WINDOW;
    const code = readU32(frame.payload, 4);
    const wasUsable = this.usable;
    this.#goaway = true;
    if (code !== ErrorCode.NO_ERROR) {
      const debug = new TextDecoder().decode(frame.payload.subarray(8, 8 + 256));
      this.#error ??= new Error(
        `the server sent GOAWAY with code ${code}${debug ? ` (${debug})` : ""}`,
      );
    }
    // Streams above `last` were never processed: they may be retried elsewhere.
    for (const stream of [...this.#streams.values()]) {
      if (stream.id > last) {
        stream.rstCode = ErrorCode.REFUSED_STREAM;
        this.#streams.delete(stream.id);
        stream.end();
      }
    }
    if (wasUsable) this.onUnusable?.();
    this.#maybeFinish();
  }

  #windowUpdateFrame(frame: Frame): void {
    if (frame.payload.length !== 4) throw frameSize("WINDOW_UPDATE", frame);
    const increment = readU32(frame.payload, 0) & MAX_WINDOW;
    if (frame.streamId === 0) {
      if (increment === 0) throw protocol("WINDOW_UPDATE of 0 on the connection");
      this.#sendWindow += increment;
      if (this.#sendWindow > MAX_WINDOW) {
        throw new H2ProtocolError(
          ErrorCode.FLOW_CONTROL_ERROR,
          "the connection window above 2^31-1",
        );
      }
      for (const stream of this.#streams.values()) this.#flush(stream);
      return;
    }
    const stream = this.#stream(frame);
    if (!stream) return;
    if (increment === 0) {
      stream.rstCode = ErrorCode.PROTOCOL_ERROR;
      return this.resetStream(stream, ErrorCode.PROTOCOL_ERROR);
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      stream.rstCode = ErrorCode.FLOW_CONTROL_ERROR;
      return this.resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
    }
    this.#flush(stream);
  }

  /** The server ended its side: the response is complete. */
  #remoteEnd(stream: H2Stream): void {
    this.#streams.delete(stream.id);
    // A response complete before our request was sent (an early error): stop sending.
    if (stream.pendingEnd) {
      this.#write(encodeFrame(FrameType.RST_STREAM, 0, stream.id, u32(ErrorCode.NO_ERROR)));
    }
    stream.end();
    this.#maybeFinish();
  }

  /** Send what flow control allows of a stream's request body, then its END_STREAM. */
  #flush(stream: H2Stream): void {
    while (stream.pendingEnd && !this.#closed) {
      // A SETTINGS that lowers the initial window can make a stream's window negative: send
      // nothing (never a negative count, which would grow the windows) until it is positive.
      const n = Math.max(
        0,
        Math.min(stream.pending.length, stream.sendWindow, this.#sendWindow, this.#peerMaxFrame),
      );
      if (n <= 0 && stream.pending.length > 0) return; // wait for WINDOW_UPDATE
      const part = stream.pending.subarray(0, n);
      stream.pending = stream.pending.subarray(n);
      stream.sendWindow -= n;
      this.#sendWindow -= n;
      const last = stream.pending.length === 0;
      this.#write(encodeFrame(FrameType.DATA, last ? Flag.END_STREAM : 0, stream.id, part));
      if (last) stream.pendingEnd = false;
    }
  }

  /** After a GOAWAY, end the connection once its last stream is done. */
  #maybeFinish(): void {
    if (this.#goaway && this.#streams.size === 0) {
      this.destroy(this.#error ?? new Error("the server closed the HTTP/2 connection (GOAWAY)"));
    }
  }

  #windowUpdate(streamId: number, increment: number): void {
    this.#write(encodeFrame(FrameType.WINDOW_UPDATE, 0, streamId, u32(increment)));
  }

  #write(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#io.write(bytes);
    if (this.#io.backlog() > MAX_WRITE_BACKLOG) {
      this.destroy(
        new Error("the server does not read what we send (write backlog over 4 MiB)"),
        false,
      );
    }
  }
}

function goaway(lastStreamId: number, code: number, message: string): Uint8Array {
  const debug = new TextEncoder().encode(message.slice(0, 200));
  const payload = new Uint8Array(8 + debug.length);
  const view = new DataView(payload.buffer);
  view.setUint32(0, Math.max(0, lastStreamId));
  view.setUint32(4, code);
  payload.set(debug, 8);
  return encodeFrame(FrameType.GOAWAY, 0, 0, payload);
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

function readU32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function protocol(message: string): H2ProtocolError {
  return new H2ProtocolError(ErrorCode.PROTOCOL_ERROR, message);
}

function frameSize(what: string, frame: Frame): H2ProtocolError {
  return new H2ProtocolError(
    ErrorCode.FRAME_SIZE_ERROR,
    `${what} of ${frame.payload.length} bytes`,
  );
}
