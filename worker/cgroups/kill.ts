/**
 * Finding and signalling the processes of a cgroup, and the freeze-kill-thaw sequence used where
 * the kernel has no cgroup.kill (v1, and v2 before Linux 5.14).
 */
import { childDirs, readText, sleep as delay } from "./files.ts";

// The waits below yield to the event loop: a worker killing a job (or hundreds at once) keeps
// serving everyone else meanwhile; they used to sleep synchronously, up to 1.5 s per kill.

/** How long killAll waits for a freeze to complete before killing anyway. */
const FREEZE_WAIT_MS = 1000;

/** PIDs in cgroup.procs of each directory and of every cgroup below it, without duplicates. */
export function listPids(dirs: readonly string[]): number[] {
  const pids = new Set<number>();
  const visit = (dir: string): void => {
    for (const line of (readText(`${dir}/cgroup.procs`) ?? "").split("\n")) {
      const pid = Number.parseInt(line, 10);
      if (pid > 0) pids.add(pid);
    }
    for (const child of childDirs(dir)) visit(`${dir}/${child}`);
  };
  for (const dir of dirs) visit(dir);
  return [...pids];
}

/** Sends `signal` to each pid; returns how many still existed and were signalled. */
export function signalPids(pids: readonly number[], signal: Deno.Signal): number {
  let count = 0;
  for (const pid of pids) {
    try {
      Deno.kill(pid, signal);
      count++;
    } catch {
      // exited meanwhile (ESRCH)
    }
  }
  return count;
}

/**
 * SIGKILLs every listed process, again and again for processes that appear meanwhile (forks of a
 * cgroup that could not be frozen), until a listing shows nothing new or about `ms` passed.
 */
export async function killRounds(
  pids: () => number[],
  killed = new Set<number>(),
  ms = 500,
): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    const fresh = pids().filter((pid) => !killed.has(pid));
    if (fresh.length === 0) return;
    signalPids(fresh, "SIGKILL");
    for (const pid of fresh) killed.add(pid);
    if (performance.now() > deadline) return;
    await delay(2);
  }
}

/** What freezeKillThaw needs from a cgroup. */
export interface Freezable {
  /** Starts freezing; throws if the cgroup cannot be frozen. */
  freeze(): void;
  /** True once every process is frozen. */
  frozen(): boolean;
  thaw(): void;
  pids(): number[];
}

/**
 * Freezes the cgroup so nothing can fork, SIGKILLs every process (the kill takes effect on thaw),
 * thaws. If the cgroup cannot be frozen, or does not freeze within a second (a process in
 * uninterruptible sleep), kills in rounds instead so forks are caught as well. Never rejects: a
 * failure is left for the caller to see (processes still listed).
 */
export async function freezeKillThaw(cgroup: Freezable): Promise<void> {
  try {
    await freezeKillThawOnce(cgroup);
  } catch {
    // cgroup gone or unreadable meanwhile: the caller sees what is left through pids()
  }
}

async function freezeKillThawOnce(cgroup: Freezable): Promise<void> {
  let frozen = false;
  try {
    cgroup.freeze();
    const deadline = performance.now() + FREEZE_WAIT_MS;
    while (!(frozen = cgroup.frozen()) && performance.now() < deadline) await delay(1);
  } catch {
    // no freezer: rounds below
  }
  const killed = new Set<number>();
  if (frozen) {
    const pids = cgroup.pids();
    signalPids(pids, "SIGKILL");
    for (const pid of pids) killed.add(pid);
  }
  try {
    cgroup.thaw();
  } catch {
    // was not frozen
  }
  await killRounds(() => cgroup.pids(), killed);
}
