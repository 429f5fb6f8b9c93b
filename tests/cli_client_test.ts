/**
 * The client as people use it, end to end against a real worker over mutual TLS: `run` and its
 * exit codes and Ctrl-C, `--rm`, id prefixes, `--json` shapes, completion scripts, contexts,
 * colour, `list --watch` on a pseudo-terminal, and `stream` resuming after a dropped connection.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { type ProgramResult, runProgram } from "./helpers/process.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { freePort } from "./helpers/free_port.ts";
import { parseLogLine } from "./helpers/log_lines.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const DENO_RUN = ["run", "--allow-all", "--no-prompt", "--cached-only", MAIN];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let pki: PkiFixture;
let worker: WorkerProcess;
let home: string;

interface Options {
  env?: Record<string, string>;
  /** Leave out --server and --cert-path. */
  bare?: boolean;
}

function connection(): string[] {
  return ["--server", worker.address, "--cert-path", pki.dir];
}

/** `jobworker ARGS` as a separate process, stdin from /dev/null, output piped (not a terminal). */
function jw(args: string[], options: Options = {}): Promise<ProgramResult> {
  return runProgram(
    Deno.execPath(),
    [...DENO_RUN, ...(options.bare ? [] : connection()), ...args],
    {
      env: { XDG_CONFIG_HOME: `${home}/config`, ...options.env },
    },
  );
}

