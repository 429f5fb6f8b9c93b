/**
 * Finds the C shim, the direct start's program and the minimal init that ship inside this program and installs them as real
 * files in the state directory, since dlopen and exec need them (in a compiled binary they are
 * embedded files).
 */
import { Shim } from "../../init/shim/ffi.ts";

const EMBEDDED = new URL("../../build/libjwshim.so", import.meta.url);
const EMBEDDED_INIT = new URL("../../build/jwinit", import.meta.url);
const EMBEDDED_START = new URL("../../build/jwstart", import.meta.url);

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Copies an embedded file to `<stateDir>/lib/<name>-<hash><suffix>` once, with `mode`; returns the
 * path.
 */
async function install(stateDir: string, from: URL, name: string, suffix: string, mode: number) {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await Deno.readFile(from);
  } catch {
    throw new Error(`${from.pathname} is missing: build it with \`make shim\``);
  }
  const dir = `${stateDir}/lib`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const path = `${dir}/${name}-${(await sha256Hex(bytes)).slice(0, 16)}${suffix}`;
  const existing = await Deno.readFile(path).catch(() => null);
  if (existing === null || (await sha256Hex(existing)) !== (await sha256Hex(bytes))) {
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.writeFile(tmp, bytes, { mode });
      await Deno.chmod(tmp, mode); // not narrowed by the umask
      await Deno.rename(tmp, path);
    } catch (e) {
      // A full disk leaves a partial copy: none may pile up, start after start.
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
  } else if (((await Deno.stat(path)).mode! & 0o7777) !== mode) {
    await Deno.chmod(path, mode); // installed by a version that used another mode
  }
  return path;
}

/**
 * Throws, naming the file, unless this program carries the files the start installs: the shim,
 * the minimal init, and jwstart when jobs start through it (`serve --check`, which a reload runs
 * first: a program missing one would exit at its start and take the handed-over jobs with it).
 */
export async function checkEmbedded(directStart: boolean): Promise<void> {
  const files = [EMBEDDED, EMBEDDED_INIT, ...(directStart ? [EMBEDDED_START] : [])];
  for (const file of files) {
    try {
      await Deno.stat(file);
    } catch {
      throw new Error(`${file.pathname} is missing: build it with \`make shim\``);
    }
  }
}

/**
 * Installs the shim under `<stateDir>/lib/` (content-addressed) and loads it, every function
 * bound.
 */
export async function installShim(stateDir: string): Promise<Shim> {
  return new Shim(await install(stateDir, EMBEDDED, "libjwshim", ".so", 0o500)).bindAll();
}

/**
 * Installs the minimal init of `init: true` jobs under `<stateDir>/lib/`; returns its path.
 * Executable by everyone: a job's init execs it (through a descriptor opened as root, so the
 * root-only directory is no obstacle) after becoming the job's user, who may be anyone; with
 * 0500 every `init: true` job with a `user` other than root failed with EACCES.
 */
export function installMinimalInit(stateDir: string): Promise<string> {
  return install(stateDir, EMBEDDED_INIT, "jwinit", "", 0o555);
}

/**
 * Installs the direct start's program (jwstart, init/shim/jwdirect.c) under `<stateDir>/lib/`;
 * returns its path. Root only: the worker's clone execs it as root, before any change of user.
 */
export function installStarter(stateDir: string): Promise<string> {
  return install(stateDir, EMBEDDED_START, "jwstart", "", 0o500);
}
