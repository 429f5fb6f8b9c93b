/**
 * The worker under load: no output is lost when hundreds of jobs end at once on a busy worker,
 * and only a writer that escaped a job can cut its output short (the record then says so).
 *
 * Run: `deno test -A tests/load_test.ts` (needs root). One worker serves the whole file.
 *
 * @module
 */
import { loadTest as test } from "./helpers/skip.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { jobProcesses, waitFor } from "./helpers/host_procs.ts";

const { JobStatus } = jobworker;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const sha256 = (bytes: Uint8Array | string) => createHash("sha256").update(bytes).digest("hex");

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;

test("start a worker", async () => {
  pki = await makePki();
  // 100 followers with one certificate: above the default per-client stream cap (64).
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_MAX_STREAMS_PER_CLIENT: "200" },
  });
  client = clientFor(pki.dir, worker.address);
});

test("300 jobs started at once, 200 lines each: every byte stored and streamed", async () => {
  const JOBS = 300;
  const LINES = 200;
  const expected = (i: number) => {
    let text = "";
    for (let n = 1; n <= LINES; n++) text += `job ${i} line ${n} ${"x".repeat(n % 50)}\n`;
    return text;
  };
  // 30 clients creating 10 jobs each, all at once. Each create waits for its job's command to
  // exec, and the jobs started before it keep both cores busy with their shell loops: on a slow
  // machine (an AMD EPYC VM where a process start costs 2-4x a Xeon's) creates waited longer than
  // the client's 30 s deadline. What this test checks is the output, not how long a start takes
  // (the bench measures that), so these calls get 5 minutes.
  const clients = Array.from(
    { length: 30 },
    () => clientFor(pki.dir, worker.address, "admin", { callTimeoutMs: 300_000 }),
  );
  try {
    // The job prints its lines with a shell loop (not one write), so output and exit race. Only
    // shell builtins: a subshell and `tr` per line made 180,000 process starts, minutes of CPU on a
    // slow machine, which starved the starts this test waits for.
    const script = (i: number) =>
      `n=1; pad=x; while [ $n -le ${LINES} ]; do ` +
      `printf 'job ${i} line %d %s\\n' $n "$pad"; n=$((n+1)); ` +
      `if [ $((n % 50)) -eq 0 ]; then pad=; else pad="\${pad}x"; fi; done`;
    const jobs: jobworker.Job[] = new Array(JOBS);
    // 100 followers, on the first 100 jobs, each started as soon as its job is.
    const followers: ReturnType<typeof collectOutput>[] = new Array(100);
    await Promise.all(clients.map(async (c, k) => {
      for (let i = k; i < JOBS; i += clients.length) {
        jobs[i] = await c.createJob({ command: "/bin/sh", args: ["-c", script(i)] });
        if (i < followers.length) {
          followers[i] = collectOutput(c, jobs[i]!.id);
          // Awaited below; until then a failure must not surface as an uncaught rejection that
          // ends the whole file instead of failing this test.
          followers[i]!.catch(() => {});
        }
      }
    }));
    const ended = await Promise.all(jobs.map((job) => waitJobEnded(client, job.id, 300_000, 200)));
    const followed = await Promise.all(followers);
    const lost: string[] = [];
    for (const [i, job] of ended.entries()) {
      const want = expected(i);
      if (job.status !== JobStatus.COMPLETED) lost.push(`job ${i}: ${job.status} ${job.reason}`);
      if (job.outputBytes !== want.length || job.outputTruncated) {
        lost.push(`job ${i}: ${job.outputBytes} of ${want.length} bytes stored`);
        continue;
      }
      const stored = await collectOutput(client, job.id, { noFollow: true });
      if (sha256(stored.bytes) !== sha256(want)) lost.push(`job ${i}: stored bytes differ`);
      if (i < followed.length && sha256(followed[i]!.bytes) !== sha256(want)) {
        lost.push(`job ${i}: follower got ${followed[i]!.bytes.length} bytes, not the output`);
      }
    }
    assert.deepEqual(lost, [], `${lost.length} jobs lost output`);
  } finally {
    for (const c of clients) c.close();
  }
});

test("a writer outside the job holding its pipe: the job ends, its record says output may be incomplete", async () => {
  const job = await client.createJob({ command: "/bin/sh", args: ["-c", "echo before; sleep 1"] });
  const [proc] = await waitFor("the job's process", () => {
    const procs = jobProcesses(job.id);
    return procs.length > 0 ? procs : null;
  }, 10_000);
  // This test process becomes a writer the job's cgroup does not contain.
  const escaped = Deno.openSync(`/proc/${proc!.pid}/fd/1`, { write: true });
  try {
    const ended = await waitJobEnded(client, job.id, 60_000, 200);
    assert.equal(ended.status, JobStatus.COMPLETED, ended.reason);
    assert.equal(ended.outputTruncated, true);
    assert.match(ended.reason, /output may be incomplete/);
    const output = await collectOutput(client, job.id, { noFollow: true });
    assert.equal(output.stdout, "before\n");
  } finally {
    escaped.close();
  }
});

/** Children of `parent` that are still the worker's own program (an init before its exec). */
function initsOf(parent: number, program: string): number {
  let n = 0;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const close = stat.lastIndexOf(")");
      const [state, ppid] = stat.slice(close + 2).split(" ");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      // An init execs /proc/self/exe, so its name is "exe"; `program` until that exec.
      const isInit = comm === program || comm === "exe";
      if (Number(ppid) === parent && state !== "Z" && isInit) n++;
    } catch {
      // gone meanwhile
    }
  }
  return n;
}

test("a burst of creates starts at most JOB_WORKER_MAX_STARTING jobs at once; all start", async () => {
  const gated = await WorkerProcess.start({
    certDir: pki.dir,
    // No pool: its waiting inits are children of the worker too, and would be counted as starts.
    // Jobs start through a cloned init: the gate is the job manager's, the same for either start,
    // and an init is there for a Deno start (tens of ms), long enough for the sampler to see each
    // one, where jwstart is gone within a few ms.
    env: {
      JOB_WORKER_MAX_STARTING: "2",
      JOB_WORKER_INIT_POOL: "0",
      JOB_WORKER_DIRECT_START: "0",
    },
  });
  const clients = Array.from({ length: 10 }, () => clientFor(pki.dir, gated.address));
  try {
    const program = Deno.execPath().split("/").pop()!.slice(0, 15);
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        most = Math.max(most, initsOf(gated.process.pid, program));
        await delay(5);
      }
    })();
    const jobs = (await Promise.all(clients.map(async (c) => {
      const mine: jobworker.Job[] = [];
      for (let i = 0; i < 4; i++) mine.push(await c.createJob({ command: "sleep", args: ["30"] }));
      return mine;
    }))).flat();
    sampling = false;
    await sampler;
    assert.equal(jobs.length, 40);
    for (const job of jobs) assert.equal(job.status, JobStatus.RUNNING, job.reason);
    // 40 creates from 10 clients at once; the worker ran at most two inits at any moment.
    assert.ok(most >= 1, "no init process was ever seen (the sampler sees nothing)");
    assert.ok(most <= 2, `${most} jobs were starting at once`);
    await Promise.all(
      jobs.map((job) => clients[0]!.stopJob(job.id, { force: true }).catch(() => {})),
    );
  } finally {
    for (const c of clients) c.close();
    assert.equal((await gated.stop()).code, 0);
  }
});

test("stop the worker", async () => {
  client?.close();
  const status = await worker?.stop();
  assert.equal(status?.code, 0);
  await pki?.remove();
});
