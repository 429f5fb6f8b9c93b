/**
 * The worker recycles itself in place (worker/tls/session_recycle.ts) once it has served
 * JOB_WORKER_RECYCLE_AFTER_SESSIONS HTTP/2 sessions and no client is connected: never while a
 * client is connected; afterwards the same PID serves, the running job is kept, and the session
 * gauge starts again from the new process's own sessions. (Why it recycles, and what 20,000
 * connections leave without it: tests/fuzz_test.ts.)
 *
 * The races are held open with a FUSE gate (helpers/fuse_gate.ts): a job whose init waits at the
 * gate keeps a reload waiting for jobs to settle for as long as the test wants, so a client can
 * connect "while the recycle gets ready" without any sleep.
 *
 * @module
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { churnConnections } from "./helpers/tls_churn.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { recycled, timesLogged } from "./helpers/recycled.ts";
import { JobClient } from "../cli/client.ts";
import { FuseGate } from "./helpers/fuse_gate.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { unless, withSkip } from "./helpers/skip.ts";
import { ControlSignals } from "../worker/runtime/reload.ts";
import { metricValue } from "./helpers/metrics.ts";
import { RawGrpcClient } from "./helpers/raw_grpc.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const times = (worker: WorkerProcess, msg: string) =>
  worker.logs.map(parseLogLine).filter((line) => line?.msg.startsWith(msg));

Deno.test({
  name: "after JOB_WORKER_RECYCLE_AFTER_SESSIONS sessions the worker recycles once no client is " +
    "connected: same PID, job kept",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const LIMIT = 200;
    const pki = await makePki();
    const worker = await WorkerProcess.start({
      certDir: pki.dir,
      env: {
        JOB_WORKER_RECYCLE_AFTER_SESSIONS: String(LIMIT),
        JOB_WORKER_METRICS_ADDR: "127.0.0.1:0",
      },
    });
    let client = clientFor(pki.dir, worker.address);
    try {
      const job = await client.createJob({ command: "sleep", args: ["600"] });
      assert.equal(await churnConnections(pki.dir, worker.address, LIMIT + 50), LIMIT + 50);
      const served = await metricValue(worker, "jobworker_http2_sessions_served");
      assert.ok(served > LIMIT);
      // What the hard limit applies to: 18 KiB a session (no output stranded here).
      assert.equal(
        await metricValue(worker, "jobworker_http2_native_estimate_bytes"),
        served * 18 * 1024,
      );

      // Past the limit, but a client is still connected: nothing happens.
      await delay(2000);
      assert.equal(times(worker, "recycling").length, 0, "recycled with a client connected");
      assert.equal((await client.getJob(job.id)).status, jobworker.JobStatus.RUNNING);

      // The last client leaves: the worker recycles itself and listens again, the same process.
      client.close();
      assert.ok(await recycled(worker), `no recycle:\n${worker.logs.slice(-20).join("\n")}`);
      const recycling = times(worker, "recycling")[0];
      assert.ok(recycling, "the recycle was not logged");
      assert.ok(Number(recycling.fields.sessions) > LIMIT);
      const listening = times(worker, "listening").at(-1)!;
      assert.equal(String(listening.fields.reloaded), "true");
      assert.equal(String(listening.fields.jobsKept), "1");
      console.log(`not listening for ${listening.fields.notListeningMs} ms`);
      assert.ok(Deno.readTextFileSync(`/proc/${worker.process.pid}/status`).includes("State:"));

      client = clientFor(pki.dir, worker.address);
      assert.equal((await client.getJob(job.id)).status, jobworker.JobStatus.RUNNING);
      assert.ok(
        await metricValue(worker, "jobworker_http2_sessions_served") < 10,
        "the new process counts only its own sessions",
      );
      await client.stopJob(job.id, { force: true });
    } finally {
      client.close();
      const exit = await worker.stop();
      await pki.remove();
      assert.equal(exit.code, 0, "the worker did not stop cleanly");
    }
  },
});

const hasFuse = (() => {
  try {
    return Deno.statSync("/dev/fuse").isCharDevice === true && Deno.uid() === 0;
  } catch {
    return false;
  }
})();
const needsFuse = unless(
  hasFuse,
  "no /dev/fuse (as root) to hold a reload while a client connects",
);

const LIMIT = 5;
const SETTLING = "reload: the new program checked out; waiting for jobs to settle";
const CALLED_OFF = "reload called off";
const FORCED = "recycling the worker in place with clients connected";

/**
 * A worker past its recycle limit (JOB_WORKER_RECYCLE_RETRY_MS short, so a retry comes soon), a
 * job writing a line every 100 ms, and a job whose init waits at a FUSE gate. The client that
 * created them is still connected: closing it (`idle()`) lets the recycle start, and the held job
 * keeps that reload waiting for jobs to settle until the gate opens.
 */
