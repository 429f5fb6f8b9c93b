/**
 * Security tests against a real worker: the authorization matrix of every RPC for every client
 * identity, TLS 1.3 only, client certificates required, the server's identity checked by the
 * client (names, CA, certificate purpose), and the command line's messages for these failures.
 *
 * One main worker serves most tests; two short-lived ones carry a server certificate for another
 * name, and a client certificate used as a server certificate.
 *
 * Run: `deno test -A tests/auth_test.ts` (as root; needs `openssl` on PATH).
 *
 * @module
 */
import { type ProgramResult, runProgram } from "./helpers/process.ts";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { jobServiceDefinition, jobworker } from "../proto/service.ts";
import { JobClient } from "../cli/client.ts";
import { createCA } from "../cli/pki/authority.ts";
import { issueClientCert, issueServerCert } from "../cli/pki/issue.ts";
import { writeKeyPair } from "../cli/pki/files.ts";
import { type ClientName, makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { clientFor } from "./helpers/clients.ts";

const S = jobworker.JobStatus;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
/** How long a call may go without any answer before the test calls it hung (not a speed check). */
const GUARD_MS = 10_000;
/** The marker the shared job writes, to check who may read its output. */
const MARKER = "authz-marker-7f3a";

// ---------------------------------------------------------------------------------------------
// Cleanup helpers

function removeSync(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch { /* removed */ }
}

/** Whether a process is gone (or a zombie). */
function exited(pid: number): boolean {
  try {
    return / Z /.test(Deno.readTextFileSync(`/proc/${pid}/stat`).replace(/^.*\)/, ""));
  } catch {
    return true;
  }
}

function waitForExitSync(pid: number, timeoutMs: number): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const until = Date.now() + timeoutMs;
  while (!exited(pid) && Date.now() < until) Atomics.wait(cell, 0, 0, 50);
}

/** The worker's job parent cgroups, from its "cgroups layout=..." log line. */
function cgroupDirsOf(w: WorkerProcess): string[] {
  const line = w.logs.find((l) => l.includes("cgroups layout=")) ?? "";
  // v1: "job cgroups under cpu,cpuacct=/sys/fs/cgroup/... pids=..."; v2: "... under /sys/fs/...;".
  return [...line.matchAll(/(?:=|under )(\/sys\/fs\/cgroup\/[^\s;"]+)/g)].map((m) => m[1]!);
}

/** Removes a cgroup directory and its (empty) child cgroups; false if something could not go. */
function removeCgroupTreeSync(dir: string): boolean {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return true; // gone
  }
  let ok = true;
  for (const e of entries) if (e.isDirectory) ok = removeCgroupTreeSync(`${dir}/${e.name}`) && ok;
  try {
    Deno.removeSync(dir);
  } catch {
    ok = false;
  }
  return ok;
}

/** Cgroup directories the stopped workers of this file left behind (removed since). */
const leftCgroups: string[] = [];

// ---------------------------------------------------------------------------------------------
// Fixture: one worker for the file.

const pki = await makePki();
let worker: WorkerProcess;
try {
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_STOP_GRACE: "1", CLEANUP_TIMEOUT: "1" },
  });
} catch (e) {
  await pki.remove();
  throw e;
}
const admin = clientFor(pki.dir, worker.address, "admin");
/** Workers still running, stopped by their tests or, if the run dies, by the unload handler. */
const liveWorkers = new Set<WorkerProcess>([worker]);
/** Temporary directories of this file, removed by their tests or by the unload handler. */
const tempDirs = new Set<string>([pki.dir]);

globalThis.addEventListener("unload", () => {
  // The run ended early (a filter, a crash): stop what is left, synchronously.
  for (const w of liveWorkers) {
    try {
      w.process.kill("SIGTERM");
    } catch { /* gone */ }
    waitForExitSync(w.process.pid, 20_000);
    removeSync(w.stateDir);
    for (const dir of cgroupDirsOf(w)) removeCgroupTreeSync(dir);
  }
  for (const dir of tempDirs) removeSync(dir);
});

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

// ---------------------------------------------------------------------------------------------
// Helpers

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface CallFailure {
  code: number;
  details: string;
}

