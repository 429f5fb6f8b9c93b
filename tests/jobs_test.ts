/**
 * End-to-end tests of running jobs: a real `jobworker serve` process, real mutual TLS, the
 * product's own JobClient, real namespaces, cgroups and processes. The host side (processes,
 * mounts, cgroup directories) is checked through /proc and /sys, independently of the product.
 *
 * One main worker serves most tests (its default StopJob grace is 2 s to keep the file fast); a
 * second one, with MAX_RECV_MSG_SIZE=65536 and CLEANUP_TIMEOUT=2, is shut down with SIGTERM.
 *
 * Run: `deno test -A tests/jobs_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import {
  cgroupDirsNamed,
  cgroupRoots,
  type HostProcess,
  isAlive,
  jobProcesses,
  waitFor,
} from "./helpers/host_procs.ts";
import { freePort } from "./helpers/free_port.ts";

const S = jobworker.JobStatus;
const STOP_GRACE_S = 2;
const KiB = 1024;

// ---------------------------------------------------------------------------------------------
// Fixture: one worker for the file.

const pki = await makePki();
let worker: WorkerProcess;
try {
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_STOP_GRACE: String(STOP_GRACE_S), JOB_WORKER_ALLOW_PRIVILEGED: "1" },
  });
} catch (e) {
  await pki.remove();
  throw e;
}
const client = clientFor(pki.dir, worker.address);
/** Workers still running, stopped by the last test or, if the run dies, by the unload handler. */
const liveWorkers = new Set<WorkerProcess>([worker]);
/** Every job id any worker of this file created, for the final cgroup check. */
const jobIds = new Set<string>();
/** Instance cgroup directories (`jobworker-<instance>`) of this file's workers. */
const instanceNames = new Set<string>();

globalThis.addEventListener("unload", () => {
  for (const w of liveWorkers) {
    try {
      w.process.kill("SIGTERM");
    } catch { /* gone */ }
    try {
      Deno.removeSync(w.stateDir, { recursive: true });
    } catch { /* removed */ }
  }
  try {
    Deno.removeSync(pki.dir, { recursive: true });
  } catch { /* removed */ }
});
/** Interrupted (Ctrl-C, a CI timeout): stop the workers properly (their jobs too), then exit. */
const onInterrupt = async () => {
  await Promise.all([...liveWorkers].map((w) => w.stop().catch(() => {})));
  liveWorkers.clear();
  await pki.remove().catch(() => {});
  Deno.exit(130);
};
const INTERRUPTS = ["SIGINT", "SIGTERM"] as const;
for (const s of INTERRUPTS) Deno.addSignalListener(s, onInterrupt);

/** Jobs the running test created: force-stopped after it, so a failed test leaves none running. */
let createdByTest: { c: JobClient; id: string }[] = [];

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      createdByTest = [];
      try {
        await fn();
      } finally {
        for (const { c, id } of createdByTest) {
          await c.stopJob(id, { force: true }).catch(() => {}); // ended jobs come back unchanged
        }
      }
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function create(req: jobworker.ICreateJobReq, c: JobClient = client) {
  const job = await c.createJob(req);
  jobIds.add(job.id);
  createdByTest.push({ c, id: job.id });
  return job;
}

function isEnded(job: jobworker.IJob): boolean {
  return job.status === S.COMPLETED || job.status === S.FAILED || job.status === S.STOPPED;
}

/** Runs a job to its end: its output and its final state. */
async function run(req: jobworker.ICreateJobReq, c: JobClient = client) {
  const created = await create(req, c);
  const output = await collectOutput(c, created.id);
  const job = await waitJobEnded(c, created.id, 30_000);
  return { job, ...output };
}

function ms(ts: jobworker.IJob["createTime"]): number {
  assert.ok(ts, "timestamp missing");
  return Number(ts.seconds ?? 0) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
}

interface GrpcError {
  code: number;
  details: string;
}

/** Awaits `promise`, which must fail with `code`; `mentions` must appear in the details. */
async function expectError(
  promise: Promise<unknown>,
  code: status | status[],
  ...mentions: string[]
): Promise<GrpcError> {
  let error: GrpcError | undefined;
  try {
    await promise;
  } catch (e) {
    if (typeof (e as Partial<GrpcError>).code !== "number") throw e; // not a gRPC status
    error = e as GrpcError;
  }
  assert.ok(error, `expected gRPC error ${code}, but the call succeeded`);
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(
    codes.includes(error.code),
    `expected code ${codes.join("|")}, got ${error.code}: ${error.details}`,
  );
  for (const m of mentions) {
    assert.ok(error.details.includes(m), `"${error.details}" does not mention "${m}"`);
  }
  return error;
}