async function pastLimitWithHeldJob(env: Record<string, string> = {}) {
  const pki = await makePki();
  const gate = await FuseGate.mount();
  const worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: {
      JOB_WORKER_RECYCLE_AFTER_SESSIONS: String(LIMIT),
      JOB_WORKER_RECYCLE_RETRY_MS: "500",
      ...env,
    },
  });
  const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
  // Its calls end after 2 s: the create held at the gate does not keep the connection busy.
  const first = JobClient.connect({
    server: worker.address,
    caPem: read("ca-cert.pem"),
    certPem: read("admin-client-cert.pem"),
    keyPem: read("admin-client-key.pem"),
    callTimeoutMs: 2000,
  });
  const ticker = await first.createJob({
    command: "sh",
    args: ["-c", "while :; do echo tick; sleep 0.1; done"],
  });
  assert.equal(await churnConnections(pki.dir, worker.address, LIMIT + 5), LIMIT + 5);
  await assert.rejects(first.createJob({ command: "sleep", args: ["600"], workDir: gate.dir }));
  await waitFor("the job's init to wait at the gate", () => gate.waiting === 1);
  assert.equal(timesLogged(worker, "recycling"), 0, "recycled with a client connected");
  return {
    pki,
    gate,
    worker,
    ticker: ticker.id!,
    idle: () => first.close(),
    async close() {
      first.close();
      gate.open();
      const exit = await worker.stop();
      await gate.unmount();
      await pki.remove();
      assert.equal(exit.code, 0, "the worker did not stop cleanly");
    },
  };
}

Deno.test(withSkip({
  name: "a client that connects while a recycle gets ready calls it off: no call cut, and the " +
    "recycle happens at the next idle moment",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await pastLimitWithHeldJob();
    let client: JobClient | undefined;
    try {
      // The last client leaves: the recycle starts, and waits for the held job to settle.
      w.idle();
      await waitFor("the recycle to wait for jobs", () => timesLogged(w.worker, SETTLING) === 1);
      assert.equal(timesLogged(w.worker, "recycling the worker in place"), 1);

      // A client connects meanwhile and follows the job's output.
      client = clientFor(w.pki.dir, w.worker.address);
      assert.equal((await client.getJob(w.ticker)).status, jobworker.JobStatus.RUNNING);
      const stream = client.stream(w.ticker)[Symbol.asyncIterator]();
      assert.equal((await stream.next()).done, false);

      // The held job starts: the reload would go on to the exec, but the recycle is called off.
      w.gate.open();
      await waitFor(
        "the reload to end",
        () => timesLogged(w.worker, CALLED_OFF) || timesLogged(w.worker, "reloading"),
        30_000,
      );
      assert.equal(timesLogged(w.worker, "reloading"), 0, "the worker exec'd with a client");
      const line = linesWith(w.worker, CALLED_OFF)[0]!;
      assert.match(String(line.fields.reason), /a client connected/);
      assert.equal(timesLogged(w.worker, "listening"), 1);
      // Its stream goes on: no call was cut.
      for (let i = 0; i < 5; i++) assert.equal((await stream.next()).done, false, "stream cut");
      assert.equal((await client.getJob(w.ticker)).status, jobworker.JobStatus.RUNNING);

      // The client leaves: the recycle is tried again (after JOB_WORKER_RECYCLE_RETRY_MS).
      await stream.return?.();
      client.close();
      assert.ok(await recycled(w.worker), `no recycle:\n${w.worker.logs.slice(-20).join("\n")}`);
      assert.equal(timesLogged(w.worker, "recycling the worker in place"), 2);
      const listening = linesWith(w.worker, "listening").at(-1)!;
      assert.equal(String(listening.fields.jobsKept), "2");
      client = clientFor(w.pki.dir, w.worker.address);
      assert.equal((await client.getJob(w.ticker)).status, jobworker.JobStatus.RUNNING);
    } finally {
      client?.close();
      await w.close();
    }
  },
}, needsFuse));

