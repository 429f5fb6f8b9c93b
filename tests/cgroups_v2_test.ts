/**
 * The cgroup behaviour tests (tests/cgroups_test.ts) on cgroup v2, plus the v2-only move of the
 * worker into a leaf cgroup. Ignored unless /sys/fs/cgroup is cgroup2; on the cgroup v1 machines
 * here, run them under User-mode Linux with a scratch disk for the IO test:
 *
 *   truncate -s 64M /tmp/uml-disk.img
 *   UML_DISK=/tmp/uml-disk.img /work/shared/cgroup-v2/run-in-uml.sh \
 *     'deno test -A tests/cgroups_v2_test.ts'
 *
 * The disk appears as /dev/ubda (98:0); without it the IO test is skipped (a failure on CI).
 */
import assert from "node:assert/strict";
import { detectCgroups } from "../worker/cgroups/detect.ts";
import { cgroupSuite, hostCgroupVersion } from "./cgroups_test.ts";
import { unless, withSkip } from "./helpers/skip.ts";
import { jobworker } from "../proto/service.ts";
import { instanceName } from "../worker/cgroups/paths.ts";
import { ApiCalls } from "./helpers/api_calls.ts";
import { heldFds, jobProcesses, waitFor, waitingInits } from "./helpers/host_procs.ts";
import { linesWithMessage } from "./helpers/log_lines.ts";
import { Shim } from "../init/shim/ffi.ts";
import type { InitSpec } from "../init/spec.ts";
import { type DirectProcess, spawnDirect } from "../worker/runtime/direct_start.ts";
import { makePki } from "./helpers/pki.ts";
import { logCount, retrying } from "./helpers/reload.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { rootInitSpec } from "./helpers/init_specs.ts";

const S = jobworker.JobStatus;

const UML_DISK = "/dev/ubda";
const hasDisk = (() => {
  try {
    return Deno.statSync(UML_DISK).isBlockDevice === true;
  } catch {
    return false;
  }
})();

cgroupSuite(2, {
  ioDevices: hasDisk ? ["98:0"] : undefined,
  ioTarget: hasDisk ? UML_DISK : undefined,
  noIoTargetReason: `no scratch disk at ${UML_DISK} (tests/run_cgroup_v2.sh attaches one)`,
  pidsLimit: 32,
  pidsTries: 48,
});

const ownCgroup = (): string =>
  /^0::(.*)$/m.exec(Deno.readTextFileSync("/proc/self/cgroup"))?.[1] ?? "?";

/** Moves this process back to the root cgroup and removes a test's base (and the worker leaf). */
function leaveBase(baseDir: string): void {
  Deno.writeTextFileSync("/sys/fs/cgroup/cgroup.procs", String(Deno.pid));
  for (const dir of [`${baseDir}/jobworker-worker`, baseDir]) {
    try {
      Deno.removeSync(dir);
    } catch {
      // already gone
    }
  }
}

Deno.test(withSkip(
  {
    name: "cgroup v2: a base holding the worker itself makes the worker move into a leaf",
    fn: async () => {
      const base = `/jwtest-${Deno.pid}`;
      const baseDir = `/sys/fs/cgroup${base}`;
      Deno.mkdirSync(baseDir);
      try {
        Deno.writeTextFileSync(`${baseDir}/cgroup.procs`, String(Deno.pid));
        assert.equal(ownCgroup(), base);
        const m = detectCgroups({ instance: "leaf", base });
        const cg = await m.create("job", { cpuPercent: 50, memoryMiB: 64, ioBps: 0, pids: 16 });
        assert.equal(ownCgroup(), `${base}/jobworker-worker`);
        const enabled = Deno.readTextFileSync(`${baseDir}/cgroup.subtree_control`).trim().split(
          " ",
        );
        assert.ok(["cpu", "memory", "pids"].every((c) => enabled.includes(c)), enabled.join(" "));
        assert.deepEqual(cg.procsFiles, [`${baseDir}/jobworker-leaf/job/cgroup.procs`]);
        assert.equal(Deno.readTextFileSync(`${baseDir}/jobworker-leaf/job/pids.max`).trim(), "16");
        await cg.remove();
        Deno.removeSync(`${baseDir}/jobworker-leaf`);
      } finally {
        leaveBase(baseDir);
      }
    },
  }, // Only from the root cgroup (as under UML): the test moves this process into a new base.
  unless(hostCgroupVersion() === 2, "needs a cgroup v2 host", { allowedOnCI: true }) ??
    unless(Deno.uid() === 0, "needs root") ??
    unless(ownCgroup() === "/", `needs to run in the root cgroup, not ${ownCgroup()}`),
));