/** Consumes a stream to its end (for error checks). */
/** How long a stream that should fail may take to end (a hung call fails the test, not hangs it). */
const STREAM_ERROR_WAIT_MS = 10_000;

/** Consumes a stream to its end (for error checks); gives up after STREAM_ERROR_WAIT_MS. */
async function drain(c: JobClient, id: string, offset = 0): Promise<void> {
  const signal = AbortSignal.timeout(STREAM_ERROR_WAIT_MS);
  try {
    for await (const _ of c.stream(id, { offset, signal })) { /* discard */ }
  } catch (e) {
    if (!signal.aborted) throw e;
    throw new Error(
      `GetJobsStream got no status within ${STREAM_ERROR_WAIT_MS} ms (the call hangs)`,
    );
  }
}

/** Follows a job's stdout until `done(text)` holds, then cancels the stream; returns the text. */
async function readUntil(
  c: JobClient,
  id: string,
  done: (text: string) => boolean,
): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of c.stream(id)) {
    text += decoder.decode(chunk.payload, { stream: true });
    if (done(text)) return text;
  }
  throw new Error(
    `the stream of ${id} ended before the expected output; got ${JSON.stringify(text)}`,
  );
}

/** Waits until the job has at least the processes named in `comms` (host view). */
async function waitProcesses(id: string, comms: string[]): Promise<HostProcess[]> {
  return await waitFor(`processes ${comms.join(", ")} of job ${id}`, () => {
    const procs = jobProcesses(id);
    const have = procs.map((p) => p.comm);
    const missing = [...comms];
    for (const c of have) {
      const i = missing.indexOf(c);
      if (i >= 0) missing.splice(i, 1);
    }
    return missing.length === 0 ? procs : null;
  });
}

function assertGone(procs: HostProcess[], what: string): void {
  const alive = procs.filter(isAlive);
  assert.deepEqual(
    alive.map((p) => `${p.pid} ${p.comm}`),
    [],
    `${what}: processes of the job still run on the host`,
  );
}

/** Parses `ps -eo pid,comm` output. */
function psLines(text: string): { pid: number; comm: string }[] {
  return text.trim().split("\n").slice(1).map((line) => {
    const [pid = "", comm = ""] = line.trim().split(/\s+/);
    return { pid: Number(pid), comm };
  });
}

function instanceOf(w: WorkerProcess): string | undefined {
  return w.logs.join("\n").match(/jobworker-([0-9a-f]{8})/)?.[1];
}
instanceNames.add(instanceOf(worker) ?? "");

// ---------------------------------------------------------------------------------------------
// Running and output

test("echo hello: output, COMPLETED, exit 0, owner alice, ordered timestamps, outputBytes", async () => {
  const { job, stdout, stderr } = await run({ command: "echo", args: ["hello"] });
  assert.equal(stdout, "hello\n");
  assert.equal(stderr, "");
  assert.equal(job.status, S.COMPLETED);
  assert.equal(job.exitCode, 0);
  assert.equal(job.signal, 0);
  assert.equal(job.owner, "alice");
  assert.equal(job.command, "echo");
  assert.deepEqual(job.args, ["hello"]);
  assert.equal(Number(job.outputBytes), 6);
  const [created, started, ended] = [ms(job.createTime), ms(job.startTime), ms(job.endTime)];
  assert.ok(created <= started, `createTime ${created} > startTime ${started}`);
  assert.ok(started <= ended, `startTime ${started} > endTime ${ended}`);
  assert.ok(created > Date.now() - 60_000, "createTime is not recent");
});

test("bash loop: lines arrive live, a second apart, while the job runs", async () => {
  const job = await create({
    command: "bash",
    args: ["-c", "for i in 1 2 3; do echo $i; sleep 1; done"],
  });
  const arrivals: { line: string; at: number }[] = [];
  let buffer = "";
  for await (const chunk of client.stream(job.id)) {
    buffer += new TextDecoder().decode(chunk.payload);
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    for (const line of lines) arrivals.push({ line, at: Date.now() });
  }
  assert.deepEqual(arrivals.map((a) => a.line), ["1", "2", "3"]);
  const ended = await waitJobEnded(client, job.id, 30_000);
  assert.equal(ended.status, S.COMPLETED);
  const [first, , third] = arrivals as [typeof arrivals[0], typeof arrivals[0], typeof arrivals[0]];
  assert.ok(third.at - first.at >= 1500, `line 1 arrived only ${third.at - first.at} ms before 3`);
  const endMs = ms(ended.endTime);
  assert.ok(endMs - first.at >= 1500, `line 1 arrived only ${endMs - first.at} ms before the end`);
});

