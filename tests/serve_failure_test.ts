/**
 * When serving cannot go on, `serve` shuts down as for a stop signal (worker/serve.ts): the
 * 'shutting down' line says `reason: "serving failed"`, its jobs are stopped, its waiting inits and
 * cgroups are gone, and it exits 1. Real worker process, provoked for real: a reload whose exec
 * fails (the hand-over file cannot be made durable) after which the worker cannot listen again
 * (its port was taken meanwhile).
 *
 * How: `<state>/handover.json` is made a FIFO once the worker listens. On SIGHUP the worker checks
 * the new program, stops serving (its port is free from here), then blocks opening the FIFO for
 * writing until this test opens it for reading. The test takes the port first, then reads. The
 * worker's fsync of a FIFO fails (EINVAL), so the exec is called off; listening again on the
 * configured port fails (EADDRINUSE), and that is "serving failed". And a worker whose address is
 * in use at start says so in words (exit 1).
 *
 * Run: `deno test -A tests/serve_failure_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
import {
  cgroupDirsNamed,
  isAlive,
  jobProcesses,
  waitFor,
  waitingInits,
} from "./helpers/host_procs.ts";
import { linesWithMessage, parseLogLine } from "./helpers/log_lines.ts";
import { listenError } from "../worker/api/server.ts";
import { instanceDirName, instanceName } from "../worker/cgroups/paths.ts";
import { freePort } from "./helpers/free_port.ts";

const pki = await makePki();
const POOL = 2;

Deno.test({
  name: "serving that cannot go on shuts the worker down: reason logged, exit 1, nothing left",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const port = freePort();
    const worker = await WorkerProcess.start({
      certDir: pki.dir,
      env: {
        JOB_WORKER_ADDR: `127.0.0.1:${port}`,
        LOG_FORMAT: "json",
        JOB_WORKER_INIT_POOL: String(POOL),
      },
    });
    const client = clientFor(pki.dir, worker.address);
    let held: Deno.Listener | undefined;
    try {
      const instance = await instanceName(worker.stateDir);
      const job = await client.createJob({ command: "sleep", args: ["300"] });
      const procs = await waitFor("the job's process", () => {
        const found = jobProcesses(job.id);
        return found.length > 0 ? found : null;
      });
      const inits = await waitFor("the pool's waiting inits", () => {
        const found = waitingInits(worker.process.pid);
        return found.length === POOL ? found : null;
      }, 60_000);
      const parents = cgroupDirsNamed([instanceDirName(instance)]);
      assert.ok(parents.length > 0, "the worker's cgroups exist (so their absence later counts)");

      const fifo = `${worker.stateDir}/handover.json`;
      const made = await new Deno.Command("mkfifo", { args: ["-m", "600", fifo] }).output();
      assert.ok(made.success, "mkfifo");
      worker.process.kill("SIGHUP");
      // Free once the worker stopped serving; it then waits in the FIFO's open for a reader.
      held = await waitFor("the worker's port free", () => {
        try {
          return Deno.listen({ hostname: "127.0.0.1", port });
        } catch {
          return null;
        }
      }, 120_000);
      const file = await Deno.open(fifo, { read: true });
      const written = await new Response(file.readable).text();
      assert.ok(written.includes(job.id), "the worker wrote its hand-over into the FIFO");

      const status = await worker.exited;
      const said = (msg: string) => linesWithMessage(worker.logs, msg);
      // The exit can come before the last lines are read from its stderr.
      await waitFor("the last log line", () => said("stopped after serving failed").length > 0)
        .catch(() => {});
      assert.equal(status.code, 1, worker.logs.join("\n"));
      const execFailed = said("reload failed; serving on with the old program");
      assert.equal(execFailed.length, 1);
      assert.match(String(execFailed[0]!.fields.error), /os error 22/, "fsync of a FIFO: EINVAL");
      const cannotServe = said("cannot serve any more: shutting down");
      assert.equal(cannotServe.length, 1);
      assert.match(String(cannotServe[0]!.fields.error), /EADDRINUSE/);
      // The advice for a start ("another jobworker ...; choose another address") misled here:
      // this worker served that address till the reload, and something took it meanwhile.
      assert.match(
        String(cannotServe[0]!.fields.error),
        new RegExp(
          `^Error: cannot listen on 127\\.0\\.0\\.1:${port} again after the reload failed: the address ` +
            "is in use \\(EADDRINUSE\\): another process took it while this worker was not listening",
        ),
      );
      assert.doesNotMatch(String(cannotServe[0]!.fields.error), /choose another address/);
      const shutdown = said("shutting down");
      assert.equal(shutdown.length, 1);
      assert.equal(shutdown[0]!.fields.reason, "serving failed");
      assert.equal(shutdown[0]!.fields.signal, undefined, "no made-up signal");
      assert.equal(said("stopped after serving failed").length, 1);
      assert.equal(said("stopped").length, 0);

      for (const p of procs) {
        assert.equal(isAlive(p), false, `process ${p.pid} (${p.comm}) is gone`);
      }
      for (const p of inits) assert.equal(isAlive(p), false, `waiting init ${p.pid} is gone`);
      assert.deepEqual(
        cgroupDirsNamed([instanceDirName(instance), job.id]),
        [],
        "no cgroup of the worker or its job is left",
      );
    } finally {
      held?.close();
      client.close();
      await worker.stop();
    }
  },
});

Deno.test({
  name: "an address in use at start: exit 1 with a line saying so in words, and what to do",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // A second `make serve`, or another service on the port: grpc-js's own words were "No address
    // added out of total 1 resolved errors: [listen EADDRINUSE: address already in use ...]".
    const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const address = `127.0.0.1:${(held.addr as Deno.NetAddr).port}`;
    try {
      const failure = await WorkerProcess.start({
        certDir: pki.dir,
        env: { JOB_WORKER_ADDR: address, LOG_FORMAT: "json" },
      }).then((worker) => worker.stop().then(() => "it listened"), (e: Error) => e.message);
      assert.match(failure, /^the worker exited \(1\) before listening:/);
      const line = failure.split("\n").map((l) => parseLogLine(l)).find((l) =>
        l?.msg === "cannot start"
      );
      assert.ok(line, failure);
      assert.equal(
        line.fields.error,
        `cannot listen on ${address}: the address is in use (EADDRINUSE): another jobworker or ` +
          "another service listens there; stop it, or choose another address (--addr or " +
          "JOB_WORKER_ADDR)",
      );
    } finally {
      held.close();
    }
  },
});

Deno.test("listenError: advice that fits the error, and none about the address where it is not the cause", () => {
  const grpc = (e: string) => new Error(`No address added out of total 1 resolved errors: [${e}]`);
  const a = "10.255.255.1:50051";
  assert.equal(
    listenError(a, grpc(`listen EINVAL: invalid argument ${a}`)).message,
    `cannot listen on ${a}: listen EINVAL: invalid argument ${a} (--addr or JOB_WORKER_ADDR: ` +
      "an address of this host, or 0.0.0.0)",
  );
  assert.match(
    listenError("nosuch.invalid:1", new Error("Name resolution failed for target dns:x")).message,
    /\(--addr or JOB_WORKER_ADDR: a host name this host resolves, or an IP address\)$/,
  );
  // Anything else: said as it is, without a hint about an address that is not the cause.
  assert.equal(
    listenError(a, grpc("listen EMFILE: too many open files")).message,
    `cannot listen on ${a}: listen EMFILE: too many open files`,
  );
  // Again after a failed reload: no advice to choose another address.
  const again = listenError(a, grpc(`listen EADDRINUSE: address already in use ${a}`), true);
  assert.match(again.message, /^cannot listen on \S+ again after the reload failed: .*EADDRINUSE/);
  assert.doesNotMatch(again.message, /choose another address|another jobworker/);
});
