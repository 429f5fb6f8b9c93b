/**
 * Removing cgroup directories: deepest first, retrying while the kernel still reports EBUSY
 * (processes that were killed but have not finished exiting), for about two seconds.
 */
import { childDirs, describeErrno, errnoOf, sleep } from "./files.ts";
import { listPids } from "./kill.ts";
import { denoFileBatch, type FileBatch } from "./file_batch.ts";

/** How long remove() keeps retrying a busy cgroup. */
export const REMOVE_TIMEOUT_MS = 2000;
const RETRY_MS = 20;

/** How an rmdir of `dir` went: true if it is gone, false if busy; throws on other errors. */
function removedOrBusy(dir: string, error: Error | undefined): boolean {
  if (error === undefined) return true;
  const errno = errnoOf(error);
  if (errno === "ENOENT") return true;
  if (errno === "EBUSY" || errno === "ENOTEMPTY") return false;
  throw new Error(`Cannot remove cgroup ${dir}: ${describeErrno(error)}`, { cause: error });
}

/** Whether an rmdir that ended with `error` (none: it worked) leaves the directory gone. */
export function rmdirDone(error: Error | undefined): boolean {
  return error === undefined || errnoOf(error) === "ENOENT";
}

/** Tries to rmdir one cgroup directory: true if gone, false if busy; throws on other errors. */
async function tryRmdir(dir: string, batch: FileBatch): Promise<boolean> {
  const [result] = await batch.run([{ kind: "rmdir", path: dir }]);
  return removedOrBusy(dir, result!.error);
}

/** Removes a cgroup and those below it; false if one of them is still busy. */
async function removeTree(dir: string, batch: FileBatch): Promise<boolean> {
  return await tryRmdir(dir, batch) ||
    (await removeBelow(dir, batch) && await tryRmdir(dir, batch));
}

/** Removes the cgroups below `dir`, deepest first: true if it had some and all are gone. */
async function removeBelow(dir: string, batch: FileBatch): Promise<boolean> {
  const children = childDirs(dir);
  if (children.length === 0) return false;
  for (const child of children) {
    if (!await removeTree(`${dir}/${child}`, batch)) return false;
  }
  return true;
}

/**
 * Removes the cgroup directories (and any cgroups created below them); retries while busy and
 * throws if one is still busy after about {@link REMOVE_TIMEOUT_MS}. Each round tries every
 * directory in one `batch`, and only a busy one is searched for cgroups below it: a job's cgroup
 * nearly never has any, and listing them for every job's end costs the event loop a read of each
 * hierarchy's directory.
 */
export async function removeCgroupDirs(
  dirs: readonly string[],
  timeoutMs = REMOVE_TIMEOUT_MS,
  batch: FileBatch = denoFileBatch,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let pending = [...dirs];
  for (;;) {
    const tried = await batch.run(pending.map((path) => ({ kind: "rmdir", path })));
    pending = pending.filter((dir, i) => !removedOrBusy(dir, tried[i]!.error));
    if (pending.length === 0) return;
    const cleared = await Promise.all(pending.map((dir) => removeBelow(dir, batch)));
    if (performance.now() > deadline) {
      const pids = listPids(pending);
      throw new Error(
        `cgroup ${pending.join(", ")} still busy after ${timeoutMs / 1000} s` +
          (pids.length ? ` (processes ${pids.join(", ")})` : ""),
      );
    }
    // Cgroups below a busy one were removed: it is tried again at once.
    if (!cleared.some(Boolean)) await sleep(RETRY_MS);
  }
}

/**
 * Kills and removes job cgroups left by a previous run; tries every one, then throws if any could
 * not be removed. Returns how many were removed.
 */
export async function killAndRemoveAll(
  cgroups: Iterable<{ killAll(): Promise<void>; remove(): Promise<void> }>,
): Promise<number> {
  const failures: string[] = [];
  let removed = 0;
  for (const cgroup of cgroups) {
    try {
      await cgroup.killAll();
      await cgroup.remove();
      removed++;
    } catch (error) {
      failures.push(error instanceof Error ? error.message : String(error));
    }
  }
  if (failures.length) {
    throw new Error(`removed ${removed} stale job cgroups, failed: ${failures.join("; ")}`);
  }
  return removed;
}
