/**
 * The worker under abuse and at its limits: concurrent creates past JOB_WORKER_MAX_JOBS, a second
 * worker on the same state directory, stop escalation, retention, the stream limit, a job trying
 * to see the host's processes, out-of-range values.
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitFor } from "./helpers/host_procs.ts";

const { JobStatus } = jobworker;

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

async function withWorker(
  env: Record<string, string>,
  fn: (client: JobClient, worker: WorkerProcess) => Promise<void>,
  stateDir?: string,
): Promise<void> {
  const other = await WorkerProcess.start({
    certDir: pki.dir,
    env: { CLEANUP_TIMEOUT: "1", ...env },
    ...stateDir ? { stateDir } : {},
  });
  const otherClient = clientFor(pki.dir, other.address);
  try {
    await fn(otherClient, other);
  } finally {
    otherClient.close();
    await other.stop();
  }
}

async function waitEnded(c: JobClient, id: string): Promise<jobworker.Job> {
  for (;;) {
    const job = await c.getJob(id);
    if (job.status >= JobStatus.COMPLETED) return job;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("start a worker", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({ certDir: pki.dir });
  client = clientFor(pki.dir, worker.address);
});

test("unmounting /proc inside a job uncovers nothing of the host", async () => {
  const job = await client.createJob({
    command: "sh",
    args: ["-c", "umount /proc 2>/dev/null; ls /proc | grep -c '^[0-9]' || true"],
  });
  await waitEnded(client, job.id);
  const seen = Number((await collectOutput(client, job.id)).stdout.trim());
  assert.equal(seen, 0, "no process directories once the job's own /proc is gone");
});

test("concurrent creates never exceed JOB_WORKER_MAX_JOBS", async () => {
  await withWorker({ JOB_WORKER_MAX_JOBS: "3" }, async (c) => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, () => c.createJob({ command: "sleep", args: ["30"] })),
    );
    const created = results.filter((r) => r.status === "fulfilled");
    const refused = results.filter((r) => r.status === "rejected");
    assert.equal(created.length, 3);
    for (const r of refused) {
      assert.equal((r.reason as { code: number }).code, status.RESOURCE_EXHAUSTED);
    }
    const jobs = await c.listJobs();
    assert.equal(jobs.countByStatus["RUNNING"], 3);
  });
});

test("a second worker on the same state directory refuses to start and harms nothing", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  try {
    await withWorker({}, async (c) => {
      const job = await c.createJob({ command: "sleep", args: ["30"] });
      await assert.rejects(
        WorkerProcess.start({ certDir: pki.dir, stateDir }),
        /another worker is using the state directory/,
      );
      assert.equal((await c.getJob(job.id)).status, JobStatus.RUNNING);
      assert.equal((await collectOutput(c, job.id, { noFollow: true })).bytes.length, 0);
    }, stateDir);
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

test("a forced stop brings forward the SIGKILL of a graceful stop in progress", async () => {
  const job = await client.createJob({ command: "sleep", args: ["1000"] });
  const t0 = Date.now();
  const graceful = client.stopJob(job.id, { graceSeconds: 60 });
  await new Promise((r) => setTimeout(r, 300));
  const forced = await client.stopJob(job.id, { force: true });
  assert.equal(forced.status, JobStatus.STOPPED);
  assert.equal(forced.signal, 9);
  assert.equal((await graceful).status, JobStatus.STOPPED);
  assert.ok(Date.now() - t0 < 60_000, "the 60 s grace did not hold the forced stop back");
});

test("values beyond what a timer or the kernel takes are INVALID_ARGUMENT", async () => {
  const cases: [jobworker.ICreateJobReq, string][] = [
    [{ command: "true", timeoutSeconds: 3_000_000 }, "timeoutSeconds"],
    [{ command: "true", maxPids: 5_000_000 }, "maxPids"],
    [{ command: "echo", args: Array(4).fill("\x01".repeat(120_000)) }, "args"],
  ];
  for (const [req, field] of cases) {
    await assert.rejects(client.createJob(req), (e: { code: number; details: string }) => {
      assert.equal(e.code, status.INVALID_ARGUMENT, e.details);
      assert.match(e.details, new RegExp(field));
      return true;
    });
  }
  const job = await client.createJob({ command: "sleep", args: ["30"] });
  await assert.rejects(
    client.stopJob(job.id, { graceSeconds: 3_000_000 }),
    (e: { code: number }) => e.code === status.INVALID_ARGUMENT,
  );
  await client.stopJob(job.id, { force: true });
});

test("ended jobs beyond JOB_WORKER_MAX_ENDED_JOBS are forgotten, oldest first", async () => {
  await withWorker({ JOB_WORKER_MAX_ENDED_JOBS: "3" }, async (c, w) => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const job = await c.createJob({ command: "echo", args: [String(i)] });
      await waitEnded(c, job.id);
      ids.push(job.id);
    }
    const kept = (await c.listJobs()).jobs.map((j) => j.id);
    assert.deepEqual(kept, ids.slice(2).reverse());
    await assert.rejects(c.getJob(ids[0]!), (e: { code: number }) => e.code === status.NOT_FOUND);
    // Their output is deleted too (in the background: poll for it).
    const dirs = () => [...Deno.readDirSync(`${w.stateDir}/jobs`)].map((e) => e.name).sort();
    for (let i = 0; i < 100 && dirs().length > 3; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(dirs(), ids.slice(2).sort(), "their output is deleted too");
  });
});

test("output streams beyond JOB_WORKER_MAX_STREAMS are refused, and freed when they end", async () => {
  await withWorker({ JOB_WORKER_MAX_STREAMS: "1" }, async (c) => {
    const job = await c.createJob({ command: "sh", args: ["-c", "echo ready; exec sleep 30"] });
    // The first stream is surely being served once its first chunk arrived.
    const first = c.stream(job.id)[Symbol.asyncIterator]();
    assert.equal((await first.next()).done, false);
    await assert.rejects(
      collectOutput(c, job.id),
      (e: { code: number }) => e.code === status.RESOURCE_EXHAUSTED,
    );
    await c.stopJob(job.id, { force: true });
    while (!(await first.next()).done) { /* the rest of the output, then the end */ }
    const done = await collectOutput(c, job.id);
    assert.equal(done.stdout, "ready\n", "a stream is served again once the others ended");
  });
});

