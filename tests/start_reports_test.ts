/**
 * The reports of a job's start, read by the worker: jwstart's (init/direct_plan.ts directFailure),
 * init's (worker/runtime/launcher.ts parseFailure) and jwinit's (init/job_steps.ts), malformed ones
 * included; the status pipe's size cap (worker/runtime/init_process.ts PipeText) and init's stderr's
 * (drained past it); and the refusal of `init: true` with no room for the command
 * (worker/api/validation.ts); and the gRPC status a failed start gets (worker/jobs/job_start.ts
 * startError).
 *
 * Run: `deno test -A tests/start_reports_test.ts` (no root needed).
 */
import assert from "node:assert/strict";
import { directFailure, type DirectPlan } from "../init/direct_plan.ts";
import type { InitFailure } from "../init/spec.ts";
import { parseFailure } from "../worker/runtime/launcher.ts";
import {
  initLogPipe,
  initLogText,
  MAX_INIT_LOG_BYTES,
  MAX_STATUS_BYTES,
  PipeText,
} from "../worker/runtime/init_process.ts";
import { InvalidField, jobSpecFrom } from "../worker/api/validation.ts";
import { startError } from "../worker/jobs/job_start.ts";
import { closeFd, rawPipe, writeFd } from "./helpers/raw_pipe.ts";

const plan: DirectPlan = {
  bytes: new Uint8Array(),
  labels: [
    { stage: "mounts", what: "making mounts private", call: "mount" },
    { stage: "workdir", what: 'entering workDir "/x"', call: "chdir" },
  ],
  command: "tool",
  pathVar: "/a:/b",
};

const unreadable = (text: string) => ({
  stage: "spawn",
  errno: 0,
  message: `the job's start sent a report the worker cannot read: ${JSON.stringify(text)}`,
});

Deno.test("directFailure explains jwstart's well-formed reports", () => {
  assert.deepEqual(directFailure(plan, '{"step":1,"errno":2}'), {
    stage: "workdir",
    errno: 2,
    message: 'entering workDir "/x": chdir failed: ENOENT (no such file or directory)',
  });
  assert.deepEqual(directFailure(plan, '{"step":2,"errno":13,"kind":"denied","entry":1}'), {
    stage: "lookup",
    errno: 13,
    message: '"/b/tool" is not executable by the job\'s user',
  });
  // A command that cannot be looked up (given with a slash: no entry) is said with its errno.
  assert.deepEqual(directFailure(plan, '{"step":2,"errno":40,"kind":"unresolvable"}'), {
    stage: "lookup",
    errno: 40,
    message: '"tool" cannot be looked up: ELOOP (too many levels of symbolic links)',
  });
  assert.equal(
    directFailure(plan, '{"step":2,"errno":2,"kind":"not-in-path"}').message,
    'command not found: "tool" (PATH="/a:/b")',
  );
  assert.equal(directFailure(plan, '{"step":-1,"errno":22}').stage, "spawn");
  assert.equal(directFailure(plan, '{"stage":"spawn","errno":2}').stage, "spawn");
  assert.equal(directFailure(plan, '{"minimalInit":"execve","errno":8}').stage, "exec");
});

Deno.test("directFailure refuses malformed reports as unreadable", () => {
  const malformed = [
    "not json",
    "[]",
    "[1,2]",
    "null",
    "42",
    '"text"',
    "{}",
    '{"step":1}',
    '{"step":1,"errno":-1}',
    '{"step":1,"errno":1.5}',
    '{"step":1,"errno":"2"}',
    '{"step":7,"errno":2}',
    '{"step":-2,"errno":2}',
    '{"step":0.5,"errno":2}',
    '{"step":2,"errno":2,"kind":"exploded"}',
    '{"step":2,"errno":2,"kind":"toString"}',
    '{"step":2,"errno":2,"kind":"denied","entry":2}',
    '{"step":2,"errno":2,"kind":"denied","entry":-1}',
    '{"step":2,"errno":2,"kind":"denied","entry":0.5}',
    '{"step":2,"errno":2,"kind":"denied","entry":"0"}',
    '{"step":2,"errno":2,"kind":"denied","entry":1e300}',
    '{"step":2,"errno":2,"kind":"not-in-path","entry":0}',
    '{"step":1,"errno":2,"entry":0}',
    '{"stage":"spec","errno":2}',
    '{"minimalInit":"clone","errno":2}',
    '{"minimalInit":"execve","errno":-2}',
    '[{"minimalInit":"execve","errno":2}]',
  ];
  for (const text of malformed) {
    assert.deepEqual(directFailure(plan, text), unreadable(text), text);
  }
});

