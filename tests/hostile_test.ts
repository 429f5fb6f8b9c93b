/**
 * The worker under hostile clients: readers that stop reading (with the largest HTTP/2 windows or
 * through gRPC), malformed and truncated requests, huge ids echoed back, floods of TLS clients
 * without a certificate.
 *
 * Run: `deno test -A tests/hostile_test.ts` (needs root). One worker serves the whole file.
 *
 * @module
 */
import { loadTest as test } from "./helpers/skip.ts";
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { type StalledReader, startStalledReader } from "./helpers/stalled_reader.ts";
import { openFds, peakRss, poolFull, rssBytes, settledRss } from "./helpers/rss.ts";
import net from "node:net";
import tls from "node:tls";
import { RawGrpcClient } from "./helpers/raw_grpc.ts";
import { status } from "@grpc/grpc-js";
import { raiseFdLimit } from "../worker/runtime/fd_limit.ts";
import { within } from "./helpers/within.ts";
import { waitJobEnded } from "./helpers/job_end.ts";

const MiB = 1024 * 1024;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;

/** Attempts a TLS handshake with the admin certificate from `localAddress`: "ok" or the error. */
function tlsHandshake(certDir: string, port: number, localAddress: string): Promise<string> {
  const read = (file: string) => Deno.readTextFileSync(`${certDir}/${file}`);
  return new Promise((resolve) => {
    const tcp = net.connect({ port, host: "127.0.0.1", localAddress });
    tcp.on("error", () => {});
    const socket = tls.connect({
      socket: tcp,
      servername: "localhost",
      ca: read("ca-cert.pem"),
      cert: read("admin-client-cert.pem"),
      key: read("admin-client-key.pem"),
      ALPNProtocols: ["h2"],
      minVersion: "TLSv1.3",
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error("handshake timed out")));
    socket.once("secureConnect", () => {
      socket.destroy();
      resolve("ok");
    });
    socket.once("error", (e) => resolve(e.message));
    socket.once("close", () => resolve("closed"));
  });
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
    const idle = await settledRss(pid, 8, 10);
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
          assert.equal((await waitJobEnded(client, job.id, 300_000)).outputBytes, 200 * MiB);
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
    const after = await settledRss(pid, 8, 10);
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
);

