/**
 * Where a stretch of the bench's CPU went (issue 8's burst of starts): the whole machine's busy
 * and idle time from /proc/stat; the worker's own CPU and that of the children it reaped (the
 * jobs' first processes, with what they reaped) from /proc/<pid>/stat; the bench process's own
 * (its client); and the kernel's own threads (kthreadd's children: kworkers removing cgroups,
 * softirqs, RCU) from their schedstat. What none of these holds is everything else: other
 * processes of the machine, and interrupts.
 *
 * @module
 */

/** CPU counters, all in ms, at one moment; NaN where the kernel did not let us read one. */
export interface CpuSnapshot {
  /** Over all CPUs: ms busy (user, nice, system, irq, softirq, steal) and ms idle (with iowait). */
  busyMs: number;
  idleMs: number;
  workerMs: number;
  /** Children the worker reaped. */
  jobsMs: number;
  benchMs: number;
  kernelThreadsMs: number;
}

/** The kernel's USER_HZ (clock ticks of /proc/stat and /proc/<pid>/stat): 100 on Linux. */
const TICK_MS = 10;

function statFields(pid: number | "self"): string[] | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** ms on a CPU of the kernel's own threads (kthreadd and its children), from their schedstat. */
function kernelThreadsMs(): number {
  let ns = 0;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const fields = statFields(Number(entry.name));
    if (!fields || (entry.name !== "2" && fields[1] !== "2")) continue;
    try {
      ns += Number(Deno.readTextFileSync(`/proc/${entry.name}/schedstat`).split(" ")[0]);
    } catch { /* gone meanwhile */ }
  }
  return ns / 1e6;
}

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
  const worker = statFields(workerPid);
  const bench = statFields("self");
  const ticks = (fields: string[] | undefined, at: number) =>
    fields ? (Number(fields[at]) + Number(fields[at + 1])) * TICK_MS : NaN;
  let kernel = NaN;
  try {
    kernel = kernelThreadsMs();
  } catch { /* no /proc */ }
  return {
    busyMs,
    idleMs,
    // utime + stime, then cutime + cstime (fields 14-17 of stat, 0-based 11-14 after the name).
    workerMs: ticks(worker, 11),
    jobsMs: ticks(worker, 13),
    benchMs: ticks(bench, 11),
    kernelThreadsMs: kernel,
  };
}

/**
 * One line: each share of the CPU between `before` and `after`, per start, against all the CPUs'
 * time over the stretch (busy and idle: on 2 CPUs, twice the wall time).
 */
export function describeCpu(before: CpuSnapshot, after: CpuSnapshot, starts: number): string {
  const d = (key: keyof CpuSnapshot) => after[key] - before[key];
  const busy = d("busyMs");
  const known = d("workerMs") + d("jobsMs") + d("benchMs") + d("kernelThreadsMs");
  const shares: [string, number][] = [
    ["the worker", d("workerMs")],
    ["the jobs it reaped", d("jobsMs")],
    ["this process (the bench: its client, the worker's log lines)", d("benchMs")],
    ["kernel threads", d("kernelThreadsMs")],
    ["everything else", busy - known],
    ["idle", d("idleMs")],
  ];
  const perStart = (ms: number) => (ms / starts).toFixed(2);
  return `per start, ms of CPU: ${
    shares.map(([name, ms]) => `${name} ${perStart(ms)}`).join(", ")
  }` +
    ` (of ${perStart(busy + d("idleMs"))}, all the CPUs' time; /proc counts in 10 ms ticks)`;
}
