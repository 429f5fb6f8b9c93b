/**
 * The workers a test file started, SIGKILLed when the test process unloads. A test that fails or
 * is cut short may not reach its own stop: this leaves no worker (and no init pool) running on.
 * Add each worker started, delete it once stopped.
 */
import type { WorkerProcess } from "./worker.ts";

export function killedAtUnload(): Set<WorkerProcess> {
  const workers = new Set<WorkerProcess>();
  globalThis.addEventListener("unload", () => {
    for (const w of workers) {
      try {
        w.process.kill("SIGKILL");
      } catch { /* gone */ }
    }
  });
  return workers;
}