async function jwJson(args: string[]): Promise<Record<string, unknown>> {
  const result = await jw([...args, "--json"]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
}

async function createJob(...args: string[]): Promise<string> {
  const created = await jw(["create", ...args]);
  assert.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  assert.match(id, UUID);
  return id;
}

/** A client process whose stdout is read as it comes, for signals and terminals. */
function spawn(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...DENO_RUN, ...connection(), ...args],
    env: { NO_COLOR: "1", XDG_CONFIG_HOME: `${home}/config` },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stdout = "";
  const decoder = new TextDecoder();
  const reading = (async () => {
    for await (const chunk of child.stdout) stdout += decoder.decode(chunk, { stream: true });
  })();
  const stderrText = new Response(child.stderr).text();
  return {
    child,
    stdout: () => stdout,
    async waitFor(text: string) {
      for (let i = 0; i < 600 && !stdout.includes(text); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(stdout.includes(text), `saw "${text}" in: ${stdout}`);
    },
    async end() {
      const status = await child.status;
      await reading;
      return { code: status.code, stdout, stderr: await stderrText };
    },
  };
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `client: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

test("start a worker", async () => {
  pki = await makePki();
  home = await Deno.makeTempDir({ prefix: "jobworker-client-test-" });
  // A filtered run may skip "stop the worker": the home goes at unload then (the worker and the
  // certificates go with the helpers' own unload listeners).
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(home, { recursive: true });
    } catch { /* removed */ }
  });
  worker = await WorkerProcess.start({ certDir: pki.dir });
});

test("run: output live and apart, the job's exit code", async () => {
  const ok = await jw(["run", "bash", "-c", "echo out; echo err >&2"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, "out\n");
  assert.equal(ok.stderr, "err\n");
  const three = await jw(["run", "bash", "-c", "echo before; exit 3"]);
  assert.equal(three.code, 3);
  assert.equal(three.stdout, "before\n");
  assert.equal(three.stderr, "", "no note from run: the exit code says it");
});

test("run: OOM-killed is 137, get says OOM", async () => {
  const oom = await jw([
    "run",
    "--max-memory",
    "16",
    "python3",
    "-c",
    "import os; print(os.environ['JOBWORKER_JOB_ID'], flush=True); b = bytearray(256 << 20)",
  ]);
  assert.equal(oom.code, 137, oom.stderr);
  const job = await jwJson(["get", oom.stdout.trim()]);
  assert.equal(job.oomKilled, true);
  assert.equal(job.status, "FAILED");
});

test("run: killed by a signal from outside is 128 + signal; stopped is 128 + SIGKILL", async () => {
  const marker = `${1000 + Math.random()}`.slice(0, 9);
  const run = spawn(["run", "bash", "-c", `echo ready; exec sleep ${marker}`]);
  await run.waitFor("ready");
  const pgrep = await runProgram("pgrep", ["-f", `^sleep ${marker}$`]);
  const pid = pgrep.stdout.trim().split("\n")[0]!;
  assert.match(pid, /^\d+$/, pgrep.stderr);
  Deno.kill(Number(pid), "SIGKILL");
  const killed = await run.end();
  assert.equal(killed.code, 137, killed.stderr);

  const stopped = spawn(["run", "bash", "-c", "echo ready; exec sleep 100"]);
  await stopped.waitFor("ready");
  const id = String(
    ((await jwJson(["list", "--status", "running"])).jobs as { id: string }[])[0]!.id,
  );
  assert.equal((await jw(["stop", "--force", id])).code, 0);
  assert.equal((await stopped.end()).code, 137);
  assert.equal((await jwJson(["get", id])).status, "STOPPED");
});

test("run: Ctrl-C stops the job; a second Ctrl-C detaches", async () => {
  const script = 'trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done';
  const once = spawn(["run", "bash", "-c", script]);
  await once.waitFor("ready");
  once.child.kill("SIGINT");
  const ended = await once.end();
  assert.equal(ended.code, 0, ended.stderr);
  assert.match(ended.stdout, /got TERM/);
  const jobs = (await jwJson(["list"])).jobs as { status: string; args: string[] }[];
  assert.equal(jobs.find((job) => job.args.includes(script))?.status, "STOPPED");

  // A PID 1 that ignores SIGTERM keeps running through the first Ctrl-C's stop (its grace).
  const twice = spawn(["run", "bash", "-c", 'trap "" TERM; echo ready; exec sleep 100']);
  await twice.waitFor("ready");
  twice.child.kill("SIGINT");
  await new Promise((r) => setTimeout(r, 300));
  twice.child.kill("SIGINT");
  const detached = await twice.end();
  assert.equal(detached.code, 130);
  assert.match(detached.stderr, /detached from job [0-9a-f-]{36}/);
});

test("run: SIGTERM or SIGHUP to the client stops the job as Ctrl-C does (none runs on unseen)", async () => {
  for (const signal of ["SIGTERM", "SIGHUP"] as const) {
    const script = `trap "echo got TERM; exit 0" TERM; echo ready ${signal}; ` +
      "while :; do sleep 0.1; done";
    const run = spawn(["run", "bash", "-c", script]);
    await run.waitFor("ready");
    run.child.kill(signal);
    const ended = await run.end();
    const jobs = (await jwJson(["list"])).jobs as { id: string; status: string; args: string[] }[];
    const job = jobs.find((j) => j.args.includes(script));
    if (job?.status === "RUNNING") await jw(["stop", "--force", job.id]);
    assert.equal(job?.status, "STOPPED", `${signal} to run left its job ${job?.status}`);
    assert.equal(ended.code, 0, `${signal}: ${ended.stderr}`);
    assert.match(ended.stdout, /got TERM/, signal);
  }
});

test("stop and rm of several jobs: an unknown one is named alone, the others are done", async () => {
  const unknown = "00000000-0000-4000-8000-000000000000";
  const running = await createJob("sleep", "100");
  const stopped = await jw(["stop", "--grace", "1", running, unknown]);
  assert.equal(stopped.code, 1, stopped.stderr);
  assert.equal(stopped.stderr, `error: No job with id "${unknown}"\n`);
  assert.match(stopped.stdout, new RegExp(`^${running} STOPPED`));
  assert.equal((await jwJson(["get", running])).status, "STOPPED");

  const [a, b] = [await createJob("true"), await createJob("true")];
  const busy = await createJob("sleep", "100");
  const removed = await jw(["rm", a, unknown, busy, b]);
  assert.equal(removed.code, 1, removed.stderr);
  assert.equal(removed.stdout, `${a}\n${b}\n`, "rm went on past the jobs it could not delete");
  const lines = removed.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2, removed.stderr);
  assert.equal(lines[0], `error: No job with id "${unknown}"`);
  assert.match(lines[1]!, new RegExp(`^error: job ${busy} is RUNNING`));
  assert.equal((await jw(["get", b])).code, 1, "the job after the failures was not deleted");
  assert.equal((await jw(["stop", "--force", busy])).code, 0);
});

test("run --rm deletes the ended job; --detach prints only the id", async () => {
  const rm = await jw(["run", "--rm", "bash", "-c", "echo $JOBWORKER_JOB_ID"]);
  assert.equal(rm.code, 0, rm.stderr);
  const id = rm.stdout.trim();
  const gone = await jw(["get", id]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /No job with id/);
  const detached = await jw(["run", "--detach", "sleep", "1"]);
  assert.equal(detached.code, 0);
  assert.match(detached.stdout.trim(), UUID);
});

test("id prefixes: unique works, ambiguous lists the candidates, none is exit 1", async () => {
  const id = await createJob("true");
  const got = await jwJson(["get", id.slice(0, 6)]);
  assert.equal(got.id, id);
  // Make jobs until two ids share a first character (at most 17 by pigeonhole).
  const ids = ((await jwJson(["list"])).jobs as { id: string }[]).map((job) => job.id);
  const shared = () => ids.find((a, i) => ids.some((b, j) => j !== i && b[0] === a[0]));
  while (!shared()) ids.push(await createJob("true"));
  const first = shared()![0]!;
  const ambiguous = await jw(["get", first]);
  assert.equal(ambiguous.code, 2);
  assert.match(ambiguous.stderr, new RegExp(`prefix "${first}" is ambiguous`));
  for (const candidate of ids.filter((other) => other.startsWith(first))) {
    assert.ok(ambiguous.stderr.includes(candidate), `lists ${candidate}`);
  }
  const none = await jw(["get", "zz"]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /No job with id "zz"/);
});

test("list: table with short ids, filters, -q", async () => {
  const id = await createJob("bash", "-c", "exit 4");
  await jw(["stream", id]);
  const listed = await jw(["list"]);
  assert.equal(listed.code, 0, listed.stderr);
  const [header, ...rows] = listed.stdout.split("\n");
  assert.match(header!, /^ID +STATUS +COMMAND +OWNER +AGE +DURATION +EXIT$/);
  const row = rows.find((line) => id.startsWith(line.split(" ")[0]!) && line.includes("exit 4"));
  assert.ok(row, listed.stdout);
  assert.ok(row.split(" ")[0]!.length >= 8);
  assert.match(row, /FAILED +bash -c 'exit 4' +alice +\S.* +4$/);
  assert.ok(!listed.stdout.includes("\x1b["), "no colour when not on a terminal");
  const failed = await jw(["list", "-q", "--status", "failed"]);
  const failedIds = failed.stdout.trim().split("\n");
  assert.ok(failedIds.includes(id));
  for (const other of failedIds) assert.match(other, UUID);
  const running = await jw(["list", "-q", "--status", "running"]);
  assert.ok(!running.stdout.includes(id));
  const nobody = await jw(["list", "-q", "--owner", "nobody-at-all"]);
  assert.equal(nobody.stdout, "");
});

test("--json shapes", async () => {
  const id = await createJob("bash", "-c", "echo hi; exit 2");
  await jw(["stream", id]);
  const job = await jwJson(["get", id]);
  for (
    const [key, type] of Object.entries({
      id: "string",
      command: "string",
      args: "object",
      status: "string",
      exitCode: "number",
      signal: "number",
      oomKilled: "boolean",
      reason: "string",
      owner: "string",
      createTime: "string",
      startTime: "string",
      endTime: "string",
      maxCPU: "number",
      maxMemory: "number",
      usage: "object",
      outputBytes: "number",
    })
  ) assert.equal(typeof job[key], type, key);
  assert.equal(job.exitCode, 2);
  assert.equal(job.outputBytes, 3);
  assert.ok(!Number.isNaN(Date.parse(job.createTime as string)));
  const list = await jwJson(["list"]);
  assert.ok(Array.isArray(list.jobs));
  assert.equal(typeof (list.countByStatus as Record<string, number>).FAILED, "number");
  const created = JSON.parse((await jw(["create", "--json", "true"])).stdout);
  assert.match(created.id as string, UUID);
  const stopped = await jw(["stop", created.id as string, "--json"]);
  assert.equal(JSON.parse(stopped.stdout)[0].id, created.id);
  const version = await jw(["version", "--json"]);
  const info = JSON.parse(version.stdout);
  assert.equal(typeof info.client.version, "string");
  assert.ok("server" in info);
});

test("completion scripts load in the shells that are installed", async () => {
  const bash = await runProgram("bash", [
    "-c",
    `source <("${Deno.execPath()}" ${DENO_RUN.join(" ")} completion bash) && complete -p jobworker`,
  ]);
  assert.equal(bash.code, 0, bash.stderr);
  assert.match(bash.stdout, /-F _jobworker jobworker/);
  // The function completes commands and flags.
  const words = await runProgram("bash", [
    "-c",
    `source <("${Deno.execPath()}" ${
      DENO_RUN.join(" ")
    } completion bash); COMP_WORDS=(jobworker li); COMP_CWORD=1; _jobworker; echo "\${COMPREPLY[@]}"; ` +
    `COMP_WORDS=(jobworker run --net); COMP_CWORD=2; _jobworker; echo "\${COMPREPLY[@]}"`,
  ]);
  assert.equal(words.stdout, "list\n--network\n", words.stderr);
  // Job ids come from the server, asked with the connection flags already on the line.
  const id = await createJob("true");
  const bin = `${home}/bin`;
  await Deno.mkdir(bin, { recursive: true });
  await Deno.writeTextFile(
    `${bin}/jobworker`,
    `#!/bin/sh\nexec "${Deno.execPath()}" ${DENO_RUN.join(" ")} "$@"\n`,
    { mode: 0o755 },
  );
  const ids = await runProgram("bash", [
    "-c",
    `source <(jobworker completion bash); COMP_WORDS=(jobworker ${connection().join(" ")} get ${
      id.slice(0, 6)
    }); COMP_CWORD=6; _jobworker; echo "\${COMPREPLY[@]}"`,
  ], { env: { PATH: `${bin}:${Deno.env.get("PATH")}`, XDG_CONFIG_HOME: `${home}/config` } });
  assert.equal(ids.stdout.trim(), id, ids.stderr);
  if ((await runProgram("sh", ["-c", "command -v fish"])).code === 0) {
    const fishIds = await runProgram("fish", [
      "-c",
      `jobworker completion fish | source; complete -C "jobworker ${connection().join(" ")} stop ${
        id.slice(0, 8)
      }"`,
    ], { env: { PATH: `${bin}:${Deno.env.get("PATH")}`, XDG_CONFIG_HOME: `${home}/config` } });
    assert.equal(fishIds.stdout.trim(), `${id}\tjob`, fishIds.stderr);
  }
  for (const shell of ["zsh", "fish"]) {
    if ((await runProgram("sh", ["-c", `command -v ${shell}`])).code !== 0) {
      console.warn(`${shell} is not installed: its completion script is not checked`);
      continue;
    }
    const load = shell === "zsh"
      ? `source <("${Deno.execPath()}" ${DENO_RUN.join(" ")} completion zsh)`
      : `"${Deno.execPath()}" ${
        DENO_RUN.join(" ")
      } completion fish | source; complete -c jobworker | head -1`;
    const loaded = await runProgram(shell, ["-c", load]);
    assert.equal(loaded.code, 0, `${shell}: ${loaded.stderr}`);
    assert.equal(loaded.stderr, "", shell);
  }
});