// ---------------------------------------------------------------------------------------------
// Isolation

test("ps in a job lists only the job's processes, the command as PID 1", async () => {
  const alone = await run({ command: "ps", args: ["-eo", "pid,comm"] });
  assert.equal(alone.job.status, S.COMPLETED);
  assert.deepEqual(psLines(alone.stdout), [{ pid: 1, comm: "ps" }], alone.stdout);

  // Wait for the background child to have exec'd sleep: before that it is still a second "sh".
  const script = 'sleep 5 & while [ "$(cat /proc/$!/comm)" != sleep ]; do :; done; ps -eo pid,comm';
  const withChild = await run({ command: "sh", args: ["-c", script] });
  const procs = psLines(withChild.stdout);
  assert.deepEqual(procs[0], { pid: 1, comm: "sh" }, withChild.stdout);
  assert.deepEqual(procs.map((p) => p.comm).sort(), ["ps", "sh", "sleep"], withChild.stdout);
  assert.equal(withChild.job.status, S.COMPLETED);
});

test("hostname is the job id; a mount made inside never shows on the host", async () => {
  const host = await run({ command: "hostname" });
  assert.equal(host.stdout, `${host.job.id}\n`);
  assert.notEqual(Deno.hostname(), host.job.id);

  const marker = `jwtest-${crypto.randomUUID()}`;
  const script = [
    `mount -t tmpfs ${marker} /mnt`,
    `echo inside > /mnt/${marker}`,
    `cat /mnt/${marker}`,
    `grep -c ${marker} /proc/self/mountinfo`,
    "exec sleep 1000",
  ].join(" && ");
  // Privileged: the default profile has no CAP_SYS_ADMIN, so no mounts at all.
  const job = await create({ command: "sh", args: ["-c", script], privileged: true });
  try {
    // The mount worked inside: the file's content and the job's own mountinfo show it.
    const text = await readUntil(client, job.id, (t) => t.includes("inside\n1\n"));
    assert.equal(text, "inside\n1\n");
    assert.ok(!Deno.readTextFileSync("/proc/self/mountinfo").includes(marker), "mount leaked");
    assert.ok(!Deno.readTextFileSync("/proc/1/mountinfo").includes(marker), "mount leaked");
    await assert.rejects(Deno.stat(`/mnt/${marker}`), Deno.errors.NotFound);
  } finally {
    await client.stopJob(job.id, { force: true });
  }
  assert.ok(!Deno.readTextFileSync("/proc/self/mountinfo").includes(marker), "mount left");
  await assert.rejects(Deno.stat(`/mnt/${marker}`), Deno.errors.NotFound);
});

// ---------------------------------------------------------------------------------------------
// Network (jobs share the host network)

