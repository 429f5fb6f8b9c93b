/**
 * HTTP/2 frames (RFC 9113 section 4 and 6): the 9-byte header, encoding one frame, splitting a
 * byte stream into frames, and removing the padding and priority fields of DATA and HEADERS.
 * Nothing here keeps connection state: that is session.ts.
 *
 * @module
 */

import { ByteQueue } from "./byte_queue.ts";

/** Frame types (RFC 9113 section 6); others are ignored (section 4.1). */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Frame flags (each meaningful only on some types). */
export const Flag = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

/** Error codes of RST_STREAM and GOAWAY (RFC 9113 section 7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
} as const;

/** SETTINGS identifiers (RFC 9113 section 6.5.2). */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

/** The length of a frame's header. */
export const FRAME_HEADER_BYTES = 9;
/** The smallest SETTINGS_MAX_FRAME_SIZE, and the default (RFC 9113 section 4.2). */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
/** The largest flow-control window (RFC 9113 section 6.9.1). */
export const MAX_WINDOW = 2 ** 31 - 1;

/** One frame as read: the payload still holds any padding. */
export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
}

/**
 * The peer broke the protocol: a connection error (RFC 9113 section 5.4.1) whose code goes into
 * our GOAWAY.
 */
export class H2ProtocolError extends Error {
  override name = "H2ProtocolError";
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** One frame's bytes: header and payload. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length << 8); // 24-bit length, then the type byte
  view.setUint8(3, type);
  view.setUint8(4, flags);
  view.setUint32(5, streamId & MAX_WINDOW); // the reserved bit is sent as 0
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/**
 * Splits the bytes of a connection into frames. Chunks are kept as they came; a payload that lies
 * within one chunk is a view of it (no copy), one that spans chunks is copied once. A frame longer
 * than `maxFrameSize` (what we advertised) is a connection error before any of it is buffered.
 */
export class FrameReader {
  readonly #bytes = new ByteQueue();
  #header: { length: number; type: number; flags: number; streamId: number } | undefined;

  constructor(readonly maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {}

  /** Feed bytes; returns the frames now complete. */
  push(bytes: Uint8Array): Frame[] {
    this.#bytes.push(bytes);
    const frames: Frame[] = [];
    for (;;) {
      if (!this.#header) {
        if (this.#bytes.length < FRAME_HEADER_BYTES) break;
        const h = this.#bytes.take(FRAME_HEADER_BYTES);
        const view = new DataView(h.buffer, h.byteOffset, FRAME_HEADER_BYTES);
        const length = view.getUint32(0) >>> 8;
        if (length > this.maxFrameSize) {
          throw new H2ProtocolError(
            ErrorCode.FRAME_SIZE_ERROR,
            `a frame of ${length} bytes, larger than the ${this.maxFrameSize} we allow`,
          );
        }
        this.#header = {
          length,
          type: view.getUint8(3),
          flags: view.getUint8(4),
          streamId: view.getUint32(5) & MAX_WINDOW,
        };
      }
      if (this.#bytes.length < this.#header.length) break;
      const { length, type, flags, streamId } = this.#header;
      frames.push({ type, flags, streamId, payload: this.#bytes.take(length) });
      this.#header = undefined;
    }
    return frames;
  }
}

/**
 * The content of a DATA or HEADERS frame: without the pad length, the padding and (HEADERS with
 * the PRIORITY flag) the 5 bytes of priority (RFC 9113 sections 6.1 and 6.2).
 */
export function framePayload(frame: Frame): Uint8Array {
  let start = 0;
  let end = frame.payload.length;
  if (frame.flags & Flag.PADDED) {
    if (end < 1) throw new H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "a padded frame too short");
    end -= frame.payload[0]!;
    start = 1;
  }
  if (frame.type === FrameType.HEADERS && frame.flags & Flag.PRIORITY) start += 5;
  if (end < start) {
    throw new H2ProtocolError(
      ErrorCode.PROTOCOL_ERROR,
      "a frame's padding is longer than the frame",
    );
  }
  return frame.payload.subarray(start, end);
}
