/**
 * Cgroup layer tests against the real kernel (no mocks): real processes join the job cgroups the
 * way init does (`echo 0 > cgroup.procs`, then exec) and the kernel enforces the limits.
 *
 * `cgroupSuite(version)` holds the behaviour tests for both cgroup versions; this file runs it for
 * v1 plus the detection unit tests (fake /proc/self and /sys trees); tests/cgroups_v2_test.ts runs
 * it for v2 (under User-mode Linux here). Each suite skips itself, saying so, unless the machine
 * runs that version. Needs root.
 */
import assert from "node:assert/strict";
import { detectCgroups } from "../worker/cgroups/detect.ts";
import { type DetectedCgroupManager, type JobCgroup, LimitError } from "../worker/cgroups/types.ts";
import { type Skip, unless, withSkip } from "./helpers/skip.ts";
import { Shim } from "../init/shim/ffi.ts";
import { shimFileBatch } from "../worker/cgroups/file_batch.ts";
import { exists } from "./helpers/host_procs.ts";

const MiB = 1024 * 1024;
const NO_LIMITS = { cpuPercent: 0, memoryMiB: 0, ioBps: 0, pids: 0 };

/** The cgroup version this machine runs: 2 when cgroup2 is mounted on /sys/fs/cgroup. */
export function hostCgroupVersion(): 1 | 2 {
  const mountInfo = Deno.readTextFileSync("/proc/self/mountinfo");
  return /^\S+ \S+ \S+ \S+ \/sys\/fs\/cgroup \S+.* - cgroup2 /m.test(mountInfo) ? 2 : 1;
}

function dirsOf(cgroup: JobCgroup): string[] {
  return cgroup.procsFiles.map((file) => file.slice(0, file.lastIndexOf("/")));
}

/** The content of the job's control file `name` (in whichever v1 hierarchy has it). */
function control(cgroup: JobCgroup, name: string): string | undefined {
  const dir = dirsOf(cgroup).find((d) => exists(`${d}/${name}`));
  return dir === undefined ? undefined : Deno.readTextFileSync(`${dir}/${name}`).trim();
}

