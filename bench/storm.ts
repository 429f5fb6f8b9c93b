/**
 * The worker's event-loop delay as a client sees it: GetServerInfo round trips (no I/O in the
 * worker, so their time is its event-loop delay plus the network) while many jobs write output as
 * fast as they can and half of them are stopped at once, against the same calls to the idle worker.
 *
 * @module
 */
import { ApiCalls } from "../tests/helpers/api_calls.ts";
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

export async function stormRows(ctx: BenchContext): Promise<Row[]> {
  const writersCount = ctx.quick ? 40 : 200;
  const stopsCount = writersCount / 2;
  const { client } = ctx;
  const api = new ApiCalls(ctx.certDir, ctx.worker.address);
  try {
    const idle = await probeLoop(api, delay(ctx.quick ? 1500 : 3000));
    const writers: string[] = [];
    const starting = (async () => {
      for (let i = 0; i < writersCount; i += 20) {
        const batch = await Promise.all(
          Array.from({ length: 20 }, () =>
            client.createJob({
              command: "sh",
              args: ["-c", "while :; do echo 0123456789abcdef0123456789abcdef; done"],
            })),
        );
        writers.push(...batch.map((j) => j.id));
      }
      await delay(2000);
    })();
    const writing = await probeLoop(api, starting);
    await starting;
    // Half the writers stopped at once: half of those with a grace (SIGTERM, then SIGKILL), half forced.
    const stopping = Promise.all(
      writers.slice(0, stopsCount).map((id, i) =>
        client.stopJob(id, i % 2 === 0 ? { force: true } : { graceSeconds: 1 })
      ),
    );
    const stops = await probeLoop(api, stopping);
    await stopping;
    await Promise.all(writers.slice(stopsCount).map((id) => client.stopJob(id, { force: true })));
    const rows: Row[] = [];
    const noisy = "a tail against an idle baseline of a few ms: too noisy to hold to a record";
    for (
      const [name, busy] of [[`${writersCount} writers`, writing], [
        `${stopsCount} stops`,
        stops,
      ]] as const
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
    }
    return rows;
  } finally {
    api.close();
  }
}
