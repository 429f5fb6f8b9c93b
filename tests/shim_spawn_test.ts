/**
 * The shim's spawn (init/shim/jwshim.c jw_spawn) returns without waiting for its child's exec: the
 * child reads its path, arguments, environment and descriptors' layout from a mapping of its own
 * (a slot), kept until the kernel says the child has exec'd or exited, then reused. These tests
 * start many children back to back, each told apart by its arguments, environment and
 * descriptors, and check that each ran what it was given and that the slots do not pile up.
 *
 * Run: `deno test -A tests/shim_spawn_test.ts` (as root: the children get new namespaces).
 *
 * @module
 */
import assert from "node:assert/strict";
import { Shim } from "../init/shim/ffi.ts";
import { waitFor } from "./helpers/host_procs.ts";

const shim = new Shim(new URL("../build/libjwshim.so", import.meta.url).pathname);

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

/** The child stacks' mappings (jwshim.c: 256 KiB of stack and a little data, read-write). */
function slotMappings(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((line) => {
    const [range, perms] = line.split(" ");
    if (!range || perms !== "rw-p") return false;
    const [start, end] = range.split("-").map((h) => parseInt(h, 16));
    const size = end! - start!;
    return size > 256 * 1024 && size <= 256 * 1024 + 64 * 1024;
  }).length;
}

test("children started back to back each run their own arguments, environment and descriptors", async () => {
  const count = 200;
  const children: { pid: number; pidfd: number; statusR: number; i: number }[] = [];
  for (let i = 0; i < count; i++) {
    const [statusR, statusW] = shim.pipe();
    // A long argument makes each child's slot data differ in size as well as in content.
    const { pid, pidfd } = shim.spawn(
      "/bin/sh",
      [
        "sh",
        "-c",
        'printf "%s %s" "$1" "$N" >&4; exit $(($1 % 200))',
        "sh",
        String(i),
        "x".repeat(i * 37),
      ],
      [`N=${i * 3}`],
      [-1, -1, -1, -1, statusW],
    );
    shim.close(statusW);
    children.push({ pid, pidfd, statusR, i });
  }
  for (const { pid, pidfd, statusR, i } of children) {
    const ended = await waitFor(`child ${i} to end`, () => shim.waitpid(pid), 10_000);
    const said = new TextDecoder().decode(shim.readAll(statusR, 4096));
    shim.close(statusR);
    shim.close(pidfd);
    assert.deepEqual({ i, said, code: ended.exitCode }, {
      i,
      said: `${i} ${i * 3}`,
      code: i % 200,
    });
  }
});

test("a child's failed exec is reported on its descriptor 4, and its slot is freed", async () => {
  const [statusR, statusW] = shim.pipe();
  const { pid, pidfd } = shim.spawn("/nonexistent/program", ["x"], [], [-1, -1, -1, -1, statusW]);
  shim.close(statusW);
  const ended = await waitFor("the child to end", () => shim.waitpid(pid), 10_000);
  const report = new TextDecoder().decode(shim.readAll(statusR, 4096));
  shim.close(statusR);
  shim.close(pidfd);
  assert.equal(ended.exitCode, 127);
  assert.deepEqual(JSON.parse(report), { stage: "spawn", errno: 2 });
});

test("slots are reused: 300 more starts leave no more than the few kept free", async () => {
  const before = slotMappings();
  for (let round = 0; round < 30; round++) {
    const pids = Array.from(
      { length: 10 },
      () => shim.spawn("/bin/true", ["true"], [], [-1, -1, -1]),
    );
    for (const { pid, pidfd } of pids) {
      await waitFor("a child to end", () => shim.waitpid(pid), 10_000);
      shim.close(pidfd);
    }
  }
  // jwshim.c keeps up to 8 free slots; children still running hold theirs (none here).
  assert.ok(slotMappings() - before <= 8, `${slotMappings() - before} more child stacks mapped`);
});
