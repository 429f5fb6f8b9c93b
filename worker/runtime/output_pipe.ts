/**
 * A job's output pipe as the worker reads it: a node:net socket (libuv-style polling, no thread per
 * pipe) whose reads land in ONE buffer shared by every job's pipes, handed to the job's sink before
 * the next read can happen.
 *
 * Why: read the ordinary way (`'data'` events), each read of up to 64 KiB allocated a fresh
 * ArrayBuffer that lived until V8 collected it. With many jobs writing at full speed that garbage
 * is most of what the worker's memory grows by (100 jobs writing 100 MiB each), and the
 * collections it brings (or that memory_trim.ts forces when RSS grows) are the long loop turns
 * that delay a quiet job's line behind a storm (issue 8). Node's `onread` option reads into a
 * buffer the caller owns instead; Deno 2.8.3 reads and calls back synchronously, one pipe at a
 * time, so one buffer serves all of them as long as every sink consumes (or copies) its bytes
 * before it returns. The job's sink (job_output.ts) appends them to the job's log with a
 * synchronous write, so nothing is allocated per read, and an idle job costs no buffer at all.
 *
 * @module
 */
import type net from "node:net";
import { pipeSocket } from "./pipe_socket.ts";

/**
 * Bytes one read may take from a pipe. Larger than the 64 KiB of the ordinary reads: a job's pipe
 * holds up to 1 MiB (init_process.ts), and fewer, larger reads mean fewer callbacks and appends
 * per byte. Shared, so its size costs once, not per job.
 */
const READ_BYTES = 256 * 1024;
let shared: Uint8Array | undefined;

/** Receives a read's bytes; they are valid only until it returns (the buffer is reused). */
export type OutputSink = (bytes: Uint8Array) => void;

/** Where a job's two pipes deliver their reads. */
export interface OutputSinks {
  stdout: OutputSink;
  stderr: OutputSink;
}

/**
 * Opens the read end `fd` of a job's output pipe with its sink: reading starts at once and every
 * read goes to `sink`, in order, from the first (bytes written before the open wait in the pipe).
 * The socket's `'close'` marks the end of the pipe.
 */
export function openOutputPipe(fd: number, sink: OutputSink): net.Socket {
  shared ??= new Uint8Array(READ_BYTES);
  return pipeSocket(
    {
      fd,
      readable: true,
      writable: false,
      onread: {
        buffer: shared,
        callback: (n: number, buffer: Uint8Array) => {
          sink(buffer.subarray(0, n));
          return true;
        },
      },
    } as net.SocketConstructorOpts,
  );
}
