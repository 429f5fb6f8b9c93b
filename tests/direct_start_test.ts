/**
 * The direct start (jwstart, init/shim/jwdirect.c: takes init's steps from a plan and execs the
 * command) against the cloned `jobworker init` (JOB_WORKER_DIRECT_START=0), from real
 * jobs of two real workers: each kind of job the API allows observes the same from inside, each
 * start failure reads the same with the same gRPC status, a job of another user dies with a
 * SIGKILLed worker either way, and a malformed plan is refused before any step.
 *
 * The same probe runs in both workers and the outputs must be equal once job ids and the workers'
 * own paths are normalised; the worker's "job started" line (direct=true / direct=false) shows
 * which path each job took, so a worker that quietly fell back to one path would fail here.
 *
 * Run: `deno test -A tests/direct_start_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { Shim, ShimError } from "../init/shim/ffi.ts";
import { Launcher } from "../worker/runtime/launcher.ts";
import type { InitPool } from "../worker/runtime/init_pool.ts";
import { Reaper } from "../worker/runtime/reaper.ts";
import { OutputPump } from "../worker/runtime/output_pump.ts";
import { directFailure, directPlan } from "../init/direct_plan.ts";
import { resolveCommand } from "../init/resolve_command.ts";
import { type DirectProcess, spawnDirect } from "../worker/runtime/direct_start.ts";
import { instanceDirName, instanceName } from "../worker/cgroups/paths.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { rootInitSpec, rootJobLaunch } from "./helpers/init_specs.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { linesWithMessage } from "./helpers/log_lines.ts";
import { heldFds, isAlive, jobProcesses, waitFor } from "./helpers/host_procs.ts";

const S = jobworker.JobStatus;

interface Side {
  name: "direct" | "cloned init";
  worker: WorkerProcess;
  client: JobClient;
  /** The worker's cgroup directory name (in a job's /proc/self/cgroup). */
  instanceDir: string;
}

const pki = await makePki();
const workers: WorkerProcess[] = [];
/** Both workers allow privileged jobs; jobs run as root unless they ask for a user. */
const BASE_ENV = { JOB_WORKER_ALLOW_PRIVILEGED: "1" };
const CLONED_ENV = { ...BASE_ENV, JOB_WORKER_DIRECT_START: "0" };

async function startWorker(env: Record<string, string>): Promise<WorkerProcess> {
  const worker = await WorkerProcess.start({ certDir: pki.dir, env });
  workers.push(worker);
  return worker;
}

async function side(name: Side["name"], worker: WorkerProcess): Promise<Side> {
  const instanceDir = instanceDirName(await instanceName(worker.stateDir));
  return { name, worker, client: clientFor(pki.dir, worker.address), instanceDir };
}

let sides: [Side, Side];
try {
  sides = [
    await side("direct", await startWorker(BASE_ENV)),
    await side("cloned init", await startWorker(CLONED_ENV)),
  ];
} catch (e) {
  await Promise.all(workers.map((w) => w.stop()));
  await pki.remove();
  throw e;
}

globalThis.addEventListener("unload", () => {
  for (const w of workers) {
    try {
      w.process.kill("SIGTERM");
    } catch { /* gone */ }
  }
});

/** Files the failure cases and the workDir job use (0755, so that nobody may enter it). */
const fixtures = await Deno.makeTempDir({ prefix: "jobworker-test-direct-" });
await Deno.chmod(fixtures, 0o755);

