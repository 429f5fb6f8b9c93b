/**
 * Fuzzing a live worker: random, truncated and hostile request bodies sent to every RPC over real
 * mutual TLS. No answer may be INTERNAL or UNKNOWN, the worker must live on and keep answering,
 * and nothing may leak: no job process or cgroup left once the jobs ended, no descriptors.
 *
 * Then memory creep: what TLS connections and fuzzed requests leave in the worker's RSS.
 *
 * FUZZ_REQUESTS sets how many (default 10,000; `make fuzz` sends 100,000); FUZZ_SEED replays a run.
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { RawGrpcClient } from "./helpers/raw_grpc.ts";
import { cgroupDirsNamed, jobProcesses } from "./helpers/host_procs.ts";
import { openFds, poolFull, settledRss } from "./helpers/rss.ts";
import { churnConnections } from "./helpers/tls_churn.ts";
import { recycled } from "./helpers/recycled.ts";
import { fuzzRequests } from "./helpers/fuzz.ts";

const REQUESTS = Number(Deno.env.get("FUZZ_REQUESTS") ?? 10_000);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? Date.now() % 1_000_000);
const CONCURRENCY = 32;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: `${REQUESTS} random, truncated and hostile requests to every RPC (seed ${SEED})`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const oversized = () => new Uint8Array(5 * 1024 * 1024).fill(0x0a);
    const target = await fuzzTarget();
    const { worker, client, raws, jobs } = target;
    try {
      await client.listJobs();
      await poolFull(worker.process.pid);
      const baselineFds = openFds(worker.process.pid);

      const { counts, bad } = await fuzzRequests(raws, jobs, {
        requests: REQUESTS,
        seed: SEED,
        concurrency: CONCURRENCY,
      });
      // A handful of oversized requests (beyond MAX_RECV_MSG_SIZE) too.
      for (let i = 0; i < 3; i++) {
        const answer = await raws[0]!.call("GetJob", oversized(), false);
        assert.equal(answer.code, status.RESOURCE_EXHAUSTED, answer.details);
      }
      console.log(`seed ${SEED}: ${JSON.stringify(Object.fromEntries(counts))}`);
      assert.deepEqual(bad, [], `bad answers (seed ${SEED})`);

      // The worker lives on and answers; every job it started ends and leaves nothing behind.
      assert.equal(worker.process.pid > 0 && (await client.listJobs()).jobs.length > 0, true);
      await client.stopJob(jobs.live, { force: true });
      const jobIds = (await client.listJobs()).jobs.map((job) => job.id ?? "");
      for (const id of jobIds) {
        for (let i = 0; (await client.getJob(id)).status < jobworker.JobStatus.COMPLETED; i++) {
          if (i > 600) assert.fail(`job ${id} did not end`);
          await delay(50);
        }
      }
      assert.deepEqual(jobIds.flatMap((id) => jobProcesses(id)), [], "job processes left");
      assert.deepEqual(cgroupDirsNamed(jobIds), [], "job cgroups left");
      for (const raw of raws) raw.close();
      await delay(1000);
      await poolFull(worker.process.pid);
      const fds = openFds(worker.process.pid);
      assert.ok(fds - baselineFds <= 8, `descriptors: ${baselineFds} before, ${fds} after`);
    } finally {
      await target.close();
    }
  },
});

const MiB = 1024 * 1024;

/**
 * RSS growth per closed connection allowed while clients are still connected (before any
 * recycle): Deno's native ~18 KiB, plus the fuzzed requests' share, plus glibc's slack. Measured
 * about 22 KiB; without session_release.ts a connection leaves far more.
 */
const MAX_KIB_PER_CONNECTION = 28;

/**
 * Deno 2.8.3 never frees a closed HTTP/2 session's native nghttp2 state (about 18 KiB, measured;
 * fixed upstream by denoland/deno#36043, released in 2.9.1, which the pin cannot take): 20,000
 * connections leave about 350 MiB that nothing in the process can free. The worker frees
 * everything else of a connection (worker/tls/session_release.ts) and recycles itself in place
 * once it has served JOB_WORKER_RECYCLE_AFTER_SESSIONS sessions and no client is connected
 * (worker/tls/session_recycle.ts); the tests below hold it to that.
 */
/**
 * A worker, a client, raw clients of both roles and two jobs (one running, one ended) to aim
 * requests at; `close` stops the worker and checks it exited cleanly.
 */
async function fuzzTarget() {
  const pki = await makePki();
  const worker = await WorkerProcess.start({ certDir: pki.dir });
  const client = clientFor(pki.dir, worker.address);
  const raws = [
    new RawGrpcClient(pki.dir, worker.address, "admin"),
    new RawGrpcClient(pki.dir, worker.address, "viewer"),
  ];
  const live = await client.createJob({ command: "sleep", args: ["3600"] });
  const done = await client.createJob({ command: "echo", args: ["hello"] });
  const jobs = { live: live.id, done: done.id };
  return {
    worker,
    pki,
    raws,
    client,
    jobs,
    async close() {
      for (const raw of raws) raw.close();
      client.close();
      const last = clientFor(pki.dir, worker.address);
      await last.stopJob(live.id, { force: true }).finally(() => last.close());
      const exit = await worker.stop();
      await pki.remove();
      assert.equal(exit.code, 0, "the worker did not stop cleanly");
    },
  };
}

