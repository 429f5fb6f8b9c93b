/** The log line formats (LOG_FORMAT): text, logfmt and JSON, with quoting where logfmt needs it. */
import assert from "node:assert/strict";
import { formatLine } from "../worker/log/logger.ts";
import { parseLogLine } from "./helpers/log_lines.ts";

const time = new Date("2026-12-01T07:00:00.000Z");
const fields = { method: "jobworker.JobService/GetJob", caller: "alice smith", job: "", n: 3 };

Deno.test("logfmt: key=value pairs, values with spaces, quotes or nothing quoted", () => {
  assert.equal(
    formatLine("logfmt", time, "info", "audit", fields),
    'time=2026-12-01T07:00:00.000Z level=info msg=audit method=jobworker.JobService/GetJob caller="alice smith" job="" n=3\n',
  );
  assert.equal(
    formatLine("logfmt", time, "warn", 'say "hi"', { path: "a=b" }),
    'time=2026-12-01T07:00:00.000Z level=warn msg="say \\"hi\\"" path="a=b"\n',
  );
});

Deno.test("json: one object per line with time, level, msg, then the fields", () => {
  const line = formatLine("json", time, "error", "audit", fields);
  assert.ok(line.endsWith("\n") && !line.slice(0, -1).includes("\n"));
  assert.deepEqual(JSON.parse(line), {
    time: "2026-12-01T07:00:00.000Z",
    level: "error",
    msg: "audit",
    ...fields,
  });
});

Deno.test("text: the human format stays as it was", () => {
  assert.equal(
    formatLine("text", time, "info", "listening", { port: 50051 }),
    "2026-12-01T07:00:00.000Z INFO  listening port=50051\n",
  );
});

Deno.test("the tests' log reader (tests/helpers/log_lines.ts) reads every format back", () => {
  const tricky = { ...fields, path: "a=b c", quote: 'say "hi"' };
  for (const format of ["logfmt", "json", "text"] as const) {
    const line = formatLine(format, time, "warn", "reload refused", tricky).trimEnd();
    const parsed = parseLogLine(line);
    assert.ok(parsed, `${format}: ${line}`);
    assert.equal(parsed.level, "warn");
    assert.equal(parsed.msg, "reload refused");
    assert.equal(parsed.fields.path, "a=b c");
    assert.equal(parsed.fields.quote, 'say "hi"');
    assert.equal(String(parsed.fields.n), "3");
  }
  assert.equal(parseLogLine("not a log line"), undefined);
});

Deno.test("control characters from callers never reach the log raw, in any format", () => {
  // A job id, owner or path comes from the caller: an ESC sequence (colours, cursor moves, a
  // terminal title), a NUL, DEL or a C1 control (U+009B is CSI) written raw reached whoever reads
  // the log on a terminal (`tail -f`, `less -R`), and NUL made grep call the log binary.
  const hostile = "a\x1b[2J\x1b]0;owned\x07b\0c\x7fd\u009b31me";
  for (const format of ["logfmt", "json", "text"] as const) {
    const line = formatLine(format, time, "info", "audit", { job: hostile }).trimEnd();
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(line, /[\u0000-\u001f\u007f-\u009f]/, `${format}: ${JSON.stringify(line)}`);
    assert.equal(parseLogLine(line)?.fields.job, hostile, format);
  }
});
