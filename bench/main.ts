/**
 * `make bench`: jobworker against baselines measured in the same run on the same machine, reported
 * as ratios (never as absolute limits).
 *
 * - start: CreateJob of `true` until it returns (the job RUNNING, isolated, in its cgroup) against
 *   util-linux `unshare --fork --pid --mount-proc --mount --ipc --uts true` spawned locally.
 * - end to end: a job `true` from CreateJob until GetJob reports it ended, same baseline.
 * - stream: 256 MiB of a job's output through GetJobsStream over mTLS against the same bytes read
 *   from a local pipe (`head -c 256M /dev/zero` through Deno.Command).
 * - parallel start: 100 jobs created 20 at a time against 100 unshare runs 20 at a time.
 * - stalled readers: the worker's RSS growth with 20 readers of a 200 MiB job that stopped reading
 *   (half raw HTTP/2 with 2 GiB windows, half gRPC) against 20 readers reading at full speed, and
 *   what is left once the stalled ones disconnect.
 * - burst: 300 creates from 30 clients against 300 one after another; another client's GetJobs p99
 *   and new connections' handshake-plus-first-call p99 during the burst against the idle worker.
 * - client start: `jobworker list` as a new process against `deno eval ''` (bench/client_start.ts).
 * - event-loop delay in a storm: the round trip of GetServerInfo (which does no I/O, so its time is
 *   the worker's event-loop delay plus the network) while 200 jobs write output and 100 of them
 *   are stopped at once, against the same calls to the idle worker.
 */
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import { clientFor } from "../tests/helpers/clients.ts";
import { ApiCalls } from "../tests/helpers/api_calls.ts";
import { jobworker } from "../proto/service.ts";
import { createBurst, stalledReaderMemory } from "./load.ts";
import { measureClientStart } from "./client_start.ts";

const MiB = 1024 * 1024;
const STREAM_BYTES = 256 * MiB;
const ROUNDS = 30;

function median(values: number[]): number {
  return quantile(values, 0.5);
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!;
}

/** GetServerInfo round trips, one at a time, until `until` resolves; their times in ms. */
async function probeLoop(api: ApiCalls, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  until.finally(() => done = true);
  const times: number[] = [];
  while (!done) {
    const t0 = performance.now();
    await api.serverInfo();
    times.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 5));
  }
  return times;
}

async function startsAndStream(): Promise<void> {
  const unshareTimes: number[] = [];
  const startTimes: number[] = [];
  const endTimes: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    unshareTimes.push(await unshareTrue());
    const t0 = performance.now();
    const job = await client.createJob({ command: "true" });
    startTimes.push(performance.now() - t0);
    while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) {
      await new Promise((r) => setTimeout(r, 1));
    }
    endTimes.push(performance.now() - t0);
  }
  progress("sequential starts done");
  row("start (median ms)", median(startTimes), median(unshareTimes), "ms");
  row("create to ended (median ms)", median(endTimes), median(unshareTimes), "ms");

  progress("parallel starts");
  const parallelBase = await inBatches(100, 20, unshareTrue);
  const parallelOurs = await inBatches(100, 20, () => client.createJob({ command: "true" }));
  row("100 starts, 20 at a time (ms)", parallelOurs, parallelBase, "ms");

  const job = await client.createJob({
    command: "head",
    args: ["-c", String(STREAM_BYTES), "/dev/zero"],
  });
  while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const t0 = performance.now();
  let total = 0;
  for await (const chunk of client.stream(job.id)) total += chunk.payload.length;
  if (total !== STREAM_BYTES) throw new Error(`streamed ${total} bytes`);
  const ours = STREAM_BYTES / MiB / ((performance.now() - t0) / 1000);
  row("stream 256 MiB (MiB/s)", ours, await pipeThroughput(), "MiB/s", true);
}

const STORM_WRITERS = 200;
const STORM_STOPS = 100;

async function unshareTrue(): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command("unshare", {
    args: ["--fork", "--pid", "--mount-proc", "--mount", "--ipc", "--uts", "true"],
    stdout: "null",
    stderr: "null",
  }).output();
  if (!out.success) throw new Error("unshare failed");
  return performance.now() - t0;
}

