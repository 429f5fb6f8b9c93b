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

Without --prefix, uninstall uses the prefix this program is installed under when it runs from an
installation (PREFIX/lib/jobworker/deno running PREFIX/lib/jobworker/app/main.ts beside the
launcher \`make install\` writes, or a compiled PREFIX/bin/jobworker that the unit's ExecStart runs),
/usr/local when it runs from a checkout; it says which. An installed program whose installation it
cannot confirm (a compiled binary no unit runs, a path through a symlink) asks for --prefix (exit 2).
The unit is removed only when its ExecStart runs PREFIX/bin/jobworker (symlinks resolved).

Options:
  --prefix DIR     where bin/jobworker goes (install: /usr/local; uninstall: see above)
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

/** What this process runs: its executable and, under deno (not compiled), its main.ts. */
export interface RunningProgram {
  execPath: string;
  main: string | undefined;
}

function runningProgram(): RunningProgram {
  return {
    execPath: Deno.execPath(),
    main: isCompiled() ? undefined : new URL("../../main.ts", import.meta.url).pathname,
  };
}

/** The path with every symlink resolved; undefined when it does not exist. */
function realPath(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The prefix `program` is installed under (beneath `destDir`), when its own paths are the layout
 * an install writes: a self-contained installation (`make install`: PREFIX/lib/jobworker/deno
 * running PREFIX/lib/jobworker/app/main.ts), or a compiled PREFIX/bin/jobworker that the unit
 * runs (its ExecStart). The unit must say so for a compiled binary: a build tree's bin/jobworker
 * has the same shape, and taking its parent for a prefix would remove what is not an
 * installation. Undefined otherwise (a checkout, `deno run`, a binary no unit runs, a program
 * outside `destDir`): see defaultUninstallPrefix.
 */
export function installedPrefix(
  destDir: string,
  program: RunningProgram = runningProgram(),
): string | undefined {
  const root = destDir === "" ? "" : realPath(destDir);
  if (root === undefined) return undefined;
  const exe = realPath(program.execPath);
  if (exe === undefined) return undefined;
  if (program.main !== undefined) {
    const lib = /^(.*)\/lib\/jobworker\/deno$/.exec(exe)?.[1];
    if (lib === undefined || realPath(program.main) !== `${lib}/lib/jobworker/app/main.ts`) {
      return undefined;
    }
    // The resolved path is the prefix only if its bin/jobworker is the launcher: with a symlink on
    // the way (PREFIX/lib -> /data/lib) it is not, and /data/bin/jobworker is someone else's.
    if (!isLauncher(`${lib}/bin/jobworker`)) return undefined;
    if (root === "" || root === "/") return lib;
    return lib === root || lib.startsWith(`${root}/`) ? lib.slice(root.length) : undefined;
  }
  if (!exe.endsWith("/bin/jobworker")) return undefined;
  const runs = unitRuns(`${destDir}${defaultLayout().unitDir}/jobworker.service`);
  const prefix = runs?.match(/^(.*)\/bin\/jobworker$/)?.[1];
  return prefix !== undefined && realPath(`${destDir}${runs}`) === exe ? prefix : undefined;
}

/**
 * The prefix `uninstall` takes without --prefix, and why: the installation this program runs
 * from, else /usr/local for a program run from a checkout. Undefined for an installed-looking
 * program (compiled, or a self-contained deno) whose installation cannot be confirmed: falling
 * back to /usr/local there could remove another installation.
 */
export function defaultUninstallPrefix(
  destDir: string,
  program: RunningProgram = runningProgram(),
): { prefix: string; why: string } | undefined {
  const found = installedPrefix(destDir, program);
  if (found !== undefined) return { prefix: found, why: "the one this program is installed under" };
  const exe = realPath(program.execPath) ?? program.execPath;
  const main = program.main === undefined ? undefined : realPath(program.main) ?? program.main;
  if (
    main === undefined || exe.endsWith("/lib/jobworker/deno") ||
    main.endsWith("/lib/jobworker/app/main.ts")
  ) return undefined;
  return { prefix: "/usr/local", why: "the default: this program runs from a checkout" };
}

/** The first lines of the launcher `make install` writes (scripts/install.sh). */
const LAUNCHER_MARKER =
  "# jobworker: runs the self-contained installation in ../lib/jobworker (written by `make install`).";

/** True when `path` starts with the launcher `make install` writes. */
function isLauncher(path: string): boolean {
  try {
    using file = Deno.openSync(path);
    // The head only: a compiled binary is some 100 MB.
    const head = new Uint8Array(512);
    const n = file.readSync(head) ?? 0;
    return new TextDecoder().decode(head.subarray(0, n)).split("\n", 3).includes(LAUNCHER_MARKER);
  } catch {
    return false;
  }
}

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
  if (isLauncher(program)) return true;
  try {
    return (await Deno.stat(`${lib}/deno`)).isFile &&
      (await Deno.stat(`${lib}/app/main.ts`)).isFile;
  } catch {
    return false;
  }
}

/**
 * The program a unit file runs: the first word of its last ExecStart; null without a unit file,
 * "" for a unit with no ExecStart.
 */
function unitRuns(unit: string): string | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(unit);
  } catch {
    return null;
  }
  const starts = [...text.matchAll(/^ExecStart=\s*(\S*)/gm)];
  return starts.at(-1)?.[1] ?? "";
}

/** Whether two paths (beneath `root`) name the same file: a symlinked prefix resolves alike. */
function samePath(root: string, a: string, b: string): boolean {
  return a === b || (realPath(root + a) ?? a) === (realPath(root + b) ?? b);
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
  // The unit goes only when it runs this installation's program: another installation's service
  // (or the host's, when a staging tree's program is run without --destdir) stays.
  const unitPath = `${layout.unitDir}/jobworker.service`;
  const runs = unitRuns(root + unitPath);
  const unitOurs = runs !== null && samePath(root, runs, layout.program);
  if (unitOurs) await remove(unitPath);
  else if (runs !== null) {
    console.log(`kept ${unitPath}: it runs ${runs || "no ExecStart"}, not ${layout.program}`);
  }
  await remove(layout.program);
  if (withLib) await remove(lib);
  if (purge) {
    await remove(layout.configDir);
    await remove(layout.stateDir);
  }
  const what = unitOurs ? "jobworker and its unit" : "jobworker";
  console.log(
    purge
      ? `removed ${what}, configuration, certificates and state`
      : `removed ${what}; kept ${layout.configDir} and ${layout.stateDir} (--purge removes them)`,
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
  const destDir = values.destdir ?? "";
  let prefix = values.prefix;
  if (command === "uninstall" && prefix === undefined) {
    // The installation this program runs from, not /usr/local's when it is installed elsewhere.
    const chosen = defaultUninstallPrefix(destDir);
    if (chosen === undefined) {
      console.error(
        `jobworker uninstall: cannot tell which installation ${Deno.execPath()} belongs to ` +
          "(no unit runs it, its bin/jobworker is not the launcher, or its path goes through a symlink): give --prefix DIR",
      );
      return 2;
    }
    prefix = chosen.prefix;
    console.log(
      `jobworker uninstall: prefix ${prefix || "/"} (${chosen.why}; --prefix DIR names another)`,
    );
  }
  const layout = { ...defaultLayout(prefix), destDir };
  try {
    if (command === "install") await install(layout, values["unit-only"] === true);
    else await uninstall(layout, values.purge === true);
    return 0;
  } catch (e) {
    console.error(`jobworker ${command}: ${(e as Error).message}`);
    return 1;
  }
}
