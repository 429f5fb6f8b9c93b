/**
 * Bytes that arrive in chunks and are read in pieces of a known length: the frames of a
 * connection (frames.ts) and the messages of a gRPC body (http2.ts). Chunks are kept as they
 * came; a piece within one chunk is a view of it (no copy), one that spans chunks is copied once.
 *
 * @module
 */

/** A queue of bytes taken from the front. */
export class ByteQueue {
  #chunks: Uint8Array[] = [];
  #length = 0;

  /** The bytes held. */
  get length(): number {
    return this.#length;
  }

  /** Append bytes (kept as they are, not copied). */
  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#chunks.push(bytes);
    this.#length += bytes.length;
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
