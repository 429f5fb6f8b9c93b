/**
 * Where a stretch of the bench's CPU went (issue 8's burst of starts): the whole machine's busy
 * and idle time from /proc/stat; the worker's own CPU and that of the children it reaped (the
 * jobs' first processes, with what they reaped) from /proc/<pid>/stat; the bench process's own
 * (its client); and the kernel's own threads (kthreadd's children: kworkers removing cgroups,
 * softirqs, RCU) from their schedstat. What none of these holds is everything else: other
 * processes of the machine, interrupts, jobs not yet reaped at the second snapshot, and kernel
 * threads that were not there at the first.
 *
 * @module
 */
import { procStatFields, TICK_MS } from "./procfs.ts";

/**
 * CPU counters, all in ms, at one moment; NaN where the kernel did not let us read one (no kernel
 * thread at all when /proc cannot be listed).
 */
export interface CpuSnapshot {
  /** Over all CPUs: ms busy (user, nice, system, irq, softirq, steal) and ms idle (with iowait). */
  busyMs: number;
  idleMs: number;
  workerMs: number;
  /** Children the worker reaped. */
  jobsMs: number;
  benchMs: number;
  /** Each kernel thread's ms on a CPU so far, by pid. */
  kernelThreadsMs: Map<number, number>;
}

/**
 * ms on a CPU of each of the kernel's own threads (kthreadd and its children), by pid, from their
 * schedstat: compared by pid, so that a kworker that comes or goes meanwhile counts only for the
 * time both snapshots saw it.
 */
function kernelThreadsMs(): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const pid = Number(entry.name);
    const fields = procStatFields(pid);
    if (!fields || (pid !== 2 && fields[1] !== "2")) continue;
    try {
      byPid.set(pid, Number(Deno.readTextFileSync(`/proc/${pid}/schedstat`).split(" ")[0]) / 1e6);
    } catch { /* gone meanwhile */ }
  }
  return byPid;
}

/** The counters of {@link CpuSnapshot} at this moment, for the worker `workerPid`. */
export function cpuSnapshot(workerPid: number): CpuSnapshot {
  let busyMs = NaN;
  let idleMs = NaN;
  try {
    const [user, nice, system, idle, iowait, irq, softirq, steal] = Deno.readTextFileSync(
      "/proc/stat",
    ).split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    busyMs = (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) * TICK_MS;
    idleMs = (idle! + iowait!) * TICK_MS;
  } catch { /* no /proc/stat */ }
  const worker = procStatFields(workerPid);
  const bench = procStatFields("self");
  const ticks = (fields: string[] | undefined, at: number) =>
    fields ? (Number(fields[at]) + Number(fields[at + 1])) * TICK_MS : NaN;
  let kernel = new Map<number, number>();
  try {
    kernel = kernelThreadsMs();
  } catch { /* no /proc */ }
  return {
    busyMs,
    idleMs,
    workerMs: ticks(worker, 11), // utime + stime
    jobsMs: ticks(worker, 13), // cutime + cstime
    benchMs: ticks(bench, 11),
    kernelThreadsMs: kernel,
  };
}

/**
 * One line: each share of the CPU between `before` and `after`, per start, against all the CPUs'
 * time over the stretch (busy and idle: on 2 CPUs, twice the wall time).
 */
export function describeCpu(before: CpuSnapshot, after: CpuSnapshot, starts: number): string {
  const d = (key: Exclude<keyof CpuSnapshot, "kernelThreadsMs">) => after[key] - before[key];
  let kernelMs = 0;
  for (const [pid, ms] of after.kernelThreadsMs) {
    const was = before.kernelThreadsMs.get(pid);
    if (was !== undefined) kernelMs += ms - was;
  }
  const busy = d("busyMs");
  const known = d("workerMs") + d("jobsMs") + d("benchMs") + kernelMs;
  const shares: [string, number][] = [
    ["the worker", d("workerMs")],
    ["the jobs it reaped", d("jobsMs")],
    ["this process (the bench: its client, the worker's log lines)", d("benchMs")],
    ["kernel threads", kernelMs],
    ["everything else", busy - known],
    ["idle", d("idleMs")],
  ];
  const perStart = (ms: number) => (ms / starts).toFixed(2);
  return `per start, ms of CPU: ${
    shares.map(([name, ms]) => `${name} ${perStart(ms)}`).join(", ")
  }` +
    ` (of ${perStart(busy + d("idleMs"))}, all the CPUs' time; /proc counts in 10 ms ticks)`;
}
