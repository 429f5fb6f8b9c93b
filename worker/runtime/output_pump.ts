/**
 * The output pump: one epoll set of the shim's (jw_pump_*) holding every job's output pipes, each
 * registered one-shot. Descriptors ready already are taken on the loop's thread (a zero-timeout
 * wait); otherwise one wait at a time blocks on Deno's blocking pool.
 *
 * Why not node:net sockets (what the pipes were before 2026-12): a socket's pipe stays in Deno's
 * own epoll set, and Linux wakes an epoll waiter on every write into a polled pipe, whether the
 * pipe was empty or not. 200 jobs echoing lines in a loop then kept the worker's loop thread in
 * epoll_wait at 85-92% of a core, reading or not (pausing the sockets cut reads from 108,000 to
 * 1,200 a second and left the CPU where it was), and a quiet job's line waited behind that. One-shot,
 * a pipe raises one event and then none until it is armed again: the pump decides how often it
 * looks at each pipe (output_pipe.ts rests the pipes of jobs writing in small pieces).
 *
 * @module
 */
import type { Shim } from "../../init/shim/ffi.ts";
import { setImmediate } from "node:timers";
import { log } from "../log/logger.ts";

/** What a descriptor's reader says after an event: arm it again in this many ms (0: now), or it ended. */
export type AfterRead = number | "end";

/** How the pump calls a descriptor's reader. */
export interface PumpReader {
  /** Reads what the event announced. */
  ready(): AfterRead;
  /** The descriptor cannot be watched any more (its events are lost): end it. */
  failed(error: string): void;
}

/** A descriptor in the pump. */
export interface PumpedFd {
  /** No more events until resume() (a pending re-arm is dropped). */
  pause(): void;
  resume(): void;
  /** Leaves the epoll set (call before closing the descriptor). */
  remove(): void;
}

/** Events taken from the kernel per wait. */
const BATCH = 64;
/**
 * After how long a batch starts no further read and puts the rest back (armed again, unread): up to 64
 * events of up to 1 MiB each would otherwise be one long turn of the loop that a quiet job's line
 * and every call wait behind.
 */
const BATCH_BUDGET_MS = 4;
/** How long a descriptor whose reader threw rests (it is tried again, not read in a tight loop). */
const FAILED_READ_REST_MS = 100;

interface Entry {
  fd: number;
  reader: PumpReader;
  state: "armed" | "due" | "idle" | "removed";
  paused: boolean;
  /** When it was last armed (performance.now()). */
  armedAt: number;
  /** When a due entry is to be armed. */
  dueAt: number;
}

export class OutputPump {
  readonly #epfd: number;
  readonly #entries = new Map<number, Entry>();
  readonly #ready = new Int32Array(BATCH);
  /** A pipe whose write end ends a wait when the last descriptor left (nothing then is waited on). */
  readonly #wake: [number, number];
  /** A byte is in the wake pipe (at most one is ever written: the write cannot block). */
  #wakePending = false;
  /** A batch is being waited for (or was taken and awaits its dispatch). */
  #waiting = false;
  /** The wait is in the kernel, on the blocking pool. */
  #blocked = false;
  #due: Entry[] = [];
  #dueTimer: ReturnType<typeof setTimeout> | undefined;
  #dueTimerAt = Infinity;

