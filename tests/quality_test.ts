/**
 * The codebase's own checks, as tests: formatting, lint, types, and generated protobuf code that
 * matches proto/jobworker.proto.
 */
import assert from "node:assert/strict";

const root = new URL("..", import.meta.url).pathname;

async function deno(...args: string[]): Promise<{ ok: boolean; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { ok: out.success, output: text.decode(out.stdout) + text.decode(out.stderr) };
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
