/**
 * One `jobworker init` cloned through the shim, before it is told which job to become: its pipes
 * (output, spec, status, init's own stderr) and pidfd. The Launcher clones one when a job starts;
 * the InitPool clones them ahead of demand (`pooled`). Either way the Launcher hands it a job by
 * writing the spec (see init/spec.ts for the handshake).
 */
import type net from "node:net";
import { pipeSocket } from "./pipe_socket.ts";
import type { Shim } from "../../init/shim/ffi.ts";
import { initArgs, type InitFailure, POOL_READY } from "../../init/spec.ts";
import type { SelfCommand } from "./self_exec.ts";

/** Large pipe buffers let a job write bursts without waiting for the worker. */
export const OUTPUT_PIPE_SIZE = 1024 * 1024;
/** The spec is written at once, without waiting for init, so it must fit in the pipe. */
export const MAX_SPEC_BYTES = 1024 * 1024;

/**
 * The most a status pipe's text may be: a report is a few hundred bytes (a pooled init's readiness
 * mark, then one InitFailure, jwstart's or jwinit's report). Beyond it the worker stops reading.
 */
export const MAX_STATUS_BYTES = 64 * 1024;

/**
 * The most of init's own stderr (Deno's warnings, a crash's message) the worker keeps: a few
 * hundred bytes normally; an init that spews is read on, but only this much of it is kept.
 */
export const MAX_INIT_LOG_BYTES = 64 * 1024;

/**
 * Everything a pipe's read end delivers, collected as text until its end, up to `maxBytes`. Past
 * it ({@link overflowed}), `onOverflow` says what happens: "close" closes the pipe (a writer gets
 * EPIPE) and the text ends there; "drain" keeps reading to the end, discarding the rest.
 */
export class PipeText {
  #text = "";
  #bytes = 0;
  #overflowed = false;
  readonly #decoder = new TextDecoder();
  readonly #socket: net.Socket;
  readonly #firstData = Promise.withResolvers<void>();
  /** Resolves with all the text once every writer has closed the pipe (or it overflowed). */
  readonly closed: Promise<string>;

