/**
 * The command line across the worker's in-place reload (SIGHUP, the same reload a recycle does:
 * worker/tls/session_recycle.ts), which cuts every client's calls: `jobworker run` keeps streaming
 * the job it created (never creating it twice) and exits with its status, `jobworker stream`
 * resumes with no byte lost or repeated, `jobworker list --watch` goes on, also when the worker
 * does not listen for longer than a call's own retries wait. So do `run`'s calls around the
 * output: a reload that falls at the GetJob after the output ended (the exit code; `stream
 * --verbose` asks it too, to say how the job ended), at the DeleteJob of `--rm`, or at the StopJob
 * of Ctrl-C. The real program against a real worker; only
 * what a user sees: exit codes, stdout and stderr.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import { timesLogged } from "./helpers/recycled.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { describeWorker } from "./helpers/worker_state.ts";
import { sourceCommand } from "../bench/client_start.ts";
import { hasEnded } from "../cli/render.ts";

/** A line of a stack trace: never shown to a user. */
const STACK = /^\s+at .*:\d+:\d+\)?$/m;

let pki: PkiFixture;
let worker: WorkerProcess;
let client: JobClient;
/** Where the test keeps the jobs' gate and the worker's test-only listen delay. */
let dir: string;
/** Read by the worker before it listens (JOB_WORKER_TEST_LISTEN_DELAY_FILE, worker/serve.ts). */
const listenDelayFile = () => `${dir}/listen-delay-ms`;

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cli reload: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

/** A running `jobworker` command whose output is collected as it comes. */
class Cli {
  readonly #child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  /** Whether the program has exited. */
  exited = false;
  readonly #done: Promise<void>;
  #releaseStdout: () => void = () => {};

