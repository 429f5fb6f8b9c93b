/**
 * Makes protobufjs's reader refuse malformed input instead of reinterpreting it.
 *
 * protobufjs 7 (measured on 7.6.6):
 * - reads a string whose length runs past the end of the message as the bytes that are there
 *   (`BufferReader.string` clamps with Math.min): a truncated `command: "true"` decodes as "tr";
 * - reads a 32-bit varint of 6 to 10 bytes (valid protobuf: int32 fields sent as int64, negative
 *   values, padded encodings) by skipping 5 bytes after the fifth, whatever their length;
 * - turns invalid UTF-8 in a string into U+FFFD.
 * This module replaces the reader's `uint32` (which `int32`, `bool`, enums, tags and lengths all go
 * through) and `string` with strict versions: a varint is read byte by byte up to its end (at most
 * 10 bytes, its low 32 bits kept, as the protobuf spec says for int32), anything running past the
 * end of the message throws, and strings must be valid UTF-8. Errors are `MalformedMessage`, with a
 * message a person understands.
 *
 * @module
 */
import protobuf from "protobufjs/minimal";

/** A message that does not decode; the message says why. */
export class MalformedMessage extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MalformedMessage";
  }
}

interface ReaderState {
  buf: Uint8Array;
  pos: number;
  len: number;
}

const MAX_VARINT_BYTES = 10;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function readVarint32(this: ReaderState): number {
  let value = 0;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (this.pos >= this.len) {
      throw new MalformedMessage(`truncated: a number runs past the end of the message`);
    }
    const byte = this.buf[this.pos++]!;
    // Bits beyond the 32nd (bytes 6..10) are dropped, as protobuf specifies for 32-bit fields.
    if (i < 5) value = (value | (byte & 0x7f) << (7 * i)) >>> 0;
    if (byte < 0x80) return value;
  }
  throw new MalformedMessage(
    `invalid number at byte ${this.pos - MAX_VARINT_BYTES}: longer than 10 bytes`,
  );
}

function readString(this: ReaderState & { uint32(): number }): string {
  const length = this.uint32();
  const start = this.pos;
  if (length > this.len - start) {
    throw new MalformedMessage(
      `truncated: a ${length}-byte field at byte ${start} runs past the end of the message ` +
        `(${this.len - start} bytes left)`,
    );
  }
  this.pos = start + length;
  try {
    return utf8.decode(this.buf.subarray(start, start + length));
  } catch {
    throw new MalformedMessage(`a string field at byte ${start} is not valid UTF-8`);
  }
}

let installed = false;

/** Installs the strict reader methods (once; protobufjs's readers are shared by the process). */
export function strictDecoding(): void {
  if (installed) return;
  installed = true;
  for (const reader of [protobuf.Reader, protobuf.BufferReader]) {
    const proto = reader.prototype as unknown as Record<string, unknown>;
    proto["uint32"] = readVarint32;
    proto["string"] = readString;
  }
}
