/**
 * A full disk and retention, as an operator meets them, with real workers: the state directory on
 * a small tmpfs filled by a job's output and from outside; a restart on that full disk; ended jobs
 * forgotten by JOB_WORKER_MAX_ENDED_JOBS while a client still reads them.
 *
 * Run: `deno test -A tests/disk_and_retention_test.ts` (as root: it mounts tmpfs).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { killedAtUnload } from "./helpers/killed_at_unload.ts";
import { ApiCalls } from "./helpers/api_calls.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { unless, withSkip } from "./helpers/skip.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { DatabaseSync } from "node:sqlite";
import { writeHandover } from "../worker/runtime/reexec.ts";
import { fillUp, freeBytes } from "./helpers/disk.ts";

const S = jobworker.JobStatus;
const MiB = 1024 * 1024;
const pki = await makePki();
const workers = killedAtUnload();
const asRoot = unless(Deno.uid() === 0, "not root: mounting a tmpfs needs it");

function test(name: string, fn: () => Promise<void>): void {
  Deno.test(withSkip({ name, sanitizeResources: false, sanitizeOps: false, fn }, asRoot));
}

async function run(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * Runs `fn` with a 16 MiB tmpfs, unmounted and removed afterwards whatever happens. The workers
 * `fn` starts must be stopped before it returns (their waiting inits hold copies of the mount).
 */
