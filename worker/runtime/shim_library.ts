/**
 * Finds the C shim that ships inside this program and installs it as a real file in the state
 * directory, since dlopen needs one (in a compiled binary the shim is an embedded file).
 */
import { Shim } from "../../init/shim/ffi.ts";

const EMBEDDED = new URL("../../build/libjwshim.so", import.meta.url);

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Installs the shim under `<stateDir>/lib/` (content-addressed) and loads it. */
export async function installShim(stateDir: string): Promise<Shim> {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await Deno.readFile(EMBEDDED);
  } catch {
    throw new Error(
      `The C shim is missing (${EMBEDDED.pathname}): build it with \`make shim\``,
    );
  }
  const dir = `${stateDir}/lib`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const path = `${dir}/libjwshim-${(await sha256Hex(bytes)).slice(0, 16)}.so`;
  const existing = await Deno.readFile(path).catch(() => null);
  if (existing === null || (await sha256Hex(existing)) !== (await sha256Hex(bytes))) {
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    await Deno.writeFile(tmp, bytes, { mode: 0o500 });
    await Deno.rename(tmp, path);
  }
  return new Shim(path);
}
