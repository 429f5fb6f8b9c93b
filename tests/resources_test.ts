/**
 * Resource limits end to end: a real worker, real jobs, the kernel's cgroups enforcing them. The
 * same file runs on this machine's cgroup v1 (`make test`) and inside a cgroup v2 kernel under
 * User-mode Linux (`make test-cgroup-v2`); where the two differ it asks the kernel which it is.
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { cgroupDirsNamed, cgroupVersion } from "./helpers/host_procs.ts";

const { JobStatus } = jobworker;
const MiB = 1024 * 1024;
const version = cgroupVersion();
/** Under User-mode Linux a file-backed disk is attached as /dev/ubda (98:0) for the IO test. */
const umlDisk = (() => {
  try {
    return Deno.statSync("/dev/ubda").isBlockDevice ? "/dev/ubda" : undefined;
  } catch {
    return undefined;
  }
})();
/** Fewer, smaller rounds where system calls are ~70x slower (User-mode Linux). */
const heavy = umlDisk === undefined;

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;
const jobIds: string[] = [];

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name: `[cgroup v${version}] ${name}`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });

/** A protobuf Timestamp in seconds. */
const seconds = (t: jobworker.Job["startTime"]): number =>
  Number(t?.seconds ?? NaN) + (t?.nanos ?? 0) / 1e9;

async function run(req: jobworker.ICreateJobReq): Promise<jobworker.Job> {
  const job = await client.createJob(req);
  jobIds.push(job.id);
  return await waitJobEnded(client, job.id, 120_000);
}

test("start a worker", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    // Under UML the IO test writes the raw scratch disk: only a privileged job may open a block
    // device (the default profile's /dev has none).
    env: umlDisk ? { JOB_WORKER_IO_DEVICES: "98:0", JOB_WORKER_ALLOW_PRIVILEGED: "1" } : {},
  });
  client = clientFor(pki.dir, worker.address);
  assert.ok(worker.logs.some((l) => l.includes(`cgroup v${version}`)), worker.logs.join("\n"));
});

test("a process allocating beyond maxMemory is OOM-killed and reported as such", async () => {
  const job = await run({
    command: "python3",
    args: ["-c", "b = bytearray(100 * 1024 * 1024)\nprint('survived')"],
    maxMemory: 32,
  });
  assert.equal(job.status, JobStatus.FAILED, job.reason);
  assert.equal(job.oomKilled, true);
  assert.match(job.reason, /OOM/);
  assert.equal(job.signal, 9);
  assert.equal(job.maxMemory, 32);
  assert.ok(Number(job.usage?.memoryPeakBytes) <= 33 * MiB, `peak ${job.usage?.memoryPeakBytes}`);
  const out = await collectOutput(client, job.id);
  assert.equal(out.stdout, "");
});

test("a job under its memory limit completes and reports a plausible peak", async () => {
  const job = await run({
    command: "python3",
    args: ["-c", "b = bytearray(24 * 1024 * 1024)\nprint('ok')"],
    maxMemory: 96,
  });
  assert.equal(job.status, JobStatus.COMPLETED, job.reason);
  assert.equal(job.oomKilled, false);
  const peak = Number(job.usage?.memoryPeakBytes);
  assert.ok(peak >= 24 * MiB && peak <= 96 * MiB, `peak ${peak}`);
  assert.equal(Number(job.usage?.memoryBytes), 0, "current memory is 0 once ended");
  assert.equal(job.usage?.pids, 0);
});

test("init is not charged to the job: maxMemory=8 with echo succeeds", async () => {
  const job = await run({ command: "echo", args: ["small"], maxMemory: 8 });
  assert.equal(job.status, JobStatus.COMPLETED, job.reason);
  assert.equal((await collectOutput(client, job.id)).stdout, "small\n");
});

