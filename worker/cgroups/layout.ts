/**
 * Where the cgroup hierarchies are and where this process sits in them, read once from
 * /proc/self/mountinfo and /proc/self/cgroup: cgroup v2 when cgroup2 is mounted on /sys/fs/cgroup
 * (unified), otherwise v1 with one mount per hierarchy (cpu and cpuacct may share one).
 */

/** One line of /proc/self/mountinfo. */
export interface MountInfo {
  /** "major:minor" of the filesystem's device (field 3). */
  majorMinor: string;
  /** The directory of the filesystem mounted here (field 4; a cgroup path for cgroup mounts). */
  root: string;
  mountPoint: string;
  /** Per-mount options (rw, nosuid, ...). */
  options: string[];
  fsType: string;
  source: string;
  /** Per-superblock options (for cgroup v1: the controllers). */
  superOptions: string[];
}

/** The v1 controllers the worker uses. */
export const V1_CONTROLLERS = ["cpu", "cpuacct", "memory", "blkio", "pids", "freezer"] as const;
/** A v1 controller the worker uses. */
export type V1Controller = typeof V1_CONTROLLERS[number];

/** One mounted v1 hierarchy. */
export interface V1Hierarchy {
  /** Controllers bound to it, e.g. ["cpu", "cpuacct"]. */
  controllers: string[];
  /** Directory of its root cgroup as seen by this process (mapped into sysRoot for tests). */
  mountPoint: string;
  /** The mount point as the kernel reports it (for stripping a prefixed base). */
  reportedMountPoint: string;
  /** This process's cgroup in it, relative to mountPoint ("/" or "/a/b"). */
  ownPath: string;
}

/** The cgroup setup of the machine, as this process sees it. */
export type CgroupLayout =
  | {
    version: 2;
    /** Directory of the cgroup2 root as seen by this process (mapped into sysRoot for tests). */
    mountPoint: string;
    /** The cgroup2 mount point as the kernel reports it (for stripping a prefixed base). */
    reportedMountPoint: string;
    /** The cgroup shown at the mount point (mountinfo field 4), "/" unless bind-mounted. */
    mountRoot: string;
    /** This process's cgroup, relative to mountPoint. */
    ownPath: string;
  }
  | {
    version: 1;
    /** The mounted hierarchies of the controllers in V1_CONTROLLERS, one entry per hierarchy. */
    hierarchies: V1Hierarchy[];
  };

/** Undoes mountinfo's octal escapes (\040 for a space, ...). */
function unescape(field: string): string {
  return field.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

/** Parses /proc/self/mountinfo text. */
export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-", 6);
    if (dash < 0 || fields.length < dash + 3) continue;
    mounts.push({
      majorMinor: fields[2] ?? "",
      root: unescape(fields[3] ?? ""),
      mountPoint: unescape(fields[4] ?? ""),
      options: (fields[5] ?? "").split(","),
      fsType: fields[dash + 1] ?? "",
      source: unescape(fields[dash + 2] ?? ""),
      superOptions: (fields[dash + 3] ?? "").split(","),
    });
  }
  return mounts;
}

/** One line of /proc/self/cgroup: hierarchy id, controllers ("" for v2), path. */
interface CgroupLine {
  id: string;
  controllers: string[];
  path: string;
}

function parseProcCgroup(text: string): CgroupLine[] {
  const lines: CgroupLine[] = [];
  for (const line of text.split("\n")) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!match) continue;
    const [, id = "", controllers = "", path = "/"] = match;
    lines.push({ id, controllers: controllers ? controllers.split(",") : [], path });
  }
  return lines;
}

/** Maps a path under /sys to the same path under `sysRoot` (identity for the real /sys). */
export function mapSysPath(path: string, sysRoot: string): string {
  if (sysRoot === "/sys") return path;
  if (path === "/sys") return sysRoot;
  return path.startsWith("/sys/") ? sysRoot + path.slice(4) : path;
}

/** A cgroup path relative to a mount whose root is `mountRoot` ("/" when the mount shows all). */
function relativeTo(path: string, mountRoot: string): string {
  if (mountRoot === "/" || mountRoot === "") return path;
  if (path === mountRoot) return "/";
  if (path.startsWith(mountRoot + "/")) return path.slice(mountRoot.length);
  return path;
}

/** Prefers the mount under /sys/fs/cgroup when a hierarchy is mounted more than once. */
function preferred(mounts: MountInfo[]): MountInfo | undefined {
  return mounts.find((m) => m.mountPoint.startsWith("/sys/fs/cgroup")) ?? mounts[0];
}

/** Computes the layout from mountinfo and /proc/self/cgroup text (no caching, no file access). */
export function layoutFrom(mountInfo: string, procCgroup: string, sysRoot: string): CgroupLayout {
  const mounts = parseMountInfo(mountInfo);
  const lines = parseProcCgroup(procCgroup);
  const unifiedPath = lines.find((l) => l.id === "0" && l.controllers.length === 0)?.path ?? "/";
  const cgroup2 = mounts.filter((m) => m.fsType === "cgroup2");
  const v2Layout = (mount: MountInfo): CgroupLayout => ({
    version: 2,
    mountPoint: mapSysPath(mount.mountPoint, sysRoot),
    reportedMountPoint: mount.mountPoint,
    mountRoot: mount.root,
    ownPath: relativeTo(unifiedPath, mount.root),
  });

  const unified = cgroup2.find((m) => m.mountPoint === "/sys/fs/cgroup");
  if (unified) return v2Layout(unified);

  const hierarchies: V1Hierarchy[] = [];
  for (const line of lines) {
    if (line.controllers.length === 0) continue;
    if (!line.controllers.some((c) => (V1_CONTROLLERS as readonly string[]).includes(c))) continue;
    const mount = preferred(
      mounts.filter((m) =>
        m.fsType === "cgroup" && line.controllers.every((c) => m.superOptions.includes(c))
      ),
    );
    if (!mount) continue;
    hierarchies.push({
      controllers: line.controllers,
      mountPoint: mapSysPath(mount.mountPoint, sysRoot),
      reportedMountPoint: mount.mountPoint,
      ownPath: relativeTo(line.path, mount.root),
    });
  }
  if (hierarchies.length === 0) {
    const anyCgroup2 = preferred(cgroup2);
    if (anyCgroup2) return v2Layout(anyCgroup2);
  }
  return { version: 1, hierarchies };
}

/**
 * This process's cgroup v2 path now (read afresh: the worker may have moved itself into a leaf),
 * relative to a cgroup2 mount whose root is `mountRoot`; undefined if unreadable.
 */
export function currentUnifiedPath(procSelf: string, mountRoot: string): string | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`${procSelf}/cgroup`);
  } catch {
    return undefined;
  }
  const line = parseProcCgroup(text).find((l) => l.id === "0" && l.controllers.length === 0);
  return line && relativeTo(line.path, mountRoot);
}

const cache = new Map<string, CgroupLayout>();

/**
 * The layout for this process (or for the fake /proc/self and /sys given), detected once per pair
 * of roots and cached: the mode of a running machine does not change.
 */
export function cgroupLayout(procSelf = "/proc/self", sysRoot = "/sys"): CgroupLayout {
  const key = `${procSelf}\0${sysRoot}`;
  let layout = cache.get(key);
  if (!layout) {
    layout = layoutFrom(
      Deno.readTextFileSync(`${procSelf}/mountinfo`),
      Deno.readTextFileSync(`${procSelf}/cgroup`),
      sysRoot,
    );
    cache.set(key, layout);
  }
  return layout;
}
