/** The job output log on a real file: stream tagging, offsets, readers, waiting. */
import assert from "node:assert/strict";
import { OutputLog } from "../worker/jobs/output_log.ts";
import { pathExists } from "./helpers/disk.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function withLog(fn: (log: OutputLog) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-output-test-" });
  const log = OutputLog.create(`${dir}/output`);
  try {
    await fn(log);
  } finally {
    log.finish();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("chunks never mix streams and offsets count both streams in order", () =>
  withLog((log) => {
    log.append(1, bytes("out1 "));
    log.append(1, bytes("out2 "));
    log.append(2, bytes("err1 "));
    log.append(1, bytes("out3"));
    assert.equal(log.size, 19);
    const reader = log.openReader();
    const chunks = [];
    for (let offset = 0; offset < log.size;) {
      const chunk = reader.read(offset, 1024)!;
      chunks.push([chunk.offset, chunk.stream, text(chunk.bytes)]);
      offset += chunk.bytes.length;
    }
    reader.close();
    assert.deepEqual(chunks, [[0, 1, "out1 out2 "], [10, 2, "err1 "], [15, 1, "out3"]]);
  }));

Deno.test("a read from the middle of a run, limited in size, stays in its stream", () =>
  withLog((log) => {
    log.append(2, bytes("abcdef"));
    log.append(1, bytes("ghij"));
    const reader = log.openReader();
    assert.deepEqual(
      { ...reader.read(2, 3)!, bytes: text(reader.read(2, 3)!.bytes) },
      { offset: 2, stream: 2, bytes: "cde" },
    );
    const next = reader.read(5, 100)!;
    assert.equal(text(next.bytes), "f");
    assert.equal(reader.read(6, 100)!.stream, 1);
    assert.equal(reader.read(10, 100), null, "nothing past the end");
    reader.close();
  }));

Deno.test("waitBeyond resolves on growth and on finish, at once when already past", () =>
  withLog(async (log) => {
    let woke = false;
    const waiting = log.waitBeyond(0).then(() => woke = true);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(woke, false);
    log.append(1, bytes("x"));
    await waiting;
    assert.equal(woke, true);
    await log.waitBeyond(0);
    const atEnd = log.waitBeyond(1);
    log.finish();
    await atEnd;
    assert.equal(log.finished, true);
    log.append(1, bytes("ignored after finish"));
    assert.equal(log.size, 1);
  }));

Deno.test("two readers keep their own cursors", () =>
  withLog((log) => {
    log.append(1, bytes("0123456789"));
    const a = log.openReader();
    const b = log.openReader();
    assert.equal(text(a.read(7, 10)!.bytes), "789");
    assert.equal(text(b.read(0, 4)!.bytes), "0123");
    assert.equal(text(a.read(0, 2)!.bytes), "01");
    a.close();
    b.close();
  }));

Deno.test("byte-by-byte interleaving reads back exactly, from any offset", () =>
  withLog((log) => {
    const count = 3000;
    for (let i = 0; i < count; i++) log.append(i % 3 === 0 ? 2 : 1, bytes(String(i % 10)));
    assert.equal(log.segments, 2000, "a run per switch of stream");
    const reader = log.openReader();
    for (const start of [0, 1, 1234, count - 1]) {
      for (let offset = start; offset < count;) {
        const chunk = reader.read(offset, 64)!;
        for (let k = 0; k < chunk.bytes.length; k++) {
          const i = offset + k;
          assert.equal(chunk.stream, i % 3 === 0 ? 2 : 1, `byte ${i}`);
          assert.equal(text(chunk.bytes.subarray(k, k + 1)), String(i % 10));
        }
        offset += chunk.bytes.length;
      }
    }
    reader.close();
  }));

// The index is made at the first output byte (a job that writes nothing costs one file, not two).
Deno.test("a log without output has no index and reads back empty, live and finished", () =>
  withLog((log) => {
    assert.equal(pathExists(log.path), true, "the output file is made with the log");
    assert.equal(pathExists(`${log.path}.idx`), false, "the index is not");
    const live = log.openReader();
    assert.equal(live.read(0, 100), null);
    live.close();
    log.finish();
    assert.equal(pathExists(`${log.path}.idx`), false);
    const done = OutputLog.open(log.path);
    assert.equal(done.size, 0);
    assert.equal(done.segments, 0);
    const reader = done.openReader();
    assert.equal(reader.read(0, 100), null);
    reader.close();
  }));

Deno.test("a reader opened before the first byte reads it, also once the files are removed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-output-test-" });
  const log = OutputLog.create(`${dir}/output`);
  const early = log.openReader();
  // One closed before the first byte is given nothing (the sanitizer would see a leaked handle).
  log.openReader().close();
  try {
    log.append(1, bytes("out "));
    assert.equal(pathExists(`${dir}/output.idx`), true, "made at the first byte");
    log.append(2, bytes("err"));
    log.finish();
    // DeleteJob while a stream reads: the stream keeps its open handles.
    await Deno.remove(dir, { recursive: true });
    const first = early.read(0, 100)!;
    const second = early.read(4, 100)!;
    assert.deepEqual([first.stream, text(first.bytes)], [1, "out "]);
    assert.deepEqual([second.stream, text(second.bytes)], [2, "err"]);
  } finally {
    early.close();
    log.finish();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a resumed silent log (a reload) makes its index at its first byte", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-output-test-" });
  const path = `${dir}/output`;
  const before = OutputLog.create(path);
  const state = before.state;
  // The previous process hands over without finishing its log (its handles just close).
  before.finish();
  const log = OutputLog.resume(path, state);
  try {
    assert.equal(pathExists(`${path}.idx`), false);
    const reader = log.openReader();
    assert.equal(reader.read(0, 100), null);
    log.append(2, bytes("late"));
    log.append(1, bytes(" out"));
    assert.deepEqual([reader.read(0, 100)!.stream, text(reader.read(0, 100)!.bytes)], [2, "late"]);
    assert.deepEqual([reader.read(4, 100)!.stream, text(reader.read(4, 100)!.bytes)], [1, " out"]);
    reader.close();
    log.finish();
    const done = OutputLog.open(path);
    assert.equal(done.segments, 2);
    assert.equal(done.size, 8);
  } finally {
    log.finish();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a resumed log with segments whose index is gone does not start a new one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-output-test-" });
  const path = `${dir}/output`;
  const before = OutputLog.create(path);
  before.append(1, bytes("out"));
  const state = before.state;
  before.finish();
  await Deno.remove(`${path}.idx`);
  const log = OutputLog.resume(path, state);
  try {
    log.append(1, bytes(" more"));
    assert.throws(() => log.append(2, bytes("err")), Deno.errors.NotFound);
    assert.equal(pathExists(`${path}.idx`), false);
  } finally {
    log.finish();
    await Deno.remove(dir, { recursive: true });
  }
});
