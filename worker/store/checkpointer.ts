/**
 * Checkpoints of the job database on a thread of their own. A checkpoint copies the WAL's pages
 * into the database file and syncs both: tens of milliseconds under load, which SQLite's automatic
 * checkpoint would spend on the worker's event loop inside a commit. Here a Web Worker with its own
 * connection runs them (PASSIVE: never waiting for, nor blocking, the writer), when asked.
 *
 * The thread starts with the store, not at the first request: `new Worker` holds the event loop
 * for 14-20 ms in Deno 2.8.3, and the first request comes from a commit, about the 33rd job's
 * create, whose start it made the slowest of a hundred (issue 8's start tail).
 *
 * The worker's code is inline (a blob URL) so that `deno compile` needs no extra file.
 */
const CODE = `
import { DatabaseSync } from "node:sqlite";
let db;
self.onmessage = (event) => {
  const message = event.data;
  if (message.open !== undefined) {
    db = new DatabaseSync(message.open);
    db.exec("PRAGMA busy_timeout = 5000");
  } else if (message.closed !== undefined) {
    db?.close();
    Atomics.store(message.closed, 0, 1);
    Atomics.notify(message.closed, 0);
    self.close();
  } else {
    try {
      db.exec("PRAGMA wal_checkpoint(PASSIVE)");
    } catch (e) {
      self.postMessage({ error: String(e) });
    }
  }
};
`;

/** How long close() waits for a checkpoint under way to finish (it then ends the thread). */
const CLOSE_WAIT_MS = 2000;

export class Checkpointer {
  readonly #worker: Worker;
  #closed = false;

  /** `onError`: a checkpoint failed (the WAL keeps the pages; the next request tries again). */
  constructor(
    private readonly path: string,
    private readonly onError: (message: string) => void = () => {},
  ) {
    this.#worker = this.#start();
  }

  /** Asks for a checkpoint; requests made while one runs queue behind it. */
  request(): void {
    if (this.#closed) return;
    this.#worker.postMessage({});
  }

  #start(): Worker {
    const url = URL.createObjectURL(new Blob([CODE], { type: "text/javascript" }));
    // (Not revoked: the worker loads it after this returns; one small blob per open store.)
    const worker = new Worker(url, { type: "module" });
    worker.onmessage = (event: MessageEvent<{ error: string }>) => this.onError(event.data.error);
    // A thread that cannot run is no reason to stop the job worker: SQLite then checkpoints when
    // the database is next opened.
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.onError(event.message);
    };
    worker.postMessage({ open: this.path });
    return worker;
  }

  /**
   * Closes the thread's connection before returning (waiting up to CLOSE_WAIT_MS for a checkpoint
   * under way), so that the database's files are left alone once the store is closed.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const worker = this.#worker;
    const closed = new Int32Array(new SharedArrayBuffer(4));
    worker.postMessage({ closed });
    Atomics.wait(closed, 0, 0, CLOSE_WAIT_MS);
    worker.terminate();
  }
}
