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

test("a child's failed exec is still reported on its descriptor 4", async () => {
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

test("slots are reused: 300 more starts leave no more than the eight kept free and the one in use", async () => {
  const before = slotMappings();
  const startAndReap = async (count: number) => {
    const children = Array.from(
      { length: count },
      () => shim.spawn("/bin/true", ["true"], [], [-1, -1, -1]),
    );
    for (const { pid, pidfd } of children) {
      await waitFor("a child to end", () => shim.waitpid(pid), 10_000);
      shim.close(pidfd);
    }
  };
  for (let round = 0; round < 30; round++) await startAndReap(10);
  // Free slots are trimmed when the next spawn takes one: the children above may have held up to
  // ten at once, all free now.
  await startAndReap(1);
  const more = slotMappings() - before;
  assert.ok(more <= 9, `${more} more child stacks mapped`);
});

test("a child whose worker exits right after the spawn does not outlive it", async () => {
  // Each round: a process loads the shim, starts `sleep <marker>` and exits at once, before the
  // child has likely run a single instruction; the child must die with it (parent-death signal,
  // or the check, right after setting it, that its parent is still the worker). The marker is in the
  // command line of each round's process too, and of a child killed before its exec (it shares
  // that process's memory until then), so only a process running `sleep <marker>` counts, and a
  // dying one is given time to go: a survivor sleeps for 31 s.
  const marker = `31.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  const ffi = new URL("../init/shim/ffi.ts", import.meta.url).href;
  const library = new URL("../build/libjwshim.so", import.meta.url).pathname;
  const code = `import { Shim } from "${ffi}";
    new Shim("${library}").spawn("/bin/sleep", ["sleep", "${marker}"], [], [-1, -1, -1]);
    Deno.exit(0);`;
  for (let round = 0; round < 20; round++) {
    const { code: exit } = await new Deno.Command(Deno.execPath(), { args: ["eval", code] })
      .output();
    assert.equal(exit, 0);
  }
  const sleeping = () =>
    [...Deno.readDirSync("/proc")].flatMap((e) => {
      try {
        const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
        return argv[0] === "sleep" && argv[1] === marker ? [Number(e.name)] : [];
      } catch {
        return [];
      }
    });
  const deadline = Date.now() + 5_000;
  while (sleeping().length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const left = sleeping().map((pid) => {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]?.split(" ");
    return { pid, state: stat?.[0], ppid: Number(stat?.[1]) };
  });
  for (const { pid } of left) Deno.kill(pid, "SIGKILL");
  assert.deepEqual(left, [], "children left running after their worker exited");
});