/** A job that has ended with a few MiB of output: what a client can strand by cancelling. */
async function endedJobToStrand(w: { pki: { dir: string }; worker: { address: string } }) {
  const client = clientFor(w.pki.dir, w.worker.address);
  try {
    const big = await client.createJob({
      command: "sh",
      args: ["-c", "head -c 3000000 /dev/zero | base64"],
    });
    await waitJobEnded(client, big.id!);
    return big;
  } finally {
    client.close();
  }
}

Deno.test(withSkip({
  name: "a recycle called off for a client does not hold the forced recycle back: a client that " +
    "then strands output past JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB is cut well before the retry",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // The retry is 10 minutes: only a forced recycle can come within this test.
    const w = await pastLimitWithHeldJob({
      JOB_WORKER_RECYCLE_RETRY_MS: "600000",
      JOB_WORKER_RECYCLE_AT_NATIVE_MIB: "0",
      JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "4",
      JOB_WORKER_METRICS_ADDR: "127.0.0.1:0",
    });
    let client: JobClient | undefined;
    let raw: RawGrpcClient | undefined;
    try {
      const big = await endedJobToStrand(w);

      // The hostile client's way in: leave so the recycle starts, reconnect while it gets ready.
      w.idle();
      await waitFor("the recycle to wait for jobs", () => timesLogged(w.worker, SETTLING) === 1);
      client = clientFor(w.pki.dir, w.worker.address);
      assert.equal((await client.getJob(w.ticker)).status, jobworker.JobStatus.RUNNING);
      w.gate.open();
      await waitFor(
        "the recycle to be called off",
        () => timesLogged(w.worker, CALLED_OFF),
        30_000,
      );

      // Then it strands output in a loop, connected: the forced recycle is not held back.
      raw = new RawGrpcClient(w.pki.dir, w.worker.address, "viewer");
      const request = jobworker.GetJobsStreamReq.encode({ id: big.id! }).finish();
      const estimate = () => metricValue(w.worker, "jobworker_http2_stranded_estimate_bytes");
      let cancels = 0;
      while (await estimate() <= 4 * 1024 * 1024 && timesLogged(w.worker, FORCED) === 0) {
        assert.ok(++cancels <= 40, "40 cancels did not strand 4 MiB");
        await raw.cancelAfter("GetJobsStream", request, 3);
      }
      // Past the hard limit, still connected: the recycle comes within seconds, not the retry's
      // ten minutes (it was held back by the call-off's retry delay).
      await waitFor("the forced recycle", () => timesLogged(w.worker, FORCED) > 0, 30_000);
      assert.ok(await recycled(w.worker), `no recycle:\n${w.worker.logs.slice(-20).join("\n")}`);
      assert.equal(timesLogged(w.worker, "reloading"), 1);
      console.log(`forced after ${cancels} cancels, past the call-off`);
    } finally {
      raw?.close();
      client?.close();
      await w.close();
    }
  },
}, needsFuse));

Deno.test(withSkip({
  name: "a recycle that comes while a SIGHUP reload gets ready joins it: the SIGHUP is never " +
    "refused for the recycler, and no second reload follows",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await pastLimitWithHeldJob();
    let client: JobClient | undefined;
    try {
      // The operator reloads while a client is connected; the reload waits for the held job.
      w.worker.process.kill("SIGHUP");
      await waitFor("the reload to wait for jobs", () => timesLogged(w.worker, SETTLING) === 1);
      // The last client leaves during that reload: the recycler asks for a reload too.
      w.idle();
      await waitFor("the recycle", () => timesLogged(w.worker, "recycling the worker in place"));
      // A client connects: the operator's reload goes on all the same.
      client = clientFor(w.pki.dir, w.worker.address);
      assert.equal((await client.getJob(w.ticker)).status, jobworker.JobStatus.RUNNING);
      w.gate.open();
      await waitFor(
        "the reload to end",
        () => timesLogged(w.worker, "listening") === 2 || timesLogged(w.worker, "reload refused"),
        30_000,
      );
      assert.equal(timesLogged(w.worker, "reload refused"), 0, "the SIGHUP was refused");
      assert.equal(timesLogged(w.worker, CALLED_OFF), 0, "the SIGHUP was called off");
      assert.equal(timesLogged(w.worker, "listening"), 2);
      assert.equal(timesLogged(w.worker, "reload requested"), 1, "a second reload");
      client.close();
      client = clientFor(w.pki.dir, w.worker.address);
      assert.equal((await client.getJob(w.ticker)).status, jobworker.JobStatus.RUNNING);
      assert.equal(timesLogged(w.worker, "reload requested"), 1, "a second reload");
    } finally {
      client?.close();
      await w.close();
    }
  },
}, needsFuse));

