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
];
