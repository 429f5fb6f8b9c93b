/**
 * Reload in place (SIGHUP) at awkward moments, with real workers and real jobs:
 * - a job INITIALIZING (its init held in the chdir to a workDir on a FUSE mount the test serves):
 *   the reload waits for it, or is refused when it waits too long; nothing stops either way;
 * - a SIGTERM during a reload: honoured (the reload is abandoned and the worker stops), and a stop
 *   parked across the exec is honoured by the new process;
 * - the program on disk replaced: by a broken one (refused, nothing stops), then by a good one
 *   (exec'd: the worker runs the new file);
 * - a stop whose SIGKILL is pending while 20 clients stream: the SIGKILL comes on time.
 * Output is checked byte-exact across every reload.
 *
 * Run: `deno test -A tests/record_reload_faults_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { ApiCalls } from "./helpers/api_calls.ts";
import { clientFor } from "./helpers/clients.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { FuseGate } from "./helpers/fuse_gate.ts";
import {
  isCounterPrefix,
  logCount,
  nextLog,
  retrying,
  streamResuming,
  WRITER,
} from "./helpers/reload.ts";
import { unless, withSkip } from "./helpers/skip.ts";
import { killedAtUnload } from "./helpers/killed_at_unload.ts";
import type { JobClient } from "../cli/client.ts";

const S = jobworker.JobStatus;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const pki = await makePki();
const workers = killedAtUnload();
const gates = new Set<FuseGate>();

const hasFuse = (() => {
  try {
    return Deno.statSync("/dev/fuse").isCharDevice === true;
  } catch {
    return false;
  }
})();

function test(name: string, fn: () => Promise<void>, needsFuse = false): void {
  Deno.test(withSkip(
    { name, sanitizeResources: false, sanitizeOps: false, fn },
    needsFuse ? unless(hasFuse, "no /dev/fuse to hold a job in INITIALIZING") : undefined,
  ));
}

// "listening" as the message in logfmt (msg=listening) and text ( listening ).
const LISTENING = /[ =]listening( |$)/;
const RELOADED = /listening .*reloaded=true/;
const SETTLING = /waiting for jobs to settle/;
const REFUSED = /reload refused/;
const EXECING = /reloading: exec'ing/;

/** A worker with its clients, stopped and cleaned up by `close`. */
async function startWorker(options: Partial<Parameters<typeof WorkerProcess.start>[0]> = {}) {
  const worker = await WorkerProcess.start({ certDir: pki.dir, ...options });
  workers.add(worker);
  const api = new ApiCalls(pki.dir, worker.address);
  const client = clientFor(pki.dir, worker.address);
  return {
    worker,
    api,
    client,
    close: async () => {
      api.close();
      client.close();
      const status = await worker.stop();
      workers.delete(worker);
      return status;
    },
  };
}

async function mountGate(): Promise<FuseGate> {
  const gate = await FuseGate.mount();
  gates.add(gate);
  return gate;
}

type Gated = Awaited<ReturnType<typeof startWorker>> & { gate: FuseGate };

/**
 * A test with a worker and a FUSE gate that can hold a job's init in INITIALIZING. However the
 * test ends, the gate is opened, the worker stopped (exit 0 unless `cleanStop` is false) and the
 * gate unmounted.
 */
function gatedTest(name: string, fn: (t: Gated) => Promise<void>, cleanStop = true): void {
  test(name, async () => {
    const started = await startWorker();
    const gate = await mountGate();
    try {
      await fn({ ...started, gate });
    } finally {
      gate.open();
      const status = await started.close();
      await gate.unmount();
      if (cleanStop) assert.equal(status.code, 0);
    }
  }, true);
}

/** Starts a WRITER whose init is held at the gate; resolves once it waits there. */
async function heldWriter(api: ApiCalls, gate: FuseGate) {
  const created = api.createJob({ ...WRITER, workDir: gate.dir });
  created.catch(() => {});
  await waitFor("the job's init to wait at the gate", () => gate.waiting === 1);
  const { jobs } = await api.listJobs({ statuses: [S.INITIALIZING] });
  assert.equal(jobs.length, 1, "one job INITIALIZING");
  return { id: jobs[0]!.id!, created };
}