test("contexts: flags > environment > context > defaults", async () => {
  const add = await jw([
    "context",
    "add",
    "local",
    "--server",
    worker.address,
    "--cert-path",
    pki.dir,
  ], {
    bare: true,
  });
  assert.equal(add.code, 0, add.stderr);
  const viaContext = await jw(["list", "-q"], { bare: true });
  assert.equal(viaContext.code, 0, viaContext.stderr);
  // A context pointing nowhere: the environment, then a flag, win over it.
  await jw([
    "context",
    "add",
    "nowhere",
    "--server",
    "127.0.0.1:1",
    "--cert-path",
    pki.dir,
    "--use",
  ], {
    bare: true,
  });
  const broken = await jw(["list", "-q"], { bare: true });
  assert.equal(broken.code, 1);
  assert.match(broken.stderr, /127\.0\.0\.1:1/);
  const env = await jw(["list", "-q"], { bare: true, env: { JOB_WORKER_ADDR: worker.address } });
  assert.equal(env.code, 0, env.stderr);
  const flag = await jw(["--server", worker.address, "list", "-q"], {
    bare: true,
    env: { JOB_WORKER_ADDR: "127.0.0.1:1" },
  });
  assert.equal(flag.code, 0, flag.stderr);
  const named = await jw(["--context", "local", "list", "-q"], { bare: true });
  assert.equal(named.code, 0, named.stderr);
  const unknown = await jw(["--context", "nope", "list"], { bare: true });
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /No context "nope"/);
  const contexts = JSON.parse((await jw(["context", "list", "--json"], { bare: true })).stdout);
  assert.equal(contexts.current, "nowhere");
  assert.deepEqual(Object.keys(contexts.contexts).sort(), ["local", "nowhere"]);
  assert.equal((await jw(["context", "rm", "nowhere"], { bare: true })).code, 0);
});