Deno.test(withSkip(
  {
    name:
      "cgroup v2: prepare() (before the init pool fills) moves the worker into its leaf at once",
    fn: () => {
      const base = `/jwtest-prep-${Deno.pid}`;
      const baseDir = `/sys/fs/cgroup${base}`;
      Deno.mkdirSync(baseDir);
      try {
        Deno.writeTextFileSync(`${baseDir}/cgroup.procs`, String(Deno.pid));
        const m = detectCgroups({ instance: "prep", base });
        m.prepare!();
        // Processes the worker starts from now on (waiting inits) are born in the leaf, so the
        // base can take controllers for job cgroups.
        assert.equal(ownCgroup(), `${base}/jobworker-worker`);
        const enabled = Deno.readTextFileSync(`${baseDir}/cgroup.subtree_control`).trim();
        assert.match(enabled, /\bpids\b/);
      } finally {
        leaveBase(baseDir);
      }
    },
  },
  unless(hostCgroupVersion() === 2, "needs a cgroup v2 host", { allowedOnCI: true }) ??
    unless(Deno.uid() === 0, "needs root") ??
    unless(ownCgroup() === "/", `needs to run in the root cgroup, not ${ownCgroup()}`),
));

/** The cgroup v2 path of `pid` ("?" when it is gone). */
const cgroupOf = (pid: number): string => {
  try {
    return /^0::(.*)$/m.exec(Deno.readTextFileSync(`/proc/${pid}/cgroup`))?.[1] ?? "?";
  } catch {
    return "?";
  }
};

Deno.test(withSkip(
  {
    name: "cgroup v2: a worker started in a delegated cgroup (systemd Delegate=yes): pool, " +
      "jobs, reload and stop stay inside it",
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      // As systemd starts the unit: the worker's first process sits in the service's cgroup,
      // which has every controller available and no other process.
      const base = `/jwsvc-${Deno.pid}`;
      const baseDir = `/sys/fs/cgroup${base}`;
      const leaf = `${base}/jobworker-worker`;
      Deno.mkdirSync(baseDir);
      const pki = await makePki();
      let worker: WorkerProcess | undefined;
      let api: ApiCalls | undefined;
      try {
        worker = await WorkerProcess.start({
          certDir: pki.dir,
          env: { JOB_WORKER_INIT_POOL: "2" },
          wrapper: ["sh", "-c", `echo $$ > ${baseDir}/cgroup.procs && exec "$@"`, "sh"],
        });
        const w = worker;
        api = new ApiCalls(pki.dir, w.address);
        const pid = w.process.pid;
        const jobsPath = `${base}/jobworker-${await instanceName(w.stateDir)}`;
        /** The worker and its waiting inits sit in the leaf; jobs in their own cgroups. */
        const checkPlaces = async () => {
          assert.equal(cgroupOf(pid), leaf, "the worker is in its leaf");
          const inits = await waitFor("the pool to fill", () => {
            const found = waitingInits(pid);
            return found.length === 2 ? found : null;
          }, 60_000);
          for (const init of inits) assert.equal(cgroupOf(init.pid), leaf, "a waiting init");
          const job = await api!.createJob({
            command: "sleep",
            args: ["600"],
            maxPids: 8,
            maxMemory: 64,
          });
          const [proc] = await waitFor("the job's process", () => {
            const found = jobProcesses(job.id);
            return found.length > 0 ? found : null;
          });
          assert.equal(cgroupOf(proc!.pid), `${jobsPath}/${job.id}`);
          const dir = `/sys/fs/cgroup${jobsPath}/${job.id}`;
          assert.equal(Deno.readTextFileSync(`${dir}/pids.max`).trim(), "8");
          assert.equal(Deno.readTextFileSync(`${dir}/memory.max`).trim(), String(64 << 20));
          return job.id;
        };
        const first = await checkPlaces();

        // Reload in place: the same process, still in the leaf; the job kept; new jobs limited.
        const listening = () => logCount(w, /msg=listening /);
        const before = listening();
        w.process.kill("SIGHUP");
        await waitFor("the worker to listen again", () => listening() > before, 60_000);
        assert.equal((await retrying(() => api!.getJob(first))).status, S.RUNNING);
        const second = await checkPlaces();
        for (const id of [first, second]) await api.stopJob(id);

        api.close();
        api = undefined;
        assert.equal((await w.stop()).code, 0);
        worker = undefined;
        // Nothing of the worker is left in its cgroup but the (empty) leaf it ran in.
        const left = [...Deno.readDirSync(baseDir)].filter((e) => e.isDirectory).map((e) => e.name);
        assert.deepEqual(left, ["jobworker-worker"]);
        assert.equal(Deno.readTextFileSync(`/sys/fs/cgroup${leaf}/cgroup.procs`).trim(), "");
      } finally {
        api?.close();
        await worker?.stop("SIGKILL");
        await pki.remove();
        leaveBase(baseDir);
      }
    },
  },
  unless(hostCgroupVersion() === 2, "needs a cgroup v2 host", { allowedOnCI: true }) ??
    unless(Deno.uid() === 0, "needs root") ??
    unless(ownCgroup() === "/", `needs to run in the root cgroup, not ${ownCgroup()}`),
));