async function pipeThroughput(): Promise<number> {
  const t0 = performance.now();
  const child = new Deno.Command("head", {
    args: ["-c", String(STREAM_BYTES), "/dev/zero"],
    stdout: "piped",
  }).spawn();
  let total = 0;
  for await (const chunk of child.stdout) total += chunk.length;
  await child.status;
  if (total !== STREAM_BYTES) throw new Error(`pipe read ${total} bytes`);
  return STREAM_BYTES / MiB / ((performance.now() - t0) / 1000);
}

async function inBatches<T>(count: number, width: number, fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i += width) {
    await Promise.all(Array.from({ length: Math.min(width, count - i) }, fn));
  }
  return performance.now() - t0;
}

const pki = await makePki();
const worker = await WorkerProcess.start({ certDir: pki.dir });
const client = clientFor(pki.dir, worker.address);
const rows: [string, string, string, string][] = [];
const progress = (what: string) => console.error(`bench: ${what}`);
const row = (name: string, ours: number, base: number, unit: string, higherIsBetter = false) => {
  const ratio = higherIsBetter ? base / ours : ours / base;
  rows.push([name, `${ours.toFixed(1)} ${unit}`, `${base.toFixed(1)} ${unit}`, ratio.toFixed(2)]);
};

/** BENCH_ONLY=storm runs only the event-loop storm (for quick runs; `make bench` runs all). */
const only = Deno.env.get("BENCH_ONLY");

try {
  await unshareTrue();
  await client.createJob({ command: "true" });
  if (only !== "storm") await startsAndStream();
  if (only !== "storm") {
    progress("client start");
    const clientStart = await measureClientStart(worker.address, pki.dir);
    row("jobworker list vs deno eval '' (ms)", clientStart.list, clientStart.baseline, "ms");
  }

  progress("event-loop delay: idle, then a storm of writers and stops");
  const api = new ApiCalls(pki.dir, worker.address);
  try {
    const idle = await probeLoop(api, new Promise((r) => setTimeout(r, 3000)));
    const writers: string[] = [];
    const starting = (async () => {
      for (let i = 0; i < STORM_WRITERS; i += 20) {
        const batch = await Promise.all(
          Array.from({ length: 20 }, () =>
            client.createJob({
              command: "sh",
              args: ["-c", "while :; do echo 0123456789abcdef0123456789abcdef; done"],
            })),
        );
        writers.push(...batch.map((j) => j.id));
      }
      await new Promise((r) => setTimeout(r, 2000));
    })();
    const writing = await probeLoop(api, starting);
    await starting;
    // 100 stops at once: half with a grace (SIGTERM, then SIGKILL), half forced.
    const stopping = Promise.all(
      writers.slice(0, STORM_STOPS).map((id, i) =>
        client.stopJob(id, i % 2 === 0 ? { force: true } : { graceSeconds: 1 })
      ),
    );
    const stops = await probeLoop(api, stopping);
    await stopping;
    await Promise.all(writers.slice(STORM_STOPS).map((id) => client.stopJob(id, { force: true })));
    for (const [name, busy] of [["200 writers", writing], ["100 stops", stops]] as const) {
      row(`loop probe p50, ${name} (ms)`, quantile(busy, 0.5), quantile(idle, 0.5), "ms");
      row(`loop probe p99, ${name} (ms)`, quantile(busy, 0.99), quantile(idle, 0.99), "ms");
      row(`loop probe max, ${name} (ms)`, Math.max(...busy), Math.max(...idle), "ms");
    }
  } finally {
    api.close();
  }
  if (only !== "storm") {
    progress("stalled readers");
    const memory = await stalledReaderMemory(worker, pki.dir);
    row("RSS growth, 20 stalled readers (MiB)", memory.stalledMiB, memory.readingMiB, "MiB");
    row("RSS left after they go (MiB)", memory.afterMiB, memory.readingMiB, "MiB");

    progress("burst of creates");
    const burst = await createBurst(worker, pki.dir);
    row("300 creates, 30 clients (ms)", burst.burstMs, burst.sequentialMs, "ms");
    row("GetJobs p99 during burst (ms)", burst.burstGetJobsP99, burst.idleGetJobsP99, "ms");
    row("new connection p99 during burst (ms)", burst.burstConnectP99, burst.idleConnectP99, "ms");
  }
} finally {
  client.close();
  await worker.stop();
  await pki.remove();
}

const header: [string, string, string, string] = ["measure", "jobworker", "baseline", "ratio"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
for (const r of [header, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  "));
console.log(
  "ratio: jobworker / baseline for times, baseline / jobworker for throughput (1.00 = same)",
);
