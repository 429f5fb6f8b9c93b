/**
 * Recorded ratios (bench/recorded.json, committed): what a bench run is held against. A run fails
 * only when a row's ratio is worse than REGRESSION_FACTOR times its recorded value, never on an
 * absolute time. Each mode (quick, full) has its own record: their sizes differ.
 *
 * `make bench-record [QUICK=1]` rewrites the record of that mode from a real run.
 *
 * @module
 */
import type { MachineInfo } from "./machine.ts";
import { ratio, type Row } from "./rows.ts";

export const RECORDED_FILE = new URL("./recorded.json", import.meta.url).pathname;
export const REGRESSION_FACTOR = 2;

export type Mode = "quick" | "full";

export interface ModeRecord {
  recordedAt: string;
  machine: MachineInfo;
  /** Row name → its ratio in the recorded run. */
  ratios: { [name: string]: number };
}

export type RecordFile = { [mode in Mode]?: ModeRecord };

export function loadRecords(file = RECORDED_FILE): RecordFile {
  try {
    return JSON.parse(Deno.readTextFileSync(file)) as RecordFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return {};
    throw new Error(`cannot read the recorded ratios in ${file}: ${e}`);
  }
}

/** Replaces the record of `mode` with the checked rows of this run. */
export function writeRecord(
  mode: Mode,
  rows: readonly Row[],
  machine: MachineInfo,
  file = RECORDED_FILE,
): void {
  const records = loadRecords(file);
  const ratios: { [name: string]: number } = {};
  for (const row of rows) {
    const r = ratio(row);
    if (row.unchecked === undefined && Number.isFinite(r) && r > 0) ratios[row.name] = round(r);
  }
  records[mode] = { recordedAt: new Date().toISOString(), machine, ratios };
  Deno.writeTextFileSync(file, JSON.stringify(records, null, 2) + "\n");
}

export interface Verdict {
  /** The recorded ratio, when the row is checked and was recorded. */
  recorded?: number;
  /** True when the ratio is worse than REGRESSION_FACTOR × recorded. */
  regressed?: boolean;
}

export function verdict(row: Row, record: ModeRecord | undefined): Verdict {
  if (row.unchecked !== undefined) return {};
  const recorded = record?.ratios[row.name];
  if (typeof recorded !== "number" || !Number.isFinite(recorded)) return {};
  return { recorded, regressed: ratio(row) > REGRESSION_FACTOR * recorded };
}

const round = (n: number) => Math.round(n * 1000) / 1000;
