/**
 * Job output pipes read into one shared buffer (worker/runtime/output_pipe.ts), on real pipes made
 * with pipe2(2): while many pipes are read at the same time, each pipe's sink gets every byte of its
 * own pipe exactly once and in order, and nothing of another's; 'close' still marks the end.
 */
import assert from "node:assert/strict";
import { Shim } from "../init/shim/ffi.ts";
import { endedOutputPipe, openOutputPipe, restAfterRead } from "../worker/runtime/output_pipe.ts";
import { OutputPump } from "../worker/runtime/output_pump.ts";
import { concatBytes } from "./helpers/process.ts";
import { closeFd, rawPipe, writeFd } from "./helpers/raw_pipe.ts";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const pipe = rawPipe;
const shim = new Shim(new URL("../build/libjwshim.so", import.meta.url).pathname);
/** One for the file, as the worker has one (its descriptors stay open). */
const pump = new OutputPump(shim);

/**
 * Collects what an output pipe's sink receives (copied: the buffer is reused) until it closes;
 * each read is also noted in `reads` under `name`, so the order of all pipes' reads shows.
 */
function collect(
  fd: number,
  name: number,
  reads: number[],
): { chunks: Uint8Array[]; closed: Promise<void> } {
  const chunks: Uint8Array[] = [];
  const pipe = openOutputPipe(pump, fd, (bytes) => {
    chunks.push(bytes.slice());
    reads.push(name);
  });
  return { chunks, closed: pipe.closed.then(() => {}) };
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
    const n = writeFd(fd, bytes.subarray(done));
    if (n > 0) done += n;
    else await delay(1); // EAGAIN: full
  }
}

Deno.test("pipes read at the same time each deliver all of their own bytes, once and in order", async () => {
  const pipes = Array.from({ length: 8 }, () => pipe());
  const sent = pipes.map(() => randomBytes(3 * 1024 * 1024 + 17));
  const reads: number[] = [];
  const got = pipes.map((p, i) => collect(p.readFd, i, reads));
  // Feed the pipes in turns of 48 KiB: a pipe (64 KiB) fills within two turns, so the writer waits
  // for the reader again and again while every pipe has bytes waiting.
  for (let at = 0; at < sent[0]!.length; at += 49152) {
    for (const [i, p] of pipes.entries()) await write(p.writeFd, sent[i]!.subarray(at, at + 49152));
  }
  for (const p of pipes) closeFd(p.writeFd);
  await Promise.all(got.map((g) => g.closed));
  // The shared buffer really served the pipes by turns: between a pipe's first and last read,
  // every other pipe was read too (so a sink that kept the buffer past its return would see
  // another pipe's bytes in it).
  for (const i of pipes.keys()) {
    const between = new Set(reads.slice(reads.indexOf(i), reads.lastIndexOf(i)));
    assert.equal(
      between.size,
      pipes.length,
      `pipe ${i}'s reads were not interleaved with all others`,
    );
  }
  for (const [i, g] of got.entries()) {
    const all = concatBytes(g.chunks);
    assert.equal(all.length, sent[i]!.length, `pipe ${i}: bytes lost or repeated`);
    const same = all.every((b, at) => b === sent[i]![at]);
    assert.ok(same, `pipe ${i} got other bytes, or in another order, than were written to it`);
  }
});

