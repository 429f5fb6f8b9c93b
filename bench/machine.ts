/** The machine a bench run measured: kept beside its figures, since they only compare in one run. */

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  kernel: string;
  /** "v2", or "v1" ("v1 (hybrid)" when a cgroup2 hierarchy is mounted beside v1). */
  cgroup: string;
  deno: string;
  /** `git rev-parse HEAD`, with "-dirty" when the work tree has changes. */
  commit: string;
}

function cpuModel(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    return /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? "unknown";
  } catch {
    return "unknown";
  }
}

function cgroupVersion(): string {
  try {
    Deno.statSync("/sys/fs/cgroup/cgroup.controllers");
    return "v2";
  } catch {
    try {
      Deno.statSync("/sys/fs/cgroup/unified");
      return "v1 (hybrid)";
    } catch {
      return "v1";
    }
  }
}

async function gitCommit(): Promise<string> {
  const git = async (...args: string[]) => {
    const out = await new Deno.Command("git", { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  };
  try {
    const head = await git("rev-parse", "HEAD");
    if (head === undefined) return "unknown";
    const dirty = await git("status", "--porcelain", "--untracked-files=no");
    return dirty ? `${head}-dirty` : head;
  } catch {
    return "unknown";
  }
}

export async function machineInfo(): Promise<MachineInfo> {
  return {
    cpuModel: cpuModel(),
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    cgroup: cgroupVersion(),
    deno: Deno.version.deno,
    commit: await gitCommit(),
  };
}
