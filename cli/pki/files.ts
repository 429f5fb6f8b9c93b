/**
 * Certificate and key files: `<name>-cert.pem` (mode 0644) and `<name>-key.pem` (mode 0600).
 *
 * Files are written to a temporary file in the same directory, created with its final mode (a key
 * is never readable by others, not even for a moment), then moved into place, so a reader never
 * sees a half-written file.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import type { PemKeyPair } from "./types.ts";

/** Mode of certificate files. */
export const CERT_FILE_MODE = 0o644;
/** Mode of private key files. */
export const KEY_FILE_MODE = 0o600;

/** The paths of a key pair's two files. */
export interface KeyPairPaths {
  /** `<dir>/<name>-cert.pem` */
  certPath: string;
  /** `<dir>/<name>-key.pem` */
  keyPath: string;
}

/**
 * Returns the paths of the files of a key pair.
 *
 * @param dir The directory.
 * @param name The base name, e.g. `ca`, `server` or `admin-client`.
 */
export function keyPairPaths(dir: string, name: string): KeyPairPaths {
  return { certPath: join(dir, `${name}-cert.pem`), keyPath: join(dir, `${name}-key.pem`) };
}

/** Which files of a key pair exist. */
export interface KeyPairPresence extends KeyPairPaths {
  /** Whether `<name>-cert.pem` exists. */
  certExists: boolean;
  /** Whether `<name>-key.pem` exists. */
  keyExists: boolean;
}

/**
 * Tells which files of a key pair exist.
 *
 * @param dir The directory.
 * @param name The base name.
 * @throws {Error} If a path exists but is not a regular file, or cannot be examined.
 */
export async function inspectKeyPair(dir: string, name: string): Promise<KeyPairPresence> {
  const paths = keyPairPaths(dir, name);
  const [certExists, keyExists] = await Promise.all([
    isFile(paths.certPath),
    isFile(paths.keyPath),
  ]);
  return { ...paths, certExists, keyExists };
}

async function isFile(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) {
      throw new Error(`"${path}" exists but is not a regular file`);
    }
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return false;
    }
    if (error instanceof Error && error.message.startsWith(`"${path}"`)) {
      throw error;
    }
    throw new Error(`Cannot examine "${path}": ${describe(error)}`, { cause: error });
  }
}

/**
 * Reads both files of a key pair.
 *
 * @param dir The directory.
 * @param name The base name.
 * @returns The PEM texts.
 * @throws {Error} If a file is missing or unreadable; the message names the file.
 */
export async function readKeyPair(dir: string, name: string): Promise<PemKeyPair> {
  const { certPath, keyPath } = keyPairPaths(dir, name);
  const [certPem, keyPem] = await Promise.all([readText(certPath), readText(keyPath)]);
  return { certPem, keyPem };
}

async function readText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read "${path}": ${describe(error)}`, { cause: error });
  }
}

/** Options of {@link writeKeyPair}. */
export interface WriteKeyPairOptions {
  /**
   * Replace files that exist. Default `false`: an existing file makes the call fail with
   * `Deno.errors.AlreadyExists` and nothing of the pair is left behind.
   */
  overwrite?: boolean | undefined;
}

/**
 * Writes a certificate and its key as `<dir>/<name>-cert.pem` (mode 0644) and
 * `<dir>/<name>-key.pem` (mode 0600; created with that mode, never chmod'ed afterwards). The
 * directory is created if missing. Each file appears complete or not at all.
 *
 * @param dir The directory.
 * @param name The base name, e.g. `server`.
 * @param pair The PEM texts.
 * @param options Whether to replace existing files.
 * @returns The paths written.
 * @throws {Deno.errors.AlreadyExists} If a file exists and `overwrite` is not set.
 * @throws {Error} If the directory or a file cannot be written; the message names the path.
 *
 * @example
 * ```ts
 * const ca = await createCA();
 * await writeKeyPair("certs", "ca", ca); // certs/ca-cert.pem, certs/ca-key.pem
 * ```
 */
export async function writeKeyPair(
  dir: string,
  name: string,
  pair: PemKeyPair,
  options: WriteKeyPairOptions = {},
): Promise<KeyPairPaths> {
  const paths = keyPairPaths(dir, name);
  await ensureDirectory(dir);
  const overwrite = options.overwrite ?? false;
  await writeFileAtomic(paths.keyPath, pair.keyPem, KEY_FILE_MODE, overwrite);
  try {
    await writeFileAtomic(paths.certPath, pair.certPem, CERT_FILE_MODE, overwrite);
  } catch (error) {
    if (!overwrite) {
      // Leave no key behind without its certificate.
      await Deno.remove(paths.keyPath).catch(() => {});
    }
    throw error;
  }
  return paths;
}

/**
 * Creates a directory (and its parents) if missing.
 *
 * @throws {Error} If it cannot be created or the path is not a directory.
 */
export async function ensureDirectory(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (error) {
    throw new Error(`Cannot create directory "${dir}": ${describe(error)}`, { cause: error });
  }
}

async function writeFileAtomic(
  path: string,
  text: string,
  mode: number,
  overwrite: boolean,
): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${crypto.randomUUID()}.tmp`);
  try {
    const file = await Deno.open(temporary, { write: true, createNew: true, mode });
    try {
      const bytes = new TextEncoder().encode(text);
      for (let offset = 0; offset < bytes.length;) {
        offset += await file.write(bytes.subarray(offset));
      }
      await file.syncData();
    } finally {
      file.close();
    }
    if (overwrite) {
      await Deno.rename(temporary, path);
    } else {
      // link() fails if the target exists: no check-then-write race.
      await Deno.link(temporary, path);
    }
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new Deno.errors.AlreadyExists(`"${path}" already exists`, { cause: error });
    }
    throw new Error(`Cannot write "${path}": ${describe(error)}`, { cause: error });
  } finally {
    await Deno.remove(temporary).catch(() => {});
  }
}

function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  // Deno appends the path to OS errors ("..., open '/x/y'"); the caller names the path itself.
  return message.replace(/(\(os error \d+\)).*$/, "$1");
}
