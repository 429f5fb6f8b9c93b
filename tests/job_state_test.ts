/**
 * The job state machine's one transition table, and stop escalation (worker/jobs/stopper.ts) with
 * a recording target. No server needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Job, JOB_STATUSES, type JobStatus, StateTransitionError } from "../worker/jobs/job.ts";
import { Stopper } from "../worker/jobs/stopper.ts";
import { jobSpec } from "./helpers/job_records.ts";

const spec = jobSpec({
  command: "true",
  limits: { cpuPercent: 0, memoryMiB: 0, ioBps: 0, pids: 0 },
});

const ALLOWED = new Set([
  "INITIALIZING>RUNNING",
  "INITIALIZING>FAILED",
  "INITIALIZING>STOPPED",
  "RUNNING>COMPLETED",
  "RUNNING>FAILED",
  "RUNNING>STOPPED",
]);

Deno.test("transitions: exactly the table's moves; others are a StateTransitionError", () => {
  for (const from of JOB_STATUSES) {
    for (const to of JOB_STATUSES) {
      const job = new Job("j", 1, "o", spec, new Date(), from as JobStatus);
      if (ALLOWED.has(`${from}>${to}`)) {
        job.transition(to);
        assert.equal(job.status, to);
      } else {
        assert.throws(() => job.transition(to), (e: unknown) => {
          assert.ok(e instanceof StateTransitionError);
          assert.equal(e.from, from);
          assert.equal(e.to, to);
          return true;
        });
      }
    }
  }
});

Deno.test("transitions: end time and the ended promise", async () => {
  const job = new Job("j", 1, "o", spec);
  const at = new Date(5000);
  job.transition("RUNNING", undefined, new Date(1000));
  job.transition("FAILED", "why", at);
  assert.equal(job.endTime, at);
  assert.equal(job.reason, "why");
  await job.ended;
});

function recorder() {
  const calls: string[] = [];
  return {
    calls,
    target: {
      signalAll: (s: Deno.Signal) => calls.push(s),
      killAll: () => calls.push("KILL"),
    },
  };
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("stopper: SIGTERM once, SIGKILL at the deadline; a later stop only hurries it", async () => {
  const { calls, target } = recorder();
  const stopper = new Stopper(target);
  stopper.stop(200);
  stopper.stop(5000); // later: no effect
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT"]);
  stopper.stop(20); // sooner
  await tick(60);
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT", "KILL"]);
  await tick(250);
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT", "KILL"], "the first deadline was replaced");
  stopper.cancel();
});

Deno.test("stopper: force is SIGKILL at once; cancel stops everything", async () => {
  const a = recorder();
  new Stopper(a.target).stop(0);
  await tick(10);
  assert.deepEqual(a.calls, ["KILL"]);
  const b = recorder();
  const s = new Stopper(b.target);
  s.stop(30);
  s.cancel();
  await tick(60);
  assert.deepEqual(b.calls, ["SIGTERM", "SIGCONT"]);
});

Deno.test("stopper: a deadline carried over a reload (killBy an absolute time)", async () => {
  const { calls, target } = recorder();
  const s = new Stopper(target);
  s.markTerminated();
  s.killBy(Date.now() + 30);
  s.started(); // SIGTERM again only if it had been sent: it had
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT"]);
  await tick(60);
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT", "KILL"]);
});

Deno.test("stopper: a stop before the job has processes is kept, carried out at attach", async () => {
  const { calls, target } = recorder();
  const s = new Stopper();
  s.stop(5000);
  s.stop(20); // sooner: the shortest grace wins
  s.stop(10_000);
  await tick(40);
  assert.deepEqual(calls, [], "nothing to signal before attach");
  s.attach(target);
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT"]);
  await tick(60);
  assert.deepEqual(calls, ["SIGTERM", "SIGCONT", "KILL"], "the grace counts from attach");
  s.cancel();
});

Deno.test("stopper: a forced stop before attach is SIGKILL at attach, without SIGTERM", async () => {
  const { calls, target } = recorder();
  const s = new Stopper();
  s.stop(30_000);
  s.stop(0);
  s.attach(target);
  await tick(10);
  assert.deepEqual(calls, ["KILL"]);
  s.cancel();
});

Deno.test("stopper: abandoned before attach, the kept stop is dropped and waiters hear it", async () => {
  const s = new Stopper();
  s.stop(0);
  s.abandon();
  await s.abandoned;
  assert.equal(s.killAt, undefined);
  assert.equal(s.terminated, false);
  // Attached without a stop kept, nothing is signalled.
  const { calls, target } = recorder();
  const t = new Stopper();
  t.attach(target);
  await tick(10);
  assert.deepEqual(calls, []);
  t.cancel();
});

Deno.test("stopper: a stop is reported carried out when it reaches processes, never if abandoned", () => {
  const heard: string[] = [];
  const running = new Stopper(recorder().target);
  running.whenCarriedOut(() => heard.push("running"));
  assert.equal(heard.length, 0, "not before the stop itself");
  running.stop(0);
  running.whenCarriedOut(() => heard.push("running, asked again"));
  assert.deepEqual(heard, ["running", "running, asked again"]);
  running.cancel();

  const starting = new Stopper();
  starting.whenCarriedOut(() => heard.push("starting"));
  starting.stop(5000);
  assert.deepEqual(heard.slice(2), [], "kept, not carried out");
  starting.attach(recorder().target);
  assert.deepEqual(heard.slice(2), ["starting"]);
  starting.cancel();

  const failed = new Stopper();
  failed.whenCarriedOut(() => heard.push("failed"));
  failed.stop(0);
  failed.abandon();
  failed.whenCarriedOut(() => heard.push("failed, asked again"));
  assert.deepEqual(heard.slice(3), [], "a job whose start failed was never stopped");
});
