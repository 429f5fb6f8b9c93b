/**
 * Streams cut off with output unsent leave it in native memory (Deno 2.8.3 never frees a
 * stream's queued writes, worker/tls/session_recycle.ts): the worker counts those bytes
 * (jobworker_http2_stranded_bytes), recycles itself when idle past JOB_WORKER_RECYCLE_AT_NATIVE_MIB,
 * and past JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB even with a client connected that cancels
 * streams in a loop. The running job survives either recycle with its output whole, and the
 * CLI's output follower resumes across the forced one.
 *
 * @module
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { recycled, timesLogged } from "./helpers/recycled.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { defaultDeps } from "../cli/context.ts";
import { writeOutput } from "../cli/output.ts";
import { metricValue } from "./helpers/metrics.ts";
import { RawGrpcClient } from "./helpers/raw_grpc.ts";

const MIB = 1024 * 1024;
/** What one stream may leave unsent (stream_output.ts's MAX_UNSENT_BYTES). */
const MAX_UNSENT = 512 * 1024;
const FORCED = "recycling the worker in place with clients connected";

const strandedBytes = (worker: WorkerProcess) =>
  metricValue(worker, "jobworker_http2_stranded_bytes");

/**
 * A viewer's client (grpc-js's default 64 KiB window: the worker's output piles up unsent), the
 * hostile case of README's "Hostile clients": anyone who may read a job's output.
 */
const viewer = (pki: PkiFixture, address: string) => new RawGrpcClient(pki.dir, address, "viewer");

/** Opens a stream of the job's output, and cancels it after its `messages`th message. */
function cancelAfter(client: RawGrpcClient, id: string, messages = 3): Promise<void> {
  const request = jobworker.GetJobsStreamReq.encode({ id }).finish();
  return client.cancelAfter("GetJobsStream", request, messages);
}

type WithJobs = Awaited<ReturnType<typeof workerWithJobs>>;

/**
 * Runs `fn` with a worker holding an ended job of ~40 MiB of output and a running job counting
 * lines; then stops the counter and the worker, which must stop cleanly.
 */
async function withJobs(env: Record<string, string>, fn: (w: WithJobs) => Promise<void>) {
  const w = await workerWithJobs(env);
  try {
    await fn(w);
  } finally {
    w.client.close();
    const stopper = clientFor(w.pki.dir, w.worker.address);
    await stopper.stopJob(w.counter, { force: true }).catch(() => {});
    stopper.close();
    const exit = await w.worker.stop();
    await w.pki.remove();
    assert.equal(exit.code, 0, "the worker did not stop cleanly");
  }
}

/** A worker with an ended job of ~40 MiB of output and a running job counting lines. */
async function workerWithJobs(env: Record<string, string>) {
  const pki = await makePki();
  const worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_METRICS_ADDR: "127.0.0.1:0", ...env },
  });
  const client = clientFor(pki.dir, worker.address);
  const big = await client.createJob({
    command: "sh",
    args: ["-c", "head -c 30000000 /dev/zero | base64"],
  });
  const counter = await client.createJob({
    command: "sh",
    args: ["-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.02; done"],
  });
  await waitJobEnded(client, big.id!);
  return { pki, worker, client, big: big.id!, counter: counter.id! };
}

function text(parts: Uint8Array[]): string {
  const decoder = new TextDecoder();
  return parts.map((part) => decoder.decode(part, { stream: true })).join("") + decoder.decode();
}

/** The counter job's output so far is 0, 1, 2, ... with nothing lost or repeated. */
function assertCounting(text: string): number {
  const lines = text.split("\n").slice(0, -1);
  assert.ok(lines.length > 0, "no output");
  lines.forEach((line, i) => assert.equal(line, String(i), `line ${i}`));
  return lines.length;
}

async function outputOf(worker: WorkerProcess, pki: PkiFixture, id: string): Promise<string> {
  const client = clientFor(pki.dir, worker.address);
  try {
    const parts: Uint8Array[] = [];
    for await (const chunk of client.stream(id, { noFollow: true })) parts.push(chunk.payload!);
    return text(parts);
  } finally {
    client.close();
  }
}

