/**
 * HPACK (RFC 7541): the header compression of HTTP/2. The decoder is complete (static and dynamic
 * table, table size updates, integers, literals with and without indexing, Huffman strings), as
 * the server (nghttp2) uses all of it. The encoder sends every field as a literal without
 * indexing and without Huffman coding, which any decoder accepts and which leaves the server's
 * table for our requests untouched.
 *
 * The server is untrusted input: a decoded header list larger than we allow, a table size update
 * beyond what we advertised, an index out of range or a malformed integer or string is a
 * COMPRESSION_ERROR (the decoder's state can no longer be trusted, so the connection ends).
 *
 * @module
 */

import { ErrorCode, H2ProtocolError } from "./frames.ts";
import { huffmanDecode } from "./huffman.ts";

/** One header field. */
export type HeaderField = [name: string, value: string];

/** RFC 7541 Appendix A. Index 1 is the first entry. */
const STATIC_TABLE: readonly HeaderField[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/** The size HPACK counts for an entry: its octets plus 32 (RFC 7541 section 4.1). */
const ENTRY_OVERHEAD = 32;
/** The largest integer we decode: far above any index, length or table size we allow. */
const MAX_INTEGER = 2 ** 28;

const utf8 = new TextDecoder();
const encoder = new TextEncoder();

interface Entry {
  field: HeaderField;
  size: number;
}

/** Decodes header blocks of one connection, in order (the dynamic table spans them). */
export class HpackDecoder {
  /** Newest first, as HPACK indexes it. */
  #table: Entry[] = [];
  #tableSize = 0;
  #maxTableSize: number;

  /**
   * @param maxTableSizeLimit SETTINGS_HEADER_TABLE_SIZE as we advertised it (4096 by default):
   *   the largest table size the server may choose.
   * @param maxHeaderListSize The largest decoded header list accepted (names, values and 32 per
   *   field, as SETTINGS_MAX_HEADER_LIST_SIZE counts it).
   */
  constructor(readonly maxTableSizeLimit = 4096, readonly maxHeaderListSize = 64 * 1024) {
    this.#maxTableSize = maxTableSizeLimit;
  }

  /** The dynamic table, newest first, with each entry's size (for tests). */
  get dynamicTable(): [string, string, number][] {
    return this.#table.map(({ field, size }) => [field[0], field[1], size]);
  }

  /** The current size of the dynamic table. */
  get tableSize(): number {
    return this.#tableSize;
  }

  /** Decodes one complete header block. */
  decode(block: Uint8Array): HeaderField[] {
    const fields: HeaderField[] = [];
    let listSize = 0;
    let pos = 0;
    let fieldsSeen = false;
    while (pos < block.length) {
      const byte = block[pos]!;
      let field: HeaderField;
      if (byte & 0x80) { // indexed field
        const [index, next] = decodeInteger(block, pos, 7);
        pos = next;
        field = this.#entry(index);
      } else if ((byte & 0xe0) === 0x20) { // dynamic table size update
        const [size, next] = decodeInteger(block, pos, 5);
        pos = next;
        if (fieldsSeen) throw bad("a table size update after a header field");
        if (size > this.maxTableSizeLimit) {
          throw bad(`a table size update to ${size}, above the ${this.maxTableSizeLimit} allowed`);
        }
        this.#maxTableSize = size;
        this.#evict(0);
        continue;
      } else { // a literal: with incremental indexing (01), without (0000) or never indexed (0001)
        const indexing = (byte & 0xc0) === 0x40;
        const [index, afterIndex] = decodeInteger(block, pos, indexing ? 6 : 4);
        pos = afterIndex;
        let name: string;
        if (index === 0) {
          const [bytes, afterName] = decodeString(block, pos);
          name = utf8.decode(bytes);
          pos = afterName;
        } else {
          name = this.#entry(index)[0];
        }
        const [valueBytes, afterValue] = decodeString(block, pos);
        pos = afterValue;
        field = [name, utf8.decode(valueBytes)];
        if (indexing) this.#add(field);
      }
      fieldsSeen = true;
      listSize += encoder.encode(field[0]).length + encoder.encode(field[1]).length +
        ENTRY_OVERHEAD;
      if (listSize > this.maxHeaderListSize) {
        throw new H2ProtocolError(
          ErrorCode.ENHANCE_YOUR_CALM,
          `a header list larger than the ${this.maxHeaderListSize} bytes we allow`,
        );
      }
      fields.push(field);
    }
    return fields;
  }

  #entry(index: number): HeaderField {
    if (index === 0) throw bad("header index 0");
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
    const entry = this.#table[index - STATIC_TABLE.length - 1];
    if (!entry) throw bad(`header index ${index} beyond the tables`);
    return entry.field;
  }

  #add(field: HeaderField): void {
    const size = encoder.encode(field[0]).length + encoder.encode(field[1]).length +
      ENTRY_OVERHEAD;
    // An entry larger than the table empties it and is not added (RFC 7541 section 4.4).
    this.#evict(size);
    if (size > this.#maxTableSize) return;
    this.#table.unshift({ field, size });
    this.#tableSize += size;
  }

  /** Evicts the oldest entries until `room` more bytes fit (or the table is empty). */
  #evict(room: number): void {
    while (this.#table.length > 0 && this.#tableSize + room > this.#maxTableSize) {
      this.#tableSize -= this.#table.pop()!.size;
    }
  }
}

