/**
 * Start rows (issue 8): how long a job `true` takes to start, against the unshare floor and the
 * peers, all run in the same loop so that each round sees the same machine.
 *
 * - server side: CreateJob received by the manager until the command exec'd, read from the
 *   worker's own 'job started' log line (`startMs`, LOG_FORMAT=json);
 * - client side: the CreateJob round trip over mTLS (p50 and p99);
 * - create to ended: until GetJob reports the job ended;
 * - 100 starts 20 at a time against 100 unshare runs 20 at a time.
 *
 * @module
 */
import { jobworker } from "../proto/service.ts";
import type { BenchContext } from "./context.ts";
import type { Peers } from "./peers.ts";
import { delay, median, progress, quantile, type Row } from "./rows.ts";
import { cpuSnapshot, describeCpu } from "./cpu_accounting.ts";

/** Reads `startMs` of the worker's 'job started' lines, by job id, as they arrive. */
class StartLog {
  #seen = 0;
  readonly #startMs = new Map<string, number>();
  /** Each start's `phasesMs` (ms from CreateJob received to the end of each phase). */
  readonly phases = new Map<string, Record<string, number>>();

  constructor(private readonly logs: readonly string[]) {}

  async of(id: string, timeoutMs = 10_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      for (; this.#seen < this.logs.length; this.#seen++) {
        const line = this.logs[this.#seen]!;
        if (!line.includes('"job started"')) continue;
        const fields = JSON.parse(line) as {
          id?: string;
          startMs?: number;
          phasesMs?: Record<string, number>;
        };
        if (fields.id !== undefined && typeof fields.startMs === "number") {
          this.#startMs.set(fields.id, fields.startMs);
          if (fields.phasesMs) this.phases.set(fields.id, fields.phasesMs);
        }
      }
      const ms = this.#startMs.get(id);
      if (ms !== undefined) return ms;
      if (performance.now() > deadline) {
        throw new Error(`no 'job started' line with startMs for job ${id} (is LOG_FORMAT json?)`);
      }
      await delay(1);
    }
  }
}

/**
 * The worker's main thread (its event loop) from /proc/<pid>/task/<pid>/schedstat: ms on a CPU and
 * ms runnable but waiting for one; undefined where the kernel does not keep schedstats.
 */