test(
  "25,000 connections that do nothing: capped, dropped, no lockout; fds return to baseline",
  async () => {
    const pid = worker.process.pid;
    await client.listJobs();
    // A client connected before the flood (from the same address: the per-address cap refuses new
    // ones while the flood holds its share).
    const other = clientFor(pki.dir, worker.address, "viewer");
    await other.listJobs();
    await poolFull(pid);
    const baseline = openFds(pid);
    // This process holds every socket the worker has not closed yet: raise its own fd limit too.
    raiseFdLimit();
    const FLOOD = 25_000;
    const BATCH = 5_000; // what this machine's 20,000 descriptors hold with room to spare
    const sockets = new Set<net.Socket>();
    let connected = 0;
    let failed = 0;
    let closedByWorker = 0;
    const held: number[] = []; // the worker's descriptors for the flood, once each batch settled
    try {
      for (let opened = 0; opened < FLOOD;) {
        for (let i = 0; i < BATCH; i++, opened++) {
          const socket = net.connect(worker.port, "127.0.0.1");
          let made = false;
          socket.on("connect", () => {
            made = true;
            connected++;
          });
          // An error after the connection was made (the worker closing it) is not a failure.
          socket.on("error", () => {
            if (!made) failed++;
          });
          socket.on("close", () => {
            if (sockets.delete(socket)) closedByWorker++;
          });
          sockets.add(socket);
          if (i % 500 === 499) await delay(50);
        }
        // Every connection of the batch was made (the kernel's listen queue took them all).
        for (let i = 0; i < 600 && connected + failed < opened; i++) await delay(100);
        assert.equal(failed, 0, `${failed} of ${opened} connections failed`);
        assert.equal(connected, opened);
        // Refused connections are closed as they are accepted; what is left is what the worker
        // keeps: the per-address cap (300), not the batch. (Looked at within 2 s, well before the
        // 5 s handshake timeout would drop them all anyway.)
        let fds = openFds(pid);
        for (let i = 0; i < 20 && fds - baseline > 320; i++) {
          await delay(100);
          fds = openFds(pid);
        }
        held.push(fds - baseline);
        assert.ok(fds - baseline <= 320, `the worker holds ${fds - baseline} of the flood`);
      }
      // The worker still serves a client it already had.
      await other.listJobs();
      // It drops the connections it kept once their handshake timeout (5 s) passes; this side
      // never closes one.
      let fds = openFds(pid);
      for (let i = 0; i < 400 && fds - baseline > 20; i++) {
        await delay(100);
        fds = openFds(pid);
      }
      assert.ok(fds - baseline <= 20, `the worker still holds ${fds - baseline} idle connections`);
      for (const socket of sockets) socket.destroy();
      // The issue asks that a new client be served within a second of the flood closing. The
      // lockout this guards against never served anyone again; the 10 s deadline is the 1 s of
      // an idle machine with room for the suite's load (the figure is printed).
      const t = performance.now();
      const fresh = clientFor(pki.dir, worker.address, "viewer");
      try {
        await within(fresh.listJobs(), 10_000, "a new client after the flood");
      } finally {
        fresh.close();
      }
      const afterMs = performance.now() - t;
      let left = openFds(pid);
      for (let i = 0; i < 100 && left > baseline; i++) {
        await delay(100);
        left = openFds(pid);
      }
      assert.ok(left <= baseline, `${left - baseline} descriptors left (baseline ${baseline})`);
      console.log(
        `flood of ${FLOOD} in batches of ${BATCH}: worker fds ${baseline} -> held ` +
          `${held.join(", ")} over baseline -> ${left}; ${closedByWorker} closed by the worker; ` +
          `a new client was served ${afterMs.toFixed(0)} ms after the flood closed`,
      );
    } finally {
      other.close();
      for (const socket of sockets) socket.destroy();
    }
  },
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

test("a flood of TLS clients without a certificate leaves the worker's memory flat", async () => {
  // Each failed handshake leaves TLS state in native memory that V8 frees only when it collects
  // small objects it sees no hurry to collect: 5,000 of them took the worker 125 MiB up without
  // the forced collection (worker/runtime/memory_trim.ts, endedBeforeHandshake).
  const CONNECTIONS = 5000;
  const AT_ONCE = 20;
  const pid = worker.process.pid;
  const idle = await settledRss(pid);
  const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
  /**
   * A client without a certificate: "refused" when the worker ran the handshake (in TLS 1.3 the
   * client's side completes first) and then closed the connection without a byte of HTTP/2.
   */
  const withoutCertificate = () =>
    new Promise<string>((resolve) => {
      const socket = tls.connect({
        port: worker.port,
        host: "127.0.0.1",
        servername: "localhost",
        ca: read("ca-cert.pem"),
        ALPNProtocols: ["h2"],
      });
      let outcome = "no handshake";
      socket.setTimeout(10_000, () => {
        outcome = "timed out";
        socket.destroy();
      });
      socket.once("secureConnect", () => {
        outcome = "refused";
        socket.write("x"); // the worker's refusal follows
      });
      socket.on("data", () => outcome = "served");
      socket.on("error", () => {});
      socket.once("close", () => resolve(outcome));
    });
  let started = 0;
  const lane = async () => {
    while (started < CONNECTIONS) {
      started++;
      assert.equal(await withoutCertificate(), "refused");
    }
  };
  const peak = await peakRss(pid, Promise.all(Array.from({ length: AT_ONCE }, lane)));
  const grew = (peak - idle) / MiB;
  assert.ok(
    grew < 64,
    `the worker's RSS grew ${grew.toFixed(0)} MiB over ${CONNECTIONS} refused clients`,
  );
  // And it still serves.
  await client.serverInfo();
});

test("JOB_WORKER_MAX_CONNECTIONS caps connections from all addresses together", async () => {
  const CAP = 20;
  // A long handshake timeout: only the cap can close the connections that do nothing.
  const capped = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_MAX_CONNECTIONS: String(CAP), JOB_WORKER_HANDSHAKE_TIMEOUT: "600" },
  });
  const sockets: net.Socket[] = [];
  try {
    // CAP idle connections, one from each of CAP loopback addresses (no per-address cap applies).
    const closed = new Set<net.Socket>();
    for (let i = 0; i < CAP; i++) {
      const socket = net.connect({
        port: capped.port,
        host: "127.0.0.1",
        localAddress: `127.0.1.${i + 1}`,
      });
      socket.on("error", () => {});
      socket.on("close", () => closed.add(socket));
      sockets.push(socket);
      await new Promise((resolve) => socket.once("connect", resolve));
    }
    // A real client from yet another address is refused: closed before its TLS handshake.
    const refused = await tlsHandshake(pki.dir, capped.port, "127.0.2.1");
    assert.notEqual(refused, "ok", "a connection past JOB_WORKER_MAX_CONNECTIONS was served");
    assert.equal(closed.size, 0, "the worker closed connections it should have kept");
    const said = () => capped.logs.some((l) => /too many connections in total/.test(l));
    for (let i = 0; i < 50 && !said(); i++) await delay(100);
    assert.ok(said(), "no log line names the cap");
    // Once one of them goes, a real client is served again.
    sockets.pop()!.destroy();
    let served = "";
    for (let i = 0; i < 50 && served !== "ok"; i++) {
      served = await tlsHandshake(pki.dir, capped.port, "127.0.2.1");
      if (served !== "ok") await delay(100);
    }
    assert.equal(served, "ok", "a client was still refused after a connection left");
  } finally {
    for (const socket of sockets) socket.destroy();
    assert.equal((await capped.stop()).code, 0);
  }
});

