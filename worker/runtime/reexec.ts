/**
 * Reload in place (SIGHUP): the worker execs itself, keeping its PID, so running jobs stay its
 * children. What a running job needs (its pidfd, output pipes, deadlines, how much output it has
 * written) crosses the exec in a handover file; the descriptors cross it because close-on-exec is
 * cleared on exactly those. The new program is checked first (`serve --check`): if it cannot start,
 * the reload is refused and nothing stops.
 *
 * ```
 *  old process                                   new process (same PID)
 *  SIGHUP → run `<program> serve --check` ──ok─┐
 *  refuse creates, wait for starts to settle   │
 *  stop serving (clients see UNAVAILABLE)      │
 *  pause output pipes, note each job's state   │
 *  write <state>/handover.json                 │
 *  clear FD_CLOEXEC on pidfds and pipes        │
 *  execve(program path, argv, env+HANDOVER) ───┴──▶ read and delete handover.json
 *                                                   re-attach jobs (pipes, pidfds, deadlines)
 *                                                   serve again
 * ```
 */
import type { LaunchedProcess } from "./launcher.ts";
import type { JobRecord } from "../jobs/job.ts";
import {
  endedOutputPipe,
  openOutputPipe,
  type OutputPipe,
  type OutputSink,
  type OutputSinks,
} from "./output_pipe.ts";
import type { OutputPump } from "./output_pump.ts";
import type { Shim } from "../../init/shim/ffi.ts";
import { log } from "../log/logger.ts";

/** The environment variable naming the handover file in the new process. */
export const HANDOVER_ENV = "JOBWORKER_HANDOVER";

/** One running job as it crosses the exec. */
export interface HandedJob {
  id: string;
  pid: number;
  pidfd: number;
  /** The output pipes' read ends; -1: that pipe had ended (its descriptor closed). */
  stdoutFd: number;
  stderrFd: number;
  /** Epoch ms when the job's timeout stops it; null: none. */
  timeoutAt: number | null;
  /** Epoch ms of a pending SIGKILL; null: none. */
  killAt: number | null;
  /** SIGTERM already went out. */
  terminated: boolean;
  stopReason: string | null;
  output: {
    size: number;
    segments: number;
    lastStream: 1 | 2 | null;
    truncated: boolean;
  };
  outputLost: { offset: number; error: string } | null;
}

/**
 * An ended job whose final state the job database could not take (a full disk), as it crosses the
 * exec: the new process writes it once it can. Times are ISO strings (JSON).
 */
export type HandedRecord = Omit<JobRecord, "createTime" | "startTime" | "endTime"> & {
  createTime: string;
  startTime: string | null;
  endTime: string | null;
};

export interface Handover {
  /** When the first process of this worker started (startTime survives reloads). */
  startTime: string;
  /** When this reload began. */
  reloadTime: string;
  /** The port the old process listened on (kept when the configured port is 0). */
  port: number;
  jobs: HandedJob[];
  /** Ended jobs whose final state is not in the job database yet (absent: none). */
  unsaved?: HandedRecord[];
}

const libc = () =>
  Deno.dlopen("libc.so.6", {
    fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
    execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
    signal: { parameters: ["i32", "pointer"], result: "pointer" },
  });

const SIGHUP = 1;
const SIG_IGN = 1n;

const F_SETFD = 2;
const FD_CLOEXEC = 1;

/**
 * The program's path on disk: exec'ing the path (not /proc/self/exe, which keeps the old file)
 * runs whatever was installed there since, so replacing the binary and reloading upgrades.
 */
export function programPath(): string {
  return Deno.execPath().replace(/ \(deleted\)$/, "");
}

/** This process's argv, exactly as it was started. */
export function ownArgv(): string[] {
  return Deno.readTextFileSync("/proc/self/cmdline").split("\0").slice(0, -1);
}

/**
 * Runs the program as it now is on disk with `serve --check` and this process's arguments: it
 * loads the configuration and certificates and opens the record, then exits. Null when it
 * succeeded, else what it said.
 */
