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
 * - client start: `jobworker list` as a new process against `deno eval ''` (bench/client_start.ts).
 */
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import { clientFor } from "../tests/helpers/clients.ts";
import { jobworker } from "../proto/service.ts";
import { measureClientStart } from "./client_start.ts";

const MiB = 1024 * 1024;
const STREAM_BYTES = 256 * MiB;
const ROUNDS = 30;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

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

try {
  await unshareTrue();
  await client.createJob({ command: "true" });

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

  progress("client start");
  const clientStart = await measureClientStart(worker.address, pki.dir);
  row("jobworker list vs deno eval '' (ms)", clientStart.list, clientStart.baseline, "ms");
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
