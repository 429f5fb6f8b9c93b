/**
 * Client start-up: `jobworker list` against a local server (a new process each time, as a person
 * runs it) against `deno eval ''` (the runtime's own start), run alternately in the same process.
 * `list` is bin/jobworker as `make build` leaves it (the compiled binary, or the launcher of the
 * pre-bundled client); `source` is `deno run main.ts`, as the tests run the client.
 *
 * Run alone: `deno run -A bench/client_start.ts` (starts its own worker).
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;
/** What `make build` leaves: the compiled binary, or a launcher running the pre-bundled client. */
export const BUILT_PROGRAM = `${ROOT}bin/jobworker`;

/**
 * `jobworker ARGS` run from the sources (`deno run main.ts`), as the tests run it: the program and
 * its arguments for `new Deno.Command`.
 */
export function sourceCommand(args: string[]): [string, string[]] {
  return [Deno.execPath(), ["run", "--allow-all", "--no-prompt", "--cached-only", MAIN, ...args]];
}

/** Medians, in milliseconds. */
export interface ClientStartTimes {
  /** `deno eval ''`. */
  baseline: number;
  /** `bin/jobworker list`, as `make build` (and `make serve`) leave it. */
  list: number;
  /** `jobworker list` from the sources (`deno run main.ts`), for reference. */
  source: number;
}

/** Build bin/jobworker from this checkout (scripts/build.sh), so the measure is of this code. */
export async function build(): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: [`${ROOT}scripts/build.sh`, Deno.execPath()],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`scripts/build.sh failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function timed([program, args]: [string, string[]]): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const elapsed = performance.now() - t0;
  if (!out.success) {
    throw new Error(`${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return elapsed;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Time `rounds` runs of each, alternating, after one warm-up run of each (which also fills Deno's
 * code cache). Builds bin/jobworker first (`make build`), so it runs this checkout's code.
 */
export async function measureClientStart(
  address: string,
  certDir: string,
  rounds = 15,
): Promise<ClientStartTimes> {
  await build();
  const listArgs = ["--server", address, "--cert-path", certDir, "list"];
  const commands: Record<keyof ClientStartTimes, [string, string[]]> = {
    baseline: [Deno.execPath(), ["eval", ""]],
    list: [BUILT_PROGRAM, listArgs],
    source: sourceCommand(listArgs),
  };
  const keys = Object.keys(commands) as (keyof ClientStartTimes)[];
  for (const key of keys) await timed(commands[key]);
  const times: Record<keyof ClientStartTimes, number[]> = { baseline: [], list: [], source: [] };
  for (let i = 0; i < rounds; i++) {
    for (const key of keys) times[key].push(await timed(commands[key]));
  }
  return {
    baseline: median(times.baseline),
    list: median(times.list),
    source: median(times.source),
  };
}

if (import.meta.main) {
  const { makePki } = await import("../tests/helpers/pki.ts");
  const { WorkerProcess } = await import("../tests/helpers/worker.ts");
  const pki = await makePki();
  const worker = await WorkerProcess.start({ certDir: pki.dir });
  try {
    const { baseline, list, source } = await measureClientStart(worker.address, pki.dir);
    console.log(
      `bin/jobworker list ${list.toFixed(0)} ms (ratio ${(list / baseline).toFixed(2)}), ` +
        `from the sources ${source.toFixed(0)} ms (ratio ${(source / baseline).toFixed(2)}), ` +
        `deno eval '' ${baseline.toFixed(0)} ms`,
    );
  } finally {
    await worker.stop();
    await pki.remove();
  }
}
