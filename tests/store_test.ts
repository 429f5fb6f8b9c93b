/**
 * The record stores (SQLite on a real database file, and the in-memory one) against the same
 * expectations; and what a damaged or newer database does at open. No server needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { JobRecord, JobStatus } from "../worker/jobs/job.ts";
import type { JobStore } from "../worker/jobs/store.ts";
import { MemoryStore } from "../worker/store/memory.ts";
import { SqliteStore, StoreOpenError } from "../worker/store/sqlite.ts";
import { MIGRATIONS } from "../worker/store/migrations.ts";
import { END_STATES } from "../worker/jobs/job.ts";
import { StoreWriteError } from "../worker/jobs/store.ts";
import { DatabaseSync } from "node:sqlite";
import { jobSpec } from "./helpers/job_records.ts";

function record(seq: number, over: Partial<JobRecord> = {}): JobRecord {
  return {
    id: `job-${seq}`,
    seq,
    owner: "alice",
    spec: jobSpec({ args: [String(seq)], env: ["A=1"] }),
    status: "COMPLETED",
    createTime: new Date(1_000_000 + seq),
    startTime: new Date(1_000_100 + seq),
    endTime: new Date(1_000_200 + seq),
    exit: { exitCode: 0, signal: 0 },
    oomKilled: false,
    reason: "exited with code 0",
    finalUsage: {
      cpuUsec: 5,
      memoryBytes: 0,
      memoryPeakBytes: 9,
      ioReadBytes: 1,
      ioWriteBytes: 2,
      pids: 0,
    },
    outputBytes: 3,
    outputTruncated: false,
    ...over,
  };
}

async function withStores(fn: (store: JobStore, name: string) => void): Promise<void> {
  fn(new MemoryStore(), "memory");
  const dir = await Deno.makeTempDir();
  try {
    const store = SqliteStore.open(`${dir}/jobs.db`);
    try {
      fn(store, "sqlite");
    } finally {
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("store: a record comes back as written, updates replace it", async () => {
  await withStores((store) => {
    const r = record(1, { status: "RUNNING", endTime: undefined, exit: undefined });
    store.insert(r);
    assert.deepEqual(store.get("job-1"), r);
    const ended = { ...r, status: "FAILED" as JobStatus, endTime: new Date(5), reason: "x" };
    store.update(ended);
    assert.deepEqual(store.get("job-1"), ended);
    assert.equal(store.get("nope"), undefined);
    assert.equal(store.lastSeq(), 1);
  });
});

Deno.test("store: pages newest first, filters, counts; seqs are never reused", async () => {
  await withStores((store, name) => {
    for (let seq = 1; seq <= 10; seq++) {
      store.insert(record(seq, {
        status: seq % 3 === 0 ? "FAILED" : seq === 10 ? "RUNNING" : "COMPLETED",
        owner: seq % 2 === 0 ? "bob" : "alice",
      }));
    }
    const ids = (q: Parameters<JobStore["page"]>[0]) => store.page(q).map((r) => r.seq);
    assert.deepEqual(ids({ limit: 3 }), [10, 9, 8], name);
    assert.deepEqual(ids({ limit: 3, beforeSeq: 8 }), [7, 6, 5]);
    assert.deepEqual(ids({ limit: 10, statuses: ["FAILED"] }), [9, 6, 3]);
    assert.deepEqual(ids({ limit: 10, statuses: ["FAILED"], owner: "bob" }), [6]);
    assert.deepEqual(ids({ limit: 10, owner: "carol" }), []);
    assert.deepEqual(store.countByStatus({}), {
      INITIALIZING: 0,
      RUNNING: 1,
      COMPLETED: 6,
      FAILED: 3,
      STOPPED: 0,
    });
    assert.equal(store.countByStatus({ owner: "bob" }).COMPLETED, 3);
    assert.deepEqual(store.unended().map((r) => r.seq), [10]);
    store.delete("job-10");
    assert.equal(store.lastSeq(), 10, "the newest seq is remembered after a delete");
  });
});

Deno.test("store: pages read again show every update and delete in between", async () => {
  await withStores((store, name) => {
    for (let seq = 1; seq <= 5; seq++) store.insert(record(seq));
    store.insert(record(6, { status: "RUNNING", endTime: undefined, exit: undefined }));
    const page = () => store.page({ limit: 10 });
    const same = () =>
      assert.deepEqual(page(), [6, 5, 4, 3, 2, 1].map((seq) => store.get(`job-${seq}`)), name);
    same();
    same(); // the second read finds the ended jobs kept from the first (sqlite)
    // An update that keeps status and output size: the page must still show it.
    store.update(record(3, { reason: "changed" }));
    assert.equal(page().find((r) => r.id === "job-3")?.reason, "changed", name);
    store.update(record(6, { outputBytes: 99 }));
    assert.equal(page()[0]?.status, "COMPLETED");
    assert.equal(page()[0]?.outputBytes, 99);
    store.delete("job-2");
    assert.deepEqual(page().map((r) => r.seq), [6, 5, 4, 3, 1], name);
    assert.deepEqual(store.page({ limit: 2, beforeSeq: 5 }).map((r) => r.seq), [4, 3]);
  });
});

Deno.test("store: retention by count and by age, both limits apply", async () => {
  await withStores((store, name) => {
    for (let seq = 1; seq <= 6; seq++) {
      store.insert(record(seq, { endTime: new Date(seq * 1000) }));
    }
    store.insert(record(7, { status: "RUNNING", endTime: undefined }));
    assert.deepEqual(store.expired(4, undefined), ["job-1", "job-2"], name);
    assert.deepEqual(store.expired(100, new Date(3500)), ["job-1", "job-2", "job-3"]);
    assert.deepEqual(store.expired(5, new Date(1500)), ["job-1"]);
    assert.deepEqual(store.expired(0, undefined).length, 6, "running jobs never expire");
  });
});

/** The retention query before migration 2 (it read every ended row): what expired() must match. */
const ENDED = `status IN (${END_STATES.map((s) => `'${s}'`).join(", ")})`;
const EXPIRED_BEFORE = `SELECT id FROM jobs WHERE ${ENDED} AND (
    seq <= coalesce((SELECT seq FROM jobs WHERE ${ENDED} ORDER BY seq DESC LIMIT 1 OFFSET ?), -1)
    OR end_time < ?)
  ORDER BY seq`;

