/**
 * Strict request decoding (proto/strict_decoding.ts): malformed input is refused, never
 * reinterpreted; valid but unusual encodings (long varints) decode right. No server needed.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { jobServiceDefinition, jobworker, MalformedRequest } from "../proto/service.ts";
import { quote } from "../worker/log/quoted.ts";

const createJob = (b: Uint8Array) =>
  jobServiceDefinition.CreateJob.requestDeserialize(Buffer.from(b));
const bytes = (...b: number[]) => new Uint8Array(b);
const problem = (decoded: unknown) => {
  assert.ok(decoded instanceof MalformedRequest, `decoded as ${JSON.stringify(decoded)}`);
  return decoded.problem;
};

Deno.test("a string cut off by the end of the message is refused, not shortened", () => {
  const full = jobworker.CreateJobReq.encode({ command: "true" }).finish();
  assert.equal((createJob(full) as jobworker.CreateJobReq).command, "true");
  for (let n = 1; n < full.length; n++) {
    assert.match(problem(createJob(full.subarray(0, n))), /^truncated: /, `${n} bytes`);
  }
});

Deno.test("int32 fields sent as 10-byte varints decode as protobuf specifies", () => {
  // command "x", then timeoutSeconds (field 8) = 5 as a 10-byte varint, maxCPU (3) = -1.
  const long5 = [0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
  const minus1 = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
  const req = createJob(bytes(10, 1, 120, 64, ...long5, 24, ...minus1, 72, 0x87, 0x80, 0x00));
  assert.ok(!(req instanceof MalformedRequest));
  const r = req as jobworker.CreateJobReq;
  assert.equal(r.command, "x");
  assert.equal(r.timeoutSeconds, 5);
  assert.equal(r.maxCPU, -1);
  assert.equal(r.maxPids, 7); // a padded 3-byte varint
  // A 6-byte varint (2^32 + 9: an int64 value; int32 keeps its low 32 bits) before another field.
  const six = createJob(bytes(64, 0x89, 0x80, 0x80, 0x80, 0x90, 0x00, 10, 1, 120, 72, 3));
  assert.deepEqual(
    { ...(six as jobworker.CreateJobReq) },
    { ...jobworker.CreateJobReq.create({ timeoutSeconds: 9, command: "x", maxPids: 3 }) },
  );
});

Deno.test("varints longer than 10 bytes, invalid UTF-8 and bad wire types are refused", () => {
  assert.match(problem(createJob(bytes(64, ...Array(11).fill(0x80), 0))), /longer than 10 bytes/);
  assert.match(problem(createJob(bytes(10, 2, 0xc3, 0x28))), /not valid UTF-8/);
  assert.match(problem(createJob(bytes(0x0f, 1))), /undecodable|truncated/);
  assert.match(problem(createJob(bytes(0x80))), /^truncated/);
});

Deno.test("error messages quote a short, escaped prefix of what was sent", () => {
  assert.equal(quote("abc"), '"abc"');
  assert.equal(quote('a"\n\u0000'), '"a\\"\\n\\u0000"');
  // DEL and the C1 controls (CSI among them) too: JSON.stringify alone leaves them raw.
  assert.equal(quote("\u009b2J\u007f"), '"\\u009b2J\\u007f"');
  const long = quote("x".repeat(4 * 1024 * 1024));
  assert.ok(long.length < 100, long);
  assert.match(long, /\.\.\. \(4194304 characters\)$/);
});
