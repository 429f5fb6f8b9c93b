/**
 * The job database's checkpoint thread (worker/store/checkpointer.ts) starts with the store, not at
 * the first checkpoint request: creating a Web Worker holds the event loop for tens of
 * milliseconds, and the first request comes from a commit in the middle of a job's create.
 *
 * @module
 */
import assert from "node:assert/strict";
import { SqliteStore } from "../worker/store/sqlite.ts";

/** This process's Web Worker threads (Deno names them worker-N). */
function workerThreads(): string[] {
  const names: string[] = [];
  for (const task of Deno.readDirSync("/proc/self/task")) {
    try {
      const comm = Deno.readTextFileSync(`/proc/self/task/${task.name}/comm`).trim();
      if (/^worker-\d+$/.test(comm)) names.push(comm);
    } catch { /* the thread ended */ }
  }
  return names;
}

Deno.test("checkpointer: the checkpoint thread runs from the store's open, before any commit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const before = workerThreads();
    const store = SqliteStore.open(`${dir}/jobs.db`);
    try {
      const after = workerThreads();
      // A thread the Web Worker's own thread starts may carry its name a moment (seen once in
      // CI: "worker-1,worker-1"), so a new name is what tells, not the count.
      assert.ok(
        after.some((name) => !before.includes(name)),
        `no Web Worker thread started at open: ${before.join(",")} -> ${after.join(",")}`,
      );
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
