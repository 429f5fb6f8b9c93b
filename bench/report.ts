/**
 * The bench's output: a table on stdout, and the whole run as JSON under bench/results/ (one
 * timestamped file per run, with the machine it ran on).
 *
 * @module
 */
import type { MachineInfo } from "./machine.ts";
import type { Mode, Verdict } from "./recorded.ts";
import { meetsTarget, ratio, type Row, targetText } from "./rows.ts";

export const RESULTS_DIR = new URL("./results/", import.meta.url).pathname;

export interface Line {
  row: Row;
  verdict: Verdict;
}

const figure = (n: number, unit: string) =>
  `${n.toFixed(n !== 0 && Math.abs(n) < 10 ? 2 : 1)} ${unit}`;

export function printTable(lines: readonly Line[]): void {
  const header = ["measure", "measured", "baseline", "ratio", "target", "met", "recorded"];
  const cells = lines.map(({ row, verdict }) => {
    const met = meetsTarget(row);
    const recorded = verdict.recorded === undefined
      ? (row.unchecked !== undefined ? "(not checked)" : "-")
      : `${verdict.recorded.toFixed(2)}${verdict.regressed ? "  REGRESSED" : ""}`;
    return [
      row.name,
      figure(row.ours, row.unit),
      `${figure(row.base, row.unit)}${row.baseLabel ? ` (${row.baseLabel})` : ""}`,
      ratio(row).toFixed(2),
      targetText(row),
      met === undefined ? "" : met ? "yes" : "NO",
      recorded,
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  for (const line of [header, ...cells]) {
    console.log(line.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  }
  console.log(
    "ratio: measured / baseline for times and sizes, baseline / measured for throughput (1.00 = the same, higher is worse)",
  );
}

/**
 * Writes the run to bench/results/<time>-<mode>.json; returns the file's path. With `runs` above
 * 1, each row is the median of that many whole runs.
 */
export function writeResults(
  mode: Mode,
  startedAt: Date,
  machine: MachineInfo,
  lines: readonly Line[],
  peersLeftOut: readonly string[],
  runs = 1,
): string {
  Deno.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = startedAt.toISOString().replace(/[:.]/g, "-");
  const file = `${RESULTS_DIR}${stamp}-${mode}.json`;
  const rows = lines.map(({ row, verdict }) => ({
    ...row,
    ratio: ratio(row),
    targetMet: meetsTarget(row) ?? null,
    recordedRatio: verdict.recorded ?? null,
    regressed: verdict.regressed ?? null,
  }));
  const run = {
    startedAt: startedAt.toISOString(),
    seconds: (Date.now() - startedAt.getTime()) / 1000,
    mode,
    machine,
    runs,
    rows,
    peersLeftOut,
  };
  Deno.writeTextFileSync(file, JSON.stringify(run, null, 2) + "\n");
  return file;
}
