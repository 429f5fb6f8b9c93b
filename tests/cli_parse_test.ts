/**
 * Unit tests of the command line: argument parsing, request building, configuration, error
 * messages and human formatting. No server: the program runs against a fake client.
 *
 * Run: `deno test -A tests/cli_parse_test.ts`
 *
 * @module
 */
import { resolveCommand } from "../init/resolve_command.ts";
import { mayConnect } from "../cli/tls_warmup.ts";
import { ROOT_OPTIONS_WITH_VALUE, SERVER_OPTIONS } from "../cli/option_names.ts";
import { concatBytes } from "./helpers/process.ts";
import assert from "node:assert/strict";
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { parseServerAddress } from "../cli/address.ts";
import { provisionCertificates } from "../cli/pki/provision.ts";
import { buildCreateRequest } from "../cli/commands/create.ts";
import {
  ConfigError,
  type ConnectionFlags,
  loadConnectionSettings,
  resolveCertFiles,
  resolveServer,
} from "../cli/config.ts";
import type { CliDeps, JobApi } from "../cli/context.ts";
import type { ConnectionSettings } from "../cli/client.ts";
import {
  formatBytes,
  formatCommandLine,
  formatCpuTime,
  formatDuration,
  formatRelative,
  shellQuote,
  truncate,
} from "../cli/format.ts";
import { signalName } from "../proto/signals.ts";
import { OutputClosedError, type Sink } from "../cli/io.ts";
import { buildProgram, COMMAND_NAMES, commandNameIn, runCli } from "../cli/main.ts";
import { shortIdLength } from "../cli/jobs.ts";
import { startFailure } from "../cli/errors.ts";
import { formatCounts, jobToJson, renderJobList, statusSummary } from "../cli/render.ts";

// ---------------------------------------------------------------------------------------------
// A fake world

const NOW = new Date("2026-11-28T12:00:00Z");
const NOW_S = NOW.getTime() / 1000;

interface Call {
  method: string;
  args: unknown[];
}

interface Fake {
  deps: CliDeps;
  calls: Call[];
  flags: ConnectionFlags[];
  /** The settings each client was made with. */
  connected: ConnectionSettings[];
  /** How long the command slept, in all (the fake clock, with `clock`). */
  slept(): number;
  stdout(): string;
  stderr(): string;
  stdoutBytes(): Uint8Array;
}

function sink(parts: Uint8Array[], closed = false): Sink {
  return {
    write(bytes) {
      if (closed) return Promise.reject(new OutputClosedError("closed"));
      parts.push(bytes.slice());
      return Promise.resolve();
    },
  };
}

function sampleJob(extra: jobworker.IJob = {}): jobworker.Job {
  return jobworker.Job.create({
    id: "job-1",
    command: "bash",
    args: ["-c", "echo hi"],
    status: jobworker.JobStatus.RUNNING,
    owner: "alice",
    createTime: { seconds: NOW_S - 90 },
    startTime: { seconds: NOW_S - 89 },
    maxCPU: 50,
    maxMemory: 256,
    maxIOBPS: 0,
    maxPids: 100,
    usage: { cpuUsec: 1_234_567, memoryBytes: 12.3 * 1024 * 1024, memoryPeakBytes: 20 * 1048576 },
    outputBytes: 1234,
    ...extra,
  });
}

function rpcError(code: status, details: string): ServiceError {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), {
    code,
    details,
    metadata: new Metadata(),
  });
}

interface FakeOptions {
  fail?: ServiceError;
  chunks?: jobworker.IDataChunk[];
  stdoutClosed?: boolean;
  interruptAfterChunks?: number;
  jobs?: jobworker.IJob[];
  /** listJobsPage fails with these first, one per call, then answers. */
  listFailures?: ServiceError[];
  /** Ctrl-C after this many answered listJobsPage calls. */
  interruptAfterLists?: number;
  /** listJobsPage call number `n` (from 1) fails with what this returns, or answers. */
  listScript?: (n: number) => Error | undefined;
  /** `now()` moves on by what `sleep` waits (otherwise it stays at NOW). */
  clock?: boolean;
  /** getJob call number `n` (from 1) fails with what this returns, or answers. */
  getScript?: (n: number) => Error | undefined;
  /** What getJob answers (beside the id). */
  job?: jobworker.IJob;
  /** stream call number `n` (from 1) fails at once with what this returns, or streams. */
  streamScript?: (n: number) => Error | undefined;
}

function fake(options: FakeOptions = {}): Fake {
  const out: Uint8Array[] = [];
  const err: Uint8Array[] = [];
  const calls: Call[] = [];
  const flags: ConnectionFlags[] = [];
  const connected: ConnectionSettings[] = [];
  let slept = 0;
  let listCalls = 0;
  let getCalls = 0;
  let streamCalls = 0;
  let interrupt: ((count: number) => void) | undefined;
  const answer = <T>(method: string, args: unknown[], value: T): Promise<T> => {
    calls.push({ method, args });
    return options.fail ? Promise.reject(options.fail) : Promise.resolve(value);
  };
  const api: JobApi = {
    createJob: (req) => answer("createJob", [req], sampleJob({ id: "job-1" })),
    getJob: (id) => {
      const failure = options.getScript?.(++getCalls);
      if (failure) {
        calls.push({ method: "getJob-failed", args: [id] });
        return Promise.reject(failure);
      }
      return answer("getJob", [id], sampleJob({ ...options.job, id }));
    },
    stopJob: (id, opts) =>
      answer(
        "stopJob",
        [id, opts],
        sampleJob({ id, status: jobworker.JobStatus.STOPPED, exitCode: -1, signal: 15 }),
      ),
    listJobs: () =>
      answer("listJobs", [], jobworker.Jobs.create({ jobs: [sampleJob()], countByStatus: {} })),
    listJobsPage: (req) => {
      const failure = options.listFailures?.shift() ?? options.listScript?.(++listCalls);
      if (failure) {
        calls.push({ method: "listJobsPage-failed", args: [req] });
        return Promise.reject(failure);
      }
      const answered = calls.filter((c) => c.method === "listJobsPage").length + 1;
      if (answered === options.interruptAfterLists) interrupt?.(1);
      return answer(
        "listJobsPage",
        [req],
        jobworker.Jobs.create({ jobs: options.jobs ?? [sampleJob()], countByStatus: {} }),
      );
    },
    deleteJob: (id) => answer("deleteJob", [id], undefined),
    serverInfo: () =>
      answer(
        "serverInfo",
        [],
        jobworker.ServerInfo.create({ version: "9.9.9", callerName: "alice", callerRole: "admin" }),
      ),
    stream: (id, opts) => {
      calls.push({ method: "stream", args: [id, { ...opts, signal: undefined }] });
      const failure = options.streamScript?.(++streamCalls);
      return (async function* () {
        if (failure) throw failure;
        let n = 0;
        try {
          let offset = opts?.offset ?? 0;
          for (const chunk of options.chunks ?? []) {
            if (opts?.signal?.aborted) throw opts.signal.reason;
            yield jobworker.DataChunk.create({ offset, ...chunk });
            offset += chunk.payload?.length ?? 0;
            if (++n === options.interruptAfterChunks) interrupt?.(1);
          }
          if (opts?.signal?.aborted) throw opts.signal.reason;
        } finally {
          calls.push({ method: "stream-finished", args: [n] });
        }
      })();
    },
    close: () => void calls.push({ method: "close", args: [] }),
  };
  const deps: CliDeps = {
    stdout: sink(out, options.stdoutClosed),
    stderr: sink(err),
    env: () => undefined,
    now: () => options.clock ? new Date(NOW.getTime() + slept) : NOW,
    columns: () => undefined,
    stdoutIsTerminal: false,
    stderrIsTerminal: false,
    sleep: (ms) => {
      slept += ms;
      return Promise.resolve();
    },
    loadSettings: (f) => {
      flags.push(f);
      return Promise.resolve({
        server: f.server ?? "127.0.0.1:50051",
        caPem: "",
        certPem: "",
        keyPem: "",
      });
    },
    connect: (settings) => {
      connected.push(settings);
      return api;
    },
    onInterrupt: (handler) => {
      interrupt = handler;
      return () => (interrupt = undefined);
    },
  };
  const text = (parts: Uint8Array[]) => new TextDecoder().decode(concatBytes(parts));
  return {
    deps,
    calls,
    flags,
    connected,
    slept: () => slept,
    stdout: () => text(out),
    stderr: () => text(err),
    stdoutBytes: () => concatBytes(out),
  };
}

