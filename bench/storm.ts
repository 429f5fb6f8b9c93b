/**
 * The worker's event-loop delay as a client sees it: GetServerInfo round trips (no I/O in the
 * worker, so their time is its event-loop delay plus the network) while many jobs write output as
 * fast as they can and half of them are stopped at once, against the same calls to the idle worker.
 * Beside them, the worker's own measure of its event-loop delay (how late its 50 ms timer fired,
 * from its metrics: p99 interpolated within the histogram's buckets, and the exact maximum).
 *
 * @module
 */
import { ApiCalls } from "../tests/helpers/api_calls.ts";
import type { JobClient } from "../cli/client.ts";
import type { BenchContext } from "./context.ts";
import { delay, quantile, type Row } from "./rows.ts";

/** GetServerInfo round trips, one at a time, until `until` settles; their times in ms. */
async function probeLoop(api: ApiCalls, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  until.finally(() => done = true).catch(() => {});
  const times: number[] = [];
  while (!done) {
    const t0 = performance.now();
    await api.serverInfo();
    times.push(performance.now() - t0);
    await delay(5);
  }
  return times;
}

/** The worker's event-loop delay histogram (cumulative counts by upper bound) and max gauge. */
export interface LoopScrape {
  buckets: [number, number][];
  max: number;
  /** Every sample without labels, by metric name (e.g. jobworker_output_ingested_bytes_total). */
  samples: Map<string, number>;
}

export async function scrapeLoop(url: string): Promise<LoopScrape> {
  const text = await (await fetch(url)).text();
  const buckets: [number, number][] = [];
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    const bucket = /^jobworker_event_loop_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$/.exec(line);
    if (bucket) buckets.push([Number(bucket[1]), Number(bucket[2])]);
    const sample = /^(\w+) (\S+)$/.exec(line);
    if (sample) samples.set(sample[1]!, Number(sample[2]));
  }
  return { buckets, max: samples.get("jobworker_event_loop_delay_max_seconds") ?? 0, samples };
}

/** The q-quantile (ms) of the delays observed between two scrapes, as Prometheus interpolates. */
export function loopQuantile(before: LoopScrape, after: LoopScrape, q: number): number {
  const counts = after.buckets.map(([le, n], i) =>
    [le, n - (before.buckets[i]?.[1] ?? 0)] as const
  );
  const total = counts.at(-1)?.[1] ?? 0;
  if (total === 0) return 0;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, n] of counts) {
    if (n >= rank) {
      if (!Number.isFinite(le)) return lower * 1000;
      return (lower + (le - lower) * (n === below ? 0 : (rank - below) / (n - below))) * 1000;
    }
    lower = le;
    below = n;
  }
  return lower * 1000;
}

/** The worker's loop delay while `phase` runs: p99 and max, ms. */
async function loopDuring<T>(
  url: string,
  phase: () => Promise<T>,
): Promise<{ result: T; p99: number; max: number }> {
  const before = await scrapeLoop(url);
  const result = await phase();
  const after = await scrapeLoop(url);
  const max = after.max * 1000;
  // Interpolating within a wide bucket can overshoot the largest delay actually seen.
  return { result, p99: Math.min(loopQuantile(before, after, 0.99), max), max };
}

function metricsUrl(ctx: BenchContext): string {
  for (const line of ctx.worker.logs) {
    if (!line.startsWith("{")) continue;
    const parsed = JSON.parse(line) as { msg?: string; port?: number };
    if (parsed.msg === "metrics listening" && parsed.port) {
      return `http://127.0.0.1:${parsed.port}/metrics`;
    }
  }
  throw new Error("the bench's worker logged no 'metrics listening' line");
}

/**
 * The bench's storm writers: `count` jobs each echoing 33-byte lines as fast as it can, created 20
 * at a time. Each id goes into `ids` as its job starts, so the caller's cleanup stops every one that
 * did, however far this got.
 */