export async function checkNewProgram(timeoutMs = 60_000): Promise<string | null> {
  const argv = ownArgv();
  try {
    const out = await new Deno.Command(programPath(), {
      args: [...argv.slice(1), "--check"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
    if (out.success) return null;
    const text = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join(" | ");
    return `the check exited with ${out.code}: ${text}`;
  } catch (e) {
    return `the check could not run: ${e instanceof Error ? e.message : e}`;
  }
}

/** Writes the handover file durably, all of it; throws if it cannot. */
export function writeHandover(path: string, handover: Handover): void {
  const file = Deno.openSync(path, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    // All of it or an error (the reload is then called off): a write may be cut short (a nearly
    // full disk), and a truncated handover would lose every running job.
    const bytes = new TextEncoder().encode(JSON.stringify(handover));
    for (let done = 0; done < bytes.length;) {
      const n = file.writeSync(bytes.subarray(done));
      if (n <= 0) throw new Error(`cannot write the handover file ${path}: no progress`);
      done += n;
    }
    file.syncSync();
  } finally {
    file.close();
  }
}

/** The handover this process was started with, if any; the file is removed once read. */
export function takeHandover(): Handover | undefined {
  const path = Deno.env.get(HANDOVER_ENV);
  if (path === undefined) return undefined;
  Deno.env.delete(HANDOVER_ENV);
  try {
    return JSON.parse(Deno.readTextFileSync(path)) as Handover;
  } finally {
    try {
      Deno.removeSync(path);
    } catch { /* gone */ }
  }
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${s}\0`);
}

/**
 * Execs this program again, same PID, with `fds` kept open and HANDOVER_ENV pointing at
 * `handoverPath`. Returns only if execve failed (with its message).
 */
export function execSelf(handoverPath: string, fds: readonly number[]): string {
  const lib = libc();
  const kept: number[] = [];
  try {
    for (const fd of fds) {
      if (lib.symbols.fcntl(fd, F_SETFD, 0) !== 0) return `cannot keep descriptor ${fd} open`;
      kept.push(fd);
    }
    const argv = ownArgv();
    const env = { ...Deno.env.toObject(), [HANDOVER_ENV]: handoverPath };
    const strings = (values: string[]) => {
      const buffers = values.map(cString);
      const pointers = new BigUint64Array(values.length + 1);
      buffers.forEach((b, i) => {
        pointers[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
      });
      return { buffers, pointers: new Uint8Array(pointers.buffer) };
    };
    const a = strings(argv);
    const e = strings(Object.entries(env).map(([k, v]) => `${k}=${v}`));
    // An ignored signal stays ignored across execve (a handled one would revert to "terminate"):
    // a SIGHUP before the new process listens for it is then dropped instead of killing the
    // worker and its jobs.
    const previous = lib.symbols.signal(SIGHUP, Deno.UnsafePointer.create(SIG_IGN));
    lib.symbols.execve(cString(programPath()), a.pointers, e.pointers);
    lib.symbols.signal(SIGHUP, previous);
    // Still here: keep the buffers alive up to the call, then report.
    void a.buffers;
    void e.buffers;
    return "execve failed";
  } finally {
    // Still here: no later child (the next reload's check, systemctl) may inherit them.
    for (const fd of kept) lib.symbols.fcntl(fd, F_SETFD, FD_CLOEXEC);
    lib.close();
  }
}

/** A handed-over pipe read again; one that cannot be (or had ended) reads as ended. */
function adoptedPipe(pump: OutputPump, job: HandedJob, fd: number, sink: OutputSink): OutputPipe {
  if (fd < 0) return endedOutputPipe();
  try {
    return openOutputPipe(pump, fd, sink);
  } catch (e) {
    log.error("cannot read a job's output after the reload; the rest of it is lost", {
      id: job.id,
      error: e instanceof Error ? e.message : String(e),
    });
    return endedOutputPipe();
  }
}

/**
 * A job's first process as the new worker process re-attaches it, its output pipes read by `pump`
 * into `sinks` from where the old process stopped reading.
 */
export function adoptedProcess(
  job: HandedJob,
  sinks: OutputSinks,
  shim: Shim,
  pump: OutputPump,
): LaunchedProcess {
  let released = false;
  return {
    pid: job.pid,
    pidfd: job.pidfd,
    stdout: adoptedPipe(pump, job, job.stdoutFd, sinks.stdout),
    stderr: adoptedPipe(pump, job, job.stderrFd, sinks.stderr),
    pooled: false,
    direct: false,
    intoCgroup: false,
    started: Promise.resolve(null),
    signal: (signal) => {
      if (released) return;
      try {
        shim.pidfdSignal(job.pidfd, signal);
      } catch { /* already ended */ }
    },
    release: () => {
      if (released) return;
      released = true;
      try {
        shim.close(job.pidfd);
      } catch { /* closed */ }
    },
  };
}