/** Stops the jobs and checks each one's whole output, streamed across the reloads, is exact. */
async function stopAndCheck(
  api: ApiCalls,
  client: JobClient,
  streams: Map<string, ReturnType<typeof streamResuming>>,
): Promise<void> {
  for (const id of streams.keys()) await retrying(() => api.stopJob(id));
  for (const [id, stream] of streams) {
    const r = await stream;
    const job = await retrying(() => api.getJob(id));
    assert.equal(job.status, S.STOPPED);
    assert.equal(r.bytes, Number(job.outputBytes), "every byte streamed once");
    assert.ok(r.bytes > 0 && isCounterPrefix(r.text), "in order, no gap, no duplicate");
    const again = await streamResuming(client, id);
    assert.equal(again.bytes, r.bytes);
    assert.equal(again.text, r.text, "the record's output is the streamed one");
  }
}

gatedTest(
  "a reload while a job is INITIALIZING waits for it; output exact across",
  async ({ worker, api, client, gate }) => {
    const pid = worker.process.pid;
    const writer = await api.createJob(WRITER);
    const held = await heldWriter(api, gate);
    const streams = new Map([[writer.id, streamResuming(client, writer.id)]]);
    const settling = logCount(worker, SETTLING);
    const reloaded = logCount(worker, RELOADED);
    worker.process.kill("SIGHUP");
    await nextLog(worker, SETTLING, settling);
    // The reload waits: the old process still serves, the job is still starting.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(logCount(worker, EXECING), 0, "no exec while a job initializes");
    assert.equal((await api.getJob(held.id)).status, S.INITIALIZING);
    gate.open();
    const started = await held.created;
    assert.equal(started.id, held.id);
    streams.set(held.id, streamResuming(client, held.id));
    const line = await nextLog(worker, RELOADED, reloaded);
    assert.match(line, /jobsKept=2/);
    assert.equal(worker.process.pid, pid, "the same process");
    for (const id of streams.keys()) {
      assert.equal((await retrying(() => api.getJob(id))).status, S.RUNNING);
    }
    const size = Number((await retrying(() => api.getJob(held.id))).outputBytes);
    await waitFor(
      "the once-held job to write on after the reload",
      async () => Number((await api.getJob(held.id)).outputBytes) > size + 10_000,
    );
    await stopAndCheck(api, client, streams);
  },
);

gatedTest(
  "a job INITIALIZING longer than a reload waits: refused, nothing stops",
  async ({ worker, api, client, gate }) => {
    const writer = await api.createJob(WRITER);
    const held = await heldWriter(api, gate);
    const streams = new Map([[writer.id, streamResuming(client, writer.id)]]);
    const refused = logCount(worker, REFUSED);
    const listening = logCount(worker, LISTENING);
    worker.process.kill("SIGHUP");
    const line = await nextLog(worker, REFUSED, refused, 60_000);
    assert.match(line, /jobs kept starting or ending; nothing stopped/);
    assert.equal(logCount(worker, LISTENING), listening, "no new process");
    assert.equal((await api.getJob(writer.id)).status, S.RUNNING);
    assert.equal((await api.getJob(held.id)).status, S.INITIALIZING);
    gate.open();
    assert.equal((await held.created).status, S.RUNNING, "creates are accepted again");
    streams.set(held.id, streamResuming(client, held.id));
    await stopAndCheck(api, client, streams);
  },
);

