/**
 * End-to-end tests of ListJobs, GetJobs paging, DeleteJob, GetServerInfo and requestId, through
 * a real `jobworker serve` process and plain gRPC calls over mutual TLS.
 *
 * Run: `deno test -A tests/record_api_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { ApiCalls, rejectsWith } from "./helpers/api_calls.ts";
import { waitFor } from "./helpers/host_procs.ts";

const S = jobworker.JobStatus;
const KiB = 1024;

const pki = await makePki();
const worker = await WorkerProcess.start({ certDir: pki.dir });
const admin = new ApiCalls(pki.dir, worker.address, "admin");
const viewer = new ApiCalls(pki.dir, worker.address, "viewer");

globalThis.addEventListener("unload", () => {
  try {
    worker.process.kill("SIGKILL");
  } catch { /* gone */ }
});

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

const isEnded = (j: jobworker.IJob) =>
  j.status === S.COMPLETED || j.status === S.FAILED || j.status === S.STOPPED;

async function runToEnd(req: jobworker.ICreateJobReq): Promise<jobworker.Job> {
  const job = await admin.createJob(req);
  return await waitFor(`job ${job.id} to end`, async () => {
    const j = await admin.getJob(job.id);
    return isEnded(j) ? j : null;
  }, 30_000);
}

test("GetServerInfo: version, times, cgroups, limits, isolation, jobs, caller", async () => {
  const before = await admin.serverInfo();
  assert.match(before.version, /^\d+\.\d+\.\d+/);
  assert.ok(before.startTime && Number(before.startTime.seconds) > 0);
  assert.equal(before.reloadTime, null, "reloadTime is unset before any reload");
  assert.match(before.cgroupVersion, /^v[12]$/);
  for (const l of ["cpu", "memory", "pids"]) assert.ok(before.limits.includes(l), l);
  assert.deepEqual(before.isolation.slice(0, 4), ["pid", "mount", "ipc", "uts"]);
  assert.equal(before.maxRunningJobs, 1000);
  assert.equal(before.callerName, "alice");
  assert.equal(before.callerRole, "admin");
  const sleeper = await admin.createJob({ command: "sleep", args: ["30"] });
  try {
    const during = await viewer.serverInfo();
    assert.equal(during.runningJobs, before.runningJobs + 1);
    assert.equal(during.callerName, "victor");
    assert.equal(during.callerRole, "viewer");
  } finally {
    await admin.stopJob(sleeper.id);
  }
});

test("ListJobs: newest first, pages, statuses and owner filters, counts of the filter", async () => {
  const made: jobworker.Job[] = [];
  for (let i = 0; i < 7; i++) {
    made.push(await runToEnd({ command: i % 2 === 0 ? "true" : "false", args: [] }));
  }
  const all = await admin.listAll({ pageSize: 3 });
  assert.ok(all.pages >= 3, `7+ jobs in pages of 3 take 3+ pages, got ${all.pages}`);
  const ids = all.jobs.map((j) => j.id);
  assert.equal(new Set(ids).size, ids.length, "no job twice");
  const mine = ids.filter((id) => made.some((m) => m.id === id));
  assert.deepEqual(mine, made.map((m) => m.id).reverse(), "newest first");
  const seconds = all.jobs.map((j) => Number(j.createTime!.seconds));
  for (let i = 1; i < seconds.length; i++) assert.ok(seconds[i - 1]! >= seconds[i]!);

  const failed = await admin.listAll({ statuses: [S.FAILED], pageSize: 2 });
  assert.ok(failed.jobs.length >= 3);
  assert.ok(failed.jobs.every((j) => j.status === S.FAILED));
  const page = await admin.listJobs({ statuses: [S.FAILED], pageSize: 1 });
  assert.equal(page.jobs.length, 1);
  assert.equal(page.countByStatus["FAILED"], failed.jobs.length, "counts cover the whole filter");
  assert.equal(page.countByStatus["COMPLETED"] ?? 0, 0);
  const both = await admin.listAll({ statuses: [S.FAILED, S.COMPLETED] });
  assert.equal(both.pages, 1, "pageSize 0 = as many as fit");
  assert.ok(both.jobs.length >= 7);

  const alices = await viewer.listAll({ owner: "alice" });
  assert.equal(alices.jobs.length, all.jobs.length);
  const nobodys = await viewer.listJobs({ owner: "nobody" });
  assert.equal(nobodys.jobs.length, 0);
  assert.equal(nobodys.nextPageToken, "");
  assert.ok(Object.values(nobodys.countByStatus).every((n) => n === 0));
});

