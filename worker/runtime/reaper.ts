/**
 * Reaps the job processes the shim started (Deno reaps only children it spawned itself): on
 * SIGCHLD, and on a slow timer as a safety net, each watched pid is waited for with WNOHANG.
 */
import type { Shim, WaitStatus } from "../../init/shim/ffi.ts";
import { log } from "../log/logger.ts";

export class Reaper {
  readonly #watched = new Map<number, (status: WaitStatus) => void>();
  readonly #onSignal = () => this.poll();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly shim: Shim) {}

  start(): void {
    Deno.addSignalListener("SIGCHLD", this.#onSignal);
    const timer = setInterval(() => this.poll(), 1000);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  stop(): void {
    Deno.removeSignalListener("SIGCHLD", this.#onSignal);
    clearInterval(this.#timer);
  }

  /** Resolves with the wait status once `pid` has ended. */
  watch(pid: number): Promise<WaitStatus> {
    const { promise, resolve } = Promise.withResolvers<WaitStatus>();
    this.#watched.set(pid, resolve);
    queueMicrotask(() => this.poll());
    return promise;
  }

  poll(): void {
    for (const [pid, resolve] of this.#watched) {
      let status: WaitStatus | null;
      try {
        status = this.shim.waitpid(pid);
      } catch (e) {
        log.error("waitpid failed", { pid, error: String(e) });
        status = { exitCode: null, signal: 9 };
      }
      if (status !== null) {
        this.#watched.delete(pid);
        resolve(status);
      }
    }
  }
}
