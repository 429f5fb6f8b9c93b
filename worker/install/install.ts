/**
 * `jobworker install` and `jobworker uninstall`: put the program on this host as a systemd
 * service, or take it off. A compiled binary copies itself; `make install` copies the
 * self-contained directory and then runs `install --unit-only` for the rest.
 */
import { parseArgs } from "node:util";
import { defaultLayout, envFile, type InstallLayout, unitFile } from "./layout.ts";

export const INSTALL_HELP = `Usage: jobworker install [options]
       jobworker uninstall [--purge] [options]

install: copies this program to PREFIX/bin/jobworker (a compiled binary only; from a checkout use
\`make install\`), writes the systemd unit jobworker.service, /etc/jobworker/jobworker.env (kept
when present) and creates /etc/jobworker/certs and /var/lib/jobworker (mode 0700).
uninstall: removes the program and the unit (and PREFIX/lib/jobworker when it is a self-contained
installation); the state directory and the certificates stay unless --purge is given. It refuses
while the jobworker service is active: \`systemctl disable --now jobworker\` first, or use
\`make uninstall\`, which stops it.

Options:
  --prefix DIR     where bin/jobworker goes (/usr/local)
  --destdir DIR    prepend DIR to every path (packaging, tests)
  --unit-only      write the unit, env file and directories, not the program
  --purge          uninstall: also remove /etc/jobworker and /var/lib/jobworker
  -h, --help       show this help`;

/** True when this process is a `deno compile`d jobworker rather than deno running main.ts. */
function isCompiled(): boolean {
  return !/(^|\/)deno$/.test(Deno.execPath());
}

async function writeIfChanged(path: string, text: string, mode: number): Promise<void> {
  await Deno.writeTextFile(path, text, { mode });
  await Deno.chmod(path, mode);
}

async function install(layout: InstallLayout, unitOnly: boolean): Promise<void> {
  const root = layout.destDir;
  const dir = (path: string, mode: number) =>
    Deno.mkdir(root + path, { recursive: true, mode }).then(() => Deno.chmod(root + path, mode));
  if (!unitOnly) {
    if (!isCompiled()) {
      throw new Error("this is not a compiled jobworker: from a checkout, run `make install`");
    }
    const target = root + layout.program;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    // Copy beside the target, then rename: replacing a running binary in place would fail.
    await Deno.copyFile(Deno.execPath(), `${target}.new`);
    await Deno.chmod(`${target}.new`, 0o755);
    await Deno.rename(`${target}.new`, target);
  }
  await dir(layout.configDir, 0o755);
  await dir(`${layout.configDir}/certs`, 0o700);
  await dir(layout.stateDir, 0o700);
  await dir(layout.unitDir, 0o755);
  await writeIfChanged(`${root}${layout.unitDir}/jobworker.service`, unitFile(layout), 0o644);
  const env = `${root}${layout.configDir}/jobworker.env`;
  try {
    await Deno.lstat(env);
  } catch {
    await writeIfChanged(env, envFile(layout), 0o600);
  }
  console.log(
    `installed ${layout.program} and ${layout.unitDir}/jobworker.service` +
      (root ? ` under ${root}` : ""),
  );
}

/** The first lines of the launcher `make install` writes (scripts/install.sh). */
const LAUNCHER_MARKER =
  "# jobworker: runs the self-contained installation in ../lib/jobworker (written by `make install`).";

/** True when `systemctl is-active jobworker` says active; false without systemctl. */
async function serviceActive(): Promise<boolean> {
  try {
    const out = await new Deno.Command("systemctl", {
      args: ["is-active", "jobworker"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    // Anything but stopped: "activating" (a restart loop too), "reloading" and "deactivating"
    // all have a worker running from the installed program.
    const state = new TextDecoder().decode(out.stdout).trim();
    return state !== "" && !["inactive", "failed", "unknown"].includes(state);
  } catch {
    return false; // no systemctl: no service to run from here
  }
}

/**
 * True when `lib` is a self-contained installation to remove with the program: `program` is the
 * launcher `make install` writes, or `lib` holds its `deno` and `app/main.ts`. Anything else
 * there is not ours to remove (a compiled-binary install never makes it).
 */
async function isSelfContained(program: string, lib: string): Promise<boolean> {
  try {
    // The head only: a compiled binary is some 100 MB.
    using file = await Deno.open(program);
    const head = new Uint8Array(512);
    const n = await file.read(head) ?? 0;
    const lines = new TextDecoder().decode(head.subarray(0, n)).split("\n", 3);
    if (lines.includes(LAUNCHER_MARKER)) return true;
  } catch {
    // missing or unreadable: look at the directory itself
  }
  try {
    return (await Deno.stat(`${lib}/deno`)).isFile &&
      (await Deno.stat(`${lib}/app/main.ts`)).isFile;
  } catch {
    return false;
  }
}

async function uninstall(layout: InstallLayout, purge: boolean): Promise<void> {
  const root = layout.destDir;
  // A running worker starts each job's init from the program's directory and re-executes itself
  // from it on reload: taking it away under the service breaks every new job and reload.
  if (root === "" && await serviceActive()) {
    throw new Error(
      "the jobworker service is running: stop it first (systemctl disable --now jobworker), " +
        "or run `make uninstall`, which does",
    );
  }
  const remove = (path: string) =>
    Deno.remove(root + path, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  // A self-contained installation (`make install` without a compiled binary) keeps its deno and
  // code in PREFIX/lib/jobworker beside PREFIX/bin/jobworker: the program as much as the launcher.
  const lib = layout.program.replace(/\/bin\/jobworker$/, "/lib/jobworker");
  const withLib = lib !== layout.program &&
    await isSelfContained(root + layout.program, root + lib);
  await remove(`${layout.unitDir}/jobworker.service`);
  await remove(layout.program);
  if (withLib) await remove(lib);
  if (purge) {
    await remove(layout.configDir);
    await remove(layout.stateDir);
  }
  console.log(
    purge
      ? "removed jobworker, its unit, configuration, certificates and state"
      : `removed jobworker and its unit; kept ${layout.configDir} and ${layout.stateDir} (--purge removes them)`,
  );
}

export async function runInstall(
  command: "install" | "uninstall",
  args: string[],
): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args,
      options: {
        prefix: { type: "string" },
        destdir: { type: "string" },
        "unit-only": { type: "boolean" },
        purge: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    console.error(
      `jobworker ${command}: ${(e as Error).message} (see jobworker ${command} --help)`,
    );
    return 2;
  }
  if (values.help) {
    console.log(INSTALL_HELP);
    return 0;
  }
  const layout = { ...defaultLayout(values.prefix), destDir: values.destdir ?? "" };
  try {
    if (command === "install") await install(layout, values["unit-only"] === true);
    else await uninstall(layout, values.purge === true);
    return 0;
  } catch (e) {
    console.error(`jobworker ${command}: ${(e as Error).message}`);
    return 1;
  }
}
