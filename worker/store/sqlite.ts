/**
 * The job records in an SQLite database (node:sqlite) in WAL mode: the only code that knows SQL.
 *
 * Durability without blocking the event loop: SQLite's own fsync at each commit
 * (synchronous=FULL) ran on the loop and took 30-46 ms under load. So commits run with
 * synchronous=NORMAL (written to the WAL file, not yet synced: 0.03 ms), and every commit is then
 * made durable by an fdatasync of the WAL file through Deno's async file API, which runs on its
 * blocking thread pool; concurrent commits share one sync. A create awaits durable() before
 * CreateJob answers, so a job a caller was told about survives even a power loss; later changes of
 * state are synced the same way without anyone waiting. Checkpoints (which sync the database file)
 * run on a thread of their own (checkpointer.ts) instead of inside a commit.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import type { Usage } from "../cgroups/types.ts";
import {
  END_STATES,
  JOB_STATUSES,
  type JobRecord,
  type JobSpec,
  type JobStatus,
} from "../jobs/job.ts";
import {
  type JobFilter,
  type JobPageQuery,
  type JobStore,
  StoreWriteError,
} from "../jobs/store.ts";
import { MIGRATIONS } from "./migrations.ts";
import { Checkpointer } from "./checkpointer.ts";

/** Commits between two checkpoint requests (SQLite's own default is every 1000 WAL pages). */
const COMMITS_PER_CHECKPOINT = 100;
/** Parsed records of ended jobs kept for pages (see SqliteStore.page): at most so many, */
const ENDED_RECORDS = 10_000;
/** and about so many bytes (one spec can be near 1 MiB). */
const ENDED_RECORDS_BYTES = 16 * 1024 * 1024;

/** The database cannot be used as it is; the message names the file and what to do. */
export class StoreOpenError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreOpenError";
  }
}

interface Row {
  seq: number;
  id: string;
  owner: string;
  request_id: string | null;
  status: string;
  create_time: number;
  start_time: number | null;
  end_time: number | null;
  exit_code: number | null;
  signal: number | null;
  oom_killed: number;
  reason: string;
  final_usage: string | null;
  output_bytes: number;
  output_truncated: number;
  spec: string;
}

const COLUMNS = "seq, id, owner, request_id, status, create_time, start_time, end_time, " +
  "exit_code, signal, oom_killed, reason, final_usage, output_bytes, output_truncated, spec";

const date = (ms: number | null) => ms === null ? undefined : new Date(ms);

function fromRow(row: Row): JobRecord {
  return {
    id: row.id,
    seq: row.seq,
    owner: row.owner,
    spec: JSON.parse(row.spec) as JobSpec,
    status: row.status as JobStatus,
    createTime: new Date(row.create_time),
    startTime: date(row.start_time),
    endTime: date(row.end_time),
    exit: row.exit_code === null ? undefined : { exitCode: row.exit_code, signal: row.signal ?? 0 },
    oomKilled: row.oom_killed !== 0,
    reason: row.reason,
    finalUsage: row.final_usage === null ? undefined : JSON.parse(row.final_usage) as Usage,
    outputBytes: row.output_bytes,
    outputTruncated: row.output_truncated !== 0,
  };
}

/** The columns a job's record changes after its insert (see SqliteStore.update). */
const MUTABLE_COLUMNS = [
  "status",
  "start_time",
  "end_time",
  "exit_code",
  "signal",
  "oom_killed",
  "reason",
  "final_usage",
  "output_bytes",
  "output_truncated",
] as const satisfies readonly (keyof Row)[];

// Built once: a statement is looked up by its text at every write.
const INSERT_SQL = `INSERT INTO jobs (${COLUMNS}) VALUES (${
  COLUMNS.split(", ").map((c) => `$${c}`).join(", ")
})`;
const UPDATE_SQL = `UPDATE jobs SET ${
  MUTABLE_COLUMNS.map((c) => `${c} = $${c}`).join(", ")
} WHERE id = $id`;

/** The parameters of UPDATE_SQL: the id and MUTABLE_COLUMNS. */
function updateParams(r: JobRecord): Record<string, SQLInputValue> {
  return {
    id: r.id,
    status: r.status,
    start_time: r.startTime?.getTime() ?? null,
    end_time: r.endTime?.getTime() ?? null,
    exit_code: r.exit?.exitCode ?? null,
    signal: r.exit?.signal ?? null,
    oom_killed: r.oomKilled ? 1 : 0,
    reason: r.reason,
    final_usage: r.finalUsage ? JSON.stringify(r.finalUsage) : null,
    output_bytes: r.outputBytes,
    output_truncated: r.outputTruncated ? 1 : 0,
  };
}