test("a job's http.server on 127.0.0.1 answers the host", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-www-" });
  const content = `served by a job ${crypto.randomUUID()}\n`;
  await Deno.writeTextFile(`${dir}/page.txt`, content);
  const port = freePort();
  const job = await create({
    command: "python3",
    args: ["-m", "http.server", String(port), "--bind", "127.0.0.1"],
    workDir: dir,
  });
  try {
    const body = await waitFor("the job's http server", async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/page.txt`);
        const text = await res.text();
        return res.ok ? text : null;
      } catch {
        return null;
      }
    });
    assert.equal(body, content);
  } finally {
    const stopped = await client.stopJob(job.id, { force: true });
    await Deno.remove(dir, { recursive: true });
    assert.equal(stopped.status, S.STOPPED);
  }
});

test("a job reaches a host service on 127.0.0.1", async () => {
  const greeting = `hello from the host ${crypto.randomUUID()}`;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(greeting),
  );
  try {
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const py = await run({
      command: "python3",
      args: [
        "-c",
        `import urllib.request; print(urllib.request.urlopen("${url}").read().decode())`,
      ],
    });
    assert.equal(py.stdout, `${greeting}\n`, py.stderr);
    assert.equal(py.job.status, S.COMPLETED);

    const sh = await run({
      command: "bash",
      args: [
        "-c",
        `exec 3<>/dev/tcp/127.0.0.1/${server.addr.port}; ` +
        `printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3`,
      ],
    });
    assert.ok(sh.stdout.startsWith("HTTP/1."), sh.stdout + sh.stderr);
    assert.ok(sh.stdout.endsWith(greeting), sh.stdout);
  } finally {
    await server.shutdown();
  }
});

// ---------------------------------------------------------------------------------------------
// StopJob

test("StopJob of a job with children: STOPPED, and nothing of it left on the host", async () => {
  const job = await create({ command: "bash", args: ["-c", "sleep 1000 & sleep 1000 & wait"] });
  const procs = await waitProcesses(job.id, ["bash", "sleep", "sleep"]);
  assert.equal(procs.length, 3, JSON.stringify(procs));
  assert.equal(procs.find((p) => p.comm === "bash")?.nsPid, 1, "bash is not the job's PID 1");
  assert.ok(procs.every(isAlive));
  // The cgroup check of the last test can see job cgroups: this one exists now.
  // One directory in the unified tree (v2), one per controller hierarchy (v1: at least pids,
  // memory and cpu).
  const dirs = cgroupDirsNamed([job.id]);
  const v2 = cgroupRoots()[0] === "/sys/fs/cgroup";
  assert.ok(v2 ? dirs.length === 1 : dirs.length >= 3, `job cgroups while running: ${dirs}`);

  const stopped = await client.stopJob(job.id, { graceSeconds: 5 });
  assert.equal(stopped.status, S.STOPPED);
  assert.match(stopped.reason, /stop/i);
  assertGone(procs, "after StopJob returned");
  assert.deepEqual(cgroupDirsNamed([job.id]), [], "the job's cgroup is left");
});

test("StopJob of jobs ignoring SIGTERM: SIGKILL after the grace, STOPPED, exitCode -1", async () => {
  const grace = 5;
  const trap = await create({ command: "bash", args: ["-c", 'trap "" TERM; sleep 1000'] });
  // PID 1 ignoring SIGTERM (inherited SIG_IGN): a PID 1 without a handler would end at once.
  const plain = await create({ command: "bash", args: ["-c", 'trap "" TERM; exec sleep 1000'] });
  const trapProcs = await waitProcesses(trap.id, ["sleep"]);
  const plainProcs = await waitProcesses(plain.id, ["sleep"]);
  assert.equal(plainProcs[0]?.nsPid, 1);

  const timedStop = async (id: string) => {
    const t0 = performance.now();
    const job = await client.stopJob(id, { graceSeconds: grace });
    return { job, took: performance.now() - t0 };
  };
  const stops = Promise.all([timedStop(trap.id), timedStop(plain.id)]);
  // During the grace the jobs still run.
  await delay(1000);
  assert.equal((await client.getJob(trap.id)).status, S.RUNNING);
  assert.equal((await client.getJob(plain.id)).status, S.RUNNING);
  assert.ok(trapProcs.every(isAlive) && plainProcs.every(isAlive), "killed before the grace");

  for (const { job, took } of await stops) {
    assert.equal(job.status, S.STOPPED, job.command);
    assert.equal(job.signal, 9, job.command);
    assert.equal(job.exitCode, -1, job.command);
    assert.match(job.reason, /SIGKILL/);
    assert.ok(took >= grace * 1000 - 10, `${job.command}: StopJob took only ${took} ms`);
  }
  assertGone([...trapProcs, ...plainProcs], "after StopJob returned");
});

test("StopJob of a job that handles SIGTERM: it exits by itself, STOPPED, exit 0", async () => {
  const job = await create({
    command: "bash",
    args: ["-c", 'trap "exit 0" TERM; echo ready; while :; do sleep 0.1; done'],
  });
  await readUntil(client, job.id, (t) => t.includes("ready\n"));
  const procs = jobProcesses(job.id);
  const stopped = await client.stopJob(job.id, { graceSeconds: 30 });
  assert.equal(stopped.status, S.STOPPED);
  // Not SIGKILLed after the grace: it ended by its own exit(0) on SIGTERM.
  assert.equal(stopped.signal, 0);
  assert.equal(stopped.exitCode, 0);
  assert.match(stopped.reason, /exited with code 0/);
  assertGone(procs, "after StopJob returned");
});

test("StopJob of a job with a suspended process: continued (SIGCONT), it handles SIGTERM", async () => {
  // The child handles SIGTERM but is stopped (SIGSTOP): without a SIGCONT after the SIGTERM it
  // sits out the whole grace and is SIGKILLed, its handler never run (systemd sends SIGCONT too).
  const job = await create({
    command: "bash",
    args: [
      "-c",
      "bash -c 'trap \"echo child got TERM; exit 0\" TERM; while :; do sleep 0.1; done' & " +
      "sleep 0.3; kill -STOP $!; echo suspended; wait; echo parent done",
    ],
  });
  await readUntil(client, job.id, (t) => t.includes("suspended\n"));
  const t0 = performance.now();
  const stopped = await client.stopJob(job.id, { graceSeconds: 30 });
  const took = performance.now() - t0;
  assert.equal(stopped.status, S.STOPPED);
  const { stdout } = await collectOutput(client, job.id);
  assert.match(stdout, /child got TERM/, `the suspended child never ran its handler: ${stdout}`);
  assert.ok(took < 10_000, `StopJob waited ${Math.round(took)} ms (the grace is 30 s)`);
});

test("StopJob force: SIGKILL at once, without SIGTERM first", async () => {
  // This job would exit 0 on SIGTERM: a SIGKILL end shows no SIGTERM came first.
  const job = await create({
    command: "bash",
    args: ["-c", 'trap "exit 0" TERM; echo ready; while :; do sleep 0.1; done'],
  });
  await readUntil(client, job.id, (t) => t.includes("ready\n"));
  const stopped = await client.stopJob(job.id, { force: true, graceSeconds: 30 });
  assert.equal(stopped.status, S.STOPPED);
  assert.equal(stopped.signal, 9);
  assert.equal(stopped.exitCode, -1);
});

test("StopJob of an ended job returns it unchanged; of an unknown id, NOT_FOUND", async () => {
  const { job } = await run({ command: "sh", args: ["-c", "echo done; exit 3"] });
  assert.equal(job.status, S.FAILED);
  for (const options of [{}, { force: true }, { graceSeconds: 1 }]) {
    const again = await client.stopJob(job.id, options);
    assert.equal(again.status, S.FAILED);
    assert.equal(again.exitCode, 3);
    assert.equal(again.signal, 0);
    assert.equal(again.reason, job.reason);
    assert.equal(ms(again.endTime), ms(job.endTime));
    assert.equal(Number(again.outputBytes), 5);
  }
  await expectError(client.stopJob(crypto.randomUUID()), status.NOT_FOUND);
});

// ---------------------------------------------------------------------------------------------
// How jobs end

test("exit code 7: FAILED, exitCode 7, the reason names the code", async () => {
  const { job } = await run({ command: "sh", args: ["-c", "exit 7"] });
  assert.equal(job.status, S.FAILED);
  assert.equal(job.exitCode, 7);
  assert.equal(job.signal, 0);
  assert.match(job.reason, /\b7\b/);
});

test("killed by a signal: FAILED, exitCode -1, the signal number", async () => {
  // A real fault: the kernel's SIGSEGV kills even a PID 1 (a `kill -SEGV $$` from inside is
  // ignored by the kernel for a namespace's PID 1 without a handler).
  const { job } = await run({
    command: "python3",
    args: ["-c", "import ctypes; ctypes.string_at(0)"],
  });
  assert.equal(job.status, S.FAILED);
  assert.equal(job.exitCode, -1);
  assert.equal(job.signal, 11);
  assert.match(job.reason, /SIGSEGV/);

  // SIGKILL from the host, not through StopJob: FAILED as well.
  const sleeper = await create({ command: "sleep", args: ["1000"] });
  const [pid1] = await waitProcesses(sleeper.id, ["sleep"]);
  assert.ok(pid1);
  Deno.kill(pid1.pid, "SIGKILL");
  const killed = await waitJobEnded(client, sleeper.id, 30_000);
  assert.equal(killed.status, S.FAILED);
  assert.equal(killed.exitCode, -1);
  assert.equal(killed.signal, 9);
  assert.match(killed.reason, /SIGKILL/);
});

test("a command that cannot start is an error of CreateJob, never a job", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-cmd-" });
  try {
    const missing = `no-such-command-${crypto.randomUUID().slice(0, 8)}`;
    await expectError(create({ command: missing }), status.INVALID_ARGUMENT, missing);
    await expectError(
      create({ command: `/usr/bin/${missing}` }),
      status.INVALID_ARGUMENT,
      `/usr/bin/${missing}`,
    );
    const file = `${dir}/not-executable.sh`;
    await Deno.writeTextFile(file, "#!/bin/sh\necho should not run\n", { mode: 0o644 });
    await Deno.chmod(file, 0o644);
    await expectError(create({ command: file }), status.INVALID_ARGUMENT, file);
    await expectError(create({ command: dir }), status.INVALID_ARGUMENT, dir);
    const { jobs } = await client.listJobs();
    const listed = jobs.filter((j) =>
      [missing, `/usr/bin/${missing}`, file, dir].includes(j.command ?? "")
    );
    assert.deepEqual(listed.map((j) => j.command), [], "a job is listed for a failed CreateJob");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Environment and working directory

test("env entries and workDir reach the job", async () => {
  const { job, stdout } = await run({
    command: "sh",
    args: ["-c", "echo $FOO; pwd"],
    env: ["FOO=bar"],
    workDir: "/tmp",
  });
  assert.equal(stdout, "bar\n/tmp\n");
  assert.deepEqual(job.env, ["FOO=bar"]);
  assert.equal(job.workDir, "/tmp");
});

test("the worker's own environment is not visible to the job", async () => {
  const { stdout } = await run({ command: "env", env: ["FOO=bar"] });
  const names = stdout.trim().split("\n").map((line) => line.slice(0, line.indexOf("=")));
  assert.ok(names.includes("FOO"), stdout);
  for (const secret of ["JOB_WORKER_CERT_PATH", "JOB_WORKER_STATE_DIR", "JOB_WORKER_ADDR"]) {
    assert.ok(!names.includes(secret), `${secret} leaked into the job:\n${stdout}`);
  }
  assert.ok(!stdout.includes(pki.dir), "the worker's cert path leaked into the job");
});

test("a nonexistent workDir: CreateJob fails INVALID_ARGUMENT naming workDir", async () => {
  const dir = `/nonexistent-${crypto.randomUUID()}`;
  await expectError(
    create({ command: "pwd", workDir: dir }),
    status.INVALID_ARGUMENT,
    "workDir",
  );
  const { jobs } = await client.listJobs();
  assert.ok(!jobs.some((j) => j.workDir === dir), "a job is listed for the failed CreateJob");
});

test("a start failure quotes the caller's value escaped, as other errors do", async () => {
  // A terminal escape in the command and the workDir: the message (init's) carries none raw, and
  // the whole value, so that the command line can say which path failed.
  const odd = "/no\u001b[2J\u009b" + "x".repeat(300);
  for (const spec of [{ command: odd }, { command: "pwd", workDir: odd }]) {
    const error = await expectError(create(spec), status.INVALID_ARGUMENT);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(error.details), error.details);
    assert.ok(error.details.includes("\\u001b[2J\\u009b"), error.details);
    assert.ok(error.details.includes(`\\u009b${"x".repeat(300)}"`), error.details);
  }
});

