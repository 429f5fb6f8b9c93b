/**
 * The worker recycles itself in place (worker/tls/session_recycle.ts) once it has served
 * JOB_WORKER_RECYCLE_AFTER_SESSIONS HTTP/2 sessions and no client is connected: never while a
 * client is connected; afterwards the same PID serves, the running job is kept, and the session
 * gauge starts again from the new process's own sessions. (Why it recycles, and what 20,000
 * connections leave without it: tests/fuzz_test.ts.)
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
import { recycled } from "./helpers/recycled.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const times = (worker: WorkerProcess, msg: string) =>
  worker.logs.map(parseLogLine).filter((line) => line?.msg.startsWith(msg));

async function sessionsServed(worker: WorkerProcess): Promise<number> {
  const port = times(worker, "metrics listening").at(-1)?.fields.port;
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const value = /^jobworker_http2_sessions_served (\d+)$/m.exec(text);
  assert.ok(value, "no jobworker_http2_sessions_served in /metrics");
  return Number(value[1]);
}

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
      assert.ok(await sessionsServed(worker) > LIMIT);

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
      assert.ok(await sessionsServed(worker) < 10, "the new process counts only its own sessions");
      await client.stopJob(job.id, { force: true });
    } finally {
      client.close();
      const exit = await worker.stop();
      await pki.remove();
      assert.equal(exit.code, 0, "the worker did not stop cleanly");
    }
  },
});
