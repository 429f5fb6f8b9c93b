/**
 * The command line when its server is gone or is not a jobworker server: every case ends with one
 * clear line and exit code 1, without a hang or a stack trace; except `stream --verbose` once all
 * the output was written, whose note on how the job ended is not worth a failure (exit code 0).
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
import { parseLogLine } from "./helpers/log_lines.ts";

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

test("a service that is not jobworker (plain HTTP, an ssh banner, TLS without HTTP/2): one try, and the message says what answers, not that the server may be down", async () => {
  const encode = (text: string) => new TextEncoder().encode(text);
  // An HTTP/1.1 server answers whatever comes with a 400; sshd sends its banner first.
  const http = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ssh = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // TLS with the server's own certificate, but no ALPN: not HTTP/2.
  const tls = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(`${pki.dir}/server-cert.pem`),
    key: await Deno.readTextFile(`${pki.dir}/server-key.pem`),
  });
  const held: Deno.Conn[] = [];
  // Connections each listener accepted: one per try.
  const tries = new Map<Deno.Listener, number>();
  const accepted = (listener: Deno.Listener, conn: Deno.Conn) => {
    held.push(conn);
    tries.set(listener, (tries.get(listener) ?? 0) + 1);
  };
  const serving = [
    (async () => {
      for await (const conn of http) {
        accepted(http, conn);
        conn.read(new Uint8Array(4096)).then(() =>
          conn.write(encode("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
        ).catch(() => {});
      }
    })(),
    (async () => {
      for await (const conn of ssh) {
        accepted(ssh, conn);
        conn.write(encode("SSH-2.0-OpenSSH_9.2\r\n")).catch(() => {});
      }
    })(),
    (async () => {
      for await (const conn of tls) {
        accepted(tls, conn);
        conn.handshake().catch(() => {});
      }
    })(),
  ];
  try {
    const notTls = /Another service listens there \(plain HTTP, ssh, \.\.\.\)/;
    const cases: [Deno.Listener, RegExp, RegExp][] = [
      [http, /it does not speak TLS/, notTls],
      [ssh, /it does not speak TLS/, notTls],
      [tls, /it speaks TLS but not HTTP\/2/, /TLS-terminating proxy without HTTP\/2 \(gRPC\)/],
    ];
    for (const [listener, why, advice] of cases) {
      const server = `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
      const result = await runProgram(
        Deno.execPath(),
        cliArgs(server, ["--request-timeout", "5", "list"]),
      );
      assert.equal(result.code, 1, result.stderr);
      // It said "Cannot reach the jobworker server at ...: received corrupt message of type
      // InvalidContentType (...). Is the server running there (make serve, jobworker serve)?"
      assert.match(
        result.stderr,
        new RegExp(`^error: What answers at ${server} is not a jobworker server: ${why.source}`),
      );
      assert.match(result.stderr, advice);
      assert.match(result.stderr, /check the address \(--server, JOB_WORKER_ADDR, the context\)/);
      assert.doesNotMatch(result.stderr, /Is the server running there/);
      assert.doesNotMatch(result.stderr, STACK);
      // Not asked again: the same service answers the same (it was tried 1 + 3 times, ~2 s).
      assert.equal(tries.get(listener), 1, `${server}: one try`);
    }
  } finally {
    for (const listener of [http, ssh, tls]) listener.close();
    await Promise.allSettled(serving);
    for (const conn of held) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
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

test("the server killed after stream --verbose got all the output: a note that it could not learn how the job ended, exit code 0", async () => {
  const worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_METRICS_ADDR: "127.0.0.1:0" },
  });
  let stopped = false;
  try {
    const port = worker.logs.map(parseLogLine).find((l) => l?.msg === "metrics listening")
      ?.fields.port;
    assert.ok(port, "the worker logged no 'metrics listening' line");
    const streamsEnded = async () => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const line = text.split("\n").find((l) =>
        l.startsWith("jobworker_rpcs_total{") && l.includes('method="GetJobsStream"') &&
        l.includes('code="OK"')
      );
      return line ? Number(line.split(" ").at(-1)) : 0;
    };
    // More than a pipe holds, so that the command waits on its stdout (not read yet) with the
    // whole output and its end received; the job has ended before the stream starts.
    const bytes = 256 * 1024;
    const created = await runProgram(
      Deno.execPath(),
      cliArgs(worker.address, ["create", "head", "-c", String(bytes), "/dev/zero"]),
    );
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    for (let i = 0; i < 50; i++) {
      const got = await runProgram(Deno.execPath(), cliArgs(worker.address, ["get", id, "--json"]));
      if (/"status":\s*"COMPLETED"/.test(got.stdout)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: cliArgs(worker.address, ["stream", id, "--verbose"]),
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const readErr = new Response(child.stderr).text();
    // The worker has sent it all (the stream's end included), and it has had time to arrive.
    for (let i = 0; i < 300 && await streamsEnded() < 1; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await streamsEnded(), 1, "the stream did not end in 30 s");
    await new Promise((r) => setTimeout(r, 500));
    await worker.stop("SIGKILL");
    stopped = true;
    const out = new Uint8Array(await new Response(child.stdout).arrayBuffer());
    const status = await child.status;
    const stderr = await readErr;
    assert.equal(out.length, bytes, stderr);
    // All the output was written: how the job ended is a note, not a failure (it waited a
    // minute in silence and exited 1).
    assert.equal(status.code, 0, stderr);
    assert.doesNotMatch(stderr, STACK);
    assert.match(stderr, /^jobworker: connection lost \(.*\); retrying\n/);
    assert.match(
      stderr,
      new RegExp(`jobworker: could not learn how job ${id} ended \\(.*gave up after 6\\d s`),
    );
  } finally {
    if (!stopped) await worker.stop();
  }
});

test("cleanup", async () => {
  await pki.remove();
});