/** Runs `fn`, which must fail with a gRPC status error; returns its code and details. */
async function failure(what: string, fn: () => Promise<unknown>): Promise<CallFailure> {
  let result: unknown;
  try {
    result = await fn();
  } catch (err) {
    const e = err as Partial<grpc.ServiceError>;
    assert.equal(typeof e.code, "number", `${what}: not a gRPC status error: ${err}`);
    return { code: e.code!, details: e.details ?? "" };
  }
  assert.fail(`${what} succeeded, expected a failure; it returned ${JSON.stringify(result)}`);
}

/** The call fails with `code` (an assertion naming `what` if not). */
async function failsWith(code: number, what: string, fn: () => Promise<unknown>): Promise<void> {
  const f = await failure(what, fn);
  assert.equal(f.code, code, `${what}: ${codeName(f.code)}: ${f.details}`);
}

function codeName(code: number | undefined): string {
  return code === undefined ? "(none)" : `${status[code] ?? "?"} (${code})`;
}

interface StreamOutcome {
  /** The final status code; undefined when no status came within the guard time. */
  code: number | undefined;
  details: string;
  chunks: number;
  text: string;
}

/** Reads a job's output written so far (noFollow) through GetJobsStream, with a guard time. */
async function readStream(client: JobClient, id: string): Promise<StreamOutcome> {
  const signal = AbortSignal.timeout(GUARD_MS);
  const decoder = new TextDecoder();
  let chunks = 0;
  let text = "";
  try {
    for await (const chunk of client.stream(id, { noFollow: true, signal })) {
      chunks++;
      text += decoder.decode(chunk.payload, { stream: true });
    }
    return { code: status.OK, details: "", chunks, text };
  } catch (err) {
    if (signal.aborted) {
      return { code: undefined, details: `no status within ${GUARD_MS} ms`, chunks, text };
    }
    const e = err as Partial<grpc.ServiceError>;
    assert.equal(typeof e.code, "number", `GetJobsStream: not a gRPC status error: ${err}`);
    return { code: e.code, details: e.details ?? "", chunks, text };
  }
}

async function jobCount(): Promise<number> {
  return (await admin.listJobs()).jobs.length;
}

/** A long-running job made by admin, shared by the matrix tests; it writes MARKER first. */
let sharedJob: Promise<jobworker.Job> | undefined;
function theJob(): Promise<jobworker.Job> {
  sharedJob ??= (async () => {
    const job = await admin.createJob({
      command: "sh",
      args: ["-c", `echo ${MARKER}; exec sleep 1000`],
    });
    // Wait (bounded) until the marker is written, so noFollow reads see it.
    const until = Date.now() + GUARD_MS;
    while ((await admin.getJob(job.id)).outputBytes < MARKER.length + 1) {
      if (Date.now() > until) throw new Error("the shared job wrote no output");
      await delay(20);
    }
    return job;
  })();
  return sharedJob;
}

/** Asserts the job is still RUNNING with a process alive, after a short settling delay. */
async function assertStillRunning(id: string, why: string): Promise<void> {
  await delay(300); // a stop that was started anyway would have ended a `sleep` by now
  const job = await admin.getJob(id);
  assert.equal(job.status, S.RUNNING, `${why}: the job is ${S[job.status]} (${job.reason})`);
  assert.ok((job.usage?.pids ?? 0) > 0, `${why}: the job has no process left`);
  assert.equal(job.endTime, null, `${why}: the job has an end time`);
}

/** A grpc-js client of JobService with the given credentials (no product code involved). */
function rawClient(target: string, credentials: grpc.ChannelCredentials): grpc.Client {
  return new grpc.Client(target, credentials);
}

function rawUnary<Req, Res>(
  client: grpc.Client,
  method: grpc.MethodDefinition<Req, Res>,
  request: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + 30_000 },
      (err, res) =>
        err ? reject(err) : res === undefined ? reject(new Error("empty")) : resolve(res),
    );
  });
}

/**
 * Credentials with a client certificate that verify the server's chain (and its purpose) but skip
 * the name check: they tell "wrong name" apart from "wrong certificate".
 */