test("timeout: sleep 100 with timeoutSeconds 1 ends STOPPED, the reason names the timeout", async () => {
  // `sleep` as PID 1 has no SIGTERM handler: the timeout's SIGTERM takes its default action at
  // once (worker/jobs/pid1_term.ts), 1 s after the start. One that ignores SIGTERM ends with
  // SIGKILL when the worker's ${STOP_GRACE_S} s grace ends, 1 + grace s after its start.
  // 10 ms of timer slack below, 3 s of a loaded machine's slack above.
  const plain = await create({ command: "sleep", args: ["100"], timeoutSeconds: 1 });
  const ignoring = await create({
    command: "bash",
    args: ["-c", 'trap "" TERM; exec sleep 100'],
    timeoutSeconds: 1,
  });
  assert.equal(plain.timeoutSeconds, 1);
  for (const [job, graceS, signal] of [[plain, 0, 15], [ignoring, STOP_GRACE_S, 9]] as const) {
    const ended = await waitJobEnded(client, job.id, 30_000);
    assert.equal(ended.status, S.STOPPED);
    assert.match(ended.reason, /time(d)? ?out/i);
    const took = ms(ended.endTime) - ms(ended.startTime);
    const expected = (1 + graceS) * 1000;
    assert.ok(took >= expected - 10 && took <= expected + 3000, `ended ${took} ms after its start`);
    assert.equal(ended.signal, signal);
  }
});

