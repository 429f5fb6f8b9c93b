/**
 * Streaming figures for `make bench` (issue 8, and issue 12's stalled readers), each beside a
 * baseline measured in the same run:
 *
 * - throughput of one job's output to one client over mTLS, from an ended job and while the job
 *   writes at full speed, to our own client (cli/client.ts) and to a C-core gRPC client
 *   (bench/grpc_client.py, Debian's python3-grpcio), against the same bytes read from a local pipe;
 *   50 clients of one job in aggregate, same baseline;
 * - write-to-client latency: a job prints its clock every 10 ms and the client stamps arrival; p99
 *   with 200 other jobs writing, against the same on the otherwise idle worker;
 * - memory: the worker's RSS after streaming 4 GiB through 4 clients, with 500 sleeping jobs, at
 *   the peak of 100 jobs writing 100 MiB each, and with 50 stalled readers (and after they left),
 *   against its idle RSS.
 *
 * Each row carries its target from issue 8 (issue 12 for the stalled readers) where it measures
 * what the issue names ({@link ISSUE_TARGETS}).
 *
 * Standalone: `deno run -A bench/streaming.ts [--quick]` starts its own worker (BENCH_WORKER_PROGRAM:
 * another jobworker program to run, e.g. a launcher of an older checkout, for before-and-after
 * figures in one run); `make bench` calls {@link streamingRows} with its worker.
 *
 * @module
 */
import type { JobClient } from "../cli/client.ts";
import { clientFor } from "../tests/helpers/clients.ts";
import { peakRss, settledRss } from "../tests/helpers/rss.ts";
import { pipeThroughput } from "./stream.ts";
import {
  cpuSeconds,
  grpcioAvailable,
  PYTHON,
  readGrpcio,
  readOurs,
  waitEnded,
  writer,
} from "./stream_readers.ts";
import { delay, quantile, type Row, type Target } from "./rows.ts";
import { idleThenStorm } from "./storm.ts";
import { type StalledReader, startStalledReader } from "../tests/helpers/stalled_reader.ts";

export interface StreamingContext {
  address: string;
  certDir: string;
  workerPid: number;
  quick: boolean;
}

/**
 * The targets issue 8 sets for these rows (issue 12 for the stalled readers). The throughput and
 * 50-client targets name no size, so they hold at any size, quick runs' too (its rows' names say
 * their size). The latency and memory targets are stated for a load (200 writers, 4 GiB through 4
 * clients, 500 sleeping jobs, 100 writers, 50 stalled readers): a row carries one only where it
 * measures that load, so the quick run's smaller loads (50 writers, 1 GiB, 100 jobs, 20 writers, 10
 * readers) are shown without a target, not held to one set for four or five times their load.
 */
const ISSUE_TARGETS = {
  /** Our client and a C-core client, from an ended job. */
  ended: { atLeast: 200 },
  /** The same while the job writes at full speed. */
  live: { atLeast: 150 },
  /** 50 clients of one job, aggregate: both rows (5 shared connections, and a connection each). */
  aggregate: { atLeast: 200 },
  /** Line latency p99 with 200 other jobs writing, ms. */
  latencyP99: { atMost: 10 },
  /** The worker's RSS after streaming 4 GiB through 4 clients: within 64 MiB of its idle RSS. */
  afterStreams: { overBaseAtMost: 64 },
  /** The worker's RSS with 500 sleeping jobs, MiB. */
  sleepers: { atMost: 200 },
  /** The worker's peak RSS while 100 jobs write 100 MiB each at once: idle + 150 MiB. */
  writers: { overBaseAtMost: 150 },
  /** Issue 12: peak RSS with 50 stalled readers under idle + 256 MiB ... */
  stalledPeak: { overBaseAtMost: 256 },
  /** ... and back within 64 MiB of idle once they left. */
  stalledAfter: { overBaseAtMost: 64 },
} as const satisfies Record<string, Target>;

/** `target` on a full run, none on a quick one (its load is smaller than the target's). */
const atFullLoad = (ctx: StreamingContext, target: Target): { target?: Target } =>
  ctx.quick ? {} : { target };

const MiB = 1024 * 1024;
const progress = (what: string) => console.error(`bench streaming: ${what}`);

