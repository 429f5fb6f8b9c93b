/**
 * README claims that no other test checks, each against a real worker, real jobs and the kernel's
 * own files: flags over environment for `serve`, the settings table (message and header limits,
 * log level, job defaults, stop grace), the job's base environment, stdin and signal dispositions,
 * jobs dying with a SIGKILLed worker, the state directory's mode, a stop during init, the root and
 * kernel checks, `jobworker certs` through main.ts, and a full state directory.
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { jobServiceDefinition, jobworker } from "../proto/service.ts";
import type { JobClient } from "../cli/client.ts";
import { makePki, type PkiFixture } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { parseLogLine } from "./helpers/log_lines.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { waitJobEnded } from "./helpers/job_end.ts";
import { runProgram } from "./helpers/process.ts";
import {
  cgroupDirsNamed,
  cgroupRoots,
  type HostProcess,
  isAlive,
  jobProcesses,
  waitFor,
} from "./helpers/host_procs.ts";
import { TextLineStream } from "./helpers/lines.ts";
import { UNDER_UML } from "./helpers/machine.ts";
import { freePort } from "./helpers/free_port.ts";

const S = jobworker.JobStatus;
const MiB = 1024 * 1024;
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const v2 = () => cgroupRoots()[0] === "/sys/fs/cgroup";

let pki: PkiFixture;

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `README: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

/** A worker with `env` and `args` for the length of `fn`, stopped (and checked exit 0) after. */
async function withWorker(
  options: { env?: Record<string, string>; args?: string[]; stateDir?: string },
  fn: (client: JobClient, worker: WorkerProcess) => Promise<void> | void,
): Promise<void> {
  const worker = await WorkerProcess.start({ certDir: pki.dir, ...options });
  const client = clientFor(pki.dir, worker.address);
  try {
    await fn(client, worker);
  } finally {
    client.close();
    await worker.stop();
  }
}

async function run(client: JobClient, req: jobworker.ICreateJobReq) {
  const job = await waitJobEnded(client, (await client.createJob(req)).id, 120_000);
  return { job, ...await collectOutput(client, job.id) };
}

/** The first of the job's cgroup directories whose path includes `hierarchy` and holds `file`. */
async function cgroupFile(jobId: string, file: string): Promise<string> {
  for (const dir of cgroupDirsNamed([jobId])) {
    try {
      return (await Deno.readTextFile(`${dir}/${file}`)).trim();
    } catch {
      // another hierarchy
    }
  }
  throw new Error(`no ${file} in the cgroups of job ${jobId}`);
}

test("start: certificates", async () => {
  pki = await makePki();
});

test("flags override the environment for serve (--log-level, --default-memory)", async () => {
  await withWorker({
    // LOG_LEVEL=warn alone would hide the "listening" line this helper waits for.
    env: { LOG_LEVEL: "warn", JOB_WORKER_DEFAULT_MEMORY: "100" },
    args: ["--log-level", "info", "--default-memory", "64"],
  }, async (client, worker) => {
    assert.ok(
      worker.logs.some((l) => parseLogLine(l)?.msg === "listening"),
      worker.logs.join("\n"),
    );
    const job = await client.createJob({ command: "sleep", args: ["30"] });
    assert.equal(job.maxMemory, 64);
    const limit = v2() ? "memory.max" : "memory.limit_in_bytes";
    assert.equal(await cgroupFile(job.id, limit), String(64 * MiB));
    await client.stopJob(job.id, { force: true });
  });
});