/** The parameters of INSERT_SQL: every column. */
function insertParams(r: JobRecord): Record<string, SQLInputValue> {
  return {
    ...updateParams(r),
    seq: r.seq,
    owner: r.owner,
    request_id: r.spec.requestId === "" ? null : r.spec.requestId,
    create_time: r.createTime.getTime(),
    spec: JSON.stringify(r.spec),
  };
}

const ENDED_SQL = `status IN (${END_STATES.map((s) => `'${s}'`).join(", ")})`;

export class SqliteStore implements JobStore {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  /** The WAL file, opened for fdatasync (any descriptor of a file syncs all of it). */
  #wal: Deno.FsFile | undefined;
  /** The sync under way, and the one queued behind it for writes made after it began. */
  #syncing: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  /** Commits the sync under way covers (those made before it began). */
  #syncCovers = 0;
  #checkpointer: Checkpointer | undefined;
  #commits = 0;
  /**
   * Records of ended jobs as last read, by id, least recently listed first: a page reads only the
   * keys of the jobs it finds here (a client polling GetJobs over hundreds of jobs read and parsed
   * every row each time). Checked against the row's status and output size, dropped at any write.
   */
  readonly #ended = new EndedRecords();

  private constructor(readonly path: string, db: DatabaseSync) {
    this.#db = db;
  }

