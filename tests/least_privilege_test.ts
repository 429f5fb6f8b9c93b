/**
 * Least privilege for jobs (issue 10), from inside real jobs of a real worker: the default profile
 * (capabilities, private /dev, masks, read-only /sys and /proc entries, no_new_privs), the
 * `user`, `network`, `privileged` and `init` options, and stops of a PID 1 without a SIGTERM
 * handler.
 *
 * Each protection is checked twice where that is safe: in a default job, where it must hold, and
 * in a privileged job (no profile: the seed's full root), where the same command must get through.
 * So a check that would pass without the protection fails here.
 *
 * Run: `deno test -A tests/least_privilege_test.ts` (as root; needs gcc, python3, ping, insmod,
 * losetup: `make test-tools`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { runProgram } from "./helpers/process.ts";

const S = jobworker.JobStatus;
/** The default StopJob grace of the worker: long, so that a fast stop shows. */
const STOP_GRACE_S = 10;

const pki = await makePki();
const workers: WorkerProcess[] = [];
let worker: WorkerProcess;
let strict: WorkerProcess;
try {
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_STOP_GRACE: String(STOP_GRACE_S), JOB_WORKER_ALLOW_PRIVILEGED: "1" },
  });
  workers.push(worker);
  // Defaults: privileged jobs refused, jobs run as nobody.
  strict = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_DEFAULT_USER: "nobody" },
  });
  workers.push(strict);
} catch (e) {
  await Promise.all(workers.map((w) => w.stop()));
  await pki.remove();
  throw e;
}
const client = clientFor(pki.dir, worker.address);
const strictClient = clientFor(pki.dir, strict.address);

globalThis.addEventListener("unload", () => {
  for (const w of workers) {
    try {
      w.process.kill("SIGTERM");
    } catch { /* gone */ }
  }
});

let created: { c: JobClient; id: string }[] = [];

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      created = [];
      try {
        await fn();
      } finally {
        for (const { c, id } of created) await c.stopJob(id, { force: true }).catch(() => {});
      }
    },
  });
}

async function create(req: jobworker.ICreateJobReq, c: JobClient = client) {
  const job = await c.createJob(req);
  created.push({ c, id: job.id });
  return job;
}

/** Runs `script` with bash in a job; its end state and output. */
async function sh(script: string, extra: jobworker.ICreateJobReq = {}, c: JobClient = client) {
  const job = await create({ command: "bash", args: ["-c", script], ...extra }, c);
  const output = await collectOutput(c, job.id);
  return { job: await waitJobEnded(c, job.id), ...output };
}

/** Runs `script` in a default job and in a privileged one. */
async function both(script: string) {
  return { confined: await sh(script), privileged: await sh(script, { privileged: true }) };
}

async function expectCode(promise: Promise<unknown>, code: status, pattern: RegExp) {
  await assert.rejects(promise, (e: { code?: number; details?: string }) => {
    assert.equal(e.code, code, `status ${e.code}: ${e.details}`);
    assert.match(e.details ?? "", pattern);
    return true;
  });
}

const shimPath = (() => {
  const dir = `${worker.stateDir}/lib`;
  const name = [...Deno.readDirSync(dir)].find((e) => e.name.startsWith("libjwshim-"))?.name;
  assert.ok(name, "the worker installed its shim");
  return `${dir}/${name}`;
})();

// ---------------------------------------------------------------------------------------------
// The default profile

