/** Running programs from tests, and the small byte helpers several tests need. */

export interface ProgramResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

export interface ProgramOptions {
  cwd?: string | URL;
  env?: Record<string, string>;
}

/** Runs a program to its end with stdin from /dev/null; returns its status and output as text. */
export async function runProgram(
  program: string,
  args: string[],
  options: ProgramOptions = {},
): Promise<ProgramResult> {
  const output = await new Deno.Command(program, {
    args,
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    signal: output.signal,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** The parts, back to back. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
