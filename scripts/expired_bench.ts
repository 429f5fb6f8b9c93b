/**
 * Times SqliteStore.expired, the query of the retention pass that runs at every job's end, on
 * real database files holding N ended jobs (and 20 running ones among the newest), N = 1000,
 * 10000, 100000: with nothing expired (keep N, the age limit 7 days), one job beyond the count
 * (keep N - 1), and ten beyond the age limit (the oldest ten ended before `endedBefore`).
 *
 * Usage: deno run -A scripts/expired_bench.ts [OTHER_SQLITE_TS]   (NS=1000,10000 for other N)
 *
 * With OTHER_SQLITE_TS (another checkout's worker/store/sqlite.ts, e.g. the one before a change),
 * both stores are timed on files of their own with the same rows, in alternating rounds (A B B A
 * ...), and the ratio of their median times per call is printed, other/this. Without it, this
 * store's median at each N relative to its median at the smallest N.
 */
import type { JobRecord } from "../worker/jobs/job.ts";
import type { JobStore } from "../worker/jobs/store.ts";
import { SqliteStore } from "../worker/store/sqlite.ts";
import { jobSpec } from "../tests/helpers/job_records.ts";

type Open = (path: string) => JobStore;
const stores: [string, Open][] = [["this", (path) => SqliteStore.open(path)]];
if (Deno.args[0] !== undefined) {
  const other = await import(new URL(Deno.args[0], `file://${Deno.cwd()}/`).href);
  stores.push(["other", (path) => other.SqliteStore.open(path)]);
}

const DAY = 86_400_000;
const now = Date.now();

function record(seq: number, ended: boolean, endTime: number): JobRecord {
  return {
    id: `job-${seq}`,
    seq,
    owner: seq % 3 === 0 ? "bob" : "alice",
    spec: jobSpec({ command: "sh", args: ["-c", `echo ${seq}`], env: ["PATH=/usr/bin:/bin"] }),
    status: ended ? "COMPLETED" : "RUNNING",
    createTime: new Date(endTime - 50),
    startTime: new Date(endTime - 40),
    endTime: ended ? new Date(endTime) : undefined,
    exit: ended ? { exitCode: 0, signal: 0 } : undefined,
    oomKilled: false,
    reason: ended ? "exited with code 0" : "",
    finalUsage: ended
      ? { cpuUsec: 5, memoryBytes: 0, memoryPeakBytes: 9, ioReadBytes: 1, ioWriteBytes: 2, pids: 0 }
      : undefined,
    outputBytes: 3,
    outputTruncated: false,
  };
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const base: Record<string, number> = {};

/** Prints how the stores' median times compare (or this store's against its smallest N's). */
function report(n: number, what: string, times: Map<string, number[]>, ids = ""): void {
  const medians = new Map([...times].map(([name, xs]) => [name, median(xs)]));
  if (stores.length === 2) {
    const ratio = medians.get("other")! / medians.get("this")!;
    console.log(`N=${n} ${what}${ids}: other/this ${ratio.toFixed(2)}x`);
  } else {
    base[what] ??= medians.get("this")!;
    const ratio = medians.get("this")! / base[what]!;
    console.log(`N=${n} ${what}${ids}: ${ratio.toFixed(2)}x the smallest N's`);
  }
}

const dir = await Deno.makeTempDir({ prefix: "expired-bench-" });
try {
  for (const n of (Deno.env.get("NS") ?? "1000,10000,100000").split(",").map(Number)) {
    // Ended a second apart (the newest just now), 20 running jobs among the newest.
    const running = (seq: number) => (n + 20 - seq) % 10 === 0 && n + 20 - seq < 200;
    const opened = stores.map(([name, open]) => ({ name, store: open(`${dir}/${name}-${n}.db`) }));
    const writes = new Map(opened.map(({ name }) => [name, [] as number[]]));
    for (let seq = 1; seq <= n + 20; seq++) {
      for (const { name, store } of seq % 2 === 0 ? opened : [...opened].reverse()) {
        const t0 = performance.now();
        store.insert(record(seq, !running(seq), now - (n + 20 - seq) * 1000));
        writes.get(name)!.push(performance.now() - t0);
      }
    }
    report(n, "insert", writes);
    let ended = 0;
    for (let seq = 1; seq <= n + 20; seq++) if (!running(seq)) ended++;
    const week = new Date(now - 7 * DAY);
    const cases = [
      ["nothing expired", ended, week],
      ["one by count", ended - 1, week],
      ["ten by age", ended, new Date(now - (n + 10) * 1000 + 1)],
    ] as const;
    for (const [what, keep, endedBefore] of cases) {
      const times = new Map(opened.map(({ name }) => [name, [] as number[]]));
      const results = new Map<string, string>();
      const calls = n >= 100_000 ? 10 : 50;
      for (let round = 0; round < 20; round++) {
        const order = round % 2 === 0 ? opened : [...opened].reverse();
        for (const { name, store } of order) {
          for (let i = 0; i < calls; i++) {
            const t0 = performance.now();
            const ids = store.expired(keep, endedBefore);
            times.get(name)!.push(performance.now() - t0);
            results.set(name, ids.join(" "));
          }
        }
      }
      const returned = [...new Set(results.values())].map((ids) => `[${ids}]`).join(" but ");
      report(n, `expired, ${what}`, times, ` (ids: ${returned})`);
    }
    // A job's life in the store, as the manager writes it: created, started, ended, the
    // retention pass at its end, and the job it finds beyond the count deleted.
    const ops = ["create", "start", "end", "retention pass", "delete", "a job's life"];
    const life = new Map(
      ops.map((op) => [op, new Map(opened.map(({ name }) => [name, [] as number[]]))]),
    );
    const time = <T>(op: string, name: string, fn: () => T): T => {
      const t0 = performance.now();
      const result = fn();
      const took = performance.now() - t0;
      life.get(op)!.get(name)!.push(took);
      life.get("a job's life")!.get(name)![0]! += took;
      return result;
    };
    for (let i = 1; i <= 500; i++) {
      const seq = n + 20 + i;
      for (const { name, store } of i % 2 === 0 ? opened : [...opened].reverse()) {
        life.get("a job's life")!.get(name)!.unshift(0);
        time("create", name, () => store.insert(record(seq, false, now)));
        time("start", name, () => store.update(record(seq, false, now)));
        time("end", name, () => store.update(record(seq, true, now)));
        const ids = time("retention pass", name, () => store.expired(ended, week));
        for (const id of ids) time("delete", name, () => store.delete(id));
      }
    }
    for (const [op, times] of life) report(n, op, times);
    for (const { store } of opened) {
      await store.durable();
      store.close();
    }
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
