/**
 * When output passing through forces a full collection (worker/runtime/memory_trim.ts): only when
 * what V8 holds grew, never because the process's RSS did. A collection cannot give back what glibc
 * keeps, and each forced one costs the event loop 40-90 ms with 200 jobs writing (issue 8's line
 * latency).
 */
import assert from "node:assert/strict";
import { collectionsForced, passedThrough } from "../worker/runtime/memory_trim.ts";

const MiB = 1024 * 1024;
/** One memory check's worth of output (memory_trim checks every 32 MiB). */
const CHECK = 32 * MiB;
const settle = () => new Promise((resolve) => setTimeout(resolve, 100)); // the trim off the loop

const libc = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["usize"], result: "pointer" },
  memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
  free: { parameters: ["pointer"], result: "void" },
});

Deno.test({
  name: "RSS growing outside V8 forces no collection",
  async fn() {
    passedThrough(CHECK); // a check: the lowest so far
    const before = collectionsForced();
    const rssBefore = Deno.memoryUsage().rss;
    // 64 MiB that only glibc holds, touched so that it counts in RSS.
    const block = libc.symbols.malloc(BigInt(64 * MiB));
    assert.ok(block);
    try {
      libc.symbols.memset(block, 1, BigInt(64 * MiB));
      assert.ok(Deno.memoryUsage().rss - rssBefore > 48 * MiB, "the block is resident");
      passedThrough(CHECK);
      passedThrough(CHECK);
      assert.equal(collectionsForced(), before);
    } finally {
      libc.symbols.free(block);
    }
    await settle();
  },
});

Deno.test({
  name: "buffers piling up in V8 force a collection",
  async fn() {
    passedThrough(CHECK);
    const before = collectionsForced();
    // 48 MiB of buffers JavaScript owns (a stalled reader's queued frames, say).
    const held = Array.from({ length: 48 }, () => new Uint8Array(MiB).fill(1));
    passedThrough(CHECK);
    assert.equal(collectionsForced(), before + 1);
    assert.equal(held.length, 48);
    await settle();
  },
});
