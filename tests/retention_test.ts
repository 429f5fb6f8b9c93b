/**
 * Forgetting ended jobs (worker/jobs/retention.ts, readers.ts) with a real job database file and
 * real output directories: which readers hold a job back, and what a failed delete leaves.
 *
 * Run: `deno test -A tests/retention_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { JobRecord } from "../worker/jobs/job.ts";
import { SqliteStore } from "../worker/store/sqlite.ts";
import { JobReaders, READ_HOLD_MS } from "../worker/jobs/readers.ts";
import { forget, forgetExpired, type RetentionContext } from "../worker/jobs/retention.ts";
import { jobDir } from "../worker/jobs/job_start.ts";
import { JobError } from "../worker/jobs/errors.ts";
import { jobSpec } from "./helpers/job_records.ts";

function record(seq: number, endTime: Date): JobRecord {
  return {
    id: `job-${seq}`,
    seq,
    owner: "alice",
    spec: jobSpec({ args: [String(seq)] }),
    status: "COMPLETED",
    createTime: new Date(endTime.getTime() - 10),
    startTime: new Date(endTime.getTime() - 5),
    endTime,
    exit: { exitCode: 0, signal: 0 },
    oomKilled: false,
    reason: "exited with code 0",
    finalUsage: undefined,
    outputBytes: 3,
    outputTruncated: false,
  };
}

/** A state directory with a job database and, per job given, a record and an output directory. */
async function withState(
  jobs: JobRecord[],
  fn: (ctx: RetentionContext, db: DatabaseSync) => Promise<void>,
): Promise<void> {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-retention-" });
  const store = SqliteStore.open(`${stateDir}/jobs.db`);
  // A second connection to the same file, as another process would have: it makes deletes fail.
  const db = new DatabaseSync(`${stateDir}/jobs.db`);
  try {
    for (const job of jobs) {
      store.insert(job);
      await Deno.mkdir(jobDir(stateDir, job.id), { recursive: true });
      await Deno.writeTextFile(`${jobDir(stateDir, job.id)}/output`, "out");
    }
    await fn({
      stateDir,
      store,
      readers: new JobReaders(),
      forgetting: new Map(),
      forgotten: () => {},
    }, db);
  } finally {
    db.close();
    store.close();
    await Deno.remove(stateDir, { recursive: true });
  }
}

/** Deletes of job records fail with `error`, as SQLite reports it, until the result is called. */
function failDeletes(db: DatabaseSync, error: string): () => void {
  db.exec(
    `CREATE TRIGGER fail_delete BEFORE DELETE ON jobs BEGIN SELECT RAISE(ABORT, '${error}'); END`,
  );
  return () => db.exec("DROP TRIGGER fail_delete");
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Lets the forgets forgetExpired started (not awaited) finish. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
}

Deno.test("a job read by an open stream is held only until it ended READ_HOLD_MS ago", async () => {
  const now = Date.now();
  const longAgo = record(1, new Date(now - READ_HOLD_MS - 1000));
  const justNow = record(2, new Date(now - 1000));
  await withState([longAgo, justNow], async (ctx) => {
    // Streams of both stay open, as a stalled client's would.
    ctx.readers.open(longAgo.id);
    ctx.readers.open(justNow.id);
    forgetExpired(ctx, 0, 0, now);
    await settle();
    assert.equal(ctx.store.get(longAgo.id), undefined, "the job that ended long ago is forgotten");
    assert.equal(await exists(jobDir(ctx.stateDir, longAgo.id)), false);
    assert.ok(ctx.store.get(justNow.id), "the job that ended just now is held for its reader");
    // A reader cycling short streams does not keep it either, once the hold has passed.
    const close = ctx.readers.open(justNow.id);
    close();
    forgetExpired(ctx, 0, 0, now + READ_HOLD_MS);
    await settle();
    assert.equal(ctx.store.get(justNow.id), undefined);
  });
});

Deno.test("a delete that fails for another reason than a full disk leaves the job as it was", async () => {
  await withState([record(1, new Date())], async (ctx, db) => {
    failDeletes(db, "disk I/O error");
    const error = await forget(ctx, "job-1").then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof JobError, String(error));
    assert.equal(error.kind, "unavailable");
    assert.ok(ctx.store.get("job-1"), "the record stays");
    assert.equal(await Deno.readTextFile(`${jobDir(ctx.stateDir, "job-1")}/output`), "out");
    assert.equal(ctx.forgetting.size, 0, "the job is not hidden");
  });
});

Deno.test("on a full disk the output goes first; the job is hidden until a later pass deletes its record", async () => {
  await withState([record(1, new Date())], async (ctx, db) => {
    const allow = failDeletes(db, "database or disk is full");
    const error = await forget(ctx, "job-1").then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof JobError, String(error));
    assert.equal(error.kind, "resource-exhausted");
    assert.equal(await exists(jobDir(ctx.stateDir, "job-1")), false, "the output made room");
    assert.ok(ctx.store.get("job-1"), "the record could not go");
    assert.deepEqual([...ctx.forgetting], [["job-1", true]], "answered for as forgotten");
    forgetExpired(ctx, 100, 0);
    assert.ok(ctx.store.get("job-1"), "still full: still there");
    allow();
    forgetExpired(ctx, 100, 0);
    assert.equal(ctx.store.get("job-1"), undefined, "the next pass with room deletes it");
    assert.equal(ctx.forgetting.size, 0);
  });
});