  /**
   * Opens (or creates) the database at `path` and brings its schema up to date. Throws
   * StoreOpenError when it cannot be used: damaged, from a newer jobworker, unreadable.
   */
  static open(path: string): SqliteStore {
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path);
      db.exec("PRAGMA busy_timeout = 5000");
      db.exec("PRAGMA journal_mode = WAL");
      db.exec("PRAGMA synchronous = NORMAL");
      const check = db.prepare("PRAGMA quick_check").all() as { quick_check: string }[];
      if (check.length !== 1 || check[0]!.quick_check !== "ok") {
        throw new Error(check.map((c) => c.quick_check).slice(0, 3).join("; "));
      }
      const store = new SqliteStore(path, db);
      store.#migrate();
      store.#recountEnded();
      db.exec("PRAGMA wal_autocheckpoint = 0");
      store.#checkpointer = new Checkpointer(path);
      return store;
    } catch (e) {
      try {
        db?.close();
      } catch { /* already unusable */ }
      if (e instanceof StoreOpenError) throw e;
      const why = e instanceof Error ? e.message : String(e);
      throw new StoreOpenError(
        `the job database ${path} cannot be used: ${why}. The worker does not start over it, ` +
          `so that no job record is lost. Restore it from a backup, or move it aside ` +
          `(mv ${path} ${path}.damaged, and its -wal and -shm files) to start with an empty ` +
          `job history.`,
        { cause: e },
      );
    }
  }

  /**
   * Checks, read-only, that the database at `path` (if it exists) can be used by this program:
   * readable, not damaged, not from a newer schema. Throws StoreOpenError.
   */
  static check(path: string): void {
    try {
      Deno.statSync(path);
    } catch {
      return;
    }
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path, { readOnly: true });
      const version = (db.prepare("PRAGMA user_version").get() as { user_version: number })
        .user_version;
      if (version > MIGRATIONS.length) {
        throw new Error(`schema version ${version} is newer than this program's`);
      }
    } catch (e) {
      throw new StoreOpenError(
        `the job database ${path} cannot be used: ${e instanceof Error ? e.message : e}`,
      );
    } finally {
      db?.close();
    }
  }

  /**
   * The triggers keep the count of ended jobs through every insert, update and delete, but not
   * through what bypasses them (an operator's INSERT OR REPLACE, a hand edit of `counters`, a
   * recovered copy): a count too high would make retention keep fewer jobs than its limit for
   * good. So it is counted again at each start, from the partial index alone.
   */
  #recountEnded(): void {
    this.#transaction(() => {
      this.#db.prepare(
        `UPDATE counters SET value = (SELECT count(*) FROM jobs INDEXED BY jobs_ended_by_end_time
                                      WHERE ${ENDED_SQL}) WHERE name = 'ended'`,
      ).run();
    });
  }

  #migrate(): void {
    const version = (this.#db.prepare("PRAGMA user_version").get() as { user_version: number })
      .user_version;
    if (version > MIGRATIONS.length) {
      throw new StoreOpenError(
        `the job database ${this.path} has schema version ${version}, from a newer jobworker ` +
          `(this one knows up to ${MIGRATIONS.length}); run that version, or restore a backup`,
      );
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.#transaction(() => {
        this.#db.exec(MIGRATIONS[v]!);
        this.#db.exec(`PRAGMA user_version = ${v + 1}`);
      });
    }
  }

  #statement(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #transaction(fn: () => void): void {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      this.#db.exec("COMMIT");
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* the failed statement may have rolled back already */ }
      throw e;
    }
  }

  /** Runs a write; any failure (disk full, read-only, I/O) becomes a StoreWriteError. */
  #write(what: string, fn: () => void): void {
    try {
      this.#transaction(fn);
      // On disk soon, off the loop; a failure shows in the next durable() a caller awaits.
      this.#commits++;
      this.durable().catch(() => {});
      if (this.#commits % COMMITS_PER_CHECKPOINT === 0) this.#checkpointer?.request();
    } catch (e) {
      throw new StoreWriteError(
        `cannot write the job database ${this.path} (${what}): ${
          e instanceof Error ? e.message : String(e)
        }`,
        { cause: e },
      );
    }
  }

  insert(record: JobRecord): void {
    this.#write("a new job", () => {
      this.#statement(INSERT_SQL).run(insertParams(record));
      this.#statement(
        "UPDATE counters SET value = max(value, $seq) WHERE name = 'last_seq'",
      ).run({ seq: record.seq });
    });
  }

  /**
   * Writes the columns a job's life changes. Its seq, id, owner, request id, create time and spec
   * are fixed at the insert (readonly on Job) and left as they are: setting owner, even to the same
   * value, had SQLite rewrite the jobs_by_owner index entry, one more 4 KiB WAL frame per update
   * (4.16 frames an update against 3.16, measured), and the spec was turned into JSON again.
   */
  update(record: JobRecord): void {
    this.#ended.drop(record.id);
    const params = updateParams(record);
    this.#write("a job's state", () => {
      this.#statement(UPDATE_SQL).run(params);
    });
  }

  get(id: string): JobRecord | undefined {
    const row = this.#statement(`SELECT ${COLUMNS} FROM jobs WHERE id = ?`).get(id);
    return row ? fromRow(row as unknown as Row) : undefined;
  }

  byRequestId(owner: string, requestId: string): JobRecord | undefined {
    const row = this.#statement(
      `SELECT ${COLUMNS} FROM jobs WHERE owner = ? AND request_id = ?`,
    ).get(owner, requestId);
    return row ? fromRow(row as unknown as Row) : undefined;
  }

  #where(
    filter: JobFilter,
    beforeSeq?: number,
    alsoIds: readonly string[] = [],
  ): { sql: string; params: SQLInputValue[] } {
    const clauses: string[] = [];
    const params: SQLInputValue[] = [];
    if (filter.statuses?.length) {
      const statuses = `status IN (${filter.statuses.map(() => "?").join(", ")})`;
      params.push(...filter.statuses);
      if (alsoIds.length > 0) {
        clauses.push(`(${statuses} OR id IN (SELECT value FROM json_each(?)))`);
        params.push(JSON.stringify(alsoIds));
      } else {
        clauses.push(statuses);
      }
    }
    if (filter.owner) {
      clauses.push("owner = ?");
      params.push(filter.owner);
    }
    if (beforeSeq !== undefined) {
      clauses.push("seq < ?");
      params.push(beforeSeq);
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  /**
   * Jobs matching the query, newest first. Ended jobs' records are shared with later pages: treat
   * them as read-only.
   */
  page(query: JobPageQuery): JobRecord[] {
    const { sql, params } = this.#where(query, query.beforeSeq, query.alsoIds);
    const keys = this.#statement(
      `SELECT seq, id, status, output_bytes FROM jobs ${sql} ORDER BY seq DESC LIMIT ?`,
    ).all(...params, query.limit) as unknown as Pick<
      Row,
      "seq" | "id" | "status" | "output_bytes"
    >[];
    const records = keys.map((key) =>
      this.#ended.get(
        key.id,
        (kept) => kept.status === key.status && kept.outputBytes === key.output_bytes,
      )
    );
    const missing = keys.filter((_, i) => records[i] === undefined).map((key) => key.seq);
    if (missing.length === 0) return records as JobRecord[];
    const read = new Map<number, JobRecord>();
    const rows = this.#statement(
      `SELECT ${COLUMNS} FROM jobs WHERE seq IN (SELECT value FROM json_each(?))`,
    ).all(JSON.stringify(missing));
    for (const row of rows) {
      const record = fromRow(row as unknown as Row);
      read.set(record.seq, record);
      if (END_STATES.includes(record.status)) this.#ended.keep(record, rowBytes(row));
    }
    // A row deleted between the two reads is left out, as if the page had been read after.
    return keys.flatMap((key, i) => records[i] ?? read.get(key.seq) ?? []);
  }

  countByStatus(filter: JobFilter): Record<JobStatus, number> {
    const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<
      JobStatus,
      number
    >;
    const { sql, params } = this.#where(filter);
    const rows = this.#statement(`SELECT status, count(*) AS n FROM jobs ${sql} GROUP BY status`)
      .all(...params) as { status: JobStatus; n: number }[];
    for (const { status, n } of rows) counts[status] = n;
    return counts;
  }

  lastSeq(): number {
    const row = this.#statement("SELECT value FROM counters WHERE name = 'last_seq'").get() as {
      value: number;
    };
    return row.value;
  }

  unended(): JobRecord[] {
    return this.#statement(`SELECT ${COLUMNS} FROM jobs WHERE NOT ${ENDED_SQL} ORDER BY seq`)
      .all().map((row) => fromRow(row as unknown as Row));
  }

  /**
   * Runs at every job's end, so its cost must not grow with the ended jobs kept (as many as
   * JOB_WORKER_MAX_ENDED_JOBS allows):
   * the oldest `ended - keep` ended jobs (the count kept by triggers, migration 2), read from the
   * table in seq order, which stops after them (and past only the few jobs not ended among them),
   * and those that ended before `endedBefore`, from a partial index of the ended jobs by end time.
   * Nothing expired: a counter and an index lookup. NOT INDEXED and INDEXED BY because the
   * planner, without statistics, would rather read every ended row through jobs_by_status and
   * sort them (the query this replaced did, 0.37 ms per job's end at 830 ended jobs).
   */
  expired(keep: number, endedBefore: Date | undefined): string[] {
    const rows = this.#statement(
      `SELECT id FROM (
         SELECT seq, id FROM (
           SELECT seq, id FROM jobs NOT INDEXED WHERE ${ENDED_SQL}
           ORDER BY seq
           LIMIT max((SELECT value FROM counters WHERE name = 'ended') - ?, 0))
         UNION
         SELECT seq, id FROM jobs INDEXED BY jobs_ended_by_end_time
         WHERE ${ENDED_SQL} AND end_time < ?)
       ORDER BY seq`,
    ).all(keep, endedBefore?.getTime() ?? -1) as { id: string }[];
    return rows.map((r) => r.id);
  }

  delete(id: string): void {
    this.#ended.drop(id);
    this.#write("deleting a job", () => {
      this.#statement("DELETE FROM jobs WHERE id = ?").run(id);
    });
  }

  /** Resolves once every write made so far is on disk (an fdatasync of the WAL, off the loop). */
  durable(): Promise<void> {
    if (this.#syncing === undefined) {
      this.#syncCovers = this.#commits;
      const sync = this.#syncWal().finally(() => {
        if (this.#syncing === sync) this.#syncing = undefined;
      });
      this.#syncing = sync;
      return sync;
    }
    if (this.#syncCovers >= this.#commits) return this.#syncing;
    // The sync under way began before this caller's write: one more after it.
    this.#queued ??= this.#syncing.catch(() => {}).then(() => {
      this.#queued = undefined;
      return this.durable();
    });
    return this.#queued;
  }

  async #syncWal(): Promise<void> {
    try {
      this.#wal ??= await Deno.open(`${this.path}-wal`, { read: true });
      await this.#wal.syncData();
    } catch (e) {
      throw new StoreWriteError(
        `cannot write the job database ${this.path} (syncing its WAL to disk): ${
          e instanceof Error ? e.message : String(e)
        }`,
        { cause: e },
      );
    }
  }

  close(): void {
    this.#checkpointer?.close();
    this.#statements.clear();
    this.#db.close();
    try {
      this.#wal?.close();
    } catch { /* already closed */ }
    this.#wal = undefined;
  }
}

