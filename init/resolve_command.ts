/** Finds the file a job's command names, the way bash would, so that failures are clear. */
import { quoted } from "../worker/log/quoted.ts";
import { errnoName, errnoNumber, strerror } from "./shim/errno.ts";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export type Resolution =
  | { ok: true; path: string }
  | { ok: false; kind: LookupKind | "not-in-path"; errno: number; message: string };

const F_OK = 0;
const X_OK = 1;
const ENOENT = 2;
const EACCES = 13;

/** errno of access(path, mode) for the job's user (mode F_OK or X_OK); 0 when allowed. */
export type AccessCheck = (path: string, mode: number) => number;

/** Why a file cannot be the job's command, as init and the direct start (jwdirect.c) find it. */
export const LOOKUP_KINDS = [
  "not-found",
  "unresolvable",
  "unreachable",
  "directory",
  "not-executable",
  "denied",
] as const;
export type LookupKind = typeof LOOKUP_KINDS[number];

/**
 * The message for a command that cannot be used ({@link LookupKind}) at `path`; `errno` is what
 * the lookup failed with (said for "unresolvable": a loop of symbolic links, a name through a
 * file, a name too long).
 */
export function lookupMessage(kind: LookupKind, path: string, errno: number): string {
  switch (kind) {
    case "not-found":
      return `command not found: ${quoted(path)}`;
    case "unresolvable":
      return `${quoted(path)} cannot be looked up: ${errnoName(errno)} (${strerror(errno)})`;
    case "unreachable":
      return `${quoted(path)} cannot be reached by the job's user`;
    case "directory":
      return `${quoted(path)} is a directory`;
    case "not-executable":
      return `${quoted(path)} is not executable`;
    case "denied":
      return `${quoted(path)} is not executable by the job's user`;
  }
}

/** The message for a bare command found nowhere in the job's PATH. */
export function notInPathMessage(command: string, pathVar: string): string {
  return `command not found: ${quoted(command)} (PATH=${quoted(pathVar)})`;
}

/** The PATH a bare command is looked up in: the job's own, else execvp's default. */
export function searchPath(env: readonly string[]): string {
  return env.findLast((e) => e.startsWith("PATH="))?.slice(5) ?? DEFAULT_PATH;
}

function problem(kind: LookupKind, errno: number, path: string): Resolution {
  return { ok: false, kind, errno, message: lookupMessage(kind, path, errno) };
}

/** A path that is not there (ENOENT) is not found; any other errno cannot be looked up. */
function unresolved(errno: number, path: string): Resolution {
  return errno === ENOENT
    ? problem("not-found", ENOENT, path)
    : problem("unresolvable", errno, path);
}

/** The errno of a failed Deno call ("(os error 40)", or its code "ELOOP"); ENOENT if neither. */
function errnoOf(e: unknown): number {
  const code = (e as { code?: unknown })?.code;
  const named = typeof code === "string" ? errnoNumber(code) : undefined;
  if (named !== undefined) return named;
  const os = /\(os error (\d+)\)/.exec(e instanceof Error ? e.message : "");
  return os ? Number(os[1]) : ENOENT;
}

function executable(path: string, access?: AccessCheck): Resolution {
  // Most directories of a PATH do not hold the command: access(2) says so without an exception
  // (init's first few failed stats cost it 0.4-2 ms, on the job's start path).
  const absent = access?.(path, F_OK) ?? 0;
  if (absent !== 0 && absent !== EACCES) return unresolved(absent, path);
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.PermissionDenied) return problem("unreachable", 13, path);
    return unresolved(errnoOf(e), path);
  }
  if (info.isDirectory) return problem("directory", 21, path);
  if (((info.mode ?? 0) & 0o111) === 0) return problem("not-executable", 13, path);
  const denied = access?.(path, X_OK) ?? 0;
  if (denied !== 0) return problem("denied", denied, path);
  return { ok: true, path };
}

/**
 * Resolves `command` against the job's environment: a name with a slash is used as it is
 * (relative to the working directory), and what keeps it from being used is said, errno and all; a
 * bare name is looked up in the job's PATH as bash looks it up: an entry where the name is not
 * there or cannot be looked up (ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG: bash's stat fails) is
 * passed over, the first one found that cannot be used (a directory, no x bit, EACCES) is said
 * if no later entry has the command, and "command not found" if no entry has it at all.
 */
export function resolveCommand(
  command: string,
  env: readonly string[],
  access?: AccessCheck,
): Resolution {
  if (command.includes("/")) return executable(command, access);
  const pathVar = searchPath(env);
  let firstProblem: Resolution | undefined;
  for (const dir of pathVar.split(":")) {
    const found = executable(`${dir || "."}/${command}`, access);
    if (found.ok) return found;
    if (found.kind !== "not-found" && found.kind !== "unresolvable") firstProblem ??= found;
  }
  return firstProblem ??
    { ok: false, kind: "not-in-path", errno: ENOENT, message: notInPathMessage(command, pathVar) };
}
