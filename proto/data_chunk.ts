/**
 * A DataChunk built in its wire form, so the server can read a job's output straight into the
 * bytes it sends: one buffer holds the encoded `offset` and `stream` fields, then the `payload`
 * field's tag and length, then the payload itself, which the caller fills in place. Encoding the
 * same chunk through protobufjs copies the payload twice more (into its writer, then into a Buffer
 * for grpc-js): measured on Deno 2.8.3, those copies were a quarter of the worker's CPU time when
 * streaming.
 *
 * The buffer starts with room for gRPC's 5-byte message prefix (compressed flag, length), so the
 * server can hand grpc-js the framed message instead of letting it copy each one once more
 * (`framed`; worker/tls/internals.ts sendPreFramed).
 *
 * The fields are written in the order offset, stream, payload; protobuf decoders accept fields in
 * any order (protobufjs, grpcio and every conforming decoder do).
 *
 * @module
 */
import { Buffer } from "node:buffer";
// @ts-types="./gen/jobworker.d.ts"
import { jobworker } from "./gen/jobworker.js";
import { writeVarint } from "./varint.ts";

const TAG_PAYLOAD = (1 << 3) | 2;
const TAG_OFFSET = (2 << 3) | 0;
const TAG_STREAM = (3 << 3) | 0;
/** gRPC's prefix of a message: a compressed flag, then the message's length (32-bit big-endian). */
const GRPC_PREFIX_BYTES = 5;
/** Tags and varints before the payload: 3 tags, offset (≤ 8 bytes below 2^53), stream, length. */
const MAX_HEADER_BYTES = 3 + 8 + 5 + 5;

/** A DataChunk whose encoding is already done: its `payload` is a view into `wire`. */
export class EncodedDataChunk extends jobworker.DataChunk {
  private constructor(
    /** The message behind gRPC's 5-byte prefix (uncompressed): what goes on an HTTP/2 stream. */
    readonly framed: Buffer,
    /** The encoded message: what the server sends. */
    readonly wire: Buffer,
    payloadAt: number,
    offset: number,
    stream: jobworker.OutputStream,
  ) {
    super({ payload: wire.subarray(payloadAt), offset, stream });
  }

  /** Bytes a chunk of `length` payload bytes takes at most, prefix and fields included. */
  static capacityFor(length: number): number {
    return GRPC_PREFIX_BYTES + MAX_HEADER_BYTES + length;
  }

  /**
   * A chunk of `length` payload bytes at output `offset`, written by `stream`; the payload's
   * bytes are left for the caller to fill (they are not initialised). It is built at the start of
   * `backing` when that is large enough ({@link capacityFor}), in a new buffer otherwise.
   */
  static allocate(
    length: number,
    offset: number,
    stream: jobworker.OutputStream,
    backing?: Buffer,
  ): EncodedDataChunk {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`bad offset ${offset}`);
    const header = new Uint8Array(MAX_HEADER_BYTES);
    let at = 0;
    header[at++] = TAG_OFFSET;
    at = writeVarint(header, at, offset);
    header[at++] = TAG_STREAM;
    at = writeVarint(header, at, stream);
    header[at++] = TAG_PAYLOAD;
    at = writeVarint(header, at, length);
    const size = GRPC_PREFIX_BYTES + at + length;
    const framed = backing && backing.length >= size
      ? backing.subarray(0, size)
      : Buffer.allocUnsafe(size);
    framed[0] = 0;
    framed.writeUInt32BE(at + length, 1);
    framed.set(header.subarray(0, at), GRPC_PREFIX_BYTES);
    const wire = framed.subarray(GRPC_PREFIX_BYTES);
    return new EncodedDataChunk(framed, wire, at, offset, stream);
  }

  /** The same chunk with only the first `length` payload bytes (a copy: for short reads). */
  shortened(length: number): EncodedDataChunk {
    const chunk = EncodedDataChunk.allocate(length, this.offset, this.stream);
    chunk.payload.set(this.payload.subarray(0, length));
    return chunk;
  }
}