function noNameCheckCredentials(dir: string): grpc.ChannelCredentials {
  const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
  const context = tls.createSecureContext({
    ca: read("ca-cert.pem"),
    cert: read("admin-client-cert.pem"),
    key: read("admin-client-key.pem"),
    minVersion: "TLSv1.3",
  });
  return grpc.credentials.createFromSecureContext(context, {
    checkServerIdentity: () => undefined,
  });
}

type ProcessResult = ProgramResult;

/**
 * Runs `openssl s_client`. With `keepStdinOpen`, its stdin stays open, so it ends only when the
 * server closes the connection (or the guard kills it); otherwise stdin is closed at once.
 */
async function sClient(args: string[], keepStdinOpen = false): Promise<ProcessResult> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  if (!keepStdinOpen) await writer.close();
  const stdout = new Response(child.stdout).text();
  const stderr = new Response(child.stderr).text();
  const guard = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* ended */ }
  }, GUARD_MS);
  const st = await child.status;
  clearTimeout(guard);
  if (keepStdinOpen) await writer.close().catch(() => {});
  return { code: st.code, signal: st.signal, stdout: await stdout, stderr: await stderr };
}

const CUT_OFF = /alert|unexpected eof|reset/i;

/** For the controls of the s_client tests: a session the server did not refuse. */
function assertNotCutOff(r: ProcessResult): void {
  assert.ok(r.code === 0 || r.signal === "SIGKILL", `control: s_client failed: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, CUT_OFF, "control: the server cut off an accepted client");
}

function clientCertArgs(dir: string, name: ClientName): string[] {
  return ["-cert", `${dir}/${name}-client-cert.pem`, "-key", `${dir}/${name}-client-key.pem`];
}

/** A Node TLS connection with admin's certificate; resolves to the protocol or the error. */
function nodeTlsConnect(maxVersion: tls.SecureVersion): Promise<
  { ok: true; protocol: string | null; authorized: boolean } | { ok: false; error: string }
> {
  const read = (f: string) => Deno.readTextFileSync(`${pki.dir}/${f}`);
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: worker.port,
      servername: "localhost",
      ca: read("ca-cert.pem"),
      cert: read("admin-client-cert.pem"),
      key: read("admin-client-key.pem"),
      maxVersion,
      ALPNProtocols: ["h2"],
    });
    const guard = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, error: `no handshake within ${GUARD_MS} ms` });
    }, GUARD_MS);
    socket.once("secureConnect", () => {
      clearTimeout(guard);
      resolve({ ok: true, protocol: socket.getProtocol(), authorized: socket.authorized });
      socket.destroy();
    });
    socket.once("error", (err) => {
      clearTimeout(guard);
      resolve({ ok: false, error: err.message });
      socket.destroy();
    });
  });
}

/** Runs the real command line (`deno run main.ts ...`). */
function cli(args: string[]): Promise<ProcessResult> {
  return runProgram(Deno.execPath(), ["run", "-A", "--cached-only", MAIN, ...args]);
}

const STACK_LINE = /^\s+at .+[(:]\d+/m;

/** A directory with a CA of its own, a server certificate for other.example/10.9.9.9 only, and
 * an admin client of that CA. */
async function makeOtherNamePki(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-pki-othername-" });
  tempDirs.add(dir);
  const ca = await createCA({ commonName: "other-name test CA" });
  await writeKeyPair(dir, "ca", ca);
  await writeKeyPair(
    dir,
    "server",
    await issueServerCert(ca, { dnsNames: ["other.example"], ips: ["10.9.9.9"] }),
  );
  await writeKeyPair(
    dir,
    "admin-client",
    await issueClientCert(ca, { commonName: "alice", organizationalUnit: "admin" }),
  );
  return dir;
}

async function removeDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  tempDirs.delete(dir);
}

/** Stops a worker; removes, and records in `leftCgroups`, any cgroup directory it left. */
async function stopWorker(w: WorkerProcess): Promise<Deno.CommandStatus> {
  const st = await w.stop();
  liveWorkers.delete(w);
  for (const dir of cgroupDirsOf(w)) {
    let exists = true;
    try {
      Deno.statSync(dir);
    } catch {
      exists = false;
    }
    if (!exists) continue;
    leftCgroups.push(dir);
    removeCgroupTreeSync(dir);
  }
  return st;
}

// ---------------------------------------------------------------------------------------------
// Authorization matrix: admin

test("admin: CreateJob is allowed and the job's owner is admin's CN alice", async () => {
  const job = await theJob();
  assert.equal(job.status, S.RUNNING);
  assert.equal(job.owner, "alice");
});

test("admin: GetJob, GetJobs and GetJobsStream are allowed", async () => {
  const job = await theJob();
  const got = await admin.getJob(job.id);
  assert.equal(got.id, job.id);
  assert.equal(got.owner, "alice");
  const { jobs } = await admin.listJobs();
  assert.ok(jobs.some((j) => j.id === job.id), "GetJobs does not list the job");
  const stream = await readStream(admin, job.id);
  assert.equal(stream.code, status.OK, `GetJobsStream: ${codeName(stream.code)} ${stream.details}`);
  assert.equal(stream.text, `${MARKER}\n`);
});

test("admin: StopJob is allowed and stops the job", async () => {
  const job = await admin.createJob({ command: "sleep", args: ["1000"] });
  assert.equal(job.owner, "alice");
  const stopped = await admin.stopJob(job.id, { force: true });
  assert.equal(stopped.status, S.STOPPED, stopped.reason);
  assert.equal((await admin.getJob(job.id)).status, S.STOPPED);
});

// ---------------------------------------------------------------------------------------------
// Authorization matrix: viewer

test("viewer: GetJob on admin's real job is allowed", async () => {
  const job = await theJob();
  const viewer = clientFor(pki.dir, worker.address, "viewer");
  try {
    const got = await viewer.getJob(job.id);
    assert.equal(got.id, job.id);
    assert.equal(got.owner, "alice");
    assert.equal(got.status, S.RUNNING);
  } finally {
    viewer.close();
  }
});

test("viewer: GetJobs is allowed and lists admin's job", async () => {
  const job = await theJob();
  const viewer = clientFor(pki.dir, worker.address, "viewer");
  try {
    const { jobs } = await viewer.listJobs();
    assert.ok(jobs.some((j) => j.id === job.id), "GetJobs does not list the job");
    assert.equal(jobs.length, await jobCount());
  } finally {
    viewer.close();
  }
});

test("viewer: GetJobsStream of admin's job is allowed and returns its output", async () => {
  const job = await theJob();
  const viewer = clientFor(pki.dir, worker.address, "viewer");
  try {
    const stream = await readStream(viewer, job.id);
    assert.equal(stream.code, status.OK, `${codeName(stream.code)} ${stream.details}`);
    assert.equal(stream.text, `${MARKER}\n`);
  } finally {
    viewer.close();
  }
});

test("viewer: CreateJob → PERMISSION_DENIED naming the role viewer, and no job is created", async () => {
  const before = await jobCount();
  const viewer = clientFor(pki.dir, worker.address, "viewer");
  try {
    const f = await failure("viewer CreateJob", () => viewer.createJob({ command: "true" }));
    assert.equal(f.code, status.PERMISSION_DENIED, `${codeName(f.code)}: ${f.details}`);
    assert.match(f.details, /viewer/);
  } finally {
    viewer.close();
  }
  const { jobs } = await admin.listJobs();
  assert.equal(jobs.length, before, "a job was created");
  assert.ok(!jobs.some((j) => j.owner === "victor"), "a job owned by the viewer exists");
});

test("viewer: StopJob → PERMISSION_DENIED naming the role viewer, and the job keeps running", async () => {
  const job = await theJob();
  const viewer = clientFor(pki.dir, worker.address, "viewer");
  try {
    for (const options of [{}, { force: true }, { graceSeconds: 1 }]) {
      const what = `viewer StopJob ${JSON.stringify(options)}`;
      const f = await failure(what, () => viewer.stopJob(job.id, options));
      assert.equal(f.code, status.PERMISSION_DENIED, `${what}: ${codeName(f.code)}: ${f.details}`);
      assert.match(f.details, /viewer/);
    }
  } finally {
    viewer.close();
  }
  await assertStillRunning(job.id, "after the viewer's StopJob");
});

// ---------------------------------------------------------------------------------------------
// Authorization matrix: certificates of the right CA without a usable role

/** Every unary RPC, aimed at `jobId` where it takes one. */
function unaryCalls(client: JobClient, jobId: string): [string, () => Promise<unknown>][] {
  return [
    ["CreateJob", () => client.createJob({ command: "true" })],
    ["GetJob", () => client.getJob(jobId)],
    ["StopJob", () => client.stopJob(jobId, { force: true })],
    ["GetJobs", () => client.listJobs()],
  ];
}

for (
  const [name, seen] of [
    ["intruder", /intruder/],
    ["noou", /no OU/],
  ] as const
) {
  test(`${name}: CreateJob, GetJob, StopJob and GetJobs → PERMISSION_DENIED naming the OU seen`, async () => {
    const job = await theJob();
    const before = await jobCount();
    const client = clientFor(pki.dir, worker.address, name);
    try {
      for (const [rpc, call] of unaryCalls(client, job.id)) {
        const f = await failure(`${name} ${rpc}`, call);
        assert.equal(f.code, status.PERMISSION_DENIED, `${rpc}: ${codeName(f.code)}: ${f.details}`);
        assert.match(f.details, seen, `${rpc}: the message does not say what OU was seen`);
      }
    } finally {
      client.close();
    }
    assert.equal(await jobCount(), before, "a job was created");
    await assertStillRunning(job.id, `after ${name}'s StopJob`);
  });

  test(`${name}: GetJobsStream → PERMISSION_DENIED, and no output is sent`, async () => {
    const job = await theJob();
    const client = clientFor(pki.dir, worker.address, name);
    let stream: StreamOutcome;
    try {
      stream = await readStream(client, job.id);
    } finally {
      client.close();
    }
    assert.equal(stream.chunks, 0, `the job's output was sent: ${JSON.stringify(stream.text)}`);
    assert.equal(
      stream.code,
      status.PERMISSION_DENIED,
      `GetJobsStream: ${codeName(stream.code)} ${stream.details}`,
    );
    assert.match(stream.details, seen);
  });
}