gatedTest(
  "a SIGTERM during a reload is honoured: the reload is abandoned, the worker stops",
  async ({ worker, api, gate }) => {
    const writer = await api.createJob(WRITER);
    const held = await heldWriter(api, gate);
    worker.process.kill("SIGHUP");
    await nextLog(worker, SETTLING, 0);
    worker.process.kill("SIGTERM");
    // Let the held job start: nothing would keep the reload from going on to the exec now.
    gate.open();
    const status = await Promise.race([
      worker.exited,
      new Promise<null>((r) => setTimeout(() => r(null), 60_000)),
    ]);
    assert.ok(status !== null, "the worker stopped");
    assert.equal(status.code, 0, "gracefully");
    assert.equal(logCount(worker, EXECING), 0, "no exec");
    assert.equal(logCount(worker, RELOADED), 0);
    assert.ok(worker.logs.some((l) => /reload abandoned: a stop signal arrived/.test(l)));
    assert.ok(worker.logs.some((l) => /shutting down.*signal=SIGTERM/.test(l)));
    const ended = worker.logs.find((l) => l.includes("job ended") && l.includes(writer.id));
    assert.match(ended ?? "", /status=STOPPED.*the worker shut down/);
    await held.created.catch(() => {});
  },
  false,
);

test("a stop signal pending at start (parked across an exec) is honoured once serving", async () => {
  // What the old process leaves behind when a SIGTERM arrives in the last moment before its exec:
  // SIGTERM blocked and pending (see jwshim.c, jw_park_stops).
  const park = "import os, signal, sys\n" +
    "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n" +
    "os.kill(os.getpid(), signal.SIGTERM)\n" +
    "os.execv(sys.argv[1], sys.argv[1:])\n";
  const { worker, close } = await startWorker({ wrapper: ["python3", "-c", park] });
  const status = await Promise.race([
    worker.exited,
    new Promise<null>((r) => setTimeout(() => r(null), 60_000)),
  ]);
  assert.ok(status !== null, "the worker stopped by itself");
  assert.equal(status.code, 0);
  assert.ok(worker.logs.some((l) => /shutting down.*signal=SIGTERM/.test(l)));
  await close();
});

test("the program replaced: a broken one is refused, nothing stops; a good one is exec'd", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-program-" });
  const program = `${dir}/deno`;
  await Deno.copyFile(Deno.execPath(), program);
  /** Installs a new file at `program` the way package managers do: write aside, rename over. */
  const install = async (write: (path: string) => Promise<void>) => {
    await write(`${program}.new`);
    await Deno.chmod(`${program}.new`, 0o755);
    await Deno.rename(`${program}.new`, program);
  };
  const { worker, api, client, close } = await startWorker({ deno: program });
  try {
    const pid = worker.process.pid;
    const writer = await api.createJob(WRITER);
    const streams = new Map([[writer.id, streamResuming(client, writer.id)]]);
    const listening = logCount(worker, LISTENING);
    const broken: [string, (path: string) => Promise<void>, RegExp][] = [
      [
        "a program that fails its check",
        (p) => Deno.writeTextFile(p, "#!/bin/sh\necho this program is broken >&2\nexit 1\n"),
        /the check exited with 1: this program is broken/,
      ],
      [
        "a copy cut short",
        async (p) => {
          const whole = await Deno.readFile(Deno.execPath());
          await Deno.writeFile(p, whole.subarray(0, whole.length >> 4));
        },
        /the check (exited with \d+|could not run)/,
      ],
      [
        "random bytes",
        (p) => Deno.writeFile(p, crypto.getRandomValues(new Uint8Array(4096))),
        // Not an executable format: the check runs it through /bin/sh, which fails.
        /the check (exited with \d+|could not run)/,
      ],
    ];
    for (const [what, write, problem] of broken) {
      await install(write);
      const refused = logCount(worker, REFUSED);
      worker.process.kill("SIGHUP");
      const line = await nextLog(worker, REFUSED, refused);
      assert.match(line, /the new program or configuration cannot start; nothing stopped/, what);
      assert.match(line, problem, `${what}: ${line}`);
      assert.equal(logCount(worker, LISTENING), listening, `${what}: no new process`);
      assert.equal((await api.getJob(writer.id)).status, S.RUNNING, `${what}: the job runs on`);
      await api.serverInfo();
    }
    // The running program's file is gone from disk now; a good one takes its place.
    assert.match(Deno.readLinkSync(`/proc/${pid}/exe`), /\(deleted\)$/);
    await install((p) => Deno.copyFile(Deno.execPath(), p));
    const reloaded = logCount(worker, RELOADED);
    worker.process.kill("SIGHUP");
    assert.match(await nextLog(worker, RELOADED, reloaded), /jobsKept=1/);
    assert.equal(worker.process.pid, pid);
    assert.equal(Deno.readLinkSync(`/proc/${pid}/exe`), program, "runs the file on disk now");
    assert.equal(Deno.statSync(`/proc/${pid}/exe`).ino, Deno.statSync(program).ino);
    assert.equal((await retrying(() => api.getJob(writer.id))).status, S.RUNNING);
    // A new job starts too: its init is the new program.
    const after = await retrying(() => api.createJob({ command: "echo", args: ["upgraded"] }));
    await waitFor("the new job", async () => (await api.getJob(after.id)).status === S.COMPLETED);
    await stopAndCheck(api, client, streams);
  } finally {
    assert.equal((await close()).code, 0);
    await Deno.remove(dir, { recursive: true });
  }
});

