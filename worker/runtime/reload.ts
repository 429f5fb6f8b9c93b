/**
 * The worker's life between start and stop: SIGTERM or SIGINT stops it, SIGHUP reloads it in
 * place (see reexec.ts for the exec and the handover). serve.ts wires the parts and calls
 * {@link serveUntilStopped}; this module decides what a signal does.
 *
 * A stop always wins over a reload:
 * - a stop that arrives while a reload checks the new program or waits for jobs to settle
 *   abandons the reload (nothing was stopped yet), and the worker shuts down;
 * - from just before the server stops until the exec, stop signals are parked (blocked and
 *   pending, see jwshim.c): they cross the exec, and the new process shuts down as soon as it
 *   listens; if the exec fails they reach this process instead.
 *
 * Hooks for other parts of the worker: {@link ReloadOptions.beforeExec} runs once the reload is
 * decided, before anything is handed over, {@link ReloadOptions.lastCheck} right before the server
 * stops, and {@link ReloadOptions.afterNoReload} when a reload did not happen; the new process's
 * "after start" is simply serve.ts going on after {@link takeHandover} (marked there).
 */
import { log } from "../log/logger.ts";
import {
  checkNewProgram,
  execSelf,
  type HandedJob,
  type HandedRecord,
  type Handover,
  takeHandover,
  writeHandover,
} from "./reexec.ts";

export { takeHandover };

/** How long a reload waits for jobs that are starting or ending to settle. */
export const RELOAD_SETTLE_MS = 10_000;

/** How long parked stops get to reach JavaScript before the point of no return. */
const PARK_SETTLE_MS = 20;

/** What a reload needs of the jobs (the job manager). */
export interface ReloadableJobs {
  /**
   * Refuses creates and waits until every live job simply runs; false: gave up (undone), after
   * `ms` or when `abort` fires.
   */
  quiesce(ms: number, abort?: AbortSignal): Promise<boolean>;
  /** Stops reading the jobs' output and describes each running job. */
  handOver(): { jobs: HandedJob[]; unsaved: HandedRecord[] };
  /** The exec failed, or the reload was abandoned after quiesce: go on as before. */
  resumeAfterFailedHandover(): void;
}

/** The few system calls around the exec (the shim). */
export interface StopParking {
  parkStops(): void;
  /** Returns the parked signal, 0 if none. */
  unparkStops(): number;
  unblockStops(): void;
}

/**
 * Who asked for a reload: the operator (SIGHUP) or the worker recycling itself
 * (tls/session_recycle.ts). Only a reload that the recycler alone asked for may be called off.
 */
export type ReloadReason = "SIGHUP" | "recycle";

/** SIGTERM/SIGINT (stop) and SIGHUP (reload), listened for from the very start. */
export class ControlSignals {
  readonly #stop = Promise.withResolvers<string>();
  readonly #stopping = new AbortController();
  #stopSignal: string | undefined;
  #reload = Promise.withResolvers<void>();
  /** Why the next reload was asked for (not started yet). */
  #pending = new Set<ReloadReason>();
  /** Why the reload in progress was asked for: from {@link next} handing it out to the next call. */
  #current: Set<ReloadReason> | undefined;
  readonly #handlers: [Deno.Signal, () => void][];

  constructor() {
    const stop = (s: string) => () => {
      this.#stopSignal ??= s;
      this.#stop.resolve(s);
      this.#stopping.abort();
    };
    this.#handlers = [
      ["SIGTERM", stop("SIGTERM")],
      ["SIGINT", stop("SIGINT")],
      ["SIGHUP", () => this.requestReload("SIGHUP")],
    ];
    for (const [s, h] of this.#handlers) Deno.addSignalListener(s, h);
  }

  /** The stop signal received so far, if any. */
  get stopSignal(): string | undefined {
    return this.#stopSignal;
  }

  /**
   * Asks for a reload. A recycle asked for while a reload is in progress joins that one (which
   * replaces the process image all the same; if it does not happen, afterNoReload says so): it is
   * never queued to run after it, where it would be a second reload nobody checked for clients.
   * A SIGHUP during a reload is queued: the operator may have changed the program since.
   */
  requestReload(reason: ReloadReason): void {
    if (reason === "recycle" && this.#current !== undefined) {
      this.#current.add(reason);
      return;
    }
    this.#pending.add(reason);
    this.#reload.resolve();
  }

  /** True while the reload in progress was asked for by the recycler alone: it may be called off. */
  get recycleOnly(): boolean {
    const reasons = this.#current;
    return reasons !== undefined && reasons.size > 0 && [...reasons].every((r) => r === "recycle");
  }

  /** Fires at the first stop signal. */
  get stopping(): AbortSignal {
    return this.#stopping.signal;
  }

  /** The next event: a stop (its signal's name) or a reload request (undefined). */
  async next(): Promise<string | undefined> {
    this.#current = undefined;
    const event = await Promise.race([
      this.#stop.promise,
      this.#reload.promise.then(() => undefined),
    ]);
    if (event === undefined) {
      this.#reload = Promise.withResolvers<void>();
      this.#current = this.#pending;
      this.#pending = new Set();
    }
    return event;
  }