test("LOG_LEVEL=warn: no INFO line at all, even while jobs run and end", async () => {
  const port = freePort();
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-prompt", "--cached-only", MAIN, "serve"],
    env: {
      JOB_WORKER_ADDR: `127.0.0.1:${port}`,
      JOB_WORKER_CERT_PATH: pki.dir,
      JOB_WORKER_STATE_DIR: stateDir,
      LOG_LEVEL: "warn",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const drained = (async () => {
    const stream = child.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(
      new TextLineStream(),
    );
    for await (const line of stream) lines.push(line);
  })();
  const client = clientFor(pki.dir, `127.0.0.1:${port}`);
  try {
    await waitFor("the worker to answer", async () => {
      try {
        return await client.listJobs();
      } catch {
        return null;
      }
    }, 120_000);
    const { job } = await run(client, { command: "echo", args: ["hi"] });
    assert.equal(job.status, S.COMPLETED);
  } finally {
    client.close();
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    await drained;
    await Deno.remove(stateDir, { recursive: true });
  }
  const quiet = lines.filter((l) => /^(info|debug)$/.test(parseLogLine(l)?.level ?? ""));
  assert.deepEqual(quiet, [], lines.join("\n"));
});

test("MAX_SEND_MSG_SIZE bounds every output message; the default allows larger ones", async () => {
  const largest = async (env: Record<string, string>) => {
    let max = 0;
    await withWorker({ env }, async (client) => {
      const { job } = await run(client, {
        command: "head",
        args: ["-c", String(MiB), "/dev/zero"],
      });
      assert.equal(job.status, S.COMPLETED);
      let total = 0;
      for await (const chunk of client.stream(job.id, { noFollow: true })) {
        total += chunk.payload.length;
        max = Math.max(max, chunk.payload.length);
      }
      assert.equal(total, MiB);
    });
    return max;
  };
  const bounded = await largest({ MAX_SEND_MSG_SIZE: "65536" });
  const unbounded = await largest({});
  // Each message carries its chunk plus a few bytes of framing: the payload must stay below the
  // limit, and the limit must be what keeps it there (the default sends bigger chunks).
  assert.ok(bounded < 65536 && bounded > 32768, `largest chunk ${bounded} with a 64 KiB limit`);
  assert.ok(unbounded > 65536, `largest chunk ${unbounded} with the default limit`);
});

test("MAX_HEADER_LIST_SIZE: 20 KiB of metadata is refused by default, taken at 64 KiB", async () => {
  const call = async (
    worker: WorkerProcess,
    padding: number,
  ): Promise<grpc.ServiceError | null> => {
    const read = (f: string) => Deno.readTextFileSync(`${pki.dir}/${f}`);
    // By name: Node's TLS takes no IP address as the server name.
    const raw = new grpc.Client(
      `localhost:${worker.port}`,
      grpc.credentials.createSsl(
        Buffer.from(read("ca-cert.pem")),
        Buffer.from(read("admin-client-key.pem")),
        Buffer.from(read("admin-client-cert.pem")),
      ),
    );
    const metadata = new grpc.Metadata();
    metadata.set("x-padding", "p".repeat(padding));
    const method = jobServiceDefinition.GetJobs;
    try {
      return await new Promise((resolve) => {
        raw.makeUnaryRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          jobworker.EmptyRequest.create(),
          metadata,
          { deadline: Date.now() + 30_000 },
          (err) => resolve(err ?? null),
        );
      });
    } finally {
      raw.close();
    }
  };
  await withWorker({}, async (_client, worker) => {
    // Control: the same call with 1 KiB of metadata works, so the refusal is the header size.
    const small = await call(worker, 1024);
    assert.equal(small, null, `1 KiB of metadata refused: ${small?.message}`);
    const err = await call(worker, 20 * 1024);
    assert.ok(err !== null, "20 KiB of headers passed the 16 KiB header list limit");
    assert.notEqual(err.code, grpc.status.DEADLINE_EXCEEDED, err.message);
  });
  await withWorker({ env: { MAX_HEADER_LIST_SIZE: "65536" } }, async (_client, worker) => {
    const err = await call(worker, 20 * 1024);
    assert.equal(err, null, `refused with a 64 KiB limit: ${err?.message}`);
  });
});

test("JOB_WORKER_DEFAULT_CPU/MEMORY/PIDS/IO fill a request's zeros, in the job and its cgroup", async () => {
  await withWorker({
    env: {
      JOB_WORKER_DEFAULT_CPU: "30",
      JOB_WORKER_DEFAULT_MEMORY: "48",
      JOB_WORKER_DEFAULT_PIDS: "20",
      JOB_WORKER_DEFAULT_IO: "1048576",
      // Under User-mode Linux no disk backs a writable filesystem; the runner attaches /dev/ubda.
      ...UNDER_UML ? { JOB_WORKER_IO_DEVICES: "98:0" } : {},
    },
  }, async (client) => {
    const job = await client.createJob({ command: "sleep", args: ["30"] });
    assert.deepEqual(
      [job.maxCPU, job.maxMemory, job.maxPids, job.maxIOBPS],
      [30, 48, 20, 1048576],
    );
    if (v2()) {
      assert.equal(await cgroupFile(job.id, "cpu.max"), "30000 100000");
      assert.equal(await cgroupFile(job.id, "memory.max"), String(48 * MiB));
      assert.equal(await cgroupFile(job.id, "pids.max"), "20");
      assert.match(await cgroupFile(job.id, "io.max"), /rbps=1048576 wbps=1048576/);
    } else {
      assert.equal(await cgroupFile(job.id, "cpu.cfs_quota_us"), "30000");
      assert.equal(await cgroupFile(job.id, "cpu.cfs_period_us"), "100000");
      assert.equal(await cgroupFile(job.id, "memory.limit_in_bytes"), String(48 * MiB));
      assert.equal(await cgroupFile(job.id, "pids.max"), "20");
      assert.match(await cgroupFile(job.id, "blkio.throttle.write_bps_device"), / 1048576$/m);
    }
    // A request's own values win over the defaults.
    const own = await client.createJob({ command: "sleep", args: ["30"], maxPids: 7 });
    assert.equal(own.maxPids, 7);
    assert.equal(await cgroupFile(own.id, "pids.max"), "7");
    await client.stopJob(job.id, { force: true });
    await client.stopJob(own.id, { force: true });
  });
});