test("a configuration file gone bad since the start: the reload is refused, nothing stops", async () => {
  // `serve --check` read only the certificates and the database: a revocation list removed or
  // mangled since the start passed it, the new process then failed to start ("cannot start"),
  // and the worker was gone with every running job (a recycle reloads the same way, unasked).
  const dir = await Deno.makeTempDir({ prefix: "jobworker-revoked-" });
  const revoked = `${dir}/revoked`;
  await Deno.writeTextFile(revoked, "# none revoked\n");
  const { worker, api, close } = await startWorker({ env: { JOB_WORKER_REVOKED: revoked } });
  try {
    const job = await api.createJob({ command: "sleep", args: ["300"] });
    const listening = logCount(worker, LISTENING);
    const bad: [string, () => Promise<void>, RegExp][] = [
      ["the list removed", () => Deno.remove(revoked), /revoked: cannot be read/],
      ["the list mangled", () => Deno.writeTextFile(revoked, "not a serial\n"), /is not a hex/],
    ];
    for (const [what, spoil, problem] of bad) {
      await spoil();
      const refused = logCount(worker, REFUSED);
      worker.process.kill("SIGHUP");
      const line = await nextLog(worker, REFUSED, refused);
      assert.match(line, problem, `${what}: ${line}`);
      assert.equal(logCount(worker, LISTENING), listening, `${what}: no new process`);
      assert.equal((await api.getJob(job.id)).status, S.RUNNING, `${what}: the job runs on`);
    }
    // The default user is read at the start as well: the check refuses one that is gone.
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-prompt", "--cached-only", MAIN, "serve", "--check"],
      env: {
        JOB_WORKER_CERT_PATH: pki.dir,
        JOB_WORKER_STATE_DIR: worker.stateDir,
        JOB_WORKER_DEFAULT_USER: "no-such-user-t47",
      },
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(check.code, 1);
    assert.match(new TextDecoder().decode(check.stderr), /JOB_WORKER_DEFAULT_USER: no user/);
    // Mended: the reload goes through, the job kept.
    await Deno.writeTextFile(revoked, "# none revoked\n");
    const reloaded = logCount(worker, RELOADED);
    worker.process.kill("SIGHUP");
    assert.match(await nextLog(worker, RELOADED, reloaded), /jobsKept=1/);
    assert.equal((await retrying(() => api.getJob(job.id))).status, S.RUNNING);
    await api.stopJob(job.id);
  } finally {
    assert.equal((await close()).code, 0);
    await Deno.remove(dir, { recursive: true });
  }
});