/** Runs `work`, then says how much CPU the worker and this process (the clients) spent on it. */
async function withCpu<T>(ctx: StreamingContext, what: string, work: () => Promise<T>): Promise<T> {
  const before = [cpuSeconds(ctx.workerPid), cpuSeconds("self"), performance.now()] as const;
  const result = await work();
  const seconds = (performance.now() - before[2]) / 1000;
  const worker = cpuSeconds(ctx.workerPid) - before[0];
  const clients = cpuSeconds("self") - before[1];
  progress(
    `${what}: ${seconds.toFixed(2)} s, CPU worker ${worker.toFixed(2)} s, clients ${
      clients.toFixed(2)
    } s`,
  );
  return result;
}

/** {@link quantile}, or NaN when no line arrived (the row then reads as missing). */
const quantileOrNaN = (values: number[], q: number) => values.length ? quantile(values, q) : NaN;

/**
 * Throughput rows. "Our client" is the command line's own transport (cli/transport/http2.ts over
 * h2/, what `jobworker stream` uses); the grpc-js row is the library's client (`JobClient`'s
 * default transport, the tests'), shown beside it.
 */
async function throughput(
  ctx: StreamingContext,
  client: JobClient,
  ours: JobClient,
): Promise<Row[]> {
  const bytes = (ctx.quick ? 256 : 1024) * MiB;
  const rows: Row[] = [];
  const row = (name: string, measured: number, base: number, target?: Target) =>
    rows.push({
      name,
      ours: measured,
      base,
      baseLabel: "a local pipe",
      unit: "MiB/s",
      higherIsBetter: true,
      ...(target ? { target } : {}),
    });
  const size = `${bytes / MiB} MiB`;

  progress(`${size} from an ended job, our client`);
  const ended = await writer(client, bytes);
  await waitEnded(client, ended.id);
  const cpu = cpuSeconds("self");
  const endedOurs = await withCpu(
    ctx,
    "ended job, our client",
    async () => (await readOurs(ours, ended.id, bytes)).mibps,
  );
  progress(
    `our client: ${((cpuSeconds("self") - cpu) / (bytes / 1024 / MiB)).toFixed(2)} s CPU per GiB`,
  );
  row(
    `stream ${size}, ended job, our client`,
    endedOurs,
    await pipeThroughput(bytes),
    ISSUE_TARGETS.ended,
  );

  // Right after ours, from the same ended job (its output now in the page cache for both), so
  // that the two clients are compared on the same footing. The issue sets no target for grpc-js's
  // client (only ours and a C-core one): the row is there for comparison.
  progress(`${size} from an ended job, grpc-js client`);
  const endedGrpcJs = await withCpu(
    ctx,
    "ended job, grpc-js client",
    async () => (await readOurs(client, ended.id, bytes)).mibps,
  );
  row(`stream ${size}, ended job, grpc-js client`, endedGrpcJs, await pipeThroughput(bytes));

  progress(`${size} from a job writing at full speed, our client`);
  const live = await writer(client, bytes, 1);
  const liveOurs = await withCpu(
    ctx,
    "live job, our client",
    async () => (await readOurs(ours, live.id, bytes)).mibps,
  );
  row(
    `stream ${size}, live job, our client`,
    liveOurs,
    await pipeThroughput(bytes),
    ISSUE_TARGETS.live,
  );

  if (grpcioAvailable()) {
    progress(`${size}, C-core client (python3-grpcio)`);
    const grpcEnded = await withCpu(
      ctx,
      "ended job, grpcio",
      async () => (await readGrpcio(ctx.address, ctx.certDir, ended.id, bytes)).mibps,
    );
    row(
      `stream ${size}, ended job, grpcio`,
      grpcEnded,
      await pipeThroughput(bytes),
      ISSUE_TARGETS.ended,
    );
    const live2 = await writer(client, bytes, 1);
    const grpcLive = await withCpu(
      ctx,
      "live job, grpcio",
      async () => (await readGrpcio(ctx.address, ctx.certDir, live2.id, bytes)).mibps,
    );
    row(
      `stream ${size}, live job, grpcio`,
      grpcLive,
      await pipeThroughput(bytes),
      ISSUE_TARGETS.live,
    );
    await client.deleteJob(live2.id).catch(() => {});
  } else {
    progress("python3-grpcio missing: no C-core rows (apt-get install python3-grpcio)");
  }

  rows.push(...await aggregateRows(ctx, client));
  for (const id of [ended.id, live.id]) await client.deleteJob(id).catch(() => {});
  return rows;
}

