/**
 * Reload in place (SIGHUP) with a real worker: jobs keep running as the same process's children,
 * output streamed by reconnecting clients is complete and exact, a pending timeout fires on
 * time, a reload whose new configuration cannot start is refused, twenty reloads in a row.
 *
 * Run: `deno test -A tests/record_reload_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { ApiCalls } from "./helpers/api_calls.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { jobProcesses, waitFor } from "./helpers/host_procs.ts";
import { isCounterPrefix, retrying, streamResuming, WRITER } from "./helpers/reload.ts";
import { freePort } from "./helpers/free_port.ts";
import { pathExists } from "./helpers/disk.ts";

const S = jobworker.JobStatus;
const pki = await makePki();

const worker = await WorkerProcess.start({
  certDir: pki.dir,
  env: { JOB_WORKER_ADDR: `127.0.0.1:${freePort()}` },
});
const api = new ApiCalls(pki.dir, worker.address);
const client = clientFor(pki.dir, worker.address);

globalThis.addEventListener("unload", () => {
  try {
    worker.process.kill("SIGKILL");
  } catch { /* gone */ }
});

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

const listenLines = () => worker.logs.filter((l) => parseLogLine(l)?.msg === "listening").length;

/** SIGHUP, then waits for the worker to listen again; returns the reload's log line. */
async function reloadWorker(): Promise<string> {
  const before = listenLines();
  worker.process.kill("SIGHUP");
  await waitFor("the worker to listen again", () => listenLines() > before, 60_000);
  return worker.logs.filter((l) => parseLogLine(l)?.msg === "listening").at(-1)!;
}

