/**
 * What the streaming benches share: the jobs they stream (zeros at full speed), the two clients
 * that read them (ours and the C-core one, python3-grpcio) and a process's CPU time.
 *
 * @module
 */
import type { JobClient } from "../cli/client.ts";
import { jobworker } from "../proto/service.ts";
import { procStatFields, TICK_MS } from "./procfs.ts";

const MiB = 1024 * 1024;
export const PYTHON = "/usr/bin/python3";
const GRPC_CLIENT = new URL("./grpc_client.py", import.meta.url).pathname;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A whole output read: MiB/s from the first message to the last, and how many messages. */
export interface Read {
  mibps: number;
  messages: number;
}

/** User and system CPU seconds a process used so far, from /proc/<pid>/stat; NaN if unreadable. */
export function processCpu(pid: number | "self"): { user: number; sys: number } {
  const fields = procStatFields(pid);
  if (fields === undefined) return { user: NaN, sys: NaN };
  return { user: Number(fields[11]) * TICK_MS / 1000, sys: Number(fields[12]) * TICK_MS / 1000 };
}

/** CPU seconds (user + system) a process used so far; NaN if unreadable. */
export function cpuSeconds(pid: number | "self"): number {
  const { user, sys } = processCpu(pid);
  return user + sys;
}

export async function waitEnded(client: JobClient, id: string): Promise<jobworker.Job> {
  for (;;) {
    const job = await client.getJob(id);
    if (job.status >= jobworker.JobStatus.COMPLETED) return job;
    await delay(50);
  }
}

/** A job writing `bytes` zeros at full speed, starting `afterSeconds` from now. */
export function writer(client: JobClient, bytes: number, afterSeconds = 0): Promise<jobworker.Job> {
  const head = `head -c ${bytes} /dev/zero`;
  return afterSeconds > 0
    ? client.createJob({ command: "/bin/sh", args: ["-c", `sleep ${afterSeconds}; ${head}`] })
    : client.createJob({ command: "head", args: ["-c", String(bytes), "/dev/zero"] });
}

/** Reads `id`'s whole output with `client` (ours, the command line's transport, or grpc-js's). */
export async function readOurs(client: JobClient, id: string, expected: number): Promise<Read> {
  let total = 0;
  let messages = 0;
  let first = 0;
  for await (const chunk of client.stream(id)) {
    if (messages++ === 0) first = performance.now();
    total += chunk.payload.length;
  }
  if (total !== expected) throw new Error(`our client got ${total} of ${expected} bytes`);
  return { mibps: total / MiB / ((performance.now() - first) / 1000), messages };
}

/** Reads `id`'s whole output with the C-core client (bench/grpc_client.py). */
export async function readGrpcio(
  address: string,
  certDir: string,
  id: string,
  expected: number,
): Promise<Read> {
  const out = await new Deno.Command(PYTHON, {
    args: [GRPC_CLIENT, address, certDir, id],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`grpc_client.py failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const result = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    bytes: number;
    messages: number;
    seconds: number;
  };
  if (result.bytes !== expected) throw new Error(`grpcio got ${result.bytes} of ${expected} bytes`);
  return { mibps: result.bytes / MiB / result.seconds, messages: result.messages };
}

export function grpcioAvailable(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import grpc"], stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}