test("JOB_WORKER_STOP_GRACE=1: a stop without a grace SIGKILLs a SIGTERM-deaf job after ~1 s", async () => {
  await withWorker({ env: { JOB_WORKER_STOP_GRACE: "1" } }, async (client) => {
    // PID 1 ignores SIGTERM: only the SIGKILL at the end of the grace ends it. The stop waits for
    // "ready", so the SIGTERM cannot arrive before the shell has set its disposition.
    const job = await client.createJob({
      command: "bash",
      args: ["-c", 'trap "" TERM; echo ready; exec sleep 1000'],
    });
    for (let i = 0;; i++) {
      const { stdout } = await collectOutput(client, job.id, { noFollow: true });
      if (stdout.includes("ready")) break;
      if (i > 1200) throw new Error("the job never said ready");
      await new Promise((r) => setTimeout(r, 50));
    }
    const t0 = performance.now();
    const stopped = await client.stopJob(job.id);
    const took = (performance.now() - t0) / 1000;
    assert.equal(stopped.status, S.STOPPED);
    assert.equal(stopped.signal, 9);
    // At least the 1 s grace; far below the 10 s default (slack for a loaded 2-core machine).
    assert.ok(took >= 0.95 && took < 6, `stop took ${took.toFixed(2)} s with a 1 s grace`);
  });
});