/** 50 clients of one ended job: on 5 connections, then on a connection each. */
async function aggregateRows(ctx: StreamingContext, client: JobClient): Promise<Row[]> {
  const bytes = (ctx.quick ? 256 : 1024) * MiB; // the pipe baseline's size, as the rows above
  const rows: Row[] = [];
  // Both arrangements are "50 clients of one job": each is held to the issue's aggregate.
  const row = (name: string, ours: number, base: number) =>
    rows.push({
      name,
      ours,
      base,
      baseLabel: "a local pipe",
      unit: "MiB/s",
      higherIsBetter: true,
      target: ISSUE_TARGETS.aggregate,
    });
  const readers = 50;
  const each = (ctx.quick ? 32 : 128) * MiB;
  const shared = await writer(client, each);
  await waitEnded(client, shared.id);
  progress(`${readers} clients of one ${each / MiB} MiB job, 10 streams on each of 5 connections`);
  const onFive = await withCpu(
    ctx,
    "5 connections",
    () => aggregate(ctx, shared.id, each, readers, 5),
  );
  row(`${readers} clients of one job, aggregate`, onFive, await pipeThroughput(bytes));
  // 50 clients in real life are 50 processes, each with its own connection.
  progress(`${readers} clients of one ${each / MiB} MiB job, a connection each`);
  const onOwn = await withCpu(
    ctx,
    "a connection each",
    () => aggregate(ctx, shared.id, each, readers, readers),
  );
  row(`${readers} clients, a connection each, aggregate`, onOwn, await pipeThroughput(bytes));
  await client.deleteJob(shared.id).catch(() => {});
  return rows;
}

/** `readers` streams of `id`'s whole output at once over `connections` connections; MiB/s. */
async function aggregate(
  ctx: StreamingContext,
  id: string,
  each: number,
  readers: number,
  connections: number,
): Promise<number> {
  const clients = Array.from(
    { length: connections },
    () => clientFor(ctx.certDir, ctx.address, "admin", { transport: "http2" }),
  );
  try {
    await Promise.all(clients.map((c) => c.listJobs()));
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: readers }, async (_, i) => {
        let total = 0;
        for await (const chunk of clients[i % clients.length]!.stream(id)) {
          total += chunk.payload.length;
        }
        if (total !== each) throw new Error(`a reader got ${total} of ${each} bytes`);
      }),
    );
    return (readers * each) / MiB / ((performance.now() - t0) / 1000);
  } finally {
    for (const c of clients) c.close();
  }
}

/** The latency rows' ticker job: prints its clock (ns since the epoch) every 10 ms. */
export const TICKER = {
  command: PYTHON,
  args: ["-c", "import time\nwhile True:\n  print(time.time_ns(), flush=True)\n  time.sleep(0.01)"],
};

/**
 * Each whole line of a job's streamed output, with when the chunk that completed it arrived (ns since
 * the epoch), until `stop` aborts the stream.
 */
export async function* arrivingLines(
  chunks: AsyncIterable<{ payload: Uint8Array }>,
  stop: AbortSignal,
): AsyncGenerator<{ line: string; at: number }> {
  const decoder = new TextDecoder();
  let partial = "";
  try {
    for await (const chunk of chunks) {
      const at = (performance.timeOrigin + performance.now()) * 1e6;
      const lines = (partial + decoder.decode(chunk.payload, { stream: true })).split("\n");
      partial = lines.pop()!;
      for (const line of lines) yield { line, at };
    }
  } catch (e) {
    if (!stop.aborted) throw e;
  }
}

/** Arrival minus the job's stamp of every line for `seconds`, in ms, as `reader` streams them. */
export async function lineDelays(
  client: JobClient,
  seconds: number,
  reader: JobClient,
): Promise<number[]> {
  const ticker = await client.createJob(TICKER);
  const delays: number[] = [];
  const stop = AbortSignal.timeout(seconds * 1000);
  for await (
    const { line, at } of arrivingLines(reader.stream(ticker.id, { signal: stop }), stop)
  ) {
    const stamp = Number(line);
    if (Number.isFinite(stamp) && stamp > 0) delays.push((at - stamp) / 1e6);
  }
  await client.stopJob(ticker.id, { force: true }).catch(() => {});
  // The first lines were written before the stream started: leave the first half second out.
  return delays.slice(50);
}

