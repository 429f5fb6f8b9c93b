/**
 * A job's output: stdout and stderr bytes appended to one file in the order they arrived, with an
 * index of where the stream changes (a second file, `<path>.idx`), so any reader can start at any
 * offset and learn which stream wrote each byte. Both live on disk, never in memory, however much
 * or however interleaved the output; each reader has its own handles and cursor.
 *
 * The index is made at its first record (the first output byte), not with the log: most jobs of a
 * burst write nothing, and its create was a second file made on the event loop at every start. A
 * missing index means no segments (no output) to every reader; the output file itself is always
 * made with the log (a missing one means the output is gone).
 */
import { passedThrough } from "../runtime/memory_trim.ts";

export type StreamId = 1 | 2;

/** A running log's position, carried across a reload. */
export interface ResumeState {
  size: number;
  segments: number;
  lastStream: StreamId | null;
  truncated: boolean;
}

/** A run of bytes written by one stream. */
export interface OutputChunk {
  offset: number;
  stream: StreamId;
  bytes: Uint8Array;
}

/** One index record: a float64 holding `start * 4 + stream` (exact below 2^51 bytes). */
const RECORD_BYTES = 8;

function encodeRecord(start: number, stream: StreamId): Uint8Array {
  const record = new Uint8Array(RECORD_BYTES);
  new DataView(record.buffer).setFloat64(0, start * 4 + stream, true);
  return record;
}

function decodeRecord(record: Uint8Array): { start: number; stream: StreamId } {
  const value = new DataView(record.buffer, record.byteOffset, RECORD_BYTES).getFloat64(0, true);
  return { start: Math.floor(value / 4), stream: (value % 4) as StreamId };
}

function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
}

/** Shrinks a file being written to `length` and writes on from there; best effort. */
function cutTo(file: Deno.FsFile, length: number): void {
  try {
    file.truncateSync(length);
    file.seekSync(length, Deno.SeekMode.Start);
  } catch { /* the log is finished after a failed write; readers stop at its size anyway */ }
}

export class OutputLog {
  readonly #file: Deno.FsFile | undefined;
  /**
   * Segment i of the index covers [start(i), start(i+1)) and was written by stream(i). Opened for
   * writing at the first record this process writes (created then if it is not there).
   */
  #index: Deno.FsFile | undefined;
  readonly #mode: "create" | "append" | "read";
  /** Readers opened before the index existed: each is given its handle once it is made. */
  #indexWaiters = new Set<() => void>();
  #segments = 0;
  #lastStream: StreamId | undefined;
  #size = 0;
  #finished = false;
  #truncated = false;
  #waiters: (() => void)[] = [];

  private constructor(readonly path: string, mode: "create" | "append" | "read", made = false) {
    this.#mode = mode;
    if (mode === "read") return;
    const options = mode === "append" ? { append: true } : made
      ? { write: true } // opening an empty file as it is writes nothing to the disk
      : { write: true, create: true, truncate: true, mode: 0o600 };
    this.#file = Deno.openSync(path, options);
  }

  /**
   * The index for writing, made if it is not there: truncated by a created log (a stale index
   * would not match), appended to by a resumed one. A resumed log without segments (a job silent
   * until the reload) may have none yet; one with segments must find it (records appended to a new
   * file would not line up with the segments counted: the write fails, and the output is lost).
   */
  #openIndex(): Deno.FsFile {
    if (this.#index) return this.#index;
    this.#index = Deno.openSync(
      `${this.path}.idx`,
      this.#mode === "create"
        ? { write: true, create: true, truncate: true, mode: 0o600 }
        : { append: true, create: this.#segments === 0, mode: 0o600 },
    );
    const waiters = this.#indexWaiters;
    this.#indexWaiters = new Set();
    for (const give of waiters) give();
    return this.#index;
  }