function loopThread(pid: number): { cpuMs: number; waitMs: number } | undefined {
  try {
    const [cpu, wait] = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/schedstat`).split(" ");
    return { cpuMs: Number(cpu) / 1e6, waitMs: Number(wait) / 1e6 };
  } catch {
    return undefined;
  }
}

async function inBatches(
  count: number,
  width: number,
  fn: () => Promise<unknown>,
): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i += width) {
    await Promise.all(Array.from({ length: Math.min(width, count - i) }, fn));
  }
  return performance.now() - t0;
}

export async function startRows(ctx: BenchContext, peers: Peers): Promise<Row[]> {
  // 100 in quick mode too (3 s more): of 30 starts the p99 was the
  // slowest, which one start's bad luck sets alone (the first after the warm-up, still cold in
  // the worker and the client; the fresh worker's first mark-compact, around its 21st start; a
  // slow sync of the record); of 100 it is the second slowest.
  const rounds = 100;
  const { client } = ctx;
  const log = new StartLog(ctx.worker.logs);
  const floor: number[] = [];
  const peerTimes = peers.others.map(() => [] as number[]);
  const server: number[] = [];
  const roundTrip: number[] = [];
  const ids: string[] = [];
  const toEnded: number[] = [];
  /** Per start, the worker's loop thread during the round trip: ms on a CPU, ms waiting for one. */
  const loop: ({ cpuMs: number; waitMs: number } | undefined)[] = [];
  const workerPid = ctx.worker.process.pid;
  // Warm-up: the first of each pays for cold caches.
  await peers.floor.start();
  for (const peer of peers.others) await peer.start();
  await log.of((await client.createJob({ command: "true" })).id);
  progress(
    `${rounds} sequential starts: unshare, ${
      peers.others.map((p) => p.name).join(", ")
    }, jobworker`,
  );
  for (let i = 0; i < rounds; i++) {
    floor.push(await peers.floor.start());
    for (const [j, peer] of peers.others.entries()) peerTimes[j]!.push(await peer.start());
    const before = loopThread(workerPid);
    const t0 = performance.now();
    const job = await client.createJob({ command: "true" });
    roundTrip.push(performance.now() - t0);
    const after = loopThread(workerPid);
    loop.push(
      before && after
        ? { cpuMs: after.cpuMs - before.cpuMs, waitMs: after.waitMs - before.waitMs }
        : undefined,
    );
    ids.push(job.id);
    server.push(await log.of(job.id));
    while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) await delay(1);
    toEnded.push(performance.now() - t0);
  }
  // The tail is one or two starts: say where the slowest spent its time (the worker's phases), and
  // whether its loop thread worked more than usual (a V8 mark-compact: the first comes around the
  // 21st start of a fresh worker) or waited for a CPU (the machine's other work).
  const slowest = roundTrip.indexOf(Math.max(...roundTrip));
  const phases = Object.entries(log.phases.get(ids[slowest]!) ?? {}).map(([k, v]) => `${k} ${v}`);
  const thread = (at: number) => {
    const l = loop[at];
    return l ? `${l.cpuMs.toFixed(1)} ms on a CPU, ${l.waitMs.toFixed(1)} ms waiting for one` : "?";
  };
  const typicalLoop = (key: "cpuMs" | "waitMs") =>
    median(loop.flatMap((l) => l ? [l[key]] : [])).toFixed(1);
  progress(
    `slowest CreateJob round trip: #${slowest + 1}, ${roundTrip[slowest]!.toFixed(1)} ms; ` +
      `worker ${server[slowest]} ms, phases ending at (ms): ${phases.join(", ")}; ` +
      `the worker's loop thread: ${thread(slowest)} (median ${typicalLoop("cpuMs")} and ` +
      `${typicalLoop("waitMs")})`,
  );
  // And where a typical start spends it: each phase's end, median over the sequential starts.
  const ends = new Map<string, number[]>();
  for (const id of ids) {
    for (const [name, ms] of Object.entries(log.phases.get(id) ?? {})) {
      ends.set(name, [...ends.get(name) ?? [], ms]);
    }
  }
  const typical = [...ends].map(([name, ms]) => [name, median(ms)] as const)
    .sort((a, b) => a[1] - b[1]).map(([name, ms]) => `${name} ${ms.toFixed(2)}`);
  progress(`phases ending at, median (ms): ${typical.join(", ")}`);
  progress("100 starts, 20 at a time: unshare, jobworker, unshare again");
  // The floor before and after ours, the faster of the two: one burst of unshare runs is short
  // enough for a neighbour's hiccup to double it.
  const before = await inBatches(100, 20, peers.floor.start);
  const [shares0, loop0] = [cpuSnapshot(workerPid), loopThread(workerPid)];
  const parallelOurs = await inBatches(100, 20, () => client.createJob({ command: "true" }));
  const [shares1, loop1] = [cpuSnapshot(workerPid), loopThread(workerPid)];
  const parallelBase = Math.min(before, await inBatches(100, 20, peers.floor.start));
  // Whether the burst is bound by the worker's loop thread; then where all of the CPUs' time went
  // (the worker's among it): the burst is bound by all of it together.
  if (loop0 && loop1) {
    progress(
      `the burst of ${parallelOurs.toFixed(0)} ms: the worker's loop thread used ${
        ((loop1.cpuMs - loop0.cpuMs) / 100).toFixed(2)
      } ms of CPU per start (the jobs' cleanup after they ended included, as far as it fell ` +
        `inside the burst)`,
    );
  }
  progress(`the burst, ${describeCpu(shares0, shares1, 100)}`);

  const floorP50 = median(floor);
  const vsFloor = (name: string, ours: number, ratioAtMost?: number): Row => ({
    name,
    ours,
    base: floorP50,
    baseLabel: "unshare p50",
    unit: "ms",
    higherIsBetter: false,
    ...(ratioAtMost === undefined ? {} : { target: { ratioAtMost } }),
  });
  const rows: Row[] = [
    vsFloor("start, server side p50", median(server), 3),
    vsFloor("start, CreateJob round trip p50", median(roundTrip), 4),
    {
      ...vsFloor("start, CreateJob round trip p99", quantile(roundTrip, 0.99), 8),
      unchecked: `a tail of ${rounds} starts: one hiccup of the machine doubles it`,
    },
    vsFloor("create until GetJob says ended p50", median(toEnded)),
    {
      name: "100 starts, 20 at a time",
      ours: parallelOurs,
      base: parallelBase,
      baseLabel: "unshare, same; best of 2",
      unit: "ms",
      higherIsBetter: false,
      target: { ratioAtMost: 4 },
    },
  ];
  for (const [j, peer] of peers.others.entries()) {
    rows.push({
      ...vsFloor(`peer: ${peer.name} start p50`, median(peerTimes[j]!)),
      unchecked: "a peer's figure",
    });
  }
  const runc = peers.others.findIndex((p) => p.name === "runc run");
  if (runc >= 0) {
    rows.push({
      name: "start, CreateJob round trip p50 vs runc run",
      ours: median(roundTrip),
      base: median(peerTimes[runc]!),
      baseLabel: "runc run p50",
      unit: "ms",
      higherIsBetter: false,
      unchecked: "the same start is checked against the floor",
    });
  }
  return rows;
}