async function withSmallDisk(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-full-disk-" });
  try {
    await run("mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", dir);
    try {
      await fn(dir);
    } finally {
      await run("umount", dir).catch(() => run("umount", "-l", dir));
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function startWorker(stateDir: string, env: Record<string, string> = {}) {
  const worker = await WorkerProcess.start({ certDir: pki.dir, stateDir, env });
  workers.add(worker);
  return worker;
}

async function stopWorker(worker: WorkerProcess, signal: Deno.Signal = "SIGTERM") {
  await worker.stop(signal);
  workers.delete(worker);
}

const ended = (api: ApiCalls, id: string) => waitJobEnded(api, id);

async function rejectsWith(promise: Promise<unknown>, code: number): Promise<string> {
  const error = await promise.then(
    () => assert.fail(`expected status ${code}, the call succeeded`),
    (e: { code: number; details: string }) => e,
  );
  assert.equal(error.code, code, error.details);
  return error.details;
}

test("a disk filled by a job's output: its stream stops at the byte its reason names, and deleting it makes room again", async () => {
  await withSmallDisk(async (stateDir) => {
    const worker = await startWorker(stateDir);
    const api = new ApiCalls(pki.dir, worker.address);
    const client = clientFor(pki.dir, worker.address);
    try {
      const big = await api.createJob({
        command: "sh",
        args: ["-c", "head -c 31457280 /dev/zero; echo end >&2"],
      });
      const job = await ended(api, big.id);
      assert.equal(job.status, S.COMPLETED, job.reason);
      const lostAt = Number(/output from byte (\d+) on was lost/.exec(job.reason)?.[1]);
      assert.ok(lostAt > 0, `the reason says where output was lost: ${job.reason}`);
      assert.equal(Number(job.outputBytes), lostAt);
      // What the job's output holds is exactly what its record counts: a write cut short by the
      // full disk left none of its bytes behind.
      const { bytes } = await collectOutput(client, big.id);
      assert.equal(bytes.length, lostAt, "the stream ends where the reason says output was lost");
      assert.equal((await Deno.stat(`${stateDir}/jobs/${big.id}/output`)).size, lostAt);
      // Whatever room the job left is taken from outside: nothing can be written any more.
      await fillUp(`${stateDir}/filler`);
      await rejectsWith(api.createJob({ command: "true" }), status.RESOURCE_EXHAUSTED);
      // Deleting the job that filled the disk works and gives its space back.
      await api.deleteJob(big.id);
      await rejectsWith(api.getJob(big.id), status.NOT_FOUND);
      assert.ok((await freeBytes(stateDir)) > 8 * MiB, "the job's output is gone from the disk");
      const after = await api.createJob({ command: "echo", args: ["room again"] });
      assert.equal((await ended(api, after.id)).status, S.COMPLETED);
      assert.equal((await collectOutput(client, after.id)).stdout, "room again\n");
    } finally {
      client.close();
      api.close();
      await stopWorker(worker);
    }
  });
});

test("a restart on a full disk: the worker starts and serves, and records the interrupted job once there is room", async () => {
  await withSmallDisk(async (stateDir) => {
    const first = await startWorker(stateDir);
    const api1 = new ApiCalls(pki.dir, first.address);
    const job = await api1.createJob({
      command: "sh",
      args: ["-c", "echo started; exec sleep 600"],
    });
    // RUNNING means exec'd, not written: fill the disk only once the line is in the output file.
    await waitFor(
      "the job's first line",
      async () => (await api1.getJob(job.id)).outputBytes >= "started\n".length,
    );
    api1.close();
    await fillUp(`${stateDir}/filler`);
    // A crash: the job dies with the worker and its record still says RUNNING.
    await stopWorker(first, "SIGKILL");
    const second = await startWorker(stateDir); // exited 78 ("cannot be used") before
    const api = new ApiCalls(pki.dir, second.address);
    try {
      assert.ok(
        second.logs.some((l) => l.includes("the state directory's filesystem is full")),
        "the log says why creates will fail",
      );
      const got = await api.getJob(job.id);
      assert.equal(got.status, S.FAILED);
      assert.match(got.reason, /the worker stopped while the job ran/);
      const client = clientFor(pki.dir, second.address);
      try {
        assert.equal((await collectOutput(client, job.id)).stdout, "started\n");
      } finally {
        client.close();
      }
      // Listed and counted as what it is, though the database still says RUNNING.
      const running = await api.listJobs({ statuses: [S.RUNNING] });
      assert.deepEqual(running.jobs.map((j) => j.id), []);
      assert.equal(running.countByStatus?.["RUNNING"] ?? 0, 0, "no job counted RUNNING");
      const failed = await api.listJobs({ statuses: [S.FAILED] });
      assert.deepEqual(failed.jobs.map((j) => j.id), [job.id]);
      assert.equal(failed.countByStatus?.["FAILED"], 1);
      await rejectsWith(api.createJob({ command: "true" }), status.RESOURCE_EXHAUSTED);
      // Room again: creates work, and the next job's end writes the interrupted job's state.
      await Deno.remove(`${stateDir}/filler`);
      const next = await api.createJob({ command: "true" });
      await ended(api, next.id);
    } finally {
      api.close();
    }
    await stopWorker(second, "SIGKILL");
    // Had its FAILED state not been written, this start would find it RUNNING again.
    const third = await startWorker(stateDir);
    try {
      assert.ok(
        third.logs.some((l) => /msg=listening .*jobsInterrupted=0/.test(l)),
        "nothing was left RUNNING in the record",
      );
    } finally {
      await stopWorker(third);
    }
  });
});

test("retention: a job followed to its end is still there when its reader asks how it ended; one nobody reads goes at once", async () => {
  const worker = await startWorker(
    await Deno.makeTempDir({ prefix: "jobworker-retention-" }),
    { JOB_WORKER_MAX_ENDED_JOBS: "1" },
  );
  const api = new ApiCalls(pki.dir, worker.address);
  const client = clientFor(pki.dir, worker.address);
  try {
    const unread = await api.createJob({ command: "echo", args: ["unread"] });
    await ended(api, unread.id);
    // `jobworker run`: follow the job's output to its end, then ask how it ended.
    const followed = await api.createJob({ command: "sh", args: ["-c", "sleep 0.5; echo one"] });
    assert.equal((await collectOutput(client, followed.id)).stdout, "one\n");
    // Another job ends meanwhile: with one ended job kept, the followed one is beyond the limit.
    const other = await api.createJob({ command: "true" });
    await ended(api, other.id);
    await rejectsWith(api.getJob(unread.id), status.NOT_FOUND);
    const asked = await api.getJob(followed.id); // NOT_FOUND before: `run` failed on it
    assert.equal(asked.status, S.COMPLETED);
    // A stream reading a job that is deleted meanwhile ends cleanly with all of its output.
    const big = await api.createJob({
      command: "head",
      args: ["-c", String(4 * MiB), "/dev/zero"],
    });
    await ended(api, big.id);
    const reader = client.stream(big.id)[Symbol.asyncIterator]();
    const first = await reader.next();
    assert.equal(first.done, false);
    let bytes = first.done ? 0 : first.value.payload.length;
    assert.ok(bytes < 4 * MiB, "the stream is under way");
    await api.deleteJob(big.id);
    for (let next = await reader.next(); !next.done; next = await reader.next()) {
      bytes += next.value.payload.length;
    }
    assert.equal(bytes, 4 * MiB);
    await rejectsWith(api.getJob(big.id), status.NOT_FOUND);
    await assert.rejects(Deno.stat(`${worker.stateDir}/jobs/${big.id}`), Deno.errors.NotFound);
  } finally {
    client.close();
    api.close();
    await stopWorker(worker);
    await Deno.remove(worker.stateDir, { recursive: true }).catch(() => {});
  }
});

test("a stop and start on a full disk: serves on after a stop on it; a clear, retryable error if it filled while stopped", async () => {
  await withSmallDisk(async (stateDir) => {
    const first = await startWorker(stateDir);
    const api1 = new ApiCalls(pki.dir, first.address);
    const job = await api1.createJob({ command: "echo", args: ["kept"] });
    await waitJobEnded(api1, job.id);
    api1.close();
    // Filled while it runs, then a graceful stop: SQLite keeps its -wal and -shm files.
    await fillUp(`${stateDir}/filler`);
    await stopWorker(first, "SIGTERM");
    const second = await startWorker(stateDir);
    const api = new ApiCalls(pki.dir, second.address);
    try {
      assert.equal((await api.getJob(job.id)).status, S.COMPLETED);
    } finally {
      api.close();
    }
    // A stop with room removes them; filled while stopped, the open must create them again.
    await Deno.remove(`${stateDir}/filler`);
    await stopWorker(second, "SIGTERM");
    await assert.rejects(Deno.stat(`${stateDir}/jobs.db-shm`), Deno.errors.NotFound);
    await fillUp(`${stateDir}/filler`);
    // exited 78 before, saying the database was damaged and should be moved aside
    const error = await startWorker(stateDir).then(
      () => assert.fail("the worker started"),
      (e: Error) => e.message,
    );
    assert.match(error, /the worker exited \(1\)/);
    assert.match(error, /the disk is full .*Free space on the state directory's filesystem/);
    assert.doesNotMatch(error, /move it aside/);
    assert.deepEqual(
      [...Deno.readDirSync(`${stateDir}/lib`)].filter((e) => e.name.endsWith(".tmp")),
      [],
    );
    await Deno.remove(`${stateDir}/filler`);
    const third = await startWorker(stateDir);
    const api3 = new ApiCalls(pki.dir, third.address);
    try {
      assert.equal((await api3.getJob(job.id)).status, S.COMPLETED, "the history is whole");
    } finally {
      api3.close();
      await stopWorker(third);
    }
  });
});

test("a job whose end the database could not take before a reload keeps that end after it", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-unsaved-reload-" });
  const worker = await startWorker(stateDir);
  const api = new ApiCalls(pki.dir, worker.address);
  // Another connection to the worker's database refuses the state of a job that exited with 3, as
  // a full disk would (the reload itself must still be able to write its handover file).
  const db = new DatabaseSync(`${stateDir}/jobs.db`);
  try {
    db.exec(
      `CREATE TRIGGER full BEFORE UPDATE ON jobs WHEN NEW.exit_code = 3
       BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`,
    );
    const job = await api.createJob({ command: "sh", args: ["-c", "exit 3"] });
    const before = await waitJobEnded(api, job.id);
    assert.match(before.reason, /exited with code 3/);
    const listens = () => worker.logs.filter((l) => parseLogLine(l)?.msg === "listening").length;
    const listened = listens();
    worker.process.kill("SIGHUP");
    await waitFor("the worker to listen again", () => listens() > listened, 60_000);
    const after = await api.getJob(job.id); // "the worker stopped while the job ran" before
    assert.equal(after.status, S.FAILED);
    assert.match(after.reason, /exited with code 3/);
    assert.equal(after.exitCode, 3);
    // Room again: the next job's end writes it.
    db.exec("DROP TRIGGER full");
    await waitJobEnded(api, (await api.createJob({ command: "true" })).id);
    const row = db.prepare("SELECT status, exit_code FROM jobs WHERE id = ?").get(job.id);
    assert.deepEqual({ ...row }, { status: "FAILED", exit_code: 3 });
  } finally {
    db.close();
    api.close();
    await stopWorker(worker);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});

test("a state the database cannot take is logged once per state, and again once recorded", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-unsaved-log-" });
  const worker = await startWorker(stateDir);
  const api = new ApiCalls(pki.dir, worker.address);
  const db = new DatabaseSync(`${stateDir}/jobs.db`);
  try {
    db.exec(
      `CREATE TRIGGER full BEFORE UPDATE ON jobs
       BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`,
    );
    const job = await api.createJob({ command: "true" });
    await waitJobEnded(api, job.id);
    await waitJobEnded(api, (await api.createJob({ command: "true" })).id); // a retry: not logged
    const lines = (msg: string) =>
      worker.logs.map(parseLogLine).filter((l) => l?.msg === msg && l.fields.id === job.id);
    // Its RUNNING state failed, then its end: the end was not logged before.
    assert.deepEqual(
      lines("cannot record the job's state; will retry").map((l) => l?.fields.status),
      ["RUNNING", "COMPLETED"],
    );
    db.exec("DROP TRIGGER full");
    await waitJobEnded(api, (await api.createJob({ command: "true" })).id);
    await waitFor(
      "the recovery logged",
      () => lines("the job's state is recorded now").length === 1,
    );
  } finally {
    db.close();
    api.close();
    await stopWorker(worker);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  }
});

test("a handover file the disk has no room for is an error, not a truncated file", async () => {
  await withSmallDisk(async (dir) => {
    await Deno.writeFile(`${dir}/room`, new Uint8Array(8192));
    await fillUp(`${dir}/filler`);
    await Deno.remove(`${dir}/room`);
    const handover = {
      startTime: new Date().toISOString(),
      reloadTime: new Date().toISOString(),
      port: 1,
      jobs: [],
      unsaved: [],
      padding: "x".repeat(100_000),
    };
    // One write() took what fitted and returned short before: the file was left truncated.
    assert.throws(() => writeHandover(`${dir}/handover.json`, handover));
  });
});

test("cleanup", async () => {
  await pki.remove();
});
