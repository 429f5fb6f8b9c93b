/**
 * Job output pipes read into one shared buffer (worker/runtime/output_pipe.ts), on real pipes made
 * with pipe2(2): bytes already in a pipe when it is opened reach the sink given at the open, first
 * and in order; each pipe's sink gets only its own pipe's bytes; 'close' still marks the end.
 */
import assert from "node:assert/strict";
import { openOutputPipe } from "../worker/runtime/output_pipe.ts";
import { concatBytes } from "./helpers/process.ts";

const libc = Deno.dlopen("libc.so.6", {
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
});
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
const F_SETPIPE_SZ = 1031;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A pipe (read end, write end), not opened as an output pipe yet. */
function pipe(): { readFd: number; writeFd: number } {
  const fds = new Int32Array(2);
  // Non-blocking, so that a full pipe makes the writer wait for the reader instead of hanging.
  assert.equal(libc.symbols.pipe2(new Uint8Array(fds.buffer), O_CLOEXEC | O_NONBLOCK), 0);
  return { readFd: fds[0]!, writeFd: fds[1]! };
}

/** Collects what an output pipe's sink receives (copied: the buffer is reused) until it closes. */
function collect(fd: number): { chunks: Uint8Array[]; closed: Promise<void> } {
  const chunks: Uint8Array[] = [];
  const socket = openOutputPipe(fd, (bytes) => chunks.push(bytes.slice()));
  return { chunks, closed: new Promise((resolve) => socket.on("close", () => resolve())) };
}

function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}

/** Writes all of `bytes`, letting the loop run (and read) while the pipe is full. */
async function write(fd: number, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const n = Number(libc.symbols.write(fd, bytes.subarray(done), BigInt(bytes.length - done)));
    if (n > 0) done += n;
    else await delay(1); // EAGAIN: full
  }
}

Deno.test("bytes in the pipe before the open all reach the sink given at the open, first and in order", async () => {
  const { readFd, writeFd } = pipe();
  // Room for several reads' worth (a read takes up to 256 KiB), all written before the open.
  assert.equal(libc.symbols.fcntl(readFd, F_SETPIPE_SZ, 1024 * 1024), 1024 * 1024);
  const before = randomBytes(1024 * 1024);
  const after = randomBytes(300 * 1024 + 5);
  await write(writeFd, before);
  const got = collect(readFd);
  await write(writeFd, after);
  libc.symbols.close(writeFd);
  await got.closed;
  assert.ok(got.chunks.length > 4, `read in ${got.chunks.length} read(s)`);
  const all = concatBytes(got.chunks);
  const sent = concatBytes([before, after]);
  assert.equal(all.length, sent.length);
  assert.ok(all.every((b, at) => b === sent[at]), "other bytes, or in another order, than written");
});

Deno.test("pipes written at once each deliver only their own bytes through the shared buffer", async () => {
  const pipes = Array.from({ length: 8 }, () => pipe());
  const sent = pipes.map(() => randomBytes(3 * 1024 * 1024 + 17));
  const got = pipes.map((p) => collect(p.readFd));
  // Feed the pipes in turns of 48 KiB so that every one has bytes waiting at once.
  for (let at = 0; at < sent[0]!.length; at += 49152) {
    for (const [i, p] of pipes.entries()) await write(p.writeFd, sent[i]!.subarray(at, at + 49152));
  }
  for (const p of pipes) libc.symbols.close(p.writeFd);
  await Promise.all(got.map((g) => g.closed));
  for (const [i, g] of got.entries()) {
    assert.ok(g.chunks.length > 1, `pipe ${i} was read in ${g.chunks.length} read(s)`);
    const all = concatBytes(g.chunks);
    const same = all.length === sent[i]!.length && all.every((b, at) => b === sent[i]![at]);
    assert.ok(same, `pipe ${i} got other bytes than were written to it`);
  }
});
