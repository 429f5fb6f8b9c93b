/**
 * Looking at a job from the host: its processes (host pids, found through the job's cgroup in
 * /proc/<pid>/cgroup), whether they still live, and cgroup directories named after job ids.
 * Independent of the product's code: only /proc, /sys and `find`.
 */

/** One host process, identified by pid and start time (so a reused pid is not mistaken for it). */
export interface HostProcess {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot). */
  startTime: string;
  comm: string;
  /** The pid as the job's PID namespace sees it (last NSpid entry). */
  nsPid: number;
}

function readOrNull(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/** State letter, start time and comm of a pid, or null when it does not exist. */
function statOf(pid: number): { state: string; startTime: string; comm: string } | null {
  const stat = readOrNull(`/proc/${pid}/stat`);
  if (stat === null) return null;
  const open = stat.indexOf("(");
  const close = stat.lastIndexOf(")");
  const rest = stat.slice(close + 2).split(" ");
  return { state: rest[0] ?? "", startTime: rest[19] ?? "", comm: stat.slice(open + 1, close) };
}

/** Every host process whose cgroup (in any hierarchy) is named `jobId`. */
export function jobProcesses(jobId: string): HostProcess[] {
  const found: HostProcess[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const pid = Number(entry.name);
    const cgroup = readOrNull(`/proc/${pid}/cgroup`);
    if (cgroup === null || !cgroup.split("\n").some((l) => l.endsWith(`/${jobId}`))) continue;
    const stat = statOf(pid);
    if (stat === null || stat.state === "Z") continue;
    const nsPidLine = /^NSpid:\s+(.*)$/m.exec(readOrNull(`/proc/${pid}/status`) ?? "")?.[1] ?? "";
    const nsPids = nsPidLine.trim().split(/\s+/).map(Number);
    found.push({
      pid,
      startTime: stat.startTime,
      comm: stat.comm,
      nsPid: nsPids[nsPids.length - 1] ?? 0,
    });
  }
  return found;
}

/** True while the process exists and is not a zombie (a reused pid does not count). */
export function isAlive(proc: HostProcess): boolean {
  const stat = statOf(proc.pid);
  return stat !== null && stat.startTime === proc.startTime && stat.state !== "Z";
}

/** Polls until `condition` returns a truthy value; throws after `ms`. */
export async function waitFor<T>(
  what: string,
  condition: () => T | Promise<T>,
  ms = 15_000,
): Promise<NonNullable<T>> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await condition();
    if (value) return value as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const isDir = (dir: string): boolean => {
  try {
    return Deno.statSync(dir).isDirectory;
  } catch {
    return false;
  }
};

/**
 * Where the worker puts job cgroups: the unified tree on a cgroup v2 host, else the v1 controller
 * hierarchies it uses. Throws when none exists, so a "no cgroup left" check never checks nothing.
 */
export function cgroupRoots(): string[] {
  try {
    Deno.statSync("/sys/fs/cgroup/cgroup.controllers");
    return ["/sys/fs/cgroup"];
  } catch {
    // cgroup v1 (or hybrid): one hierarchy per controller
  }
  const roots = ["pids", "memory", "cpu", "cpuacct", "freezer", "blkio"]
    .map((c) => `/sys/fs/cgroup/${c}`)
    .filter(isDir);
  if (roots.length === 0) {
    throw new Error("no cgroup v2 root and no v1 hierarchy under /sys/fs/cgroup");
  }
  return roots;
}

/** Cgroup directories (up to 8 levels deep) whose name is one of `names`. */
export async function cgroupDirsNamed(names: Iterable<string>): Promise<string[]> {
  const wanted = new Set(names);
  if (wanted.size === 0) return [];
  const out = await new Deno.Command("find", {
    args: ["-H", ...cgroupRoots(), "-maxdepth", "8", "-type", "d"],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter((dir) =>
    wanted.has(dir.slice(dir.lastIndexOf("/") + 1))
  );
}
