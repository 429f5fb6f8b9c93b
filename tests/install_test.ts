/**
 * `make install` / `make uninstall` (scripts/install.sh) into a temporary root: the
 * self-contained program runs from there without the network, the systemd unit passes
 * `systemd-analyze verify`, and uninstall keeps state and certificates unless PURGE=1.
 *
 * Run: `deno test -A tests/install_test.ts` (as root; systemd-analyze from `make test-tools`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { defaultUninstallPrefix, installedPrefix } from "../worker/install/install.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, { args, env, cwd: ROOT, stdin: "null" }).output();
  const d = new TextDecoder();
  return { code: o.code, out: d.decode(o.stdout) + d.decode(o.stderr) };
}

const mode = (path: string) => Deno.statSync(path).mode! & 0o777;
const exists = (path: string) => {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
};

/** The installed unit with its paths moved under `root`, so systemd-analyze can check them. */
function verifiableUnit(root: string, dir: string): string {
  const unit = Deno.readTextFileSync(`${root}/etc/systemd/system/jobworker.service`)
    .replaceAll("=/usr/local/", `=${root}/usr/local/`)
    .replaceAll("=/etc/jobworker/", `=${root}/etc/jobworker/`);
  Deno.writeTextFileSync(`${dir}/jobworker.service`, unit);
  return `${dir}/jobworker.service`;
}

Deno.test("install: a self-contained program, its unit and directories; uninstall keeps state unless PURGE=1", async () => {
  const root = await Deno.makeTempDir({ prefix: "jobworker-install-" });
  const check = await Deno.makeTempDir({ prefix: "jobworker-unit-" });
  const env = { DESTDIR: root, PREFIX: "/usr/local" };
  try {
    const installed = await run("bash", ["scripts/install.sh", "install", Deno.execPath()], env);
    assert.equal(installed.code, 0, installed.out);
    const bin = `${root}/usr/local/bin/jobworker`;
    assert.equal(mode(bin) & 0o111, 0o111);
    // Nothing of the installation points back into this checkout.
    const launcher = Deno.readTextFileSync(bin);
    assert.ok(!launcher.includes(ROOT), launcher);
    const outside = await run("find", [`${root}/usr/local/lib/jobworker`, "-lname", "/*"]);
    assert.equal(outside.out, "", "no absolute symlinks out of the installed directory");

    const unit = Deno.readTextFileSync(`${root}/etc/systemd/system/jobworker.service`);
    for (
      const line of [
        "Delegate=yes",
        "KillMode=mixed",
        "Restart=on-failure",
        // A malformed setting exits 2 and an unusable state 78: restarting every 2 s cannot help
        // (the unit restarted a bad LOG_LEVEL in jobworker.env for ever; its comment said not).
        "RestartPreventExitStatus=2 78",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "EnvironmentFile=/etc/jobworker/jobworker.env",
        "ExecStart=/usr/local/bin/jobworker serve",
      ]
    ) assert.ok(unit.split("\n").includes(line), `${line} missing from\n${unit}`);
    const verify = await run("systemd-analyze", ["verify", verifiableUnit(root, check)]);
    assert.equal(verify.code, 0, verify.out);
    assert.equal(verify.out.trim(), "", verify.out);
    // The check sees a broken unit: a missing program fails it.
    Deno.renameSync(bin, `${bin}.moved`);
    assert.notEqual(
      (await run("systemd-analyze", ["verify", `${check}/jobworker.service`])).code,
      0,
    );
    Deno.renameSync(`${bin}.moved`, bin);

    assert.equal(mode(`${root}/etc/jobworker/certs`), 0o700);
    assert.equal(mode(`${root}/var/lib/jobworker`), 0o700);
    assert.equal(mode(`${root}/etc/jobworker/jobworker.env`), 0o600);
    const envText = Deno.readTextFileSync(`${root}/etc/jobworker/jobworker.env`);
    assert.match(envText, /^JOB_WORKER_CERT_PATH=\/etc\/jobworker\/certs$/m);
    assert.match(envText, /^JOB_WORKER_STATE_DIR=\/var\/lib\/jobworker$/m);

    // The installed program runs with no network at all (a fresh network namespace), from /.
    for (const args of [["serve", "--help"], ["install", "--help"], ["--help"]]) {
      const offline = await new Deno.Command("unshare", {
        args: ["-n", bin, ...args],
        cwd: "/",
        clearEnv: true,
        env: { PATH: "/usr/bin:/bin" },
      }).output();
      assert.equal(offline.code, 0, new TextDecoder().decode(offline.stderr));
    }

    // A changed env file survives a second install.
    Deno.writeTextFileSync(`${root}/etc/jobworker/jobworker.env`, envText + "LOG_LEVEL=debug\n");
    assert.equal(
      (await run("bash", ["scripts/install.sh", "install", Deno.execPath()], env)).code,
      0,
    );
    assert.match(
      Deno.readTextFileSync(`${root}/etc/jobworker/jobworker.env`),
      /LOG_LEVEL=debug\n$/,
    );

    // The installed program's own uninstall (README: "make uninstall (or jobworker uninstall)")
    // takes the self-contained directory too: it removed only the launcher and the unit, leaving
    // PREFIX/lib/jobworker (about 160 MB) with nothing left to remove it.
    const own = await run(bin, ["uninstall", "--destdir", root]);
    assert.equal(own.code, 0, own.out);
    assert.ok(!exists(bin));
    assert.ok(!exists(`${root}/usr/local/lib/jobworker`), "the self-contained directory is gone");
    assert.ok(!exists(`${root}/etc/systemd/system/jobworker.service`));
    assert.ok(exists(`${root}/etc/jobworker/jobworker.env`));
    assert.equal(
      (await run("bash", ["scripts/install.sh", "install", Deno.execPath()], env)).code,
      0,
    );

    Deno.writeTextFileSync(`${root}/etc/jobworker/certs/server-key.pem`, "key");
    Deno.writeTextFileSync(`${root}/var/lib/jobworker/records.db`, "state");
    const removed = await run("bash", ["scripts/install.sh", "uninstall", Deno.execPath()], env);
    assert.equal(removed.code, 0, removed.out);
    assert.ok(!exists(bin));
    assert.ok(!exists(`${root}/usr/local/lib/jobworker`));
    assert.ok(!exists(`${root}/etc/systemd/system/jobworker.service`));
    assert.ok(exists(`${root}/etc/jobworker/certs/server-key.pem`));
    assert.ok(exists(`${root}/var/lib/jobworker/records.db`));

    const purged = await run("bash", ["scripts/install.sh", "uninstall", Deno.execPath()], {
      ...env,
      PURGE: "1",
    });
    assert.equal(purged.code, 0, purged.out);
    assert.ok(!exists(`${root}/etc/jobworker`));
    assert.ok(!exists(`${root}/var/lib/jobworker`));
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
    await Deno.remove(check, { recursive: true }).catch(() => {});
  }
});

