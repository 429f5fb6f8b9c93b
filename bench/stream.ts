/**
 * One job's output streamed to our own client over mTLS (GetJobsStream of an ended job), against
 * reading the same bytes from a local pipe in the same run.
 *
 * @module
 */
import { jobworker } from "../proto/service.ts";
import type { BenchContext } from "./context.ts";
import { delay, type Row } from "./rows.ts";

const MiB = 1024 * 1024;

async function pipeThroughput(bytes: number): Promise<number> {
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

export async function streamRow(ctx: BenchContext): Promise<Row> {
  const mib = ctx.quick ? 64 : 256;
  const bytes = mib * MiB;
  const { client } = ctx;
  const job = await client.createJob({ command: "head", args: ["-c", String(bytes), "/dev/zero"] });
  while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) await delay(50);
  const t0 = performance.now();
  let total = 0;
  for await (const chunk of client.stream(job.id)) total += chunk.payload.length;
  if (total !== bytes) throw new Error(`streamed ${total} bytes of ${bytes}`);
  const ours = mib / ((performance.now() - t0) / 1000);
  return {
    name: `stream ${mib} MiB of an ended job, our client`,
    ours,
    base: await pipeThroughput(bytes),
    baseLabel: "a local pipe",
    unit: "MiB/s",
    higherIsBetter: true,
    target: { atLeast: 200 },
  };
}