test("the job's environment is exactly the base plus --env; stdin is /dev/null; no signal ignored or blocked", async () => {
  await withWorker({}, async (client) => {
    const { job, stdout } = await run(client, { command: "env", env: ["FOO=bar"] });
    assert.equal(job.status, S.COMPLETED);
    const env = Object.fromEntries(
      stdout.trim().split("\n").map((
        l,
      ) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    assert.deepEqual(Object.keys(env).sort(), [
      "FOO",
      "HOME",
      "HOSTNAME",
      "JOBWORKER_JOB_ID",
      "LANG",
      "PATH",
    ]);
    assert.equal(env.HOME, "/root");
    assert.equal(env.LANG, "C.UTF-8");
    assert.equal(env.HOSTNAME, job.id);
    assert.equal(env.JOBWORKER_JOB_ID, job.id);
    assert.equal(env.FOO, "bar");
    assert.match(env.PATH ?? "", /(^|:)\/usr\/bin(:|$)/);

    const stdin = await run(client, { command: "readlink", args: ["/proc/self/fd/0"] });
    assert.equal(stdin.stdout, "/dev/null\n");
    const read = await run(client, { command: "wc", args: ["-c"] });
    assert.equal(read.stdout.trim(), "0");

    // The worker (Deno, its runtime) ignores signals, SIGPIPE and even the libc-reserved 32
    // among them; a job must start with every disposition at default and nothing blocked.
    const status = await run(client, { command: "cat", args: ["/proc/self/status"] });
    assert.match(status.stdout, /^SigBlk:\s+0{16}$/m);
    assert.match(status.stdout, /^SigIgn:\s+0{16}$/m);
  });
});

test("a SIGKILLed worker takes its jobs with it (PDEATHSIG), before any cleanup runs", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  try {
    const worker = await WorkerProcess.start({ certDir: pki.dir, stateDir });
    const client = clientFor(pki.dir, worker.address);
    const job = await client.createJob({
      command: "bash",
      args: ["-c", "sleep 1000 & sleep 1000 & wait"],
    });
    const procs: HostProcess[] = await waitFor(
      "the job's three processes",
      () => {
        const found = jobProcesses(job.id);
        return found.length === 3 ? found : null;
      },
    );
    client.close();
    await worker.stop("SIGKILL");
    // No worker runs now, so nothing but the kernel can end them.
    await waitFor("the job's processes to die", () => procs.every((p) => !isAlive(p)), 20_000);
    // The next worker on the same state directory removes the job's cgroups.
    await withWorker({ stateDir }, () => {
      assert.deepEqual(cgroupDirsNamed([job.id]), []);
    });
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

test("the state directory is made root-only (0700), even when it existed with 0755", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  try {
    await Deno.chmod(stateDir, 0o755);
    await withWorker({ stateDir }, async () => {
      assert.equal((await Deno.stat(stateDir)).mode! & 0o777, 0o700);
    });
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

test("a stop during init ends the job STOPPED once its command runs, leaving nothing", async () => {
  await withWorker({}, async (client) => {
    // Catch a job in INITIALIZING (init re-execs the program; under deno run that takes a while).
    let caught: string | undefined;
    for (let attempt = 0; attempt < 5 && caught === undefined; attempt++) {
      const created = client.createJob({
        command: "bash",
        args: ["-c", 'trap "echo TERM; exit 3" TERM; echo started; sleep 1000 & wait'],
      });
      const deadline = performance.now() + 30_000;
      while (caught === undefined && performance.now() < deadline) {
        const { jobs } = await client.listJobs();
        caught = jobs.find((j) => j.status === S.INITIALIZING)?.id ?? undefined;
        if (jobs.some((j) => j.status === S.RUNNING)) break;
      }
      if (caught !== undefined) {
        const stopped = client.stopJob(caught, { graceSeconds: 30 });
        const job = await created.catch(() => undefined);
        const end = await stopped;
        assert.equal(end.status, S.STOPPED, end.reason);
        if (job !== undefined) assert.equal(job.id, caught);
        assert.deepEqual(jobProcesses(caught), []);
        assert.deepEqual(cgroupDirsNamed([caught]), []);
      } else {
        const job = await created;
        await client.stopJob(job.id, { force: true });
      }
    }
    assert.ok(caught !== undefined, "never saw a job in INITIALIZING in 5 tries");
  });
});

test("serve refuses to run as non-root, and on a kernel older than 5.12", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  try {
    const serve = ["run", "-A", "--no-prompt", "--cached-only", MAIN, "serve"];
    const env = { JOB_WORKER_CERT_PATH: pki.dir, JOB_WORKER_STATE_DIR: stateDir };
    const nobody = await runProgram(
      "setpriv",
      ["--reuid", "65534", "--regid", "65534", "--clear-groups", Deno.execPath(), ...serve],
      { env },
    );
    assert.equal(nobody.code, 1, nobody.stderr);
    assert.match(nobody.stderr, /must run as root/);
    // An old kernel, as Deno sees it: a private mount namespace with another osrelease.
    const release = `${stateDir}/osrelease`;
    await Deno.writeTextFile(release, "5.11.0-old\n");
    const old = await runProgram("unshare", [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      `mount --bind ${release} /proc/sys/kernel/osrelease && exec "$0" "$@"`,
      Deno.execPath(),
      ...serve,
    ], { env });
    assert.equal(old.code, 1, old.stderr);
    assert.match(old.stderr, /Linux 5\.12 or newer is needed, this is 5\.11\.0-old/);
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

test("jobworker certs through main.ts makes a CA, server and client certificates that verify", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-certs-" });
  try {
    const made = await runProgram(Deno.execPath(), [
      "run",
      "-A",
      "--no-prompt",
      "--cached-only",
      MAIN,
      "certs",
      "--out",
      dir,
    ]);
    assert.equal(made.code, 0, made.stderr);
    for (const name of ["server", "admin-client", "viewer-client"]) {
      const verify = await runProgram("openssl", [
        "verify",
        "-CAfile",
        `${dir}/ca-cert.pem`,
        `${dir}/${name}-cert.pem`,
      ]);
      assert.equal(verify.code, 0, `${name}: ${verify.stdout}${verify.stderr}`);
    }
    // And a worker serves with them.
    const worker = await WorkerProcess.start({ certDir: dir });
    const client = clientFor(dir, worker.address);
    try {
      assert.ok(Array.isArray((await client.listJobs()).jobs));
    } finally {
      client.close();
      assert.equal((await worker.stop()).code, 0);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

test("a full state directory (4 MiB tmpfs) ends a job's output log, not the worker", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
  const mount = await runProgram("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", stateDir]);
  assert.equal(mount.code, 0, mount.stderr);
  try {
    await withWorker({ stateDir }, async (client) => {
      const big = await run(client, {
        command: "head",
        args: ["-c", String(16 * MiB), "/dev/zero"],
      });
      assert.equal(big.job.status, S.COMPLETED, big.job.reason);
      assert.ok(big.bytes.length < 4 * MiB, `${big.bytes.length} bytes kept on a 4 MiB disk`);
      assert.ok(big.bytes.every((b) => b === 0));
      // The worker still serves.
      assert.ok((await client.listJobs()).jobs.some((j) => j.id === big.job.id));
    });
  } finally {
    await runProgram("umount", [stateDir]);
    await Deno.remove(stateDir, { recursive: true });
  }
});
