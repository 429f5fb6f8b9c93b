/**
 * Write-to-client latency alone, against its idle baseline in the same run (issue 8): a job prints
 * its clock every 10 ms and our client (the command line's transport, cli/transport/http2.ts, as in
 * the bench's latency rows) stamps arrival, first on the idle worker, then with N other
 * jobs writing 33-byte lines as fast as they can (the bench's storm writers). Beside the line
 * delays: the worker's own event-loop delay (p99 from its histogram, and max) in each phase, the
 * output it ingested per second and its CPU use.
 *
 * Usage: deno run -A bench/latency_probe.ts [writers=200] [seconds=8]. BENCH_WORKER_ENV (JSON) adds
 * to the worker's environment; BENCH_WORKER_PROGRAM runs the worker through another launcher (for
 * example a script adding --cpu-prof). Prints one JSON object.
 */
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import { clientFor } from "../tests/helpers/clients.ts";
import type { JobClient } from "../cli/client.ts";
import { JOB_LIMITS_ENV } from "./peers.ts";
import { idleThenStorm, loopQuantile, type LoopScrape, scrapeLoop } from "./storm.ts";
import { lineDelays } from "./streaming.ts";
import { quantile } from "./rows.ts";
import { procStatFields, TICK_MS } from "./procfs.ts";

const WRITERS = Number(Deno.args[0] ?? 200);
const SECONDS = Number(Deno.args[1] ?? 8);
const round = (n: number) => Math.round(n * 100) / 100;

interface Scrape extends LoopScrape {
  cpu: number;
  /** Time the worker's main thread spent runnable but waiting for a CPU (s, from schedstat). */
  waited: number;
  at: number;
}

async function scrape(url: string, pid: number): Promise<Scrape> {
  const metrics = await scrapeLoop(url);
  const stat = procStatFields(pid) ?? [];
  const cpu = (Number(stat[11]) + Number(stat[12])) * TICK_MS / 1000;
  const waited = Number(Deno.readTextFileSync(`/proc/${pid}/schedstat`).split(" ")[1]) / 1e9;
  return { ...metrics, cpu, waited, at: performance.now() };
}

const ingested = (s: Scrape) => s.samples.get("jobworker_output_ingested_bytes_total") ?? 0;

async function phase(client: JobClient, ours: JobClient, url: string, pid: number) {
  const before = await scrape(url, pid);
  const delays = await lineDelays(client, SECONDS, ours);
  const after = await scrape(url, pid);
  const seconds = (after.at - before.at) / 1000;
  return {
    lineP50: round(quantile(delays, 0.5)),
    lineP99: round(quantile(delays, 0.99)),
    lineMax: round(Math.max(...delays)),
    loopP99: round(Math.min(loopQuantile(before, after, 0.99), after.max * 1000)),
    loopMax: round(after.max * 1000),
    ingestMiBs: round((ingested(after) - ingested(before)) / 1048576 / seconds),
    workerCpu: round((after.cpu - before.cpu) / seconds),
    /** Share of the phase the worker's main thread was ready to run but had no CPU. */
    workerRunqueue: round((after.waited - before.waited) / seconds),
  };
}

const pki = await makePki();
const program = Deno.env.get("BENCH_WORKER_PROGRAM");
const worker = await WorkerProcess.start({
  certDir: pki.dir,
  ...(program ? { program } : {}),
  env: {
    LOG_FORMAT: "json",
    JOB_WORKER_METRICS_ADDR: "127.0.0.1:0",
    JOB_WORKER_MAX_JOBS: "1000",
    JOB_WORKER_MAX_STREAMS_PER_CLIENT: "512",
    ...JOB_LIMITS_ENV,
    ...JSON.parse(Deno.env.get("BENCH_WORKER_ENV") ?? "{}"),
  },
});
let url = "";
for (const line of worker.logs) {
  if (!line.startsWith("{")) continue;
  const parsed = JSON.parse(line) as { msg?: string; port?: number };
  if (parsed.msg === "metrics listening" && parsed.port) {
    url = `http://127.0.0.1:${parsed.port}/metrics`;
  }
}
// A launcher given in BENCH_WORKER_PROGRAM must exec the worker (same pid).
const pid = worker.process.pid;
const client = clientFor(pki.dir, worker.address);
const ours = clientFor(pki.dir, worker.address, "admin", { transport: "http2" });
try {
  await client.listJobs();
  await ours.listJobs();
  const { idle, storm } = await idleThenStorm(client, WRITERS, () => phase(client, ours, url, pid));
  console.log(JSON.stringify({ writers: WRITERS, idle, busy: storm }));
} finally {
  client.close();
  ours.close();
  await worker.stop();
  await pki.remove();
}
