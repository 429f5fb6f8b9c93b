/**
 * A job being forgotten (DeleteJob, JOB_WORKER_MAX_ENDED_JOBS) is answered for as gone from the
 * moment its removal starts until its record is gone (worker/jobs/manager.ts, retention.ts), with
 * real workers and real gRPC clients: GetJob, DeleteJob and GetJobsStream say NOT_FOUND, GetJobs
 * and ListJobs leave it out (and do not count it). Never a job whose output is partly removed.
 *
 * The window is held open for real: another connection to the worker's database refuses deletes
 * of job records as a full disk does ("database or disk is full"), which makes the worker remove
 * the job's output before its record and, when that does not help, keep the record until a later
 * retention pass. The removal of the output is itself held mid-way by a FUSE gate mounted in the
 * job's directory (tests/helpers/fuse_gate.ts): the recursive removal waits at the gate's
 * directory until the test opens it (whether the output's files are gone by then depends on the
 * order the directory lists its entries in: either way the record is still stored).
 *
 * Run: `deno test -A tests/forgetting_hidden_test.ts` (as root: the gate mounts FUSE).
 *
 * @module
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { killedAtUnload } from "./helpers/killed_at_unload.ts";
import { ApiCalls, rejectsWith } from "./helpers/api_calls.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { FuseGate } from "./helpers/fuse_gate.ts";
import { unless, withSkip } from "./helpers/skip.ts";
import type { JobClient } from "../cli/client.ts";

const S = jobworker.JobStatus;
const MiB = 1024 * 1024;
/** The output of the job a stream reads while it is being forgotten. */
const OUTPUT = 32 * MiB;
const pki = await makePki();
const workers = killedAtUnload();

const hasFuse = (() => {
  try {
    return Deno.statSync("/dev/fuse").isCharDevice === true;
  } catch {
    return false;
  }
})();
const asRoot = unless(Deno.uid() === 0, "not root: reads the worker's database and mounts FUSE");
const withFuse = unless(hasFuse, "no /dev/fuse to hold the removal of a job's output");

function test(name: string, fn: () => Promise<void>, needsFuse = false): void {
  Deno.test(withSkip(
    { name, sanitizeResources: false, sanitizeOps: false, fn },
    asRoot ?? (needsFuse ? withFuse : undefined),
  ));
}

/** What each test gets: a worker of its own, a plain API client and the CLI's stream client. */
interface Setup {
  worker: WorkerProcess;
  api: ApiCalls;
  client: JobClient;
  db: DatabaseSync;
}

async function withWorker(env: Record<string, string>, fn: (s: Setup) => Promise<void>) {
  const worker = await WorkerProcess.start({ certDir: pki.dir, env });
  workers.add(worker);
  const api = new ApiCalls(pki.dir, worker.address);
  const client = clientFor(pki.dir, worker.address);
  // A second connection to the worker's database, as another process would have.
  const db = new DatabaseSync(`${worker.stateDir}/jobs.db`);
  try {
    await fn({ worker, api, client, db });
  } finally {
    db.close();
    client.close();
    api.close();
    await worker.stop();
    workers.delete(worker);
  }
}

/** Deletes of job records fail as on a full disk until the result is called. */
function refuseDeletes(db: DatabaseSync): () => void {
  db.exec(
    `CREATE TRIGGER full_disk BEFORE DELETE ON jobs
     BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`,
  );
  return () => db.exec("DROP TRIGGER full_disk");
}

const stored = (db: DatabaseSync, id: string) =>
  db.prepare("SELECT id FROM jobs WHERE id = ?").get(id) !== undefined;

/**
 * Every call that names or lists jobs answers for `hidden` as for a job that is gone, and still
 * shows `kept` (an ended job of the same owner and status, not being forgotten).
 */
async function assertHidden(s: Setup, hidden: string, kept: string): Promise<void> {
  assert.ok(stored(s.db, hidden), "the window is open: the job's record is still stored");
  await rejectsWith(s.api.getJob(hidden), status.NOT_FOUND);
  await rejectsWith(s.api.deleteJob(hidden), status.NOT_FOUND);
  // A stream opened now ends at once, with NOT_FOUND: no part of the output as if it were all.
  await rejectsWith(collectOutput(s.client, hidden), status.NOT_FOUND);
  await rejectsWith(collectOutput(s.client, hidden, { noFollow: true }), status.NOT_FOUND);
  const ids = (jobs: jobworker.IJob[]) => jobs.map((j) => j.id);
  const all = await s.api.listJobs({});
  assert.ok(ids(all.jobs).includes(kept), "the list is served");
  assert.ok(!ids(all.jobs).includes(hidden), "ListJobs leaves the job out");
  const completed = await s.api.listJobs({ statuses: [S.COMPLETED] });
  assert.ok(!ids(completed.jobs).includes(hidden), "ListJobs by status leaves it out");
  assert.equal(
    completed.countByStatus?.["COMPLETED"],
    completed.jobs.length,
    "the count leaves it out too",
  );
  // One job a page: the job is not on any page, and no page is empty.
  const paged = await s.api.listAll({ pageSize: 1 });
  assert.ok(!ids(paged.jobs).includes(hidden), "no page holds it");
  assert.equal(paged.pages, paged.jobs.length, "one job on each page");
  assert.ok(!ids((await s.api.getJobs()).jobs).includes(hidden), "GetJobs leaves it out");
}

