/**
 * Gives freed native memory back to the system. The bytes a connection queued (TLS records, HTTP/2
 * frames) and the buffers job output is read into live in native memory; glibc keeps what they
 * free in its heaps, so a worker that served a burst of slow clients stayed hundreds of MiB larger
 * after they left (measured on Deno 2.8.3: 447 MiB after a stalled reader disconnected, 117 MiB
 * after malloc_trim).
 */
import v8 from "node:v8";
import vm from "node:vm";

type Libc = Deno.DynamicLibrary<{
  malloc_trim: { parameters: ["usize"]; result: "i32" };
  mallopt: { parameters: ["i32", "i32"]; result: "i32" };
}>;

/** glibc's mallopt parameter for the size from which allocations get their own mapping. */
const M_MMAP_THRESHOLD = -3;
/**
 * Every pipe read of job output is a 64 KiB native buffer that lives until V8 collects it. Below
 * glibc's (self-raising) mmap threshold these come from the heap, which they fragment and keep:
 * 5 jobs writing 200 MiB each at once grew the worker by 204 MiB, kept after they ended. From
 * their own mappings they go back to the system when freed: +90 MiB peak, +76 MiB after.
 */
const MMAP_THRESHOLD_BYTES = 64 * 1024;

let libc: Libc | null | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;

/**
 * V8's collector, asked for directly. The output buffers that pass through the worker are garbage
 * at once, but V8 counts them little when it decides to collect, and an idle worker allocates
 * nothing, so it never collects: 5 jobs that wrote 200 MiB each left the worker 91 MiB larger,
 * until the next unrelated burst of work.
 */
type Collect = (options?: { type: "minor" | "major"; execution?: "sync" }) => void;
let collect: Collect | null | undefined;

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

/** Bytes of short-lived buffers since the last young-generation collection. */
let transient = 0;
/** How much short-lived buffer memory may wait for the collector. */
const TRANSIENT_BYTES = 32 * 1024 * 1024;

/**
 * Counts `bytes` of buffers that are garbage once handled (job output read from pipes, messages
 * sent); every 32 MiB a young-generation collection (a millisecond or so) frees them, and a full
 * collection and trim follow once things are quiet.
 */
export function passedThrough(bytes: number): void {
  transient += bytes;
  if (transient < TRANSIENT_BYTES) return;
  transient = 0;
  collector()?.({ type: "minor" });
  trimSoon();
}

function glibc(): Libc | null {
  if (libc === undefined) {
    try {
      libc = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
        mallopt: { parameters: ["i32", "i32"], result: "i32" },
      });
    } catch {
      libc = null; // not glibc: nothing to do
    }
  }
  return libc;
}

/** Native memory freed by the collection's finalizers (sessions, sockets) is swept after it. */
const SWEEP_DELAY_MS = 500;

function trimNow(): void {
  collector()?.({ type: "major" });
  glibc()?.symbols.malloc_trim(0n);
  const sweep = setTimeout(() => glibc()?.symbols.malloc_trim(0n), SWEEP_DELAY_MS);
  Deno.unrefTimer(sweep as unknown as number);
}

/**
 * Makes large native buffers (64 KiB and more: job output reads, stream messages) separate
 * mappings, returned to the system when freed instead of kept in glibc's heaps. Call once at start.
 */
export function returnLargeBuffers(): boolean {
  return glibc()?.symbols.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) === 1;
}

/** Trims `delayMs` from now (calls meanwhile share one trim). */
export function trimSoon(delayMs = 1000): void {
  if (timer !== undefined) return;
  timer = setTimeout(() => {
    timer = undefined;
    trimNow();
  }, delayMs);
  Deno.unrefTimer(timer as unknown as number);
}