// ---------------------------------------------------------------------------------------------
// Authorization matrix: certificates refused at the TLS handshake

for (const name of ["otherca", "expired"] as const) {
  test(`${name}: every RPC is refused at the handshake (UNAVAILABLE) and no job is created`, async () => {
    const job = await theJob();
    const before = await jobCount();
    const client = clientFor(pki.dir, worker.address, name);
    try {
      for (const [rpc, call] of unaryCalls(client, job.id)) {
        // A handler never ran: the connection itself failed.
        await failsWith(status.UNAVAILABLE, `${name} ${rpc}`, call);
      }
      const stream = await readStream(client, job.id);
      assert.equal(stream.chunks, 0);
      assert.equal(stream.code, status.UNAVAILABLE, `GetJobsStream: ${codeName(stream.code)}`);
    } finally {
      client.close();
    }
    assert.equal(await jobCount(), before, "a job was created");
    await assertStillRunning(job.id, `after ${name}'s StopJob`);
  });

  test(`${name}: openssl s_client with this certificate is cut off by the server`, async () => {
    const refused = await sClient(
      ["-connect", worker.address, "-tls1_3", "-CAfile", `${pki.dir}/ca-cert.pem`].concat(
        clientCertArgs(pki.dir, name),
      ),
      true,
    );
    // Control: a certificate of the right CA is not cut off (the server closes cleanly, or keeps
    // the connection until the guard ends it).
    const accepted = await sClient(
      ["-connect", worker.address, "-tls1_3", "-CAfile", `${pki.dir}/ca-cert.pem`].concat(
        clientCertArgs(pki.dir, "intruder"),
      ),
      true,
    );
    assertNotCutOff(accepted);
    assert.equal(refused.signal, null, "the server kept the connection open");
    assert.notEqual(refused.code, 0, `s_client succeeded: ${refused.stdout}`);
    assert.match(refused.stderr, CUT_OFF);
  });
}