test("output beyond JOB_WORKER_MAX_OUTPUT_BYTES is discarded, the job unhindered", async () => {
  await withWorker({ JOB_WORKER_MAX_OUTPUT_BYTES: "100000" }, async (c) => {
    const job = await c.createJob({
      command: "sh",
      args: ["-c", "head -c 1000000 /dev/zero; echo done >&2"],
    });
    const ended = await waitEnded(c, job.id);
    assert.equal(ended.status, JobStatus.COMPLETED, "the job was not blocked by the limit");
    assert.equal(ended.outputBytes, 100000);
    assert.equal(ended.outputTruncated, true);
    const out = await collectOutput(c, job.id);
    assert.equal(out.bytes.length, 100000);
    assert.equal(out.stderr, "", "what came after the limit is gone");
    const small = await c.createJob({ command: "echo", args: ["fits"] });
    assert.equal((await waitEnded(c, small.id)).outputTruncated, false);
  });
});

test("SIGHUP does not stop jobs (it reloads in place); SIGINT stops gracefully", async () => {
  const other = await WorkerProcess.start({ certDir: pki.dir, env: { CLEANUP_TIMEOUT: "5" } });
  const c = clientFor(pki.dir, other.address);
  try {
    const job = await c.createJob({
      command: "bash",
      args: ["-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"],
    });
    const listening = () => other.logs.filter((l) => / listening /.test(l)).length;
    other.process.kill("SIGHUP");
    await waitFor("the reload", () => listening() === 2, 60_000);
    assert.equal((await c.getJob(job.id)).status, JobStatus.RUNNING, "the job runs on");
    c.close();
    const exit = await other.stop("SIGINT");
    assert.equal(exit.code, 0);
    assert.ok(other.logs.some((l) => l.includes("reload requested")), other.logs.join("\n"));
    assert.ok(other.logs.some((l) => l.includes("signal=SIGINT")));
  } finally {
    c.close();
  }
});

test("stop the worker", async () => {
  client.close();
  const exit = await worker.stop();
  await pki.remove();
  assert.equal(exit.code, 0);
});
