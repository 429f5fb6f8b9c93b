/**
 * cgroup v1: one directory per hierarchy (cpu, cpuacct, memory, blkio, pids, freezer; cpu and
 * cpuacct may share one), each at `<mount>/<base or the worker's own cgroup there>/
 * jobworker-<instance>/<jobId>`. Nothing is written outside that subtree and no process is moved.
 */
import {
  childDirs,
  describeErrno,
  errnoOf,
  exists,
  type FileReader,
  mkdirOnce,
  parseKeyValues,
  parseNumber,
  readText,
  rmdirQuietly,
  writeSetup,
} from "./files.ts";
import { freezeKillThaw } from "./kill.ts";
import { JobCgroupDirs } from "./job_cgroup.ts";
import { V1_CONTROLLERS, type V1Controller, type V1Hierarchy } from "./layout.ts";
import { checkLimits, CPU_PERIOD_USEC, cpuQuotaUsec, memoryBytes } from "./limits.ts";
import { type BaseSetting, cgroupDir, checkName, instanceDirName, normalizeBase } from "./paths.ts";
import { killAndRemoveAll, removeCgroupDirs } from "./remove.ts";
import { denoFileBatch, type FileBatch } from "./file_batch.ts";
import { limitStep as limit, mkdirStep, runSteps, type Step, writeStep } from "./file_steps.ts";
import {
  type CgroupOptions,
  type CgroupSlots,
  type DetectedCgroupManager,
  type JobCgroup,
  LimitError,
  type LimitName,
  type Limits,
  type Usage,
} from "./types.ts";

/** One hierarchy as the manager uses it. */
interface Place {
  controllers: string[];
  /** Where the base cgroup is in this hierarchy. */
  baseDir: string;
  /** `<baseDir>/jobworker-<instance>`. */
  parentDir: string;
}

/** The directory of each controller of one job (co-mounted controllers share a directory). */
type ControllerDirs = Map<V1Controller, string>;

/** Records `dir` for each controller of ours in `controllers`. */
function assign(dirs: ControllerDirs, controllers: string[], dir: string): void {
  for (const controller of V1_CONTROLLERS) {
    if (controllers.includes(controller)) dirs.set(controller, dir);
  }
}

const CPUSET_FILES = ["cpuset.cpus", "cpuset.mems"];

/**
 * In a hierarchy that also carries cpuset, copies cpuset.cpus and cpuset.mems from the parent of
 * a new cgroup (a cpuset cgroup without them cannot take processes).
 */
function initCpuset(dir: string, controllers: string[]): void {
  if (!controllers.includes("cpuset")) return;
  const parent = dir.slice(0, dir.lastIndexOf("/"));
  for (const file of CPUSET_FILES) {
    const value = readText(`${parent}/${file}`)?.trim();
    if (value) writeSetup("Cannot set up cpuset", `${dir}/${file}`, value);
  }
}

/** Sums "major:minor Read|Write bytes" lines of blkio.throttle.io_service_bytes. */
function blkioBytes(text: string | undefined): { read: number; write: number } {
  let read = 0;
  let write = 0;
  for (const line of (text ?? "").split("\n")) {
    const [device, op, value] = line.trim().split(/\s+/);
    if (!device?.includes(":") || value === undefined) continue;
    if (op === "Read") read += Number(value) || 0;
    if (op === "Write") write += Number(value) || 0;
  }
  return { read, write };
}

/** The cgroups of one job on v1. */
export class V1JobCgroup extends JobCgroupDirs {
  readonly #dirs: ControllerDirs;

  /** `dirs`: the job's directory for each controller that has a hierarchy. */
  constructor(dirs: ControllerDirs, files: FileBatch) {
    super([...new Set(dirs.values())], files);
    this.#dirs = dirs;
  }

