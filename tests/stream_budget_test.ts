/**
 * The output streams of one connection share one budget of bytes left unsent inside the worker's
 * HTTP/2 layer (worker/api/stream_output.ts): a client with many stalled streams on one connection
 * makes the worker hold a few MiB, not what one stalled stream holds times their number.
 * Observed through the worker's own count of output bytes handed to its calls
 * (jobworker_output_streamed_bytes_total): what a stopped client did not take stays in the worker.
 */
import assert from "node:assert/strict";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { startStalledReader } from "./helpers/stalled_reader.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { jobworker } from "../proto/service.ts";

const MiB = 1024 * 1024;
/** With the one-stream reader (same identity), within the default 64 streams per client. */
const STREAMS = 60;
/** What stream_output.ts lets each stream hold unsent, and one chunk it may write beyond. */
const PER_STREAM_HOLD = 512 * 1024 + 128 * 1024;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function streamedBytes(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const value = /^jobworker_output_streamed_bytes_total (\d+)$/m.exec(text);
  assert.ok(value, "no jobworker_output_streamed_bytes_total in /metrics");
  return Number(value[1]);
}

/** The streamed count once it has not moved for a second (the stopped reader's buffers are full). */
async function settledStreamed(metricsUrl: string): Promise<number> {
  let last = await streamedBytes(metricsUrl);
  for (let i = 0; i < 40; i++) {
    await delay(1000);
    const now = await streamedBytes(metricsUrl);
    if (now === last) return now;
    last = now;
  }
  throw new Error("the streamed byte count never settled");
}

Deno.test({
  name: `${STREAMS} stalled streams on one connection share one budget of unsent bytes`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki: PkiFixture = await makePki();
    const worker = await WorkerProcess.start({
      certDir: pki.dir,
      env: { JOB_WORKER_METRICS_ADDR: "127.0.0.1:0" },
    });
    const client = clientFor(pki.dir, worker.address);
    const readers: { kill(): Promise<void> }[] = [];
    try {
      const port = worker.logs.map(parseLogLine).find((l) => l?.msg === "metrics listening")
        ?.fields.port;
      assert.ok(port, "the worker logged no 'metrics listening' line");
      const metrics = `http://127.0.0.1:${port}/metrics`;
      const job = await client.createJob({
        command: "head",
        args: ["-c", String(64 * MiB), "/dev/zero"],
      });
      while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) await delay(50);

      const before = await settledStreamed(metrics);
      readers.push(await startStalledReader("grpc", pki.dir, worker.address, job.id, 1));
      const one = await settledStreamed(metrics) - before;
      readers.push(await startStalledReader("grpc", pki.dir, worker.address, job.id, STREAMS));
      const many = await settledStreamed(metrics) - before - one;
      console.log(
        `handed to calls: one stalled stream ${(one / MiB).toFixed(1)} MiB, ${STREAMS} on one ` +
          `connection ${(many / MiB).toFixed(1)} MiB`,
      );
      // Sharing 512 KiB, each of 60 streams may hold 16 KiB and one 32 KiB message beyond it:
      // about 2.8 MiB in all. Each holding PER_STREAM_HOLD as a lone stream may: about 37.5 MiB
      // (39.1 MiB measured with the share taken out, by hand: this fails).
      assert.ok(
        many - one < (STREAMS * PER_STREAM_HOLD) / 4,
        `${STREAMS} stalled streams made the worker take ${((many - one) / MiB).toFixed(1)} MiB ` +
          "more than one stalled stream",
      );
    } finally {
      await Promise.all(readers.map((r) => r.kill()));
      client.close();
      await worker.stop();
      await pki.remove();
    }
  },
});