/** About what a row costs once parsed: its strings (UTF-16) and a word per other value. */
function rowBytes(row: Record<string, unknown>): number {
  let bytes = 0;
  for (const value of Object.values(row)) bytes += typeof value === "string" ? 2 * value.length : 8;
  return bytes;
}

/** Records of ended jobs, least recently listed first, within ENDED_RECORDS and its byte budget. */
class EndedRecords {
  readonly #entries = new Map<string, { record: JobRecord; bytes: number }>();
  #bytes = 0;

  /** The kept record of `id` if `current` still holds for it (then it counts as just listed). */
  get(id: string, current: (record: JobRecord) => boolean): JobRecord | undefined {
    const entry = this.#entries.get(id);
    if (entry === undefined || !current(entry.record)) return undefined;
    this.#entries.delete(id);
    this.#entries.set(id, entry);
    return entry.record;
  }

  keep(record: JobRecord, bytes: number): void {
    this.drop(record.id);
    if (bytes > ENDED_RECORDS_BYTES / 64) return;
    this.#entries.set(record.id, { record, bytes });
    this.#bytes += bytes;
    while (this.#entries.size > ENDED_RECORDS || this.#bytes > ENDED_RECORDS_BYTES) {
      this.drop(this.#entries.keys().next().value!);
    }
  }

  drop(id: string): void {
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    this.#entries.delete(id);
    this.#bytes -= entry.bytes;
  }
}