// ---------------------------------------------------------------------------------------------
// TLS 1.3 only, client certificate required

test("TLS: openssl s_client -tls1_2 fails, -tls1_3 succeeds with TLSv1.3", async () => {
  const base = ["-connect", worker.address, "-CAfile", `${pki.dir}/ca-cert.pem`].concat(
    clientCertArgs(pki.dir, "admin"),
  );
  const v12 = await sClient([...base, "-tls1_2"]);
  const v13 = await sClient([...base, "-tls1_3"]);
  assert.equal(v13.code, 0, `-tls1_3 failed: ${v13.stderr}`);
  assert.match(v13.stdout, /New, TLSv1\.3, Cipher is TLS_/);
  assert.match(v13.stdout, /Verify return code: 0 \(ok\)/);
  assert.notEqual(v12.code, 0, `-tls1_2 exited 0:\n${v12.stdout}`);
  assert.doesNotMatch(v12.stdout, /New, TLSv1\.2, Cipher is/, "a TLS 1.2 session was made");
});

test("TLS: node tls.connect with maxVersion TLSv1.2 fails, with TLSv1.3 connects", async () => {
  const v12 = await nodeTlsConnect("TLSv1.2");
  const v13 = await nodeTlsConnect("TLSv1.3");
  assert.deepEqual(v13, { ok: true, protocol: "TLSv1.3", authorized: true });
  assert.equal(v12.ok, false, `TLS 1.2 connected: ${JSON.stringify(v12)}`);
});