test("reload while 20 jobs write and 5 clients stream: nothing lost, nothing twice", async () => {
  const pid = worker.process.pid;
  const infoBefore = await api.serverInfo();
  assert.equal(infoBefore.reloadTime, null);
  const writers: string[] = [];
  for (let i = 0; i < 20; i++) writers.push((await api.createJob(WRITER)).id);
  // Ends at once on SIGTERM, so its end time shows when the timeout fired.
  const timed = await api.createJob({
    command: "sh",
    args: ["-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
    timeoutSeconds: 6,
  });
  const streams = writers.slice(0, 5).map((id) => streamResuming(client, id));
  await waitFor("output", async () => Number((await api.getJob(writers[19]!)).outputBytes) > 10000);

  const line = await reloadWorker();
  assert.match(line, /reloaded=true/);
  assert.match(line, /jobsKept=21/);
  const window = Number(/notListeningMs=(\d+)/.exec(line)?.[1]);
  console.log(`reload: not listening for ${window} ms`);
  assert.equal(worker.process.pid, pid);
  assert.ok(Deno.readTextFileSync(`/proc/${pid}/status`).includes("State:"), "same process");

  const info = await retrying(() => api.serverInfo());
  assert.ok(info.reloadTime, "reloadTime is set");
  assert.deepEqual(info.startTime, infoBefore.startTime, "startTime is the first start's");
  assert.equal(info.runningJobs, 21);
  for (const id of writers) {
    assert.equal((await api.getJob(id)).status, S.RUNNING, `writer ${id} still runs`);
    assert.ok(jobProcesses(id).length > 0, `writer ${id} has processes`);
  }
  const size1 = Number((await api.getJob(writers[0]!)).outputBytes);
  await waitFor(
    "output to grow after the reload",
    async () => Number((await api.getJob(writers[0]!)).outputBytes) > size1 + 10000,
  );

  // The timeout armed before the reload fires on time.
  const ended = await waitFor("the timeout", async () => {
    const j = await api.getJob(timed.id);
    return j.status === S.RUNNING ? null : j;
  }, 20_000);
  assert.equal(ended.status, S.STOPPED);
  assert.match(ended.reason, /timed out after 6 s/);
  const ranMs = (Number(ended.endTime!.seconds) - Number(ended.startTime!.seconds)) * 1000;
  assert.ok(ranMs >= 5000 && ranMs <= 8000, `ran ${ranMs} ms with a 6 s timeout`);

  for (const id of writers) await api.stopJob(id);
  const results = await Promise.all(streams);
  for (const [i, r] of results.entries()) {
    const job = await api.getJob(writers[i]!);
    assert.equal(r.bytes, Number(job.outputBytes), "every byte streamed once");
    assert.ok(isCounterPrefix(r.text), "in order, no gap, no duplicate");
  }
  for (const id of writers) {
    const { text, bytes } = await streamResuming(client, id);
    assert.equal(bytes, Number((await api.getJob(id)).outputBytes));
    assert.ok(isCounterPrefix(text), `output of ${id} across the reload is exact`);
  }
});

test("a reload whose configuration cannot start is refused; nothing stops", async () => {
  const job = await api.createJob(WRITER);
  const cert = `${pki.dir}/server-cert.pem`;
  await Deno.rename(cert, `${cert}.away`);
  try {
    const before = listenLines();
    const refusedBefore = worker.logs.filter((l) => l.includes("reload refused")).length;
    worker.process.kill("SIGHUP");
    await waitFor(
      "the refusal",
      () => worker.logs.filter((l) => l.includes("reload refused")).length > refusedBefore,
      60_000,
    );
    assert.equal(listenLines(), before, "no new process");
  } finally {
    await Deno.rename(`${cert}.away`, cert);
  }
  assert.equal((await api.getJob(job.id)).status, S.RUNNING);
  await api.serverInfo();
  await api.stopJob(job.id);
});

test("twenty reloads in a row with jobs writing", async () => {
  const writers: string[] = [];
  for (let i = 0; i < 3; i++) writers.push((await retrying(() => api.createJob(WRITER))).id);
  const streams = writers.map((id) => streamResuming(client, id));
  for (let i = 0; i < 20; i++) await reloadWorker();
  for (const id of writers) {
    assert.equal((await retrying(() => api.getJob(id))).status, S.RUNNING);
  }
  for (const id of writers) await retrying(() => api.stopJob(id));
  const results = await Promise.all(streams);
  for (const [i, r] of results.entries()) {
    assert.equal(r.bytes, Number((await api.getJob(writers[i]!)).outputBytes));
    assert.ok(isCounterPrefix(r.text));
  }
});

const indexOf = (id: string) => `${worker.stateDir}/jobs/${id}/output.idx`;

// A job's output index is made at its first output byte, not at its start.
test("a silent job has no output index; output after a stream began, across a reload, is streamed", async () => {
  const silent = await retrying(() => api.createJob({ command: "true" }));
  await waitFor("the silent job to end", async () => (await api.getJob(silent.id)).endTime);
  assert.equal(pathExists(`${worker.stateDir}/jobs/${silent.id}/output`), true);
  assert.equal(pathExists(indexOf(silent.id)), false, "no index for a job that wrote nothing");
  assert.equal(Number((await api.getJob(silent.id)).outputBytes), 0);
  const none = await collectOutput(client, silent.id);
  assert.deepEqual([none.stdout, none.stderr, none.chunks], ["", "", 0]);

  // A stream attached before the job's first byte.
  const later = await api.createJob({ command: "sh", args: ["-c", "sleep 2; echo hi"] });
  const early = collectOutput(client, later.id);
  await new Promise((r) => setTimeout(r, 200)); // well before the job's first byte, even on a busy machine
  assert.equal(pathExists(indexOf(later.id)), false, "no byte yet");
  assert.equal((await early).stdout, "hi\n");

  // A job silent across a reload: one stream attached before it, one after; output at its stop.
  const quiet = await api.createJob({
    command: "sh",
    args: [
      "-c",
      "exec 3>&2 2>/dev/null; trap 'echo bye; sleep 0.1; echo err >&3; exit 0' TERM; " +
      "while :; do sleep 0.05; done",
    ],
  });
  const before = streamResuming(client, quiet.id);
  await new Promise((r) => setTimeout(r, 200));
  await reloadWorker();
  assert.equal((await retrying(() => api.getJob(quiet.id))).status, S.RUNNING);
  assert.equal(pathExists(indexOf(quiet.id)), false, "still silent after the reload");
  // A new connection (the old one may wait out its reconnect backoff).
  const fresh = clientFor(pki.dir, worker.address);
  const after = retrying(() => collectOutput(fresh, quiet.id));
  await new Promise((r) => setTimeout(r, 500));
  await retrying(() => api.stopJob(quiet.id, false));
  assert.equal((await before).text, "bye\nerr\n");
  const got = await after;
  fresh.close();
  assert.deepEqual([got.stdout, got.stderr], ["bye\n", "err\n"]);
  // That stream was open before the first byte (not one opened after the end).
  const streamed = worker.logs.filter((l) =>
    l.includes("GetJobsStream") && l.includes(quiet.id) && l.includes("bytes=8")
  ).map((l) => Number(/duration_ms=([\d.]+)/.exec(l)?.[1]));
  assert.ok(streamed.some((ms) => ms > 300), `streams of it: ${streamed} ms`);
  assert.equal(pathExists(indexOf(quiet.id)), true);
});

// Its pipes are closed then, and their numbers free for another descriptor: none may be handed on.
test("a job that closed its output before a reload keeps running, and the reload works", async () => {
  const job = await retrying(() =>
    api.createJob({ command: "sh", args: ["-c", "echo hi; exec >&- 2>&-; sleep 30"] })
  );
  await waitFor("its line", async () => Number((await api.getJob(job.id)).outputBytes) === 3);
  // Both read ends reach end of file and close once the shell closed its descriptors.
  await new Promise((r) => setTimeout(r, 300));
  // Handed on, a closed descriptor failed the exec ("cannot keep descriptor N open", the old
  // process serving on), or, its number reused, gave the new process another file as the job's.
  const since = worker.logs.length;
  await reloadWorker();
  const failed = worker.logs.slice(since).filter((l) =>
    parseLogLine(l)?.msg.startsWith("reload failed")
  );
  assert.deepEqual(failed, [], "the reload went through");
  assert.equal((await retrying(() => api.getJob(job.id))).status, S.RUNNING);
  await retrying(() => api.stopJob(job.id, true));
  const got = await collectOutput(client, job.id).catch(() =>
    collectOutput(clientFor(pki.dir, worker.address), job.id)
  );
  assert.equal(got.stdout, "hi\n");
});

test("stop the worker", async () => {
  api.close();
  client.close();
  assert.equal((await worker.stop()).code, 0);
  await pki.remove();
});
