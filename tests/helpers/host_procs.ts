/**
 * Looking at a job from the host: its processes (host pids, found through the job's cgroup in
 * /proc/<pid>/cgroup), whether they still live, cgroup directories named after job ids, a worker's
 * waiting pool inits and the descriptors a process holds. Independent of the product's code: only
 * /proc and /sys.
 */

/** A host process, identified by pid and start time (so a reused pid is not mistaken for it). */
export interface ProcessId {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot). */
  startTime: string;
}

/** One process of a job, as the host sees it. */
export interface HostProcess extends ProcessId {
  comm: string;
  /** The pid as the job's PID namespace sees it (last NSpid entry). */
  nsPid: number;
  /** /proc/<pid>/stat's state when it was found: R running, S sleeping, D in I/O... */
  state: string;
}

export function readOrNull(path: string): string | null {
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

/** The PIDs /proc lists right now. */
function* hostPids(): Generator<number> {
  for (const entry of Deno.readDirSync("/proc")) {
    if (/^\d+$/.test(entry.name)) yield Number(entry.name);
  }
}

/** Every host process whose cgroup (in any hierarchy) is named `jobId`. */
export function jobProcesses(jobId: string): HostProcess[] {
  const found: HostProcess[] = [];
  for (const pid of hostPids()) {
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
      state: stat.state,
    });
  }
  return found;
}

/** A live process's pid and start time, or null when it is gone (or a zombie). */
export function processId(pid: number): ProcessId | null {
  const stat = statOf(pid);
  return stat === null || stat.state === "Z" ? null : { pid, startTime: stat.startTime };
}

/** True while the process exists and is not a zombie (a reused pid does not count). */
export function isAlive(proc: ProcessId): boolean {
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

/** 2 when /sys/fs/cgroup is the unified hierarchy, else 1. */
export function cgroupVersion(): 1 | 2 {
  try {
    Deno.statSync("/sys/fs/cgroup/cgroup.controllers");
    return 2;
  } catch {
    return 1;
  }
}

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

/**
 * Cgroup directories (up to 10 levels under each root of cgroupRoots()) whose name is one of
 * `names`. Synchronous, so that an unload listener can use it.
 */
export function cgroupDirsNamed(names: Iterable<string>): string[] {
  const wanted = new Set(names);
  if (wanted.size === 0) return [];
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return; // removed meanwhile
    }
    for (const entry of entries) {
      if (!entry.isDirectory) continue;
      const path = `${dir}/${entry.name}`;
      if (wanted.has(entry.name)) found.push(path);
      if (depth < 10) walk(path, depth + 1);
    }
  };
  // v1's cpu and cpuacct are often one hierarchy under two names: walked once.
  const seen = new Set<string>();
  for (const root of cgroupRoots()) {
    const real = Deno.realPathSync(root);
    if (seen.has(real)) continue;
    seen.add(real);
    walk(root, 1);
  }
  return found;
}

/** Live (not zombie) waiting pool inits (their command line carries `--pooled`) of `parent`. */
export function waitingInits(parent: number): ProcessId[] {
  const found: ProcessId[] = [];
  for (const pid of hostPids()) {
    const cmdline = readOrNull(`/proc/${pid}/cmdline`);
    if (cmdline === null || !cmdline.split("\0").includes("--pooled")) continue;
    const stat = readOrNull(`/proc/${pid}/stat`);
    if (stat === null) continue;
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(rest[1]) !== parent || rest[0] === "Z") continue;
    found.push({ pid, startTime: rest[19] ?? "" });
  }
  return found;
}

/** A descriptor a process holds: what it points at and, for a pidfd, its process. */
export interface HeldFd {
  fd: number;
  /** The link in /proc/<pid>/fd: `pipe:[inode]`, `anon_inode:[pidfd]`, a path... */
  target: string;
  /** For a pidfd: the pid it refers to, -1 once that process has been reaped. */
  pidfdOf?: number;
}

/** Every descriptor `pid` holds now (those closed while this reads are left out). */
export function heldFds(pid: number): HeldFd[] {
  const held: HeldFd[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
    } catch {
      continue;
    }
    const fd: HeldFd = { fd: Number(entry.name), target };
    if (target === "anon_inode:[pidfd]") {
      const of = /^Pid:\s+(-?\d+)$/m.exec(readOrNull(`/proc/${pid}/fdinfo/${entry.name}`) ?? "");
      if (of) fd.pidfdOf = Number(of[1]);
    }
    held.push(fd);
  }
  return held;
}

/** Whether a path exists: the worker's own check. */
export { exists } from "../../worker/cgroups/files.ts";