async function run(argv: string[], options?: FakeOptions) {
  const f = fake(options);
  const code = await runCli(argv, f.deps);
  return { code, ...f };
}

function createRequest(calls: Call[]): jobworker.ICreateJobReq {
  const call = calls.find((c) => c.method === "createJob");
  assert.ok(call, "createJob was called");
  const { requestId, ...req } = call.args[0] as jobworker.ICreateJobReq;
  assert.match(requestId ?? "", /^[0-9a-f-]{36}$/, "every create carries a fresh requestId");
  return req;
}

// ---------------------------------------------------------------------------------------------
// create: what belongs to the job

Deno.test("create: options after the command name belong to the job (bash -c)", async () => {
  const r = await run(["create", "bash", "-c", "echo hi"]);
  assert.equal(r.code, 0, r.stderr());
  assert.deepEqual(createRequest(r.calls), { command: "bash", args: ["-c", "echo hi"], env: [] });
  assert.equal(r.stdout(), "job-1\n");
  assert.equal(r.stderr(), "");
});

Deno.test("create: a job argument that looks like a create option stays the job's", async () => {
  const r = await run(["create", "bash", "--env", "X=1", "--timeout", "x", "--help"]);
  assert.equal(r.code, 0, r.stderr());
  assert.deepEqual(createRequest(r.calls).args, ["--env", "X=1", "--timeout", "x", "--help"]);
  assert.deepEqual(createRequest(r.calls).env, []);
});

Deno.test("create: repeated --env and every limit", async () => {
  const r = await run([
    "create",
    "--env",
    "A=B",
    "--env",
    "C=D=E",
    "--workdir",
    "/tmp",
    "--timeout",
    "30",
    "--max-cpu",
    "50",
    "--max-memory",
    "64",
    "--max-iobps=1048576",
    "--max-pids",
    "0",
    "sleep",
    "5",
  ]);
  assert.equal(r.code, 0, r.stderr());
  assert.deepEqual(createRequest(r.calls), {
    command: "sleep",
    args: ["5"],
    env: ["A=B", "C=D=E"],
    workDir: "/tmp",
    timeoutSeconds: 30,
    maxCPU: 50,
    maxMemory: 64,
    maxIOBPS: 1048576,
    maxPids: 0,
  });
});

Deno.test("create: -- ends the options; a later -- is the job's", async () => {
  let r = await run(["create", "--", "ls", "-l"]);
  assert.equal(r.code, 0, r.stderr());
  assert.deepEqual(createRequest(r.calls), { command: "ls", args: ["-l"], env: [] });

  r = await run(["create", "--env", "A=B", "--", "-dash-named", "x"]);
  assert.deepEqual(createRequest(r.calls), { command: "-dash-named", args: ["x"], env: ["A=B"] });

  r = await run(["create", "ls", "--", "-l"]);
  assert.deepEqual(createRequest(r.calls).args, ["--", "-l"]);
});

Deno.test("create: a missing command is a usage error", async () => {
  const r = await run(["create", "--env", "A=B"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr(), /missing required argument 'command'/);
  assert.equal(r.calls.length, 0);
});

Deno.test("run: --rm with --detach is a usage error, before any job is created", async () => {
  // --rm is the client's, once it has followed the job to its end: with --detach the job was
  // created and --rm silently dropped, so the job stayed.
  for (const argv of [["run", "--rm", "--detach", "true"], ["run", "-d", "--rm", "sleep", "1"]]) {
    const r = await run(argv);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.stderr(), /^error: --rm and --detach exclude each other: /);
    assert.equal(r.calls.length, 0, "no call made");
  }
  const detached = await run(["run", "--detach", "true"]);
  assert.equal(detached.code, 0, detached.stderr());
  assert.equal(detached.stdout(), "job-1\n");
});

Deno.test("buildCreateRequest leaves absent options out (server defaults)", () => {
  assert.deepEqual(buildCreateRequest("true", [], {}), { command: "true", args: [], env: [] });
  assert.deepEqual(buildCreateRequest("x", ["y"], { maxCpu: 0, workdir: "/w" }), {
    command: "x",
    args: ["y"],
    env: [],
    maxCPU: 0,
    workDir: "/w",
  });
});

// ---------------------------------------------------------------------------------------------
// numbers and usage errors

