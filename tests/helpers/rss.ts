import { waitingInits } from "./host_procs.ts";

/** A process's resident memory, from /proc, in bytes. */
export function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!kib) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kib[1]) * 1024;
}

/** How many descriptors a process has open. */
export function openFds(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** How many waiting `init --pooled` children (not zombies) the worker `pid` has. */
export function pooledInits(pid: number): number {
  return waitingInits(pid).length;
}

/**
 * Waits until the worker's init pool is full (`size`, the default JOB_WORKER_INIT_POOL), so that a
 * count of its descriptors does not include a refill under way (each waiting init holds six).
 */
export async function poolFull(pid: number, size = 0, ms = 30_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (pooledInits(pid) !== size) {
    if (performance.now() > deadline) throw new Error(`the init pool of ${pid} did not fill`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * A process's resident memory once it has settled: two readings 1 s apart within `toleranceMiB`
 * (at most `tries` seconds; the last reading then).
 */
export async function settledRss(pid: number, toleranceMiB = 4, tries = 15): Promise<number> {
  let last = rssBytes(pid);
  for (let i = 0; i < tries; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const now = rssBytes(pid);
    if (Math.abs(now - last) < toleranceMiB * 1024 * 1024) return now;
    last = now;
  }
  return last;
}

/** A process's peak resident memory while `during` runs, sampled every 50 ms, bytes. */
export async function peakRss(pid: number, during: Promise<unknown>): Promise<number> {
  let peak = rssBytes(pid);
  let done = false;
  during.finally(() => done = true).catch(() => {});
  while (!done) {
    peak = Math.max(peak, rssBytes(pid));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await during;
  return peak;
}
