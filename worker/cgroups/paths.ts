/**
 * Cgroup path handling: the names the worker gives cgroups, the configured base (with or without
 * a mount point prefix), and joining a cgroup path onto a hierarchy's mount point.
 */

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** The directory under the base that holds one worker instance's job cgroups. */
export function instanceDirName(instance: string): string {
  return `jobworker-${instance}`;
}

/** A short stable name for this state directory, so two workers never share job cgroups. */
export async function instanceName(stateDir: string): Promise<string> {
  const bytes = new TextEncoder().encode(await Deno.realPath(stateDir));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The v2 leaf the worker moves itself into when its own cgroup must delegate controllers. */
export const WORKER_LEAF = "jobworker-worker";

/** Throws a TypeError unless `name` is usable as one cgroup directory name. */
export function checkName(kind: string, name: string): void {
  if (!NAME.test(name)) {
    throw new TypeError(
      `invalid ${kind} ${JSON.stringify(name)}: use letters, digits, '.', '_', '-' (at most 128)`,
    );
  }
}

/** A configured base after normalisation, or why it cannot be used. */
export type BaseSetting = { path: string } | { error: string } | undefined;

/**
 * Normalises JOB_WORKER_CGROUP_BASE to a path relative to the hierarchy root ("/", "/a/b").
 * `mountPrefixes` are mount points a base may start with (stripped); on v1 any
 * `/sys/fs/cgroup/<hierarchy>` prefix is stripped too (`stripAnyHierarchy`).
 */
export function normalizeBase(
  base: string | undefined,
  mountPrefixes: string[],
  stripAnyHierarchy: boolean,
): BaseSetting {
  const raw = base?.trim();
  if (!raw) return undefined;
  let path = raw.replace(/\/+/g, "/");
  const prefix = mountPrefixes.find((p) => p !== "/" && (path === p || path.startsWith(p + "/")));
  if (prefix) {
    path = path.slice(prefix.length);
  } else if (stripAnyHierarchy && path.startsWith("/sys/fs/cgroup/")) {
    path = path.slice("/sys/fs/cgroup/".length).replace(/^[^/]*/, "");
  } else if (path === "/sys/fs/cgroup") {
    path = "/";
  }
  path = "/" + path.split("/").filter(Boolean).join("/");
  if (path.split("/").some((part) => part === "." || part === "..")) {
    return { error: `cgroup base ${raw} must not contain "." or ".." components` };
  }
  return { path };
}

/** The directory of cgroup `path` ("/" or "/a/b") in a hierarchy mounted at `mountPoint`. */
export function cgroupDir(mountPoint: string, path: string): string {
  return path === "/" ? mountPoint : mountPoint.replace(/\/$/, "") + path;
}
