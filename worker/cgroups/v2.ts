/**
 * cgroup v2 (unified): one directory per job at `<base>/jobworker-<instance>/<jobId>`, with cpu,
 * memory, io and pids enabled on the way down. The no-internal-processes rule: when the base is
 * not the root cgroup and still holds the worker itself, the worker moves into the leaf
 * `<base>/jobworker-worker` so that the base can delegate controllers.
 */
import {
  childDirs,
  exists,
  type FileReader,
  mkdirOnce,
  parseKeyValues,
  parseNumber,
  readText,
  rmdirQuietly,
  writeSetup,
} from "./files.ts";
import { freezeKillThaw, listPids } from "./kill.ts";
import { JobCgroupDirs } from "./job_cgroup.ts";
import { currentUnifiedPath } from "./layout.ts";
import { checkLimits, CPU_PERIOD_USEC, cpuQuotaUsec, memoryBytes } from "./limits.ts";
import {
  type BaseSetting,
  cgroupDir,
  checkName,
  instanceDirName,
  normalizeBase,
  WORKER_LEAF,
} from "./paths.ts";
import { killAndRemoveAll } from "./remove.ts";
import { denoFileBatch, type FileBatch } from "./file_batch.ts";
import { limitStep, mkdirStep, runSteps, type Step } from "./file_steps.ts";
import {
  type CgroupOptions,
  type DetectedCgroupManager,
  type JobCgroup,
  LimitError,
  type LimitName,
  type Limits,
  type Usage,
} from "./types.ts";

/** The controllers job cgroups get, when the base offers them. */
const CONTROLLERS = ["cpu", "memory", "io", "pids"] as const;

/** What the v2 manager needs to know about the cgroup2 mount. */
export interface V2Mount {
  mountPoint: string;
  reportedMountPoint: string;
  mountRoot: string;
  ownPath: string;
}

/** Sums rbytes= and wbytes= over the devices of io.stat. */
function ioStatBytes(text: string | undefined): { read: number; write: number } {
  let read = 0;
  let write = 0;
  for (const match of (text ?? "").matchAll(/\b([rw])bytes=(\d+)/g)) {
    if (match[1] === "r") read += Number(match[2]);
    else write += Number(match[2]);
  }
  return { read, write };
}

/** The cgroup of one job on v2. */
export class V2JobCgroup extends JobCgroupDirs {
  readonly #dir: string;
  readonly cloneInto: string;

  constructor(dir: string, files: FileBatch) {
    super([dir], files);
    this.#dir = dir;
    this.cloneInto = dir;
  }

  protected readUsage(read: FileReader): Usage {
    const dir = this.#dir;
    const cpu = parseKeyValues(read(`${dir}/cpu.stat`));
    const io = ioStatBytes(read(`${dir}/io.stat`));
    return {
      cpuUsec: cpu.get("usage_usec") ?? 0,
      memoryBytes: parseNumber(read(`${dir}/memory.current`)),
      memoryPeakBytes: parseNumber(read(`${dir}/memory.peak`)),
      ioReadBytes: io.read,
      ioWriteBytes: io.write,
      pids: parseNumber(read(`${dir}/pids.current`)),
      cpuThrottledCount: cpu.get("nr_throttled") ?? 0,
      cpuThrottledUsec: cpu.get("throttled_usec") ?? 0,
    };
  }

  protected kernelCountsNone(): boolean {
    return /^populated 0$/m.test(readText(`${this.#dir}/cgroup.events`) ?? "");
  }

  protected readOomKilled(read: FileReader): boolean {
    const kills = (file: string) => parseKeyValues(read(`${this.#dir}/${file}`)).get("oom_kill");
    return (kills("memory.events") ?? 0) > 0 || (kills("memory.events.local") ?? 0) > 0;
  }

  killAll(): Promise<void> {
    const kill = `${this.#dir}/cgroup.kill`;
    if (exists(kill)) {
      try {
        writeSetup("Cannot kill", kill, "1");
        return Promise.resolve();
      } catch {
        // fall back to freezing below
      }
    }
    const freeze = `${this.#dir}/cgroup.freeze`;
    return freezeKillThaw({
      freeze: () => writeSetup("Cannot freeze", freeze, "1"),
      frozen: () => parseKeyValues(readText(`${this.#dir}/cgroup.events`)).get("frozen") === 1,
      thaw: () => writeSetup("Cannot thaw", freeze, "0"),
      pids: () => this.pids(),
    });
  }
}