/** Run a client on a pseudo-terminal (python3's pty); type `keys` after `delayS`. */
async function onTerminal(args: string[], env: Record<string, string>, keys = "", delayS = 0) {
  const program = [Deno.execPath(), ...DENO_RUN, ...connection(), ...args];
  const script = `
import os, pty, sys, time, json, select
argv = json.loads(sys.argv[1]); delay = float(sys.argv[2]); keys = sys.argv[3].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""; start = time.time(); sent = False
while True:
    if not sent and keys and time.time() - start > delay:
        os.write(fd, keys); sent = True
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    if time.time() - start > 60:
        os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
`;
  return await runProgram(
    "python3",
    ["-c", script, JSON.stringify(program), String(delayS), keys],
    {
      env: { XDG_CONFIG_HOME: `${home}/config`, TERM: "xterm", NO_COLOR: "", ...env },
    },
  );
}

test("colour on a terminal only, never with NO_COLOR", async () => {
  const id = await createJob("true");
  await jw(["stream", id]);
  const coloured = await onTerminal(["list"], {});
  assert.equal(coloured.code, 0, coloured.stdout);
  assert.ok(coloured.stdout.includes("\x1b[32mCOMPLETED\x1b[0m"), coloured.stdout);
  const plain = await onTerminal(["list"], { NO_COLOR: "1" });
  assert.equal(plain.code, 0, plain.stdout);
  assert.match(plain.stdout, /COMPLETED/);
  assert.ok(!plain.stdout.includes("\x1b["), plain.stdout);
});

