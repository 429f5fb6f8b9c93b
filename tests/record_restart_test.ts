/**
 * The place of record across worker deaths and restarts, with real worker processes on one state
 * directory: kill -9 while 20 jobs write, a graceful stop, requestId across a restart, retention,
 * a damaged database and an unusable state directory at start.
 *
 * Run: `deno test -A tests/record_restart_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { ApiCalls, rejectsWith } from "./helpers/api_calls.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { cgroupDirsNamed, jobProcesses, waitFor } from "./helpers/host_procs.ts";
import { SqliteStore } from "../worker/store/sqlite.ts";
import { jobSpec } from "./helpers/job_records.ts";

const S = jobworker.JobStatus;
const pki = await makePki();
const live = new Set<WorkerProcess>();
const stateDirs: string[] = [];

globalThis.addEventListener("unload", () => {
  for (const w of live) {
    try {
      w.process.kill("SIGKILL");
    } catch { /* gone */ }
  }
  for (const dir of stateDirs) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* gone */ }
  }
});

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

async function newStateDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-record-" });
  stateDirs.push(dir);
  return dir;
}

async function start(stateDir: string, env: Record<string, string> = {}) {
  const worker = await WorkerProcess.start({ certDir: pki.dir, stateDir, env });
  live.add(worker);
  return {
    worker,
    api: new ApiCalls(pki.dir, worker.address),
    client: clientFor(pki.dir, worker.address),
  };
}

async function stop(
  w: { worker: WorkerProcess; api: ApiCalls; client: { close(): void } },
  signal: Deno.Signal,
) {
  w.api.close();
  w.client.close();
  const result = await w.worker.stop(signal);
  live.delete(w.worker);
  return result;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new Uint8Array(bytes));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function localOutput(cmd: string, args: string[]): Promise<Uint8Array> {
  return (await new Deno.Command(cmd, { args, stdout: "piped" }).output()).stdout;
}

/** A job writing "0\n1\n2\n..." as fast as the shell can until stopped. */
const WRITER = { command: "sh", args: ["-c", 'i=0; while :; do echo "$i"; i=$((i+1)); done'] };

/** True when `text` is "0\n1\n...\nN\n" possibly followed by a partial last line. */
function isCounterPrefix(text: string): boolean {
  const lines = text.split("\n");
  const last = lines.pop()!;
  for (let i = 0; i < lines.length; i++) if (lines[i] !== String(i)) return false;
  return String(lines.length).startsWith(last);
}

test("kill -9 with 20 jobs writing: every record back, output exact, running ones FAILED", async () => {
  const stateDir = await newStateDir();
  const first = await start(stateDir);
  const finished: { id: string; sum: string }[] = [];
  for (const n of [1, 5000, 200000]) {
    const job = await first.api.createJob({ command: "seq", args: ["1", String(n)] });
    await waitJobEnded(first.api, job.id);
    finished.push({ id: job.id, sum: await sha256(await localOutput("seq", ["1", String(n)])) });
  }
  const mixed = await first.api.createJob({
    command: "sh",
    args: ["-c", "echo out1; echo err1 >&2; echo out2; exit 3"],
  });
  await waitJobEnded(first.api, mixed.id);
  const keyed = await first.api.createJob({ command: "true", requestId: "restart-key" });
  const writers: string[] = [];
  for (let i = 0; i < 20; i++) writers.push((await first.api.createJob(WRITER)).id);
  await waitFor("every writer to have written", async () => {
    const jobs = await Promise.all(writers.map((id) => first.api.getJob(id)));
    return jobs.every((j) => Number(j.outputBytes) > 1000);
  }, 30_000);
  const before = await first.api.listAll();

  await stop(first, "SIGKILL");
  // PR_SET_PDEATHSIG: the jobs die with the worker.
  await waitFor(
    "every job process to be gone",
    () => writers.every((id) => jobProcesses(id).length === 0),
    15_000,
  );

  const second = await start(stateDir);
  try {
    const after = await second.api.listAll();
    assert.deepEqual(
      after.jobs.map((j) => j.id),
      before.jobs.map((j) => j.id),
      "every record is there, in the same order",
    );
    for (const { id, sum } of finished) {
      const job = await second.api.getJob(id);
      assert.equal(job.status, S.COMPLETED);
      const { bytes } = await collectOutput(second.client, id);
      assert.equal(await sha256(bytes), sum, `output of ${id} byte-exact`);
      assert.equal(Number(job.outputBytes), bytes.length);
    }
    const m = await second.api.getJob(mixed.id);
    assert.equal(m.status, S.FAILED);
    assert.equal(m.exitCode, 3);
    const mo = await collectOutput(second.client, mixed.id);
    assert.equal(mo.stdout, "out1\nout2\n");
    assert.equal(mo.stderr, "err1\n");
    const restartedAt = Date.now();
    for (const id of writers) {
      const job = await second.api.getJob(id);
      assert.equal(job.status, S.FAILED, `writer ${id}`);
      assert.match(job.reason, /worker stopped while the job ran/);
      const endMs = Number(job.endTime!.seconds) * 1000;
      assert.ok(endMs <= restartedAt && endMs > restartedAt - 120_000, "ended when noticed");
      const { stdout, bytes } = await collectOutput(second.client, id, { noFollow: true });
      assert.ok(bytes.length > 1000, "output up to the crash is there");
      assert.ok(isCounterPrefix(stdout), `output of ${id} is what it wrote, in order`);
      assert.equal(Number(job.outputBytes), bytes.length);
      // Streaming (following) an interrupted job ends: it will not write any more.
      const followed = await collectOutput(second.client, id);
      assert.equal(followed.bytes.length, bytes.length);
    }
    assert.deepEqual(cgroupDirsNamed(writers), [], "no cgroup of the jobs left");
    const again = await second.api.createJob({ command: "true", requestId: "restart-key" });
    assert.equal(again.id, keyed.id, "requestId survives the restart");
    await rejectsWith(
      second.api.createJob({ command: "false", requestId: "restart-key" }),
      status.ALREADY_EXISTS,
    );
    // New jobs come after the old ones.
    const fresh = await second.api.createJob({ command: "true" });
    const page = await second.api.listJobs({ pageSize: 1 });
    assert.equal(page.jobs[0]!.id, fresh.id);
  } finally {
    await stop(second, "SIGTERM");
  }
});

