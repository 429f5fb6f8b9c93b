/**
 * The client program end to end: `jobworker <command>` as a separate process against a real worker
 * over mutual TLS, as a person would use it; and `make build`'s bin/jobworker.
 */
import { type ProgramResult, runProgram } from "./helpers/process.ts";
import assert from "node:assert/strict";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";

const root = new URL("..", import.meta.url).pathname;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let pki: PkiFixture;
let worker: WorkerProcess;

function jobworker(args: string[], program?: string): Promise<ProgramResult> {
  const prefix = program
    ? []
    : ["run", "--allow-all", "--no-prompt", "--cached-only", `${root}main.ts`];
  return runProgram(program ?? Deno.execPath(), [
    ...prefix,
    "--server",
    worker.address,
    "--cert-path",
    pki.dir,
    ...args,
  ]);
}

async function createJob(...args: string[]): Promise<string> {
  const created = await jobworker(["create", ...args]);
  assert.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  assert.match(id, UUID, "create prints only the job id");
  return id;
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cli: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

test("start a worker", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({ certDir: pki.dir });
});

test("create keeps the job's own flags, stream separates stdout and stderr", async () => {
  const id = await createJob("bash", "-c", "echo out; echo err >&2; exit 3");
  const streamed = await jobworker(["stream", id]);
  assert.equal(streamed.code, 0);
  assert.equal(streamed.stdout, "out\n");
  assert.equal(streamed.stderr, "err\n");
  const fromOffset = await jobworker(["stream", id, "--offset", "4", "--no-follow"]);
  assert.equal(fromOffset.stdout, "");
  assert.equal(fromOffset.stderr, "err\n");
  const got = await jobworker(["get", id]);
  assert.equal(got.code, 0, got.stderr);
  assert.match(got.stdout, /Status:\s+FAILED/);
  assert.match(got.stdout, /Exit code:\s+3/);
  assert.match(got.stdout, /Owner:\s+alice/);
});

test("env, workdir and limits reach the job; get shows the limits", async () => {
  const id = await createJob(
    "--env",
    "GREETING=hello there",
    "--workdir",
    "/tmp",
    "--max-memory",
    "64",
    "--max-pids",
    "50",
    "sh",
    "-c",
    'echo "$GREETING"; pwd',
  );
  assert.equal((await jobworker(["stream", id])).stdout, "hello there\n/tmp\n");
  const got = await jobworker(["get", id]);
  assert.match(got.stdout, /Memory:\s+64\.0 MiB/);
  assert.match(got.stdout, /Processes:\s+50/);
  assert.match(got.stdout, /GREETING=hello there/);
});

test("list shows jobs newest first and the counts; --json parses", async () => {
  const first = await createJob("true");
  const second = await createJob("true");
  const listed = await jobworker(["list"]);
  assert.equal(listed.code, 0, listed.stderr);
  // list shows ids at their shortest unique length (at least 8 characters).
  const at = (id: string) => listed.stdout.indexOf(id.slice(0, 8));
  assert.ok(at(second) >= 0 && at(first) > at(second), listed.stdout);
  assert.match(listed.stdout, /\d+ COMPLETED/);
  const json = JSON.parse((await jobworker(["list", "--json"])).stdout);
  assert.ok(JSON.stringify(json).includes(first));
});

test("stop ends a running job and says how", async () => {
  const id = await createJob("sleep", "100");
  const stopped = await jobworker(["stop", id, "--grace", "1"]);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stdout, /STOPPED/);
  const again = await jobworker(["stop", id]);
  assert.equal(again.code, 0, "stopping an ended job is not an error");
});

test("clear errors: unknown job, bad command, bad number", async () => {
  const unknown = await jobworker(["get", crypto.randomUUID()]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /No job with id/);
  const missing = await jobworker(["create", "no-such-command-xyz"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no-such-command-xyz/);
  const badNumber = await jobworker(["create", "--max-cpu", "lots", "true"]);
  assert.equal(badNumber.code, 2);
  assert.doesNotMatch(badNumber.stderr, /at .*\.ts:\d+/, "no stack trace");
});

test("every command has --help", async () => {
  for (const command of ["create", "list", "get", "stop", "stream", "certs"]) {
    const help = await jobworker([command, "--help"]);
    assert.equal(help.code, 0, `${command} --help: ${help.stderr}`);
    assert.match(help.stdout, new RegExp(`Usage: jobworker ${command}`));
  }
  const serveHelp = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--cached-only", `${root}main.ts`, "serve", "--help"],
    stdout: "piped",
  }).output();
  assert.match(new TextDecoder().decode(serveHelp.stdout), /JOB_WORKER_ADDR/);
});

test("make build leaves a bin/jobworker that works as client", async () => {
  const build = await new Deno.Command("bash", {
    args: [`${root}scripts/build.sh`, Deno.execPath()],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const said = new TextDecoder().decode(build.stdout) + new TextDecoder().decode(build.stderr);
  assert.ok(build.success, said);
  // The client commands run from the small bundle entry, which starts the TLS warm-up before the
  // command line loads (cli/bundle_entry.ts), not from the command line's bundle itself.
  assert.match(said, /client commands: build\/jobworker-client\.js/);
  assert.doesNotMatch(said, /no bundle entry/);
  // Its rewrites of the bundle for start-up time (commander's node:child_process and node:fs at
  // first use, long.js without its WebAssembly) were made: each says so when its line is gone.
  assert.doesNotMatch(said, /stays eager|still compiles|beyond commander's lazy use/);
  const program = `${root}bin/jobworker`;
  const id = (await jobworker(["create", "echo", "from bin"], program)).stdout.trim();
  assert.match(id, UUID);
  assert.equal((await jobworker(["stream", id], program)).stdout, "from bin\n");
});

test("stop the worker", async () => {
  const exit = await worker.stop();
  await pki.remove();
  assert.equal(exit.code, 0);
});
