/**
 * `make deploy` (scripts/deploy.sh) against a real sshd on a loopback port with a throwaway key.
 * This machine has no systemd (its PID 1 is not systemd and systemd-nspawn was not tried), so the
 * service step is checked only for its refusal; the copy, the install on the "remote" (into
 * REMOTE_DESTDIR) and the certificates are checked for real.
 *
 * Run: `deno test -A tests/deploy_test.ts` (as root; sshd from `make test-tools`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { withSkip } from "./helpers/skip.ts";

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

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

Deno.test({
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
      const env = {
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
    } finally {
      if (sshd) {
        sshd.kill("SIGTERM");
        await sshd.status;
      }
      await pki.remove();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The whole deploy against a real systemd: a `systemd-nspawn --boot` container of this machine's
 * own root (volatile: a tmpfs root, /etc and /usr as overlays whose changes vanish with it),
 * sharing the host's network, its sshd on a loopback port. The deployed service then runs a job
 * for a client on the host.
 */
Deno.test(withSkip({
  name:
    "deploy to a systemd-nspawn container: unit enabled and running, serves jobs, status, certs, reload",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "jobworker-nspawn-" });
    const machine = `jwdeploy${Math.floor(Math.random() * 1e6)}`;
    const pki = await makePki();
    let container: Deno.ChildProcess | undefined;
    try {
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
      container = new Deno.Command("systemd-nspawn", {
        args: [
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
      let booted = "";
      for (let i = 0; i < 120 && !/^(running|degraded)/.test(booted); i++) {
        booted = (await inside("systemctl is-system-running")).out.trim();
        if (!/^(running|degraded)/.test(booted)) await new Promise((r) => setTimeout(r, 500));
      }
      assert.match(booted, /^(running|degraded)/, "the container did not boot");
      assert.equal((await inside("cat /proc/1/comm")).out.trim(), "systemd");

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
      assert.match(deployed.out, /--- last log lines ---[\s\S]*listening/);
      assert.equal((await inside("systemctl is-enabled jobworker")).out.trim(), "enabled");
      const props = (await inside(
        "systemctl show -p Delegate -p KillMode -p Restart jobworker",
      )).out;
      assert.match(props, /Delegate=yes/);
      assert.match(props, /KillMode=mixed/);
      assert.match(props, /Restart=on-failure/);

      // A client on the host runs a job on the deployed worker.
      const { clientFor, collectOutput } = await import("./helpers/clients.ts");
      const client = clientFor(pki.dir, `localhost:${apiPort}`, "admin");
      try {
        const job = await client.createJob({ command: "sh", args: ["-c", "echo deployed"] });
        const out = await collectOutput(client, job.id);
        assert.equal(out.stdout, "deployed\n");
      } finally {
        client.close();
      }
      const status = await deploy("status");
      assert.equal(status.code, 0, status.out);
      assert.match(status.out, /active \(running\)/);
      const certs = await deploy("certs");
      assert.equal(certs.code, 0, certs.out);
      assert.match(certs.out, /DNS:localhost/);
      const reloaded = await deploy("deploy", { RELOAD: "1" });
      assert.equal(reloaded.code, 0, reloaded.out);
      assert.match(reloaded.out, /jobworker reloaded on localhost/);
      assert.match(reloaded.out, /has its server certificate; kept/);
    } finally {
      if (container) {
        container.kill("SIGTERM");
        const timer = setTimeout(() => container?.kill("SIGKILL"), 30_000);
        await container.status;
        clearTimeout(timer);
      }
      await Deno.remove(`/run/systemd/nspawn/propagate/${machine}`, { recursive: true }).catch(
        () => {},
      );
      await pki.remove();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
}, {
  // Deploy, enable and start work there (the service is active with Delegate=yes, KillMode=mixed,
  // Restart=on-failure), but inside nspawn on this cgroup v1 host the controller hierarchies are
  // read-only, so CreateJob fails (EROFS creating the job cgroup). Known gap, reported on issue 9.
  reason: "job cgroups are read-only inside systemd-nspawn on this cgroup v1 host",
  allowedOnCI: true,
}));