// ---------------------------------------------------------------------------------------------
// Bad input

test("every bad CreateJob input: INVALID_ARGUMENT naming the field, no job made", async () => {
  const before = (await client.listJobs()).jobs.length;
  const cases: [jobworker.ICreateJobReq, string][] = [
    [{ command: "" }, "command"],
    [{ command: "   " }, "command"],
    [{ command: "true", maxCPU: -1 }, "maxCPU"],
    [{ command: "true", maxMemory: -1 }, "maxMemory"],
    [{ command: "true", maxIOBPS: -1 }, "maxIOBPS"],
    [{ command: "true", maxPids: -1 }, "maxPids"],
    [{ command: "true", timeoutSeconds: -1 }, "timeoutSeconds"],
    [{ command: "ec\0ho" }, "command"],
    [{ command: "echo", args: ["a", "b\0c"] }, "args"],
    [{ command: "echo", env: ["A=b\0c"] }, "env"],
    [{ command: "echo", workDir: "/tm\0p" }, "workDir"],
    [{ command: "echo", env: ["FOO"] }, "env"],
    [{ command: "echo", env: ["=x"] }, "env"],
    [{ command: "echo", workDir: "tmp" }, "workDir"],
    [{ command: "echo", args: ["x".repeat(600 * KiB)] }, "args"],
    [{ command: "echo", args: Array.from({ length: 5 }, () => "y".repeat(120 * KiB)) }, "args"],
  ];
  for (const [req, field] of cases) {
    const shown = JSON.stringify(req).slice(0, 80);
    const error = await expectError(create(req), status.INVALID_ARGUMENT).catch((e) => {
      throw new Error(`${shown}: ${e instanceof Error ? e.message : e}`);
    });
    assert.ok(error.details.includes(field), `${shown}: "${error.details}" does not name ${field}`);
  }
  assert.equal((await client.listJobs()).jobs.length, before, "a bad request made a job");

  // Large but acceptable: one 100 KiB argument reaches the job whole.
  const big = "z".repeat(100 * KiB);
  const ok = await run({ command: "sh", args: ["-c", 'printf %s "$1" | wc -c', "sh", big] });
  assert.equal(ok.stdout.trim(), String(100 * KiB));
});

