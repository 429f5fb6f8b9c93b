/**
 * `make deploy` (scripts/deploy.sh) against a real sshd: first on a loopback port of this machine,
 * which does not run systemd (the service step is checked for its refusal; the copy, the install
 * into REMOTE_DESTDIR and the certificates for real); then against a real systemd in a
 * `systemd-nspawn --boot` container, where the deployed service runs jobs end to end.
 *
 * Run: `deno test -A tests/deploy_test.ts` (as root; sshd and systemd-nspawn from
 * `make test-tools`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { hasProgram, unless, withSkip } from "./helpers/skip.ts";
import { jobworker } from "../proto/service.ts";
import { freePort } from "./helpers/free_port.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function sh(args: string[], env: Record<string, string> = {}) {
  const o = await new Deno.Command(args[0]!, {
    args: args.slice(1),
    env,
    cwd: ROOT,
    stdin: "null",
  }).output();
  const d = new TextDecoder();
  return { code: o.code, out: d.decode(o.stdout) + d.decode(o.stderr) };
}

const SSH = unless(
  ["sshd", "ssh", "ssh-keygen", "openssl"].every(hasProgram),
  "needs sshd, ssh, ssh-keygen and openssl (make test-tools installs them)",
);
const NSPAWN = SSH ?? unless(
  hasProgram("systemd-nspawn"),
  "needs systemd-nspawn (make test-tools installs systemd-container)",
);

Deno.test(withSkip({
  name:
    "deploy over a real sshd: clear failures, the install on the remote, a server certificate issued here",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "jobworker-deploy-" });
    const pki = await makePki();
    let sshd: Deno.ChildProcess | undefined;
    try {
      for (const key of ["host", "user"]) {
        const k = await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", `${dir}/${key}`]);
        assert.equal(k.code, 0, k.out);
      }
      Deno.copyFileSync(`${dir}/user.pub`, `${dir}/authorized_keys`);
      const port = freePort();
      Deno.writeTextFileSync(
        `${dir}/sshd_config`,
        [
          `Port ${port}`,
          "ListenAddress 127.0.0.1",
          `HostKey ${dir}/host`,
          `AuthorizedKeysFile ${dir}/authorized_keys`,
          "PermitRootLogin prohibit-password",
          "PasswordAuthentication no",
          "StrictModes no",
          "UsePAM no",
          `PidFile ${dir}/sshd.pid`,
        ].join("\n") + "\n",
      );
      await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
      sshd = new Deno.Command("/usr/sbin/sshd", {
        args: ["-D", "-e", "-f", `${dir}/sshd_config`],
        stdout: "null",
        stderr: "null",
      }).spawn();
      const remoteRoot = `${dir}/remote`;
      // The script's local scratch (the staged install, a new server key) must never stay.
      const localTmp = `${dir}/local-tmp`;
      Deno.mkdirSync(localTmp);
      const env = {
        TMPDIR: localTmp,
        REMOTE_HOST: "localhost",
        REMOTE_USER: "root",
        REMOTE_PORT: String(port),
        SSH_OPTS:
          `-i ${dir}/user -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR`,
        CERT_DIR: pki.dir,
        REMOTE_DESTDIR: remoteRoot,
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        DENO_DIR: Deno.env.get("DENO_DIR") ?? `${ROOT}/.cache/deno`,
      };
      const deploy = (action: string, extra: Record<string, string> = {}) =>
        sh(["bash", "scripts/deploy.sh", action, Deno.execPath()], { ...env, ...extra });
      // sshd is up once a command goes through.
      for (let i = 0; i < 50; i++) {
        if (
          (await sh([
            "ssh",
            "-p",
            String(port),
            ...env.SSH_OPTS.split(" "),
            "root@localhost",
            "true",
          ])).code === 0
        ) break;
        await new Promise((r) => setTimeout(r, 100));
      }

      const wrongPort = await deploy("deploy", { REMOTE_PORT: String(freePort()) });
      assert.equal(wrongPort.code, 1);
      assert.match(wrongPort.out, /deploy: cannot reach root@localhost on port \d+ over ssh/);
      assert.match((await deploy("deploy", { REMOTE_HOST: "" })).out, /set REMOTE_HOST/);

      let systemdHere = true;
      try {
        Deno.statSync("/run/systemd/system");
      } catch {
        systemdHere = false;
      }
      if (!systemdHere) {
        const noSystemd = await deploy("deploy");
        assert.equal(noSystemd.code, 1, noSystemd.out);
        assert.match(noSystemd.out, /localhost does not run systemd/);
        assert.ok(!(await exists(remoteRoot)), "nothing installed");
      }

      const files = await deploy("deploy", { DEPLOY_SERVICE: "0" });
      assert.equal(files.code, 0, files.out);
      assert.match(files.out, /issued and copied a server certificate for localhost/);
      assert.ok((await Deno.stat(`${remoteRoot}/usr/local/bin/jobworker`)).mode! & 0o100);
      assert.ok(await exists(`${remoteRoot}/usr/local/lib/jobworker/app/main.ts`));
      assert.ok(await exists(`${remoteRoot}/etc/systemd/system/jobworker.service`));
      const certs = `${remoteRoot}/etc/jobworker/certs`;
      assert.deepEqual(
        [...Deno.readDirSync(certs)].map((e) => e.name).sort(),
        ["ca-cert.pem", "server-cert.pem", "server-key.pem"],
        "the CA key is never copied",
      );
      assert.equal((await Deno.stat(`${certs}/server-key.pem`)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(certs)).mode! & 0o777, 0o700);
      const verified = await sh([
        "openssl",
        "verify",
        "-CAfile",
        `${pki.dir}/ca-cert.pem`,
        "-verify_hostname",
        "localhost",
        `${certs}/server-cert.pem`,
      ]);
      assert.equal(verified.code, 0, verified.out);
      const firstCert = Deno.readTextFileSync(`${certs}/server-cert.pem`);

      const again = await deploy("deploy", { DEPLOY_SERVICE: "0" });
      assert.equal(again.code, 0, again.out);
      assert.match(again.out, /has its server certificate; kept/);
      assert.equal(Deno.readTextFileSync(`${certs}/server-cert.pem`), firstCert);

      const shown = await deploy("certs");
      assert.equal(shown.code, 0, shown.out);
      assert.match(shown.out, /server-cert\.pem:[\s\S]*DNS:localhost[\s\S]*notAfter=/);
      assert.deepEqual([...Deno.readDirSync(localTmp)].map((e) => e.name), [], "scratch left");
    } finally {
      if (sshd) {
        sshd.kill("SIGTERM");
        await sshd.status;
      }
      await pki.remove();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
}, SSH));

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The cgroup directories this process sits in, one per hierarchy (v1 controllers, name=systemd, v2). */
function ownCgroupDirs(): { hierarchy: string; dir: string }[] {
  const mounts: { fstype: string; options: string[]; at: string }[] = [];
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [before, after] = line.split(" - ");
    if (!after) continue;
    const [fstype, , superOptions] = after.split(" ");
    if (fstype === "cgroup" || fstype === "cgroup2") {
      mounts.push({ fstype, options: superOptions!.split(","), at: before!.split(" ")[4]! });
    }
  }
  const dirs: { hierarchy: string; dir: string }[] = [];
  for (const line of Deno.readTextFileSync("/proc/self/cgroup").trim().split("\n")) {
    const [, hierarchy, path] = /^\d+:([^:]*):(.*)$/.exec(line)!;
    const mount = hierarchy === ""
      ? mounts.find((m) => m.fstype === "cgroup2")
      : mounts.find((m) =>
        m.fstype === "cgroup" && hierarchy!.split(",").every((c) => m.options.includes(c))
      );
    if (mount) dirs.push({ hierarchy: hierarchy!, dir: `${mount.at}${path === "/" ? "" : path}` });
  }
  return dirs;
}

