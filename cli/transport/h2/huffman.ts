/**
 * Decoding HPACK's Huffman code (RFC 7541 section 5.2 and Appendix B). The code is canonical, so
 * the bit length of each symbol's code is enough to rebuild it: symbols sorted by length, then by
 * value, take consecutive codes. We only decode (our encoder sends plain strings).
 *
 * @module
 */

import { ErrorCode, H2ProtocolError } from "./frames.ts";

/**
 * The code length of each of the 257 symbols (0-255 and EOS, 256), from RFC 7541 Appendix B,
 * each written as the character with code 48 + length.
 */
export const LENGTHS =
  "=GLLLLLLLHNLLNLLLLLLLLNLLLLLLLLL6::<=68;::8;8666555666666678?6<:=67777777777777777777777878=C=>6?" +
  "56565666577666567655677777?;>=LDFDDFFFGFGGGGGHGHHFGHGGGGEFGFGGHFEDFFGGEGFFHEFGGEEFEGFGGDFFFGFFGJJ" +
  "DCFGFIJJJKKJHICEJKKJKHEEJJLKKKDHDEFEEGFFIIHHJGJKJJKKKKKLKKKKKJN";
const EOS = 256;
const MAX_LENGTH = 30;

/**
 * The decoding tree: node n's children are at 2n and 2n+1; a child > 0 is an inner node, a child
 * < 0 the leaf of symbol -child-1. Built at the first Huffman string.
 */
let tree: Int32Array | undefined;

/**
 * Built a depth at a time (about 500 steps; walking each symbol's code bit by bit from the root
 * took about 2 ms of a short command, on its path from the response to its output): in a
 * canonical code, the leaves at each depth are the leftmost children of the inner nodes one
 * level up, in symbol order; the children left over are that depth's inner nodes.
 */
function buildTree(): Int32Array {
  const byLength: number[][] = [];
  for (let s = 0; s < LENGTHS.length; s++) (byLength[LENGTHS.charCodeAt(s) - 48] ??= []).push(s);
  const nodes = new Int32Array(2 * 2 * LENGTHS.length);
  let inner = [0]; // node 0 is the root
  let next = 1;
  for (let depth = 1; inner.length > 0 && depth <= MAX_LENGTH; depth++) {
    const leaves = byLength[depth] ?? [];
    const deeper: number[] = [];
    for (let child = 0; child < 2 * inner.length; child++) {
      const slot = 2 * inner[child >> 1]! + (child & 1);
      if (child < leaves.length) nodes[slot] = -leaves[child]! - 1;
      else {
        nodes[slot] = next;
        deeper.push(next++);
      }
    }
    inner = deeper;
  }
  return nodes;
}

/** Decodes a Huffman-coded string; bad padding or an EOS symbol is a COMPRESSION_ERROR. */
export function huffmanDecode(bytes: Uint8Array): Uint8Array {
  const nodes = tree ??= buildTree();
  // The shortest code is 5 bits: at most 8/5 symbols per byte.
  const out = new Uint8Array(Math.ceil((bytes.length * 8) / 5));
  let length = 0;
  let node = 0;
  let pendingBits = 0; // bits read since the last symbol
  let pendingOnes = true; // and all of them were 1
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = (byte >> bit) & 1;
      const child = nodes[2 * node + one]!;
      if (child < 0) {
        const symbol = -child - 1;
        if (symbol === EOS) throw bad("an EOS symbol inside a Huffman string");
        out[length++] = symbol;
        node = 0;
        pendingBits = 0;
        pendingOnes = true;
      } else {
        node = child;
        pendingBits++;
        pendingOnes &&= one === 1;
      }
    }
  }
  // What follows the last symbol must be padding: fewer than 8 bits, all 1 (EOS's prefix).
  if (pendingBits > 7 || !pendingOnes) throw bad("bad padding at the end of a Huffman string");
  return out.subarray(0, length);
}

function bad(message: string): H2ProtocolError {
  return new H2ProtocolError(ErrorCode.COMPRESSION_ERROR, message);
}
