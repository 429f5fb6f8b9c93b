/**
 * Client start-up: `jobworker list` against a local server (a new process each time, as a person
 * runs it) against `deno eval ''` (the runtime's own start), run alternately in the same process.
 *
 * Run alone: `deno run -A bench/client_start.ts` (starts its own worker).
 *
 * @module
 */

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Medians of both, in milliseconds. */
export interface ClientStartTimes {
  /** `deno eval ''`. */
  baseline: number;
  /** `jobworker list` through `deno run main.ts`. */
  list: number;
}

async function timed(args: string[]): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
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

/** Time `rounds` runs of each, alternating, after one warm-up run of each. */
export async function measureClientStart(
  address: string,
  certDir: string,
  rounds = 15,
): Promise<ClientStartTimes> {
  const list = [
    "run",
    "--allow-all",
    "--no-prompt",
    "--cached-only",
    MAIN,
    "--server",
    address,
    "--cert-path",
    certDir,
    "list",
  ];
  const baseline = ["eval", ""];
  await timed(baseline);
  await timed(list);
  const times: ClientStartTimes[] = [];
  for (let i = 0; i < rounds; i++) {
    times.push({ baseline: await timed(baseline), list: await timed(list) });
  }
  return {
    baseline: median(times.map((t) => t.baseline)),
    list: median(times.map((t) => t.list)),
  };
}

if (import.meta.main) {
  const { makePki } = await import("../tests/helpers/pki.ts");
  const { WorkerProcess } = await import("../tests/helpers/worker.ts");
  const pki = await makePki();
  const worker = await WorkerProcess.start({ certDir: pki.dir });
  try {
    const { baseline, list } = await measureClientStart(worker.address, pki.dir);
    console.log(
      `jobworker list ${list.toFixed(0)} ms, deno eval '' ${baseline.toFixed(0)} ms, ratio ${
        (list / baseline).toFixed(2)
      }`,
    );
  } finally {
    await worker.stop();
    await pki.remove();
  }
}
