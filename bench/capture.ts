/**
 * Where a live job's streaming time goes (issue 8): the worker's CPU seconds per GiB, user and
 * system apart, for
 *
 * - `capture`: a job writing BENCH_CAPTURE_MIB (default 1024) MiB with nobody reading: the pipe read
 *   and the append to the job's log alone;
 * - `ended`: the same bytes streamed to our client once the job ended;
 * - `follow`: streamed to our client while the job writes them at full speed (the client waits at
 *   offset 0 before the first byte, as the bench's live rows do);
 * - `grpcio`: the same to the C-core client (bench/grpc_client.py, python3-grpcio), when installed.
 *
 * Standalone diagnostic, not a row of `make bench`:
 *
 *     BENCH_CAPTURE_CASES=capture,follow,grpcio deno run -A bench/capture.ts
 *
 * Each job is deleted after its case, so the page cache its output used is given back. With
 * BENCH_CAPTURE_KEEP=1 the outputs stay, as they do across the rows of bench/streaming.ts: on these
 * VMs the page cache then grows into memory the host reclaimed (virtio_balloon free page reporting)
 * and every new page costs the first write into it far more (see README.md, Output).
 * BENCH_WORKER_PROGRAM runs another jobworker program (an older checkout's launcher).
 *
 * @module
 */
import { clientFor } from "../tests/helpers/clients.ts";
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";

const MiB = 1024 * 1024;
const GRPC_CLIENT = new URL("./grpc_client.py", import.meta.url).pathname;

/** User and system CPU seconds of `pid` so far, from /proc/<pid>/stat. */
function cpu(pid: number): { user: number; sys: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) / 100, sys: Number(fields[12]) / 100 };
}

async function waitEnded(client: JobClient, id: string): Promise<void> {
  while ((await client.getJob(id)).status < jobworker.JobStatus.COMPLETED) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Streams `id` to our client; the message count and MiB/s from the first message to the last. */
async function readOurs(client: JobClient, id: string, bytes: number) {
  let total = 0;
  let messages = 0;
  let first = 0;
  for await (const chunk of client.stream(id)) {
    if (messages++ === 0) first = performance.now();
    total += chunk.payload.length;
  }
  if (total !== bytes) throw new Error(`our client got ${total} of ${bytes} bytes`);
  return { messages, mibps: bytes / MiB / ((performance.now() - first) / 1000) };
}

async function readGrpcio(address: string, certDir: string, id: string, bytes: number) {
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [GRPC_CLIENT, address, certDir, id],
    stdout: "piped",
  }).output();
  if (!out.success) throw new Error("grpc_client.py failed");
  const result = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    bytes: number;
    messages: number;
    seconds: number;
  };
  if (result.bytes !== bytes) throw new Error(`grpcio got ${result.bytes} of ${bytes} bytes`);
  return { messages: result.messages, mibps: bytes / MiB / result.seconds };
}

const bytes = Number(Deno.env.get("BENCH_CAPTURE_MIB") ?? 1024) * MiB;
const cases = (Deno.env.get("BENCH_CAPTURE_CASES") ?? "capture,ended,follow,grpcio").split(",");
const keep = Deno.env.get("BENCH_CAPTURE_KEEP") === "1";
const pki = await makePki();
const program = Deno.env.get("BENCH_WORKER_PROGRAM");
const worker = await WorkerProcess.start({ certDir: pki.dir, ...(program ? { program } : {}) });
const pid = worker.process.pid;
const client = clientFor(pki.dir, worker.address);
const head = `head -c ${bytes} /dev/zero`;
try {
  await client.listJobs();
  for (const name of cases) {
    // The followers wait at offset 0 for a job that starts writing a second later.
    const job = name === "follow" || name === "grpcio"
      ? await client.createJob({ command: "/bin/sh", args: ["-c", `sleep 1; ${head}`] })
      : await client.createJob({ command: "head", args: ["-c", String(bytes), "/dev/zero"] });
    if (name === "ended") await waitEnded(client, job.id);
    const before = cpu(pid);
    const t0 = performance.now();
    let read: { messages: number; mibps: number } | undefined;
    if (name === "ended" || name === "follow") read = await readOurs(client, job.id, bytes);
    if (name === "grpcio") read = await readGrpcio(worker.address, pki.dir, job.id, bytes);
    await waitEnded(client, job.id);
    const seconds = (performance.now() - t0) / 1000;
    const after = cpu(pid);
    const gib = bytes / 1024 / MiB;
    console.log(JSON.stringify({
      case: name,
      mibps: Number((read?.mibps ?? bytes / MiB / seconds).toFixed(1)),
      workerUserPerGiB: Number(((after.user - before.user) / gib).toFixed(2)),
      workerSysPerGiB: Number(((after.sys - before.sys) / gib).toFixed(2)),
      messages: read?.messages ?? 0,
    }));
    if (!keep) await client.deleteJob(job.id).catch(() => {});
  }
} finally {
  client.close();
  await worker.stop();
  await pki.remove();
}
