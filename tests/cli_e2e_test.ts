/**
 * What tests/cli_parse_test.ts checks against a fake client, checked again with the real program
 * against a real worker: Ctrl-C during `stream` (exit 130, the job untouched), a closed pipe
 * (`stream | head`: quiet exit 0), `stop --force` (SIGKILL at once), and the server's own error
 * messages reaching the user. Only observable behaviour: exit codes, stdout and stderr.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { type ProgramResult, runProgram } from "./helpers/process.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { sourceCommand } from "../bench/client_start.ts";

const S = jobworker.JobStatus;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A line of a stack trace: never shown to a user. */
const STACK = /^\s+at .*:\d+:\d+\)?$/m;

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cli e2e: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

/** `jobworker` from the sources, started as bench/client_start.ts starts it. */
function cliArgs(args: string[], role = "admin"): string[] {
  return sourceCommand([
    "--server",
    worker.address,
    "--cert-path",
    pki.dir,
    "--role",
    role,
    ...args,
  ])[1];
}

function cli(args: string[], role = "admin"): Promise<ProgramResult> {
  return runProgram(Deno.execPath(), cliArgs(args, role));
}

async function create(...args: string[]): Promise<string> {
  const created = await cli(["create", ...args]);
  assert.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  assert.match(id, UUID);
  return id;
}

test("start a worker", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({ certDir: pki.dir, env: { JOB_WORKER_MAX_JOBS: "3" } });
  client = clientFor(pki.dir, worker.address);
});

test("Ctrl-C during stream: exit code 130 (not killed by the signal), no message, job untouched", async () => {
  const id = await create("bash", "-c", "while :; do echo tick; sleep 0.2; done");
  const child = new Deno.Command(Deno.execPath(), {
    args: cliArgs(["stream", id]),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.getReader();
  let seen = "";
  while (!seen.includes("tick\ntick\n")) {
    const { value, done } = await reader.read();
    assert.ok(!done, `stream ended before output: ${seen}`);
    seen += new TextDecoder().decode(value);
  }
  child.kill("SIGINT");
  const rest = (async () => {
    for (;;) if ((await reader.read()).done) break;
  })();
  const status = await child.status;
  await rest;
  assert.equal(status.signal, null, "the CLI died of the signal instead of handling it");
  assert.equal(status.code, 130);
  const err = await stderr;
  assert.doesNotMatch(err, STACK);
  assert.equal((await client.getJob(id)).status, S.RUNNING, "Ctrl-C of a stream stopped the job");
  await client.stopJob(id, { force: true });
});

test("stream into a pipe closed early (| head -c 100): exit 0, nothing on stderr", async () => {
  const id = await create("bash", "-c", "head -c 8000000 /dev/zero | tr '\\0' x; sleep 1000");
  const argv = [Deno.execPath(), ...cliArgs(["stream", id])].map((a) => `'${a}'`).join(" ");
  const piped = await runProgram("bash", [
    "-c",
    `${argv} 2>"$0" | head -c 100 >/dev/null; echo "\${PIPESTATUS[0]}"`,
    `${pki.dir}/stream-stderr`,
  ]);
  assert.equal(piped.stdout.trim(), "0", `stream exited ${piped.stdout}: ${piped.stderr}`);
  assert.equal(await Deno.readTextFile(`${pki.dir}/stream-stderr`), "");
  await client.stopJob(id, { force: true });
});

test("stop --force: SIGKILL at once, no SIGTERM first, even for a job that ignores SIGTERM", async () => {
  // The job ignores SIGTERM but notes each one it gets: with --force it must see none.
  const id = await create(
    "bash",
    "-c",
    'trap "echo got TERM" TERM; echo ready; while :; do sleep 0.1; done',
  );
  await waitFor("the job to run", async () => (await client.getJob(id)).status === S.RUNNING);
  await waitFor("the trap to be set", async () => (await collect(id)).includes("ready"));
  const stopped = await cli(["stop", id, "--force", "--grace", "600"]);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stdout, /STOPPED/);
  const job = await client.getJob(id);
  assert.equal(job.status, S.STOPPED);
  assert.equal(job.signal, 9);
  // Without --force the grace of 600 s would hold the stop (and the job would print "got TERM").
  assert.doesNotMatch(await collect(id), /got TERM/);
});

async function collect(id: string): Promise<string> {
  let text = "";
  for await (const chunk of client.stream(id, { noFollow: true })) {
    text += new TextDecoder().decode(chunk.payload);
  }
  return text;
}

/** Pids of the worker's child processes (a job's init, while CreateJob runs). */
function workerChildren(): number[] {
  const pid = worker.process.pid;
  const pids: number[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
      if (text) pids.push(...text.split(/\s+/).map(Number));
    } catch {
      // The thread ended.
    }
  }
  return pids;
}

