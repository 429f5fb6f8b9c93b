/**
 * Client start-up: `jobworker list` against a local server (a new process each time, as a person
 * runs it) against `deno eval ''` (the runtime's own start), run alternately in the same process.
 * `list` is bin/jobworker as `make build` leaves it (the compiled binary, or the launcher of the
 * pre-bundled client); `source` is `deno run main.ts`, as the tests run the client.
 *
 * Beside them, three floors that say where the time of `list` goes (each a new process too):
 * - `offline`: `bin/jobworker context list`, the command line loaded and run without a connection;
 * - `transportModules`: a script that only imports node:tls (what the transport loads to connect;
 *   its HTTP/2 client is our own, cli/transport/h2/, part of the bundle);
 * - `tlsFloor`: bench/tls_floor.ts, one mutual-TLS handshake through Deno's own TLS and nothing
 *   else, the least any TLS client written for Deno 2.8.3 pays.
 *
 * Run alone: `deno run -A bench/client_start.ts` (starts its own worker).
 *
 * @module
 */

import { median, type Row } from "./rows.ts";

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
  /** `bin/jobworker context list`: the command line without a connection. */
  offline: number;
  /** `deno run` of a script that only imports node:tls. */
  transportModules: number;
  /** bench/tls_floor.ts: one mutual-TLS handshake through `Deno.connectTls`, then exit. */
  tlsFloor: number;
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
  const modules = await Deno.makeTempFile({ prefix: "jobworker-bench-", suffix: ".js" });
  await Deno.writeTextFile(modules, 'import "node:tls";\n');
  const denoRun = [Deno.execPath(), "run", "--allow-all", "--no-prompt", "--no-config"] as const;
  const commands: Record<keyof ClientStartTimes, [string, string[]]> = {
    baseline: [Deno.execPath(), ["eval", ""]],
    list: [BUILT_PROGRAM, listArgs],
    source: sourceCommand(listArgs),
    offline: [BUILT_PROGRAM, ["context", "list"]],
    transportModules: [denoRun[0], [...denoRun.slice(1), modules]],
    tlsFloor: [denoRun[0], [...denoRun.slice(1), `${ROOT}bench/tls_floor.ts`, address, certDir]],
  };
  const keys = Object.keys(commands) as (keyof ClientStartTimes)[];
  const times = Object.fromEntries(keys.map((key) => [key, [] as number[]])) as Record<
    keyof ClientStartTimes,
    number[]
  >;
  try {
    for (const key of keys) await timed(commands[key]);
    for (let i = 0; i < rounds; i++) {
      for (const key of keys) times[key].push(await timed(commands[key]));
    }
  } finally {
    await Deno.remove(modules);
  }
  return Object.fromEntries(keys.map((key) => [key, median(times[key])])) as Record<
    keyof ClientStartTimes,
    number
  >;
}

/** Medians of `rounds` fresh workers, in milliseconds. */
export interface FirstListTimes {
  /** The first `list` against a worker that has just started (its first TLS connection). */
  first: number;
  /** The `list` right after it, against the same worker. */
  second: number;
}

/** How long a fresh worker is left to settle before its first `list`. */
const SETTLE_MS = 2000;

/**
 * The first `list` against a worker that has just started, beside the next one: a worker's first
 * connection used to pay Deno's one-time TLS crypto set-up (worker/tls/warm_up.ts), about 35 ms.
 * Each round starts a worker of its own with `start`, lets it settle, and stops it.
 */
export async function measureFirstList(
  start: () => Promise<{ address: string; stop(): Promise<unknown> }>,
  certDir: string,
  rounds = 5,
): Promise<FirstListTimes> {
  await build();
  const first: number[] = [];
  const second: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const worker = await start();
    try {
      // Past its start-up work (the init pool fills in the background): the first connection's
      // own cost, not the CPU it shares with the pool's Deno starts.
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const list = [BUILT_PROGRAM, ["--server", worker.address, "--cert-path", certDir, "list"]];
      first.push(await timed(list as [string, string[]]));
      second.push(await timed(list as [string, string[]]));
    } finally {
      await worker.stop();
    }
  }
  return { first: median(first), second: median(second) };
}

/**
 * The floors beside the `list` row, against the same `deno eval ''`: shown, never held to a
 * record (they measure Deno, not jobworker).
 */
export function clientFloorRows(times: ClientStartTimes): Row[] {
  const floor = (name: string, ours: number): Row => ({
    name,
    ours,
    base: times.baseline,
    baseLabel: "deno eval ''",
    unit: "ms",
    higherIsBetter: false,
    unchecked: "a floor for reading the list row: Deno's cost, not jobworker's",
  });
  return [
    floor("floor: jobworker context list (no connection)", times.offline),
    floor("floor: import node:tls", times.transportModules),
    floor("floor: one mTLS handshake, Deno.connectTls", times.tlsFloor),
  ];
}

if (import.meta.main) {
  const { makePki } = await import("../tests/helpers/pki.ts");
  const { WorkerProcess } = await import("../tests/helpers/worker.ts");
  const pki = await makePki();
  const worker = await WorkerProcess.start({ certDir: pki.dir });
  try {
    const times = await measureClientStart(worker.address, pki.dir);
    for (const [key, ms] of Object.entries(times)) {
      console.log(
        `${key.padEnd(16)} ${ms.toFixed(1)} ms  ratio ${(ms / times.baseline).toFixed(2)}`,
      );
    }
  } finally {
    await worker.stop();
    await pki.remove();
  }
}