test("unknown ids of any form: NOT_FOUND from GetJob, StopJob and GetJobsStream", async () => {
  for (const id of ["", "nope", crypto.randomUUID(), "i".repeat(10 * KiB)]) {
    const shown = id.slice(0, 40);
    for (
      const [rpc, call] of [
        ["GetJob", () => client.getJob(id)],
        ["StopJob", () => client.stopJob(id)],
        ["StopJob force", () => client.stopJob(id, { force: true })],
        ["GetJobsStream", () => drain(client, id)],
      ] as const
    ) {
      await expectError(call(), status.NOT_FOUND).catch((e) => {
        throw new Error(`${rpc}("${shown}"): ${e instanceof Error ? e.message : e}`);
      });
    }
  }
});

test("negative stream offset and negative graceSeconds: INVALID_ARGUMENT naming the field", async () => {
  const job = await create({ command: "sleep", args: ["1000"] });
  try {
    await expectError(drain(client, job.id, -1), status.INVALID_ARGUMENT, "offset");
    await expectError(
      client.stopJob(job.id, { graceSeconds: -1 }),
      status.INVALID_ARGUMENT,
      "graceSeconds",
    );
    assert.equal((await client.getJob(job.id)).status, S.RUNNING, "the refused stop stopped it");
  } finally {
    await client.stopJob(job.id, { force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// GetJobs

test("GetJobs: newest first, countByStatus matches the statuses", async () => {
  const a = await run({ command: "true" });
  const b = await run({ command: "false" });
  const c = await create({ command: "sleep", args: ["1000"] });
  try {
    const { jobs, countByStatus } = await client.listJobs();
    const ids = jobs.map((j) => j.id);
    assert.deepEqual(ids.slice(0, 3), [c.id, b.job.id, a.job.id]);
    for (let i = 1; i < jobs.length; i++) {
      const [newer, older] = [jobs[i - 1], jobs[i]];
      assert.ok(newer && older && ms(newer.createTime) >= ms(older.createTime), "not newest first");
    }
    const counts = countByStatus as Record<string, number>;
    const sum = Object.values(counts).reduce((n, v) => n + v, 0);
    assert.equal(sum, jobs.length);
    for (const name of ["INITIALIZING", "RUNNING", "COMPLETED", "FAILED", "STOPPED"] as const) {
      const expected = jobs.filter((j) => j.status === S[name]).length;
      assert.equal(counts[name] ?? 0, expected, `countByStatus.${name}`);
    }
    assert.ok(
      (counts.RUNNING ?? 0) >= 1 && (counts.COMPLETED ?? 0) >= 1 && (counts.FAILED ?? 0) >= 1,
    );
  } finally {
    await client.stopJob(c.id, { force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// A second worker: message size limit, shutdown

test("second worker: an oversized message is refused; SIGTERM stops every job, exit 0", async () => {
  const second = await WorkerProcess.start({
    certDir: pki.dir,
    env: { MAX_RECV_MSG_SIZE: "65536", CLEANUP_TIMEOUT: "2", JOB_WORKER_STOP_GRACE: "30" },
  });
  liveWorkers.add(second);
  instanceNames.add(instanceOf(second) ?? "");
  const c2 = clientFor(pki.dir, second.address);
  try {
    // The README: "largest request, bytes (larger: RESOURCE_EXHAUSTED)".
    await expectError(
      create({ command: "echo", args: ["x".repeat(100 * KiB)] }, c2),
      [status.RESOURCE_EXHAUSTED],
    );
    const after = await run({ command: "echo", args: ["still works"] }, c2);
    assert.equal(after.stdout, "still works\n");
    assert.ok(!(await c2.listJobs()).jobs.some((j) => j.args?.[0]?.startsWith("xxxx")));

    const children = await create(
      { command: "bash", args: ["-c", "sleep 1000 & sleep 1000 & wait"] },
      c2,
    );
    const stubborn = await create(
      { command: "bash", args: ["-c", 'trap "" TERM; sleep 1000'] },
      c2,
    );
    const procs = [
      ...await waitProcesses(children.id, ["bash", "sleep", "sleep"]),
      ...await waitProcesses(stubborn.id, ["sleep"]),
    ];
    const t0 = performance.now();
    const exit = await second.stop("SIGTERM");
    const took = performance.now() - t0;
    liveWorkers.delete(second);
    assert.equal(exit.code, 0, second.logs.join("\n"));
    assertGone(procs, "after the worker exited");
    // The stubborn job needed the whole CLEANUP_TIMEOUT before its SIGKILL.
    assert.ok(took >= 2000 - 10, `shutdown took only ${took} ms`);
    assert.deepEqual(cgroupDirsNamed([children.id, stubborn.id]), []);
  } finally {
    c2.close();
    if (liveWorkers.has(second)) {
      await second.stop();
      liveWorkers.delete(second);
    }
  }
});

test("SIGTERM right after the worker's listening line: it still shuts down cleanly, exit 0", async () => {
  // Stopped at once, eight times: a worker that logs "listening" before it handles SIGTERM dies of
  // the signal's default action (exit 143) in some of the tries.
  const codes: (number | string)[] = [];
  for (let i = 0; i < 8; i++) {
    const w = await WorkerProcess.start({ certDir: pki.dir });
    liveWorkers.add(w);
    const exit = await w.stop("SIGTERM");
    liveWorkers.delete(w);
    codes.push(exit.signal ?? exit.code);
  }
  assert.deepEqual(codes, Array(8).fill(0), `exit codes: ${codes.join(",")}`);
});

// ---------------------------------------------------------------------------------------------
// Cleanup (last): the worker, then nothing of any job left

test("after all jobs ended: the worker exits 0 and no cgroup of any job is left", async () => {
  let exit: Deno.CommandStatus | undefined;
  try {
    const { jobs } = await client.listJobs();
    const running = jobs.filter((j) => !isEnded(j));
    assert.deepEqual(running.map((j) => `${j.command} ${(j.args ?? []).join(" ")}`), []);
    assert.ok(jobIds.size >= 20, `only ${jobIds.size} jobs recorded`);
    assert.deepEqual(cgroupDirsNamed(jobIds), [], "job cgroups left");
  } finally {
    client.close();
    for (const s of INTERRUPTS) Deno.removeSignalListener(s, onInterrupt);
    exit = await worker.stop();
    liveWorkers.delete(worker);
    await pki.remove();
  }
  assert.equal(exit.code, 0);
  assert.deepEqual(cgroupDirsNamed(jobIds), [], "job cgroups left after the worker exited");
});

test("a stopped worker leaves no jobworker-<instance> cgroup directory behind", async () => {
  const names = [...instanceNames].filter(Boolean).map((i) => `jobworker-${i}`);
  assert.equal(names.length, 2, "instance names not found in the workers' logs");
  const left = cgroupDirsNamed(names);
  // Clean up after the check either way, so this file leaves nothing behind.
  for (const dir of left) await Deno.remove(dir).catch(() => {});
  assert.deepEqual(left, [], "instance cgroup directories left after the worker exited");
});
