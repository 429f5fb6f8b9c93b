/**
 * The audit trail (worker/api/audit.ts): a call's line is written a moment after the call ended
 * (once grpc-js has written the response), not at once; lines keep their calls' order, and
 * flushAuditLog writes any that still wait (before the worker stops or execs), so none is lost.
 */
import assert from "node:assert/strict";
import { parseLogLine } from "./helpers/log_lines.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Runs `body` in a fresh process with auditLog and flushAuditLog imported; its stderr lines. */
async function stderrOf(body: string): Promise<string[]> {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import { auditLog, flushAuditLog, WRITE_DELAY_MS } from "${ROOT}worker/api/audit.ts";
const say = (text: string) => Deno.stderr.writeSync(new TextEncoder().encode(text + "\\n"));
const ended = (jobId: string) => auditLog.rpcEnded({
  service: "jobworker.JobService", method: "GetJob", caller: "alice", role: "admin", jobId,
  code: "OK", durationMs: 1, streamedBytes: 0,
});
void flushAuditLog, WRITE_DELAY_MS;
${body}
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--no-prompt",
        "--cached-only",
        "--config",
        `${ROOT}deno.json`,
        script,
      ],
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, text);
    return text.trimEnd().split("\n");
  } finally {
    await Deno.remove(script);
  }
}

/** Each line as `audit JOB` or as the plain text the script said. */
function shown(lines: string[]): string[] {
  return lines.map((line) => {
    const parsed = parseLogLine(line);
    return parsed?.msg === "audit" ? `audit ${parsed.fields.job}` : line;
  });
}

Deno.test("audit: the lines come after the next turns of the loop, in their calls' order", async () => {
  const lines = await stderrOf(`
ended("a");
ended("b");
say("after the calls");
await new Promise((resolve) => setTimeout(resolve, 0));
say("after a turn");
await new Promise((resolve) => setTimeout(resolve, WRITE_DELAY_MS + 20));
say("later");
`);
  assert.deepEqual(shown(lines), [
    "after the calls",
    "after a turn",
    "audit a",
    "audit b",
    "later",
  ]);
});

Deno.test("audit: flushAuditLog writes the waiting lines at once, and only once", async () => {
  const lines = await stderrOf(`
ended("a");
flushAuditLog();
say("after the flush");
await new Promise((resolve) => setTimeout(resolve, 5));
flushAuditLog();
say("at the end");
`);
  assert.deepEqual(shown(lines), ["audit a", "after the flush", "at the end"]);
});