Deno.test("bad numbers are usage errors, checked before connecting", async () => {
  const cases = [
    ["create", "--timeout", "1.5", "ls"],
    ["create", "--timeout", "-1", "ls"],
    ["create", "--max-cpu", "abc", "ls"],
    ["create", "--max-memory", "", "ls"],
    ["create", "--max-pids", "1e3", "ls"],
    ["create", "--max-iobps", "2147483648", "ls"],
    ["create", "--timeout", " 5", "ls"],
    ["stop", "job-1", "--grace", "x"],
    // Past what the server takes (its timers' 2^31 - 1 ms): a usage error here, not its refusal.
    ["create", "--timeout", "2147484", "ls"],
    ["run", "--timeout", "99999999", "ls"],
    ["stop", "job-1", "--grace", "2147484"],
    ["stream", "job-1", "--offset", "-5"],
    ["stream", "job-1", "--offset", "9007199254740992"],
  ];
  for (const argv of cases) {
    const r = await run(argv);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.stderr(), /is invalid\. Expected a whole number/, argv.join(" "));
    assert.equal(r.calls.length, 0, argv.join(" "));
    assert.equal(r.flags.length, 0, "settings are not even loaded");
  }
});

Deno.test("options that must be at least 1 say so for any bad value", async () => {
  // `list --watch --interval 0` was accepted and polled the server in a loop without a pause
  // (about 250 ListJobs a second); and a non-number for --request-timeout said "from 0".
  for (
    const [argv, range] of [
      [["list", "--interval", "0"], "from 1 to 3600"],
      [["list", "--interval", "x"], "from 1 to 3600"],
      [["--request-timeout", "0", "list"], "from 1 to 86400"],
      [["--request-timeout", "abc", "list"], "from 1 to 86400"],
    ] as const
  ) {
    const r = await run([...argv]);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.stderr(), new RegExp(`is invalid\\. Expected a whole number ${range}\\.`));
    assert.equal(r.calls.length, 0, argv.join(" "));
  }
});

Deno.test("list --watch goes on across a lost connection (a worker reloading), and gives up on other errors", async () => {
  // More failures than a call's own retries: the worker did not listen for a while.
  const lost = () => rpcError(status.UNAVAILABLE, "connect ECONNREFUSED 127.0.0.1:50051");
  const r = await run(["list", "--watch"], {
    listScript: (n) => n >= 2 && n <= 6 ? lost() : undefined,
    interruptAfterLists: 2,
  });
  assert.equal(r.code, 0, r.stderr());
  assert.equal(r.calls.filter((c) => c.method === "listJobsPage-failed").length, 5);
  assert.equal(r.stdout().split("Every 2s: jobworker list").length - 1, 2, r.stdout());
  const denied = await run(["list", "--watch"], {
    listScript: (n) => n === 2 ? rpcError(status.PERMISSION_DENIED, "no") : undefined,
  });
  assert.equal(denied.code, 1);
  assert.equal(denied.calls.filter((c) => c.method === "listJobsPage").length, 1);
});

Deno.test("list --watch --json and -q: each refresh is data only, without the heading, one JSON line, or ids with a blank line between", async () => {
  // The heading "Every 2s: jobworker list (Ctrl-C to quit)" came before each refresh, so a
  // script reading `list --watch --json` got no JSON and `-q` a line that is no id.
  const json = await run(["list", "--watch", "--json"], { interruptAfterLists: 2 });
  assert.equal(json.code, 0, json.stderr());
  // JSON Lines: one compact document a refresh.
  const documents = json.stdout().split("\n");
  assert.equal(documents.length, 3, json.stdout());
  assert.equal(documents.pop(), "");
  for (const d of documents) assert.equal(JSON.parse(d).jobs[0].id, "job-1");
  // Ids with nothing between refreshes could not be told apart: a blank line between them.
  const quiet = await run(["list", "--watch", "-q"], { interruptAfterLists: 2 });
  assert.equal(quiet.code, 0, quiet.stderr());
  assert.equal(quiet.stdout(), "job-1\n\njob-1\n");
  const table = await run(["list", "--watch"], { interruptAfterLists: 1 });
  assert.match(table.stdout(), /^Every 2s: jobworker list \(Ctrl-C to quit\)\n\nID /);
});

