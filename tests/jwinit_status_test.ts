/**
 * jwinit (init/shim/jwinit.c) and the status pipe it is handed as fd 4, run directly (no worker,
 * no namespaces; the command's parent is jwinit, so /proc/$PPID is jwinit as /proc/1 is in a job):
 *
 * - the command cannot take a copy of the status pipe from jwinit (/proc/$PPID/fd/4): jwinit closes
 *   its own copy before its child may exec the command. jwinit is built here with a delay before
 *   that close (JW_TEST_CLOSE_DELAY_US), a parent late as on a busy host; without the gate the
 *   command opens the pipe in that window and the worker's EOF waits for the command's end.
 * - a descriptor 4 that is not a pipe opened write-only is left alone: no report is written there.
 *
 * Run: `deno test -A tests/jwinit_status_test.ts` (needs gcc, sh, mkfifo).
 */
import assert from "node:assert/strict";
import { runProgram } from "./helpers/process.ts";

const SOURCE = new URL("../init/shim/jwinit.c", import.meta.url).pathname;
const INSTALLED = new URL("../build/jwinit", import.meta.url).pathname;
const DELAY_MS = 300;

const dir = await Deno.makeTempDir({ prefix: "jw-jwinit-status-" });
const built = await runProgram("gcc", [
  "-Os",
  "-Wall",
  "-Werror",
  `-DJW_TEST_CLOSE_DELAY_US=${DELAY_MS * 1000}`,
  "-o",
  `${dir}/jwinit-late`,
  SOURCE,
]);
assert.equal(built.code, 0, built.stderr);

/** Runs `jwinit /bin/sh sh -c SCRIPT` with fd 4 opened by sh as `redirect` (e.g. `4>FILE`). */
function jwinit(program: string, script: string, redirect: string): Deno.ChildProcess {
  return new Deno.Command("sh", {
    args: ["-c", `exec "$0" /bin/sh sh -c "$1" ${redirect}`, program, script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test("the command cannot hold jwinit's status pipe, even when jwinit closes it late", async () => {
  const fifo = `${dir}/status`;
  assert.equal((await runProgram("mkfifo", [fifo])).code, 0);
  // Opening the command's copy of fd 4 keeps it for 3 s (held), or fails at once (refused).
  const script =
    `if sleep 3 5>/proc/$PPID/fd/4 2>/dev/null; then echo held; else echo refused; sleep 3; fi`;
  const began = performance.now();
  const reading = Deno.open(fifo, { read: true });
  const child = jwinit(`${dir}/jwinit-late`, script, `4>${fifo}`);
  const status = await reading;
  const report = new TextDecoder().decode(await new Response(status.readable).arrayBuffer());
  const eofMs = performance.now() - began;
  const output = await child.output();
  const stdout = new TextDecoder().decode(output.stdout);
  assert.equal(report, "", "a successful exec writes nothing");
  assert.equal(stdout, "refused\n", "the command found no status pipe at /proc/$PPID/fd/4");
  assert.ok(
    eofMs < 2000,
    `the status pipe's EOF came ${Math.round(eofMs)} ms after the start, not at the command's end`,
  );
  assert.equal(output.code, 0);
});

Deno.test("a failed exec is reported on the status pipe, as before", async () => {
  const fifo = `${dir}/status-exec`;
  assert.equal((await runProgram("mkfifo", [fifo])).code, 0);
  const reading = Deno.open(fifo, { read: true });
  const child = new Deno.Command("sh", {
    args: ["-c", `exec "$0" /nonexistent/jw-command jw-command 4>"$1"`, INSTALLED, fifo],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const status = await reading;
  const report = new TextDecoder().decode(await new Response(status.readable).arrayBuffer());
  const output = await child.output();
  assert.deepEqual(JSON.parse(report), { minimalInit: "execve", errno: 2 });
  assert.equal(output.code, 127);
});

for (
  const [what, redirect] of [
    ["a regular file opened for writing", (file: string) => `4>${file}`],
    ["a pipe opened for reading and writing", (fifo: string) => `4<>${fifo}`],
  ] as const
) {
  Deno.test(`fd 4 that is ${what} is left alone`, async () => {
    const path = `${dir}/fd4-${what.replaceAll(" ", "-")}`;
    if (what.includes("pipe")) assert.equal((await runProgram("mkfifo", [path])).code, 0);
    // The command still has it (not made close-on-exec), and a failed exec writes nothing there.
    const kept = await jwinit(INSTALLED, "test -e /proc/self/fd/4 && echo kept", redirect(path))
      .output();
    assert.equal(new TextDecoder().decode(kept.stdout), "kept\n", what);
    const failed = await new Deno.Command("sh", {
      args: ["-c", `exec "$0" /nonexistent/jw-command jw-command ${redirect(path)}`, INSTALLED],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(failed.code, 127, what);
    assert.match(new TextDecoder().decode(failed.stderr), /jwinit: cannot execute the command/);
    if (!what.includes("pipe")) assert.equal(await Deno.readTextFile(path), "", what);
  });
}

Deno.test("cleanup", async () => {
  await Deno.remove(dir, { recursive: true });
});
