/**
 * The test harness's own promise (tests/helpers/worker.ts): a worker no test stopped still stops
 * cleanly, removing its job cgroups, when the test process ends, whether the test file ends
 * normally (a filtered run, a test failing before its stop: its state and certificate directories
 * go too) or the test process is killed (they stay: nothing is left to remove them). Each case
 * runs tests/helpers/unstopped_worker.ts in a child `deno test` and looks at the host after.
 *
 * With the helper as it was (not `detached`, no unload listener) the first case left the worker's
 * six v1 cgroup trees: `deno test` SIGKILLed the worker (Deno's children are spawned with tokio's
 * kill_on_drop) before its exit could send the parent-death SIGTERM.
 *
 * Run: `deno test -A tests/worker_helper_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { TextLineStream } from "./helpers/lines.ts";
import { cgroupDirsNamed, exists, jobProcesses, processId, waitFor } from "./helpers/host_procs.ts";
import { instanceDirName } from "../worker/cgroups/paths.ts";

const FIXTURE = new URL("./helpers/unstopped_worker.ts", import.meta.url).pathname;

interface Unstopped {
  pid: number;
  stateDir: string;
  instance: string;
  jobId: string;
  certDir: string;
}

/** Starts the fixture in a child `deno test`; returns it and the facts it printed. */
async function startFixture(
  hang: boolean,
): Promise<{ child: Deno.ChildProcess; facts: Unstopped; output: string[] }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-all", "--no-prompt", "--no-check", "--cached-only", FIXTURE],
    env: { HANG: hang ? "1" : "0", NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const output: string[] = [];
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TextLineStream(),
  );
  const reader = lines.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      await child.status;
      throw new Error(`the fixture printed no UNSTOPPED line:\n${output.join("\n")}`);
    }
    output.push(value);
    const at = value.indexOf("UNSTOPPED ");
    if (at >= 0) {
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          output.push(value);
        }
      })();
      const facts: Unstopped = JSON.parse(value.slice(at + "UNSTOPPED ".length));
      for (const key of ["pid", "stateDir", "instance", "jobId", "certDir"] as const) {
        assert.ok(facts[key], `the fixture's ${key}: ${value}`);
      }
      return { child, facts, output };
    }
  }
}

/** What the fixture's worker left on the host: cgroup directories, processes, files. */
function leftovers(facts: Unstopped): string[] {
  const left = cgroupDirsNamed([instanceDirName(facts.instance)]);
  if (jobProcesses(facts.jobId).length > 0) left.push(`job ${facts.jobId} processes`);
  if (processId(facts.pid) !== null) left.push(`worker process ${facts.pid}`);
  return left;
}

/** Removes what a failed case left: the job's and the worker's processes, cgroups, state. */
function clean(facts: Unstopped): void {
  for (const pid of [facts.pid, ...jobProcesses(facts.jobId).map((p) => p.pid)]) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  const dirs = cgroupDirsNamed([instanceDirName(facts.instance)]);
  for (const dir of dirs) {
    const below = (d: string): string[] => [
      ...[...Deno.readDirSync(d)].filter((e) => e.isDirectory).flatMap((e) =>
        below(`${d}/${e.name}`)
      ),
      d,
    ];
    for (const d of below(dir)) {
      try {
        Deno.removeSync(d);
      } catch { /* still busy */ }
    }
  }
  for (const dir of [facts.stateDir, facts.certDir]) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* removed */ }
  }
}

Deno.test("a worker no test stopped is stopped when its test file ends: no cgroups, no temp dirs", async () => {
  let facts: Unstopped | undefined;
  try {
    const run = await startFixture(false);
    facts = run.facts;
    const status = await run.child.status;
    assert.equal(status.code, 0, run.output.join("\n"));
    // Nothing to wait for: the test process ended only after its worker did.
    assert.deepEqual(leftovers(facts), []);
    assert.equal(exists(facts.stateDir), false, `state directory ${facts.stateDir} left`);
    assert.equal(exists(facts.certDir), false, `certificate directory ${facts.certDir} left`);
  } finally {
    if (facts) clean(facts);
  }
});

Deno.test("a worker whose test process is killed gets SIGTERM and removes its cgroups", async () => {
  let facts: Unstopped | undefined;
  try {
    const run = await startFixture(true);
    facts = run.facts;
    run.child.kill("SIGKILL");
    await run.child.status;
    const f = facts;
    await waitFor(
      "the worker to stop and remove its cgroups",
      () => leftovers(f).length === 0,
      30_000,
    )
      .catch((e) => {
        throw new Error(`${e.message}: left ${leftovers(f).join(", ")}`);
      });
  } finally {
    if (facts) clean(facts);
  }
});