Deno.test("list --watch: a server never reached fails at once, as plain list does", async () => {
  // A wrong --server or a stopped worker: nothing to ride out. It waited out the whole minute.
  const r = await run(["list", "--watch"], {
    listScript: (n) =>
      n === 1
        ? rpcError(status.UNAVAILABLE, "connect ECONNREFUSED 127.0.0.1:50051")
        : new Error("tried again"),
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr(), /^error: Cannot reach the jobworker server at 127\.0\.0\.1:50051/);
  assert.equal(r.calls.filter((c) => c.method === "listJobsPage-failed").length, 1);
  assert.equal(r.slept(), 0);
});

Deno.test("list --watch gives up after a minute of lost connection (by its clock)", async () => {
  const lost = () => rpcError(status.UNAVAILABLE, "connect ECONNREFUSED 127.0.0.1:50051");
  // A cap, so that a watch timing its patience by another clock fails instead of spinning.
  const r = await run(["list", "--watch"], {
    clock: true,
    listScript: (n) => n === 1 ? undefined : n < 500 ? lost() : new Error("still retrying"),
  });
  assert.equal(r.code, 1, r.stderr());
  assert.match(r.stderr(), /^error: Cannot reach the jobworker server/);
  // Lost 2 s in (after the first refresh's pause); given up once more than 60 s had passed,
  // the last pause (2 s) late at most.
  const lostFor = r.slept() - 2000;
  assert.ok(lostFor > 60_000 && lostFor <= 62_000, `gave up after ${lostFor} ms lost`);
});

Deno.test("list --watch retries by its own pauses only; single commands keep the call's retries", async () => {
  const watch = await run(["list", "--watch"], { interruptAfterLists: 1 });
  assert.deepEqual(watch.connected.map((s) => s.retry), [false]);
  for (const argv of [["list"], ["get", "job-1"], ["create", "true"]]) {
    const r = await run(argv);
    assert.equal(r.code, 0, r.stderr());
    assert.deepEqual(r.connected.map((s) => s.retry), [undefined], argv.join(" "));
  }
});

Deno.test("largest valid numbers pass", async () => {
  const r = await run(["create", "--max-iobps", "2147483647", "ls"]);
  assert.equal(r.code, 0, r.stderr());
  assert.equal(createRequest(r.calls).maxIOBPS, 2147483647);
  const s = await run(["stream", "job-1", "--offset", "9007199254740991", "--no-follow"]);
  assert.equal(s.code, 0, s.stderr());
  assert.deepEqual(s.calls.find((c) => c.method === "stream")?.args, ["job-1", {
    offset: 9007199254740991,
    noFollow: true,
    signal: undefined,
  }]);
});

Deno.test("--env needs KEY=VALUE", async () => {
  for (const value of ["NOEQUALS", "=value", ""]) {
    const r = await run(["create", "--env", value, "ls"]);
    assert.equal(r.code, 2, value);
    assert.match(r.stderr(), /Expected KEY=VALUE/);
  }
});

Deno.test("unknown commands and options are usage errors; --help is not", async () => {
  assert.equal((await run(["frobnicate"])).code, 2);
  assert.equal((await run(["list", "--bogus"])).code, 2);
  assert.equal((await run(["get"])).code, 2);
  assert.equal((await run(["get", "a", "b"])).code, 2);
  assert.equal((await run(["--role", "root", "list"])).code, 2);
  assert.equal((await run([])).code, 2);
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  for (
    const name of [
      "run",
      "create",
      "list|ls",
      "get",
      "stop",
      "stream",
      "rm",
      "certs",
      "context",
      "completion",
      "version",
      "serve",
    ]
  ) {
    assert.match(help.stdout(), new RegExp(`^  ${name.replace("|", "\\|")} `, "m"), name);
  }
  assert.doesNotMatch(help.stdout(), /^ {2}init /m);
  for (const sub of ["create", "list", "get", "stop", "stream", "certs"]) {
    const r = await run([sub, "--help"]);
    assert.equal(r.code, 0, sub);
    assert.match(r.stdout(), new RegExp(`Usage: jobworker ${sub}`), sub);
  }
});

Deno.test("the command line builds only the command it runs, with the whole program's result", async () => {
  const whole = buildProgram(fake().deps);
  const names = whole.commands.flatMap((c) => [c.name(), ...c.aliases()]);
  assert.deepEqual(
    [...COMMAND_NAMES].sort(),
    names.filter((n) => n !== "serve" && n !== "init").sort(),
  );

  assert.equal(commandNameIn(["list"]), "list");
  assert.equal(commandNameIn(["ls", "--json"]), "ls");
  assert.equal(commandNameIn(["--server", "a:1", "--role", "viewer", "stop", "x"]), "stop");
  assert.equal(commandNameIn(["--server=a:1", "get", "x"]), "get");
  assert.equal(
    commandNameIn(["--context", "list", "get", "x"]),
    "get",
    "list is --context's value",
  );
  for (
    const argv of [
      [],
      ["--help", "list"],
      ["help", "list"],
      ["frobnicate"],
      ["--bogus", "list"],
      ["completion", "bash"], // made from the whole program
    ]
  ) {
    assert.equal(commandNameIn(argv), undefined, argv.join(" "));
  }

  // The same outcome either way: calls made, output, error.
  const outcome = async (argv: string[], only: string | undefined) => {
    const f = fake();
    const output = { out: "", err: "" };
    let error = "";
    try {
      await buildProgram(f.deps, output, only).parseAsync(argv, { from: "user" });
    } catch (err) {
      error = String(err);
    }
    return { calls: f.calls, flags: f.flags, output, error, stdout: f.stdout() };
  };
  for (
    const argv of [
      ["--server", "a:1", "list", "--status", "running"],
      ["--context", "list", "get", "job-1"],
      ["--request-timeout", "5", "ls", "-q"],
      ["list", "--help"],
      ["create", "--server", "c:3", "ls", "--server", "z"],
      ["stop", "--bogus"],
    ]
  ) {
    const name = commandNameIn(argv);
    assert.ok(name, argv.join(" "));
    const [one, all] = [await outcome(argv, name), await outcome(argv, undefined)];
    assert.deepEqual(
      { ...one, calls: one.calls.map((c) => c.method) },
      { ...all, calls: all.calls.map((c) => c.method) },
      argv.join(" "),
    );
  }
});

Deno.test("serve reached here (not first) is a usage error pointing at the right form", async () => {
  const r = await run(["--server", "h:1", "serve"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr(), /"serve" must be the first argument/);
});

// ---------------------------------------------------------------------------------------------
// connection flags: before or after the subcommand

Deno.test("connection flags go before or after the subcommand; after wins", async () => {
  let r = await run(["--server", "a:1", "--role", "viewer", "list"]);
  assert.deepEqual(r.flags, [{ server: "a:1", role: "viewer" }]);

  r = await run(["list", "--server", "b:2", "--cert-path", "/c", "--ca", "ca.pem"]);
  assert.deepEqual(r.flags, [{ server: "b:2", certPath: "/c", ca: "ca.pem" }]);

  r = await run(["--server", "a:1", "--key", "k", "get", "x", "--server", "b:2"]);
  assert.deepEqual(r.flags, [{ server: "b:2", key: "k" }]);

  r = await run(["create", "--server", "c:3", "ls", "--server", "z"]);
  assert.deepEqual(r.flags, [{ server: "c:3" }]);
  assert.deepEqual(createRequest(r.calls).args, ["--server", "z"]);
});

Deno.test("resolveServer: flag, then JOB_WORKER_ADDR, then the default; malformed is a ConfigError", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assert.equal(resolveServer({}, env({})), "127.0.0.1:50051");
  assert.equal(resolveServer({}, env({ JOB_WORKER_ADDR: "h:7" })), "h:7");
  assert.equal(resolveServer({}, env({ JOB_WORKER_ADDR: "" })), "127.0.0.1:50051");
  assert.equal(resolveServer({ server: "f:8" }, env({ JOB_WORKER_ADDR: "h:7" })), "f:8");
  assert.throws(() => resolveServer({ server: "h:99999" }, env({})), ConfigError);
  assert.throws(() => resolveServer({}, env({ JOB_WORKER_ADDR: "a:b:c" })), /JOB_WORKER_ADDR/);
});

Deno.test("resolveCertFiles: role picks names; single files override; sources are named", () => {
  const none = () => undefined;
  let files = resolveCertFiles({}, none, "/repo/certs");
  assert.equal(files.ca.path, "/repo/certs/ca-cert.pem");
  assert.equal(files.cert.path, "/repo/certs/admin-client-cert.pem");
  assert.equal(files.key.path, "/repo/certs/admin-client-key.pem");

  files = resolveCertFiles(
    { role: "viewer", ca: "/x/ca.pem" },
    (n) => n === "JOB_WORKER_CERT_PATH" ? "/env/certs/" : undefined,
    "/repo/certs",
  );
  assert.equal(files.ca.path, "/x/ca.pem");
  assert.match(files.ca.fix, /--ca/);
  assert.equal(files.cert.path, "/env/certs/viewer-client-cert.pem");
  assert.match(files.cert.fix, /JOB_WORKER_CERT_PATH names \/env\/certs\//);

  files = resolveCertFiles({ certPath: "/flag" }, (_) => "/env", "/repo/certs");
  assert.equal(files.key.path, "/flag/admin-client-key.pem");
  assert.match(files.key.fix, /--cert-path names \/flag/);
});

Deno.test("loadConnectionSettings reads and checks the files, naming the one at fault", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await provisionCertificates({
      dir,
      serverNames: ["localhost"],
      clients: [{ role: "admin", commonName: "a" }, { role: "viewer", commonName: "v" }],
    });
    const none = () => undefined;
    const settings = await loadConnectionSettings({ certPath: dir, role: "viewer" }, none);
    assert.equal(settings.server, "127.0.0.1:50051");
    assert.equal(settings.certPem, await Deno.readTextFile(`${dir}/viewer-client-cert.pem`));
    assert.equal(settings.keyPem, await Deno.readTextFile(`${dir}/viewer-client-key.pem`));

    const fails = (flags: ConnectionFlags, message: RegExp) =>
      assert.rejects(loadConnectionSettings(flags, none), (err: Error) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, message);
        return true;
      });
    await fails(
      { certPath: dir, key: `${dir}/viewer-client-key.pem` },
      /^Client key ".*viewer-client-key\.pem" does not belong to client certificate ".*admin-client-cert\.pem"/,
    );
    await fails(
      { certPath: dir, ca: `${dir}/ca-key.pem` },
      /^CA certificate ".*ca-key\.pem" is not a PEM certificate .*: check --ca$/,
    );
    await Deno.remove(`${dir}/admin-client-key.pem`);
    await fails(
      { certPath: dir },
      /^Client key ".*\/admin-client-key\.pem" not found: --cert-path names .*JOB_WORKER_CERT_PATH.*--key FILE/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseServerAddress: names, IPv4, IPv6 in brackets, default port", () => {
  assert.deepEqual(parseServerAddress("example.com:7000"), {
    host: "example.com",
    port: 7000,
    family: 0,
    target: "example.com:7000",
  });
  assert.deepEqual(parseServerAddress("10.0.0.5"), {
    host: "10.0.0.5",
    port: 50051,
    family: 4,
    target: "10.0.0.5:50051",
  });
  assert.deepEqual(parseServerAddress("[::1]:9"), {
    host: "::1",
    port: 9,
    family: 6,
    target: "[::1]:9",
  });
  assert.equal(parseServerAddress("[fe80::1]").port, 50051);
  assert.equal(parseServerAddress("::1").target, "[::1]:50051");
  for (const bad of ["", ":80", "h:0", "h:65536", "h:x", "a:b:c", "[nothost]:1", "h/x:1"]) {
    assert.throws(() => parseServerAddress(bad), TypeError, bad);
  }
});

