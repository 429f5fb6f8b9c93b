/** Looks at the host's cgroup tree directly, to check what the worker left there. */

/** 2 when /sys/fs/cgroup is the unified hierarchy, else 1. */
export function cgroupVersion(): 1 | 2 {
  try {
    Deno.statSync("/sys/fs/cgroup/cgroup.controllers");
    return 2;
  } catch {
    return 1;
  }
}

/** Every directory under /sys/fs/cgroup (any hierarchy) whose name is `name`. */
export function cgroupDirsNamed(name: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 10) return;
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory) continue;
      const path = `${dir}/${entry.name}`;
      if (entry.name === name) found.push(path);
      walk(path, depth + 1);
    }
  };
  walk("/sys/fs/cgroup", 0);
  return found;
}
