/**
 * One job's output streamed over mTLS (GetJobsStream of an ended job) to grpc-js's client (the
 * bench's connection, `JobClient`'s default transport), against reading the same bytes from a
 * local pipe in the same run. The command line's transport (cli/transport/http2.ts, what
 * `jobworker stream` uses: "our client") is measured by the streaming rows (bench/streaming.ts).
 *
 * No target: issue 8's ≥ 200 MiB/s is for our client and a C-core client (the streaming rows carry
 * it). This row had it from when our client was grpc-js's; since "our client" is the command line's
 * transport, this is grpc-js's row, shown for comparison and held to its recorded ratio.
 *
 * @module
 */
import type { JobClient } from "../cli/client.ts";
import { jobworker } from "../proto/service.ts";
import type { BenchContext } from "./context.ts";
import { delay, type Row } from "./rows.ts";

const MiB = 1024 * 1024;

/** `head -c bytes /dev/zero` read through a local pipe, MiB/s. */
export async function pipeThroughput(bytes: number): Promise<number> {
  const t0 = performance.now();
  const child = new Deno.Command("head", {
    args: ["-c", String(bytes), "/dev/zero"],
    stdout: "piped",
  }).spawn();
  let total = 0;
  for await (const chunk of child.stdout) total += chunk.length;
  await child.status;
  if (total !== bytes) throw new Error(`pipe read ${total} bytes`);
  return bytes / MiB / ((performance.now() - t0) / 1000);
}

async function streamThroughput(reader: JobClient, id: string, bytes: number): Promise<number> {
  const t0 = performance.now();
  let total = 0;
  for await (const chunk of reader.stream(id)) total += chunk.payload.length;
  if (total !== bytes) throw new Error(`streamed ${total} bytes of ${bytes}`);
  return bytes / MiB / ((performance.now() - t0) / 1000);
}

/**
 * The best of three of each, alternating: one read of a few hundred ms is at the mercy of the
 * neighbours (single reads of a pipe here ranged 900-1900 MiB/s), the best is what the machine
 * and the code can do.
 */
export async function streamRow(ctx: BenchContext): Promise<Row> {
  const mib = ctx.quick ? 64 : 256;
  const bytes = mib * MiB;
  const { client } = ctx;
  const job = await client.createJob({ command: "head", args: ["-c", String(bytes), "/dev/zero"] });
  while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) await delay(50);
  let ours = 0;
  let base = 0;
  for (let i = 0; i < 3; i++) {
    ours = Math.max(ours, await streamThroughput(client, job.id, bytes));
    base = Math.max(base, await pipeThroughput(bytes));
  }
  return {
    name: `stream ${mib} MiB of an ended job, grpc-js client`,
    ours,
    base,
    baseLabel: "a local pipe; best of 3 each",
    unit: "MiB/s",
    higherIsBetter: true,
  };
}
