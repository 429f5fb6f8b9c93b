/**
 * The quiet-time collection (worker/runtime/memory_trim.ts): it runs once nothing happened for
 * half a second, and never while a unary call is in progress, however long that call waits (a
 * create whose record the disk is slow to sync met the collection's two mark-compacts in its
 * middle).
 *
 * Run: `deno test -A tests/memory_trim_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  callEnded,
  callStarted,
  quietCollections,
  trimSoon,
} from "../worker/runtime/memory_trim.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "the quiet-time collection waits for the unary call in progress, then runs once quiet",
  // The trim's libc handle stays open and its sweep timer may still be pending at the end.
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const before = quietCollections();
    trimSoon();
    await delay(800);
    assert.equal(quietCollections(), before + 1, "a quiet worker collects after 500 ms");

    callStarted();
    trimSoon();
    await delay(1600);
    assert.equal(quietCollections(), before + 1, "no collection while a call is in progress");
    callEnded();
    await delay(300);
    assert.equal(quietCollections(), before + 1, "the call's end is work: quiet time from it");
    await delay(500);
    assert.equal(quietCollections(), before + 2, "once quiet after the call, one collection");
    await delay(600); // the sweep's malloc_trim
  },
});