/** Lines read with `ours` (the command line's transport); `client` starts the jobs. */
async function latency(
  ctx: StreamingContext,
  client: JobClient,
  ours: JobClient,
): Promise<Row[]> {
  const seconds = ctx.quick ? 4 : 10;
  const others = ctx.quick ? 50 : 200;
  const { idle, storm: busy } = await idleThenStorm(client, others, (phase) => {
    progress(
      `write-to-client latency, ${
        phase === "idle" ? "idle worker" : `${others} other jobs writing`
      }`,
    );
    return lineDelays(client, seconds, ours);
  });
  return [
    {
      name: `line latency p50, ${others} jobs writing (ms)`,
      ours: quantileOrNaN(busy, 0.5),
      base: quantileOrNaN(idle, 0.5),
      baseLabel: "idle worker",
      unit: "ms",
      higherIsBetter: false,
    },
    {
      name: `line latency p99, ${others} jobs writing (ms)`,
      ours: quantileOrNaN(busy, 0.99),
      base: quantileOrNaN(idle, 0.99),
      baseLabel: "idle worker",
      unit: "ms",
      higherIsBetter: false,
      ...atFullLoad(ctx, ISSUE_TARGETS.latencyP99),
    },
  ];
}

async function memory(ctx: StreamingContext, client: JobClient): Promise<Row[]> {
  const pid = ctx.workerPid;
  const rows: Row[] = [];
  const row = (name: string, ours: number, base: number, target: Target) =>
    rows.push({
      name,
      ours: ours / MiB,
      base: base / MiB,
      baseLabel: "idle worker RSS",
      unit: "MiB",
      higherIsBetter: false,
      ...atFullLoad(ctx, target),
    });

  const perClient = (ctx.quick ? 256 : 1024) * MiB;
  progress(`RSS: ${(4 * perClient) / MiB} MiB through 4 clients`);
  const idle = await settledRss(pid);
  const job = await writer(client, perClient);
  await waitEnded(client, job.id);
  const clients = Array.from({ length: 4 }, () => clientFor(ctx.certDir, ctx.address));
  try {
    await Promise.all(clients.map((c) => readOurs(c, job.id, perClient)));
  } finally {
    for (const c of clients) c.close();
  }
  await client.deleteJob(job.id).catch(() => {});
  row(
    `RSS after ${(4 * perClient) / MiB} MiB through 4 clients`,
    await settledRss(pid),
    idle,
    ISSUE_TARGETS.afterStreams,
  );

  const sleepers = ctx.quick ? 100 : 500;
  progress(`RSS: ${sleepers} sleeping jobs`);
  const idle2 = await settledRss(pid);
  const ids: string[] = [];
  try {
    for (let i = 0; i < sleepers; i += 20) {
      const batch = await Promise.all(
        Array.from(
          { length: Math.min(20, sleepers - i) },
          () => client.createJob({ command: "sleep", args: ["600"] }),
        ),
      );
      ids.push(...batch.map((j) => j.id));
    }
    row(`RSS, ${sleepers} sleeping jobs`, await settledRss(pid), idle2, ISSUE_TARGETS.sleepers);
  } finally {
    await Promise.all(ids.map((id) => client.stopJob(id, { force: true }).catch(() => {})));
    await Promise.all(ids.map((id) => client.deleteJob(id).catch(() => {})));
  }

  const writers = ctx.quick ? 20 : 100;
  progress(`RSS: ${writers} jobs writing 100 MiB each at once`);
  const idle3 = await settledRss(pid);
  const written: string[] = [];
  const peak = await peakRss(
    pid,
    (async () => {
      for (let i = 0; i < writers; i += 20) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(20, writers - i) }, () => writer(client, 100 * MiB, 2)),
        );
        written.push(...batch.map((j) => j.id));
      }
      for (const id of written) await waitEnded(client, id);
    })(),
  );
  await Promise.all(written.map((id) => client.deleteJob(id).catch(() => {})));
  row(`RSS peak, ${writers} jobs writing 100 MiB each`, peak, idle3, ISSUE_TARGETS.writers);

  const stalled = ctx.quick ? 10 : 50;
  progress(`RSS: ${stalled} stalled readers on 200 MiB jobs`);
  const idle4 = await settledRss(pid);
  const jobs = await Promise.all(
    Array.from({ length: Math.ceil(stalled / 10) }, () => writer(client, 200 * MiB, 1)),
  );
  const readers: StalledReader[] = [];
  let stalledPeak = idle4;
  try {
    stalledPeak = await peakRss(
      pid,
      (async () => {
        await Promise.all(
          Array.from({ length: stalled }, async (_, i) => {
            const kind = i % 2 ? "grpc" : "http2";
            const id = jobs[i % jobs.length]!.id;
            readers.push(await startStalledReader(kind, ctx.certDir, ctx.address, id));
          }),
        );
        for (const j of jobs) await waitEnded(client, j.id);
        await delay(2000);
      })(),
    );
  } finally {
    await Promise.all(readers.map((r) => r.kill()));
  }
  row(`RSS peak, ${stalled} stalled readers`, stalledPeak, idle4, ISSUE_TARGETS.stalledPeak);
  row(
    `RSS after ${stalled} stalled readers left`,
    await settledRss(pid),
    idle4,
    ISSUE_TARGETS.stalledAfter,
  );
  for (const j of jobs) await client.deleteJob(j.id).catch(() => {});
  return rows;
}