export async function startStormWriters(
  client: JobClient,
  count: number,
  ids: string[],
): Promise<void> {
  for (let i = 0; i < count; i += 20) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(20, count - i) }, () =>
        client.createJob({
          command: "sh",
          args: ["-c", "while :; do echo 0123456789abcdef0123456789abcdef; done"],
        })),
    );
    ids.push(...batch.map((j) => j.id));
  }
}

/**
 * Measures with `measure` on the idle worker, then again with `count` storm writers running (1 s
 * after the last one started). The writers are stopped and deleted however it ends.
 */
export async function idleThenStorm<T>(
  client: JobClient,
  count: number,
  measure: (phase: "idle" | "storm") => Promise<T>,
): Promise<{ idle: T; storm: T }> {
  const idle = await measure("idle");
  const writers: string[] = [];
  try {
    await startStormWriters(client, count, writers);
    await delay(1000);
    return { idle, storm: await measure("storm") };
  } finally {
    await Promise.all(writers.map((id) => client.stopJob(id, { force: true }).catch(() => {})));
    await Promise.all(writers.map((id) => client.deleteJob(id).catch(() => {})));
  }
}

export async function stormRows(ctx: BenchContext): Promise<Row[]> {
  const writersCount = ctx.quick ? 40 : 200;
  const stopsCount = writersCount / 2;
  const { client } = ctx;
  const api = new ApiCalls(ctx.certDir, ctx.worker.address);
  const metrics = metricsUrl(ctx);
  try {
    const idleRun = await loopDuring(metrics, () => probeLoop(api, delay(ctx.quick ? 1500 : 3000)));
    const idle = idleRun.result;
    const writers: string[] = [];
    const starting = (async () => {
      await startStormWriters(client, writersCount, writers);
      await delay(2000);
    })();
    const writingRun = await loopDuring(metrics, () => probeLoop(api, starting));
    const writing = writingRun.result;
    await starting;
    // Half the writers stopped at once: half of those with a grace (SIGTERM, then SIGKILL), half forced.
    const stopping = Promise.all(
      writers.slice(0, stopsCount).map((id, i) =>
        client.stopJob(id, i % 2 === 0 ? { force: true } : { graceSeconds: 1 })
      ),
    );
    const stopsRun = await loopDuring(metrics, () => probeLoop(api, stopping));
    const stops = stopsRun.result;
    await stopping;
    await Promise.all(writers.slice(stopsCount).map((id) => client.stopJob(id, { force: true })));
    const rows: Row[] = [];
    const noisy = "a tail against an idle baseline of a few ms: too noisy to hold to a record";
    for (
      const [name, busy, loop] of [
        [`${writersCount} writers`, writing, writingRun],
        [`${stopsCount} stops`, stops, stopsRun],
      ] as const
    ) {
      const probe = (stat: string, ours: number, base: number, unchecked?: string): Row => ({
        name: `loop probe ${stat}, ${name}`,
        ours,
        base,
        baseLabel: "idle worker",
        unit: "ms",
        higherIsBetter: false,
        ...(unchecked === undefined ? {} : { unchecked }),
      });
      // The stops last a second or two: too few probes for even their p50 to hold (1.4 to 4.3
      // in successive full runs here).
      const fewProbes = busy === stops ? "too few probes during the stops to hold" : undefined;
      rows.push(probe("p50", quantile(busy, 0.5), quantile(idle, 0.5), fewProbes));
      rows.push(probe("p99", quantile(busy, 0.99), quantile(idle, 0.99), noisy));
      rows.push(probe("max", Math.max(...busy), Math.max(...idle), noisy));
      for (const stat of ["p99", "max"] as const) {
        rows.push({
          name: `worker loop delay ${stat}, ${name}`,
          ours: loop[stat],
          // A floor of 1 ms: an idle loop's delay is often 0, which no ratio can be taken of.
          base: Math.max(1, idleRun[stat]),
          baseLabel: "idle worker (at least 1 ms)",
          unit: "ms",
          higherIsBetter: false,
          unchecked: noisy,
        });
      }
    }
    return rows;
  } finally {
    api.close();
  }
}