/** Runs a program to its end; throws unless it succeeds. */
async function run(program: string, ...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command(program, { args, stderr: "piped" }).output();
  if (!success) {
    throw new Error(`${program} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
  }
}

/** `fn` in both workers at once: [direct, cloned init]. */
function onBoth<T>(fn: (s: Side) => Promise<T>): Promise<[T, T]> {
  return Promise.all([fn(sides[0]), fn(sides[1])]);
}

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Whether `side`'s worker logged job `id` as started directly. */
function startedDirect(s: Side, id: string): string {
  const line = linesWithMessage(s.worker.logs, "job started").find((l) => l.fields.id === id);
  assert.ok(line, `${s.name}: a "job started" line for ${id}`);
  return String(line.fields.direct);
}

// ---------------------------------------------------------------------------------------------
// 1. What a job observes

/**
 * What a job can see of itself and its surroundings. Mount ids, inode numbers and times differ
 * from job to job and are left out; what is left must not. So are pid numbers other than the
 * parent's: a cloned init's Deno threads take the namespace's first pids before its exec, so a
 * job's later processes get higher ones that way (its bash was pid 7 against 2 under a minimal
 * init, its first child 46 against 41), which a job cannot rely on anyway.
 */
const PROBE = String.raw`
echo "--- id"; id
echo "--- status"; grep -E '^(Cap|NoNewPrivs|Seccomp|Sig(Blk|Ign)|Cpus_allowed_list)' /proc/self/status
echo "--- limits"; ulimit -a; umask; cat /proc/self/oom_score_adj
echo "--- mounts (root, mount point, options, type, source, super options)"
awk '{ for (i = 7; $i != "-"; i++); print $4, $5, $6, $(i + 1), $(i + 2), $(i + 3) }' /proc/self/mountinfo | sort
echo "--- dev"; find /dev -maxdepth 2 -printf '%y %m %u:%g %p %l\n' | sort
echo "--- masks"
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/sysrq-trigger; do
  echo "$p: $(head -c 100 "$p" 2>&1 | od -An -tx1 | head -2 | tr -s ' \n' ' ')"
done
ls /proc/acpi /proc/scsi /sys/firmware 2>&1
echo "--- writable"
for p in /sys /proc/sys /proc/sysrq-trigger /proc/irq /proc/bus /tmp; do
  if [ -w "$p" ]; then echo "$p writable"; else echo "$p read-only"; fi
done
echo "--- hostname"; hostname | tr -d '\n' | wc -c
echo "--- pwd"; pwd
echo "--- net"; wc -l < /proc/net/dev
# One ps, read whole before it is counted and sorted: a ps in a pipeline may see the next
# command of the pipeline still as the shell that forked it, or not yet at all.
echo "--- processes"; procs=$(ps -eo user=,comm=); echo "$procs" | wc -l; echo "$procs" | sort
echo "parent $PPID $(cat /proc/$PPID/comm 2>/dev/null); group $(ps -o pgid=,sid= $$)"
echo "--- fds"; for f in /proc/$$/fd/*; do echo "$(basename "$f") $(readlink "$f" | sed 's/[0-9]\+/N/g')"; done
echo "--- env"; env | sort
echo "--- cgroup"; cat /proc/self/cgroup
echo "--- security"; cat /proc/self/attr/current 2>&1; cat /proc/self/loginuid; echo
`;

const KINDS: [string, jobworker.ICreateJobReq][] = [
  ["default", {}],
  ["user nobody", { user: "nobody" }],
  ["network none", { network: "none" }],
  ["init", { init: true }],
  ["privileged", { privileged: true }],
  ["workDir", { workDir: fixtures }],
];

/** Runs the probe in `s`'s worker; its output with this job's and this worker's names replaced. */
async function probe(s: Side, extra: jobworker.ICreateJobReq) {
  const job = await s.client.createJob({ command: "bash", args: ["-c", PROBE], ...extra });
  const output = await collectOutput(s.client, job.id);
  const ended = await waitJobEnded(s.client, job.id);
  const normal = (text: string) =>
    text.replaceAll(job.id, "<job>").replaceAll(s.worker.stateDir, "<state>")
      .replaceAll(s.instanceDir, "<instance>");
  return {
    id: job.id,
    status: ended.status,
    exitCode: ended.exitCode,
    stdout: normal(output.stdout),
    stderr: normal(output.stderr),
  };
}

for (const [kind, extra] of KINDS) {
  test(`a job (${kind}) observes the same started directly or by a cloned init`, async () => {
    const [direct, cloned] = await onBoth((s) => probe(s, extra));
    assert.equal(startedDirect(sides[0], direct.id), "true", "the direct worker: directly");
    assert.equal(startedDirect(sides[1], cloned.id), "false", "the other through a cloned init");
    assert.equal(direct.status, S.COMPLETED, direct.stderr);
    assert.equal(direct.stdout, cloned.stdout);
    assert.equal(direct.stderr, cloned.stderr);
    assert.deepEqual([direct.status, direct.exitCode], [cloned.status, cloned.exitCode]);
    // The probe saw something: the sections are there and /proc is the job's own.
    assert.match(direct.stdout, /--- mounts[\s\S]*\/ \/proc [\s\S]*--- cgroup\n\S/);
  });
}

/**
 * Under the minimal init the worker's status pipe crosses the exec of jwinit (so that jwinit's child
 * can report a failed exec of the command): it must be gone from the job once the command runs, or
 * CreateJob would answer only at the job's end.
 */
test("under a minimal init CreateJob answers while the command runs, and the job holds only fds 0-2", async () => {
  await onBoth(async (s) => {
    const created = s.client.createJob({ command: "sleep", args: ["1000"], init: true });
    const timer = Promise.withResolvers<never>();
    const id = setTimeout(() => timer.reject(new Error(`${s.name}: no answer in 10 s`)), 10_000);
    const job = await Promise.race([created, timer.promise]).finally(() => clearTimeout(id));
    try {
      // Both asleep: jwinit waiting for its child, the sleep in its nanosleep. Before that the
      // sleep may still hold files of its own start-up (glibc's gconv-modules.cache, seen as fd 3
      // under UML), which are not descriptors the worker or init handed it.
      const procs = await waitFor(`${s.name}: jwinit and the sleep, both asleep`, () => {
        const found = jobProcesses(job.id);
        const settled = found.some((p) => p.comm === "sleep") &&
          found.every((p) => p.state === "S");
        return settled ? found : null;
      });
      for (const p of procs) {
        const held = heldFds(p.pid);
        const fds = held.map((f) => f.fd).sort((a, b) => a - b);
        assert.deepEqual(
          fds,
          [0, 1, 2],
          `${s.name}: ${p.comm} (pid ${p.nsPid} in the job) holds ${JSON.stringify(held)}`,
        );
      }
      const names = procs.map((p) => p.comm.replace(/-[0-9a-f]+$/, "")).sort();
      assert.deepEqual(names, ["jwinit", "sleep"], s.name);
    } finally {
      await s.client.stopJob(job.id);
      await waitJobEnded(s.client, job.id);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Start failures

/**
 * What became of a CreateJob: refused (its gRPC status and details), or started and ended (its
 * end state, reason and output, job id replaced), as one line to compare.
 */
async function outcome(s: Side, req: jobworker.ICreateJobReq): Promise<string> {
  let id: string;
  try {
    id = (await s.client.createJob(req)).id;
  } catch (e) {
    const { code, details } = e as { code?: number; details?: string };
    if (code === undefined) throw e;
    return `refused ${status[code]}: ${details}`;
  }
  const output = await collectOutput(s.client, id);
  const ended = await waitJobEnded(s.client, id);
  return `started, ended ${S[ended.status]} exit ${ended.exitCode} signal ${ended.signal}: ` +
    `${ended.reason} | ${JSON.stringify([output.stdout, output.stderr])}`.replaceAll(id, "<job>");
}

const privateDir = `${fixtures}/private`;
/** A tmpfs mounted noexec (by the start failures' test), with an executable script in it. */
const noexecDir = `${fixtures}/noexec`;
/** What to ask, and how the outcome must read (`outcome()`'s line). */
const FAILURES: [string, () => jobworker.ICreateJobReq, RegExp][] = [
  [
    "a missing absolute command",
    () => ({ command: "/nonexistent/jw-missing" }),
    /^refused INVALID_ARGUMENT: command: command not found: "\/nonexistent\/jw-missing"$/,
  ],
  [
    "a bare name not in PATH",
    () => ({ command: "jw-no-such-command", env: [`PATH=/nonexistent:${fixtures}`] }),
    /^refused INVALID_ARGUMENT: command: command not found: "jw-no-such-command" \(PATH="\/nonexistent:.*"\)$/,
  ],
  [
    "a bare name whose first match in PATH is a directory",
    () => ({ command: "a-directory", env: [`PATH=/nonexistent:${fixtures}:/usr/bin`] }),
    /^refused INVALID_ARGUMENT: command: ".*\/a-directory" is a directory$/,
  ],
  [
    "a missing command whose path is long and full of quotes",
    () => ({ command: `/nonexistent/${`${'"'.repeat(200)}/`.repeat(17)}x` }),
    /^refused INVALID_ARGUMENT: command: command not found: /,
  ],
  [
    "a missing command whose path is full of control characters",
    () => ({ command: `/nonexistent/${`${"\x01".repeat(200)}/`.repeat(10)}x` }),
    /^refused INVALID_ARGUMENT: command: command not found: /,
  ],
  // What keeps a path from being looked up is said, errno and all, not "command not found".
  [
    "a command that is a symbolic link loop",
    () => ({ command: `${fixtures}/loop` }),
    /^refused INVALID_ARGUMENT: command: ".*\/loop" cannot be looked up: ELOOP \(too many levels of symbolic links\)$/,
  ],
  [
    "a relative command that is a symbolic link loop",
    () => ({ command: "./loop", workDir: fixtures }),
    /^refused INVALID_ARGUMENT: command: "\.\/loop" cannot be looked up: ELOOP \(too many levels of symbolic links\)$/,
  ],
  [
    "a command through a file, with a slash at its end",
    () => ({ command: "/bin/true/" }),
    /^refused INVALID_ARGUMENT: command: "\/bin\/true\/" cannot be looked up: ENOTDIR \(not a directory\)$/,
  ],
  [
    "a command through a file",
    () => ({ command: "/etc/passwd/x" }),
    /^refused INVALID_ARGUMENT: command: "\/etc\/passwd\/x" cannot be looked up: ENOTDIR \(not a directory\)$/,
  ],
  [
    "a command whose name is too long",
    () => ({ command: `${fixtures}/${"x".repeat(300)}` }),
    /^refused INVALID_ARGUMENT: command: ".*x" cannot be looked up: ENAMETOOLONG \(file name too long\)$/,
  ],
  // The API cuts a status message at 1024 characters, before the errno: the same either way here,
  // and said in full in "a long path in a lookup failure" below.
  [
    "a command whose path is past PATH_MAX",
    () => ({ command: `/nonexistent/${`${"a".repeat(250)}/`.repeat(17)}x` }),
    /^refused INVALID_ARGUMENT: command: "\/nonexistent\/(a{250}\/)+a+\.\.\.$/,
  ],
  // A bare name is looked up as bash looks it up: a PATH entry where it loops or that runs through
  // a file is passed over, and found nowhere else it is not found.
  [
    "a bare name whose PATH has a symbolic link loop and a file before its match",
    () => ({ command: "true", env: [`PATH=${fixtures}/loops:/etc/passwd:/usr/bin:/bin`] }),
    /^started, ended \w+ exit 0 /,
  ],
  [
    "a bare name found only as a symbolic link loop",
    () => ({ command: "true", env: [`PATH=${fixtures}/loops:/etc/passwd`] }),
    /^refused INVALID_ARGUMENT: command: command not found: "true" \(PATH=".*\/loops:\/etc\/passwd"\)$/,
  ],
  [
    "a directory",
    () => ({ command: fixtures }),
    /^refused INVALID_ARGUMENT: .*is a directory$/,
  ],
  [
    "a file without x bits",
    () => ({ command: `${fixtures}/plain` }),
    /^refused INVALID_ARGUMENT: .*plain" is not executable$/,
  ],
  [
    "a workDir that does not exist",
    () => ({ command: "true", workDir: "/nonexistent/jw-dir" }),
    /^refused INVALID_ARGUMENT: workDir: entering workDir "\/nonexistent\/jw-dir": chdir failed: ENOENT/,
  ],
  [
    "a workDir nobody cannot enter",
    () => ({ command: "true", workDir: privateDir, user: "nobody" }),
    /^refused INVALID_ARGUMENT: workDir: .*EACCES/,
  ],
  [
    "a command user nobody cannot reach",
    () => ({ command: `${privateDir}/tool`, user: "nobody" }),
    /^refused INVALID_ARGUMENT: .*tool" cannot be reached by the job's user$/,
  ],
  [
    "a command only its owner may run, as nobody",
    () => ({ command: `${fixtures}/owner-only`, user: "nobody" }),
    /^refused INVALID_ARGUMENT: .*owner-only" is not executable by the job's user$/,
  ],
  [
    "a file with x bits that is no executable (ENOEXEC)",
    () => ({ command: `${fixtures}/garbage` }),
    /^refused INVALID_ARGUMENT: command: cannot execute ".*garbage": execve failed: ENOEXEC/,
  ],
  // Under a minimal init the command is exec'd by jwinit's child; its failure is refused the same.
  [
    "a file with x bits that is no executable, under a minimal init",
    () => ({ command: `${fixtures}/garbage`, init: true }),
    /^refused INVALID_ARGUMENT: command: cannot execute ".*garbage": execve failed: ENOEXEC/,
  ],
  [
    "a file with x bits that is no executable, as nobody under a minimal init",
    () => ({ command: `${fixtures}/garbage`, user: "nobody", init: true, network: "none" }),
    /^refused INVALID_ARGUMENT: command: cannot execute ".*garbage": execve failed: ENOEXEC/,
  ],
  [
    "a script whose interpreter is missing",
    () => ({ command: `${fixtures}/orphan-script` }),
    /^refused INVALID_ARGUMENT: command: cannot execute ".*orphan-script": execve failed: ENOENT/,
  ],
  [
    "a script whose interpreter is missing, under a minimal init",
    () => ({ command: `${fixtures}/orphan-script`, init: true }),
    /^refused INVALID_ARGUMENT: command: cannot execute ".*orphan-script": execve failed: ENOENT/,
  ],
  [
    "a minimal init with no room for its command (maxPids 1), refused before it starts",
    () => ({ command: "true", init: true, maxPids: 1 }),
    /^refused INVALID_ARGUMENT: maxPids: init: true needs at least 2 processes \(the minimal init and the command\), but maxPids is 1;/,
  ],
  [
    "a command on a noexec mount, under a minimal init",
    () => ({ command: `${noexecDir}/tool`, init: true }),
    /^refused INVALID_ARGUMENT: command: ".*tool" is not executable by the job's user$/,
  ],
];

test("start failures read the same either way, with the same status", async () => {
  await Deno.mkdir(`${fixtures}/a-directory`);
  await Deno.symlink("loop", `${fixtures}/loop`);
  await Deno.mkdir(`${fixtures}/loops`);
  await Deno.symlink("true", `${fixtures}/loops/true`);
  await Deno.writeTextFile(`${fixtures}/plain`, "#!/bin/sh\necho plain\n");
  await Deno.chmod(`${fixtures}/plain`, 0o644);
  await Deno.writeTextFile(`${fixtures}/owner-only`, "#!/bin/sh\necho owner\n");
  await Deno.chmod(`${fixtures}/owner-only`, 0o744);
  // Bytes no loader knows, no "#!": execve says ENOEXEC (a shell would run it as a script).
  await Deno.writeFile(`${fixtures}/garbage`, new Uint8Array([0x00, 0x13, 0x37, 0xfe, 0xff, 0x0a]));
  await Deno.chmod(`${fixtures}/garbage`, 0o755);
  await Deno.mkdir(privateDir, { mode: 0o700 });
  await Deno.chmod(privateDir, 0o700);
  await Deno.writeTextFile(`${privateDir}/tool`, "#!/bin/sh\necho tool\n");
  await Deno.chmod(`${privateDir}/tool`, 0o755);
  await Deno.writeTextFile(`${fixtures}/orphan-script`, "#!/nonexistent/jw-interpreter\n");
  await Deno.chmod(`${fixtures}/orphan-script`, 0o755);
  await Deno.mkdir(noexecDir);
  await run("mount", "-t", "tmpfs", "-o", "noexec,size=64k", "jw-noexec", noexecDir);
  await Deno.writeTextFile(`${noexecDir}/tool`, "#!/bin/sh\necho tool\n");
  await Deno.chmod(`${noexecDir}/tool`, 0o755);
  const mismatches: string[] = [];
  for (const [what, req, pattern] of FAILURES) {
    const [direct, cloned] = await onBoth((s) => outcome(s, req()));
    console.log(`${what}: ${direct}`);
    if (direct !== cloned) {
      mismatches.push(`${what}:\n  direct:      ${direct}\n  cloned init: ${cloned}`);
      continue;
    }
    assert.match(direct, pattern, what);
  }
  assert.deepEqual(mismatches, [], mismatches.join("\n"));
});

// ---------------------------------------------------------------------------------------------
// 4. A malformed plan

const openFds = () => [...Deno.readDirSync("/proc/self/fd")].length;

const u32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];

/** Plan bytes (jwdirect.c's encoding): op bytes, NUL-terminated texts, little-endian words. */
function planBytes(...parts: (number | string | { u32: number })[]): Uint8Array<ArrayBuffer> {
  return new Uint8Array(parts.flatMap((part) => {
    if (typeof part === "number") return [part];
    if (typeof part === "string") return [...new TextEncoder().encode(part), 0];
    return u32(part.u32);
  }));
}

const OP_PRIVATE_MOUNTS = 1;
const OP_MOUNT_PROC = 2;
const OP_SET_USER = 12;
const OP_EXEC = 15;
/** exec /bin/true with no environment: the smallest plan there is. */
const EXEC_TRUE = [OP_EXEC, "/bin/true", "/usr/bin:/bin", { u32: 1 }, "true", { u32: 0 }] as const;

/** Runs the worker's installed jwstart in new namespaces with `plan`; its exit and status report. */
async function runStarter(shim: Shim, starter: string, plan: Uint8Array<ArrayBuffer>) {
  const [planR, planW] = shim.pipe(1024 * 1024);
  const [statusR, statusW] = shim.pipe();
  shim.writeAll(planW, plan);
  shim.close(planW);
  const { pid, pidfd } = shim.spawn(starter, ["jwstart"], [], [-1, -1, -1, planR, statusW]);
  shim.close(planR);
  shim.close(statusW);
  try {
    const ended = await waitFor(`pid ${pid} to end`, () => shim.waitpid(pid), 5000);
    const report = new TextDecoder().decode(shim.readAll(statusR, 65536));
    return { ended, report };
  } finally {
    shim.close(pidfd);
    shim.close(statusR);
  }
}

/** The file the direct worker installed under its state directory's lib/ as `prefix`*. */
function installed(prefix: string): string {
  const lib = `${sides[0].worker.stateDir}/lib`;
  const found = [...Deno.readDirSync(lib)].find((e) => e.name.startsWith(prefix));
  assert.ok(found, `the worker installed ${prefix}*`);
  return `${lib}/${found.name}`;
}

test("a malformed plan is refused before any step: jwstart reports step -1, EINVAL, exit 127", async () => {
  const named = installed;
  const shim = new Shim(named("libjwshim-"));
  const starter = named("jwstart-");
  const whole = planBytes(OP_PRIVATE_MOUNTS, OP_MOUNT_PROC, ...EXEC_TRUE);
  const malformed: [string, Uint8Array<ArrayBuffer>][] = [
    ["empty", new Uint8Array(0)],
    ["garbage", new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x00, 0x42, 0x99])],
    ["one byte", new Uint8Array([0])],
    ["truncated in the exec op", whole.subarray(0, whole.length - 3).slice()],
    ["truncated after its command", whole.subarray(0, 3 + "/bin/true".length + 1).slice()],
    ["no exec op at the end", planBytes(OP_PRIVATE_MOUNTS, OP_MOUNT_PROC)],
    ["an op after the exec", planBytes(...EXEC_TRUE, OP_MOUNT_PROC)],
    ["an exec without argv", planBytes(OP_EXEC, "/bin/true", "/bin", { u32: 0 }, { u32: 0 })],
    ["an exec with 2^31 args", planBytes(OP_EXEC, "/bin/true", "/bin", { u32: 2 ** 31 })],
    [
      "a user with 2^20 groups and none given",
      planBytes(OP_SET_USER, { u32: 0 }, { u32: 0 }, { u32: 2 ** 20 }, ...EXEC_TRUE),
    ],
  ];
  const before = openFds();
  for (const [what, plan] of malformed) {
    const { ended, report } = await runStarter(shim, starter, plan);
    assert.deepEqual(ended, { exitCode: 127, signal: null }, what);
    assert.deepEqual(JSON.parse(report), { step: -1, errno: 22 }, `${what}: ${report}`);
  }
  // The same run of a well-formed plan execs its command (so the checks above can fail).
  const { ended, report } = await runStarter(shim, starter, whole);
  assert.deepEqual(ended, { exitCode: 0, signal: null }, `a well-formed plan: ${report}`);
  assert.equal(report, "", "a successful exec closes the status pipe without a word");
  assert.equal(openFds(), before, "no descriptor left open here");
});

/**
 * On cgroup v2 the launcher hands spawnDirect the job's cgroup directory to clone into (see
 * tests/cgroups_v2_test.ts); a descriptor the kernel refuses (here "/", no cgroup v2 directory:
 * EBADF, as a v1 cgroup would be) makes it start as without one, with the plan's join steps.
 */
test("a direct start whose clone into a cgroup is refused starts again as without it", async () => {
  const shim = new Shim(installed("libjwshim-"));
  const spec = rootInitSpec({ jobId: "jw-refused-cgroup", command: "true" });
  const before = openFds();
  const notCgroup = shim.openPath("/");
  let child: DirectProcess;
  try {
    child = spawnDirect(shim, installed("jwstart-"), spec, notCgroup);
  } finally {
    shim.close(notCgroup);
  }
  try {
    assert.equal(child.intoCgroup, false);
    assert.equal(child.refused, 9, "EBADF");
    assert.equal(await child.started, null);
    const ended = await waitFor(`pid ${child.pid} to end`, () => shim.waitpid(child.pid), 5000);
    assert.deepEqual(ended, { exitCode: 0, signal: null });
  } finally {
    for (const fd of [child.pidfd, child.outR, child.errR]) shim.close(fd);
  }
  assert.equal(openFds(), before, "no descriptor left open here");
});

/**
 * A Launcher of the installed shim and jwstart whose every clone's cgroup descriptor is noted in
 * `tried` (-1: none offered); `refuse`: such a clone is refused as a kernel older than 5.7 does.
 */
function recordingLauncher(tried: number[], options: { refuse?: boolean; pool?: InitPool } = {}) {
  class Recording extends Shim {
    override spawn(
      path: string,
      argv: readonly string[],
      envp: readonly string[],
      fds: readonly number[],
      newNetwork = false,
      cgroupFd = -1,
    ) {
      tried.push(cgroupFd);
      if (options.refuse && cgroupFd >= 0) throw new ShimError("clone3", 7); // E2BIG
      return super.spawn(path, argv, envp, fds, newNetwork);
    }
  }
  const shim = new Recording(installed("libjwshim-"));
  const reaper = new Reaper(shim);
  reaper.start();
  const self = { path: "/nonexistent", argv: ["jobworker"], env: [] };
  const paths = { maskPaths: [], readonlyPaths: [], minimalInit: "/nonexistent" };
  // Its epoll set and wake pipe stay open, as the worker's do: made before any count of descriptors.
  const pump = new OutputPump(shim);
  const launcher = new Launcher(
    shim,
    pump,
    self,
    paths,
    reaper,
    options.pool,
    installed("jwstart-"),
  );
  /** Starts `true` as a direct start offered a cgroup to clone into; resolves once it is gone. */
  const runTrue = async (jobId: string) => {
    const process = launcher.launch(
      rootJobLaunch({ jobId, command: "true", cloneInto: "/" }),
      { stdout: () => {}, stderr: () => {} },
    );
    assert.equal(process.intoCgroup, false);
    assert.equal(await process.started, null);
    assert.deepEqual(await reaper.watch(process.pid), { exitCode: 0, signal: null });
    await Promise.all([process.stdout.closed, process.stderr.closed]);
    process.release();
  };
  return { runTrue, stop: () => reaper.stop() };
}

/**
 * A kernel older than 5.7 refuses clone3's CLONE_INTO_CGROUP itself (E2BIG for the larger
 * clone_args, EINVAL for the flag), whatever the cgroup: the launcher falls back for that job and
 * asks no more, so later starts pay no failed clone.
 */
test("a kernel that refuses CLONE_INTO_CGROUP itself is asked once; every start still runs", async () => {
  const tried: number[] = [];
  const launcher = recordingLauncher(tried, { refuse: true });
  const before = openFds();
  try {
    for (let i = 0; i < 2; i++) await launcher.runTrue(`jw-old-kernel-${i}`);
  } finally {
    launcher.stop();
  }
  assert.equal(tried.length, 3, `spawns: ${tried.join(" ")}`);
  assert.ok(tried[0]! >= 0, "the first start offers the cgroup");
  assert.deepEqual(tried.slice(1), [-1, -1], "its fallback, then a start that does not ask");
  assert.equal(openFds(), before, "no descriptor left open here");
});

/**
 * Beside an init pool a direct start joins its cgroup as before: the pool's members join theirs
 * through cgroup.procs (on v2 holding the kernel's cgroup mutex for a grace period), and a clone
 * into a cgroup would wait for that mutex on the worker's event loop.
 */
test("beside an init pool, a direct start is never cloned into its cgroup", async () => {
  const tried: number[] = [];
  // A pool of two whose members are all claimed: every job starts directly.
  const drained = { size: 2, claim: () => undefined } as unknown as InitPool;
  const launcher = recordingLauncher(tried, { pool: drained });
  try {
    await launcher.runTrue("jw-beside-pool");
  } finally {
    launcher.stop();
  }
  assert.deepEqual(tried, [-1], "no cgroup offered to the clone");
});

// ---------------------------------------------------------------------------------------------
// 5. A long path in a lookup failure

/**
 * jwstart's report never carries the path it could not use, only the index of its PATH entry: the
 * worker names the file from its plan, in full, however long and whatever it holds (quotes,
 * control characters). The API caps a status message at 1024 characters, so the client alone would
 * not see a path cut short: here the report is read directly and turned into the worker's message,
 * which must be init's (resolve_command.ts) in full.
 */
test("a long path in a lookup failure reaches the worker whole, as init words it", async () => {
  const shim = new Shim(installed("libjwshim-"));
  const starter = installed("jwstart-");
  /** Path segments of `n` copies of `c` (each ≤ 255 bytes, so each is a valid name). */
  const segments = (c: string, n: number, count: number) => `${c.repeat(n)}/`.repeat(count);
  // A directory PATH_MAX can still name, its name full of quotes, whose subdirectory is the match.
  const quotedDir = `${fixtures}/${segments('"', 250, 15)}`.slice(0, -1);
  const room = 4095 - quotedDir.length - "/jw-long-dir".length - 1;
  const deepDir = `${quotedDir}/${"q".repeat(Math.min(room, 250))}`;
  await Deno.mkdir(`${deepDir}/jw-long-dir`, { recursive: true });
  const controls = `/nonexistent/${segments("\x01", 250, 16)}`;
  const cases: [string, string, string[], RegExp][] = [
    [
      "a missing command of 4095 bytes, all control characters",
      controls.slice(0, 4095),
      [],
      /^command not found: "\/nonexistent\/(\\u0001|\/)+"$/,
    ],
    [
      "a missing command past PATH_MAX, all quotes",
      `/nonexistent/${segments('"', 250, 24)}x`,
      [],
      /^"\/nonexistent\/((\\"){250}\/){24}x" cannot be looked up: ENAMETOOLONG \(file name too long\)$/,
    ],
    [
      "a bare name whose first match is a directory 4095 bytes long, full of quotes",
      "jw-long-dir",
      [`PATH=/nonexistent:${deepDir}:/usr/bin`],
      /^".*\/q+\/jw-long-dir" is a directory$/,
    ],
  ];
  for (const [what, command, env, message] of cases) {
    const spec = rootInitSpec({ jobId: "jw-long-path", command, env });
    const init = resolveCommand(command, env, (p, mode) => shim.access(p, mode));
    assert.ok(!init.ok, `${what}: init refuses it too`);
    assert.match(init.message, message, what);
    const plan = directPlan(spec);
    const { ended, report } = await runStarter(shim, starter, plan.bytes);
    assert.deepEqual(ended, { exitCode: 127, signal: null }, what);
    assert.doesNotThrow(() => JSON.parse(report), `${what}: the report is JSON: ${report}`);
    assert.deepEqual(
      directFailure(plan, report),
      { stage: "lookup", errno: init.errno, message: init.message },
      what,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// 3. A job of another user dies with a killed worker (last: the workers are killed)

test("a job of user nobody dies with a SIGKILLed worker, started either way", async () => {
  const jobs = await Promise.all(sides.map(async (s) => {
    const job = await s.client.createJob({ command: "sleep", args: ["1000"], user: "nobody" });
    const procs = await waitFor(`${s.name}: the sleep`, () => {
      const found = jobProcesses(job.id).filter((p) => p.comm === "sleep");
      return found.length > 0 ? found : null;
    });
    return { s, job, procs };
  }));
  for (const { s, job } of jobs) {
    assert.equal(startedDirect(s, job.id), s.name === "direct" ? "true" : "false");
    s.client.close();
    s.worker.process.kill("SIGKILL");
    await s.worker.exited;
  }
  const survivors: string[] = [];
  for (const { s, procs } of jobs) {
    try {
      await waitFor(`${s.name}: the sleep to die`, () => procs.every((p) => !isAlive(p)), 5000);
    } catch {
      survivors.push(`${s.name}: ${procs.map((p) => p.pid).join(", ")}`);
    }
  }
  // stop() of a killed worker kills and removes what its cgroups still hold.
  for (const w of workers) await w.stop();
  assert.deepEqual(survivors, [], `the job outlived its worker: ${survivors.join("; ")}`);
});

test("clean up", async () => {
  await run("umount", noexecDir).catch(() => {});
  await Deno.remove(fixtures, { recursive: true });
  await pki.remove();
});
