/**
 * A stop sent the moment an `init: true` job is RUNNING is not lost. The job's PID 1 is jwinit,
 * and a namespace's PID 1 drops a signal it has no handler for: a SIGTERM arriving between the
 * exec of jwinit and its sigaction calls used to vanish, and the stop waited out its grace and
 * ended in SIGKILL. Init now execs jwinit with the signals it forwards blocked (a blocked signal
 * waits), and jwinit starts the command with nothing blocked.
 *
 * The window is a few microseconds, so both halves are checked directly rather than by racing:
 * jwinit with a SIGTERM already pending at its exec, and what the exec hands over (a probe put
 * in jwinit's place prints its own blocked signals).
 *
 * Run: `deno test -A tests/minimal_init_signals_test.ts` (as root; needs gcc, python3, unshare).
 *
 * @module
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { runProgram } from "./helpers/process.ts";

const JWINIT = new URL("../build/jwinit", import.meta.url).pathname;

/** The signals jwinit forwards (init/shim/forwarded_signals.h) as a /proc SigBlk mask. */
const FORWARDED_MASK = [1, 2, 3, 10, 12, 15, 28] // HUP INT QUIT USR1 USR2 TERM WINCH
  .reduce((mask, sig) => mask | (1n << BigInt(sig - 1)), 0n);

Deno.test("jwinit forwards a SIGTERM already pending at its exec to a command that can take it", async () => {
  // python3 is PID 1 of a new PID namespace; it queues a SIGTERM for itself (blocked, so kept),
  // then becomes jwinit, as init does with the signal arriving just before jwinit's handlers.
  // The command must start with nothing blocked, or it would sleep on with the SIGTERM pending.
  const python = [
    "import os, signal",
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})",
    "os.kill(os.getpid(), signal.SIGTERM)",
    `os.execv(${JSON.stringify(JWINIT)}, ["jwinit", "/bin/sleep", "sleep", "20"])`,
  ].join("\n");
  const run = await runProgram("unshare", ["--pid", "--fork", "python3", "-c", python]);
  assert.equal(run.code, 128 + 15, `jwinit exited ${run.code}: ${run.stderr}`);
});

Deno.test("init execs a job's minimal init with the signals it forwards blocked", async () => {
  const pki = await makePki();
  const worker = await WorkerProcess.start({ certDir: pki.dir });
  const client = clientFor(pki.dir, worker.address);
  const dir = await Deno.makeTempDir();
  try {
    // A probe in jwinit's place (the worker installed it at start, content-addressed).
    await Deno.writeTextFile(
      `${dir}/probe.c`,
      `#include <stdio.h>
#include <string.h>
int main(void) {
  char line[256];
  FILE *status = fopen("/proc/self/status", "r");
  while (status && fgets(line, sizeof line, status))
    if (strncmp(line, "SigBlk:", 7) == 0) fputs(line, stdout);
  return 0;
}
`,
    );
    const cc = await runProgram("gcc", ["-static", "-o", `${dir}/probe`, `${dir}/probe.c`]);
    assert.equal(cc.code, 0, cc.stderr);
    const installed = [...Deno.readDirSync(`${worker.stateDir}/lib`)]
      .filter((e) => e.name.startsWith("jwinit-"));
    assert.equal(installed.length, 1, "one installed jwinit");
    await Deno.copyFile(`${dir}/probe`, `${worker.stateDir}/lib/${installed[0]!.name}`);

    const job = await client.createJob({ command: "true", init: true });
    const out = await collectOutput(client, job.id);
    const blocked = /^SigBlk:\s+([0-9a-f]+)$/m.exec(out.stdout);
    assert.ok(blocked, `the probe printed: ${out.stdout}${out.stderr}`);
    assert.equal(
      BigInt(`0x${blocked[1]}`),
      FORWARDED_MASK,
      `blocked at the exec: ${blocked[1]}, expected ${FORWARDED_MASK.toString(16)}`,
    );
    const ended = await client.getJob(job.id);
    assert.equal(ended.status, jobworker.JobStatus.COMPLETED);
  } finally {
    client.close();
    await worker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