test("TLS: openssl s_client without a client certificate is refused by the server", async () => {
  const args = ["-connect", worker.address, "-tls1_3", "-CAfile", `${pki.dir}/ca-cert.pem`];
  const refused = await sClient(args, true);
  const accepted = await sClient([...args, ...clientCertArgs(pki.dir, "admin")], true);
  assertNotCutOff(accepted);
  assert.equal(refused.signal, null, "the server kept the connection open");
  assert.notEqual(refused.code, 0, `s_client without a certificate succeeded:\n${refused.stdout}`);
  assert.match(refused.stderr, CUT_OFF);
});

test("TLS: a grpc-js client without a client certificate fails and creates no job", async () => {
  const before = await jobCount();
  const ca = Buffer.from(Deno.readFileSync(`${pki.dir}/ca-cert.pem`));
  const client = rawClient(`localhost:${worker.port}`, grpc.credentials.createSsl(ca));
  try {
    const create = await failure("CreateJob without a certificate", () =>
      rawUnary(
        client,
        jobServiceDefinition.CreateJob,
        jobworker.CreateJobReq.create({ command: "true" }),
      ));
    assert.notEqual(create.code, status.OK);
    assert.notEqual(create.code, status.PERMISSION_DENIED, "the request reached a handler");
    const list = await failure(
      "GetJobs without a certificate",
      () => rawUnary(client, jobServiceDefinition.GetJobs, jobworker.EmptyRequest.create()),
    );
    assert.notEqual(list.code, status.PERMISSION_DENIED, "the request reached a handler");
  } finally {
    client.close();
  }
  assert.equal(await jobCount(), before, "a job was created");
});

// ---------------------------------------------------------------------------------------------
// The server's identity

test("server identity: the normal worker is accepted as 127.0.0.1:PORT and localhost:PORT", async () => {
  for (const host of ["127.0.0.1", "localhost"]) {
    const client = clientFor(pki.dir, `${host}:${worker.port}`, "admin");
    try {
      const { jobs } = await client.listJobs();
      assert.equal(jobs.length, await jobCount(), host);
    } finally {
      client.close();
    }
  }
});