// ---------------------------------------------------------------------------------------------
// server errors

Deno.test("server errors become one-line messages with exit code 1", async () => {
  const cases: [string[], ServiceError, RegExp][] = [
    [
      ["get", "x"],
      rpcError(status.NOT_FOUND, 'no job with id "x"'),
      /^error: No job with id "x"\n$/,
    ],
    [
      ["create", "ls"],
      rpcError(status.PERMISSION_DENIED, `role "viewer" may not call CreateJob`),
      /^error: Permission denied: role "viewer" may not call CreateJob\n$/,
    ],
    [
      ["create", "nope"],
      rpcError(status.INVALID_ARGUMENT, 'command not found: "nope" (PATH=/usr/bin:/bin)'),
      /^error: nope: command not found \(the job's PATH is \/usr\/bin:\/bin\)\n$/,
    ],
    [
      ["stop", "x"],
      rpcError(status.FAILED_PRECONDITION, "the worker is shutting down"),
      /^error: the worker is shutting down\n$/,
    ],
    [
      ["create", "ls"],
      rpcError(
        status.RESOURCE_EXHAUSTED,
        "the server already runs 1000 jobs, its limit (JOB_WORKER_MAX_JOBS)",
      ),
      /^error: the server already runs 1000 jobs, its limit \(JOB_WORKER_MAX_JOBS\)\n$/,
    ],
    [
      ["--server", "10.1.2.3:4", "list"],
      rpcError(
        status.UNAVAILABLE,
        "No connection established. Last error: Error: connect ECONNREFUSED 10.1.2.3:4. Resolution note: ",
      ),
      /^error: Cannot reach the jobworker server at 10\.1\.2\.3:4: connect ECONNREFUSED 10\.1\.2\.3:4\. Is the server running there .*\n$/,
    ],
    [
      ["list"],
      rpcError(
        status.UNAVAILABLE,
        "No connection established. Last error: Error: unable to verify the first certificate",
      ),
      /^error: TLS handshake with the jobworker server at 127\.0\.0\.1:50051 failed: the server's certificate is not signed by the CA the client trusts/,
    ],
    [
      ["list"],
      rpcError(
        status.UNAVAILABLE,
        "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames",
      ),
      /^error: TLS handshake .* failed: the server's certificate does not name "127\.0\.0\.1"/,
    ],
  ];
  for (const [argv, err, expected] of cases) {
    const r = await run(argv, { fail: err });
    assert.equal(r.code, 1, argv.join(" "));
    assert.match(r.stderr(), expected);
    assert.equal(r.stdout(), "");
    assert.ok(r.calls.some((c) => c.method === "close"), "the client is closed");
  }
});

// ---------------------------------------------------------------------------------------------
// stop, get, list

Deno.test("stop passes grace and force, prints the final status line", async () => {
  const stopCall = (calls: Call[]) => calls.find((c) => c.method === "stopJob")?.args;
  let r = await run(["stop", "job-1", "--grace", "5"]);
  assert.equal(r.code, 0, r.stderr());
  assert.deepEqual(stopCall(r.calls), ["job-1", { graceSeconds: 5, force: false }]);
  assert.equal(r.stdout(), "job-1 STOPPED (SIGTERM)\n");
  r = await run(["stop", "job-1", "--force"]);
  assert.deepEqual(stopCall(r.calls), ["job-1", { graceSeconds: 0, force: true }]);
});

Deno.test("get shows units, limits and usage; --json is machine-readable", async () => {
  const r = await run(["get", "job-1"]);
  assert.equal(r.code, 0, r.stderr());
  const text = r.stdout();
  assert.match(text, /^ID: +job-1$/m);
  assert.match(text, /^Command: +bash -c 'echo hi'$/m);
  assert.match(text, /^Status: +RUNNING$/m);
  assert.match(text, /^Duration: +1m 29s \(running\)$/m);
  assert.match(text, /^ {2}CPU: +50% of one core$/m);
  assert.match(text, /^ {2}Memory: +256 MiB$/m);
  assert.match(text, /^ {2}IO: +unlimited$/m);
  assert.match(text, /^ {2}CPU time: +1\.23 s$/m);
  assert.match(text, /^ {2}Memory: +12\.3 MiB \(peak 20\.0 MiB\)$/m);
  assert.match(text, /^Output: +1\.21 KiB \(1234 bytes\)$/m);
  assert.match(text, /^Timeout: +none$/m);

  const json = JSON.parse((await run(["get", "job-1", "--json"])).stdout());
  assert.equal(json.id, "job-1");
  assert.equal(json.status, "RUNNING");
  assert.equal(json.createTime, new Date((NOW_S - 90) * 1000).toISOString());
  assert.equal(json.endTime, null);
  assert.equal(json.usage.cpuUsec, 1_234_567);
});

Deno.test("list: a table newest first as given, then counts per status", () => {
  const jobs = jobworker.Jobs.create({
    jobs: [
      sampleJob({ id: "b", owner: "bob", createTime: { seconds: NOW_S - 30 } }),
      sampleJob({
        id: "a",
        status: jobworker.JobStatus.COMPLETED,
        command: "/usr/bin/python3",
        args: ["-c", "print('x' * 100)", "and more arguments that make it long"],
        createTime: { seconds: NOW_S - 7200 },
      }),
    ],
    countByStatus: { COMPLETED: 5, RUNNING: 2, FAILED: 0 },
  });
  const text = renderJobList(jobs, { now: NOW, width: 70 });
  const lines = text.split("\n");
  assert.deepEqual(lines.slice(0, 3), [
    "ID  STATUS     COMMAND                  OWNER  AGE      DURATION  EXIT",
    "b   RUNNING    bash -c 'echo hi'        bob    30s ago  1m 29s",
    "a   COMPLETED  /usr/bin/python3 -c 'p…  alice  2h ago   1m 29s    0",
  ]);
  assert.ok(lines.every((line) => line.length <= 70), "fits the terminal");
  assert.equal(lines[3], "2 RUNNING, 5 COMPLETED");
  assert.equal(renderJobList(jobworker.Jobs.create({}), { now: NOW }), "no jobs\n");
});

Deno.test("formatCounts: status order, unknown statuses last, zeros left out", () => {
  assert.equal(
    formatCounts({ STOPPED: 1, RUNNING: 3, NEWSTATE: 2, FAILED: 0 }),
    "3 RUNNING, 1 STOPPED, 2 NEWSTATE",
  );
  assert.equal(formatCounts({}), "no jobs");
});

Deno.test("statusSummary and JSON name signals and OOM kills", () => {
  const oom = sampleJob({
    status: jobworker.JobStatus.FAILED,
    exitCode: -1,
    signal: 9,
    oomKilled: true,
  });
  assert.equal(statusSummary(oom), "FAILED (OOM killed, SIGKILL)");
  assert.equal(
    statusSummary(sampleJob({ status: jobworker.JobStatus.FAILED, exitCode: 3 })),
    "FAILED (exit code 3)",
  );
  assert.equal(statusSummary(sampleJob()), "RUNNING");
  assert.equal(jobToJson(oom).signalName, "SIGKILL");
});

// ---------------------------------------------------------------------------------------------
// stream

Deno.test("stream: stdout and stderr chunks go apart, byte-exact", async () => {
  const binary = new Uint8Array(256).map((_, i) => i);
  const r = await run(["stream", "job-1", "--offset", "7"], {
    chunks: [
      { payload: binary, stream: jobworker.OutputStream.STDOUT },
      { payload: new TextEncoder().encode("oops\n"), stream: jobworker.OutputStream.STDERR },
      { payload: new Uint8Array([0, 255]), stream: jobworker.OutputStream.STDOUT },
    ],
  });
  assert.equal(r.code, 0, r.stderr());
  assert.deepEqual(r.calls.find((c) => c.method === "stream")?.args, [
    "job-1",
    { offset: 7, noFollow: false, signal: undefined },
  ]);
  assert.deepEqual(r.stdoutBytes(), new Uint8Array([...binary, 0, 255]));
  assert.equal(r.stderr(), "oops\n");
});

Deno.test("stream: a closed stdout (| head) ends quietly with exit code 0", async () => {
  const chunk = { payload: new Uint8Array(10), stream: jobworker.OutputStream.STDOUT };
  const r = await run(["stream", "job-1"], { chunks: [chunk, chunk, chunk], stdoutClosed: true });
  assert.equal(r.code, 0);
  assert.equal(r.stderr(), "");
  // The consumer stopped at the first chunk, which ends (cancels) the stream.
  assert.deepEqual(r.calls.find((c) => c.method === "stream-finished")?.args, [0]);
});

Deno.test("stream: Ctrl-C cancels the stream, exit code 130, no message", async () => {
  const chunk = { payload: new Uint8Array([65]), stream: jobworker.OutputStream.STDOUT };
  const r = await run(["stream", "job-1"], {
    chunks: [chunk, chunk, chunk, chunk],
    interruptAfterChunks: 2,
  });
  assert.equal(r.code, 130);
  assert.equal(r.stdout(), "AA");
  assert.equal(r.stderr(), "");
});

Deno.test("stream gives up resuming after a minute of lost connection (by its clock)", async () => {
  const lost = () => rpcError(status.UNAVAILABLE, "connect ECONNREFUSED 127.0.0.1:50051");
  const r = await run(["stream", "job-1"], {
    clock: true,
    // A cap, so that patience counted on another clock fails instead of spinning.
    streamScript: (n) => n < 500 ? lost() : new Error("still retrying"),
  });
  assert.equal(r.code, 1, r.stderr());
  assert.match(r.stderr(), /gave up resuming job job-1's output after 6\d s/);
  assert.ok(r.slept() > 60_000 && r.slept() <= 62_000, `${r.slept()}`);
});

/** What the `stream --verbose` cases below stream, and the connection they lose after it. */
const verboseChunk = {
  payload: new TextEncoder().encode("out\n"),
  stream: jobworker.OutputStream.STDOUT,
};
const connectionLost = () => rpcError(status.UNAVAILABLE, "connect ECONNREFUSED 127.0.0.1:50051");

Deno.test("stream --verbose: the GetJob after the output rides out a reload and says so", async () => {
  const lost = connectionLost;
  const r = await run(["stream", "job-1", "--verbose"], {
    chunks: [verboseChunk],
    clock: true,
    getScript: (n) => n <= 3 ? lost() : undefined,
    job: { status: jobworker.JobStatus.FAILED, exitCode: 3 },
  });
  assert.equal(r.code, 0, r.stderr());
  assert.equal(r.stdout(), "out\n");
  const lines = r.stderr().split("\n");
  // Said once, on the first retry, not silently waited.
  assert.equal(
    lines[0],
    "jobworker: connection lost (connect ECONNREFUSED 127.0.0.1:50051); retrying",
  );
  assert.equal(r.stderr().split("connection lost").length - 1, 1, r.stderr());
  assert.match(lines[1]!, /^jobworker: job job-1 /);
  assert.equal(r.calls.filter((c) => c.method === "getJob-failed").length, 3);
});

Deno.test("stream --verbose: a worker gone for good after the output: a note, exit code 0", async () => {
  const lost = connectionLost;
  const r = await run(["stream", "job-1", "--verbose"], {
    chunks: [verboseChunk],
    clock: true,
    // A cap, so that patience counted on another clock fails instead of spinning.
    getScript: (n) => n < 500 ? lost() : new Error("still retrying"),
  });
  assert.equal(r.code, 0, r.stderr());
  assert.equal(r.stdout(), "out\n");
  assert.equal(
    r.stderr(),
    "jobworker: connection lost (connect ECONNREFUSED 127.0.0.1:50051); retrying\n" +
      "jobworker: could not learn how job job-1 ended (connect ECONNREFUSED 127.0.0.1:50051; " +
      "gave up after 62 s of retries; see jobworker get job-1)\n",
  );
  assert.ok(r.slept() > 60_000 && r.slept() <= 62_000, `${r.slept()}`);
});

// ---------------------------------------------------------------------------------------------
// human units

Deno.test("formatBytes", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1024), "1.00 KiB");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(12.3 * 1024 * 1024), "12.3 MiB");
  assert.equal(formatBytes(256 * 1024 * 1024), "256 MiB");
  assert.equal(formatBytes(1024 * 1024 - 1), "1.00 MiB");
  assert.equal(formatBytes(5 * 1024 ** 3), "5.00 GiB");
});