test("list --watch refreshes in place on a terminal until Ctrl-C", async () => {
  const watched = await onTerminal(
    ["list", "--watch", "--interval", "1"],
    { NO_COLOR: "1" },
    "\x03",
    4,
  );
  assert.equal(watched.code, 0, watched.stdout);
  const refreshes = watched.stdout.split("\x1b[H\x1b[2J").length - 1;
  assert.ok(refreshes >= 2, `refreshed ${refreshes} times: ${watched.stdout}`);
  assert.match(watched.stdout, /Every 1s: jobworker list/);
});

test("stream resumes where it was when the connection drops: every byte once", async () => {
  // A TCP relay between client and worker whose connections the test cuts (node:net, since a
  // Deno.Conn whose readable is piped does not close its socket on close()).
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const relay = net.createServer((conn) => {
    accepted++;
    const upstream = net.connect(worker.port, "127.0.0.1");
    for (const socket of [conn, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
    }
    conn.pipe(upstream);
    upstream.pipe(conn);
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", () => resolve()));
  const relayPort = (relay.address() as net.AddressInfo).port;
  const id = await createJob(
    "bash",
    "-c",
    "for i in $(seq 1 60); do echo line$i; sleep 0.05; done",
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...DENO_RUN,
      "--server",
      `127.0.0.1:${relayPort}`,
      "--cert-path",
      pki.dir,
      "stream",
      id,
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const guard = setTimeout(() => child.kill("SIGKILL"), 60_000); // a hang fails, not hangs
  let stdout = "";
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout += chunk;
      if (stdout.includes("line10\n") && accepted === 1) {
        for (const socket of sockets) socket.destroy();
        sockets.clear();
      }
    }
  })();
  const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
  await reading;
  clearTimeout(guard);
  relay.close();
  for (const socket of sockets) socket.destroy();
  assert.equal(status.code, 0, stderr);
  assert.ok(accepted >= 2, `the client reconnected (${accepted} connections)`);
  const expected = Array.from({ length: 60 }, (_, i) => `line${i + 1}\n`).join("");
  assert.equal(stdout, expected);
});

test("stream resumes across a server reload (SIGHUP): every byte once", async () => {
  // A worker of its own on a fixed port, since a reload listens anew on the configured address.
  const port = freePort();
  const reloading = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_ADDR: `127.0.0.1:${port}` },
  });
  try {
    const server = ["--server", reloading.address, "--cert-path", pki.dir];
    const created = await runProgram(Deno.execPath(), [
      ...DENO_RUN,
      ...server,
      "create",
      "bash",
      "-c",
      "for i in $(seq 1 80); do echo line$i; sleep 0.05; done",
    ]);
    const id = created.stdout.trim();
    assert.match(id, UUID, created.stderr);
    const child = new Deno.Command(Deno.execPath(), {
      args: [...DENO_RUN, ...server, "stream", id],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const guard = setTimeout(() => child.kill("SIGKILL"), 90_000);
    let stdout = "";
    let reloaded = false;
    const reading = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        stdout += chunk;
        if (!reloaded && stdout.includes("line10\n")) {
          reloaded = true;
          reloading.process.kill("SIGHUP");
        }
      }
    })();
    const [status, stderr] = await Promise.all([
      child.status,
      new Response(child.stderr).text(),
    ]);
    await reading;
    clearTimeout(guard);
    assert.equal(status.code, 0, stderr);
    assert.ok(reloaded);
    assert.ok(
      reloading.logs.filter((line) => parseLogLine(line)?.msg === "listening").length >= 2,
      "the worker reloaded",
    );
    const expected = Array.from({ length: 80 }, (_, i) => `line${i + 1}\n`).join("");
    assert.equal(stdout, expected);
  } finally {
    await reloading.stop();
  }
});