/**
 * BENCH_STREAMING_ONLY's values: throughput | aggregate (only the 50-client rows, also part of
 * throughput) | latency | memory.
 */
export const STREAMING_SECTIONS = ["throughput", "aggregate", "latency", "memory"] as const;

/**
 * BENCH_STREAMING_ONLY, checked: undefined (or empty) for every section.
 *
 * @throws {Error} When it names no section (it would silently measure nothing).
 */
export function streamingOnly(): string | undefined {
  const only = Deno.env.get("BENCH_STREAMING_ONLY");
  if (only && !(STREAMING_SECTIONS as readonly string[]).includes(only)) {
    throw new Error(
      `BENCH_STREAMING_ONLY=${only}: not a section (one of ${STREAMING_SECTIONS.join(", ")}; ` +
        "the CLI transport's row is now the throughput section's 'our client')",
    );
  }
  return only || undefined;
}

/**
 * Every streaming figure, each with its baseline from this run.
 *
 * @throws {Error} When BENCH_STREAMING_ONLY names no section.
 */
export async function streamingRows(ctx: StreamingContext): Promise<Row[]> {
  const only = streamingOnly();
  const client = clientFor(ctx.certDir, ctx.address);
  const ours = clientFor(ctx.certDir, ctx.address, "admin", { transport: "http2" });
  try {
    // Both connected (TLS handshake done) before anything is timed.
    await client.listJobs();
    await ours.listJobs();
    const rows: Row[] = [];
    if (!only || only === "throughput") rows.push(...await throughput(ctx, client, ours));
    if (only === "aggregate") rows.push(...await aggregateRows(ctx, client));
    if (!only || only === "latency") rows.push(...await latency(ctx, client, ours));
    if (!only || only === "memory") rows.push(...await memory(ctx, client));
    return rows;
  } finally {
    client.close();
    ours.close();
  }
}

if (import.meta.main) {
  streamingOnly(); // before a worker is started for nothing
  const { makePki } = await import("../tests/helpers/pki.ts");
  const { WorkerProcess } = await import("../tests/helpers/worker.ts");
  const pki = await makePki();
  const program = Deno.env.get("BENCH_WORKER_PROGRAM");
  const worker = await WorkerProcess.start({
    certDir: pki.dir,
    ...(program ? { program } : {}),
    env: {
      JOB_WORKER_MAX_JOBS: "1000",
      JOB_WORKER_MAX_STREAMS_PER_CLIENT: "512",
      JOB_WORKER_MAX_CONNECTIONS_PER_PEER: "300",
      ...JSON.parse(Deno.env.get("BENCH_WORKER_ENV") ?? "{}"),
    },
  });
  try {
    const rows = await streamingRows({
      address: worker.address,
      certDir: pki.dir,
      workerPid: worker.process.pid,
      quick: Deno.args.includes("--quick"),
    });
    // The bench's table, without its recorded ratios (those are `make bench`'s).
    const { printTable } = await import("./report.ts");
    printTable(rows.map((row) => ({ row, verdict: {} })));
  } finally {
    await worker.stop();
    await pki.remove();
  }
}
