/**
 * The cgroup layer's file batches (worker/cgroups/file_batch.ts): the shim's one call (jw_file_batch,
 * what the worker uses) gives what Deno's async calls one by one give, errors included, on real
 * files; and a failure stops what follows it only when asked.
 */
import assert from "node:assert/strict";
import { Shim } from "../init/shim/ffi.ts";
import { denoFileBatch, type FileOp, shimFileBatch } from "../worker/cgroups/file_batch.ts";
import { errnoOf } from "../worker/cgroups/files.ts";

const SHIM = new URL("../build/libjwshim.so", import.meta.url).pathname;
const shim = shimFileBatch(new Shim(SHIM));

/** Each result as "ok", the read's text, or the errno's name. */
async function outcomes(batch: typeof shim, ops: FileOp[], stop = false): Promise<string[]> {
  return (await batch.run(ops, stop)).map((r) =>
    r.error ? errnoOf(r.error) : r.text !== undefined ? `text:${r.text}` : "ok"
  );
}

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-file-batch-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the shim's batch gives what Deno's calls give, errors included", async () => {
  const script = (dir: string): FileOp[] => [
    { kind: "mkdir", path: `${dir}/a` },
    { kind: "mkdir", path: `${dir}/a` },
    { kind: "mkdir", path: `${dir}/missing/b` },
    { kind: "read", path: `${dir}/f` },
    { kind: "write", path: `${dir}/f`, data: "made?" },
    { kind: "read", path: `${dir}/a/../g` },
    { kind: "write", path: `${dir}/g`, data: "12345 ünïcode\n" },
    { kind: "read", path: `${dir}/g` },
    { kind: "read", path: `${dir}/a` },
    { kind: "rmdir", path: dir },
    { kind: "rmdir", path: `${dir}/a` },
    { kind: "rmdir", path: `${dir}/a` },
    { kind: "read", path: `${dir}/empty` },
  ];
  const prepare = async (dir: string) => {
    await Deno.writeTextFile(`${dir}/g`, "old, longer than the new text");
    await Deno.writeTextFile(`${dir}/empty`, "");
  };
  let viaDeno: string[] = [];
  let viaShim: string[] = [];
  await inTempDir(async (dir) => {
    await prepare(dir);
    viaDeno = (await outcomes(denoFileBatch, script(dir))).map((o) => o.replaceAll(dir, "DIR"));
  });
  await inTempDir(async (dir) => {
    await prepare(dir);
    viaShim = (await outcomes(shim, script(dir))).map((o) => o.replaceAll(dir, "DIR"));
  });
  assert.deepEqual(viaShim, [
    "ok",
    "EEXIST",
    "ENOENT",
    "ENOENT",
    "ENOENT",
    "text:old, longer than the new text",
    "ok",
    "text:12345 ünïcode\n",
    "EISDIR",
    "ENOTEMPTY",
    "ok",
    "ENOENT",
    "text:",
  ]);
  assert.deepEqual(viaShim, viaDeno);
});

Deno.test("a failed mkdir or write stops the rest only when asked; reads never stop it", async () => {
  await inTempDir(async (dir) => {
    const ops: FileOp[] = [
      { kind: "read", path: `${dir}/none` },
      { kind: "mkdir", path: `${dir}/a` },
      { kind: "write", path: `${dir}/none`, data: "x" },
      { kind: "mkdir", path: `${dir}/b` },
    ];
    for (const batch of [shim, denoFileBatch]) {
      assert.deepEqual(await outcomes(batch, ops, true), ["ENOENT", "ok", "ENOENT", "ECANCELED"]);
      assert.ok(!await exists(`${dir}/b`), "an operation after the failure ran");
      await Deno.remove(`${dir}/a`);
      assert.deepEqual(await outcomes(batch, ops, false), ["ENOENT", "ok", "ENOENT", "ok"]);
      await Deno.remove(`${dir}/a`);
      await Deno.remove(`${dir}/b`);
    }
  });
});

Deno.test("a file longer than the batch's room is still read whole", async () => {
  await inTempDir(async (dir) => {
    const big = "x".repeat(100_000);
    await Deno.writeTextFile(`${dir}/big`, big);
    await Deno.writeTextFile(`${dir}/small`, "small");
    const results = await shim.run([
      { kind: "read", path: `${dir}/small` },
      { kind: "read", path: `${dir}/big` },
      { kind: "read", path: `${dir}/small` },
    ]);
    assert.deepEqual(results.map((r) => r.text?.length), [5, 100_000, 5]);
    assert.equal(results[1]!.text, big);
  });
});

