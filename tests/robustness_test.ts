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
import { parseLogLine } from "./helpers/log_lines.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { runProgram } from "./helpers/process.ts";
import { UNDER_UML } from "./helpers/machine.ts";
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

test("start a worker", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_ALLOW_PRIVILEGED: "1" },
  });
  client = clientFor(pki.dir, worker.address);
});

test("unmounting /proc inside a job uncovers nothing of the host", async () => {
  // Privileged: only a job with CAP_SYS_ADMIN can unmount at all.
  const job = await client.createJob({
    command: "sh",
    args: [
      "-c",
      "umount /proc 2>/dev/null; stat -f -c %T /proc; ls /proc | grep -c '^[0-9]' || true",
    ],
    privileged: true,
  });
  await waitJobEnded(client, job.id);
  const [fsType, count] = (await collectOutput(client, job.id)).stdout.trim().split("\n");
  // No procfs is left under the job's own: the host's was detached, not just covered.
  assert.notEqual(fsType, "proc", "a procfs is still mounted on /proc");
  // What shows is the root filesystem's /proc directory: empty on a real host. Under User-mode
  // Linux the root filesystem is an overlay on the outer host's, read through hostfs, whose /proc
  // directory lists the outer host's processes: files of that filesystem, not the guest's procfs.
  if (!UNDER_UML) {
    assert.equal(Number(count), 0, "no process directories once the job's own /proc is gone");
  }
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
  const lockFile = `${stateDir}/lock`;
  try {
    await withWorker({}, async (c) => {
      const job = await c.createJob({ command: "sleep", args: ["30"] });
      // flock(1), independent of the product, sees the lock held (exit 75 = could not take it).
      const probe = await runProgram("flock", ["-n", "-E", "75", lockFile, "true"]);
      assert.equal(
        probe.code,
        75,
        `flock took the lock the first worker should hold: ${probe.stderr}`,
      );
      await assert.rejects(
        WorkerProcess.start({ certDir: pki.dir, stateDir }),
        /another worker is using the state directory/,
      );
      assert.equal((await c.getJob(job.id)).status, JobStatus.RUNNING);
      assert.equal((await collectOutput(c, job.id, { noFollow: true })).bytes.length, 0);
    }, stateDir);
    // The refusal is the lock, not the file: held by another process, the lock alone keeps a
    // worker out; the same file, no longer held, lets one in.
    // This process takes the lock (flock(2), as the worker does) and holds nothing else.
    const holder = await Deno.open(lockFile, { read: true, write: true });
    try {
      await holder.lock(true);
      await waitHeld(lockFile);
      await assert.rejects(
        WorkerProcess.start({ certDir: pki.dir, stateDir }),
        /another worker is using the state directory/,
      );
    } finally {
      await holder.unlock();
      holder.close();
    }
    await withWorker({}, async (c) => {
      assert.ok(Array.isArray((await c.listJobs()).jobs));
    }, stateDir);
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

/** Waits until some process holds an exclusive flock on `path` (checked with flock(1)). */
async function waitHeld(path: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const probe = await runProgram("flock", ["-n", "-E", "75", path, "true"]);
    if (probe.code === 75) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nobody took the lock on ${path}`);
}

test("a forced stop brings forward the SIGKILL of a graceful stop in progress", async () => {
  // A PID 1 that handles SIGTERM by saying so and carrying on: its line proves the graceful stop
  // arrived before the forced one is sent (ordered by observation, not by a sleep).
  const job = await client.createJob({
    command: "bash",
    args: ["-c", 'trap "echo got TERM" TERM; echo ready; while :; do sleep 0.2; done'],
  });
  await waitOutput(job.id, "ready\n");
  const t0 = Date.now();
  const graceful = client.stopJob(job.id, { graceSeconds: 60 });
  await waitOutput(job.id, "got TERM\n");
  assert.equal((await client.getJob(job.id)).status, JobStatus.RUNNING, "SIGTERM alone ended it");
  const forced = await client.stopJob(job.id, { force: true });
  assert.equal(forced.status, JobStatus.STOPPED);
  assert.equal(forced.signal, 9);
  const gracefulEnd = await graceful;
  assert.equal(gracefulEnd.status, JobStatus.STOPPED);
  assert.equal(gracefulEnd.signal, 9, "the graceful stop's own result: killed by SIGKILL");
  // Well inside the 60 s grace: the forced stop did not wait for it.
  assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms of a 60 s grace`);
});

/** Waits until the job's output so far contains `text`. */
async function waitOutput(id: string, text: string): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const out = new TextDecoder().decode(
      (await collectOutput(client, id, { noFollow: true })).bytes,
    );
    if (out.includes(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id} never wrote ${JSON.stringify(text)}`);
}

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
      await waitJobEnded(c, job.id);
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
    const ended = await waitJobEnded(c, job.id);
    assert.equal(ended.status, JobStatus.COMPLETED, "the job was not blocked by the limit");
    assert.equal(ended.outputBytes, 100000);
    assert.equal(ended.outputTruncated, true);
    const out = await collectOutput(c, job.id);
    assert.equal(out.bytes.length, 100000);
    assert.equal(out.stderr, "", "what came after the limit is gone");
    const small = await c.createJob({ command: "echo", args: ["fits"] });
    assert.equal((await waitJobEnded(c, small.id)).outputTruncated, false);
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
    const listening = () => other.logs.filter((l) => parseLogLine(l)?.msg === "listening").length;
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