test("usage is live while the job runs", async () => {
  const job = await client.createJob({
    command: "python3",
    args: [
      "-c",
      "import time\nb = bytearray(20 * 1024 * 1024)\nprint('ready', flush=True)\ntime.sleep(60)",
    ],
  });
  jobIds.push(job.id);
  try {
    for await (const chunk of client.stream(job.id)) {
      if (new TextDecoder().decode(chunk.payload).includes("ready")) break;
    }
    const live = await client.getJob(job.id);
    assert.equal(live.status, JobStatus.RUNNING);
    assert.ok(Number(live.usage?.memoryBytes) >= 20 * MiB, `memory ${live.usage?.memoryBytes}`);
    assert.ok((live.usage?.pids ?? 0) >= 1);
    assert.ok(Number(live.usage?.cpuUsec) > 0);
  } finally {
    await client.stopJob(job.id, { force: true });
  }
  const ended = await client.getJob(job.id);
  assert.equal(ended.status, JobStatus.STOPPED);
  assert.equal(Number(ended.usage?.memoryBytes), 0);
  assert.ok(Number(ended.usage?.memoryPeakBytes) >= 20 * MiB);
});

test("a CPU-bound job at 20% for 3 s uses about 0.6 s of CPU, throttled", async () => {
  const job = await run({
    command: "timeout",
    args: ["3", "sh", "-c", "while :; do :; done"],
    maxCPU: 20,
  });
  assert.equal(job.maxCPU, 20);
  const cpuSeconds = Number(job.usage?.cpuUsec) / 1e6;
  // The quota is 20% of each period of wall time the job lives: 0.6 s of timeout's 3 s, more for
  // the time its processes took to start and end (User-mode Linux on a loaded machine: 0.84 s,
  // so the job lived about 3.1 s or more). So the bounds are of the job's own life, from its
  // record. Above: 20% + 35% (a period's share, and User-mode Linux's 10 ms accounting steps; it
  // measured 0.65 s of 3 s there), still below the 30% the next limit up would give. Below: a
  // loaded 2-core machine may leave the loop less than its share, so half of 20%, still above 5%.
  // Between 3 s (timeout's, whatever the start's stamp) and 3.3 s: a slow record of the end must
  // not loosen the bound past what 30% would give.
  const lived = Math.min(Math.max(seconds(job.endTime) - seconds(job.startTime), 3), 3.3);
  const share = cpuSeconds / lived;
  assert.ok(share <= 0.27, `used ${cpuSeconds} s of CPU in ${lived} s, more than 20% allows`);
  assert.ok(share >= 0.1, `used ${cpuSeconds} s of CPU in ${lived} s, far less than 20%`);
  assert.ok(Number(job.usage?.cpuThrottledCount) > 0, "throttling was counted");
});

test("dd oflag=direct of 4 MiB at 1 MiB/s takes about 4 s", async () => {
  const target = umlDisk ?? `/var/tmp/jobworker-io-test-${crypto.randomUUID()}`;
  try {
    const job = await run({
      command: "dd",
      args: ["if=/dev/zero", `of=${target}`, "bs=1M", "count=4", "oflag=direct"],
      maxIOBPS: MiB,
      privileged: umlDisk !== undefined,
    });
    assert.equal(job.status, JobStatus.COMPLETED, job.reason);
    assert.equal(job.maxIOBPS, MiB);
    const seconds = (Number(job.endTime?.seconds) * 1000 + (job.endTime?.nanos ?? 0) / 1e6 -
      Number(job.startTime?.seconds) * 1000 - (job.startTime?.nanos ?? 0) / 1e6) / 1000;
    // 4 MiB at 1 MiB/s: 4 s, of which the throttle may let the first slice (up to 1 s of budget)
    // through at once, so at least 2.8 s; at most 4 s plus 2.5 s for process start and a loaded
    // machine. A limit of 2 MiB/s (2 s) or 0.5 MiB/s (8 s) fails one side.
    assert.ok(seconds >= 2.8 && seconds <= 6.5, `dd took ${seconds} s`);
    assert.ok(Number(job.usage?.ioWriteBytes) >= 4 * MiB, `wrote ${job.usage?.ioWriteBytes}`);
  } finally {
    if (!umlDisk) await Deno.remove(target).catch(() => {});
  }
});

