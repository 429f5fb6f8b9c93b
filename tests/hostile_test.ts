/**
 * The worker under hostile clients: readers that stop reading (with the largest HTTP/2 windows or
 * through gRPC), malformed and truncated requests, huge ids echoed back.
 *
 * Run: `deno test -A tests/hostile_test.ts` (needs root). One worker serves the whole file.
 *
 * @module
 */
import { loadTest as test, NOT_YET } from "./helpers/skip.ts";
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { type StalledReader, startStalledReader } from "./helpers/stalled_reader.ts";
import { openFds, rssBytes } from "./helpers/rss.ts";
import net from "node:net";
import { RawGrpcClient } from "./helpers/raw_grpc.ts";
import { status } from "@grpc/grpc-js";

const MiB = 1024 * 1024;
const { JobStatus } = jobworker;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;

async function waitEnded(c: JobClient, id: string): Promise<jobworker.Job> {
  for (;;) {
    const job = await c.getJob(id);
    if (job.status >= JobStatus.COMPLETED) return job;
    await delay(50);
  }
}

/** Resident memory once it has settled (two readings 1 s apart within 8 MiB). */
async function settledRss(pid: number): Promise<number> {
  let last = rssBytes(pid);
  for (let i = 0; i < 10; i++) {
    await delay(1000);
    const now = rssBytes(pid);
    if (Math.abs(now - last) < 8 * MiB) return now;
    last = now;
  }
  return last;
}

test("start a worker", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: {
      JOB_WORKER_MAX_CONNECTIONS_PER_PEER: "300",
      JOB_WORKER_MAX_STREAMS_PER_CLIENT: "60",
    },
  });
  client = clientFor(pki.dir, worker.address);
});

test("truncated and undecodable requests are INVALID_ARGUMENT naming the problem; none runs", async () => {
  const raw = new RawGrpcClient(pki.dir, worker.address);
  try {
    const full = jobworker.CreateJobReq.encode({ command: "true" }).finish();
    const before = (await client.listJobs()).jobs.length;
    for (let n = 1; n < full.length; n++) {
      const answer = await raw.call("CreateJob", full.subarray(0, n), false);
      assert.equal(answer.code, status.INVALID_ARGUMENT, `${n} bytes: ${answer.details}`);
      assert.match(answer.details, /^malformed request: truncated: /);
    }
    assert.equal(
      (await client.listJobs()).jobs.length,
      before,
      "a truncated request started a job",
    );
    for (const [method, streaming] of [["GetJob", false], ["GetJobsStream", true]] as const) {
      const answer = await raw.call(method, new Uint8Array([0x0a, 0x05, 0x61]), streaming);
      assert.equal(answer.code, status.INVALID_ARGUMENT, `${method}: ${answer.details}`);
    }
    const bad = await raw.call("StopJob", new Uint8Array([0x0f, 0x01]), false);
    assert.equal(bad.code, status.INVALID_ARGUMENT, bad.details);
  } finally {
    raw.close();
  }
});

test("a 4 MiB id gets NOT_FOUND quoting a short prefix; the connection stays usable", async () => {
  const id = "x".repeat(4 * 1024 * 1024 - 64);
  await assert.rejects(client.getJob(id), (e: { code: number; details: string }) => {
    assert.equal(e.code, status.NOT_FOUND, e.details);
    assert.ok(e.details.length < 200, `${e.details.length} characters of details`);
    return true;
  });
  assert.ok(Array.isArray((await client.listJobs()).jobs));
  await assert.rejects(
    client.getJob('a"\n\u0000'),
    (e: { details: string }) => e.details.includes('"a\\"\\n\\u0000"'),
  );
});

test(
  "50 stalled readers (raw HTTP/2 with 2 GiB windows, gRPC) on 200 MiB jobs hold little memory",
  async () => {
    const pid = worker.process.pid;
    await client.listJobs();
    const idle = await settledRss(pid);
    const JOBS = 5;
    const READERS_PER_JOB = 10;
    const jobs: jobworker.Job[] = [];
    for (let i = 0; i < JOBS; i++) {
      jobs.push(
        await client.createJob({
          command: "/bin/sh",
          args: ["-c", "sleep 1; head -c 209715200 /dev/zero"],
        }),
      );
    }
    const readers: StalledReader[] = [];
    let peak = idle;
    const latencies: number[] = [];
    try {
      await Promise.all(
        jobs.flatMap((job) =>
          Array.from({ length: READERS_PER_JOB }, async (_, i) => {
            readers.push(
              await startStalledReader(i % 2 ? "grpc" : "http2", pki.dir, worker.address, job.id),
            );
          })
        ),
      );
      // Every job writes its 200 MiB (to disk) while 50 readers have taken a little and stopped.
      const other = clientFor(pki.dir, worker.address, "viewer");
      try {
        const started = performance.now();
        while (performance.now() - started < 15_000) {
          const t = performance.now();
          await other.listJobs();
          latencies.push(performance.now() - t);
          peak = Math.max(peak, rssBytes(pid));
          // Fail fast (without the bound the worker grows by GiBs within seconds).
          if (peak - idle > 256 * MiB) break;
          await delay(100);
        }
        for (const job of jobs) {
          assert.equal((await waitEnded(client, job.id)).outputBytes, 200 * MiB);
        }
      } finally {
        other.close();
      }
    } finally {
      await Promise.all(readers.map((r) => r.kill()));
    }
    assert.equal(readers.length, JOBS * READERS_PER_JOB);
    assert.ok(
      peak - idle < 256 * MiB,
      `worker RSS grew by ${((peak - idle) / MiB).toFixed(0)} MiB over idle ${
        (idle / MiB).toFixed(0)
      } MiB with stalled readers (bound: 256 MiB)`,
    );
    const after = await settledRss(pid);
    assert.ok(
      after - idle < 64 * MiB,
      `worker RSS ${((after - idle) / MiB).toFixed(0)} MiB over idle after the readers left`,
    );
    latencies.sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)]!;
    // The 100 ms; this shared 2-core machine gets 10x slack (bench reports the figure).
    assert.ok(p99 < 1000, `GetJobs p99 ${p99.toFixed(0)} ms beside the stalled readers`);
    console.log(
      `stalled readers: idle ${(idle / MiB).toFixed(0)} MiB, peak +${
        ((peak - idle) / MiB).toFixed(0)
      } MiB, after +${((after - idle) / MiB).toFixed(0)} MiB, GetJobs p99 ${p99.toFixed(0)} ms`,
    );
  },
  // Alone it passes (peak +115 MiB, +39 MiB after); beside tests/streaming_test.ts the peak holds
  // (+100..+124 MiB) but RSS after the readers left was +79..+84 MiB in 3 of 4 runs (bound 64).
  NOT_YET,
);