function expiredBefore(db: DatabaseSync, keep: number, endedBefore: Date | undefined): string[] {
  return (db.prepare(EXPIRED_BEFORE).all(keep, endedBefore?.getTime() ?? -1) as { id: string }[])
    .map((r) => r.id);
}

/** The ended jobs, as counted by the triggers of migration 2 and by a count of the rows. */
const endedCount = (db: DatabaseSync) =>
  [
    (db.prepare("SELECT value FROM counters WHERE name = 'ended'").get() as { value: number })
      .value,
    (db.prepare(`SELECT count(*) AS n FROM jobs WHERE ${ENDED}`).get() as { n: number }).n,
  ] as const;

Deno.test("sqlite: expired() answers as the query it replaced, count and age limits mixed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    const store = SqliteStore.open(path);
    const raw = new DatabaseSync(path);
    let seed = 7;
    const random = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16) % n;
    const statuses: JobStatus[] = ["INITIALIZING", "RUNNING", "COMPLETED", "FAILED", "STOPPED"];
    const ended = (status: JobStatus, endTime: number) =>
      END_STATES.includes(status) ? { status, endTime: new Date(endTime) } : {
        status,
        endTime: undefined,
        exit: undefined,
      };
    let seq = 0;
    const live: number[] = [];
    const check = (step: string) => {
      const [counted, n] = endedCount(raw);
      assert.equal(counted, n, `the ended count, ${step}`);
      // Keeps around the number of ended jobs, 0, beyond it; ages at, between and past the end
      // times (which tie: ten jobs share each second).
      for (const keep of [0, 1, 2, n - 1, n, n + 1, n + 5, random(n + 3)]) {
        for (const at of [undefined, 0, 1000, 3000, 3001, 7500, 1000 * random(12), 99_999]) {
          const endedBefore = at === undefined ? undefined : new Date(at);
          assert.deepEqual(
            store.expired(keep, endedBefore),
            expiredBefore(raw, keep, endedBefore),
            `${step}: keep ${keep}, ended before ${at}`,
          );
        }
      }
    };
    check("empty");
    for (let step = 0; step < 300; step++) {
      const op = random(10);
      if (op < 5 || live.length === 0) {
        seq++;
        // The oldest job never ends: the count limit's scan passes it by.
        const status = seq === 1 ? "RUNNING" : statuses[random(5)]!;
        store.insert(record(seq, ended(status, 1000 * Math.floor(seq / 10))));
        live.push(seq);
      } else if (op < 9 && live.length > 1) {
        // Never the oldest job (seq 1, first in `live`).
        const at = 1 + random(live.length - 1);
        if (op < 8) {
          // Any change of state, ended to not ended too (the count must follow either way).
          const status = statuses[random(5)]!;
          store.update(record(live[at]!, ended(status, 1000 * random(10))));
        } else {
          store.delete(`job-${live.splice(at, 1)[0]!}`);
        }
      } else if (op < 9) {
        continue;
      } else if (random(2) === 0) {
        // A write that fails (the id is taken) changes nothing.
        assert.throws(() => store.insert(record(live[0]!)), StoreWriteError);
      } else {
        // Another connection's write (an operator's sqlite3): its ended jobs counted all the same.
        const row = raw.prepare(`SELECT seq FROM jobs WHERE ${ENDED} AND seq > 1 ORDER BY random()`)
          .get();
        if (row === undefined) continue;
        if (random(2) === 0) {
          live.splice(live.indexOf(row.seq as number), 1);
          raw.prepare("DELETE FROM jobs WHERE seq = ?").run(row.seq as number);
          check(`step ${step}, after another connection's delete`);
        } else {
          raw.prepare("UPDATE jobs SET status = 'RUNNING', end_time = NULL WHERE seq = ?")
            .run(row.seq as number);
          check(`step ${step}, after another connection's update`);
        }
      }
      if (step % 10 === 0) check(`step ${step}`);
    }
    check("last");
    raw.close();
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sqlite: the ended count is made right at each start after a write that bypassed it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    let store = SqliteStore.open(path);
    for (let seq = 1; seq <= 5; seq++) {
      store.insert(record(seq, { status: "COMPLETED", endTime: new Date(1000 * seq) }));
    }
    await store.durable();
    store.close();
    // REPLACE deletes the row it replaces without firing the delete trigger: counted twice.
    const raw = new DatabaseSync(path);
    raw.prepare("INSERT OR REPLACE INTO jobs SELECT * FROM jobs WHERE seq = 5").run();
    assert.deepEqual(endedCount(raw), [6, 5]);
    store = SqliteStore.open(path);
    assert.deepEqual(endedCount(raw), [5, 5]);
    assert.deepEqual(store.expired(3, undefined), ["job-1", "job-2"]);
    raw.close();
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sqlite: a database of schema 1 is brought up to date, its ended jobs counted", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    // As the jobworker before migration 2 left it.
    const old = new DatabaseSync(path);
    old.exec("PRAGMA journal_mode = WAL");
    old.exec(MIGRATIONS[0]!);
    old.exec("PRAGMA user_version = 1");
    const insert = old.prepare(
      "INSERT INTO jobs (seq, id, owner, status, create_time, end_time, spec) " +
        "VALUES (?, ?, 'alice', ?, 0, ?, '{}')",
    );
    for (let seq = 1; seq <= 50; seq++) {
      const running = seq % 7 === 0;
      insert.run(seq, `job-${seq}`, running ? "RUNNING" : "COMPLETED", running ? null : seq);
    }
    old.close();
    const store = SqliteStore.open(path);
    const raw = new DatabaseSync(path);
    try {
      assert.equal(
        (raw.prepare("PRAGMA user_version").get() as { user_version: number }).user_version,
        MIGRATIONS.length,
      );
      assert.deepEqual(endedCount(raw), [43, 43]);
      for (const keep of [0, 10, 42, 43, 44]) {
        for (const at of [undefined, 5, 30]) {
          const endedBefore = at === undefined ? undefined : new Date(at);
          assert.deepEqual(store.expired(keep, endedBefore), expiredBefore(raw, keep, endedBefore));
        }
      }
      assert.deepEqual(store.expired(40, new Date(3)), ["job-1", "job-2", "job-3"]);
      // The migration's status list is END_STATES: its index serves the store's queries.
      assert.ok(MIGRATIONS[1]!.includes(ENDED), "END_STATES changed: migrate the ended index");
    } finally {
      raw.close();
      store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: requestId is per owner", async () => {
  await withStores((store) => {
    const spec = { ...record(1).spec, requestId: "k1" };
    store.insert(record(1, { spec }));
    store.insert(record(2, { spec, owner: "bob" }));
    assert.equal(store.byRequestId("alice", "k1")?.id, "job-1");
    assert.equal(store.byRequestId("bob", "k1")?.id, "job-2");
    assert.equal(store.byRequestId("carol", "k1"), undefined);
  });
});

