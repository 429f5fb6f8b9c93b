/**
 * One line of the bench table, what it should reach, and the small statistics every section uses.
 *
 * A row compares a figure with a baseline measured in the same run. Its ratio is "how much worse
 * than the baseline": ours / base for times and sizes, base / ours for throughput (1.00 = the same,
 * higher is always worse), so one rule ("no worse than 2× the recorded ratio") fits every row.
 *
 * @module
 */

/** What a row should reach (issue 8 or 12), where one is set. */
export type Target =
  /** The ratio at most this (e.g. a start at most 3× the unshare floor). */
  | { ratioAtMost: number }
  /** The measured figure at most this, in the row's unit (e.g. RSS growth ≤ 256 MiB). */
  | { atMost: number }
  /** The measured figure at least this, in the row's unit (e.g. ≥ 200 MiB/s). */
  | { atLeast: number }
  /**
   * The measured figure at most the baseline plus this, in the row's unit (e.g. the worker's RSS
   * within 64 MiB of its idle RSS): for a figure whose limit is set above a baseline measured in
   * the same run, not as a multiple of it.
   */
  | { overBaseAtMost: number };

/** A row. The first five fields are required; the rest are optional. */
export interface Row {
  name: string;
  /** The measured figure (jobworker's, or a peer's on peer rows). */
  ours: number;
  /** The baseline measured in the same run. */
  base: number;
  unit: string;
  higherIsBetter: boolean;
  /** What the baseline is, when the name does not say (e.g. "unshare p50"). */
  baseLabel?: string;
  target?: Target;
  /**
   * Why the row's ratio is not held against its recorded value (a peer's figure, a tail measured
   * against an idle baseline of a few ms): shown, never a failure.
   */
  unchecked?: string;
}

/** How much worse than its baseline (> 1 is worse, whatever the unit). */
export function ratio(row: Row): number {
  return row.higherIsBetter ? row.base / row.ours : row.ours / row.base;
}

/** Whether the row meets its target; undefined when it has none. */
export function meetsTarget(row: Row): boolean | undefined {
  const t = row.target;
  if (t === undefined) return undefined;
  if ("ratioAtMost" in t) return ratio(row) <= t.ratioAtMost;
  if ("atMost" in t) return row.ours <= t.atMost;
  if ("overBaseAtMost" in t) return row.ours <= row.base + t.overBaseAtMost;
  return row.ours >= t.atLeast;
}

export function targetText(row: Row): string {
  const t = row.target;
  if (t === undefined) return "";
  if ("ratioAtMost" in t) return `ratio ≤ ${t.ratioAtMost}`;
  if ("atMost" in t) return `≤ ${t.atMost} ${row.unit}`;
  if ("overBaseAtMost" in t) return `≤ baseline + ${t.overBaseAtMost} ${row.unit}`;
  return `≥ ${t.atLeast} ${row.unit}`;
}

/**
 * The nearest-rank quantile: the smallest value with at least `q` of the values at or below it. Of
 * 100 values, p99 is the 99th smallest, not the largest, so one outlier alone does not set it.
 */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new Error("no values to take a quantile of");
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil(sorted.length * q);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export const median = (values: readonly number[]): number => quantile(values, 0.5);

export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Progress lines go to stderr so the table on stdout stays clean. */
export const progress = (what: string): void => console.error(`bench: ${what}`);