test("capabilities: Docker's default set without MKNOD, ambient empty", async () => {
  const { confined, privileged } = await both("grep ^Cap /proc/self/status");
  const caps = (text: string, field: string) =>
    BigInt(`0x${new RegExp(`^${field}:\\s*([0-9a-f]+)`, "m").exec(text)?.[1]}`);
  // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW
  // SYS_CHROOT AUDIT_WRITE SETFCAP
  const expected = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 29, 31].reduce(
    (m, c) => m | (1n << BigInt(c)),
    0n,
  );
  for (const field of ["CapBnd", "CapPrm", "CapEff", "CapInh"]) {
    assert.equal(caps(confined.stdout, field), expected, `${field}: ${confined.stdout}`);
  }
  assert.equal(caps(confined.stdout, "CapAmb"), 0n);
  assert.notEqual(caps(privileged.stdout, "CapEff"), expected, "a privileged job keeps them all");
  assert.ok((caps(privileged.stdout, "CapEff") & (1n << 21n)) !== 0n, "SYS_ADMIN when privileged");
});

test("the server's key cannot be read from a job", async () => {
  const script = `cat ${pki.dir}/server-key.pem; cat ${pki.dir}/ca-key.pem`;
  const { confined, privileged } = await both(script);
  assert.equal(confined.job.status, S.FAILED);
  assert.doesNotMatch(confined.stdout, /PRIVATE KEY/);
  assert.match(confined.stderr, /No such file/);
  assert.match(privileged.stdout, /BEGIN PRIVATE KEY[\s\S]*BEGIN PRIVATE KEY/);
});

test("the shim and the program cannot be written from a job", async () => {
  const main = new URL("../main.ts", import.meta.url).pathname;
  // Opened for writing, nothing written: the privileged run must not change the files.
  const script = `python3 -c '
import sys
for p in sys.argv[1:]:
    try:
        open(p, "r+b").close(); print("writable", p)
    except OSError as e:
        print("refused", p, e.strerror)
' ${shimPath} ${main} ${Deno.execPath()}`;
  const { confined, privileged } = await both(script);
  assert.match(confined.stdout, new RegExp(`refused ${shimPath} No such file`));
  assert.match(confined.stdout, new RegExp(`refused ${main} Read-only file system`));
  // The running deno binary answers ETXTBSY before EROFS: its mount must be read-only.
  assert.match(confined.stdout, /refused \S*deno (Read-only file system|Text file busy)/);
  const deno = await Deno.realPath(Deno.execPath());
  const ro = await sh(
    `python3 -c 'import os; print(bool(os.statvfs("${deno}").f_flag & os.ST_RDONLY))'`,
  );
  assert.equal(ro.stdout, "True\n", "the program's mount is read-only");
  assert.doesNotMatch(confined.stdout, /writable/);
  assert.match(privileged.stdout, new RegExp(`writable ${shimPath}`));
  assert.match(privileged.stdout, new RegExp(`writable ${main}`));
});

test("a mask cannot be unmounted, nor anything mounted", async () => {
  const r = await sh(
    `umount ${worker.stateDir}; echo umount=$?; umount -l ${pki.dir}; echo lazy=$?; ` +
      `mount -t tmpfs none /mnt; echo mount=$?; ls ${worker.stateDir} | wc -l`,
  );
  assert.match(r.stdout, /umount=32/);
  assert.match(r.stdout, /lazy=32/);
  assert.match(r.stdout, /mount=32/);
  assert.match(r.stdout, /\n0\n$/, "the state directory looks empty");
  assert.match(r.stderr, /must be superuser|not permitted|Permission denied/);
});

test("a job cannot write its cgroup files (cgroup.procs, memory limit)", async () => {
  const script = `
    for line in $(cat /proc/self/cgroup); do
      ctrl=$(echo "$line" | cut -d: -f2); path=$(echo "$line" | cut -d: -f3)
      case "$ctrl" in
        memory) dir=/sys/fs/cgroup/memory$path; file=memory.limit_in_bytes ;;
        "") [ -f /sys/fs/cgroup$path/memory.max ] || continue
            dir=/sys/fs/cgroup$path; file=memory.max ;;
        *) continue ;;
      esac
      value=$(cat $dir/$file)
      if echo "$value" > $dir/$file; then echo "wrote $file"; else echo "refused $file"; fi
      if echo $$ > $dir/cgroup.procs; then echo "wrote procs"; else echo "refused procs"; fi
    done`;
  const { confined, privileged } = await both(script);
  assert.match(confined.stdout, /refused memory\.(limit_in_bytes|max)/);
  assert.match(confined.stdout, /refused procs/);
  assert.doesNotMatch(confined.stdout, /wrote/);
  assert.match(confined.stderr, /Read-only file system/);
  assert.match(privileged.stdout, /wrote memory\.(limit_in_bytes|max)/);
  assert.match(privileged.stdout, /wrote procs/);
});

