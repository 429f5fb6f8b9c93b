/**
 * Operations end to end through a real worker: the gRPC health service over mutual TLS (and
 * NOT_SERVING while draining), Prometheus metrics checked by `promtool check metrics`, and the
 * audit line of every RPC in each log format.
 *
 * Run: `deno test -A tests/operations_test.ts` (as root; promtool from `make test-tools`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { jobworker } from "../proto/service.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { freePort } from "./helpers/free_port.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import type { ClientName } from "./helpers/pki.ts";

const S = jobworker.JobStatus;

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

// ---------------------------------------------------------------------------------------------
// A plain grpc-js health client, independent of the product's client.

interface HealthClient extends grpc.Client {
  Check(
    req: { service: string },
    options: grpc.CallOptions,
    cb: (e: grpc.ServiceError | null, res?: { status: string }) => void,
  ): void;
  Watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
}

function healthClient(dir: string, port: number, name: ClientName): HealthClient {
  const read = (f: string) => Buffer.from(Deno.readFileSync(`${dir}/${f}`));
  const Client = grpc.makeGenericClientConstructor(
    healthService as unknown as grpc.ServiceDefinition,
    "Health",
  );
  const credentials = grpc.credentials.createSsl(
    read("ca-cert.pem"),
    read(`${name}-client-key.pem`),
    read(`${name}-client-cert.pem`),
  );
  return new Client(`localhost:${port}`, credentials) as unknown as HealthClient;
}

function check(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.Check(
      { service },
      { deadline: Date.now() + 10_000 },
      (e, res) => e ? reject(e) : resolve(res!.status),
    )
  );
}

// ---------------------------------------------------------------------------------------------
// Prometheus text, read independently of prom-client.

function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? "").split(",").filter(Boolean);
    if (want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return NaN;
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return await res.text();
}

async function promtool(text: string): Promise<{ ok: boolean; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { ok: out.success, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

const auditLines = (logs: string[]) =>
  logs.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === "audit");

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------------------------
// One worker with metrics on and JSON logs.

let pki: PkiFixture;
let worker: WorkerProcess;
let metricsPort = 0;

test("start a worker with metrics and JSON logs", async () => {
  pki = await makePki();
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: {
      JOB_WORKER_METRICS_ADDR: "127.0.0.1:0",
      LOG_FORMAT: "json",
      JOB_WORKER_STOP_GRACE: "1",
    },
  });
  const line = worker.logs.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
    .find((l) => l.msg === "metrics listening");
  assert.ok(line, worker.logs.join("\n"));
  metricsPort = line.port;
  assert.ok(metricsPort > 0);
});

test("health: SERVING over mutual TLS for any certificate of the CA, whatever its role", async () => {
  for (const name of ["admin", "viewer", "intruder", "noou"] as const) {
    const client = healthClient(pki.dir, worker.port, name);
    try {
      assert.equal(await check(client, ""), "SERVING", name);
      assert.equal(await check(client, "jobworker.JobService"), "SERVING", name);
    } finally {
      client.close();
    }
  }
});

test("health: an unknown service is NOT_FOUND; a certificate of another CA is refused", async () => {
  const client = healthClient(pki.dir, worker.port, "viewer");
  try {
    await assert.rejects(check(client, "no.Such"), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.NOT_FOUND);
      return true;
    });
  } finally {
    client.close();
  }
  for (const name of ["otherca", "expired"] as const) {
    const stranger = healthClient(pki.dir, worker.port, name);
    try {
      await assert.rejects(check(stranger, ""), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE, `${name}: ${e.message}`);
        return true;
      });
    } finally {
      stranger.close();
    }
  }
});

test("metrics: jobs by state, starts, failures, OOM kills, stops by kind, bytes, RPCs; promtool accepts them", async () => {
  const admin = clientFor(pki.dir, worker.address, "admin");
  try {
    const before = await scrape(metricsPort);
    assert.equal(sample(before, "jobworker_job_starts_total"), 0);
    const echo = await admin.createJob({ command: "sh", args: ["-c", "head -c 300000 /dev/zero"] });
    const out = await collectOutput(admin, echo.id);
    assert.equal(out.bytes.length, 300_000);
    const slow = await admin.createJob({ command: "sleep", args: ["60"] });
    await admin.stopJob(slow.id);
    const timed = await admin.createJob({ command: "sleep", args: ["60"], timeoutSeconds: 1 });
    await assert.rejects(admin.createJob({ command: "/no/such/program" }));
    const oom = await admin.createJob({
      command: "python3",
      args: ["-c", "b = bytearray(100 * 1024 * 1024)"],
      maxMemory: 32,
    });
    await waitFor("the jobs to end", async () => {
      const states = await Promise.all([timed.id, oom.id].map((id) => admin.getJob(id)));
      return states.every((j) => j.status >= S.COMPLETED) ? true : undefined;
    });
    await assert.rejects(admin.getJob("no-such-job"));

    const text = await scrape(metricsPort);
    const checked = await promtool(text);
    assert.ok(checked.ok, checked.output);
    assert.equal(sample(text, "jobworker_job_starts_total"), 4, text);
    assert.equal(sample(text, "jobworker_job_start_failures_total"), 1);
    assert.equal(sample(text, "jobworker_job_start_duration_seconds_count"), 4);
    assert.equal(sample(text, "jobworker_job_oom_kills_total"), 1);
    assert.equal(sample(text, "jobworker_job_stops_total", { kind: "request" }), 1);
    assert.equal(sample(text, "jobworker_job_stops_total", { kind: "timeout" }), 1);
    assert.equal(sample(text, "jobworker_job_stops_total", { kind: "shutdown" }), 0);
    assert.equal(sample(text, "jobworker_jobs", { state: "STOPPED" }), 2);
    assert.equal(sample(text, "jobworker_jobs", { state: "COMPLETED" }), 1);
    assert.equal(sample(text, "jobworker_jobs", { state: "FAILED" }), 1);
    assert.equal(sample(text, "jobworker_jobs", { state: "RUNNING" }), 0);
    assert.ok(sample(text, "jobworker_output_ingested_bytes_total") >= 300_000);
    assert.equal(sample(text, "jobworker_output_streamed_bytes_total"), 300_000);
    assert.equal(sample(text, "jobworker_output_streams_active"), 0);
    const rpc = (method: string, code: string) =>
      sample(text, "jobworker_rpcs_total", { service: "jobworker.JobService", method, code });
    assert.equal(rpc("CreateJob", "OK"), 4);
    assert.equal(rpc("CreateJob", "INVALID_ARGUMENT"), 1);
    assert.equal(rpc("GetJob", "NOT_FOUND"), 1);
    assert.equal(rpc("GetJobsStream", "OK"), 1);
    assert.equal(rpc("StopJob", "OK"), 1);
    assert.ok(sample(text, "jobworker_event_loop_delay_seconds_count") > 0);
  } finally {
    admin.close();
  }
});

test("metrics: a stream open now is an active stream", async () => {
  const admin = clientFor(pki.dir, worker.address, "admin");
  try {
    const job = await admin.createJob({ command: "sleep", args: ["30"] });
    const iterator = admin.stream(job.id)[Symbol.asyncIterator]();
    const pending = iterator.next();
    await waitFor("an active stream", async () => {
      const n = sample(await scrape(metricsPort), "jobworker_output_streams_active");
      return n === 1 ? n : undefined;
    });
    await admin.stopJob(job.id, { force: true });
    await pending;
    await iterator.return?.();
    await waitFor("no active stream", async () => {
      const n = sample(await scrape(metricsPort), "jobworker_output_streams_active");
      return n === 0 ? n : undefined;
    });
  } finally {
    admin.close();
  }
});

test("metrics: anything but GET /metrics is refused", async () => {
  const other = await fetch(`http://127.0.0.1:${metricsPort}/`);
  assert.equal(other.status, 404);
  await other.body?.cancel();
  const post = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: "POST" });
  assert.equal(post.status, 405);
  await post.body?.cancel();
});

test("audit: one JSON line per RPC with time, caller, role, method, job, code and duration", async () => {
  const viewer = clientFor(pki.dir, worker.address, "viewer");
  try {
    await assert.rejects(viewer.createJob({ command: "true" }));
    await assert.rejects(viewer.getJob("missing-id"));
  } finally {
    viewer.close();
  }
  const lines = await waitFor("audit lines", () => {
    const all = auditLines(worker.logs);
    return all.some((l) => l.method === "jobworker.JobService/GetJob" && l.job === "missing-id")
      ? all
      : undefined;
  });
  const created = lines.find((l) =>
    l.method === "jobworker.JobService/CreateJob" && l.code === "OK"
  );
  assert.ok(created, JSON.stringify(lines));
  assert.equal(created.caller, "alice");
  assert.equal(created.role, "admin");
  assert.match(String(created.job), /^[0-9a-f-]{36}$/);
  assert.equal(created.level, "info");
  assert.ok(!Number.isNaN(Date.parse(String(created.time))));
  assert.equal(typeof created.duration_ms, "number");
  const denied = lines.find((l) =>
    l.method === "jobworker.JobService/CreateJob" && l.caller === "victor"
  );
  assert.equal(denied?.code, "PERMISSION_DENIED");
  assert.equal(denied?.role, "viewer");
  const missing = lines.find((l) => l.job === "missing-id");
  assert.equal(missing?.code, "NOT_FOUND");
  const streamed = lines.find((l) => l.method === "jobworker.JobService/GetJobsStream");
  assert.equal(streamed?.code, "OK");
  assert.equal(streamed?.bytes, 300_000);
  // Health checks are audited at debug level only: LOG_LEVEL=info leaves them out.
  assert.ok(!lines.some((l) => String(l.method).startsWith("grpc.health")));
});

test("health: a Watch sees NOT_SERVING when the worker drains, then ends; the worker exits 0", async () => {
  const client = healthClient(pki.dir, worker.port, "viewer");
  const seen: string[] = [];
  const ended = new Promise<string>((resolve) => {
    const call = client.Watch({ service: "" });
    call.on("data", (m: { status: string }) => seen.push(m.status));
    call.on("error", (e: grpc.ServiceError) => resolve(`error ${e.code}`));
    call.on("end", () => resolve("end"));
  });
  await waitFor("the first Watch message", () => seen.length > 0 ? true : undefined);
  assert.deepEqual(seen, ["SERVING"]);
  const started = performance.now();
  const exit = await worker.stop("SIGTERM");
  assert.equal(await ended, "end");
  assert.deepEqual(seen, ["SERVING", "NOT_SERVING"]);
  assert.equal(exit.code, 0, worker.logs.slice(-10).join("\n"));
  // The Watch stream does not hold the graceful shutdown open (it waits 5 s for open calls).
  assert.ok(performance.now() - started < 4000, `shutdown took ${performance.now() - started} ms`);
  client.close();
});

// ---------------------------------------------------------------------------------------------
// Other log settings: logfmt lines by default; text still selectable; LOG_LEVEL=warn silences
// the audit; no metrics by default.

test("audit: logfmt lines by default (LOG_FORMAT unset); no metrics endpoint by default", async () => {
  const w = await WorkerProcess.start({ certDir: pki.dir });
  try {
    const admin = clientFor(pki.dir, w.address, "admin");
    const job = await admin.createJob({ command: "true" });
    admin.close();
    const audit = await waitFor("the audit line", () => {
      const lines = w.logs.filter((l) => l.includes(" msg=audit "));
      return lines.length > 0 ? lines : undefined;
    });
    assert.equal(audit.length, 1, w.logs.join("\n"));
    assert.match(
      audit[0]!,
      new RegExp(
        `^time=\\S+ level=info msg=audit method=jobworker.JobService/CreateJob caller=alice role=admin job=${job.id} code=OK duration_ms=[0-9.]+$`,
      ),
    );
    // Every line the worker wrote is logfmt, not only the audit.
    const notLogfmt = w.logs.filter((l) => !/^time=\S+ level=(debug|info|warn|error) msg=/.test(l));
    assert.deepEqual(notLogfmt, [], w.logs.join("\n"));
    assert.ok(!w.logs.some((l) => l.includes("metrics")), w.logs.join("\n"));
  } finally {
    assert.equal((await w.stop()).code, 0);
  }
});

test("LOG_FORMAT=text stays selectable: `time LEVEL message key=value`", async () => {
  const w = await WorkerProcess.start({ certDir: pki.dir, env: { LOG_FORMAT: "text" } });
  try {
    const admin = clientFor(pki.dir, w.address, "admin");
    const job = await admin.createJob({ command: "true" });
    admin.close();
    const audit = await waitFor("the audit line", () => w.logs.find((l) => l.includes(" audit ")));
    assert.match(
      audit,
      new RegExp(
        `^\\S+Z INFO  audit method=jobworker.JobService/CreateJob caller=alice role=admin job=${job.id} code=OK duration_ms=[0-9.]+$`,
      ),
    );
    assert.ok(w.logs.some((l) => / INFO {2}listening address=/.test(l)), w.logs.join("\n"));
  } finally {
    assert.equal((await w.stop()).code, 0);
  }
});

test("audit: LOG_LEVEL=warn leaves the audit lines out", async () => {
  // The worker logs nothing at this level, not even "listening": find it through the health check.
  const port = freePort();
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-prompt",
      "--cached-only",
      new URL("../main.ts", import.meta.url).pathname,
      "serve",
    ],
    env: {
      JOB_WORKER_ADDR: `127.0.0.1:${port}`,
      JOB_WORKER_CERT_PATH: pki.dir,
      JOB_WORKER_STATE_DIR: stateDir,
      LOG_LEVEL: "warn",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    const health = healthClient(pki.dir, port, "viewer");
    await waitFor(
      "the worker to serve",
      () => check(health, "").then((s) => s === "SERVING" ? true : undefined, () => undefined),
    );
    health.close();
    const admin = clientFor(pki.dir, `127.0.0.1:${port}`, "admin");
    await admin.createJob({ command: "true" });
    await assert.rejects(admin.getJob("missing"));
    admin.close();
  } finally {
    child.kill("SIGTERM");
  }
  assert.equal((await child.status).code, 0);
  assert.equal(await stderr, "");
  await Deno.remove(stateDir, { recursive: true });
  await pki.remove();
});