/**
 * Tears the end of the write-ahead log the way a crash mid-write does: the last frame cut at a
 * point that is not a frame boundary (`cut`), then bytes that were never a whole frame appended.
 */
async function tearWal(path: string, cut: boolean): Promise<void> {
  const wal = await Deno.readFile(path);
  const pageSize = new DataView(wal.buffer).getUint32(8);
  const frame = 24 + pageSize;
  const frames = (wal.length - 32) / frame;
  assert.ok(Number.isInteger(frames) && frames >= 2, `commits in the WAL: ${wal.length} bytes`);
  const kept = cut ? wal.length - Math.floor(frame / 2) - 3 : wal.length;
  const garbage = crypto.getRandomValues(new Uint8Array(frame - 1000));
  const torn = new Uint8Array(kept + garbage.length);
  torn.set(wal.subarray(0, kept));
  torn.set(garbage, kept);
  await Deno.writeFile(path, torn);
}

test("torn tails after kill -9 (WAL cut mid-frame plus garbage, index records): every record readable", async () => {
  const stateDir = await newStateDir();
  const first = await start(stateDir);
  const finished: { id: string; stdout: string; stderr: string }[] = [];
  for (const n of [10, 1000, 30000]) {
    const job = await first.api.createJob({
      command: "sh",
      args: ["-c", `seq 1 ${n}; echo err${n} >&2; seq ${n} ${2 * n}`],
    });
    await waitJobEnded(first.api, job.id);
    const { stdout, stderr } = await collectOutput(first.client, job.id);
    finished.push({ id: job.id, stdout, stderr });
  }
  const writers: string[] = [];
  for (let i = 0; i < 3; i++) writers.push((await first.api.createJob(WRITER)).id);
  await waitFor("the writers to write", async () => {
    const jobs = await Promise.all(writers.map((id) => first.api.getJob(id)));
    return jobs.every((j) => Number(j.outputBytes) > 1000);
  }, 30_000);
  const ids = (await first.api.listAll()).jobs.map((j) => j.id);
  await stop(first, "SIGKILL");
  await waitFor("the writers to be gone", () => writers.every((id) => !jobProcesses(id).length));

  // Two crashes in a row, each leaving a torn tail: first only garbage past the last commit,
  // then (after the restart's own commits) the last frame cut short as well.
  for (const cut of [false, true]) {
    await tearWal(`${stateDir}/jobs.db-wal`, cut);
    // The end of finished and of interrupted output torn: an index record whose bytes never
    // reached the output file, then part of another record.
    for (const id of [finished[2]!.id, writers[0]!]) {
      const output = `${stateDir}/jobs/${id}/output`;
      const record = new DataView(new ArrayBuffer(11));
      record.setFloat64(0, ((await Deno.stat(output)).size + 7) * 4 + 2, true);
      record.setUint8(9, 0x34);
      const index = await Deno.open(`${output}.idx`, { append: true });
      await index.write(new Uint8Array(record.buffer));
      index.close();
    }
    const w = await start(stateDir);
    try {
      const after = await w.api.listAll();
      assert.deepEqual(after.jobs.map((j) => j.id), ids, "every record is there");
      for (const { id, stdout, stderr } of finished) {
        const job = await w.api.getJob(id);
        assert.equal(job.status, S.COMPLETED);
        const out = await collectOutput(w.client, id);
        assert.equal(out.stdout, stdout, `stdout of ${id} exact`);
        assert.equal(out.stderr, stderr, `stderr of ${id} exact`);
        assert.equal(Number(job.outputBytes), out.bytes.length);
      }
      for (const id of writers) {
        const job = await w.api.getJob(id);
        assert.equal(job.status, S.FAILED);
        assert.match(job.reason, /worker stopped while the job ran/);
        const out = await collectOutput(w.client, id, { noFollow: true });
        assert.ok(out.bytes.length > 1000 && isCounterPrefix(out.stdout), `output of ${id}`);
      }
      // The database takes new commits after the torn tail.
      const fresh = await w.api.createJob({ command: "true" });
      await waitJobEnded(w.api, fresh.id);
      ids.unshift(fresh.id);
    } finally {
      // The first is killed to tear the next tail; the last stops cleanly, since no later worker
      // on this state directory would remove its cgroups (its pool slots were left on the host).
      await stop(w, cut ? "SIGTERM" : "SIGKILL");
    }
  }
});