test("stream --tail, --stderr, and the note on how the job ended", async () => {
  const id = await createJob(
    "bash",
    "-c",
    "for i in 1 2 3 4 5; do echo o$i; echo e$i >&2; done; exit 3",
  );
  const tail = await jw(["stream", id, "--tail", "2", "--stdout"]);
  assert.equal(tail.stdout, "o4\no5\n");
  assert.equal(tail.stderr, "", "no note when stderr is not a terminal");
  const errOnly = await jw(["stream", id, "--stderr", "--verbose"]);
  assert.equal(errOnly.stdout, "");
  assert.match(
    errOnly.stderr,
    /^e1\ne2\ne3\ne4\ne5\njobworker: job [0-9a-f-]+ FAILED \(exit code 3\)/,
  );
});

test("output cut at the server's limit: run and stream --verbose say so on stderr", async () => {
  const limited = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_MAX_OUTPUT_BYTES: "1000" },
  });
  try {
    const server = ["--server", limited.address, "--cert-path", pki.dir];
    const job = ["sh", "-c", "head -c 3000 /dev/zero | tr '\\0' x"];
    const ran = await runProgram(Deno.execPath(), [...DENO_RUN, ...server, "run", ...job]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, "x".repeat(1000));
    const note =
      /^jobworker: job ([0-9a-f-]{36})'s output was cut at 1000 bytes, the server's limit; the rest was discarded\n$/;
    const id = note.exec(ran.stderr)?.[1];
    assert.ok(id, `run's stderr: ${JSON.stringify(ran.stderr)}`);
    const streamed = await runProgram(Deno.execPath(), [
      ...DENO_RUN,
      ...server,
      "stream",
      "--verbose",
      id,
    ]);
    assert.equal(streamed.code, 0, streamed.stderr);
    assert.equal(streamed.stdout.length, 1000);
    assert.match(streamed.stderr, note);
    const whole = await runProgram(Deno.execPath(), [...DENO_RUN, ...connection(), "run", ...job]);
    assert.equal(whole.stdout.length, 3000);
    assert.equal(whole.stderr, "", "no note when nothing was cut");
  } finally {
    await limited.stop();
  }
});