Deno.test(withSkip({
  name: "a forced recycle (stranded output past the hard limit) that comes while a SIGHUP " +
    "reload gets ready joins it: one reload, never refused or called off",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await pastLimitWithHeldJob({
      JOB_WORKER_RECYCLE_AFTER_SESSIONS: "0",
      JOB_WORKER_RECYCLE_RETRY_MS: "600000",
      JOB_WORKER_RECYCLE_AT_NATIVE_MIB: "0",
      JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "4",
    });
    let raw: RawGrpcClient | undefined;
    try {
      const big = await endedJobToStrand(w);

      // The operator reloads; the reload waits for the held job. Meanwhile a client strands
      // output past the hard limit, connected: the recycler's forced reload joins the SIGHUP's.
      w.worker.process.kill("SIGHUP");
      await waitFor("the reload to wait for jobs", () => timesLogged(w.worker, SETTLING) === 1);
      raw = new RawGrpcClient(w.pki.dir, w.worker.address, "viewer");
      const request = jobworker.GetJobsStreamReq.encode({ id: big.id! }).finish();
      let cancels = 0;
      while (timesLogged(w.worker, FORCED) === 0) {
        assert.ok(++cancels <= 40, "no forced recycle after 40 cancels");
        await raw.cancelAfter("GetJobsStream", request, 3);
      }
      w.gate.open();
      await waitFor(
        "the reload to end",
        () => timesLogged(w.worker, "listening") === 2 || timesLogged(w.worker, "reload refused"),
        30_000,
      );
      assert.equal(timesLogged(w.worker, "reload refused"), 0, "the SIGHUP was refused");
      assert.equal(timesLogged(w.worker, CALLED_OFF), 0, "the SIGHUP was called off");
      assert.equal(timesLogged(w.worker, "reload requested"), 1, "a second reload");
      assert.equal(timesLogged(w.worker, "reloading"), 1);
      console.log(`forced after ${cancels} cancels, joined the SIGHUP reload`);
    } finally {
      raw?.close();
      await w.close();
    }
  },
}, needsFuse));

function linesWith(worker: WorkerProcess, msg: string) {
  return worker.logs.map(parseLogLine).filter((line) => line?.msg.startsWith(msg)).map((l) => l!);
}

const REASONS = "reload requests carry who asked: a recycle joins a reload in progress, a " +
  "SIGHUP queues";
Deno.test(REASONS, async () => {
  const signals = new ControlSignals();
  try {
    // The recycler alone: its reload may be called off.
    signals.requestReload("recycle");
    assert.equal(await signals.next(), undefined);
    assert.equal(signals.recycleOnly, true);
    // The operator asks during it: queued for after (the program may have changed since).
    signals.requestReload("SIGHUP");
    assert.equal(signals.recycleOnly, true);
    assert.equal(await signals.next(), undefined);
    assert.equal(signals.recycleOnly, false, "a SIGHUP reload may never be called off");
    // The recycler asks during the SIGHUP's reload: it joins it, and nothing is queued after.
    signals.requestReload("recycle");
    assert.equal(signals.recycleOnly, false);
    const next = signals.next();
    const none = Symbol("none");
    // After every microtask has run (a timer), the next reload must still be waiting.
    const later = new Promise((resolve) => setTimeout(() => resolve(none), 0));
    assert.equal(await Promise.race([next, later]), none, "a queued reload");
    signals.requestReload("SIGHUP");
    assert.equal(await next, undefined);
    assert.equal(signals.recycleOnly, false);
  } finally {
    signals.close();
  }
});
