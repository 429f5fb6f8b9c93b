/**
 * What tests/cli_parse_test.ts checks against a fake client, checked again with the real program
 * against a real worker: Ctrl-C during `stream` (exit 130, the job untouched), a closed pipe
 * (`stream | head`: quiet exit 0), `stop --force` (SIGKILL at once), and the server's own error
 * messages reaching the user. Only observable behaviour: exit codes, stdout and stderr.
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { type ProgramResult, runProgram } from "./helpers/process.ts";
import { waitFor } from "./helpers/host_procs.ts";

const S = jobworker.JobStatus;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A line of a stack trace: never shown to a user. */
const STACK = /^\s+at .*:\d+:\d+\)?$/m;

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cli e2e: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

function cliArgs(args: string[], role = "admin"): string[] {
  return [
    "run",
    "--allow-all",
    "--no-prompt",
    "--cached-only",
    MAIN,
    "--server",
    worker.address,
    "--cert-path",
    pki.dir,
    "--role",
    role,
    ...args,
  ];
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

test("stop --force: SIGKILL at once, even for a job that ignores SIGTERM", async () => {
  const id = await create("bash", "-c", 'trap "" TERM; sleep 1000 & wait');
  await waitFor("the job to run", async () => (await client.getJob(id)).status === S.RUNNING);
  const t0 = performance.now();
  const stopped = await cli(["stop", id, "--force"]);
  const took = performance.now() - t0;
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stdout, /STOPPED/);
  const job = await client.getJob(id);
  assert.equal(job.status, S.STOPPED);
  assert.equal(job.signal, 9);
  // The default grace is 10 s; a forced stop does not wait for it (slack: a CLI start under load).
  assert.ok(took < 8000, `stop --force took ${took} ms`);
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
