/**
 * Gives freed memory back to the system once the worker goes quiet.
 *
 * The bytes a connection queued (TLS records, HTTP/2 frames), the messages written to streams and
 * the buffers job output is read into are native memory owned by JavaScript objects: freed only
 * when V8 collects those objects, and then kept by glibc in its heaps. A worker that goes idle
 * allocates nothing, so V8 never collects again. Measured on Deno 2.8.3: 50 stalled readers that
 * disconnected left the worker +343 MiB over idle (+247 MiB after a full collection alone, +24 MiB
 * after a collection and malloc_trim); 20,000 fuzzed requests left V8's heap at 100 MiB, 21 MiB
 * after a collection.
 *
 * So every sign of work (a call ended, a connection closed, output passed through) pushes back one
 * timer; once nothing happened for QUIET_MS, one full collection and malloc_trim run. An idle
 * worker has no timer at all.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";

type Libc = Deno.DynamicLibrary<{ malloc_trim: { parameters: ["usize"]; result: "i32" } }>;

let libc: Libc | null | undefined;

function glibc(): Libc | null {
  if (libc === undefined) {
    try {
      libc = Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } });
    } catch {
      libc = null; // not glibc: nothing to do
    }
  }
  return libc;
}

/** Deno 2.8.3's `gc` ignores V8's options ({type: "minor"}): every call is a full collection. */
type Collect = () => void;
let collect: Collect | null | undefined;

/** V8's full collection, asked for directly (`gc` of a context made after --expose-gc). */
function collector(): Collect | null {
  if (collect === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      const gc = vm.runInNewContext("gc") as unknown;
      collect = typeof gc === "function" ? gc as Collect : null;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/** How long nothing must happen before the collection and trim. */
const QUIET_MS = 500;
/** Native memory freed by the collection's finalizers (sockets, sessions) is swept after it. */
const SWEEP_DELAY_MS = 500;

let lastWork = 0;
let timer: ReturnType<typeof setTimeout> | undefined;

function trimNow(): void {
  collector()?.();
  glibc()?.symbols.malloc_trim(0n);
  const sweep = setTimeout(() => glibc()?.symbols.malloc_trim(0n), SWEEP_DELAY_MS);
  Deno.unrefTimer(sweep as unknown as number);
}

function arm(delayMs: number): void {
  timer = setTimeout(() => {
    const quietFor = performance.now() - lastWork;
    if (quietFor < QUIET_MS) return arm(QUIET_MS - quietFor);
    timer = undefined;
    trimNow();
  }, delayMs);
  Deno.unrefTimer(timer as unknown as number);
}

/**
 * Records that work happened (a call ended, a connection closed, a stream ended): a full
 * collection and malloc_trim run once nothing else happened for QUIET_MS. Cheap enough per call:
 * one timestamp, and at most one timer pending.
 */
export function trimSoon(): void {
  lastWork = performance.now();
  if (timer === undefined) arm(QUIET_MS);
}

/** Bytes of job output ingested or streamed since glibc's heaps were last trimmed. */
let passed = 0;
/** How much output may pass through between two trims of glibc's heaps. */
const TRIM_EVERY_BYTES = 32 * 1024 * 1024;
/** RSS growth since the last collection that makes the next trim collect first. */
const COLLECT_AFTER_GROWTH_BYTES = 32 * 1024 * 1024;
/** The worker's RSS right after the last collection (0: none yet). */
let rssAfterCollect = 0;

/**
 * Counts `bytes` of job output ingested or streamed. Every 32 MiB glibc's heaps are trimmed (glibc
 * keeps the space freed buffers leave between longer-lived allocations), after a collection when
 * the worker's RSS grew by 32 MiB since the last one: dead buffers V8 lets pile up are freed only
 * by a collection. 5 jobs writing 200 MiB with 50 stalled readers peaked at +113..+386 MiB over
 * idle with neither, +90..+102 MiB with both.
 *
 * Only when memory grew: the `gc()` Deno gives (see collector()) ignores its options and always
 * runs V8's low-memory collection, two full mark-compacts of 10-25 ms on the event loop. Run every
 * 32 MiB, they took a third of the worker's CPU while it streamed one job's output (`--cpu-prof`),
 * and stalled every stream and call for their duration.
 */
export function passedThrough(bytes: number): void {
  passed += bytes;
  if (passed < TRIM_EVERY_BYTES) return;
  passed = 0;
  const collect = Deno.memoryUsage().rss - rssAfterCollect > COLLECT_AFTER_GROWTH_BYTES;
  if (collect) collector()?.();
  glibc()?.symbols.malloc_trim(0n);
  if (collect) rssAfterCollect = Deno.memoryUsage().rss;
  trimSoon();
}