test("server identity: a server certificate for other.example/10.9.9.9 is refused for both targets", async () => {
  const dir = await makeOtherNamePki();
  let other: WorkerProcess | undefined;
  try {
    other = await WorkerProcess.start({ certDir: dir });
    liveWorkers.add(other);
    const read = (file: string) => Deno.readTextFileSync(`${dir}/${file}`);
    // Both transports: grpc-js, and the command line's own HTTP/2 client (its IP check is ours).
    for (const transport of ["grpc-js", "http2"] as const) {
      for (const host of ["127.0.0.1", "localhost"]) {
        const client = transport === "http2"
          ? JobClient.connect({
            server: `${host}:${other.port}`,
            caPem: read("ca-cert.pem"),
            certPem: read("admin-client-cert.pem"),
            keyPem: read("admin-client-key.pem"),
            transport,
          })
          : clientFor(dir, `${host}:${other.port}`, "admin");
        const at = `${host} (${transport})`;
        try {
          await failsWith(status.UNAVAILABLE, `GetJobs at ${at}`, () => client.listJobs());
          await failsWith(
            status.UNAVAILABLE,
            `CreateJob at ${at}`,
            () => client.createJob({ command: "true" }),
          );
        } finally {
          client.close();
        }
      }
    }
    // Control: the same server and certificates without the name check work, so the refusal above
    // is the name check.
    const raw = rawClient(`localhost:${other.port}`, noNameCheckCredentials(dir));
    try {
      const jobs = await rawUnary(
        raw,
        jobServiceDefinition.GetJobs,
        jobworker.EmptyRequest.create(),
      );
      assert.deepEqual(jobs.jobs, [], "the refused calls created a job");
    } finally {
      raw.close();
    }
  } finally {
    if (other) await stopWorker(other);
    await removeDir(dir);
  }
});

test("server identity: a client trusting another CA refuses the normal worker", async () => {
  const dir = await makeOtherNamePki();
  const before = await jobCount();
  try {
    const read = (path: string) => Deno.readTextFileSync(path);
    for (const host of ["127.0.0.1", "localhost"]) {
      const client = JobClient.connect({
        server: `${host}:${worker.port}`,
        caPem: read(`${dir}/ca-cert.pem`),
        certPem: read(`${pki.dir}/admin-client-cert.pem`),
        keyPem: read(`${pki.dir}/admin-client-key.pem`),
      });
      try {
        await failsWith(
          status.UNAVAILABLE,
          `CreateJob at ${host}`,
          () => client.createJob({ command: "true" }),
        );
      } finally {
        client.close();
      }
    }
  } finally {
    await removeDir(dir);
  }
  assert.equal(await jobCount(), before, "a job was created");
});

test("server identity: a client certificate used as the server certificate is refused (EKU)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-pki-eku-" });
  tempDirs.add(dir);
  let eku: WorkerProcess | undefined;
  try {
    for (const f of ["ca-cert.pem", "admin-client-cert.pem", "admin-client-key.pem"]) {
      await Deno.copyFile(`${pki.dir}/${f}`, `${dir}/${f}`);
    }
    await Deno.copyFile(`${pki.dir}/admin-client-cert.pem`, `${dir}/server-cert.pem`);
    await Deno.copyFile(`${pki.dir}/admin-client-key.pem`, `${dir}/server-key.pem`);
    try {
      eku = await WorkerProcess.start({ certDir: dir });
      liveWorkers.add(eku);
    } catch (err) {
      // The worker refusing to start with such a certificate is fine too, but only for that
      // reason: the message must name the server certificate and its purpose, so a worker that
      // fails to start for anything else fails this test.
      const message = String(err);
      assert.match(message, /exited/);
      assert.match(message, /server-cert\.pem/, message);
      assert.match(message, /serverAuth|server auth|purpose|key usage/i, message);
      return;
    }
    for (const host of ["127.0.0.1", "localhost"]) {
      const client = clientFor(dir, `${host}:${eku.port}`, "admin");
      try {
        await failsWith(status.UNAVAILABLE, `GetJobs at ${host}`, () => client.listJobs());
      } finally {
        client.close();
      }
    }
    // Without the name check it is still refused: the chain is fine, the purpose is not.
    const raw = rawClient(`localhost:${eku.port}`, noNameCheckCredentials(dir));
    try {
      await failsWith(
        status.UNAVAILABLE,
        "GetJobs without the name check",
        () => rawUnary(raw, jobServiceDefinition.GetJobs, jobworker.EmptyRequest.create()),
      );
    } finally {
      raw.close();
    }
    // Control: the same credentials against the normal worker work.
    const control = rawClient(`localhost:${worker.port}`, noNameCheckCredentials(pki.dir));
    try {
      await rawUnary(control, jobServiceDefinition.GetJobs, jobworker.EmptyRequest.create());
    } finally {
      control.close();
    }
    // openssl says why.
    const o = await sClient([
      "-connect",
      eku.address,
      "-tls1_3",
      "-CAfile",
      `${dir}/ca-cert.pem`,
      "-verify_return_error",
      "-purpose",
      "sslserver",
      ...clientCertArgs(dir, "admin"),
    ]);
    assert.notEqual(o.code, 0);
    assert.match(o.stdout + o.stderr, /unsuitable certificate purpose/);
  } finally {
    if (eku) await stopWorker(eku);
    await removeDir(dir);
  }
});

