/**
 * End-to-end tests of output streaming (GetJobsStream) against a real worker: real jobs in
 * namespaces and cgroups, real mutual TLS 1.3, the product's own JobClient.
 *
 * Covered: late clients, many concurrent clients, paused clients (no stall of the job or of other
 * clients, bounded worker memory), resuming from an offset, noFollow on a running job, large
 * byte-exact output, stdout/stderr interleaving, 200 jobs at once, and the regression test for the
 * Deno 2.9 nghttp2 abort when a client closes its connection after a large stream.
 *
 * Run: `deno test -A tests/streaming_test.ts` (needs root). One worker serves the whole file.
 *
 * @module
 */
import { concatBytes } from "./helpers/process.ts";
import { unless, withSkip } from "./helpers/skip.ts";
import { UNDER_UML } from "./helpers/machine.ts";
import assert from "node:assert/strict";
import { createHash, type Hash } from "node:crypto";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";

const MiB = 1024 * 1024;
/** The lock Deno takes on the repository's node_modules directory (nodeModulesDir "auto"). */
const NODE_MODULES_LOCK = new URL("../node_modules/.deno/.deno.lock", import.meta.url).pathname;
const { RUNNING, COMPLETED } = jobworker.JobStatus;

// ---------------------------------------------------------------------------------------------
// Fixture: one worker (and one temp dir of input files) for the whole file.

const pki = await makePki();
const dataDir = await Deno.makeTempDir({ prefix: "jobworker-test-streaming-" });
let worker: WorkerProcess | undefined;
let instanceCgroups: string[];
try {
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    // One client certificate follows 200 jobs at once below: above the default per-client cap.
    env: { JOB_WORKER_MAX_JOBS: "1000", JOB_WORKER_MAX_STREAMS_PER_CLIENT: "512" },
  });
  instanceCgroups = await instanceCgroupDirs(worker.stateDir);
} catch (e) {
  await worker?.stop();
  await pki.remove();
  await Deno.remove(dataDir, { recursive: true });
  throw e;
}
let workerExited = false;
worker.exited.then(() => workerExited = true);
const client = clientFor(pki.dir, worker.address);
let tornDown = false;

/**
 * The cgroup directories of this worker's instance (`jobworker-<first 4 bytes of sha256 of the
 * state dir's real path>` under the worker's own cgroup in every hierarchy). The worker leaves them
 * behind, empty, when it stops; the teardown removes them.
 */
