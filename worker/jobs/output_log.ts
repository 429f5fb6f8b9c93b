/**
 * A job's output: stdout and stderr bytes appended to one file in the order they arrived, with an
 * index of where the stream changes, so any reader can start at any offset and learn which stream
 * wrote each byte. Bytes live on disk, never whole in memory; each reader has its own cursor.
 */

export type StreamId = 1 | 2;

/** A run of bytes written by one stream. */
export interface OutputChunk {
  offset: number;
  stream: StreamId;
  bytes: Uint8Array;
}

export class OutputLog {
  readonly #file: Deno.FsFile;
  /** segment i covers [starts[i], starts[i+1]) and was written by streams[i]. */
  readonly #starts: number[] = [];
  readonly #streams: StreamId[] = [];
  #size = 0;
  #finished = false;
  #waiters: (() => void)[] = [];

  private constructor(readonly path: string, file: Deno.FsFile) {
    this.#file = file;
  }

  /** Creates (truncates) the log file at `path`, readable only by its owner. */
  static create(path: string): OutputLog {
    const file = Deno.openSync(path, { write: true, create: true, truncate: true, mode: 0o600 });
    return new OutputLog(path, file);
  }

  get size(): number {
    return this.#size;
  }

  /** True once the job's streams are closed: no more bytes will come. */
  get finished(): boolean {
    return this.#finished;
  }

  append(stream: StreamId, bytes: Uint8Array): void {
    if (this.#finished || bytes.length === 0) return;
    let written = 0;
    while (written < bytes.length) written += this.#file.writeSync(bytes.subarray(written));
    if (this.#streams.at(-1) !== stream) {
      this.#starts.push(this.#size);
      this.#streams.push(stream);
    }
    this.#size += bytes.length;
    this.#wake();
  }

  /** No more output: closes the file for writing and wakes every waiting reader. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#file.close();
    this.#wake();
  }

  /**
   * Resolves when the log grows past `offset` or finishes (at once if it already has), or when
   * `signal` aborts; an aborted wait leaves nothing behind.
   */
  waitBeyond(offset: number, signal?: AbortSignal): Promise<void> {
    if (this.#size > offset || this.#finished || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        this.#waiters = this.#waiters.filter((w) => w !== wake);
        resolve();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(wake);
    });
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** The stream that wrote byte `offset` and where its run of bytes ends. */
  segmentAt(offset: number): { stream: StreamId; end: number } {
    let lo = 0;
    let hi = this.#starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { stream: this.#streams[lo] ?? 1, end: this.#starts[lo + 1] ?? this.#size };
  }

  /** A reader with its own file handle; close it when done. */
  openReader(): OutputReader {
    return new OutputReader(this);
  }
}

export class OutputReader {
  readonly #file: Deno.FsFile;

  constructor(private readonly log: OutputLog) {
    this.#file = Deno.openSync(log.path, { read: true });
  }

  /** Up to `max` bytes from `offset`, all of one stream; null when nothing is there yet. */
  read(offset: number, max: number): OutputChunk | null {
    if (offset >= this.log.size) return null;
    const { stream, end } = this.log.segmentAt(offset);
    const buf = new Uint8Array(Math.min(max, end - offset));
    this.#file.seekSync(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < buf.length) {
      const n = this.#file.readSync(buf.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
    return { offset, stream, bytes: got === buf.length ? buf : buf.subarray(0, got) };
  }

  close(): void {
    this.#file.close();
  }
}