  constructor(
    fd: number,
    readonly maxBytes = Infinity,
    readonly onOverflow: "close" | "drain" = "close",
  ) {
    this.#socket = pipeSocket({ fd, readable: true, writable: false });
    const { promise, resolve } = Promise.withResolvers<string>();
    this.closed = promise;
    this.#socket.on("data", (chunk: Uint8Array) => {
      const kept = this.#bytes;
      this.#bytes += chunk.length;
      if (this.#overflowed) return;
      if (this.#bytes > this.maxBytes) {
        this.#overflowed = true;
        if (this.onOverflow === "close") {
          this.#socket.destroy();
          return;
        }
        chunk = chunk.subarray(0, this.maxBytes - kept);
      }
      this.#text += this.#decoder.decode(chunk, { stream: true });
      this.#firstData.resolve();
    });
    this.#socket.on("error", () => {});
    this.#socket.on("close", () => {
      this.#text += this.#decoder.decode();
      this.#firstData.resolve();
      resolve(this.#text);
    });
  }

  /** Resolves at the first bytes (or the end). */
  get firstData(): Promise<void> {
    return this.#firstData.promise;
  }

  get text(): string {
    return this.#text;
  }

  /** Whether more than `maxBytes` came (and, with "close", the pipe was closed for it). */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** How many bytes came (so far; with "close", until it closed the pipe). */
  get bytes(): number {
    return this.#bytes;
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

export interface InitProcess {
  pid: number;
  pidfd: number;
  pooled: boolean;
  /** It joins a cgroup of its own once started (a pool slot): its job's spec lists none to join. */
  slotted: boolean;
  /** The write end of the spec pipe (init's fd 3); closed once the spec is written. */
  specW: number;
  specCapacity: number;
  /** Read ends of the job's stdout and stderr. */
  outR: number;
  errR: number;
  /**
   * init's status pipe: empty at a successful exec, else an InitFailure (after POOL_READY), or the
   * minimal init's report of its command's exec (init/job_steps.ts MinimalInitReport).
   */
  status: PipeText;
  /** init's own stderr (Deno's warnings and crashes): {@link initLogPipe}. */
  initLog: PipeText;
}

/**
 * The reader of init's own stderr: the first {@link MAX_INIT_LOG_BYTES} kept, the rest read and
 * discarded until every writer closed it. Drained rather than closed past the cap (as the status
 * pipe is): init is Deno, whose writes to a closed stderr fail (EPIPE; Rust's eprint panics on
 * it), so closing it would turn a chatty init into a failed start or a dead pool member; and
 * `closed` keeps meaning that init is done with it (the launcher waits for that at a start).
 * A pipe left unread would block init at its next write once full.
 */
export function initLogPipe(fd: number): PipeText {
  return new PipeText(fd, MAX_INIT_LOG_BYTES, "drain");
}

/**
 * init's stderr as read (trimmed), at most `maxChars` of it, saying so when it was cut there or at
 * {@link MAX_INIT_LOG_BYTES}.
 */
export function initLogText(initLog: PipeText, text = initLog.text, maxChars = Infinity): string {
  const trimmed = text.trim();
  if (!initLog.overflowed && trimmed.length <= maxChars) return trimmed;
  return `${trimmed.slice(0, maxChars)}... [cut: init wrote ${initLog.bytes} bytes to its stderr]`;
}

/**
 * Pipes for one clone, each end listed in `open` (to be closed again if the clone fails):
 * `pipe(size)` gives [readEnd, writeEnd, bufferBytes].
 */
export function pipeMaker(shim: Shim): {
  open: number[];
  pipe(size?: number): readonly [number, number, number];
} {
  const open: number[] = [];
  return {
    open,
    pipe(size = 0) {
      const [r, w, capacity] = shim.pipe(size);
      open.push(r, w);
      return [r, w, capacity] as const;
    },
  };
}

/**
 * Clones `jobworker init` into new PID, mount, IPC and UTS namespaces (and network, with
 * `newNetwork`; a pooled init makes that itself once it knows the job wants one). `slotFds`: a pool
 * slot's cgroup.procs files, open for writing, which the init joins once started (the caller
 * closes its own copies).
 * Throws ShimError when the process cannot be created at all; nothing is left open then.
 */
export function spawnInit(
  shim: Shim,
  self: SelfCommand,
  options: { pooled: boolean; newNetwork: boolean; slotFds?: readonly number[] },
): InitProcess {
  const slotFds = options.slotFds ?? [];
  const { open, pipe } = pipeMaker(shim);
  try {
    const [outR, outW] = pipe(OUTPUT_PIPE_SIZE);
    const [errR, errW] = pipe(OUTPUT_PIPE_SIZE);
    const [specR, specW, specCapacity] = pipe(MAX_SPEC_BYTES);
    const [statusR, statusW] = pipe();
    const [initLogR, initLogW] = pipe();
    // Layout: see init/spec.ts (negative = /dev/null).
    const { pid, pidfd } = shim.spawn(
      self.path,
      [...self.argv, ...initArgs(shim.path, options.pooled, slotFds.length)],
      self.env,
      [-1, -1, initLogW, specR, statusW, outW, errW, ...slotFds],
      options.newNetwork,
    );
    closeQuietly(shim, [outW, errW, specR, statusW, initLogW]);
    return {
      pid,
      pidfd,
      pooled: options.pooled,
      slotted: slotFds.length > 0,
      specW,
      specCapacity,
      outR,
      errR,
      status: new PipeText(statusR, MAX_STATUS_BYTES),
      initLog: initLogPipe(initLogR),
    };
  } catch (e) {
    closeQuietly(shim, open);
    throw e;
  }
}

/** The failure of a start whose status pipe sent more than {@link MAX_STATUS_BYTES}. */
export function statusOverflow(): InitFailure {
  return {
    stage: "spawn",
    errno: 0,
    message: `the job's start sent more than ${MAX_STATUS_BYTES} bytes on its status pipe ` +
      "(a report is a few hundred); the worker stopped reading it",
  };
}

/** The status pipe's text without the pooled init's readiness mark. */
export function statusText(init: InitProcess, text: string): string {
  return init.pooled && text.startsWith(POOL_READY) ? text.slice(POOL_READY.length) : text;
}

export function closeQuietly(shim: Shim, fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      shim.close(fd);
    } catch { /* already closed */ }
  }
}
