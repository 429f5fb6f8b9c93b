/**
 * What a worker that did not come back is doing, for a test's failure message. Written for the
 * in-place reload that never listened again (tests/cli_reload_test.ts): a worker that died (its
 * status says by what: 137 is a SIGKILL), one blocked in a system call (each thread's state and
 * kernel wait channel), and one whose stop signals are parked for an exec that never came (SIGTERM
 * pending and blocked on its main thread, worker/runtime/reload.ts) look alike from outside.
 */
import type { WorkerProcess } from "./worker.ts";
import { readOrNull } from "./host_procs.ts";

/** The worker's exit status if it has ended, else its threads' state; then its last log lines. */
export async function describeWorker(worker: WorkerProcess, lastLines = 15): Promise<string> {
  const running = Symbol("running");
  // An exit already known wins the race: its promise comes first and has settled.
  const status = await Promise.race([worker.exited, Promise.resolve(running)]);
  const lines = status === running
    ? [`the worker (pid ${worker.process.pid}) is still running:`, ...threads(worker.process.pid)]
    : [`the worker has exited: code ${status.code}, signal ${status.signal ?? "none"}`];
  const logs = worker.logs.slice(-lastLines);
  return [...lines, `its last ${logs.length} log lines:`, ...logs].join("\n");
}

/** One line per thread: name, state, kernel wait channel, pending and blocked signals. */
function threads(pid: number): string[] {
  const shared = field(readOrNull(`/proc/${pid}/status`), "ShdPnd");
  const lines = [`  pending for the process: ${signals(shared)}`];
  let tids: string[];
  try {
    tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
  } catch {
    return [...lines, "  (its /proc entry is gone)"];
  }
  for (const tid of tids.sort((a, b) => Number(a) - Number(b))) {
    const status = readOrNull(`/proc/${pid}/task/${tid}/status`);
    const wchan = readOrNull(`/proc/${pid}/task/${tid}/wchan`) ?? "?";
    lines.push(
      `  ${tid} ${field(status, "Name")} ${field(status, "State")} wchan=${wchan} ` +
        `pending=${signals(field(status, "SigPnd"))} blocked=${signals(field(status, "SigBlk"))}`,
    );
  }
  return lines;
}

function field(status: string | null, name: string): string {
  return new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status ?? "")?.[1] ?? "?";
}

/** A /proc signal mask (hex) as the signal numbers it holds, e.g. "1,15". */
function signals(mask: string): string {
  if (!/^[0-9a-f]+$/.test(mask)) return mask;
  const bits = BigInt(`0x${mask}`);
  const set: number[] = [];
  for (let n = 1; n <= 64; n++) if ((bits >> BigInt(n - 1)) & 1n) set.push(n);
  return set.length > 0 ? set.join(",") : "none";
}