/** An integer with an N-bit prefix (RFC 7541 section 5.1): the value and the position after. */
export function decodeInteger(
  bytes: Uint8Array,
  pos: number,
  prefixBits: number,
): [number, number] {
  const mask = (1 << prefixBits) - 1;
  if (pos >= bytes.length) throw bad("a header block ends inside an integer");
  let value = bytes[pos++]! & mask;
  if (value < mask) return [value, pos];
  // MAX_INTEGER needs at most 5 continuation bytes (shifts 0 to 28); a sixth, even of zero bits
  // (0x80), is refused: unbounded, the shift would reach 1024 and the value NaN, which no
  // comparison refuses.
  for (let shift = 0; shift <= 28; shift += 7) {
    if (pos >= bytes.length) throw bad("a header block ends inside an integer");
    const byte = bytes[pos++]!;
    value += (byte & 0x7f) * 2 ** shift;
    if (value > MAX_INTEGER) throw bad("an integer too large in a header block");
    if ((byte & 0x80) === 0) return [value, pos];
  }
  throw bad("an integer too large in a header block (too many continuation bytes)");
}

/** A string literal (RFC 7541 section 5.2), Huffman-decoded if flagged. */
function decodeString(bytes: Uint8Array, pos: number): [Uint8Array, number] {
  if (pos >= bytes.length) throw bad("a header block ends before a string");
  const huffman = (bytes[pos]! & 0x80) !== 0;
  const [length, start] = decodeInteger(bytes, pos, 7);
  const end = start + length;
  if (end > bytes.length) throw bad("a string longer than its header block");
  const raw = bytes.subarray(start, end);
  return [huffman ? huffmanDecode(raw) : raw, end];
}

/** An integer with an N-bit prefix whose high bits are `first`. */
export function encodeInteger(value: number, prefixBits: number, first: number, out: number[]) {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) {
    out.push(first | value);
    return;
  }
  out.push(first | mask);
  value -= mask;
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

/** Encodes fields as literals without indexing, with new names, without Huffman coding. */
export function encodeHeaders(fields: readonly HeaderField[]): Uint8Array {
  const out: number[] = [];
  for (const [name, value] of fields) {
    out.push(0x00);
    for (const text of [name, value]) {
      const bytes = encoder.encode(text);
      encodeInteger(bytes.length, 7, 0x00, out);
      for (const b of bytes) out.push(b);
    }
  }
  return Uint8Array.from(out);
}

function bad(message: string): H2ProtocolError {
  return new H2ProtocolError(ErrorCode.COMPRESSION_ERROR, message);
}
