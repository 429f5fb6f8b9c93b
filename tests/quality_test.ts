/**
 * The codebase's own checks, as tests: formatting, lint, types, and generated protobuf code that
 * matches proto/jobworker.proto.
 */
import { runProgram } from "./helpers/process.ts";
import assert from "node:assert/strict";

const root = new URL("..", import.meta.url).pathname;

async function deno(...args: string[]): Promise<{ ok: boolean; output: string }> {
  const { code, stdout, stderr } = await runProgram(Deno.execPath(), args, { cwd: root });
  return { ok: code === 0, output: stdout + stderr };
}

Deno.test("deno fmt --check is clean", async () => {
  const { ok, output } = await deno("fmt", "--check");
  assert.ok(ok, output);
});

Deno.test("deno lint is clean", async () => {
  const { ok, output } = await deno("lint");
  assert.ok(ok, output);
});

Deno.test("deno check passes for the program, tests and benchmark", async () => {
  const { ok, output } = await deno("check", "main.ts", "tests/", "bench/");
  assert.ok(ok, output);
});

Deno.test("generated protobuf code is fresh", async () => {
  const { ok, output } = await deno("run", "-A", "proto/generate.ts", "--check");
  assert.ok(ok, output);
});

Deno.test("the suite runs on the pinned Deno 2.8.3 (2.9 aborts in nghttp2, see README)", () => {
  assert.equal(Deno.version.deno, "2.8.3");
});
