/**
 * An ended job's output read back from its files (OutputLog.open), also after a crash tore the
 * last write of the output or of its index. No server needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { OutputLog } from "../worker/jobs/output_log.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function readAll(log: OutputLog): { text: string; streams: string } {
  const reader = log.openReader();
  let text = "";
  let streams = "";
  for (let offset = 0;;) {
    const chunk = reader.read(offset, 3);
    if (!chunk) break;
    text += dec(chunk.bytes);
    streams += String(chunk.stream).repeat(chunk.bytes.length);
    offset += chunk.bytes.length;
  }
  reader.close();
  return { text, streams };
}

async function written(): Promise<string> {
  const dir = await Deno.makeTempDir();
  const log = OutputLog.create(`${dir}/output`);
  log.append(1, enc("hello "));
  log.append(2, enc("oops "));
  log.append(1, enc("world"));
  log.finish();
  return dir;
}

Deno.test("open: what was written, with its streams", async () => {
  const dir = await written();
  try {
    const log = OutputLog.open(`${dir}/output`);
    assert.equal(log.size, 16);
    assert.ok(log.finished);
    assert.deepEqual(readAll(log), { text: "hello oops world", streams: "1111112222211111" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("open: a torn index record at the end is cut off", async () => {
  const dir = await written();
  try {
    const idx = await Deno.open(`${dir}/output.idx`, { append: true });
    await idx.write(new Uint8Array([1, 2, 3])); // 3 of a record's 8 bytes
    idx.close();
    assert.deepEqual(readAll(OutputLog.open(`${dir}/output`)).text, "hello oops world");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("open: an index record past the output's end (bytes never written) is dropped", async () => {
  const dir = await written();
  try {
    // A crash between writing the index record of a new run and its bytes.
    const record = new Uint8Array(8);
    new DataView(record.buffer).setFloat64(0, 16 * 4 + 2, true);
    const idx = await Deno.open(`${dir}/output.idx`, { append: true });
    await idx.write(record);
    idx.close();
    const log = OutputLog.open(`${dir}/output`);
    assert.equal(log.segments, 3);
    assert.deepEqual(readAll(log).streams, "1111112222211111");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("open: output cut short (a torn data write) reads up to where it ends", async () => {
  const dir = await written();
  try {
    await Deno.truncate(`${dir}/output`, 8);
    const log = OutputLog.open(`${dir}/output`);
    assert.equal(log.size, 8);
    assert.deepEqual(readAll(log), { text: "hello oo", streams: "11111122" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("open: a missing output file is NotFound; a missing index means no output", async () => {
  const dir = await written();
  try {
    await Deno.remove(`${dir}/output.idx`);
    assert.equal(OutputLog.open(`${dir}/output`).size, 0);
    await Deno.remove(`${dir}/output`);
    assert.throws(() => OutputLog.open(`${dir}/output`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
