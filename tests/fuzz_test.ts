/**
 * Fuzzing a live worker: random, truncated and hostile request bodies sent to every RPC over real
 * mutual TLS. No answer may be INTERNAL or UNKNOWN, the worker must live on and keep answering,
 * and nothing may leak: no job process or cgroup left once the jobs ended, no descriptors.
 *
 * FUZZ_REQUESTS sets how many (default 10,000; `make fuzz` sends 100,000); FUZZ_SEED replays a run.
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobServiceDefinition, jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { RawGrpcClient } from "./helpers/raw_grpc.ts";
import { cgroupDirsNamed, jobProcesses } from "./helpers/host_procs.ts";
import { openFds, poolFull } from "./helpers/rss.ts";

const REQUESTS = Number(Deno.env.get("FUZZ_REQUESTS") ?? 10_000);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? Date.now() % 1_000_000);
const CONCURRENCY = 32;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test({
  name: `${REQUESTS} random, truncated and hostile requests to every RPC (seed ${SEED})`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const random = generator(SEED);
    const int = (n: number) => Math.floor(random() * n);
    const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
    const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));

    const pki = await makePki();
    const worker = await WorkerProcess.start({ certDir: pki.dir });
    const client = clientFor(pki.dir, worker.address);
    const raws = [
      new RawGrpcClient(pki.dir, worker.address, "admin"),
      new RawGrpcClient(pki.dir, worker.address, "viewer"),
    ];
    try {
      const live = await client.createJob({ command: "sleep", args: ["600"] });
      const done = await client.createJob({ command: "echo", args: ["hello"] });
      const ids = [live.id, done.id, "", "no-such-job", "x".repeat(300)];
      await client.listJobs();
      await poolFull(worker.process.pid);
      const baselineFds = openFds(worker.process.pid);

      const enc = <T>(m: { encode(v: T): { finish(): Uint8Array } }, v: T) => m.encode(v).finish();
      // Valid requests to mutate. CreateJob only ever runs /bin/true (mutations that still decode
      // fail validation or lookup, or run something harmless with a short timeout).
      const seeds: Record<string, Uint8Array[]> = {
        CreateJob: [
          enc(jobworker.CreateJobReq, { command: "/bin/true", args: ["x"], timeoutSeconds: 5 }),
          enc(jobworker.CreateJobReq, { command: "/bin/true", env: ["A=1"], maxPids: 10 }),
        ],
        GetJob: ids.map((id) => enc(jobworker.GetJobReq, { id })),
        StopJob: [done.id, "nope"].map((id) =>
          enc(jobworker.StopJobReq, { id, graceSeconds: 1, force: false })
        ),
        GetJobs: [new Uint8Array()],
        GetJobsStream: ids.map((id) =>
          enc(jobworker.GetJobsStreamReq, { id, offset: 3, noFollow: true })
        ),
        ListJobs: [enc(jobworker.ListJobsReq, { pageSize: 5, statuses: [1, 2] })],
        DeleteJob: [enc(jobworker.DeleteJobReq, { id: "nope" })],
        GetServerInfo: [new Uint8Array()],
      };
      const methods = Object.keys(jobServiceDefinition) as (keyof typeof jobServiceDefinition)[];
      const longVarint = () => [0x80 | int(128), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1];
      const mutate = (seed: Uint8Array): Uint8Array => {
        switch (int(9)) {
          case 0:
            return bytes(int(64)); // noise
          case 1:
            return seed.subarray(0, int(seed.length + 1)); // truncated
          case 2: { // bit flips
            const b = seed.slice();
            for (let i = 0; i < 1 + int(3) && b.length; i++) b[int(b.length)]! ^= 1 << int(8);
            return b;
          }
          case 3:
            return Uint8Array.from([...seed, ...bytes(1 + int(16))]); // trailing junk
          case 4: // a length-delimited field claiming far more than is there
            return Uint8Array.from([(1 + int(12)) << 3 | 2, 0xff, 0xff, 0xff, 0x7f, ...bytes(8)]);
          case 5: // a field as an 11-byte varint, or a long but valid one
            return Uint8Array.from([
              (1 + int(12)) << 3,
              ...(random() < 0.5 ? [...longVarint().slice(0, 9), 0x80, 0] : longVarint()),
            ]);
          case 6: // invalid UTF-8 in a string field
            return Uint8Array.from([0x0a, 3, 0xc3, 0x28, 0xff]);
          case 7: // wire types 3, 4, 6, 7
            return Uint8Array.from([(1 + int(12)) << 3 | pick([3, 4, 6, 7]), ...bytes(4)]);
          default:
            return seed; // valid: the server must still answer properly
        }
      };

      const counts = new Map<string, number>();
      const bad: string[] = [];
      let sent = 0;
      const runOne = async () => {
        const method = pick(methods);
        const body = mutate(pick(seeds[method]!));
        const streaming = jobServiceDefinition[method].responseStream;
        const answer = await pick(raws).call(method, body, streaming, 15_000);
        const name = status[answer.code] ?? String(answer.code);
        counts.set(name, (counts.get(name) ?? 0) + 1);
        const hang = answer.code === status.DEADLINE_EXCEEDED && !streaming;
        if (answer.code === status.INTERNAL || answer.code === status.UNKNOWN || hang) {
          if (bad.length < 20) {
            bad.push(`${method} [${Array.from(body.subarray(0, 24))}]: ${name} ${answer.details}`);
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (sent < REQUESTS) {
          sent++;
          await runOne();
        }
      }));
      // A handful of oversized requests (beyond MAX_RECV_MSG_SIZE) too.
      for (let i = 0; i < 3; i++) {
        const answer = await raws[0]!.call("GetJob", bytes(5 * 1024 * 1024), false);
        assert.equal(answer.code, status.RESOURCE_EXHAUSTED, answer.details);
      }
      console.log(`seed ${SEED}: ${JSON.stringify(Object.fromEntries(counts))}`);
      assert.deepEqual(bad, [], `bad answers (seed ${SEED})`);

      // The worker lives on and answers; every job it started ends and leaves nothing behind.
      assert.equal(worker.process.pid > 0 && (await client.listJobs()).jobs.length > 0, true);
      await client.stopJob(live.id, { force: true });
      const jobIds = (await client.listJobs()).jobs.map((job) => job.id ?? "");
      for (const id of jobIds) {
        for (let i = 0; (await client.getJob(id)).status < jobworker.JobStatus.COMPLETED; i++) {
          if (i > 600) assert.fail(`job ${id} did not end`);
          await delay(50);
        }
      }
      assert.deepEqual(jobIds.flatMap((id) => jobProcesses(id)), [], "job processes left");
      assert.deepEqual(await cgroupDirsNamed(jobIds), [], "job cgroups left");
      for (const raw of raws) raw.close();
      await delay(1000);
      await poolFull(worker.process.pid);
      const fds = openFds(worker.process.pid);
      assert.ok(fds - baselineFds <= 8, `descriptors: ${baselineFds} before, ${fds} after`);
    } finally {
      for (const raw of raws) raw.close();
      client.close();
      const exit = await worker.stop();
      await pki.remove();
      assert.equal(exit.code, 0, "the worker did not stop cleanly");
    }
  },
});