  /**
   * Made once where the worker is assembled (serve.ts) and handed to whatever opens output pipes
   * (the Launcher, a reload's adoption of handed-over jobs); its descriptors (the epoll set, the
   * wake pipe) stay open for the process's life. `shim` also reads and closes its pipes
   * (output_pipe.ts).
   */
  constructor(readonly shim: Shim) {
    this.#epfd = shim.pumpCreate();
    const [readEnd, writeEnd] = shim.pipe();
    this.#wake = [readEnd, writeEnd];
    shim.pumpArm(this.#epfd, readEnd, true);
  }

  /** Registers `fd` (armed at once: throws when it cannot be); `reader` runs at its events. */
  add(fd: number, reader: PumpReader): PumpedFd {
    this.shim.pumpArm(this.#epfd, fd, true);
    const entry: Entry = {
      fd,
      reader,
      state: "armed",
      paused: false,
      armedAt: performance.now(),
      dueAt: 0,
    };
    this.#entries.set(fd, entry);
    this.#run();
    return {
      pause: () => {
        entry.paused = true;
      },
      resume: () => {
        if (!entry.paused) return;
        entry.paused = false;
        if (entry.state === "idle") this.#arm(entry);
      },
      remove: () => this.#remove(entry),
    };
  }

  #arm(entry: Entry): void {
    if (entry.state === "removed") return;
    try {
      this.shim.pumpArm(this.#epfd, entry.fd, false);
      entry.state = "armed";
      entry.armedAt = performance.now();
    } catch (e) {
      // Never armed again, it would never be read to its end: its reader ends it.
      entry.state = "idle";
      entry.reader.failed(`cannot watch the pipe: ${e instanceof Error ? e.message : e}`);
    }
  }

  #remove(entry: Entry): void {
    if (entry.state === "removed") return;
    entry.state = "removed";
    if (this.#entries.get(entry.fd) === entry) this.#entries.delete(entry.fd);
    try {
      this.shim.pumpRemove(this.#epfd, entry.fd);
    } catch { /* not registered */ }
    if (this.#entries.size === 0 && this.#blocked && !this.#wakePending) {
      try {
        this.shim.writeAll(this.#wake[1], new Uint8Array(1));
        this.#wakePending = true;
      } catch (e) {
        log.error("the output pump's wake pipe failed", { error: String(e) });
      }
    }
  }

  /**
   * Keeps one wait in flight while any descriptor is registered. Descriptors ready already are
   * taken on this thread and dispatched at the loop's next turn: a wait on the blocking pool costs
   * a hop to another thread and back (a job writing at full speed, streamed live to a client, read
   * 15% slower when every batch took that hop: 195-220 MiB/s against 224-263 through node:net).
   */
  #run(): void {
    if (this.#waiting || this.#entries.size === 0) return;
    this.#waiting = true;
    let ready = 0;
    try {
      ready = this.shim.pumpPoll(this.#epfd, this.#ready);
    } catch { /* waited for below, where a failure is reported */ }
    if (ready > 0) {
      setImmediate(() => this.#dispatched(ready));
      return;
    }
    this.#blocked = true;
    this.shim.pumpWait(this.#epfd, this.#ready, -1).then(
      (n) => {
        this.#blocked = false;
        this.#dispatched(n);
      },
      (e) => {
        this.#blocked = false;
        this.#waiting = false;
        log.error("the output pump's wait failed", { error: String(e) });
        setTimeout(() => this.#run(), 100);
      },
    );
  }

  #dispatched(n: number): void {
    try {
      this.#dispatch(n);
    } finally {
      this.#waiting = false; // only now: #ready is read up to here
      this.#run();
    }
  }

  #dispatch(n: number): void {
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      const fd = this.#ready[i]!;
      if (fd === this.#wake[0]) {
        this.#drainWake();
        continue;
      }
      const entry = this.#entries.get(fd);
      if (entry === undefined || entry.state !== "armed") continue;
      entry.state = "idle";
      if (entry.paused) continue;
      try {
        this.#serve(entry, performance.now() - start > BATCH_BUDGET_MS);
      } catch (e) {
        log.error("the output pump failed on a pipe", { fd, error: String(e) });
      }
    }
  }

  /** Reads `entry` (unless `late`: then it is only armed again, still ready) and re-arms it. */
  #serve(entry: Entry, late: boolean): void {
    if (late) {
      this.#arm(entry); // its event comes again with the next wait
      return;
    }
    let after: AfterRead;
    try {
      after = entry.reader.ready();
    } catch (e) {
      log.error("a job's output pipe could not be read", { fd: entry.fd, error: String(e) });
      after = FAILED_READ_REST_MS;
    }
    if (after === "end" || entry.state !== "idle" || entry.paused) return;
    const dueAt = entry.armedAt + after;
    if (dueAt <= performance.now()) this.#arm(entry);
    else this.#defer(entry, dueAt);
  }

  #drainWake(): void {
    try {
      const byte = new Uint8Array(64);
      while (this.shim.readInto(this.#wake[0], byte) > 0) { /* emptied */ }
      this.#wakePending = false;
      this.shim.pumpArm(this.#epfd, this.#wake[0], false);
    } catch (e) {
      log.error("the output pump's wake pipe failed", { error: String(e) });
    }
  }

  /** Arms `entry` at `dueAt`: one timer, set for the earliest, serves every deferred descriptor. */
  #defer(entry: Entry, dueAt: number): void {
    entry.state = "due";
    entry.dueAt = dueAt;
    this.#due.push(entry);
    if (dueAt < this.#dueTimerAt) this.#setDueTimer(dueAt);
  }

  #setDueTimer(at: number): void {
    clearTimeout(this.#dueTimer);
    this.#dueTimerAt = at;
    this.#dueTimer = setTimeout(() => this.#armDue(), Math.max(0, at - performance.now()));
  }

  #armDue(): void {
    this.#dueTimer = undefined;
    this.#dueTimerAt = Infinity;
    const now = performance.now() + 0.5;
    let next = Infinity;
    const later: Entry[] = [];
    for (const entry of this.#due) {
      if (entry.state !== "due") continue;
      if (entry.paused) {
        entry.state = "idle";
      } else if (entry.dueAt <= now) {
        this.#arm(entry);
      } else {
        later.push(entry);
        next = Math.min(next, entry.dueAt);
      }
    }
    this.#due = later;
    if (later.length > 0) this.#setDueTimer(next);
  }
}