test("graceful stop and start: running jobs STOPPED by the shutdown, output kept", async () => {
  const stateDir = await newStateDir();
  const first = await start(stateDir, { CLEANUP_TIMEOUT: "2" });
  const writers: string[] = [];
  for (let i = 0; i < 5; i++) writers.push((await first.api.createJob(WRITER)).id);
  await waitFor(
    "output",
    async () => Number((await first.api.getJob(writers[4]!)).outputBytes) > 0,
  );
  const code = await stop(first, "SIGTERM");
  assert.equal(code.code, 0);
  const second = await start(stateDir);
  try {
    for (const id of writers) {
      const job = await second.api.getJob(id);
      assert.equal(job.status, S.STOPPED);
      assert.match(job.reason, /the worker shut down/);
      const { stdout, bytes } = await collectOutput(second.client, id);
      assert.equal(bytes.length, Number(job.outputBytes));
      assert.ok(isCounterPrefix(stdout));
    }
  } finally {
    await stop(second, "SIGTERM");
  }
});

/** The age limit of the retention test's age part (its count part runs with an hour's). */
const RETENTION_S = 3;

test("retention: by count and by age, records and output go together", async () => {
  const stateDir = await newStateDir();
  // Each part tests one limit: the count part's five sequential jobs may take longer than any
  // short age limit on a loaded host, so it runs on a worker with a long one.
  let w = await start(stateDir, {
    JOB_WORKER_MAX_ENDED_JOBS: "3",
    JOB_WORKER_RETENTION: "1h",
  });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const job = await w.api.createJob({ command: "echo", args: [String(i)] });
      await waitJobEnded(w.api, job.id);
      ids.push(job.id);
    }
    await waitFor(
      "the oldest to be forgotten",
      async () => (await w.api.listAll()).jobs.length === 3,
    );
    const kept = (await w.api.listAll()).jobs.map((j) => j.id);
    assert.deepEqual(kept, ids.slice(2).reverse());
    for (const id of ids.slice(0, 2)) {
      await rejectsWith(w.api.getJob(id), status.NOT_FOUND);
      await assert.rejects(Deno.stat(`${stateDir}/jobs/${id}`), Deno.errors.NotFound);
    }
    // By age, on the same state directory: after RETENTION_S the next job's end forgets the others.
    await stop(w, "SIGTERM");
    w = await start(stateDir, { JOB_WORKER_RETENTION: `${RETENTION_S}s` });
    await new Promise((r) => setTimeout(r, RETENTION_S * 1000 + 500));
    const last = await w.api.createJob({ command: "true" });
    await waitJobEnded(w.api, last.id);
    await waitFor(
      "the old ones to be forgotten",
      async () => (await w.api.listAll()).jobs.length === 1,
    );
    for (const id of ids) {
      await assert.rejects(Deno.stat(`${stateDir}/jobs/${id}`), Deno.errors.NotFound);
    }
  } finally {
    await stop(w, "SIGTERM");
  }
});

