/**
 * What a user would pick instead of jobworker to run `true` isolated, each timed as a new process
 * from this one (spawn until exit), the way the bench times everything else:
 *
 * - `unshare --fork --pid --mount-proc --mount --ipc --uts true` (util-linux): the kernel's floor
 *   for the namespaces a job gets, and the baseline of every start row.
 * - `bwrap` (Debian bubblewrap) with the same namespaces, the host's root bound and a fresh /proc.
 * - `runc run` (Debian runc) of a bundle whose rootfs is Debian's static busybox, with the
 *   namespaces of a job (pid, mount, ipc, uts; host network as jobworker's default) and the limits
 *   the bench worker gives its jobs (JOB_LIMITS: memory, CPU, pids).
 *
 * `make bench` installs them from Debian when missing; a peer that is not installed is left out
 * and the table says so.
 *
 * @module
 */

/** The limits of the bench worker's jobs (passed to it as its defaults) and of the runc bundle. */
export const JOB_LIMITS = { memoryMiB: 512, cpuPercent: 100, pids: 1024 } as const;

/** A worker's settings giving its jobs JOB_LIMITS by default. */
export const JOB_LIMITS_ENV: Readonly<Record<string, string>> = {
  JOB_WORKER_DEFAULT_MEMORY: String(JOB_LIMITS.memoryMiB),
  JOB_WORKER_DEFAULT_CPU: String(JOB_LIMITS.cpuPercent),
  JOB_WORKER_DEFAULT_PIDS: String(JOB_LIMITS.pids),
};

export interface Peer {
  name: string;
  /** Runs `true` once; the time from spawn to exit in ms. */
  start(): Promise<number>;
}

export interface Peers {
  /** `unshare`: always there (util-linux), the floor. */
  floor: Peer;
  /** The others that are installed. */
  others: Peer[];
  /** Those that are not, with why. */
  missing: string[];
  /** Removes the runc bundle, its state and the cgroups runc leaves behind. */
  close(): Promise<void>;
}

async function timedRun(program: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(program, { args, stdout: "null", stderr: "piped" }).output();
  const elapsed = performance.now() - t0;
  if (!out.success) {
    throw new Error(
      `${program} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return elapsed;
}

/** The absolute path of `program` on PATH, or undefined. */
export function which(program: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const path = `${dir}/${program}`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not here */ }
  }
  return undefined;
}

export const unshare: Peer = {
  name: "unshare",
  start: () =>
    timedRun("unshare", ["--fork", "--pid", "--mount-proc", "--mount", "--ipc", "--uts", "true"]),
};

function bwrap(path: string): Peer {
  const args = [
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "true",
  ];
  return { name: "bwrap", start: () => timedRun(path, args) };
}

/** A runc bundle in a temporary directory: busybox as rootfs, `runc spec` made to match a job. */
async function runcBundle(
  runc: string,
  busybox: string,
): Promise<Peer & { close(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-bench-runc-" });
  const cgroupParent = `jobworker-bench-${Deno.pid}`;
  try {
    await Deno.mkdir(`${dir}/rootfs/bin`, { recursive: true });
    await Deno.copyFile(busybox, `${dir}/rootfs/bin/busybox`);
    await Deno.chmod(`${dir}/rootfs/bin/busybox`, 0o755);
    for (const applet of ["true", "sh"]) {
      await Deno.symlink("busybox", `${dir}/rootfs/bin/${applet}`);
    }
    await timedRun(runc, ["spec", "--bundle", dir]);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    config.process.terminal = false;
    config.process.args = ["true"];
    // A job's namespaces: no network namespace (jobworker's default is the host network).
    config.linux.namespaces = ["pid", "ipc", "uts", "mount"].map((type) => ({ type }));
    config.linux.cgroupsPath = `${cgroupParent}/job`;
    config.linux.resources = {
      ...config.linux.resources,
      memory: { limit: JOB_LIMITS.memoryMiB * 1024 * 1024 },
      cpu: { quota: JOB_LIMITS.cpuPercent * 1000, period: 100_000 },
      pids: { limit: JOB_LIMITS.pids },
    };
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
  let n = 0;
  return {
    name: "runc run",
    start: () =>
      timedRun(runc, [
        "--root",
        `${dir}/state`,
        "run",
        "--bundle",
        dir,
        `bench-${Deno.pid}-${n++}`,
      ]),
    async close() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await removeCgroups(cgroupParent);
    },
  };
}

/** runc removes each container's cgroup but not the parent it made for them: remove those. */
async function removeCgroups(name: string): Promise<void> {
  const out = await new Deno.Command("find", {
    args: ["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", name],
    stdout: "piped",
    stderr: "null",
  }).output();
  const dirs = new TextDecoder().decode(out.stdout).split("\n").filter((d) => d !== "");
  for (const dir of dirs.sort((a, b) => b.length - a.length)) {
    await Deno.remove(dir).catch((e) => console.error(`bench: cannot remove ${dir}: ${e}`));
  }
}

/** True when an ELF executable has no program interpreter (PT_INTERP), i.e. is static. */
function isStatic(path: string): boolean {
  const bytes = Deno.readFileSync(path);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    if (view.getUint32(phoff + i * phentsize, true) === PT_INTERP) return false;
  }
  return true;
}

export async function preparePeers(): Promise<Peers> {
  const others: Peer[] = [];
  const missing: string[] = [];
  const closers: (() => Promise<void>)[] = [];
  // A peer that cannot run here (a container without user namespaces, a cgroup layout runc does
  // not handle) is left out with its error rather than failing the whole run.
  const add = async (peer: Peer & { close?(): Promise<void> }) => {
    try {
      await peer.start();
      others.push(peer);
      if (peer.close) closers.push(() => peer.close!());
    } catch (e) {
      missing.push(`${peer.name}: ${e instanceof Error ? e.message.trim() : e}`);
      await peer.close?.();
    }
  };
  const bwrapPath = which("bwrap");
  if (bwrapPath) await add(bwrap(bwrapPath));
  else missing.push("bwrap (Debian bubblewrap) is not installed");
  const runc = which("runc");
  const busybox = which("busybox");
  if (runc && busybox && !isStatic(busybox)) {
    missing.push(`runc run: ${busybox} is not static (the bundle needs Debian busybox-static)`);
  } else if (runc && busybox) {
    await add(await runcBundle(runc, busybox));
  } else {
    missing.push("runc run: needs Debian runc and busybox-static");
  }
  return {
    floor: unshare,
    others,
    missing,
    close: async () => {
      for (const close of closers) await close();
    },
  };
}