  /**
   * For a reader: true when the index file exists now (a reader opens it at once), else `give` is
   * called as it is made (returns what stops that; nothing is called once the log finished).
   */
  indexExists(give: () => void): { exists: boolean; stop: () => void } {
    if (this.#index || this.#segments > 0) return { exists: true, stop: () => {} };
    if (this.#finished) return { exists: false, stop: () => {} };
    this.#indexWaiters.add(give);
    return { exists: false, stop: () => this.#indexWaiters.delete(give) };
  }

  /** Where a running log stands: what a reload hands to the new worker process. */
  get state(): ResumeState {
    return {
      size: this.#size,
      segments: this.#segments,
      lastStream: this.#lastStream ?? null,
      truncated: this.#truncated,
    };
  }

  /** Continues appending to the log a previous process of this worker was writing. */
  static resume(path: string, state: ResumeState, limit = 0): OutputLog {
    const log = new OutputLog(path, "append");
    log.#limit = limit;
    log.#size = state.size;
    log.#segments = state.segments;
    log.#lastStream = state.lastStream ?? undefined;
    log.#truncated = state.truncated;
    return log;
  }

  /**
   * Creates (truncates) the log at `path` (and `path.idx`), readable only by its owner. Output
   * beyond `limit` bytes (0: none) is discarded. `made`: the caller has just made `path` a new,
   * empty file only its owner may read (a job's start makes it with its directory, off the event
   * loop), and it is opened as it is.
   */
  static create(path: string, limit = 0, made = false): OutputLog {
    const log = new OutputLog(path, "create", made);
    log.#limit = limit;
    return log;
  }

  /**
   * The finished log a job left at `path`, for reading. What a crash may have left torn is cut
   * off: a partial index record at the end, and index records pointing past the output's end.
   * Throws Deno.errors.NotFound when the output file is gone.
   */
  static open(path: string): OutputLog {
    const log = new OutputLog(path, "read");
    log.#size = Deno.statSync(path).size;
    let indexBytes = 0;
    try {
      indexBytes = Deno.statSync(`${path}.idx`).size;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    let segments = Math.floor(indexBytes / RECORD_BYTES);
    if (segments > 0) {
      const index = Deno.openSync(`${path}.idx`, { read: true });
      try {
        const record = new Uint8Array(RECORD_BYTES);
        const startOf = (i: number) => {
          index.seekSync(i * RECORD_BYTES, Deno.SeekMode.Start);
          let got = 0;
          while (got < RECORD_BYTES) {
            const n = index.readSync(record.subarray(got));
            if (!n) return Infinity;
            got += n;
          }
          const { start, stream } = decodeRecord(record);
          return stream === 1 || stream === 2 ? start : Infinity;
        };
        // A torn write leaves at most the last records bad; keep those that point inside.
        while (segments > 0 && !(startOf(segments - 1) < log.#size)) segments--;
        if (segments > 0 && startOf(0) !== 0) segments = 0;
      } finally {
        index.close();
      }
    }
    // Output bytes no index record covers cannot be attributed to a stream: leave them out.
    if (segments === 0) log.#size = 0;
    log.#segments = segments;
    log.#finished = true;
    return log;
  }

  #limit = 0;

  /** Records that output was lost (its pipe had to be closed before its end). */
  markIncomplete(): void {
    this.#truncated = true;
  }

  /** True when output beyond the size limit was discarded, or output was lost (markIncomplete). */
  get truncated(): boolean {
    return this.#truncated;
  }

  /** How many runs of one stream the output has so far. */
  get segments(): number {
    return this.#segments;
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
    if (this.#limit > 0 && this.#size + bytes.length > this.#limit) {
      this.#truncated = true;
      bytes = bytes.subarray(0, this.#limit - this.#size);
      if (bytes.length === 0) return;
    }
    const before = { segments: this.#segments, lastStream: this.#lastStream };
    try {
      // The index record goes first: after a crash between the two writes, a record pointing at
      // the end of the output is dropped by open(), and no byte is ever attributed to the wrong
      // stream.
      if (this.#lastStream !== stream) {
        writeAll(this.#openIndex(), encodeRecord(this.#size, stream));
        this.#segments++;
        this.#lastStream = stream;
      }
      writeAll(this.#file!, bytes);
    } catch (e) {
      this.#undoPartial(before.segments, before.lastStream);
      throw e;
    }
    this.#size += bytes.length;
    passedThrough(bytes.length);
    this.#wake();
  }

  /**
   * A write that failed (a full disk) may have stored part of its bytes: cut both files back to
   * what the log counts, so a reader never gets bytes beyond the size recorded for the job (with
   * a full disk, it got up to a block of them that `outputBytes` and the reason's "output from
   * byte N on was lost" did not count). Shrinking a file needs no space.
   */
  #undoPartial(segments: number, lastStream: StreamId | undefined): void {
    this.#segments = segments;
    this.#lastStream = lastStream;
    cutTo(this.#file!, this.#size);
    if (this.#index) cutTo(this.#index, segments * RECORD_BYTES);
  }

  /** No more output: closes the file for writing and wakes every waiting reader. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#file?.close();
    this.#index?.close();
    this.#indexWaiters.clear();
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
    if (this.#waiters.length === 0) return; // most appends (no follower): allocate nothing
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** A reader with its own file handle; close it when done. */
  openReader(): OutputReader {
    return new OutputReader(this);
  }
}

export class OutputReader {
  readonly #file: Deno.FsFile;
  /**
   * Opened with the reader when the index exists, else as the writer makes it (at the first
   * record, before any segment counts), so the reader holds it even if the job's files are removed
   * later (a DeleteJob while it reads). Undefined while the log has no segments to read.
   */
  #index: Deno.FsFile | undefined;
  #indexError: unknown;
  readonly #stopWaiting: () => void;
  readonly #record = new Uint8Array(RECORD_BYTES);
  /** The segment the last read fell in: reads mostly move forward through one. */
  #segment = 0;
  /** The file's read position (sequential reads need no seek). */
  #position = 0;

  constructor(private readonly log: OutputLog) {
    this.#file = Deno.openSync(log.path, { read: true });
    const { exists, stop } = log.indexExists(() => {
      // Called by the writer as it makes the index: a failure is this reader's, at its next read.
      try {
        this.#index = this.#openIndex();
      } catch (e) {
        this.#indexError = e;
      }
    });
    this.#stopWaiting = stop;
    if (exists) {
      try {
        this.#index = this.#openIndex();
      } catch (e) {
        this.#file.close();
        throw e;
      }
    }
  }

  #openIndex(): Deno.FsFile {
    return Deno.openSync(`${this.log.path}.idx`, { read: true });
  }

  #entry(i: number): { start: number; stream: StreamId } {
    const index = this.#index;
    if (!index) {
      throw this.#indexError ?? new Error(`output index of ${this.log.path} is missing`);
    }
    index.seekSync(i * RECORD_BYTES, Deno.SeekMode.Start);
    let got = 0;
    while (got < RECORD_BYTES) {
      const n = index.readSync(this.#record.subarray(got));
      if (!n) throw new Error(`output index of ${this.log.path} is short`);
      got += n;
    }
    return decodeRecord(this.#record);
  }

  /** The stream that wrote byte `offset` and where its run of bytes ends (so far). */
  #segmentAt(offset: number): { stream: StreamId; end: number } {
    const count = this.log.segments;
    const endOf = (i: number) => i + 1 < count ? this.#entry(i + 1).start : this.log.size;
    const cached = Math.min(this.#segment, count - 1);
    const here = this.#entry(cached);
    if (here.start <= offset && offset < endOf(cached)) {
      return { stream: here.stream, end: endOf(cached) };
    }
    let lo = 0;
    let hi = count - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#entry(mid).start <= offset) lo = mid;
      else hi = mid - 1;
    }
    this.#segment = lo;
    return { stream: this.#entry(lo).stream, end: endOf(lo) };
  }

  /** Up to `max` bytes from `offset`, all of one stream; null when nothing is there yet. */
  read(offset: number, max: number): OutputChunk | null {
    const span = this.span(offset, max);
    if (!span) return null;
    const buf = new Uint8Array(span.length);
    const got = this.readAt(offset, buf);
    return { offset, stream: span.stream, bytes: got === buf.length ? buf : buf.subarray(0, got) };
  }

  /**
   * Where the next read from `offset` would stop: how many bytes (at most `max`) follow it that
   * one stream wrote, and which. Null when nothing is there yet.
   */
  span(offset: number, max: number): { stream: StreamId; length: number } | null {
    if (offset >= this.log.size) return null;
    const { stream, end } = this.#segmentAt(offset);
    return { stream, length: Math.min(max, end - offset) };
  }

  /**
   * Reads output bytes from `offset` into `target` (the caller's buffer, so they are copied once);
   * returns how many were read: fewer than asked only when the file is shorter than the log says.
   */
  readAt(offset: number, target: Uint8Array): number {
    if (this.#position !== offset) this.#file.seekSync(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < target.length) {
      const n = this.#file.readSync(target.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
    this.#position = offset + got;
    return got;
  }

  close(): void {
    this.#stopWaiting();
    this.#file.close();
    this.#index?.close();
  }
}