Deno.test({
  name:
    "install: the installed program serves jobs from its own directory; a reinstall under it leaves the running worker's program paths valid",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "jobworker-install-" });
    const env = { DESTDIR: root, PREFIX: "/usr/local" };
    const pki = await makePki();
    let worker: WorkerProcess | undefined;
    try {
      const installed = await run("bash", ["scripts/install.sh", "install", Deno.execPath()], env);
      assert.equal(installed.code, 0, installed.out);
      const lib = `${root}/usr/local/lib/jobworker`;
      worker = await WorkerProcess.start({
        certDir: pki.dir,
        program: `${root}/usr/local/bin/jobworker`,
      });
      const exe = () => Deno.readLinkSync(`/proc/${worker!.process.pid}/exe`);
      assert.equal(exe(), `${lib}/deno`);
      const client = clientFor(pki.dir, worker.address);
      try {
        // A job needs everything the installation must carry: the shim, jwstart (the direct start
        // of the first job), init's code, jwinit.
        const first = await client.createJob({ command: "echo", args: ["installed"] });
        assert.equal((await collectOutput(client, first.id)).stdout, "installed\n");
        const minimal = await client.createJob({ command: "true", init: true });
        await collectOutput(client, minimal.id);
        assert.equal((await client.getJob(minimal.id)).exitCode, 0);

        // Upgrading in place (make install or make deploy again) while it runs: the worker's
        // program and code paths stay valid, so its next jobs start and a reload finds itself.
        const again = await run("bash", ["scripts/install.sh", "install", Deno.execPath()], env);
        assert.equal(again.code, 0, again.out);
        assert.equal(exe(), `${lib}/deno`, "the running worker's deno was not replaced");
        assert.ok(!exists(`${lib}.old`) && !exists(`${lib}/app.old`));
        const next = await client.createJob({ command: "echo", args: ["after the upgrade"] });
        assert.equal((await collectOutput(client, next.id)).stdout, "after the upgrade\n");
      } finally {
        client.close();
      }
      assert.equal((await worker.stop()).code, 0);
      worker = undefined;
    } finally {
      if (worker) await worker.stop("SIGKILL");
      await pki.remove();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("make install: the compiled bin/jobworker when make build made one, else the self-contained directory, and it says which", async () => {
  const root = await Deno.makeTempDir({ prefix: "jobworker-install-" });
  try {
    const made = await run("make", ["--no-print-directory", "install", `DESTDIR=${root}`]);
    assert.equal(made.code, 0, made.out);
    const bin = `${root}/usr/local/bin/jobworker`;
    const head = Deno.readFileSync(bin).subarray(0, 4);
    const compiled = head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
    if (compiled) {
      // One file, the same as the build's, and no directory beside it.
      assert.deepEqual(Deno.readFileSync(bin), Deno.readFileSync(`${ROOT}/bin/jobworker`));
      assert.ok(!exists(`${root}/usr/local/lib/jobworker`));
    } else {
      assert.match(made.out, /bin\/jobworker is not a compiled executable/);
      assert.match(made.out, /installed a self-contained jobworker/);
      assert.ok(exists(`${root}/usr/local/lib/jobworker/app/build/jwinit`));
      assert.ok(exists(`${root}/usr/local/lib/jobworker/app/build/jwstart`));
      // `jobworker install` is for the compiled binary only, and says so.
      const refused = await run(bin, ["install", "--destdir", `${root}/other`]);
      assert.equal(refused.code, 1, refused.out);
      assert.match(refused.out, /not a compiled jobworker: from a checkout, run `make install`/);
    }
    assert.ok(exists(`${root}/etc/systemd/system/jobworker.service`));
    const version = await run(bin, ["serve", "--help"]);
    assert.equal(version.code, 0, version.out);
    assert.match(version.out, /LOG_FORMAT \(logfmt\)/);
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

Deno.test("uninstall: PREFIX/lib/jobworker goes only with a self-contained installation", async () => {
  const root = await Deno.makeTempDir({ prefix: "jobworker-install-" });
  try {
    const uninstall = () =>
      run(Deno.execPath(), ["run", "-A", "main.ts", "uninstall", "--destdir", root]);
    const bin = `${root}/usr/local/bin/jobworker`;
    const lib = `${root}/usr/local/lib/jobworker`;
    // A compiled-binary install never makes lib/jobworker: what is there is someone else's.
    Deno.mkdirSync(`${root}/usr/local/bin`, { recursive: true });
    Deno.mkdirSync(lib, { recursive: true });
    Deno.writeTextFileSync(bin, "\x7fELF not a launcher\n");
    Deno.writeTextFileSync(`${lib}/other.txt`, "not jobworker's");
    const kept = await uninstall();
    assert.equal(kept.code, 0, kept.out);
    assert.ok(!exists(bin));
    assert.ok(exists(`${lib}/other.txt`), "a directory that is no installation of ours stays");

    // make uninstall neither (it removed PREFIX/lib/jobworker itself, whatever it held).
    Deno.writeTextFileSync(bin, "\x7fELF not a launcher\n");
    const made = await run("bash", ["scripts/install.sh", "uninstall", Deno.execPath()], {
      DESTDIR: root,
      PREFIX: "/usr/local",
    });
    assert.equal(made.code, 0, made.out);
    assert.ok(exists(`${lib}/other.txt`), "make uninstall leaves it too");

    // Without the launcher, a directory holding deno and app/main.ts is still ours.
    Deno.mkdirSync(`${lib}/app`);
    Deno.writeTextFileSync(`${lib}/deno`, "");
    Deno.writeTextFileSync(`${lib}/app/main.ts`, "");
    const taken = await uninstall();
    assert.equal(taken.code, 0, taken.out);
    assert.ok(!exists(lib));
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

Deno.test("uninstall without --prefix: the prefix the running program is installed under, else /usr/local, and it says which", async () => {
  const root = await Deno.makeTempDir({ prefix: "jobworker-install-" });
  const elsewhere = await Deno.makeTempDir({ prefix: "jobworker-install-" });
  try {
    const installed = await run("bash", ["scripts/install.sh", "install", Deno.execPath()], {
      DESTDIR: root,
      PREFIX: "/opt/jw",
    });
    assert.equal(installed.code, 0, installed.out);
    const bin = `${root}/opt/jw/bin/jobworker`;
    const lib = `${root}/opt/jw/lib/jobworker`;
    const unit = `${root}/etc/systemd/system/jobworker.service`;
    assert.match(Deno.readTextFileSync(unit), /^ExecStart=\/opt\/jw\/bin\/jobworker serve$/m);
    // Someone else's program at the default prefix: uninstall took /usr/local whatever ran it, so
    // it removed this and left the installation it ran from.
    const other = `${root}/usr/local/bin/jobworker`;
    Deno.mkdirSync(`${root}/usr/local/bin`, { recursive: true });
    Deno.writeTextFileSync(other, "not this installation's\n");
    // The installation's program seen from outside DESTDIR is no installation there.
    const ownProgram = { execPath: `${lib}/deno`, main: `${lib}/app/main.ts` };
    assert.equal(installedPrefix(root, ownProgram), "/opt/jw");
    assert.equal(installedPrefix(elsewhere, ownProgram), undefined);

    const own = await run(bin, ["uninstall", "--destdir", root]);
    assert.equal(own.code, 0, own.out);
    assert.match(own.out, /prefix \/opt\/jw \(the one this program is installed under;/);
    assert.ok(!exists(bin), own.out);
    assert.ok(!exists(lib), "the self-contained directory is gone");
    assert.ok(!exists(unit));
    assert.ok(exists(`${root}/etc/jobworker/jobworker.env`), "configuration kept");
    assert.equal(Deno.readTextFileSync(other), "not this installation's\n");

    // From a checkout (deno running its main.ts): no installation of its own, so /usr/local. The
    // unit there runs /opt/jw's program, not /usr/local's: it stays.
    Deno.writeTextFileSync(bin, "left by hand\n");
    Deno.writeTextFileSync(unit, "[Service]\nExecStart=/opt/jw/bin/jobworker serve\n");
    const fromCheckout = () =>
      run(Deno.execPath(), ["run", "-A", "main.ts", "uninstall", "--destdir", root]);
    const checkout = await fromCheckout();
    assert.equal(checkout.code, 0, checkout.out);
    assert.match(
      checkout.out,
      /prefix \/usr\/local \(the default: this program runs from a checkout;/,
    );
    assert.ok(!exists(other));
    assert.ok(exists(bin), "the /opt/jw program is not the default's");
    assert.ok(exists(unit), "the unit of /opt/jw's program is not /usr/local's to remove");
    assert.match(checkout.out, /kept \/etc\/systemd\/system\/jobworker.service: it runs \/opt\/jw/);
    // A unit that runs /usr/local's program through a symlinked prefix, with more arguments, is
    // /usr/local's: it goes.
    Deno.writeTextFileSync(other, "the default's\n");
    Deno.symlinkSync("local", `${root}/usr/local-link`);
    Deno.writeTextFileSync(unit, "[Service]\nExecStart=/usr/local-link/bin/jobworker serve -v\n");
    const throughLink = await fromCheckout();
    assert.equal(throughLink.code, 0, throughLink.out);
    assert.ok(!exists(unit), throughLink.out);
    assert.ok(!exists(other));
    assert.equal(
      installedPrefix("", { execPath: Deno.execPath(), main: `${ROOT}main.ts` }),
      undefined,
    );

    // A compiled binary: a build tree's bin/jobworker has an installed one's shape, so the prefix
    // is taken only from a unit that runs this very program.
    const compiled = (path: string) => {
      Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      Deno.writeTextFileSync(path, "\x7fELF\n");
      return { execPath: path, main: undefined };
    };
    const build = compiled(`${elsewhere}/checkout/bin/jobworker`);
    const served = compiled(`${elsewhere}/srv/jw/bin/jobworker`);
    assert.equal(installedPrefix(elsewhere, served), undefined, "no unit");
    Deno.mkdirSync(`${elsewhere}/etc/systemd/system`, { recursive: true });
    Deno.writeTextFileSync(
      `${elsewhere}/etc/systemd/system/jobworker.service`,
      "[Service]\nExecStart=/srv/jw/bin/jobworker serve\n",
    );
    assert.equal(installedPrefix(elsewhere, served), "/srv/jw");
    assert.equal(installedPrefix(elsewhere, build), undefined, "the unit runs another");
    // Unconfirmed, a compiled program does not fall back to /usr/local: that may be another's.
    assert.equal(defaultUninstallPrefix(elsewhere, build), undefined);

    // A self-contained installation reached through a symlink (PREFIX/lib -> /real/lib): the
    // resolved path is not the prefix (/real/bin/jobworker is not its launcher).
    const realLib = `${elsewhere}/real/lib/jobworker`;
    Deno.mkdirSync(`${realLib}/app`, { recursive: true });
    Deno.writeTextFileSync(`${realLib}/deno`, "");
    Deno.writeTextFileSync(`${realLib}/app/main.ts`, "");
    Deno.mkdirSync(`${elsewhere}/real/bin`);
    Deno.writeTextFileSync(`${elsewhere}/real/bin/jobworker`, "someone else's\n");
    Deno.mkdirSync(`${elsewhere}/usr/local/bin`, { recursive: true });
    Deno.writeTextFileSync(
      `${elsewhere}/usr/local/bin/jobworker`,
      "#!/bin/sh\n# jobworker: runs the self-contained installation in ../lib/jobworker (written by `make install`).\n",
    );
    Deno.symlinkSync(`${elsewhere}/real/lib`, `${elsewhere}/usr/local/lib`);
    const linked = {
      execPath: `${elsewhere}/usr/local/lib/jobworker/deno`,
      main: `${elsewhere}/usr/local/lib/jobworker/app/main.ts`,
    };
    assert.equal(installedPrefix(elsewhere, linked), undefined, "not /real");
    assert.equal(defaultUninstallPrefix(elsewhere, linked), undefined);
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
    await Deno.remove(elsewhere, { recursive: true }).catch(() => {});
  }
});

Deno.test("uninstall: refused while the service is active, since the running worker runs from the program's directory", async () => {
  // Without the refusal this uninstall would remove the real unit: only run where there is none.
  if (exists("/etc/systemd/system/jobworker.service")) return;
  const prefix = await Deno.makeTempDir({ prefix: "jobworker-install-" });
  try {
    const bin = `${prefix}/bin/jobworker`;
    const lib = `${prefix}/lib/jobworker`;
    Deno.mkdirSync(`${prefix}/bin`);
    Deno.mkdirSync(`${lib}/app`, { recursive: true });
    Deno.writeTextFileSync(`${lib}/deno`, "");
    Deno.writeTextFileSync(`${lib}/app/main.ts`, "");
    Deno.writeTextFileSync(bin, "#!/bin/sh\n");
    // A systemctl that says what the service is doing (uninstall calls it by name, from PATH).
    Deno.mkdirSync(`${prefix}/fake`);
    const env = { PATH: `${prefix}/fake:${Deno.env.get("PATH")}` };
    /** `jobworker uninstall` while `systemctl is-active jobworker` says `state`. */
    const uninstallWhile = (state: string) => {
      Deno.writeTextFileSync(
        `${prefix}/fake/systemctl`,
        `#!/bin/sh\n[ "$1 $2" = "is-active jobworker" ] || exit 3\necho ${state}\n` +
          `[ ${state} = active ] && exit 0\nexit 3\n`,
      );
      Deno.chmodSync(`${prefix}/fake/systemctl`, 0o755);
      return run(Deno.execPath(), ["run", "-A", "main.ts", "uninstall", "--prefix", prefix], env);
    };
    for (const state of ["active", "activating"]) {
      const refused = await uninstallWhile(state);
      assert.equal(refused.code, 1, `${state}: ${refused.out}`);
      assert.match(
        refused.out,
        /service is running: stop it first \(systemctl disable --now jobworker\)/,
      );
      assert.match(refused.out, /make uninstall/);
      assert.ok(exists(bin) && exists(`${lib}/app/main.ts`), "nothing removed");
    }

    // Stopped (systemctl says inactive): it goes.
    const done = await uninstallWhile("inactive");
    assert.equal(done.code, 0, done.out);
    assert.ok(!exists(bin) && !exists(lib));
  } finally {
    await Deno.remove(prefix, { recursive: true }).catch(() => {});
  }
});
