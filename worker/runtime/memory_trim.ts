/**
 * Gives freed memory back to the system once the worker goes quiet.
 *
 * The bytes a connection queued (TLS records, HTTP/2 frames) and the messages written to streams
 * are native memory owned by JavaScript objects (job output is read into one shared buffer since
 * 2026-12, worker/runtime/output_pipe.ts, so pipe reads no longer add to them): freed only
 * when V8 collects those objects, and then kept by glibc in its heaps. A worker that goes idle
 * allocates nothing, so V8 never collects again. Measured on Deno 2.8.3: 50 stalled readers that
 * disconnected left the worker +343 MiB over idle (+247 MiB after a full collection alone, +24 MiB
 * after a collection and malloc_trim); 20,000 fuzzed requests left V8's heap at 100 MiB, 21 MiB
 * after a collection.
 *
 * So every sign of work (a call ended, a connection closed, output passed through) pushes back one
 * timer; once nothing happened for QUIET_MS, and no unary call is in progress (callStarted), one
 * full collection and malloc_trim run. An idle worker has no timer at all; one with a call in
 * progress re-arms it every QUIET_MS until the call ends.
 *
 * What this costs the event loop matters as much (issue 8's line latency): the collection Deno
 * 2.8.3 gives JavaScript (`gc` of a vm context) is always a full one, "reduce" mode, two or more
 * mark-compacts, whatever type is asked for (measured: `{type: "minor"}` 18-90 ms on a 6 MiB heap,
 * 20-60 ms each in the worker with 200 jobs writing), and malloc_trim over a worker's heaps took up
 * to 70 ms. So malloc_trim runs on Deno's blocking pool, never on the loop, and while output is
 * ingested a collection is forced only when the worker's RSS has grown (a stalled reader holding buffers);
 * a storm that holds its memory steady forces none.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";
import { log } from "../log/logger.ts";

const LIBC_SYMBOLS = {
  // On the blocking pool: glibc locks one arena at a time, so the loop's own allocations wait at
  // most for the trim of one arena, not for all of them.
  malloc_trim: { parameters: ["usize"], result: "i32", nonblocking: true },
} as const;
type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

let libc: Libc | null | undefined;

function glibc(): Libc | null {
  if (libc === undefined) {
    try {
      libc = Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
    } catch {
      libc = null; // not glibc: nothing to do
    }
  }
  return libc;
}

let trimming: Promise<unknown> | undefined;

/** glibc's malloc_trim, off the loop; one at a time (a trim asked for meanwhile is dropped). */
function trimHeaps(): void {
  const lib = glibc();
  if (!lib || trimming) return;
  trimming = lib.symbols.malloc_trim(0n).catch(() => {}).finally(() => trimming = undefined);
}

type Collect = (options?: { type: "minor" | "major"; execution?: "sync" }) => void;
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
/** Output bytes passed through since the timer was armed. */
let passedSinceArm = 0;
/**
 * Output at this rate per QUIET_MS is work that pushes the collection back (it would stall the
 * flow); a trickle (a job logging now and then) is not, or the worker would never trim.
 */
const BUSY_BYTES = 1024 * 1024;

/**
 * Unary calls in progress. The quiet time counts from the last call's end, so a call that waits
 * long (a create whose record the disk takes half a second to sync) would otherwise meet the
 * collection in its middle: measured in bench/starts.ts's sequential starts, twice in 600 on this
 * host, a start whose durable phase took 380-480 ms got the collection's two mark-compacts (50-70
 * ms of loop) on top. While calls are in progress the collection waits, for at most holdMs since
 * the count last rose from 0 (a call whose end were never reported must not stop the trims for
 * good, however busy the worker stays). Streams do not count: a client may follow a job, or watch
 * the health service, for hours.
 */
let callsInProgress = 0;
/** When callsInProgress last rose from 0. */
let heldSince = 0;
let holdMs = 30_000;

