/**
 * Bytes that arrive in chunks and are read in pieces of a known length: the frames of a
 * connection (frames.ts; a gRPC body's messages are copied as they come instead, http2.ts). A chunk of 1 KiB or more is
 * kept as it came; a piece within one chunk is a view of it (no copy), one that spans chunks is
 * copied once. Smaller chunks are copied into blocks of 16 KiB, each run of them one entry: a
 * server that sends its bytes one at a time costs the bytes, not an object (and a buffer) each.
 *
 * @module
 */

/** Chunks below this size are copied into a block. */
const SMALL_CHUNK = 1024;
/** The size of the blocks small chunks are copied into. */
const BLOCK_BYTES = 16 * 1024;

/** A queue of bytes taken from the front. */
export class ByteQueue {
  #chunks: Uint8Array[] = [];
  #length = 0;
  /** The block small chunks are copied into, and how much of it is used. */
  #block: Uint8Array | undefined;
  #filled = 0;

  /** The bytes held. */
  get length(): number {
    return this.#length;
  }

  /** The entries holding them. */
  get chunks(): number {
    return this.#chunks.length;
  }

  /** Append bytes: a small chunk is copied, a larger one kept as it is. */
  push(bytes: Uint8Array): void {
    const n = bytes.length;
    if (n === 0) return;
    this.#length += n;
    if (n >= SMALL_CHUNK) {
      this.#chunks.push(bytes);
      return;
    }
    let block = this.#block;
    if (!block || this.#filled + n > block.length) {
      block = this.#block = new Uint8Array(BLOCK_BYTES);
      this.#filled = 0;
    }
    block.set(bytes, this.#filled);
    const last = this.#chunks.at(-1);
    if (
      last?.buffer === block.buffer && last.byteOffset + last.length === this.#filled
    ) {
      // The last entry ends where this copy begins: it grows instead of a new entry.
      this.#chunks[this.#chunks.length - 1] = block.subarray(last.byteOffset, this.#filled + n);
    } else {
      this.#chunks.push(block.subarray(this.#filled, this.#filled + n));
    }
    this.#filled += n;
  }

  /** The next `n` bytes (n <= the bytes held), copied only when they span chunks. */
  take(n: number): Uint8Array {
    if (n > this.#length) throw new RangeError(`take(${n}) of ${this.#length} bytes held`);
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[0]!;
    let out: Uint8Array;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.#chunks[0]!;
        const part = Math.min(chunk.length, n - filled);
        out.set(chunk.subarray(0, part), filled);
        filled += part;
        if (part === chunk.length) this.#chunks.shift();
        else this.#chunks[0] = chunk.subarray(part);
      }
    }
    this.#length -= n;
    return out;
  }
}