test("a reload while a stop is pending and 20 clients stream: the SIGKILL comes on time", async () => {
  const { worker, api, client, close } = await startWorker();
  try {
    // Ignores SIGTERM, so only the SIGKILL at the end of the grace ends it.
    const deaf = await api.createJob({
      command: "sh",
      args: ["-c", "trap '' TERM; i=0; while :; do echo \"$i\"; i=$((i+1)); done"],
    });
    const ids = [deaf.id];
    for (let i = 0; i < 19; i++) ids.push((await api.createJob(WRITER)).id);
    const streams = new Map(ids.map((id) => [id, streamResuming(client, id)]));
    await waitFor("every job to write", async () => {
      const jobs = await Promise.all(ids.map((id) => api.getJob(id)));
      return jobs.every((j) => Number(j.outputBytes) > 1000);
    }, 30_000);
    const stopAt = Date.now();
    const stopping = client.stopJob(deaf.id, { graceSeconds: 5 }).catch(() => null);
    // The SIGTERM goes out at once; the reload comes well inside the 5 s grace.
    await new Promise((r) => setTimeout(r, 300));
    const reloaded = logCount(worker, RELOADED);
    worker.process.kill("SIGHUP");
    assert.match(await nextLog(worker, RELOADED, reloaded), /jobsKept=20/);
    await stopping;
    const ended = await waitFor("the pending SIGKILL", async () => {
      const j = await retrying(() => api.getJob(deaf.id));
      return j.status === S.RUNNING ? null : j;
    }, 30_000);
    assert.equal(ended.status, S.STOPPED);
    assert.match(ended.reason, /stopped by request; killed by SIGKILL/);
    const endMs = Number(ended.endTime!.seconds) * 1000;
    assert.ok(endMs - stopAt >= 4000 && endMs - stopAt <= 9000, `killed ${endMs - stopAt} ms in`);
    const deafStream = streams.get(deaf.id)!;
    streams.delete(deaf.id);
    await stopAndCheck(api, client, streams);
    const r = await deafStream;
    assert.equal(r.bytes, Number(ended.outputBytes));
    assert.ok(isCounterPrefix(r.text), "the stopped job's output is exact too");
  } finally {
    assert.equal((await close()).code, 0);
  }
});

test("serve --check refuses a program that lacks its C files (jwstart with the direct start)", async () => {
  // A checkout pulled without `make shim`: the check passed, the new process then exited at its
  // start (jwstart missing) and the handed-over jobs died with it.
  const root = new URL("..", import.meta.url).pathname;
  const copy = await Deno.makeTempDir({ prefix: "jobworker-no-jwstart-" });
  const state = await Deno.makeTempDir({ prefix: "jobworker-no-jwstart-state-" });
  try {
    for (const entry of ["main.ts", "deno.json", "deno.lock", "worker", "cli", "init", "proto"]) {
      await new Deno.Command("cp", { args: ["-a", `${root}/${entry}`, `${copy}/`] }).output();
    }
    await Deno.symlink(`${root}/node_modules`, `${copy}/node_modules`);
    await Deno.mkdir(`${copy}/build`);
    for (const file of ["libjwshim.so", "jwinit"]) {
      await Deno.copyFile(`${root}/build/${file}`, `${copy}/build/${file}`);
    }
    const check = (direct: string) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-prompt", "--cached-only", `${copy}/main.ts`, "serve", "--check"],
        env: {
          JOB_WORKER_CERT_PATH: pki.dir,
          JOB_WORKER_STATE_DIR: state,
          JOB_WORKER_DIRECT_START: direct,
        },
        stdout: "null",
        stderr: "piped",
      }).output();
    const refused = await check("1");
    const why = new TextDecoder().decode(refused.stderr);
    assert.equal(refused.code, 1, why);
    assert.match(why, /build\/jwstart is missing: build it with `make shim`/);
    // Without the direct start the program needs no jwstart.
    const passed = await check("0");
    assert.equal(passed.code, 0, new TextDecoder().decode(passed.stderr));
  } finally {
    await Deno.remove(copy, { recursive: true });
    await Deno.remove(state, { recursive: true });
  }
});

test("cleanup", async () => {
  for (const gate of gates) await gate.unmount();
  await pki.remove();
});