Deno.test("formatCpuTime and formatDuration", () => {
  assert.equal(formatCpuTime(0), "0 s");
  assert.equal(formatCpuTime(850), "850 µs");
  assert.equal(formatCpuTime(12_345), "12.3 ms");
  assert.equal(formatCpuTime(1_234_567), "1.23 s");
  assert.equal(formatCpuTime(3_723_000_000), "1h 02m");
  assert.equal(formatDuration(999), "999 ms");
  assert.equal(formatDuration(30_000), "30 s");
  assert.equal(formatDuration(12_345), "12.3 s");
  assert.equal(formatDuration(59_990), "1m 00s");
  assert.equal(formatDuration(303_000), "5m 03s");
  assert.equal(formatDuration(7_500_000), "2h 05m");
  assert.equal(formatDuration(3 * 86_400_000 + 4 * 3_600_000), "3d 04h");
});

Deno.test("formatRelative", () => {
  const ago = (s: number) => formatRelative(new Date(NOW.getTime() - s * 1000), NOW);
  assert.equal(ago(-5), "just now");
  assert.equal(ago(0), "just now");
  assert.equal(ago(12), "12s ago");
  assert.equal(ago(300), "5m ago");
  assert.equal(ago(3 * 3600 + 5), "3h ago");
  assert.equal(ago(4 * 86400), "4d ago");
});

