/**
 * Faults of the place of record with a real worker: the state directory's disk fills up while a
 * job writes (a small tmpfs), and a state directory on a read-only filesystem.
 *
 * Run: `deno test -A tests/record_faults_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { killedAtUnload } from "./helpers/killed_at_unload.ts";
import { ApiCalls } from "./helpers/api_calls.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { fillUp, freeBytes } from "./helpers/disk.ts";

const S = jobworker.JobStatus;
const MiB = 1024 * 1024;
const pki = await makePki();
const mounts: string[] = [];
const workers = killedAtUnload();

async function run(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function tmpfs(options: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-small-" });
  await run("mount", "-t", "tmpfs", "-o", options, "tmpfs", dir);
  mounts.push(dir);
  return dir;
}

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

test("disk full while a job writes: the job goes on, the loss is said, creates are refused", async () => {
  const stateDir = await tmpfs("size=16m,mode=0700");
  const worker = await WorkerProcess.start({ certDir: pki.dir, stateDir });
  workers.add(worker);
  const api = new ApiCalls(pki.dir, worker.address);
  try {
    const warm = await api.createJob({ command: "true" });
    await waitFor("warm-up job", async () => (await api.getJob(warm.id)).status === S.COMPLETED);
    // Leave about 4 MiB free, then write 12 MiB.
    const free = (await freeBytes(stateDir)) - 4 * MiB;
    await Deno.writeFile(`${stateDir}/filler`, new Uint8Array(Math.max(0, free)));
    const job = await api.createJob({
      command: "sh",
      args: ["-c", "head -c 12582912 /dev/zero; echo done >&2; exit 0"],
    });
    const ended = await waitFor("the job to end", async () => {
      const j = await api.getJob(job.id);
      return j.status === S.COMPLETED || j.status === S.FAILED ? j : null;
    }, 60_000);
    assert.equal(ended.status, S.COMPLETED, "the job ran to its end: its pipe was drained");
    assert.match(ended.reason, /output from byte \d+ on was lost \(.*(space|full)/i);
    const lostAt = Number(/byte (\d+)/.exec(ended.reason)![1]);
    assert.ok(lostAt > 0 && lostAt < 12582912);
    assert.ok(Number(ended.outputBytes) <= lostAt);
    assert.ok(
      worker.logs.some((l) => l.includes("cannot store the job's output") && l.includes(job.id)),
      "the worker's log says where",
    );
    // The output lost stopped where the log counts (a write cut short is cut back), which can
    // leave a block free: take whatever is left, so nothing can be written.
    await fillUp(`${stateDir}/filler`);
    // The worker keeps serving; a create that cannot be recorded is RESOURCE_EXHAUSTED.
    await api.serverInfo();
    await api.listJobs({});
    let refused = 0;
    for (let i = 0; i < 5; i++) {
      try {
        const j = await api.createJob({ command: "true" });
        await waitFor("a job", async () => (await api.getJob(j.id)).status !== S.RUNNING);
      } catch (e) {
        const err = e as { code: number; details: string };
        assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
        assert.match(err.details, /cannot (record the job|store the job's output)/);
        refused++;
      }
    }
    assert.ok(refused > 0, "creates are refused while nothing can be written");
    // Space again: creates work again.
    await Deno.remove(`${stateDir}/filler`);
    const after = await api.createJob({ command: "echo", args: ["back"] });
    await waitFor("the job after", async () => (await api.getJob(after.id)).status === S.COMPLETED);
  } finally {
    api.close();
    await worker.stop();
    workers.delete(worker);
  }
});

test("a state directory on a read-only filesystem: a clear error, exit 78", async () => {
  const dir = await tmpfs("size=1m,ro");
  const error = await WorkerProcess.start({ certDir: pki.dir, stateDir: `${dir}` }).then(
    (w) => {
      workers.add(w);
      throw new Error("started");
    },
    (e: Error) => e,
  );
  assert.match(error.message, /exited \(78\)/);
  assert.match(error.message, /state directory .* cannot be used.*(Read-only|read-only)/);
});

test("cleanup", async () => {
  for (const dir of mounts) {
    await run("umount", dir).catch(() => run("umount", "-l", dir));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  await pki.remove();
});