test(
  "5,000 connections that do nothing: capped, dropped after the handshake timeout, no lockout",
  async () => {
    const pid = worker.process.pid;
    await client.listJobs();
    // A client connected before the flood (from the same address: the per-address cap refuses new
    // ones while the flood holds its share).
    const other = clientFor(pki.dir, worker.address, "viewer");
    await other.listJobs();
    const baseline = openFds(pid);
    const FLOOD = 5000;
    const sockets: net.Socket[] = [];
    let peakFds = baseline;
    try {
      for (let i = 0; i < FLOOD; i++) {
        const socket = net.connect(worker.port, "127.0.0.1");
        socket.on("error", () => {});
        sockets.push(socket);
        if (i % 500 === 499) {
          await delay(50);
          peakFds = Math.max(peakFds, openFds(pid));
        }
      }
      const t = performance.now();
      await other.listJobs();
      const duringMs = performance.now() - t;
      // While this side keeps every socket open, the worker drops them (handshake timeout: 5 s).
      let fds = openFds(pid);
      for (let i = 0; i < 400 && fds - baseline > 20; i++) {
        await delay(100);
        fds = openFds(pid);
        peakFds = Math.max(peakFds, fds);
      }
      assert.ok(fds - baseline <= 20, `the worker still holds ${fds - baseline} idle connections`);
      assert.ok(
        peakFds - baseline < 400,
        `${peakFds - baseline} descriptors for the flood at peak`,
      );
      for (const socket of sockets) socket.destroy();
      const t2 = performance.now();
      const fresh = clientFor(pki.dir, worker.address, "viewer");
      await fresh.listJobs();
      const afterMs = performance.now() - t2;
      fresh.close();
      // The bound is 1 s; 5x slack for this shared machine.
      assert.ok(afterMs < 5000, `a new client waited ${afterMs.toFixed(0)} ms after the flood`);
      await delay(1000);
      const left = openFds(pid);
      assert.ok(left - baseline <= 8, `${left - baseline} descriptors left (baseline ${baseline})`);
      console.log(
        `flood of ${FLOOD}: fds ${baseline} -> peak ${peakFds} -> ${left}; a call took ` +
          `${duringMs.toFixed(0)} ms during it, a new client ${afterMs.toFixed(0)} ms after`,
      );
    } finally {
      other.close();
      for (const socket of sockets) socket.destroy();
    }
  },
  NOT_YET,
);

test("one client may hold at most JOB_WORKER_MAX_STREAMS_PER_CLIENT streams; others still can", async () => {
  const job = await client.createJob({ command: "sleep", args: ["30"] });
  const raw = new RawGrpcClient(pki.dir, worker.address);
  const request = jobworker.GetJobsStreamReq.encode({ id: job.id }).finish();
  const held = Array.from({ length: 60 }, () => raw.call("GetJobsStream", request, true, 60_000));
  try {
    await delay(1000);
    const extra = await raw.call("GetJobsStream", request, true, 5000);
    assert.equal(extra.code, status.RESOURCE_EXHAUSTED, extra.details);
    assert.match(extra.details, /JOB_WORKER_MAX_STREAMS_PER_CLIENT/);
    const viewer = new RawGrpcClient(pki.dir, worker.address, "viewer");
    try {
      const answer = await viewer.call("GetJobsStream", request, true, 1000);
      assert.equal(answer.code, status.DEADLINE_EXCEEDED, `a viewer's stream: ${answer.details}`);
    } finally {
      viewer.close();
    }
  } finally {
    await client.stopJob(job.id, { force: true });
    await Promise.all(held);
    raw.close();
  }
});

test("stop the worker", async () => {
  client?.close();
  const status = await worker?.stop();
  assert.equal(status?.code, 0);
  await pki?.remove();
});