/** The limit that needs a controller, for error messages. */
const LIMIT_OF: Record<typeof CONTROLLERS[number], { key: keyof Limits; name: LimitName }> = {
  cpu: { key: "cpuPercent", name: "maxCPU" },
  memory: { key: "memoryMiB", name: "maxMemory" },
  io: { key: "ioBps", name: "maxIOBPS" },
  pids: { key: "pids", name: "maxPids" },
};

/** Job cgroups on cgroup v2. */
export class V2Manager implements DetectedCgroupManager {
  readonly version = 2 as const;
  readonly ioDevices: readonly string[];
  readonly parentDirs: readonly string[];
  readonly #mount: V2Mount;
  readonly #base: BaseSetting;
  readonly #basePath: string;
  readonly #baseDir: string;
  readonly #parentDir: string;
  readonly #procSelf: string;
  readonly #files: FileBatch;

  constructor(mount: V2Mount, options: CgroupOptions, ioDevices: readonly string[]) {
    checkName("instance", options.instance);
    this.#mount = mount;
    this.#files = options.files ?? denoFileBatch;
    this.#procSelf = options.procSelf ?? "/proc/self";
    this.ioDevices = ioDevices;
    this.#base = normalizeBase(options.base, [mount.reportedMountPoint, "/sys/fs/cgroup"], false);
    // By default the worker's own cgroup; if an earlier manager already moved the worker into
    // the leaf, the base is still the leaf's parent.
    const own = mount.ownPath.endsWith(`/${WORKER_LEAF}`)
      ? mount.ownPath.slice(0, -WORKER_LEAF.length - 1) || "/"
      : mount.ownPath;
    this.#basePath = this.#base && "path" in this.#base ? this.#base.path : own;
    this.#baseDir = cgroupDir(mount.mountPoint, this.#basePath);
    this.#parentDir = `${this.#baseDir}/${instanceDirName(options.instance)}`;
    this.parentDirs = [this.#parentDir];
  }

  describe(): string {
    const problem = this.#problem();
    return `cgroup v2 (unified at ${this.#mount.mountPoint}): job cgroups under ${this.#parentDir}` +
      `; IO devices: ${this.ioDevices.join(",") || "none"}` +
      (problem ? `; ${problem} (CreateJob will fail)` : "");
  }

  /** Why no job cgroup can be made now, if so. */
  #problem(): string | undefined {
    if (this.#base && "error" in this.#base) return this.#base.error;
    if (!exists(this.#baseDir)) {
      return `cgroup base ${this.#basePath} does not exist (${this.#baseDir})`;
    }
    return undefined;
  }

  prepare(): void {
    const problem = this.#problem();
    if (problem) throw new LimitError(problem);
    const available = (readText(`${this.#baseDir}/cgroup.controllers`) ?? "").trim().split(/\s+/);
    this.#enable(
      this.#baseDir,
      CONTROLLERS.filter((c) => available.includes(c)),
      this.#basePath !== "/",
    );
  }

  /**
   * The instance's parent cgroup is made and given its controllers synchronously, so that no other
   * create sees it half set up; the job's own directory and limits go through the blocking pool
   * (see files.ts).
   */
  async create(jobId: string, limits: Limits): Promise<JobCgroup> {
    checkName("job id", jobId);
    checkLimits(limits, this.ioDevices);
    const problem = this.#problem();
    if (problem) throw new LimitError(problem);

    const available = (readText(`${this.#baseDir}/cgroup.controllers`) ?? "").trim().split(/\s+/);
    for (const controller of CONTROLLERS) {
      const { key, name } = LIMIT_OF[controller];
      if (limits[key] > 0 && !available.includes(controller)) {
        throw new LimitError(
          `Cannot apply ${name}: the ${controller} controller is not available in ` +
            `${this.#baseDir} (cgroup.controllers: "${available.join(" ")}")`,
          { limit: name, path: `${this.#baseDir}/cgroup.controllers` },
        );
      }
    }
    const wanted = CONTROLLERS.filter((c) => available.includes(c));

    this.#enable(this.#baseDir, wanted, this.#basePath !== "/");
    const createdParent = mkdirOnce(this.#parentDir);
    const jobDir = `${this.#parentDir}/${jobId}`;
    let createdJob = false;
    /** Until the first wait, no other create can have used a parent this one made. */
    let parentShared = false;
    try {
      this.#enable(this.#parentDir, wanted, false);
      parentShared = true;
      // The directory and its limits in one batch, stopped at the first failure.
      const steps = [
        mkdirStep(jobDir),
        ...limitSteps(jobDir, this.#parentDir, limits, this.ioDevices),
      ];
      const failed = await runSteps(this.#files, steps);
      createdJob = failed === undefined || failed.at > 0;
      if (failed) throw failed.error;
    } catch (error) {
      // Not a LimitError: the batch itself failed, and whether it made the directory is unknown.
      if (createdJob || !(error instanceof LimitError)) rmdirQuietly(jobDir);
      if (createdParent && !parentShared) rmdirQuietly(this.#parentDir);
      if (error instanceof LimitError) throw error;
      throw new LimitError(`Cannot create the job's cgroup: ${error}`, { cause: error });
    }
    return new V2JobCgroup(jobDir, this.#files);
  }

  /**
   * Enables `wanted` in dir's cgroup.subtree_control (only those not enabled yet). If that fails
   * with EBUSY because the worker itself sits in `dir` (no internal processes), and `mayMoveWorker`,
   * moves the worker into `<dir>/jobworker-worker` and retries.
   */
  #enable(dir: string, wanted: readonly string[], mayMoveWorker: boolean): void {
    const file = `${dir}/cgroup.subtree_control`;
    const enabled = (readText(file) ?? "").trim().split(/\s+/);
    const missing = wanted.filter((c) => !enabled.includes(c));
    if (missing.length === 0) return;
    const value = missing.map((c) => `+${c}`).join(" ");
    try {
      writeSetup("Cannot enable controllers", file, value);
    } catch (error) {
      if (!(error instanceof LimitError) || error.errno !== "EBUSY" || !mayMoveWorker) throw error;
      const own = currentUnifiedPath(this.#procSelf, this.#mount.mountRoot);
      if (own !== this.#basePath) {
        throw new LimitError(
          `${error.message}: cgroup base ${this.#basePath} holds processes (not the worker's,` +
            ` which is in ${own}); controllers can only be enabled in a cgroup without processes`,
          { path: file, errno: "EBUSY", cause: error },
        );
      }
      const leaf = `${dir}/${WORKER_LEAF}`;
      mkdirOnce(leaf);
      writeSetup(
        "Cannot move the worker into a leaf cgroup",
        `${leaf}/cgroup.procs`,
        `${Deno.pid}`,
      );
      try {
        writeSetup("Cannot enable controllers", file, value);
      } catch (again) {
        const others = listPids([dir]).length;
        throw new LimitError(
          `${(again as Error).message} (after moving the worker into ${leaf}; ` +
            `${others} other process(es) remain in ${dir})`,
          { path: file, errno: (again as LimitError).errno, cause: again },
        );
      }
    }
  }

  cleanupStale(keep: ReadonlySet<string> = new Set()): Promise<number> {
    return killAndRemoveAll(
      childDirs(this.#parentDir).filter((name) => !keep.has(name))
        .map((name) => new V2JobCgroup(`${this.#parentDir}/${name}`, this.#files)),
    );
  }

  open(jobId: string): JobCgroup {
    checkName("job id", jobId);
    return new V2JobCgroup(`${this.#parentDir}/${jobId}`, this.#files);
  }
}

/** The writes of the requested limits into the job's cgroup `dir`, below `parent`. */
function limitSteps(
  dir: string,
  parent: string,
  limits: Limits,
  ioDevices: readonly string[],
): Step[] {
  const steps: Step[] = [];
  if (limits.cpuPercent > 0) {
    steps.push(
      limitStep(
        "maxCPU",
        `${dir}/cpu.max`,
        `${cpuQuotaUsec(limits.cpuPercent)} ${CPU_PERIOD_USEC}`,
      ),
    );
  }
  if (limits.memoryMiB > 0) {
    steps.push(limitStep("maxMemory", `${dir}/memory.max`, String(memoryBytes(limits.memoryMiB))));
    // Whether the kernel accounts swap: the parent has the file when the job's cgroup will.
    if (exists(`${parent}/memory.swap.max`)) {
      steps.push(limitStep("maxMemory", `${dir}/memory.swap.max`, "0"));
    }
  }
  if (limits.ioBps > 0) {
    for (const device of ioDevices) {
      steps.push(
        limitStep(
          "maxIOBPS",
          `${dir}/io.max`,
          `${device} rbps=${limits.ioBps} wbps=${limits.ioBps}`,
        ),
      );
    }
  }
  if (limits.pids > 0) steps.push(limitStep("maxPids", `${dir}/pids.max`, String(limits.pids)));
  return steps;
}