Deno.test("after a read longer than the batch's room no directory is removed: it is read again after", async () => {
  // A job's end reads its final usage and removes its cgroup in one batch (JobCgroup.final).
  await inTempDir(async (dir) => {
    const big = "x".repeat(100_000);
    await Deno.mkdir(`${dir}/cgroup`);
    await Deno.writeTextFile(`${dir}/cgroup/big`, big);
    await Deno.mkdir(`${dir}/empty`);
    const results = await shim.run([
      { kind: "rmdir", path: `${dir}/empty` },
      { kind: "read", path: `${dir}/cgroup/big` },
      { kind: "rmdir", path: `${dir}/empty-too` },
    ]);
    assert.equal(results[0]!.error, undefined, "an rmdir before the long read was not run");
    assert.equal(results[1]!.text, big);
    assert.equal(errnoOf(results[2]!.error!), "ECANCELED");
    await Deno.mkdir(`${dir}/again`);
    const [read, removed] = await shim.run([
      { kind: "read", path: `${dir}/cgroup/big` },
      { kind: "rmdir", path: `${dir}/again` },
    ]);
    assert.equal(read!.text, big);
    assert.equal(errnoOf(removed!.error!), "ECANCELED");
    assert.ok(await exists(`${dir}/again`), "removed after a read that did not fit");
  });
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("private directories and files: owner-only modes, never over an existing one, either way", async () => {
  const script = (dir: string): FileOp[] => [
    { kind: "privateDir", path: `${dir}/job` },
    { kind: "privateFile", path: `${dir}/job/output` },
    { kind: "privateFile", path: `${dir}/job/output` },
    { kind: "privateDir", path: `${dir}/job` },
    { kind: "privateDir", path: `${dir}/missing/job` },
    { kind: "privateFile", path: `${dir}/missing/output` },
  ];
  for (const batch of [denoFileBatch, shim]) {
    await inTempDir(async (dir) => {
      // A umask that would open the modes up must not matter: the modes are the caller's.
      const umask = Deno.umask(0);
      try {
        assert.deepEqual(await outcomes(batch, script(dir)), [
          "ok",
          "ok",
          "EEXIST",
          "EEXIST",
          "ENOENT",
          "ENOENT",
        ]);
      } finally {
        Deno.umask(umask);
      }
      assert.equal(Deno.statSync(`${dir}/job`).mode! & 0o777, 0o700);
      assert.equal(Deno.statSync(`${dir}/job/output`).mode! & 0o777, 0o600);
      assert.equal(Deno.statSync(`${dir}/job/output`).size, 0);
    });
  }
});

Deno.test("non-ASCII paths and text (astral, a lone surrogate) reach the shim as Deno writes them", async () => {
  // The batch is encoded in place (at most 3 UTF-8 bytes per UTF-16 unit): each case's bytes must
  // land where the next operation's kind byte is read.
  const text = "é😀\ud800x".repeat(700) + "\n";
  const script = (dir: string): FileOp[] => [
    { kind: "mkdir", path: `${dir}/ü😀` },
    { kind: "privateFile", path: `${dir}/ü😀/f` },
    { kind: "write", path: `${dir}/ü😀/f`, data: text },
    { kind: "write", path: `${dir}/ü😀/f`, data: "" },
    { kind: "write", path: `${dir}/ü😀/f`, data: "ß" },
    { kind: "read", path: `${dir}/ü😀/f` },
    { kind: "privateFile", path: `${dir}/ü😀/g` },
    { kind: "write", path: `${dir}/ü😀/g`, data: text },
    { kind: "read", path: `${dir}/ü😀/g` },
  ];
  const results: string[][] = [];
  for (const batch of [denoFileBatch, shim]) {
    await inTempDir(async (dir) => {
      results.push((await outcomes(batch, script(dir))).map((o) => o.replaceAll(dir, "DIR")));
    });
  }
  const [viaDeno, viaShim] = results;
  assert.deepEqual(viaShim!.slice(0, 6), ["ok", "ok", "ok", "ok", "ok", "text:ß"]);
  assert.equal(viaShim![8], `text:${"é😀\ufffdx".repeat(700)}\n`);
  assert.deepEqual(viaShim, viaDeno);
});
