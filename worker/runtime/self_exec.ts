/**
 * How to start this same program again as `jobworker init`: the compiled binary is simply run
 * again; under `deno run` it is the deno executable running main.ts.
 */

/** True inside a `deno compile`d executable (then this program is not the deno CLI). */
export function isCompiled(): boolean {
  const program = Deno.execPath().split("/").pop() ?? "";
  return Deno.mainModule.includes("/deno-compile-") || !program.startsWith("deno");
}

export interface SelfCommand {
  path: string;
  /** argv, starting with argv[0]; the subcommand's arguments are appended by the caller. */
  argv: string[];
  /** The environment the program itself needs (not the job's). */
  env: string[];
}

export function selfCommand(): SelfCommand {
  // The running program itself, even once its file was replaced or deleted (an upgrade in place):
  // an init of the same version as the worker, and no "(deleted)" path that cannot be exec'd.
  const path = "/proc/self/exe";
  const env = ["NO_COLOR=1", "DENO_NO_UPDATE_CHECK=1", "PATH=/usr/local/bin:/usr/bin:/bin"];
  if (isCompiled()) return { path, argv: ["jobworker"], env };
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env.push(`${name}=${value}`);
  }
  const main = new URL("../../main.ts", import.meta.url).pathname;
  return {
    path,
    // init imports only relative modules: without the config (and so without node_modules and
    // its lock) Deno starts in about half the time.
    argv: [
      "deno",
      "run",
      "--quiet",
      "--no-config",
      "--allow-all",
      "--no-prompt",
      "--cached-only",
      main,
    ],
    env,
  };
}

/**
 * What a job must not be able to change of this program: the executable and, under `deno run`,
 * the source tree init runs from (and Deno's cache of it), since the next job's init runs them as
 * root.
 */
export function programPaths(): string[] {
  const paths = [Deno.execPath()];
  if (isCompiled()) return paths;
  paths.push(new URL("../..", import.meta.url).pathname.replace(/\/$/, ""));
  const denoDir = Deno.env.get("DENO_DIR");
  if (denoDir) paths.push(denoDir);
  return paths;
}
