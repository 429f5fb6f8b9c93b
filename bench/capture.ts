/**
 * Where a live job's streaming time goes (issue 8): the worker's CPU seconds per GiB, user and
 * system apart, for
 *
 * - `capture`: a job writing BENCH_CAPTURE_MIB (default 1024) MiB with nobody reading: the pipe read
 *   and the append to the job's log alone;
 * - `ended`: the same bytes streamed to our client (the command line's transport,
 *   cli/transport/http2.ts, as in bench/streaming.ts) once the job ended;
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
 * and every new page costs the first write into it far more (see bench/README.md, "Output").
 * BENCH_WORKER_PROGRAM runs another jobworker program (an older checkout's launcher).
 *
 * @module
 */
import { clientFor } from "../tests/helpers/clients.ts";
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import {
  processCpu,
  type Read,
  readGrpcio,
  readOurs,
  waitEnded,
  writer,
} from "./stream_readers.ts";

const MiB = 1024 * 1024;

const bytes = Number(Deno.env.get("BENCH_CAPTURE_MIB") ?? 1024) * MiB;
const cases = (Deno.env.get("BENCH_CAPTURE_CASES") ?? "capture,ended,follow,grpcio").split(",");
const keep = Deno.env.get("BENCH_CAPTURE_KEEP") === "1";
const pki = await makePki();
const program = Deno.env.get("BENCH_WORKER_PROGRAM");
const worker = await WorkerProcess.start({ certDir: pki.dir, ...(program ? { program } : {}) });
const pid = worker.process.pid;
const client = clientFor(pki.dir, worker.address);
const ours = clientFor(pki.dir, worker.address, "admin", { transport: "http2" });
try {
  await client.listJobs();
  await ours.listJobs();
  for (const name of cases) {
    // The followers wait at offset 0 for a job that starts writing a second later.
    const job = await writer(client, bytes, name === "follow" || name === "grpcio" ? 1 : 0);
    if (name === "ended") await waitEnded(client, job.id);
    const before = processCpu(pid);
    const t0 = performance.now();
    let read: Read | undefined;
    if (name === "ended" || name === "follow") read = await readOurs(ours, job.id, bytes);
    if (name === "grpcio") read = await readGrpcio(worker.address, pki.dir, job.id, bytes);
    await waitEnded(client, job.id);
    const seconds = (performance.now() - t0) / 1000;
    const after = processCpu(pid);
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
  ours.close();
  await worker.stop();
  await pki.remove();
}