// ---------------------------------------------------------------------------------------------
// A direct start is born in the job's cgroup (clone3 CLONE_INTO_CGROUP), or joins it as before.

const SHIM_LIB = new URL("../build/libjwshim.so", import.meta.url).pathname;
const STARTER = new URL("../build/jwstart", import.meta.url).pathname;

/** A direct start's spec for `command` as root with no profile, joining `procsFiles`. */
const bareSpec = (command: string, args: string[], procsFiles: string[]): InitSpec =>
  rootInitSpec({ jobId: "jw-clone-into", command, args, cgroupProcsFiles: procsFiles });

/**
 * Starts `spec` through spawnDirect (with `cgroupFd`, closed here afterwards, as the launcher
 * does), waits for its end; how it started, its report and its stdout. Nothing is left open.
 */
async function startDirect(shim: Shim, spec: InitSpec, cgroupFd: number) {
  let child: DirectProcess;
  try {
    child = spawnDirect(shim, STARTER, spec, cgroupFd);
  } finally {
    if (cgroupFd >= 0) shim.close(cgroupFd);
  }
  try {
    const failure = await child.started;
    const ended = await waitFor(`pid ${child.pid} to end`, () => shim.waitpid(child.pid), 10_000);
    const stdout = new TextDecoder().decode(shim.readAll(child.outR, 65536));
    return { ...child, failure, ended, stdout };
  } finally {
    for (const fd of [child.pidfd, child.outR, child.errR]) shim.close(fd);
  }
}