  #file(controller: V1Controller, name: string): string | undefined {
    const dir = this.#dirs.get(controller);
    return dir === undefined ? undefined : `${dir}/${name}`;
  }

  #number(read: FileReader, controller: V1Controller, name: string): number {
    const file = this.#file(controller, name);
    return file === undefined ? 0 : parseNumber(read(file));
  }

  protected readUsage(read: FileReader): Usage {
    const recursive = this.#file("blkio", "blkio.throttle.io_service_bytes_recursive");
    const io = blkioBytes(
      (recursive && read(recursive)) ??
        read(this.#file("blkio", "blkio.throttle.io_service_bytes") ?? ""),
    );
    const cpuStat = parseKeyValues(read(this.#file("cpu", "cpu.stat") ?? ""));
    return {
      cpuUsec: Math.floor(this.#number(read, "cpuacct", "cpuacct.usage") / 1000),
      memoryBytes: this.#number(read, "memory", "memory.usage_in_bytes"),
      memoryPeakBytes: this.#number(read, "memory", "memory.max_usage_in_bytes"),
      ioReadBytes: io.read,
      ioWriteBytes: io.write,
      pids: this.#number(read, "pids", "pids.current"),
      cpuThrottledCount: cpuStat.get("nr_throttled") ?? 0,
      cpuThrottledUsec: Math.floor((cpuStat.get("throttled_time") ?? 0) / 1000),
    };
  }

  protected kernelCountsNone(): boolean {
    const file = this.#file("pids", "pids.current");
    return file !== undefined && readText(file)?.trim() === "0";
  }

  protected readOomKilled(read: FileReader): boolean {
    const file = this.#file("memory", "memory.oom_control");
    return (parseKeyValues(file && read(file)).get("oom_kill") ?? 0) > 0;
  }

  killAll(): Promise<void> {
    const state = this.#file("freezer", "freezer.state");
    return freezeKillThaw({
      freeze: () => {
        if (state === undefined) throw new Error("no freezer hierarchy");
        writeSetup("Cannot freeze", state, "FROZEN");
      },
      frozen: () => state !== undefined && readText(state)?.trim() === "FROZEN",
      thaw: () => state !== undefined && writeSetup("Cannot thaw", state, "THAWED"),
      pids: () => this.pids(),
    });
  }
}

/** Job cgroups on cgroup v1. */
export class V1Manager implements DetectedCgroupManager {
  readonly version = 1 as const;
  readonly ioDevices: readonly string[];
  readonly parentDirs: readonly string[];
  readonly #places: Place[];
  readonly #base: BaseSetting;
  /**
   * The instance's parent cgroups were made (or found) by an earlier create: later ones skip the
   * mkdir (an AlreadyExists error per hierarchy per job) until a failed create finds them gone.
   */
  #parentsMade = false;
  readonly #files: FileBatch;

  constructor(hierarchies: V1Hierarchy[], options: CgroupOptions, ioDevices: readonly string[]) {
    checkName("instance", options.instance);
    this.ioDevices = ioDevices;
    this.#files = options.files ?? denoFileBatch;
    this.#base = normalizeBase(options.base, hierarchies.map((h) => h.reportedMountPoint), true);
    const basePath = this.#base && "path" in this.#base ? this.#base.path : undefined;
    this.#places = hierarchies.map((h) => {
      const baseDir = cgroupDir(h.mountPoint, basePath ?? h.ownPath);
      return {
        controllers: h.controllers,
        baseDir,
        parentDir: `${baseDir}/${instanceDirName(options.instance)}`,
      };
    });
    this.parentDirs = this.#places.map((p) => p.parentDir);
  }

  describe(): string {
    const where = this.#places.map((p) => `${p.controllers.join(",")}=${p.parentDir}`).join(" ");
    const missing = ["cpu", "cpuacct", "memory", "blkio", "pids", "freezer"].filter((c) =>
      !this.#places.some((p) => p.controllers.includes(c))
    );
    const problem = this.#problem();
    return `cgroup v1: job cgroups under ${where || "(no hierarchy mounted)"}` +
      (missing.length ? `; not mounted: ${missing.join(", ")}` : "") +
      `; IO devices: ${this.ioDevices.join(",") || "none"}` +
      (problem ? `; ${problem} (CreateJob will fail)` : "");
  }

  /** Why no job cgroup can be made now, if so. */
  #problem(): string | undefined {
    if (this.#base && "error" in this.#base) return this.#base.error;
    if (this.#places.length === 0) {
      return "no cgroup v1 hierarchy of cpu, cpuacct, memory, blkio, pids or freezer is mounted";
    }
    const missing = this.#places.find((p) => !exists(p.baseDir));
    if (missing) {
      const base = this.#base && "path" in this.#base ? this.#base.path : "(the worker's cgroup)";
      return `cgroup base ${base} does not exist (${missing.baseDir})`;
    }
    return undefined;
  }

  #placeOf(controller: V1Controller, limit: LimitName): Place {
    const place = this.#places.find((p) => p.controllers.includes(controller));
    if (!place) {
      throw new LimitError(
        `Cannot apply ${limit}: the ${controller} controller is not mounted (cgroup v1)`,
        { limit },
      );
    }
    return place;
  }

  /** Throws what create() would for this id and these limits before making anything. */
  #check(jobId: string, limits: Limits): void {
    checkName("job id", jobId);
    checkLimits(limits, this.ioDevices);
    if (limits.cpuPercent > 0) this.#placeOf("cpu", "maxCPU");
    if (limits.memoryMiB > 0) this.#placeOf("memory", "maxMemory");
    if (limits.ioBps > 0) this.#placeOf("blkio", "maxIOBPS");
    if (limits.pids > 0) this.#placeOf("pids", "maxPids");
    const problem = this.#parentsMade ? undefined : this.#problem();
    if (problem) throw new LimitError(problem);
  }

  /**
   * The instance's parent cgroups are made (once) synchronously, so that no other create sees them
   * half set up; the job's own directories and limits go through the blocking pool (see
   * file_batch.ts).
   */
  async create(jobId: string, limits: Limits): Promise<JobCgroup> {
    try {
      return await this.#create(jobId, limits);
    } catch (error) {
      // Gone now, or gone when this create's mkdir ran (another create may have made them since).
      const jobDirGone = error instanceof LimitError && error.errno === "ENOENT" &&
        this.#places.some((place) => error.path === `${place.parentDir}/${jobId}`);
      const parentGone = jobDirGone || this.#places.some((place) => !exists(place.parentDir));
      if (!this.#parentsMade || !parentGone) throw error;
      this.#parentsMade = false; // removed since (the worker's shutdown, an operator): made again
      return await this.#create(jobId, limits);
    }
  }

  async #create(jobId: string, limits: Limits): Promise<JobCgroup> {
    this.#check(jobId, limits);
    const dirs: ControllerDirs = new Map();
    const createdParents: string[] = [];
    const fail = (error: unknown, undo: string[]): never => {
      for (const dir of undo) rmdirQuietly(dir);
      if (error instanceof LimitError) throw error;
      throw new LimitError(`Cannot create the job's cgroup: ${error}`, { cause: error });
    };
    try {
      for (const place of this.#parentsMade ? [] : this.#places) {
        if (mkdirOnce(place.parentDir)) {
          createdParents.push(place.parentDir);
          initCpuset(place.parentDir, place.controllers);
        }
      }
      this.#parentsMade = true;
    } catch (error) {
      fail(error, createdParents);
    }
    // From here on other creates may use the parents: only this job's directories are undone.
    // The directories, their cpuset and the limits in one batch, stopped at the first failure
    // (where a hierarchy carries cpuset, its parent's values are read in a batch before).
    const jobDirs = this.#places.map((place) => `${place.parentDir}/${jobId}`);
    this.#places.forEach((place, i) => assign(dirs, place.controllers, jobDirs[i]!));
    let failed: Awaited<ReturnType<typeof runSteps>>;
    try {
      failed = await runSteps(this.#files, [
        ...jobDirs.map(mkdirStep),
        ...await this.#cpusetSteps(jobDirs),
        ...limitSteps(dirs, limits, this.ioDevices),
      ]);
    } catch (error) {
      return fail(error, jobDirs); // the batch itself failed: which directories it made is unknown
    }
    if (failed) fail(failed.error, jobDirs.slice(0, Math.min(failed.at, jobDirs.length)));
    return new V1JobCgroup(dirs, this.#files);
  }

  /** Writes that copy cpuset.cpus and cpuset.mems from the parent, where a hierarchy has cpuset. */
  async #cpusetSteps(jobDirs: string[]): Promise<Step[]> {
    const copies = this.#places.flatMap((place, i) =>
      place.controllers.includes("cpuset")
        ? CPUSET_FILES.map((file) => ({
          from: `${place.parentDir}/${file}`,
          to: `${jobDirs[i]}/${file}`,
        }))
        : []
    );
    if (copies.length === 0) return [];
    const values = await this.#files.run(copies.map(({ from }) => ({ kind: "read", path: from })));
    return copies.flatMap(({ to }, i) => {
      const value = values[i]!.text?.trim();
      return value ? [writeStep("Cannot set up cpuset", undefined, to, value)] : [];
    });
  }

  cleanupStale(keep: ReadonlySet<string> = new Set()): Promise<number> {
    const names = new Set(this.#places.flatMap((p) => childDirs(p.parentDir)));
    return killAndRemoveAll(
      [...names].filter((name) => !keep.has(name)).map((name) => this.#existing(name)),
    );
  }

  readonly slots: CgroupSlots = {
    make: (name) => {
      checkName("slot", name);
      const problem = this.#problem();
      if (problem) throw new LimitError(problem);
      const made: string[] = [];
      try {
        return this.#places.map((place) => {
          if (mkdirOnce(place.parentDir)) initCpuset(place.parentDir, place.controllers);
          const dir = `${place.parentDir}/${name}`;
          if (!mkdirOnce(dir)) throw new LimitError(`cgroup ${dir} already exists`);
          made.push(dir);
          initCpuset(dir, place.controllers);
          return `${dir}/cgroup.procs`;
        });
      } catch (error) {
        for (const dir of made) rmdirQuietly(dir);
        throw error;
      }
    },
    check: (jobId, limits) => this.#check(jobId, limits),
    adopt: async (name, jobId, limits) => {
      this.#check(jobId, limits);
      const dirs: ControllerDirs = new Map();
      for (const place of this.#places) {
        assign(dirs, place.controllers, `${place.parentDir}/${name}`);
      }
      // The limits first: the job's cgroup never exists without them.
      const failed = await runSteps(this.#files, limitSteps(dirs, limits, this.ioDevices));
      if (failed) throw failed.error;
      const renamed: [Place, string, string][] = [];
      try {
        for (const place of this.#places) {
          const from = `${place.parentDir}/${name}`;
          const to = `${place.parentDir}/${jobId}`;
          Deno.renameSync(from, to);
          renamed.push([place, from, to]);
          assign(dirs, place.controllers, to);
        }
      } catch (error) {
        const stray: ControllerDirs = new Map();
        for (const [place, from, to] of renamed) {
          try {
            Deno.renameSync(to, from);
          } catch {
            assign(stray, place.controllers, to);
          }
        }
        const left = await removeStray(stray, this.#files);
        throw new LimitError(
          `Cannot make the job's cgroup from pool slot ${name}: ${describeErrno(error)}${left}`,
          { errno: errnoOf(error), cause: error },
        );
      }
      return new V1JobCgroup(dirs, this.#files);
    },
    remove: (name) =>
      removeCgroupDirs(this.#places.map((p) => `${p.parentDir}/${name}`), undefined, this.#files),
  };

  open(jobId: string): JobCgroup {
    checkName("job id", jobId);
    return this.#existing(jobId);
  }

  #existing(name: string): V1JobCgroup {
    const dirs: ControllerDirs = new Map();
    for (const place of this.#places) {
      const dir = `${place.parentDir}/${name}`;
      if (exists(dir)) assign(dirs, place.controllers, dir);
    }
    return new V1JobCgroup(dirs, this.#files);
  }
}

/**
 * A slot's directories that kept the job's name when a failed adopt could not rename them back:
 * they would make the job's cgroup, created as usual next, fail ("already exists"), and would stay
 * until the next start. Everything in them (the slot's init, which the pool dismisses anyway) is
 * killed and they are removed now. "" when none is left, else what the error adds.
 */
async function removeStray(stray: ControllerDirs, files: FileBatch): Promise<string> {
  if (stray.size === 0) return "";
  const cgroup = new V1JobCgroup(stray, files);
  await cgroup.killAll();
  try {
    await cgroup.remove();
    return "";
  } catch (error) {
    return `; ${[...new Set(stray.values())].join(", ")} left for the next start (${error})`;
  }
}

/** The writes of the requested limits into the job's directories (memsw after memory). */
function limitSteps(dirs: ControllerDirs, limits: Limits, ioDevices: readonly string[]): Step[] {
  const dir = (controller: V1Controller): string => dirs.get(controller) ?? "";
  const steps: Step[] = [];
  if (limits.cpuPercent > 0) {
    steps.push(
      limit("maxCPU", `${dir("cpu")}/cpu.cfs_period_us`, String(CPU_PERIOD_USEC)),
      limit("maxCPU", `${dir("cpu")}/cpu.cfs_quota_us`, String(cpuQuotaUsec(limits.cpuPercent))),
    );
  }
  if (limits.memoryMiB > 0) {
    const bytes = String(memoryBytes(limits.memoryMiB));
    steps.push(limit("maxMemory", `${dir("memory")}/memory.limit_in_bytes`, bytes));
    // Whether the kernel accounts swap: the parent has the file when the job's cgroup will.
    const memsw = "memory.memsw.limit_in_bytes";
    const parent = dir("memory").slice(0, dir("memory").lastIndexOf("/"));
    if (exists(`${parent}/${memsw}`)) {
      steps.push(limit("maxMemory", `${dir("memory")}/${memsw}`, bytes));
    }
  }
  if (limits.ioBps > 0) {
    for (const device of ioDevices) {
      for (const file of ["blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"]) {
        steps.push(limit("maxIOBPS", `${dir("blkio")}/${file}`, `${device} ${limits.ioBps}`));
      }
    }
  }
  if (limits.pids > 0) steps.push(limit("maxPids", `${dir("pids")}/pids.max`, String(limits.pids)));
  return steps;
}