test("a damaged database: a clear error naming the file, no start over it, not rewritten", async () => {
  const stateDir = await newStateDir();
  const w = await start(stateDir);
  const job = await w.api.createJob({ command: "true" });
  await waitJobEnded(w.api, job.id);
  await stop(w, "SIGTERM");
  const path = `${stateDir}/jobs.db`;
  const bytes = await Deno.readFile(path);
  bytes.fill(0x41, 0, 100);
  await Deno.writeFile(path, bytes);
  const error = await WorkerProcess.start({ certDir: pki.dir, stateDir }).then(
    (w) => {
      live.add(w);
      throw new Error("the worker started over a damaged database");
    },
    (e: Error) => e,
  );
  assert.match(error.message, /exited \(78\)/, "exit status 78: do not restart");
  assert.ok(error.message.includes(path), error.message);
  assert.match(error.message, /move it aside/);
  assert.deepEqual(await Deno.readFile(path), bytes, "left as it was");
});

/** Starts a worker on `stateDir` that must refuse; its error (exit status, message). */
async function refusal(stateDir: string): Promise<Error> {
  return await WorkerProcess.start({ certDir: pki.dir, stateDir }).then(
    (w) => {
      live.add(w);
      throw new Error("the worker started over a torn database");
    },
    (e: Error) => e,
  );
}

test("a torn end of the main database file: records intact where the WAL covers it, else a clear refusal", async () => {
  const stateDir = await newStateDir();
  const first = await start(stateDir);
  for (let i = 0; i < 40; i++) {
    const job = await first.api.createJob({ command: "echo", args: [String(i), "x".repeat(3000)] });
    await waitJobEnded(first.api, job.id);
  }
  const ids = (await first.api.listAll()).jobs.map((j) => j.id);
  await stop(first, "SIGKILL");
  const path = `${stateDir}/jobs.db`;
  // A crash in the middle of a checkpoint: the pages were being copied from the WAL into the main
  // file, which ends torn (its last page cut short, then garbage appended), while the WAL, synced
  // before any checkpoint starts, still holds them.
  const wal = await Deno.readFile(`${path}-wal`);
  const raw = new DatabaseSync(path);
  raw.exec("PRAGMA wal_checkpoint(PASSIVE)");
  raw.close(); // the last connection: SQLite checkpoints and deletes the WAL here
  await Deno.writeFile(`${path}-wal`, wal);
  const main = await Deno.readFile(path);
  const pageSize = new DataView(main.buffer).getUint16(16);
  assert.ok(main.length >= 4 * pageSize, `pages in the main file: ${main.length} bytes`);
  const torn = new Uint8Array(main.length - pageSize / 2 + 700);
  torn.set(main.subarray(0, main.length - pageSize / 2));
  torn.set(crypto.getRandomValues(new Uint8Array(700)), main.length - pageSize / 2);
  await Deno.writeFile(path, torn);
  const second = await start(stateDir);
  try {
    const after = await second.api.listAll();
    assert.deepEqual(after.jobs.map((j) => j.id), ids, "every record is there");
    assert.ok(after.jobs.every((j) => j.status === S.COMPLETED));
    // It takes new commits over the torn end.
    const fresh = await second.api.createJob({ command: "true" });
    await waitJobEnded(second.api, fresh.id);
    ids.unshift(fresh.id);
  } finally {
    await stop(second, "SIGTERM");
  }

  // Tears where nothing covers them (the WAL checkpointed and gone after the clean stop): the
  // main file cut mid-page, and a page halfway through it torn in place (its first half
  // overwritten, as a power loss during a checkpoint's write of it leaves it). The worker refuses,
  // naming the file, exit 78, each time it is started, and leaves the file alone.
  await Deno.remove(`${path}-wal`).catch(() => {});
  const whole = await Deno.readFile(path);
  const middle = Math.floor(whole.length / pageSize / 2) * pageSize;
  const inPlace = whole.slice();
  inPlace.set(crypto.getRandomValues(new Uint8Array(pageSize / 2)), middle);
  for (
    const [tear, bytes] of [
      ["cut mid-page", whole.slice(0, whole.length - pageSize - pageSize / 2)],
      ["a page torn in place", inPlace],
    ] as const
  ) {
    await Deno.writeFile(path, bytes);
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await refusal(stateDir);
      assert.match(error.message, /exited \(78\)/, `${tear}: exit status 78, do not restart`);
      assert.ok(error.message.includes(`the job database ${path} cannot be used`), error.message);
      assert.match(error.message, /malformed|btreeInitPage|corrupt/, error.message);
      assert.deepEqual(await Deno.readFile(path), bytes, `${tear}: left as it was`);
    }
  }
});