/** Waits (polling every millisecond: init lives ~0.1 s) for a worker child not in `before`. */
async function newWorkerChild(before: Set<number>): Promise<void> {
  for (let i = 0; i < 30_000; i++) {
    if (workerChildren().some((pid) => !before.has(pid))) return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  throw new Error("the worker started no job init within 30 s");
}

async function jobsWithArg(marker: string): Promise<jobworker.IJob[]> {
  return (await client.listJobs()).jobs.filter((job) => job.args?.includes(marker));
}

test("create retried after DEADLINE_EXCEEDED (worker stopped mid-create) keeps its requestId: one job", async () => {
  const marker = `deadline-${crypto.randomUUID()}`;
  const before = new Set(workerChildren());
  // A 1 s deadline; the worker is stopped (SIGSTOP) once it has begun the create (its init child
  // exists), for longer than that, so the first attempt times out after the server took it.
  const creating = runProgram(
    Deno.execPath(),
    cliArgs(["--request-timeout", "1", "create", "bash", "-c", "sleep 600", marker]),
  );
  await newWorkerChild(before);
  Deno.kill(worker.process.pid, "SIGSTOP");
  try {
    await new Promise((resolve) => setTimeout(resolve, 2500));
  } finally {
    Deno.kill(worker.process.pid, "SIGCONT");
  }
  const created = await creating;
  assert.equal(created.code, 0, created.stderr);
  const jobs = await jobsWithArg(marker);
  assert.deepEqual(jobs.map((job) => job.id), [created.stdout.trim()]);
  await client.stopJob(created.stdout.trim(), { force: true });
});

test("create retried after UNAVAILABLE (connection cut mid-create) keeps its requestId: one job", async () => {
  // A TCP relay to the worker whose first connection the test cuts once the worker has begun
  // the create: the answer is lost, the client reconnects and asks again with the same key.
  const target = worker.port;
  const pairs: net.Socket[][] = [];
  const relay = net.createServer((inbound) => {
    const outbound = net.connect(target, "127.0.0.1");
    pairs.push([inbound, outbound]);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const close = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("error", close).on("close", close);
    outbound.on("error", close).on("close", close);
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const port = (relay.address() as net.AddressInfo).port;
  try {
    const marker = `unavailable-${crypto.randomUUID()}`;
    const before = new Set(workerChildren());
    const creating = runProgram(
      Deno.execPath(),
      sourceCommand([
        "--server",
        `127.0.0.1:${port}`,
        "--cert-path",
        pki.dir,
        "create",
        "bash",
        "-c",
        "sleep 600",
        marker,
      ])[1],
    );
    await newWorkerChild(before);
    for (const socket of pairs[0] ?? []) socket.destroy();
    const created = await creating;
    assert.equal(created.code, 0, created.stderr);
    assert.ok(pairs.length >= 2, `the client did not reconnect (${pairs.length} connection)`);
    const jobs = await jobsWithArg(marker);
    assert.deepEqual(jobs.map((job) => job.id), [created.stdout.trim()]);
    await client.stopJob(created.stdout.trim(), { force: true });
  } finally {
    for (const pair of pairs) for (const socket of pair) socket.destroy();
    await new Promise((resolve) => relay.close(resolve));
  }
});

test("TLS stays strict: a server not signed by --ca, an IP the certificate lacks, a client of another CA", async () => {
  // The server's certificate checked against a CA that did not sign it.
  const unknownCa = await cli(["--ca", `${pki.dir}/otherca-client-cert.pem`, "list"]);
  assert.equal(unknownCa.code, 1, unknownCa.stderr);
  assert.match(unknownCa.stderr, /TLS handshake .* failed: the server's certificate is not signed/);
  // 127.0.0.2 reaches the same worker (a relay), but the certificate names only 127.0.0.1.
  const relay = net.createServer((inbound) => {
    const outbound = net.connect(worker.port, "127.0.0.1");
    inbound.pipe(outbound).pipe(inbound);
    inbound.on("error", () => outbound.destroy()).on("close", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy()).on("close", () => inbound.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.2", resolve));
  try {
    const port = (relay.address() as net.AddressInfo).port;
    const wrongIp = await runProgram(
      Deno.execPath(),
      sourceCommand(["--server", `127.0.0.2:${port}`, "--cert-path", pki.dir, "list"])[1],
    );
    assert.equal(wrongIp.code, 1, wrongIp.stderr);
    assert.match(wrongIp.stderr, /the server's certificate does not name "127\.0\.0\.2"/);
  } finally {
    await new Promise((resolve) => relay.close(resolve));
  }
  // The server refuses a client certificate from another CA.
  const otherClient = await cli([
    "--cert",
    `${pki.dir}/otherca-client-cert.pem`,
    "--key",
    `${pki.dir}/otherca-client-key.pem`,
    "list",
  ]);
  assert.equal(otherClient.code, 1, otherClient.stderr);
  assert.match(otherClient.stderr, /the server refused the client certificate/);
});

test("the server's own errors reach the user as one line, exit 1, no stack trace", async () => {
  const unknown = crypto.randomUUID();
  const cases: [string[], string, RegExp][] = [
    [["get", unknown], "admin", new RegExp(unknown)],
    [["create", "true"], "viewer", /viewer.*CreateJob|CreateJob.*viewer/],
    [["create", "no-such-command-xyz"], "admin", /no-such-command-xyz/],
  ];
  for (const [args, role, expected] of cases) {
    const r = await cli(args, role);
    const what = `${role}: ${args.join(" ")}`;
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, expected, what);
    assert.equal(r.stderr.trim().split("\n").length, 1, `${what}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, STACK, what);
  }
  // RESOURCE_EXHAUSTED with the server's words: this worker runs at most 3 jobs.
  const running = [
    await create("sleep", "1000"),
    await create("sleep", "1000"),
    await create("sleep", "1000"),
  ];
  try {
    const full = await cli(["create", "true"]);
    assert.equal(full.code, 1, full.stderr);
    assert.match(full.stderr, /JOB_WORKER_MAX_JOBS/);
    assert.equal(full.stderr.trim().split("\n").length, 1, full.stderr);
  } finally {
    for (const id of running) await client.stopJob(id, { force: true });
  }
});

test("stop the worker", async () => {
  client.close();
  const exit = await worker.stop();
  await pki.remove();
  assert.equal(exit.code, 0);
});
