/**
 * The job database's schema, as a list of migrations: migration i brings a database from
 * schema version i to i + 1 (SQLite's `user_version`). Append, never edit, once released.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE jobs (
     seq INTEGER PRIMARY KEY,          -- creation order: newest first sorts by it
     id TEXT NOT NULL UNIQUE,
     owner TEXT NOT NULL,
     request_id TEXT,                  -- NULL: none
     status TEXT NOT NULL,
     create_time INTEGER NOT NULL,     -- epoch milliseconds
     start_time INTEGER,
     end_time INTEGER,
     exit_code INTEGER,
     signal INTEGER,
     oom_killed INTEGER NOT NULL DEFAULT 0,
     reason TEXT NOT NULL DEFAULT '',
     final_usage TEXT,                 -- JSON of Usage
     output_bytes INTEGER NOT NULL DEFAULT 0,
     output_truncated INTEGER NOT NULL DEFAULT 0,
     spec TEXT NOT NULL                -- JSON of JobSpec: new request fields need no migration
   );
   CREATE UNIQUE INDEX jobs_by_request ON jobs (owner, request_id) WHERE request_id IS NOT NULL;
   CREATE INDEX jobs_by_status ON jobs (status, seq);
   CREATE INDEX jobs_by_owner ON jobs (owner, seq);
   CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
   INSERT INTO counters VALUES ('last_seq', 0);`,
  // The retention pass at each job's end (SqliteStore.expired) independent of how many ended jobs
  // are kept: the ended jobs by end time (the age limit), and how many there are (the count limit:
  // the oldest `ended - keep` go, read in seq order from the table), kept by triggers in the same
  // transaction as every write, of any connection. The status list is END_STATES (job.ts) as it
  // was: a new end state needs a migration that redoes the index, the count and the triggers.
  `CREATE INDEX jobs_ended_by_end_time ON jobs (end_time)
     WHERE status IN ('COMPLETED', 'FAILED', 'STOPPED');
   INSERT INTO counters VALUES
     ('ended', (SELECT count(*) FROM jobs WHERE status IN ('COMPLETED', 'FAILED', 'STOPPED')));
   CREATE TRIGGER jobs_ended_insert AFTER INSERT ON jobs
     WHEN new.status IN ('COMPLETED', 'FAILED', 'STOPPED')
   BEGIN
     UPDATE counters SET value = value + 1 WHERE name = 'ended';
   END;
   CREATE TRIGGER jobs_ended_delete AFTER DELETE ON jobs
     WHEN old.status IN ('COMPLETED', 'FAILED', 'STOPPED')
   BEGIN
     UPDATE counters SET value = value - 1 WHERE name = 'ended';
   END;
   CREATE TRIGGER jobs_ended_update AFTER UPDATE OF status ON jobs
     WHEN (old.status IN ('COMPLETED', 'FAILED', 'STOPPED'))
       <> (new.status IN ('COMPLETED', 'FAILED', 'STOPPED'))
   BEGIN
     UPDATE counters
       SET value = value + (CASE WHEN new.status IN ('COMPLETED', 'FAILED', 'STOPPED')
                                 THEN 1 ELSE -1 END)
       WHERE name = 'ended';
   END;`,
];