test(
  "DeleteJob held in the removal of the output: the job is NOT_FOUND to every call; a stream reading it gets all of it",
  async () => {
    await withWorker({}, async (s) => {
      const kept = await s.api.createJob({ command: "echo", args: ["kept"] });
      await waitJobEnded(s.api, kept.id);
      const big = await s.api.createJob({
        command: "head",
        args: ["-c", String(OUTPUT), "/dev/zero"],
      });
      assert.equal((await waitJobEnded(s.api, big.id)).status, S.COMPLETED);
      // A stream under way before the removal starts: its first chunk read, the rest still to come
      // (far more than the client's buffers, the socket's and HTTP/2's windows hold together).
      const reader = s.client.stream(big.id)[Symbol.asyncIterator]();
      const first = await reader.next();
      assert.equal(first.done, false);
      let bytes = first.done ? 0 : first.value.payload.length;
      assert.ok(bytes < OUTPUT, "the stream is under way");

      const gate = await FuseGate.mount(
        await Deno.makeTempDir({ dir: `${s.worker.stateDir}/jobs/${big.id}`, prefix: "gate-" }),
      );
      const allowDeletes = refuseDeletes(s.db);
      try {
        // The record cannot go: the worker removes the output first, and waits at the gate.
        const deleting = s.api.deleteJob(big.id);
        deleting.catch(() => {}); // awaited below; a failed test must not leave it unhandled
        await waitFor("the removal to wait at the gate", () => gate.waiting > 0);
        await assertHidden(s, big.id, kept.id);
        // The stream that was under way reads on to the end of the output, whole.
        for (let next = await reader.next(); !next.done; next = await reader.next()) {
          bytes += next.value.payload.length;
        }
        assert.equal(bytes, OUTPUT, "the stream under way ends with all of the output");
        assert.equal(gate.waiting, 1, "still held: all of this happened inside the window");
        // Room again: the record goes once the output's removal is over.
        allowDeletes();
        gate.open();
        await deleting;
        assert.ok(!stored(s.db, big.id), "the record is gone");
        await rejectsWith(s.api.getJob(big.id), status.NOT_FOUND);
        await rejectsWith(s.api.deleteJob(big.id), status.NOT_FOUND);
      } finally {
        try {
          allowDeletes();
        } catch { /* dropped already */ }
        await gate.unmount();
      }
    });
  },
  true,
);

test("DeleteJob on a disk too full to delete the record: the output goes, the job is NOT_FOUND until a later pass deletes the record", async () => {
  await withWorker({}, async (s) => {
    const kept = await s.api.createJob({ command: "echo", args: ["kept"] });
    await waitJobEnded(s.api, kept.id);
    const job = await s.api.createJob({ command: "echo", args: ["forgotten"] });
    await waitJobEnded(s.api, job.id);
    assert.equal((await collectOutput(s.client, job.id)).stdout, "forgotten\n");
    const allowDeletes = refuseDeletes(s.db);
    const error = await rejectsWith(s.api.deleteJob(job.id), status.RESOURCE_EXHAUSTED);
    assert.match(error.details, /its output was deleted to make room/);
    await assert.rejects(
      Deno.stat(`${s.worker.stateDir}/jobs/${job.id}`),
      Deno.errors.NotFound,
      "the output is gone",
    );
    await assertHidden(s, job.id, kept.id);
    // Room again: the next retention pass (each job's end runs one) deletes the record.
    allowDeletes();
    await waitJobEnded(s.api, (await s.api.createJob({ command: "true" })).id);
    await waitFor("the record to be deleted", () => !stored(s.db, job.id));
    await rejectsWith(s.api.getJob(job.id), status.NOT_FOUND);
    assert.equal((await s.api.getJob(kept.id)).status, S.COMPLETED);
  });
});

test("JOB_WORKER_MAX_ENDED_JOBS on a disk too full to delete the record: the job beyond the limit is NOT_FOUND until its record goes", async () => {
  await withWorker({ JOB_WORKER_MAX_ENDED_JOBS: "2" }, async (s) => {
    const old = await s.api.createJob({ command: "echo", args: ["old"] });
    await waitJobEnded(s.api, old.id);
    const kept = await s.api.createJob({ command: "echo", args: ["kept"] });
    await waitJobEnded(s.api, kept.id);
    const allowDeletes = refuseDeletes(s.db);
    // A third ended job puts the oldest beyond the limit; its forgetting fails for want of room.
    const newest = await s.api.createJob({ command: "true" });
    await waitJobEnded(s.api, newest.id);
    await waitFor("the retention pass to give up on the record", () =>
      s.worker.logs.some((l) => {
        const line = parseLogLine(l);
        return line?.msg.startsWith("cannot forget an expired job") && line.fields.id === old.id;
      }));
    await assertHidden(s, old.id, kept.id);
    allowDeletes();
    await waitJobEnded(s.api, (await s.api.createJob({ command: "true" })).id);
    await waitFor("the record to be deleted", () => !stored(s.db, old.id));
    await rejectsWith(s.api.getJob(old.id), status.NOT_FOUND);
  });
});

test("cleanup", async () => {
  await pki.remove();
});