/** A fuzz target warmed up: code, pools and arenas the first calls create are not creep. */
async function creepWorker() {
  const target = await fuzzTarget();
  await churnConnections(target.pki.dir, target.worker.address, 1000);
  await fuzzRequests(target.raws, target.jobs, { requests: 500, seed: 1 });
  return target;
}

Deno.test({
  name:
    `20,000 TLS connections and 20,000 fuzzed requests: under ${MAX_KIB_PER_CONNECTION} KiB each ` +
    "while a client is connected, RSS within 64 MiB of the start once the worker recycled",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await creepWorker();
    try {
      const pid = w.worker.process.pid;
      const start = await settledRss(pid);
      const CONNECTIONS = 20_000;
      assert.equal(
        await churnConnections(w.pki.dir, w.worker.address, CONNECTIONS),
        CONNECTIONS,
      );
      const { bad } = await fuzzRequests(w.raws, w.jobs, { requests: 20_000, seed: SEED });
      assert.deepEqual(bad, []);
      const connected = await settledRss(pid);
      // Deno's native session state goes only with the process image: once the last client has
      // left, the worker recycles itself in place (the same PID; the running job is kept).
      for (const raw of w.raws) raw.close();
      w.client.close();
      const wasRecycled = await recycled(w.worker);
      const after = await settledRss(pid);
      const mib = (bytes: number) => `${bytes < 0 ? "" : "+"}${(bytes / MiB).toFixed(1)} MiB`;
      const perConnectionKiB = (connected - start) / CONNECTIONS / 1024;
      console.log(
        `RSS ${(start / MiB).toFixed(0)} MiB at the start; ${mib(connected - start)} after ` +
          `20,000 connections and 20,000 fuzzed requests (${perConnectionKiB.toFixed(1)} KiB ` +
          `per connection); ${mib(after - start)} once the clients left ` +
          `(${wasRecycled ? "recycled" : "not recycled"})`,
      );
      // Before the recycle: only Deno's native state (~18 KiB) may stay of each closed connection;
      // everything else of it must be freed (session_release.ts). The recycle below would hide a
      // release that stopped working, so it is held to this here, while a client is connected.
      assert.ok(
        perConnectionKiB < MAX_KIB_PER_CONNECTION,
        `${perConnectionKiB.toFixed(1)} KiB per connection while connected ` +
          `(at most ${MAX_KIB_PER_CONNECTION}: is worker/tls/session_release.ts working?)`,
      );
      assert.ok(after - start < 64 * MiB, `RSS grew by ${mib(after - start)}`);
      assert.ok(wasRecycled, "the worker did not recycle");
      const client = clientFor(w.pki.dir, w.worker.address);
      try {
        const live = await client.getJob(w.jobs.live);
        assert.equal(
          live.status,
          jobworker.JobStatus.RUNNING,
          "the job was kept across the recycle",
        );
      } finally {
        client.close();
      }
    } finally {
      await w.close();
    }
  },
});

Deno.test({
  name: "20,000 fuzzed requests leave RSS within 64 MiB (and what 5,000 connections leave)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await creepWorker();
    try {
      const pid = w.worker.process.pid;
      const CONNECTIONS = 5000;
      const start = await settledRss(pid);
      assert.equal(
        await churnConnections(w.pki.dir, w.worker.address, CONNECTIONS),
        CONNECTIONS,
      );
      const afterConnections = await settledRss(pid);
      const { bad } = await fuzzRequests(w.raws, w.jobs, { requests: 20_000, seed: SEED });
      assert.deepEqual(bad, [], `bad answers (seed ${SEED})`);
      const afterFuzz = await settledRss(pid);
      const perConnection = (afterConnections - start) / CONNECTIONS / 1024;
      const fuzzMiB = (afterFuzz - afterConnections) / MiB;
      console.log(
        `RSS ${(start / MiB).toFixed(0)} MiB at the start; ${perConnection.toFixed(1)} KiB ` +
          `more per connection (${CONNECTIONS}); ${fuzzMiB.toFixed(1)} MiB more after 20,000 ` +
          "fuzzed requests",
      );
      // Per connection, only Deno's native nghttp2 state should be left (~18 KiB, see above):
      // printed here (over 5,000, glibc's arenas make RSS too coarse for a bound; the test above
      // bounds it over 20,000, and the test below checks the sessions themselves are collected).
      assert.ok(fuzzMiB < 64, `20,000 fuzzed requests left ${fuzzMiB.toFixed(1)} MiB`);
    } finally {
      await w.close();
    }
  },
});

Deno.test("closed HTTP/2 sessions are garbage-collected (Deno 2.8.3 kept every one)", async () => {
  const pki = await makePki();
  try {
    const COUNT = 300;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-prompt",
        "--cached-only",
        "--v8-flags=--expose-gc",
        new URL("./helpers/session_gc.ts", import.meta.url).pathname,
        pki.dir,
        String(COUNT),
        "release",
      ],
      stderr: "inherit",
    }).output();
    assert.equal(out.code, 0);
    const { served, collected } = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(served, COUNT);
    // A session still open at the end, or one the collector skipped, may stay; not the rest.
    assert.ok(collected >= COUNT - 10, `${collected} of ${COUNT} closed sessions collected`);
  } finally {
    await pki.remove();
  }
});
