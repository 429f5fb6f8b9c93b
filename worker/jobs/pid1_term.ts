/**
 * SIGTERM's default action for a job's PID 1 that has no handler for it.
 *
 * The command is PID 1 of its PID namespace, and the kernel drops a signal from outside to a
 * namespace's PID 1 unless PID 1 handles it: a `sleep`, a shell loop or `python3 -m http.server`
 * would ignore `stop` for the whole grace period. When PID 1 neither catches nor ignores SIGTERM
 * (SigCgt and SigIgn in /proc/PID/status), the worker does what the kernel would do to any other
 * process: once the other processes that got the SIGTERM have exited, or the grace ends,
 * PID 1 is killed, and the job's record says SIGTERM. A PID 1 with a handler keeps its grace.
 */

const SIGTERM = 15;
const POLL_MS = 10;

/** Whether `pid` catches or ignores SIGTERM; null when /proc cannot tell (it has ended). */
export function handlesSigterm(pid: number): boolean | null {
  let status: string;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  const mask = (field: string) =>
    BigInt(`0x${new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(status)?.[1] ?? "0"}`);
  const bit = 1n << BigInt(SIGTERM - 1);
  return ((mask("SigCgt") | mask("SigIgn")) & bit) !== 0n;
}

export interface DefaultTerm {
  /** True once PID 1 was killed as SIGTERM's default action. */
  readonly delivered: boolean;
  cancel(): void;
}

/**
 * Called right after SIGTERM went to every process of a running job. Returns null when PID 1
 * handles SIGTERM itself; else watches the processes that got the SIGTERM (`pids()` now, but
 * PID 1) and calls `killPid1()` once none of them is left. Processes started after the SIGTERM
 * are not waited for: PID 1 would have died with it, and a shell loop keeps starting new ones.
 */
export function applyDefaultTerm(
  pid: number,
  pids: () => number[],
  killPid1: () => void,
): DefaultTerm | null {
  if (handlesSigterm(pid) !== false) return null;
  let signalled: number[];
  try {
    signalled = pids().filter((p) => p !== pid);
  } catch {
    signalled = [];
  }
  let delivered = false;
  const check = () => {
    let alive: Set<number>;
    try {
      alive = new Set(pids());
    } catch {
      return;
    }
    if (signalled.some((p) => alive.has(p))) return;
    clearInterval(timer);
    delivered = true;
    killPid1();
  };
  const timer = setInterval(check, POLL_MS);
  queueMicrotask(check);
  return {
    get delivered() {
      return delivered;
    },
    cancel: () => clearInterval(timer),
  };
}

/** The signal to record: SIGTERM when PID 1 was killed as its default action. */
export function recordedSignal(
  term: DefaultTerm | undefined,
  signal: number | null,
): number | null {
  return term?.delivered && signal === 9 ? SIGTERM : signal;
}