test("messages: no such file, no such directory", async () => {
  const file = await jw(["create", "/no/such/binary"]);
  assert.equal(file.code, 1);
  assert.equal(file.stderr, "error: /no/such/binary: no such file\n");
  const dir = await jw(["create", "--workdir", "/nope", "true"]);
  assert.equal(dir.code, 1);
  assert.equal(dir.stderr, "error: --workdir /nope: no such directory\n");
  // An errno the client has no word for: the server's words for it, not its name ("eloop").
  const loop = `${home}/loop`;
  await Deno.symlink(loop, loop);
  const looped = await jw(["create", "--workdir", loop, "true"]);
  assert.equal(looped.code, 1);
  assert.equal(looped.stderr, `error: --workdir ${loop}: too many levels of symbolic links\n`);
  // A command that cannot be looked up: what the kernel said of it, not "no such file".
  const commands: [string[], string][] = [
    [[loop], `${loop}: too many levels of symbolic links`],
    [["--workdir", home, "./loop"], "./loop: too many levels of symbolic links"],
    [["/bin/true/"], "/bin/true/: not a directory"],
    [["/etc/passwd/x"], "/etc/passwd/x: not a directory"],
    [[`/tmp/${"x".repeat(300)}`], `/tmp/${"x".repeat(300)}: file name too long`],
  ];
  for (const [args, said] of commands) {
    const failed = await jw(["create", ...args]);
    assert.equal(failed.code, 1, args.join(" "));
    assert.equal(failed.stderr, `error: ${said}\n`);
  }
});

test("stop several ids; rm", async () => {
  const a = await createJob("sleep", "100");
  const b = await createJob("sleep", "100");
  const stopped = await jw(["stop", "--force", a.slice(0, 13), b]);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.equal(stopped.stderr, "", "no progress line when stderr is not a terminal");
  assert.match(stopped.stdout, new RegExp(`${a} STOPPED`));
  assert.match(stopped.stdout, new RegExp(`${b} STOPPED`));
  const removed = await jw(["rm", a, b]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout, `${a}\n${b}\n`);
  assert.equal((await jw(["get", a])).code, 1);
});

test("rm of several id prefixes lists the jobs once, not once per prefix", async () => {
  const ids = [await createJob("true"), await createJob("true"), await createJob("true")];
  const listings = () =>
    worker.logs.filter((line) => {
      const parsed = parseLogLine(line);
      return parsed?.msg === "audit" && parsed.fields.method === "jobworker.JobService/ListJobs";
    }).length;
  const before = listings();
  const removed = await jw(["rm", ...ids.map((id) => id.slice(0, 13))]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout, ids.map((id) => `${id}\n`).join(""));
  // The worker's log is read as it comes: wait for the first audit line, and a moment for more.
  for (let i = 0; i < 40 && listings() === before; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 300));
  const calls = listings() - before;
  assert.equal(calls, 1, `${calls} ListJobs calls for three prefixes`);
});

test("stop of several ids on a terminal: progress while it waits, a line per job as it ends", async () => {
  const quick = await createJob("sleep", "100");
  // Ignores SIGTERM: it ends only when the 2 s grace runs out (SIGKILL).
  const slow = await createJob(
    "bash",
    "-c",
    'trap "" TERM; echo ready; while :; do sleep 0.1; done',
  );
  for (let i = 0; i < 200; i++) {
    if ((await jw(["stream", slow, "--no-follow"])).stdout.includes("ready")) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const shown = await onTerminal(["stop", quick, slow, "--grace", "2"], { NO_COLOR: "1" });
  assert.equal(shown.code, 0, shown.stdout);
  const out = shown.stdout;
  const quickAt = out.indexOf(`${quick} STOPPED (SIGTERM)`);
  const slowAt = out.indexOf(`${slow} STOPPED (SIGKILL)`);
  assert.ok(quickAt >= 0 && slowAt > quickAt, `each job's line, in the order they ended: ${out}`);
  // While the slow one runs out its grace, the line says what is awaited, and is then cleared.
  const waiting = out.lastIndexOf(
    "stopping 1 job: SIGTERM sent, waiting for them to end " +
      "(SIGKILL after 2s)",
  );
  assert.ok(waiting > quickAt && waiting < slowAt, `a progress line between the two: ${out}`);
  assert.ok(out.slice(waiting, slowAt).includes("\r\x1b[K"), "the progress line is cleared");
});

test("stop the worker", async () => {
  const exit = await worker.stop();
  await pki.remove();
  await Deno.remove(home, { recursive: true });
  assert.equal(exit.code, 0);
});