test("ListJobs: an unknown, forged or other-filter pageToken is INVALID_ARGUMENT", async () => {
  await runToEnd({ command: "true" });
  await runToEnd({ command: "true" });
  const first = await admin.listJobs({ pageSize: 1 });
  assert.notEqual(first.nextPageToken, "");
  for (const token of ["nonsense", "!!!", btoa("jw1.99999999.abc"), first.nextPageToken + "x"]) {
    const e = await rejectsWith(admin.listJobs({ pageToken: token }), status.INVALID_ARGUMENT);
    assert.match(e.details, /pageToken/);
  }
  const e = await rejectsWith(
    admin.listJobs({ pageToken: first.nextPageToken, statuses: [S.RUNNING] }),
    status.INVALID_ARGUMENT,
  );
  assert.match(e.details, /pageToken.*filters/);
  await rejectsWith(admin.listJobs({ statuses: [0] }), status.INVALID_ARGUMENT);
  await rejectsWith(
    admin.listJobs({ statuses: [42 as jobworker.JobStatus] }),
    status.INVALID_ARGUMENT,
  );
  await rejectsWith(admin.listJobs({ pageSize: -1 }), status.INVALID_ARGUMENT);
});

test("GetJobs: jobs with large env never make the response exceed the send limit", async () => {
  // Each job carries ~450 KiB of env: ten of them exceed the 4 MiB default limit.
  const env = Array.from({ length: 9 }, (_, i) => `BIG${i}=${"x".repeat(50 * KiB)}`);
  const big: string[] = [];
  for (let i = 0; i < 10; i++) big.push((await runToEnd({ command: "true", env })).id);
  const first = await admin.getJobs();
  assert.ok(first.jobs.length < 10 + 1, "not every large job fits in one response");
  assert.notEqual(first.nextPageToken, "", "GetJobs says there is more");
  assert.equal(first.jobs[0]!.id, big[big.length - 1], "the newest first");
  assert.equal(first.jobs[0]!.env!.length, 9, "jobs are listed whole");
  const rest = await admin.listAll({ pageToken: first.nextPageToken });
  const seen = [...first.jobs, ...rest.jobs].map((j) => j.id);
  for (const id of big) assert.ok(seen.includes(id), `job ${id} is listed`);
  assert.equal(new Set(seen).size, seen.length);
  const total = Object.values(first.countByStatus).reduce((a, b) => a + b, 0);
  assert.equal(seen.length, total, "every job on some page, counts of all jobs");
});

test("DeleteJob: ended jobs go with their output; running, unknown and viewers are refused", async () => {
  const sleeper = await admin.createJob({ command: "sleep", args: ["30"] });
  try {
    const e = await rejectsWith(admin.deleteJob(sleeper.id), status.FAILED_PRECONDITION);
    assert.match(e.details, /RUNNING/);
  } finally {
    await admin.stopJob(sleeper.id);
  }
  const done = await runToEnd({ command: "echo", args: ["bye"] });
  const dir = `${worker.stateDir}/jobs/${done.id}`;
  assert.ok((await Deno.stat(dir)).isDirectory);
  await rejectsWith(viewer.deleteJob(done.id), status.PERMISSION_DENIED);
  await admin.deleteJob(done.id);
  await rejectsWith(admin.getJob(done.id), status.NOT_FOUND);
  await rejectsWith(admin.deleteJob(done.id), status.NOT_FOUND);
  await rejectsWith(admin.deleteJob("no-such-job"), status.NOT_FOUND);
  await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
  const listed = await admin.listAll();
  assert.ok(!listed.jobs.some((j) => j.id === done.id));
  await admin.stopJob(sleeper.id);
  await admin.deleteJob(sleeper.id);
});

test("requestId: a retry returns the same job; other parameters are ALREADY_EXISTS", async () => {
  const key = `retry-${crypto.randomUUID()}`;
  const req = { command: "sleep", args: ["30"], requestId: key };
  // Concurrent retries: one job.
  const jobs = await Promise.all([1, 2, 3].map(() => admin.createJob(req)));
  try {
    assert.equal(new Set(jobs.map((j) => j.id)).size, 1);
    assert.equal(jobs[0]!.requestId, key);
    const again = await admin.createJob(req);
    assert.equal(again.id, jobs[0]!.id);
    const e = await rejectsWith(
      admin.createJob({ ...req, args: ["31"] }),
      status.ALREADY_EXISTS,
    );
    assert.match(e.details, new RegExp(jobs[0]!.id));
    await rejectsWith(admin.createJob({ ...req, maxMemory: 64 }), status.ALREADY_EXISTS);
    const running = await admin.listJobs({ statuses: [S.RUNNING] });
    assert.equal(running.jobs.filter((j) => j.requestId === key).length, 1);
  } finally {
    await admin.stopJob(jobs[0]!.id);
  }
  // Ended, the key still names that job.
  const ended = await admin.createJob(req);
  assert.equal(ended.id, jobs[0]!.id);
  assert.equal(ended.status, S.STOPPED);
  const other = await admin.createJob({ command: "true", requestId: `${key}-2` });
  assert.notEqual(other.id, jobs[0]!.id);
});

test("requestId: more than 128 or non-printable characters are INVALID_ARGUMENT", async () => {
  await admin.createJob({ command: "true", requestId: "k".repeat(128) });
  for (const requestId of ["k".repeat(129), "tab\there", "é", "nul\0"]) {
    const e = await rejectsWith(
      admin.createJob({ command: "true", requestId }),
      status.INVALID_ARGUMENT,
    );
    assert.match(e.details, /requestId/);
  }
});

test("stop the worker", async () => {
  admin.close();
  viewer.close();
  await worker.stop();
  await pki.remove();
});
