/**
 * A job's output pipe as the worker reads it: registered one-shot in the output pump's epoll set
 * (output_pump.ts), every read landing in ONE buffer shared by all pipes and handed to the job's
 * sink before the next read can happen.
 *
 * Why one buffer: read the ordinary way, each read of up to 64 KiB allocated a fresh ArrayBuffer
 * that lived until V8 collected it; with many jobs writing at full speed that garbage was most of
 * what the worker's memory grew by, and the collections it brought were the long loop turns that
 * delay a quiet job's line behind a storm (issue 8). Every sink consumes (or copies) its bytes
 * before it returns: the job's sink (job_output.ts) appends them to the job's log with a
 * synchronous write, so nothing is allocated per read, and an idle job costs no buffer at all.
 *
 * @module
 */
import { ShimError } from "../../init/shim/ffi.ts";
import type { AfterRead, OutputPump, PumpedFd } from "./output_pump.ts";

/**
 * Bytes one read may take from a pipe. A job's pipe holds up to 1 MiB (init_process.ts), and
 * fewer, larger reads mean fewer events and appends per byte. Shared, so its size costs once.
 */
const READ_BYTES = 256 * 1024;
/**
 * Reads one event may make while each fills the buffer (a pipe holds up to 1 MiB): a job writing at
 * full speed is read in turns of up to 1 MiB, not one read per wait of the pump.
 */
const READS_PER_EVENT = 4;

/**
 * How long a pipe rests after a read before it is armed again, at most: long enough that a job
 * writing in small pieces has its output read in batches rather than one read per write. 200 jobs
 * each echoing lines in a loop cost the worker, reading each write as it came, 108,000 reads a
 * second and epoll's work on every write besides (92% of a core), which left a quiet job's line
 * waiting behind them (issue 8). The rest is counted from the pipe's last arming, so a job writing
 * now and then is read as soon as it writes, as long as its writes come PACE_MS apart (issue 8's
 * ticker: every 10 ms).
 */
const PACE_MS = 5;
/**
 * Within PACE_MS, the rest lasts as long as the job, at the rate its last read showed, takes to
 * write this much: a fast writer is read again before its pipe (1 MiB) can fill and stop it.
 */
const REST_FILL_BYTES = READ_BYTES / 2;

/** How long a pipe whose read of `n` bytes came `sinceMs` after its previous read rests. */
export function restAfterRead(n: number, sinceMs: number): number {
  const rest = Math.min(PACE_MS, (REST_FILL_BYTES * sinceMs) / n);
  return rest < 1 ? 0 : rest; // timers are no finer
}

/** Receives a read's bytes; they are valid only until it returns (the buffer is reused). */
export type OutputSink = (bytes: Uint8Array) => void;

/** Where a job's two pipes deliver their reads. */
export interface OutputSinks {
  stdout: OutputSink;
  stderr: OutputSink;
}

/** The read end of a job's output pipe, read by the pump into its sink. */
export interface OutputPipe {
  /** Settles once the pipe reached its end or was destroyed (its descriptor then closed). */
  readonly closed: Promise<{ error?: string }>;
  /** Stops reading: what is not read yet stays in the pipe (a reload hands it over). */
  pause(): void;
  resume(): void;
  /** Stops reading and closes the descriptor; the rest of the pipe's bytes are not read. */
  destroy(): void;
  /**
   * True while a write end is open somewhere (or it cannot be told); false once none is, or once
   * closed. Used after a job's processes are all gone, to tell a worker that is merely behind in
   * reading (no writers: end of file is certain) from a writer that escaped the job (a descriptor
   * passed to a process outside it); the caller bounds its wait.
   */
  hasWriters(): boolean;
  /**
   * The pipe's descriptor while it is open (a reload hands it to the new process); -1 once it
   * ended or was destroyed (its descriptor is closed, its number may be another's by now).
   */
  readonly handedFd: number;
}

const EAGAIN = 11;

/** Shared by the pipes of every pump: each read is consumed before the next one can happen. */
let shared: Uint8Array<ArrayBuffer> | undefined;

/**
 * Starts reading the read end `fd` of a job's output pipe in `pump`: every read goes to `sink`, in
 * order, from the first (bytes written before the open wait in the pipe). The pipe takes `fd` over:
 * it is closed at the pipe's end or destroy(), or here if it cannot be watched (which throws).
 */
export function openOutputPipe(pump: OutputPump, fd: number, sink: OutputSink): OutputPipe {
  shared ??= new Uint8Array(READ_BYTES);
  const { shim } = pump;
  const buffer = shared;
  let resolveClosed!: (end: { error?: string }) => void;
  const closed = new Promise<{ error?: string }>((resolve) => resolveClosed = resolve);
  let open = true;
  let lastRead = performance.now();
  // Called only from the pump's calls or destroy(), after `handle` is set.
  const end = (error?: string) => {
    if (!open) return;
    open = false;
    try {
      handle.remove();
    } finally {
      try {
        shim.close(fd);
      } catch { /* closed */ }
      resolveClosed(error === undefined ? {} : { error });
    }
  };
  const read = (): AfterRead => {
    let total = 0;
    for (let reads = 0; reads < READS_PER_EVENT && open; reads++) {
      const n = shim.readInto(fd, buffer);
      if (n === -EAGAIN) break;
      if (n <= 0) {
        end(n === 0 ? undefined : `read failed: errno ${-n}`);
        return "end";
      }
      sink(buffer.subarray(0, n));
      total += n;
      if (n < READ_BYTES) break; // emptied, most likely
    }
    if (!open) return "end";
    if (total === 0) return 0;
    const now = performance.now();
    const rest = restAfterRead(total, now - lastRead);
    lastRead = now;
    return rest;
  };
  let handle: PumpedFd;
  try {
    handle = pump.add(fd, { ready: read, failed: (error) => end(error) });
  } catch (e) {
    try {
      shim.close(fd);
    } catch { /* closed */ }
    throw e;
  }
  return {
    closed,
    get handedFd() {
      return open ? fd : -1;
    },
    pause: () => open && handle.pause(),
    resume: () => open && handle.resume(),
    destroy: () => end(),
    hasWriters: () => {
      if (!open) return false;
      try {
        return shim.pipeHasWriters(fd);
      } catch (e) {
        if (e instanceof ShimError) return true; // poll failed: cannot be told
        throw e;
      }
    },
  };
}

/** A pipe that had ended before it was handed over (a reload): nothing to read. */
export function endedOutputPipe(): OutputPipe {
  return {
    closed: Promise.resolve({}),
    handedFd: -1,
    pause: () => {},
    resume: () => {},
    destroy: () => {},
    hasWriters: () => false,
  };
}
