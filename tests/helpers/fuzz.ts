/**
 * The request fuzzer of tests/fuzz_test.ts (also used by the memory-creep test and bench):
 * random, truncated and hostile request bodies, sent to every RPC through raw gRPC clients.
 */
import { status } from "@grpc/grpc-js";
import { jobServiceDefinition, jobworker } from "../../proto/service.ts";
import type { RawGrpcClient } from "./raw_grpc.ts";

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
export function generator(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FuzzResult {
  /** Answers by status name. */
  counts: Map<string, number>;
  /** Up to 20 answers that must never happen: INTERNAL, UNKNOWN, a unary call that hung. */
  bad: string[];
}

/**
 * Sends `requests` fuzzed requests through `raws`, `concurrency` at a time. `jobs.live` is a
 * running job, `jobs.done` an ended one; CreateJob requests only ever run /bin/true.
 */
export async function fuzzRequests(
  raws: RawGrpcClient[],
  jobs: { live: string; done: string },
  options: { requests: number; seed: number; concurrency?: number },
): Promise<FuzzResult> {
  const random = generator(options.seed);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  const { live, done } = jobs;
  const ids = [live, done, "", "no-such-job", "x".repeat(300)];
  const enc = <T>(m: { encode(v: T): { finish(): Uint8Array } }, v: T) => m.encode(v).finish();
  // Valid requests to mutate. CreateJob only ever runs /bin/true (mutations that still decode
  // fail validation or lookup, or run something harmless with a short timeout).
  const seeds: Record<string, Uint8Array[]> = {
    CreateJob: [
      enc(jobworker.CreateJobReq, { command: "/bin/true", args: ["x"], timeoutSeconds: 5 }),
      enc(jobworker.CreateJobReq, { command: "/bin/true", env: ["A=1"], maxPids: 10 }),
    ],
    GetJob: ids.map((id) => enc(jobworker.GetJobReq, { id })),
    StopJob: [done, "nope"].map((id) =>
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
  await Promise.all(Array.from({ length: options.concurrency ?? 32 }, async () => {
    while (sent < options.requests) {
      sent++;
      await runOne();
    }
  }));
  return { counts, bad };
}
