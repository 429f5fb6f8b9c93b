/**
 * The quiet-time collection (worker/runtime/memory_trim.ts): it runs once nothing happened for
 * half a second, and never while a unary call is in progress, however long that call waits (a
 * create whose record the disk is slow to sync met the collection's two mark-compacts in its
 * middle), for at most the hold's limit from when calls began: a call whose end were never
 * reported, with other calls coming and going, must not stop the collections for good.
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
  setCallHoldMs,
  trimSoon,
} from "../worker/runtime/memory_trim.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits, up to `ms`, until the count of quiet-time collections reaches `count`; when it did. */
async function collectedBy(count: number, ms = 4000): Promise<number> {
  const until = performance.now() + ms;
  while (quietCollections() < count) {
    if (performance.now() > until) throw new Error(`no collection number ${count} in ${ms} ms`);
    await delay(20);
  }
  return performance.now();
}

const options = {
  // The trim's libc handle stays open and its sweep timer may still be pending at the end.
  sanitizeResources: false,
  sanitizeOps: false,
};

Deno.test({
  ...options,
  name: "the quiet-time collection waits for the unary call in progress, then runs once quiet",
  fn: async () => {
    const before = quietCollections();
    trimSoon();
    await collectedBy(before + 1);

    callStarted();
    trimSoon();
    await delay(1600);
    assert.equal(quietCollections(), before + 1, "no collection while a call is in progress");
    const ended = performance.now();
    callEnded();
    const at = await collectedBy(before + 2);
    assert.ok(at - ended >= 500, `the call's end is work: quiet time from it (${at - ended} ms)`);
    await delay(600); // the sweep's malloc_trim
  },
});

Deno.test({
  ...options,
  name: "a call never reported ended holds the collection back only for the hold's limit",
  fn: async () => {
    setCallHoldMs(1500);
    try {
      const before = quietCollections();
      const began = performance.now();
      callStarted(); // never ended
      // Other calls keep coming and going, each well within the quiet time of the last.
      let busy = true;
      const others = (async () => {
        while (busy) {
          callStarted();
          await delay(50);
          callEnded();
          await delay(550);
        }
      })();
      const at = await collectedBy(before + 1, 6000);
      busy = false;
      await others;
      assert.ok(at - began >= 1500, `held for the limit first (${at - began} ms)`);
      callEnded();
      await delay(600);
    } finally {
      setCallHoldMs(30_000);
    }
  },
});