  close(): void {
    for (const [s, h] of this.#handlers) Deno.removeSignalListener(s, h);
  }
}

export interface ReloadOptions {
  stateDir: string;
  /** When this worker first started (kept across reloads). */
  startTime: Date;
  jobs: ReloadableJobs;
  parking: StopParking;
  signals: ControlSignals;
  /** The port served now (kept across the reload when the configured one is 0). */
  port(): number;
  /** Stops serving: calls in progress end with UNAVAILABLE, clients reconnect to the new process. */
  stopServing(): void;
  /**
   * Runs once the reload is decided (program checked, jobs settled), before the server stops and
   * anything is handed over: release what cannot cross the exec. Throwing abandons the reload.
   */
  beforeExec?: () => Promise<void>;
  /**
   * Runs synchronously right before the server stops, stop signals already parked: the last
   * moment to call the reload off (throw: nothing is stopped, jobs go on, afterNoReload runs).
   */
  lastCheck?: () => void;
  /** Runs when a reload did not happen (refused, abandoned, or the exec failed): undo beforeExec. */
  afterNoReload?: () => void;
}

export type ReloadOutcome =
  /** Nothing changed: the check failed, jobs did not settle, or a stop arrived first. */
  | "refused"
  /** The server had stopped when the exec failed: serve again. */
  | "exec-failed";

/**
 * SIGHUP: checks the program on disk, then execs it in place with the running jobs handed over.
 * On success it does not return.
 */
export async function reload(o: ReloadOptions): Promise<ReloadOutcome> {
  const stopped = () => {
    if (o.signals.stopSignal === undefined) return false;
    log.warn("reload abandoned: a stop signal arrived; shutting down instead", {
      signal: o.signals.stopSignal,
    });
    return true;
  };
  log.info("reload requested: checking the program and configuration");
  const problem = await checkNewProgram();
  if (problem !== null) {
    log.error("reload refused: the new program or configuration cannot start; nothing stopped", {
      problem,
    });
    return "refused";
  }
  if (stopped()) return "refused";
  log.info("reload: the new program checked out; waiting for jobs to settle");
  if (!await o.jobs.quiesce(RELOAD_SETTLE_MS, o.signals.stopping)) {
    if (stopped()) return "refused";
    log.error("reload refused: jobs kept starting or ending; nothing stopped");
    return "refused";
  }
  if (stopped()) {
    o.jobs.resumeAfterFailedHandover();
    return "refused";
  }
  try {
    await o.beforeExec?.();
  } catch (e) {
    log.error("reload refused: getting ready for the exec failed; nothing stopped", {
      error: e instanceof Error ? e.message : String(e),
    });
    o.jobs.resumeAfterFailedHandover();
    return "refused";
  }
  // From here a stop signal is parked for the new process. One Deno took just before is still on
  // its way to JavaScript: give it a moment to arrive, then look a last time.
  o.parking.parkStops();
  await new Promise((r) => setTimeout(r, PARK_SETTLE_MS));
  if (stopped()) {
    o.parking.unparkStops();
    o.jobs.resumeAfterFailedHandover();
    return "refused";
  }
  try {
    o.lastCheck?.();
  } catch (e) {
    log.info("reload called off; nothing stopped", {
      reason: e instanceof Error ? e.message : String(e),
    });
    o.parking.unparkStops();
    o.jobs.resumeAfterFailedHandover();
    return "refused";
  }
  // Nothing may wait between the last check and here: a client accepted meanwhile would be cut.
  const reloadTime = new Date();
  const path = `${o.stateDir}/handover.json`;
  let error: string;
  // Everything from here fails into the same path: were stopping the server or the handover to
  // throw past it, stop signals would stay parked and the jobs' output paused.
  try {
    o.stopServing();
    const { jobs, unsaved } = o.jobs.handOver();
    const handover: Handover = {
      startTime: o.startTime.toISOString(),
      reloadTime: reloadTime.toISOString(),
      port: o.port(),
      jobs,
      unsaved,
    };
    writeHandover(path, handover);
    log.info("reloading: exec'ing the program in place", { jobs: jobs.length });
    error = execSelf(
      path,
      jobs.flatMap((j) => [j.pidfd, j.stdoutFd, j.stderrFd]).filter((fd) => fd >= 0),
    );
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  log.error("reload failed; serving on with the old program", { error });
  await Deno.remove(path).catch(() => {});
  // A stop parked meanwhile reaches the signal listeners now and is handled after serving again.
  o.parking.unparkStops();
  o.jobs.resumeAfterFailedHandover();
  return "exec-failed";
}

/**
 * Serves until a stop signal; each SIGHUP reloads (and on success never comes back). Returns the
 * stop signal's name. `serveAgain` starts the server again after an exec that failed.
 */
export async function serveUntilStopped(
  o: ReloadOptions & { serveAgain(): Promise<void> },
): Promise<string> {
  // A stop parked across the exec that started this process (or blocked by whoever started it)
  // is delivered now that the listeners are in place.
  o.parking.unblockStops();
  for (;;) {
    const signal = await o.signals.next();
    if (signal !== undefined) return signal;
    if (o.signals.stopSignal !== undefined) continue;
    const outcome = await reload(o);
    if (outcome === "exec-failed") await o.serveAgain();
    o.afterNoReload?.();
  }
}
