/**
 * Recorded ratios (bench/recorded.json, committed): what a bench run is held against. A run fails
 * only when a row's ratio is worse than REGRESSION_FACTOR times its recorded value, never on an
 * absolute time. Each mode (quick, full) has its own records, since their sizes differ, and each
 * kind of machine its own record: the same code's ratios differ by 2x and more between the Intel
 * Xeon and AMD EPYC machines here (a Deno start, the TLS library's seeding and `unshare` itself
 * cost differently). A run is held to its own machine's record (a row it lacks is not checked);
 * on a machine with none, each row to the loosest value any machine recorded, so a new kind of
 * machine is held only as tightly as the loosest machine recorded.
 *
 * `make bench-record [QUICK=1]` rewrites the record of that mode for this machine, from the
 * median of three whole runs (bench/main.ts).
 *
 * @module
 */
import type { MachineInfo } from "./machine.ts";
import { ratio, type Row } from "./rows.ts";

export const RECORDED_FILE = new URL("./recorded.json", import.meta.url).pathname;
export const REGRESSION_FACTOR = 2;

export type Mode = "quick" | "full";

/** Row name → its recorded ratio. */
export type Ratios = { [name: string]: number };

export interface ModeRecord {
  recordedAt: string;
  machine: MachineInfo;
  /** How many whole runs the ratios are the median of (absent: one). */
  runs?: number;
  ratios: Ratios;
}

/** Each mode's records, one per kind of machine. */
export type RecordFile = { [mode in Mode]?: ModeRecord[] };

/** The kind of machine a record holds for: records of the same kind replace each other. */
export const machineKind = (m: MachineInfo) => `${m.cpuModel}, ${m.cores} cores`;

export function loadRecords(file = RECORDED_FILE): RecordFile {
  let parsed: { [mode in Mode]?: ModeRecord[] | ModeRecord };
  try {
    parsed = JSON.parse(Deno.readTextFileSync(file));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return {};
    throw new Error(`cannot read the recorded ratios in ${file}: ${e}`);
  }
  // Before records were kept per machine, each mode held one.
  const list = (r: ModeRecord[] | ModeRecord | undefined) =>
    r === undefined ? undefined : Array.isArray(r) ? r : [r];
  return { quick: list(parsed.quick), full: list(parsed.full) };
}

/** What a run on `machine` is held to, and a line saying whose record that is. */
export function recordFor(
  records: readonly ModeRecord[] | undefined,
  machine: MachineInfo,
): { ratios: Ratios; from: string } | undefined {
  if (records === undefined || records.length === 0) return undefined;
  const own = records.find((r) => machineKind(r.machine) === machineKind(machine));
  if (own) return { ratios: own.ratios, from: `this machine's record (${own.recordedAt})` };
  const loosest: Ratios = {};
  for (const record of records) {
    for (const [name, value] of Object.entries(record.ratios)) {
      loosest[name] = Math.max(loosest[name] ?? value, value);
    }
  }
  return {
    ratios: loosest,
    from: `no record of ${machineKind(machine)}: each row's loosest of ${
      records.map((r) => machineKind(r.machine)).join("; ")
    }`,
  };
}

/**
 * For each row any run measured (in the order first seen), the run whose ratio is the median of
 * that row's across the runs that measured it (the lower of the two middle ones for an even
 * count): a row that was measured, not averaged.
 */
export function medianRows(runs: readonly (readonly Row[])[]): Row[] {
  const names = [...new Set(runs.flatMap((run) => run.map((r) => r.name)))];
  return names.map((name) => {
    const same = runs.flatMap((run) => run.filter((r) => r.name === name))
      .sort((a, b) => ratio(a) - ratio(b));
    return same[Math.floor((same.length - 1) / 2)]!;
  });
}

/** Replaces this machine's record of `mode` with the checked rows, the median of `runs` runs. */
export function writeRecord(
  mode: Mode,
  rows: readonly Row[],
  machine: MachineInfo,
  { file = RECORDED_FILE, runs = 1 }: { file?: string; runs?: number } = {},
): void {
  const records = loadRecords(file);
  const ratios: Ratios = {};
  for (const row of rows) {
    const r = ratio(row);
    if (row.unchecked === undefined && Number.isFinite(r) && r > 0) ratios[row.name] = round(r);
  }
  const others = (records[mode] ?? []).filter((r) =>
    machineKind(r.machine) !== machineKind(machine)
  );
  const record: ModeRecord = { recordedAt: new Date().toISOString(), machine, runs, ratios };
  records[mode] = [...others, record];
  Deno.writeTextFileSync(file, JSON.stringify(records, null, 2) + "\n");
}

export interface Verdict {
  /** The recorded ratio, when the row is checked and was recorded. */
  recorded?: number;
  /** True when the ratio is worse than REGRESSION_FACTOR × recorded. */
  regressed?: boolean;
}

export function verdict(row: Row, ratios: Ratios | undefined): Verdict {
  if (row.unchecked !== undefined) return {};
  const recorded = ratios?.[row.name];
  if (typeof recorded !== "number" || !Number.isFinite(recorded)) return {};
  return { recorded, regressed: ratio(row) > REGRESSION_FACTOR * recorded };
}

const round = (n: number) => Math.round(n * 1000) / 1000;