  /**
   * With `holdStdout`, its stdout is not read until {@linkcode releaseStdout}: once the pipe is
   * full the program waits in a write, with what the server sent after it still unread.
   */
  constructor(args: string[], options: { holdStdout?: boolean } = {}) {
    const argv = sourceCommand(["--server", worker.address, "--cert-path", pki.dir, ...args])[1];
    this.#child = new Deno.Command(Deno.execPath(), {
      args: argv,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#child.status.then(() => (this.exited = true));
    const collect = async (from: ReadableStream<Uint8Array>, to: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const bytes of from) this[to] += decoder.decode(bytes, { stream: true });
    };
    const released = new Promise<void>((resolve) => (this.#releaseStdout = resolve));
    if (!options.holdStdout) this.#releaseStdout();
    this.#done = Promise.all([
      released.then(() => collect(this.#child.stdout, "stdout")),
      collect(this.#child.stderr, "stderr"),
    ]).then(() => {});
  }

  /** Read its stdout from now on. */
  releaseStdout(): void {
    this.#releaseStdout();
  }

  async exit(): Promise<Deno.CommandStatus> {
    this.#releaseStdout();
    const status = await this.#child.status;
    await this.#done;
    return status;
  }

  /** Ctrl-C, as a user would press it (nothing if it has exited). */
  interrupt(): void {
    try {
      this.#child.kill("SIGINT");
    } catch {
      // Exited already.
    }
  }
}

/**
 * `sh` printing 0, 1, 2, ... up to `count` - 1, one a line, `pause` seconds apart, then waiting
 * until the file `gate` exists (the test releases it), then `then`.
 */
function counter(count: number, pause: number, gate: string, then = ""): string[] {
  return [
    "sh",
    "-c",
    `i=0; while [ $i -lt ${count} ]; do echo $i; i=$((i+1)); sleep ${pause}; done; ` +
    `while [ ! -e ${gate} ]; do sleep 0.05; done${then}`,
  ];
}

/** The text is exactly 0..count-1, one a line: no line lost, none repeated. */
function assertCounted(text: string, count: number, what: string): void {
  const lines = text.split("\n");
  assert.equal(lines.pop(), "", `${what}: the output does not end with a newline`);
  const wrong = lines.findIndex((line, i) => line !== String(i));
  assert.equal(wrong, -1, `${what}: line ${wrong} is "${lines[wrong]}"`);
  assert.equal(lines.length, count, `${what}: ${lines.length} of ${count} lines`);
}

/**
 * SIGHUP, then wait until the worker listens again (its jobs re-attached). With `slowMs`, the new
 * program waits that long before it listens (the worker's test-only listen delay), as a loaded host
 * can hold it: longer than a call's own retries (100 + 300 + 1000 ms, cli/client.ts) wait.
 */
async function reload(slowMs = 0): Promise<void> {
  const listening = timesLogged(worker, "listening");
  if (slowMs > 0) await Deno.writeTextFile(listenDelayFile(), String(slowMs));
  try {
    worker.process.kill("SIGHUP");
    await waitForWorker("the reload", () => timesLogged(worker, "listening") > listening);
  } finally {
    await Deno.remove(listenDelayFile()).catch(() => {});
  }
  if (slowMs > 0) {
    const notListeningMs = Number(notListening().at(-1));
    assert.ok(notListeningMs >= slowMs, `did not listen for ${notListeningMs} ms, not ${slowMs}`);
  }
}

/**
 * Waits up to a minute for the worker to get somewhere in a reload; if it does not, the failure
 * says what the worker is doing (dead, blocked, stops parked) and what it logged last.
 */
async function waitForWorker(what: string, condition: () => boolean): Promise<void> {
  try {
    await waitFor(what, condition, 60_000);
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${await describeWorker(worker)}`);
  }
}

test("start a worker", async () => {
  pki = await makePki();
  dir = await Deno.makeTempDir({ prefix: "jobworker-test-cli-reload-" });
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_TEST_LISTEN_DELAY_FILE: listenDelayFile() },
  });
  client = clientFor(pki.dir, worker.address);
});

test("run, stream and list --watch go on across in-place reloads, one of them slow", async () => {
  const marker = `reload-${crypto.randomUUID()}`;
  // Output while the reloads come; the jobs end only when the test releases them after the last.
  const LINES = 500;
  const gate = `${dir}/release-${marker}`;
  const streamed = await client.createJob({
    command: "sh",
    args: counter(LINES, 0.02, gate).slice(1),
  });
  const stream = new Cli(["stream", streamed.id]);
  const run = new Cli(["run", ...counter(LINES, 0.02, gate, "; exit 7"), marker]);
  const watch = new Cli(["list", "--watch", "--interval", "1"]);
  const frames = () => watch.stdout.split("Every 1s: jobworker list").length - 1;
  try {
    // list --watch rides out a lost connection only after its first refresh.
    await waitFor(
      "output from stream, run and list --watch",
      () => stream.stdout && run.stdout && frames() > 0,
      30_000,
    );
    // Three as they come, then one that does not listen for 3 s.
    for (const slowMs of [0, 0, 0, 3000]) {
      await reload(slowMs);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const framesAtLastReload = frames();
    // Still following after the last reload, their jobs not yet ended: then release the jobs.
    assert.equal(run.exited, false, `run exited before its job ended\n${run.stderr}`);
    assert.equal(stream.exited, false, `stream exited before its job ended\n${stream.stderr}`);
    await Deno.writeTextFile(gate, "");

    const ran = await run.exit();
    assert.equal(ran.code, 7, `run: ${ran.code}\n${run.stderr}`);
    assertCounted(run.stdout, LINES, "run");
    assert.doesNotMatch(run.stderr, STACK);
    const created = (await client.listJobs()).jobs.filter((job) => job.args?.includes(marker));
    assert.equal(created.length, 1, "run created its job more than once");

    const streamedExit = await stream.exit();
    assert.equal(streamedExit.code, 0, `stream: ${streamedExit.code}\n${stream.stderr}`);
    assertCounted(stream.stdout, LINES, "stream");

    // Refreshed at least twice since (every second): it goes on.
    const until = performance.now() + 10_000;
    while (frames() <= framesAtLastReload + 1 && performance.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(
      frames() > framesAtLastReload + 1,
      `list --watch stopped refreshing (${frames()} frames; ${watch.stderr})`,
    );
    watch.interrupt();
    const watched = await watch.exit();
    assert.equal(watched.code, 0, `list --watch: ${watched.code}\n${watch.stderr}`);
    console.log(
      `run and stream: ${LINES} lines each; list --watch: ${frames()} frames; ` +
        `notListeningMs ${notListening().join(", ")}`,
    );
  } finally {
    await Deno.writeTextFile(gate, "");
    watch.interrupt();
    await Promise.all([run.exit(), stream.exit(), watch.exit()]);
  }
});

/**
 * A reload that does not listen for `slowMs`, and `meanwhile` done once the worker has stopped
 * serving (its calls cut, its port closed) and before it listens again.
 */
async function reloadWith(slowMs: number, meanwhile: () => void): Promise<void> {
  const listening = timesLogged(worker, "listening");
  const execs = timesLogged(worker, "reloading: exec'ing");
  await Deno.writeTextFile(listenDelayFile(), String(slowMs));
  try {
    worker.process.kill("SIGHUP");
    await waitForWorker(
      "the worker to stop serving",
      () => timesLogged(worker, "reloading: exec'ing") > execs,
    );
    meanwhile();
    await waitForWorker("the reload", () => timesLogged(worker, "listening") > listening);
  } finally {
    await Deno.remove(listenDelayFile()).catch(() => {});
  }
  const notListeningMs = Number(notListening().at(-1));
  assert.ok(notListeningMs >= slowMs, `did not listen for ${notListeningMs} ms, not ${slowMs}`);
}

/** The id of the one job whose arguments hold `marker`, once there is one. */
async function jobMarked(marker: string): Promise<string> {
  return await waitFor(`the job ${marker}`, async () => {
    const jobs = (await client.listJobs()).jobs.filter((job) => job.args?.includes(marker));
    assert.ok(jobs.length <= 1, `${jobs.length} jobs ${marker}`);
    return jobs[0]?.id;
  }, 30_000);
}

/** A worker that does not listen for this long outlasts a call's own retries (1.4 s) by far. */
const SLOW_RELOAD_MS = 5000;
/** Output of the jobs that end at once: far more than a pipe holds (64 KiB). */
const OUTPUT_BYTES = 512 * 1024;

/**
 * `cli`, its stdout held, was sent a whole ended job's output: the worker sends the output and the
 * stream's end as soon as the job ended (the stream's window, 8 MiB, holds it all). After a moment
 * for them to be on their way, the worker reloads slowly and `cli` may write again once it has
 * stopped serving; resolves with how `cli` exited.
 */
async function releasedInSlowReload(cli: Cli, name: string): Promise<Deno.CommandStatus> {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(cli.exited, false, `${name} exited while its stdout was held\n${cli.stderr}`);
  await reloadWith(SLOW_RELOAD_MS, () => cli.releaseStdout());
  return await cli.exit();
}

/**
 * `run [flags] <a job that writes OUTPUT_BYTES and exits 7>`, its stdout held: the job ends and
 * the worker sends all its output and the stream's end, while `run` waits in a write. The worker
 * then reloads, slowly; once it has stopped serving, `run` may write again, comes to the end of
 * the output and asks how the job ended (and with `--rm` deletes it) while nothing listens.
 */
async function runEndingInReload(flags: string[]) {
  const marker = `ending-${crypto.randomUUID()}`;
  const run = new Cli([
    "run",
    ...flags,
    "sh",
    "-c",
    `yes 0123456789abcdef | head -c ${OUTPUT_BYTES}; exit 7`,
    marker,
  ], { holdStdout: true });
  try {
    const id = await jobMarked(marker);
    await waitFor("the job's end", async () => hasEnded(await client.getJob(id)), 30_000);
    const ran = await releasedInSlowReload(run, "run");
    assert.equal(ran.code, 7, `run: exit code ${ran.code}\n${run.stderr}`);
    assert.equal(run.stdout.length, OUTPUT_BYTES, "run: its output");
    assert.doesNotMatch(run.stderr, STACK);
    return { id, marker };
  } finally {
    await run.exit();
  }
}

test("run: a slow reload at the GetJob after the output, which gives the exit code", async () => {
  const { id } = await runEndingInReload([]);
  assert.ok(hasEnded(await client.getJob(id)));
});

// The reload falls at the GetJob before the DeleteJob: a run that gave up there (or the DeleteJob
// after it, had the reload outlasted the GetJob) would leave the job behind. A reload that falls
// between the two calls, and only at the DeleteJob, is not something a test can time.
test("run --rm: a slow reload after the output still deletes the job", async () => {
  const { marker } = await runEndingInReload(["--rm"]);
  const left = (await client.listJobs()).jobs.filter((job) => job.args?.includes(marker));
  assert.equal(left.length, 0, "run --rm left its job behind");
});

test("stream --verbose: a slow reload at the GetJob after the output, which says how it ended", async () => {
  const job = await client.createJob({
    command: "sh",
    args: ["-c", `yes 0123456789abcdef | head -c ${OUTPUT_BYTES}; exit 7`],
  });
  await waitFor("the job's end", async () => hasEnded(await client.getJob(job.id)), 30_000);
  const stream = new Cli(["stream", "--verbose", job.id], { holdStdout: true });
  try {
    const streamed = await releasedInSlowReload(stream, "stream");
    assert.equal(streamed.code, 0, `stream: exit code ${streamed.code}\n${stream.stderr}`);
    assert.equal(stream.stdout.length, OUTPUT_BYTES, "stream: its output");
    assert.match(stream.stderr, new RegExp(`job ${job.id} FAILED \\(exit code 7\\)`));
    assert.doesNotMatch(stream.stderr, STACK);
  } finally {
    await stream.exit();
  }
});

test("run: Ctrl-C while the worker reloads slowly stops the job", async () => {
  const marker = `interrupted-${crypto.randomUUID()}`;
  // Ends on SIGTERM (StopJob's first signal) with 143, as a shell's default would.
  const run = new Cli([
    "run",
    "sh",
    "-c",
    "trap 'exit 143' TERM; echo started; while :; do sleep 0.05; done",
    marker,
  ]);
  try {
    await waitFor("run's output", () => run.stdout.includes("started"), 30_000);
    await reloadWith(SLOW_RELOAD_MS, () => run.interrupt());
    // A stop lost in the reload leaves the job running, and run following it: it never ends.
    await waitFor("run to stop its job and end", () => run.exited, 30_000)
      .catch((err) => assert.fail(`${err.message}\nrun's stderr: ${run.stderr}`));
    const ran = await run.exit();
    assert.equal(ran.code, 143, `run: exit code ${ran.code}\n${run.stderr}`);
    assert.equal(run.stdout, "started\n");
    assert.doesNotMatch(run.stderr, STACK);
    const job = await client.getJob(await jobMarked(marker));
    assert.ok(hasEnded(job), `the job is ${job.status}`);
  } finally {
    const id = await jobMarked(marker);
    if (!hasEnded(await client.getJob(id))) await client.stopJob(id, { force: true });
    await run.exit();
  }
});

/** How long each reload did not listen, from the worker's "listening" lines. */
function notListening(): unknown[] {
  return worker.logs.map(parseLogLine).filter((line) => line?.msg === "listening")
    .map((line) => line!.fields.notListeningMs).filter((ms) => ms !== undefined);
}

test("stop the worker", async () => {
  client.close();
  const exit = await worker.stop();
  await pki.remove();
  await Deno.remove(dir, { recursive: true });
  assert.equal(exit.code, 0);
});
