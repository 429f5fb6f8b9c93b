/**
 * Job output pipes read into one shared buffer (worker/runtime/output_pipe.ts), on real pipes made
 * with pipe2(2): bytes read before the sink is set arrive first and in order, each pipe's sink gets
 * only its own pipe's bytes, and 'close' still marks the end of the pipe.
 */
import assert from "node:assert/strict";
import type net from "node:net";
import { onOutput, openOutputPipe } from "../worker/runtime/output_pipe.ts";
import { concatBytes } from "./helpers/process.ts";

const libc = Deno.dlopen("libc.so.6", {
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
});
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A pipe whose read end is an output pipe; returns it with its write end. */
function outputPipe(): { socket: net.Socket; writeFd: number } {
  const fds = new Int32Array(2);
  // Non-blocking, so that a full pipe makes the writer wait for the reader instead of hanging.
  assert.equal(libc.symbols.pipe2(new Uint8Array(fds.buffer), O_CLOEXEC | O_NONBLOCK), 0);
  return { socket: openOutputPipe(fds[0]!), writeFd: fds[1]! };
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

/** Collects what `socket`'s sink receives (copied: the buffer is reused) until it closes. */
function collect(socket: net.Socket): { chunks: Uint8Array[]; closed: Promise<void> } {
  const chunks: Uint8Array[] = [];
  onOutput(socket, (bytes) => chunks.push(bytes.slice()));
  return { chunks, closed: new Promise((resolve) => socket.on("close", () => resolve())) };
}

Deno.test("bytes read before the sink is set come first, in order; close marks the end", async () => {
  const { socket, writeFd } = outputPipe();
  const enc = new TextEncoder();
  await write(writeFd, enc.encode("early "));
  await delay(100); // read by now, with no sink yet
  const got = collect(socket);
  await write(writeFd, enc.encode("late"));
  await delay(50);
  libc.symbols.close(writeFd);
  await got.closed;
  assert.equal(new TextDecoder().decode(concatBytes(got.chunks)), "early late");
});

Deno.test("pipes written at once each deliver only their own bytes through the shared buffer", async () => {
  const pipes = Array.from({ length: 8 }, () => outputPipe());
  const sent = pipes.map(() => {
    const bytes = new Uint8Array(3 * 1024 * 1024 + 17);
    for (let i = 0; i < bytes.length; i += 65536) {
      crypto.getRandomValues(bytes.subarray(i, i + 65536));
    }
    return bytes;
  });
  const got = pipes.map((p) => collect(p.socket));
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

Deno.test("a socket not opened as an output pipe is refused", () => {
  assert.throws(() => onOutput({} as net.Socket, () => {}), TypeError);
});