Deno.test("sqlite: the record survives closing and reopening; WAL mode", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    const a = SqliteStore.open(path);
    a.insert(record(1));
    a.close();
    const b = SqliteStore.open(path);
    assert.deepEqual(b.get("job-1"), record(1));
    b.close();
    const raw = new DatabaseSync(path);
    assert.equal(
      (raw.prepare("PRAGMA journal_mode").get() as { journal_mode: string })
        .journal_mode,
      "wal",
    );
    raw.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sqlite: commits are made durable, and checkpointed, off the event loop", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    const store = SqliteStore.open(path);
    const before = (await Deno.stat(path)).size;
    // Commits go to the WAL; the database file only grows by checkpoints, which SQLite (its own
    // checkpoint disabled) leaves to the store's checkpoint thread.
    for (let i = 1; i <= 250; i++) store.insert(record(i));
    await store.durable();
    let after = before;
    for (let i = 0; i < 100 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 50));
      after = (await Deno.stat(path)).size;
    }
    assert.ok(after > before, `checkpointed into the database file: ${before} -> ${after} bytes`);
    store.close();
    const again = SqliteStore.open(path);
    assert.equal(again.page({ limit: 1000 }).length, 250);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sqlite: a damaged database is refused with the file named and what to do", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    const a = SqliteStore.open(path);
    for (let seq = 1; seq <= 200; seq++) a.insert(record(seq));
    a.close();
    const bytes = await Deno.readFile(path);
    // Garbage over the header: not a database any more.
    bytes.fill(0x41, 0, 100);
    await Deno.writeFile(path, bytes);
    assert.throws(() => SqliteStore.open(path), (err: unknown) => {
      assert.ok(err instanceof StoreOpenError);
      assert.ok(err.message.includes(path), err.message);
      assert.match(err.message, /move it aside/);
      return true;
    });
    assert.deepEqual(await Deno.readFile(path), bytes, "the damaged file is left as it was");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sqlite: a database from a newer schema is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    SqliteStore.open(path).close();
    const raw = new DatabaseSync(path);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    assert.throws(() => SqliteStore.open(path), /schema version 99.*newer/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sqlite: a write that cannot be made is a StoreWriteError, reads go on", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/jobs.db`;
    const store = SqliteStore.open(path);
    store.insert(record(1));
    assert.throws(() => store.insert(record(1)), StoreWriteError, "duplicate id");
    assert.equal(store.get("job-1")?.seq, 1);
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