test("insmod is refused: no CAP_SYS_MODULE", async () => {
  const script =
    "head -c 4096 /dev/zero > /tmp/jw-not-a-module.ko; insmod /tmp/jw-not-a-module.ko;" +
    " echo insmod=$?; rm -f /tmp/jw-not-a-module.ko; grep ^CapBnd /proc/self/status";
  const { confined, privileged } = await both(script);
  assert.match(confined.stdout, /insmod=1/);
  const sysModule = (text: string) =>
    (BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(text)?.[1]}`) >> 16n) & 1n;
  assert.equal(sysModule(confined.stdout), 0n);
  assert.equal(sysModule(privileged.stdout), 1n);
  if (/Function not implemented/.test(privileged.stderr)) {
    // A kernel without module support (as here): ENOSYS for everyone, capabilities or not.
    console.log("insmod: this kernel has no module support; CAP_SYS_MODULE checked instead");
  } else {
    assert.match(confined.stderr, /Operation not permitted/);
    // With CAP_SYS_MODULE the kernel gets as far as reading the (invalid) module.
    assert.doesNotMatch(privileged.stderr, /Operation not permitted/);
  }
});

test("block devices can neither be opened nor created", async () => {
  const image = await Deno.makeTempFile({ prefix: "jobworker-test-loop-" });
  await Deno.writeFile(image, new Uint8Array(1024 * 1024).fill(0x4a));
  const attach = await runProgram("losetup", ["-f", "--show", image]);
  assert.equal(attach.code, 0, attach.stderr);
  const device = attach.stdout.trim();
  try {
    const { major, minor } = await (async () => {
      const [ma, mi] = (await Deno.readTextFile(`/sys/class/block/${device.slice(5)}/dev`))
        .trim().split(":");
      return { major: ma, minor: mi };
    })();
    const script = `head -c 4 ${device}; echo; echo open=$?; ` +
      `mknod /tmp/jw-blk-$$ b ${major} ${minor} && head -c 4 /tmp/jw-blk-$$; echo; ` +
      `echo mknod=$?; rm -f /tmp/jw-blk-$$; ls /dev | tr '\\n' ' '`;
    const { confined, privileged } = await both(script);
    assert.doesNotMatch(confined.stdout, /JJJJ/, confined.stdout);
    assert.match(confined.stderr, new RegExp(`${device}.*No such file`));
    assert.match(confined.stderr, /mknod: .*Operation not permitted/);
    assert.doesNotMatch(confined.stdout, /\bloop|vda|sda/);
    assert.match(privileged.stdout, /JJJJ[\s\S]*JJJJ/, "privileged: both ways read the device");
  } finally {
    await runProgram("losetup", ["-d", device]);
    await Deno.remove(image);
  }
});

test("a private /dev: the usual devices, a fresh devpts, /dev/shm", async () => {
  const r = await sh(
    "ls /dev | tr '\\n' ' '; echo; head -c 8 /dev/urandom | wc -c; " +
      "echo x > /dev/null && echo null-ok; echo hi > /dev/shm/f && cat /dev/shm/f; " +
      "python3 -c 'import os; m, s = os.openpty(); print(\"pty\", os.ttyname(s))'",
  );
  assert.equal(r.job.status, S.COMPLETED, r.stderr);
  const names = r.stdout.split("\n")[0]!.trim().split(/\s+/).sort();
  for (const n of ["full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero"]) {
    assert.ok(names.includes(n), `/dev/${n} in ${names}`);
  }
  assert.ok(names.length < 20, `only a few entries: ${names}`);
  assert.match(r.stdout, /\n8\nnull-ok\nhi\npty \/dev\/pts\/0\n/);
});

test("/sys, /proc/sys and /proc/sysrq-trigger are read-only; runc's /proc masks", async () => {
  const r = await sh(
    "echo jobhost > /proc/sys/kernel/hostname; echo hostname=$?; " +
      "touch /sys/kernel/x; echo sys=$?; : > /proc/sysrq-trigger; echo sysrq=$?; " +
      "grep -E ' /proc/(kcore|keys|timer_list|sched_debug|acpi|scsi) ' /proc/self/mountinfo | wc -l",
  );
  assert.match(r.stdout, /hostname=1\n/);
  assert.match(r.stdout, /sys=1\n/);
  assert.match(r.stdout, /sysrq=1\n/);
  assert.match(r.stderr, /Read-only file system/);
  assert.ok(Number(r.stdout.trim().split("\n").at(-1)) >= 2, `masks: ${r.stdout}`);
  // The same hostname write in a privileged job (its own UTS namespace) works.
  const p = await sh("echo jobhost > /proc/sys/kernel/hostname && hostname", { privileged: true });
  assert.match(p.stdout, /jobhost/);
});

test("ordinary work still works: gcc, python3, port 8080, ping", async () => {
  const r = await sh(
    `
    set -e
    cd "$(mktemp -d)"
    printf '#include <stdio.h>\\nint main(void){puts("built and ran");return 0;}\\n' > hello.c
    gcc -o hello hello.c && ./hello
    python3 -c 'print("python", 6 * 7)'
    python3 -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 8080)); s.listen(); print("bound 8080")'
    ping -c 1 -W 2 127.0.0.1 > /dev/null && echo pinged`,
    { network: "none" },
  );
  assert.equal(r.job.status, S.COMPLETED, r.stderr);
  assert.equal(r.stdout, "built and ran\npython 42\nbound 8080\npinged\n");
  const host = await sh("ping -c 1 -W 2 127.0.0.1 > /dev/null && echo pinged");
  assert.equal(host.stdout, "pinged\n", host.stderr);
});

// ---------------------------------------------------------------------------------------------
// Options

test("user: a name, uid:gid; HOME follows; no_new_privs and no capabilities", async () => {
  const r = await sh(
    'id; echo "HOME=$HOME"; grep -E "^(NoNewPrivs|CapEff|CapBnd)" /proc/self/status',
    {
      user: "nobody",
    },
  );
  assert.equal(r.job.status, S.COMPLETED, r.stderr);
  assert.equal(r.job.user, "65534:65534");
  assert.match(r.stdout, /uid=65534\(nobody\) gid=65534\(nogroup\) groups=65534\(nogroup\)/);
  assert.match(r.stdout, /HOME=\/nonexistent/);
  assert.match(r.stdout, /NoNewPrivs:\s+1/);
  assert.match(r.stdout, /CapEff:\s+0+\n/);
  const n = await sh("id -u; id -g; id -G; echo $HOME", { user: "4321:8765" });
  assert.equal(n.job.user, "4321:8765");
  assert.equal(n.stdout, "4321\n8765\n8765\n/\n");
  const root = await sh("id -u; grep NoNewPrivs /proc/self/status");
  assert.equal(root.job.user, "0:0");
  assert.match(root.stdout, /^0\nNoNewPrivs:\s+0/);
});

test("user: ids above 2^31 - 1 (up to 4294967294) are the job's ids", async () => {
  // The shim took them as C ints: 2147483648 and up failed INTERNAL ("Invalid FFI i32 type").
  const r = await sh("id -u; id -g; id -G", { user: "3000000000:4294967294" });
  assert.equal(r.job.status, S.COMPLETED, `${r.job.reason} ${r.stderr}`);
  assert.equal(r.job.user, "3000000000:4294967294");
  assert.equal(r.stdout, "3000000000\n4294967294\n4294967294\n");
});

test("user: the default comes from JOB_WORKER_DEFAULT_USER; bad users are INVALID_ARGUMENT", async () => {
  const r = await sh("id -u", {}, strictClient);
  assert.equal(r.job.user, "65534:65534");
  assert.equal(r.stdout, "65534\n");
  await expectCode(
    create({ command: "true", user: "no-such-user" }),
    status.INVALID_ARGUMENT,
    /user: no user "no-such-user"/,
  );
  await expectCode(create({ command: "true", user: "1:2:3" }), status.INVALID_ARGUMENT, /^user: /);
  await expectCode(
    create({ command: "true", user: "99999999999" }),
    status.INVALID_ARGUMENT,
    /user: uid .* out of range/,
  );
});

test("user: workDir and the command are checked as that user", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-private-" });
  const tool = `${dir}-tool.sh`;
  try {
    await Deno.chmod(dir, 0o700);
    await expectCode(
      create({ command: "pwd", workDir: dir, user: "nobody" }),
      status.INVALID_ARGUMENT,
      /workDir: .*EACCES|workDir: .*denied/i,
    );
    const root = await sh("pwd", { workDir: dir });
    assert.equal(root.stdout, `${dir}\n`);
    await Deno.writeTextFile(tool, "#!/bin/sh\necho hi\n");
    await Deno.chmod(tool, 0o700);
    await expectCode(
      create({ command: tool, user: "nobody" }),
      status.INVALID_ARGUMENT,
      /command: .*not executable by the job's user/,
    );
    assert.equal((await sh(tool)).stdout, "hi\n", "root may run it");
  } finally {
    await Deno.remove(tool).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

test("network none: only loopback, up", async () => {
  const r = await sh(
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up",
    {
      network: "none",
    },
  );
  assert.equal(r.job.network, "none");
  assert.equal(r.stdout, "lo\nlo-up\n");
  const host = await sh("tail -n +3 /proc/net/dev | wc -l");
  assert.equal(host.job.network, "host");
  assert.ok(Number(host.stdout) >= 2, "the host's network has more than loopback");
  await expectCode(
    create({ command: "true", network: "bridge" }),
    status.INVALID_ARGUMENT,
    /network: must be "host" or "none", got "bridge"/,
  );
});

test("privileged: refused unless the server allows it, recorded when it does", async () => {
  await expectCode(
    strictClient.createJob({ command: "true", privileged: true }),
    status.PERMISSION_DENIED,
    /JOB_WORKER_ALLOW_PRIVILEGED=1/,
  );
  const r = await sh("true", { privileged: true });
  assert.equal(r.job.privileged, true);
  assert.equal((await sh("true")).job.privileged, false);
});

test("init: a minimal init forwards SIGTERM and reaps orphans", async () => {
  const job = await create({ command: "sleep", args: ["1000"], init: true });
  assert.equal(job.init, true);
  const started = performance.now();
  const stopped = await client.stopJob(job.id);
  const took = performance.now() - started;
  assert.equal(stopped.status, S.STOPPED);
  assert.equal(stopped.exitCode, 128 + 15, stopped.reason);
  assert.ok(took < 5000, `stopped in ${took} ms`);
  // An orphan (its parent exited) is reaped by PID 1: no zombie stays.
  // A python3 PID 1 waits only for its own children, as most programs do.
  const orphan = {
    command: "python3",
    args: [
      "-c",
      "import os, subprocess, time\n" +
      "subprocess.run(['sh', '-c', 'sleep 0.2 &'])\n" +
      "time.sleep(1)\n" +
      "os.system(\"ps -eo stat= | grep -c '^Z'\")",
    ],
  };
  const run = async (init: boolean) => {
    const job = await create({ ...orphan, init });
    const out = await collectOutput(client, job.id);
    await waitJobEnded(client, job.id);
    return out;
  };
  const withInit = await run(true);
  const without = await run(false);
  assert.equal(withInit.stdout.trim(), "0");
  assert.equal(without.stdout.trim(), "1", "python3 as PID 1 leaves the orphan a zombie");
  const mem = await sh(
    "grep -E '^(VmRSS|Name)' /proc/1/status; grep ^Pss: /proc/1/smaps_rollup",
    { init: true },
  );
  assert.match(mem.stdout, /Name:\s+jwinit/);
  console.log(`jwinit as PID 1: ${mem.stdout.replace(/\s+/g, " ")}`);
});

test("init: jwinit runs the command as a non-root user too", async () => {
  // jwinit was installed 0500 (root only): the job's init, already the job's user, could not exec
  // it, and every `init: true` job with a user failed ("cannot execute": EACCES).
  const r = await sh("id -u; cat /proc/1/comm; grep NoNewPrivs /proc/self/status", {
    init: true,
    user: "nobody",
    network: "none",
  });
  assert.equal(r.job.status, S.COMPLETED, `${r.job.reason} ${r.stderr}`);
  assert.match(r.stdout, /^65534\njwinit[-0-9a-f]*\nNoNewPrivs:\s+1\n$/);
});

// ---------------------------------------------------------------------------------------------
// Stops of a PID 1 without a SIGTERM handler

async function timedStop(req: jobworker.ICreateJobReq, graceSeconds?: number) {
  const job = await create(req);
  await new Promise((r) => setTimeout(r, 300)); // let the command install what it installs
  const started = performance.now();
  const stopped = await client.stopJob(job.id, graceSeconds ? { graceSeconds } : {});
  return { stopped, ms: performance.now() - started };
}

for (
  const [name, req] of [
    ["a bash loop", { command: "bash", args: ["-c", "while :; do sleep 0.1; done"] }],
    ["sleep", { command: "sleep", args: ["1000"] }],
    ["python3 -m http.server", { command: "python3", args: ["-m", "http.server", "0"] }],
  ] as [string, jobworker.ICreateJobReq][]
) {
  test(`stop of ${name} ends at once with SIGTERM (PID 1 without a handler)`, async () => {
    const { stopped, ms } = await timedStop(req);
    assert.equal(stopped.status, S.STOPPED);
    assert.equal(stopped.signal, 15, stopped.reason);
    assert.match(stopped.reason, /killed by SIGTERM/);
    assert.ok(ms < STOP_GRACE_S * 1000 / 4, `${name} stopped in ${Math.round(ms)} ms`);
  });
}

test("a PID 1 with a SIGTERM handler still gets its whole grace", async () => {
  const { stopped, ms } = await timedStop({
    command: "bash",
    args: ["-c", "trap 'echo term' TERM; while :; do sleep 0.1; done"],
  }, 2);
  assert.equal(stopped.status, S.STOPPED);
  assert.equal(stopped.signal, 9);
  assert.ok(ms >= 1900, `stopped after ${Math.round(ms)} ms`);
});

test("timeoutSeconds ends a PID 1 without a handler at the timeout", async () => {
  const started = performance.now();
  const job = await create({ command: "sleep", args: ["1000"], timeoutSeconds: 1 });
  const ended = await waitJobEnded(client, job.id);
  const ms = performance.now() - started;
  assert.equal(ended.status, S.STOPPED);
  assert.equal(ended.signal, 15);
  assert.ok(ms < 1000 + STOP_GRACE_S * 1000 / 4, `ended after ${Math.round(ms)} ms`);
});

test("stop the workers", async () => {
  client.close();
  strictClient.close();
  for (const w of workers) assert.equal((await w.stop()).code, 0);
  await pki.remove();
});