Deno.test({
  name: "streams cancelled with output unsent are counted as stranded, and past " +
    "JOB_WORKER_RECYCLE_AT_NATIVE_MIB the worker recycles once idle: job and output kept",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withJobs({
      JOB_WORKER_RECYCLE_AT_NATIVE_MIB: "4",
      JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "0",
    }, async (w) => {
      const raw = viewer(w.pki, w.worker.address);
      try {
        for (let i = 0; i < 3; i++) await cancelAfter(raw, w.big);
        const three = await strandedBytes(w.worker);
        // Each leaves about its share of unsent bytes (MAX_UNSENT, then waits until half is left).
        assert.ok(
          three >= 3 * MAX_UNSENT / 4 && three <= 3 * (MAX_UNSENT + 256 * 1024),
          `${three}`,
        );

        // Past the soft limit (each strands about 1 MiB of native memory, by the estimate), but
        // connected: no recycle. A stream's end may come after its client's cancel: wait for it.
        for (let i = 0; i < 5; i++) await cancelAfter(raw, w.big);
        const eight = await waitFor("8 cancels' stranded bytes past the soft limit", async () => {
          const bytes = await strandedBytes(w.worker);
          return bytes * 2 > 4 * MIB ? bytes : undefined;
        }, 10_000);
        const estimate = await metricValue(w.worker, "jobworker_http2_stranded_estimate_bytes");
        assert.ok(estimate >= 2 * eight, `estimate ${estimate} for ${eight} stranded`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        assert.equal(timesLogged(w.worker, "recycling"), 0, "recycled with a client connected");

        // The clients leave: the worker recycles, and says why.
        raw.close();
        w.client.close();
        assert.ok(await recycled(w.worker), `no recycle:\n${w.worker.logs.slice(-20).join("\n")}`);
        const line = w.worker.logs.map(parseLogLine).find((l) => l?.msg.startsWith("recycling"))!;
        // At least what the metric said (a stream's end may come after its client's cancel).
        assert.ok(Number(line.fields.strandedMiB) >= Math.floor(eight / MIB * 10) / 10);
        const listening = w.worker.logs.map(parseLogLine).filter((l) => l?.msg === "listening")
          .at(-1)!;
        assert.equal(String(listening.fields.jobsKept), "1");
        assert.equal(await strandedBytes(w.worker), 0, "the new process starts from nothing");
        const lines = assertCounting(await outputOf(w.worker, w.pki, w.counter));
        console.log(`stranded ${three} bytes by 3 cancels, ${eight} by 8; ${lines} lines kept`);
      } finally {
        raw.close();
      }
    }),
});

Deno.test({
  name: "a client that stays connected and cancels streams in a loop: past " +
    "JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB the worker recycles anyway, the job and its output " +
    "survive, and the CLI's follower resumes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withJobs({
      JOB_WORKER_RECYCLE_AT_NATIVE_MIB: "2",
      JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "8",
    }, async (w) => {
      const raw = viewer(w.pki, w.worker.address);
      const follow = new AbortController();
      const followed: Uint8Array[] = [];
      const reconnects: string[] = [];
      const sink = {
        write: (bytes: Uint8Array) => Promise.resolve(void followed.push(bytes.slice())),
      };
      const follower = clientFor(w.pki.dir, w.worker.address);
      const following = writeOutput(
        { ...defaultDeps(), stdout: sink, stderr: sink },
        follower,
        w.counter,
        {
          signal: follow.signal,
          onReconnect: (_attempt, error) => reconnects.push(error),
        },
      ).catch((error: unknown) => follow.signal.aborted ? -1 : Promise.reject(error));
      try {
        // The hostile client never lets the worker be idle; it stops at the recycle (cut off).
        let cancels = 0;
        while (timesLogged(w.worker, FORCED) === 0) {
          assert.ok(++cancels <= 40, "no forced recycle after 40 cancels");
          await cancelAfter(raw, w.big);
        }
        assert.ok(await recycled(w.worker), `no recycle:\n${w.worker.logs.slice(-20).join("\n")}`);
        const line = w.worker.logs.map(parseLogLine).find((l) => l?.msg.startsWith(FORCED))!;
        assert.equal(line.level, "warn");
        // Past 8 MiB, logged to a tenth of a MiB (8.04 shows as 8).
        assert.ok(
          Number(line.fields.strandedEstimateMiB) >= 8,
          `${line.fields.strandedEstimateMiB}`,
        );
        assert.ok(Number(line.fields.connections) >= 1);
        const listening = w.worker.logs.map(parseLogLine).filter((l) => l?.msg === "listening")
          .at(-1)!;
        assert.equal(String(listening.fields.jobsKept), "1");

        // The follower resumed, and the job's output is whole, both stored and as followed.
        const stored = await outputOf(w.worker, w.pki, w.counter);
        const lines = assertCounting(stored);
        await waitFor("the follower to catch up", () => {
          const sofar = text(followed);
          return sofar.split("\n").length > lines;
        }, 30_000);
        follow.abort();
        await following;
        assertCounting(text(followed));
        assert.ok(reconnects.length >= 1, "the follower was not cut off");
        console.log(`forced after ${cancels} cancels; follower reconnected: ${reconnects[0]}`);
      } finally {
        follow.abort();
        raw.close();
        follower.close();
      }
    }),
});

Deno.test({
  name: "a stream whose output was all written, but not sent, when its client cancels counts " +
    "as stranded too",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki();
    const worker = await WorkerProcess.start({
      certDir: pki.dir,
      env: { JOB_WORKER_METRICS_ADDR: "127.0.0.1:0" },
    });
    const client = clientFor(pki.dir, worker.address);
    const raw = viewer(pki, worker.address);
    try {
      // Less than a stream may leave unsent: the send loop writes it all and ends the call.
      const job = await client.createJob({
        command: "sh",
        args: ["-c", "head -c 360000 /dev/zero | base64"],
      });
      await waitJobEnded(client, job.id!);
      const size = Number((await client.getJob(job.id!)).outputBytes);
      assert.ok(size < MAX_UNSENT, `${size}`);
      await cancelAfter(raw, job.id!, 1);
      const stranded = await waitFor("the stream to close", async () => {
        const bytes = await strandedBytes(worker);
        return bytes > 0 ? bytes : undefined;
      });
      // Past the first message and the client's 64 KiB window, most of the rest (a wide margin:
      // 0 was counted before the meter waited for the stream's close).
      assert.ok(stranded >= size / 4 && stranded <= size, `${stranded}`);
      console.log(`${stranded} of ${size} bytes stranded`);
    } finally {
      raw.close();
      client.close();
      const exit = await worker.stop();
      await pki.remove();
      assert.equal(exit.code, 0, "the worker did not stop cleanly");
    }
  },
});