/** Removes a cgroup directory and every cgroup below it (deepest first; they must be empty). */
function removeCgroupTree(dir: string): void {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  for (const e of entries) if (e.isDirectory) removeCgroupTree(`${dir}/${e.name}`);
  try {
    Deno.removeSync(dir);
  } catch (e) {
    console.log(`could not remove ${dir}: ${(e as Error).message}`);
  }
}

/**
 * The whole deploy against a real systemd: a `systemd-nspawn --boot` container of this machine's
 * own root (volatile: a tmpfs root, /etc and /usr as overlays whose changes vanish with it),
 * sharing the host's network, its sshd on a loopback port. The deployed service then runs jobs
 * for a client on the host, is reloaded with a job running, and its live log is followed.
 *
 * cgroups: nspawn gives the container a cgroup namespace and, on a cgroup v1 host like this one,
 * mounts the controller hierarchies read-only (systemd's src/nspawn/nspawn-cgroup.c: only
 * name=systemd stays writable), so that a container cannot change its own limits. A real v1 host
 * gives its systemd writable hierarchies. To be such a host, the container is started in cgroups
 * made for it beneath this process's own, one per hierarchy (those become the roots of its cgroup
 * namespace: nothing outside them can change), then its controller mounts are remounted
 * read-write and its systemd re-executed, which makes it manage them: with the unit's
 * Delegate=yes it creates system.slice/jobworker.service in every controller, and the worker its
 * job cgroups beneath that, exactly as on a v1 host.
 */
