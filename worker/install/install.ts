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
uninstall: removes the program and the unit; the state directory and the certificates stay
unless --purge is given.

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

async function uninstall(layout: InstallLayout, purge: boolean): Promise<void> {
  const root = layout.destDir;
  const remove = (path: string) =>
    Deno.remove(root + path, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  await remove(`${layout.unitDir}/jobworker.service`);
  await remove(layout.program);
  // A self-contained installation (`make install` without a compiled binary) keeps its deno and
  // code in PREFIX/lib/jobworker beside PREFIX/bin/jobworker: the program as much as the launcher.
  const lib = layout.program.replace(/\/bin\/jobworker$/, "/lib/jobworker");
  if (lib !== layout.program) await remove(lib);
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
