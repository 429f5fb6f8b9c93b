/** A full disk, for the tests of what the worker does on one. */

/** Appends zeros to `path` (made if missing) until its filesystem says it is full. */
export async function fillUp(path: string): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, append: true });
  const block = new Uint8Array(64 * 1024);
  try {
    // A write that fits only in part writes that part; the next one meets ENOSPC.
    for (;;) await file.write(block);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOSPC") throw e;
  } finally {
    file.close();
  }
}

/** Bytes free for an unprivileged writer on the filesystem of `dir` (df's "avail"). */
export async function freeBytes(dir: string): Promise<number> {
  const out = await new Deno.Command("df", {
    args: ["-B1", "--output=avail", dir],
    stdout: "piped",
  }).output();
  return Number(new TextDecoder().decode(out.stdout).trim().split("\n")[1]);
}

/** Whether `path` exists (false only for NotFound; other errors are thrown). */
export function pathExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
