/**
 * Reading and writing cgroup files. Writes that apply a limit turn a failing system call into a
 * {@link LimitError} that names the limit, the file and the errno; reads of usage files never throw
 * (a missing file reads as absent, so usage works after the cgroup is gone).
 */
import { LimitError, type LimitName } from "./types.ts";
import { errnoName } from "../../init/shim/errno.ts";
import { denoFileBatch, type FileBatch, type FileOp, type FileOpResult } from "./file_batch.ts";

/**
 * The errno name of a failed Deno file operation ("EBUSY", "ENODEV", ...): from the "(os error N)"
 * in its message (Deno sets `code` only for some errnos), else its `code`, else its name.
 */
export function errnoOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const number = /\(os error (\d+)\)/.exec(error.message)?.[1];
  if (number !== undefined) return errnoName(Number(number));
  const code = (error as Error & { code?: unknown }).code;
  return typeof code === "string" ? code : error.name;
}

/** "EACCES (Permission denied (os error 13))": errno plus the system's text, without the path. */
export function describeErrno(error: unknown): string {
  const errno = errnoOf(error);
  const message = error instanceof Error ? error.message : String(error);
  const text = message.replace(/: [a-z]+ '.*'$/s, "");
  return text && text !== errno ? `${errno} (${text})` : errno;
}

/** The file's text, or undefined when it cannot be read (missing, removed, not permitted). */
export function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** The file's first number (e.g. memory.current), or 0 when unreadable or not a number ("max"). */
export function readNumber(path: string): number {
  return parseNumber(readText(path));
}

/** A file's text's first number, or 0 when absent or not a number. */
export function parseNumber(text: string | undefined): number {
  const value = Number.parseInt(text ?? "", 10);
  return Number.isFinite(value) ? value : 0;
}

/** Reads a file's text, or undefined (readText, or texts read ahead by {@link readAhead}). */
export type FileReader = (path: string) => string | undefined;

/**
 * Reads every file `use` reads off the event loop, all in one `batch`, and returns a reader of
 * those texts. `use` is first run with a reader that finds nothing, which lists the files it wants
 * (it must read the same files or more when they are missing, as the usage readers do). `then`:
 * operations the same batch runs after the reads (`after`: how each went).
 */
export async function readAhead(
  use: (read: FileReader) => void,
  batch: FileBatch = denoFileBatch,
  then: readonly FileOp[] = [],
): Promise<{ read: FileReader; after: FileOpResult[] }> {
  const paths = new Set<string>();
  use((path) => {
    paths.add(path);
    return undefined;
  });
  const wanted = [...paths];
  const results = await batch.run([
    ...wanted.map((path) => ({ kind: "read", path }) as const),
    ...then,
  ]);
  const texts = new Map(wanted.map((path, i) => [path, results[i]!.text] as const));
  return { read: (path) => texts.get(path), after: results.slice(wanted.length) };
}

/** Parses "key value" lines (cpu.stat, memory.events, memory.oom_control) into a map. */
export function parseKeyValues(text: string | undefined): Map<string, number> {
  const result = new Map<string, number>();
  for (const line of (text ?? "").split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) {
      const number = Number(value);
      if (Number.isFinite(number)) result.set(key, number);
    }
  }
  return result;
}

/** True if the path exists (file or directory). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes `value` to an existing cgroup file; on failure throws a LimitError that says what was
 * being applied (`Cannot apply maxMemory: writing "33554432" to <path> failed: EINVAL (...)`).
 */
export function writeLimit(limit: LimitName, path: string, value: string): void {
  writeOrThrow(`Cannot apply ${limit}`, limit, path, value);
}

/**
 * Writes `value` to an existing cgroup file while setting the cgroup up (no particular limit);
 * on failure throws a LimitError starting with `what`, e.g. "Cannot enable controllers".
 */
export function writeSetup(what: string, path: string, value: string): void {
  writeOrThrow(what, undefined, path, value);
}

/** A failed write of `value` to `path` as a LimitError that says what was being done. */
export function writeError(
  what: string,
  limit: LimitName | undefined,
  path: string,
  value: string,
  error: unknown,
): LimitError {
  return new LimitError(`${what}: writing "${value}" to ${path} failed: ${describeErrno(error)}`, {
    limit,
    path,
    errno: errnoOf(error),
    cause: error,
  });
}

function writeOrThrow(
  what: string,
  limit: LimitName | undefined,
  path: string,
  value: string,
): void {
  try {
    Deno.writeTextFileSync(path, value, { create: false });
  } catch (error) {
    throw writeError(what, limit, path, value, error);
  }
}

/** Lists the names of the subdirectories (child cgroups) of a cgroup directory; none if missing. */
export function childDirs(dir: string): string[] {
  const names: string[] = [];
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.isDirectory) names.push(entry.name);
    }
  } catch {
    // missing or unreadable: no children
  }
  return names.sort();
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A failed mkdir of `dir`: false if it already existed, else a LimitError naming it. */
function mkdirFailed(dir: string, error: unknown): false {
  if (error instanceof Deno.errors.AlreadyExists) return false;
  throw mkdirError(dir, error);
}

/** A failed mkdir of `dir` other than "it exists", as a LimitError naming the directory. */
export function mkdirError(dir: string, error: unknown): LimitError {
  return new LimitError(`Cannot create cgroup ${dir}: ${describeErrno(error)}`, {
    path: dir,
    errno: errnoOf(error),
    cause: error,
  });
}

/** mkdir; false if it already existed; other errors throw a LimitError naming the directory. */
export function mkdirOnce(dir: string): boolean {
  try {
    Deno.mkdirSync(dir);
    return true;
  } catch (error) {
    return mkdirFailed(dir, error);
  }
}

/** rmdir that ignores failure (rolling back after an error: the dir may be in use or gone). */
export function rmdirQuietly(dir: string): void {
  try {
    Deno.removeSync(dir);
  } catch {
    // not empty (another job's), busy or gone
  }
}
