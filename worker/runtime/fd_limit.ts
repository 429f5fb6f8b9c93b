/**
 * Raises the process's soft limit on open descriptors (RLIMIT_NOFILE) to its hard limit: every
 * connection, job pipe and output reader takes one, and a server that runs out refuses everyone.
 */
const RLIMIT_NOFILE = 7;

/** The soft and hard limits after raising; null when they cannot be read or set. */
export function raiseFdLimit(): { soft: bigint; hard: bigint } | null {
  let libc;
  try {
    libc = Deno.dlopen("libc.so.6", {
      getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
    });
  } catch {
    return null;
  }
  try {
    const limits = new BigUint64Array(2); // struct rlimit { rlim_t rlim_cur, rlim_max; }
    const bytes = new Uint8Array(limits.buffer);
    if (libc.symbols.getrlimit(RLIMIT_NOFILE, bytes) !== 0) return null;
    if (limits[0]! < limits[1]!) {
      limits[0] = limits[1]!;
      if (libc.symbols.setrlimit(RLIMIT_NOFILE, bytes) !== 0) return null;
    }
    return { soft: limits[0]!, hard: limits[1]! };
  } finally {
    libc.close();
  }
}