async function instanceCgroupDirs(stateDir: string): Promise<string[]> {
  const real = new TextEncoder().encode(await Deno.realPath(stateDir));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", real));
  const name = `jobworker-${
    Array.from(digest.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
  const dirs: string[] = [];
  for (const line of Deno.readTextFileSync("/proc/self/cgroup").trim().split("\n")) {
    const [, controllers = "", path = "/"] = line.split(":");
    const base = path === "/" ? "" : path;
    const roots = controllers === "" ? ["unified", ""] : controllers.split(",");
    for (const root of roots) dirs.push(`/sys/fs/cgroup/${root}${base}/${name}`);
  }
  return [...new Set(dirs.map((d) => d.replace(/\/+/g, "/")))];
}

function removeInstanceCgroups(): void {
  for (const dir of instanceCgroups) {
    try {
      Deno.removeSync(dir); // rmdir: only when empty, as it must be once the worker stopped
    } catch { /* absent, or not ours to remove */ }
  }
}

// Safety net when the teardown test (the last one) does not run (e.g. --filter): stop the worker,
// which stops its jobs and removes their cgroups on SIGTERM.
globalThis.addEventListener("unload", () => {
  if (tornDown) return;
  try {
    worker.process.kill("SIGTERM");
  } catch { /* already gone */ }
  for (const dir of [pki.dir, dataDir]) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* already gone */ }
  }
});

// ---------------------------------------------------------------------------------------------
// Helpers

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const endMs = (job: jobworker.Job) =>
  job.endTime
    ? (job.endTime.seconds ?? 0) * 1000 + Math.floor((job.endTime.nanos ?? 0) / 1e6)
    : Infinity;

function sh(script: string): jobworker.ICreateJobReq {
  return { command: "/bin/sh", args: ["-c", script] };
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Resident memory of a process, in bytes. */
function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(match, "no VmRSS line");
  return Number(match[1]) * 1024;
}

/** Writes `size` random bytes to a new file in the data dir; returns its path and sha256. */
async function randomFile(name: string, size: number): Promise<{ path: string; sha: string }> {
  const path = `${dataDir}/${name}`;
  const hash = createHash("sha256");
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = new Uint8Array(MiB);
  for (let done = 0; done < size; done += block.length) {
    const part = block.subarray(0, Math.min(block.length, size - done));
    for (let i = 0; i < part.length; i += 65536) {
      crypto.getRandomValues(part.subarray(i, i + 65536));
    }
    hash.update(part);
    let written = 0;
    while (written < part.length) written += await file.write(part.subarray(written));
  }
  return { path, sha: hash.digest("hex") };
}

let random100: Promise<{ path: string; sha: string }> | undefined;
/** One 100 MiB random file, shared by the tests that need one. */
function random100MiB(): Promise<{ path: string; sha: string }> {
  return random100 ??= randomFile("random-100M", 100 * MiB);
}

/**
 * Checks and digests a stream of chunks without keeping the bytes: offsets must follow each other
 * exactly (no gap, no duplicate), every chunk must be tagged STDOUT or STDERR and non-empty.
 */
class StreamDigest {
  readonly #all: Hash = createHash("sha256");
  readonly #out: Hash = createHash("sha256");
  readonly #err: Hash = createHash("sha256");
  /** Runs of bytes of one stream: [start, end, stream], adjacent chunks of one stream merged. */
  readonly segments: [number, number, number][] = [];
  next: number;
  chunks = 0;
  stdoutBytes = 0;
  stderrBytes = 0;
  firstChunkAt: number | undefined;

  constructor(readonly start = 0) {
    this.next = start;
  }

  get bytes(): number {
    return this.next - this.start;
  }

  add(chunk: jobworker.DataChunk): void {
    this.firstChunkAt ??= Date.now();
    assert.equal(chunk.offset, this.next, `chunk ${this.chunks}: offset (gap or duplicate)`);
    assert.ok(chunk.stream === 1 || chunk.stream === 2, `chunk ${this.chunks}: stream tag`);
    assert.ok(chunk.payload.length > 0, `chunk ${this.chunks}: empty payload`);
    this.#all.update(chunk.payload);
    if (chunk.stream === 1) {
      this.#out.update(chunk.payload);
      this.stdoutBytes += chunk.payload.length;
    } else {
      this.#err.update(chunk.payload);
      this.stderrBytes += chunk.payload.length;
    }
    const end = this.next + chunk.payload.length;
    const last = this.segments.at(-1);
    if (last && last[2] === chunk.stream) last[1] = end;
    else this.segments.push([this.next, end, chunk.stream]);
    this.next = end;
    this.chunks++;
  }

  /** sha256 of everything, of stdout alone and of stderr alone (call once). */
  finish(): { all: string; stdout: string; stderr: string } {
    return {
      all: this.#all.digest("hex"),
      stdout: this.#out.digest("hex"),
      stderr: this.#err.digest("hex"),
    };
  }
}

/** Streams a job's output through `c` into a StreamDigest. */
async function digestStream(
  c: JobClient,
  id: string,
  options: { offset?: number; noFollow?: boolean } = {},
): Promise<StreamDigest> {
  const digest = new StreamDigest(options.offset ?? 0);
  for await (const chunk of c.stream(id, options)) digest.add(chunk);
  return digest;
}

/** Collects every chunk (payload included) of a stream; checks contiguity from `offset`. */
async function chunksOf(
  c: JobClient,
  id: string,
  options: { offset?: number; noFollow?: boolean } = {},
): Promise<{ chunks: jobworker.DataChunk[]; bytes: Uint8Array; stdout: string; stderr: string }> {
  const chunks: jobworker.DataChunk[] = [];
  const check = new StreamDigest(options.offset ?? 0);
  for await (const chunk of c.stream(id, options)) {
    check.add(chunk);
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(check.bytes);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk.payload, at);
    at += chunk.payload.length;
  }
  const of = (stream: number) =>
    text(concatBytes(chunks.filter((c) => c.stream === stream).map((c) => c.payload)));
  return { chunks, bytes, stdout: of(1), stderr: of(2) };
}

const mibps = (bytes: number, ms: number) => (bytes / MiB / (ms / 1000)).toFixed(1);

/** Numbers worth reporting, printed at the end. */
const report: string[] = [];

/** A test sharing this file's worker and clients, which outlive it (so no sanitizers). */
function test(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

// ---------------------------------------------------------------------------------------------
// Tests

test("a late client gets the whole output from byte 0, in order, with the right stream tags", async () => {
  const created = await client.createJob(sh("echo out1; echo err1 >&2; echo out2"));
  const job = await waitJobEnded(client, created.id);
  assert.equal(job.status, COMPLETED);
  const { chunks, bytes, stdout, stderr } = await chunksOf(client, job.id);
  assert.equal(stdout, "out1\nout2\n");
  assert.equal(stderr, "err1\n");
  assert.equal(bytes.length, 15);
  assert.equal(job.outputBytes, 15);
  assert.equal(chunks[0]?.offset, 0);
  // Each chunk holds bytes of one stream only: its tag matches its text.
  for (const chunk of chunks) {
    const body = text(chunk.payload);
    if (chunk.stream === 2) assert.equal(body, "err1\n");
    else assert.doesNotMatch(body, /err/);
  }
  // The same through the shared helper, and with noFollow.
  const viaHelper = await collectOutput(client, job.id, { noFollow: true });
  assert.equal(viaHelper.stdout, "out1\nout2\n");
  assert.equal(viaHelper.stderr, "err1\n");
  assert.equal(sha256(viaHelper.bytes), sha256(bytes));
});

test("streams use grpc-js's internals as checked: chunks go out pre-framed, no error logged", async () => {
  const created = await client.createJob(sh("head -c 300000 /dev/zero"));
  await waitJobEnded(client, created.id);
  const { bytes } = await chunksOf(client, created.id);
  assert.equal(bytes.length, 300000);
  const missing = worker.logs.filter((line) => line.includes("not where expected"));
  assert.deepEqual(missing, []);
});

test("paused clients of a 100 MiB job do not make the worker buffer it (RSS bounded)", async () => {
  const size = 100 * MiB;
  const PER_PAUSED_CLIENT = 16 * MiB;
  const data = await random100MiB();
  const pid = worker.process.pid;
  // Six paused clients: a worker that buffered what they do not read would hold 6 x 100 MiB.
  // Storing the output alone costs the worker about its size in RSS (allocator). Each paused
  // stream may hold what the worker writes before it waits (512 KiB unsent, README "Output"),
  // HTTP/2 and TLS buffers and socket windows: 16 MiB each, with slack. So the bound is
  // 100 + 6 x 16 = 196 MiB, below the 200 MiB that even one fully buffered client would take.
  // (This test runs early, while the worker's heap is still small, so growth is visible.)
  const pausedClients = Array.from({ length: 6 }, () => clientFor(pki.dir, worker.address));
  const before = rssOf(pid);
  let peak = before;
  const sampler = setInterval(() => peak = Math.max(peak, rssOf(pid)), 50);
  try {
    const job = await client.createJob(sh(`sleep 1; cat ${data.path}`));
    const iterators = pausedClients.map((c) => c.stream(job.id)[Symbol.asyncIterator]());
    const firsts = await Promise.all(iterators.map((it) => it.next()));
    const digests = firsts.map((first) => {
      assert.equal(first.done, false);
      const d = new StreamDigest();
      d.add(first.value as jobworker.DataChunk);
      return d;
    });
    const ended = await waitJobEnded(client, job.id);
    assert.equal(ended.status, COMPLETED);
    assert.equal(ended.outputBytes, size);
    // Paused for a few seconds after the whole output exists: every byte is available to send.
    await delay(3000);
    peak = Math.max(peak, rssOf(pid));
    const pausedGrowth = peak - before;
    report.push(
      `worker RSS ${(before / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB ` +
        `with 6 paused clients of a 100 MiB job (growth ${(pausedGrowth / MiB).toFixed(1)} MiB)`,
    );
    assert.ok(
      pausedGrowth < size + 6 * PER_PAUSED_CLIENT,
      `worker RSS grew by ${(pausedGrowth / MiB).toFixed(0)} MiB while clients were paused`,
    );
    // Then they resume and get everything.
    await Promise.all(iterators.map(async (it, i) => {
      const d = digests[i]!;
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        d.add(next.value);
      }
    }));
    for (const d of digests) {
      assert.equal(d.bytes, size);
      assert.equal(d.finish().all, data.sha);
    }
  } finally {
    clearInterval(sampler);
    for (const c of pausedClients) c.close();
  }
});

test("a paused client stalls neither the job nor other clients, then gets every byte", async () => {
  const size = 100 * MiB;
  const data = await random100MiB();
  const paused = clientFor(pki.dir, worker.address);
  const other = clientFor(pki.dir, worker.address);
  try {
    // The sleep lets the paused client attach while the job is running and has written nothing.
    const job = await client.createJob(sh(`sleep 1; cat ${data.path}`));
    assert.equal(job.status, RUNNING);
    const digest = new StreamDigest();
    const iterator = paused.stream(job.id)[Symbol.asyncIterator]();
    const first = await iterator.next();
    assert.equal(first.done, false);
    digest.add(first.value as jobworker.DataChunk);
    // The paused client pulls nothing more from here on; another client streams concurrently.
    const start = performance.now();
    const otherDigest = await digestStream(other, job.id);
    const otherMs = performance.now() - start;
    const ended = await waitJobEnded(client, job.id);
    assert.equal(ended.status, COMPLETED, "the job completed while a client was paused");
    assert.equal(ended.outputBytes, size);
    assert.equal(otherDigest.bytes, size);
    assert.equal(otherDigest.finish().all, data.sha);
    report.push(
      `one stream of a live 100 MiB job, another client paused: ${mibps(size, otherMs)} MiB/s`,
    );
    // Still paused, a while longer.
    await delay(3000);
    assert.equal(digest.chunks, 1, "the paused client did not pull");
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      digest.add(next.value);
    }
    assert.equal(digest.bytes, size);
    assert.equal(digest.finish().all, data.sha);
  } finally {
    paused.close();
    other.close();
  }
});

test("20 concurrent clients of a running job get identical bytes, equal to a final noFollow read", async () => {
  const job = await client.createJob({
    command: "/bin/bash",
    args: [
      "-c",
      "for i in $(seq 1 200); do echo line $i; " +
      "if [ $((i % 10)) = 0 ]; then echo err $i >&2; fi; sleep 0.01; done",
    ],
  });
  assert.equal(job.status, RUNNING);
  const clients = Array.from({ length: 20 }, () => clientFor(pki.dir, worker.address));
  try {
    const digests = await Promise.all(clients.map((c) => digestStream(c, job.id)));
    const ended = await waitJobEnded(client, job.id);
    assert.equal(ended.status, COMPLETED);
    const final = await digestStream(client, job.id, { noFollow: true });
    const expected = {
      sums: final.finish(),
      segments: final.segments,
      bytes: final.bytes,
    };
    assert.equal(expected.bytes, ended.outputBytes);
    // Independent expectation of the per-stream content.
    let out = "";
    let err = "";
    for (let i = 1; i <= 200; i++) {
      out += `line ${i}\n`;
      if (i % 10 === 0) err += `err ${i}\n`;
    }
    const enc = new TextEncoder();
    assert.equal(expected.sums.stdout, sha256(enc.encode(out)));
    assert.equal(expected.sums.stderr, sha256(enc.encode(err)));
    assert.equal(expected.bytes, out.length + err.length);
    assert.ok(expected.segments.length > 2, "stdout and stderr interleave");
    let live = 0;
    for (const [i, d] of digests.entries()) {
      assert.deepEqual(
        { sums: d.finish(), segments: d.segments, bytes: d.bytes },
        expected,
        `client ${i}`,
      );
      if ((d.firstChunkAt ?? Infinity) < endMs(ended)) live++;
    }
    // Followers got output while the job was still writing, not only at its end.
    assert.ok(live >= 1, `no client got output before the job ended`);
  } finally {
    for (const c of clients) c.close();
  }
});

test("streaming from an offset gets exactly the bytes from there; past the end waits or ends", async (t) => {
  const created = await client.createJob({ command: "seq", args: ["1", "10000"] });
  const job = await waitJobEnded(client, created.id);
  assert.equal(job.status, COMPLETED);
  let expected = "";
  for (let i = 1; i <= 10000; i++) expected += `${i}\n`;
  assert.equal(job.outputBytes, expected.length);

  await t.step("offset N gets bytes[N:], the first chunk at offset N", async () => {
    for (const n of [1, 12345, expected.length - 1]) {
      const { chunks, bytes } = await chunksOf(client, job.id, { offset: n, noFollow: true });
      assert.equal(chunks[0]?.offset, n);
      assert.equal(text(bytes), expected.slice(n));
      const followed = await chunksOf(client, job.id, { offset: n });
      assert.equal(text(followed.bytes), expected.slice(n));
    }
  });

  await t.step("an offset at or past the end of an ended job streams nothing", async () => {
    for (const n of [expected.length, expected.length + 1, expected.length + 1_000_000]) {
      const noFollow = await chunksOf(client, job.id, { offset: n, noFollow: true });
      assert.equal(noFollow.chunks.length, 0, `noFollow from ${n}`);
      const follow = await chunksOf(client, job.id, { offset: n });
      assert.equal(follow.chunks.length, 0, `follow from ${n}`);
    }
  });

  await t.step(
    "an offset past the end of a running job waits for output to reach it",
    async () => {
      const running = await client.createJob(sh("sleep 1; printf abcdef"));
      assert.equal(running.status, RUNNING);
      assert.equal(running.outputBytes, 0);
      // noFollow past the end: nothing, at once, while the job runs.
      const none = await chunksOf(client, running.id, { offset: 3, noFollow: true });
      assert.equal(none.chunks.length, 0);
      const { chunks, bytes } = await chunksOf(client, running.id, { offset: 3 });
      assert.equal(text(bytes), "def");
      assert.equal(chunks[0]?.offset, 3);
      assert.equal(chunks[0]?.stream, 1);
      const ended = await waitJobEnded(client, running.id);
      assert.equal(ended.outputBytes, 6);
    },
  );
});

test("noFollow on a running job returns what was written so far and ends while it runs", async () => {
  const job = await client.createJob(sh("while :; do echo tick; sleep 0.05; done"));
  try {
    // Let it write a few lines.
    for (let i = 0; i < 200 && (await client.getJob(job.id)).outputBytes < 20; i++) {
      await delay(50);
    }
    const { bytes, stdout, stderr } = await chunksOf(client, job.id, { noFollow: true });
    const after = await client.getJob(job.id);
    assert.equal(after.status, RUNNING, "the stream ended while the job still runs");
    assert.ok(bytes.length >= 20, `got ${bytes.length} bytes`);
    assert.ok(bytes.length <= after.outputBytes);
    assert.equal(stderr, "");
    // Only whole writes of "tick\n" can be there, from the beginning.
    assert.equal(stdout, "tick\n".repeat(bytes.length / 5));
  } finally {
    await client.stopJob(job.id, { force: true });
  }
});

test("50 MiB of output arrives byte-exact", async () => {
  const size = 50 * MiB;
  const data = await randomFile("exact-50M", size);
  const created = await client.createJob({ command: "cat", args: [data.path] });
  // Follow while it runs.
  const live = await digestStream(client, created.id);
  const job = await waitJobEnded(client, created.id);
  assert.equal(job.status, COMPLETED);
  assert.equal(job.outputBytes, size);
  assert.equal(live.bytes, size);
  const liveSums = live.finish();
  assert.equal(liveSums.all, data.sha);
  assert.equal(liveSums.stdout, data.sha);
  assert.equal(live.stderrBytes, 0);
  // Again once it has ended: a pure read of the log, timed.
  const start = performance.now();
  const again = await digestStream(client, job.id, { noFollow: true });
  const ms = performance.now() - start;
  assert.equal(again.bytes, size);
  assert.equal(again.finish().all, data.sha);
  report.push(`one stream of an ended 50 MiB job: ${mibps(size, ms)} MiB/s`);
});

test("stdout and stderr written alternately (5 MiB each) keep each stream's content exact", async () => {
  const size = 5 * MiB;
  const out = await randomFile("alt-out", size);
  const err = await randomFile("alt-err", size);
  const blocks = size / 65536;
  const job = await client.createJob(sh(
    `i=0; while [ $i -lt ${blocks} ]; do ` +
      `dd if=${out.path} bs=65536 skip=$i count=1 status=none; ` +
      `dd if=${err.path} bs=65536 skip=$i count=1 status=none >&2; ` +
      `i=$((i + 1)); done`,
  ));
  const live = await digestStream(client, job.id);
  const ended = await waitJobEnded(client, job.id);
  assert.equal(ended.status, COMPLETED);
  assert.equal(ended.outputBytes, 2 * size);
  assert.equal(live.bytes, 2 * size);
  assert.equal(live.stdoutBytes, size);
  assert.equal(live.stderrBytes, size);
  const sums = live.finish();
  assert.equal(sums.stdout, out.sha);
  assert.equal(sums.stderr, err.sha);
  // How often the streams alternate depends on how the worker's reads fall; some must.
  assert.ok(live.segments.length > 2, `only ${live.segments.length} stream switches`);
  const final = await digestStream(client, job.id, { noFollow: true });
  assert.deepEqual(final.segments, live.segments);
  const finalSums = final.finish();
  assert.equal(finalSums.stdout, out.sha);
  assert.equal(finalSums.stderr, err.sha);
  assert.equal(finalSums.all, sums.all);
});

test("30 jobs writing both streams at once each store exactly their own bytes (one shared read buffer)", async () => {
  // Every job's pipes are read into one buffer (worker/runtime/output_pipe.ts): a read that is
  // consumed late, or handed to the wrong job, shows up as another window of the file here.
  const jobs = 30;
  const blocks = 32; // 2 MiB per stream, in 64 KiB writes
  const source = await randomFile("shared-buffer", (2 * jobs + blocks) * 65536);
  const bytes = await Deno.readFile(source.path);
  const windowSha = (skip: number) => sha256(bytes.subarray(skip * 65536, (skip + blocks) * 65536));
  const gate = `${dataDir}/shared-buffer-go`;
  const ids: string[] = [];
  try {
    for (let i = 0; i < jobs; i++) {
      const dd = (skip: number) =>
        `dd if=${source.path} bs=65536 skip=${skip} count=${blocks} status=none`;
      const job = await client.createJob(sh(
        `while [ ! -e ${gate} ]; do sleep 0.05; done; ${dd(i)} & ${dd(jobs + i)} >&2; wait`,
      ));
      ids.push(job.id);
    }
    await Deno.writeTextFile(gate, "");
    for (const [i, id] of ids.entries()) {
      const ended = await waitJobEnded(client, id);
      assert.equal(ended.status, COMPLETED, `job ${i}: ${ended.reason}`);
      const read = await digestStream(client, id, { noFollow: true });
      assert.equal(read.stdoutBytes, blocks * 65536, `job ${i} stdout size`);
      assert.equal(read.stderrBytes, blocks * 65536, `job ${i} stderr size`);
      const sums = read.finish();
      assert.equal(sums.stdout, windowSha(i), `job ${i}: stdout is not what it wrote`);
      assert.equal(sums.stderr, windowSha(jobs + i), `job ${i}: stderr is not what it wrote`);
    }
  } finally {
    await Deno.remove(gate).catch(() => {});
    await Promise.all(ids.map((id) => client.deleteJob(id).catch(() => {})));
  }
});

Deno.test(withSkip({
  name: "nothing but the job's own output reaches its streams while Deno waits for a lock (init)",
  // Under `deno run`, init is Deno itself; it waits for the node_modules lock when another Deno
  // process holds it (many jobs starting at once, a `deno install`...). Hold it here for ~2.5 s.
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const poll = `${NODE_MODULES_LOCK}.poll`;
    const holder = new Deno.Command("flock", {
      args: [
        NODE_MODULES_LOCK,
        "sh",
        "-c",
        `i=0; while [ $i -lt 50 ]; do touch ${poll}; sleep 0.05; i=$((i + 1)); done`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 100; i++) {
        const probe = await new Deno.Command("flock", {
          args: ["-n", NODE_MODULES_LOCK, "true"],
        }).output();
        if (!probe.success) break;
        await delay(10);
      }
      const created = await client.createJob({ command: "echo", args: ["hi"] });
      const job = await waitJobEnded(client, created.id);
      const { stdout, stderr } = await chunksOf(client, job.id);
      assert.equal(stderr, "", "the job wrote nothing to stderr");
      assert.equal(stdout, "hi\n");
      assert.equal(job.outputBytes, 3);
    } finally {
      await holder.status;
    }
  },
}, unless(existsSync(NODE_MODULES_LOCK), `no ${NODE_MODULES_LOCK} (make deps creates it)`)));

// Under User-mode Linux (system calls ~70x slower, one CPU) the load tests run smaller.
const MANY_JOBS = UNDER_UML ? 30 : 200;
const BIG_MIB = UNDER_UML ? 32 : 256;
const ROUNDS = UNDER_UML ? 4 : 10;

test(`${MANY_JOBS} jobs run at once, all producing output, none stalled`, async () => {
  const count = MANY_JOBS;
  const gate = `${dataDir}/go`;
  // Each job waits for the gate file, so all are running before any starts writing, however
  // slow the creation.
  const script = `while [ ! -e ${gate} ]; do sleep 0.5; done; ` +
    `for i in $(seq 1 20); do echo $i; sleep 0.5; done`;
  const ids: string[] = [];
  const start = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: UNDER_UML ? 5 : 20 }, async () => {
    while (next < count) {
      next++;
      const job = await client.createJob(sh(script));
      assert.equal(job.status, RUNNING);
      ids.push(job.id);
    }
  }));
  const createMs = performance.now() - start;
  report.push(`created ${count} jobs (20 in flight) in ${(createMs / 1000).toFixed(1)} s`);
  const followers = Array.from({ length: 10 }, () => clientFor(pki.dir, worker.address));
  try {
    assert.equal(ids.length, count);
    const list = await client.listJobs();
    assert.ok(
      (list.countByStatus["RUNNING"] ?? 0) >= count,
      `RUNNING: ${list.countByStatus["RUNNING"]}`,
    );
    // Follow every job's output (20 streams per connection), then open the gate.
    const streams = ids.map(async (id, i) => {
      let firstChunkAt = Infinity;
      const parts: Uint8Array[] = [];
      const check = new StreamDigest();
      for await (const chunk of followers[i % followers.length]!.stream(id)) {
        firstChunkAt = Math.min(firstChunkAt, Date.now());
        check.add(chunk);
        parts.push(chunk.payload);
      }
      return { firstChunkAt, chunks: check.chunks, output: check.segments, parts };
    });
    await Deno.writeTextFile(gate, "");
    await delay(3000);
    const midway = await client.listJobs();
    assert.ok(
      (midway.countByStatus["RUNNING"] ?? 0) >= count,
      `RUNNING after the gate: ${midway.countByStatus["RUNNING"]}`,
    );
    const results = await Promise.all(streams);
    let expected = "";
    for (let i = 1; i <= 20; i++) expected += `${i}\n`;
    for (const [i, id] of ids.entries()) {
      const job = await waitJobEnded(client, id);
      const r = results[i]!;
      const output = text(concatBytes(r.parts));
      assert.equal(
        job.status,
        COMPLETED,
        `job ${id}: ${job.reason}; output ${JSON.stringify(output)}`,
      );
      assert.deepEqual(
        r.output,
        [[0, expected.length, 1]],
        `job ${id}: ${JSON.stringify(output)}`,
      );
      assert.equal(output, expected, `job ${id}`);
      assert.equal(job.outputBytes, expected.length);
      // Output came while the job ran, not in one burst at its end.
      assert.ok(r.firstChunkAt < endMs(job), `job ${id} output only at its end`);
      assert.ok(r.chunks >= 2, `job ${id}: ${r.chunks} chunk(s)`);
    }
  } finally {
    for (const c of followers) c.close();
    await Deno.remove(gate).catch(() => {});
  }
});

test(`closing the connection right after streaming ${BIG_MIB} MiB never brings the worker down (x${ROUNDS})`, async () => {
  const size = BIG_MIB * MiB;
  const created = await client.createJob({
    command: "head",
    args: ["-c", String(size), "/dev/zero"],
  });
  const job = await waitJobEnded(client, created.id);
  assert.equal(job.status, COMPLETED);
  assert.equal(job.outputBytes, size);
  const rates: string[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const c = clientFor(pki.dir, worker.address);
    let bytes = 0;
    const start = performance.now();
    try {
      // Alternate follow (the job has ended, so it ends too) and noFollow.
      for await (const chunk of c.stream(job.id, { noFollow: round % 2 === 0 })) {
        bytes += chunk.payload.length;
      }
    } finally {
      c.close();
    }
    rates.push(mibps(bytes, performance.now() - start));
    assert.equal(bytes, size, `round ${round}`);
    // Give the server time to process the GOAWAY and the socket close.
    await delay(300);
    assert.equal(workerExited, false, `the worker died after round ${round}`);
    const again = await client.getJob(job.id);
    assert.equal(again.id, job.id);
  }
  report.push(`${BIG_MIB} MiB per round, MiB/s: ${rates.join(", ")}`);
});

test("teardown: the worker shuts down cleanly", async () => {
  const alive = !workerExited;
  client.close();
  tornDown = true;
  const status = await worker.stop();
  removeInstanceCgroups();
  await pki.remove().catch(() => {});
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  for (const line of report) console.log(`  ${line}`);
  assert.ok(alive, "the worker had exited before teardown");
  assert.equal(status.code, 0, worker.logs.slice(-20).join("\n"));
});