Deno.test("signalName uses Linux numbers", () => {
  assert.equal(signalName(9), "SIGKILL");
  assert.equal(signalName(15), "SIGTERM");
  assert.equal(signalName(11), "SIGSEGV");
  assert.equal(signalName(10), "SIGUSR1");
  assert.equal(signalName(34), "SIGRTMIN");
  assert.equal(signalName(36), "SIGRTMIN+2");
  assert.equal(signalName(64), "SIGRTMAX");
  assert.equal(signalName(99), "signal 99");
});

Deno.test("get, list and stream's note show a job's text with control characters escaped", async () => {
  // What a job's creator wrote (env, working directory) and what the server says (owner, reason)
  // reached the reader's terminal as it was: an escape sequence in an env value recoloured it,
  // a newline broke the layout. The command line was already quoted.
  const job: jobworker.IJob = {
    env: ["PLAIN=1", "K=\x1b[31mred", "T=\x1b]0;title\x07"],
    workDir: "/tmp/a\nb",
    owner: "eve\x1b[2J",
    user: "0:0",
    status: jobworker.JobStatus.FAILED,
    exitCode: 3,
    endTime: { seconds: NOW_S - 1 },
    reason: "exited with code 3\x1b[1A",
  };
  // deno-lint-ignore no-control-regex
  const control = /[\x00-\x08\x0b-\x1f\x7f]/;
  const get = await run(["get", "job-1"], { job });
  assert.equal(get.code, 0, get.stderr());
  assert.doesNotMatch(get.stdout(), control);
  assert.match(
    get.stdout(),
    /^Env: +PLAIN=1\n +\$'K=\\x1b\[31mred'\n +\$'T=\\x1b\]0;title\\x07'$/m,
  );
  assert.match(get.stdout(), /^Workdir: +\$'\/tmp\/a\\nb'$/m);
  assert.match(get.stdout(), /^Owner: +\$'eve\\x1b\[2J'$/m);
  assert.match(get.stdout(), /^Reason: +\$'exited with code 3\\x1b\[1A'$/m);
  const list = await run(["list"], { jobs: [sampleJob({ ...job, id: "job-1" })] });
  assert.equal(list.code, 0, list.stderr());
  assert.doesNotMatch(list.stdout(), control);
  assert.match(list.stdout(), /\$'eve\\x1b\[2J'/);
  const stream = await run(["stream", "job-1", "--verbose"], { job });
  assert.equal(stream.code, 0, stream.stderr());
  assert.doesNotMatch(stream.stderr(), control);
  assert.match(stream.stderr(), /FAILED \(exit code 3\): \$'exited with code 3\\x1b\[1A'\n$/);
});