test("a fork bomb at maxPids=64 stays at 64, the host is unaffected, the job can be stopped", async () => {
  const job = await client.createJob({
    // Every process forks forever; none exits, so the count sits at the limit.
    command: "python3",
    args: [
      "-c",
      "import os, time\nwhile True:\n  try: os.fork()\n  except OSError: time.sleep(0.05)",
    ],
    maxPids: 64,
  });
  jobIds.push(job.id);
  // Wait until the bomb has filled its limit (slowly under User-mode Linux), then watch it.
  let most = 0;
  const deadline = Date.now() + 60_000;
  while (most < 64 && Date.now() < deadline) {
    most = Math.max(most, (await client.getJob(job.id)).usage?.pids ?? 0);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(most >= 48, `saw only ${most} processes: did the bomb run?`);
  for (let i = 0; i < 10; i++) {
    most = Math.max(most, (await client.getJob(job.id)).usage?.pids ?? 0);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(most <= 64, `saw ${most} processes`);
  const other = await run({ command: "echo", args: ["host fine"] });
  assert.equal(other.status, JobStatus.COMPLETED, "another job still runs beside the bomb");
  const stopped = await client.stopJob(job.id, { graceSeconds: 1 });
  assert.equal(stopped.status, JobStatus.STOPPED);
  assert.deepEqual(cgroupDirsNamed([job.id]), []);
});

test("GetJob shows the limits in force, defaults resolved", async () => {
  const job = await run({ command: "true", maxPids: 77 });
  assert.equal(job.maxCPU, 100);
  assert.equal(job.maxMemory, 512);
  assert.equal(job.maxIOBPS, 0);
  assert.equal(job.maxPids, 77);
});

test("many jobs leave no cgroup behind", async () => {
  const count = heavy ? 1000 : 60;
  const batch = heavy ? 20 : 4;
  for (let i = 0; i < count; i += batch) {
    const jobs = await Promise.all(
      Array.from(
        { length: Math.min(batch, count - i) },
        () => client.createJob({ command: "true" }),
      ),
    );
    for (const job of jobs) jobIds.push(job.id);
    await Promise.all(jobs.map((job) => waitJobEnded(client, job.id, 120_000)));
  }
  const leftovers = cgroupDirsNamed(jobIds);
  assert.deepEqual(leftovers, [], "every job's cgroup is removed, OOM-killed and stopped ones too");
});

test("a limit that cannot be applied fails the create with a clear error", async () => {
  const other = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_CGROUP_BASE: "/jobworker-no-such-cgroup" },
  });
  const otherClient = clientFor(pki.dir, other.address);
  try {
    await assert.rejects(
      otherClient.createJob({ command: "echo", args: ["never"] }),
      (e: { code: number; details: string }) => {
        assert.equal(e.code, status.FAILED_PRECONDITION);
        assert.match(e.details, /jobworker-no-such-cgroup/);
        assert.match(e.details, /does not exist/);
        return true;
      },
    );
    assert.equal((await otherClient.listJobs()).jobs.length, 0, "no job was made");
  } finally {
    otherClient.close();
    await other.stop();
  }
});

test("job cgroups left by a killed worker are removed by the next one", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  try {
    const first = await WorkerProcess.start({ certDir: pki.dir, stateDir });
    const firstClient = clientFor(pki.dir, first.address);
    const job = await firstClient.createJob({ command: "sleep", args: ["1000"] });
    firstClient.close();
    assert.notDeepEqual(cgroupDirsNamed([job.id]), []);
    await first.stop("SIGKILL");
    // The job dies with the worker (PDEATHSIG on its PID 1); its cgroup stays until cleaned up.
    const second = await WorkerProcess.start({ certDir: pki.dir, stateDir });
    try {
      assert.ok(
        second.logs.some((l) => l.includes("removed job cgroups of a previous run")),
        second.logs.join("\n"),
      );
      assert.deepEqual(cgroupDirsNamed([job.id]), []);
    } finally {
      await second.stop();
    }
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

test("stop the worker", async () => {
  client.close();
  const exit = await worker.stop();
  await pki.remove();
  assert.equal(exit.code, 0);
  assert.deepEqual(cgroupDirsNamed(jobIds), []);
  const parents = worker.logs.join("\n").match(/\/sys\/fs\/cgroup\/\S*jobworker-[0-9a-f]{8}/g);
  assert.ok(parents && parents.length > 0, "the worker logged where job cgroups go");
  for (const dir of parents) {
    assert.equal(await Deno.stat(dir).then(() => true, () => false), false, `${dir} was left`);
  }
});
