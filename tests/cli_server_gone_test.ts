/**
 * The command line when its server is gone or is not a jobworker server: every case ends with one
 * clear line and exit code 1, without a hang or a stack trace.
 *
 * Run: `deno test -A tests/cli_server_gone_test.ts` (as root: it starts a worker).
 *
 * @module
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { runProgram } from "./helpers/process.ts";
import { sourceCommand } from "../bench/client_start.ts";
import { concatBytes } from "./helpers/process.ts";

/** A line of a stack trace: never shown to a user. */
const STACK = /^\s+at .*:\d+:\d+\)?$/m;
const pki = await makePki();

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

/** `jobworker` from the sources against `server`. */
function cliArgs(server: string, args: string[]): string[] {
  return sourceCommand(["--server", server, "--cert-path", pki.dir, ...args])[1];
}

test("a listener that accepts and never answers: one try, and the message says the TLS handshake never came", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const server = `127.0.0.1:${listener.addr.port}`;
    for (const args of [["list"], ["create", "true"]]) {
      const before = held.length;
      const result = await runProgram(
        Deno.execPath(),
        cliArgs(server, ["--request-timeout", "2", ...args]),
      );
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /did not complete a TLS handshake in 2 s/);
      assert.doesNotMatch(result.stderr, STACK);
      // create: asked again when it timed out, as the server may have started the job; one that
      // never got past the handshake cannot have reached it (it was asked four times, each
      // waiting out the whole deadline: this half fails without RpcError.unanswered, checked).
      // list: a read is retried on UNAVAILABLE only, never after a deadline, so this half passed
      // before that change too; it stays as a guard that one call never dials twice.
      assert.equal(held.length - before, 1, `${args[0]}: connections made`);
    }
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
});

test("a server that was never there: list --watch fails at once, in one connection; plain list keeps its call's retries", async () => {
  // Accepts and closes at once (UNAVAILABLE each time), counting the connections.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      connections++;
      conn.close();
    }
  })();
  try {
    const server = `127.0.0.1:${listener.addr.port}`;
    // list --watch retries a lost connection only after a first refresh, by its own pauses
    // (cli/reconnect.ts), never with the call's retries inside; it waited out a minute here.
    // Plain list: the call's own retries (cli/client.ts), 1 + 3 tries.
    for (const [args, tries] of [[["list", "--watch"], 1], [["list"], 4]] as const) {
      const before = connections;
      const result = await runProgram(Deno.execPath(), cliArgs(server, [...args]));
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /^error: Cannot reach the jobworker server at /);
      assert.doesNotMatch(result.stderr, STACK);
      assert.equal(connections - before, tries, `${args.join(" ")}: connections made`);
    }
  } finally {
    listener.close();
    await accepting.catch(() => {});
  }
});

/** A CLI process whose output is collected as it comes. */
function spawnCli(server: string, args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: cliArgs(server, args),
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout: Uint8Array[] = [];
  let gotOutput: () => void = () => {};
  const firstOutput = new Promise<void>((resolve) => gotOutput = resolve);
  const readOut = (async () => {
    for await (const chunk of child.stdout) {
      stdout.push(chunk);
      gotOutput();
    }
  })();
  const readErr = new Response(child.stderr).text();
  const done = (async () => {
    const status = await child.status;
    await readOut;
    return { code: status.code, stdout: concatBytes(stdout), stderr: await readErr };
  })();
  return { firstOutput, done };
}

test("the server killed under stream and run: each gives up after a minute, saying where its output stops and how to go on", async () => {
  const worker = await WorkerProcess.start({ certDir: pki.dir });
  let stopped = false;
  try {
    const loop = "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.2; done";
    const created = await runProgram(
      Deno.execPath(),
      cliArgs(worker.address, ["create", "sh", "-c", loop]),
    );
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    const stream = spawnCli(worker.address, ["stream", id]);
    const run = spawnCli(worker.address, ["run", "sh", "-c", loop]);
    await stream.firstOutput;
    await run.firstOutput;
    await worker.stop("SIGKILL");
    stopped = true;
    const [streamed, ran] = await Promise.all([stream.done, run.done]);
    for (const [what, result] of [["stream", streamed], ["run", ran]] as const) {
      assert.equal(result.code, 1, `${what}: ${result.stderr}`);
      assert.doesNotMatch(result.stderr, STACK);
      assert.match(result.stderr, /Cannot reach the jobworker server/);
      const gaveUp =
        /gave up resuming job ([0-9a-f-]{36})'s output after (\d+) s; what was written ends at byte (\d+): go on with "jobworker stream \1 --offset \3"/
          .exec(result.stderr);
      assert.ok(gaveUp, `${what} says where its output stops: ${result.stderr}`);
      assert.ok(Number(gaveUp[2]) >= 60, `${what} tried for a minute: ${gaveUp[2]} s`);
      assert.equal(Number(gaveUp[3]), result.stdout.length, `${what}: the offset is what it wrote`);
      if (what === "stream") assert.equal(gaveUp[1], id);
    }
  } finally {
    if (!stopped) await worker.stop();
  }
});

test("cleanup", async () => {
  await pki.remove();
});