Deno.test("C1 controls (CSI U+009B) and DEL are escaped in text and --json output alike", async () => {
  // CSI alone starts an escape sequence on terminals that take 8-bit controls: printable and
  // shellQuote let U+0080-U+009F through raw, and JSON.stringify leaves DEL and C1 as they are.
  const job: jobworker.IJob = {
    env: ["K=\u009b2J"],
    owner: "eve\x7f",
    user: "0:0",
    status: jobworker.JobStatus.FAILED,
    exitCode: 3,
    endTime: { seconds: NOW_S - 1 },
    reason: "gone\u009b1A",
  };
  // deno-lint-ignore no-control-regex
  const raw = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;
  const get = await run(["get", "job-1"], { job });
  assert.equal(get.code, 0, get.stderr());
  assert.doesNotMatch(get.stdout(), raw);
  // In bash's $'...', \u009b is the character; \x9b would be a lone byte.
  assert.match(get.stdout(), /^Env: +\$'K=\\u009b2J'$/m);
  assert.match(get.stdout(), /^Owner: +\$'eve\\x7f'$/m);
  assert.match(get.stdout(), /^Reason: +\$'gone\\u009b1A'$/m);
  const json = await run(["get", "job-1", "--json"], { job });
  assert.equal(json.code, 0, json.stderr());
  assert.doesNotMatch(json.stdout(), raw);
  assert.match(json.stdout(), /"owner": "eve\\u007f"/);
  assert.equal(JSON.parse(json.stdout()).reason, "gone\u009b1A", "the same value once parsed");
  const list = await run(["list", "--json"], { jobs: [sampleJob({ ...job, id: "job-1" })] });
  assert.equal(list.code, 0, list.stderr());
  assert.doesNotMatch(list.stdout(), raw);
  assert.equal(shellQuote("a\u009bb"), `$'a\\u009bb'`);
  assert.equal(shellQuote("\x7f"), `$'\\x7f'`);
});

Deno.test("shell quoting and truncation for display", () => {
  assert.equal(shellQuote("ls"), "ls");
  assert.equal(shellQuote("/usr/bin/a-b_c.d=e"), "/usr/bin/a-b_c.d=e");
  assert.equal(shellQuote("echo hi"), "'echo hi'");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(shellQuote(""), "''");
  assert.equal(shellQuote("a\nb\tc'"), `$'a\\nb\\tc\\''`);
  assert.equal(shellQuote("\x01"), `$'\\x01'`);
  assert.equal(formatCommandLine("bash", ["-c", "echo hi"]), "bash -c 'echo hi'");
  assert.equal(truncate("abcdef", 6), "abcdef");
  assert.equal(truncate("abcdefg", 6), "abcde…");
});

// ---------------------------------------------------------------------------------------------
// version, ids, start failures, contexts

Deno.test("--version is the version command: client, then the server's facts", async () => {
  const r = await run(["--version"]);
  assert.equal(r.code, 0, r.stderr());
  assert.match(r.stdout(), /^Client: jobworker \d+\.\d+\.\d+\nServer: jobworker 9\.9\.9\n/);
  assert.match(r.stdout(), /You: +alice \(admin\)/);
  assert.ok(r.calls.some((c) => c.method === "serverInfo"));
});

Deno.test("shortIdLength: unique among the ids, at least 8", () => {
  assert.equal(shortIdLength(["0123456789", "abcdefghij"]), 8);
  assert.equal(shortIdLength(["aaaaaaaaa1x", "aaaaaaaaa2x"]), 10);
  assert.equal(shortIdLength([]), 8);
});

Deno.test("start failures are said as a shell would", () => {
  assert.equal(
    startFailure('command: command not found: "/no/such/binary"'),
    "/no/such/binary: no such file",
  );
  assert.equal(
    startFailure('workDir: entering workDir "/nope": chdir failed: ENOENT (No such file)'),
    "--workdir /nope: no such directory",
  );
  assert.equal(startFailure("something else"), undefined);
});

Deno.test("start failures as init words them are said as a shell would, whatever the value", () => {
  const said = (command: string, env: string[] = []) => {
    const found = resolveCommand(command, env);
    assert.ok(!found.ok);
    return startFailure(`command: ${found.message}`);
  };
  const path = "/opt/" + "long/".repeat(20) + "bin:/usr/bin";
  assert.equal(
    said("nope", [`PATH=${path}`]),
    `nope: command not found (the job's PATH is ${path})`,
  );
  assert.equal(said('/no/such"dir/x'), '/no/such\\"dir/x: no such file');
  assert.equal(said("/no/\u001b[2J"), "/no/\\u001b[2J: no such file");
  // Not "no such file" for a path that cannot be looked up: what the kernel said of it.
  assert.equal(said("/etc/passwd/x"), "/etc/passwd/x: not a directory");
  assert.equal(said("/bin/true/"), "/bin/true/: not a directory");
  const long = `/tmp/${"x".repeat(300)}`;
  assert.equal(said(long), `${long}: file name too long`);
  assert.equal(
    startFailure(
      'command: "./loop" cannot be looked up: ELOOP (too many levels of symbolic links)',
    ),
    "./loop: too many levels of symbolic links",
  );
  assert.equal(
    startFailure('command: "./x" cannot be looked up: errno 121 (unknown error)'),
    "./x: errno 121 (unknown error)",
  );
  assert.equal(
    startFailure('workDir: entering workDir "/we\\"ird": chdir failed: ENOENT (No such file)'),
    '--workdir /we\\"ird: no such directory',
  );
});

Deno.test("contexts sit below flags and environment", () => {
  const context = { server: "ctx:1", certPath: "/ctx" };
  const env = (values: Record<string, string>) => (name: string) => values[name];
  assert.equal(resolveServer({}, env({}), context), "ctx:1");
  assert.equal(resolveServer({}, env({ JOB_WORKER_ADDR: "env:2" }), context), "env:2");
  assert.equal(
    resolveServer({ server: "flag:3" }, env({ JOB_WORKER_ADDR: "env:2" }), context),
    "flag:3",
  );
  assert.equal(resolveCertFiles({}, env({}), "/default", context).ca.path, "/ctx/ca-cert.pem");
  assert.equal(
    resolveCertFiles({}, env({ JOB_WORKER_CERT_PATH: "/env" }), "/default", context).ca.path,
    "/env/ca-cert.pem",
  );
});

Deno.test("TLS warm-up: judged from the words up to the command's name, not a job's arguments", () => {
  assert.equal(mayConnect(["list"]), true);
  assert.equal(mayConnect(["run", "grep", "-h", "x", "file"]), true);
  assert.equal(mayConnect(["run", "cat", "certs"]), true);
  assert.equal(mayConnect(["--help"]), false);
  assert.equal(mayConnect(["context", "list"]), false);
  assert.equal(mayConnect(["--no-color", "completion", "bash"]), false);
  // An option's value is not a command's name.
  assert.equal(mayConnect(["--cert-path", "certs", "list"]), true);
  assert.equal(mayConnect(["--context", "help", "get", "x"]), true);
  assert.equal(mayConnect(["--cert-path=certs", "certs", "add"]), false);
});

Deno.test("option names known before the command line is built are the program's own", () => {
  const options = buildProgram(fake().deps).options;
  const takingValue = options.filter((option) => option.required || option.optional);
  assert.deepEqual([...ROOT_OPTIONS_WITH_VALUE].sort(), takingValue.map((o) => o.long).sort());
  for (const name of SERVER_OPTIONS) assert.ok(ROOT_OPTIONS_WITH_VALUE.has(name), name);
});