Deno.test(withSkip(
  {
    name: "cgroup v2: a direct start is cloned into the job's cgroup, with no join in its plan; " +
      "a refused clone falls back to the join, and a cgroup that takes no process fails as the " +
      "join always did, leaving nothing open",
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const shim = new Shim(SHIM_LIB);
      const base = `/jwtest-clone-${Deno.pid}`;
      const baseDir = `/sys/fs/cgroup${base}`;
      const made: string[] = [];
      const mkdir = (name: string): string => {
        const dir = `${baseDir}/${name}`;
        Deno.mkdirSync(dir);
        made.unshift(dir);
        return dir;
      };
      Deno.mkdirSync(baseDir);
      made.push(baseDir);
      const fdsBefore = [...Deno.readDirSync("/proc/self/fd")].length;
      try {
        const job = mkdir("job");
        const cat = (files: string[]) => bareSpec("cat", ["/proc/self/cgroup"], files);

        // Born there: a join of a file that does not exist would fail, yet the start succeeds.
        const placed = await startDirect(
          shim,
          cat(["/nonexistent/cgroup.procs"]),
          shim.openPath(job),
        );
        assert.equal(placed.failure, null, JSON.stringify(placed.failure));
        assert.equal(placed.intoCgroup, true);
        assert.equal(placed.refused, undefined);
        assert.equal(placed.stdout, `0::${base}/job\n`);

        // Refused (not a cgroup: EBADF): started again as without, jwstart joining the job's.
        const notCgroup = await startDirect(shim, cat([`${job}/cgroup.procs`]), shim.openPath("/"));
        assert.equal(notCgroup.failure, null, JSON.stringify(notCgroup.failure));
        assert.equal(notCgroup.intoCgroup, false);
        assert.equal(notCgroup.refused, 9, "EBADF");
        assert.equal(notCgroup.stdout, `0::${base}/job\n`);

        // A cgroup removed after it was opened: refused, then the join's own error, as today.
        const gone = mkdir("gone");
        const goneFd = shim.openPath(gone);
        Deno.removeSync(gone);
        const removed = await startDirect(shim, cat([`${gone}/cgroup.procs`]), goneFd);
        assert.equal(removed.intoCgroup, false);
        assert.ok(removed.refused !== undefined, "the kernel refuses a removed cgroup");
        assert.equal(removed.failure?.stage, "cgroup", JSON.stringify(removed.failure));
        assert.match(removed.failure?.message ?? "", /^joining the job's cgroup .*ENOENT/);
        assert.deepEqual(removed.ended, { exitCode: 127, signal: null });

        // A cgroup below a threaded one is "domain invalid": it takes no process at all.
        const threaded = mkdir("threaded");
        Deno.writeTextFileSync(`${threaded}/cgroup.type`, "threaded");
        const invalid = mkdir("threaded/invalid");
        assert.equal(Deno.readTextFileSync(`${invalid}/cgroup.type`).trim(), "domain invalid");
        const refusing = await startDirect(
          shim,
          cat([`${invalid}/cgroup.procs`]),
          shim.openPath(invalid),
        );
        assert.equal(refusing.intoCgroup, false);
        assert.equal(refusing.refused, 95, "EOPNOTSUPP");
        assert.equal(refusing.failure?.stage, "cgroup", JSON.stringify(refusing.failure));
        assert.match(refusing.failure?.message ?? "", /^joining the job's cgroup .*EOPNOTSUPP/);

        assert.equal([...Deno.readDirSync("/proc/self/fd")].length, fdsBefore, "no fd left");
      } finally {
        for (const dir of made) {
          try {
            Deno.removeSync(dir);
          } catch { /* not made */ }
        }
      }
    },
  },
  unless(hostCgroupVersion() === 2, "needs a cgroup v2 host", { allowedOnCI: true }) ??
    unless(Deno.uid() === 0, "needs root"),
));

Deno.test(withSkip(
  {
    name: "cgroup v2: a worker's direct start lands in the job's cgroup by its clone (the 'job " +
      "started' line says intoCgroup) and keeps no descriptor of it",
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const pki = await makePki();
      let worker: WorkerProcess | undefined;
      let api: ApiCalls | undefined;
      try {
        worker = await WorkerProcess.start({ certDir: pki.dir });
        const w = worker;
        api = new ApiCalls(pki.dir, w.address);
        const job = await api.createJob({ command: "sleep", args: ["600"], maxPids: 8 });
        const [proc] = await waitFor("the job's process", () => {
          const found = jobProcesses(job.id);
          return found.length > 0 ? found : null;
        });
        const jobsPath = `/jobworker-${await instanceName(w.stateDir)}`;
        const dir = cgroupOf(proc!.pid);
        assert.ok(dir.endsWith(`${jobsPath}/${job.id}`), dir);
        const procs = Deno.readTextFileSync(`/sys/fs/cgroup${dir}/cgroup.procs`).trim().split("\n");
        assert.ok(procs.includes(String(proc!.pid)), `${proc!.pid} in ${procs.join(" ")}`);
        const started = await waitFor(
          "the 'job started' line",
          () => linesWithMessage(w.logs, "job started").find((l) => l.fields.id === job.id) ?? null,
        );
        assert.equal(String(started.fields.direct), "true");
        assert.equal(String(started.fields.intoCgroup), "true");
        const held = heldFds(w.process.pid).filter((fd) => fd.target.startsWith("/sys/fs/cgroup"));
        assert.deepEqual(held, [], "the worker keeps no descriptor of a cgroup");
        await api.stopJob(job.id);
      } finally {
        api?.close();
        await worker?.stop();
        await pki.remove();
      }
    },
  },
  unless(hostCgroupVersion() === 2, "needs a cgroup v2 host", { allowedOnCI: true }) ??
    unless(Deno.uid() === 0, "needs root"),
));