/** A unary call began: no quiet-time collection until it ends (callEnded), at most holdMs. */
export function callStarted(): void {
  if (callsInProgress++ === 0) heldSince = performance.now();
}

/** A unary call ended: its end counts as work (trimSoon). */
export function callEnded(): void {
  if (callsInProgress === 0) log.debug("memory trim: a call ended that was not counted as started");
  else callsInProgress--;
  trimSoon();
}

/** For tests: how long calls in progress may hold the collection back. */
export function setCallHoldMs(ms: number): void {
  holdMs = ms;
}

let collections = 0;

/** How many quiet-time collections ran (for tests). */
export function quietCollections(): number {
  return collections;
}

/** A full collection, glibc's heaps trimmed now and again once its finalizers have run. */
function collectAndTrim(): void {
  collector()?.({ type: "major" });
  trimHeaps();
  const sweep = setTimeout(trimHeaps, SWEEP_DELAY_MS);
  Deno.unrefTimer(sweep as unknown as number);
}

function trimNow(): void {
  collections++;
  collectAndTrim();
}

function arm(delayMs: number): void {
  passedSinceArm = 0;
  timer = setTimeout(() => {
    if (passedSinceArm >= BUSY_BYTES) lastWork = performance.now();
    const quietFor = performance.now() - lastWork;
    if (quietFor < QUIET_MS) return arm(QUIET_MS - quietFor);
    if (callsInProgress > 0 && performance.now() - heldSince < holdMs) return arm(QUIET_MS);
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

/** Bytes of job output ingested or streamed since the last check of the worker's memory. */
let passed = 0;
/** Bytes of job output ingested (captured from jobs) since the last check. */
let ingested = 0;
/** How much output may pass through between two checks of the worker's memory. */
const CHECK_EVERY_BYTES = 32 * 1024 * 1024;
/** RSS growth, over the lowest RSS seen at a check since the last collection, that forces one. */
const COLLECT_AFTER_GROWTH = 24 * 1024 * 1024;
let lowestRss = Infinity;

/**
 * Counts `bytes` of job output ingested (captured from a job). Every 32 MiB of output ingested
 * glibc's heaps are trimmed off the loop (glibc keeps the space freed buffers leave
 * between longer-lived allocations), and when the worker's RSS grew by 24 MiB since the lowest it
 * was at such a check and output was ingested since the last check, a collection frees the dead
 * buffers V8 lets pile up in its old generation (stalled readers' frames while jobs write).
 * 5 jobs writing 200 MiB with 50 stalled readers peaked at +113..+386 MiB over idle with neither,
 * +90..+102 MiB with a collection and a trim every 32 MiB; 200 jobs writing 33-byte lines as fast
 * as they could paid 20-60 ms of loop every 32 MiB for that collection. With the growth rule (the
 * hostile test's 50 stalled readers, one run each): +128 MiB peak at 16 MiB of growth, +108 at 24,
 * +155..+174 at 48; bench/latency_probe.ts's run with 200 writers then forced 3 collections at
 * 24 MiB, 10 at 16.
 *
 * Tried and undone (2026-12): during that storm V8 holds a steady ~20 MiB (heap used + external)
 * while RSS wanders 124-156 MiB, so the RSS rule still forces a double mark-compact every 4-5 s.
 * Triggering on V8's growth instead removed those, but line latency p99 did not improve and likely
 * got worse (bench row, interleaved: old 6.4, 6.3, 39.0 ms; new 42.5, 44.2, 11.6 ms; the latency
 * probe: old 11.5, 4.6, 5.3, 13.3 ms; new 9.8, 84.9, 20.5, 30.0 ms): without them V8's young
 * generation grew (1,250 scavenges of 1.5 ms on average instead of 6,456 of 0.5 ms) and its own
 * incremental marking took steps of up to 36 ms. Cap the young generation before trying again.
 */
export function passedThrough(bytes: number): void {
  ingested += bytes;
  counted(bytes);
}

/**
 * Counts `bytes` of job output streamed to a client: they push the quiet-time collection and trim
 * back as ingested bytes do, but neither force a collection nor pace the trims by themselves.
 *
 * Why no trim every 32 MiB streamed (t58, 2026-12, perf on the AMD EPYC VM): each malloc_trim's
 * madvise was 7.4% of the worker's CPU while streaming an ended job (cross-core TLB flushes), and
 * most of the main thread's page faults (10.8%) were that memory faulted straight back in. Without
 * those trims, 256 MiB of an ended job, interleaved with the old code: worker CPU 6.8-10.4 ->
 * 4.5-6.9 s/GiB, grpcio 64-169 -> 117-223 MiB/s; RSS peak while streaming 146-149 -> 154-159 MiB,
 * 117 -> 121-122 MiB 1.5 s later (the stream's end still trims once the worker is quiet).
 *
 * Why: streaming an ended job's output to many clients makes RSS wander by more than the growth
 * rule allows while V8 already collects on its own (an incremental mark-compact every 100-150 ms,
 * driven by the ArrayBuffers each frame takes). 50 clients of one 128 MiB job (issue 8's bench
 * row, 6.25 GiB) forced 114 full collections, 3.3 s of loop in all, and after each V8 sized its
 * heap down again: the worker's CPU for the row fell from 22.6 to 17.6 s without them (20.5 to
 * 15.4 s with a connection each). A job that writes while clients stall still forces them, through
 * its ingested bytes (tests/hostile_test.ts's 50 stalled readers).
 */
export function streamedOut(bytes: number): void {
  passedSinceArm += bytes;
}

/** Connections ended before their handshake since the last check of the worker's memory. */
let unservedSinceCheck = 0;
/** How many such connections may end between two checks. */
const CHECK_EVERY_UNSERVED = 256;
let lowestRssAtUnserved = Infinity;

/**
 * A connection ended before its TLS handshake completed (refused by the connection guard, closed
 * by its client, failed, or dropped by the handshake deadline): work (trimSoon), and every 256 of
 * them a check of the worker's RSS, which forces a collection once it grew by 24 MiB over the
 * lowest seen at such a check since the last one. The new lowest is taken at the next check, which
 * may come before the collection's finalizers have run and so sit a few MiB high.
 *
 * Why: such a connection leaves its TLS state in native memory owned by small JavaScript objects,
 * freed only when V8 collects them, and V8, seeing only those small objects, collects late; while
 * connections keep coming the quiet-time collection never runs. One client making certificate-less
 * TLS connections as fast as it could (550-730 a second, Deno 2.8.3, 2 CPUs) took the worker from
 * 105 to 340-360 MiB of RSS within 30-45 s, all of it freed once it stopped. Served connections are
 * not counted: what a collection could free of them the quiet-time collection frees, and what it
 * cannot (Deno's never-freed HTTP/2 session, about 21 KiB each) would force a useless collection
 * every 1,100 or so.
 */
export function endedBeforeHandshake(): void {
  trimSoon();
  if (++unservedSinceCheck < CHECK_EVERY_UNSERVED) return;
  unservedSinceCheck = 0;
  const rss = Deno.memoryUsage().rss;
  lowestRssAtUnserved = Math.min(lowestRssAtUnserved, rss);
  if (rss - lowestRssAtUnserved <= COLLECT_AFTER_GROWTH) return;
  collectAndTrim();
  lowestRssAtUnserved = Infinity;
}

function counted(bytes: number): void {
  passedSinceArm += bytes;
  passed += bytes;
  if (passed < CHECK_EVERY_BYTES) return;
  passed = 0;
  const rss = Deno.memoryUsage().rss;
  lowestRss = Math.min(lowestRss, rss);
  if (ingested > 0 && rss - lowestRss > COLLECT_AFTER_GROWTH) {
    collector()?.({ type: "major" });
    lowestRss = Infinity;
  }
  ingested = 0;
  trimHeaps();
  trimSoon();
}