Deno.test(withSkip({
  name:
    "deploy to a systemd-nspawn container: unit enabled and running, serves jobs in its delegated cgroups, reload keeps a job, status, logs, certs",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "jobworker-nspawn-" });
    const machine = `jwdeploy${Math.floor(Math.random() * 1e6)}`;
    const pki = await makePki();
    let container: Deno.ChildProcess | undefined;
    let logs: Deno.ChildProcess | undefined;
    // Not cpuset: a new v1 cpuset cgroup has no CPUs until it is given some, and neither systemd
    // nor the worker uses it on v1.
    const own = ownCgroupDirs();
    const v1 = own.some((c) => c.hierarchy === "memory");
    const cgroups = own.filter((c) => c.hierarchy !== "cpuset").map((c) => `${c.dir}/${machine}`);
    try {
      for (const cg of cgroups) await Deno.mkdir(cg);
      const sshPort = freePort();
      const apiPort = freePort();
      await Deno.mkdir(`${dir}/etc/ssh/sshd_config.d`, { recursive: true });
      await Deno.mkdir(`${dir}/etc/systemd/system`, { recursive: true });
      await Deno.mkdir(`${dir}/etc/jobworker`, { recursive: true });
      await Deno.mkdir(`${dir}/ssh`, { mode: 0o700 });
      Deno.writeTextFileSync(
        `${dir}/etc/ssh/sshd_config.d/test.conf`,
        `Port ${sshPort}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n`,
      );
      // The container shares the host's network: its worker must not take a port in use.
      Deno.writeTextFileSync(
        `${dir}/etc/jobworker/jobworker.env`,
        `JOB_WORKER_ADDR=127.0.0.1:${apiPort}\nJOB_WORKER_CERT_PATH=/etc/jobworker/certs\n` +
          `JOB_WORKER_STATE_DIR=/var/lib/jobworker\n`,
      );
      // Services of the host that must not start a second time beside it.
      for (const unit of ["prometheus", "postgresql", "e2scrub_reap"]) {
        Deno.symlinkSync("/dev/null", `${dir}/etc/systemd/system/${unit}.service`);
      }
      const k = await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", `${dir}/key`]);
      assert.equal(k.code, 0, k.out);
      Deno.copyFileSync(`${dir}/key.pub`, `${dir}/ssh/authorized_keys`);
      // sh moves itself into the container's cgroups, then becomes systemd-nspawn.
      container = new Deno.Command("sh", {
        args: [
          "-c",
          'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; done; shift; exec "$@"',
          "sh",
          ...cgroups,
          "--",
          "systemd-nspawn",
          "--boot",
          "--volatile=yes",
          "-D",
          "/",
          `--machine=${machine}`,
          "--register=no",
          "--keep-unit",
          `--overlay=/etc:${dir}/etc:/etc`,
          "--overlay=/usr::/usr",
          `--bind=${dir}/ssh:/root/.ssh`,
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const sshOpts =
        `-i ${dir}/key -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR`;
      const inside = (command: string) =>
        sh(["ssh", "-p", String(sshPort), ...sshOpts.split(" "), "root@localhost", command]);
      const booted = async () => {
        let state = "";
        for (let i = 0; i < 120 && !/^(running|degraded)/.test(state); i++) {
          state = (await inside("systemctl is-system-running")).out.trim();
          if (!/^(running|degraded)/.test(state)) await new Promise((r) => setTimeout(r, 500));
        }
        assert.match(state, /^(running|degraded)/, "the container did not boot");
      };
      await booted();
      assert.equal((await inside("cat /proc/1/comm")).out.trim(), "systemd");
      // Writable controller hierarchies, and a systemd that uses them (see above).
      const writable = await inside(
        "set -e; for c in cpu cpuacct memory blkio pids freezer devices; do " +
          "! mountpoint -q /sys/fs/cgroup/$c || mount -o remount,bind,rw /sys/fs/cgroup/$c; done; " +
          "systemctl daemon-reexec",
      );
      assert.equal(writable.code, 0, writable.out);
      await booted();
      if (v1) assert.match((await inside("cat /proc/1/cgroup")).out, /:memory:\/init\.scope$/m);

      const env = {
        REMOTE_HOST: "localhost",
        REMOTE_USER: "root",
        REMOTE_PORT: String(sshPort),
        SSH_OPTS: sshOpts,
        CERT_DIR: pki.dir,
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        DENO_DIR: Deno.env.get("DENO_DIR") ?? `${ROOT}/.cache/deno`,
      };
      const deploy = (action: string, extra: Record<string, string> = {}) =>
        sh(["bash", "scripts/deploy.sh", action, Deno.execPath()], { ...env, ...extra });
      const deployed = await deploy("deploy");
      assert.equal(deployed.code, 0, deployed.out);
      assert.match(deployed.out, /Active: active \(running\)/);
      // The default LOG_FORMAT (logfmt) reaches the journal.
      assert.match(
        deployed.out,
        /--- last log lines ---[\s\S]*jobworker\[\d+\]: time=\S+ level=info msg=listening /,
      );
      assert.equal((await inside("systemctl is-enabled jobworker")).out.trim(), "enabled");
      const props = (await inside(
        "systemctl show -p Delegate -p KillMode -p Restart -p ExecReload jobworker",
      )).out;
      assert.match(props, /Delegate=yes/);
      assert.match(props, /KillMode=mixed/);
      assert.match(props, /Restart=on-failure/);
      assert.match(props, /ExecReload=.*kill -HUP/);

      // A client on the host runs a job on the deployed worker; the job sits in a cgroup of the
      // worker's beneath the unit's delegated one, in each controller systemd delegated.
      const { clientFor, collectOutput } = await import("./helpers/clients.ts");
      const client = clientFor(pki.dir, `localhost:${apiPort}`, "admin");
      try {
        const job = await client.createJob({
          command: "sh",
          args: ["-c", "echo deployed; cat /proc/self/cgroup"],
        });
        const out = await collectOutput(client, job.id);
        assert.match(out.stdout, /^deployed\n/);
        for (const c of v1 ? ["memory", "pids", "cpu"] : [""]) {
          assert.match(
            out.stdout,
            new RegExp(
              `:${c}:/system\\.slice/jobworker\\.service/jobworker-[0-9a-f]{8}/.*${job.id}$`,
              "m",
            ),
            out.stdout,
          );
        }
        assert.equal((await client.getJob(job.id)).exitCode, 0);

        // The live log (make deploy-logs) shows the next job's audit line as it happens.
        logs = new Deno.Command("bash", {
          args: ["scripts/deploy.sh", "logs", Deno.execPath()],
          env,
          cwd: ROOT,
          stdin: "null",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        let followed = "";
        const reader = logs.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const readUntil = async (re: RegExp) => {
          const deadline = Date.now() + 60_000;
          while (!re.test(followed) && Date.now() < deadline) {
            const { value, done } = await reader.read();
            if (done) break;
            followed += value;
          }
          assert.match(followed, re);
        };
        await readUntil(/msg=listening /);
        const live = await client.createJob({ command: "true" });
        await readUntil(
          new RegExp(
            `msg=audit method=jobworker.JobService/CreateJob caller=alice role=admin job=${live.id} code=OK`,
          ),
        );
        logs.kill("SIGTERM");
        await logs.status;
        logs = undefined;

        // Reload (RELOAD=1 sends SIGHUP): a running job goes on through it, the same job.
        const longJob = await client.createJob({
          command: "sh",
          args: ["-c", "echo before; exec sleep 600"],
        });
        const reloaded = await deploy("deploy", { RELOAD: "1" });
        assert.equal(reloaded.code, 0, reloaded.out);
        assert.match(reloaded.out, /jobworker reloaded on localhost/);
        assert.match(reloaded.out, /has its server certificate; kept/);
        assert.match(
          (await inside("journalctl -u jobworker -o cat")).out,
          /msg=listening .*reloaded=true/,
        );
        assert.equal((await client.getJob(longJob.id)).status, jobworker.JobStatus.RUNNING);
        await client.stopJob(longJob.id);
        assert.equal((await collectOutput(client, longJob.id)).stdout, "before\n");
      } finally {
        client.close();
      }
      const status = await deploy("status");
      assert.equal(status.code, 0, status.out);
      assert.match(status.out, /active \(running\)/);
      const certs = await deploy("certs");
      assert.equal(certs.code, 0, certs.out);
      assert.match(certs.out, /DNS:localhost/);
    } finally {
      if (logs) {
        logs.kill("SIGKILL");
        await logs.status;
      }
      if (container) {
        container.kill("SIGTERM");
        const timer = setTimeout(() => container?.kill("SIGKILL"), 30_000);
        await container.status;
        clearTimeout(timer);
      }
      await Deno.remove(`/run/systemd/nspawn/propagate/${machine}`, { recursive: true }).catch(
        () => {},
      );
      for (const cg of cgroups) removeCgroupTree(cg);
      await pki.remove();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
}, NSPAWN));