// ---------------------------------------------------------------------------------------------
// The command line's messages

test("CLI: create as viewer → exit non-zero, 'permission denied' and the role", async () => {
  const before = await jobCount();
  const r = await cli([
    "--server",
    worker.address,
    "--cert-path",
    pki.dir,
    "--role",
    "viewer",
    "create",
    "echo",
    "hi",
  ]);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /permission denied/i);
  assert.match(r.stderr, /viewer/);
  assert.doesNotMatch(r.stderr, STACK_LINE);
  assert.equal(await jobCount(), before, "a job was created");
});

test("CLI: stop as viewer → exit non-zero, 'permission denied', the job keeps running", async () => {
  const job = await theJob();
  const r = await cli([
    "--server",
    worker.address,
    "--cert-path",
    pki.dir,
    "--role",
    "viewer",
    "stop",
    job.id,
  ]);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /permission denied/i);
  assert.match(r.stderr, /viewer/);
  await assertStillRunning(job.id, "after the viewer's stop command");
});

test("CLI: get of an unknown id → exit non-zero, 'no job' / 'not found' naming the id", async () => {
  const id = crypto.randomUUID();
  const r = await cli(["--server", worker.address, "--cert-path", pki.dir, "get", id]);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /no job|not found/i);
  assert.ok(r.stderr.includes(id), r.stderr);
  assert.doesNotMatch(r.stderr, STACK_LINE);
});

test("CLI: list against 127.0.0.1:1 → exit non-zero, a clear 'cannot reach' message", async () => {
  const r = await cli(["--server", "127.0.0.1:1", "--cert-path", pki.dir, "list"]);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /cannot reach|unreachable|unavailable|could not connect/i);
  assert.ok(r.stderr.includes("127.0.0.1:1"), r.stderr);
  assert.doesNotMatch(r.stderr, STACK_LINE);
  assert.equal(r.stderr.trim().split("\n").length, 1, `more than one line:\n${r.stderr}`);
});

test("CLI: --cert-path /nonexistent → exit non-zero, names the missing file", async () => {
  const r = await cli(["--server", worker.address, "--cert-path", "/nonexistent", "list"]);
  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /\/nonexistent\/[\w-]+\.pem/);
  assert.match(r.stderr, /not found|no such|missing|cannot/i);
  assert.doesNotMatch(r.stderr, STACK_LINE);
});

// ---------------------------------------------------------------------------------------------
// Cleanup (last)

test("cleanup: admin stops the shared job, the worker exits 0", async () => {
  let exit: Deno.CommandStatus | undefined;
  try {
    if (sharedJob) {
      const job = await sharedJob;
      const stopped = await admin.stopJob(job.id, { force: true });
      assert.equal(stopped.status, S.STOPPED, stopped.reason);
    }
    const { jobs } = await admin.listJobs();
    assert.deepEqual(jobs.filter((j) => j.status === S.RUNNING).map((j) => j.id), []);
  } finally {
    admin.close();
    exit = await stopWorker(worker);
    await removeDir(pki.dir);
  }
  assert.equal(exit.code, 0, worker.logs.slice(-20).join("\n"));
});

test("cleanup: the workers of this file left no cgroup directory behind", () => {
  assert.equal(cgroupDirsOf(worker).length > 0, true, "no cgroups layout line in the log");
  const warnings = worker.logs.filter((l) => /^(warn|error)$/.test(parseLogLine(l)?.level ?? ""));
  assert.deepEqual(
    leftCgroups,
    [],
    `left behind (now removed); worker warnings:\n${warnings.join("\n")}`,
  );
  return Promise.resolve();
});