test("an unusable state directory: a clear error, exit 78", async () => {
  const parent = await newStateDir();
  await Deno.writeTextFile(`${parent}/file`, "");
  const error = await WorkerProcess.start({ certDir: pki.dir, stateDir: `${parent}/file/state` })
    .then((w) => {
      live.add(w);
      throw new Error("started");
    }, (e: Error) => e);
  assert.match(error.message, /exited \(78\)/);
  assert.match(error.message, /state directory .*file\/state cannot be used/);
});

test("paging 3000 recorded jobs and jobs with 500 KiB of env; filters; counts", async () => {
  const stateDir = await newStateDir();
  // The records a previous run left: written into a real database file, then served.
  const store = SqliteStore.open(`${stateDir}/jobs.db`);
  const statuses = ["COMPLETED", "FAILED", "STOPPED"] as const;
  const bigEnv = Array.from({ length: 5 }, (_, i) => `E${i}=${"v".repeat(100 * 1024)}`);
  const TOTAL = 3020;
  for (let seq = 1; seq <= TOTAL; seq++) {
    const big = seq > 3000;
    store.insert({
      id: `00000000-0000-4000-8000-${String(seq).padStart(12, "0")}`,
      seq,
      owner: seq % 4 === 0 ? "bob" : "alice",
      spec: jobSpec({
        command: "true",
        env: big ? bigEnv : [],
        limits: { cpuPercent: 100, memoryMiB: 512, ioBps: 0, pids: 1024 },
      }),
      status: statuses[seq % 3]!,
      createTime: new Date(1_700_000_000_000 + seq * 1000),
      startTime: new Date(1_700_000_000_000 + seq * 1000),
      endTime: new Date(Date.now() - 1000),
      exit: { exitCode: 0, signal: 0 },
      oomKilled: false,
      reason: "seeded",
      finalUsage: undefined,
      outputBytes: 0,
      outputTruncated: false,
    });
  }
  store.close();
  const w = await start(stateDir, { JOB_WORKER_MAX_ENDED_JOBS: "10000" });
  try {
    const expected = Array.from({ length: TOTAL }, (_, i) => TOTAL - i);
    const seqOf = (j: jobworker.IJob) => Number(j.id!.slice(-12));
    // 20 jobs of 500 KiB env come first (newest): GetJobs holds what fits in 4 MiB.
    const first = await w.api.getJobs();
    assert.ok(first.jobs.length >= 5 && first.jobs.length < 10, `${first.jobs.length} jobs`);
    assert.equal(first.jobs[0]!.env!.length, 5, "jobs listed whole");
    assert.notEqual(first.nextPageToken, "");
    const total = Object.values(first.countByStatus).reduce((a, b) => a + b, 0);
    assert.equal(total, TOTAL);
    const rest = await w.api.listAll({ pageToken: first.nextPageToken });
    assert.deepEqual([...first.jobs, ...rest.jobs].map(seqOf), expected, "all, newest first, once");
    const paged = await w.api.listAll({ pageSize: 100 });
    // Pages of the large jobs hold fewer than 100 (the send limit); the rest hold 100.
    assert.ok(paged.pages >= Math.ceil(TOTAL / 100) && paged.pages <= 40, `${paged.pages} pages`);
    assert.deepEqual(paged.jobs.map(seqOf), expected);
    const bobsFailed = await w.api.listAll({ owner: "bob", statuses: [S.FAILED], pageSize: 50 });
    const want = expected.filter((seq) => seq % 4 === 0 && statuses[seq % 3] === "FAILED");
    assert.deepEqual(bobsFailed.jobs.map(seqOf), want);
    const counts = await w.api.listJobs({ owner: "bob", pageSize: 1 });
    assert.equal(counts.countByStatus["FAILED"], want.length);
    assert.equal(
      Object.values(counts.countByStatus).reduce((a, b) => a + b, 0),
      expected.filter((seq) => seq % 4 === 0).length,
    );
  } finally {
    await stop(w, "SIGTERM");
  }
});

test("cleanup", async () => {
  for (const dir of stateDirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
  await pki.remove();
});