Deno.test("a pipe written a line at a time is read in batches, every byte in order", async () => {
  const { readFd, writeFd } = pipe();
  let reads = 0;
  let first = 0;
  const chunks: Uint8Array[] = [];
  const output = openOutputPipe(pump, readFd, (bytes) => {
    if (reads++ === 0) first = performance.now();
    chunks.push(bytes.slice());
  });
  // A shell echoing numbered lines as fast as it can for 0.4 s, into the pipe (by its /proc path).
  const writer = new Deno.Command("timeout", {
    args: [
      "0.4",
      "sh",
      "-c",
      `i=0; while :; do i=$((i+1)); echo "line $i"; done > /proc/${Deno.pid}/fd/${writeFd}`,
    ],
  }).spawn();
  await writer.status;
  closeFd(writeFd);
  await output.closed;
  const ms = performance.now() - first;
  const lines = new TextDecoder().decode(concatBytes(chunks)).split("\n");
  const last = lines.pop();
  assert.ok(lines.length > 1000, `the writer wrote ${lines.length} lines`);
  assert.ok(
    lines.every((line, i) => line === `line ${i + 1}`) && (last === "" || last!.startsWith("line")),
    "lines lost, repeated or out of order",
  );
  // One read per write would be thousands; a pipe rests up to 5 ms after a small read.
  assert.ok(reads <= ms / 4 + 2, `${reads} reads of ${lines.length} lines in ${ms.toFixed(0)} ms`);
});

Deno.test("a fast writer's pipe is armed again at once, a slow one's rests up to 5 ms", () => {
  assert.equal(restAfterRead(256 * 1024, 1), 0, "256 KiB in 1 ms");
  assert.equal(restAfterRead(1024 * 1024, 2), 0, "1 MiB in 2 ms");
  assert.equal(restAfterRead(33, 10), 5, "a line in 10 ms");
  assert.equal(restAfterRead(4096, 0.5), 5, "4 KiB in 0.5 ms");
  const between = restAfterRead(64 * 1024, 2);
  assert.ok(between > 1 && between < 5, `64 KiB in 2 ms: ${between}`);
});

Deno.test("a pipe hands over its descriptor while open, -1 once it ended or was destroyed", async () => {
  const ended = pipe();
  const endedPipe = openOutputPipe(pump, ended.readFd, () => {});
  assert.equal(endedPipe.handedFd, ended.readFd);
  closeFd(ended.writeFd);
  await endedPipe.closed;
  assert.equal(endedPipe.handedFd, -1, "ended");
  const destroyed = pipe();
  const destroyedPipe = openOutputPipe(pump, destroyed.readFd, () => {});
  assert.equal(destroyedPipe.handedFd, destroyed.readFd);
  destroyedPipe.destroy();
  assert.equal(destroyedPipe.handedFd, -1, "destroyed");
  closeFd(destroyed.writeFd);
  assert.equal(endedOutputPipe().handedFd, -1, "ended before a reload");
});

Deno.test("a pipe has writers while a write end is open, none once the last one closed", async () => {
  const { readFd, writeFd } = pipe();
  const output = openOutputPipe(pump, readFd, () => {});
  // Paused, the pipe stays open past its writers' end (as a job's does while a reload is underway).
  output.pause();
  assert.equal(output.hasWriters(), true, "its write end is open");
  closeFd(writeFd);
  assert.equal(output.hasWriters(), false, "its write end is closed");
  output.resume();
  await output.closed;
  assert.equal(output.hasWriters(), false, "ended");
});

Deno.test("a descriptor the pump cannot watch is refused and closed, and the pump reads on", async () => {
  // epoll(7) refuses an O_PATH descriptor (EBADF), as it refuses any past its limit (ENOSPC).
  const path = Deno.makeTempFileSync();
  const fd = shim.openPath(path);
  try {
    assert.throws(() => openOutputPipe(pump, fd, () => {}), /EBADF/);
    assert.throws(() => Deno.readLinkSync(`/proc/self/fd/${fd}`), Deno.errors.NotFound, "closed");
  } finally {
    Deno.removeSync(path);
  }
  const other = pipe();
  const chunks: Uint8Array[] = [];
  const output = openOutputPipe(pump, other.readFd, (bytes) => chunks.push(bytes.slice()));
  writeFd(other.writeFd, new TextEncoder().encode("still read\n"));
  closeFd(other.writeFd);
  assert.deepEqual(await output.closed, {});
  assert.equal(new TextDecoder().decode(concatBytes(chunks)), "still read\n");
});