Deno.test("parseFailure reads init's InitFailure and jwinit's report", () => {
  assert.equal(parseFailure("", "tool"), null);
  const failure: InitFailure = { stage: "workdir", errno: 2, message: "entering workDir" };
  assert.deepEqual(parseFailure(JSON.stringify(failure), "tool"), failure);
  assert.deepEqual(parseFailure('{"minimalInit":"execve","errno":8}', "tool"), {
    stage: "exec",
    errno: 8,
    message: 'cannot execute "tool": execve failed: ENOEXEC (exec format error)',
  });
  // No process for the command is a failure of the start, with no guess at its cause.
  assert.deepEqual(parseFailure('{"minimalInit":"fork","errno":11}', "tool"), {
    stage: "spawn",
    errno: 11,
    message: 'the minimal init could not start a process for "tool": ' +
      "fork failed: EAGAIN (resource temporarily unavailable)",
  });
});

Deno.test("parseFailure refuses malformed reports as unreadable, with the direct path's words", () => {
  const malformed = [
    "not json",
    "[]",
    "null",
    "7",
    "{}",
    '{"stage":"exec","errno":2}',
    '{"stage":"exec","message":"m"}',
    '{"stage":"nowhere","errno":2,"message":"m"}',
    '{"stage":"toString","errno":2,"message":"m"}',
    '{"stage":"exec","errno":-2,"message":"m"}',
    '{"stage":"exec","errno":2,"message":7}',
    '[{"stage":"exec","errno":2,"message":"m"}]',
    '{"minimalInit":"execve","errno":2.5}',
    `"${"x".repeat(500)}"`,
  ];
  for (const text of malformed) {
    assert.deepEqual(parseFailure(text, "tool"), unreadable(text.slice(0, 200)), text);
  }
});

function pipe(): [number, number] {
  const { readFd, writeFd } = rawPipe();
  return [readFd, writeFd];
}

/**
 * Writes `total` bytes to `fd` as the pipe takes them, until `stop()`; the count written.
 */