test("keepalive: a dead client's streams are released once it stops answering pings", async () => {
  const STREAMS = 3;
  const pinging = await WorkerProcess.start({
    certDir: pki.dir,
    env: {
      JOB_WORKER_MAX_STREAMS_PER_CLIENT: String(STREAMS),
      JOB_WORKER_KEEPALIVE: "1",
      JOB_WORKER_KEEPALIVE_TIMEOUT: "2",
    },
  });
  const admin = clientFor(pki.dir, pinging.address);
  const probe = new RawGrpcClient(pki.dir, pinging.address);
  let holder: Deno.ChildProcess | undefined;
  try {
    const job = await admin.createJob({ command: "/bin/sh", args: ["-c", "echo hi; sleep 600"] });
    const request = jobworker.GetJobsStreamReq.encode({ id: job.id }).finish();
    /** A stream of the same identity: RESOURCE_EXHAUSTED while the dead client holds them all. */
    const oneMore = () => probe.call("GetJobsStream", request, true, 1500);
    holder = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-prompt",
        "--cached-only",
        new URL("./helpers/stream_holder.ts", import.meta.url).pathname,
        pki.dir,
        pinging.address,
        job.id,
        String(STREAMS),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const said = await holder.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
    assert.equal(said.value, "open\n", "the holder did not open its streams");
    let answer = await oneMore();
    assert.equal(answer.code, status.RESOURCE_EXHAUSTED, answer.details);
    // The client dies without closing anything: its TCP connection stays up, pings go unanswered.
    holder.kill("SIGSTOP");
    // Ping every 1 s, 2 s for the answer: the worker gives up on it within seconds.
    for (let i = 0; i < 60 && answer.code === status.RESOURCE_EXHAUSTED; i++) {
      await delay(500);
      answer = await oneMore();
    }
    assert.equal(
      answer.code,
      status.DEADLINE_EXCEEDED, // a stream on a quiet job, admitted and followed until our deadline
      `the dead client still holds its streams: ${answer.details}`,
    );
    await admin.stopJob(job.id, { force: true });
  } finally {
    if (holder) {
      holder.kill("SIGKILL");
      holder.kill("SIGCONT");
      await holder.status;
    }
    probe.close();
    admin.close();
    assert.equal((await pinging.stop()).code, 0);
  }
});

test("stop the worker", async () => {
  client?.close();
  const status = await worker?.stop();
  assert.equal(status?.code, 0);
  await pki?.remove();
});
