/**
 * Cgroup file operations (and a job's output directory and file) run together. A job's cgroup is
 * five or six directories on v1, made, read and removed at every job's start and end; run one by
 * one as Deno's async calls, each cost the worker's event loop a wake-up of a thread of Deno's
 * blocking pool (15-50 us under load, about 2 ms of the loop per job). The worker runs them as one
 * call to the shim (jw_file_batch) on that pool instead; without the shim (unit tests, tools) they
 * run as Deno's async calls, with the same results but one: the shim's batch reads a file longer
 * than its room again after the batch, so it removes no directory after such a read (ECANCELED).
 */
import { errnoName, strerror } from "../../init/shim/errno.ts";

export type FileOp =
  | { kind: "mkdir" | "rmdir" | "read"; path: string }
  | { kind: "write"; path: string; data: string }
  /** A directory only its owner may enter (0700); a new empty file only its owner may read (0600). */
  | { kind: "privateDir" | "privateFile"; path: string };

/** How one operation went: done, or `error` (an errno as Deno's errors carry it); a read's text. */
export interface FileOpResult {
  error?: Error;
  text?: string;
}

export interface FileBatch {
  /**
   * Runs `ops` in order. With `stopAtFailure`, the operations after a failed mkdir, rmdir or write
   * are not run (their error: ECANCELED); a read's failure never stops the rest. The shim's batch
   * also leaves every rmdir after a read longer than its room (ECANCELED), so that the read, made
   * again after the batch, finds its file.
   */
  run(ops: readonly FileOp[], stopAtFailure?: boolean): Promise<FileOpResult[]>;
}

/** The shim's side: see Shim.fileBatch (init/shim/ffi.ts). */
export interface ShimFileBatch {
  fileBatch(
    ops: Uint8Array<ArrayBuffer>,
    count: number,
    stopAtFailure: boolean,
    outBytes: number,
  ): Promise<{ results: Int32Array; out: Uint8Array }>;
}

const ECANCELED = 125;
const ENOBUFS = 105;
/** Room for what a batch reads: a job's usage files are a few hundred bytes together. */
const READ_ROOM = 64 * 1024;

/** An error for `errno` worded as Deno's are ("... (os error N)"), which errnoOf() reads. */
export function errnoError(errno: number): Error {
  const error = new Error(`${strerror(errno)} (os error ${errno})`);
  error.name = errnoName(errno);
  return error;
}

async function runOne(op: FileOp): Promise<FileOpResult> {
  try {
    switch (op.kind) {
      case "mkdir":
        await Deno.mkdir(op.path);
        return {};
      case "rmdir":
        await Deno.remove(op.path);
        return {};
      case "write":
        await Deno.writeTextFile(op.path, op.data, { create: false });
        return {};
      case "read":
        return { text: await Deno.readTextFile(op.path) };
      case "privateDir":
        await Deno.mkdir(op.path, { mode: 0o700 });
        return {};
      case "privateFile":
        (await Deno.open(op.path, { write: true, createNew: true, mode: 0o600 })).close();
        return {};
    }
  } catch (error) {
    return { error: error instanceof Error ? error : new Error(String(error)) };
  }
}

/** The operations as Deno's async calls, one by one. */
export const denoFileBatch: FileBatch = {
  async run(ops, stopAtFailure = false) {
    const results: FileOpResult[] = [];
    let failed = false;
    for (const op of ops) {
      if (failed && stopAtFailure) {
        results.push({ error: errnoError(ECANCELED) });
        continue;
      }
      const result = await runOne(op);
      if (result.error && op.kind !== "read") failed = true;
      results.push(result);
    }
    return results;
  },
};

const encoder = new TextEncoder();
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const decoder = new TextDecoder();

/** jw_file_batch's layout: kind byte, NUL-terminated path, for a write a 4-byte length and data. */
function encode(ops: readonly FileOp[]): Uint8Array<ArrayBuffer> {
  const KIND = {
    mkdir: 0x6d, // m
    rmdir: 0x64, // d
    write: 0x77, // w
    read: 0x72, // r
    privateDir: 0x70, // p
    privateFile: 0x66, // f
  } as const;
  // At most 3 UTF-8 bytes per UTF-16 unit: room for every operation, written in place.
  let room = 0;
  for (const op of ops) {
    // A NUL would end the path early and make the rest another operation; Deno refuses one too.
    if (op.path.includes("\0")) {
      throw new TypeError(`a path with a NUL byte: ${JSON.stringify(op.path)}`);
    }
    room += 2 + op.path.length * 3 + (op.kind === "write" ? 4 + op.data.length * 3 : 0);
  }
  const bytes = new Uint8Array(room);
  const view = new DataView(bytes.buffer);
  let at = 0;
  for (const op of ops) {
    bytes[at++] = KIND[op.kind];
    at += encoder.encodeInto(op.path, bytes.subarray(at)).written;
    bytes[at++] = 0;
    if (op.kind === "write") {
      // The length in the machine's byte order (the shim reads a uint32_t).
      const { written } = encoder.encodeInto(op.data, bytes.subarray(at + 4));
      view.setUint32(at, written, LITTLE_ENDIAN);
      at += 4 + written;
    }
  }
  return bytes.slice(0, at);
}

/** The operations as one call to the shim, on a thread of Deno's blocking pool. */
export function shimFileBatch(shim: ShimFileBatch): FileBatch {
  return {
    async run(ops, stopAtFailure = false) {
      if (ops.length === 0) return [];
      const room = ops.some((op) => op.kind === "read") ? READ_ROOM : 0;
      const { results, out } = await shim.fileBatch(encode(ops), ops.length, stopAtFailure, room);
      const done: (FileOpResult | Promise<FileOpResult>)[] = [];
      let at = 0;
      ops.forEach((op, i) => {
        const result = results[i]!;
        if (op.kind === "read" && result === -ENOBUFS) {
          done.push(runOne(op)); // longer than the room left: read on its own
        } else if (result < 0) {
          done.push({ error: errnoError(-result) });
        } else if (op.kind === "read") {
          done.push({ text: decoder.decode(out.subarray(at, at + result)) });
          at += result;
        } else {
          done.push({});
        }
      });
      return await Promise.all(done);
    },
  };
}
