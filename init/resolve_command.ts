/** Finds the file a job's command names, the way execvp would, so that failures are clear. */
import { quoted } from "../worker/log/quoted.ts";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export type Resolution = { ok: true; path: string } | { ok: false; errno: number; message: string };

const F_OK = 0;
const X_OK = 1;
const EACCES = 13;

/** errno of access(path, mode) for the job's user (mode F_OK or X_OK); 0 when allowed. */
export type AccessCheck = (path: string, mode: number) => number;

function executable(path: string, access?: AccessCheck): Resolution {
  // Most directories of a PATH do not hold the command: access(2) says so without an exception
  // (init's first few failed stats cost it 0.4-2 ms, on the job's start path).
  const absent = access?.(path, F_OK) ?? 0;
  if (absent !== 0 && absent !== EACCES) {
    return { ok: false, errno: 2, message: `command not found: ${quoted(path)}` };
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) {
      return {
        ok: false,
        errno: 13,
        message: `${quoted(path)} cannot be reached by the job's user`,
      };
    }
    return { ok: false, errno: 2, message: `command not found: ${quoted(path)}` };
  }
  if (info.isDirectory) return { ok: false, errno: 21, message: `${quoted(path)} is a directory` };
  if (((info.mode ?? 0) & 0o111) === 0) {
    return { ok: false, errno: 13, message: `${quoted(path)} is not executable` };
  }
  const denied = access?.(path, X_OK) ?? 0;
  if (denied !== 0) {
    return {
      ok: false,
      errno: denied,
      message: `${quoted(path)} is not executable by the job's user`,
    };
  }
  return { ok: true, path };
}

/**
 * Resolves `command` against the job's environment: a name with a slash is used as it is
 * (relative to the working directory), a bare name is looked up in the job's PATH.
 */
export function resolveCommand(
  command: string,
  env: readonly string[],
  access?: AccessCheck,
): Resolution {
  if (command.includes("/")) return executable(command, access);
  const pathVar = env.findLast((e) => e.startsWith("PATH="))?.slice(5) ?? DEFAULT_PATH;
  let firstProblem: Resolution | undefined;
  for (const dir of pathVar.split(":")) {
    const found = executable(`${dir || "."}/${command}`, access);
    if (found.ok) return found;
    if (found.errno !== 2) firstProblem ??= found;
  }
  return firstProblem ??
    {
      ok: false,
      errno: 2,
      message: `command not found: ${quoted(command)} (PATH=${quoted(pathVar)})`,
    };
}