/** The whole disk ("major:minor") holding `path`, computed independently of the code under test. */
function diskOf(path: string): string {
  const dev = BigInt(Deno.statSync(path).dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const real = Deno.realPathSync(`/sys/dev/block/${major}:${minor}`);
  return exists(`${real}/partition`)
    ? Deno.readTextFileSync(`${real}/../dev`).trim()
    : `${major}:${minor}`;
}

/** Starts `sh -c` that joins the job's cgroup(s) like init does, then execs `command`. */
function startIn(cgroup: JobCgroup, command: string): Deno.ChildProcess {
  const joins = cgroup.procsFiles.map((file) => `echo 0 > ${file}`).join(" && ");
  return new Deno.Command("sh", {
    args: ["-c", `${joins} && exec ${command}`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function waitFor(what: string, condition: () => boolean, ms = 15_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const PYTHON = exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

/** What differs between the machines a suite runs on. */
export interface SuiteConfig {
  /** IO devices to configure (default: detected). */
  ioDevices?: string[];
  /** Where dd writes 4 MiB with O_DIRECT for the IO test; undefined skips it (saying why). */
  ioTarget?: string;
  /** Why there is no `ioTarget` (shown in the skipped test's name). */
  noIoTargetReason?: string;
  /** maxPids for the fork test, and how many `sleep`s the test tries to start. */
  pidsLimit: number;
  pidsTries: number;
}

/** Registers the behaviour tests for cgroup `version`; skipped (saying why) on a machine without it. */
export function cgroupSuite(version: 1 | 2, config: SuiteConfig): void {
  const host = hostCgroupVersion();
  // A host runs one cgroup version; the other is tested elsewhere (tests/run_all.sh), so that
  // skip is expected even on CI. Not being root is not.
  const suiteSkip = unless(
    host === version,
    `needs a cgroup v${version} host, this one is v${host}`,
    { allowedOnCI: true },
  ) ?? unless(Deno.uid() === 0, "needs root");
  const instance = `test${version}-${Deno.pid}`;
  // Files go through the shim's batch, as in the worker (tests/file_batch_test.ts holds Deno's
  // one-by-one calls to the same results).
  const files = shimFileBatch(new Shim(new URL("../build/libjwshim.so", import.meta.url).pathname));
  const manager = (): DetectedCgroupManager =>
    detectCgroups({ instance, ioDevices: config.ioDevices, files });
  const test = (name: string, fn: () => Promise<void> | void, skip?: Skip) =>
    Deno.test(withSkip({ name: `cgroup v${version}: ${name}`, fn }, suiteSkip ?? skip));

  test("create writes every limit into the cgroup files; remove leaves nothing", async () => {
    const m = manager();
    assert.equal(m.version, version);
    assert.ok(m.ioDevices.length > 0, `no IO device: ${m.describe()}`);
    const device = m.ioDevices[0];
    const cg = await m.create("limits", { cpuPercent: 150, memoryMiB: 64, ioBps: MiB, pids: 32 });
    if (version === 2) {
      assert.equal(cg.procsFiles.length, 1);
      assert.equal(control(cg, "cpu.max"), "150000 100000");
      assert.equal(control(cg, "memory.max"), String(64 * MiB));
      const swap = control(cg, "memory.swap.max");
      if (swap !== undefined) assert.equal(swap, "0");
      assert.match(control(cg, "io.max") ?? "", new RegExp(`^${device} rbps=${MiB} wbps=${MiB}`));
    } else {
      assert.ok(cg.procsFiles.length >= 5, cg.procsFiles.join(" "));
      assert.equal(control(cg, "cpu.cfs_period_us"), "100000");
      assert.equal(control(cg, "cpu.cfs_quota_us"), "150000");
      assert.equal(control(cg, "memory.limit_in_bytes"), String(64 * MiB));
      const memsw = control(cg, "memory.memsw.limit_in_bytes");
      if (memsw !== undefined) assert.equal(memsw, String(64 * MiB));
      assert.equal(control(cg, "blkio.throttle.read_bps_device"), `${device} ${MiB}`);
      assert.equal(control(cg, "blkio.throttle.write_bps_device"), `${device} ${MiB}`);
    }
    assert.equal(control(cg, "pids.max"), "32");
    const dirs = dirsOf(cg);
    await cg.remove();
    assert.deepEqual(dirs.filter(exists), []);
  });

  test("fail closed: unusable limits throw LimitError and leave no directory", async () => {
    const m = manager();
    // 0.5% is a 500 us quota, below the kernel's 1 ms minimum; the memory limit is fine.
    await assert.rejects(
      () => m.create("badcpu", { ...NO_LIMITS, memoryMiB: 64, cpuPercent: 0.5 }),
      (e) => {
        assert.ok(e instanceof LimitError);
        assert.equal(e.limit, "maxCPU");
        assert.match(
          e.message,
          /^Cannot apply maxCPU: writing "500( 100000)?" to \/\S+cpu\.\S+ failed: EINVAL/,
        );
        return true;
      },
    );
    // 1:3 is /dev/null, not a block device; CPU and memory are written before IO, then undone.
    const io = detectCgroups({ instance, ioDevices: ["1:3"], files });
    const all = { cpuPercent: 50, memoryMiB: 64, ioBps: MiB, pids: 0 };
    await assert.rejects(() => io.create("badio", all), (e) => {
      assert.ok(e instanceof LimitError);
      assert.match(e.message, /^Cannot apply maxIOBPS: writing "1:3 .*" to \/\S+ failed: E[A-Z]+/);
      return true;
    });
    await assert.rejects(
      () => m.create("neg", { ...NO_LIMITS, pids: -1 }),
      /maxPids: invalid value -1/,
    );
    for (const dir of m.parentDirs) {
      for (const name of ["badcpu", "badio", "neg"]) assert.ok(!exists(`${dir}/${name}`));
    }
  });

  test("a missing JOB_WORKER_CGROUP_BASE fails create(), not detection", async () => {
    const m = detectCgroups({ instance, base: `/jobworker-missing-${Deno.pid}`, files });
    assert.match(m.describe(), /does not exist/);
    await assert.rejects(
      () => m.create("x", NO_LIMITS),
      new RegExp(`^LimitError: cgroup base /jobworker-missing-${Deno.pid} does not exist`),
    );
  });

  test("memory: OOM-killed above maxMemory, plausible peak below it", async () => {
    const m = manager();
    const big = await m.create("oom", { ...NO_LIMITS, memoryMiB: 32 });
    const small = await m.create("fits", { ...NO_LIMITS, memoryMiB: 64 });
    const [bigStatus, smallStatus] = await Promise.all([
      startIn(big, `${PYTHON} -S -c 'b=bytearray(100*1024*1024)'`).status,
      startIn(small, `${PYTHON} -S -c 'b=bytearray(16*1024*1024)'`).status,
    ]);
    assert.equal(bigStatus.signal, "SIGKILL");
    assert.ok(big.oomKilled(), "oomKilled() after the OOM kill");
    assert.ok(smallStatus.success);
    assert.ok(!small.oomKilled());
    const usage = small.usage(); // after the process exited
    assert.ok(usage.memoryPeakBytes >= 16 * MiB, `peak ${usage.memoryPeakBytes}`);
    assert.ok(usage.memoryPeakBytes <= 64 * MiB, `peak ${usage.memoryPeakBytes}`);
    assert.ok(big.usage().memoryPeakBytes <= 32 * MiB);
    console.log(
      `peak ${(usage.memoryPeakBytes / MiB).toFixed(1)} MiB (16 MiB job), ` +
        `${(big.usage().memoryPeakBytes / MiB).toFixed(1)} MiB (OOM job)`,
    );
    await big.remove();
    await small.remove();
  });

  test("cpu: a busy loop at 20% for 3 s gets about 0.6 s and is throttled", async () => {
    const cg = await manager().create("cpu", { ...NO_LIMITS, cpuPercent: 20 });
    await startIn(cg, `timeout 3 sh -c 'while :; do :; done'`).status;
    const usage = cg.usage();
    console.log(
      `cpu ${usage.cpuUsec} us, throttled ${usage.cpuThrottledCount} times ` +
        `(${usage.cpuThrottledUsec} us)`,
    );
    assert.ok(usage.cpuUsec > 0);
    assert.ok(usage.cpuUsec <= 900_000, `used ${usage.cpuUsec} us`);
    assert.ok((usage.cpuThrottledCount ?? 0) > 0);
    await cg.remove();
  });

  test("io: 4 MiB O_DIRECT at 1 MiB/s takes at least 3 s", async () => {
    const target = config.ioTarget ?? "";
    const m = manager();
    if (version === 1) {
      const disk = diskOf(target.slice(0, target.lastIndexOf("/")));
      assert.ok(m.ioDevices.includes(disk), `${disk} not in ${m.ioDevices}`);
    }
    const cg = await m.create("io", { ...NO_LIMITS, ioBps: MiB });
    const start = performance.now();
    const status = await startIn(
      cg,
      `dd if=/dev/zero of=${target} bs=1M count=4 oflag=direct status=none`,
    ).status;
    const seconds = (performance.now() - start) / 1000;
    const usage = cg.usage();
    console.log(`dd took ${seconds.toFixed(2)} s, ${usage.ioWriteBytes} bytes written`);
    assert.ok(status.success);
    assert.ok(seconds >= 3, `took ${seconds} s`);
    assert.ok(usage.ioWriteBytes >= 4 * MiB, `ioWriteBytes ${usage.ioWriteBytes}`);
    await cg.remove();
  }, unless(config.ioTarget !== undefined, config.noIoTargetReason ?? "no IO target"));

  test(`pids: a fork loop stays within maxPids ${config.pidsLimit}; killAll ends it`, async () => {
    const cg = await manager().create("pids", { ...NO_LIMITS, pids: config.pidsLimit });
    const child = startIn(
      cg,
      `sh -c 'i=0; while [ $i -lt ${config.pidsTries} ]; do sleep 300 & i=$((i+1)); done; wait'`,
    );
    const limitHit = () => /^max [1-9]/m.test(control(cg, "pids.events") ?? "");
    await waitFor("the pids limit to be hit", limitHit, 60_000);
    const usage = cg.usage();
    const pids = cg.pids();
    console.log(`pids.current ${usage.pids}, ${pids.length} processes at the limit`);
    assert.ok(usage.pids <= config.pidsLimit && pids.length <= config.pidsLimit);
    assert.ok(pids.length >= config.pidsLimit / 2, `only ${pids.length} processes`);
    const start = performance.now();
    await cg.killAll();
    await waitFor("the cgroup to empty", () => cg.pids().length === 0, 5000);
    console.log(`killAll emptied ${pids.length} processes in ${performance.now() - start} ms`);
    const status = await child.status;
    assert.ok(!status.success);
    await cg.remove();
  });

  test("signalAll signals every process and counts them", async () => {
    const cg = await manager().create("signal", NO_LIMITS);
    const child = startIn(cg, `sh -c 'sleep 300 & sleep 300 & wait'`);
    await waitFor("three processes", () => cg.pids().length === 3);
    assert.equal(cg.signalAll("SIGTERM"), 3);
    assert.equal((await child.status).signal, "SIGTERM");
    await waitFor("the cgroup to empty", () => cg.pids().length === 0, 5000);
    await cg.remove();
  });

  test("isEmpty counts a process in a cgroup below the job's; remove takes that cgroup too", async () => {
    const cg = await manager().create("inner", NO_LIMITS);
    const inner = dirsOf(cg).map((dir) => `${dir}/below`);
    for (const dir of inner) Deno.mkdirSync(dir);
    assert.ok(cg.isEmpty());
    const child = startIn(
      { ...cg, procsFiles: inner.map((dir) => `${dir}/cgroup.procs`) },
      "sleep 300",
    );
    await waitFor("the process to join", () => cg.pids().length === 1);
    assert.ok(!cg.isEmpty(), "a process below the job's cgroup was not counted");
    child.kill("SIGKILL");
    await child.status;
    await waitFor("the cgroup to empty", () => cg.isEmpty(), 5000);
    await cg.remove();
    for (const dir of [...inner, ...dirsOf(cg)]) assert.ok(!exists(dir), `${dir} is left`);
  });

  test("final({ thenRemove }) reads the usage, then removes the cgroup in the same batch", async () => {
    let batches = 0;
    const counted = {
      run: (...args: Parameters<typeof files.run>) => (batches++, files.run(...args)),
    };
    const m = detectCgroups({ instance, ioDevices: config.ioDevices, files: counted });
    const cg = await m.create("final", NO_LIMITS);
    const dirs = dirsOf(cg);
    await startIn(cg, `sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done'`).status;
    batches = 0;
    const final = await cg.final({ thenRemove: true });
    assert.ok(final.usage.cpuUsec > 0, `cpuUsec ${final.usage.cpuUsec}: read after the removal?`);
    assert.deepEqual(dirs.filter(exists), [], "final({ thenRemove }) left directories");
    await cg.remove(); // nothing left to do: no batch
    assert.equal(batches, 1);
    assert.equal(cg.usage().cpuUsec, final.usage.cpuUsec);

    // A cgroup still busy at the read is left to remove(), which waits for it as before.
    const busy = await m.create("final-busy", NO_LIMITS);
    const child = startIn(busy, "sleep 300");
    await waitFor(
      "the process to join every hierarchy",
      () => busy.procsFiles.every((file) => Deno.readTextFileSync(file).trim() !== ""),
    );
    await busy.final({ thenRemove: true });
    assert.ok(dirsOf(busy).some(exists), "a busy cgroup went");
    child.kill("SIGKILL");
    await child.status;
    await waitFor("the cgroup to empty", () => busy.isEmpty(), 5000);
    await busy.remove();
    assert.deepEqual(dirsOf(busy).filter(exists), []);
  });

  test("create makes the instance's parent cgroups again after they were removed", async () => {
    const m = manager();
    await (await m.create("before", NO_LIMITS)).remove();
    for (const dir of m.parentDirs) Deno.removeSync(dir);
    const cg = await m.create("after", NO_LIMITS);
    assert.ok(dirsOf(cg).every(exists));
    await cg.remove();
  });

  test("cleanupStale kills and removes this instance's leftovers only", async () => {
    const old = manager();
    const busy = await old.create("stale1", NO_LIMITS);
    await old.create("stale2", { ...NO_LIMITS, pids: 10 });
    const otherInstance = detectCgroups({ instance: `${instance}-other`, files });
    const other = await otherInstance.create("keep", NO_LIMITS);
    try {
      const child = startIn(busy, "sleep 300");
      await waitFor("the stale job to run", () => busy.pids().length === 1);
      const fresh = manager();
      assert.equal(await fresh.cleanupStale(), 2);
      assert.equal((await child.status).signal, "SIGKILL");
      for (const dir of fresh.parentDirs) {
        assert.ok(!exists(`${dir}/stale1`) && !exists(`${dir}/stale2`));
      }
      assert.ok(dirsOf(other).every(exists), "another instance's cgroup was touched");
    } finally {
      await other.remove();
      for (const dir of otherInstance.parentDirs) Deno.removeSync(dir);
    }
  });

  test("no job directory is left behind", async () => {
    const m = manager();
    const left = m.parentDirs.flatMap((dir) =>
      [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => `${dir}/${e.name}`)
    );
    await m.cleanupStale();
    for (const dir of m.parentDirs) Deno.removeSync(dir);
    assert.deepEqual(left, []);
  });
}

// ---- detection against fake /proc/self and /sys trees ----

function fakeTree(mountInfo: string[], procCgroup: string[]): { proc: string; sys: string } {
  const root = Deno.makeTempDirSync({ prefix: "cgroup-detect-" });
  const proc = `${root}/proc/self`;
  Deno.mkdirSync(proc, { recursive: true });
  Deno.writeTextFileSync(`${proc}/mountinfo`, mountInfo.join("\n") + "\n");
  Deno.writeTextFileSync(`${proc}/cgroup`, procCgroup.join("\n") + "\n");
  return { proc, sys: `${root}/sys` };
}

/** A fake /sys/dev/block entry: `disk` with `partition` under it (symlinked like sysfs). */
function fakeBlock(sys: string, disk: string, diskDev: string, part?: string, partDev?: string) {
  const diskDir = `${sys}/devices/pci0000:00/block/${disk}`;
  Deno.mkdirSync(diskDir, { recursive: true });
  Deno.mkdirSync(`${sys}/dev/block`, { recursive: true });
  Deno.writeTextFileSync(`${diskDir}/dev`, `${diskDev}\n`);
  Deno.symlinkSync(`../../devices/pci0000:00/block/${disk}`, `${sys}/dev/block/${diskDev}`);
  if (part && partDev) {
    Deno.mkdirSync(`${diskDir}/${part}`);
    Deno.writeTextFileSync(`${diskDir}/${part}/dev`, `${partDev}\n`);
    Deno.writeTextFileSync(`${diskDir}/${part}/partition`, "1\n");
    Deno.symlinkSync(
      `../../devices/pci0000:00/block/${disk}/${part}`,
      `${sys}/dev/block/${partDev}`,
    );
  }
}

const FS_MOUNTS = [
  "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
  "23 22 259:2 / /data rw,relatime - xfs /dev/nvme0n1p2 rw",
  "24 22 8:17 / /mnt/ro ro,relatime - ext4 /dev/sdb1 ro",
  "25 22 0:40 / /tmp rw - tmpfs tmpfs rw",
  "26 22 0:21 / /proc rw - proc proc rw",
];

function detectionTests(): void {
  Deno.test("cgroup detection: v1 hybrid layout with cpu,cpuacct co-mounted", async () => {
    const { proc, sys } = fakeTree([
      ...FS_MOUNTS,
      "30 22 0:22 / /sys rw - sysfs sysfs rw",
      "31 30 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755",
      "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
      "33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
      "34 31 0:31 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio",
      "35 31 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids",
      "36 31 0:33 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer",
      "37 31 0:34 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
      "38 31 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
    ], [
      "6:name=systemd:/system.slice/jw.service",
      "5:freezer:/",
      "4:pids:/system.slice/jw.service",
      "3:blkio:/system.slice",
      "2:memory:/system.slice/jw.service",
      "1:cpu,cpuacct:/system.slice",
      "0::/system.slice/jw.service",
    ]);
    fakeBlock(sys, "sda", "8:0", "sda1", "8:1");
    fakeBlock(sys, "sdb", "8:16", "sdb1", "8:17");
    fakeBlock(sys, "nvme0n1", "259:0", "nvme0n1p2", "259:2");
    const cg = `${sys}/fs/cgroup`;
    const m = detectCgroups({ instance: "t", procSelf: proc, sysRoot: sys });
    assert.equal(m.version, 1);
    assert.deepEqual(m.ioDevices, ["8:0", "259:0"]); // whole disks of rw mounts; not ro, not 0:x
    assert.deepEqual([...m.parentDirs].sort(), [
      `${cg}/blkio/system.slice/jobworker-t`,
      `${cg}/cpu,cpuacct/system.slice/jobworker-t`,
      `${cg}/freezer/jobworker-t`,
      `${cg}/memory/system.slice/jw.service/jobworker-t`,
      `${cg}/pids/system.slice/jw.service/jobworker-t`,
    ]);
    // Missing base directories: detection works, create() says what is wrong.
    assert.match(
      m.describe(),
      /^cgroup v1: .*IO devices: 8:0,259:0; cgroup base .* does not exist/,
    );
    await assert.rejects(
      () => m.create("j1", NO_LIMITS),
      /LimitError: cgroup base .* does not exist/,
    );

    // With the base directories present, create() lays the job out in each hierarchy.
    for (const dir of m.parentDirs) {
      Deno.mkdirSync(dir.replace(/\/jobworker-t$/, ""), { recursive: true });
    }
    const job = await m.create("j1", NO_LIMITS);
    assert.deepEqual(
      [...job.procsFiles].sort(),
      [...m.parentDirs].sort().map((d) => `${d}/j1/cgroup.procs`),
    );
    await assert.rejects(() => m.create("../x", NO_LIMITS), TypeError);
    await job.remove();
    assert.equal(await m.cleanupStale(), 0);

    // JOB_WORKER_CGROUP_BASE, relative to the hierarchy root or with a mount point prefix.
    for (
      const base of ["/jw", "jw/", "/sys/fs/cgroup/memory/jw", "/sys/fs/cgroup/cpu,cpuacct/jw"]
    ) {
      const b = detectCgroups({ instance: "t", base, procSelf: proc, sysRoot: sys });
      assert.ok(b.parentDirs.includes(`${cg}/memory/jw/jobworker-t`), `${base}: ${b.parentDirs}`);
      assert.ok(b.parentDirs.includes(`${cg}/cpu,cpuacct/jw/jobworker-t`));
    }
    const configured = detectCgroups({
      instance: "t",
      ioDevices: ["8:16"],
      procSelf: proc,
      sysRoot: sys,
    });
    assert.deepEqual(configured.ioDevices, ["8:16"]);
    Deno.removeSync(proc.replace(/\/proc\/self$/, ""), { recursive: true });
  });

  Deno.test("cgroup detection: v1 with cpu and cpuacct mounted separately", async () => {
    const { proc, sys } = fakeTree([
      "22 1 254:0 / / rw - ext4 /dev/vda rw",
      "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu",
      "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct",
      "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
    ], ["3:memory:/process_api/abc", "2:cpuacct:/", "1:cpu:/"]);
    fakeBlock(sys, "vda", "254:0");
    const m = detectCgroups({ instance: "t", procSelf: proc, sysRoot: sys });
    assert.equal(m.version, 1);
    assert.deepEqual(m.ioDevices, ["254:0"]);
    assert.deepEqual([...m.parentDirs].sort(), [
      `${sys}/fs/cgroup/cpu/jobworker-t`,
      `${sys}/fs/cgroup/cpuacct/jobworker-t`,
      `${sys}/fs/cgroup/memory/process_api/abc/jobworker-t`,
    ]);
    assert.match(m.describe(), /not mounted: blkio, pids, freezer/);
    await assert.rejects(
      () => m.create("j", { ...NO_LIMITS, pids: 5 }),
      /Cannot apply maxPids: the pids controller is not mounted/,
    );
    Deno.removeSync(proc.replace(/\/proc\/self$/, ""), { recursive: true });
  });

  Deno.test("cgroup detection: v2 unified layout", async () => {
    const { proc, sys } = fakeTree([
      ...FS_MOUNTS,
      "30 22 0:22 / /sys rw - sysfs sysfs rw",
      "31 30 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
    ], ["0::/system.slice/jobworker.service"]);
    fakeBlock(sys, "sda", "8:0", "sda1", "8:1");
    const m = detectCgroups({ instance: "t", procSelf: proc, sysRoot: sys });
    assert.equal(m.version, 2);
    assert.deepEqual(m.ioDevices, ["8:0"]);
    assert.deepEqual(m.parentDirs, [`${sys}/fs/cgroup/system.slice/jobworker.service/jobworker-t`]);
    assert.match(m.describe(), /^cgroup v2 .*does not exist/);
    for (const base of ["/jw", "/sys/fs/cgroup/jw"]) {
      const b = detectCgroups({ instance: "t", base, procSelf: proc, sysRoot: sys });
      assert.deepEqual(b.parentDirs, [`${sys}/fs/cgroup/jw/jobworker-t`]);
    }
    await assert.rejects(
      async () =>
        await detectCgroups({ instance: "t", base: "/a/../b", procSelf: proc, sysRoot: sys })
          .create("j", NO_LIMITS),
      /must not contain/,
    );
    const noDisk = detectCgroups({
      instance: "t",
      ioDevices: [],
      procSelf: proc,
      sysRoot: `${sys}-none`,
    });
    assert.deepEqual(noDisk.ioDevices, []);
    await assert.rejects(
      () => noDisk.create("j", { ...NO_LIMITS, ioBps: 1 }),
      /maxIOBPS: no block device/,
    );
    Deno.removeSync(proc.replace(/\/proc\/self$/, ""), { recursive: true });
  });

  Deno.test("cgroup detection: v2 worker already moved into its leaf keeps the base", () => {
    const { proc, sys } = fakeTree(
      ["31 30 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw"],
      ["0::/jw/jobworker-worker"],
    );
    const m = detectCgroups({ instance: "t", procSelf: proc, sysRoot: sys });
    assert.deepEqual(m.parentDirs, [`${sys}/fs/cgroup/jw/jobworker-t`]);
    Deno.removeSync(proc.replace(/\/proc\/self$/, ""), { recursive: true });
  });
}

if (Deno.mainModule === import.meta.url) {
  detectionTests();
  const target = Deno.makeTempDirSync({ prefix: "cgroup-io-" });
  cgroupSuite(1, { ioTarget: `${target}/dd.out`, pidsLimit: 64, pidsTries: 100 });
  Deno.test("cgroup tests: remove temp dir", () => Deno.removeSync(target, { recursive: true }));
}