async function writeUpTo(fd: number, total: number, stop = () => false): Promise<number> {
  const chunk = new Uint8Array(4096).fill(0x78);
  let written = 0;
  const deadline = Date.now() + 5000;
  while (written < total && Date.now() < deadline && !stop()) {
    const n = writeFd(fd, chunk.subarray(0, Math.min(chunk.length, total - written)));
    if (n > 0) written += n;
    else await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return written;
}

Deno.test("a status pipe that sends more than its cap is closed, its text cut there", async () => {
  const [r, w] = pipe();
  const status = new PipeText(r, MAX_STATUS_BYTES);
  // A writer that never stops: the worker closes the pipe past the cap, and the writer's next
  // writes fail (EPIPE) instead of being read without end.
  let closed = false;
  const written = writeUpTo(w, 64 * MAX_STATUS_BYTES, () => closed);
  const text = await status.closed;
  closed = true;
  assert.ok(status.overflowed);
  assert.ok(text.length <= MAX_STATUS_BYTES, `${text.length} characters kept`);
  assert.ok((await written) < 64 * MAX_STATUS_BYTES, "the writer was stopped");
  closeFd(w);
});

Deno.test("a status pipe within its cap is read whole", async () => {
  const [r, w] = pipe();
  const status = new PipeText(r, MAX_STATUS_BYTES);
  assert.equal(await writeUpTo(w, MAX_STATUS_BYTES), MAX_STATUS_BYTES);
  closeFd(w);
  assert.equal((await status.closed).length, MAX_STATUS_BYTES);
  assert.ok(!status.overflowed);
});

Deno.test("init's stderr past its cap is read to its end, only its first part kept and marked", async () => {
  const [r, w] = pipe();
  const initLog = initLogPipe(r);
  // A writer of its own (as init is), on the pipe through /proc: blocking writes, and SIGPIPE
  // (exit 141) if the pipe were closed under it.
  const total = 64 * MAX_INIT_LOG_BYTES;
  const writer = await new Deno.Command("sh", {
    args: ["-c", `yes 0123456789abcdef | head -c ${total} > /proc/${Deno.pid}/fd/${w}`],
  }).output();
  closeFd(w);
  const text = await initLog.closed;
  assert.equal(writer.code, 0, `the writer finished: ${new TextDecoder().decode(writer.stderr)}`);
  assert.equal(initLog.bytes, total, "every byte was read");
  assert.equal(text.length, MAX_INIT_LOG_BYTES, "the first part kept");
  assert.ok(text.startsWith("0123456789abcdef\n"));
  assert.ok(initLog.overflowed);
  assert.match(initLogText(initLog), new RegExp(`\\.\\.\\. \\[cut: init wrote ${total} bytes`));
  assert.match(initLogText(initLog, text, 100), /^0123456789abcdef\n.{0,90}\.\.\. \[cut:/s);
});

Deno.test("init's stderr within its cap is kept whole, unmarked", async () => {
  const [r, w] = pipe();
  const initLog = initLogPipe(r);
  assert.equal(writeFd(w, new TextEncoder().encode(" a warning\n")), 11);
  closeFd(w);
  assert.equal(await initLog.closed, " a warning\n");
  assert.equal(initLogText(initLog), "a warning");
  assert.equal(
    initLogText(initLog, undefined, 3),
    "a w... [cut: init wrote 11 bytes to its stderr]",
  );
});

const defaults = { cpuPercent: 0, memoryMiB: 0, ioBps: 0, pids: 1024 };

Deno.test("init: true with room for only one process is refused, whoever set the limit", () => {
  const refusal = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof InvalidField, String(e));
      return e.message;
    }
    assert.fail("not refused");
  };
  assert.match(
    refusal(() => jobSpecFrom({ command: "true", init: true, maxPids: 1 }, defaults)),
    /^maxPids: init: true needs at least 2 processes \(the minimal init and the command\), but maxPids is 1;/,
  );
  assert.match(
    refusal(() => jobSpecFrom({ command: "true", init: true }, { ...defaults, pids: 1 })),
    /^maxPids: .*the server's default maxPids \(JOB_WORKER_DEFAULT_PIDS\) is 1; ask for a larger maxPids/,
  );
  // Allowed: 2 processes, no limit at all (0), a request above a default of 1, or no init.
  assert.equal(jobSpecFrom({ command: "true", init: true, maxPids: 2 }, defaults).limits.pids, 2);
  assert.equal(
    jobSpecFrom({ command: "true", init: true }, { ...defaults, pids: 0 }).limits.pids,
    0,
  );
  assert.equal(
    jobSpecFrom({ command: "true", init: true, maxPids: 5 }, { ...defaults, pids: 1 }).limits.pids,
    5,
  );
  assert.equal(jobSpecFrom({ command: "true", maxPids: 1 }, defaults).limits.pids, 1);
});

Deno.test("a start that got no process is the host's limits when the kernel says so", () => {
  const spawn = (errno: number) => startError({ stage: "spawn", errno, message: "fork failed" });
  for (const errno of [11, 12, 24]) { // EAGAIN, ENOMEM, EMFILE
    const error = spawn(errno);
    assert.equal(error.kind, "resource-exhausted", `errno ${errno}`);
    assert.equal(error.message, "the job could not be started: fork failed");
  }
  assert.equal(spawn(0).kind, "internal"); // an unreadable report
  assert.equal(spawn(1).kind, "internal");
  const mounts = startError({ stage: "mounts", errno: 1, message: "mount failed" });
  assert.equal(mounts.message, "the job could not be isolated: mount failed");
});
