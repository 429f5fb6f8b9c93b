/** Protobuf varints, as the hand-made encodings (data_chunk.ts, encoded_jobs.ts) write them. */

/** Bytes the varint of `n` (a non-negative integer below 2^53) takes. */
export function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

/** Writes the varint of `value` at `at` in `target`; returns where the next byte goes. */
export function writeVarint(target: Uint8Array, at: number, value: number): number {
  while (value >= 0x80) {
    target[at++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  target[at++] = value;
  return at;
}
