/**
 * The start path alone, against its floor in the same run (for issue 8; bench/main.ts may wire it):
 *
 * - floor: `unshare --fork --pid --mount-proc --mount --ipc --uts true`, spawned locally;
 * - server side: the worker's 'job started' log line (LOG_FORMAT=json), whose startMs runs from
 *   CreateJob reaching the job manager until the command was exec'd;
 * - client side: the CreateJob round trip over mTLS;
 * - 100 starts 20 at a time against 100 unshare runs 20 at a time;
 * - the PSS of each waiting `init` of the pool (/proc/<pid>/smaps_rollup);
 * - a burst of 20 creates at once: how many were served from the pool, then how long the pool
 *   takes to be full again.
 *
 * Usage: deno run -A bench/start_probe.ts [rounds]; JOB_WORKER_INIT_POOL is passed to the worker
 * (unset: the worker's default); BENCH_WORKER_PROGRAM runs the worker through another launcher
 * (which must exec the worker, same pid), e.g. another checkout's, to interleave old and new code.
 * Prints one JSON object.
 */
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import { clientFor } from "../tests/helpers/clients.ts";
import { jobworker } from "../proto/service.ts";
import { quantile } from "./rows.ts";
import { procStatFields } from "./procfs.ts";

const ROUNDS = Number(Deno.args[0] ?? 40);

const round = (n: number) => Math.round(n * 100) / 100;

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

async function inBatches<T>(count: number, width: number, fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i += width) {
    await Promise.all(Array.from({ length: Math.min(width, count - i) }, fn));
  }
  return performance.now() - t0;
}

interface Started {
  id: string;
  startMs: number;
  pooled?: boolean;
}

/** The 'job started' lines the worker logged so far, by job id. */
function startedLines(logs: string[]): Map<string, Started> {
  const found = new Map<string, Started>();
  for (const line of logs) {
    if (!line.includes('"job started"')) continue;
    try {
      const entry = JSON.parse(line) as Started;
      found.set(entry.id, entry);
    } catch { /* not JSON */ }
  }
  return found;
}

/** Children of `pid` that are waiting pool members, with their PSS in KiB. */
function waitingInits(pid: number): { pid: number; pssKiB: number }[] {
  const found: { pid: number; pssKiB: number }[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const ppid = Number(procStatFields(Number(entry.name))?.[1]);
      if (ppid !== pid) continue;
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0");
      if (!cmdline.includes("--pooled")) continue;
      const rollup = Deno.readTextFileSync(`/proc/${entry.name}/smaps_rollup`);
      const pss = Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
      found.push({ pid: Number(entry.name), pssKiB: pss });
    } catch { /* gone */ }
  }
  return found;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitEnded(client: ReturnType<typeof clientFor>, id: string): Promise<void> {
  while ((await client.getJob(id)).status < jobworker.JobStatus.COMPLETED) await delay(2);
}

const pki = await makePki();
const env: Record<string, string> = { LOG_FORMAT: "json" };
const poolSetting = Deno.env.get("JOB_WORKER_INIT_POOL");
if (poolSetting !== undefined) env.JOB_WORKER_INIT_POOL = poolSetting;
const program = Deno.env.get("BENCH_WORKER_PROGRAM");
const worker = await WorkerProcess.start({
  certDir: pki.dir,
  env,
  ...(program ? { program } : {}),
});
const client = clientFor(pki.dir, worker.address);
try {
  await unshareTrue();
  await waitEnded(client, (await client.createJob({ command: "true" })).id);
  await delay(1500); // the pool fills
  const pss = waitingInits(worker.process.pid);

  const floor: number[] = [];
  const clientMs: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    floor.push(await unshareTrue());
    const t0 = performance.now();
    const job = await client.createJob({ command: "true" });
    clientMs.push(performance.now() - t0);
    ids.push(job.id);
    await waitEnded(client, job.id);
    // As a user creating jobs one after another would: the pool refills in between.
    await delay(150);
  }
  const started = startedLines(worker.logs);
  const serverMs = ids.map((id) => started.get(id)?.startMs).filter((v) => v !== undefined);
  const pooledSeq = ids.filter((id) => started.get(id)?.pooled === true).length;

  const parallelFloor = await inBatches(100, 20, unshareTrue);
  const parallelOurs = await inBatches(100, 20, () => client.createJob({ command: "true" }));

  await delay(3000);
  const burstIds = (await Promise.all(
    Array.from({ length: 20 }, () => client.createJob({ command: "true" })),
  )).map((j) => j.id);
  const afterBurst = startedLines(worker.logs);
  const burstPooled = burstIds.filter((id) => afterBurst.get(id)?.pooled === true).length;
  const t0 = performance.now();
  const want = pss.length;
  let refillMs = -1;
  while (performance.now() - t0 < 20_000) {
    if (want > 0 && waitingInits(worker.process.pid).length >= want) {
      refillMs = performance.now() - t0;
      break;
    }
    await delay(20);
  }

  const f50 = quantile(floor, 0.5);
  console.log(JSON.stringify(
    {
      pool: poolSetting ?? "default",
      rounds: ROUNDS,
      floorMs: { p50: round(f50), p99: round(quantile(floor, 0.99)) },
      serverStartMs: {
        p50: round(quantile(serverMs, 0.5)),
        p99: round(quantile(serverMs, 0.99)),
        ratioP50: round(quantile(serverMs, 0.5) / f50),
      },
      clientCreateMs: {
        p50: round(quantile(clientMs, 0.5)),
        p99: round(quantile(clientMs, 0.99)),
        ratioP50: round(quantile(clientMs, 0.5) / f50),
        ratioP99: round(quantile(clientMs, 0.99) / f50),
      },
      pooledSequential: `${pooledSeq}/${ids.length}`,
      parallel100x20: {
        oursMs: round(parallelOurs),
        floorMs: round(parallelFloor),
        ratio: round(parallelOurs / parallelFloor),
      },
      waitingInits: pss,
      burst20: { pooled: burstPooled, refillMs: round(refillMs) },
    },
    null,
    1,
  ));
} finally {
  client.close();
  await worker.stop();
  await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
}
